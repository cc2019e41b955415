//! The tables under a table root, by folder name, and their `date`
//! partition. The sink writes `predictions`, `dlq` and `feedback`; the
//! analysis side writes `drift`, `accuracy`, `triggers` and `audit` and
//! reads them all.

/// One row per answered event, partitioned by `date` and `model_version`.
pub const PREDICTIONS: &str = "predictions";
/// One row per record that could not be processed, partitioned by `date`.
pub const DLQ: &str = "dlq";
/// Every ground-truth record received, partitioned by `date`.
pub const FEEDBACK: &str = "feedback";
/// Drift analysis results.
pub const DRIFT: &str = "drift";
/// Accuracy analysis results.
pub const ACCURACY: &str = "accuracy";
/// Retrain triggers emitted, with their evidence.
pub const TRIGGERS: &str = "triggers";
/// Model lifecycle events.
pub const AUDIT: &str = "audit";

/// The `date` partition value (UTC, `YYYY-MM-DD`) of a µs timestamp.
pub fn date_partition(us: i64) -> String {
    chrono::DateTime::from_timestamp_micros(us)
        .map(|d| d.format("%Y-%m-%d").to_string())
        .unwrap_or_else(|| "1970-01-01".into())
}
