//! What the admin HTTP server (`bini-admin`) asks of this node: readiness and the nodes it
//! knows.

use std::sync::Arc;

use bini_admin::{NodeView, Status};

use crate::background::is_live;
use crate::{now_nanos, NodeState};

/// The node, as the admin server sees it.
pub(crate) struct AdminStatus(pub Arc<NodeState>);

impl Status for AdminStatus {
    fn ready(&self) -> bool {
        self.0.store.get().is_some() && *self.0.sql_ready.borrow()
    }

    fn nodes(&self) -> Vec<NodeView> {
        let now = now_nanos();
        let mut nodes: Vec<NodeView> = self
            .0
            .directory
            .nodes()
            .into_iter()
            .filter(|n| n.node_id != 0 && n.updated_at_nanos != 0)
            .map(|n| NodeView {
                is_live: is_live(&n, now),
                id: n.node_id,
                address: n.address,
                http_address: n.http_address,
                build: n.build,
                started_at: rfc3339(n.started_at_nanos),
                updated_at: rfc3339(n.updated_at_nanos),
                leases: n.lease_count,
                replicas: n.replica_count,
            })
            .collect();
        nodes.sort_by_key(|n| n.id);
        nodes
    }
}

/// Nanoseconds since the epoch as RFC 3339 (UTC, microseconds).
fn rfc3339(nanos: u64) -> String {
    chrono::DateTime::from_timestamp_nanos(nanos as i64)
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}
