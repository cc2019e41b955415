//! `switchyard run` (and the demo): a streaming run of a plan. Opens the
//! tables, the Kafka sink and the source — the consumer group, or a JSON
//! Lines file — and starts the retraining loop's side tasks (feedback
//! consumer, monitor, model reload), then hands them to the pipeline.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use switchyard_ingest::{FileSource, KafkaSource};
use switchyard_schemas::{notice, AuditEvent, Notice};
use switchyard_sink::{Delivery, ParquetSink, TableRoot};

use crate::manifest::Plan;
use crate::pipeline::{self, SideTasks, Sinks, Source, Stages, Summary};
use crate::telemetry::lineage::RunEvents;
use crate::telemetry::{self, AuditLog, Health};

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
    /// Serve `/metrics`, `/healthz` and `/readyz` here (overrides `service.listen`).
    pub listen: Option<String>,
}

/// Runs `plan` until Ctrl-C / SIGTERM (or idle), then returns its summary.
pub async fn stream(plan: &Plan, opts: StreamOptions) -> anyhow::Result<Summary> {
    let service = &plan.manifest().service;
    crate::signal::install(Duration::from_millis(service.shutdown_timeout_ms));
    let health = Arc::new(Health::default());
    telemetry::trace::init_from_env()?;
    if let Some(listen) = opts.listen.as_ref().or(service.listen.as_ref()) {
        let addr: SocketAddr =
            listen.parse().with_context(|| format!("--listen: `{listen}` is not a host:port address"))?;
        let metrics = if service.metrics { Some(telemetry::install_metrics()?) } else { None };
        telemetry::note_pipeline(&plan.manifest().name);
        telemetry::serve(addr, metrics, health.clone()).await?;
    }
    let lineage = match &service.openlineage {
        Some(c) => Some(RunEvents::start(c, plan, opts.input_file.is_none() && !opts.no_kafka_sink).await),
        None => None,
    };
    let summary = loop {
        match run_plan(plan, opts.clone(), &health).await {
            Err(e) if is_storage_error(&e) && !crate::signal::requested() => {
                // Nothing after the last durable roll was committed: wait for
                // the tables to be writable, then start again from the
                // group's committed offsets (a replay is skipped as durable).
                health.sinks_open.store(false, Ordering::Relaxed);
                tracing::error!(
                    tables = %plan.tables,
                    error = %format!("{e:#}"),
                    "the tables cannot be written: consuming stopped and nothing unwritten was committed; \
                     waiting for them to be writable again"
                );
                notice(Notice::new(AuditEvent::Stopped, "pipeline", format!("tables unwritable: {e:#}")));
                if !wait_writable(&plan.tables).await {
                    break Err(e);
                }
                tracing::info!(tables = %plan.tables, "the tables are writable again: resuming");
                health.stopping.store(false, Ordering::Relaxed);
            }
            Err(e) if is_aborted_transaction(&e) && !crate::signal::requested() => {
                // The transaction and its prepared roll were discarded and
                // nothing after the last commit is durable: start again from
                // the group's committed offsets (a rebalance that changed the
                // group's generation during the commit is the usual cause).
                tracing::warn!(
                    error = %format!("{e:#}"),
                    "the Kafka transaction was aborted: starting again from the committed offsets"
                );
                notice(Notice::new(AuditEvent::Stopped, "pipeline", format!("transaction aborted: {e:#}")));
                health.stopping.store(false, Ordering::Relaxed);
            }
            other => break other,
        }
    };
    if let Some(l) = lineage {
        l.finish(summary.as_ref().err().map(|e| format!("{e:#}"))).await;
    }
    summary
}

/// [`stream`] once the service is up: the stages, sinks and source of
/// `plan`, run until the source ends or a signal.
async fn run_plan(plan: &Plan, opts: StreamOptions, health: &Health) -> anyhow::Result<Summary> {
    if opts.input_file.is_none() {
        check_brokers(plan, !opts.no_kafka_sink).await?;
    }
    let audit = AuditLog::start(plan.tables.clone(), plan.manifest().name.clone());
    loaded(plan);
    if opts.input_file.is_none() && plan.source.priority_lane().is_some() {
        // The lane shares the model threads: they run at its priority.
        switchyard_workers::set_model_thread_nice(LANE_NICE);
    }
    let stages = Arc::new(Stages::build(plan, "", true).await?);
    telemetry::note_models(&stages.workers);
    health.models_loaded.store(true, Ordering::Relaxed);
    // Transactions need a Kafka source (their offsets commit with them).
    let exactly_once = !opts.no_kafka_sink
        && opts.input_file.is_none()
        && plan.kafka.as_ref().is_some_and(|k| k.delivery == Delivery::ExactlyOnce);
    let parquet = open_tables(plan, exactly_once)?;
    share_budgets(&stages.workers, &plan.tables, parquet.writer_id())?;
    let kafka = if opts.no_kafka_sink {
        None
    } else {
        let txn_id = transactional_id(plan, exactly_once, &parquet);
        pipeline::kafka_sink(plan, !opts.skip_topic_creation, txn_id.as_deref()).await?
    };
    health.sinks_open.store(true, Ordering::Relaxed);
    let lane = match (&opts.input_file, plan.source.priority_lane()) {
        (None, Some(config)) => Some(Lane::start(plan.clone(), config, stages.clone(), &opts, exactly_once).await?),
        _ => None,
    };
    let source = match &opts.input_file {
        Some(path) => {
            health.no_consumer.store(true, Ordering::Relaxed);
            Source::File(FileSource::open(path, plan.source.chunk_size)?)
        }
        None => {
            let startup = opts.startup_timeout.unwrap_or(Duration::from_secs(60));
            let source = KafkaSource::start(&plan.source, opts.idle_exit, startup)?;
            health.watch_consumer(source.stats());
            Source::Kafka(source)
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
    run.stop = lane.as_ref().map(|l| l.failed.clone());
    let summary = pipeline::run(&stages, source, Sinks { parquet, kafka }, side, run).await;
    let summary = match lane {
        None => summary,
        Some(lane) => {
            let lane = lane.finish().await;
            match (summary, lane) {
                (Ok(mut s), Ok(l)) => {
                    s.absorb(l);
                    Ok(s)
                }
                (Err(e), _) => Err(e),
                (Ok(_), Err(e)) => Err(e.context("the priority lane (source.priority) failed")),
            }
        }
    };
    health.stopping.store(true, Ordering::Relaxed);
    let detail = match &summary {
        Ok(s) => format!(
            "{}: {} records, {} results, {} to the DLQ, every result durable and its offset committed",
            if s.interrupted { "stopped by a signal" } else { "the source ended" },
            s.records,
            s.predictions,
            s.dlq
        ),
        Err(e) => format!("failed: {e:#}"),
    };
    notice(Notice::new(AuditEvent::Stopped, "pipeline", detail));
    audit.finish().await;
    telemetry::trace::flush().await;
    summary
}

/// The tables of a run: one writer, with its own lease and rolls.
fn open_tables(plan: &Plan, exactly_once: bool) -> anyhow::Result<ParquetSink> {
    let pq = &plan.parquet;
    let interval = Duration::from_millis(pq.roll_interval_ms);
    if exactly_once {
        ParquetSink::open_transactional(&plan.tables, pq.roll_max_rows, interval)
    } else {
        ParquetSink::open(&plan.tables, pq.roll_max_rows, interval)
    }
    .with_context(|| format!("opening tables at {}", plan.tables))
}

/// One transactional id per writer (its writer id): a new worker never
/// fences a live one; zombies are fenced by the group's generation.
fn transactional_id(plan: &Plan, exactly_once: bool, parquet: &ParquetSink) -> Option<String> {
    exactly_once.then(|| format!("switchyard-{}-{}", plan.source.group_id, parquet.writer_id()))
}

/// The priority lane (`source.priority`): a second consumer in the group,
/// reading only the lane's topics, with its own producer and Parquet writer
/// and its own threads, so its records are never queued behind the main
/// lane's; the model workers are shared, and its requests go first.
struct Lane {
    thread: std::thread::JoinHandle<anyhow::Result<Summary>>,
    /// Stops the lane (the main lane ended).
    stop: tokio::sync::watch::Sender<bool>,
    /// Turns true when the lane failed (the main lane then stops too).
    failed: tokio::sync::watch::Receiver<bool>,
}

impl Lane {
    /// Starts the lane on a runtime of its own; returns once its consumer,
    /// producer and writer are open, or with the error that stopped them.
    async fn start(
        mut plan: Plan,
        source: switchyard_ingest::KafkaSourceConfig,
        stages: Arc<Stages>,
        opts: &StreamOptions,
        exactly_once: bool,
    ) -> anyhow::Result<Self> {
        let topics = source.topics.join(", ");
        if let Some(k) = plan.kafka.as_mut() {
            // Its results go as they come: a few records per request, at
            // once, rather than waiting to fill bigger ones.
            k.properties.entry("linger.ms".into()).or_insert_with(|| "0".into());
        }
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let (failed_tx, failed) = tokio::sync::watch::channel(false);
        let (ready_tx, ready) = tokio::sync::oneshot::channel::<anyhow::Result<()>>();
        let no_kafka_sink = opts.no_kafka_sink;
        let thread = std::thread::Builder::new()
            .name("sy-priority-lane".into())
            .spawn(move || {
                // Threads started from here (the runtime's, the Kafka
                // clients') inherit this one's scheduling priority.
                raise_priority();
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .thread_name("sy-priority")
                    .enable_all()
                    .build()
                    .context("starting the priority lane's runtime")?;
                runtime.block_on(async move {
                    let opened = async {
                        let parquet = open_tables(&plan, exactly_once)?;
                        let kafka = if no_kafka_sink {
                            None
                        } else {
                            let txn_id = transactional_id(&plan, exactly_once, &parquet);
                            pipeline::kafka_sink(&plan, false, txn_id.as_deref()).await?
                        };
                        let source = KafkaSource::start(&source, None, Duration::from_secs(60))
                            .context("starting the priority lane's consumer (source.priority)")?;
                        anyhow::Ok((parquet, kafka, source))
                    };
                    let (parquet, kafka, source) = match opened.await {
                        Ok(o) => {
                            let _ = ready_tx.send(Ok(()));
                            o
                        }
                        Err(e) => {
                            let msg = format!("{e:#}");
                            let _ = ready_tx.send(Err(e));
                            anyhow::bail!("{msg}");
                        }
                    };
                    let mut run = pipeline::options(&plan);
                    run.urgent = true;
                    run.stop = Some(stop_rx);
                    let sinks = Sinks { parquet, kafka };
                    let summary = pipeline::run(&stages, Source::Kafka(source), sinks, SideTasks::new(), run).await;
                    if summary.is_err() {
                        let _ = failed_tx.send(true);
                    }
                    summary
                })
            })
            .context("starting the priority lane's thread")?;
        match ready.await {
            Ok(Ok(())) => {
                tracing::info!(topics, "priority lane started");
                Ok(Lane { thread, stop, failed })
            }
            Ok(Err(e)) => Err(e.context("starting the priority lane (source.priority)")),
            Err(_) => Err(anyhow::anyhow!("the priority lane stopped while starting")),
        }
    }

    /// Stops the lane (its records in flight made durable and committed)
    /// and returns its summary.
    async fn finish(self) -> anyhow::Result<Summary> {
        let _ = self.stop.send(true);
        let thread = self.thread;
        tokio::task::spawn_blocking(move || thread.join())
            .await
            .context("waiting for the priority lane")?
            .map_err(|_| anyhow::anyhow!("the priority lane panicked"))?
    }
}

/// Nice value of the priority lane's threads and of the model threads it
/// shares (the default is 0): the kernel runs them before the main lane's
/// when both are ready.
const LANE_NICE: i32 = -10;

/// Gives the calling thread [`LANE_NICE`]; a process without the right to
/// (`CAP_SYS_NICE`, `ulimit -e`) keeps the default and says so.
fn raise_priority() {
    if let Err(e) = switchyard_workers::set_thread_nice(LANE_NICE) {
        tracing::info!(
            error = %e,
            "the priority lane runs at the default scheduling priority (raising it needs CAP_SYS_NICE)"
        );
    }
}

/// Shares the cloud workers' budgets with every process writing to
/// `tables` (`_spend/`), this one's earlier runs included.
fn share_budgets(
    workers: &switchyard_workers::dispatch::WorkerSet,
    tables: &TableRoot,
    writer: &str,
) -> anyhow::Result<()> {
    if workers.clouds().next().is_none() {
        return Ok(());
    }
    let dir = tables.join("_spend");
    let ledger = switchyard_workers::cloud::SpendLedger::open(&dir, writer)
        .with_context(|| format!("opening the cloud budget ledger at {dir}"))?;
    for c in workers.clouds() {
        c.share_budget(ledger.clone());
    }
    Ok(())
}

/// True when `e` comes from writing the tables (a full disk, a folder that
/// cannot be written): the run can resume once the storage is back.
fn is_storage_error(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        matches!(
            c.downcast_ref::<switchyard_sink::Error>(),
            Some(switchyard_sink::Error::Io { .. } | switchyard_sink::Error::Parquet(_))
        )
    })
}

/// True when `e` is an aborted Kafka transaction (its roll discarded): the
/// run can start again from the committed offsets.
fn is_aborted_transaction(e: &anyhow::Error) -> bool {
    e.chain().any(|c| matches!(c.downcast_ref::<switchyard_sink::Error>(), Some(switchyard_sink::Error::TxnAborted(_))))
}

/// How often unwritable tables are tried again.
const STORAGE_RETRY: Duration = Duration::from_secs(2);

/// Waits until a test file can be written (and on a local root, synced) in
/// every folder a roll writes to under `tables`; false when a stop was
/// requested first.
async fn wait_writable(tables: &TableRoot) -> bool {
    let probe = |dir: &str| -> switchyard_schemas::Result<()> {
        let rel = format!("{dir}/.probe-{}", std::process::id());
        let result = tables.put(&rel, vec![0u8; 64 * 1024]);
        let _ = tables.delete(&rel);
        result
    };
    loop {
        let ok = tokio::task::block_in_place(|| {
            ["_rolls", "predictions", "dlq", "_writers"].iter().all(|d| probe(d).is_ok())
        });
        if ok {
            return true;
        }
        tokio::select! {
            _ = tokio::time::sleep(STORAGE_RETRY) => {}
            _ = crate::signal::shutdown_signal() => return false,
        }
    }
}

/// Records in the audit table which manifest and which policy the run uses.
fn loaded(plan: &Plan) {
    let m = plan.manifest();
    let detail = format!("{} (sha256 {})", plan.loaded.path.display(), plan.loaded.hash);
    notice(Notice { version: String::new(), ..Notice::new(AuditEvent::ManifestLoaded, "pipeline", detail) });
    let detail = format!("{} rules (sha256 {})", m.routing.rules.len(), plan.policy_hash());
    notice(Notice { version: m.routing.version.clone(), ..Notice::new(AuditEvent::PolicyLoaded, "pipeline", detail) });
}

/// Checks, before anything starts, that every Kafka client of `plan` can
/// reach and log in to its brokers: the source, the results and DLQ
/// producer (`with_sink`) and the feedback consumer. Clients on the same
/// brokers with the same settings are checked once.
async fn check_brokers(plan: &Plan, with_sink: bool) -> anyhow::Result<()> {
    let timeout = Duration::from_millis(plan.source.connect_timeout_ms.max(1));
    let mut checks = vec![plan.source.broker_check("source")?];
    if let Some(k) = plan.kafka.as_ref().filter(|_| with_sink) {
        let brokers = k.bootstrap_servers.clone().unwrap_or_else(|| plan.source.bootstrap_servers.clone());
        checks.push(switchyard_ingest::BrokerCheck {
            what: "sinks.kafka".into(),
            config: k.client_config(&brokers)?,
            security: switchyard_schemas::kafka::describe(&k.properties),
            brokers,
            timeout,
        });
    }
    if let Some(f) = &plan.feedback {
        checks.push(f.source.broker_check("feedback")?);
    }
    let mut seen = std::collections::HashSet::new();
    for c in checks {
        let mut key: Vec<(String, String)> =
            c.config.config_map().iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        key.retain(|(k, _)| k == "bootstrap.servers" || switchyard_schemas::kafka::is_connection_property(k));
        key.sort();
        if seen.insert(key) {
            switchyard_ingest::check_brokers(c).await?;
        }
    }
    Ok(())
}
