//! # switchyard-analysis
//!
//! The read side that closes the loop. The stages
//! `ingest → router → workers → sink` write the tables; this crate reads
//! them back and decides what should change:
//!
//! ```text
//!  sink: predictions, dlq, feedback ──▶ catalog (DataFusion) ──▶ drift, accuracy ──▶ report (text, HTML, SVG, PNG)
//!                                                                     │
//!            retrain-trigger topic + triggers table ◀── monitor ◀─────┘──▶ rollout: promote / roll back
//!                                                                            (rollout.json in the registry)
//! ```
//!
//! * [`catalog`] — DataFusion over the tables (`switchyard sql`);
//! * [`drift`] — two-sample statistics of a reference and a current window;
//! * [`accuracy`] — predictions joined with feedback: accuracy, precision,
//!   recall, F1, ROC AUC, Brier, calibration; served vs shadow agreement;
//! * [`render`] — the report as a text table, as HTML with SVG charts, and
//!   charts as PNG;
//! * [`monitor`] — the schedule: drift and accuracy tables, retrain
//!   [`triggers`];
//! * [`rollout`] — promotion or rollback of a candidate model version;
//! * [`audit`], [`tables`] — the small tables written whole.
//!
//! Depends on `switchyard-schemas` only (the table names and record
//! schemas the sink writes); the binary wires it to the running pipeline.

pub mod accuracy;
pub mod audit;
pub mod catalog;
pub mod drift;
mod error;
pub mod monitor;
pub mod render;
pub mod rollout;
pub mod tables;
pub mod triggers;

pub use accuracy::{accuracy, agreement, labelled_sql, Accuracy, Agreement};
pub use drift::{analyse, DriftReport, DriftRequest, GroupDrift, Reference, Window};
pub use error::{Error, Result};
pub use monitor::{Evaluation, Monitor, MonitorConfig};
pub use rollout::{RolloutCriteria, RolloutOutcome};
pub use triggers::TriggerRecord;
