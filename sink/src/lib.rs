//! # switchyard-sink
//!
//! The last stage of `ingest → router → workers → sink`: where results become
//! durable and queryable.
//!
//! * [`KafkaSink`] — results and DLQ records to Kafka topics, lineage in
//!   headers and body (DLQ headers follow Kafka Connect's `__connect.errors.*`);
//! * [`ParquetSink`] — Arrow record batches written to Parquet tables
//!   (`predictions`, `dlq`), partitioned by date and model version, rolled by
//!   size and time. A roll commits atomically through a roll manifest
//!   (`_rolls/<id>.json`), which also records the source offsets it covers,
//!   so a replay after a crash writes no duplicate rows;
//! * [`catalog`] — DataFusion over those tables for `switchyard sql`;
//! * [`drift`] — drift and accuracy analysis over the tables, and the
//!   report (text, HTML/SVG);
//! * [`tables`] — whole-file appends to the small analysis tables.
//!
//! Depends only on `switchyard-schemas`.

mod arrow_convert;
pub mod catalog;
mod config;
pub mod drift;
mod error;
mod kafka;
mod parquet_sink;
pub mod tables;

pub use arrow_convert::{dlq_batch, predictions_batch};
pub use config::{KafkaSinkConfig, ParquetSinkConfig, SinksConfig};
pub use error::{Error, Result};
pub use kafka::{Deliveries, KafkaSink};
pub use parquet_sink::{Offsets, ParquetSink, RollSummary};
