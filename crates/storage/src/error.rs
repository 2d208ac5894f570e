//! Errors from storage engines.

/// An engine error. Engines report I/O and corruption; they never panic on stored bytes.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// RocksDB reported an error (I/O, corruption, options).
    #[error("rocksdb: {0}")]
    Rocks(String),
    /// The data directory cannot be used.
    #[error("store directory {path}: {reason}")]
    Directory {
        /// The directory given.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, Error>;
