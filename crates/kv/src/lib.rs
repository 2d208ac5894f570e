//! The replicated range store.
//!
//! Data lives in *ranges*: contiguous key spans `[start, end)`, each a Raft group with (by
//! default) three replicas on three nodes. A node has one [`Store`] per data directory; the store
//! owns a replica of every range it holds and drives all of them from one thread:
//!
//! ```text
//!   gRPC (Raft streams, batches) ──► StoreMsg channel ──► store thread
//!                                                          │ step / propose / tick every replica
//!                                                          │ collect Ready of all replicas
//!                                                          │ ONE write batch + ONE sync   (group commit)
//!                                                          │ send messages, apply committed entries
//!                                                          ▼ answer proposers
//! ```
//!
//! Reads do not go through Raft: the leader holds the range *lease* and serves reads straight
//! from the engine while the lease is valid (see `replica.rs` for why a deposed leader can
//! never serve a stale read). Writes are proposed as [`RaftCommand`](bini_proto::RaftCommand)s
//! and evaluated when applied, identically on every replica.
//!
//! Routing is the [`DistSender`]'s job: it finds a key's range through the meta range (cached),
//! sends each range its part of a batch, and retries on `NotLeaseholder` / `RangeNotFound`.
//!
//! Life of a write (`Kv.Batch` put on any node):
//! 1. `DistSender::send` looks up the range in the [`RangeCache`] (a meta scan on a miss) and
//!    sends a `RangeBatch` to the cached leaseholder.
//! 2. That node's `Store::execute` forwards the batch to the store thread as a proposal; the
//!    replica checks it leads and the keys are in its span, stamps an HLC timestamp, proposes.
//! 3. The store thread persists the entry (with every other range's Raft output of the round, in
//!    one synced batch) and sends appends to the followers; when a quorum has it, the entry is
//!    committed, applied (MVCC writes into the round's apply batch) and the proposer answered.
//!
//! Deliberately left out for now: quiescing idle ranges, range merges, and load-based splitting.

mod concurrency;
mod conf_change;
mod dist_sender;
mod error;
pub mod keys;
mod lease_read;
mod overlay;
pub mod peer;
mod raft_log;
mod replica;
#[cfg(test)]
mod sim;
mod snapshot;
mod store;
mod transport;
mod txn_record;
mod worker;

use std::fmt;
use std::time::Duration;

pub use dist_sender::{DistSender, NodeDirectory, RangeCache};
pub use error::{Error, Result};
pub use replica::TXN_EXPIRY;
pub use store::StoreEvent;
pub use store::{Store, StoreStatus};
pub use transport::{GrpcTransport, SnapshotCallback, Transport};

/// A node's id, allocated when it joins; also its store's id and its Raft peer id.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(pub u64);

/// A range's id.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RangeId(pub u64);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "n{}", self.0)
    }
}

impl fmt::Display for RangeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "r{}", self.0)
    }
}

/// The id of the first range, which holds meta and system keys.
pub const FIRST_RANGE_ID: RangeId = RangeId(1);

/// Settings of a store.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// How often Raft ticks.
    pub raft_tick_interval: Duration,
    /// Ticks without a leader before a follower campaigns (randomised up to twice this).
    pub raft_election_ticks: usize,
    /// Ticks between leader heartbeats.
    pub raft_heartbeat_ticks: usize,
    /// Split a range when its data passes this size.
    pub range_max_bytes: u64,
    /// Replicas per range.
    pub replication_factor: usize,
    /// Truncate a range's Raft log once it has this many applied entries.
    pub raft_log_max_entries: u64,
    /// A node's clock may be this far from the others'.
    pub max_clock_offset: Duration,
    /// MVCC versions older than this are garbage-collected; reads further in the past fail.
    pub gc_ttl: Duration,
    /// Tests only: replace Raft's random election timeout with `raft_election_ticks + k × node
    /// id` ticks, so simulations that tick by hand elect deterministically.
    pub deterministic_election_spread: Option<usize>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            raft_tick_interval: Duration::from_millis(50),
            raft_election_ticks: 15,
            raft_heartbeat_ticks: 3,
            range_max_bytes: 512 << 20,
            replication_factor: 3,
            raft_log_max_entries: 10_000,
            max_clock_offset: Duration::from_millis(500),
            gc_ttl: Duration::from_secs(4 * 3600),
            deterministic_election_spread: None,
        }
    }
}

impl StoreConfig {
    /// The minimum election timeout.
    pub fn election_timeout(&self) -> Duration {
        self.raft_tick_interval * self.raft_election_ticks as u32
    }

    /// How long a lease lasts past the proposal that renewed it. Shorter than the election
    /// timeout, so that no other replica can win an election while the lease holds, with a
    /// margin for clock rate differences between nodes.
    pub fn lease_duration(&self) -> Duration {
        self.election_timeout().mul_f64(0.8)
    }
}
