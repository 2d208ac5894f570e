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

use bini_mvcc::{mvcc_get, mvcc_scan, Hlc, Timestamp};
use bini_proto::{
    request, RaftCommand, RaftMessage, RangeDescriptor, RangeInfo, ReplicaDescriptor, ReplicaKind,
    Request, Response, SplitTrigger,
};
use bini_storage::{Cf, Engine, WriteBatch};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use parking_lot::{Mutex, RwLock};
use prost::Message as _;
use protobuf::Message as _;
use raft::eraftpb::{ConfChangeSingle, ConfChangeType, ConfChangeV2, MessageType};

use crate::replica::{
    write_initial_state, ApplyContext, Effect, Replica, ReplicaShared, Responder,
};
use crate::snapshot::{apply_snapshot_data, parse_snapshot_data};
use crate::transport::Transport;
use crate::{keys, Error, NodeId, RangeId, Result, StoreConfig};

/// A function run on the store thread against one replica (or `None` if absent).
pub(crate) type InspectFn = Box<dyn FnOnce(Option<&Replica>) + Send>;

/// Messages to the store thread.
pub(crate) enum StoreMsg {
    Raft(RaftMessage),
    Propose {
        range_id: RangeId,
        cmd: RaftCommand,
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
}

struct Inner {
    node_id: NodeId,
    engine: Arc<dyn Engine>,
    config: StoreConfig,
    clock: Arc<Hlc>,
    tx: Sender<StoreMsg>,
    replicas: RwLock<HashMap<RangeId, Arc<ReplicaShared>>>,
    started: Instant,
    next_id: AtomicU64,
    status: StoreStatus,
    events: Mutex<Option<tokio::sync::mpsc::UnboundedSender<StoreEvent>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// Ranges with a replica change under way (one at a time per range).
    changing: Mutex<std::collections::HashSet<RangeId>>,
}

/// A store: the replicas of one data directory and the thread that drives them.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

/// How long a proposer waits before reporting a timeout (the outcome is then unknown).
const PROPOSAL_TIMEOUT: Duration = Duration::from_secs(4);

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
        let (tx, rx) = crossbeam_channel::unbounded();
        let inner = Arc::new(Inner {
            node_id,
            engine: engine.clone(),
            config: config.clone(),
            clock,
            tx,
            replicas: RwLock::new(HashMap::new()),
            started: Instant::now(),
            next_id: AtomicU64::new(rand::random::<u64>() >> 16),
            status: StoreStatus::default(),
            events: Mutex::new(None),
            thread: Mutex::new(None),
            changing: Mutex::new(std::collections::HashSet::new()),
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
        let mut worker = Worker {
            inner: inner.clone(),
            rx,
            replicas,
            transport,
            logger,
            outbox: HashMap::new(),
            last_tick: Instant::now(),
            ticks: 0,
        };
        let handle = std::thread::Builder::new()
            .name(format!("store-n{}", node_id.0))
            .spawn(move || worker.run())
            .map_err(|e| Error::InvalidRequest(format!("spawn store thread: {e}")))?;
        *inner.thread.lock() = Some(handle);
        Ok(Store { inner })
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

    /// Stops the store thread and waits for it.
    pub fn stop(&self) {
        let _ = self.inner.tx.send(StoreMsg::Stop);
        if let Some(h) = self.inner.thread.lock().take() {
            let _ = h.join();
        }
    }

    /// Hands a received Raft message to the store thread.
    pub fn deliver(&self, msg: RaftMessage) {
        let _ = self.inner.tx.send(StoreMsg::Raft(msg));
    }

    /// Reports the outcome of a snapshot send.
    pub(crate) fn snapshot_status(tx: &Sender<StoreMsg>, range_id: RangeId, to: NodeId, ok: bool) {
        let _ = tx.send(StoreMsg::SnapshotStatus { range_id, to, ok });
    }

    fn shared(&self, range_id: RangeId) -> Result<Arc<ReplicaShared>> {
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
    pub async fn execute(
        &self,
        range_id: RangeId,
        requests: Vec<Request>,
    ) -> Result<Vec<Response>> {
        let read_only = requests.iter().all(|r| {
            matches!(
                r.kind,
                Some(request::Kind::Get(_)) | Some(request::Kind::Scan(_))
            )
        });
        if requests.is_empty() {
            return Ok(Vec::new());
        }
        if !read_only {
            let cmd = RaftCommand {
                requests,
                ..Default::default()
            };
            return self.propose(range_id, cmd).await;
        }
        let requests = Arc::new(requests);
        for _ in 0..3 {
            let shared = self.shared(range_id)?;
            let engine = self.inner.engine.clone();
            let node = self.inner.node_id;
            let started = self.inner.started;
            let reqs = requests.clone();
            let res = tokio::task::spawn_blocking(move || {
                lease_read(&shared, engine.as_ref(), node, started, &reqs)
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

    /// Proposes a command to a range led here and waits for it to apply.
    pub(crate) async fn propose(
        &self,
        range_id: RangeId,
        cmd: RaftCommand,
    ) -> Result<Vec<Response>> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.inner
            .tx
            .send(StoreMsg::Propose {
                range_id,
                cmd,
                responder: tx,
            })
            .map_err(|_| Error::Stopping)?;
        match tokio::time::timeout(PROPOSAL_TIMEOUT, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(Error::Stopping),
            Err(_) => Err(Error::Timeout(format!(
                "proposal to range {range_id} (outcome unknown)"
            ))),
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

    async fn inspect<T: Send + 'static>(
        &self,
        range_id: RangeId,
        f: impl FnOnce(Option<&Replica>) -> T + Send + 'static,
    ) -> Result<T> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.inner
            .tx
            .send(StoreMsg::Inspect {
                range_id,
                f: Box::new(move |r| {
                    let _ = tx.send(f(r));
                }),
            })
            .map_err(|_| Error::Stopping)?;
        rx.await.map_err(|_| Error::Stopping)
    }

    async fn conf_change(
        &self,
        range_id: RangeId,
        cc: ConfChangeV2,
        desc: RangeDescriptor,
    ) -> Result<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.inner
            .tx
            .send(StoreMsg::ConfChange {
                range_id,
                cc,
                desc,
                responder: tx,
            })
            .map_err(|_| Error::Stopping)?;
        match tokio::time::timeout(PROPOSAL_TIMEOUT * 2, rx).await {
            Ok(Ok(r)) => r.map(|_| ()),
            Ok(Err(_)) => Err(Error::Stopping),
            Err(_) => Err(Error::Timeout(format!(
                "configuration change of range {range_id}"
            ))),
        }
    }

    /// Adds and removes replicas of a range led here, with joint consensus: new replicas join
    /// as learners and receive a snapshot, then one joint change promotes them and removes the
    /// old ones, and Raft leaves the joint configuration on its own.
    pub async fn change_replicas(
        &self,
        range_id: RangeId,
        add: &[NodeId],
        remove: &[NodeId],
    ) -> Result<RangeDescriptor> {
        if remove.contains(&self.inner.node_id) {
            return Err(Error::InvalidRequest(
                "the leaseholder cannot remove itself; transfer the lease first".into(),
            ));
        }
        if !self.inner.changing.lock().insert(range_id) {
            return Err(Error::InvalidRequest(format!(
                "range {range_id} is already changing replicas"
            )));
        }
        let res = self.change_replicas_locked(range_id, add, remove).await;
        self.inner.changing.lock().remove(&range_id);
        res
    }

    async fn change_replicas_locked(
        &self,
        range_id: RangeId,
        add: &[NodeId],
        remove: &[NodeId],
    ) -> Result<RangeDescriptor> {
        let mut desc = self.descriptor(range_id)?;
        let has = |d: &RangeDescriptor, n: NodeId| d.replicas.iter().any(|r| r.node_id == n.0);
        for &n in add {
            if has(&desc, n) {
                continue;
            }
            let mut next = desc.clone();
            next.replicas.push(ReplicaDescriptor {
                node_id: n.0,
                kind: ReplicaKind::Learner as i32,
            });
            next.generation += 1;
            let mut cc = ConfChangeV2::default();
            cc.mut_changes()
                .push(single(ConfChangeType::AddLearnerNode, n));
            self.conf_change(range_id, cc, next.clone()).await?;
            desc = next;
        }
        // Wait for the learners to catch up (they get a snapshot).
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let want: Vec<u64> = add.iter().map(|n| n.0).collect();
            let caught_up = self
                .inspect(range_id, move |r| {
                    let Some(r) = r else {
                        return Err(Error::RangeNotFound(range_id));
                    };
                    if !r.is_leader() {
                        return Err(r.not_leaseholder());
                    }
                    let applied = r.applied_index;
                    let prs = r.raw.raft.prs();
                    Ok(want.iter().all(|n| {
                        prs.get(*n).is_some_and(|p| {
                            p.matched >= applied.min(r.raw.raft.raft_log.committed)
                        })
                    }))
                })
                .await??;
            if caught_up {
                break;
            }
            if Instant::now() > deadline {
                return Err(Error::Timeout(format!(
                    "new replicas of range {range_id} did not catch up"
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut next = desc.clone();
        next.replicas
            .retain(|r| !remove.iter().any(|n| n.0 == r.node_id));
        for r in next.replicas.iter_mut() {
            if add.iter().any(|n| n.0 == r.node_id) {
                r.kind = ReplicaKind::Voter as i32;
            }
        }
        next.generation += 1;
        let mut cc = ConfChangeV2::default();
        for &n in add {
            cc.mut_changes().push(single(ConfChangeType::AddNode, n));
        }
        for &n in remove {
            if has(&desc, n) {
                cc.mut_changes().push(single(ConfChangeType::RemoveNode, n));
            }
        }
        if !cc.get_changes().is_empty() {
            self.conf_change(range_id, cc, next.clone()).await?;
        }
        // Wait until Raft has left the joint configuration.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let joint = self
                .inspect(range_id, |r| {
                    r.is_some_and(|r| {
                        !r.raw
                            .raft
                            .prs()
                            .conf()
                            .to_conf_state()
                            .voters_outgoing
                            .is_empty()
                    })
                })
                .await?;
            if !joint {
                break;
            }
            if Instant::now() > deadline {
                return Err(Error::Timeout(format!(
                    "range {range_id} stayed in a joint configuration"
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(next)
    }

    /// Removes this store's replica of a range whose descriptor at `generation` (from meta) no
    /// longer lists this node. Does nothing if the local replica is as new or leads.
    pub fn gc_replica(&self, range_id: RangeId, generation: u64) {
        let _ = self.inner.tx.send(StoreMsg::Destroy {
            range_id,
            generation,
        });
    }

    /// Hands the lease (and Raft leadership) of a range led here to `target`.
    pub async fn transfer_lease(&self, range_id: RangeId, target: NodeId) -> Result<()> {
        if target == self.inner.node_id {
            return Ok(());
        }
        self.inner
            .tx
            .send(StoreMsg::TransferLease { range_id, target })
            .map_err(|_| Error::Stopping)?;
        let deadline = Instant::now() + self.inner.config.election_timeout() * 3;
        loop {
            let s = self.shared(range_id)?;
            let leader = s.state.read().leader;
            if leader == target.0 {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Error::Timeout(format!(
                    "lease transfer of range {range_id} to node {target}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn single(t: ConfChangeType, n: NodeId) -> ConfChangeSingle {
    let mut s = ConfChangeSingle::default();
    s.set_change_type(t);
    s.node_id = n.0;
    s
}

/// Ranges with applied state in the engine.
fn stored_ranges(engine: &dyn Engine) -> Result<Vec<RangeId>> {
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

enum LeaseReadError {
    NeedsRenewal,
    Other(Error),
}

fn lease_read(
    shared: &ReplicaShared,
    engine: &dyn Engine,
    node: NodeId,
    started: Instant,
    requests: &[Request],
) -> std::result::Result<Vec<Response>, LeaseReadError> {
    let st = shared.state.read();
    let range = shared.range_id;
    if st.destroyed || !st.initialized {
        return Err(LeaseReadError::Other(Error::RangeNotFound(range)));
    }
    let out_of_range = |key: &[u8]| {
        LeaseReadError::Other(Error::KeyOutOfRange {
            range,
            key: keys::pretty(key),
            descriptor: Some(st.desc.clone()),
        })
    };
    for r in requests {
        match &r.kind {
            Some(request::Kind::Get(g)) if !st.contains(&g.key) => {
                return Err(out_of_range(&g.key))
            }
            Some(request::Kind::Scan(s))
                if !st.contains(&s.start_key)
                    || s.end_key.as_slice() > st.desc.end_key.as_slice()
                    || s.end_key.is_empty() =>
            {
                return Err(out_of_range(&s.start_key));
            }
            _ => {}
        }
    }
    let now = Instant::now();
    if !st.lease_valid(node, now) {
        if st.leader == node.0 {
            return Err(LeaseReadError::NeedsRenewal);
        }
        return Err(LeaseReadError::Other(Error::NotLeaseholder {
            range,
            leaseholder: (st.leader != 0).then_some(NodeId(st.leader)),
            descriptor: Some(st.desc.clone()),
        }));
    }
    shared
        .last_read_ms
        .store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
    let mut out = Vec::with_capacity(requests.len());
    for r in requests {
        let mut resp = Response::default();
        match &r.kind {
            Some(request::Kind::Get(g)) => {
                resp.value = mvcc_get(engine, &g.key, Timestamp::MAX)
                    .map_err(|e| LeaseReadError::Other(e.into()))?;
            }
            Some(request::Kind::Scan(s)) => {
                let limit = if s.limit == 0 {
                    usize::MAX
                } else {
                    s.limit as usize
                };
                let rows = mvcc_scan(
                    engine,
                    &s.start_key,
                    &s.end_key,
                    Timestamp::MAX,
                    limit.saturating_add(1),
                )
                .map_err(|e| LeaseReadError::Other(e.into()))?;
                let mut rows: Vec<_> = rows
                    .into_iter()
                    .map(|kv| bini_proto::KeyValue {
                        key: kv.key,
                        value: kv.value,
                    })
                    .collect();
                if rows.len() > limit {
                    let extra = rows.pop().expect("longer than limit");
                    resp.resume_key = extra.key;
                }
                resp.rows = rows;
            }
            _ => {}
        }
        out.push(resp);
    }
    Ok(out)
}

/// The store thread's state.
struct Worker {
    inner: Arc<Inner>,
    rx: Receiver<StoreMsg>,
    replicas: HashMap<RangeId, Replica>,
    transport: Arc<dyn Transport>,
    logger: slog::Logger,
    outbox: HashMap<NodeId, Vec<RaftMessage>>,
    last_tick: Instant,
    ticks: u64,
}

/// Messages handled per round before the Ready pass, so a flood cannot starve persistence.
const MAX_MESSAGES_PER_ROUND: usize = 4096;

impl Worker {
    fn run(&mut self) {
        let tick = self.inner.config.raft_tick_interval;
        loop {
            let wait = (self.last_tick + tick).saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(wait) {
                Ok(StoreMsg::Stop) => return self.shutdown(),
                Ok(msg) => self.handle(msg),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return self.shutdown(),
            }
            for _ in 0..MAX_MESSAGES_PER_ROUND {
                match self.rx.try_recv() {
                    Ok(StoreMsg::Stop) => return self.shutdown(),
                    Ok(msg) => self.handle(msg),
                    Err(_) => break,
                }
            }
            if self.last_tick.elapsed() >= tick {
                self.last_tick = Instant::now();
                self.tick();
            }
            if let Err(e) = self.process_ready() {
                // The engine failed: acknowledged data may be at risk, so stop serving rather
                // than continue on an unknown state.
                tracing::error!(error = %e, "store failed to persist Raft state; stopping the store");
                return self.shutdown();
            }
        }
    }

    fn shutdown(&mut self) {
        for r in self.replicas.values_mut() {
            r.fail_pending(|| Error::Stopping);
        }
        tracing::info!(node_id = self.inner.node_id.0, "store stopped");
    }

    fn emit(&self, e: StoreEvent) {
        if let Some(tx) = self.inner.events.lock().as_ref() {
            let _ = tx.send(e);
        }
    }

    fn handle(&mut self, msg: StoreMsg) {
        match msg {
            StoreMsg::Raft(m) => self.on_raft_message(m),
            StoreMsg::Propose {
                range_id,
                mut cmd,
                responder,
            } => {
                let Some(r) = self.replicas.get_mut(&range_id) else {
                    let _ = responder.send(Err(Error::RangeNotFound(range_id)));
                    return;
                };
                if !r.is_leader() || !r.initialized {
                    let _ = responder.send(Err(r.not_leaseholder()));
                    return;
                }
                for req in &cmd.requests {
                    if let Some(key) = request_key(req) {
                        if key < r.desc.start_key.as_slice() || key >= r.desc.end_key.as_slice() {
                            let _ = responder.send(Err(Error::KeyOutOfRange {
                                range: range_id,
                                key: keys::pretty(key),
                                descriptor: Some(r.desc.clone()),
                            }));
                            return;
                        }
                    }
                }
                let ts = self.inner.clock.now();
                cmd.timestamp = Some(bini_proto::Timestamp {
                    wall: ts.wall,
                    logical: ts.logical,
                });
                let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
                r.propose(id, cmd.encode_to_vec(), Some(responder));
            }
            StoreMsg::ConfChange {
                range_id,
                cc,
                desc,
                responder,
            } => {
                let Some(r) = self.replicas.get_mut(&range_id) else {
                    let _ = responder.send(Err(Error::RangeNotFound(range_id)));
                    return;
                };
                if !r.is_leader() {
                    let _ = responder.send(Err(r.not_leaseholder()));
                    return;
                }
                let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
                r.propose_conf_change(id, cc, &desc, responder);
            }
            StoreMsg::TransferLease { range_id, target } => {
                if let Some(r) = self.replicas.get_mut(&range_id) {
                    if r.is_leader() {
                        r.drop_lease(self.inner.config.election_timeout() * 2);
                        r.raw.transfer_leader(target.0);
                    }
                }
            }
            StoreMsg::SnapshotStatus { range_id, to, ok } => {
                if let Some(r) = self.replicas.get_mut(&range_id) {
                    let status = if ok {
                        raft::SnapshotStatus::Finish
                    } else {
                        raft::SnapshotStatus::Failure
                    };
                    r.raw.report_snapshot(to.0, status);
                    if !ok {
                        r.raw.report_unreachable(to.0);
                    }
                }
            }
            StoreMsg::Inspect { range_id, f } => f(self.replicas.get(&range_id)),
            StoreMsg::Destroy {
                range_id,
                generation,
            } => {
                let stale = self
                    .replicas
                    .get(&range_id)
                    .is_some_and(|r| r.desc.generation < generation && !r.is_leader());
                if stale {
                    if let Some(mut r) = self.replicas.remove(&range_id) {
                        let mut batch = WriteBatch::new();
                        destroy_replica(&r, &mut batch);
                        if let Err(e) = self.inner.engine.write(&batch, true) {
                            tracing::error!(range_id = range_id.0, error = %e, "cannot remove replica");
                        }
                        r.fail_pending(|| Error::RangeNotFound(range_id));
                        r.shared.state.write().destroyed = true;
                        self.inner.replicas.write().remove(&range_id);
                        tracing::info!(
                            range_id = range_id.0,
                            "removed a replica the range no longer includes"
                        );
                    }
                }
            }
            StoreMsg::Stop => {}
        }
    }

    fn on_raft_message(&mut self, m: RaftMessage) {
        let range_id = RangeId(m.range_id);
        let Ok(msg) = raft::eraftpb::Message::parse_from_bytes(&m.message) else {
            tracing::debug!(range_id = m.range_id, "undecodable raft message dropped");
            return;
        };
        if msg.to != self.inner.node_id.0 {
            return;
        }
        let t = msg.get_msg_type();
        // A restarted store has forgotten which leaders it heard from recently; refusing votes
        // for an election timeout keeps a lease held elsewhere safe.
        if matches!(
            t,
            MessageType::MsgRequestVote | MessageType::MsgRequestPreVote
        ) && self.inner.started.elapsed() < self.inner.config.election_timeout()
        {
            return;
        }
        if t == MessageType::MsgSnapshot && !self.snapshot_acceptable(range_id, &msg) {
            return;
        }
        if !self.replicas.contains_key(&range_id) {
            let from_leader = matches!(
                t,
                MessageType::MsgAppend | MessageType::MsgHeartbeat | MessageType::MsgSnapshot
            );
            if !from_leader || !self.may_create(range_id, m.generation) {
                return;
            }
            match Replica::open(
                range_id,
                self.inner.node_id,
                self.inner.engine.clone(),
                &self.inner.config,
                &self.logger,
            ) {
                Ok(r) => {
                    tracing::debug!(range_id = range_id.0, "created replica on message");
                    self.inner
                        .replicas
                        .write()
                        .insert(range_id, r.shared.clone());
                    self.replicas.insert(range_id, r);
                }
                Err(e) => {
                    tracing::warn!(range_id = range_id.0, error = %e, "cannot create replica");
                    return;
                }
            }
        }
        if let Some(r) = self.replicas.get_mut(&range_id) {
            if let Err(e) = r.raw.step(msg) {
                tracing::debug!(range_id = range_id.0, error = %e, "step failed");
            }
        }
    }

    /// A replica removed at a newer generation is not recreated by stale traffic.
    fn may_create(&self, range_id: RangeId, generation: u64) -> bool {
        match self
            .inner
            .engine
            .get(Cf::Data, &keys::tombstone_key(range_id))
        {
            Ok(Some(b)) if b.len() == 8 => {
                generation > u64::from_be_bytes(b[..8].try_into().expect("8 bytes"))
            }
            Ok(_) => true,
            Err(_) => false,
        }
    }

    /// A snapshot must not overlap another initialised replica's span (which happens when this
    /// store has not applied a split yet); the sender retries later.
    fn snapshot_acceptable(&self, range_id: RangeId, msg: &raft::eraftpb::Message) -> bool {
        let Ok((desc, _)) = parse_snapshot_data(&msg.get_snapshot().data) else {
            return false;
        };
        if desc.range_id != range_id.0 {
            return false;
        }
        !self.replicas.values().any(|r| {
            r.range_id != range_id
                && r.initialized
                && r.desc.start_key < desc.end_key
                && desc.start_key < r.desc.end_key
        })
    }

    fn tick(&mut self) {
        self.ticks += 1;
        let now = Instant::now();
        let lease = self.inner.config.lease_duration();
        let now_ms = self.inner.started.elapsed().as_millis() as u64;
        let mut renew = Vec::new();
        let mut splits = Vec::new();
        for (id, r) in self.replicas.iter_mut() {
            r.raw.tick();
            if !r.is_leader() || !r.initialized {
                continue;
            }
            // Keep the lease warm on ranges that are being read.
            let last_read = r.shared.last_read_ms.load(Ordering::Relaxed);
            let read_recently = last_read > 0 && now_ms.saturating_sub(last_read) < 3_000;
            let expiring = r.lease_expiry().is_none_or(|e| e < now + lease / 2);
            if read_recently && expiring {
                renew.push(*id);
            }
            if r.approx_bytes > self.inner.config.range_max_bytes
                && r.desc.start_key.as_slice() >= keys::USER_START
                && r.last_split_proposed
                    .is_none_or(|t| t.elapsed() > Duration::from_secs(5))
            {
                r.last_split_proposed = Some(now);
                splits.push(*id);
            }
        }
        for id in renew {
            if let Some(r) = self.replicas.get_mut(&id) {
                let cmd = RaftCommand {
                    lease_renewal: true,
                    ..Default::default()
                };
                let pid = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
                r.propose(pid, cmd.encode_to_vec(), None);
            }
        }
        for id in splits {
            self.emit(StoreEvent::SplitNeeded(id));
        }
        if self.ticks.is_multiple_of(10) {
            self.truncate_logs();
        }
    }

    /// Truncates applied Raft log prefixes. The leader keeps what live followers still need;
    /// followers further behind than the limit will get a snapshot.
    fn truncate_logs(&mut self) {
        let max = self.inner.config.raft_log_max_entries;
        let mut batch = WriteBatch::new();
        for r in self.replicas.values_mut() {
            let first = r.raw.store().first();
            if r.applied_index < first + max {
                continue;
            }
            let mut to = r.applied_index.saturating_sub(max / 2);
            if r.is_leader() {
                let min_match = r
                    .raw
                    .raft
                    .prs()
                    .iter()
                    .filter(|(_, p)| p.recent_active)
                    .map(|(_, p)| p.matched)
                    .min();
                if let Some(m) = min_match {
                    to = to.max(m.min(r.applied_index)).min(r.applied_index);
                }
            }
            if let Err(e) = r.raw.mut_store().compact(to, &mut batch) {
                tracing::debug!(range_id = r.range_id.0, error = %e, "log truncation skipped");
            }
        }
        if !batch.is_empty() {
            if let Err(e) = self.inner.engine.write(&batch, false) {
                tracing::warn!(error = %e, "log truncation failed");
            }
        }
    }

    fn queue_messages(
        &mut self,
        range_id: RangeId,
        generation: u64,
        msgs: Vec<raft::eraftpb::Message>,
    ) {
        for mut m in msgs {
            let to = NodeId(m.to);
            if m.get_msg_type() == MessageType::MsgSnapshot {
                let data = std::mem::take(&mut m.mut_snapshot().data);
                let Ok(header) = m.write_to_bytes() else {
                    continue;
                };
                let tx = self.inner.tx.clone();
                self.transport.send_snapshot(
                    to,
                    range_id.0,
                    generation,
                    header,
                    data.to_vec(),
                    Box::new(move |ok| Store::snapshot_status(&tx, range_id, to, ok)),
                );
                continue;
            }
            let Ok(bytes) = m.write_to_bytes() else {
                continue;
            };
            self.outbox.entry(to).or_default().push(RaftMessage {
                range_id: range_id.0,
                message: bytes,
                generation,
            });
        }
    }

    fn flush_outbox(&mut self) {
        for (to, msgs) in self.outbox.drain() {
            self.transport.send(to, msgs);
        }
    }

    fn process_ready(&mut self) -> Result<()> {
        let ids: Vec<RangeId> = self
            .replicas
            .iter()
            .filter(|(_, r)| r.raw.has_ready())
            .map(|(id, _)| *id)
            .collect();
        if ids.is_empty() {
            return Ok(());
        }
        let mut persist = WriteBatch::new();
        let mut readies = Vec::with_capacity(ids.len());
        let mut must_sync = false;
        for id in ids {
            let r = self.replicas.get_mut(&id).expect("listed above");
            let mut rd = r.raw.ready();
            if let Some(ss) = rd.ss() {
                let (leader, role) = (ss.leader_id, ss.raft_state);
                r.on_soft_state(leader, role);
            }
            let gen = r.desc.generation;
            let msgs = rd.take_messages();
            if !rd.snapshot().is_empty() {
                apply_snapshot(r, rd.snapshot(), &mut persist)?;
                must_sync = true;
            }
            if !rd.entries().is_empty() {
                r.raw.mut_store().append(rd.entries(), &mut persist)?;
            }
            if let Some(hs) = rd.hs() {
                r.raw.mut_store().set_hard_state(hs.clone(), &mut persist)?;
            }
            must_sync |= rd.must_sync();
            self.queue_messages(id, gen, msgs);
            readies.push((id, rd));
        }
        self.flush_outbox();
        if !persist.is_empty() {
            self.inner.engine.write(&persist, must_sync)?;
            if must_sync {
                self.inner
                    .status
                    .synced_rounds
                    .fetch_add(1, Ordering::Relaxed);
            }
        }

        let engine = self.inner.engine.clone();
        let mut ctx = ApplyContext {
            engine: engine.as_ref(),
            batch: WriteBatch::new(),
            overlay: HashMap::new(),
            responses: Vec::new(),
        };
        let mut effects: Vec<(RangeId, Effect)> = Vec::new();
        for (id, mut rd) in readies {
            let r = self.replicas.get_mut(&id).expect("listed above");
            let gen = r.desc.generation;
            let persisted = rd.take_persisted_messages();
            let committed = rd.take_committed_entries();
            let mut fx = Vec::new();
            r.apply_entries(committed, &mut ctx, &mut fx)?;
            let mut light = r.raw.advance(rd);
            if let Some(commit) = light.commit_index() {
                r.raw.mut_store().set_commit(commit, &mut ctx.batch)?;
            }
            let light_msgs = light.take_messages();
            r.apply_entries(light.take_committed_entries(), &mut ctx, &mut fx)?;
            self.queue_messages(id, gen, persisted);
            self.queue_messages(id, gen, light_msgs);
            effects.extend(fx.into_iter().map(|e| (id, e)));
        }
        self.flush_outbox();

        let mut created = Vec::new();
        let mut removed = Vec::new();
        for (id, effect) in &effects {
            match effect {
                Effect::Split {
                    right,
                    right_bytes,
                    was_leader,
                } => {
                    let (term, vote) = match self.replicas.get(&RangeId(right.range_id)) {
                        Some(existing) if !existing.initialized => {
                            let hs = existing.raw.store().hard_state();
                            (hs.term, hs.vote)
                        }
                        Some(_) => continue,
                        None => (0, 0),
                    };
                    write_initial_state(&mut ctx.batch, right, *right_bytes, term, vote)?;
                    created.push((RangeId(right.range_id), *was_leader));
                }
                Effect::Removed => removed.push(*id),
                Effect::DescriptorChanged => {}
            }
        }
        for id in &removed {
            if let Some(r) = self.replicas.get(id) {
                destroy_replica(r, &mut ctx.batch);
            }
        }
        let ApplyContext {
            batch, responses, ..
        } = ctx;
        if !batch.is_empty() {
            self.inner.engine.write(&batch, false)?;
        }
        for r in self.replicas.values_mut() {
            r.raw.advance_apply_to(r.applied_index);
            r.publish();
        }
        self.inner
            .status
            .proposals_applied
            .fetch_add(responses.len() as u64, Ordering::Relaxed);
        for (tx, res) in responses {
            let _ = tx.send(res);
        }
        let mut new_ranges = Vec::new();
        for (range_id, campaign) in created {
            self.replicas.remove(&range_id);
            match Replica::open(
                range_id,
                self.inner.node_id,
                self.inner.engine.clone(),
                &self.inner.config,
                &self.logger,
            ) {
                Ok(mut r) => {
                    if campaign {
                        let _ = r.raw.campaign();
                        new_ranges.push(r.desc.clone());
                    }
                    r.publish();
                    self.inner
                        .replicas
                        .write()
                        .insert(range_id, r.shared.clone());
                    self.replicas.insert(range_id, r);
                }
                Err(e) => {
                    tracing::error!(range_id = range_id.0, error = %e, "cannot open split range")
                }
            }
        }
        for id in removed {
            if let Some(mut r) = self.replicas.remove(&id) {
                r.fail_pending(|| Error::RangeNotFound(id));
                r.shared.state.write().destroyed = true;
                self.inner.replicas.write().remove(&id);
                tracing::info!(range_id = id.0, "replica removed from this node");
            }
        }
        for (id, effect) in effects {
            if let Effect::DescriptorChanged = effect {
                if let Some(r) = self.replicas.get(&id) {
                    if r.is_leader() {
                        self.emit(StoreEvent::DescriptorChanged(r.desc.clone()));
                    }
                }
            }
        }
        // The right-hand sides of splits go to meta after their left-hand sides: until then a
        // lookup for a right-hand key finds the old, wider descriptor and is retried.
        for desc in new_ranges {
            self.emit(StoreEvent::DescriptorChanged(desc));
        }
        Ok(())
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
        Some(request::Kind::PutDescriptor(_)) => None,
        None => None,
    }
}

fn apply_snapshot(
    r: &mut Replica,
    snap: &raft::eraftpb::Snapshot,
    batch: &mut WriteBatch,
) -> Result<()> {
    let (desc, pairs) = parse_snapshot_data(&snap.data)?;
    let bytes = apply_snapshot_data(batch, &desc, &pairs);
    r.raw.mut_store().apply_snapshot(snap, batch)?;
    let meta = snap.get_metadata();
    r.desc = desc;
    r.applied_index = meta.index;
    r.applied_term = meta.term;
    r.approx_bytes = bytes;
    r.initialized = true;
    let cs = meta.get_conf_state();
    let applied = bini_proto::AppliedState {
        index: meta.index,
        term: meta.term,
        approximate_bytes: bytes,
        descriptor: Some(r.desc.clone()),
        voters: cs.voters.clone(),
        learners: cs.learners.clone(),
        voters_outgoing: cs.voters_outgoing.clone(),
        learners_next: cs.learners_next.clone(),
        auto_leave: cs.auto_leave,
    };
    batch.put(
        Cf::Data,
        keys::applied_state_key(r.range_id),
        applied.encode_to_vec(),
    );
    let desc = r.desc.clone();
    r.raw
        .mut_store()
        .set_applied(meta.index, meta.term, Some(cs.clone()), &desc);
    r.shared.state.write().snapshots_applied += 1;
    tracing::info!(
        range_id = r.range_id.0,
        index = meta.index,
        bytes,
        "applied snapshot"
    );
    Ok(())
}

fn destroy_replica(r: &Replica, batch: &mut WriteBatch) {
    if r.initialized {
        let (lower, upper) = crate::snapshot::data_span(&r.desc);
        batch.delete_range(Cf::Data, lower, upper);
    }
    batch.delete(Cf::Data, keys::applied_state_key(r.range_id));
    r.raw.store().destroy(batch);
    batch.put(
        Cf::Data,
        keys::tombstone_key(r.range_id),
        r.desc.generation.to_be_bytes().to_vec(),
    );
}
