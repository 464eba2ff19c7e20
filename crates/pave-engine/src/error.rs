use pave_core::CoreError;
use pave_store::StoreError;
use thiserror::Error;

/// Errors from the engine's public operations.
#[derive(Debug, Error)]
pub enum EngineError {
    /// The request is invalid (unknown kind, bad input).
    #[error(transparent)]
    Invalid(CoreError),
    /// The caller's roles do not allow it.
    #[error("{0}")]
    Forbidden(String),
    /// The action or environment does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// The action is not in a state that allows the operation.
    #[error("{0}")]
    Conflict(String),
    /// The same idempotency key was used for a different request.
    #[error("idempotency key `{0}` was already used for a different request")]
    IdempotencyMismatch(String),
    /// The store failed.
    #[error(transparent)]
    Store(StoreError),
    /// The engine is shutting down and takes no new work.
    #[error("the server is shutting down")]
    ShuttingDown,
    /// A target's agent (or the cluster behind it) did not answer, or failed.
    #[error("{0}")]
    Unavailable(String),
}

impl From<CoreError> for EngineError {
    fn from(e: CoreError) -> Self {
        match e {
            // Asking for a change the current state does not allow is a conflict
            // with that state, not an invalid request.
            CoreError::InvalidTransition { .. } => EngineError::Conflict(e.to_string()),
            CoreError::Forbidden(m) => EngineError::Forbidden(m),
            other => EngineError::Invalid(other),
        }
    }
}

impl From<StoreError> for EngineError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Precondition { .. } => EngineError::Conflict(e.to_string()),
            StoreError::NotFound(what) => EngineError::NotFound(what),
            StoreError::Conflict(what) => EngineError::Conflict(format!("{what} already exists")),
            other => EngineError::Store(other),
        }
    }
}

impl EngineError {
    /// A stable label for metrics and error codes.
    pub fn metric_label(&self) -> &'static str {
        match self {
            EngineError::Invalid(_) => "invalid",
            EngineError::NotFound(_) => "not_found",
            EngineError::Forbidden(_) => "forbidden",
            EngineError::Conflict(_) => "conflict",
            EngineError::IdempotencyMismatch(_) => "idempotency_mismatch",
            EngineError::Store(_) => "store",
            EngineError::ShuttingDown => "shutting_down",
            EngineError::Unavailable(_) => "unavailable",
        }
    }
}
