//! Replica and lease changes of ranges led by this store.
//!
//! Adding a replica is two Raft configuration changes: the new node joins as a learner (it
//! receives a snapshot and catches up without voting), then one `ConfChangeV2` promotes the
//! learners and removes the replicas being dropped. With more than one change in it Raft enters
//! a joint configuration (both the old and the new voter sets must agree) and leaves it on its
//! own once the change applies — so the range is never without a quorum of up-to-date voters.
//! The new descriptor travels with each change and applies with it.

use std::time::{Duration, Instant};

use bini_proto::{RangeDescriptor, ReplicaDescriptor, ReplicaKind};
use raft::eraftpb::{ConfChangeSingle, ConfChangeType, ConfChangeV2};

use crate::replica::Replica;
use crate::store::{StoreMsg, PROPOSAL_TIMEOUT};
use crate::{Error, NodeId, RangeId, Result, Store};

impl Store {
    async fn inspect<T: Send + 'static>(
        &self,
        range_id: RangeId,
        f: impl FnOnce(Option<&Replica>) -> T + Send + 'static,
    ) -> Result<T> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.enqueue(
            range_id,
            StoreMsg::Inspect {
                range_id,
                f: Box::new(move |r| {
                    let _ = tx.send(f(r));
                }),
            },
        )?;
        rx.await.map_err(|_| Error::Stopping)
    }

    async fn conf_change(
        &self,
        range_id: RangeId,
        cc: ConfChangeV2,
        desc: RangeDescriptor,
    ) -> Result<()> {
        self.ask(
            range_id,
            |responder| StoreMsg::ConfChange {
                range_id,
                cc,
                desc,
                responder,
            },
            PROPOSAL_TIMEOUT * 2,
            || format!("configuration change of range {range_id}"),
        )
        .await
        .map(|_| ())
    }

    /// Adds and removes replicas of a range led here, with joint consensus: new replicas join
    /// as learners and receive a snapshot, then one joint change promotes them and removes the
    /// old ones, and Raft leaves the joint configuration on its own.
    pub async fn change_replicas(
        &self,
        range_id: RangeId,
        add: &[NodeId],
        remove: &[NodeId],
    ) -> Result<RangeDescriptor> {
        if remove.contains(&self.inner.node_id) {
            return Err(Error::InvalidRequest(
                "the leaseholder cannot remove itself; transfer the lease first".into(),
            ));
        }
        if !self.inner.changing.lock().insert(range_id) {
            return Err(Error::InvalidRequest(format!(
                "range {range_id} is already changing replicas"
            )));
        }
        let res = self.change_replicas_locked(range_id, add, remove).await;
        self.inner.changing.lock().remove(&range_id);
        res
    }

    async fn change_replicas_locked(
        &self,
        range_id: RangeId,
        add: &[NodeId],
        remove: &[NodeId],
    ) -> Result<RangeDescriptor> {
        let mut desc = self.descriptor(range_id)?;
        let has = |d: &RangeDescriptor, n: NodeId| d.replicas.iter().any(|r| r.node_id == n.0);
        for &n in add {
            if has(&desc, n) {
                continue;
            }
            let mut next = desc.clone();
            next.replicas.push(ReplicaDescriptor {
                node_id: n.0,
                kind: ReplicaKind::Learner as i32,
            });
            next.generation += 1;
            let mut cc = ConfChangeV2::default();
            cc.mut_changes()
                .push(single(ConfChangeType::AddLearnerNode, n));
            self.conf_change(range_id, cc, next.clone()).await?;
            desc = next;
        }
        // Wait for the learners to catch up (they get a snapshot).
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let want: Vec<u64> = add.iter().map(|n| n.0).collect();
            let caught_up = self
                .inspect(range_id, move |r| {
                    let Some(r) = r else {
                        return Err(Error::RangeNotFound(range_id));
                    };
                    if !r.is_leader() {
                        return Err(r.not_leaseholder());
                    }
                    let applied = r.applied_index;
                    let prs = r.raw.raft.prs();
                    Ok(want.iter().all(|n| {
                        prs.get(*n).is_some_and(|p| {
                            p.matched >= applied.min(r.raw.raft.raft_log.committed)
                        })
                    }))
                })
                .await??;
            if caught_up {
                break;
            }
            if Instant::now() > deadline {
                return Err(Error::Timeout(format!(
                    "new replicas of range {range_id} did not catch up"
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut next = desc.clone();
        next.replicas
            .retain(|r| !remove.iter().any(|n| n.0 == r.node_id));
        for r in next.replicas.iter_mut() {
            if add.iter().any(|n| n.0 == r.node_id) {
                r.kind = ReplicaKind::Voter as i32;
            }
        }
        next.generation += 1;
        let mut cc = ConfChangeV2::default();
        for &n in add {
            cc.mut_changes().push(single(ConfChangeType::AddNode, n));
        }
        for &n in remove {
            if has(&desc, n) {
                cc.mut_changes().push(single(ConfChangeType::RemoveNode, n));
            }
        }
        if !cc.get_changes().is_empty() {
            self.conf_change(range_id, cc, next.clone()).await?;
        }
        // Wait until Raft has left the joint configuration.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let joint = self
                .inspect(range_id, |r| {
                    r.is_some_and(|r| {
                        !r.raw
                            .raft
                            .prs()
                            .conf()
                            .to_conf_state()
                            .voters_outgoing
                            .is_empty()
                    })
                })
                .await?;
            if !joint {
                break;
            }
            if Instant::now() > deadline {
                return Err(Error::Timeout(format!(
                    "range {range_id} stayed in a joint configuration"
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(next)
    }

    /// Removes this store's replica of a range whose descriptor at `generation` (from meta) no
    /// longer lists this node. Does nothing if the local replica is as new or leads.
    pub fn gc_replica(&self, range_id: RangeId, generation: u64) {
        let _ = self.inner.tx.send(StoreMsg::Destroy {
            range_id,
            generation,
        });
    }

    /// Hands the lease (and Raft leadership) of a range led here to `target`.
    pub async fn transfer_lease(&self, range_id: RangeId, target: NodeId) -> Result<()> {
        if target == self.inner.node_id {
            return Ok(());
        }
        self.inner
            .tx
            .send(StoreMsg::TransferLease { range_id, target })
            .map_err(|_| Error::Stopping)?;
        let deadline = Instant::now() + self.inner.config.election_timeout() * 3;
        loop {
            let s = self.shared(range_id)?;
            let leader = s.state.read().leader;
            if leader == target.0 {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Error::Timeout(format!(
                    "lease transfer of range {range_id} to node {target}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn single(t: ConfChangeType, n: NodeId) -> ConfChangeSingle {
    let mut s = ConfChangeSingle::default();
    s.set_change_type(t);
    s.node_id = n.0;
    s
}
