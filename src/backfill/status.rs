//! A backfill's status file, `<output>/_backfill/<name>.json`: the inputs
//! as first planned, the pins, the attempts and the latest plan's estimate.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use switchyard_ingest::bounded::Input;

use super::Backfill;

/// A plan's estimates, kept in the status file for the run's summary.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Estimate {
    /// Input rows (exact).
    pub rows: u64,
    /// Rows sampled.
    pub sampled: u64,
    /// Results per answering worker (budget fallbacks included).
    pub routes: BTreeMap<String, u64>,
    /// Records expected in the DLQ.
    pub dlq: u64,
    /// Shadow answers per worker.
    pub shadows: BTreeMap<String, u64>,
    /// Per cloud worker: requests, cost, budget.
    pub cloud: BTreeMap<String, CloudEstimate>,
    /// Measured rows/s of decoding, validation, routing and pre-processing.
    pub prepare_rows_per_s: f64,
    /// Measured rows/s of the local model(s), through the batching path.
    pub local_rows_per_s: f64,
    /// Measured rows/s of encoding results as Parquet.
    pub sink_rows_per_s: f64,
    /// Expected duration of the run in seconds.
    pub seconds: f64,
}

/// A cloud worker's part of a plan.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CloudEstimate {
    /// Events routed to it first.
    pub events: u64,
    /// Requests, with batches filled to `max_batch_size`.
    pub requests: u64,
    /// Cost of those requests.
    pub cost: f64,
    /// Its budget per window for the run, when it has one.
    pub budget: Option<f64>,
    /// Events that would find the budget spent and take their fallback.
    pub fall_back: u64,
    /// Seconds the run's rate limit needs for the requests.
    pub seconds: Option<f64>,
}

/// The run's status file, `<output>/_backfill/<name>.json`: the inputs as
/// first planned (a resumed run reads the same ranges), the pins, the
/// attempts and the latest plan. The checkpoint proper is the run's roll
/// manifests; this file is for people and for the summary.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    /// Run id.
    pub run_id: String,
    /// Hash of the backfill and pipeline manifests the run started with.
    pub manifest_hash: String,
    /// Model version per worker and the policy version.
    pub pins: BTreeMap<String, String>,
    /// The inputs and their ranges.
    pub inputs: Vec<Input>,
    /// Where the run stands.
    pub state: RunState,
    /// One entry per `backfill run`.
    pub attempts: Vec<RunAttempt>,
    /// The latest `backfill plan` estimate.
    #[serde(default)]
    pub plan: Option<Estimate>,
}

/// Where a backfill stands (`state` in the status file).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Planned, not run yet.
    Planned,
    /// A `backfill run` is going on (or was killed).
    Running,
    /// Stopped by Ctrl-C / SIGTERM before the end; the next run resumes.
    Interrupted,
    /// Stopped by an error; the next run resumes.
    Failed,
    /// Every input row is durable.
    Finished,
}

impl RunState {
    /// The name in the status file and the summary.
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Planned => "planned",
            RunState::Running => "running",
            RunState::Interrupted => "interrupted",
            RunState::Failed => "failed",
            RunState::Finished => "finished",
        }
    }
}

impl std::fmt::Display for RunState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One `backfill run` of a backfill.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunAttempt {
    /// When it started (RFC 3339).
    pub started: String,
    /// Seconds it ran.
    pub seconds: f64,
    /// Records it read.
    pub records: u64,
    /// Results it wrote.
    pub results: u64,
    /// Records it sent to the DLQ.
    pub dlq: u64,
    /// Cloud spending it reported, by worker.
    pub cost: BTreeMap<String, f64>,
    /// `finished`, `interrupted` or the error that stopped it.
    pub outcome: String,
}

impl Status {
    /// Reads the status file, if the run was started before.
    pub fn read(path: &Path) -> anyhow::Result<Option<Self>> {
        match std::fs::read(path) {
            Ok(b) => Ok(Some(
                serde_json::from_slice(&b).with_context(|| format!("{}: corrupt backfill status", path.display()))?,
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(anyhow::anyhow!("reading {}: {e}", path.display())),
        }
    }

    /// Writes it atomically.
    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        let dir = path.parent().context("status path has no folder")?;
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(self)?).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
        Ok(())
    }

    /// Rows of all inputs.
    pub fn total_rows(&self) -> u64 {
        self.inputs.iter().filter_map(Input::rows).sum()
    }
}

/// The pins as recorded in the status file and the summary.
pub fn pins_of(b: &Backfill) -> BTreeMap<String, String> {
    let mut pins: BTreeMap<String, String> = b.manifest.pins.models.clone();
    for (name, w) in &b.pipeline.manifest.workers {
        if let switchyard_workers::WorkerConfig::Onnx(c) = w {
            if let Some(v) = &c.version {
                pins.entry(name.clone()).or_insert_with(|| v.clone());
            }
        }
    }
    pins.insert("policy_version".into(), b.manifest.pins.policy_version.clone());
    pins
}

/// The run's status: read, or planned afresh (inputs resolved and counted).
/// A status written by another manifest is refused.
pub async fn status_for(b: &Backfill) -> anyhow::Result<(Status, PathBuf)> {
    let path = b.status_path()?;
    if let Some(s) = Status::read(&path)?.filter(|s| s.manifest_hash == b.hash || !s.attempts.is_empty()) {
        anyhow::ensure!(
            s.manifest_hash == b.hash,
            "backfill `{}` was started from other manifests (the backfill or its pipeline changed since; status in \
             {}). Give the changed backfill a new `name`, or restore the manifests to finish the run",
            b.run_id(),
            path.display()
        );
        return Ok((s, path));
    }
    let source = &b.manifest.source;
    let mut inputs =
        source.list_inputs(&b.base).await.with_context(|| format!("{}: listing the source", b.path.display()))?;
    source.count(&mut inputs).await.with_context(|| format!("{}: counting rows", b.path.display()))?;
    let status = Status {
        run_id: b.run_id().to_string(),
        manifest_hash: b.hash.clone(),
        pins: pins_of(b),
        inputs,
        state: RunState::Planned,
        attempts: Vec::new(),
        plan: None,
    };
    Ok((status, path))
}

/// Rows at or below the durable offsets, over all inputs.
pub fn rows_done(inputs: &[Input], durable: &switchyard_sink::Offsets) -> u64 {
    inputs
        .iter()
        .map(|i| {
            let d = durable.get(&(i.source.clone(), i.partition)).copied();
            let rows = i.rows().unwrap_or(0);
            rows.saturating_sub(i.remaining(d).unwrap_or(rows))
        })
        .sum()
}
