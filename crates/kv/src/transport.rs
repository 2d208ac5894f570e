//! Moving Raft messages between nodes.
//!
//! The store hands the transport all messages of a round for one destination node at once;
//! [`GrpcTransport`] keeps one long-lived client stream per destination and sends each round's
//! messages as one `RaftMessageBatch` frame. Sending never blocks the store thread: a full
//! queue drops the batch (Raft retransmits), and a broken stream is re-dialled by the
//! destination's sender task. Snapshots go over their own streaming call in chunks, and the
//! outcome is reported back so Raft can retry.
//!
//! Tests inject faults by wrapping a transport ([`Transport`] is the seam).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bini_proto::raft_client::RaftClient;
use bini_proto::{RaftMessage, RaftMessageBatch, SnapshotChunk};
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tonic::transport::{Channel, Endpoint};

use crate::dist_sender::NodeDirectory;
use crate::snapshot::SNAPSHOT_CHUNK_BYTES;
use crate::NodeId;

/// Called with whether a snapshot reached its destination.
pub type SnapshotCallback = Box<dyn FnOnce(bool) + Send>;

/// Sends Raft traffic to other nodes.
pub trait Transport: Send + Sync + 'static {
    /// Queues one batch of messages for a node. Must not block.
    fn send(&self, to: NodeId, messages: Vec<RaftMessage>);
    /// Streams a snapshot message (`header` is an encoded `MsgSnapshot` without its data).
    fn send_snapshot(
        &self,
        to: NodeId,
        range_id: u64,
        generation: u64,
        header: Vec<u8>,
        data: Vec<u8>,
        done: SnapshotCallback,
    );
}

const QUEUE_BATCHES: usize = 1024;

/// The gRPC transport.
pub struct GrpcTransport {
    local: NodeId,
    local_addr: String,
    directory: Arc<NodeDirectory>,
    runtime: tokio::runtime::Handle,
    peers: Mutex<HashMap<NodeId, mpsc::Sender<RaftMessageBatch>>>,
}

/// Dials a node lazily.
pub fn endpoint(addr: &str) -> Option<Endpoint> {
    Endpoint::from_shared(format!("http://{addr}"))
        .ok()
        .map(|e| {
            e.connect_timeout(Duration::from_secs(2))
                .tcp_nodelay(true)
                .http2_keep_alive_interval(Duration::from_secs(2))
                .keep_alive_timeout(Duration::from_secs(4))
        })
}

impl GrpcTransport {
    /// A transport for the node `local`, advertised at `local_addr`.
    pub fn new(
        local: NodeId,
        local_addr: String,
        directory: Arc<NodeDirectory>,
        runtime: tokio::runtime::Handle,
    ) -> Self {
        Self {
            local,
            local_addr,
            directory,
            runtime,
            peers: Mutex::new(HashMap::new()),
        }
    }

    fn queue(&self, to: NodeId) -> mpsc::Sender<RaftMessageBatch> {
        let mut peers = self.peers.lock();
        if let Some(tx) = peers.get(&to) {
            if !tx.is_closed() {
                return tx.clone();
            }
        }
        let (tx, rx) = mpsc::channel(QUEUE_BATCHES);
        self.runtime
            .spawn(run_peer_stream(to, self.directory.clone(), rx));
        peers.insert(to, tx.clone());
        tx
    }
}

/// Keeps a stream open to one peer, re-dialling after failures; batches that arrive while the
/// peer is unreachable are dropped (Raft retransmits what matters).
async fn run_peer_stream(
    to: NodeId,
    directory: Arc<NodeDirectory>,
    mut rx: mpsc::Receiver<RaftMessageBatch>,
) {
    let mut backoff = Duration::from_millis(50);
    loop {
        let Some(first) = rx.recv().await else { return };
        let Some(ep) = directory.address(to).and_then(|a| endpoint(&a)) else {
            tracing::debug!(node = to.0, "no address for node; dropping raft messages");
            tokio::time::sleep(backoff).await;
            continue;
        };
        let channel: Channel = ep.connect_lazy();
        let mut client = RaftClient::with_interceptor(channel, directory.auth.clone())
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20);
        let (stream_tx, stream_rx) = mpsc::channel::<RaftMessageBatch>(QUEUE_BATCHES);
        let _ = stream_tx.send(first).await;
        let call = tokio::spawn(async move {
            client
                .raft_messages(tokio_stream::wrappers::ReceiverStream::new(stream_rx))
                .await
        });
        // Forward until the stream breaks.
        loop {
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(m) => {
                        if stream_tx.send(m).await.is_err() {
                            break;
                        }
                    }
                    None => return,
                },
                _ = stream_tx.closed() => break,
            }
        }
        let res = call.await;
        tracing::debug!(node = to.0, ?res, "raft stream ended");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}

impl Transport for GrpcTransport {
    fn send(&self, to: NodeId, messages: Vec<RaftMessage>) {
        if messages.is_empty() {
            return;
        }
        let batch = RaftMessageBatch {
            from_node: self.local.0,
            from_addr: self.local_addr.clone(),
            messages,
        };
        if self.queue(to).try_send(batch).is_err() {
            tracing::debug!(node = to.0, "raft queue full; dropping a batch");
        }
    }

    fn send_snapshot(
        &self,
        to: NodeId,
        range_id: u64,
        generation: u64,
        header: Vec<u8>,
        data: Vec<u8>,
        done: SnapshotCallback,
    ) {
        let addr = self.directory.address(to);
        let auth = self.directory.auth.clone();
        let (from_node, from_addr) = (self.local.0, self.local_addr.clone());
        self.runtime.spawn(async move {
            let Some(ep) = addr.and_then(|a| endpoint(&a)) else {
                done(false);
                return;
            };
            let mut chunks = Vec::new();
            let mut parts = data.chunks(SNAPSHOT_CHUNK_BYTES).peekable();
            let mut first = SnapshotChunk {
                from_node,
                from_addr,
                range_id,
                header,
                generation,
                data: Vec::new(),
            };
            if parts.peek().is_none() {
                chunks.push(first);
            } else {
                for part in parts {
                    let mut c = std::mem::take(&mut first);
                    c.data = part.to_vec();
                    chunks.push(c);
                }
            }
            let ok = match ep.connect().await {
                Ok(ch) => {
                    let mut client = RaftClient::with_interceptor(ch, auth)
                        .max_decoding_message_size(64 << 20)
                        .max_encoding_message_size(64 << 20);
                    match client.snapshot(tokio_stream::iter(chunks)).await {
                        Ok(r) => r.into_inner().accepted,
                        Err(e) => {
                            tracing::warn!(node = to.0, range_id, error = %e, "snapshot failed");
                            false
                        }
                    }
                }
                Err(e) => {
                    tracing::debug!(node = to.0, error = %e, "snapshot dial failed");
                    false
                }
            };
            done(ok);
        });
    }
}
