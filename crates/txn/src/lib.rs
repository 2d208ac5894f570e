//! Serializable distributed transactions.
//!
//! A [`Db`] is a node's client of the transaction layer; [`Db::begin`] starts a [`Txn`] whose
//! coordinator is this node. The design follows DESIGN.md layer 4:
//!
//! - **Timestamps.** A transaction reads at its read timestamp (its start, from the node's
//!   hybrid logical clock) and writes provisional values — *intents* — at its write timestamp,
//!   which only moves up: when a leaseholder's timestamp cache says another transaction read a
//!   key later, when a newer version exists, or when a reader pushes it. It commits at its
//!   write timestamp; if that moved, it first *refreshes*: every span it read is checked for
//!   changes between the two timestamps, and it fails with a retryable error (40001) if any.
//! - **Records.** The first write batch creates a PENDING record beside the first key written
//!   (the *anchor*); the coordinator heartbeats it. Commit flips it to COMMITTED, resolving the
//!   intents in the anchor's range in the same command and the rest asynchronously afterwards.
//!   A transaction that writes one range and commits in the same batch takes the **one-phase**
//!   path: no record, no intents, committed values written directly.
//! - **Conflicts** (`conflict.rs`). A reader meeting an intent pushes the writer's timestamp
//!   above its own; a writer meeting one waits for the owner to finish, aborting it if its
//!   record expired (its coordinator died). Waiting writers look for cycles by following
//!   wait-for edges across coordinators; the lowest-priority transaction in a cycle is aborted.
//! - **Uncertainty.** A read treats versions up to its start plus the maximum clock offset as
//!   possibly earlier in real time: it moves its read timestamp above such a version (refreshing
//!   what it read before), so a transaction never misses a write acknowledged before it began.
//!
//! Deliberately left out: parallel commits, pipelined writes, savepoints (the SQL layer's
//! issue), and removing finalized records (they are small; a GC pass can come later).

mod conflict;
mod error;
mod intents;
mod txn;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bini_kv::{DistSender, NodeId};
use bini_mvcc::{Hlc, Timestamp};
use bini_proto::{request, BatchHeader, Request, Response, TxnMeta};
use parking_lot::Mutex;

pub use error::{Error, Result, RetryReason};
pub use txn::{delete, put, Savepoint, Txn};

/// How often a coordinator heartbeats the records of its open transactions.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_millis(400);

/// A node's entry point to transactions.
#[derive(Clone)]
pub struct Db {
    pub(crate) inner: Arc<DbInner>,
}

pub(crate) struct DbInner {
    pub sender: Arc<DistSender>,
    pub clock: Arc<Hlc>,
    pub node_id: AtomicU64,
    /// Transactions coordinated here that wait for another: id → the one they wait for.
    pub waits: Mutex<HashMap<Vec<u8>, TxnMeta>>,
    /// Set when the node stops: coordinators stop heartbeating and refuse new work.
    pub stopped: AtomicBool,
}

impl Db {
    /// A client routing through `sender`, timestamping with `clock`.
    pub fn new(sender: Arc<DistSender>, clock: Arc<Hlc>) -> Self {
        Self {
            inner: Arc::new(DbInner {
                sender,
                clock,
                node_id: AtomicU64::new(0),
                waits: Mutex::new(HashMap::new()),
                stopped: AtomicBool::new(false),
            }),
        }
    }

    /// Sets this node's id (known once it joined), recorded in transactions it coordinates.
    pub fn set_node_id(&self, node: NodeId) {
        self.inner.node_id.store(node.0, Ordering::Relaxed);
    }

    /// This node's id (0 until the node has joined a cluster).
    pub fn node_id(&self) -> u64 {
        self.inner.node_id.load(Ordering::Relaxed)
    }

    /// Stops coordinating: open transactions stop heartbeating (their records expire) and
    /// every later request fails. Called when the node stops or dies.
    pub fn shutdown(&self) {
        self.inner.stopped.store(true, Ordering::SeqCst);
    }

    pub(crate) fn check_running(&self) -> Result<()> {
        if self.inner.stopped.load(Ordering::SeqCst) {
            return Err(Error::Kv(bini_kv::Error::Stopping));
        }
        if let Some(why) = self
            .inner
            .sender
            .local_store()
            .and_then(|s| s.clock_unhealthy())
        {
            return Err(Error::Kv(bini_kv::Error::ClockOffset(why)));
        }
        Ok(())
    }

    /// Waits until this node's physical clock has passed `ts`, before a write at `ts` is
    /// acknowledged. A write usually carries a timestamp from the past, and this returns at
    /// once; after a lease change (whose timestamp cache starts a maximum offset ahead) or a
    /// push it may be in the future. A reader that starts after the acknowledgement has a clock
    /// at most the maximum offset behind ours, so `ts` then falls below its uncertainty limit
    /// and it cannot miss the write.
    pub(crate) async fn commit_wait(&self, ts: Timestamp) {
        let clock = &self.inner.clock;
        let cap = clock.max_offset() * 3;
        let now = clock.physical_now();
        if ts.wall > now {
            let wait = Duration::from_nanos(ts.wall - now).min(cap);
            tokio::time::sleep(wait).await;
        }
        let _ = clock.update(ts);
    }

    /// The clock.
    pub fn clock(&self) -> &Arc<Hlc> {
        &self.inner.clock
    }

    /// The router.
    pub fn sender(&self) -> &Arc<DistSender> {
        &self.inner.sender
    }

    /// Starts a read-write transaction at the current time.
    pub fn begin(&self) -> Txn {
        Txn::new(self.clone(), None)
    }

    /// Starts a read-only transaction at a past timestamp (`AS OF SYSTEM TIME`): no uncertainty,
    /// no writes.
    pub fn begin_as_of(&self, ts: Timestamp) -> Txn {
        Txn::new(self.clone(), Some(ts))
    }

    /// What a transaction coordinated here is waiting for (deadlock detection asks this).
    pub fn waiting_for(&self, txn_id: &[u8]) -> Option<TxnMeta> {
        self.inner.waits.lock().get(txn_id).cloned()
    }

    /// Runs a non-transactional batch (the raw KV API): reads at the current time, writes
    /// committed one range at a time (atomically within a range, not across ranges). Conflicts
    /// with transactions are resolved like a transaction's would be.
    pub async fn batch(&self, requests: Vec<Request>) -> Result<Vec<Response>> {
        self.check_running()?;
        let deadline = tokio::time::Instant::now() + conflict::CONFLICT_DEADLINE;
        // Reads happen at the gateway's time, with uncertainty: a write acknowledged before
        // this batch started is never missed, whatever the leaseholder's clock says.
        let mut read_ts = self.inner.clock.now();
        let limit = read_ts.add_duration(self.inner.clock.max_offset());
        loop {
            let header = BatchHeader {
                timestamp: Some(read_ts.into()),
                uncertainty_limit: Some(limit.into()),
                now: Some(self.inner.clock.now().into()),
                ..Default::default()
            };
            match self.inner.sender.send_with(&header, requests.clone()).await {
                Err(bini_kv::Error::WriteIntent { key, txn }) => {
                    if tokio::time::Instant::now() > deadline {
                        return Err(Error::retry(
                            RetryReason::ContentionTimeout,
                            "gave up waiting for a conflicting transaction",
                        ));
                    }
                    let writes = requests.iter().any(|r| !is_read(r));
                    conflict::resolve(self, None, &key, *txn, writes, limit).await?;
                }
                Err(bini_kv::Error::ReadUncertain { ts }) => read_ts = read_ts.max(ts),
                Err(e) => return Err(e.into()),
                Ok(resp) => {
                    // The leaseholder acknowledged each write only once its clock passed the
                    // write's timestamp (`Store::write`); bring our clock up to it too.
                    let written = requests
                        .iter()
                        .zip(&resp)
                        .filter(|(r, _)| !is_read(r))
                        .filter_map(|(_, r)| r.timestamp.map(Timestamp::from))
                        .max();
                    if let Some(ts) = written {
                        let _ = self.inner.clock.update(ts);
                    }
                    return Ok(resp);
                }
            }
        }
    }
}

fn is_read(r: &Request) -> bool {
    matches!(
        r.kind,
        Some(request::Kind::Get(_)) | Some(request::Kind::Scan(_))
    )
}
