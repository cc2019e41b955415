//! Drift, accuracy and the retraining loop's evidence, over the tables.
//!
//! * [`stats`] — the two-sample statistics (PSI, KS, Jensen–Shannon,
//!   Wasserstein, χ², z) and Evidently's default choice of test;
//! * [`chunk`] — a window's values in memory: plain runs, or dictionary
//!   runs for columns of few values;
//! * [`analysis`] — reference vs current window per model version and route,
//!   read with DataFusion, written to the `drift` table;
//! * [`accuracy`] — predictions joined with feedback: accuracy, precision,
//!   recall, F1, ROC AUC, Brier, calibration; served vs shadow agreement;
//! * [`render`] — the report as a text table and as HTML with SVG charts;
//! * [`monitor`] — the schedule: drift and accuracy tables, retrain triggers;
//! * [`rollout`] — promotion or rollback of a candidate model version.

pub mod accuracy;
pub mod analysis;
pub mod chunk;
pub mod monitor;
pub mod render;
pub mod rollout;
pub mod stats;

pub use accuracy::{accuracy, agreement, labelled_sql, Accuracy, Agreement};
pub use analysis::{analyse, DriftReport, DriftRequest, GroupDrift, Reference, Window};
pub use monitor::{Evaluation, Monitor, MonitorConfig, TriggerRecord};
pub use rollout::{RolloutCriteria, RolloutOutcome};
pub use stats::{compare, ColumnStats, StatTest, TestChoice};
