//! `switchyard run` (and the demo): a streaming run of a plan. Opens the
//! tables, the Kafka sink and the source — the consumer group, or a JSON
//! Lines file — and starts the retraining loop's side tasks (feedback
//! consumer, monitor, model reload), then hands them to the pipeline.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use switchyard_ingest::{FileSource, KafkaSource};
use switchyard_sink::ParquetSink;

use crate::manifest::Plan;
use crate::pipeline::{self, SideTasks, Sinks, Source, Stages, Summary};

/// How a streaming run goes.
#[derive(Debug, Clone, Default)]
pub struct StreamOptions {
    /// Stop once no record has arrived for this long (tests, demo).
    pub idle_exit: Option<Duration>,
    /// With `idle_exit`: how long to wait for the very first record.
    pub startup_timeout: Option<Duration>,
    /// Read records from this JSON Lines file instead of Kafka.
    pub input_file: Option<PathBuf>,
    /// Skip the Kafka sink (results only to Parquet).
    pub no_kafka_sink: bool,
    /// Do not try to create missing output topics (brokers without the admin API).
    pub skip_topic_creation: bool,
    /// Print a progress line this often (none when `None`).
    pub progress_every: Option<Duration>,
}

/// Runs `plan` until Ctrl-C / SIGTERM (or idle), then returns its summary.
pub async fn stream(plan: &Plan, opts: StreamOptions) -> anyhow::Result<Summary> {
    let stages = Stages::build(plan, "", true).await?;
    let kafka = if opts.no_kafka_sink { None } else { pipeline::kafka_sink(plan, !opts.skip_topic_creation).await? };
    let pq = &plan.parquet;
    let parquet = ParquetSink::open(&plan.tables, pq.roll_max_rows, Duration::from_millis(pq.roll_interval_ms))
        .with_context(|| format!("opening tables at {}", plan.tables.display()))?;
    let source = match &opts.input_file {
        Some(path) => Source::File(FileSource::open(path, plan.source.chunk_size)?),
        None => {
            switchyard_ingest::check_brokers(&plan.source).await?;
            let startup = opts.startup_timeout.unwrap_or(Duration::from_secs(60));
            Source::Kafka(KafkaSource::start(&plan.source, opts.idle_exit, startup)?)
        }
    };
    let mut side = SideTasks::new();
    if let Some(t) = crate::feedback::spawn(plan, !opts.no_kafka_sink, side.stop_signal())? {
        side.add("feedback consumer", t);
    }
    if let Some(m) = crate::monitor::build(plan)? {
        side.add("monitor", crate::monitor::spawn(m, side.stop_signal()));
    }
    for t in crate::reload::spawn(&stages.workers, &plan.manifest().name, &plan.tables, side.stop_signal()) {
        side.add("model reload task", t);
    }
    let mut run = pipeline::options(plan);
    run.progress_every = opts.progress_every;
    pipeline::run(&stages, source, Sinks { parquet, kafka }, side, run).await
}
