use thiserror::Error;

/// Errors raised by pure domain rules.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum CoreError {
    /// The input of an action does not satisfy its kind's schema.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The caller's roles do not allow the request.
    #[error("{0}")]
    Forbidden(String),
    /// The action kind is not one pave knows.
    #[error("unknown action kind `{0}`")]
    UnknownKind(String),
    /// A requested state change is not allowed from the current state.
    #[error("cannot {verb} an action that is {from}")]
    InvalidTransition {
        /// What was asked (retry, cancel, rollback).
        verb: &'static str,
        /// The state the action is in.
        from: String,
    },
}
