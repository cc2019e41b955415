//! Promotion or rollback of a candidate model version, by its measured
//! accuracy against feedback and the drift of its scores, compared with the
//! stable version over the same period.
//!
//! The candidate is the registry's highest version above the stable one
//! that was never rejected ([`RolloutState::candidate_of`]). Its period
//! starts with its first prediction (the worker took it up) and ends now.
//! Both versions' predictions by the watched worker in that period — canary
//! answers or shadow rows — are joined with feedback; the decision goes
//! into the registry's `rollout.json`, which the worker reads and follows.

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Float64Type, TimestampMicrosecondType};
use datafusion::prelude::SessionContext;
use serde::{Deserialize, Serialize};
use switchyard_schemas::{registered_versions, Problems, RolloutDecision, RolloutState};

use crate::accuracy::{accuracy_of, labelled_where, quote, Accuracy};
use crate::drift::format_time;
use crate::drift::stats::{compare, ColumnStats, StatTest, TestChoice};
use crate::{catalog, Error, Result};

/// `monitor.rollout`: when a candidate version is promoted or rolled back.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RolloutCriteria {
    /// Fewest predictions of the candidate with feedback before deciding.
    #[serde(default = "default_min_rows")]
    pub min_rows: usize,
    /// Roll back when the candidate's accuracy is below the stable
    /// version's by more than this.
    #[serde(default = "default_max_drop")]
    pub max_accuracy_drop: f64,
    /// Roll back when the candidate's ROC AUC is below the stable version's
    /// by more than this (when both have one).
    #[serde(default = "default_max_drop")]
    pub max_roc_auc_drop: f64,
    /// Roll back when the PSI of the candidate's scores against the stable
    /// version's scores over the period is above this; not checked when
    /// absent.
    #[serde(default)]
    pub max_score_psi: Option<f64>,
    /// Roll back a candidate still undecided (too little feedback) this
    /// long after its first prediction, in ms.
    #[serde(default = "default_max_duration_ms")]
    pub max_duration_ms: u64,
}

fn default_min_rows() -> usize {
    200
}
fn default_max_drop() -> f64 {
    0.02
}
fn default_max_duration_ms() -> u64 {
    24 * 3_600_000
}

impl Default for RolloutCriteria {
    fn default() -> Self {
        Self {
            min_rows: default_min_rows(),
            max_accuracy_drop: default_max_drop(),
            max_roc_auc_drop: default_max_drop(),
            max_score_psi: None,
            max_duration_ms: default_max_duration_ms(),
        }
    }
}

impl RolloutCriteria {
    /// Reports every problem under `path`.
    pub fn validate(&self, path: &str, problems: &mut Problems) {
        if self.min_rows == 0 {
            problems.push(format!("{path}.min_rows"), "must be at least 1");
        }
        for (name, v) in [("max_accuracy_drop", self.max_accuracy_drop), ("max_roc_auc_drop", self.max_roc_auc_drop)] {
            if !(0.0..=1.0).contains(&v) {
                problems.push(format!("{path}.{name}"), "must be between 0 and 1");
            }
        }
        if self.max_score_psi.is_some_and(|v| v.is_nan() || v <= 0.0) {
            problems.push(format!("{path}.max_score_psi"), "must be above 0");
        }
        if self.max_duration_ms == 0 {
            problems.push(format!("{path}.max_duration_ms"), "must be at least 1");
        }
    }
}

/// What the monitor found about the rollout in progress.
#[derive(Debug, Clone, PartialEq)]
pub enum RolloutOutcome {
    /// The candidate is not decided yet.
    Waiting {
        /// The candidate version.
        candidate: String,
        /// Its predictions with feedback so far.
        labelled: u64,
    },
    /// The candidate now serves.
    Promoted(RolloutDecision),
    /// The candidate is rolled back.
    RolledBack(RolloutDecision),
}

/// The versions a rollout compares.
#[derive(Debug, Clone, PartialEq)]
pub struct Versions {
    /// The serving version.
    pub stable: String,
    /// The candidate, if one is registered.
    pub candidate: Option<String>,
}

/// The stable and candidate versions of `model` in `registry`; `None` when
/// the registry cannot be read or has no rollout state (no worker with a
/// canary or shadow rollout serves it).
pub fn versions(registry: &std::path::Path, model: &str) -> Result<Option<(Versions, RolloutState)>> {
    let Ok(list) = registered_versions(registry, model) else { return Ok(None) };
    let state = RolloutState::load(registry, model).map_err(|e| Error::Registry(e.to_string()))?;
    let Some(stable) = state.stable.clone() else { return Ok(None) };
    let candidate = state.candidate_of(&list);
    Ok(Some((Versions { stable, candidate }, state)))
}

/// SQL filter on `predictions`: rows of `version` of `model` answered by `worker`.
fn of_version(model: &str, worker: &str, version: &str) -> String {
    format!(
        "model_name = {} AND route = {} AND CAST(model_version AS VARCHAR) = {}",
        quote(model),
        quote(worker),
        quote(version)
    )
}

/// Time of the first prediction of `version` by `worker`, if any.
async fn first_prediction(ctx: &SessionContext, model: &str, worker: &str, version: &str) -> Result<Option<i64>> {
    let sql = format!("SELECT min(ingest_time) FROM predictions WHERE {}", of_version(model, worker, version));
    for b in catalog::query(ctx, &sql).await? {
        let t = b.column(0).as_primitive::<TimestampMicrosecondType>();
        if b.num_rows() > 0 && !t.is_null(0) {
            return Ok(Some(t.value(0)));
        }
    }
    Ok(None)
}

/// Scores of `version` by `worker` since `since_us` (served and shadow).
async fn scores(ctx: &SessionContext, model: &str, worker: &str, version: &str, since_us: i64) -> Result<Vec<f32>> {
    let sql = format!(
        "SELECT score FROM predictions WHERE {} AND CAST(ingest_time AS BIGINT) >= {since_us} AND score IS NOT NULL",
        of_version(model, worker, version)
    );
    let mut out = Vec::new();
    for b in catalog::query(ctx, &sql).await? {
        let a = arrow::compute::cast(b.column(0), &DataType::Float64)?;
        out.extend(a.as_primitive::<Float64Type>().values().iter().map(|&v| v as f32));
    }
    Ok(out)
}

/// Judges the candidate of `model` (served by `worker`) at `now_us` and
/// records a decision in the registry. `min_accuracy` is the monitor's
/// absolute floor, when it has one. `Ok(None)`: no rollout in progress.
pub async fn decide(
    ctx: &SessionContext,
    registry: &std::path::Path,
    model: &str,
    worker: &str,
    criteria: &RolloutCriteria,
    min_accuracy: Option<f64>,
    now_us: i64,
) -> Result<Option<RolloutOutcome>> {
    let Some((Versions { stable, candidate: Some(candidate) }, mut state)) = versions(registry, model)? else {
        return Ok(None);
    };
    let Some(since) = first_prediction(ctx, model, worker, &candidate).await? else {
        return Ok(Some(RolloutOutcome::Waiting { candidate, labelled: 0 }));
    };
    let filter = format!(
        " AND p.route = {} AND CAST(p.model_version AS VARCHAR) IN ({}, {}) AND CAST(p.ingest_time AS BIGINT) >= {since}",
        quote(worker),
        quote(&stable),
        quote(&candidate)
    );
    let acc = accuracy_of(ctx, &labelled_where(model, &filter, false)).await?;
    let of = |v: &str| acc.iter().find(|a| a.model_version == v);
    let (cand, old) = (of(&candidate), of(&stable));
    let labelled = cand.map_or(0, |a| a.rows);
    let hours = |us: i64| us as f64 / 3.6e9;
    let decision = |reason: String| RolloutDecision {
        version: candidate.clone(),
        at: format_time(now_us),
        reason,
        evaluated_from_us: Some(since),
        evaluated_to_us: Some(now_us),
    };
    let outcome = match cand.filter(|a| a.rows as usize >= criteria.min_rows) {
        None if now_us - since > criteria.max_duration_ms as i64 * 1000 => {
            RolloutOutcome::RolledBack(decision(format!(
                "only {labelled} of {} labelled predictions after {:.1} h",
                criteria.min_rows,
                hours(now_us - since)
            )))
        }
        None => return Ok(Some(RolloutOutcome::Waiting { candidate, labelled })),
        Some(c) => {
            let psi = match criteria.max_score_psi {
                Some(limit) => {
                    let (a, b) = (
                        scores(ctx, model, worker, &stable, since).await?,
                        scores(ctx, model, worker, &candidate, since).await?,
                    );
                    compare(&a, &b, TestChoice { test: Some(StatTest::Psi), threshold: Some(limit) })
                }
                None => None,
            };
            judge(c, old, criteria, min_accuracy, psi.as_ref()).map_or_else(
                |why| RolloutOutcome::RolledBack(decision(why)),
                |why| RolloutOutcome::Promoted(decision(why)),
            )
        }
    };
    match &outcome {
        RolloutOutcome::Promoted(d) => state.promote(d.clone()),
        RolloutOutcome::RolledBack(d) => state.reject(d.clone()),
        RolloutOutcome::Waiting { .. } => {}
    }
    state.save(registry, model).map_err(|e| Error::Registry(e.to_string()))?;
    Ok(Some(outcome))
}

/// `Ok(why)` to promote, `Err(why)` to roll back.
fn judge(
    cand: &Accuracy,
    old: Option<&Accuracy>,
    c: &RolloutCriteria,
    min_accuracy: Option<f64>,
    score_drift: Option<&ColumnStats>,
) -> std::result::Result<String, String> {
    let mut failed = Vec::new();
    let mut facts = vec![format!("accuracy {:.3} on {} labelled predictions", cand.accuracy, cand.rows)];
    if let Some(o) = old {
        facts.push(format!("stable {:.3} on {}", o.accuracy, o.rows));
        if o.accuracy - cand.accuracy > c.max_accuracy_drop {
            failed.push(format!(
                "accuracy {:.3} is more than {} below the stable version's {:.3}",
                cand.accuracy, c.max_accuracy_drop, o.accuracy
            ));
        }
        if let (Some(a), Some(b)) = (cand.roc_auc, o.roc_auc) {
            facts.push(format!("ROC AUC {a:.3} vs {b:.3}"));
            if b - a > c.max_roc_auc_drop {
                failed.push(format!(
                    "ROC AUC {a:.3} is more than {} below the stable version's {b:.3}",
                    c.max_roc_auc_drop
                ));
            }
        }
    }
    if let Some(m) = min_accuracy.filter(|m| cand.accuracy < *m) {
        failed.push(format!("accuracy {:.3} is below the monitor's minimum {m}", cand.accuracy));
    }
    if let Some(d) = score_drift {
        facts.push(format!("score PSI {:.3}", d.score));
        if d.drifted {
            failed.push(format!("its scores drifted from the stable version's: PSI {:.3} > {}", d.score, d.threshold));
        }
    }
    if failed.is_empty() {
        Ok(facts.join(", "))
    } else {
        Err(failed.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acc(accuracy: f64, auc: Option<f64>) -> Accuracy {
        Accuracy {
            model_version: "v".into(),
            route: "r".into(),
            rows: 300,
            positives: 100,
            accuracy,
            precision: 0.5,
            recall: 0.5,
            f1: 0.5,
            roc_auc: auc,
            brier: 0.1,
            calibration: vec![],
        }
    }

    #[test]
    fn candidate_is_judged_against_the_stable_version() {
        let c = RolloutCriteria::default();
        assert!(judge(&acc(0.80, Some(0.9)), Some(&acc(0.81, Some(0.9))), &c, None, None).is_ok(), "within 0.02");
        let why = judge(&acc(0.70, Some(0.9)), Some(&acc(0.81, Some(0.9))), &c, None, None).unwrap_err();
        assert!(why.contains("accuracy 0.700") && why.contains("0.810"), "{why}");
        let why = judge(&acc(0.81, Some(0.80)), Some(&acc(0.81, Some(0.90))), &c, None, None).unwrap_err();
        assert!(why.contains("ROC AUC 0.800"), "{why}");
        assert!(judge(&acc(0.81, None), None, &c, Some(0.9), None).unwrap_err().contains("minimum 0.9"));
        assert!(judge(&acc(0.95, None), None, &c, Some(0.9), None).is_ok(), "no stable rows: the floor alone");
    }
}
