//! The store thread: the loop that drives every replica of a store.
//!
//! See `store.rs` for the round structure (one synced write batch for the Raft output of all
//! replicas, then one unsynced batch for everything applied). This file holds the loop itself,
//! the handling of each [`StoreMsg`], ticking (lease renewals, split checks, log truncation) and
//! the Ready pass.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bini_proto::{RaftCommand, RaftMessage};
use bini_storage::{Cf, WriteBatch};
use crossbeam_channel::{Receiver, RecvTimeoutError};
use prost::Message as _;
use protobuf::Message as _;
use raft::eraftpb::MessageType;

use crate::replica::{write_initial_state, ApplyContext, Effect, Replica};
use crate::snapshot::{apply_snapshot_data, parse_snapshot_data};
use crate::store::{request_key, Inner, StoreEvent, StoreMsg};
use crate::transport::Transport;
use crate::{keys, Error, NodeId, RangeId, Result, Store};

/// The store thread's state.
pub(crate) struct Worker {
    inner: Arc<Inner>,
    pub(crate) rx: Receiver<StoreMsg>,
    pub(crate) replicas: HashMap<RangeId, Replica>,
    transport: Arc<dyn Transport>,
    logger: slog::Logger,
    outbox: HashMap<NodeId, Vec<RaftMessage>>,
    last_tick: Instant,
    ticks: u64,
}

/// Messages handled per round before the Ready pass, so a flood cannot starve persistence.
const MAX_MESSAGES_PER_ROUND: usize = 4096;

/// How many generations ahead of this replica's descriptor a sender not in it may claim to
/// be (a replica lagging behind more changes than this catches up by snapshot).
const MAX_GENERATION_LEAD: u64 = 64;

/// A Raft round (persist and apply) slower than this is logged.
const SLOW_ROUND: Duration = Duration::from_millis(200);

impl Worker {
    pub(crate) fn new(
        inner: Arc<Inner>,
        rx: Receiver<StoreMsg>,
        replicas: HashMap<RangeId, Replica>,
        transport: Arc<dyn Transport>,
        logger: slog::Logger,
    ) -> Self {
        Self {
            inner,
            rx,
            replicas,
            transport,
            logger,
            outbox: HashMap::new(),
            last_tick: Instant::now(),
            ticks: 0,
        }
    }

    pub(crate) fn run(&mut self) {
        let tick = self.inner.config.raft_tick_interval;
        loop {
            let wait = (self.last_tick + tick).saturating_duration_since(Instant::now());
            if self.inner.killed.load(Ordering::SeqCst) {
                return;
            }
            match self.rx.recv_timeout(wait) {
                Ok(StoreMsg::Stop) => return self.shutdown(),
                Ok(msg) => self.handle(msg),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return self.shutdown(),
            }
            for _ in 0..MAX_MESSAGES_PER_ROUND {
                if self.inner.killed.load(Ordering::SeqCst) {
                    return;
                }
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
            if self.inner.killed.load(Ordering::SeqCst) {
                return;
            }
            if let Err(e) = self.process_ready() {
                // The engine failed: acknowledged data may be at risk, so stop serving rather
                // than continue on an unknown state.
                tracing::error!(error = %e, "store failed to persist Raft state; stopping the store");
                return self.shutdown();
            }
        }
    }

    /// Opens a replica from the engine (campaigning at once if asked) and registers it with
    /// the store.
    fn open_replica(&mut self, range_id: RangeId, campaign: bool) -> Result<&mut Replica> {
        let mut r = Replica::open(
            range_id,
            self.inner.node_id,
            self.inner.engine.clone(),
            &self.inner.config,
            &self.logger,
        )?;
        if campaign {
            let _ = r.raw.campaign();
        }
        r.publish();
        self.inner
            .replicas
            .write()
            .insert(range_id, r.shared.clone());
        Ok(self.replicas.entry(range_id).insert_entry(r).into_mut())
    }

    /// Unregisters a replica that is going away: readers see it destroyed, proposers get
    /// `RangeNotFound`. The caller removes its data.
    fn forget_replica(&mut self, id: RangeId) -> Option<Replica> {
        let mut r = self.replicas.remove(&id)?;
        r.fail_pending(|| Error::RangeNotFound(id));
        r.shared.state.write().destroyed = true;
        self.inner.replicas.write().remove(&id);
        Some(r)
    }

    /// One round without waiting: handle what is queued, tick if asked, then the Ready pass.
    /// The simulation tests drive stores with this.
    #[cfg(test)]
    pub(crate) fn round(&mut self, tick: bool) -> Result<()> {
        while let Ok(msg) = self.rx.try_recv() {
            self.handle(msg);
        }
        if tick {
            self.tick();
        }
        self.process_ready()
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
            StoreMsg::Raft(from, m) => {
                self.inner
                    .inbox_bytes
                    .fetch_sub(m.message.len(), Ordering::Relaxed);
                self.on_raft_message(from, m)
            }
            StoreMsg::Propose {
                range_id,
                mut cmd,
                term,
                responder,
            } => {
                let Some(r) = self.replicas.get_mut(&range_id) else {
                    let _ = responder.send(Err(Error::RangeNotFound(range_id)));
                    return;
                };
                // A command evaluated under an earlier term (its timestamp checked against a
                // timestamp cache that has since been replaced) must not be proposed now.
                if !r.is_leader() || !r.initialized || term.is_some_and(|t| t != r.raw.raft.term) {
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
                // Writes carry the timestamp the leaseholder chose for them (above the
                // timestamp cache); other commands take the clock's.
                if cmd.timestamp.is_none() {
                    cmd.timestamp = Some(self.inner.clock.now().into());
                }
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
                    if let Some(r) = self.forget_replica(range_id) {
                        let mut batch = WriteBatch::new();
                        destroy_replica(&r, &mut batch);
                        if let Err(e) = self.inner.engine.write(&batch, true) {
                            tracing::error!(range_id = range_id.0, error = %e, "cannot remove replica");
                        }
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

    fn on_raft_message(&mut self, from: NodeId, m: RaftMessage) {
        let range_id = RangeId(m.range_id);
        let Ok(msg) = raft::eraftpb::Message::parse_from_bytes(&m.message) else {
            tracing::debug!(range_id = m.range_id, "undecodable raft message dropped");
            return;
        };
        if let Err(why) = self.admissible(from, range_id, m.generation, &msg) {
            tracing::debug!(range_id = m.range_id, from = from.0, kind = ?msg.get_msg_type(),
                why, "raft message dropped");
            return;
        }
        let t = msg.get_msg_type();
        // A restarted store has forgotten which leaders it heard from recently; refusing votes
        // for an election timeout keeps a lease held elsewhere safe.
        if matches!(
            t,
            MessageType::MsgRequestVote | MessageType::MsgRequestPreVote
        ) && self.inner.started.elapsed() < self.inner.vote_grace
        {
            return;
        }
        if t == MessageType::MsgSnapshot && !self.snapshot_acceptable(range_id, &msg) {
            return;
        }
        // A leader never claims a commit index beyond what the follower has (it sends
        // min(matched, committed)); raft-rs treats one as a corrupt log and panics, so such a
        // message is dropped instead.
        if t == MessageType::MsgHeartbeat {
            if let Some(r) = self.replicas.get(&range_id) {
                if msg.commit > r.raw.raft.raft_log.last_index() {
                    tracing::warn!(
                        range_id = range_id.0,
                        from = msg.from,
                        commit = msg.commit,
                        "dropping a heartbeat that commits past our log"
                    );
                    return;
                }
            }
        }
        if !self.replicas.contains_key(&range_id) {
            let from_leader = matches!(
                t,
                MessageType::MsgAppend | MessageType::MsgHeartbeat | MessageType::MsgSnapshot
            );
            if !from_leader || !self.may_create(range_id, m.generation) {
                return;
            }
            if let Err(e) = self.open_replica(range_id, false) {
                tracing::warn!(range_id = range_id.0, error = %e, "cannot create replica");
                return;
            }
            tracing::debug!(range_id = range_id.0, "created replica on message");
        }
        if let Some(r) = self.replicas.get_mut(&range_id) {
            if let Err(e) = r.raw.step(msg) {
                tracing::debug!(range_id = range_id.0, error = %e, "step failed");
            }
        }
    }

    /// Whether a message from node `from` may reach raft-rs: only what a real peer could send.
    ///
    /// - It is from the node the transport named, to this node.
    /// - It is of a kind replicas send each other: proposals and local-only kinds are never
    ///   taken from the network (raft-rs aborts on some, and a proposal would put a command
    ///   in the log no leaseholder evaluated).
    /// - Its sender is a replica of the range as this replica knows it; or the sender knows a
    ///   newer descriptor of the range (this replica lags, and the sender was added since),
    ///   within a few generations; or this node has no data of the range yet and the message
    ///   is one a leader sends to fill it.
    /// - An append does not contradict the committed log (raft-rs aborts on that too).
    fn admissible(
        &self,
        from: NodeId,
        range_id: RangeId,
        generation: u64,
        msg: &raft::eraftpb::Message,
    ) -> std::result::Result<(), &'static str> {
        use MessageType as T;
        if msg.from != from.0 || msg.from == 0 {
            return Err("the message speaks for another node");
        }
        if msg.to != self.inner.node_id.0 {
            return Err("the message is for another node");
        }
        let t = msg.get_msg_type();
        let peer_kind = matches!(
            t,
            T::MsgAppend
                | T::MsgAppendResponse
                | T::MsgRequestVote
                | T::MsgRequestVoteResponse
                | T::MsgRequestPreVote
                | T::MsgRequestPreVoteResponse
                | T::MsgSnapshot
                | T::MsgHeartbeat
                | T::MsgHeartbeatResponse
                | T::MsgTimeoutNow
        );
        if !peer_kind {
            return Err("replicas do not send this kind of message");
        }
        let Some(r) = self.replicas.get(&range_id).filter(|r| r.initialized) else {
            // No data here yet: only a leader filling this replica may talk to it.
            return match t {
                T::MsgAppend | T::MsgHeartbeat | T::MsgSnapshot => Ok(()),
                _ => Err("this node holds no data of the range"),
            };
        };
        let replica = r.desc.replicas.iter().any(|x| x.node_id == from.0);
        let newer =
            generation > r.desc.generation && generation <= r.desc.generation + MAX_GENERATION_LEAD;
        if !replica && !newer {
            return Err("the sender is not a replica of the range");
        }
        if t == T::MsgAppend {
            let log = &r.raw.raft.raft_log;
            let committed = log.committed;
            for e in msg.get_entries() {
                if e.index > committed {
                    break;
                }
                if log.term(e.index).is_ok_and(|term| term != e.term) {
                    return Err("the append contradicts committed entries");
                }
            }
        }
        Ok(())
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
        let started = Instant::now();
        if !persist.is_empty() {
            self.inner.engine.write(&persist, must_sync)?;
            if must_sync {
                self.inner
                    .status
                    .synced_rounds
                    .fetch_add(1, Ordering::Relaxed);
            }
        }

        let persisted_in = started.elapsed();
        let engine = self.inner.engine.clone();
        let mut ctx = ApplyContext {
            engine: engine.as_ref(),
            batch: WriteBatch::new(),
            overlay: crate::overlay::Pending::new(),
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
        let round = started.elapsed();
        if round > SLOW_ROUND {
            // Longer than a few ticks: heartbeats wait, and followers may start elections.
            tracing::warn!(
                persist_ms = persisted_in.as_millis() as u64,
                total_ms = round.as_millis() as u64,
                sync = must_sync,
                "slow Raft round on the store thread"
            );
        }

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
            // An uninitialised replica of the right-hand side is replaced by the split's.
            self.replicas.remove(&range_id);
            match self.open_replica(range_id, campaign) {
                Ok(r) if campaign => new_ranges.push(r.desc.clone()),
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(range_id = range_id.0, error = %e, "cannot open split range")
                }
            }
        }
        for id in removed {
            if self.forget_replica(id).is_some() {
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
