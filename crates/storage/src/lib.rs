//! Storage engines for bini.
//!
//! Everything above this crate talks to an [`Engine`]: point reads, ordered iteration within
//! bounds, atomic write batches (optionally synced) and consistent snapshots. Two
//! implementations exist: [`RocksEngine`] (the real one, RocksDB on local disk) and
//! [`MemEngine`] (an ordered map, for tests). The conformance suite in `tests/conformance.rs`
//! runs the same cases against both.
//!
//! An engine has two column families ([`Cf`]): `Data` holds replicated state (user data, MVCC
//! versions, range-local applied state) and `Raft` holds Raft logs and hard states. Keeping logs
//! apart lets RocksDB compact them independently, and lets a store truncate a log with a range
//! deletion that never touches data files. A single [`WriteBatch`] may span both families and
//! is applied atomically — the store relies on that to persist the Ready output of many Raft
//! groups with one write and one sync (group commit).
//!
//! Invariants:
//! - A batch is all-or-nothing, also across column families.
//! - A write with `sync = true` is durable when `write` returns; a write without it survives a
//!   process crash (it is in the write-ahead log) but not necessarily a power loss.
//! - No RocksDB type appears in this crate's public API.

mod batch;
mod error;
mod memory;
mod rocks;

pub use batch::{BatchOp, WriteBatch};
pub use error::{Error, Result};
pub use memory::MemEngine;
pub use rocks::{RocksEngine, RocksOptions};

/// A column family: a separately compacted key space inside one engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Cf {
    /// Replicated data: MVCC versions of user and system keys, range-local applied state.
    Data,
    /// Raft logs and hard states, one prefix per range.
    Raft,
}

impl Cf {
    /// All column families, in a fixed order.
    pub const ALL: [Cf; 2] = [Cf::Data, Cf::Raft];

    /// The name used on disk.
    pub fn name(self) -> &'static str {
        match self {
            Cf::Data => "data",
            Cf::Raft => "raft",
        }
    }
}

/// A cursor over the keys of one column family within `[lower, upper)`.
///
/// The cursor starts unpositioned; call [`seek`](EngineIterator::seek) or
/// [`seek_to_first`](EngineIterator::seek_to_first) first. Keys come in ascending byte order.
pub trait EngineIterator {
    /// Positions at the first key `>= key` (clamped to the lower bound).
    fn seek(&mut self, key: &[u8]);
    /// Positions at the first key of the bounds.
    fn seek_to_first(&mut self);
    /// Positions at the last key `<= key` (clamped to the upper bound).
    fn seek_for_prev(&mut self, key: &[u8]);
    /// Whether the cursor is on an entry. An I/O error surfaces here.
    fn valid(&self) -> Result<bool>;
    /// The current key. Only meaningful while `valid()` is true.
    fn key(&self) -> &[u8];
    /// The current value. Only meaningful while `valid()` is true.
    fn value(&self) -> &[u8];
    /// Moves to the next key.
    fn next(&mut self);
    /// Moves to the previous key.
    fn prev(&mut self);
}

/// Read access shared by engines and their snapshots.
pub trait Reader {
    /// Reads one key.
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>>;
    /// Iterates `[lower, upper)` of a column family; an empty `upper` means no upper bound.
    fn iter(&self, cf: Cf, lower: &[u8], upper: &[u8]) -> Box<dyn EngineIterator + '_>;

    /// Collects up to `limit` entries of `[lower, upper)`; a convenience for small scans.
    fn scan(
        &self,
        cf: Cf,
        lower: &[u8],
        upper: &[u8],
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut it = self.iter(cf, lower, upper);
        it.seek_to_first();
        let mut out = Vec::new();
        while out.len() < limit && it.valid()? {
            out.push((it.key().to_vec(), it.value().to_vec()));
            it.next();
        }
        Ok(out)
    }
}

/// A storage engine: the only way bini touches a disk.
pub trait Engine: Reader + Send + Sync + 'static {
    /// Applies a batch atomically; with `sync`, durably before returning.
    fn write(&self, batch: &WriteBatch, sync: bool) -> Result<()>;
    /// A consistent point-in-time view that later writes do not change.
    fn snapshot(&self) -> Box<dyn Reader + '_>;
    /// Makes every earlier write durable.
    fn sync(&self) -> Result<()>;
    /// How many synced writes this engine has done since it was opened (for metrics and the
    /// group-commit benchmark).
    fn sync_count(&self) -> u64;
}
