//! The drift and accuracy monitor: evaluates the current window on a
//! schedule and, when drift or accuracy crosses the manifest's thresholds,
//! emits a retrain trigger with its evidence — to a Kafka topic and to the
//! `triggers` table — at most once per model version per cooldown.
//!
//! De-duplication survives restarts and several workers: the cooldown is
//! checked against the `triggers` table, and a trigger's id is derived from
//! the model, version, reason and the window it was computed at (aligned
//! to the evaluation interval), so two evaluations of the same window give
//! the same id.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{ArrayRef, AsArray, StringArray};
use arrow::datatypes::TimestampMicrosecondType;
use arrow::record_batch::RecordBatch;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use serde::{Deserialize, Serialize};
use switchyard_schemas::{audit_arrow_schema, trigger_arrow_schema, Decision, Problems};

use super::accuracy::{accuracy, accuracy_batch, labelled_sql, Accuracy};
use super::analysis::{analyse, format_time, DriftReport, DriftRequest, Reference, Window};
use super::rollout::{self, RolloutCriteria, RolloutOutcome};
use super::stats::{StatTest, TestChoice};
use crate::tables::{self, ACCURACY, AUDIT, DRIFT, TRIGGERS};
use crate::{catalog, Error, Result};

/// The `monitor:` section of a manifest.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MonitorConfig {
    /// The `onnx` worker whose model is watched.
    pub worker: String,
    /// How often to evaluate, in ms.
    #[serde(default = "default_interval_ms")]
    pub interval_ms: u64,
    /// Length of the current window (ending now), in ms.
    #[serde(default = "default_window_ms")]
    pub window_ms: u64,
    /// Fewest current rows of a model version and route to judge drift.
    #[serde(default = "default_min_rows")]
    pub min_rows: usize,
    /// What the current window is compared with.
    pub reference: ReferenceConfig,
    /// Share of drifted features that counts as dataset drift (Evidently's
    /// default 0.5).
    #[serde(default = "default_drift_share")]
    pub drift_share: f64,
    /// Per column (feature name or `score`): another test or threshold than
    /// Evidently's defaults.
    #[serde(default)]
    pub tests: BTreeMap<String, TestConfig>,
    /// Accuracy thresholds against feedback; none when absent.
    #[serde(default)]
    pub accuracy: Option<AccuracyThresholds>,
    /// Where triggers go, and how often.
    pub triggers: TriggersConfig,
    /// When a candidate model version (a worker's canary or shadow
    /// rollout) is promoted or rolled back.
    #[serde(default)]
    pub rollout: RolloutCriteria,
}

fn default_interval_ms() -> u64 {
    60_000
}
fn default_window_ms() -> u64 {
    3_600_000
}
fn default_min_rows() -> usize {
    500
}
fn default_drift_share() -> f64 {
    0.5
}

/// The reference: a time window of the model's own predictions, or a
/// pinned dataset.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ReferenceConfig {
    /// Start of the reference window (RFC 3339).
    #[serde(default)]
    pub start: Option<String>,
    /// End of the reference window (RFC 3339, exclusive).
    #[serde(default)]
    pub end: Option<String>,
    /// A Parquet file or folder with `features` (and optionally `score`),
    /// relative to the manifest's folder.
    #[serde(default)]
    pub dataset: Option<PathBuf>,
    /// After a candidate version is promoted, compare with the period it
    /// was judged on instead (the traffic it was validated for).
    #[serde(default = "yes")]
    pub rebase_on_promotion: bool,
}

fn yes() -> bool {
    true
}

/// A column's test override.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TestConfig {
    /// `ks`, `chisquare`, `z`, `wasserstein`, `jensenshannon` or `psi`.
    #[serde(default)]
    pub test: Option<StatTest>,
    /// Threshold of the test.
    #[serde(default)]
    pub threshold: Option<f64>,
}

/// When accuracy against feedback asks for retraining.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AccuracyThresholds {
    /// Trigger below this accuracy.
    #[serde(default)]
    pub min_accuracy: Option<f64>,
    /// Trigger below this ROC AUC.
    #[serde(default)]
    pub min_roc_auc: Option<f64>,
    /// Trigger above this Brier score.
    #[serde(default)]
    pub max_brier: Option<f64>,
    /// Fewest predictions with feedback to judge accuracy.
    #[serde(default = "default_min_labelled")]
    pub min_rows: usize,
}

fn default_min_labelled() -> usize {
    100
}

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

/// RFC 3339 → µs, with a message that shows the expected form.
pub fn parse_time(s: &str) -> std::result::Result<i64, String> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|d| d.timestamp_micros())
        .map_err(|e| format!("`{s}` is not an RFC 3339 time ({e}), e.g. 2026-11-22T10:00:00Z"))
}

impl MonitorConfig {
    /// Reports every problem under `path`; `features` are the model's.
    pub fn validate(&self, path: &str, features: &[String], problems: &mut Problems) {
        if self.interval_ms == 0 {
            problems.push(format!("{path}.interval_ms"), "must be at least 1");
        }
        if self.window_ms == 0 {
            problems.push(format!("{path}.window_ms"), "must be at least 1");
        }
        if !(0.0..=1.0).contains(&self.drift_share) {
            problems.push(format!("{path}.drift_share"), "must be between 0 and 1");
        }
        let r = &self.reference;
        match (&r.start, &r.end, &r.dataset) {
            (Some(s), Some(e), None) => match (parse_time(s), parse_time(e)) {
                (Ok(s), Ok(e)) if s >= e => problems.push(format!("{path}.reference.end"), "must be after start"),
                (Err(m), _) => problems.push(format!("{path}.reference.start"), m),
                (_, Err(m)) => problems.push(format!("{path}.reference.end"), m),
                _ => {}
            },
            (None, None, Some(_)) => {}
            _ => problems.push(
                format!("{path}.reference"),
                "give either `start` and `end` (a time window) or `dataset` (a Parquet path)",
            ),
        }
        for (name, t) in &self.tests {
            if name != super::analysis::SCORE && !features.contains(name) {
                problems.push(
                    format!("{path}.tests.{name}"),
                    format!("no feature `{name}` (features: {}, and `score`)", features.join(", ")),
                );
            }
            if t.threshold.is_some_and(|v| !v.is_finite() || v < 0.0) {
                problems.push(format!("{path}.tests.{name}.threshold"), "must be a non-negative number");
            }
        }
        if let Some(t) = &self.triggers.topic {
            if t.is_empty() || !t.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)) {
                problems.push(format!("{path}.triggers.topic"), format!("`{t}` is not a valid topic name"));
            }
        }
        self.rollout.validate(&format!("{path}.rollout"), problems);
    }

    /// The reference as the analysis takes it.
    pub fn reference(&self, base: &Path) -> Result<Reference> {
        match (&self.reference.start, &self.reference.end, &self.reference.dataset) {
            (Some(s), Some(e), None) => {
                let (s, e) = (parse_time(s).map_err(Error::Internal)?, parse_time(e).map_err(Error::Internal)?);
                Ok(Reference::Window(Window::new(s, e)))
            }
            (None, None, Some(d)) => Ok(Reference::Dataset(base.join(d))),
            _ => Err(Error::Internal("monitor.reference: give start and end, or dataset".into())),
        }
    }

    /// Per-column test choices.
    pub fn test_choices(&self) -> BTreeMap<String, TestChoice> {
        self.tests.iter().map(|(k, t)| (k.clone(), TestChoice { test: t.test, threshold: t.threshold })).collect()
    }
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
    /// Tables root (absolute).
    pub tables: String,
    /// Self-contained SQL over `predictions` and `feedback`: `features`,
    /// `truth` AS `label`.
    pub sql: String,
    /// Fewest rows to train on.
    pub min_rows: usize,
}

/// What one evaluation found.
#[derive(Debug)]
pub struct Evaluation {
    /// The drift analysis.
    pub report: DriftReport,
    /// Accuracy per model version and route.
    pub accuracy: Vec<Accuracy>,
    /// Triggers emitted by this evaluation.
    pub emitted: Vec<TriggerRecord>,
    /// Triggers due but held back (model version, why).
    pub suppressed: Vec<(String, String)>,
    /// The rollout of a candidate model version, when one is in progress.
    pub rollout: Option<RolloutOutcome>,
}

/// The monitor of one pipeline's model.
pub struct Monitor {
    config: MonitorConfig,
    /// Model name of the watched worker.
    model: String,
    features: Vec<String>,
    reference: Reference,
    tables: PathBuf,
    registry: PathBuf,
    pipeline: String,
    manifest_hash: String,
    producer: Option<(FutureProducer, String)>,
}

impl Monitor {
    /// Builds the monitor; `bootstrap` is the source's brokers.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: MonitorConfig,
        model: String,
        features: Vec<String>,
        base: &Path,
        tables: PathBuf,
        registry: PathBuf,
        pipeline: String,
        manifest_hash: String,
        bootstrap: &str,
    ) -> Result<Self> {
        let reference = config.reference(base)?;
        let producer = match &config.triggers.topic {
            Some(topic) => {
                let p: FutureProducer = ClientConfig::new()
                    .set("bootstrap.servers", config.triggers.bootstrap_servers.as_deref().unwrap_or(bootstrap))
                    .set("enable.idempotence", "true")
                    .set("message.timeout.ms", "30000")
                    .create()?;
                Some((p, topic.clone()))
            }
            None => None,
        };
        let abs = |p: PathBuf| std::fs::canonicalize(&p).unwrap_or(p);
        Ok(Self {
            config,
            model,
            features,
            reference,
            tables: abs(tables),
            registry: abs(registry),
            pipeline,
            manifest_hash,
            producer,
        })
    }

    /// How often [`Monitor::evaluate`] should run.
    pub fn interval(&self) -> Duration {
        Duration::from_millis(self.config.interval_ms)
    }

    /// Evaluates the window ending at `now_us`, writes the `drift` and
    /// `accuracy` tables, and emits the triggers that are due.
    pub async fn evaluate(&self, now_us: i64) -> Result<Evaluation> {
        let ctx = catalog::open(&self.tables).await?;
        let current = Window::new(now_us - self.config.window_ms as i64 * 1000, now_us);
        // A candidate version is judged first: its decision changes which
        // version serves, and so which may ask for retraining.
        let min_accuracy = self.config.accuracy.as_ref().and_then(|a| a.min_accuracy);
        let rollout = rollout::decide(
            &ctx,
            &self.registry,
            &self.model,
            &self.config.worker,
            &self.config.rollout,
            min_accuracy,
            now_us,
        )
        .await?;
        if let Some(RolloutOutcome::Promoted(d) | RolloutOutcome::RolledBack(d)) = &rollout {
            let event = if matches!(rollout, Some(RolloutOutcome::Promoted(_))) {
                "promote_decided"
            } else {
                "rollback_decided"
            };
            audit(
                &self.tables,
                now_us,
                &self.pipeline,
                event,
                &self.model,
                &d.version,
                &self.config.worker,
                &d.reason,
            )?;
            tracing::warn!(model = %self.model, version = %d.version, "{event}: {}", d.reason);
        }
        let serving = rollout::versions(&self.registry, &self.model)?;
        let reference = match serving.as_ref().and_then(|(_, st)| st.last_promotion()) {
            Some(Decision { evaluated_from_us: Some(from), evaluated_to_us: Some(to), .. })
                if self.config.reference.rebase_on_promotion =>
            {
                Reference::Window(Window::new(*from, *to))
            }
            _ => self.reference.clone(),
        };
        let req = DriftRequest {
            model: self.model.clone(),
            feature_names: self.features.clone(),
            reference,
            current,
            tests: self.config.test_choices(),
            drift_share: self.config.drift_share,
            buckets: 0,
        };
        let report = analyse(&ctx, &req).await?;
        if !report.groups.is_empty() {
            tables::append(&self.tables, DRIFT, report.computed_at_us, &report.to_batch()?)?;
        }
        let acc = if self.config.accuracy.is_some() { accuracy(&ctx, &self.model, current).await? } else { vec![] };
        if !acc.is_empty() {
            let b = accuracy_batch(&report.run_id, report.computed_at_us, &self.model, current, &acc)?;
            tables::append(&self.tables, ACCURACY, report.computed_at_us, &b)?;
        }

        // What crossed a threshold, per model version.
        let mut due: BTreeMap<String, (Vec<GroupEvidence>, Vec<Accuracy>)> = BTreeMap::new();
        for g in &report.groups {
            if g.rows >= self.config.min_rows && g.dataset_drifted {
                due.entry(g.model_version.clone()).or_default().0.push(GroupEvidence {
                    route: g.route.clone(),
                    rows: g.rows,
                    drift_share: g.drift_share,
                    drifted: g.drifted().into_iter().map(String::from).collect(),
                    metrics: g
                        .columns
                        .iter()
                        .map(|c| Metric {
                            column: c.column.clone(),
                            test: c.stats.test.as_str().into(),
                            score: c.stats.score,
                            threshold: c.stats.threshold,
                            drifted: c.stats.drifted,
                        })
                        .collect(),
                });
            }
        }
        if let Some(t) = &self.config.accuracy {
            for a in &acc {
                let low = t.min_accuracy.is_some_and(|m| a.accuracy < m)
                    || t.min_roc_auc.is_some_and(|m| a.roc_auc.is_some_and(|v| v < m))
                    || t.max_brier.is_some_and(|m| a.brier > m);
                if a.rows as usize >= t.min_rows && low {
                    due.entry(a.model_version.clone()).or_default().1.push(a.clone());
                }
            }
        }

        let last = self.last_triggers(&ctx).await?;
        let mut emitted = Vec::new();
        let mut suppressed = Vec::new();
        for (version, (drift, acc)) in due {
            // With a rollout state, only the serving version may ask for
            // retraining, and not while a candidate is being judged.
            if let Some((v, _)) = &serving {
                if let Some(c) = &v.candidate {
                    suppressed.push((version, format!("version {c} is being rolled out")));
                    continue;
                }
                if v.stable != version {
                    suppressed.push((version.clone(), format!("version {version} no longer serves")));
                    continue;
                }
            }
            let reason = match (drift.is_empty(), acc.is_empty()) {
                (false, false) => "drift+accuracy",
                (false, true) => "drift",
                _ => "accuracy",
            };
            let cooldown = self.config.triggers.cooldown_ms as i64 * 1000;
            if last.get(&version).is_some_and(|&t| now_us - t < cooldown) {
                suppressed.push((version, format!("{reason}: within the cooldown of the last trigger")));
                continue;
            }
            let record = self.trigger(&report, current, now_us, version, reason, drift, acc);
            self.emit(&record, now_us).await?;
            emitted.push(record);
        }
        Ok(Evaluation { report, accuracy: acc, emitted, suppressed, rollout })
    }

    /// Time of the newest trigger per version of this model, from the table.
    async fn last_triggers(&self, ctx: &datafusion::prelude::SessionContext) -> Result<BTreeMap<String, i64>> {
        let sql = format!(
            "SELECT model_version, max(created_at) AS t FROM triggers WHERE model_name = {} GROUP BY model_version",
            super::accuracy::quote(&self.model)
        );
        let mut out = BTreeMap::new();
        for b in catalog::query(ctx, &sql).await? {
            let v = arrow::compute::cast(b.column(0), &arrow::datatypes::DataType::Utf8)?;
            let (v, t) = (v.as_string::<i32>(), b.column(1).as_primitive::<TimestampMicrosecondType>());
            for i in 0..b.num_rows() {
                out.insert(v.value(i).to_string(), t.value(i));
            }
        }
        Ok(out)
    }

    #[allow(clippy::too_many_arguments)]
    fn trigger(
        &self,
        report: &DriftReport,
        current: Window,
        now_us: i64,
        version: String,
        reason: &str,
        drift: Vec<GroupEvidence>,
        acc: Vec<Accuracy>,
    ) -> TriggerRecord {
        let interval = self.config.interval_ms.max(1) as i64 * 1000;
        let slot = now_us / interval;
        let trigger_id = switchyard_schemas::sha256_hex(
            format!("{}\0{}\0{}\0{reason}\0{slot}", self.pipeline, self.model, version).as_bytes(),
        )[..32]
            .to_string();
        let mut parts = Vec::new();
        for g in &drift {
            parts.push(format!(
                "route {}: {} of {} features drifted ({})",
                g.route,
                g.drifted.len(),
                self.features.len(),
                g.drifted.join(", ")
            ));
        }
        for a in &acc {
            parts.push(format!(
                "route {}: accuracy {:.3}, ROC AUC {}, Brier {:.3} on {} labelled rows",
                a.route,
                a.accuracy,
                a.roc_auc.map_or("-".into(), |v| format!("{v:.3}")),
                a.brier,
                a.rows
            ));
        }
        let mut routes: Vec<String> =
            drift.iter().map(|g| g.route.clone()).chain(acc.iter().map(|a| a.route.clone())).collect();
        routes.sort();
        routes.dedup();
        let training = Window::new(now_us - self.config.triggers.training_window_ms as i64 * 1000, now_us);
        let sql = format!(
            "SELECT features, truth AS label FROM ({}) ORDER BY lineage_id",
            labelled_sql(&self.model, training, true)
        );
        TriggerRecord {
            trigger_id,
            created_at: format_time(now_us),
            pipeline: self.pipeline.clone(),
            manifest_hash: self.manifest_hash.clone(),
            model: ModelVersion { name: self.model.clone(), version },
            route: routes.join(","),
            reason: reason.into(),
            summary: parts.join("; "),
            evidence: Evidence { drift_run_id: report.run_id.clone(), drift, accuracy: acc },
            windows: Windows {
                reference: report.reference.to_string(),
                current_start: format_time(current.start_us.unwrap_or(0)),
                current_end: format_time(current.end_us.unwrap_or(0)),
            },
            training_data: TrainingData {
                tables: self.tables.display().to_string(),
                sql,
                min_rows: self.config.triggers.min_training_rows,
            },
            registry: self.registry.display().to_string(),
        }
    }

    /// Kafka first (the retrainer's input), then the table that holds the
    /// cooldown: a crash between them re-emits the same trigger id, which
    /// the retrainer recognises.
    async fn emit(&self, t: &TriggerRecord, now_us: i64) -> Result<()> {
        let json = serde_json::to_string(t)?;
        if let Some((p, topic)) = &self.producer {
            p.send(FutureRecord::to(topic).key(&t.model.name).payload(&json), Duration::from_secs(30))
                .await
                .map_err(|(e, _)| e)?;
        }
        let strs = |v: &str| -> ArrayRef { Arc::new(StringArray::from(vec![v])) };
        let ts = || crate::arrow_convert::ts(std::iter::once(Some(now_us)));
        let batch = RecordBatch::try_new(
            trigger_arrow_schema(),
            vec![
                strs(&t.trigger_id),
                ts(),
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
        audit(
            &self.tables,
            now_us,
            &self.pipeline,
            "trigger_emitted",
            &t.model.name,
            &t.model.version,
            &t.route,
            &format!("{} ({}): {}", t.trigger_id, t.reason, t.summary),
        )?;
        tracing::warn!(model = %t.model.name, version = %t.model.version, reason = %t.reason, trigger = %t.trigger_id, "retrain trigger: {}", t.summary);
        Ok(())
    }
}

/// Appends one row to the `audit` table.
#[allow(clippy::too_many_arguments)]
pub fn audit(
    root: &Path,
    at_us: i64,
    pipeline: &str,
    event: &str,
    model: &str,
    version: &str,
    worker: &str,
    detail: &str,
) -> Result<()> {
    let s = |v: &str| -> ArrayRef { Arc::new(StringArray::from(vec![v])) };
    let batch = RecordBatch::try_new(
        audit_arrow_schema(),
        vec![
            crate::arrow_convert::ts(std::iter::once(Some(at_us))),
            s(pipeline),
            s(event),
            s(model),
            s(version),
            s(worker),
            s(detail),
        ],
    )?;
    tables::append(root, AUDIT, at_us, &batch)?;
    Ok(())
}
