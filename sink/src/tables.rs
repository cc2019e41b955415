//! Small tables written whole, one file per write: `drift`, `accuracy`,
//! `triggers`, `audit`. Each write is one Parquet file made durable under a
//! temp name and renamed into place, so readers see all of it or nothing.

use std::fs::File;
use std::path::{Path, PathBuf};

use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use crate::{Error, Result};

/// `drift` table folder.
pub const DRIFT: &str = "drift";
/// `accuracy` table folder.
pub const ACCURACY: &str = "accuracy";
/// `triggers` table folder.
pub const TRIGGERS: &str = "triggers";
/// `audit` table folder.
pub const AUDIT: &str = "audit";
/// `feedback` table folder.
pub const FEEDBACK: &str = "feedback";

/// The `date` partition value (UTC) of a µs timestamp.
pub(crate) fn date_of(us: i64) -> String {
    chrono::DateTime::from_timestamp_micros(us)
        .map(|d| d.format("%Y-%m-%d").to_string())
        .unwrap_or_else(|| "1970-01-01".into())
}

/// Writes `batch` as a new file of `table` in partition `date=<date of
/// at_us>`; returns its path.
pub fn append(root: &Path, table: &str, at_us: i64, batch: &RecordBatch) -> Result<PathBuf> {
    let date = date_of(at_us);
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
