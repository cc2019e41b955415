use thiserror::Error;

/// Errors of the sink stage.
#[derive(Debug, Error)]
pub enum Error {
    /// The Kafka producer failed.
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// Building Arrow data failed.
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// Writing Parquet failed.
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    /// A file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A record could not be serialised.
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
    /// A configuration that cannot be used (a secret that cannot be read).
    #[error("{0}")]
    Config(String),
    /// A Kafka transaction was aborted: none of its records or offsets
    /// count, and the records after the last commit must be read again.
    #[error("the Kafka transaction was aborted: {0}")]
    TxnAborted(String),
    /// A Kafka transaction's outcome is not known (its commit kept timing
    /// out), or the producer can go on no more (fenced by a newer
    /// instance): the run stops, and whoever takes the partitions next
    /// settles the roll by the group's committed offsets.
    #[error("the Kafka transaction's outcome is unknown: {0}")]
    TxnUnknown(String),
    /// A broken invariant: a bug, not a user mistake.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// Whether retrying may succeed (broker hiccups, full queues).
    pub fn is_retriable(&self) -> bool {
        matches!(self, Error::Kafka(_))
    }

    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        Error::Io { path: path.display().to_string(), source }
    }
}

impl From<switchyard_schemas::Error> for Error {
    fn from(e: switchyard_schemas::Error) -> Self {
        match e {
            switchyard_schemas::Error::Io { path, source } => Error::Io { path, source },
            switchyard_schemas::Error::Invalid(m) => Error::Config(m),
            other => Error::Internal(other.to_string()),
        }
    }
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
