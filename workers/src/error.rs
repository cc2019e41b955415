use thiserror::Error;

/// Errors of the worker stage.
#[derive(Debug, Error)]
pub enum Error {
    /// ONNX Runtime failed (loading the library, creating a session, running it).
    #[error("onnx runtime: {0}")]
    Ort(String),
    /// A model in the registry is missing, inconsistent or does not match the pipeline.
    #[error("model registry: {0}")]
    Registry(String),
    /// Reading a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A worker setting cannot be used (secret not found, template broken).
    #[error("{0}")]
    Config(String),
    /// An HTTP endpoint failed.
    #[error("{message}")]
    Http {
        /// Whether a retry may help.
        retriable: bool,
        /// What failed, naming the endpoint.
        message: String,
    },
    /// The worker has stopped; no more requests are accepted.
    #[error("worker `{0}` has stopped")]
    Stopped(String),
    /// A broken invariant: a bug, not a user mistake.
    #[error("internal error: {0}")]
    Internal(String),
}

impl<T> From<ort::Error<T>> for Error {
    fn from(e: ort::Error<T>) -> Self {
        Error::Ort(e.to_string())
    }
}

impl Error {
    /// Whether retrying the request may succeed.
    pub fn is_retriable(&self) -> bool {
        matches!(self, Error::Http { retriable: true, .. })
    }
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
