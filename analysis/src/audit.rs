//! The `audit` table: one row per model lifecycle or operational event.

use std::sync::Arc;
use switchyard_schemas::TableRoot;

use arrow::array::{ArrayRef, StringArray};
use arrow::record_batch::RecordBatch;
use switchyard_schemas::tables::AUDIT;
use switchyard_schemas::{audit_arrow_schema, AuditEvent, Notice};

use crate::{tables, Result};

/// One row of the `audit` table.
#[derive(Debug, Clone, Copy)]
pub struct AuditRow<'a> {
    /// Pipeline name.
    pub pipeline: &'a str,
    /// What happened.
    pub event: AuditEvent,
    /// Model name.
    pub model: &'a str,
    /// The version it is about.
    pub version: &'a str,
    /// The worker (or routes) concerned.
    pub worker: &'a str,
    /// What happened, in words.
    pub detail: &'a str,
}

/// Appends `row`, at `at_us`, to the `audit` table under `root`.
pub fn append(root: &TableRoot, at_us: i64, row: &AuditRow<'_>) -> Result<()> {
    let s = |v: &str| -> ArrayRef { Arc::new(StringArray::from(vec![v])) };
    let batch = RecordBatch::try_new(
        audit_arrow_schema(),
        vec![
            tables::ts_column(std::iter::once(Some(at_us))),
            s(row.pipeline),
            s(row.event.as_str()),
            s(row.model),
            s(row.version),
            s(row.worker),
            s(row.detail),
            s(switchyard_schemas::audit_instance()),
        ],
    )?;
    tables::append(root, AUDIT, at_us, &batch)?;
    Ok(())
}

/// Appends operational events of `pipeline` (each with its time) to the
/// `audit` table under `root`, as one file.
pub fn append_notices(root: &TableRoot, pipeline: &str, notices: &[(i64, Notice)]) -> Result<()> {
    let Some(&(first, _)) = notices.first() else { return Ok(()) };
    let col = |f: fn(&Notice) -> &str| -> ArrayRef {
        Arc::new(StringArray::from(notices.iter().map(|(_, n)| f(n)).collect::<Vec<_>>()))
    };
    let all = |v: &str| -> ArrayRef { Arc::new(StringArray::from(vec![v; notices.len()])) };
    let batch = RecordBatch::try_new(
        audit_arrow_schema(),
        vec![
            tables::ts_column(notices.iter().map(|(t, _)| Some(*t))),
            all(pipeline),
            col(|n| n.event.as_str()),
            col(|n| &n.model),
            col(|n| &n.version),
            col(|n| &n.worker),
            col(|n| &n.detail),
            all(switchyard_schemas::audit_instance()),
        ],
    )?;
    tables::append(root, AUDIT, first, &batch)?;
    Ok(())
}
