//! The plan: a loaded manifest and the command line's overrides, checked
//! and resolved once. Every command takes its source, tables, sinks,
//! feedback consumer, monitor and workers from here, never from the raw
//! manifest, so an override or a default is applied in one place.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use switchyard_analysis::MonitorConfig;
use switchyard_ingest::{FeedbackConfig, KafkaSourceConfig};
use switchyard_router::RouteKind;
use switchyard_schemas::kafka as client;
use switchyard_sink::{KafkaSinkConfig, ParquetSinkConfig, TableRoot};
use switchyard_workers::WorkerConfig;

use super::{Invalid, Loaded, Manifest};

/// What the command line may change in a manifest.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// Kafka bootstrap servers of the source, and of every sink, feedback
    /// consumer and trigger producer that names none of its own.
    pub bootstrap_servers: Option<String>,
    /// The table root, instead of `sinks.parquet.path`: a folder (relative
    /// to the working directory) or an `s3://`, `gs://`, `az://` URL.
    pub tables: Option<PathBuf>,
}

/// A manifest resolved for running.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The manifest as read (its sections configure the stages).
    pub loaded: Loaded,
    /// The Kafka consumer of the source.
    pub source: KafkaSourceConfig,
    /// Where the tables are: a local folder or an object store prefix.
    pub tables: TableRoot,
    /// Parquet roll settings.
    pub parquet: ParquetSinkConfig,
    /// Results and DLQ topics, their brokers resolved.
    pub kafka: Option<KafkaSinkConfig>,
    /// The feedback consumer, when the manifest has one.
    pub feedback: Option<FeedbackPlan>,
    /// The monitor, when the manifest has one.
    pub monitor: Option<MonitorPlan>,
    /// The kind of every worker, for the router.
    pub route_kinds: HashMap<String, RouteKind>,
    /// Names of the feature vector's positions.
    pub features: Vec<String>,
}

/// The feedback consumer's settings.
#[derive(Debug, Clone)]
pub struct FeedbackPlan {
    /// The `feedback:` section.
    pub config: FeedbackConfig,
    /// Its consumer: the source's settings with the feedback topics, group
    /// and brokers.
    pub source: KafkaSourceConfig,
}

/// The monitor's settings.
#[derive(Debug, Clone)]
pub struct MonitorPlan {
    /// The `monitor:` section.
    pub config: MonitorConfig,
    /// The watched model's name.
    pub model: String,
    /// Its registry folder.
    pub registry: PathBuf,
    /// Brokers of the trigger topic's producer (when it names none).
    pub bootstrap_servers: String,
}

/// The kind of every worker, for the router.
pub(super) fn route_kinds(m: &Manifest) -> HashMap<String, RouteKind> {
    m.workers.iter().map(|(n, w)| (n.clone(), if w.is_cloud() { RouteKind::Cloud } else { RouteKind::Local })).collect()
}

impl Plan {
    /// SHA-256 of the routing policy as loaded (audit rows, OpenLineage).
    pub fn policy_hash(&self) -> String {
        switchyard_schemas::sha256_hex(&serde_json::to_vec(&self.manifest().routing).unwrap_or_default())
    }

    /// Checks `loaded` (every problem, see [`Loaded::validate`]) and
    /// resolves it with `overrides`: what every command that runs stages
    /// uses.
    pub fn build(loaded: &Loaded, overrides: &Overrides) -> Result<Plan, Invalid> {
        let problems = loaded.validate();
        if !problems.is_empty() {
            return Err(Invalid { path: loaded.path.clone(), problems });
        }
        Self::resolve(loaded, overrides)
    }

    /// Resolves `loaded` with `overrides` without checking its files: for
    /// commands that only read the tables (`drift`), which must work where
    /// the models or ONNX Runtime are not installed.
    pub fn resolve(loaded: &Loaded, overrides: &Overrides) -> Result<Plan, Invalid> {
        let m = &loaded.manifest;
        let base = &loaded.base;
        let mut source = m.source.kafka().clone();
        if let Some(b) = &overrides.bootstrap_servers {
            source.bootstrap_servers = b.clone();
        }
        client::rebase(&mut source.secrets, base);
        let bootstrap = source.bootstrap_servers.clone();
        let pq = &m.sinks.parquet;
        let (what, location, from) = match &overrides.tables {
            Some(t) => ("--tables", t.to_string_lossy().into_owned(), Path::new("")),
            None => ("sinks.parquet.path", pq.path.to_string_lossy().into_owned(), base.as_path()),
        };
        let tables = TableRoot::parse(&location, from, &pq.storage_options).map_err(|e| {
            let mut problems = switchyard_schemas::Problems::new();
            problems.push(what, e.to_string());
            Invalid { path: loaded.path.clone(), problems }
        })?;
        let kafka = m.sinks.kafka.clone().map(|mut k| {
            client::rebase(&mut k.secrets, base);
            if k.bootstrap_servers.is_none() {
                // The source's cluster: its connection settings apply too.
                client::inherit(&mut k.properties, &mut k.secrets, &source.properties, &source.secrets);
                k.bootstrap_servers = Some(bootstrap.clone());
            }
            k
        });
        let feedback = m.feedback.clone().map(|mut config| {
            client::rebase(&mut config.secrets, base);
            let mut fb = source.clone();
            fb.topics = config.topics.clone();
            fb.group_id = config.group_id.clone().unwrap_or_else(|| format!("{}-feedback", source.group_id));
            fb.bootstrap_servers = config.bootstrap_servers.clone().unwrap_or_else(|| bootstrap.clone());
            fb.properties.extend(config.properties.clone());
            for k in config.properties.keys() {
                fb.secrets.remove(k);
            }
            fb.secrets.extend(config.secrets.clone());
            FeedbackPlan { config, source: fb }
        });
        let monitor = m.monitor.clone().and_then(|mut config| match m.workers.get(&config.worker) {
            // `validate` reports a monitor that watches no onnx worker.
            Some(WorkerConfig::Onnx(c)) => Some(MonitorPlan {
                config: {
                    let t = &mut config.triggers;
                    client::rebase(&mut t.secrets, base);
                    if t.bootstrap_servers.is_none() {
                        client::inherit(&mut t.properties, &mut t.secrets, &source.properties, &source.secrets);
                    }
                    config
                },
                model: c.model.clone(),
                registry: loaded.base.join(&c.registry),
                bootstrap_servers: bootstrap.clone(),
            }),
            _ => None,
        });
        Ok(Plan {
            loaded: loaded.clone(),
            source,
            tables,
            parquet: m.sinks.parquet.clone(),
            kafka,
            feedback,
            monitor,
            route_kinds: route_kinds(m),
            features: loaded.feature_names(),
        })
    }

    /// The manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.loaded.manifest
    }

    /// The model the drift report analyses: the monitored one, else the
    /// first `onnx` worker's.
    pub fn analysed_model(&self) -> Option<String> {
        self.monitor.as_ref().map(|m| m.model.clone()).or_else(|| {
            self.manifest().workers.values().find_map(|w| match w {
                WorkerConfig::Onnx(c) => Some(c.model.clone()),
                _ => None,
            })
        })
    }
}
