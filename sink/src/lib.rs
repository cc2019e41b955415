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
//! * [`AvroResults`] — results as Avro in the Confluent wire format;
//! * [`predictions_batch`], [`dlq_batch`] — the Arrow conversion of the
//!   output records.
//!
//! The write path only: what reads these tables back (SQL, drift,
//! accuracy, the monitor) is `switchyard-analysis`, above this crate.
//! Depends only on `switchyard-schemas`.

mod arrow_convert;
mod avro;
mod config;
mod error;
mod json;
mod kafka;
mod parquet_sink;

pub use arrow_convert::{dlq_batch, predictions_batch};
pub use avro::{AvroResults, RESULT_SCHEMA};
pub use config::{Compression, Delivery, KafkaSinkConfig, ParquetSinkConfig, SinksConfig, ValueFormat};
pub use error::{Error, Result};
pub use kafka::{Deliveries, KafkaSink};
pub use parquet_sink::{
    keep_highest, DurableIndex, Offsets, ParquetSink, PreparedRoll, RollJob, RollSummary, LEASE_TIMEOUT,
};
pub use switchyard_schemas::TableRoot;
