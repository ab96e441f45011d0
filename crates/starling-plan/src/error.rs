//! Planner errors.

/// Result alias for the planner.
pub type Result<T> = std::result::Result<T, Error>;

/// What can be wrong with a plan's inputs.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A value is out of range or inconsistent with another.
    #[error("invalid `{field}`: {message}")]
    Invalid {
        /// The input field.
        field: &'static str,
        /// Why.
        message: String,
    },
    /// The GPU is not in the catalog.
    #[error("unknown GPU `{0}`; known: v100, a100-40gb, a100-80gb, h100, h800, h200, b200")]
    UnknownGpu(String),
}
