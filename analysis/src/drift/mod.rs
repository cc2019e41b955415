//! Drift: a reference window against the current one, per model version
//! and route.
//!
//! * [`stats`] — the two-sample statistics (PSI, KS, Jensen–Shannon,
//!   Wasserstein, χ², z) and Evidently's default choice of test;
//! * [`chunk`] — a window's values in memory: plain runs, or dictionary
//!   runs for columns of few values;
//! * [`window`] — reference vs current window per model version and route,
//!   read with DataFusion, written to the `drift` table.

pub mod chunk;
pub mod stats;
pub mod window;

pub use stats::{compare, ColumnStats, StatTest, TestChoice};
pub use window::{
    analyse, format_time, newest_event_time, DriftReport, DriftRequest, GroupDrift, Reference, Window, SCORE,
};
