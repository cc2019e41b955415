use thiserror::Error;

/// Errors of the analysis side.
#[derive(Debug, Error)]
pub enum Error {
    /// The trigger producer failed.
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// Building Arrow data failed.
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// Reading or writing Parquet failed.
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    /// A configuration that cannot be used (a secret that cannot be read).
    #[error("{0}")]
    Config(String),
    /// A query failed.
    #[error("{0}")]
    DataFusion(#[from] datafusion::error::DataFusionError),
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
    /// The model registry's rollout state cannot be read or written.
    #[error("model registry: {0}")]
    Registry(String),
    /// A chart could not be drawn.
    #[error("chart: {0}")]
    Render(String),
    /// A broken invariant: a bug, not a user mistake.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// Whether retrying may succeed (broker hiccups, full queues).
    pub fn is_retriable(&self) -> bool {
        matches!(self, Error::Kafka(_))
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
