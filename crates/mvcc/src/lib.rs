//! Multi-version concurrency control.
//!
//! Every write creates a new *version* of a key, stamped with a [`Timestamp`] from the
//! [hybrid logical clock](Hlc); reads name a timestamp and see the newest version at or below it.
//! Versions live in the storage engine's `Data` column family under [`encode`]d keys:
//!
//! ```text
//!   escape(user key) 0x00 0x01                      metadata slot (write intents, later)
//!   escape(user key) 0x00 0x01 !wall !logical        one version, newest first
//! ```
//!
//! Escaping (`0x00` → `0x00 0xff`) and the terminator keep user-key order, so a user span
//! `[a, b)` is exactly the engine span `[encode_key(a), encode_key(b))`. Inverting the timestamp
//! makes a forward seek to `key@ts` land on the newest version visible at `ts`.
//!
//! A stored value is a [`Value`]: a live value or a tombstone. The metadata slot is reserved
//! for write intents, which the transaction layer adds; nothing here writes it yet.
//!
//! Invariants:
//! - Versions of one key are ordered newest first and never share a timestamp.
//! - Encoding is total: any byte string is a valid user key, and decoding never panics (a
//!   malformed engine key is reported as [`Error::Corrupt`]).

mod clock;
mod encoding;
mod ops;

pub use clock::{Hlc, ManualClock, PhysicalClock, SystemClock, Timestamp};
pub use encoding::{decode_key, encode_key, encode_version, Value};
pub use ops::{mvcc_delete, mvcc_get, mvcc_latest_timestamp, mvcc_put, mvcc_scan, KeyValue};

/// Errors from MVCC operations.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The engine failed.
    #[error(transparent)]
    Storage(#[from] bini_storage::Error),
    /// Stored bytes could not be decoded.
    #[error("corrupt mvcc data: {0}")]
    Corrupt(String),
    /// A remote timestamp is further ahead of the local clock than the maximum offset allows.
    #[error("clock offset {offset_ms} ms from a remote node exceeds the maximum of {max_ms} ms")]
    ClockOffset {
        /// How far ahead the remote timestamp is.
        offset_ms: u64,
        /// The configured maximum offset.
        max_ms: u64,
    },
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod golden;
