//! Who an inter-node call comes from.
//!
//! Every call a node makes to another (Raft streams, snapshots, range batches, gossip,
//! deadlock probes) carries two metadata entries: the cluster's id and the sending node's
//! id ([`PeerAuth`] adds them to each request of a client made with it). The receiving node
//! serves peer-only calls — and Raft traffic, internal KV commands and system keys — only to
//! a sender that names this cluster and a node the cluster knows (`bini-server`'s services
//! check it). Raft messages are further checked against the range's descriptor on the store
//! thread (`worker.rs`).
//!
//! Without TLS this identifies, it does not authenticate: it keeps a process that is not part
//! of the cluster — a stray client, a node of another cluster, a confused script — away from
//! what only nodes may do. Certificates (secure mode) will authenticate the same identity.

use std::sync::{Arc, OnceLock};

use bini_proto::node_client::NodeClient;
use bini_proto::raft_client::RaftClient;
use tonic::metadata::{AsciiMetadataValue, MetadataMap};
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::Channel;
use tonic::{Request, Status};

use crate::NodeId;

/// The metadata entry naming the sender's cluster.
pub const CLUSTER_ID_HEADER: &str = "bini-cluster-id";
/// The metadata entry naming the sending node.
pub const NODE_ID_HEADER: &str = "bini-node-id";

/// Adds this node's identity to the requests of the clients made with it, once the node has
/// one (before it joins, requests go out without).
#[derive(Clone, Default)]
pub struct PeerAuth {
    identity: Arc<OnceLock<(AsciiMetadataValue, AsciiMetadataValue)>>,
}

impl PeerAuth {
    /// Records this node's identity (once; later calls change nothing).
    pub fn set(&self, cluster_id: &str, node: NodeId) {
        let (Ok(cluster), Ok(node)) = (cluster_id.parse(), node.0.to_string().parse()) else {
            return;
        };
        let _ = self.identity.set((cluster, node));
    }
}

impl Interceptor for PeerAuth {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some((cluster, node)) = self.identity.get() {
            let meta = request.metadata_mut();
            meta.insert(CLUSTER_ID_HEADER, cluster.clone());
            meta.insert(NODE_ID_HEADER, node.clone());
        }
        Ok(request)
    }
}

/// A client of another node's `Node` service, identifying this node.
pub type PeerNodeClient = NodeClient<InterceptedService<Channel, PeerAuth>>;

/// A client of another node's `Raft` service, identifying this node.
pub type PeerRaftClient = RaftClient<InterceptedService<Channel, PeerAuth>>;

/// The cluster and node a request says it comes from, if it says.
pub fn claimed_peer(meta: &MetadataMap) -> Option<(String, NodeId)> {
    let cluster = meta.get(CLUSTER_ID_HEADER)?.to_str().ok()?.to_string();
    let node = meta.get(NODE_ID_HEADER)?.to_str().ok()?.parse().ok()?;
    Some((cluster, NodeId(node)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_travels_in_metadata_once_set() {
        let mut auth = PeerAuth::default();
        let r = auth.call(Request::new(())).expect("passes");
        assert_eq!(claimed_peer(r.metadata()), None);
        auth.set("abc123", NodeId(7));
        auth.set("other", NodeId(8));
        let r = auth.call(Request::new(())).expect("passes");
        assert_eq!(
            claimed_peer(r.metadata()),
            Some(("abc123".into(), NodeId(7)))
        );
    }
}
