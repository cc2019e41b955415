//! The `monitor:` section of a manifest: schedule, windows, reference,
//! per-column tests, accuracy thresholds, triggers and rollout criteria.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use switchyard_schemas::Problems;

use crate::drift::{Reference, StatTest, TestChoice, Window, SCORE};
use crate::rollout::RolloutCriteria;
use crate::triggers::TriggersConfig;
use crate::{Error, Result};

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
            if name != SCORE && !features.contains(name) {
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
        let t = &self.triggers;
        switchyard_schemas::kafka::check(&format!("{path}.triggers"), &t.properties, &t.secrets, problems);
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
