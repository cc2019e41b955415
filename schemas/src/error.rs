use thiserror::Error;

/// Errors of the shared record types.
#[derive(Debug, Error)]
pub enum Error {
    /// A record could not be serialised or parsed as JSON.
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
    /// An Arrow array or schema operation failed.
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A file's content is not what it should be (names the file).
    #[error("{0}")]
    Invalid(String),
    /// A broken invariant: a bug, not a user mistake.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
