use thiserror::Error;

/// Why a provider operation failed.
#[derive(Debug, Error)]
pub enum ProviderError {
    /// The request cannot be served.
    #[error("{0}")]
    Invalid(String),
    /// A program the provider needs is missing.
    #[error("`{program}` is not installed: {hint}")]
    MissingProgram {
        /// The program.
        program: String,
        /// How to get it.
        hint: String,
    },
    /// A program failed.
    #[error("{0}")]
    Command(String),
    /// The resource does not answer.
    #[error("unhealthy: {0}")]
    Unhealthy(String),
    /// The resource's data is gone.
    #[error("the resource is gone: {0}")]
    Gone(String),
    /// File system trouble.
    #[error("{0}")]
    Io(String),
}

impl ProviderError {
    /// A stable code for step errors.
    pub fn code(&self) -> &'static str {
        match self {
            ProviderError::Invalid(_) => "invalid_resource",
            ProviderError::MissingProgram { .. } => "missing_program",
            ProviderError::Command(_) => "provider_failed",
            ProviderError::Unhealthy(_) => "unhealthy",
            ProviderError::Gone(_) => "resource_gone",
            ProviderError::Io(_) => "provider_failed",
        }
    }
}
