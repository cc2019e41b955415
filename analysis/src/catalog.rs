//! DataFusion over the Parquet tables: what `switchyard sql` runs.
//!
//! Tables (each registered even when it has no files yet):
//! * `predictions` — one row per answered event, partitioned by `date` and
//!   `model_version`;
//! * `dlq` — one row per record that could not be processed, partitioned by `date`;
//! * `feedback` — every ground-truth record received, partitioned by `date`
//!   (of `observed_time`); the view `feedback_latest` keeps the newest per
//!   event (by `lineage_id`, else `key`);
//! * `drift`, `accuracy` — the results of drift and accuracy analyses;
//! * `triggers` — retrain triggers emitted, with their evidence;
//! * `audit` — model lifecycle events (new version seen, canary, promotion,
//!   rollback).

use std::sync::Arc;

use arrow::datatypes::{DataType, SchemaRef};
use arrow::record_batch::RecordBatch;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::ListingOptions;
use datafusion::prelude::SessionConfig;
/// The DataFusion session the catalog's tables are registered in.
pub use datafusion::prelude::SessionContext;
use switchyard_schemas::TableRoot;
use switchyard_schemas::{
    audit_arrow_schema, dlq_arrow_schema, feedback_arrow_schema, prediction_arrow_schema, trigger_arrow_schema,
};

use switchyard_schemas::tables::{ACCURACY, AUDIT, DLQ, DRIFT, FEEDBACK, PREDICTIONS, TRIGGERS};

use crate::accuracy::accuracy_arrow_schema;
use crate::drift::window::drift_arrow_schema;
use crate::{Error, Result};

/// A table of the catalog: name, folder, file schema and partition columns.
pub struct TableDef {
    /// SQL name.
    pub name: &'static str,
    /// File schema (without partition columns).
    pub schema: SchemaRef,
    /// Hive partition columns, outermost first.
    pub partitions: &'static [&'static str],
}

/// The tables switchyard writes.
pub fn tables() -> Vec<TableDef> {
    vec![
        TableDef { name: PREDICTIONS, schema: prediction_arrow_schema(), partitions: &["date", "model_version"] },
        TableDef { name: DLQ, schema: dlq_arrow_schema(), partitions: &["date"] },
        TableDef { name: FEEDBACK, schema: feedback_arrow_schema(), partitions: &["date"] },
        TableDef { name: DRIFT, schema: drift_arrow_schema(), partitions: &["date"] },
        TableDef { name: ACCURACY, schema: accuracy_arrow_schema(), partitions: &["date"] },
        TableDef { name: TRIGGERS, schema: trigger_arrow_schema(), partitions: &["date"] },
        TableDef { name: AUDIT, schema: audit_arrow_schema(), partitions: &["date"] },
    ]
}

/// A DataFusion session with every table under `root` (a local folder or
/// an object store prefix) registered.
pub async fn open(root: &TableRoot) -> Result<SessionContext> {
    let ctx = SessionContext::new_with_config(SessionConfig::new().with_information_schema(true));
    if let Some((base, store)) = root.object_store() {
        let url = url::Url::parse(base).map_err(|e| Error::Config(format!("{root}: {e}")))?;
        ctx.register_object_store(&url, store);
    }
    for t in tables() {
        // Only `.parquet` files: open files (`.tmp-<roll>`) are not listed.
        let options = ListingOptions::new(Arc::new(ParquetFormat::default()))
            .with_file_extension(".parquet")
            .with_table_partition_cols(t.partitions.iter().map(|p| (p.to_string(), DataType::Utf8)).collect());
        let url = root.folder_url(t.name)?;
        ctx.register_listing_table(t.name, url, options, Some(t.schema.clone()), None).await?;
    }
    ctx.sql(FEEDBACK_LATEST).await?;
    Ok(ctx)
}

/// The newest feedback per event: a late correction replaces an earlier
/// label, and a duplicate counts once.
const FEEDBACK_LATEST: &str = "CREATE VIEW feedback_latest AS \
    SELECT lineage_id, key, label, observed_time, source FROM (\
      SELECT *, row_number() OVER (PARTITION BY coalesce(lineage_id, concat('key:', key)) \
        ORDER BY observed_time DESC, ingest_time DESC, feedback_offset DESC) AS rn FROM feedback) \
    WHERE rn = 1";

/// Runs `sql` and collects the result.
pub async fn query(ctx: &SessionContext, sql: &str) -> Result<Vec<RecordBatch>> {
    Ok(ctx.sql(sql).await?.collect().await?)
}

/// Formats batches as a readable text table.
pub fn format(batches: &[RecordBatch]) -> Result<String> {
    Ok(arrow::util::pretty::pretty_format_batches(batches)?.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_schemas::{Lineage, ModelRef, Prediction, SourceCoords};
    use switchyard_sink::ParquetSink;

    #[tokio::test]
    async fn empty_tables_are_queryable_and_rows_show_up_with_partitions() {
        let t = tempfile::tempdir().unwrap();
        rows_show_up(&t.path().into()).await;
    }

    #[tokio::test]
    async fn tables_in_an_object_store_are_queried_the_same() {
        let store = std::sync::Arc::new(object_store::memory::InMemory::new());
        rows_show_up(&TableRoot::in_store("memory://bucket", "some/prefix", store)).await;
    }

    async fn rows_show_up(root: &TableRoot) {
        let ctx = open(root).await.unwrap();
        let b = query(&ctx, "select count(*) as n from predictions").await.unwrap();
        assert!(format(&b).unwrap().contains("| 0 |"));

        let mut sink = ParquetSink::open(root, 100, std::time::Duration::from_secs(60)).unwrap();
        let p = |o: i64| Prediction {
            key: format!("k{o}"),
            score: Some(0.5),
            label: Some(1),
            outputs: None,
            features: vec![0.5; 3],
            latency_us: 7,
            lineage: Lineage {
                lineage_id: format!("id{o}"),
                source: SourceCoords {
                    topic: "tx".into(),
                    offset: o,
                    kafka_timestamp_ms: Some(1_767_225_600_000),
                    ..Default::default()
                },
                model: ModelRef { name: "fraud".into(), version: "3".into(), ..Default::default() },
                ..Default::default()
            },
        };
        sink.write_predictions(&[p(0), p(1)]).unwrap();
        sink.write_predictions(&[p(2)]).unwrap();
        // An open file (the next roll's) is not listed.
        sink.roll().unwrap();
        sink.write_predictions(&[p(3)]).unwrap();
        let ctx = open(root).await.unwrap();
        let b =
            query(&ctx, "select model_version, date, count(*) as n, sum(label) as s from predictions group by 1, 2")
                .await
                .unwrap();
        let text = format(&b).unwrap();
        assert!(text.contains("| 3             | 2026-01-01 | 3 | 3 |"), "{text}");
    }
}
