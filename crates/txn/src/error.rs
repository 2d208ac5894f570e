//! Errors of the transaction layer.

/// Why a transaction must be retried from the start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryReason {
    /// Its commit timestamp moved and a refresh found that something it read changed since.
    RefreshFailed,
    /// Another transaction aborted it (it was expired, or a deadlock victim).
    Aborted,
    /// It was part of a deadlock and chosen to give way.
    Deadlock,
    /// It waited too long for a conflicting transaction.
    ContentionTimeout,
}

impl RetryReason {
    /// The reason's name, as shown to clients.
    pub fn as_str(self) -> &'static str {
        match self {
            RetryReason::RefreshFailed => "RETRY_SERIALIZABLE",
            RetryReason::Aborted => "ABORT_REASON_ABORTED",
            RetryReason::Deadlock => "ABORT_REASON_DEADLOCK",
            RetryReason::ContentionTimeout => "RETRY_CONTENTION_TIMEOUT",
        }
    }
}

/// An error from a transaction.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The transaction cannot commit serializably; retry it from the start (SQLSTATE 40001).
    #[error("restart transaction: {} ({detail})", reason.as_str())]
    Retry {
        /// Why.
        reason: RetryReason,
        /// What happened, for humans.
        detail: String,
    },
    /// The transaction is already committed or rolled back.
    #[error("transaction is {0}")]
    Finished(&'static str),
    /// A write in a read-only transaction.
    #[error("cannot write: {0}")]
    ReadOnly(&'static str),
    /// The layer below failed.
    #[error(transparent)]
    Kv(#[from] bini_kv::Error),
}

impl Error {
    /// Whether retrying the whole transaction may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Retry { .. })
    }

    pub(crate) fn retry(reason: RetryReason, detail: impl Into<String>) -> Self {
        Error::Retry {
            reason,
            detail: detail.into(),
        }
    }
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, Error>;
