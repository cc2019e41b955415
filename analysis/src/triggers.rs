//! Retrain triggers: the record a monitor emits when drift or accuracy
//! crosses a threshold, with its evidence, and where it goes — a Kafka
//! topic (the retrainer's input) and the `triggers` table (which holds the
//! cooldown).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{ArrayRef, StringArray};
use arrow::record_batch::RecordBatch;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use serde::{Deserialize, Serialize};
use switchyard_schemas::tables::TRIGGERS;
use switchyard_schemas::{trigger_arrow_schema, AuditEvent, SecretSource, TableRoot};

use crate::accuracy::Accuracy;
use crate::audit::{self, AuditRow};
use crate::{tables, Result};

/// Where retrain triggers go.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TriggersConfig {
    /// Kafka topic for triggers (the `triggers` table gets them anyway).
    #[serde(default)]
    pub topic: Option<String>,
    /// Brokers; the source's when absent.
    #[serde(default)]
    pub bootstrap_servers: Option<String>,
    /// Extra librdkafka producer properties. With no `bootstrap_servers` of
    /// its own, the producer also takes the source's connection properties.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    /// Secret librdkafka properties, from an environment variable or a file,
    /// as under `source.secrets` (the source's apply without `bootstrap_servers`).
    #[serde(default)]
    pub secrets: BTreeMap<String, SecretSource>,
    /// No second trigger for the same model version within this, in ms.
    #[serde(default = "default_cooldown_ms")]
    pub cooldown_ms: u64,
    /// The training data a trigger selects: labelled predictions of this
    /// long before the trigger, in ms.
    #[serde(default = "default_training_window_ms")]
    pub training_window_ms: u64,
    /// Fewest training rows the retrainer should accept.
    #[serde(default = "default_min_training_rows")]
    pub min_training_rows: usize,
}

fn default_cooldown_ms() -> u64 {
    6 * 3_600_000
}
fn default_training_window_ms() -> u64 {
    7 * 24 * 3_600_000
}
fn default_min_training_rows() -> usize {
    200
}

/// A model version's evidence that retraining is due.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TriggerRecord {
    /// Deterministic id (model, version, reason, evaluation window).
    pub trigger_id: String,
    /// When it was emitted (RFC 3339).
    pub created_at: String,
    /// Pipeline name.
    pub pipeline: String,
    /// Manifest hash of the pipeline.
    pub manifest_hash: String,
    /// The model and the version that drifted or lost accuracy.
    pub model: ModelVersion,
    /// Routes (workers) whose rows crossed a threshold, comma-separated.
    pub route: String,
    /// `drift`, `accuracy`, or `drift+accuracy`.
    pub reason: String,
    /// One line for people.
    pub summary: String,
    /// Metrics behind the decision.
    pub evidence: Evidence,
    /// Reference and current windows.
    pub windows: Windows,
    /// What the retrainer trains on.
    pub training_data: TrainingData,
    /// The model registry the retrainer registers the new version in.
    pub registry: String,
}

/// Model name and version.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ModelVersion {
    /// Name.
    pub name: String,
    /// Version.
    pub version: String,
}

/// A trigger's metrics.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Evidence {
    /// Run id of the drift analysis (rows of the `drift` table).
    pub drift_run_id: String,
    /// Per route that crossed a drift threshold.
    pub drift: Vec<GroupEvidence>,
    /// Per route that crossed an accuracy threshold.
    pub accuracy: Vec<Accuracy>,
}

/// Drift evidence of one route.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct GroupEvidence {
    /// Route.
    pub route: String,
    /// Current rows.
    pub rows: usize,
    /// Share of drifted features.
    pub drift_share: f64,
    /// Drifted features.
    pub drifted: Vec<String>,
    /// Every column's deciding test.
    pub metrics: Vec<Metric>,
}

/// One column's deciding test.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Metric {
    /// Column.
    pub column: String,
    /// Test.
    pub test: String,
    /// Score.
    pub score: f64,
    /// Threshold.
    pub threshold: f64,
    /// Verdict.
    pub drifted: bool,
}

/// The windows of a trigger.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Windows {
    /// The reference, described.
    pub reference: String,
    /// Current window start (RFC 3339).
    pub current_start: String,
    /// Current window end (RFC 3339).
    pub current_end: String,
}

/// The training set a trigger selects.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TrainingData {
    /// Tables root (an absolute path or a URL).
    pub tables: String,
    /// Self-contained SQL over `predictions` and `feedback`: `features`,
    /// `truth` AS `label`.
    pub sql: String,
    /// Fewest rows to train on.
    pub min_rows: usize,
}

/// Where triggers go: the trigger topic (when the manifest names one) and
/// the `triggers` table.
pub struct TriggerSink {
    producer: Option<(FutureProducer, String)>,
    tables: TableRoot,
}

impl TriggerSink {
    /// A producer for `config.topic` (on `config.bootstrap_servers`, else
    /// `bootstrap`), and the tables under `tables`.
    pub fn new(config: &TriggersConfig, bootstrap: &str, tables: TableRoot) -> Result<Self> {
        let producer = match &config.topic {
            Some(topic) => {
                let mut c = ClientConfig::new();
                c.set("enable.idempotence", "true").set("message.timeout.ms", "30000");
                let settings =
                    switchyard_schemas::kafka::settings("monitor.triggers", &config.properties, &config.secrets)
                        .map_err(crate::Error::Config)?;
                for (k, v) in settings {
                    c.set(k, v);
                }
                c.set("bootstrap.servers", config.bootstrap_servers.as_deref().unwrap_or(bootstrap));
                let p: FutureProducer = c.create()?;
                Some((p, topic.clone()))
            }
            None => None,
        };
        Ok(Self { producer, tables })
    }

    /// Kafka first (the retrainer's input), then the table that holds the
    /// cooldown: a crash between them re-emits the same trigger id, which
    /// the retrainer recognises.
    pub async fn emit(&self, t: &TriggerRecord, now_us: i64) -> Result<()> {
        let json = serde_json::to_string(t)?;
        if let Some((p, topic)) = &self.producer {
            p.send(FutureRecord::to(topic).key(&t.model.name).payload(&json), Duration::from_secs(30))
                .await
                .map_err(|(e, _)| e)?;
        }
        let strs = |v: &str| -> ArrayRef { Arc::new(StringArray::from(vec![v])) };
        let batch = RecordBatch::try_new(
            trigger_arrow_schema(),
            vec![
                strs(&t.trigger_id),
                tables::ts_column(std::iter::once(Some(now_us))),
                strs(&t.pipeline),
                strs(&t.model.name),
                strs(&t.model.version),
                strs(&t.route),
                strs(&t.reason),
                strs(&t.summary),
                strs(&json),
            ],
        )?;
        tables::append(&self.tables, TRIGGERS, now_us, &batch)?;
        audit::append(
            &self.tables,
            now_us,
            &AuditRow {
                pipeline: &t.pipeline,
                event: AuditEvent::TriggerEmitted,
                model: &t.model.name,
                version: &t.model.version,
                worker: &t.route,
                detail: &format!("{} ({}): {}", t.trigger_id, t.reason, t.summary),
            },
        )?;
        tracing::warn!(model = %t.model.name, version = %t.model.version, reason = %t.reason, trigger = %t.trigger_id, "retrain trigger: {}", t.summary);
        Ok(())
    }
}
