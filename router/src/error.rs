use switchyard_schemas::Problems;

use crate::route::NoRoute;

/// Errors of the routing crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The routing policy in the manifest is wrong; every problem found is
    /// listed with its path (`routing.rules[2].route: unknown worker …`).
    #[error("invalid routing policy ({count} problem(s)):\n{problems}", count = .0.items().len(), problems = .0)]
    InvalidPolicy(Problems),
    /// No rule of the policy accepts the event; it belongs in the DLQ with
    /// this reason.
    #[error(transparent)]
    NoRoute(#[from] NoRoute),
    /// The policy could not be serialised to its canonical JSON form.
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
    /// A broken invariant: a bug, not a user mistake.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
