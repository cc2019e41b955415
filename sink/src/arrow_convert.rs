//! Records → Arrow record batches, in the column order of
//! [`prediction_arrow_schema`] and [`dlq_arrow_schema`].

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BinaryBuilder, BooleanArray, Float32Builder, Float64Array, Int32Array, Int64Array, ListBuilder,
    StringArray, TimestampMicrosecondArray,
};
use arrow::record_batch::RecordBatch;
use switchyard_schemas::{
    dlq_arrow_schema, feedback_arrow_schema, prediction_arrow_schema, DlqRecord, Feedback, Prediction,
};

use crate::Result;

fn strings<'a, T: 'a>(rows: &'a [T], f: impl Fn(&'a T) -> &'a str) -> ArrayRef {
    Arc::new(StringArray::from_iter_values(rows.iter().map(f)))
}

/// A UTC µs timestamp column.
pub(crate) fn ts(values: impl Iterator<Item = Option<i64>>) -> ArrayRef {
    Arc::new(TimestampMicrosecondArray::from_iter(values).with_timezone("UTC"))
}

/// A nullable string column: empty strings are stored as null.
fn optional_strings<T>(rows: &[&T], f: impl Fn(&T) -> &str) -> ArrayRef {
    Arc::new(StringArray::from_iter(rows.iter().map(|r| Some(f(r)).filter(|s| !s.is_empty()))))
}

/// Predictions as one record batch.
pub fn predictions_batch(rows: &[&Prediction]) -> Result<RecordBatch> {
    let mut features = ListBuilder::new(Float32Builder::new()).with_field(Arc::new(arrow::datatypes::Field::new(
        "item",
        arrow::datatypes::DataType::Float32,
        false,
    )));
    for p in rows {
        features.values().append_slice(&p.features);
        features.append(true);
    }
    let columns: Vec<ArrayRef> = vec![
        strings(rows, |p| &p.lineage.lineage_id),
        strings(rows, |p| &p.key),
        strings(rows, |p| &p.lineage.source.topic),
        Arc::new(Int32Array::from_iter_values(rows.iter().map(|p| p.lineage.source.partition))),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|p| p.lineage.source.offset))),
        ts(rows.iter().map(|p| p.lineage.source.kafka_timestamp_ms.map(|ms| ms * 1000))),
        ts(rows.iter().map(|p| Some(p.lineage.source.ingest_time_us))),
        strings(rows, |p| &p.lineage.pipeline),
        strings(rows, |p| &p.lineage.manifest_hash),
        strings(rows, |p| &p.lineage.schema_id),
        Arc::new(Int32Array::from_iter_values(rows.iter().map(|p| p.lineage.schema_version as i32))),
        strings(rows, |p| &p.lineage.preprocess_hash),
        strings(rows, |p| &p.lineage.route.policy_version),
        strings(rows, |p| &p.lineage.route.rule_id),
        strings(rows, |p| &p.lineage.route.reason),
        strings(rows, |p| &p.lineage.route.route),
        strings(rows, |p| p.lineage.route.sensitivity.as_str()),
        strings(rows, |p| &p.lineage.route.latency_tier),
        strings(rows, |p| &p.lineage.model.name),
        strings(rows, |p| &p.lineage.model.sha256),
        strings(rows, |p| &p.lineage.model.provider),
        strings(rows, |p| &p.lineage.model.request_id),
        Arc::new(BooleanArray::from_iter(rows.iter().map(|p| Some(p.lineage.fallback)))),
        Arc::new(BooleanArray::from_iter(rows.iter().map(|p| Some(p.lineage.shadow)))),
        strings(rows, |p| &p.lineage.traceparent),
        Arc::new(Float64Array::from_iter(rows.iter().map(|p| p.score))),
        Arc::new(Int64Array::from_iter(rows.iter().map(|p| p.label))),
        Arc::new(StringArray::from_iter(rows.iter().map(|p| p.outputs.as_deref()))),
        Arc::new(features.finish()),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|p| p.latency_us))),
        optional_strings(rows, |p| p.lineage.run_id.as_str()),
    ];
    Ok(RecordBatch::try_new(prediction_arrow_schema(), columns)?)
}

/// DLQ records as one record batch.
pub fn dlq_batch(rows: &[&DlqRecord]) -> Result<RecordBatch> {
    let mut key = BinaryBuilder::new();
    let mut payload = BinaryBuilder::new();
    for r in rows {
        key.append_option(r.key.as_deref());
        payload.append_option(r.payload.as_deref());
    }
    let columns: Vec<ArrayRef> = vec![
        strings(rows, |r| &r.lineage_id),
        strings(rows, |r| &r.source.topic),
        Arc::new(Int32Array::from_iter_values(rows.iter().map(|r| r.source.partition))),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.source.offset))),
        ts(rows.iter().map(|r| r.source.kafka_timestamp_ms.map(|ms| ms * 1000))),
        ts(rows.iter().map(|r| Some(r.source.ingest_time_us))),
        strings(rows, |r| &r.pipeline),
        strings(rows, |r| r.stage.as_str()),
        strings(rows, |r| r.error_class.as_str()),
        strings(rows, |r| &r.message),
        Arc::new(key.finish()),
        Arc::new(payload.finish()),
        optional_strings(rows, |r| r.run_id.as_str()),
    ];
    Ok(RecordBatch::try_new(dlq_arrow_schema(), columns)?)
}

/// Feedback records as one record batch of the `feedback` table.
pub fn feedback_batch(rows: &[&Feedback]) -> Result<RecordBatch> {
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter(rows.iter().map(|f| f.lineage_id.as_deref()))),
        Arc::new(StringArray::from_iter(rows.iter().map(|f| f.key.as_deref()))),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|f| f.label))),
        ts(rows.iter().map(|f| Some(f.observed_time_us))),
        strings(rows, |f| &f.source),
        strings(rows, |f| &f.feedback_topic),
        Arc::new(Int32Array::from_iter_values(rows.iter().map(|f| f.feedback_partition))),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|f| f.feedback_offset))),
        ts(rows.iter().map(|f| Some(f.ingest_time_us))),
    ];
    Ok(RecordBatch::try_new(feedback_arrow_schema(), columns)?)
}
