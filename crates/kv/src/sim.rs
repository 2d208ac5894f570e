//! Deterministic simulation of several stores, driven by golden scripts in `testscripts/raft/`.
//!
//! Each store runs its real worker code on an in-memory engine, but nobody runs a thread: the
//! script ticks and steps every store by hand, and a simulated transport queues Raft traffic,
//! delivering it in FIFO order and dropping it across partitions. Election timeouts are fixed per
//! node (`deterministic_election_spread`), so the same script always elects the same leaders and
//! prints the same output. Regenerate the expected output with
//! `UPDATE_GOLDENFILES=1 cargo test -p bini-kv` and review the diff.
//!
//! Commands:
//! - `campaign NODE RANGE`: the node's replica campaigns.
//! - `tick [N]`: N Raft ticks on every store, delivering all traffic after each.
//! - `put NODE KEY VALUE [range=R]`: propose a write to NODE's replica of the range holding KEY
//!   (or of range R), deliver traffic, print the outcome (`ok`, `pending` or the error).
//! - `split NODE RANGE KEY NEW_RANGE`: NODE proposes splitting RANGE at KEY.
//! - `get KEY`: the newest value of KEY in every store's engine (what each replica applied).
//! - `partition NODE` / `heal`: cut or restore all Raft traffic between NODE and the others.
//! - `forge-heartbeat FROM TO RANGE COMMIT`: deliver a heartbeat claiming commit index COMMIT.
//! - `status RANGE`: role, term, leader, commit and applied index of every replica.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::error::Error as StdError;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use bini_mvcc::{mvcc_get, Hlc, ManualClock, Timestamp};
use bini_proto::{
    request, PutRequest, RaftCommand, RaftMessage, RangeDescriptor, ReplicaDescriptor, ReplicaKind,
    Request, Response,
};
use bini_storage::{Engine, MemEngine, WriteBatch};
use parking_lot::Mutex;
use protobuf::Message as _;
use raft::StateRole;

use crate::replica::write_initial_state;
use crate::store::StoreMsg;
use crate::transport::{SnapshotCallback, Transport};
use crate::worker::Worker;
use crate::{keys, NodeId, RangeId, Result, Store, StoreConfig};

type Queue = Arc<Mutex<VecDeque<(u64, u64, RaftMessage)>>>;

struct SimTransport {
    from: u64,
    queue: Queue,
}

impl Transport for SimTransport {
    fn send(&self, to: NodeId, messages: Vec<RaftMessage>) {
        let mut q = self.queue.lock();
        for m in messages {
            q.push_back((self.from, to.0, m));
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
        let Ok(mut msg) = raft::eraftpb::Message::parse_from_bytes(&header) else {
            return done(false);
        };
        msg.mut_snapshot().data = data.into();
        let Ok(message) = msg.write_to_bytes() else {
            return done(false);
        };
        self.queue.lock().push_back((
            self.from,
            to.0,
            RaftMessage {
                range_id,
                message,
                generation,
            },
        ));
        done(true);
    }
}

struct SimNode {
    store: Store,
    worker: Worker,
    engine: Arc<MemEngine>,
}

struct Sim {
    nodes: BTreeMap<u64, SimNode>,
    queue: Queue,
    cut: HashSet<(u64, u64)>,
}

const NODES: u64 = 3;

impl Sim {
    /// Three stores holding replicas of the first range and the user range, no leaders yet.
    fn new() -> Result<Sim> {
        let queue: Queue = Arc::default();
        let config = StoreConfig {
            deterministic_election_spread: Some(2),
            ..StoreConfig::default()
        };
        let replicas: Vec<ReplicaDescriptor> = (1..=NODES)
            .map(|n| ReplicaDescriptor {
                node_id: n,
                kind: ReplicaKind::Voter as i32,
            })
            .collect();
        let ranges = [
            RangeDescriptor {
                range_id: 1,
                start_key: keys::META_START.to_vec(),
                end_key: keys::USER_START.to_vec(),
                replicas: replicas.clone(),
                generation: 1,
            },
            RangeDescriptor {
                range_id: 2,
                start_key: keys::USER_START.to_vec(),
                end_key: keys::KEY_MAX.to_vec(),
                replicas,
                generation: 1,
            },
        ];
        let mut nodes = BTreeMap::new();
        for n in 1..=NODES {
            let engine = Arc::new(MemEngine::new());
            let mut batch = WriteBatch::new();
            for d in &ranges {
                write_initial_state(&mut batch, d, 0, 0, 0)?;
            }
            engine.write(&batch, true)?;
            let clock = Arc::new(Hlc::new(
                Arc::new(ManualClock::new(1_000_000_000)),
                Duration::from_millis(500),
            ));
            let transport = Arc::new(SimTransport {
                from: n,
                queue: queue.clone(),
            });
            let (store, worker) = Store::open(
                NodeId(n),
                engine.clone(),
                config.clone(),
                clock,
                transport,
                Duration::ZERO,
            )?;
            nodes.insert(
                n,
                SimNode {
                    store,
                    worker,
                    engine,
                },
            );
        }
        Ok(Sim {
            nodes,
            queue,
            cut: HashSet::new(),
        })
    }

    fn node(&mut self, n: u64) -> std::result::Result<&mut SimNode, Box<dyn StdError>> {
        self.nodes
            .get_mut(&n)
            .ok_or_else(|| format!("no node {n}").into())
    }

    /// Steps every store and delivers traffic until nothing moves.
    fn stabilize(&mut self) -> Result<()> {
        for _ in 0..10_000 {
            for node in self.nodes.values_mut() {
                node.worker.round(false)?;
            }
            let msgs: Vec<_> = self.queue.lock().drain(..).collect();
            let idle = msgs.is_empty()
                && self.nodes.values().all(|n| {
                    n.worker.rx.is_empty() && n.worker.replicas.values().all(|r| !r.raw.has_ready())
                });
            for (from, to, m) in msgs {
                if self.cut.contains(&(from, to)) {
                    continue;
                }
                if let Some(node) = self.nodes.get(&to) {
                    node.store.deliver(NodeId(from), m);
                }
            }
            if idle {
                return Ok(());
            }
        }
        Err(crate::Error::InvalidRequest(
            "simulation did not settle".into(),
        ))
    }
}

fn put_request(key: &str, value: &str) -> Request {
    Request {
        kind: Some(request::Kind::Put(PutRequest {
            key: key.as_bytes().to_vec(),
            value: value.as_bytes().to_vec(),
        })),
    }
}

struct SimRunner {
    sim: Sim,
    /// Proposals still waiting for an answer, by description.
    pending: Vec<(
        String,
        tokio::sync::oneshot::Receiver<Result<Vec<Response>>>,
    )>,
}

impl SimRunner {
    fn report_pending(&mut self, out: &mut String) -> std::fmt::Result {
        let mut still = Vec::new();
        for (what, mut rx) in std::mem::take(&mut self.pending) {
            match rx.try_recv() {
                Ok(Ok(_)) => writeln!(out, "{what}: ok")?,
                Ok(Err(e)) => writeln!(out, "{what}: {e}")?,
                Err(tokio::sync::oneshot::error::TryRecvError::Empty) => still.push((what, rx)),
                Err(_) => writeln!(out, "{what}: dropped")?,
            }
        }
        self.pending = still;
        Ok(())
    }
}

impl goldenscript::Runner for SimRunner {
    type Command = goldenscript::Command;

    fn run(
        &mut self,
        command: &goldenscript::Command,
        _: &goldenscript::Context,
    ) -> std::result::Result<String, Box<dyn StdError>> {
        let mut args = command.consume_args();
        let range_arg: Option<u64> = args.take_key("range").map(str::parse).transpose()?;
        let mut pos = || args.next_pos().ok_or("missing argument");
        let mut out = String::new();
        match command.name.as_str() {
            "campaign" => {
                let (n, r): (u64, u64) = (pos()?.parse()?, pos()?.parse()?);
                let node = self.sim.node(n)?;
                let replica = node
                    .worker
                    .replicas
                    .get_mut(&RangeId(r))
                    .ok_or("no such replica")?;
                replica.raw.campaign()?;
                self.sim.stabilize()?;
            }
            "tick" => {
                let times: usize = match pos() {
                    Ok(t) => t.parse()?,
                    Err(_) => 1,
                };
                for _ in 0..times {
                    for node in self.sim.nodes.values_mut() {
                        node.worker.round(true)?;
                    }
                    self.sim.stabilize()?;
                }
                self.report_pending(&mut out)?;
            }
            "put" => {
                let (n, key, value): (u64, &str, &str) = (pos()?.parse()?, pos()?, pos()?);
                let (tx, rx) = tokio::sync::oneshot::channel();
                let cmd = RaftCommand {
                    requests: vec![put_request(key, value)],
                    ..Default::default()
                };
                let node = self.sim.node(n)?;
                // The range whose span holds the key on this node, unless `range=` says otherwise.
                let range = match range_arg {
                    Some(r) => RangeId(r),
                    None => node
                        .worker
                        .replicas
                        .values()
                        .find(|r| {
                            r.initialized
                                && r.desc.start_key.as_slice() <= key.as_bytes()
                                && key.as_bytes() < r.desc.end_key.as_slice()
                        })
                        .map(|r| r.range_id)
                        .ok_or("no replica holds the key")?,
                };
                node.store.inner.tx.send(StoreMsg::Propose {
                    range_id: range,
                    cmd: Box::new(cmd),
                    term: None,
                    responder: tx,
                })?;
                self.sim.stabilize()?;
                let what = format!("put {key}={value} on n{n}");
                self.pending.push((what.clone(), rx));
                self.report_pending(&mut out)?;
                if self.pending.iter().any(|(w, _)| *w == what) {
                    writeln!(out, "{what}: pending")?;
                }
            }
            "split" => {
                let (n, r, key, new_id): (u64, u64, &str, u64) =
                    (pos()?.parse()?, pos()?.parse()?, pos()?, pos()?.parse()?);
                let node = self.sim.node(n)?;
                let desc = node
                    .worker
                    .replicas
                    .get(&RangeId(r))
                    .ok_or("no such replica")?
                    .desc
                    .clone();
                let left = RangeDescriptor {
                    end_key: key.as_bytes().to_vec(),
                    generation: desc.generation + 1,
                    ..desc.clone()
                };
                let right = RangeDescriptor {
                    range_id: new_id,
                    start_key: key.as_bytes().to_vec(),
                    generation: desc.generation + 1,
                    ..desc
                };
                let cmd = RaftCommand {
                    split: Some(bini_proto::SplitTrigger {
                        left: Some(left),
                        right: Some(right),
                    }),
                    ..Default::default()
                };
                let (tx, rx) = tokio::sync::oneshot::channel();
                node.store.inner.tx.send(StoreMsg::Propose {
                    range_id: RangeId(r),
                    cmd: Box::new(cmd),
                    term: None,
                    responder: tx,
                })?;
                self.sim.stabilize()?;
                self.pending.push((format!("split r{r} at {key}"), rx));
                self.report_pending(&mut out)?;
            }
            "get" => {
                let key = pos()?;
                for (n, node) in &self.sim.nodes {
                    let v = mvcc_get(node.engine.as_ref(), key.as_bytes(), Timestamp::MAX)?;
                    let v = v
                        .map(|v| String::from_utf8_lossy(&v).into_owned())
                        .unwrap_or_else(|| "None".into());
                    writeln!(out, "n{n}: {key} = {v}")?;
                }
            }
            "partition" => {
                let n: u64 = pos()?.parse()?;
                for other in 1..=NODES {
                    if other != n {
                        self.sim.cut.insert((n, other));
                        self.sim.cut.insert((other, n));
                    }
                }
            }
            "heal" => self.sim.cut.clear(),
            "forge-heartbeat" => {
                // A heartbeat from the range's leader claiming a commit index far past the log.
                let (from, to, r, commit): (u64, u64, u64, u64) = (
                    pos()?.parse()?,
                    pos()?.parse()?,
                    pos()?.parse()?,
                    pos()?.parse()?,
                );
                let term = self
                    .sim
                    .node(to)?
                    .worker
                    .replicas
                    .get(&RangeId(r))
                    .ok_or("no such replica")?
                    .raw
                    .raft
                    .term;
                let mut m = raft::eraftpb::Message::default();
                m.set_msg_type(raft::eraftpb::MessageType::MsgHeartbeat);
                m.from = from;
                m.to = to;
                m.term = term;
                m.commit = commit;
                let message = m.write_to_bytes()?;
                self.sim.node(to)?.store.deliver(
                    NodeId(from),
                    RaftMessage {
                        range_id: r,
                        message,
                        generation: 1,
                    },
                );
                self.sim.stabilize()?;
            }
            "status" => {
                let r: u64 = pos()?.parse()?;
                for (n, node) in &self.sim.nodes {
                    let Some(rep) = node.worker.replicas.get(&RangeId(r)) else {
                        writeln!(out, "n{n}: no replica")?;
                        continue;
                    };
                    let raft = &rep.raw.raft;
                    let role = match raft.state {
                        StateRole::Leader => "leader",
                        StateRole::Follower => "follower",
                        StateRole::Candidate => "candidate",
                        StateRole::PreCandidate => "precandidate",
                    };
                    writeln!(
                        out,
                        "n{n}: {role} term={} leader={} commit={} applied={}",
                        raft.term, raft.leader_id, raft.raft_log.committed, rep.applied_index
                    )?;
                }
            }
            name => return Err(format!("unknown command {name}").into()),
        }
        Ok(out)
    }
}

fn run_script(name: &str) -> std::io::Result<()> {
    let sim = Sim::new().map_err(std::io::Error::other)?;
    let mut runner = SimRunner {
        sim,
        pending: Vec::new(),
    };
    goldenscript::run(&mut runner, format!("src/testscripts/raft/{name}"))
}

#[test]
fn leader_failover() -> std::io::Result<()> {
    run_script("leader_failover")
}

#[test]
fn split() -> std::io::Result<()> {
    run_script("split")
}
