//! Ground truth coming back on a feedback topic, and the retrain triggers
//! the drift and accuracy monitor emits.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use serde::{Deserialize, Serialize};

/// One ground-truth record: the true label of an event that was (or will
/// be) predicted, matched by `lineage_id` or else by the result key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Feedback {
    /// Lineage id of the predicted event (preferred match).
    pub lineage_id: Option<String>,
    /// Result key of the predicted event (used when `lineage_id` is absent).
    pub key: Option<String>,
    /// The true class.
    pub label: i64,
    /// When the truth was observed (µs since the epoch).
    pub observed_time_us: i64,
    /// Who observed it (e.g. `chargebacks`, `manual-review`).
    pub source: String,
    /// Feedback topic the record came from.
    pub feedback_topic: String,
    /// Its partition.
    pub feedback_partition: i32,
    /// Its offset.
    pub feedback_offset: i64,
    /// When switchyard received it (µs).
    pub ingest_time_us: i64,
}

fn ts() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// Arrow schema of the `feedback` table files (`date` of `observed_time` is
/// a partition column). Every record is kept; the `feedback_latest` view
/// keeps the newest per event.
pub fn feedback_arrow_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("lineage_id", DataType::Utf8, true),
        Field::new("key", DataType::Utf8, true),
        Field::new("label", DataType::Int64, false),
        Field::new("observed_time", ts(), false),
        Field::new("source", DataType::Utf8, false),
        Field::new("feedback_topic", DataType::Utf8, false),
        Field::new("feedback_partition", DataType::Int32, false),
        Field::new("feedback_offset", DataType::Int64, false),
        Field::new("ingest_time", ts(), false),
    ]))
}

/// Arrow schema of the `triggers` table: every retrain trigger emitted,
/// with the whole Kafka record in `record`.
pub fn trigger_arrow_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("trigger_id", DataType::Utf8, false),
        Field::new("created_at", ts(), false),
        Field::new("pipeline", DataType::Utf8, false),
        Field::new("model_name", DataType::Utf8, false),
        Field::new("model_version", DataType::Utf8, false),
        Field::new("route", DataType::Utf8, false),
        Field::new("reason", DataType::Utf8, false),
        Field::new("summary", DataType::Utf8, false),
        Field::new("record", DataType::Utf8, false),
    ]))
}

/// Arrow schema of the `audit` table: model lifecycle events (version
/// detected, canary started, promoted, rolled back, trigger emitted).
pub fn audit_arrow_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("time", ts(), false),
        Field::new("pipeline", DataType::Utf8, false),
        Field::new("event", DataType::Utf8, false),
        Field::new("model_name", DataType::Utf8, false),
        Field::new("model_version", DataType::Utf8, false),
        Field::new("worker", DataType::Utf8, false),
        Field::new("detail", DataType::Utf8, false),
        // `host/pid` of the process; null in rows written before it existed.
        Field::new("instance", DataType::Utf8, true),
    ]))
}
