//! Multi-version concurrency control.
//!
//! Every write creates a new *version* of a key, stamped with a [`Timestamp`] from the
//! [hybrid logical clock](Hlc); reads name a timestamp and see the newest version at or below it.
//! Versions live in the storage engine's `Data` column family under [`encode`]d keys:
//!
//! ```text
//!   escape(user key) 0x00 0x01                      metadata slot: a write intent
//!   escape(user key) 0x00 0x01 !wall !logical        one version, newest first
//!   escape(user key) 0x00 0x02 <txn id>              a transaction record anchored here
//! ```
//!
//! Escaping (`0x00` → `0x00 0xff`) and the terminator keep user-key order, so a user span
//! `[a, b)` is exactly the engine span `[encode_key(a), encode_key(b))`. Inverting the timestamp
//! makes a forward seek to `key@ts` land on the newest version visible at `ts`.
//!
//! A stored value is a [`Value`]: a live value or a tombstone. The metadata slot holds a write
//! intent (see `ops.rs`), and `escape(key) 0x00 0x02 <txn id>` holds the record of a
//! transaction anchored at `key` — it sorts with the key, so it lives in the same range.
//!
//! Invariants:
//! - Versions of one key are ordered newest first and never share a timestamp.
//! - Encoding is total: any byte string is a valid user key, and decoding never panics (a
//!   malformed engine key is reported as [`Error::Corrupt`]).

mod clock;
mod encoding;
mod ops;

pub use clock::{Hlc, ManualClock, PhysicalClock, SkewedClock, SystemClock, Timestamp};
pub use encoding::{
    decode_key, encode_key, encode_key_end, encode_record_key, encode_version, Slot, Value,
};
pub use ops::{
    mvcc_changed_between, mvcc_delete, mvcc_gc_candidates, mvcc_gc_key, mvcc_get, mvcc_get_with,
    mvcc_latest_timestamp, mvcc_put, mvcc_resolve, mvcc_resolve_span, mvcc_scan, mvcc_scan_with,
    mvcc_write, read_intent, read_record, txn_ts, write_record, KeyValue, ReadOptions, Writer,
    RESOLVE_SPAN_MAX_INTENTS, RESOLVE_SPAN_MAX_KEYS,
};

/// Errors from MVCC operations.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The engine failed.
    #[error(transparent)]
    Storage(#[from] bini_storage::Error),
    /// Stored bytes could not be decoded.
    #[error("corrupt mvcc data: {0}")]
    Corrupt(String),
    /// Another transaction's intent is in the way.
    #[error("conflicting intent on key {}", String::from_utf8_lossy(key))]
    WriteIntent {
        /// The key.
        key: Vec<u8>,
        /// The intent's transaction.
        txn: Box<bini_proto::TxnMeta>,
    },
    /// A read found a committed version it cannot order against itself.
    #[error("read at {read_ts} found a version at {ts} within its uncertainty interval")]
    ReadUncertain {
        /// The key.
        key: Vec<u8>,
        /// The version's timestamp.
        ts: Timestamp,
        /// The read timestamp.
        read_ts: Timestamp,
    },
    /// A write would land below a committed version and may not move up.
    #[error("write too old: a newer version exists; retry at {ts}")]
    WriteTooOld {
        /// The key.
        key: Vec<u8>,
        /// The lowest timestamp the write could use.
        ts: Timestamp,
    },
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
