//! The training crate's error type. Variants say what the user should do next, not which layer failed.

use std::path::PathBuf;

/// Everything that can go wrong while preparing data or training.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A value given by the user (a name, a flag, a config field) is not acceptable.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A dataset or model that needs downloading has not been fetched into the data directory yet.
    #[error("{name} is not available in {}: run `tandem data fetch {name}` first", dir.display())]
    NotFetched {
        /// Dataset or model name as the CLI spells it.
        name: String,
        /// Directory that was searched.
        dir: PathBuf,
    },
    /// A downloaded file does not have the digest it was published with.
    #[error("checksum mismatch for {file}: expected sha256 {expected}, found {found}")]
    ChecksumMismatch {
        /// File name.
        file: String,
        /// Published digest.
        expected: String,
        /// Digest of the bytes on disk.
        found: String,
    },
    /// The place a dataset or model comes from could not be reached or did not contain what it should.
    #[error("cannot fetch {name}: {reason}")]
    Fetch {
        /// Dataset or model name.
        name: String,
        /// What went wrong, including the failing command's output where there was one.
        reason: String,
    },
    /// A data file is truncated, corrupt or not in the expected format.
    #[error("invalid data in {file}: {reason}")]
    InvalidData {
        /// File (or embedded asset) name.
        file: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Reading or writing a file failed.
    #[error("cannot access {}: {source}", path.display())]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The runtime refused a bundle or failed to run it.
    #[error(transparent)]
    Runtime(#[from] tandem_runtime::Error),
    /// A tensor operation failed.
    #[error("tensor error: {0}")]
    Candle(#[from] candle_core::Error),
}

/// The training crate's result type.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Wraps an I/O error with the path it happened on, since a bare `io::Error` never says which
    /// file was missing.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }
}
