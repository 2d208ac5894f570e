//! One replica of one range: its `RawNode`, its lease, and how committed commands apply.
//!
//! A replica is owned by the store thread. What other threads need — the descriptor for
//! routing checks, whether the lease is valid for a read — is mirrored into
//! [`ReplicaShared`] under a lock that readers hold while they read the engine, so a read
//! never straddles a split or a replica removal.
//!
//! # Leases
//!
//! The Raft leader is the leaseholder. Its lease runs until `proposed_at + lease_duration` for
//! the latest of its own proposals that committed in its current term (including the empty
//! entry every new leader appends). A commit means a quorum accepted the entry after
//! `proposed_at`; with check-quorum on, each of those followers refuses to vote for anyone for
//! an election timeout after hearing from the leader. Any new leader needs one of their votes,
//! so no other replica can lead — or acknowledge a write — before `proposed_at +
//! election_timeout`, which is later than the lease's end. A deposed or partitioned leader
//! therefore stops serving reads before anyone else can acknowledge a write. Before handing
//! leadership away (`transfer_leader`) the lease is dropped first, and a freshly restarted store
//! refuses votes for an election timeout (it has forgotten whom it heard from).
//!
//! # Applying
//!
//! Committed entries apply in log order into the store's apply batch. Writes are evaluated at
//! apply time (`cput` and `increment` read the current value), deterministically, so every
//! replica reaches the same state. Reads inside a write batch see earlier writes of the same
//! round through an overlay.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Instant;

use bini_mvcc::{
    mvcc_gc_key, mvcc_get_with, mvcc_resolve, mvcc_resolve_span, mvcc_write, read_record,
    write_record, ReadOptions, Timestamp,
};
use bini_proto::{
    request, AppliedState, BatchHeader, RaftCommand, RangeDescriptor, ReplicaKind, Request,
    Response, TxnRecord, TxnStatus,
};
use bini_storage::Reader;
use bini_storage::{Cf, Engine, WriteBatch};
use parking_lot::RwLock;
use prost::Message as _;
use protobuf::Message as _;
use raft::eraftpb::{ConfChangeV2, ConfState, Entry, EntryType};
use raft::{RawNode, StateRole};

use crate::overlay::{Overlay, Pending as PendingWrites};
use crate::raft_log::RaftLog;
use crate::txn_record::push_txn;
use crate::{keys, Error, NodeId, RangeId, Result, StoreConfig};

/// Where a proposer waits for its result.
pub(crate) type Responder = tokio::sync::oneshot::Sender<Result<Vec<Response>>>;

/// What readers on other threads see of a replica.
#[derive(Debug, Clone, Default)]
pub struct SharedState {
    /// The applied descriptor.
    pub desc: RangeDescriptor,
    /// The Raft leader as last seen (0 if unknown).
    pub leader: u64,
    /// The current Raft term.
    pub term: u64,
    /// Until when this replica may serve reads as leaseholder.
    pub lease_expiry: Option<Instant>,
    /// When this replica became leader in the current term (its lease's start).
    pub leader_since: Option<Instant>,
    /// Applied index.
    pub applied_index: u64,
    /// Approximate bytes of data in the range.
    pub approx_bytes: u64,
    /// Whether the replica has data (an uninitialised replica waits for a snapshot).
    pub initialized: bool,
    /// Set when the replica is removed; readers must treat the range as absent.
    pub destroyed: bool,
    /// Snapshots this replica has applied.
    pub snapshots_applied: u64,
}

/// The part of a replica shared with reader threads.
pub struct ReplicaShared {
    /// The range.
    pub range_id: RangeId,
    /// Mirrored state.
    pub state: RwLock<SharedState>,
    /// Milliseconds (since store start) of the last lease read, to decide renewals.
    pub last_read_ms: AtomicU64,
    /// The timestamp cache and latches (meaningful on the leaseholder).
    pub(crate) concurrency: parking_lot::Mutex<crate::concurrency::Concurrency>,
}

impl SharedState {
    /// Whether `node` holds a valid lease at `now`.
    pub fn lease_valid(&self, node: NodeId, now: Instant) -> bool {
        self.leader == node.0 && self.lease_expiry.is_some_and(|e| e > now)
    }

    /// Whether the key is in the applied span.
    pub fn contains(&self, key: &[u8]) -> bool {
        self.initialized
            && key >= self.desc.start_key.as_slice()
            && key < self.desc.end_key.as_slice()
    }
}

struct Pending {
    id: u64,
    proposed_at: Instant,
    responder: Option<Responder>,
}

/// Something applying an entry requires of the store beyond this replica.
pub(crate) enum Effect {
    /// A split applied: create the right-hand range.
    Split {
        right: RangeDescriptor,
        right_bytes: u64,
        was_leader: bool,
    },
    /// This replica is no longer part of the range.
    Removed,
    /// The descriptor changed; the leaseholder updates the meta range.
    DescriptorChanged,
}

/// A replica, owned by the store thread.
pub(crate) struct Replica {
    pub range_id: RangeId,
    pub node_id: NodeId,
    pub raw: RawNode<RaftLog>,
    pub shared: Arc<ReplicaShared>,
    pub desc: RangeDescriptor,
    pub applied_index: u64,
    pub applied_term: u64,
    pub approx_bytes: u64,
    pub initialized: bool,
    pending: BTreeMap<u64, Pending>,
    leader_since: Option<Instant>,
    /// The term `leader_since` belongs to.
    leader_term: u64,
    lease_expiry: Option<Instant>,
    /// While set, the lease may not be extended (a leadership transfer is under way).
    lease_blocked_until: Option<Instant>,
    lease_duration: std::time::Duration,
    /// When the last split of this replica was proposed, to avoid proposing twice.
    pub last_split_proposed: Option<Instant>,
}

/// State passed through the application of one round.
pub(crate) struct ApplyContext<'a> {
    pub engine: &'a dyn Engine,
    pub batch: WriteBatch,
    /// `Data` writes of this round's commands, for later commands to read.
    pub overlay: PendingWrites,
    /// Results to deliver once the batch is written.
    pub responses: Vec<(Responder, Result<Vec<Response>>)>,
}

/// The writes of one request, kept apart until the request succeeds.
#[derive(Default)]
pub(crate) struct Ops(Vec<(Vec<u8>, Option<Vec<u8>>)>);

impl bini_mvcc::Writer for Ops {
    fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.0.push((key, Some(value)));
    }
    fn delete(&mut self, key: Vec<u8>) {
        self.0.push((key, None));
    }
}

/// How long a transaction record stays alive without a heartbeat; after that, anyone who meets
/// the transaction's intents may abort it.
pub const TXN_EXPIRY: std::time::Duration = std::time::Duration::from_secs(2);

/// Reads the applied state of a range from the engine.
pub(crate) fn load_applied_state(
    engine: &dyn bini_storage::Reader,
    range: RangeId,
) -> Result<Option<AppliedState>> {
    match engine.get(Cf::Data, &keys::applied_state_key(range))? {
        Some(b) => Ok(Some(AppliedState::decode(b.as_slice())?)),
        None => Ok(None),
    }
}

/// The Raft configuration implied by a descriptor.
pub(crate) fn conf_state_of(desc: &RangeDescriptor) -> ConfState {
    let mut cs = ConfState::default();
    for r in &desc.replicas {
        if r.kind == ReplicaKind::Learner as i32 {
            cs.learners.push(r.node_id);
        } else {
            cs.voters.push(r.node_id);
        }
    }
    cs
}

pub(crate) fn conf_state_from_applied(s: &AppliedState) -> ConfState {
    ConfState {
        voters: s.voters.clone(),
        learners: s.learners.clone(),
        voters_outgoing: s.voters_outgoing.clone(),
        learners_next: s.learners_next.clone(),
        auto_leave: s.auto_leave,
        ..Default::default()
    }
}

/// Initial Raft position of a range created by bootstrap or split: its log starts truncated at
/// this index and term, so a follower that does not have the range yet needs a snapshot (or the
/// split) to join, never a partial log.
pub(crate) const RAFT_INIT_INDEX: u64 = 5;

/// Writes the initial state of a new range (bootstrap or the right side of a split).
pub(crate) fn write_initial_state(
    batch: &mut WriteBatch,
    desc: &RangeDescriptor,
    approx_bytes: u64,
    hard_state_term: u64,
    vote: u64,
) -> Result<()> {
    let range = RangeId(desc.range_id);
    let cs = conf_state_of(desc);
    let applied = AppliedState {
        index: RAFT_INIT_INDEX,
        term: RAFT_INIT_INDEX,
        approximate_bytes: approx_bytes,
        descriptor: Some(desc.clone()),
        voters: cs.voters.clone(),
        learners: cs.learners.clone(),
        ..Default::default()
    };
    batch.put(
        Cf::Data,
        keys::applied_state_key(range),
        applied.encode_to_vec(),
    );
    let hs = raft::eraftpb::HardState {
        term: hard_state_term.max(RAFT_INIT_INDEX),
        vote: if hard_state_term > RAFT_INIT_INDEX {
            vote
        } else {
            0
        },
        commit: RAFT_INIT_INDEX,
        ..Default::default()
    };
    batch.put(
        Cf::Raft,
        keys::raft_hard_state_key(range),
        hs.write_to_bytes()
            .map_err(|e| Error::Decode(e.to_string()))?,
    );
    let mut t = RAFT_INIT_INDEX.to_be_bytes().to_vec();
    t.extend_from_slice(&RAFT_INIT_INDEX.to_be_bytes());
    batch.put(Cf::Raft, keys::raft_truncated_key(range), t);
    batch.delete(Cf::Data, keys::tombstone_key(range));
    Ok(())
}

impl Replica {
    /// Opens a replica from the engine; with no applied state it is uninitialised (it waits for
    /// a snapshot).
    pub fn open(
        range_id: RangeId,
        node_id: NodeId,
        engine: Arc<dyn Engine>,
        config: &StoreConfig,
        logger: &slog::Logger,
    ) -> Result<Self> {
        let applied = load_applied_state(engine.as_ref(), range_id)?;
        let initialized = applied.is_some();
        let applied = applied.unwrap_or_default();
        let desc = applied.descriptor.clone().unwrap_or(RangeDescriptor {
            range_id: range_id.0,
            ..Default::default()
        });
        let log = RaftLog::load(
            range_id,
            engine,
            conf_state_from_applied(&applied),
            applied.index,
            applied.term,
            desc.clone(),
        )?;
        let raft_config = raft::Config {
            id: node_id.0,
            election_tick: config.raft_election_ticks,
            heartbeat_tick: config.raft_heartbeat_ticks,
            applied: applied.index,
            max_size_per_msg: 1 << 20,
            max_inflight_msgs: 256,
            check_quorum: true,
            pre_vote: true,
            ..Default::default()
        };
        let raft_config = match config.deterministic_election_spread {
            Some(k) => {
                let ticks = config.raft_election_ticks + k * node_id.0 as usize;
                raft::Config {
                    min_election_tick: ticks,
                    max_election_tick: ticks + 1,
                    ..raft_config
                }
            }
            None => raft_config,
        };
        let raw = RawNode::new(&raft_config, log, logger)?;
        let shared = Arc::new(ReplicaShared {
            range_id,
            state: RwLock::new(SharedState {
                desc: desc.clone(),
                applied_index: applied.index,
                approx_bytes: applied.approximate_bytes,
                initialized,
                term: raw.raft.term,
                ..Default::default()
            }),
            last_read_ms: AtomicU64::new(0),
            concurrency: Default::default(),
        });
        Ok(Self {
            range_id,
            node_id,
            raw,
            shared,
            desc,
            applied_index: applied.index,
            applied_term: applied.term,
            approx_bytes: applied.approximate_bytes,
            initialized,
            pending: BTreeMap::new(),
            leader_since: None,
            leader_term: 0,
            lease_expiry: None,
            lease_blocked_until: None,
            lease_duration: config.lease_duration(),
            last_split_proposed: None,
        })
    }

    /// Whether this replica is the Raft leader.
    pub fn is_leader(&self) -> bool {
        self.raw.raft.state == StateRole::Leader
    }

    /// When the lease ends, if held.
    pub fn lease_expiry(&self) -> Option<Instant> {
        self.lease_expiry.filter(|_| self.is_leader())
    }

    /// Reacts to a change of Raft role or leader.
    pub fn on_soft_state(&mut self, leader: u64, role: StateRole) {
        if role == StateRole::Leader {
            if self.leader_since.is_none() || self.leader_term != self.raw.raft.term {
                self.leader_since = Some(Instant::now());
                self.leader_term = self.raw.raft.term;
                tracing::info!(
                    range_id = self.range_id.0,
                    term = self.raw.raft.term,
                    "became leader"
                );
            }
        } else {
            if self.leader_since.is_some() {
                // Proposals in flight may or may not commit under the next leader; say so now
                // rather than let proposers wait out their timeout.
                let range = self.range_id;
                self.fail_pending(|| {
                    Error::Timeout(format!("range {range} lost its leader; outcome unknown"))
                });
            }
            self.leader_since = None;
            self.lease_expiry = None;
        }
        let mut s = self.shared.state.write();
        s.leader = leader;
        s.term = self.raw.raft.term;
        s.lease_expiry = self.lease_expiry;
        s.leader_since = self
            .leader_since
            .filter(|_| self.leader_term == self.raw.raft.term);
    }

    /// Stops extending the lease and drops it, before handing leadership to another replica.
    pub fn drop_lease(&mut self, for_how_long: std::time::Duration) {
        self.lease_expiry = None;
        self.lease_blocked_until = Some(Instant::now() + for_how_long);
        self.shared.state.write().lease_expiry = None;
    }

    fn extend_lease(&mut self, from: Instant) {
        if !self.is_leader() {
            return;
        }
        if let Some(until) = self.lease_blocked_until {
            if Instant::now() < until {
                return;
            }
            self.lease_blocked_until = None;
        }
        let expiry = from + self.lease_duration;
        if self.lease_expiry.is_none_or(|e| e < expiry) {
            self.lease_expiry = Some(expiry);
            self.shared.state.write().lease_expiry = Some(expiry);
        }
    }

    /// Proposes a command; the responder is answered when it applies or is dropped.
    pub fn propose(&mut self, id: u64, data: Vec<u8>, responder: Option<Responder>) {
        let proposed_at = Instant::now();
        let before = self.raw.raft.raft_log.last_index();
        match self.raw.propose(id.to_be_bytes().to_vec(), data) {
            Ok(()) if self.raw.raft.raft_log.last_index() > before => {
                let index = self.raw.raft.raft_log.last_index();
                self.pending.insert(
                    index,
                    Pending {
                        id,
                        proposed_at,
                        responder,
                    },
                );
            }
            _ => {
                if let Some(r) = responder {
                    let _ = r.send(Err(self.not_leaseholder()));
                }
            }
        }
    }

    /// Proposes a configuration change carrying the new descriptor.
    pub fn propose_conf_change(
        &mut self,
        id: u64,
        cc: ConfChangeV2,
        desc: &RangeDescriptor,
        responder: Responder,
    ) {
        let proposed_at = Instant::now();
        let before = self.raw.raft.raft_log.last_index();
        let mut context = id.to_be_bytes().to_vec();
        context.extend_from_slice(&desc.encode_to_vec());
        match self.raw.propose_conf_change(context, cc) {
            Ok(()) if self.raw.raft.raft_log.last_index() > before => {
                let index = self.raw.raft.raft_log.last_index();
                self.pending.insert(
                    index,
                    Pending {
                        id,
                        proposed_at,
                        responder: Some(responder),
                    },
                );
            }
            Ok(()) => {
                let _ = responder.send(Err(Error::ProposalDropped(self.range_id)));
            }
            Err(e) => {
                let _ = responder.send(Err(Error::InvalidRequest(format!("conf change: {e}"))));
            }
        }
    }

    /// The error telling a client to go elsewhere.
    pub fn not_leaseholder(&self) -> Error {
        let leader = self.raw.raft.leader_id;
        Error::NotLeaseholder {
            range: self.range_id,
            leaseholder: (leader != 0 && leader != self.node_id.0).then_some(NodeId(leader)),
            descriptor: Some(self.desc.clone()),
        }
    }

    /// Fails every pending proposal (the replica is going away).
    pub fn fail_pending(&mut self, err: impl Fn() -> Error) {
        for (_, p) in std::mem::take(&mut self.pending) {
            if let Some(r) = p.responder {
                let _ = r.send(Err(err()));
            }
        }
    }

    /// Resolves pending proposals up to `index`, delivering `result` to the one at `index` if
    /// its id matches `id`. Returns when it was proposed, if it was ours.
    fn resolve(
        &mut self,
        index: u64,
        id: Option<u64>,
        result: Result<Vec<Response>>,
        ctx: &mut ApplyContext<'_>,
    ) -> Option<Instant> {
        let mut ours = None;
        let mut result = Some(result);
        while let Some(entry) = self.pending.first_entry() {
            if *entry.key() > index {
                break;
            }
            let (i, p) = entry.remove_entry();
            let matched = i == index && Some(p.id) == id;
            if matched {
                ours = Some(p.proposed_at);
            }
            if let Some(r) = p.responder {
                let res = if matched {
                    result
                        .take()
                        .unwrap_or(Err(Error::ProposalDropped(self.range_id)))
                } else {
                    Err(Error::ProposalDropped(self.range_id))
                };
                ctx.responses.push((r, res));
            }
        }
        ours
    }

    /// Applies committed entries into the round's batch.
    pub fn apply_entries(
        &mut self,
        entries: Vec<Entry>,
        ctx: &mut ApplyContext<'_>,
        effects: &mut Vec<Effect>,
    ) -> Result<()> {
        let mut conf_changed = None;
        for entry in entries {
            if entry.index <= self.applied_index {
                continue;
            }
            let id = (entry.context.len() >= 8)
                .then(|| u64::from_be_bytes(entry.context[..8].try_into().expect("8 bytes")));
            let result = match entry.get_entry_type() {
                EntryType::EntryNormal if entry.data.is_empty() => {
                    // A new leader's first entry: its lease starts from when it took over.
                    if self.is_leader() && entry.term == self.raw.raft.term {
                        if let Some(since) = self.leader_since {
                            self.extend_lease(since);
                        }
                    }
                    Ok(Vec::new())
                }
                EntryType::EntryNormal => match RaftCommand::decode(entry.data.as_ref()) {
                    Ok(cmd) => self.apply_command(cmd, ctx, effects),
                    Err(e) => Err(Error::Decode(e.to_string())),
                },
                EntryType::EntryConfChangeV2 | EntryType::EntryConfChange => {
                    // A change that cannot apply (it would leave no voter, or does not decode)
                    // fails the same way on every replica: it is answered with its error and
                    // the configuration stays as it was. It never stops the store.
                    match self.apply_conf_change_entry(&entry, effects) {
                        Ok(cs) => {
                            conf_changed = Some(cs);
                            Ok(Vec::new())
                        }
                        Err(e) => {
                            tracing::warn!(range_id = self.range_id.0, index = entry.index,
                                error = %e, "configuration change not applied");
                            Err(e)
                        }
                    }
                }
            };
            self.applied_index = entry.index;
            self.applied_term = entry.term;
            if let Some(proposed_at) = self.resolve(entry.index, id, result, ctx) {
                if entry.term == self.raw.raft.term {
                    self.extend_lease(proposed_at);
                }
            }
        }
        let cs = conf_changed
            .clone()
            .unwrap_or_else(|| self.raw.raft.prs().conf().to_conf_state());
        let applied = AppliedState {
            index: self.applied_index,
            term: self.applied_term,
            approximate_bytes: self.approx_bytes,
            descriptor: Some(self.desc.clone()),
            voters: cs.voters.clone(),
            learners: cs.learners.clone(),
            voters_outgoing: cs.voters_outgoing.clone(),
            learners_next: cs.learners_next.clone(),
            auto_leave: cs.auto_leave,
        };
        ctx.batch.put(
            Cf::Data,
            keys::applied_state_key(self.range_id),
            applied.encode_to_vec(),
        );
        let (index, term, desc) = (self.applied_index, self.applied_term, self.desc.clone());
        self.raw
            .mut_store()
            .set_applied(index, term, conf_changed, &desc);
        Ok(())
    }

    /// Applies a committed configuration change and the descriptor it carries.
    fn apply_conf_change_entry(
        &mut self,
        entry: &Entry,
        effects: &mut Vec<Effect>,
    ) -> Result<ConfState> {
        let cc = if entry.get_entry_type() == EntryType::EntryConfChangeV2 {
            ConfChangeV2::parse_from_bytes(&entry.data).map_err(|e| Error::Decode(e.to_string()))?
        } else {
            // Never proposed by bini, but part of the Raft log format.
            let v1 = raft::eraftpb::ConfChange::parse_from_bytes(&entry.data)
                .map_err(|e| Error::Decode(e.to_string()))?;
            let mut single = raft::eraftpb::ConfChangeSingle::default();
            single.set_change_type(v1.get_change_type());
            single.node_id = v1.node_id;
            let mut v2 = ConfChangeV2::default();
            v2.mut_changes().push(single);
            v2
        };
        // The descriptor is decoded before the change applies, so neither half applies alone.
        let desc = match entry.context.get(8..) {
            Some(bytes) if !bytes.is_empty() => Some(RangeDescriptor::decode(bytes)?),
            _ => None,
        };
        let cs = self.raw.apply_conf_change(&cc)?;
        if let Some(desc) = desc {
            self.desc = desc;
            effects.push(Effect::DescriptorChanged);
        }
        let member = cs
            .voters
            .iter()
            .chain(&cs.learners)
            .chain(&cs.voters_outgoing)
            .chain(&cs.learners_next)
            .any(|&n| n == self.node_id.0);
        if !member {
            effects.push(Effect::Removed);
        }
        tracing::info!(range_id = self.range_id.0, voters = ?cs.voters, learners = ?cs.learners,
            outgoing = ?cs.voters_outgoing, "applied configuration change");
        Ok(cs)
    }

    fn apply_command(
        &mut self,
        cmd: RaftCommand,
        ctx: &mut ApplyContext<'_>,
        effects: &mut Vec<Effect>,
    ) -> Result<Vec<Response>> {
        if cmd.lease_renewal {
            return Ok(Vec::new());
        }
        if let Some(split) = cmd.split {
            return self.apply_split(split, ctx, effects).map(|_| Vec::new());
        }
        let ts = cmd.timestamp.map(Timestamp::from).unwrap_or_default();
        let header = cmd.header.unwrap_or_default();
        // The command's writes stay apart until every request succeeded: a command applies
        // entirely or not at all.
        let mut pending = PendingWrites::new();
        let mut added = 0u64;
        let mut out = Vec::with_capacity(cmd.requests.len());
        for req in cmd.requests {
            let mut ops = Ops::default();
            let resp = {
                let reader = Overlay {
                    base: ctx.engine,
                    layers: vec![&ctx.overlay, &pending],
                };
                self.apply_request(req, ts, &header, &reader, &mut ops)?
            };
            for (k, v) in ops.0 {
                added += (k.len() + v.as_ref().map_or(0, Vec::len)) as u64;
                pending.insert(k, v);
            }
            out.push(resp);
        }
        self.approx_bytes += added;
        for (k, v) in pending {
            match &v {
                Some(v) => ctx.batch.put(Cf::Data, k.clone(), v.clone()),
                None => ctx.batch.delete(Cf::Data, k.clone()),
            }
            ctx.overlay.insert(k, v);
        }
        Ok(out)
    }

    pub(crate) fn check_key(&self, key: &[u8]) -> Result<()> {
        if key >= self.desc.start_key.as_slice() && key < self.desc.end_key.as_slice() {
            Ok(())
        } else {
            Err(self.out_of_range(key))
        }
    }

    fn out_of_range(&self, key: &[u8]) -> Error {
        Error::KeyOutOfRange {
            range: self.range_id,
            key: keys::pretty(key),
            descriptor: Some(self.desc.clone()),
        }
    }

    /// Evaluates one request of a command at write timestamp `ts`. Deterministic: every
    /// replica computes the same writes from the same state.
    fn apply_request(
        &mut self,
        req: Request,
        ts: Timestamp,
        header: &BatchHeader,
        reader: &dyn Reader,
        ops: &mut Ops,
    ) -> Result<Response> {
        // Writes of a one-phase commit (and of non-transactional batches) are committed values.
        let txn = header.txn.as_ref().filter(|_| !header.one_phase);
        let may_bump = !header.one_phase || header.can_bump || header.txn.is_none();
        let latest = ReadOptions::at(Timestamp::MAX);
        // The sender's clock: when a record was last heard of (the same on every replica).
        let now = header.now.map(Timestamp::from).unwrap_or(ts).max(ts);
        let mut resp = Response::default();
        let write = |key: &[u8], value: Option<&[u8]>, ops: &mut Ops| -> Result<Timestamp> {
            Ok(mvcc_write(reader, ops, key, value, ts, txn, may_bump)?)
        };
        match req.kind {
            Some(request::Kind::Put(p)) => {
                self.check_key(&p.key)?;
                resp.timestamp = Some(write(&p.key, Some(&p.value), ops)?.into());
            }
            Some(request::Kind::Delete(d)) => {
                self.check_key(&d.key)?;
                resp.timestamp = Some(write(&d.key, None, ops)?.into());
            }
            Some(request::Kind::Cput(c)) => {
                self.check_key(&c.key)?;
                let cur = mvcc_get_with(reader, &c.key, &latest)?;
                let holds = match &cur {
                    None => c.expected_absent,
                    Some(v) => !c.expected_absent && *v == c.expected,
                };
                if holds {
                    resp.timestamp = Some(write(&c.key, Some(&c.value), ops)?.into());
                } else {
                    resp.value = cur;
                }
                resp.succeeded = holds;
            }
            Some(request::Kind::Increment(i)) => {
                self.check_key(&i.key)?;
                let cur = match mvcc_get_with(reader, &i.key, &latest)? {
                    None => 0,
                    Some(v) => i64::from_be_bytes(v.as_slice().try_into().map_err(|_| {
                        Error::InvalidRequest(format!("{} is not an integer", keys::pretty(&i.key)))
                    })?),
                };
                let new = cur.wrapping_add(i.delta);
                resp.timestamp = Some(write(&i.key, Some(&new.to_be_bytes()), ops)?.into());
                resp.integer = new;
            }
            Some(request::Kind::Get(g)) => {
                self.check_key(&g.key)?;
                resp.value = mvcc_get_with(reader, &g.key, &latest)?;
            }
            Some(request::Kind::PutDescriptor(desc)) => {
                let key = keys::meta_key(&desc.end_key);
                self.check_key(&key)?;
                let write_it = match mvcc_get_with(reader, &key, &latest)? {
                    None => true,
                    Some(b) => {
                        let cur = RangeDescriptor::decode(b.as_slice())?;
                        cur.generation < desc.generation
                            || (cur.range_id == desc.range_id && cur.generation <= desc.generation)
                    }
                };
                if write_it {
                    write(&key, Some(&desc.encode_to_vec()), ops)?;
                }
                resp.succeeded = write_it;
            }
            Some(request::Kind::BeginTxn(b)) => {
                let meta = b.txn.unwrap_or_default();
                self.check_key(&meta.anchor)?;
                let record = match read_record(reader, &meta.anchor, &meta.id)? {
                    Some(r) if r.status == TxnStatus::Aborted as i32 => {
                        return Err(Error::TxnAborted(
                            "aborted by a conflicting transaction".into(),
                        ))
                    }
                    Some(mut r) => {
                        r.heartbeat = Some(now.into());
                        r
                    }
                    None => TxnRecord {
                        meta: Some(meta),
                        status: TxnStatus::Pending as i32,
                        heartbeat: Some(now.into()),
                        ..Default::default()
                    },
                };
                write_record(ops, &record);
                resp.record = Some(record);
            }
            Some(request::Kind::HeartbeatTxn(h)) => {
                let meta = h.txn.unwrap_or_default();
                self.check_key(&meta.anchor)?;
                let mut record =
                    read_record(reader, &meta.anchor, &meta.id)?.unwrap_or(TxnRecord {
                        meta: Some(meta),
                        status: TxnStatus::Pending as i32,
                        ..Default::default()
                    });
                if record.status == TxnStatus::Pending as i32 {
                    record.heartbeat = Some(now.into());
                    if !h.intents_unchanged {
                        record.intents = h.intents;
                        record.intent_spans = h.intent_spans;
                    }
                    write_record(ops, &record);
                }
                resp.record = Some(record);
            }
            Some(request::Kind::EndTxn(e)) => {
                let meta = e.txn.unwrap_or_default();
                let intents = (e.intents, e.intent_spans);
                resp.record = Some(self.end_txn(reader, ops, meta, e.commit, intents, ts, header)?);
            }
            Some(request::Kind::PushTxn(p)) => {
                let (kind, force) = (p.kind(), p.force);
                let pushee = p.pushee.unwrap_or_default();
                self.check_key(&pushee.anchor)?;
                let push_to = p.push_to.map(Timestamp::from).unwrap_or_default();
                let (record, succeeded) = push_txn(reader, ops, pushee, push_to, kind, force, now)?;
                resp.record = Some(record);
                resp.succeeded = succeeded;
            }
            Some(request::Kind::ResolveIntent(r)) if !r.end_key.is_empty() => {
                self.check_key(&r.key)?;
                if r.end_key.as_slice() > self.desc.end_key.as_slice() {
                    return Err(self.out_of_range(&r.end_key));
                }
                let at = r.commit_ts.map(Timestamp::from).unwrap_or_default();
                let (n, resume) =
                    mvcc_resolve_span(reader, ops, &r.key, &r.end_key, &r.txn_id, r.status(), at)?;
                resp.succeeded = n > 0;
                resp.resume_key = resume.unwrap_or_default();
            }
            Some(request::Kind::ResolveIntent(r)) => {
                self.check_key(&r.key)?;
                let at = r.commit_ts.map(Timestamp::from).unwrap_or_default();
                resp.succeeded = mvcc_resolve(reader, ops, &r.key, &r.txn_id, r.status(), at)?;
            }
            Some(request::Kind::Gc(g)) => {
                let threshold = g.threshold.map(Timestamp::from).unwrap_or_default();
                for k in g.keys {
                    self.check_key(&k.key)?;
                    let upto = k
                        .timestamp
                        .map(Timestamp::from)
                        .unwrap_or_default()
                        .min(threshold);
                    mvcc_gc_key(reader, ops, &k.key, upto)?;
                }
            }
            Some(request::Kind::Scan(_)) | Some(request::Kind::Refresh(_)) => {
                return Err(Error::InvalidRequest(
                    "a scan or refresh cannot share a batch with writes".into(),
                ))
            }
            None => return Err(Error::InvalidRequest("empty request".into())),
        }
        Ok(resp)
    }

    fn apply_split(
        &mut self,
        split: bini_proto::SplitTrigger,
        ctx: &mut ApplyContext<'_>,
        effects: &mut Vec<Effect>,
    ) -> Result<()> {
        let (Some(left), Some(right)) = (split.left, split.right) else {
            return Err(Error::InvalidRequest("split without descriptors".into()));
        };
        let valid = left.range_id == self.desc.range_id
            && left.start_key == self.desc.start_key
            && right.end_key == self.desc.end_key
            && left.end_key == right.start_key
            && left.start_key < left.end_key
            && right.start_key < right.end_key
            && left.generation == self.desc.generation + 1;
        if !valid {
            return Err(Error::InvalidRequest(format!(
                "stale split of range {} (generation {})",
                self.range_id, self.desc.generation
            )));
        }
        let (lower, upper) = crate::snapshot::data_span(&right);
        let mut right_bytes = 0u64;
        let mut it = ctx.engine.iter(Cf::Data, &lower, &upper);
        it.seek_to_first();
        while it.valid()? {
            right_bytes += (it.key().len() + it.value().len()) as u64;
            it.next();
        }
        drop(it);
        self.approx_bytes = self.approx_bytes.saturating_sub(right_bytes);
        tracing::info!(range_id = self.range_id.0, right = right.range_id,
            split_key = %keys::pretty(&right.start_key), "applied split");
        self.desc = left;
        effects.push(Effect::Split {
            right,
            right_bytes,
            was_leader: self.is_leader(),
        });
        effects.push(Effect::DescriptorChanged);
        Ok(())
    }

    /// Mirrors applied state to readers. Called after the round's apply batch is written.
    pub fn publish(&self) {
        let mut s = self.shared.state.write();
        s.desc = self.desc.clone();
        s.applied_index = self.applied_index;
        s.approx_bytes = self.approx_bytes;
        s.initialized = self.initialized;
        s.leader = self.raw.raft.leader_id;
        s.term = self.raw.raft.term;
        s.lease_expiry = self.lease_expiry();
        s.leader_since = self
            .leader_since
            .filter(|_| self.leader_term == self.raw.raft.term);
    }
}
