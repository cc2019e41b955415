//! # switchyard-ingest
//!
//! The first stage of `ingest → router → workers → sink`. It turns source
//! records into validated, lineage-tagged events and feature vectors:
//!
//! * [`KafkaSource`] — consumer-group consumption with librdkafka, chunked,
//!   with bounded queues that pause the consumer instead of growing memory;
//!   [`FileSource`] — JSON Lines files, for benchmarks and bounded runs;
//! * [`bounded`] — the bounded sources of backfills: Parquet, JSON Lines and
//!   CSV files by glob (local or object storage) and Kafka offset/time ranges;
//! * [`Decoder`] — bytes → JSON → schema-checked [`Event`](switchyard_schemas::Event)
//!   with its [`Lineage`](switchyard_schemas::Lineage); what cannot be decoded
//!   becomes a [`DlqRecord`](switchyard_schemas::DlqRecord) with context;
//! * [`FeedbackConfig`] — feedback topics: ground-truth records decoded and
//!   checked, bad ones to the DLQ;
//! * [`Preprocessor`] — the declarative, deterministic pre-processing spec
//!   ([`PreprocessConfig`]) that maps an event to the model's feature vector.
//!
//! Depends only on `switchyard-schemas`; the binary wires it to the router.

pub mod bounded;
mod decode;
mod error;
mod feedback;
mod file;
mod kafka;
mod preprocess;
pub mod registry;

pub use decode::{Decoder, LineageContext};
pub use error::{Error, Result};
pub use feedback::FeedbackConfig;
pub use file::FileSource;
pub use kafka::{
    check_brokers, BrokerCheck, KafkaCommitter, KafkaSource, KafkaSourceConfig, PriorityLaneConfig, RevokeDone,
    SourceEvent, SourceStats,
};
pub use preprocess::{Encoding, FeatureSpec, PreprocessConfig, Preprocessor, Step};
pub use registry::{Client as RegistryClient, Registry};
