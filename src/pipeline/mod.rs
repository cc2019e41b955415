//! The streaming pipeline: wires `ingest → router → workers → sink`.
//!
//! ```text
//!  source ──chunk──▶ prepare: decode, validate, pre-process, route, assign ──▶ dispatch (one task per chunk):
//!                                                local batchers / cloud endpoints, fallbacks, shadows
//!                                                                          │ outcomes, in chunk order
//!                    commit offsets ◀── roll Parquet ◀── results + DLQ to Kafka ◀┘  (deliver)
//! ```
//!
//! The caller opens the [`Source`] and the [`Sinks`] and starts the
//! [`SideTasks`] (feedback consumer, monitor, model reload for a streaming
//! run; none for a backfill); [`run`] drives the chunks through and stops
//! the side tasks when the source ends or Ctrl-C / SIGTERM arrives.
//!
//! Chunks flow through bounded channels, so a slow model or sink pauses the
//! Kafka consumer. Offsets are committed only after a Parquet roll made the
//! rows before them durable (and Kafka acknowledged their results), so a
//! crash loses nothing; rows already durable are recognised on replay and
//! skipped, so a crash adds no duplicates either.

mod deliver;
mod prepare;
mod source;
mod summary;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use switchyard_ingest::SourceEvent;
use switchyard_sink::{KafkaSink, Offsets, ParquetSink};
use switchyard_workers::dispatch::Worker;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use self::deliver::{Deliver, ToDeliver};
pub(crate) use self::prepare::StageTimes;
pub use self::prepare::Stages;
pub use self::source::Source;
pub use self::summary::{Counters, Summary};
use crate::signal::shutdown_signal;

/// Where a run's results go.
pub struct Sinks {
    /// The Parquet tables (required: their rolls are the checkpoint).
    pub parquet: ParquetSink,
    /// The results and DLQ topics, when the run writes to Kafka.
    pub kafka: Option<KafkaSink>,
}

/// What a side task reports when it stops.
pub enum SideReport {
    /// The feedback consumer: records written, bad records sent to the DLQ.
    Feedback {
        /// Feedback records written.
        records: u64,
        /// Bad feedback records.
        dlq: u64,
    },
    /// The monitor: retrain triggers emitted.
    Triggers(u64),
    /// A model reload task: the version changes it took up.
    ModelChanges(Vec<String>),
}

/// Tasks that run beside the pipeline and stop with it.
pub struct SideTasks {
    stop: watch::Sender<bool>,
    tasks: Vec<(&'static str, JoinHandle<anyhow::Result<SideReport>>)>,
}

impl SideTasks {
    /// No side tasks yet; those added get [`SideTasks::stop_signal`].
    pub fn new() -> Self {
        Self { stop: watch::channel(false).0, tasks: Vec::new() }
    }

    /// The signal a side task stops on (it turns true).
    pub fn stop_signal(&self) -> watch::Receiver<bool> {
        self.stop.subscribe()
    }

    /// Adds a started task; `what` names it in errors.
    pub fn add(&mut self, what: &'static str, task: JoinHandle<anyhow::Result<SideReport>>) {
        self.tasks.push((what, task));
    }

    /// Stops every task after the run failed, ignoring what they report.
    async fn stop(self) {
        let _ = self.stop.send(true);
        for (what, task) in self.tasks {
            if let Ok(Err(e)) = task.await {
                tracing::warn!(task = what, error = %format!("{e:#}"), "side task failed while stopping");
            }
        }
    }

    /// Stops every task and adds what each reports to `summary`.
    async fn finish(self, summary: &mut Summary) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        for (what, task) in self.tasks {
            match task.await.with_context(|| format!("{what} panicked"))?? {
                SideReport::Feedback { records, dlq } => (summary.feedback, summary.feedback_dlq) = (records, dlq),
                SideReport::Triggers(n) => summary.triggers += n,
                SideReport::ModelChanges(c) => summary.model_changes.extend(c),
            }
        }
        Ok(())
    }
}

impl Default for SideTasks {
    fn default() -> Self {
        Self::new()
    }
}

/// How a run goes.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Chunks that may wait between preparation and delivery.
    pub max_queued_chunks: usize,
    /// How often the sink checks whether a roll is due.
    pub roll_check: Duration,
    /// Print a progress line this often (none when `None`).
    pub progress_every: Option<Duration>,
    /// Counters the caller may watch while the run goes on (progress bars).
    pub counters: Option<Arc<Counters>>,
    /// The priority lane: its model requests go ahead of every queued one.
    pub urgent: bool,
    /// Ends the run as the source ending would, when it turns true (the
    /// priority lane stops with the main one).
    pub stop: Option<watch::Receiver<bool>>,
}

/// Runs `stages` over `source` into `sinks` until the source ends (bounded
/// runs, `--idle-exit-ms`) or Ctrl-C / SIGTERM, then makes everything
/// durable, stops the side tasks and returns a summary.
pub async fn run(
    stages: &Stages,
    mut source: Source,
    sinks: Sinks,
    side: SideTasks,
    opts: RunOptions,
) -> anyhow::Result<Summary> {
    let Sinks { parquet, kafka } = sinks;
    let mut durable = parquet.durable_index();
    let (committer, source_stats) = (source.committer(), source.stats());
    let (tx, rx) = mpsc::channel::<ToDeliver>(opts.max_queued_chunks.max(1));
    let deliver = Deliver {
        kafka,
        inflight: Default::default(),
        latency: Arc::new(std::sync::Mutex::new(deliver::LatencyBook::new())),
        summary: Summary::new(parquet.root().clone()),
        parquet,
        committer,
        workers: stages.workers.clone(),
        width: stages.pre.width(),
        counters: opts.counters.clone().unwrap_or_default(),
        uncommitted: Default::default(),
        owned: Default::default(),
        partitions_total: 0,
        first: None,
        last: None,
        progress_every: opts.progress_every,
        last_progress: Instant::now(),
        rolling: None,
        committing: None,
    };
    let deliver_task = tokio::spawn(deliver.run(rx, opts.roll_check));

    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    let stopped = stopped(opts.stop.clone());
    tokio::pin!(stopped);
    let mut seen = Offsets::new();
    let mut interrupted = false;
    let mut source_error = None;
    loop {
        let event = tokio::select! {
            c = source.next() => c,
            _ = &mut shutdown => {
                tracing::info!("shutting down: finishing in-flight records");
                interrupted = true;
                None
            }
            _ = &mut stopped => None,
            // Delivery ended (it failed): waiting for more records would
            // hold its error back until some arrived.
            _ = tx.closed() => None,
        };
        let event = match event {
            None => break,
            Some(Ok(e)) => e,
            Some(Err(e)) => {
                // What was read before stays: it is made durable below.
                source_error = Some(e);
                break;
            }
        };
        let next = match event {
            SourceEvent::Records(chunk) => {
                // Registry formats: the chunk's new schema ids first (a
                // registry outage holds the chunk here, and the consumer
                // pauses behind it).
                tokio::select! {
                    _ = stages.resolve(&chunk) => {}
                    _ = &mut shutdown => {
                        tracing::info!("shutting down: finishing in-flight records");
                        interrupted = true;
                        break;
                    }
                }
                ToDeliver::Chunk(Box::new(stages.prepare(chunk, durable.offsets(), &mut seen, opts.urgent)))
            }
            SourceEvent::Assigned(parts) => {
                // Their previous owner may have made more durable than it
                // committed (it crashed between a roll and its commit).
                if let Err(e) = tokio::task::block_in_place(|| durable.refresh()) {
                    source_error = Some(anyhow::Error::new(e).context("reading the roll manifests"));
                    break;
                }
                for p in &parts {
                    seen.remove(p);
                }
                ToDeliver::Assigned(parts)
            }
            SourceEvent::Revoked { partitions, lost, done } => {
                for p in &partitions {
                    seen.remove(p);
                }
                ToDeliver::Revoked { partitions, lost, done }
            }
        };
        if tx.send(next).await.is_err() {
            break; // delivery failed; its error is reported below
        }
    }
    drop(tx);
    let delivered = deliver_task.await.context("delivery panicked").and_then(|r| r);
    let mut summary = match delivered {
        Ok(s) => s,
        Err(e) => {
            // Nothing more is made durable or committed: stop the rest.
            side.stop().await;
            if let Err(stop) = source.stop().await {
                tracing::warn!(error = %format!("{stop:#}"), "stopping the source after a failed delivery");
            }
            return Err(e);
        }
    };
    summary.interrupted = interrupted;
    if let Some(e) = source_error {
        return Err(e.context(format!(
            "reading the source stopped the run ({} records read before it are durable; run again to resume)",
            summary.records
        )));
    }
    side.finish(&mut summary).await?;
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
    source.stop().await?;
    Ok(summary)
}

/// Resolves once `stop` turns true; never without one.
async fn stopped(stop: Option<watch::Receiver<bool>>) {
    match stop {
        Some(mut s) => {
            let _ = s.wait_for(|v| *v).await;
        }
        None => std::future::pending().await,
    }
}

/// The results and DLQ producer of `plan`, creating missing output topics
/// unless told not to; transactional with `transactional_id`.
pub async fn kafka_sink(
    plan: &crate::manifest::Plan,
    create_topics: bool,
    transactional_id: Option<&str>,
) -> anyhow::Result<Option<KafkaSink>> {
    let Some(k) = &plan.kafka else { return Ok(None) };
    if k.create_topics && create_topics {
        // Like Kafka Connect's DLQ: create missing output topics (with the
        // broker's default replication), but a broker that refuses (no admin
        // rights) is not fatal.
        let topics = [(k.results_topic.as_str(), k.topic_partitions), (k.dlq_topic.as_str(), 1)];
        let config = k.client_config(&plan.source.bootstrap_servers)?;
        let created =
            tokio::time::timeout(Duration::from_secs(10), crate::kafka_util::create_topics(&config, &topics, -1)).await;
        match created {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %format!("{e:#}"), "could not create output topics; assuming they exist")
            }
            Err(_) => tracing::warn!("creating output topics timed out; assuming they exist"),
        }
    }
    let brokers = &plan.source.bootstrap_servers;
    let sink = match transactional_id {
        Some(id) => tokio::task::block_in_place(|| KafkaSink::transactional(k, brokers, id)).with_context(|| {
            format!("starting the transactional producer `{id}` (sinks.kafka.delivery: exactly_once)")
        })?,
        None => KafkaSink::new(k, brokers)?,
    };
    let sink = match k.value_format {
        switchyard_sink::ValueFormat::Json => sink,
        switchyard_sink::ValueFormat::Avro => {
            let (cfg, section) = match (&k.registry, &plan.manifest().schema.registry) {
                (Some(r), _) => (r, "sinks.kafka.registry"),
                (None, Some(r)) => (r, "schema.registry"),
                (None, None) => anyhow::bail!("sinks.kafka.value_format `avro` needs `sinks.kafka.registry`"),
            };
            let client = switchyard_ingest::RegistryClient::new(cfg, &plan.loaded.base, section)?;
            let subject = format!("{}-value", k.results_topic);
            let id = client.register(&subject, switchyard_sink::RESULT_SCHEMA).await?;
            tracing::info!(subject, schema_id = id, registry = client.url(), "results are written as Avro");
            sink.with_avro(switchyard_sink::AvroResults::new(id))
        }
    };
    // Not fatal: a missing topic may be created later, and its records then
    // wait in the producer as they would have anyway.
    if let Err(e) = tokio::task::block_in_place(|| sink.warm_up(Duration::from_secs(10))) {
        tracing::warn!(error = %e, "could not read the output topics' metadata before the first results");
    }
    Ok(Some(sink))
}

/// Run options from `plan`: its queue depth and roll interval.
pub fn options(plan: &crate::manifest::Plan) -> RunOptions {
    RunOptions {
        max_queued_chunks: plan.source.max_queued_chunks,
        roll_check: Duration::from_millis(plan.parquet.roll_interval_ms.clamp(50, 1000)),
        progress_every: None,
        counters: None,
        urgent: false,
        stop: None,
    }
}
