use thiserror::Error;

/// Errors of the ingest stage.
#[derive(Debug, Error)]
pub enum Error {
    /// The Kafka client failed (configuration, connection, commit).
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// Reading a file source failed.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A bounded source's input cannot be listed or read (object store,
    /// Parquet footer, broker offsets); the message names the input.
    #[error("{0}")]
    Source(String),
    /// The Schema Registry cannot be used (configuration, unreachable at
    /// start-up, refused login); the message names the URL and the cause.
    #[error("{0}")]
    Registry(String),
    /// No broker answered within the start-up timeout.
    #[error(
        "{what}: cannot reach the Kafka brokers {brokers} within {timeout_ms} ms ({security}): {cause} (check the \
         address, the network and the listener; `source.connect_timeout_ms` sets how long to wait)"
    )]
    Unreachable {
        /// The manifest section of the client (`source`, `sinks.kafka`, …).
        what: String,
        /// The bootstrap servers tried.
        brokers: String,
        /// How the client connects (protocol, SASL mechanism).
        security: String,
        /// How long it waited.
        timeout_ms: u64,
        /// librdkafka's reason.
        cause: String,
    },
    /// A broker refused the client's login or TLS handshake.
    #[error("{what}: the Kafka brokers {brokers} refused the connection ({security}): {cause} ({hint})")]
    Refused {
        /// The manifest section of the client.
        what: String,
        /// The bootstrap servers tried.
        brokers: String,
        /// How the client connects (protocol, SASL mechanism).
        security: String,
        /// librdkafka's reason.
        cause: String,
        /// What to check.
        hint: String,
    },
    /// A configuration that cannot be built (a user mistake).
    #[error("{0}")]
    Config(String),
    /// A broken invariant: a bug, not a user mistake.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// Whether retrying the operation may succeed (broker unavailable, timeouts).
    pub fn is_retriable(&self) -> bool {
        matches!(self, Error::Kafka(_) | Error::Unreachable { .. } | Error::Refused { .. })
    }
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
