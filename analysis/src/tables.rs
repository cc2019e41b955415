//! Small tables written whole, one file per write: `drift`, `accuracy`,
//! `triggers`, `audit`. Each write is one Parquet file made durable under a
//! temp name and renamed into place, so readers see all of it or nothing.

use std::fs::File;
use std::path::{Path, PathBuf};

use std::sync::Arc;

use arrow::array::{ArrayRef, TimestampMicrosecondArray};
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use crate::{Error, Result};

/// A UTC µs timestamp column.
pub(crate) fn ts_column(values: impl Iterator<Item = Option<i64>>) -> ArrayRef {
    Arc::new(TimestampMicrosecondArray::from_iter(values).with_timezone("UTC"))
}

/// Writes `batch` as a new file of `table` in partition `date=<date of
/// at_us>`; returns its path.
pub fn append(root: &Path, table: &str, at_us: i64, batch: &RecordBatch) -> Result<PathBuf> {
    let date = switchyard_schemas::tables::date_partition(at_us);
    let dir = root.join(table).join(format!("date={date}"));
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let name = format!("part-{at_us:016}-{}.parquet", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let fin = dir.join(&name);
    // Not `.parquet`: listings skip it until the rename.
    let tmp = dir.join(format!(".{name}.tmp"));
    {
        let file = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        let props = WriterProperties::builder().set_compression(Compression::SNAPPY).build();
        let mut w = ArrowWriter::try_new(file, batch.schema(), Some(props))?;
        w.write(batch)?;
        let file = w.into_inner()?;
        file.sync_all().map_err(|e| Error::io(&tmp, e))?;
    }
    std::fs::rename(&tmp, &fin).map_err(|e| Error::io(&fin, e))?;
    if let Ok(d) = File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(fin)
}
