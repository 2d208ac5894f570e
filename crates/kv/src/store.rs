//! The store: every replica on one data directory, driven by one thread.
//!
//! The store thread loops: receive messages (Raft traffic, proposals, admin requests) until the
//! next tick is due, tick every replica when it is, then handle the Ready output of *all*
//! replicas together:
//!
//! 1. leader messages go out at once (followers persist in parallel with us);
//! 2. new log entries, hard states and snapshots of every replica go into ONE write batch,
//!    written with ONE sync — group commit;
//! 3. messages that had to wait for persistence go out;
//! 4. committed entries of every replica are applied into one (unsynced) apply batch — the log
//!    is durable, so a crash replays them;
//! 5. proposers are answered after the apply batch is written, so a lease read that follows an
//!    acknowledged write always sees it.
//!
//! Reads never enter this thread: [`Store::execute`] serves read-only batches on a blocking
//! thread under the replica's shared lock while the lease is valid.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bini_mvcc::{txn_ts, Hlc, Timestamp};
use bini_proto::{
    request, BatchHeader, RaftCommand, RaftMessage, RangeDescriptor, RangeInfo, ReplicaDescriptor,
    ReplicaKind, Request, Response, SplitTrigger,
};
use bini_storage::{Cf, Engine, WriteBatch};
use crossbeam_channel::Sender;
use parking_lot::{Mutex, RwLock};
use prost::Message as _;
use raft::eraftpb::ConfChangeV2;

use crate::concurrency::Span;
use crate::lease_read::{lease_read, LeaseReadError};
use crate::replica::{write_initial_state, Replica, ReplicaShared, Responder};
use crate::transport::Transport;
use crate::worker::Worker;
use crate::{keys, Error, NodeId, RangeId, Result, StoreConfig};

/// A function run on the store thread against one replica (or `None` if absent).
pub(crate) type InspectFn = Box<dyn FnOnce(Option<&Replica>) + Send>;

/// Messages to the store thread.
pub(crate) enum StoreMsg {
    /// A Raft message from a peer, with the node the transport says sent it.
    Raft(NodeId, RaftMessage),
    Propose {
        range_id: RangeId,
        cmd: Box<RaftCommand>,
        /// The Raft term the command was evaluated in (its timestamp checked against that
        /// term's timestamp cache); the proposal is refused in any other term.
        term: Option<u64>,
        responder: Responder,
    },
    ConfChange {
        range_id: RangeId,
        cc: ConfChangeV2,
        desc: RangeDescriptor,
        responder: Responder,
    },
    TransferLease {
        range_id: RangeId,
        target: NodeId,
    },
    SnapshotStatus {
        range_id: RangeId,
        to: NodeId,
        ok: bool,
    },
    Inspect {
        range_id: RangeId,
        f: InspectFn,
    },
    /// Removes a replica that the range no longer includes (it missed its own removal).
    Destroy {
        range_id: RangeId,
        generation: u64,
    },
    Stop,
}

/// Events the store thread hands to the node's background work (meta updates, splits).
#[derive(Debug, Clone)]
pub enum StoreEvent {
    /// The leaseholder of a range applied a new descriptor; meta must be updated.
    DescriptorChanged(RangeDescriptor),
    /// A range the leaseholder leads has grown past the split size.
    SplitNeeded(RangeId),
}

/// Counters for metrics and benchmarks.
#[derive(Debug, Default)]
pub struct StoreStatus {
    /// Rounds that wrote a synced batch.
    pub synced_rounds: AtomicU64,
    /// Commands applied that a client proposed on this store.
    pub proposals_applied: AtomicU64,
    /// Raft messages dropped because the inbox was full.
    pub dropped_messages: AtomicU64,
}

pub(crate) struct Inner {
    pub(crate) node_id: NodeId,
    pub(crate) engine: Arc<dyn Engine>,
    pub(crate) config: StoreConfig,
    pub(crate) clock: Arc<Hlc>,
    pub(crate) tx: Sender<StoreMsg>,
    pub(crate) replicas: RwLock<HashMap<RangeId, Arc<ReplicaShared>>>,
    pub(crate) started: Instant,
    /// Set by `kill`: the worker stops before doing anything more.
    pub(crate) killed: std::sync::atomic::AtomicBool,
    /// How long after start the store refuses votes (it has forgotten which leaders it heard).
    pub(crate) vote_grace: Duration,
    pub(crate) next_id: AtomicU64,
    pub(crate) status: StoreStatus,
    pub(crate) events: Mutex<Option<tokio::sync::mpsc::UnboundedSender<StoreEvent>>>,
    pub(crate) thread: Mutex<Option<JoinHandle<()>>>,
    /// Ranges with a replica change under way (one at a time per range).
    pub(crate) changing: Mutex<std::collections::HashSet<RangeId>>,
    /// Set while the node's clock is too far from the cluster's: why it refuses to serve.
    pub(crate) clock_unhealthy: Mutex<Option<String>>,
    /// Bytes of Raft messages in the inbox.
    pub(crate) inbox_bytes: std::sync::atomic::AtomicUsize,
}

/// A store: the replicas of one data directory and the thread that drives them.
#[derive(Clone)]
pub struct Store {
    pub(crate) inner: Arc<Inner>,
}

/// The most messages the store thread's inbox holds; past it, Raft messages are dropped and
/// requests refused (both are retried).
const INBOX_MESSAGES: usize = 16_384;

/// The most bytes of Raft messages the inbox holds.
const INBOX_BYTES: usize = 64 << 20;

/// How long a proposer waits before reporting a timeout (the outcome is then unknown).
pub(crate) const PROPOSAL_TIMEOUT: Duration = Duration::from_secs(4);

impl Store {
    /// Writes the initial ranges of a new cluster, led by `node_id`: the first range (meta and
    /// system keys) and one range for all user keys.
    pub fn bootstrap(engine: &dyn Engine, node_id: NodeId) -> Result<()> {
        let replicas = vec![ReplicaDescriptor {
            node_id: node_id.0,
            kind: ReplicaKind::Voter as i32,
        }];
        let first = RangeDescriptor {
            range_id: 1,
            start_key: keys::META_START.to_vec(),
            end_key: keys::USER_START.to_vec(),
            replicas: replicas.clone(),
            generation: 1,
        };
        let user = RangeDescriptor {
            range_id: 2,
            start_key: keys::USER_START.to_vec(),
            end_key: keys::KEY_MAX.to_vec(),
            replicas,
            generation: 1,
        };
        let mut batch = WriteBatch::new();
        let ts = Timestamp::new(1, 0);
        for d in [&first, &user] {
            write_initial_state(&mut batch, d, 0, 0, 0)?;
            bini_mvcc::mvcc_put(
                &mut batch,
                &keys::meta_key(&d.end_key),
                ts,
                &d.encode_to_vec(),
            );
        }
        bini_mvcc::mvcc_put(
            &mut batch,
            keys::NODE_ID_COUNTER,
            ts,
            &(node_id.0 as i64).to_be_bytes(),
        );
        bini_mvcc::mvcc_put(&mut batch, keys::RANGE_ID_COUNTER, ts, &2i64.to_be_bytes());
        engine.write(&batch, true)?;
        Ok(())
    }

    /// Opens every replica stored in the engine and starts the store thread.
    pub fn start(
        node_id: NodeId,
        engine: Arc<dyn Engine>,
        config: StoreConfig,
        clock: Arc<Hlc>,
        transport: Arc<dyn Transport>,
    ) -> Result<Store> {
        let vote_grace = config.election_timeout();
        let (store, mut worker) =
            Self::open(node_id, engine, config, clock, transport, vote_grace)?;
        let handle = std::thread::Builder::new()
            .name(format!("store-n{}", node_id.0))
            .spawn(move || worker.run())
            .map_err(|e| Error::InvalidRequest(format!("spawn store thread: {e}")))?;
        *store.inner.thread.lock() = Some(handle);
        Ok(store)
    }

    /// Opens the replicas and returns the store with its worker, not yet running: `start`
    /// runs the worker on its own thread, the simulation tests step it by hand.
    pub(crate) fn open(
        node_id: NodeId,
        engine: Arc<dyn Engine>,
        config: StoreConfig,
        clock: Arc<Hlc>,
        transport: Arc<dyn Transport>,
        vote_grace: Duration,
    ) -> Result<(Store, Worker)> {
        let (tx, rx) = crossbeam_channel::bounded(INBOX_MESSAGES);
        let inner = Arc::new(Inner {
            node_id,
            engine: engine.clone(),
            config: config.clone(),
            clock,
            tx,
            replicas: RwLock::new(HashMap::new()),
            started: Instant::now(),
            vote_grace,
            killed: std::sync::atomic::AtomicBool::new(false),
            next_id: AtomicU64::new(rand::random::<u64>() >> 16),
            status: StoreStatus::default(),
            events: Mutex::new(None),
            thread: Mutex::new(None),
            changing: Mutex::new(std::collections::HashSet::new()),
            clock_unhealthy: Mutex::new(None),
            inbox_bytes: Default::default(),
        });
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let mut replicas = HashMap::new();
        for range_id in stored_ranges(engine.as_ref())? {
            let mut r = Replica::open(range_id, node_id, engine.clone(), &config, &logger)?;
            // A range whose only voter is this node need not wait out an election timeout.
            if r.raw.raft.prs().conf().to_conf_state().voters == [node_id.0] {
                let _ = r.raw.campaign();
            }
            inner.replicas.write().insert(range_id, r.shared.clone());
            replicas.insert(range_id, r);
        }
        tracing::info!(
            node_id = node_id.0,
            ranges = replicas.len(),
            "store started"
        );
        let worker = Worker::new(inner.clone(), rx, replicas, transport, logger);
        Ok((Store { inner }, worker))
    }

    /// Subscribes the node's background work to store events.
    pub fn set_event_sink(&self, tx: tokio::sync::mpsc::UnboundedSender<StoreEvent>) {
        *self.inner.events.lock() = Some(tx);
    }

    /// This store's node.
    pub fn node_id(&self) -> NodeId {
        self.inner.node_id
    }

    /// The engine.
    pub fn engine(&self) -> &Arc<dyn Engine> {
        &self.inner.engine
    }

    /// The store's settings.
    pub fn config(&self) -> &StoreConfig {
        &self.inner.config
    }

    /// Counters.
    pub fn status(&self) -> &StoreStatus {
        &self.inner.status
    }

    /// The clock.
    pub fn clock(&self) -> &Arc<Hlc> {
        &self.inner.clock
    }

    /// Halts the store thread at once, dropping queued work unanswered (crash tests).
    pub fn kill(&self) {
        self.inner.killed.store(true, Ordering::SeqCst);
        self.stop();
    }

    /// Whether the store thread is running (it stops only when told to, or when the engine
    /// fails).
    pub fn is_running(&self) -> bool {
        self.inner
            .thread
            .lock()
            .as_ref()
            .is_some_and(|h| !h.is_finished())
    }

    /// Stops the store thread and waits for it.
    pub fn stop(&self) {
        let _ = self.inner.tx.send(StoreMsg::Stop);
        if let Some(h) = self.inner.thread.lock().take() {
            let _ = h.join();
        }
    }

    /// Hands a Raft message received from node `from` to the store thread. When the inbox is full (the store
    /// thread is behind) the message is dropped: Raft resends what matters, and a peer cannot
    /// make the node queue without bound.
    pub fn deliver(&self, from: NodeId, msg: RaftMessage) {
        let len = msg.message.len();
        let queued = self.inner.inbox_bytes.fetch_add(len, Ordering::Relaxed);
        let sent = queued + len <= INBOX_BYTES
            && self.inner.tx.try_send(StoreMsg::Raft(from, msg)).is_ok();
        if !sent {
            self.inner.inbox_bytes.fetch_sub(len, Ordering::Relaxed);
            self.inner
                .status
                .dropped_messages
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Queues a request for the store thread, refusing it (retryably: it did not apply) when
    /// the inbox is full.
    pub(crate) fn enqueue(&self, range_id: RangeId, msg: StoreMsg) -> Result<()> {
        self.inner.tx.try_send(msg).map_err(|e| match e {
            crossbeam_channel::TrySendError::Full(_) => {
                tracing::debug!(range_id = range_id.0, "store inbox full; request refused");
                Error::ProposalDropped(range_id)
            }
            crossbeam_channel::TrySendError::Disconnected(_) => Error::Stopping,
        })
    }

    /// Reports the outcome of a snapshot send.
    pub(crate) fn snapshot_status(tx: &Sender<StoreMsg>, range_id: RangeId, to: NodeId, ok: bool) {
        let _ = tx.send(StoreMsg::SnapshotStatus { range_id, to, ok });
    }

    pub(crate) fn shared(&self, range_id: RangeId) -> Result<Arc<ReplicaShared>> {
        self.inner
            .replicas
            .read()
            .get(&range_id)
            .cloned()
            .ok_or(Error::RangeNotFound(range_id))
    }

    /// Descriptors and lease state of every replica on this store.
    pub fn replicas(&self) -> Vec<(RangeDescriptor, bool, u64)> {
        let now = Instant::now();
        let node = self.inner.node_id;
        let mut out: Vec<_> = self
            .inner
            .replicas
            .read()
            .values()
            .filter_map(|s| {
                let st = s.state.read();
                (st.initialized && !st.destroyed)
                    .then(|| (st.desc.clone(), st.lease_valid(node, now), st.leader))
            })
            .collect();
        out.sort_by_key(|(d, _, _)| d.range_id);
        out
    }

    /// Information about one replica.
    pub fn range_info(&self, range_id: RangeId) -> Option<RangeInfo> {
        let s = self.shared(range_id).ok()?;
        let st = s.state.read();
        if st.destroyed {
            return None;
        }
        Some(RangeInfo {
            descriptor: Some(st.desc.clone()),
            node_id: self.inner.node_id.0,
            // An idle range lets its lease lapse; its leader renews it on the next request, so
            // for operators the leader is the leaseholder.
            is_leaseholder: st.lease_valid(self.inner.node_id, Instant::now())
                || st.leader == self.inner.node_id.0,
            leader: st.leader,
            term: st.term,
            applied_index: st.applied_index,
            approximate_bytes: st.approx_bytes,
            snapshots_applied: st.snapshots_applied,
        })
    }

    /// The number of ranges whose lease this store holds or whose Raft group it leads.
    pub fn lease_count(&self) -> usize {
        let node = self.inner.node_id.0;
        self.inner
            .replicas
            .read()
            .values()
            .filter(|s| {
                let st = s.state.read();
                st.leader == node && !st.destroyed
            })
            .count()
    }

    /// Executes a batch addressed to one range: reads on the lease, writes through Raft.
    ///
    /// Writes get their timestamp here, on the leaseholder: the transaction's (or the clock's,
    /// without one), moved above every foreign read of their keys in the timestamp cache. They
    /// hold latches on their keys until applied, so reads never read around them.
    pub async fn execute(
        &self,
        range_id: RangeId,
        header: BatchHeader,
        requests: Vec<Request>,
    ) -> Result<Vec<Response>> {
        if requests.is_empty() {
            return Ok(Vec::new());
        }
        if let Some(reason) = self.inner.clock_unhealthy.lock().clone() {
            return Err(Error::ClockOffset(reason));
        }
        if let Some(now) = header.now {
            self.inner.clock.update(now.into())?;
        }
        let read_only = requests.iter().all(|r| {
            matches!(
                r.kind,
                Some(request::Kind::Get(_))
                    | Some(request::Kind::Scan(_))
                    | Some(request::Kind::Refresh(_))
            )
        });
        if read_only {
            self.read(range_id, header, requests).await
        } else {
            self.write(range_id, header, requests).await
        }
    }

    /// The timestamp-cache low-water mark of a lease. A previous leaseholder
    /// served reads only at timestamps up to its physical clock plus the maximum offset (see
    /// `read`), and its clock was at most the maximum offset ahead of ours: two offsets above
    /// our physical clock covers every read it served.
    ///
    /// "Now" is when the lease started (the replica became leader), not when the cache is
    /// first used: a lease taken long ago must not push its first write a second ahead.
    fn new_lease_low_water(&self, leader_since: Option<Instant>) -> Timestamp {
        let clock = &self.inner.clock;
        let held = leader_since.map(|t| t.elapsed()).unwrap_or_default();
        let start = clock.physical_now().saturating_sub(held.as_nanos() as u64);
        Timestamp::new(start, 0).add_duration(clock.max_offset() * 2)
    }

    async fn write(
        &self,
        range_id: RangeId,
        header: BatchHeader,
        requests: Vec<Request>,
    ) -> Result<Vec<Response>> {
        let shared = self.shared(range_id)?;
        let keys: Vec<Vec<u8>> = requests.iter().filter_map(write_key).collect();
        let txn_id = header
            .txn
            .as_ref()
            .map(|t| t.id.clone())
            .unwrap_or_default();
        let txn_id_present = header.txn.is_some();
        let mut ts = header.txn.as_ref().map(txn_ts).unwrap_or_default();
        if ts.is_zero() {
            ts = self.inner.clock.now();
        }
        let (term, since) = {
            let st = shared.state.read();
            (st.term, st.leader_since)
        };
        let latch = if keys.is_empty() {
            None
        } else {
            let mut c = shared.concurrency.lock();
            c.ensure_term(term, || self.new_lease_low_water(since));
            let max = c.max_read(&keys, &txn_id);
            if max >= ts {
                if header.one_phase && !header.can_bump && header.txn.is_some() {
                    return Err(Error::TxnPushed { ts: max.next() });
                }
                ts = max.next();
            }
            Some(c.begin_write(keys, ts))
        };
        let cmd = RaftCommand {
            timestamp: Some(ts.into()),
            requests,
            header: Some(header),
            ..Default::default()
        };
        let res = self.propose_in(range_id, cmd, Some(term)).await;
        if let Some(id) = latch {
            shared.concurrency.lock().finish(id);
        }
        if res.is_ok() && !txn_id_present {
            // A non-transactional write moved above the timestamp cache may be in the future
            // (a new lease's low-water mark is ahead of the clock). Acknowledge it only once
            // the clock has passed it, so a read that starts afterwards cannot miss it.
            self.commit_wait(ts).await;
        }
        res
    }

    /// Waits until the physical clock passes `ts` (at most three maximum offsets).
    async fn commit_wait(&self, ts: Timestamp) {
        let clock = &self.inner.clock;
        let now = clock.physical_now();
        if ts.wall > now {
            let wait = Duration::from_nanos(ts.wall - now).min(clock.max_offset() * 3);
            tokio::time::sleep(wait).await;
        }
        let _ = clock.update(ts);
    }

    async fn read(
        &self,
        range_id: RangeId,
        header: BatchHeader,
        requests: Vec<Request>,
    ) -> Result<Vec<Response>> {
        let clock = &self.inner.clock;
        let mut ts = header.timestamp.map(Timestamp::from).unwrap_or_default();
        if ts.is_zero() {
            ts = clock.now();
        }
        let threshold = Timestamp::new(
            clock
                .physical_now()
                .saturating_sub(self.inner.config.gc_ttl.as_nanos() as u64),
            0,
        );
        if ts < threshold {
            return Err(Error::BelowGcThreshold { ts, threshold });
        }
        // Reads are served at most the maximum offset above this node's physical clock, which
        // is what bounds the timestamp cache of the next leaseholder. A read further in the
        // future (after a write landed above a new lease's low-water mark) waits until it is not.
        let max_offset = clock.max_offset();
        let ahead = ts.wall.saturating_sub(
            clock
                .physical_now()
                .saturating_add(max_offset.as_nanos() as u64),
        );
        if ahead > 0 {
            tokio::time::sleep(Duration::from_nanos(ahead).min(max_offset * 3)).await;
        }
        let _ = clock.update(ts);
        let limit = header
            .uncertainty_limit
            .map(Timestamp::from)
            .unwrap_or_default()
            .max(ts);
        let txn_id = header
            .txn
            .as_ref()
            .map(|t| t.id.clone())
            .unwrap_or_default();
        let spans: Vec<Span> = requests.iter().filter_map(read_span).collect();
        let shared = self.shared(range_id)?;
        let deadline = Instant::now() + PROPOSAL_TIMEOUT;
        loop {
            let done = {
                let (term, since) = {
                    let st = shared.state.read();
                    (st.term, st.leader_since)
                };
                let mut c = shared.concurrency.lock();
                c.ensure_term(term, || self.new_lease_low_water(since));
                if !c.must_wait(&spans, limit) {
                    c.record_read(&spans, ts, &txn_id);
                    break;
                }
                c.done.clone()
            };
            // A write in flight overlaps: wait for it to apply (or fail), then look again.
            let woken = done.notified();
            if Instant::now() > deadline {
                return Err(Error::Timeout(format!(
                    "read on range {range_id} waiting for a write"
                )));
            }
            let _ = tokio::time::timeout(Duration::from_millis(20), woken).await;
        }
        let requests = Arc::new(requests);
        let header = Arc::new(header);
        for _ in 0..3 {
            let shared = shared.clone();
            let engine = self.inner.engine.clone();
            let node = self.inner.node_id;
            let started = self.inner.started;
            let (reqs, hdr) = (requests.clone(), header.clone());
            let opts = (ts, limit);
            let res = tokio::task::spawn_blocking(move || {
                lease_read(&shared, engine.as_ref(), node, started, &reqs, &hdr, opts)
            })
            .await
            .map_err(|e| Error::InvalidRequest(format!("read task: {e}")))?;
            match res {
                Err(LeaseReadError::NeedsRenewal) => {
                    let cmd = RaftCommand {
                        lease_renewal: true,
                        ..Default::default()
                    };
                    self.propose(range_id, cmd).await?;
                }
                Err(LeaseReadError::Other(e)) => return Err(e),
                Ok(r) => return Ok(r),
            }
        }
        Err(Error::NotLeaseholder {
            range: range_id,
            leaseholder: None,
            descriptor: None,
        })
    }

    /// Counts the write intents stored on this node (tests and debugging; scans every key).
    pub fn count_intents(&self) -> Result<usize> {
        let engine = self.inner.engine.clone();
        let lower = bini_mvcc::encode_key(keys::META_START);
        let mut it = engine.iter(Cf::Data, &lower, &[]);
        it.seek_to_first();
        let mut n = 0;
        while it.valid()? {
            if let Ok((_, bini_mvcc::Slot::Meta, _)) = bini_mvcc::decode_key(it.key()) {
                n += 1;
            }
            it.next();
        }
        Ok(n)
    }

    /// The intent and committed versions of `key` on this node, newest first (tests and
    /// debugging).
    fn slots_of(&self, key: &[u8]) -> Result<Vec<(bini_mvcc::Slot, Vec<u8>)>> {
        // The metadata slot and the versions, up to the first transaction record.
        let upper = bini_mvcc::encode_record_key(key, &[]);
        let mut it = self
            .inner
            .engine
            .iter(Cf::Data, &bini_mvcc::encode_key(key), &upper);
        it.seek_to_first();
        let mut out = Vec::new();
        while it.valid()? {
            if let Ok((_, slot, _)) = bini_mvcc::decode_key(it.key()) {
                out.push((slot, it.value().to_vec()));
            }
            it.next();
        }
        Ok(out)
    }

    /// How many committed versions of `key` this node stores (tests and debugging).
    pub fn count_versions(&self, key: &[u8]) -> Result<usize> {
        Ok(self
            .slots_of(key)?
            .iter()
            .filter(|(slot, _)| matches!(slot, bini_mvcc::Slot::Version(_)))
            .count())
    }

    /// Every committed version and the intent of `key` on this node, newest first (debugging).
    pub fn debug_versions(&self, key: &[u8]) -> Result<Vec<String>> {
        Ok(self
            .slots_of(key)?
            .into_iter()
            .filter_map(|(slot, value)| match slot {
                bini_mvcc::Slot::Version(ts) => Some(format!(
                    "{ts} = {:?}",
                    bini_mvcc::Value::decode(&value).ok()
                )),
                bini_mvcc::Slot::Meta => Some("intent".to_string()),
                bini_mvcc::Slot::Record => None,
            })
            .collect())
    }

    /// Marks the node's clock as too far from the cluster's (`Some(reason)`): the store then
    /// refuses every request with that reason. `None` clears it.
    pub fn set_clock_unhealthy(&self, reason: Option<String>) {
        *self.inner.clock_unhealthy.lock() = reason;
    }

    /// Why the store refuses to serve because of its clock, if it does.
    pub fn clock_unhealthy(&self) -> Option<String> {
        self.inner.clock_unhealthy.lock().clone()
    }

    /// Proposes a command to a range led here and waits for it to apply.
    pub(crate) async fn propose(
        &self,
        range_id: RangeId,
        cmd: RaftCommand,
    ) -> Result<Vec<Response>> {
        self.propose_in(range_id, cmd, None).await
    }

    /// Proposes a command if this replica still leads in `term` (any term for `None`).
    async fn propose_in(
        &self,
        range_id: RangeId,
        cmd: RaftCommand,
        term: Option<u64>,
    ) -> Result<Vec<Response>> {
        self.ask(
            range_id,
            |responder| StoreMsg::Propose {
                range_id,
                cmd: Box::new(cmd),
                term,
                responder,
            },
            PROPOSAL_TIMEOUT,
            || format!("proposal to range {range_id} (outcome unknown)"),
        )
        .await
    }

    /// Sends the store thread a message carrying a responder and waits for the answer, up to
    /// `timeout` (after which the outcome is unknown).
    pub(crate) async fn ask(
        &self,
        range_id: RangeId,
        message: impl FnOnce(Responder) -> StoreMsg,
        timeout: Duration,
        what: impl FnOnce() -> String,
    ) -> Result<Vec<Response>> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.enqueue(range_id, message(tx))?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(Error::Stopping),
            Err(_) => Err(Error::Timeout(what())),
        }
    }

    /// Proposes a split of a range at `split_key`, giving the right side `new_range_id`.
    pub async fn split(
        &self,
        range_id: RangeId,
        split_key: Vec<u8>,
        new_range_id: RangeId,
    ) -> Result<()> {
        let desc = self.descriptor(range_id)?;
        if split_key <= desc.start_key || split_key >= desc.end_key {
            return Err(Error::InvalidRequest("split key outside the range".into()));
        }
        let left = RangeDescriptor {
            end_key: split_key.clone(),
            generation: desc.generation + 1,
            ..desc.clone()
        };
        let right = RangeDescriptor {
            range_id: new_range_id.0,
            start_key: split_key,
            end_key: desc.end_key.clone(),
            replicas: desc.replicas.clone(),
            generation: desc.generation + 1,
        };
        let cmd = RaftCommand {
            split: Some(SplitTrigger {
                left: Some(left),
                right: Some(right),
            }),
            ..Default::default()
        };
        self.propose(range_id, cmd).await.map(|_| ())
    }

    /// The applied descriptor of a local replica.
    pub fn descriptor(&self, range_id: RangeId) -> Result<RangeDescriptor> {
        let s = self.shared(range_id)?;
        let st = s.state.read();
        if st.destroyed || !st.initialized {
            return Err(Error::RangeNotFound(range_id));
        }
        Ok(st.desc.clone())
    }

    /// Whether this store holds the lease of a range.
    pub fn is_leaseholder(&self, range_id: RangeId) -> bool {
        self.shared(range_id)
            .map(|s| {
                s.state
                    .read()
                    .lease_valid(self.inner.node_id, Instant::now())
            })
            .unwrap_or(false)
    }

    /// Whether this store leads a range's Raft group (it may not hold a valid lease yet).
    pub fn is_leader(&self, range_id: RangeId) -> bool {
        self.shared(range_id)
            .map(|s| s.state.read().leader == self.inner.node_id.0)
            .unwrap_or(false)
    }
}

/// Ranges with applied state in the engine.
pub(crate) fn stored_ranges(engine: &dyn Engine) -> Result<Vec<RangeId>> {
    let mut out = Vec::new();
    let mut it = engine.iter(Cf::Data, &[keys::LOCAL_PREFIX], keys::META_START);
    it.seek_to_first();
    while it.valid()? {
        let k = it.key();
        if k.len() == 10 && k[9] == b'a' {
            let id = u64::from_be_bytes(k[1..9].try_into().expect("8 bytes"));
            if id != 0 {
                out.push(RangeId(id));
            }
        }
        it.next();
    }
    Ok(out)
}

/// The key a write request writes (for the timestamp cache and latches).
fn write_key(r: &Request) -> Option<Vec<u8>> {
    match &r.kind {
        Some(request::Kind::Put(p)) => Some(p.key.clone()),
        Some(request::Kind::Delete(d)) => Some(d.key.clone()),
        Some(request::Kind::Cput(c)) => Some(c.key.clone()),
        Some(request::Kind::Increment(i)) => Some(i.key.clone()),
        _ => None,
    }
}

/// The key or span a read request reads.
fn read_span(r: &Request) -> Option<Span> {
    match &r.kind {
        Some(request::Kind::Get(g)) => Some(Span {
            start: g.key.clone(),
            end: Vec::new(),
        }),
        Some(request::Kind::Scan(s)) => Some(Span {
            start: s.start_key.clone(),
            end: s.end_key.clone(),
        }),
        Some(request::Kind::Refresh(f)) => Some(Span {
            start: f.start_key.clone(),
            end: f.end_key.clone(),
        }),
        _ => None,
    }
}

/// The key a request addresses, if it addresses one.
pub(crate) fn request_key(r: &Request) -> Option<&[u8]> {
    match &r.kind {
        Some(request::Kind::Get(g)) => Some(&g.key),
        Some(request::Kind::Put(p)) => Some(&p.key),
        Some(request::Kind::Delete(d)) => Some(&d.key),
        Some(request::Kind::Scan(s)) => Some(&s.start_key),
        Some(request::Kind::Cput(c)) => Some(&c.key),
        Some(request::Kind::Increment(i)) => Some(&i.key),
        Some(request::Kind::BeginTxn(b)) => b.txn.as_ref().map(|t| t.anchor.as_slice()),
        Some(request::Kind::HeartbeatTxn(h)) => h.txn.as_ref().map(|t| t.anchor.as_slice()),
        Some(request::Kind::EndTxn(e)) => e.txn.as_ref().map(|t| t.anchor.as_slice()),
        Some(request::Kind::PushTxn(p)) => p.pushee.as_ref().map(|t| t.anchor.as_slice()),
        Some(request::Kind::ResolveIntent(r)) => Some(&r.key),
        Some(request::Kind::Refresh(r)) => Some(&r.start_key),
        Some(request::Kind::Gc(g)) => g.keys.first().map(|k| k.key.as_slice()),
        Some(request::Kind::PutDescriptor(_)) => None,
        None => None,
    }
}
