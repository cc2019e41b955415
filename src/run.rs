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
    let stages = Stages::build(plan, "", true).await?;
    telemetry::note_models(&stages.workers);
    health.models_loaded.store(true, Ordering::Relaxed);
    // Transactions need a Kafka source (their offsets commit with them).
    let exactly_once = !opts.no_kafka_sink
        && opts.input_file.is_none()
        && plan.kafka.as_ref().is_some_and(|k| k.delivery == Delivery::ExactlyOnce);
    let pq = &plan.parquet;
    let interval = Duration::from_millis(pq.roll_interval_ms);
    let parquet = if exactly_once {
        ParquetSink::open_transactional(&plan.tables, pq.roll_max_rows, interval)
    } else {
        ParquetSink::open(&plan.tables, pq.roll_max_rows, interval)
    }
    .with_context(|| format!("opening tables at {}", plan.tables))?;
    share_budgets(&stages.workers, &plan.tables, parquet.writer_id())?;
    // One transactional id per worker (its writer id): a new worker never
    // fences a live one; zombies are fenced by the group's generation.
    let txn_id = exactly_once.then(|| format!("switchyard-{}-{}", plan.source.group_id, parquet.writer_id()));
    let kafka = if opts.no_kafka_sink {
        None
    } else {
        pipeline::kafka_sink(plan, !opts.skip_topic_creation, txn_id.as_deref()).await?
    };
    health.sinks_open.store(true, Ordering::Relaxed);
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
    let summary = pipeline::run(&stages, source, Sinks { parquet, kafka }, side, run).await;
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
