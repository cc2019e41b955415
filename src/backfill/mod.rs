//! Backfills: bounded runs of a streaming pipeline, described by a backfill
//! manifest that names the pipeline, the bounded source, the pinned model
//! and policy versions, the output and the cloud workers' own limits.
//!
//! ```text
//!  backfill.yaml ──▶ pipeline manifest, pinned and limited ──▶ pipeline::run (the streaming code)
//!       │                                                          │ bounded source, own roll manifests
//!       └──▶ plan: count, sample routes, measure, estimate         ▼
//!                                                   <output>/_backfill/<name>.json: plan, attempts, totals
//! ```
//!
//! The checkpoint is the run's own roll manifests ([`ParquetSink::open_backfill`]):
//! the highest durable offset of every input. A resumed run skips what is
//! durable, and a finished run read again adds nothing.
//!
//! [`ParquetSink::open_backfill`]: switchyard_sink::ParquetSink::open_backfill

mod plan;
mod progress;
mod run;
mod status;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use switchyard_ingest::bounded::BoundedConfig;
use switchyard_schemas::Problems;
use switchyard_workers::cloud::{BudgetConfig, RateLimitConfig};
use switchyard_workers::{registry, WorkerConfig};

use crate::manifest::{self, Loaded};

pub use plan::{plan_command, PlanOptions};
pub use run::{run_command, RunCommandOptions};

/// A backfill manifest (YAML).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackfillManifest {
    /// The run's name, which is its id: stamped on every row (`run_id`),
    /// and the name of its checkpoint and of its own tables. Letters,
    /// digits, `-`, `_` and `.`.
    pub name: String,
    /// What the backfill is for.
    #[serde(default)]
    pub description: Option<String>,
    /// The pipeline manifest whose stages run (relative to this file).
    pub pipeline: PathBuf,
    /// What to read.
    pub source: BoundedConfig,
    /// Versions the run must use.
    pub pins: Pins,
    /// Where results go.
    #[serde(default)]
    pub output: Output,
    /// The cloud workers' rate limits and budgets for this run, by worker
    /// name; they replace the pipeline's, so the run cannot use up the
    /// streaming pipeline's quota.
    #[serde(default)]
    pub cloud: BTreeMap<String, CloudLimits>,
    /// Share of a cloud worker's streaming rate limit, concurrency and budget
    /// the run gets when `cloud.<worker>` does not set its own.
    #[serde(default = "default_cloud_share")]
    pub cloud_share: f64,
}

fn default_cloud_share() -> f64 {
    0.25
}

/// Pinned versions.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pins {
    /// Model version by worker name: the registry version of an `onnx`
    /// worker (required for each, unless the pipeline pins it itself), the
    /// endpoint's model version of a cloud worker (optional).
    #[serde(default)]
    pub models: BTreeMap<String, String>,
    /// The routing policy version; the run refuses to start when the
    /// pipeline's `routing.version` differs.
    pub policy_version: String,
}

/// Where a backfill's results go.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Output {
    /// `separate` (default): tables of the run's own, under
    /// `<tables>/backfills/<name>/`; `main`: the pipeline's tables, beside
    /// the streaming results (rows carry the run id).
    #[serde(default)]
    pub tables: OutputTables,
    /// Table root; by default the pipeline's `sinks.parquet.path`.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// Also send results and DLQ records to the pipeline's Kafka topics
    /// (at least once: rows redone after a crash are sent again).
    #[serde(default)]
    pub kafka: bool,
}

/// Which tables a backfill writes.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OutputTables {
    /// Tables of the run's own.
    #[default]
    Separate,
    /// The pipeline's tables.
    Main,
}

/// A cloud worker's limits during a backfill.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudLimits {
    /// Rate limit for the run (replaces the pipeline's).
    #[serde(default)]
    pub rate_limit: Option<RateLimitConfig>,
    /// Budget for the run (replaces the pipeline's).
    #[serde(default)]
    pub budget: Option<BudgetConfig>,
    /// Requests in flight at once.
    #[serde(default)]
    pub max_concurrency: Option<usize>,
}

/// A backfill manifest read from disk, with its pipeline.
#[derive(Debug, Clone)]
pub struct Backfill {
    /// The parsed manifest.
    pub manifest: BackfillManifest,
    /// The file it came from.
    pub path: PathBuf,
    /// Folder relative paths are resolved against.
    pub base: PathBuf,
    /// SHA-256 of the backfill manifest and the pipeline manifest together.
    pub hash: String,
    /// The pipeline as the run uses it: versions pinned, cloud limits
    /// replaced, no hot reload, monitor or feedback consumer.
    pub pipeline: Loaded,
}

/// Reads a backfill manifest and its pipeline. Shape problems (unknown
/// keys, wrong types, missing fields) are reported together, each with its
/// path and line ([`manifest::Invalid`]).
pub fn load(path: &Path) -> anyhow::Result<Backfill> {
    let bytes = std::fs::read(path).map_err(|e| anyhow::anyhow!("{}: cannot read manifest: {e}", path.display()))?;
    let manifest = parse(path, &bytes)?;
    let base = path.parent().map(Path::to_path_buf).filter(|b| !b.as_os_str().is_empty()).unwrap_or(".".into());
    let pipeline_path = base.join(&manifest.pipeline);
    let pipeline = manifest::load(&pipeline_path).map_err(|e| match e.downcast::<manifest::Invalid>() {
        // The pipeline's problems are this manifest's, as `validate` names them.
        Ok(invalid) => {
            let mut problems = Problems::new();
            for p in invalid.problems.items() {
                problems.push(format!("pipeline: {}", p.path), p.message.clone());
            }
            anyhow::Error::new(manifest::Invalid { path: path.to_path_buf(), problems })
        }
        Err(e) => anyhow::anyhow!("{}: pipeline `{}`: {e:#}", path.display(), manifest.pipeline.display()),
    })?;
    let hash = switchyard_schemas::sha256_hex(
        format!("{}\u{0}{}", switchyard_schemas::sha256_hex(&bytes), pipeline.hash).as_bytes(),
    );
    let mut b = Backfill { manifest, path: path.to_path_buf(), base, hash, pipeline };
    b.pin();
    if let BoundedConfig::Kafka(k) = &mut b.manifest.source {
        switchyard_schemas::kafka::rebase(&mut k.secrets, &b.base);
    }
    Ok(b)
}

/// The backfill manifest's sections one by one.
fn parse(path: &Path, bytes: &[u8]) -> anyhow::Result<BackfillManifest> {
    let mut problems = Problems::new();
    let invalid = |problems| anyhow::Error::new(manifest::Invalid { path: path.to_path_buf(), problems });
    let doc = manifest::document(path, bytes)?;
    const SECTIONS: &[&str] = &["name", "description", "pipeline", "source", "pins", "output", "cloud", "cloud_share"];
    doc.unknown_keys("", SECTIONS, &mut problems);
    let name = doc.extract("name", &mut problems);
    let description = manifest::section_or(&doc, "description", || None, &mut problems);
    let pipeline = doc.extract("pipeline", &mut problems);
    let source = doc.extract("source", &mut problems);
    let pins = doc.extract("pins", &mut problems);
    let output = manifest::section_or(&doc, "output", Output::default, &mut problems);
    let cloud = manifest::section_or(&doc, "cloud", BTreeMap::new, &mut problems);
    let cloud_share = manifest::section_or(&doc, "cloud_share", default_cloud_share, &mut problems);
    let m = (|| {
        Some(BackfillManifest {
            name: name?,
            description: description?,
            pipeline: pipeline?,
            source: source?,
            pins: pins?,
            output: output?,
            cloud: cloud?,
            cloud_share: cloud_share?,
        })
    })();
    match m {
        // Read from the text as written; the sections served to find problems.
        Some(_) if problems.is_empty() => serde_yaml::from_slice(bytes).map_err(|e| {
            let mut problems = Problems::new();
            problems.push("(document)", e.to_string());
            invalid(problems)
        }),
        _ => Err(invalid(problems)),
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 128 && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

impl Backfill {
    /// Applies the pins and limits to the pipeline.
    fn pin(&mut self) {
        let m = &self.manifest;
        let p = &mut self.pipeline;
        p.hash.clone_from(&self.hash);
        p.manifest.monitor = None;
        p.manifest.feedback = None;
        // A file's rows are read as the file's own format (Parquet, JSON
        // Lines, CSV, Avro container): the stream's registry `format` is for
        // Kafka sources.
        if matches!(m.source, BoundedConfig::Files(_)) {
            p.manifest.schema.format = switchyard_schemas::InputFormat::Json;
            p.manifest.schema.registry = None;
        }
        for (name, w) in &mut p.manifest.workers {
            let pin = m.models_pin(name);
            match w {
                WorkerConfig::Onnx(c) => {
                    if pin.is_some() {
                        c.version = pin;
                    }
                    c.reload = None;
                }
                WorkerConfig::KserveV2(c) | WorkerConfig::Openai(c) => {
                    if pin.is_some() {
                        c.version = pin;
                    }
                    let limits = m.cloud.get(name).cloned().unwrap_or_default();
                    let share = m.cloud_share;
                    c.rate_limit = limits.rate_limit.unwrap_or_else(|| RateLimitConfig {
                        requests_per_second: c.rate_limit.requests_per_second.map(|r| r * share),
                        burst: c.rate_limit.burst.map(|b| ((f64::from(b) * share).ceil() as u32).max(1)),
                        tokens_per_minute: c
                            .rate_limit
                            .tokens_per_minute
                            .map(|t| ((f64::from(t) * share) as u32).max(1)),
                    });
                    c.max_concurrency =
                        limits.max_concurrency.unwrap_or(((c.max_concurrency as f64 * share).ceil() as usize).max(1));
                    c.budget = limits.budget.or_else(|| {
                        c.budget.clone().map(|mut b| {
                            b.limit *= share;
                            b
                        })
                    });
                }
            }
        }
    }

    /// The run id.
    pub fn run_id(&self) -> &str {
        &self.manifest.name
    }

    /// Root of the tables the run writes.
    pub fn output_root(&self) -> anyhow::Result<PathBuf> {
        let root = match &self.manifest.output.path {
            Some(p) => self.base.join(p),
            None => self.pipeline.base.join(&self.pipeline.manifest.sinks.parquet.path),
        };
        Ok(match self.manifest.output.tables {
            OutputTables::Main => root,
            OutputTables::Separate => root.join("backfills").join(&self.manifest.name),
        })
    }

    /// Where the run's plan, attempts and totals are kept.
    pub fn status_path(&self) -> anyhow::Result<PathBuf> {
        Ok(self.output_root()?.join("_backfill").join(format!("{}.json", self.manifest.name)))
    }

    /// Every problem of the backfill manifest and of its pipeline as pinned,
    /// each with its path.
    pub fn validate(&self) -> Problems {
        let m = &self.manifest;
        let mut problems = Problems::new();
        if !valid_name(&m.name) {
            problems.push("name", "use 1 to 128 letters, digits, `-`, `_` or `.`");
        }
        m.source.validate("source", &mut problems);
        if let BoundedConfig::Kafka(k) = &m.source {
            switchyard_schemas::kafka::check_readable("source", &k.secrets, &self.base, &mut problems);
        }
        let workers = &self.pipeline.manifest.workers;
        for name in m.pins.models.keys() {
            if !workers.contains_key(name) {
                problems.push(format!("pins.models.{name}"), format!("the pipeline has no worker `{name}`"));
            }
        }
        for (name, w) in workers {
            if let WorkerConfig::Onnx(c) = w {
                if c.version.is_none() {
                    let have = registry::latest(&self.pipeline.base.join(&c.registry), &c.model)
                        .map(|v| format!(" (the registry's latest is version {v})"))
                        .unwrap_or_default();
                    problems.push(
                        format!("pins.models.{name}"),
                        format!("pin the version of model `{}` for a backfill{have}", c.model),
                    );
                }
            }
        }
        let policy = &self.pipeline.manifest.routing.version;
        if m.pins.policy_version.trim().is_empty() {
            problems
                .push("pins.policy_version", format!("pin the routing policy version (the pipeline's is `{policy}`)"));
        } else if &m.pins.policy_version != policy {
            problems.push(
                "pins.policy_version",
                format!("`{}` is pinned, but the pipeline's routing policy is `{policy}`", m.pins.policy_version),
            );
        }
        for name in m.cloud.keys() {
            match workers.get(name) {
                Some(w) if w.is_cloud() => {}
                Some(_) => problems.push(format!("cloud.{name}"), format!("`{name}` is not a cloud worker")),
                None => problems.push(format!("cloud.{name}"), format!("the pipeline has no worker `{name}`")),
            }
        }
        if !(m.cloud_share > 0.0 && m.cloud_share <= 1.0) {
            problems.push("cloud_share", "must be in (0, 1]");
        }
        if m.output.kafka && self.pipeline.manifest.sinks.kafka.is_none() {
            problems.push("output.kafka", "the pipeline has no sinks.kafka section");
        }
        for p in self.pipeline.validate().items() {
            problems.push(format!("pipeline: {}", p.path), p.message.clone());
        }
        problems
    }

    /// Points a Kafka source at `bootstrap_servers` when given, then checks
    /// the manifest (see [`Backfill::ensure_valid`]).
    pub fn ready(&mut self, bootstrap_servers: Option<&str>) -> anyhow::Result<()> {
        if let (Some(bs), BoundedConfig::Kafka(k)) = (bootstrap_servers, &mut self.manifest.source) {
            bs.clone_into(&mut k.bootstrap_servers);
        }
        self.ensure_valid()
    }

    /// Fails with every problem when the manifest is not valid.
    pub fn ensure_valid(&self) -> anyhow::Result<()> {
        let problems = self.validate();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(manifest::Invalid { path: self.path.clone(), problems }.into())
        }
    }
}

impl BackfillManifest {
    fn models_pin(&self, worker: &str) -> Option<String> {
        self.pins.models.get(worker).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
    }

    #[test]
    fn shipped_backfill_manifest_is_valid_and_pins_apply() {
        let b = load(&repo().join("pipelines/backfill-fraud.yaml")).unwrap();
        let p = b.validate();
        assert!(p.is_empty(), "{p}");
        let Some(WorkerConfig::Onnx(c)) = b.pipeline.manifest.workers.get("fraud") else { panic!("no fraud worker") };
        assert_eq!(c.version.as_deref(), Some("1"));
        assert!(c.reload.is_none());
        assert!(b.pipeline.manifest.monitor.is_none());
    }

    #[test]
    fn shipped_kafka_backfill_manifest_is_valid_and_limits_replace_the_pipelines() {
        let b = load(&repo().join("pipelines/backfill-outage.yaml")).unwrap();
        let p = b.validate();
        assert!(p.is_empty(), "{p}");
        let Some((_, c)) = b.pipeline.manifest.workers.get("fraud-cloud").and_then(|w| w.cloud()) else {
            panic!("no cloud worker")
        };
        assert_eq!(c.rate_limit.requests_per_second, Some(20.0));
        assert_eq!(c.max_concurrency, 1);
        assert_eq!(c.budget.as_ref().map(|b| b.limit), Some(0.02));
        assert_eq!(b.output_root().unwrap(), b.pipeline.base.join(&b.pipeline.manifest.sinks.parquet.path));
    }

    #[test]
    fn broken_backfill_manifest_reports_each_problem_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let text = std::fs::read_to_string(repo().join("pipelines/backfill-fraud.yaml")).unwrap();
        let pipeline = repo().join("pipelines/fraud.yaml");
        let broken = text
            .replace("name: rescore-history", "name: \"bad name!\"")
            .replace("policy_version: fraud-policy/1", "policy_version: fraud-policy/0")
            .replace("fraud: \"1\"", "frad: \"1\"")
            .replace("pipeline: fraud.yaml", &format!("pipeline: {}", pipeline.display()));
        let path = dir.path().join("b.yaml");
        std::fs::write(&path, broken).unwrap();
        let text = load(&path).unwrap().validate().to_string();
        for needle in [
            "name: use 1 to 128 letters",
            "pins.policy_version: `fraud-policy/0` is pinned, but the pipeline's routing policy is `fraud-policy/1`",
            "pins.models.frad: the pipeline has no worker `frad`",
            "pins.models.fraud: pin the version of model `fraud`",
        ] {
            assert!(text.contains(needle), "missing `{needle}` in:\n{text}");
        }
    }
}
