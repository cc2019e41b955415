//! The stateless per-chunk work: decode, validate, route, pre-process, and
//! assign each event to the workers its plan allows; then dispatch.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use switchyard_ingest::{Decoder, LineageContext, Preprocessor, Registry};
use switchyard_router::Router;
use switchyard_schemas::telemetry as m;
use switchyard_schemas::{DlqRecord, ErrorClass, Event, InputFormat, RawRecord, Stage};
use switchyard_sink::{keep_highest, Offsets};
use switchyard_workers::cloud::CloudWorker;
use switchyard_workers::dispatch::{self, Assignment, Dispatched, Worker, WorkerSet};
use switchyard_workers::{init_runtime, OnnxWorker, WorkerConfig};
use tokio::task::JoinHandle;

use crate::manifest::Plan;
use crate::telemetry::trace::{self, ChunkSpans};

/// The stages of a pipeline, its workers started.
pub struct Stages {
    /// The consumer group (trace attributes).
    group: String,
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
    /// The answers, with when dispatch started and ended.
    pub(super) answers: Option<JoinHandle<(Dispatched, SystemTime, SystemTime)>>,
    pub(super) dlq: Vec<DlqRecord>,
    pub(super) offsets: Offsets,
    pub(super) replayed: u64,
    /// When preparation finished (the queue wait starts).
    pub(super) prepared: Instant,
    /// The chunk's spans, when tracing is on.
    pub(super) spans: Option<ChunkSpans>,
}

/// Time a chunk's records spent in each admission stage.
#[derive(Debug, Default)]
pub(crate) struct StageTimes {
    decode: Duration,
    route: Duration,
    preprocess: Duration,
}

impl StageTimes {
    /// Records the chunk's times as `switchyard_stage_duration_seconds`.
    fn record(&self) {
        for (stage, took) in [("decode", self.decode), ("route", self.route), ("preprocess", self.preprocess)] {
            m::STAGE_DURATION.histogram([("stage", stage.into())]).record(took.as_secs_f64());
        }
    }
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
        let decoder = match m.schema.format {
            InputFormat::Json => decoder,
            _ => {
                let registry = Registry::new(schema.clone(), base)?;
                registry.check().await?;
                decoder.with_registry(Arc::new(registry))
            }
        };
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
        let group = plan.source.group_id.clone();
        Ok(Stages { group, decoder, pre, router, workers: Arc::new(WorkerSet { list: workers }) })
    }

    /// Fetches the writer schemas `chunk`'s records name that are not known
    /// yet (registry formats; nothing to do for JSON). Waits while the
    /// registry cannot answer.
    pub async fn resolve(&self, chunk: &[RawRecord]) {
        if let Some(r) = self.decoder.registry() {
            r.resolve(chunk).await;
        }
    }

    /// Decodes, validates, routes and pre-processes one record: its event
    /// (lineage with the routing decision) and its assignment, its features
    /// appended to `features`; or its DLQ record.
    pub(crate) fn admit(
        &self,
        raw: &RawRecord,
        features: &mut Vec<f32>,
        times: &mut StageTimes,
    ) -> Result<(Event, Assignment), Box<DlqRecord>> {
        let began = Instant::now();
        let decoded = self.decoder.decode(raw);
        let decoded_at = Instant::now();
        times.decode += decoded_at - began;
        let mut event = decoded?;
        let reject = |event: &Event, stage, class, msg: String| {
            Box::new(self.decoder.reject(raw, event.lineage.lineage_id.clone(), stage, class, msg))
        };
        let routed = self.router.route(&event);
        let routed_at = Instant::now();
        times.route += routed_at - decoded_at;
        let route = match routed {
            Ok(r) => r,
            Err(no_route) => return Err(reject(&event, Stage::Route, ErrorClass::NoRoute, no_route.to_string())),
        };
        let Some(w) = self.workers.index(&route.route) else {
            let msg = format!("route `{}` names no running worker", route.route);
            return Err(reject(&event, Stage::Route, ErrorClass::NoRoute, msg));
        };
        let pre = self.pre.features_into(&event, features);
        times.preprocess += routed_at.elapsed();
        if let Err(msg) = pre {
            return Err(reject(&event, Stage::Preprocess, ErrorClass::FeatureError, msg));
        }
        let plan = self.router.plan(&route, &event.lineage.lineage_id);
        let mut chain = vec![w];
        chain.extend(plan.fallbacks.iter().filter_map(|f| self.workers.index(f)));
        let shadow = plan.shadow.as_deref().and_then(|s| self.workers.index(s));
        let cloud = chain.iter().chain(shadow.iter()).any(|&w| self.workers.is_cloud(w));
        let assignment = Assignment {
            trace: None,
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
    /// seen) and starts dispatching them; with `urgent` (the priority lane),
    /// ahead of every queued model request.
    pub(super) fn prepare(
        &self,
        chunk: Vec<RawRecord>,
        durable: &Offsets,
        seen: &mut Offsets,
        urgent: bool,
    ) -> Pending {
        let began = SystemTime::now();
        let spans = trace::enabled().then(|| ChunkSpans::start(&chunk, &self.group));
        let mut features: Vec<f32> = Vec::with_capacity(chunk.len() * self.pre.width());
        let mut assignments = Vec::with_capacity(chunk.len());
        let mut events = Vec::with_capacity(chunk.len());
        let mut dlq = Vec::new();
        let mut offsets = Offsets::new();
        let mut replayed = 0;
        let mut times = StageTimes::default();
        for (i, raw) in chunk.iter().enumerate() {
            let key = (raw.topic.clone(), raw.partition);
            let durable_already = durable.get(&key).is_some_and(|&d| raw.offset <= d);
            keep_highest(&mut offsets, key, raw.offset);
            if durable_already {
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
            match self.admit(raw, &mut features, &mut times) {
                Ok((event, mut assignment)) => {
                    assignment.trace = spans.as_ref().and_then(|s| s.record(i));
                    assignments.push(assignment);
                    events.push((i, event));
                }
                Err(d) => dlq.push(*d),
            }
        }
        if m::recording() {
            times.record();
        }
        if replayed > 0 {
            m::REPLAYED_RECORDS.counter([]).increment(replayed);
        }
        let features = Arc::new(features);
        if let Some(s) = &spans {
            s.stage("prepare", began, SystemTime::now());
        }
        let answers = (!assignments.is_empty()).then(|| {
            let (started, since) = (Instant::now(), SystemTime::now());
            let dispatched = dispatch::dispatch(self.workers.clone(), assignments, features.clone(), self.pre.width());
            tokio::spawn(async move {
                let d = if urgent { switchyard_workers::urgent(dispatched).await } else { dispatched.await };
                m::STAGE_DURATION.histogram([("stage", "inference".into())]).record(started.elapsed().as_secs_f64());
                (d, since, SystemTime::now())
            })
        });
        Pending { chunk, events, features, answers, dlq, offsets, replayed, prepared: Instant::now(), spans }
    }
}
