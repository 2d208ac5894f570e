//! A range's Raft log and hard state on the engine, behind `raft::Storage`.
//!
//! Entries live in the `Raft` column family under `raft_log_key(range, index)`; the hard state
//! and the truncated state beside them. raft-rs reads through [`raft::Storage`]; the replica
//! writes through the `append`/`set_hard_state`/`apply_snapshot`/`compact` methods, which only
//! add to the round's [`WriteBatch`] and update the in-memory indexes — the store writes the
//! batch (with one sync for all ranges) before it advances any `RawNode`.
//!
//! Invariants:
//! - `first_index() == truncated.index + 1` and `last_index() >= truncated.index`.
//! - In-memory indexes run ahead of the engine only between building a round's batch and
//!   writing it, when nothing reads them.

use std::sync::Arc;

use bini_proto::RangeDescriptor;
use bini_storage::{Cf, Engine, WriteBatch};
use protobuf::Message as _;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, StorageError};

use crate::keys;
use crate::snapshot::build_snapshot;
use crate::{Error, RangeId, Result};

/// The persisted log of one replica.
pub struct RaftLog {
    range: RangeId,
    engine: Arc<dyn Engine>,
    hard_state: HardState,
    conf_state: ConfState,
    truncated_index: u64,
    truncated_term: u64,
    last_index: u64,
    last_term: u64,
    /// The applied index and term and the descriptor as of them, for building snapshots.
    applied_index: u64,
    applied_term: u64,
    descriptor: RangeDescriptor,
}

fn store_err(e: impl std::fmt::Display) -> raft::Error {
    raft::Error::Store(StorageError::Other(e.to_string().into()))
}

impl RaftLog {
    /// Loads the log of `range` from the engine. A range with nothing stored yields an empty,
    /// uninitialised log.
    pub fn load(
        range: RangeId,
        engine: Arc<dyn Engine>,
        conf_state: ConfState,
        applied_index: u64,
        applied_term: u64,
        descriptor: RangeDescriptor,
    ) -> Result<Self> {
        let hard_state = match engine.get(Cf::Raft, &keys::raft_hard_state_key(range))? {
            Some(b) => HardState::parse_from_bytes(&b).map_err(|e| Error::Decode(e.to_string()))?,
            None => HardState::default(),
        };
        let (truncated_index, truncated_term) =
            match engine.get(Cf::Raft, &keys::raft_truncated_key(range))? {
                Some(b) if b.len() == 16 => (
                    u64::from_be_bytes(b[..8].try_into().expect("length checked")),
                    u64::from_be_bytes(b[8..].try_into().expect("length checked")),
                ),
                Some(_) => return Err(Error::Decode("truncated state".into())),
                None => (applied_index, applied_term),
            };
        let mut log = Self {
            range,
            engine,
            hard_state,
            conf_state,
            truncated_index,
            truncated_term,
            last_index: truncated_index,
            last_term: truncated_term,
            applied_index,
            applied_term,
            descriptor,
        };
        // Find the last entry.
        let prefix = keys::raft_log_key(range, 0);
        let upper = keys::raft_log_key(range, u64::MAX);
        let mut it = log.engine.iter(Cf::Raft, &prefix, &upper);
        it.seek_for_prev(&upper);
        if it.valid()? {
            let e =
                Entry::parse_from_bytes(it.value()).map_err(|e| Error::Decode(e.to_string()))?;
            if e.index > log.truncated_index {
                log.last_index = e.index;
                log.last_term = e.term;
            }
        }
        drop(it);
        Ok(log)
    }

    /// The hard state as last set.
    pub fn hard_state(&self) -> &HardState {
        &self.hard_state
    }

    /// Records the applied position and configuration, for snapshots and restarts.
    pub fn set_applied(
        &mut self,
        index: u64,
        term: u64,
        conf: Option<ConfState>,
        desc: &RangeDescriptor,
    ) {
        self.applied_index = index;
        self.applied_term = term;
        if let Some(conf) = conf {
            self.conf_state = conf;
        }
        if self.descriptor != *desc {
            self.descriptor = desc.clone();
        }
    }

    /// The index of the first entry still in the log.
    pub fn first(&self) -> u64 {
        self.truncated_index + 1
    }

    /// Appends entries, replacing any conflicting suffix.
    pub fn append(&mut self, entries: &[Entry], batch: &mut WriteBatch) -> Result<()> {
        let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
            return Ok(());
        };
        for e in entries {
            let bytes = e
                .write_to_bytes()
                .map_err(|e| Error::Decode(e.to_string()))?;
            batch.put(Cf::Raft, keys::raft_log_key(self.range, e.index), bytes);
        }
        if last.index < self.last_index {
            batch.delete_range(
                Cf::Raft,
                keys::raft_log_key(self.range, last.index + 1),
                keys::raft_log_key(self.range, self.last_index + 1),
            );
        }
        debug_assert!(first.index > self.truncated_index);
        self.last_index = last.index;
        self.last_term = last.term;
        Ok(())
    }

    /// Sets the hard state.
    pub fn set_hard_state(&mut self, hs: HardState, batch: &mut WriteBatch) -> Result<()> {
        let bytes = hs
            .write_to_bytes()
            .map_err(|e| Error::Decode(e.to_string()))?;
        batch.put(Cf::Raft, keys::raft_hard_state_key(self.range), bytes);
        self.hard_state = hs;
        Ok(())
    }

    /// Sets only the commit index of the hard state.
    pub fn set_commit(&mut self, commit: u64, batch: &mut WriteBatch) -> Result<()> {
        if commit > self.hard_state.commit {
            let mut hs = self.hard_state.clone();
            hs.commit = commit;
            self.set_hard_state(hs, batch)?;
        }
        Ok(())
    }

    /// Replaces the log with the position of a snapshot.
    pub fn apply_snapshot(&mut self, snap: &Snapshot, batch: &mut WriteBatch) -> Result<()> {
        let meta = snap.get_metadata();
        batch.delete_range(
            Cf::Raft,
            keys::raft_log_key(self.range, 0),
            keys::raft_log_key(self.range, u64::MAX),
        );
        self.write_truncated(meta.index, meta.term, batch);
        self.last_index = meta.index;
        self.last_term = meta.term;
        self.conf_state = meta.get_conf_state().clone();
        let mut hs = self.hard_state.clone();
        hs.commit = hs.commit.max(meta.index);
        hs.term = hs.term.max(meta.term);
        self.set_hard_state(hs, batch)?;
        Ok(())
    }

    /// Removes entries up to and including `index` (which must be applied).
    pub fn compact(&mut self, index: u64, batch: &mut WriteBatch) -> Result<()> {
        if index <= self.truncated_index || index > self.applied_index {
            return Ok(());
        }
        let term = raft::Storage::term(self, index)?;
        batch.delete_range(
            Cf::Raft,
            keys::raft_log_key(self.range, self.truncated_index + 1),
            keys::raft_log_key(self.range, index + 1),
        );
        self.write_truncated(index, term, batch);
        Ok(())
    }

    fn write_truncated(&mut self, index: u64, term: u64, batch: &mut WriteBatch) {
        let mut v = index.to_be_bytes().to_vec();
        v.extend_from_slice(&term.to_be_bytes());
        batch.put(Cf::Raft, keys::raft_truncated_key(self.range), v);
        self.truncated_index = index;
        self.truncated_term = term;
    }

    /// Removes the whole log and hard state (replica removal).
    pub fn destroy(&self, batch: &mut WriteBatch) {
        let prefix = keys::range_local_prefix(self.range);
        let mut end = prefix.clone();
        end.push(0xff);
        batch.delete_range(Cf::Raft, prefix, end);
    }

    fn read_entry(&self, index: u64) -> raft::Result<Entry> {
        let b = self
            .engine
            .get(Cf::Raft, &keys::raft_log_key(self.range, index))
            .map_err(store_err)?
            .ok_or(raft::Error::Store(StorageError::Unavailable))?;
        Entry::parse_from_bytes(&b).map_err(store_err)
    }
}

impl raft::Storage for RaftLog {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState {
            hard_state: self.hard_state.clone(),
            conf_state: self.conf_state.clone(),
        })
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low <= self.truncated_index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > self.last_index + 1 {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let max_size = max_size.into().unwrap_or(u64::MAX);
        let mut it = self.engine.iter(
            Cf::Raft,
            &keys::raft_log_key(self.range, low),
            &keys::raft_log_key(self.range, high),
        );
        it.seek_to_first();
        let mut out = Vec::with_capacity((high - low) as usize);
        let mut size = 0u64;
        while it.valid().map_err(store_err)? {
            let e = Entry::parse_from_bytes(it.value()).map_err(store_err)?;
            size += it.value().len() as u64;
            if !out.is_empty() && size > max_size {
                break;
            }
            out.push(e);
            it.next();
        }
        if out.is_empty() || out[0].index != low {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        if idx == self.truncated_index {
            return Ok(self.truncated_term);
        }
        if idx < self.truncated_index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if idx > self.last_index {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        if idx == self.last_index {
            return Ok(self.last_term);
        }
        Ok(self.read_entry(idx)?.term)
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.truncated_index + 1)
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last_index)
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        if self.applied_index < request_index {
            return Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        let Some((applied, data)) =
            build_snapshot(self.engine.as_ref(), self.range).map_err(store_err)?
        else {
            return Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            ));
        };
        if applied.index < request_index {
            // This round's applied commands are not in the engine yet.
            return Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        let mut snap = Snapshot {
            data: data.into(),
            ..Default::default()
        };
        let meta = snap.mut_metadata();
        meta.index = applied.index;
        meta.term = applied.term;
        meta.set_conf_state(crate::replica::conf_state_from_applied(&applied));
        Ok(snap)
    }
}
