//! Pipeline manifests: reading (every shape problem with its path and
//! line), the checks between sections, and the [`Plan`]: the manifest and
//! the command line's overrides resolved once, which every command runs on.
//!
//! ```text
//!  manifest.yaml ──▶ load: Document (lines) ──▶ sections ──▶ Loaded ──▶ Plan::build(overrides)
//!                        shape problems ──────────────────────────────┴──▶ every problem, exit 2
//! ```

mod check;
mod plan;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use switchyard_analysis::MonitorConfig;
use switchyard_ingest::{FeedbackConfig, KafkaSourceConfig, PreprocessConfig};
use switchyard_router::{PolicyConfig, RouteKind};
use switchyard_schemas::{Document, EventSchema, Problems};
use switchyard_sink::SinksConfig;
use switchyard_workers::WorkerConfig;

pub use plan::{FeedbackPlan, Overrides, Plan};

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
    /// How the running worker is operated: metrics and health endpoints,
    /// the graceful stop.
    #[serde(default)]
    pub service: ServiceConfig,
}

/// The top-level keys of a manifest.
const SECTIONS: &[&str] = &[
    "name",
    "description",
    "source",
    "schema",
    "preprocess",
    "routing",
    "workers",
    "sinks",
    "feedback",
    "monitor",
    "service",
];

/// The `service:` section: operating a streaming run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// `host:port` of the HTTP listener serving `/metrics` (Prometheus),
    /// `/healthz` and `/readyz`, e.g. `0.0.0.0:9464`; none when absent
    /// (`run --listen` sets it too).
    #[serde(default)]
    pub listen: Option<String>,
    /// Export Prometheus metrics on `/metrics` (with `listen`). Default: true.
    #[serde(default = "yes")]
    pub metrics: bool,
    /// Longest graceful stop after the first SIGTERM or Ctrl-C, in ms:
    /// finishing the chunks in flight, the last roll, Kafka's
    /// acknowledgements and the offset commit. When it runs out the process
    /// exits at once (status 130), losing nothing: what was not committed
    /// is read again. Default: 30000.
    #[serde(default = "default_shutdown_timeout_ms")]
    pub shutdown_timeout_ms: u64,
    /// OpenLineage run events (START, RUNNING, COMPLETE, FAIL) to a server
    /// and/or a file. Default: none.
    #[serde(default)]
    pub openlineage: Option<OpenLineageConfig>,
}

/// The `service.openlineage` section.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OpenLineageConfig {
    /// Base URL of the OpenLineage server; events go to `{url}/api/v1/lineage`.
    #[serde(default)]
    pub url: Option<String>,
    /// A JSON Lines file the events are appended to (relative to the manifest).
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// The job's namespace. Default: `switchyard`.
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// How often a `RUNNING` event is sent while the run goes on, in ms. Default: 60000.
    #[serde(default = "default_running_interval_ms")]
    pub running_interval_ms: u64,
}

fn default_namespace() -> String {
    "switchyard".into()
}

fn default_running_interval_ms() -> u64 {
    60_000
}

impl OpenLineageConfig {
    /// Reports every problem under `path`.
    pub fn validate(&self, path: &str, problems: &mut Problems) {
        if self.url.is_none() && self.file.is_none() {
            problems.push(path, "needs `url` (an OpenLineage server) or `file` (JSON Lines), or both");
        }
        if let Some(u) = &self.url {
            if !(u.starts_with("http://") || u.starts_with("https://")) {
                problems.push(format!("{path}.url"), format!("`{u}` is not an http(s) URL"));
            }
        }
        if self.running_interval_ms == 0 {
            problems.push(format!("{path}.running_interval_ms"), "must be at least 1");
        }
    }
}

fn yes() -> bool {
    true
}

fn default_shutdown_timeout_ms() -> u64 {
    30_000
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self { listen: None, metrics: true, shutdown_timeout_ms: default_shutdown_timeout_ms(), openlineage: None }
    }
}

impl ServiceConfig {
    /// Reports every problem under `path`.
    pub fn validate(&self, path: &str, problems: &mut Problems) {
        if let Some(l) = &self.listen {
            if l.parse::<std::net::SocketAddr>().is_err() {
                problems
                    .push(format!("{path}.listen"), format!("`{l}` is not a host:port address (e.g. 0.0.0.0:9464)"));
            }
        }
        if self.shutdown_timeout_ms == 0 {
            problems.push(format!("{path}.shutdown_timeout_ms"), "must be at least 1");
        }
        if let Some(o) = &self.openlineage {
            o.validate(&format!("{path}.openlineage"), problems);
        }
    }
}

/// The `source:` section, selected by `type`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SourceConfig {
    /// A Kafka consumer group.
    Kafka(KafkaSourceConfig),
}

impl SourceConfig {
    /// The Kafka consumer settings.
    pub fn kafka(&self) -> &KafkaSourceConfig {
        match self {
            SourceConfig::Kafka(k) => k,
        }
    }
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

/// A manifest with problems: every one of them, each with its path.
#[derive(Debug)]
pub struct Invalid {
    /// The manifest file.
    pub path: PathBuf,
    /// What is wrong.
    pub problems: Problems,
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: invalid manifest: {} problem(s)\n{}",
            self.path.display(),
            self.problems.items().len(),
            self.problems
        )
    }
}

impl std::error::Error for Invalid {}

/// Reads and parses a manifest. A file that cannot be read is an error;
/// a manifest with problems is [`Invalid`], with every problem: each shape
/// problem (unknown keys, wrong types, missing fields) at its path and true
/// line, and the problems the sections that did parse have.
pub fn load(path: &Path) -> anyhow::Result<Loaded> {
    let bytes = std::fs::read(path).map_err(|e| anyhow::anyhow!("{}: cannot read manifest: {e}", path.display()))?;
    let invalid = |problems| anyhow::Error::new(Invalid { path: path.to_path_buf(), problems });
    let doc = document(path, &bytes)?;
    let mut problems = Problems::new();
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let base = if base.as_os_str().is_empty() { PathBuf::from(".") } else { base };
    let parts = Parts::read(&doc, &mut problems);
    if !parts.all_parsed() || !problems.is_empty() {
        check::check(&parts.sections(&doc), &base, &mut problems);
        return Err(invalid(problems));
    }
    // The sections served to find problems; the manifest itself is read from
    // the text as written (a plain `1.10` stays the text `1.10`).
    let manifest: Manifest = serde_yaml::from_slice(&bytes).map_err(|e| {
        let mut problems = Problems::new();
        problems.push("(document)", e.to_string());
        invalid(problems)
    })?;
    for (name, w) in &manifest.workers {
        for warning in w.deprecations(&format!("workers.{name}")) {
            tracing::warn!("{}: {warning}", path.display());
        }
    }
    Ok(Loaded { manifest, path: path.to_path_buf(), base, hash: switchyard_schemas::sha256_hex(&bytes) })
}

/// The YAML document of a manifest file's `bytes`; a syntax error is
/// [`Invalid`], with its line.
pub fn document(path: &Path, bytes: &[u8]) -> anyhow::Result<Document> {
    let text = std::str::from_utf8(bytes).map_err(|e| anyhow::anyhow!("{}: not UTF-8 text: {e}", path.display()))?;
    Document::parse(text).map_err(|e| {
        let mut problems = Problems::new();
        problems.push("(document)", e);
        anyhow::Error::new(Invalid { path: path.to_path_buf(), problems })
    })
}

/// The sections of a manifest, each `None` when it has shape problems
/// (reported as it is read); read one by one, so one section's mistake does
/// not hide the next one's, and workers entry by entry.
struct Parts {
    name: Option<String>,
    description: Option<Option<String>>,
    source: Option<SourceConfig>,
    schema: Option<EventSchema>,
    preprocess: Option<PreprocessConfig>,
    routing: Option<PolicyConfig>,
    workers: BTreeMap<String, WorkerConfig>,
    all_workers: bool,
    sinks: Option<SinksConfig>,
    feedback: Option<Option<FeedbackConfig>>,
    monitor: Option<Option<MonitorConfig>>,
    service: Option<ServiceConfig>,
}

impl Parts {
    fn read(doc: &Document, problems: &mut Problems) -> Self {
        doc.unknown_keys("", SECTIONS, problems);
        let (workers, all_workers) = entries::<WorkerConfig>(doc, "workers", problems);
        let service = section_or(doc, "service", ServiceConfig::default, problems);
        if let Some(s) = &service {
            s.validate("service", problems);
        }
        Parts {
            name: doc.extract("name", problems),
            description: section_or(doc, "description", || None, problems),
            source: doc.extract("source", problems),
            schema: doc.extract("schema", problems),
            preprocess: doc.extract("preprocess", problems),
            routing: doc.extract("routing", problems),
            workers,
            all_workers,
            sinks: doc.extract("sinks", problems),
            feedback: section_or(doc, "feedback", || None, problems),
            monitor: section_or(doc, "monitor", || None, problems),
            service,
        }
    }

    /// Whether every section parsed.
    fn all_parsed(&self) -> bool {
        self.name.is_some()
            && self.description.is_some()
            && self.source.is_some()
            && self.schema.is_some()
            && self.preprocess.is_some()
            && self.routing.is_some()
            && self.all_workers
            && self.sinks.is_some()
            && self.feedback.is_some()
            && self.monitor.is_some()
            && self.service.is_some()
    }

    /// What the checks can look at.
    fn sections<'a>(&'a self, doc: &Document) -> check::Sections<'a> {
        // A worker that did not parse still counts as a route, by its `type`.
        let mut route_kinds = HashMap::new();
        if let Some(serde_yaml::Value::Mapping(map)) = doc.get("workers") {
            for (k, v) in map {
                let Some(name) = k.as_str() else { continue };
                let kind = match v.get("type").and_then(|t| t.as_str()) {
                    Some("onnx") | None => RouteKind::Local,
                    Some(_) => RouteKind::Cloud,
                };
                route_kinds.insert(name.to_string(), kind);
            }
        }
        check::Sections {
            name: self.name.as_deref(),
            source: self.source.as_ref(),
            schema: self.schema.as_ref(),
            preprocess: self.preprocess.as_ref(),
            routing: self.routing.as_ref(),
            workers: self.workers.iter().map(|(n, w)| (n.as_str(), w)).collect(),
            route_kinds,
            all_workers: self.all_workers,
            sinks: self.sinks.as_ref(),
            feedback: self.feedback.as_ref().and_then(Option::as_ref),
            monitor: self.monitor.as_ref().and_then(Option::as_ref),
            monitor_parsed: self.monitor.is_some(),
        }
    }
}

/// A section that may be absent: `default()` then; `None` when it has
/// shape problems (reported).
pub fn section_or<T: serde::de::DeserializeOwned>(
    doc: &Document,
    path: &str,
    default: impl FnOnce() -> T,
    problems: &mut Problems,
) -> Option<T> {
    match doc.get(path) {
        None | Some(serde_yaml::Value::Null) => Some(default()),
        Some(_) => doc.extract(path, problems),
    }
}

/// A map section entry by entry: the entries that parsed, and whether all did.
fn entries<T: serde::de::DeserializeOwned>(
    doc: &Document,
    path: &str,
    problems: &mut Problems,
) -> (BTreeMap<String, T>, bool) {
    let Some(serde_yaml::Value::Mapping(map)) = doc.get(path) else {
        let whole: Option<BTreeMap<String, T>> = doc.extract(path, problems);
        let ok = whole.is_some();
        return (whole.unwrap_or_default(), ok);
    };
    let mut out = BTreeMap::new();
    let mut ok = true;
    for key in map.keys() {
        let Some(k) = key.as_str() else {
            let at = doc.line(path).map(|l| format!("line {l}: ")).unwrap_or_default();
            problems.push(path, format!("{at}worker names must be text"));
            ok = false;
            continue;
        };
        // A name with `.` or `[` cannot be part of a path: read it as a whole.
        let entry = if k.contains(['.', '[']) {
            serde_yaml::from_value::<T>(map[key].clone())
                .map_err(|e| {
                    let at = doc.line(path).map(|l| format!("line {l}: ")).unwrap_or_default();
                    problems.push(format!("{path}.{k}"), format!("{at}{e}"));
                })
                .ok()
        } else {
            doc.extract::<T>(&format!("{path}.{k}"), problems)
        };
        match entry {
            Some(v) => {
                out.insert(k.to_string(), v);
            }
            None => ok = false,
        }
    }
    (out, ok)
}

impl Loaded {
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
            .replace("dlq_topic: transactions-dlq", "dlq_topic: predictions")
            .replace(
                "  chunk_size: 1024\n",
                "  chunk_size: 1024\n  priority: {topics: [transactions, \"bad topic\"], chunk_size: 0}\n",
            );
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
            "source.priority.topics[0]: `transactions` is also in source.topics",
            "source.priority.topics[1]: `bad topic` is not a valid Kafka topic name",
            "source.priority.chunk_size: must be at least 1",
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

    /// The 1-based line of the first line of `text` containing `needle`.
    fn line_of(text: &str, needle: &str) -> usize {
        text.lines().position(|l| l.contains(needle)).expect("needle in text") + 1
    }

    #[test]
    fn shape_problems_are_reported_together_with_their_true_lines_and_the_other_problems() {
        let text = std::fs::read_to_string(repo().join("pipelines/fraud.yaml"))
            .unwrap()
            .replace("chunk_size: 1024", "chunk_size: lots")
            .replace("max_batch_size: 1024", "max_batch_sise: 1024")
            .replace("dlq_topic: transactions-dlq", "dlq_topic: predictions")
            .replace("name: fraud-scoring", "name: fraud-scoring\nowner: risk-team");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.yaml");
        std::fs::write(&path, &text).unwrap();
        let models = repo().join("pipelines/models");
        std::fs::write(&path, text.replace("registry: models", &format!("registry: '{}'", models.display()))).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let e = load(&path).unwrap_err();
        let invalid = e.downcast_ref::<Invalid>().expect("an invalid manifest");
        let report = invalid.problems.to_string();
        for (path, needle) in [
            ("owner", "owner: risk-team"),
            ("source.chunk_size", "chunk_size: lots"),
            ("workers.fraud.max_batch_sise", "max_batch_sise"),
        ] {
            let line = line_of(&text, needle);
            assert!(report.contains(&format!("{path}: line {line}: ")), "no `{path}` at line {line} in:\n{report}");
        }
        // A section that parsed is still checked.
        assert!(report.contains("sinks.kafka.dlq_topic: must differ from results_topic"), "{report}");
    }

    #[test]
    fn every_shipped_pipeline_manifest_is_valid_and_resolves() {
        for entry in std::fs::read_dir(repo().join("pipelines")).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            if path.extension().is_none_or(|e| e != "yaml") || !text.contains("\nrouting:") {
                continue; // backfill manifests are checked by the backfill tests
            }
            let loaded = load(&path).unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
            let plan = Plan::build(&loaded, &Overrides::default()).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(plan.tables, loaded.base.join(&loaded.manifest.sinks.parquet.path).into());
            let with = Overrides { bootstrap_servers: Some("b:1".into()), tables: Some("/t".into()) };
            let plan = Plan::build(&loaded, &with).unwrap();
            assert_eq!((plan.source.bootstrap_servers.as_str(), plan.tables.local()), ("b:1", Some(Path::new("/t"))));
            if let Some(k) = &plan.kafka {
                let own = loaded.manifest.sinks.kafka.as_ref().and_then(|k| k.bootstrap_servers.clone());
                assert_eq!(k.bootstrap_servers.as_deref(), Some(own.as_deref().unwrap_or("b:1")));
            }
        }
    }

    #[test]
    fn a_registered_model_onnx_runtime_cannot_load_is_a_problem_for_validate() {
        // Corrupt bytes whose sha256 the metadata records: the hash check
        // passes, loading does not; `validate` must say so, as `run` would.
        let dir = tempfile::tempdir().unwrap();
        let version = dir.path().join("models/fraud/1");
        std::fs::create_dir_all(&version).unwrap();
        let bytes = b"not an onnx model".to_vec();
        let meta = std::fs::read_to_string(repo().join("pipelines/models/fraud/1/metadata.json")).unwrap();
        let mut meta: serde_json::Value = serde_json::from_str(&meta).unwrap();
        meta["sha256"] = switchyard_schemas::sha256_hex(&bytes).into();
        std::fs::write(version.join("metadata.json"), meta.to_string()).unwrap();
        std::fs::write(version.join("model.onnx"), &bytes).unwrap();
        let text = std::fs::read_to_string(repo().join("pipelines/fraud.yaml")).unwrap();
        let path = dir.path().join("m.yaml");
        std::fs::write(&path, text).unwrap();
        let problems = load(&path).unwrap().validate();
        assert!(problems.items().iter().any(|p| p.path == "workers.fraud.model"), "{problems}");
        assert!(Plan::build(&load(&path).unwrap(), &Overrides::default()).is_err());
    }

    #[test]
    fn values_are_read_as_written_and_worker_names_may_hold_dots() {
        let text = std::fs::read_to_string(repo().join("pipelines/fraud.yaml"))
            .unwrap()
            .replace("version: fraud-policy/1", "version: 1.10")
            .replace("route: fraud\n", "route: fraud.v2\n")
            .replace("workers:\n  fraud:\n", "workers:\n  fraud.v2:\n");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.yaml");
        let models = repo().join("pipelines/models");
        std::fs::write(&path, text.replace("registry: models", &format!("registry: '{}'", models.display()))).unwrap();
        let loaded = load(&path).unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(loaded.manifest.routing.version, "1.10");
        assert!(loaded.manifest.workers.contains_key("fraud.v2"));
        let p = loaded.validate();
        assert!(p.is_empty(), "{p}");
        // A shape problem in such a worker is still reported under its name.
        std::fs::write(&path, std::fs::read_to_string(&path).unwrap().replace("max_batch_size:", "max_batch_sise:"))
            .unwrap();
        let e = load(&path).unwrap_err();
        let report = e.downcast_ref::<Invalid>().unwrap().problems.to_string();
        assert!(report.contains("workers.fraud.v2: line "), "{report}");
        assert!(report.contains("max_batch_sise"), "{report}");
    }

    #[test]
    fn the_sinks_and_feedback_take_the_source_login_and_secret_files_resolve_from_the_manifest() {
        let text = std::fs::read_to_string(repo().join("pipelines/fraud.yaml")).unwrap().replace(
            "    session.timeout.ms: \"10000\"\n",
            "    session.timeout.ms: \"10000\"\n    security.protocol: SASL_SSL\n    sasl.mechanism: SCRAM-SHA-512\n    \
             sasl.username: alice\n  secrets:\n    sasl.password: { file: secrets/kafka.pw }\n",
        );
        let text = format!("{text}\nfeedback:\n  topics: [labels]\n  properties:\n    sasl.username: bob\n");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.yaml");
        let models = repo().join("pipelines/models");
        std::fs::write(&path, text.replace("registry: models", &format!("registry: '{}'", models.display()))).unwrap();
        // The secret's file is missing: a problem naming it.
        let loaded = load(&path).unwrap_or_else(|e| panic!("{e:#}"));
        let p = loaded.validate().to_string();
        assert!(p.contains("source.secrets.sasl.password: file: cannot read"), "{p}");
        assert!(p.contains("secrets/kafka.pw"), "{p}");
        std::fs::create_dir(dir.path().join("secrets")).unwrap();
        std::fs::write(dir.path().join("secrets/kafka.pw"), "pw-from-file\n").unwrap();
        let plan = Plan::build(&loaded, &Overrides::default()).unwrap_or_else(|e| panic!("{e}"));
        let pw = switchyard_schemas::SecretSource { env: None, file: Some(dir.path().join("secrets/kafka.pw")) };
        assert_eq!(plan.source.secrets["sasl.password"], pw, "relative to the manifest's folder");
        let k = plan.kafka.as_ref().unwrap();
        assert_eq!(k.properties["security.protocol"], "SASL_SSL");
        assert_eq!(k.properties["sasl.mechanism"], "SCRAM-SHA-512");
        assert!(!k.properties.contains_key("auto.offset.reset"), "only connection settings");
        assert_eq!(k.secrets["sasl.password"], pw);
        let config = k.client_config("unused:1").unwrap();
        assert_eq!(config.get("sasl.password"), Some("pw-from-file"));
        assert_eq!(config.get("compression.type"), Some("zstd"), "the default codec");
        let fb = &plan.feedback.as_ref().unwrap().source;
        assert_eq!(fb.properties["sasl.username"], "bob", "its own setting wins");
        assert_eq!(fb.properties["security.protocol"], "SASL_SSL");
        assert_eq!(fb.secrets["sasl.password"], pw);
        // Nothing printable holds the password.
        assert!(!format!("{plan:?}").contains("pw-from-file"));
    }
}
