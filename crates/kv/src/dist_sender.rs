//! Routing requests to ranges: the node directory, the range cache and the `DistSender`.
//!
//! [`DistSender::send`] takes a batch over any keys, groups it by range (descriptors come from
//! the [`RangeCache`], filled from the meta range on a miss), sends every group to its range's
//! leaseholder — the local store directly, other nodes over gRPC — and retries: a
//! `NotLeaseholder` answer moves to the named leaseholder (or the next replica), a
//! `RangeNotFound`/`KeyOutOfRange` answer drops the cached descriptor and routes again. Scans
//! are cut at range boundaries and stitched together in key order.
//!
//! The first range (meta and system keys) is never looked up in meta: its descriptor comes from
//! the local store, the join answer or gossip, kept in the [`NodeDirectory`].

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bini_proto::node_client::NodeClient;
use bini_proto::{
    request, BatchHeader, NodeInfo, RangeBatchRequest, RangeDescriptor, ReplicaKind, Request,
    ResolveIntentRequest, Response, ScanRequest,
};
use parking_lot::RwLock;
use prost::Message as _;

use crate::peer::{PeerAuth, PeerNodeClient};
use crate::store::request_key;
use crate::transport::endpoint;
use crate::{keys, Error, NodeId, RangeId, Result, Store};

/// What a node knows about the other nodes: addresses, liveness, load; and where the first
/// range is.
#[derive(Default)]
pub struct NodeDirectory {
    nodes: RwLock<HashMap<u64, NodeInfo>>,
    first_range: RwLock<Option<RangeDescriptor>>,
    /// This node's identity, added to every call it makes to another node.
    pub auth: PeerAuth,
}

impl NodeDirectory {
    /// An empty directory.
    pub fn new() -> Self {
        Self::default()
    }

    /// The address of a node.
    pub fn address(&self, node: NodeId) -> Option<String> {
        self.nodes
            .read()
            .get(&node.0)
            .map(|n| n.address.clone())
            .filter(|a| !a.is_empty())
    }

    /// Learns a node's address (from a message it sent, or as it joins).
    pub fn learn_address(&self, node: NodeId, address: &str) {
        if node.0 == 0 || address.is_empty() {
            return;
        }
        let mut nodes = self.nodes.write();
        let e = nodes.entry(node.0).or_insert_with(|| NodeInfo {
            node_id: node.0,
            ..Default::default()
        });
        if e.address != address {
            e.address = address.to_string();
        }
    }

    /// Records that `node` is a node of the cluster, its address not yet known.
    pub fn note_member(&self, node: NodeId) {
        if node.0 == 0 {
            return;
        }
        self.nodes
            .write()
            .entry(node.0)
            .or_insert_with(|| NodeInfo {
                node_id: node.0,
                ..Default::default()
            });
    }

    /// Whether `node` is a node of the cluster (it has a record, or joined through this
    /// node, or a member told of it).
    pub fn is_member(&self, node: NodeId) -> bool {
        node.0 != 0 && self.nodes.read().contains_key(&node.0)
    }

    /// Merges node records, keeping the most recently updated of each.
    pub fn merge(&self, infos: impl IntoIterator<Item = NodeInfo>) {
        let mut nodes = self.nodes.write();
        for info in infos {
            if info.node_id == 0 {
                continue;
            }
            match nodes.get(&info.node_id) {
                Some(cur) if cur.updated_at_nanos > info.updated_at_nanos => {}
                _ => {
                    nodes.insert(info.node_id, info);
                }
            }
        }
    }

    /// Every known node.
    pub fn nodes(&self) -> Vec<NodeInfo> {
        let mut v: Vec<_> = self.nodes.read().values().cloned().collect();
        v.sort_by_key(|n| n.node_id);
        v
    }

    /// The first range's descriptor, if known.
    pub fn first_range(&self) -> Option<RangeDescriptor> {
        self.first_range.read().clone()
    }

    /// Records the first range's descriptor if it is newer than the known one.
    pub fn set_first_range(&self, desc: RangeDescriptor) {
        let mut cur = self.first_range.write();
        if cur.as_ref().is_none_or(|c| c.generation <= desc.generation) {
            *cur = Some(desc);
        }
    }
}

#[derive(Clone, Debug)]
struct CachedRange {
    desc: RangeDescriptor,
    leaseholder: Option<NodeId>,
}

/// Cached range descriptors keyed by end key, with the last known leaseholder of each.
#[derive(Default)]
pub struct RangeCache {
    ranges: RwLock<BTreeMap<Vec<u8>, CachedRange>>,
}

impl RangeCache {
    fn lookup(&self, key: &[u8]) -> Option<CachedRange> {
        let ranges = self.ranges.read();
        let (_, r) = ranges
            .range::<[u8], _>((Bound::Excluded(key), Bound::Unbounded))
            .next()?;
        (r.desc.start_key.as_slice() <= key).then(|| r.clone())
    }

    fn insert(&self, desc: RangeDescriptor, leaseholder: Option<NodeId>) {
        let mut ranges = self.ranges.write();
        // Drop cached ranges that overlap the new one and are older.
        let stale: Vec<Vec<u8>> = ranges
            .range::<[u8], _>((Bound::Excluded(desc.start_key.as_slice()), Bound::Unbounded))
            .take_while(|(_, r)| r.desc.start_key < desc.end_key)
            .filter(|(_, r)| {
                r.desc.generation <= desc.generation || r.desc.range_id == desc.range_id
            })
            .map(|(k, _)| k.clone())
            .collect();
        for k in stale {
            ranges.remove(&k);
        }
        ranges.insert(desc.end_key.clone(), CachedRange { desc, leaseholder });
    }

    fn set_leaseholder(&self, desc: &RangeDescriptor, leaseholder: Option<NodeId>) {
        if let Some(r) = self.ranges.write().get_mut(&desc.end_key) {
            if r.desc.range_id == desc.range_id {
                r.leaseholder = leaseholder;
            }
        }
    }

    fn evict(&self, desc: &RangeDescriptor) {
        let mut ranges = self.ranges.write();
        if ranges
            .get(&desc.end_key)
            .is_some_and(|r| r.desc.range_id == desc.range_id)
        {
            ranges.remove(&desc.end_key);
        }
    }
}

/// How long `send` keeps retrying before giving up.
const SEND_DEADLINE: Duration = Duration::from_secs(15);

/// Routes batches to ranges.
pub struct DistSender {
    local: RwLock<Option<Store>>,
    directory: Arc<NodeDirectory>,
    cache: RangeCache,
    clients: RwLock<HashMap<String, PeerNodeClient>>,
}

impl DistSender {
    /// A sender using `directory` for addresses; `local` serves ranges on this node directly.
    pub fn new(directory: Arc<NodeDirectory>, local: Option<Store>) -> Self {
        Self {
            local: RwLock::new(local),
            directory,
            cache: RangeCache::default(),
            clients: RwLock::new(HashMap::new()),
        }
    }

    /// Sets the local store once it exists.
    pub fn set_local(&self, store: Store) {
        *self.local.write() = Some(store);
    }

    /// The local store, once started.
    pub fn local_store(&self) -> Option<Store> {
        self.local.read().clone()
    }

    /// The node directory.
    pub fn directory(&self) -> &Arc<NodeDirectory> {
        &self.directory
    }

    /// A client for the node at `addr`, sharing one connection per address; its requests
    /// carry this node's identity.
    pub fn node_client(&self, addr: &str) -> Option<PeerNodeClient> {
        if let Some(c) = self.clients.read().get(addr) {
            return Some(c.clone());
        }
        let ch = endpoint(addr)?.connect_lazy();
        let c = NodeClient::with_interceptor(ch, self.directory.auth.clone())
            .max_decoding_message_size(256 << 20)
            .max_encoding_message_size(256 << 20);
        self.clients.write().insert(addr.to_string(), c.clone());
        Some(c)
    }

    /// Sends a batch addressed to one range to one node.
    async fn send_to_node(
        &self,
        node: NodeId,
        range: RangeId,
        header: &BatchHeader,
        requests: Vec<Request>,
    ) -> Result<Vec<Response>> {
        let local = self.local.read().clone();
        if let Some(store) = local.filter(|s| s.node_id() == node) {
            return store.execute(range, header.clone(), requests).await;
        }
        let addr = self
            .directory
            .address(node)
            .ok_or_else(|| Error::Unreachable {
                node,
                reason: "address unknown".into(),
            })?;
        let mut client = self.node_client(&addr).ok_or_else(|| Error::Unreachable {
            node,
            reason: format!("bad address {addr}"),
        })?;
        let req = RangeBatchRequest {
            range_id: range.0,
            requests,
            header: Some(header.clone()),
        };
        let resp = tokio::time::timeout(Duration::from_secs(6), client.range_batch(req))
            .await
            .map_err(|_| Error::Timeout(format!("range {range} on node {node}")))?
            .map_err(|s| Error::Unreachable {
                node,
                reason: s.message().to_string(),
            })?
            .into_inner();
        match resp.error {
            Some(e) => Err(Error::from_range_error(range, e)),
            None => Ok(resp.responses),
        }
    }

    /// The descriptor of the range holding `key`.
    async fn range_for(&self, key: &[u8]) -> Result<CachedRange> {
        if key < keys::USER_START {
            let desc = self.first_range().ok_or(Error::NotInitialized)?;
            let leaseholder = self
                .cache
                .lookup(key)
                .filter(|c| c.desc.range_id == desc.range_id)
                .and_then(|c| c.leaseholder);
            if self
                .cache
                .lookup(key)
                .is_none_or(|c| c.desc.generation < desc.generation)
            {
                self.cache.insert(desc.clone(), leaseholder);
            }
            return Ok(CachedRange { desc, leaseholder });
        }
        if let Some(c) = self.cache.lookup(key) {
            return Ok(c);
        }
        // Meta lookup: the first meta entry after meta_key(key) is the range ending after key.
        let mut start = keys::meta_key(key);
        start.push(0);
        let scan = Request {
            kind: Some(request::Kind::Scan(ScanRequest {
                start_key: start,
                end_key: keys::SYSTEM_START.to_vec(),
                limit: 1,
            })),
        };
        let resp = Box::pin(self.send_one_range(scan)).await?;
        let row = resp.rows.first().ok_or_else(|| {
            Error::InvalidRequest(format!("no range holds key {}", keys::pretty(key)))
        })?;
        let desc = RangeDescriptor::decode(row.value.as_slice())?;
        self.cache.insert(desc.clone(), None);
        Ok(CachedRange {
            desc,
            leaseholder: None,
        })
    }

    fn first_range(&self) -> Option<RangeDescriptor> {
        if let Some(store) = self.local.read().as_ref() {
            if let Ok(d) = store.descriptor(crate::FIRST_RANGE_ID) {
                self.directory.set_first_range(d);
            }
        }
        self.directory.first_range()
    }

    /// Sends one request that falls in a single range (used for meta lookups).
    async fn send_one_range(&self, req: Request) -> Result<Response> {
        let key = request_key(&req).map(<[u8]>::to_vec).unwrap_or_default();
        let mut out = self
            .send_to_range_with_retry(&key, &BatchHeader::default(), vec![req], false)
            .await?;
        out.pop()
            .ok_or_else(|| Error::InvalidRequest("empty response".into()))
    }

    /// Sends requests that all fall in the range holding `key`, retrying as needed.
    async fn send_to_range_with_retry(
        &self,
        key: &[u8],
        header: &BatchHeader,
        requests: Vec<Request>,
        multi: bool,
    ) -> Result<Vec<Response>> {
        let deadline = Instant::now() + SEND_DEADLINE;
        let mut backoff = Duration::from_millis(5);
        let mut last_err = None;
        while Instant::now() < deadline {
            let cached = match self.range_for(key).await {
                Ok(c) => c,
                Err(e) if e.is_retryable() || matches!(e, Error::Timeout(_)) => {
                    last_err = Some(e);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_millis(200));
                    continue;
                }
                Err(e) => return Err(e),
            };
            match self.try_replicas(&cached, header, &requests).await {
                Ok(r) => return Ok(r),
                Err(e) => {
                    let retry = e.is_retryable()
                        || (matches!(e, Error::Timeout(_)) && idempotent(header, &requests));
                    if !retry {
                        return Err(e);
                    }
                    if matches!(e, Error::RangeNotFound(_) | Error::KeyOutOfRange { .. })
                        || matches!(e, Error::NotLeaseholder { .. })
                    {
                        self.cache.evict(&cached.desc);
                    }
                    if let Error::KeyOutOfRange {
                        descriptor: Some(d),
                        ..
                    }
                    | Error::NotLeaseholder {
                        descriptor: Some(d),
                        ..
                    } = &e
                    {
                        if d.start_key.as_slice() <= key
                            && key < d.end_key.as_slice()
                            && d.generation >= cached.desc.generation
                        {
                            self.cache.insert(d.clone(), None);
                        }
                    }
                    if multi && matches!(e, Error::KeyOutOfRange { .. }) {
                        // The group straddles ranges now; the caller regroups it.
                        return Err(e);
                    }
                    tracing::debug!(range_id = cached.desc.range_id, error = %e, "retrying range request");
                    last_err = Some(e);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_millis(200));
                }
            }
        }
        Err(last_err.unwrap_or_else(|| Error::Timeout("routing".into())))
    }

    /// Tries the cached leaseholder first, then every replica; follows leaseholder hints.
    async fn try_replicas(
        &self,
        cached: &CachedRange,
        header: &BatchHeader,
        requests: &[Request],
    ) -> Result<Vec<Response>> {
        let range = RangeId(cached.desc.range_id);
        let mut order: Vec<NodeId> = Vec::new();
        if let Some(l) = cached.leaseholder {
            order.push(l);
        }
        for r in &cached.desc.replicas {
            if r.kind == ReplicaKind::Voter as i32 && !order.contains(&NodeId(r.node_id)) {
                order.push(NodeId(r.node_id));
            }
        }
        let mut last = Error::RangeNotFound(range);
        let mut i = 0;
        let mut hops = 0;
        while i < order.len() && hops < 8 {
            let node = order[i];
            hops += 1;
            match self
                .send_to_node(node, range, header, requests.to_vec())
                .await
            {
                Ok(r) => {
                    if cached.leaseholder != Some(node) {
                        self.cache.set_leaseholder(&cached.desc, Some(node));
                    }
                    return Ok(r);
                }
                Err(Error::NotLeaseholder {
                    leaseholder: Some(l),
                    ..
                }) if !order[..=i].contains(&l) => {
                    order.insert(i + 1, l);
                    last = Error::NotLeaseholder {
                        range,
                        leaseholder: Some(l),
                        descriptor: None,
                    };
                }
                Err(
                    e @ (Error::NotLeaseholder { .. }
                    | Error::Unreachable { .. }
                    | Error::Timeout(_)
                    | Error::ProposalDropped(_)
                    | Error::ClockOffset(_)),
                ) => {
                    if matches!(e, Error::Timeout(_)) && !idempotent(header, requests) {
                        return Err(e);
                    }
                    last = e;
                }
                Err(e) => return Err(e),
            }
            i += 1;
        }
        Err(last)
    }

    /// Sends a non-transactional batch over any keys; answers come back in request order.
    pub async fn send(&self, requests: Vec<Request>) -> Result<Vec<Response>> {
        self.send_with(&BatchHeader::default(), requests).await
    }

    /// Sends a batch over any keys with a header (timestamp, transaction); answers come back
    /// in request order. A one-phase batch must fall in one range, or it fails with
    /// [`Error::SpansRanges`] and the caller commits in two phases instead.
    pub async fn send_with(
        &self,
        header: &BatchHeader,
        requests: Vec<Request>,
    ) -> Result<Vec<Response>> {
        let mut out: Vec<Option<Response>> = vec![None; requests.len()];
        let mut pending = Vec::new();
        let mut scans = Vec::new();
        let mut spans = Vec::new();
        for (i, r) in requests.iter().enumerate() {
            match &r.kind {
                Some(request::Kind::Scan(_)) => scans.push(i),
                Some(request::Kind::ResolveIntent(r)) if !r.end_key.is_empty() => spans.push(i),
                Some(request::Kind::PutDescriptor(_)) => pending.push(i),
                Some(_) => {
                    let key = request_key(r).unwrap_or_default();
                    if !keys::is_user_addressable(key) {
                        return Err(Error::InvalidRequest(format!(
                            "key {} is outside the addressable keyspace",
                            keys::pretty(key)
                        )));
                    }
                    pending.push(i);
                }
                None => return Err(Error::InvalidRequest("empty request".into())),
            }
        }
        // Route point requests by range; a group that turns out to straddle ranges (a split
        // the cache has not seen) is routed again with the refreshed cache.
        let deadline = Instant::now() + SEND_DEADLINE;
        while !pending.is_empty() {
            let mut groups: Vec<(Vec<u8>, Vec<usize>)> = Vec::new();
            let mut by_range: HashMap<u64, usize> = HashMap::new();
            for &i in &pending {
                let key = routing_key(&requests[i]);
                let range = self
                    .range_for(&key)
                    .await
                    .map(|c| c.desc.range_id)
                    .unwrap_or(0);
                match by_range.get(&range) {
                    Some(&g) if range != 0 => groups[g].1.push(i),
                    _ => {
                        by_range.insert(range, groups.len());
                        groups.push((key, vec![i]));
                    }
                }
            }
            if header.one_phase && (groups.len() > 1 || !scans.is_empty() || !spans.is_empty()) {
                return Err(Error::SpansRanges);
            }
            let futs = groups.into_iter().map(|(key, idx)| {
                let reqs: Vec<Request> = idx.iter().map(|&i| requests[i].clone()).collect();
                async move {
                    let multi = idx.len() > 1;
                    (
                        idx,
                        self.send_to_range_with_retry(&key, header, reqs, multi)
                            .await,
                    )
                }
            });
            pending.clear();
            for (idx, res) in futures::future::join_all(futs).await {
                match res {
                    Ok(rs) => {
                        for (i, r) in idx.into_iter().zip(rs) {
                            out[i] = Some(r);
                        }
                    }
                    Err(Error::KeyOutOfRange { .. })
                        if idx.len() > 1 && Instant::now() < deadline =>
                    {
                        pending.extend(idx);
                    }
                    Err(e) => return Err(e),
                }
            }
            if !pending.is_empty() {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        for i in scans {
            let Some(request::Kind::Scan(s)) = &requests[i].kind else {
                unreachable!("filtered above")
            };
            out[i] = Some(self.scan(header, s.clone()).await?);
        }
        for i in spans {
            let Some(request::Kind::ResolveIntent(r)) = &requests[i].kind else {
                unreachable!("filtered above")
            };
            out[i] = Some(self.resolve_span(header, r.clone()).await?);
        }
        Ok(out.into_iter().map(Option::unwrap_or_default).collect())
    }

    /// Resolves a transaction's intents over a span: range by range, and within a range
    /// command by command (each resolves a bounded number and says where to resume).
    async fn resolve_span(
        &self,
        header: &BatchHeader,
        r: ResolveIntentRequest,
    ) -> Result<Response> {
        let end = r.end_key.clone();
        if !keys::is_user_addressable(&r.key) || end.as_slice() > keys::KEY_MAX || r.key >= end {
            return Err(Error::InvalidRequest(
                "intent span outside the addressable keyspace".into(),
            ));
        }
        let mut start = r.key.clone();
        let mut succeeded = false;
        while start < end {
            let (resp, range_end) = self
                .send_range_piece(header, &start, &end, |from, to| {
                    request::Kind::ResolveIntent(ResolveIntentRequest {
                        key: from.to_vec(),
                        end_key: to.to_vec(),
                        ..r.clone()
                    })
                })
                .await?;
            succeeded |= resp.succeeded;
            start = if resp.resume_key.is_empty() {
                range_end
            } else {
                resp.resume_key
            };
        }
        Ok(Response {
            succeeded,
            ..Default::default()
        })
    }

    /// Sends the request `piece(start, range_end)` for the part of `[start, end)` in the range
    /// holding `start`; returns its answer and `range_end`. A range that turns out to have
    /// split is looked up again.
    async fn send_range_piece(
        &self,
        header: &BatchHeader,
        start: &[u8],
        end: &[u8],
        piece: impl Fn(&[u8], &[u8]) -> request::Kind,
    ) -> Result<(Response, Vec<u8>)> {
        loop {
            let cached = self.range_for(start).await?;
            let range_end = std::cmp::min(cached.desc.end_key.as_slice(), end).to_vec();
            let req = Request {
                kind: Some(piece(start, &range_end)),
            };
            match self
                .send_to_range_with_retry(start, header, vec![req], false)
                .await
            {
                Ok(mut r) => return Ok((r.pop().unwrap_or_default(), range_end)),
                Err(Error::KeyOutOfRange { .. }) => self.cache.evict(&cached.desc),
                Err(e) => return Err(e),
            }
        }
    }

    /// The id of the cached range holding `key`, if the cache knows it (no lookup).
    pub fn cached_range_id(&self, key: &[u8]) -> Option<u64> {
        self.cache.lookup(key).map(|c| c.desc.range_id)
    }

    async fn scan(&self, header: &BatchHeader, s: ScanRequest) -> Result<Response> {
        let end = if s.end_key.is_empty() {
            keys::KEY_MAX.to_vec()
        } else {
            s.end_key.clone()
        };
        if s.start_key.as_slice() < keys::META_START || end.as_slice() > keys::KEY_MAX {
            return Err(Error::InvalidRequest(
                "scan outside the addressable keyspace".into(),
            ));
        }
        let mut rows = Vec::new();
        let mut start = s.start_key.clone();
        let limit = if s.limit == 0 {
            usize::MAX
        } else {
            s.limit as usize
        };
        let mut resume_key = Vec::new();
        while start < end && rows.len() < limit {
            let left = (limit - rows.len()).min(u64::MAX as usize) as u64;
            let (resp, range_end) = self
                .send_range_piece(header, &start, &end, |from, to| {
                    request::Kind::Scan(ScanRequest {
                        start_key: from.to_vec(),
                        end_key: to.to_vec(),
                        limit: left,
                    })
                })
                .await?;
            rows.extend(resp.rows);
            if !resp.resume_key.is_empty() {
                resume_key = resp.resume_key;
                break;
            }
            start = range_end;
        }
        if resume_key.is_empty() && rows.len() >= limit && start < end {
            // The limit fell on a range boundary: resume at the next range.
            resume_key = start;
        }
        Ok(Response {
            rows,
            resume_key,
            ..Default::default()
        })
    }

    /// Every range descriptor in meta, in key order, starting with the first range.
    pub async fn all_ranges(&self) -> Result<Vec<RangeDescriptor>> {
        let mut start = keys::meta_key(keys::USER_START);
        start.push(0);
        let resp = self
            .scan(
                &BatchHeader::default(),
                ScanRequest {
                    start_key: start,
                    end_key: keys::SYSTEM_START.to_vec(),
                    limit: 0,
                },
            )
            .await?;
        let mut out = Vec::new();
        if let Some(first) = self.first_range() {
            out.push(first);
        }
        for row in resp.rows {
            out.push(RangeDescriptor::decode(row.value.as_slice())?);
        }
        Ok(out)
    }

    /// The cached leaseholder of a range, if any.
    pub fn cached_leaseholder(&self, key: &[u8]) -> Option<NodeId> {
        self.cache.lookup(key).and_then(|c| c.leaseholder)
    }
}

/// The key that decides which range a point request goes to.
fn routing_key(r: &Request) -> Vec<u8> {
    match &r.kind {
        Some(request::Kind::PutDescriptor(d)) => keys::meta_key(&d.end_key),
        _ => request_key(r).map(<[u8]>::to_vec).unwrap_or_default(),
    }
}

/// Whether resending a batch whose outcome is unknown is harmless. A one-phase commit is not:
/// applied twice, it could overwrite a write that landed in between.
fn idempotent(header: &BatchHeader, requests: &[Request]) -> bool {
    !header.one_phase
        && requests.iter().all(|r| {
            matches!(
                r.kind,
                Some(request::Kind::Get(_))
                    | Some(request::Kind::Scan(_))
                    | Some(request::Kind::Put(_))
                    | Some(request::Kind::Delete(_))
                    | Some(request::Kind::PutDescriptor(_))
                    | Some(request::Kind::BeginTxn(_))
                    | Some(request::Kind::HeartbeatTxn(_))
                    | Some(request::Kind::EndTxn(_))
                    | Some(request::Kind::PushTxn(_))
                    | Some(request::Kind::ResolveIntent(_))
                    | Some(request::Kind::Refresh(_))
                    | Some(request::Kind::Gc(_))
            )
        })
}
