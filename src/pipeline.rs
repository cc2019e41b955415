//! The streaming pipeline: wires `ingest → router → workers → sink`.
//!
//! ```text
//!  source ──chunk──▶ prepare: decode, validate, pre-process, route, plan ──▶ resolve (one task per chunk):
//!                                                local batchers / cloud endpoints, fallbacks, shadows
//!                                                                          │ outcomes, in chunk order
//!                    commit offsets ◀── roll Parquet ◀── results + DLQ to Kafka ◀┘
//! ```
//!
//! Each event's plan (primary worker, fallback chain, shadow) comes from the
//! routing policy; [`crate::resolve`] finds the worker that answers it or the
//! reason none could, which sends it to the DLQ.
//!
//! Chunks flow through bounded channels, so a slow model or sink pauses the
//! Kafka consumer. Offsets are committed only after a Parquet roll made the
//! rows before them durable (and Kafka acknowledged their results), so a
//! crash loses nothing; rows already durable are recognised on replay and
//! skipped, so a crash adds no duplicates either.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use switchyard_ingest::bounded::{BoundedConfig, BoundedSource, Input};
use switchyard_ingest::{Decoder, FileSource, KafkaCommitter, KafkaSource, LineageContext, Preprocessor};
use switchyard_router::Router;
use switchyard_schemas::{DlqRecord, ErrorClass, Event, Prediction, RawRecord, Stage};
use switchyard_sink::{KafkaSink, Offsets, ParquetSink};
use switchyard_workers::cloud::{CloudSnapshot, CloudWorker};
use switchyard_workers::{init_runtime, OnnxWorker, WorkerConfig};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::manifest::{Loaded, SourceConfig};
use crate::resolve::{self, Job, Outcome, Resolved, Worker, Workers};

/// How to run a manifest.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Stop once no record has arrived for this long (bounded runs, tests, demo).
    pub idle_exit: Option<Duration>,
    /// With `idle_exit`: how long to wait for the very first record.
    pub startup_timeout: Option<Duration>,
    /// Replace the manifest's bootstrap servers (source and sinks).
    pub bootstrap_servers: Option<String>,
    /// Replace the manifest's table root.
    pub tables: Option<PathBuf>,
    /// Read records from this JSON Lines file instead of the manifest's source.
    pub input_file: Option<PathBuf>,
    /// Skip the Kafka sink (results only to Parquet).
    pub no_kafka_sink: bool,
    /// Do not try to create missing output topics (brokers without the admin API).
    pub skip_topic_creation: bool,
    /// Print a progress line this often (none when `None`).
    pub progress_every: Option<Duration>,
    /// Run as a backfill: a bounded source instead of the manifest's, its own
    /// checkpoint, no feedback consumer, monitor or model reload.
    pub backfill: Option<BackfillSource>,
    /// Counters the caller may watch while the run goes on (progress bars).
    pub counters: Option<Arc<Counters>>,
}

/// The bounded source of a backfill run.
#[derive(Debug, Clone)]
pub struct BackfillSource {
    /// Run id: stamped on every row, and names the run's checkpoint.
    pub run_id: String,
    /// The source section.
    pub config: BoundedConfig,
    /// Its inputs and their ranges, as planned.
    pub inputs: Vec<Input>,
    /// Also write results to the manifest's Kafka topics.
    pub kafka: bool,
}

/// Live counts of a run, for progress displays.
#[derive(Debug, Default)]
pub struct Counters {
    /// Records read.
    pub records: std::sync::atomic::AtomicU64,
    /// Results written.
    pub results: std::sync::atomic::AtomicU64,
    /// Records sent to the DLQ.
    pub dlq: std::sync::atomic::AtomicU64,
}

/// What a run did.
#[derive(Debug)]
pub struct Summary {
    /// Records read from the source.
    pub records: u64,
    /// Results written.
    pub predictions: u64,
    /// Records sent to the DLQ.
    pub dlq: u64,
    /// Records skipped because their results were already durable (replay).
    pub replayed: u64,
    /// Results per route: the worker that answered (shadow answers not
    /// included).
    pub by_route: BTreeMap<String, u64>,
    /// Results a fallback worker answered, per worker.
    pub fallbacks: BTreeMap<String, u64>,
    /// Shadow answers recorded (Parquet only), per worker.
    pub shadows: BTreeMap<String, u64>,
    /// Shadow requests that got no answer.
    pub shadow_failed: u64,
    /// Cloud workers' counters and circuit state at the end of the run.
    pub cloud: BTreeMap<String, CloudSnapshot>,
    /// Results per policy rule.
    pub by_rule: BTreeMap<String, u64>,
    /// DLQ records per error class.
    pub dlq_by_class: BTreeMap<String, u64>,
    /// Receipt → results durable (acknowledged by Kafka), in µs.
    pub latency_us: hdrhistogram::Histogram<u64>,
    /// Kafka message timestamp → results durable, in µs (includes time spent
    /// in the topic before switchyard read it).
    pub event_latency_us: hdrhistogram::Histogram<u64>,
    /// From the first record to the last result.
    pub elapsed: Duration,
    /// Model executions and rows, per worker.
    pub batches: BTreeMap<String, (u64, u64)>,
    /// Times the consumer paused for backpressure.
    pub pauses: u64,
    /// Parquet rolls (each followed by an offset commit).
    pub rolls: u64,
    /// Where the tables are.
    pub tables: PathBuf,
    /// Feedback records written to the `feedback` table.
    pub feedback: u64,
    /// Bad feedback records sent to the DLQ (table, and topic with a Kafka sink).
    pub feedback_dlq: u64,
    /// Retrain triggers the monitor emitted.
    pub triggers: u64,
    /// Model version changes taken up while running (`event version: detail`).
    pub model_changes: Vec<String>,
    /// Ctrl-C or SIGTERM stopped the run before its source ended.
    pub interrupted: bool,
    /// Highest durable offset per input at the end (bounded runs).
    pub durable: Offsets,
}

impl Summary {
    /// Records per second over the run.
    pub fn rate(&self) -> f64 {
        self.records.saturating_sub(self.replayed) as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

enum Source {
    Kafka(KafkaSource),
    File(FileSource),
    Bounded(BoundedSource),
}

impl Source {
    /// The next chunk; `None` at the end; an error when a bounded source's
    /// input cannot be read.
    async fn next_chunk(&mut self) -> Option<anyhow::Result<Vec<RawRecord>>> {
        match self {
            Source::Kafka(k) => k.next_chunk().await.map(Ok),
            Source::File(f) => f.next_chunk().map(Ok),
            Source::Bounded(b) => b.next_chunk().await.map(|r| r.map_err(anyhow::Error::from)),
        }
    }
}

/// The stateless per-chunk work: decode, validate, pre-process, route, plan.
pub(crate) struct Stages {
    decoder: Decoder,
    pub(crate) pre: Preprocessor,
    router: Router,
    pub(crate) workers: Arc<Workers>,
}

/// A chunk on its way to the sink: events waiting for their answers.
struct Pending {
    chunk: Vec<RawRecord>,
    /// (index into chunk, event), in the order of the resolver's jobs.
    events: Vec<(usize, Event)>,
    /// `width` features per event.
    features: Arc<Vec<f32>>,
    answers: Option<JoinHandle<Resolved>>,
    dlq: Vec<DlqRecord>,
    offsets: Offsets,
    replayed: u64,
}

impl Stages {
    /// The stages of `loaded` with its workers started; rows carry `run_id`
    /// (empty for streaming). With `probe`, cloud endpoints are asked whether
    /// they are ready (a warning when not).
    pub(crate) async fn build(loaded: &Loaded, run_id: &str, probe: bool) -> anyhow::Result<Self> {
        let m = &loaded.manifest;
        let schema = Arc::new(m.schema.clone());
        let pre = Preprocessor::build(&m.preprocess, &schema)?;
        let router = m.routing.build(&schema, &loaded.route_kinds())?;
        let decoder = Decoder::new(
            schema.clone(),
            LineageContext {
                pipeline: m.name.clone(),
                manifest_hash: loaded.hash.clone(),
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
                    OnnxWorker::start(name, c, &loaded.base, pre.feature_names())
                        .with_context(|| format!("starting worker `{name}`"))?,
                )),
                other => {
                    let (protocol, c) = other.cloud().context("a non-local worker has cloud settings")?;
                    let worker =
                        CloudWorker::start(name, protocol, c, &loaded.base, &field_names, pre.width(), scanner.clone())
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
        Ok(Stages { decoder, pre, router, workers: Arc::new(Workers { list: workers }) })
    }

    /// Decodes, validates, routes and pre-processes one record: its event
    /// (lineage with the routing decision) and its job for the resolver, its
    /// features appended to `features`; or its DLQ record.
    pub(crate) fn admit(&self, raw: &RawRecord, features: &mut Vec<f32>) -> Result<(Event, Job), Box<DlqRecord>> {
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
        let job = Job {
            id: event.lineage.lineage_id.clone(),
            values: if cloud { event.values.clone() } else { Vec::new() },
            chain,
            shadow,
            deadline: plan.deadline,
            withheld: plan.withheld,
        };
        event.lineage.route = route;
        Ok((event, job))
    }

    fn prepare(&self, chunk: Vec<RawRecord>, durable: &Offsets, seen: &mut Offsets) -> Pending {
        let mut features: Vec<f32> = Vec::with_capacity(chunk.len() * self.pre.width());
        let mut jobs = Vec::with_capacity(chunk.len());
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
                Ok((event, job)) => {
                    jobs.push(job);
                    events.push((i, event));
                }
                Err(d) => dlq.push(*d),
            }
        }
        let features = Arc::new(features);
        let answers = (!jobs.is_empty())
            .then(|| tokio::spawn(resolve::resolve(self.workers.clone(), jobs, features.clone(), self.pre.width())));
        Pending { chunk, events, features, answers, dlq, offsets, replayed }
    }
}

/// Runs the pipeline of `loaded` until the source ends (bounded runs) or
/// Ctrl-C / SIGTERM, then makes everything durable and returns a summary.
pub async fn run(loaded: &Loaded, opts: RunOptions) -> anyhow::Result<Summary> {
    let problems = loaded.validate();
    if !problems.is_empty() {
        anyhow::bail!("{}: invalid manifest:\n{problems}", loaded.path.display());
    }
    let m = &loaded.manifest;
    let schema = Arc::new(m.schema.clone());
    let run_id = opts.backfill.as_ref().map(|b| b.run_id.clone()).unwrap_or_default();
    let stages = Stages::build(loaded, &run_id, true).await?;

    let SourceConfig::Kafka(kcfg) = &m.source;
    let mut kcfg = kcfg.clone();
    if let Some(b) = &opts.bootstrap_servers {
        kcfg.bootstrap_servers = b.clone();
    }
    let pq = m.sinks.parquet.as_ref().context("sinks.parquet is required")?;
    let tables = opts.tables.clone().or_else(|| loaded.tables_root()).context("sinks.parquet.path is required")?;
    let roll_interval = Duration::from_millis(pq.roll_interval_ms);
    let parquet = match &opts.backfill {
        Some(b) => ParquetSink::open_backfill(&tables, &b.run_id, pq.roll_max_rows, roll_interval),
        None => ParquetSink::open(&tables, pq.roll_max_rows, roll_interval),
    }
    .with_context(|| format!("opening tables at {}", tables.display()))?;
    let durable = parquet.durable_offsets().clone();
    let kafka_wanted = !opts.no_kafka_sink && opts.backfill.as_ref().is_none_or(|b| b.kafka);
    let kafka_sink = match (&m.sinks.kafka, kafka_wanted) {
        (Some(k), true) => {
            let bootstrap = k.bootstrap_servers.as_deref().unwrap_or(&kcfg.bootstrap_servers);
            if k.create_topics && !opts.skip_topic_creation {
                // Like Kafka Connect's DLQ: create missing output topics, but a
                // broker that refuses (no admin rights, mock cluster) is not fatal.
                let topics = [(k.results_topic.as_str(), k.topic_partitions), (k.dlq_topic.as_str(), 1)];
                let created =
                    tokio::time::timeout(Duration::from_secs(10), crate::kafka_util::create_topics(bootstrap, &topics))
                        .await;
                match created {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        tracing::warn!(error = %format!("{e:#}"), "could not create output topics; assuming they exist")
                    }
                    Err(_) => tracing::warn!("creating output topics timed out; assuming they exist"),
                }
            }
            Some(KafkaSink::new(k, &kcfg.bootstrap_servers)?)
        }
        _ => None,
    };

    let (mut source, committer, source_stats) = match (&opts.backfill, &opts.input_file) {
        (Some(b), _) => {
            let s = b.config.open(b.inputs.clone(), &durable, schema.clone(), kcfg.max_queued_chunks)?;
            (Source::Bounded(s), None, None)
        }
        (None, Some(path)) => (Source::File(FileSource::open(path, kcfg.chunk_size)?), None, None),
        (None, None) => {
            let startup = opts.startup_timeout.unwrap_or(Duration::from_secs(60));
            let k = KafkaSource::start(&kcfg, opts.idle_exit, startup)?;
            let (c, s) = (k.committer(), k.stats());
            (Source::Kafka(k), Some(c), Some(s))
        }
    };

    let (tx, rx) = mpsc::channel::<Pending>(kcfg.max_queued_chunks.max(1));
    let sink = SinkStage {
        kafka: kafka_sink,
        inflight: Default::default(),
        latency: Arc::new(std::sync::Mutex::new((histogram(), histogram()))),
        parquet,
        committer,
        workers: stages.workers.clone(),
        width: stages.pre.width(),
        summary: Summary {
            records: 0,
            predictions: 0,
            dlq: 0,
            replayed: 0,
            by_route: BTreeMap::new(),
            fallbacks: BTreeMap::new(),
            shadows: BTreeMap::new(),
            shadow_failed: 0,
            cloud: BTreeMap::new(),
            by_rule: BTreeMap::new(),
            dlq_by_class: BTreeMap::new(),
            latency_us: histogram(),
            event_latency_us: histogram(),
            elapsed: Duration::ZERO,
            batches: BTreeMap::new(),
            pauses: 0,
            rolls: 0,
            tables: tables.clone(),
            feedback: 0,
            feedback_dlq: 0,
            triggers: 0,
            model_changes: Vec::new(),
            interrupted: false,
            durable: Offsets::new(),
        },
        counters: opts.counters.clone().unwrap_or_default(),
        first: None,
        last: None,
        progress_every: opts.progress_every,
        last_progress: Instant::now(),
    };
    let sink_task = tokio::spawn(sink.run(rx, Duration::from_millis(pq.roll_interval_ms.clamp(50, 1000))));
    // The retraining loop's parts run beside a streaming pipeline and stop
    // with it; a backfill runs pinned versions and leaves monitoring to it.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (feedback_task, monitor_task, reload_tasks) = if opts.backfill.is_some() {
        (None, None, Vec::new())
    } else {
        (
            crate::monitor::spawn_feedback(
                loaded,
                &kcfg.bootstrap_servers,
                &tables,
                m.sinks.kafka.as_ref().filter(|_| kafka_wanted),
                stop_rx.clone(),
            )?,
            crate::monitor::build_monitor(loaded, &kcfg.bootstrap_servers, &tables)?
                .map(|m| crate::monitor::spawn_monitor(m, stop_rx.clone())),
            crate::monitor::spawn_reload(&stages.workers, &m.name, &tables, stop_rx),
        )
    };

    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    let mut seen = Offsets::new();
    let mut interrupted = false;
    let mut source_error = None;
    loop {
        let chunk = tokio::select! {
            c = source.next_chunk() => c,
            _ = &mut shutdown => {
                tracing::info!("shutting down: finishing in-flight records");
                interrupted = true;
                None
            }
        };
        let chunk = match chunk {
            None => break,
            Some(Ok(c)) => c,
            Some(Err(e)) => {
                // What was read before stays: it is made durable below.
                source_error = Some(e);
                break;
            }
        };
        let pending = stages.prepare(chunk, &durable, &mut seen);
        if tx.send(pending).await.is_err() {
            break; // the sink stage failed; its error is reported below
        }
    }
    drop(tx);
    let mut summary = sink_task.await.context("sink stage panicked")??;
    summary.interrupted = interrupted;
    if let Some(e) = source_error {
        return Err(e.context(format!(
            "reading the source stopped the run ({} records read before it are durable; run again to resume)",
            summary.records
        )));
    }
    let _ = stop_tx.send(true);
    if let Some(t) = feedback_task {
        let f = t.await.context("feedback consumer panicked")??;
        (summary.feedback, summary.feedback_dlq) = (f.records, f.dlq);
    }
    if let Some(t) = monitor_task {
        summary.triggers = t.await.context("monitor panicked")?;
    }
    for t in reload_tasks {
        summary.model_changes.extend(t.await.context("model reload task panicked")?);
    }
    if let Some(s) = source_stats {
        summary.pauses = s.pauses.load(std::sync::atomic::Ordering::Relaxed);
    }
    for (name, w) in &stages.workers.list {
        match w {
            Worker::Local(w) => {
                let s = w.stats();
                let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
                summary.batches.insert(name.clone(), (load(&s.batches), load(&s.rows)));
            }
            Worker::Cloud(c) => {
                summary.cloud.insert(name.clone(), c.snapshot());
            }
        }
    }
    if let Source::Kafka(k) = source {
        k.stop().await?;
    }
    Ok(summary)
}

/// Resolves on Ctrl-C or SIGTERM.
pub(crate) async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(t) => t,
            Err(_) => return std::future::pending().await,
        };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// Chunks whose Kafka acknowledgements may be outstanding at once.
const MAX_INFLIGHT_CHUNKS: usize = 64;

type Latencies = Arc<std::sync::Mutex<(hdrhistogram::Histogram<u64>, hdrhistogram::Histogram<u64>)>>;

/// Records, for rows made durable now, receipt → now and Kafka timestamp → now.
fn record_latency(latency: &Latencies, rows: &[(i64, Option<i64>)]) {
    let now = now_us();
    if let Ok(mut h) = latency.lock() {
        for &(received, kafka_ms) in rows {
            let _ = h.0.record((now - received).max(1) as u64);
            if let Some(ms) = kafka_ms {
                let _ = h.1.record((now - ms * 1000).max(1) as u64);
            }
        }
    }
}

fn histogram() -> hdrhistogram::Histogram<u64> {
    hdrhistogram::Histogram::new_with_bounds(1, 24 * 3_600_000_000, 3).expect("valid histogram bounds")
}

struct SinkStage {
    kafka: Option<KafkaSink>,
    inflight: std::collections::VecDeque<JoinHandle<anyhow::Result<()>>>,
    latency: Latencies,
    parquet: ParquetSink,
    committer: Option<KafkaCommitter>,
    workers: Arc<Workers>,
    width: usize,
    summary: Summary,
    first: Option<i64>,
    /// When the last chunk's results were written (idle time after it is not
    /// part of the measured run).
    last: Option<i64>,
    progress_every: Option<Duration>,
    last_progress: Instant,
    counters: Arc<Counters>,
}

/// A result row from a worker's answer; the lineage names the model.
fn prediction(
    key: String,
    answer: resolve::Answer,
    features: Vec<f32>,
    answered_us: i64,
    mut lineage: switchyard_schemas::Lineage,
) -> Prediction {
    lineage.model = answer.model;
    Prediction {
        key,
        score: answer.score,
        label: answer.label,
        outputs: answer.outputs,
        features,
        latency_us: answered_us - lineage.ingest_time_us,
        lineage,
    }
}

fn now_us() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

impl SinkStage {
    async fn run(mut self, mut rx: mpsc::Receiver<Pending>, tick_every: Duration) -> anyhow::Result<Summary> {
        let mut tick = tokio::time::interval(tick_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                p = rx.recv() => match p {
                    Some(p) => self.handle(p).await?,
                    None => break,
                },
                _ = tick.tick() => {
                    if self.parquet.roll_due() {
                        self.roll_and_commit().await?;
                    }
                    self.progress();
                }
            }
        }
        self.roll_and_commit().await?;
        self.summary.durable = self.parquet.durable_offsets().clone();
        let (latency, event_latency) = {
            let h = self.latency.lock().map_err(|_| anyhow::anyhow!("latency lock poisoned"))?;
            h.clone()
        };
        self.summary.latency_us = latency;
        self.summary.event_latency_us = event_latency;
        if let (Some(first), Some(last)) = (self.first, self.last) {
            self.summary.elapsed = Duration::from_micros((last - first).max(1) as u64);
        }
        Ok(self.summary)
    }

    fn progress(&mut self) {
        let Some(every) = self.progress_every else { return };
        if self.last_progress.elapsed() >= every {
            self.last_progress = Instant::now();
            let s = &self.summary;
            let secs = self.first.map_or(0.0, |f| (now_us() - f) as f64 / 1e6);
            eprintln!(
                "[{secs:7.1}s] records {:>9}  results {:>9}  dlq {:>6}  {:>9.0} rec/s",
                s.records,
                s.predictions,
                s.dlq,
                s.records as f64 / secs.max(1e-9)
            );
        }
    }

    async fn handle(&mut self, p: Pending) -> anyhow::Result<()> {
        let Pending { chunk, events, features, answers, mut dlq, offsets, replayed } = p;
        if self.first.is_none() {
            self.first = chunk.iter().map(|r| r.received_us).min();
        }
        self.summary.records += chunk.len() as u64;
        self.summary.replayed += replayed;
        let resolved = match answers {
            None => Resolved { outcomes: Vec::new(), shadows: Vec::new(), shadow_failed: 0 },
            Some(h) => h.await.context("resolver task failed")?,
        };
        anyhow::ensure!(resolved.outcomes.len() == events.len(), "internal error: an event without an outcome");
        let answered_us = now_us();
        let row_features = |j: usize| features[j * self.width..(j + 1) * self.width].to_vec();
        let mut preds = Vec::with_capacity(events.len());
        // Lineage and key of served events, kept when shadow answers need them.
        let mut served: Vec<Option<(switchyard_schemas::Lineage, String)>> =
            if resolved.shadows.is_empty() { Vec::new() } else { vec![None; events.len()] };
        for (j, ((i, event), outcome)) in events.into_iter().zip(resolved.outcomes).enumerate() {
            match outcome {
                Outcome::Served { worker, answer, fallback } => {
                    let mut lineage = event.lineage;
                    let name = self.workers.name(worker).to_string();
                    if let Some(why) = fallback {
                        *self.summary.fallbacks.entry(name.clone()).or_default() += 1;
                        lineage.fallback = true;
                        lineage.route.reason = format!("{}; fallback to `{name}`: {why}", lineage.route.reason);
                    }
                    lineage.route.route = name;
                    if let Some(note) = resolve::rollout_note(&answer) {
                        lineage.route.reason = format!("{}; {note}", lineage.route.reason);
                    }
                    if !resolved.shadows.is_empty() {
                        served[j] = Some((lineage.clone(), event.key.clone()));
                    }
                    preds.push(prediction(event.key, answer, row_features(j), answered_us, lineage));
                }
                Outcome::Failed { class, message } => {
                    dlq.push(DlqRecord::from_raw(
                        &chunk[i],
                        event.lineage.lineage_id,
                        Stage::Infer,
                        class,
                        message,
                        event.lineage.pipeline,
                    ));
                }
            }
        }
        // Shadow answers: Parquet rows marked `shadow`, for comparison; the
        // results topic carries only the answers that count.
        let mut shadow_rows = Vec::with_capacity(resolved.shadows.len());
        self.summary.shadow_failed += resolved.shadow_failed;
        for (j, w, answer) in resolved.shadows {
            let Some((lineage, key)) = served.get(j).and_then(Option::as_ref) else { continue };
            let mut lineage = lineage.clone();
            let name = self.workers.name(w).to_string();
            *self.summary.shadows.entry(name.clone()).or_default() += 1;
            lineage.shadow = true;
            lineage.fallback = false;
            lineage.route.reason = match resolve::rollout_note(&answer) {
                Some(note) => format!("{}; shadow copy to `{name}` ({note})", lineage.route.reason),
                None => format!("{}; shadow copy to `{name}`", lineage.route.reason),
            };
            lineage.route.route = name;
            shadow_rows.push(prediction(key.clone(), answer, row_features(j), answered_us, lineage));
        }
        let ingest_us: Vec<(i64, Option<i64>)> =
            preds.iter().map(|p| (p.lineage.ingest_time_us, p.lineage.kafka_timestamp_ms)).collect();
        for p in &preds {
            *self.summary.by_route.entry(p.lineage.route.route.clone()).or_default() += 1;
            *self.summary.by_rule.entry(p.lineage.route.rule_id.clone()).or_default() += 1;
        }
        match &self.kafka {
            Some(k) => {
                // Acknowledgements are awaited off the hot path; every one must
                // have arrived before the next offset commit (see `roll_and_commit`).
                let results = k.send_predictions(&preds).await.context("writing results to Kafka")?;
                let dead = k.send_dlq(&dlq).await.context("writing to the DLQ topic")?;
                let latency = self.latency.clone();
                self.inflight.push_back(tokio::spawn(async move {
                    results.wait().await.context("results topic did not acknowledge")?;
                    dead.wait().await.context("DLQ topic did not acknowledge")?;
                    record_latency(&latency, &ingest_us);
                    Ok(())
                }));
                while self.inflight.len() > MAX_INFLIGHT_CHUNKS {
                    self.await_oldest().await?;
                }
            }
            None => record_latency(&self.latency, &ingest_us),
        }
        for d in &dlq {
            *self.summary.dlq_by_class.entry(d.error_class.as_str().to_string()).or_default() += 1;
        }
        self.summary.predictions += preds.len() as u64;
        self.summary.dlq += dlq.len() as u64;
        {
            use std::sync::atomic::Ordering::Relaxed;
            self.counters.records.fetch_add(chunk.len() as u64, Relaxed);
            self.counters.results.fetch_add(preds.len() as u64, Relaxed);
            self.counters.dlq.fetch_add(dlq.len() as u64, Relaxed);
        }
        tokio::task::block_in_place(|| -> anyhow::Result<()> {
            self.parquet.write_predictions(&preds)?;
            if !shadow_rows.is_empty() {
                self.parquet.write_predictions(&shadow_rows)?;
            }
            self.parquet.write_dlq(&dlq)?;
            Ok(())
        })?;
        self.parquet.note_offsets(&offsets);
        if self.parquet.roll_due() {
            self.roll_and_commit().await?;
        }
        self.last = Some(now_us());
        self.progress();
        Ok(())
    }

    async fn await_oldest(&mut self) -> anyhow::Result<()> {
        if let Some(h) = self.inflight.pop_front() {
            h.await.context("delivery task panicked")??;
        }
        Ok(())
    }

    async fn roll_and_commit(&mut self) -> anyhow::Result<()> {
        // Results of everything in this roll must be acknowledged by Kafka
        // before the roll's offsets may be committed.
        while !self.inflight.is_empty() {
            self.await_oldest().await?;
        }
        let roll = tokio::task::block_in_place(|| self.parquet.roll()).context("rolling Parquet files")?;
        if roll.offsets.is_empty() {
            return Ok(());
        }
        self.summary.rolls += 1;
        if let Some(c) = &self.committer {
            let next: HashMap<(String, i32), i64> = roll.offsets.into_iter().map(|(k, v)| (k, v + 1)).collect();
            // A failed commit loses nothing: the records are replayed and
            // recognised as durable. Log and go on.
            if let Err(e) = tokio::task::block_in_place(|| c.commit(&next)) {
                tracing::warn!(error = %e, "offset commit failed; the next roll commits again");
            }
        }
        Ok(())
    }
}
