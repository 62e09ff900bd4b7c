//! The runtime's error type. Variants say what the caller should do, not which crate failed.

/// Everything that can go wrong in the runtime.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The request is well-formed but its values are unusable (shape, NaN, range).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// Image bytes could not be decoded.
    #[error("invalid image: {0}")]
    InvalidImage(String),
    /// An image's header declares more pixels than the caller allows; nothing was decoded.
    #[error("image too large: {0}")]
    ImageTooLarge(String),
    /// No model answers to this id.
    #[error("not found: {0}")]
    NotFound(String),
    /// The model exists but belongs to another family than the operation needs.
    #[error("model {model} is of kind `{kind}`; this operation needs kind `{expected}`")]
    WrongKind {
        /// `name@version` of the model.
        model: String,
        /// The model's kind, e.g. `embedder`.
        kind: String,
        /// The kind the operation serves, e.g. `classifier`.
        expected: &'static str,
    },
    /// The model's queue is full; retry later.
    #[error("overloaded: the request queue is full")]
    Overloaded,
    /// The request waited past its deadline.
    #[error("timed out waiting for the model")]
    Timeout,
    /// The model cannot take requests now (shutting down, worker gone).
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The request conflicts with what is served: a model given at start cannot be unloaded or
    /// reloaded from the models directory, and one id cannot be served from two places.
    #[error("conflict: {0}")]
    Conflict(String),
    /// A bundle on disk is missing, malformed or inconsistent.
    #[error("bundle error: {0}")]
    Bundle(String),
    /// A bug or an unexpected backend failure.
    #[error("internal error: {0}")]
    Internal(String),
}

/// The runtime's result type.
pub type Result<T> = std::result::Result<T, Error>;

impl From<candle_core::Error> for Error {
    fn from(err: candle_core::Error) -> Self {
        Error::Internal(err.to_string())
    }
}
