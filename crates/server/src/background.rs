//! Work a node does on its own: joining, liveness, gossip, meta upkeep and the queues.
//!
//! - **join**: a new node asks its `--join` peers for a node id until one is initialised.
//! - **liveness**: every [`HEARTBEAT_INTERVAL`] the node writes its record (address, start
//!   time, a fresh `updated_at`, lease and replica counts) to the system range and reads everyone
//!   else's into its directory. A node is live while its record is fresher than
//!   [`LIVENESS_THRESHOLD`].
//! - **gossip**: addresses and the first range's descriptor, exchanged with a random peer, so a
//!   node that holds no replica of the first range can still find it.
//! - **meta**: after a split or replica change the leaseholder writes the new descriptor to
//!   meta; a periodic pass repairs meta entries a crash may have left behind.
//! - **split queue**: a range past `range_max_bytes` is split at its middle key.
//! - **replicate queue**: a range with fewer voters than the replication factor (and live nodes
//!   to spare) gets a new replica on the live node with the fewest.
//! - **lease balancing**: a node holding clearly more than its share of leases hands some to
//!   less loaded replicas.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bini_kv::{keys, NodeId, RangeId, Store, StoreEvent};
use bini_proto::node_client::NodeClient;
use bini_proto::{request, GossipRequest, JoinRequest, NodeInfo, ReplicaKind, Request};
use bini_storage::Cf;
use prost::Message as _;

use crate::{now_nanos, NodeState, BUILD};

/// How often a node refreshes its record.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_millis(1000);
/// A node whose record is older than this is not live.
pub const LIVENESS_THRESHOLD: Duration = Duration::from_millis(4500);

pub(crate) async fn join_loop(state: Arc<NodeState>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        if state.store.get().is_some() || *state.shutdown.borrow() {
            return;
        }
        for addr in &state.config.join {
            if addr == &state.advertise {
                continue;
            }
            let Ok(Ok(mut client)) = tokio::time::timeout(
                Duration::from_secs(2),
                NodeClient::connect(format!("http://{addr}")),
            )
            .await
            else {
                continue;
            };
            let req = JoinRequest {
                address: state.advertise.clone(),
                http_address: state.config.http_addr.clone().unwrap_or_default(),
            };
            match client.join(req).await {
                Ok(resp) => {
                    let resp = resp.into_inner();
                    let _guard = state.start_lock.lock().await;
                    if state.store.get().is_some() {
                        return;
                    }
                    state.directory.merge(resp.nodes);
                    if let Some(d) = resp.first_range {
                        state.directory.set_first_range(d);
                    }
                    match state.start_store(resp.cluster_id, NodeId(resp.node_id)) {
                        Ok(_) => return,
                        Err(e) => tracing::error!(error = %e, "cannot start store after joining"),
                    }
                }
                Err(s) => {
                    tracing::debug!(peer = %addr, status = %s.message(), "join attempt failed")
                }
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

pub(crate) fn spawn(state: Arc<NodeState>, store: Store) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    store.set_event_sink(tx);
    let tasks = [
        state
            .runtime
            .spawn(liveness_loop(state.clone(), store.clone())),
        state.runtime.spawn(gossip_loop(state.clone())),
        state
            .runtime
            .spawn(event_loop(state.clone(), store.clone(), rx)),
        state
            .runtime
            .spawn(clock_offset_loop(state.clone(), store.clone())),
        state.runtime.spawn(queue_loop(state.clone(), store)),
        state.runtime.spawn(sql_bootstrap_loop(state.clone())),
    ];
    state.tasks.lock().extend(tasks);
}

/// Creates the SQL catalog's default database if it is missing, retrying until it is there
/// (every node runs this; the transaction makes it happen once).
async fn sql_bootstrap_loop(state: Arc<NodeState>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        match bini_sql::bootstrap(&state.db).await {
            Ok(()) => {
                state.sql_ready.send_replace(true);
                return;
            }
            Err(e) => tracing::debug!(error = %e, "SQL bootstrap will retry"),
        }
        if until_shutdown(&state, backoff).await {
            return;
        }
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

async fn until_shutdown(state: &NodeState, d: Duration) -> bool {
    let mut rx = state.shutdown.clone();
    tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = rx.wait_for(|s| *s) => true,
    }
}

fn put(key: Vec<u8>, value: Vec<u8>) -> Request {
    Request {
        kind: Some(request::Kind::Put(bini_proto::PutRequest { key, value })),
    }
}

async fn liveness_loop(state: Arc<NodeState>, store: Store) {
    loop {
        let info = NodeInfo {
            node_id: store.node_id().0,
            address: state.advertise.clone(),
            http_address: state.config.http_addr.clone().unwrap_or_default(),
            started_at_nanos: state.started_at_nanos,
            updated_at_nanos: now_nanos(),
            build: BUILD.to_string(),
            lease_count: store.lease_count() as u64,
            replica_count: store.replicas().len() as u64,
            decommissioning: false,
            draining: false,
        };
        state.directory.merge([info.clone()]);
        let sender = state.sender.clone();
        let write = sender.send(vec![put(
            keys::node_key(info.node_id),
            info.encode_to_vec(),
        )]);
        if let Err(e) = tokio::time::timeout(Duration::from_secs(3), write)
            .await
            .unwrap_or_else(|_| Err(bini_kv::Error::Timeout("heartbeat".into())))
        {
            tracing::debug!(error = %e, "liveness heartbeat failed");
        }
        let mut end = keys::NODE_PREFIX.to_vec();
        end.push(0xff);
        let scan = Request {
            kind: Some(request::Kind::Scan(bini_proto::ScanRequest {
                start_key: keys::NODE_PREFIX.to_vec(),
                end_key: end,
                limit: 0,
            })),
        };
        if let Ok(Ok(resp)) =
            tokio::time::timeout(Duration::from_secs(3), sender.send(vec![scan])).await
        {
            let infos = resp
                .into_iter()
                .flat_map(|r| r.rows)
                .filter_map(|kv| NodeInfo::decode(kv.value.as_slice()).ok());
            state.directory.merge(infos);
        }
        if until_shutdown(&state, HEARTBEAT_INTERVAL).await {
            return;
        }
    }
}

async fn gossip_loop(state: Arc<NodeState>) {
    loop {
        if until_shutdown(&state, Duration::from_secs(2)).await {
            return;
        }
        let me = state.store.get().map(|s| s.node_id().0).unwrap_or(0);
        let mut peers: Vec<String> = state
            .directory
            .nodes()
            .into_iter()
            .filter(|n| n.node_id != me)
            .map(|n| n.address)
            .filter(|a| !a.is_empty())
            .collect();
        peers.extend(
            state
                .config
                .join
                .iter()
                .filter(|a| **a != state.advertise)
                .cloned(),
        );
        if peers.is_empty() {
            continue;
        }
        let peer = peers[rand::random_range(0..peers.len())].clone();
        let req = GossipRequest {
            nodes: state.directory.nodes(),
            first_range: state.directory.first_range(),
        };
        let call = async {
            let mut client = state.sender.node_client(&peer)?;
            client.gossip(req).await.ok()
        };
        if let Ok(Some(resp)) = tokio::time::timeout(Duration::from_secs(2), call).await {
            let resp = resp.into_inner();
            state.directory.merge(resp.nodes);
            if let Some(d) = resp.first_range {
                state.directory.set_first_range(d);
            }
        }
    }
}

async fn update_meta(state: &NodeState, desc: bini_proto::RangeDescriptor) {
    if desc.range_id == bini_kv::FIRST_RANGE_ID.0 {
        state.directory.set_first_range(desc.clone());
    }
    let req = Request {
        kind: Some(request::Kind::PutDescriptor(desc.clone())),
    };
    for attempt in 0..5 {
        match state.sender.send(vec![req.clone()]).await {
            Ok(_) => return,
            Err(e) => {
                tracing::debug!(range_id = desc.range_id, attempt, error = %e, "meta update failed; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

async fn event_loop(
    state: Arc<NodeState>,
    store: Store,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<StoreEvent>,
) {
    while let Some(ev) = rx.recv().await {
        match ev {
            StoreEvent::DescriptorChanged(desc) => update_meta(&state, desc).await,
            StoreEvent::SplitNeeded(range) => {
                let (state, store) = (state.clone(), store.clone());
                tokio::spawn(async move {
                    if let Err(e) = split_range(&state, &store, range).await {
                        tracing::warn!(range_id = range.0, error = %e, "split failed");
                    }
                });
            }
        }
    }
}

/// Finds the user key at about half of a range's data.
fn middle_key(
    engine: &dyn bini_storage::Engine,
    desc: &bini_proto::RangeDescriptor,
) -> Option<Vec<u8>> {
    let lower = bini_mvcc::encode_key(&desc.start_key);
    let upper = bini_mvcc::encode_key(&desc.end_key);
    let mut total = 0u64;
    let mut it = engine.iter(Cf::Data, &lower, &upper);
    it.seek_to_first();
    while it.valid().ok()? {
        total += (it.key().len() + it.value().len()) as u64;
        it.next();
    }
    let mut acc = 0u64;
    it.seek_to_first();
    while it.valid().ok()? {
        acc += (it.key().len() + it.value().len()) as u64;
        if acc >= total / 2 {
            let (key, _, _) = bini_mvcc::decode_key(it.key()).ok()?;
            if key > desc.start_key && key < desc.end_key {
                return Some(key);
            }
        }
        it.next();
    }
    None
}

async fn split_range(state: &NodeState, store: &Store, range: RangeId) -> bini_kv::Result<()> {
    let desc = store.descriptor(range)?;
    let engine = store.engine().clone();
    let d = desc.clone();
    let Some(split_key) = tokio::task::spawn_blocking(move || middle_key(engine.as_ref(), &d))
        .await
        .map_err(|e| bini_kv::Error::InvalidRequest(e.to_string()))?
    else {
        return Ok(());
    };
    split_range_at(state, store, range, split_key).await
}

/// Splits a range led here at `split_key`, allocating the right side's id.
pub(crate) async fn split_range_at(
    state: &NodeState,
    store: &Store,
    range: RangeId,
    split_key: Vec<u8>,
) -> bini_kv::Result<()> {
    let inc = Request {
        kind: Some(request::Kind::Increment(bini_proto::IncrementRequest {
            key: keys::RANGE_ID_COUNTER.to_vec(),
            delta: 1,
        })),
    };
    let id = state
        .sender
        .send(vec![inc])
        .await?
        .first()
        .map(|r| r.integer)
        .unwrap_or(0);
    if id <= 0 {
        return Err(bini_kv::Error::InvalidRequest(
            "range id allocation failed".into(),
        ));
    }
    store.split(range, split_key, RangeId(id as u64)).await
}

/// Whether a node's record, as of `now` (nanoseconds), is fresher than [`LIVENESS_THRESHOLD`].
pub(crate) fn is_live(n: &NodeInfo, now: u64) -> bool {
    now.saturating_sub(n.updated_at_nanos) < LIVENESS_THRESHOLD.as_nanos() as u64
}

fn live_nodes(state: &NodeState) -> Vec<NodeInfo> {
    let now = now_nanos();
    state
        .directory
        .nodes()
        .into_iter()
        .filter(|n| is_live(n, now) && !n.decommissioning)
        .collect()
}

async fn queue_loop(state: Arc<NodeState>, store: Store) {
    let mut passes = 0u64;
    loop {
        if until_shutdown(&state, Duration::from_millis(500)).await {
            return;
        }
        passes += 1;
        replicate_pass(&state, &store).await;
        balance_leases(&state, &store).await;
        if passes.is_multiple_of(10) {
            repair_meta(&state, &store).await;
            collect_removed_replicas(&state, &store).await;
        }
        // Garbage collection: about every quarter of the TTL, at least once a minute.
        let gc_every = (store.config().gc_ttl.as_millis() as u64 / 4 / 500).clamp(1, 120);
        if passes.is_multiple_of(gc_every) {
            gc_pass(&state, &store).await;
        }
    }
}

/// Removes MVCC versions older than the GC TTL from the ranges this node leads: each range's
/// leaseholder finds them and proposes their removal, so every replica removes the same ones.
async fn gc_pass(state: &NodeState, store: &Store) {
    let ttl = store.config().gc_ttl;
    let threshold = bini_mvcc::Timestamp::new(
        state
            .clock
            .physical_now()
            .saturating_sub(ttl.as_nanos() as u64),
        0,
    );
    for (desc, _, leader) in store.replicas() {
        if leader != store.node_id().0 {
            continue;
        }
        let engine = store.engine().clone();
        let d = desc.clone();
        let found = tokio::task::spawn_blocking(move || {
            bini_mvcc::mvcc_gc_candidates(
                engine.as_ref(),
                &d.start_key,
                &d.end_key,
                threshold,
                1000,
            )
        })
        .await;
        let Ok(Ok(candidates)) = found else { continue };
        if candidates.is_empty() {
            continue;
        }
        let n = candidates.len();
        let req = Request {
            kind: Some(request::Kind::Gc(bini_proto::GcRequest {
                threshold: Some(threshold.into()),
                keys: candidates
                    .into_iter()
                    .map(|(key, ts)| bini_proto::GcKey {
                        key,
                        timestamp: Some(ts.into()),
                    })
                    .collect(),
            })),
        };
        match store
            .execute(RangeId(desc.range_id), Default::default(), vec![req])
            .await
        {
            Ok(_) => tracing::debug!(range_id = desc.range_id, keys = n, "garbage collected"),
            Err(e) => tracing::debug!(range_id = desc.range_id, error = %e, "gc failed"),
        }
    }
}

async fn replicate_pass(state: &NodeState, store: &Store) {
    let live = live_nodes(state);
    let want = store.config().replication_factor.min(live.len()).max(1);
    for (desc, _lease, leader) in store.replicas() {
        if leader != store.node_id().0 {
            continue;
        }
        let voters = desc
            .replicas
            .iter()
            .filter(|r| r.kind == ReplicaKind::Voter as i32)
            .count();
        let learners: Vec<NodeId> = desc
            .replicas
            .iter()
            .filter(|r| r.kind == ReplicaKind::Learner as i32)
            .map(|r| NodeId(r.node_id))
            .collect();
        let target = if let Some(l) = learners.first() {
            // A change that stopped half way: finish promoting the learner.
            Some(*l)
        } else if voters < want {
            let mut candidates: Vec<&NodeInfo> = live
                .iter()
                .filter(|n| !desc.replicas.iter().any(|r| r.node_id == n.node_id))
                .collect();
            candidates.sort_by_key(|n| (n.replica_count, n.node_id));
            candidates.first().map(|n| NodeId(n.node_id))
        } else {
            None
        };
        if let Some(target) = target {
            tracing::info!(range_id = desc.range_id, node = target.0, "adding replica");
            if let Err(e) = store
                .change_replicas(RangeId(desc.range_id), &[target], &[])
                .await
            {
                tracing::warn!(range_id = desc.range_id, node = target.0, error = %e, "adding replica failed");
            }
            return; // one change per pass keeps snapshots from piling up
        }
    }
}

async fn balance_leases(state: &NodeState, store: &Store) {
    let live = live_nodes(state);
    if live.len() < 2 {
        return;
    }
    let me = store.node_id().0;
    let mut counts: HashMap<u64, i64> = live
        .iter()
        .map(|n| (n.node_id, n.lease_count as i64))
        .collect();
    let mine = store.lease_count() as i64;
    counts.insert(me, mine);
    let total: i64 = counts.values().sum();
    let mean = total as f64 / counts.len() as f64;
    let mut mine = mine;
    let mut moved = 0;
    for (desc, lease, _) in store.replicas() {
        if moved >= 4 || (mine as f64) <= mean * 1.05 + 1.0 {
            break;
        }
        if !lease {
            continue;
        }
        let target = desc
            .replicas
            .iter()
            .filter(|r| r.kind == ReplicaKind::Voter as i32 && r.node_id != me)
            .filter_map(|r| counts.get(&r.node_id).map(|c| (*c, r.node_id)))
            .filter(|(c, _)| (*c as f64) < mean - 0.5)
            .min();
        if let Some((_, target)) = target {
            if store
                .transfer_lease(RangeId(desc.range_id), NodeId(target))
                .await
                .is_ok()
            {
                mine -= 1;
                *counts.entry(target).or_default() += 1;
                moved += 1;
            }
        }
    }
}

/// Rewrites meta entries that do not match the descriptors of ranges led here (after a crash
/// between a split or replica change and its meta update).
async fn repair_meta(state: &NodeState, store: &Store) {
    for (desc, _, leader) in store.replicas() {
        if leader != store.node_id().0 {
            continue;
        }
        let get = Request {
            kind: Some(request::Kind::Get(bini_proto::GetRequest {
                key: keys::meta_key(&desc.end_key),
            })),
        };
        let stored = match state.sender.send(vec![get]).await {
            Ok(r) => r.into_iter().next().and_then(|r| r.value),
            Err(_) => continue,
        };
        let current = stored.and_then(|b| bini_proto::RangeDescriptor::decode(b.as_slice()).ok());
        if current.as_ref() != Some(&desc) {
            update_meta(state, desc).await;
        }
    }
}

/// Removes replicas of ranges that no longer include this node but never applied their own
/// removal (a removed replica may not hear the final configuration change).
async fn collect_removed_replicas(state: &NodeState, store: &Store) {
    let me = store.node_id().0;
    for (desc, _, leader) in store.replicas() {
        if leader == me {
            continue;
        }
        let get = Request {
            kind: Some(request::Kind::Get(bini_proto::GetRequest {
                key: keys::meta_key(&desc.end_key),
            })),
        };
        let Ok(resp) = state.sender.send(vec![get]).await else {
            continue;
        };
        let Some(current) = resp
            .into_iter()
            .next()
            .and_then(|r| r.value)
            .and_then(|b| bini_proto::RangeDescriptor::decode(b.as_slice()).ok())
        else {
            continue;
        };
        if current.range_id == desc.range_id
            && current.generation > desc.generation
            && !current.replicas.iter().any(|r| r.node_id == me)
        {
            store.gc_replica(RangeId(desc.range_id), current.generation);
        }
    }
}

/// Measures this node's clock against its peers' every second. If it is further than the
/// maximum offset from more than half of the peers it reached, the node's clock is the odd one
/// out: the store refuses to serve (and to take part in Raft) until the clock comes back.
async fn clock_offset_loop(state: Arc<NodeState>, store: Store) {
    let max = state.clock.max_offset();
    if max.is_zero() {
        return;
    }
    loop {
        if until_shutdown(&state, Duration::from_secs(1)).await {
            return;
        }
        let me = store.node_id().0;
        let mut reached = 0usize;
        let mut far: Vec<(u64, i64)> = Vec::new();
        for n in live_nodes(&state) {
            if n.node_id == me || n.address.is_empty() {
                continue;
            }
            let Some(mut client) = state.sender.node_client(&n.address) else {
                continue;
            };
            let sent = state.clock.physical_now();
            let Ok(Ok(resp)) = tokio::time::timeout(
                Duration::from_millis(500),
                client.clock(bini_proto::ClockRequest {}),
            )
            .await
            else {
                continue;
            };
            let received = state.clock.physical_now();
            let rtt = received.saturating_sub(sent);
            let remote = resp.into_inner().physical_nanos as i128 + (rtt / 2) as i128;
            let offset = (remote - received as i128) as i64;
            reached += 1;
            if offset.unsigned_abs() > max.as_nanos() as u64 {
                far.push((n.node_id, offset));
            }
        }
        let verdict = (reached > 0 && far.len() * 2 > reached).then(|| {
            let (node, offset) = far[0];
            format!(
                "this node's clock is {} ms {} node {node}'s, beyond the maximum clock offset of \
                 {} ms; it refuses to serve until its clock is corrected",
                offset.unsigned_abs() / 1_000_000,
                if offset > 0 { "behind" } else { "ahead of" },
                max.as_millis()
            )
        });
        let was = store.clock_unhealthy();
        match (&was, &verdict) {
            (None, Some(why)) => tracing::error!(reason = %why, "clock offset too large"),
            (Some(_), None) => tracing::info!("clock offset back within the maximum"),
            _ => {}
        }
        store.set_clock_unhealthy(verdict);
    }
}
