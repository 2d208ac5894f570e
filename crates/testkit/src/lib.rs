//! An in-process cluster for tests: N real nodes (RocksDB in temporary directories, gRPC on
//! loopback ports the OS picks) in one process, with faults.
//!
//! - `stop(i)` shuts a node down cleanly; `kill(i)` halts it abruptly (no draining, no flush,
//!   queued work dropped); `restart(i)` brings it back on the same directory and address. (Tests
//!   that need a real SIGKILL use processes: see the root `tests/`.)
//! - `partition(side)` cuts Raft traffic between `side` and everyone else (both directions,
//!   checked at sender and receiver); `cut`, `delay` and `heal` act on single links through
//!   [`NetworkFaults`].

use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bini_kv::{DistSender, NodeId, RangeId, StoreConfig};
use bini_mvcc::PhysicalClock;
use bini_proto::RangeDescriptor;
use bini_server::{NetworkFaults, Node, NodeConfig};
use bini_txn::Db;

/// A cluster of in-process nodes.
pub struct TestCluster {
    /// Faults applied to Raft traffic between the nodes.
    pub faults: Arc<NetworkFaults>,
    configs: Vec<NodeConfig>,
    nodes: Vec<Option<Node>>,
    _dir: tempfile::TempDir,
}

fn free_addr() -> String {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    l.local_addr().expect("local addr").to_string()
}

/// Polls `f` until it returns `Some`, panicking with `what` after `timeout`.
pub async fn wait_for<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl TestCluster {
    /// Starts `n` nodes joined to each other and initialises the cluster through node 0.
    pub async fn start(n: usize, store: StoreConfig) -> TestCluster {
        Self::start_with_clocks(n, store, vec![None; n]).await
    }

    /// Like [`start`](Self::start), with node `i` reading physical time from `clocks[i]` (the
    /// system clock where `None`) — for clock-skew tests.
    pub async fn start_with_clocks(
        n: usize,
        store: StoreConfig,
        clocks: Vec<Option<Arc<dyn PhysicalClock>>>,
    ) -> TestCluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let faults = Arc::new(NetworkFaults::new());
        let addrs: Vec<String> = (0..n).map(|_| free_addr()).collect();
        let configs: Vec<NodeConfig> = (0..n)
            .map(|i| {
                let mut c = NodeConfig::new(dir.path().join(format!("node{i}")), addrs[i].clone());
                c.join = addrs.clone();
                c.store = store.clone();
                c.raft_filter = Some(faults.clone());
                c.clock = clocks.get(i).cloned().flatten();
                c
            })
            .collect();
        let mut nodes = Vec::new();
        for c in &configs {
            nodes.push(Some(Node::start(c.clone()).await.expect("start node")));
        }
        let cluster = TestCluster {
            faults,
            configs,
            nodes,
            _dir: dir,
        };
        let addr = cluster.configs[0].listen_addr.clone();
        let mut client = bini_proto::node_client::NodeClient::connect(format!("http://{addr}"))
            .await
            .expect("connect");
        client.init(bini_proto::InitRequest {}).await.expect("init");
        for (i, node) in cluster.nodes.iter().enumerate() {
            let node = node.as_ref().expect("started");
            assert!(
                node.wait_started(Duration::from_secs(30)).await,
                "node {i} did not join"
            );
        }
        cluster
    }

    /// Node `i` (panics if it is stopped).
    pub fn node(&self, i: usize) -> &Node {
        self.nodes[i].as_ref().expect("node is running")
    }

    /// Number of nodes, running or not.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the cluster has no nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The node id of node `i`.
    pub fn node_id(&self, i: usize) -> NodeId {
        self.node(i).node_id().expect("node has joined")
    }

    /// The index of the node with id `id`.
    pub fn index_of(&self, id: NodeId) -> Option<usize> {
        (0..self.nodes.len()).find(|&i| self.nodes[i].as_ref().and_then(Node::node_id) == Some(id))
    }

    /// The transaction client of node `i`.
    pub fn db(&self, i: usize) -> Db {
        self.node(i).db()
    }

    /// Whether node `i` is running.
    pub fn is_running(&self, i: usize) -> bool {
        self.nodes[i].is_some()
    }

    /// The router of node `i`.
    pub fn sender(&self, i: usize) -> Arc<DistSender> {
        self.node(i).sender()
    }

    /// Every range as node `via` sees it, with the node that holds its lease (if any).
    pub async fn ranges(&self, via: usize) -> Vec<(RangeDescriptor, Option<NodeId>)> {
        let Ok(descs) = self.sender(via).all_ranges().await else {
            return Vec::new();
        };
        descs
            .into_iter()
            .map(|d| {
                let lh = self
                    .nodes
                    .iter()
                    .flatten()
                    .filter_map(|n| n.store())
                    .find(|s| {
                        s.is_leaseholder(RangeId(d.range_id)) || s.is_leader(RangeId(d.range_id))
                    })
                    .map(|s| s.node_id());
                (d, lh)
            })
            .collect()
    }

    /// Waits until every range has `voters` replicas and a leaseholder.
    pub async fn wait_replicated(
        &self,
        voters: usize,
        timeout: Duration,
    ) -> Vec<(RangeDescriptor, Option<NodeId>)> {
        wait_for(
            timeout,
            "every range replicated with a leaseholder",
            || async {
                let ranges = self.ranges(0).await;
                // Voters, not learners: a learner is still catching up and cannot vote.
                let ok = !ranges.is_empty()
                    && ranges.iter().all(|(d, lh)| {
                        d.replicas.len() == voters
                            && d.replicas
                                .iter()
                                .all(|r| r.kind == bini_proto::ReplicaKind::Voter as i32)
                            && lh.is_some()
                    });
                ok.then_some(ranges)
            },
        )
        .await
    }

    /// Splits the range holding `key` at `key`, through whichever running node leads it.
    pub async fn split_at(&self, key: &[u8]) {
        wait_for(Duration::from_secs(30), "a split", || async {
            for n in self.nodes.iter().flatten() {
                if n.split_at(key).await.is_ok() {
                    return Some(());
                }
            }
            None
        })
        .await;
        // Routers learn of the split from the meta range; wait until it is there.
        wait_for(Duration::from_secs(30), "the split in meta", || async {
            let ranges = self.ranges(self.first_running()).await;
            ranges
                .iter()
                .any(|(d, _)| d.start_key.as_slice() == key)
                .then_some(())
        })
        .await;
    }

    /// The index of the first running node.
    pub fn first_running(&self) -> usize {
        (0..self.nodes.len())
            .find(|&i| self.nodes[i].is_some())
            .expect("a running node")
    }

    /// Write intents stored on all running nodes.
    pub fn count_intents(&self) -> usize {
        self.nodes
            .iter()
            .flatten()
            .filter_map(|n| n.store())
            .map(|s| s.count_intents().unwrap_or(0))
            .sum()
    }

    /// Committed versions of `key` on each running node.
    pub fn count_versions(&self, key: &[u8]) -> Vec<usize> {
        self.nodes
            .iter()
            .flatten()
            .filter_map(|n| n.store())
            .map(|s| s.count_versions(key).unwrap_or(0))
            .collect()
    }

    /// The node holding the lease of the range that contains `key`, if known.
    pub async fn leaseholder_of(&self, key: &[u8]) -> Option<usize> {
        let ranges = self.ranges(self.first_running()).await;
        let (_, lh) = ranges
            .into_iter()
            .find(|(d, _)| key >= d.start_key.as_slice() && key < d.end_key.as_slice())?;
        self.index_of(lh?)
    }

    /// Cuts Raft traffic between the nodes in `side` and all others.
    pub fn partition(&self, side: &[usize]) {
        let all: Vec<NodeId> = (0..self.nodes.len())
            .filter_map(|i| self.nodes[i].as_ref()?.node_id())
            .collect();
        let side: Vec<NodeId> = side.iter().map(|&i| self.node_id(i)).collect();
        self.faults.partition(&side, &all);
    }

    /// Removes every fault.
    pub fn heal(&self) {
        self.faults.heal();
    }

    /// Stops node `i` cleanly.
    pub async fn stop(&mut self, i: usize) {
        if let Some(n) = self.nodes[i].take() {
            n.stop().await;
        }
    }

    /// Halts node `i` abruptly, without draining or flushing.
    pub async fn kill(&mut self, i: usize) {
        if let Some(n) = self.nodes[i].take() {
            n.kill().await;
        }
    }

    /// Restarts node `i` on its directory and address, waiting for its store to open (the
    /// previous incarnation's engine may take a moment to close).
    pub async fn restart(&mut self, i: usize) {
        assert!(self.nodes[i].is_none(), "node {i} is running");
        let config = self.configs[i].clone();
        let node = wait_for(
            Duration::from_secs(30),
            &format!("node {i} to reopen its store"),
            || {
                let config = config.clone();
                async move { Node::start(config).await.ok() }
            },
        )
        .await;
        assert!(
            node.wait_started(Duration::from_secs(30)).await,
            "node {i} did not start"
        );
        self.nodes[i] = Some(node);
    }
}
