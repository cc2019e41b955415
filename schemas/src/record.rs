use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use serde::{Deserialize, Serialize};

use crate::{Lineage, RawRecord, SourceCoords};

/// One inference result: the event's lineage and the model's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    /// Result key (schema key field, Kafka key or lineage id).
    pub key: String,
    /// Probability of the positive class; `None` when the worker gives no
    /// score (an `openai` enrichment without `score_from`).
    pub score: Option<f64>,
    /// Predicted class; `None` without a score.
    pub label: Option<i64>,
    /// Mapped result fields as a JSON object (`openai` workers:
    /// `{"reply": ...}` or `{"embedding": [...]}`); `None` for models.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outputs: Option<String>,
    /// The feature vector the model saw, in the model's feature order.
    pub features: Vec<f32>,
    /// Time from receipt of the record to the model's answer, in µs.
    pub latency_us: i64,
    /// Full lineage.
    pub lineage: Lineage,
}

/// Pipeline stage at which a record failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Bytes → JSON.
    Decode,
    /// JSON → schema-checked event.
    Validate,
    /// Event → feature vector.
    Preprocess,
    /// Policy evaluation.
    Route,
    /// Model execution.
    Infer,
    /// A record of a feedback topic (ground truth).
    Feedback,
}

impl Stage {
    /// Lower-case name used in headers and tables.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Decode => "decode",
            Stage::Validate => "validate",
            Stage::Preprocess => "preprocess",
            Stage::Route => "route",
            Stage::Infer => "infer",
            Stage::Feedback => "feedback",
        }
    }
}

/// Class of a DLQ error, stable for alerting and SQL (`error_class = 'missing_field'`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// The source could not read the record as a row (a file line that does
    /// not parse in the file's format).
    Unreadable,
    /// Empty message value (tombstone).
    EmptyPayload,
    /// Not valid UTF-8 / JSON.
    InvalidJson,
    /// JSON, but not an object.
    NotAnObject,
    /// A Schema Registry format was expected, and the value does not start
    /// with its magic byte and schema id.
    Unframed,
    /// The record's schema id is not in the Schema Registry (or its schema
    /// cannot be read as the pipeline's format).
    UnknownSchema,
    /// The bytes do not decode under the record's own schema.
    Undecodable,
    /// A required field is absent or null.
    MissingField,
    /// A field has the wrong type.
    WrongType,
    /// A field the schema does not know (with `reject_unknown_fields`).
    UnknownField,
    /// Pre-processing could not produce a feature (e.g. no imputation for a missing value).
    FeatureError,
    /// No policy rule could route the event.
    NoRoute,
    /// The model failed on the event.
    InferenceFailed,
    /// No worker the policy allows for the event could serve it within its
    /// bounded wait (circuit open, budget spent, endpoint failing, no
    /// fallback left).
    NoPath,
    /// The last PII check found personal data in the request for a cloud
    /// worker, and no local fallback could take the event.
    EgressBlocked,
}

impl ErrorClass {
    /// Snake-case name used in headers and tables.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Unreadable => "unreadable",
            ErrorClass::EmptyPayload => "empty_payload",
            ErrorClass::InvalidJson => "invalid_json",
            ErrorClass::NotAnObject => "not_an_object",
            ErrorClass::Unframed => "unframed",
            ErrorClass::UnknownSchema => "unknown_schema",
            ErrorClass::Undecodable => "undecodable",
            ErrorClass::MissingField => "missing_field",
            ErrorClass::WrongType => "wrong_type",
            ErrorClass::UnknownField => "unknown_field",
            ErrorClass::FeatureError => "feature_error",
            ErrorClass::NoRoute => "no_route",
            ErrorClass::InferenceFailed => "inference_failed",
            ErrorClass::NoPath => "no_path",
            ErrorClass::EgressBlocked => "egress_blocked",
        }
    }
}

/// A record that could not be processed, with the context needed to find,
/// understand and replay it.
#[derive(Debug, Clone, PartialEq)]
pub struct DlqRecord {
    /// Lineage id of the failed record.
    pub lineage_id: String,
    /// Where it came from and when it arrived.
    pub source: SourceCoords,
    /// Original key.
    pub key: Option<Vec<u8>>,
    /// Original value, byte for byte.
    pub payload: Option<Vec<u8>>,
    /// Original headers.
    pub headers: Vec<(String, String)>,
    /// Stage that failed.
    pub stage: Stage,
    /// Error class.
    pub error_class: ErrorClass,
    /// Human-readable error naming the field and problem.
    pub message: String,
    /// Pipeline name.
    pub pipeline: String,
    /// Id of the backfill run that read the record; empty for streaming runs.
    pub run_id: String,
}

impl DlqRecord {
    /// The DLQ record of `raw`: its coordinates, key, value and headers as
    /// received, and why it failed.
    pub fn from_raw(
        raw: &RawRecord,
        lineage_id: String,
        stage: Stage,
        error_class: ErrorClass,
        message: String,
        pipeline: String,
    ) -> Self {
        Self {
            lineage_id,
            source: SourceCoords::of(raw),
            key: raw.key.clone(),
            payload: raw.payload.clone(),
            headers: raw.headers.clone(),
            stage,
            error_class,
            message,
            pipeline,
            run_id: String::new(),
        }
    }

    /// The same record, marked with a backfill run id.
    pub fn with_run_id(mut self, run_id: &str) -> Self {
        run_id.clone_into(&mut self.run_id);
        self
    }
}

fn ts() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// Arrow schema of the `predictions` table files. `date` and `model_version`
/// are Hive partition columns (directory names), not stored in the files.
pub fn prediction_arrow_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("lineage_id", DataType::Utf8, false),
        Field::new("key", DataType::Utf8, false),
        Field::new("source_topic", DataType::Utf8, false),
        Field::new("source_partition", DataType::Int32, false),
        Field::new("source_offset", DataType::Int64, false),
        Field::new("kafka_timestamp", ts(), true),
        Field::new("ingest_time", ts(), false),
        Field::new("pipeline", DataType::Utf8, false),
        Field::new("manifest_hash", DataType::Utf8, false),
        Field::new("schema_id", DataType::Utf8, false),
        Field::new("schema_version", DataType::Int32, false),
        Field::new("preprocess_hash", DataType::Utf8, false),
        Field::new("policy_version", DataType::Utf8, false),
        Field::new("rule_id", DataType::Utf8, false),
        Field::new("route_reason", DataType::Utf8, false),
        Field::new("route", DataType::Utf8, false),
        Field::new("sensitivity", DataType::Utf8, false),
        Field::new("latency_tier", DataType::Utf8, false),
        Field::new("model_name", DataType::Utf8, false),
        Field::new("model_sha256", DataType::Utf8, false),
        Field::new("provider", DataType::Utf8, false),
        Field::new("model_request_id", DataType::Utf8, false),
        Field::new("fallback", DataType::Boolean, false),
        Field::new("shadow", DataType::Boolean, false),
        Field::new("traceparent", DataType::Utf8, false),
        Field::new("score", DataType::Float64, true),
        Field::new("label", DataType::Int64, true),
        Field::new("outputs", DataType::Utf8, true),
        Field::new("features", DataType::List(Arc::new(Field::new("item", DataType::Float32, false))), false),
        Field::new("latency_us", DataType::Int64, false),
        // Added with backfills: files written before have no such column and
        // read as null.
        Field::new("run_id", DataType::Utf8, true),
    ]))
}

/// Arrow schema of the `dlq` table files (`date` is a partition column).
pub fn dlq_arrow_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("lineage_id", DataType::Utf8, false),
        Field::new("source_topic", DataType::Utf8, false),
        Field::new("source_partition", DataType::Int32, false),
        Field::new("source_offset", DataType::Int64, false),
        Field::new("kafka_timestamp", ts(), true),
        Field::new("ingest_time", ts(), false),
        Field::new("pipeline", DataType::Utf8, false),
        Field::new("stage", DataType::Utf8, false),
        Field::new("error_class", DataType::Utf8, false),
        Field::new("error_message", DataType::Utf8, false),
        Field::new("key", DataType::Binary, true),
        Field::new("payload", DataType::Binary, true),
        Field::new("run_id", DataType::Utf8, true),
    ]))
}
