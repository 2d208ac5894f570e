//! The gRPC services of a node, on its listen port.
//!
//! Every handler validates what it receives and answers bad input with a gRPC error status;
//! nothing a peer or client sends can panic the node.
//!
//! Calls only nodes make — Raft traffic and snapshots, range batches, gossip, deadlock probes
//! — and KV batches that touch system keys or send internal commands are served only to a
//! caller naming this cluster and one of its nodes ([`Services::peer`], see `bini_kv::peer`).
//! Raft messages are checked once more on the store thread against the range's descriptor.

use std::sync::Arc;
use std::time::Duration;

use bini_kv::{NodeId, RangeId, Store};
use bini_proto::kv_server::{Kv as KvService, KvServer};
use bini_proto::node_server::{Node as NodeService, NodeServer};
use bini_proto::raft_server::{Raft as RaftService, RaftServer};
use bini_proto::{
    BatchRequest, BatchResponse, ChangeReplicasRequest, ChangeReplicasResponse, ClockRequest,
    ClockResponse, DebugRange, DebugRangesRequest, DebugRangesResponse, Empty, GossipRequest,
    GossipResponse, InitRequest, InitResponse, JoinRequest, JoinResponse, NodeStatusRequest,
    NodeStatusResponse, RaftMessageBatch, RangeBatchRequest, RangeBatchResponse, RangeInfoRequest,
    RangeInfoResponse, SnapshotChunk, SnapshotResponse, TransferLeaseRequest, TxnWaitsRequest,
    TxnWaitsResponse,
};
use protobuf::Message as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use crate::NodeState;

/// Largest gRPC message accepted (snapshot chunks and big batches).
const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// Serves the node's gRPC services on `listener` until shutdown.
pub(crate) async fn serve(
    state: Arc<NodeState>,
    listener: TcpListener,
    mut shutdown: watch::Receiver<bool>,
) {
    let svc = Services {
        state: state.clone(),
    };
    // One port for both protocols: gRPC (HTTP/2) connections open with the `PRI *` preface,
    // anything else is a Postgres client.
    // Bounded: a flood of new connections waits here instead of queueing without end.
    let (grpc_tx, grpc_rx) = tokio::sync::mpsc::channel::<std::io::Result<TcpStream>>(1024);
    let gateway = bini_pgwire::Gateway::new(
        state.db.clone(),
        state.sql_ready.subscribe(),
        bini_sql::MemoryPool::new(state.config.max_sql_memory),
    );
    let mut accept_shutdown = shutdown.clone();
    let acceptor = tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = accept_shutdown.wait_for(|s| *s) => return,
            };
            let (stream, _) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            // Small request/response messages on both protocols: without this, Nagle's
            // algorithm and delayed ACKs add ~40 ms to a lone client's round trips (tonic sets
            // it only on listeners it accepts on itself).
            if let Err(e) = stream.set_nodelay(true) {
                tracing::debug!(error = %e, "cannot set TCP_NODELAY");
            }
            let (grpc_tx, gateway) = (grpc_tx.clone(), gateway.clone());
            tokio::spawn(async move {
                match sniff(&stream).await {
                    Protocol::Grpc => {
                        let _ = grpc_tx.send(Ok(stream)).await;
                    }
                    Protocol::Postgres => gateway.serve(stream).await,
                    Protocol::Closed => {}
                }
            });
        }
    });
    let incoming = tokio_stream::wrappers::ReceiverStream::new(grpc_rx);
    let res = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(5)))
        .timeout(Duration::from_secs(30))
        .add_service(RaftServer::new(svc.clone()).max_decoding_message_size(MAX_MESSAGE_BYTES))
        .add_service(
            NodeServer::new(svc.clone())
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(256 << 20),
        )
        .add_service(
            KvServer::new(svc)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(256 << 20),
        )
        .serve_with_incoming_shutdown(incoming, async move {
            let _ = shutdown.wait_for(|s| *s).await;
        })
        .await;
    acceptor.abort();
    if let Err(e) = res {
        tracing::error!(error = %e, "grpc server failed");
    }
}

enum Protocol {
    Grpc,
    Postgres,
    Closed,
}

/// Looks at a new connection's first bytes without consuming them.
async fn sniff(stream: &TcpStream) -> Protocol {
    const PREFACE: &[u8] = b"PRI ";
    let mut buf = [0u8; 4];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let n = match tokio::time::timeout_at(deadline, stream.peek(&mut buf)).await {
            Ok(Ok(n)) => n,
            _ => return Protocol::Closed,
        };
        if n == 0 {
            return Protocol::Closed;
        }
        if buf[..n] != PREFACE[..n] {
            return Protocol::Postgres;
        }
        if n == PREFACE.len() {
            return Protocol::Grpc;
        }
        // A partial match: the rest of the preface is on its way.
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[derive(Clone)]
struct Services {
    state: Arc<NodeState>,
}

pub(crate) fn status(e: bini_kv::Error) -> Status {
    use bini_kv::Error as E;
    match e {
        E::InvalidRequest(m) => Status::invalid_argument(m),
        E::NotInitialized => Status::failed_precondition(E::NotInitialized.to_string()),
        E::Timeout(m) => Status::deadline_exceeded(m),
        other => Status::unavailable(other.to_string()),
    }
}

impl Services {
    /// The node a peer-only call comes from: it must name this cluster and a node of it.
    async fn peer(&self, meta: &tonic::metadata::MetadataMap) -> Result<NodeId, Status> {
        let Some(ours) = self.state.cluster_id.get() else {
            return Err(Status::unavailable(
                "this node has not joined a cluster yet",
            ));
        };
        let Some((cluster, node)) = bini_kv::peer::claimed_peer(meta) else {
            return Err(Status::permission_denied(
                "only the cluster's nodes may make this call",
            ));
        };
        if &cluster != ours {
            return Err(Status::permission_denied(format!(
                "the caller is a node of another cluster ({cluster})"
            )));
        }
        if !self.state.directory.is_member(node) && !self.allocated(node, true).await {
            return Err(Status::permission_denied(format!(
                "node {node} is not a member of this cluster"
            )));
        }
        Ok(node)
    }

    /// Whether the cluster has given out node id `node` (a node that joined moments ago, not
    /// yet known here by its record or gossip). With `throttle` (calls anyone can make),
    /// reads the node id counter at most once a second.
    async fn allocated(&self, node: NodeId, throttle: bool) -> bool {
        let stale = self
            .state
            .node_ids_checked
            .lock()
            .is_none_or(|t| t.elapsed() > Duration::from_secs(1));
        if throttle && !stale {
            return false;
        }
        *self.state.node_ids_checked.lock() = Some(std::time::Instant::now());
        let get = bini_proto::Request {
            kind: Some(bini_proto::request::Kind::Get(bini_proto::GetRequest {
                key: bini_kv::keys::NODE_ID_COUNTER.to_vec(),
            })),
        };
        let Ok(Ok(resp)) =
            tokio::time::timeout(Duration::from_secs(2), self.state.sender.send(vec![get])).await
        else {
            return false;
        };
        let counter = resp
            .first()
            .and_then(|r| r.value.as_deref())
            .and_then(|v| <[u8; 8]>::try_from(v).ok())
            .map_or(0, i64::from_be_bytes);
        let known = counter > 0 && node.0 <= counter as u64;
        if known {
            self.state.directory.note_member(node);
        }
        known
    }

    fn store(&self) -> Result<Store, Status> {
        self.state
            .store
            .get()
            .cloned()
            .ok_or_else(|| status(bini_kv::Error::NotInitialized))
    }
}

#[tonic::async_trait]
impl RaftService for Services {
    async fn raft_messages(
        &self,
        request: Request<Streaming<RaftMessageBatch>>,
    ) -> Result<Response<Empty>, Status> {
        let from = self.peer(request.metadata()).await?;
        let mut stream = request.into_inner();
        let mut shutdown = self.state.shutdown.clone();
        loop {
            let batch = tokio::select! {
                b = stream.next() => match b {
                    Some(b) => b?,
                    None => break,
                },
                // Peers keep their streams open; end them so a stopping node can finish.
                _ = shutdown.wait_for(|s| *s) => break,
            };
            let Some(store) = self.state.store.get() else {
                continue;
            };
            if batch.from_node != from.0 {
                // A batch speaking for another node than the stream's.
                tracing::debug!(stream = %from, claims = batch.from_node, "raft batch dropped");
                continue;
            }
            if let Some(f) = &self.state.config.raft_filter {
                if !f.allow(from, store.node_id()) {
                    continue;
                }
            }
            self.state.directory.learn_address(from, &batch.from_addr);
            if store.clock_unhealthy().is_some() {
                // A node with a bad clock takes no part in Raft, so its leases move to nodes
                // that can serve.
                continue;
            }
            for m in batch.messages {
                store.deliver(from, m);
            }
        }
        Ok(Response::new(Empty {}))
    }

    async fn snapshot(
        &self,
        request: Request<Streaming<SnapshotChunk>>,
    ) -> Result<Response<SnapshotResponse>, Status> {
        let store = self.store()?;
        let from = self.peer(request.metadata()).await?;
        let mut stream = request.into_inner();
        let Some(first) = stream.next().await else {
            return Err(Status::invalid_argument("empty snapshot stream"));
        };
        let first = first?;
        if first.from_node != from.0 {
            return Err(Status::permission_denied(
                "a snapshot speaking for another node",
            ));
        }
        let mut data = first.data;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            if data.len() + chunk.data.len() > (4usize << 30) {
                return Err(Status::resource_exhausted("snapshot too large"));
            }
            data.extend_from_slice(&chunk.data);
        }
        if let Some(f) = &self.state.config.raft_filter {
            if !f.allow(NodeId(first.from_node), store.node_id()) {
                return Err(Status::unavailable("partitioned"));
            }
        }
        let mut msg = raft::eraftpb::Message::parse_from_bytes(&first.header)
            .map_err(|e| Status::invalid_argument(format!("snapshot header: {e}")))?;
        if msg.get_msg_type() != raft::eraftpb::MessageType::MsgSnapshot {
            return Err(Status::invalid_argument(
                "snapshot header is not a snapshot message",
            ));
        }
        msg.mut_snapshot().data = data.into();
        let bytes = msg
            .write_to_bytes()
            .map_err(|e| Status::internal(e.to_string()))?;
        self.state.directory.learn_address(from, &first.from_addr);
        store.deliver(
            from,
            bini_proto::RaftMessage {
                range_id: first.range_id,
                message: bytes,
                generation: first.generation,
            },
        );
        Ok(Response::new(SnapshotResponse {
            accepted: true,
            message: String::new(),
        }))
    }
}

#[tonic::async_trait]
impl NodeService for Services {
    async fn init(&self, _request: Request<InitRequest>) -> Result<Response<InitResponse>, Status> {
        let _guard = self.state.start_lock.lock().await;
        if self.state.store.get().is_some() {
            return Err(Status::already_exists(
                "cluster has already been initialized",
            ));
        }
        // A peer that is already part of a cluster means this node should join it, not start
        // a second one.
        for addr in self
            .state
            .config
            .join
            .iter()
            .filter(|a| **a != self.state.advertise)
        {
            let probe = async {
                let mut c = bini_proto::node_client::NodeClient::connect(format!("http://{addr}"))
                    .await
                    .ok()?;
                c.node_status(NodeStatusRequest {}).await.ok()
            };
            if let Ok(Some(_)) = tokio::time::timeout(Duration::from_secs(2), probe).await {
                return Err(Status::already_exists(format!(
                    "cluster has already been initialized (node {addr} is part of it)"
                )));
            }
        }
        let cluster_id = format!("{:032x}", rand::random::<u128>());
        let node_id = NodeId(1);
        let engine = self.state.engine.clone();
        let cid = cluster_id.clone();
        tokio::task::spawn_blocking(move || bootstrap(engine.as_ref(), &cid, node_id))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(status)?;
        self.state
            .start_store(cluster_id.clone(), node_id)
            .map_err(|e| Status::internal(e.to_string()))?;
        tracing::info!(cluster_id = %cluster_id, "cluster initialised");
        Ok(Response::new(InitResponse {
            cluster_id,
            node_id: node_id.0,
        }))
    }

    async fn join(&self, request: Request<JoinRequest>) -> Result<Response<JoinResponse>, Status> {
        let req = request.into_inner();
        let store = self.store()?;
        if req.address.is_empty() {
            return Err(Status::invalid_argument(
                "join needs the joining node's address",
            ));
        }
        let inc = bini_proto::Request {
            kind: Some(bini_proto::request::Kind::Increment(
                bini_proto::IncrementRequest {
                    key: bini_kv::keys::NODE_ID_COUNTER.to_vec(),
                    delta: 1,
                },
            )),
        };
        let resp = self.state.sender.send(vec![inc]).await.map_err(status)?;
        let node_id = resp.first().map(|r| r.integer).unwrap_or(0);
        if node_id <= 0 {
            return Err(Status::internal("node id allocation failed"));
        }
        self.state
            .directory
            .learn_address(NodeId(node_id as u64), &req.address);
        let _ = store;
        tracing::info!(node_id, address = %req.address, "node joined");
        Ok(Response::new(JoinResponse {
            cluster_id: self.state.cluster_id.get().cloned().unwrap_or_default(),
            node_id: node_id as u64,
            nodes: self.state.directory.nodes(),
            first_range: self
                .state
                .directory
                .first_range()
                .or_else(|| store_first_range(&self.state)),
        }))
    }

    async fn gossip(
        &self,
        request: Request<GossipRequest>,
    ) -> Result<Response<GossipResponse>, Status> {
        self.peer(request.metadata()).await?;
        let req = request.into_inner();
        // Records dated beyond the clock's offset allowance would win every later merge.
        let latest = self.state.clock.physical_now()
            + self.state.config.store.max_clock_offset.as_nanos() as u64;
        self.state.directory.merge(
            req.nodes
                .into_iter()
                .filter(|n| n.updated_at_nanos <= latest),
        );
        if let Some(d) = req.first_range {
            if d.range_id == bini_kv::FIRST_RANGE_ID.0 {
                self.state.directory.set_first_range(d);
            }
        }
        Ok(Response::new(GossipResponse {
            nodes: self.state.directory.nodes(),
            first_range: store_first_range(&self.state)
                .or_else(|| self.state.directory.first_range()),
        }))
    }

    async fn range_batch(
        &self,
        request: Request<RangeBatchRequest>,
    ) -> Result<Response<RangeBatchResponse>, Status> {
        self.peer(request.metadata()).await?;
        let req = request.into_inner();
        let store = match self.store() {
            Ok(s) => s,
            Err(_) => {
                return Ok(Response::new(RangeBatchResponse {
                    responses: Vec::new(),
                    error: Some(
                        bini_kv::Error::RangeNotFound(RangeId(req.range_id)).to_range_error(),
                    ),
                }))
            }
        };
        match store
            .execute(
                RangeId(req.range_id),
                req.header.unwrap_or_default(),
                req.requests,
            )
            .await
        {
            Ok(responses) => Ok(Response::new(RangeBatchResponse {
                responses,
                error: None,
            })),
            Err(e) => Ok(Response::new(RangeBatchResponse {
                responses: Vec::new(),
                error: Some(e.to_range_error()),
            })),
        }
    }

    async fn range_info(
        &self,
        request: Request<RangeInfoRequest>,
    ) -> Result<Response<RangeInfoResponse>, Status> {
        let store = self.store()?;
        let info = store.range_info(RangeId(request.into_inner().range_id));
        Ok(Response::new(RangeInfoResponse {
            found: info.is_some(),
            info,
        }))
    }

    async fn debug_ranges(
        &self,
        _request: Request<DebugRangesRequest>,
    ) -> Result<Response<DebugRangesResponse>, Status> {
        self.store()?;
        let descs = self.state.sender.all_ranges().await.map_err(status)?;
        let mut ranges = Vec::with_capacity(descs.len());
        for desc in descs {
            let leaseholder = find_leaseholder(&self.state, &desc).await;
            ranges.push(DebugRange {
                descriptor: Some(desc),
                leaseholder,
            });
        }
        Ok(Response::new(DebugRangesResponse { ranges }))
    }

    async fn change_replicas(
        &self,
        request: Request<ChangeReplicasRequest>,
    ) -> Result<Response<ChangeReplicasResponse>, Status> {
        let req = request.into_inner();
        let store = self.store()?;
        let range = RangeId(req.range_id);
        let add: Vec<NodeId> = req.add_nodes.iter().map(|&n| NodeId(n)).collect();
        let remove: Vec<NodeId> = req.remove_nodes.iter().map(|&n| NodeId(n)).collect();
        if add.iter().any(|n| remove.contains(n)) {
            return Err(Status::invalid_argument(
                "a node cannot be both added and removed",
            ));
        }
        for n in &add {
            if !self.state.directory.is_member(*n) && !self.allocated(*n, false).await {
                return Err(Status::invalid_argument(format!(
                    "node {n} is not a member of this cluster"
                )));
            }
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if store.is_leader(range) {
                if remove.contains(&store.node_id()) {
                    let desc = store.descriptor(range).map_err(status)?;
                    let target = desc
                        .replicas
                        .iter()
                        .map(|r| NodeId(r.node_id))
                        .find(|n| *n != store.node_id() && !remove.contains(n))
                        .ok_or_else(|| {
                            Status::failed_precondition("no replica to hand the lease to")
                        })?;
                    store.transfer_lease(range, target).await.map_err(status)?;
                    continue;
                }
                let desc = store
                    .change_replicas(range, &add, &remove)
                    .await
                    .map_err(status)?;
                return Ok(Response::new(ChangeReplicasResponse {
                    descriptor: Some(desc),
                }));
            }
            // Forward to the leaseholder.
            let desc = self
                .state
                .sender
                .all_ranges()
                .await
                .map_err(status)?
                .into_iter()
                .find(|d| d.range_id == range.0)
                .ok_or_else(|| Status::not_found(format!("range {} not found", range.0)))?;
            let lh = find_leaseholder(&self.state, &desc).await;
            if lh != 0 && lh != store.node_id().0 {
                if let Some(addr) = self.state.directory.address(NodeId(lh)) {
                    let mut client = self
                        .state
                        .sender
                        .node_client(&addr)
                        .ok_or_else(|| Status::unavailable(format!("bad address {addr}")))?;
                    return client.change_replicas(req.clone()).await;
                }
            }
            if tokio::time::Instant::now() > deadline {
                return Err(Status::unavailable(format!(
                    "no leaseholder for range {}",
                    range.0
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn transfer_lease(
        &self,
        request: Request<TransferLeaseRequest>,
    ) -> Result<Response<Empty>, Status> {
        let req = request.into_inner();
        let store = self.store()?;
        store
            .transfer_lease(RangeId(req.range_id), NodeId(req.target_node))
            .await
            .map_err(status)?;
        Ok(Response::new(Empty {}))
    }

    async fn node_status(
        &self,
        _request: Request<NodeStatusRequest>,
    ) -> Result<Response<NodeStatusResponse>, Status> {
        let store = self.store()?;
        Ok(Response::new(NodeStatusResponse {
            node_id: store.node_id().0,
            nodes: self.state.directory.nodes(),
            cluster_id: self.state.cluster_id.get().cloned().unwrap_or_default(),
            synced_writes: store
                .status()
                .synced_rounds
                .load(std::sync::atomic::Ordering::Relaxed),
            commands_applied: store
                .status()
                .proposals_applied
                .load(std::sync::atomic::Ordering::Relaxed),
            store_running: store.is_running(),
        }))
    }

    async fn txn_waits(
        &self,
        request: Request<TxnWaitsRequest>,
    ) -> Result<Response<TxnWaitsResponse>, Status> {
        self.peer(request.metadata()).await?;
        let req = request.into_inner();
        Ok(Response::new(TxnWaitsResponse {
            waiting_for: self.state.db.waiting_for(&req.txn_id),
        }))
    }

    async fn clock(
        &self,
        _request: Request<ClockRequest>,
    ) -> Result<Response<ClockResponse>, Status> {
        Ok(Response::new(ClockResponse {
            physical_nanos: self.state.clock.physical_now(),
        }))
    }
}

#[tonic::async_trait]
impl KvService for Services {
    async fn batch(
        &self,
        request: Request<BatchRequest>,
    ) -> Result<Response<BatchResponse>, Status> {
        self.store()?;
        if let Some(why) = reserved(&request.get_ref().requests) {
            self.peer(request.metadata())
                .await
                .map_err(|e| Status::permission_denied(format!("{why}: {}", e.message())))?;
        }
        let req = request.into_inner();
        let responses = self
            .state
            .db
            .batch(req.requests)
            .await
            .map_err(|e| match e {
                bini_txn::Error::Kv(e) => status(e),
                e => Status::aborted(e.to_string()),
            })?;
        Ok(Response::new(BatchResponse { responses }))
    }
}

/// Why a client batch needs a node of the cluster behind it, if it does: it writes a system
/// key (meta, node records, the catalog's own keys below the user span are written by the
/// SQL layer through its own node) or sends a command only the transaction layer sends.
fn reserved(requests: &[bini_proto::Request]) -> Option<&'static str> {
    use bini_proto::request::Kind;
    for r in requests {
        match &r.kind {
            Some(Kind::Get(_)) | Some(Kind::Scan(_)) | None => {}
            Some(Kind::Put(bini_proto::PutRequest { key, .. }))
            | Some(Kind::Delete(bini_proto::DeleteRequest { key }))
            | Some(Kind::Cput(bini_proto::ConditionalPutRequest { key, .. }))
            | Some(Kind::Increment(bini_proto::IncrementRequest { key, .. })) => {
                if key.as_slice() < bini_kv::keys::USER_START {
                    return Some("writes to system keys are reserved for the cluster's nodes");
                }
            }
            Some(_) => return Some("internal commands are reserved for the cluster's nodes"),
        }
    }
    None
}

fn store_first_range(state: &NodeState) -> Option<bini_proto::RangeDescriptor> {
    state
        .store
        .get()
        .and_then(|s| s.descriptor(bini_kv::FIRST_RANGE_ID).ok())
}

/// Asks each replica of a range whether it holds the lease; 0 when none answers yes.
pub(crate) async fn find_leaseholder(state: &NodeState, desc: &bini_proto::RangeDescriptor) -> u64 {
    for r in &desc.replicas {
        let node = NodeId(r.node_id);
        if let Some(store) = state.store.get().filter(|s| s.node_id() == node) {
            if store.is_leaseholder(RangeId(desc.range_id))
                || store.is_leader(RangeId(desc.range_id))
            {
                return node.0;
            }
            continue;
        }
        let Some(addr) = state.directory.address(node) else {
            continue;
        };
        // Shared connections: `debug ranges` asks every replica of every range.
        let Some(mut client) = state.sender.node_client(&addr) else {
            continue;
        };
        if let Ok(Ok(resp)) = tokio::time::timeout(
            Duration::from_secs(1),
            client.range_info(RangeInfoRequest {
                range_id: desc.range_id,
            }),
        )
        .await
        {
            if resp.into_inner().info.is_some_and(|i| i.is_leaseholder) {
                return node.0;
            }
        }
    }
    0
}

fn bootstrap(
    engine: &dyn bini_storage::Engine,
    cluster_id: &str,
    node_id: NodeId,
) -> bini_kv::Result<()> {
    Store::bootstrap(engine, node_id)?;
    let mut b = bini_storage::WriteBatch::new();
    bini_mvcc::mvcc_put(
        &mut b,
        bini_kv::keys::CLUSTER_ID,
        bini_mvcc::Timestamp::new(1, 0),
        cluster_id.as_bytes(),
    );
    engine.write(&b, true)?;
    Ok(())
}
