//! The checks of a manifest: each section's own, and those between
//! sections (routes name workers, the model's feature order matches
//! pre-processing, the monitor watches an `onnx` worker). Every rule that
//! `run` relies on is here, so `validate` and `run` agree.
//!
//! The checks run on [`Sections`]: the sections that parsed. A section
//! with shape problems is left out, and so are the checks that need it; the
//! rest still run, so one mistake does not hide the next.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use switchyard_analysis::MonitorConfig;
use switchyard_ingest::{FeedbackConfig, PreprocessConfig, Preprocessor};
use switchyard_router::{PolicyConfig, RouteKind};
use switchyard_schemas::{kafka as client, EventSchema, Problems};
use switchyard_sink::SinksConfig;
use switchyard_workers::{init_runtime, registry, ExecutionProviderKind, OnnxModel, RolloutMode, WorkerConfig};

use super::{Loaded, SourceConfig};

/// A manifest's sections, each present when it parsed.
#[derive(Default)]
pub(super) struct Sections<'a> {
    pub name: Option<&'a str>,
    pub source: Option<&'a SourceConfig>,
    pub schema: Option<&'a EventSchema>,
    pub preprocess: Option<&'a PreprocessConfig>,
    pub routing: Option<&'a PolicyConfig>,
    /// The workers that parsed.
    pub workers: BTreeMap<&'a str, &'a WorkerConfig>,
    /// Every worker's kind, including those that did not parse (by their
    /// `type`), so routes naming them are not reported as unknown.
    pub route_kinds: HashMap<String, RouteKind>,
    /// False when some worker did not parse.
    pub all_workers: bool,
    pub sinks: Option<&'a SinksConfig>,
    pub feedback: Option<&'a FeedbackConfig>,
    /// `None` when absent or when it did not parse; `monitor_parsed` tells.
    pub monitor: Option<&'a MonitorConfig>,
    pub monitor_parsed: bool,
}

impl Loaded {
    /// Every problem of the manifest, each with its path. Checks files
    /// (models load, their hashes and feature order) but starts nothing.
    pub fn validate(&self) -> Problems {
        let m = &self.manifest;
        let sections = Sections {
            name: Some(&m.name),
            source: Some(&m.source),
            schema: Some(&m.schema),
            preprocess: Some(&m.preprocess),
            routing: Some(&m.routing),
            workers: m.workers.iter().map(|(n, w)| (n.as_str(), w)).collect(),
            route_kinds: super::plan::route_kinds(m),
            all_workers: true,
            sinks: Some(&m.sinks),
            feedback: m.feedback.as_ref(),
            monitor: m.monitor.as_ref(),
            monitor_parsed: true,
        };
        let mut problems = Problems::new();
        check(&sections, &self.base, &mut problems);
        problems
    }
}

/// Every problem of `s` (files relative to `base`) into `problems`.
pub(super) fn check(s: &Sections<'_>, base: &Path, problems: &mut Problems) {
    let before = problems.items().len();
    if s.name.is_some_and(|n| n.trim().is_empty()) {
        problems.push("name", "must not be empty");
    }
    if let Some(SourceConfig::Kafka(k)) = s.source {
        k.validate("source", problems);
        client::check_readable("source", &k.secrets, base, problems);
    }
    let features: Option<Vec<String>> =
        s.preprocess.map(|p| p.features.iter().flat_map(|f| f.output_names()).collect());
    if let Some(schema) = s.schema {
        schema.validate("schema", problems);
        if let Some(p) = s.preprocess {
            p.validate("preprocess", schema, problems);
        }
        if let Some(r) = s.routing {
            r.validate("routing", schema, &s.route_kinds, problems);
        }
    }
    if s.route_kinds.is_empty() {
        problems.push("workers", "define at least one worker");
    }
    let fields: Option<Vec<String>> = s.schema.map(|sc| sc.fields.iter().map(|f| f.name.clone()).collect());
    for (name, w) in &s.workers {
        let path = format!("workers.{name}");
        if let Some(fields) = &fields {
            w.validate(&path, fields, problems);
        }
        if let WorkerConfig::Onnx(c) = w {
            if !c.model.trim().is_empty() {
                check_model(base, &path, c, features.as_deref(), problems);
            }
        }
    }
    if let Some(sinks) = s.sinks {
        sinks.validate("sinks", problems);
        if let Some(k) = &sinks.kafka {
            let schema_registry = s.schema.and_then(|sc| sc.registry.as_ref());
            if k.value_format == switchyard_sink::ValueFormat::Avro && k.registry.is_none() && schema_registry.is_none()
            {
                problems.push(
                    "sinks.kafka.registry",
                    "`value_format: avro` needs a Schema Registry to register the result schema with: set it here \
                     (or `schema.registry`)",
                );
            }
            client::check_readable("sinks.kafka", &k.secrets, base, problems);
        }
    }
    if let Some(f) = s.feedback {
        f.validate("feedback", problems);
        client::check_readable("feedback", &f.secrets, base, problems);
    }
    if let Some(mon) = s.monitor {
        client::check_readable("monitor.triggers", &mon.triggers.secrets, base, problems);
    }
    // A canary or shadow candidate is promoted or rolled back by the monitor.
    if s.monitor_parsed {
        for (name, w) in &s.workers {
            if let WorkerConfig::Onnx(c) = w {
                let staged = c.reload.as_ref().filter(|r| r.rollout != RolloutMode::Replace);
                if let Some(r) = staged {
                    if s.monitor.is_none_or(|mon| mon.worker != *name) {
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
    }
    if let Some(mon) = s.monitor {
        match (s.workers.get(mon.worker.as_str()), s.route_kinds.get(&mon.worker)) {
            (Some(WorkerConfig::Onnx(_)), _) => {}
            (None, Some(_)) => {} // did not parse: reported there
            (Some(_), _) => problems.push("monitor.worker", format!("`{}` is not an onnx worker", mon.worker)),
            (None, None) => {
                let mut names: Vec<&str> = s.route_kinds.keys().map(String::as_str).collect();
                names.sort_unstable();
                problems.push("monitor.worker", format!("no worker `{}` (workers: {})", mon.worker, names.join(", ")))
            }
        }
        if let Some(features) = &features {
            mon.validate("monitor", features, problems);
        }
        if let Some(d) = &mon.reference.dataset {
            if !base.join(d).exists() {
                problems.push("monitor.reference.dataset", format!("{}: not found", base.join(d).display()));
            }
        }
    }
    // What building the stages would refuse, when nothing above did.
    if problems.items().len() == before && s.all_workers {
        if let (Some(schema), Some(pre), Some(routing)) = (s.schema, s.preprocess, s.routing) {
            let schema = Arc::new(schema.clone());
            if let Err(e) = Preprocessor::build(pre, &schema) {
                problems.push("preprocess", e.to_string());
            }
            if let Err(e) = routing.build(&schema, &s.route_kinds) {
                problems.push("routing", e.to_string());
            }
        }
    }
}

/// The model is in the registry, ONNX Runtime loads it as `run` does (the
/// file's hash must match, and a file whose hash matches must still be a
/// model it can load), and its feature order is pre-processing's.
fn check_model(
    base: &Path,
    path: &str,
    c: &switchyard_workers::OnnxWorkerConfig,
    features: Option<&[String]>,
    problems: &mut Problems,
) {
    let entry = match registry::lookup(&base.join(&c.registry), &c.model, c.version.as_deref()) {
        Ok(e) => e,
        Err(e) => return problems.push(format!("{path}.model"), e.to_string()),
    };
    if let Err(e) = init_runtime(None).and_then(|()| OnnxModel::load(&entry, 1, ExecutionProviderKind::Cpu)) {
        problems.push(format!("{path}.model"), e.to_string());
    }
    if let Some(features) = features {
        if let Err(e) = entry.check_features(features) {
            problems.push("preprocess.features", e.to_string());
        }
    }
}
