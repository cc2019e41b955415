//! Pipeline manifests: loading, validation of every section, and the
//! cross-checks between sections (routes name workers, the model's feature
//! order matches pre-processing).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use switchyard_ingest::{FeedbackConfig, KafkaSourceConfig, PreprocessConfig};
use switchyard_router::{PolicyConfig, RouteKind};
use switchyard_schemas::{EventSchema, Problems};
use switchyard_sink::drift::MonitorConfig;
use switchyard_sink::SinksConfig;
use switchyard_workers::{registry, WorkerConfig};

/// A pipeline manifest (YAML).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Pipeline name, recorded in every row's lineage.
    pub name: String,
    /// What the pipeline is for.
    #[serde(default)]
    pub description: Option<String>,
    /// Where events come from.
    pub source: SourceConfig,
    /// The input event schema.
    pub schema: EventSchema,
    /// Event → feature vector.
    pub preprocess: PreprocessConfig,
    /// The routing policy.
    pub routing: PolicyConfig,
    /// Workers by name; routing rules name them.
    pub workers: BTreeMap<String, WorkerConfig>,
    /// Where results go.
    pub sinks: SinksConfig,
    /// Ground truth coming back: feedback topics into the `feedback` table.
    #[serde(default)]
    pub feedback: Option<FeedbackConfig>,
    /// Drift and accuracy monitoring with retrain triggers.
    #[serde(default)]
    pub monitor: Option<MonitorConfig>,
}

/// The `source:` section, selected by `type`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SourceConfig {
    /// A Kafka consumer group.
    Kafka(KafkaSourceConfig),
}

/// A manifest read from disk, with what is derived from the file itself.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The parsed manifest.
    pub manifest: Manifest,
    /// The file it came from.
    pub path: PathBuf,
    /// Folder relative paths are resolved against.
    pub base: PathBuf,
    /// SHA-256 of the file's bytes.
    pub hash: String,
}

/// Reads and parses a manifest. Parse errors name the file, the field path
/// and the line.
pub fn load(path: &Path) -> anyhow::Result<Loaded> {
    let bytes = std::fs::read(path).map_err(|e| anyhow::anyhow!("{}: cannot read manifest: {e}", path.display()))?;
    let manifest: Manifest = serde_yaml::from_slice(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let base = if base.as_os_str().is_empty() { PathBuf::from(".") } else { base };
    Ok(Loaded { manifest, path: path.to_path_buf(), base, hash: switchyard_schemas::sha256_hex(&bytes) })
}

impl Loaded {
    /// The kind of every worker, for the router.
    pub fn route_kinds(&self) -> HashMap<String, RouteKind> {
        self.manifest
            .workers
            .iter()
            .map(|(n, w)| (n.clone(), if w.is_cloud() { RouteKind::Cloud } else { RouteKind::Local }))
            .collect()
    }

    /// Path of the table root.
    pub fn tables_root(&self) -> Option<PathBuf> {
        self.manifest.sinks.parquet.as_ref().map(|p| self.base.join(&p.path))
    }

    /// Every problem of the manifest, each with its path. Checks files
    /// (models, their hashes and feature order) but starts nothing.
    pub fn validate(&self) -> Problems {
        let m = &self.manifest;
        let mut problems = Problems::new();
        if m.name.trim().is_empty() {
            problems.push("name", "must not be empty");
        }
        match &m.source {
            SourceConfig::Kafka(k) => k.validate("source", &mut problems),
        }
        m.schema.validate("schema", &mut problems);
        m.preprocess.validate("preprocess", &m.schema, &mut problems);
        m.routing.validate("routing", &m.schema, &self.route_kinds(), &mut problems);
        if m.workers.is_empty() {
            problems.push("workers", "define at least one worker");
        }
        let features = self.feature_names();
        let fields: Vec<String> = m.schema.fields.iter().map(|f| f.name.clone()).collect();
        for (name, w) in &m.workers {
            let path = format!("workers.{name}");
            w.validate(&path, &fields, &mut problems);
            if let WorkerConfig::Onnx(c) = w {
                if c.model.trim().is_empty() {
                    continue;
                }
                let reg = self.base.join(&c.registry);
                match registry::resolve(&reg, &c.model, c.version.as_deref()) {
                    Err(e) => problems.push(format!("{path}.model"), e.to_string()),
                    Ok(entry) => {
                        if let Err(e) = entry.read_verified() {
                            problems.push(format!("{path}.model"), e.to_string());
                        }
                        if let Err(e) = entry.check_features(&features) {
                            problems.push("preprocess.features", e.to_string());
                        }
                    }
                }
            }
        }
        m.sinks.validate("sinks", &mut problems);
        if let Some(f) = &m.feedback {
            f.validate("feedback", &mut problems);
        }
        // A canary or shadow candidate is promoted or rolled back by the monitor.
        for (name, w) in &m.workers {
            if let WorkerConfig::Onnx(c) = w {
                let staged = c.reload.as_ref().filter(|r| r.rollout != switchyard_workers::RolloutMode::Replace);
                if let Some(r) = staged {
                    if m.monitor.as_ref().is_none_or(|mon| &mon.worker != name) {
                        problems.push(
                            format!("workers.{name}.reload.rollout"),
                            format!(
                                "`{}` needs a `monitor:` section watching worker `{name}` to promote or roll back \
                                 new versions (or use `replace`)",
                                r.rollout.as_str()
                            ),
                        );
                    }
                }
            }
        }
        if let Some(mon) = &m.monitor {
            match m.workers.get(&mon.worker) {
                Some(WorkerConfig::Onnx(_)) => {}
                Some(_) => problems.push("monitor.worker", format!("`{}` is not an onnx worker", mon.worker)),
                None => problems.push(
                    "monitor.worker",
                    format!(
                        "no worker `{}` (workers: {})",
                        mon.worker,
                        m.workers.keys().cloned().collect::<Vec<_>>().join(", ")
                    ),
                ),
            }
            mon.validate("monitor", &features, &mut problems);
            if let Some(d) = &mon.reference.dataset {
                if !self.base.join(d).exists() {
                    problems.push("monitor.reference.dataset", format!("{}: not found", self.base.join(d).display()));
                }
            }
        }
        problems
    }

    /// The watched worker's model name and registry folder.
    pub fn monitored_model(&self) -> Option<(String, PathBuf)> {
        let mon = self.manifest.monitor.as_ref()?;
        match self.manifest.workers.get(&mon.worker)? {
            WorkerConfig::Onnx(c) => Some((c.model.clone(), self.base.join(&c.registry))),
            _ => None,
        }
    }

    /// Names of the feature vector's positions.
    pub fn feature_names(&self) -> Vec<String> {
        self.manifest.preprocess.features.iter().flat_map(|f| f.output_names()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
    }

    #[test]
    fn shipped_manifest_is_valid() {
        let l = load(&repo().join("pipelines/fraud.yaml")).unwrap();
        let p = l.validate();
        assert!(p.is_empty(), "{p}");
    }

    #[test]
    fn broken_manifest_reports_every_problem_with_its_path() {
        let text = std::fs::read_to_string(repo().join("pipelines/fraud.yaml")).unwrap();
        let broken = text
            .replace("model: fraud\n", "model: frud\n")
            .replace("group_id: switchyard-fraud", "group_id: \"\"")
            .replace("{from: hour,", "{from: hours,")
            .replace(
                "      route: fraud\n      reason: default route",
                "      route: nowhere\n      reason: default route",
            )
            .replace("dlq_topic: transactions-dlq", "dlq_topic: predictions");
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("models")).unwrap();
        let path = dir.path().join("m.yaml");
        std::fs::write(&path, broken).unwrap();
        let problems = load(&path).unwrap().validate();
        let text = problems.to_string();
        for needle in [
            "source.group_id: must not be empty",
            "preprocess.features[1].from: no field `hours`",
            "routing.rules[3].route",
            "workers.fraud.model: model registry: model `frud` not found",
            "sinks.kafka.dlq_topic: must differ from results_topic",
        ] {
            assert!(text.contains(needle), "missing `{needle}` in:\n{text}");
        }
    }

    #[test]
    fn unknown_keys_are_parse_errors_naming_file_and_field() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.yaml");
        let text = std::fs::read_to_string(repo().join("pipelines/fraud.yaml")).unwrap();
        std::fs::write(&path, text.replace("max_batch_size: 1024", "max_batch_sise: 1024")).unwrap();
        let e = load(&path).unwrap_err().to_string();
        assert!(e.contains("m.yaml") && e.contains("max_batch_sise"), "{e}");
    }
}
