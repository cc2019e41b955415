//! `switchyard backfill plan`: what a run would do, before anything runs.
//!
//! Rows are counted exactly (Parquet footers, line counts, broker offsets).
//! Routes come from a sample — the first rows of every input, in proportion
//! to its size — taken through the pipeline's own decoding, validation,
//! routing and pre-processing. Throughput is measured on the same sample:
//! preparation, the local model(s) through the real batching path, and
//! Parquet encoding of the results. Cloud workers are not called; their
//! requests, time and cost follow from their batch size, the run's rate
//! limit and its budget.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use switchyard_ingest::bounded::Input;
use switchyard_schemas::{Prediction, RawRecord};
use switchyard_workers::WorkerConfig;

use super::status::{status_for, CloudEstimate, Estimate, Status};
use super::Backfill;
use crate::manifest::{Overrides, Plan};
use crate::pipeline::{StageTimes, Stages};
use switchyard_workers::dispatch::{dispatch, Assignment, Outcome};

/// Options of `backfill plan`.
#[derive(Debug, Clone, clap::Args)]
pub struct PlanOptions {
    /// Rows to sample for routes and throughput.
    #[arg(long, default_value_t = 20_000)]
    pub sample: u64,
    /// Print the plan as JSON.
    #[arg(long)]
    pub json: bool,
    /// Override the Kafka bootstrap servers (Kafka sources).
    #[arg(long)]
    pub bootstrap_servers: Option<String>,
}

/// Plans the backfill, prints the plan and records it in the status file.
pub async fn plan_command(mut b: Backfill, opts: PlanOptions) -> anyhow::Result<()> {
    b.ready(opts.bootstrap_servers.as_deref())?;
    let (mut status, path) = status_for(&b).await?;
    let estimate = estimate(&b, &status.inputs, opts.sample.max(1)).await?;
    if opts.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({"inputs": status.inputs, "estimate": estimate}))?
        );
    } else {
        println!("{}", render(&b, &status, &estimate));
    }
    status.plan = Some(estimate);
    status.write(&path)?;
    Ok(())
}

/// The first rows of every input, `n` in all, spread by input size.
async fn sample(b: &Backfill, inputs: &[Input], n: u64) -> anyhow::Result<Vec<RawRecord>> {
    let total: u64 = inputs.iter().filter_map(Input::rows).sum::<u64>().max(1);
    let schema = Arc::new(b.pipeline.manifest.schema.clone());
    let mut out = Vec::new();
    for input in inputs {
        let rows = input.rows().unwrap_or(0);
        let want = ((n as f64 * rows as f64 / total as f64).ceil() as u64).min(rows);
        if want == 0 {
            continue;
        }
        let mut one = input.clone();
        one.end = Some(input.start + want as i64);
        let mut source = b.manifest.source.open(vec![one], &Default::default(), schema.clone(), 2)?;
        let mut taken = 0;
        while taken < want {
            let Some(chunk) = source.next_chunk().await else { break };
            let chunk = chunk.with_context(|| format!("sampling {}", input.source))?;
            for r in chunk.into_iter().take((want - taken) as usize) {
                out.push(r);
                taken += 1;
            }
        }
    }
    Ok(out)
}

async fn estimate(b: &Backfill, inputs: &[Input], n: u64) -> anyhow::Result<Estimate> {
    let rows: u64 = inputs.iter().filter_map(Input::rows).sum();
    let records = sample(b, inputs, n).await?;
    let sampled = records.len() as u64;
    // No readiness probe: planning calls no endpoint.
    // `plan_command` checked the pipeline (`Backfill::ready`): resolve only.
    let plan = Plan::resolve(&b.pipeline, &Overrides::default())?;
    let stages = Stages::build(&plan, b.run_id(), false).await?;
    let width = stages.pre.width();

    let t = Instant::now();
    let mut features = Vec::with_capacity(records.len() * width);
    let mut admitted = Vec::new();
    let mut dlq = 0u64;
    let mut times = StageTimes::default();
    stages.resolve(&records).await;
    for raw in &records {
        match stages.admit(raw, &mut features, &mut times) {
            Ok(ej) => admitted.push(ej),
            Err(_) => dlq += 1,
        }
    }
    let prepare_secs = t.elapsed().as_secs_f64();

    let workers = &stages.workers;
    let mut first: BTreeMap<String, u64> = BTreeMap::new();
    let mut shadows: BTreeMap<String, u64> = BTreeMap::new();
    // Where events of a cloud worker go when its budget is spent.
    let mut fallback_of: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    for (_, job) in &admitted {
        let primary = workers.name(job.chain[0]).to_string();
        if workers.is_cloud(job.chain[0]) {
            if let Some(&f) = job.chain.get(1) {
                *fallback_of.entry(primary.clone()).or_default().entry(workers.name(f).to_string()).or_default() += 1;
            }
        }
        *first.entry(primary).or_default() += 1;
        if let Some(s) = job.shadow {
            *shadows.entry(workers.name(s).to_string()).or_default() += 1;
        }
    }

    // Local throughput: the sample's local events through the real path.
    let (local_jobs, local_features): (Vec<_>, Vec<f32>) = {
        let mut jobs = Vec::new();
        let mut feats = Vec::new();
        for (j, (_, job)) in admitted.iter().enumerate() {
            if !workers.is_cloud(job.chain[0]) {
                jobs.push(Assignment {
                    trace: None,
                    id: job.id.clone(),
                    values: Vec::new(),
                    chain: vec![job.chain[0]],
                    shadow: None,
                    deadline: None,
                    withheld: Vec::new(),
                });
                feats.extend_from_slice(&features[j * width..(j + 1) * width]);
            }
        }
        (jobs, feats)
    };
    let n_local = local_jobs.len();
    let t = Instant::now();
    let dispatched = if n_local > 0 {
        Some(dispatch(workers.clone(), local_jobs, Arc::new(local_features), width).await)
    } else {
        None
    };
    let local_secs = t.elapsed().as_secs_f64();

    // Result encoding: the sample's answers as Parquet.
    let t = Instant::now();
    if let Some(r) = &dispatched {
        let preds: Vec<Prediction> = r
            .outcomes
            .iter()
            .zip(admitted.iter().filter(|(_, j)| !workers.is_cloud(j.chain[0])))
            .filter_map(|(o, (event, _))| match o {
                Outcome::Served { answer, .. } => Some(Prediction {
                    key: event.key.clone(),
                    score: answer.score,
                    label: answer.label,
                    outputs: None,
                    features: vec![0.0; width],
                    latency_us: 0,
                    lineage: event.lineage.clone(),
                }),
                Outcome::Failed { .. } => None,
            })
            .collect();
        let refs: Vec<&Prediction> = preds.iter().collect();
        let batch = switchyard_sink::predictions_batch(&refs)?;
        let mut w = parquet::arrow::ArrowWriter::try_new(Vec::new(), batch.schema(), None)?;
        w.write(&batch)?;
        w.close()?;
    }
    let sink_secs = t.elapsed().as_secs_f64();

    let scale = |k: u64| -> u64 {
        if sampled == 0 {
            0
        } else {
            (k as f64 * rows as f64 / sampled as f64).round() as u64
        }
    };
    let mut routes: BTreeMap<String, u64> = first.iter().map(|(r, &k)| (r.clone(), scale(k))).collect();
    let mut cloud = BTreeMap::new();
    for (name, w) in &b.pipeline.manifest.workers {
        let (WorkerConfig::KserveV2(c) | WorkerConfig::Openai(c)) = w else { continue };
        let events = routes.get(name).copied().unwrap_or(0);
        let batch = c.max_batch_size.max(1) as u64;
        let per_request = c.budget.as_ref().map_or(0.0, |b| b.cost_per_request);
        let budget = c.budget.as_ref().map(|b| b.limit);
        let mut fall_back = 0;
        if let (Some(limit), true) = (budget, per_request > 0.0) {
            let affordable = ((limit / per_request).floor() as u64).saturating_mul(batch);
            if events > affordable {
                fall_back = events - affordable;
                // Spread the overflow over the fallbacks seen in the sample.
                let targets = fallback_of.get(name).cloned().unwrap_or_default();
                let seen: u64 = targets.values().sum();
                let mut moved = 0;
                for (t, k) in &targets {
                    let share = (fall_back as f64 * *k as f64 / seen.max(1) as f64).round() as u64;
                    *routes.entry(t.clone()).or_default() += share;
                    moved += share;
                }
                if let Some(r) = routes.get_mut(name) {
                    *r -= moved.min(*r);
                }
            }
        }
        let requests = (events - fall_back).div_ceil(batch);
        let seconds = c.rate_limit.requests_per_second.map(|rps| requests as f64 / rps.max(1e-9));
        let cost = requests as f64 * per_request;
        cloud.insert(name.clone(), CloudEstimate { events, requests, cost, budget, fall_back, seconds });
    }
    let rate = |n: u64, secs: f64| if secs > 0.0 { n as f64 / secs } else { f64::INFINITY };
    let prepare_rows_per_s = rate(sampled, prepare_secs);
    let local_rows_per_s = rate(n_local as u64, local_secs);
    let sink_rows_per_s = rate(n_local as u64, sink_secs);
    // Stages run side by side: the run takes the longest stage, or the whole
    // work spread over the cores, whichever is longer.
    let local_rows: u64 = routes.iter().filter(|(r, _)| !cloud.contains_key(*r)).map(|(_, &k)| k).sum();
    let results: u64 = routes.values().sum();
    let stage_secs =
        [rows as f64 / prepare_rows_per_s, local_rows as f64 / local_rows_per_s, results as f64 / sink_rows_per_s];
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let work: f64 = stage_secs.iter().filter(|s| s.is_finite()).sum();
    let longest = stage_secs.iter().copied().filter(|s| s.is_finite()).fold(0.0, f64::max);
    let cloud_secs = cloud.values().filter_map(|c| c.seconds).fold(0.0, f64::max);
    let seconds = longest.max(work / cores).max(cloud_secs);
    Ok(Estimate {
        rows,
        sampled,
        routes,
        dlq: scale(dlq),
        shadows: shadows.iter().map(|(r, &k)| (r.clone(), scale(k))).collect(),
        cloud,
        prepare_rows_per_s,
        local_rows_per_s,
        sink_rows_per_s,
        seconds,
    })
}

fn render(b: &Backfill, status: &Status, e: &Estimate) -> String {
    use std::fmt::Write as _;
    let mut t = String::new();
    let _ = writeln!(t, "backfill `{}` — plan", b.run_id());
    let _ = writeln!(t, "  pipeline   {} ({})", b.pipeline.manifest.name, b.pipeline.path.display());
    for (k, v) in &status.pins {
        let _ = writeln!(t, "  pin        {k} = {v}");
    }
    let _ = writeln!(t, "  input      {} rows in {} {}", e.rows, status.inputs.len(), b.manifest.source.unit());
    for i in status.inputs.iter().take(20) {
        let range = match i.end {
            Some(end) if b.manifest.source.unit() == "partitions" => format!("offsets [{}, {end})", i.start),
            _ => format!("{} rows", i.rows().map_or("?".into(), |r| r.to_string())),
        };
        let name = if i.partition > 0 || b.manifest.source.unit() == "partitions" {
            format!("{}[{}]", i.source, i.partition)
        } else {
            i.source.clone()
        };
        let _ = writeln!(t, "    {name}  {range}");
    }
    if status.inputs.len() > 20 {
        let _ = writeln!(t, "    … and {} more", status.inputs.len() - 20);
    }
    let _ = writeln!(t, "  routes     (from a sample of {} rows)", e.sampled);
    for (r, n) in &e.routes {
        let _ = writeln!(t, "    {r:<20} ~{n}");
    }
    let _ = writeln!(t, "    {:<20} ~{}", "dlq", e.dlq);
    for (r, n) in &e.shadows {
        let _ = writeln!(t, "    shadow {r:<13} ~{n}");
    }
    for (w, c) in &e.cloud {
        let budget = c.budget.map_or("no budget".to_string(), |l| format!("budget {l} per window"));
        let time = c.seconds.map_or("no rate limit".to_string(), |s| format!("{s:.0} s at the run's rate limit"));
        let _ = writeln!(
            t,
            "  cloud      {w}: ~{} events, ~{} requests, cost ~{:.4} ({budget}); {time}",
            c.events, c.requests, c.cost
        );
        if c.fall_back > 0 {
            let _ = writeln!(t, "             ~{} events find the budget spent and take their fallback", c.fall_back);
        }
    }
    let _ = writeln!(
        t,
        "  measured   prepare {:.0} rows/s, local model {:.0} rows/s, Parquet {:.0} rows/s",
        e.prepare_rows_per_s, e.local_rows_per_s, e.sink_rows_per_s
    );
    let _ = write!(t, "  duration   ~{:.0} s", e.seconds);
    match b.output_root() {
        Ok(root) => {
            let _ = write!(t, "\n  output     {}", root.display());
        }
        Err(e) => {
            let _ = write!(t, "\n  output     ? ({e})");
        }
    }
    t
}
