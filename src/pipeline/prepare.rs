//! The stateless per-chunk work: decode, validate, route, pre-process, and
//! assign each event to the workers its plan allows; then dispatch.

use std::sync::Arc;

use anyhow::Context as _;
use switchyard_ingest::{Decoder, LineageContext, Preprocessor};
use switchyard_router::Router;
use switchyard_schemas::{DlqRecord, ErrorClass, Event, RawRecord, Stage};
use switchyard_sink::Offsets;
use switchyard_workers::cloud::CloudWorker;
use switchyard_workers::dispatch::{self, Assignment, Dispatched, Worker, WorkerSet};
use switchyard_workers::{init_runtime, OnnxWorker, WorkerConfig};
use tokio::task::JoinHandle;

use crate::manifest::Plan;

/// The stages of a pipeline, its workers started.
pub struct Stages {
    decoder: Decoder,
    pub(crate) pre: Preprocessor,
    router: Router,
    pub(crate) workers: Arc<WorkerSet>,
}

/// A chunk on its way to the sink: events waiting for their answers.
pub(super) struct Pending {
    pub(super) chunk: Vec<RawRecord>,
    /// (index into chunk, event), in the order of the assignments.
    pub(super) events: Vec<(usize, Event)>,
    /// `width` features per event.
    pub(super) features: Arc<Vec<f32>>,
    pub(super) answers: Option<JoinHandle<Dispatched>>,
    pub(super) dlq: Vec<DlqRecord>,
    pub(super) offsets: Offsets,
    pub(super) replayed: u64,
}

impl Stages {
    /// The stages of `plan` with its workers started; rows carry `run_id`
    /// (empty for streaming). With `probe`, cloud endpoints are asked whether
    /// they are ready (a warning when not).
    pub async fn build(plan: &Plan, run_id: &str, probe: bool) -> anyhow::Result<Self> {
        let m = plan.manifest();
        let base = &plan.loaded.base;
        let schema = Arc::new(m.schema.clone());
        let pre = Preprocessor::build(&m.preprocess, &schema)?;
        let router = m.routing.build(&schema, &plan.route_kinds)?;
        let decoder = Decoder::new(
            schema.clone(),
            LineageContext {
                pipeline: m.name.clone(),
                manifest_hash: plan.loaded.hash.clone(),
                preprocess_hash: pre.spec_hash().to_string(),
                run_id: run_id.to_string(),
            },
        );
        if m.workers.values().any(|w| matches!(w, WorkerConfig::Onnx(_))) {
            init_runtime(None)?;
        }
        let scanner = Arc::new(router.scanner());
        let field_names: Vec<String> = schema.fields.iter().map(|f| f.name.clone()).collect();
        let mut workers = Vec::new();
        for (name, w) in &m.workers {
            let worker = match w {
                WorkerConfig::Onnx(c) => Worker::Local(Arc::new(
                    OnnxWorker::start(name, c, base, pre.feature_names())
                        .with_context(|| format!("starting worker `{name}`"))?,
                )),
                other => {
                    let (protocol, c) = other.cloud().context("a non-local worker has cloud settings")?;
                    let worker =
                        CloudWorker::start(name, protocol, c, base, &field_names, pre.width(), scanner.clone())
                            .with_context(|| format!("starting worker `{name}`"))?;
                    // An unreachable endpoint is not fatal (its events take their
                    // fallbacks, or wait), but it is said at once.
                    if probe {
                        if let Err(e) = worker.check_ready().await {
                            tracing::warn!(worker = %name, "cloud endpoint not ready: {e}");
                        }
                    }
                    Worker::Cloud(Arc::new(worker))
                }
            };
            workers.push((name.clone(), worker));
        }
        Ok(Stages { decoder, pre, router, workers: Arc::new(WorkerSet { list: workers }) })
    }

    /// Decodes, validates, routes and pre-processes one record: its event
    /// (lineage with the routing decision) and its assignment, its features
    /// appended to `features`; or its DLQ record.
    pub(crate) fn admit(
        &self,
        raw: &RawRecord,
        features: &mut Vec<f32>,
    ) -> Result<(Event, Assignment), Box<DlqRecord>> {
        let mut event = self.decoder.decode(raw)?;
        let reject = |event: &Event, stage, class, msg: String| {
            Box::new(self.decoder.reject(raw, event.lineage.lineage_id.clone(), stage, class, msg))
        };
        let route = match self.router.route(&event) {
            Ok(r) => r,
            Err(no_route) => return Err(reject(&event, Stage::Route, ErrorClass::NoRoute, no_route.to_string())),
        };
        let Some(w) = self.workers.index(&route.route) else {
            let msg = format!("route `{}` names no running worker", route.route);
            return Err(reject(&event, Stage::Route, ErrorClass::NoRoute, msg));
        };
        if let Err(msg) = self.pre.features_into(&event, features) {
            return Err(reject(&event, Stage::Preprocess, ErrorClass::FeatureError, msg));
        }
        let plan = self.router.plan(&route, &event.lineage.lineage_id);
        let mut chain = vec![w];
        chain.extend(plan.fallbacks.iter().filter_map(|f| self.workers.index(f)));
        let shadow = plan.shadow.as_deref().and_then(|s| self.workers.index(s));
        let cloud = chain.iter().chain(shadow.iter()).any(|&w| self.workers.is_cloud(w));
        let assignment = Assignment {
            id: event.lineage.lineage_id.clone(),
            values: if cloud { event.values.clone() } else { Vec::new() },
            chain,
            shadow,
            deadline: plan.deadline,
            withheld: plan.withheld,
        };
        event.lineage.route = route;
        Ok((event, assignment))
    }

    /// Admits a chunk's records (skipping those already durable or already
    /// seen) and starts dispatching them.
    pub(super) fn prepare(&self, chunk: Vec<RawRecord>, durable: &Offsets, seen: &mut Offsets) -> Pending {
        let mut features: Vec<f32> = Vec::with_capacity(chunk.len() * self.pre.width());
        let mut assignments = Vec::with_capacity(chunk.len());
        let mut events = Vec::with_capacity(chunk.len());
        let mut dlq = Vec::new();
        let mut offsets = Offsets::new();
        let mut replayed = 0;
        for (i, raw) in chunk.iter().enumerate() {
            let max = offsets.entry((raw.topic.clone(), raw.partition)).or_insert(raw.offset);
            *max = (*max).max(raw.offset);
            if durable.get(&(raw.topic.clone(), raw.partition)).is_some_and(|&d| raw.offset <= d) {
                replayed += 1;
                continue;
            }
            // Offsets only grow within a partition; a record at or below one
            // already handled is a replay (rebalance) or a broker repeating
            // itself, and is handled once only.
            let last = seen.entry((raw.topic.clone(), raw.partition)).or_insert(-1);
            if raw.offset <= *last {
                replayed += 1;
                continue;
            }
            *last = raw.offset;
            match self.admit(raw, &mut features) {
                Ok((event, assignment)) => {
                    assignments.push(assignment);
                    events.push((i, event));
                }
                Err(d) => dlq.push(*d),
            }
        }
        let features = Arc::new(features);
        let answers = (!assignments.is_empty()).then(|| {
            tokio::spawn(dispatch::dispatch(self.workers.clone(), assignments, features.clone(), self.pre.width()))
        });
        Pending { chunk, events, features, answers, dlq, offsets, replayed }
    }
}
