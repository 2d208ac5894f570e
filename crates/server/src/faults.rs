//! Fault injection on the Raft network, for tests.
//!
//! A [`RaftFilter`] decides, per pair of nodes, whether Raft traffic passes and how late. The
//! node applies it on both ends — to what its transport sends and to what its Raft service
//! receives — so a partition holds even if only one side was told. [`NetworkFaults`] is the
//! filter the test cluster uses: it can partition sets of nodes, cut single links and delay
//! them.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bini_kv::{NodeId, Transport};
use bini_proto::RaftMessage;
use parking_lot::RwLock;

/// Decides the fate of Raft traffic between two nodes.
pub trait RaftFilter: Send + Sync + 'static {
    /// Whether messages from `from` to `to` are delivered.
    fn allow(&self, from: NodeId, to: NodeId) -> bool;
    /// Extra latency on the link, if any.
    fn delay(&self, from: NodeId, to: NodeId) -> Option<Duration>;
}

/// Partitions, cut links and delays, changeable while the cluster runs.
#[derive(Default)]
pub struct NetworkFaults {
    /// Directed links that drop everything.
    cut: RwLock<HashSet<(u64, u64)>>,
    delays: RwLock<HashMap<(u64, u64), Duration>>,
}

impl NetworkFaults {
    /// No faults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Cuts every link between `side` and all other nodes in `all`.
    pub fn partition(&self, side: &[NodeId], all: &[NodeId]) {
        let mut cut = self.cut.write();
        for a in side {
            for b in all.iter().filter(|b| !side.contains(b)) {
                cut.insert((a.0, b.0));
                cut.insert((b.0, a.0));
            }
        }
    }

    /// Drops messages from `from` to `to` (one direction).
    pub fn cut(&self, from: NodeId, to: NodeId) {
        self.cut.write().insert((from.0, to.0));
    }

    /// Delays messages from `from` to `to`.
    pub fn delay_link(&self, from: NodeId, to: NodeId, by: Duration) {
        self.delays.write().insert((from.0, to.0), by);
    }

    /// Removes every fault.
    pub fn heal(&self) {
        self.cut.write().clear();
        self.delays.write().clear();
    }
}

impl RaftFilter for NetworkFaults {
    fn allow(&self, from: NodeId, to: NodeId) -> bool {
        !self.cut.read().contains(&(from.0, to.0))
    }

    fn delay(&self, from: NodeId, to: NodeId) -> Option<Duration> {
        self.delays.read().get(&(from.0, to.0)).copied()
    }
}

/// A transport that consults a filter before sending.
pub(crate) struct FilteredTransport {
    local: NodeId,
    inner: Arc<dyn Transport>,
    filter: Arc<dyn RaftFilter>,
    runtime: tokio::runtime::Handle,
}

impl FilteredTransport {
    pub fn new(
        local: NodeId,
        inner: Arc<dyn Transport>,
        filter: Arc<dyn RaftFilter>,
        runtime: tokio::runtime::Handle,
    ) -> Self {
        Self {
            local,
            inner,
            filter,
            runtime,
        }
    }
}

impl Transport for FilteredTransport {
    fn send(&self, to: NodeId, messages: Vec<RaftMessage>) {
        if !self.filter.allow(self.local, to) {
            return;
        }
        match self.filter.delay(self.local, to) {
            Some(d) => {
                let inner = self.inner.clone();
                self.runtime.spawn(async move {
                    tokio::time::sleep(d).await;
                    inner.send(to, messages);
                });
            }
            None => self.inner.send(to, messages),
        }
    }

    fn send_snapshot(
        &self,
        to: NodeId,
        range_id: u64,
        generation: u64,
        header: Vec<u8>,
        data: Vec<u8>,
        done: bini_kv::SnapshotCallback,
    ) {
        if !self.filter.allow(self.local, to) {
            done(false);
            return;
        }
        self.inner
            .send_snapshot(to, range_id, generation, header, data, done);
    }
}
