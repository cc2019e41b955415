//! `switchyard backfill run`: the bounded run, its status file, its summary.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use super::progress::{self, ProgressOptions};
use super::status::{rows_done, status_for, RunAttempt, RunState, Status};
use super::Backfill;
use crate::manifest::{Overrides, Plan};
use crate::pipeline::{self, Counters, SideTasks, Sinks, Source, Stages};

/// Options of `backfill run`.
#[derive(Debug, Clone, clap::Args)]
pub struct RunCommandOptions {
    /// Plain progress lines every N seconds when stderr is not a terminal (0: none).
    #[arg(long, default_value_t = 10)]
    pub progress_secs: u64,
    /// Override the pipeline's Kafka bootstrap servers (Kafka sources and sinks).
    #[arg(long)]
    pub bootstrap_servers: Option<String>,
    /// Also write the summary as JSON to this file.
    #[arg(long)]
    pub summary_json: Option<PathBuf>,
}

/// Runs (or resumes) the backfill and prints its summary.
pub async fn run_command(mut b: Backfill, opts: RunCommandOptions) -> anyhow::Result<()> {
    b.ready(opts.bootstrap_servers.as_deref())?;
    let root = b.output_root()?;
    let (mut status, status_path) = status_for(&b).await?;
    let total = status.total_rows();
    let durable_before = durable_offsets(&root, b.run_id())?;
    let done_before = rows_done(&status.inputs, &durable_before);
    let resuming = done_before > 0;
    if status.state == RunState::Finished && done_before >= total {
        eprintln!("backfill `{}` is finished: {total} rows; nothing to do", b.run_id());
        let summary = totals(&b, &root, &status, None).await?;
        println!("{summary}");
        return Ok(());
    }
    eprintln!(
        "backfill `{}`: {} {} with {total} rows{}; output {}",
        b.run_id(),
        status.inputs.len(),
        b.manifest.source.unit(),
        if resuming { format!(", resuming after {done_before} durable rows") } else { String::new() },
        root.display()
    );
    status.state = RunState::Running;
    status.write(&status_path)?;

    let counters = Arc::new(Counters::default());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let shown = progress::spawn(
        counters.clone(),
        ProgressOptions { done_before, total, every: Duration::from_secs(opts.progress_secs) },
        stop_rx,
    );
    let started = Instant::now();
    let started_at = chrono::Utc::now().to_rfc3339();
    let result = bounded(&b, &opts, &root, &status, counters.clone()).await;
    let _ = stop_tx.send(true);
    let _ = shown.await;
    let seconds = started.elapsed().as_secs_f64();
    use std::sync::atomic::Ordering::Relaxed;
    let mut attempt = RunAttempt {
        started: started_at,
        seconds,
        records: counters.records.load(Relaxed),
        results: counters.results.load(Relaxed),
        dlq: counters.dlq.load(Relaxed),
        cost: BTreeMap::new(),
        outcome: String::new(),
    };
    match result {
        Err(e) => {
            attempt.outcome = format!("{e:#}");
            status.state = RunState::Failed;
            status.attempts.push(attempt);
            status.write(&status_path)?;
            Err(e.context(format!("backfill `{}` stopped; `switchyard backfill run` resumes it", b.run_id())))
        }
        Ok(summary) => {
            attempt.cost = summary.cloud.iter().filter_map(|(w, s)| s.budget_spent.map(|c| (w.clone(), c))).collect();
            let done = rows_done(&status.inputs, &summary.durable);
            let finished = !summary.interrupted && done >= total;
            status.state = if finished { RunState::Finished } else { RunState::Interrupted };
            attempt.outcome = status.state.to_string();
            status.attempts.push(attempt);
            status.write(&status_path)?;
            let report = totals(&b, &root, &status, Some(&summary)).await?;
            println!("{report}");
            if let Some(path) = &opts.summary_json {
                std::fs::write(path, serde_json::to_vec_pretty(&report.json)?)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            if !finished {
                eprintln!(
                    "backfill `{}` interrupted at {done} of {total} rows; `switchyard backfill run {}` resumes it",
                    b.run_id(),
                    b.path.display()
                );
            }
            Ok(())
        }
    }
}

/// The backfill's pipeline over its bounded source, into its own roll
/// manifests: pinned versions, no side tasks (no feedback consumer,
/// monitor or model reload).
async fn bounded(
    b: &Backfill,
    opts: &RunCommandOptions,
    root: &Path,
    status: &Status,
    counters: Arc<Counters>,
) -> anyhow::Result<pipeline::Summary> {
    let overrides = Overrides { bootstrap_servers: opts.bootstrap_servers.clone(), tables: Some(root.to_path_buf()) };
    // `run_command` checked the pipeline (`Backfill::ready`): resolve only.
    let plan = Plan::resolve(&b.pipeline, &overrides)?;
    let stages = Stages::build(&plan, b.run_id(), true).await?;
    let kafka = if b.manifest.output.kafka { pipeline::kafka_sink(&plan, true, None).await? } else { None };
    let pq = &plan.parquet;
    let parquet = switchyard_sink::ParquetSink::open_backfill(
        &root.into(),
        b.run_id(),
        pq.roll_max_rows,
        Duration::from_millis(pq.roll_interval_ms),
    )
    .with_context(|| format!("opening tables at {}", root.display()))?;
    let schema = Arc::new(plan.manifest().schema.clone());
    let source = b.manifest.source.open(
        status.inputs.clone(),
        parquet.durable_offsets(),
        schema,
        plan.source.max_queued_chunks,
    )?;
    let mut run = pipeline::options(&plan);
    run.counters = Some(counters);
    pipeline::run(&stages, Source::Bounded(source), Sinks { parquet, kafka }, SideTasks::new(), run).await
}

/// The durable offsets of the run's roll manifests, without opening a writer.
fn durable_offsets(root: &Path, run_id: &str) -> anyhow::Result<switchyard_sink::Offsets> {
    if !root.exists() {
        return Ok(switchyard_sink::Offsets::new());
    }
    Ok(switchyard_sink::ParquetSink::backfill_offsets(&root.into(), run_id)?)
}

/// The end-of-run report: totals of the whole run (every attempt), from the
/// tables themselves, against the plan.
pub struct Report {
    text: String,
    /// The same as JSON.
    pub json: serde_json::Value,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

async fn totals(
    b: &Backfill,
    root: &Path,
    status: &Status,
    this: Option<&pipeline::Summary>,
) -> anyhow::Result<Report> {
    use std::fmt::Write as _;
    let ctx = switchyard_analysis::catalog::open(&root.into()).await?;
    let run = b.run_id().replace('\'', "''");
    let routes = query_counts(
        &ctx,
        &format!(
            "SELECT route, count(*) FROM predictions WHERE run_id = '{run}' AND NOT shadow GROUP BY route ORDER BY route"
        ),
    )
    .await?;
    let dlq = query_counts(
        &ctx,
        &format!("SELECT error_class, count(*) FROM dlq WHERE run_id = '{run}' GROUP BY error_class ORDER BY 1"),
    )
    .await?;
    let results: u64 = routes.values().sum();
    let dead: u64 = dlq.values().sum();
    let seconds: f64 = status.attempts.iter().map(|a| a.seconds).sum();
    let mut cost: BTreeMap<String, f64> = BTreeMap::new();
    for a in &status.attempts {
        for (w, c) in &a.cost {
            *cost.entry(w.clone()).or_default() += c;
        }
    }
    let total = status.total_rows();
    let mut t = String::new();
    let _ = writeln!(t, "backfill `{}` — {}", b.run_id(), status.state);
    let _ = writeln!(
        t,
        "  rows       {total} in {} {} ({} attempt{})",
        status.inputs.len(),
        b.manifest.source.unit(),
        status.attempts.len(),
        if status.attempts.len() == 1 { "" } else { "s" }
    );
    let _ = writeln!(t, "  results    {results}");
    for (r, n) in &routes {
        let _ = writeln!(t, "    {r:<20} {n:>10}");
    }
    let _ = writeln!(t, "  dlq        {dead}");
    for (c, n) in &dlq {
        let _ = writeln!(t, "    {c:<20} {n:>10}");
    }
    let _ = writeln!(t, "  duration   {seconds:.1} s ({:.0} rows/s)", (results + dead) as f64 / seconds.max(1e-9));
    for (w, c) in &cost {
        let _ = writeln!(t, "  cost       {w}: {c:.4}");
    }
    for (k, v) in &status.pins {
        let _ = writeln!(t, "  pin        {k} = {v}");
    }
    if let Some(s) = this {
        let _ = writeln!(
            t,
            "  this run   {} records, {} results, {} dlq, {} already durable, {:.0} rows/s",
            s.records,
            s.predictions,
            s.dlq,
            s.replayed,
            s.rate()
        );
    }
    if let Some(p) = &status.plan {
        let _ = writeln!(
            t,
            "  plan       {} rows, {:.0} s estimated; routes {}",
            p.rows,
            p.seconds,
            p.routes.iter().map(|(r, n)| format!("{r} {n}")).collect::<Vec<_>>().join(", ")
        );
    }
    let _ = write!(t, "  tables     {}", root.display());
    let json = serde_json::json!({
        "run_id": b.run_id(),
        "state": status.state,
        "rows": total,
        "results": results,
        "routes": routes,
        "dlq": dead,
        "dlq_by_class": dlq,
        "seconds": seconds,
        "cost": cost,
        "pins": status.pins,
        "attempts": status.attempts.len(),
        "plan": status.plan,
        "tables": root,
    });
    Ok(Report { text: t, json })
}

async fn query_counts(
    ctx: &switchyard_analysis::catalog::SessionContext,
    sql: &str,
) -> anyhow::Result<BTreeMap<String, u64>> {
    let batches = switchyard_analysis::catalog::query(ctx, sql).await?;
    let mut out = BTreeMap::new();
    for batch in batches {
        let keys = arrow::compute::cast(batch.column(0), &arrow::datatypes::DataType::Utf8)?;
        let keys = keys.as_any().downcast_ref::<arrow::array::StringArray>().context("key column")?;
        let counts = arrow::compute::cast(batch.column(1), &arrow::datatypes::DataType::UInt64)?;
        let counts = counts.as_any().downcast_ref::<arrow::array::UInt64Array>().context("count column")?;
        for i in 0..batch.num_rows() {
            out.insert(keys.value(i).to_string(), counts.value(i));
        }
    }
    Ok(out)
}
