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

mod config;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use arrow::array::AsArray;
use arrow::datatypes::TimestampMicrosecondType;
use switchyard_schemas::tables::{ACCURACY, DRIFT};
use switchyard_schemas::{AuditEvent, RolloutDecision, TableRoot};

pub use self::config::{parse_time, AccuracyThresholds, MonitorConfig, ReferenceConfig, TestConfig};
use crate::accuracy::{accuracy, accuracy_batch, labelled_sql, quote, Accuracy};
use crate::audit::{self, AuditRow};
use crate::drift::{analyse, format_time, DriftReport, DriftRequest, Reference, Window};
use crate::rollout::{self, RolloutOutcome};
use crate::triggers::{
    Evidence, GroupEvidence, Metric, ModelVersion, TrainingData, TriggerRecord, TriggerSink, Windows,
};
use crate::{catalog, tables, Result};

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
    tables: TableRoot,
    registry: PathBuf,
    pipeline: String,
    manifest_hash: String,
    triggers: TriggerSink,
}

impl Monitor {
    /// Builds the monitor; `bootstrap` is the source's brokers.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: MonitorConfig,
        model: String,
        features: Vec<String>,
        base: &Path,
        tables: TableRoot,
        registry: PathBuf,
        pipeline: String,
        manifest_hash: String,
        bootstrap: &str,
    ) -> Result<Self> {
        let reference = config.reference(base)?;
        let abs = |p: PathBuf| std::fs::canonicalize(&p).unwrap_or(p);
        let tables = match tables {
            TableRoot::Local(p) => TableRoot::Local(abs(p)),
            store => store,
        };
        let triggers = TriggerSink::new(&config.triggers, bootstrap, tables.clone())?;
        Ok(Self {
            config,
            model,
            features,
            reference,
            tables,
            registry: abs(registry),
            pipeline,
            manifest_hash,
            triggers,
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
                AuditEvent::PromoteDecided
            } else {
                AuditEvent::RollbackDecided
            };
            audit::append(
                &self.tables,
                now_us,
                &AuditRow {
                    pipeline: &self.pipeline,
                    event,
                    model: &self.model,
                    version: &d.version,
                    worker: &self.config.worker,
                    detail: &d.reason,
                },
            )?;
            tracing::warn!(model = %self.model, version = %d.version, "{event}: {}", d.reason);
        }
        let serving = rollout::versions(&self.registry, &self.model)?;
        let reference = match serving.as_ref().and_then(|(_, st)| st.last_promotion()) {
            Some(RolloutDecision { evaluated_from_us: Some(from), evaluated_to_us: Some(to), .. })
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
            self.triggers.emit(&record, now_us).await?;
            emitted.push(record);
        }
        Ok(Evaluation { report, accuracy: acc, emitted, suppressed, rollout })
    }

    /// Time of the newest trigger per version of this model, from the table.
    async fn last_triggers(&self, ctx: &datafusion::prelude::SessionContext) -> Result<BTreeMap<String, i64>> {
        let sql = format!(
            "SELECT model_version, max(created_at) AS t FROM triggers WHERE model_name = {} GROUP BY model_version",
            quote(&self.model)
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
                tables: self.tables.to_string(),
                sql,
                min_rows: self.config.triggers.min_training_rows,
            },
            registry: self.registry.display().to_string(),
        }
    }
}
