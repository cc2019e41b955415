//! Small tables written whole, one file per write: `drift`, `accuracy`,
//! `triggers`, `audit`. Each write is one Parquet file put whole
//! ([`TableRoot::put`]: a temp name renamed into place on a local root, one
//! PUT on an object store), so readers see all of it or nothing.

use std::sync::Arc;

use arrow::array::{ArrayRef, TimestampMicrosecondArray};
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use switchyard_schemas::TableRoot;

use crate::Result;

/// A UTC µs timestamp column.
pub(crate) fn ts_column(values: impl Iterator<Item = Option<i64>>) -> ArrayRef {
    Arc::new(TimestampMicrosecondArray::from_iter(values).with_timezone("UTC"))
}

/// Writes `batch` as a new file of `table` in partition `date=<date of
/// at_us>`; returns where (a path or a URL).
pub fn append(root: &TableRoot, table: &str, at_us: i64, batch: &RecordBatch) -> Result<String> {
    let date = switchyard_schemas::tables::date_partition(at_us);
    let name = format!("part-{at_us:016}-{}.parquet", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let rel = format!("{table}/date={date}/{name}");
    let props = WriterProperties::builder().set_compression(Compression::SNAPPY).build();
    let mut w = ArrowWriter::try_new(Vec::new(), batch.schema(), Some(props))?;
    w.write(batch)?;
    root.put(&rel, w.into_inner()?)?;
    Ok(root.describe(&rel))
}
