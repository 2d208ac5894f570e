//! Garbage on the listen port and on every gRPC endpoint gets an error, never a crash; and
//! well-formed hostile messages — Raft proposals and votes from outside the cluster or
//! outside a range, conf changes removing every voter, system-key writes and internal
//! commands through the client KV API, forged gossip — change nothing: every node's store
//! keeps running and serving, and nothing is committed that a client did not ask for.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bini_e2e::{get, put, scan, Cluster};
use bini_proto::{
    ChangeReplicasRequest, RaftMessage, RaftMessageBatch, RangeBatchRequest, Request,
    SnapshotChunk, TransferLeaseRequest,
};
use bytes::{Buf, BufMut};
use prost::Message;
use rand::{Rng, SeedableRng};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::Channel;
use tonic::Status;

/// Sends raw bytes as a gRPC message body and returns raw bytes.
#[derive(Default, Clone)]
struct RawCodec;

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }
    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

const UNARY: &[&str] = &[
    "/bini.Node/Init",
    "/bini.Node/Join",
    "/bini.Node/Gossip",
    "/bini.Node/RangeBatch",
    "/bini.Node/RangeInfo",
    "/bini.Node/DebugRanges",
    "/bini.Node/ChangeReplicas",
    "/bini.Node/TransferLease",
    "/bini.Node/NodeStatus",
    "/bini.Kv/Batch",
];
const STREAMING: &[&str] = &["/bini.Raft/RaftMessages", "/bini.Raft/Snapshot"];

async fn raw_unary(ch: Channel, path: &'static str, body: Vec<u8>) -> Result<Vec<u8>, Status> {
    let mut grpc = tonic::client::Grpc::new(ch);
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    grpc.unary(
        tonic::Request::new(body),
        path.parse().expect("path"),
        RawCodec,
    )
    .await
    .map(|r| r.into_inner())
}

async fn raw_stream(
    ch: Channel,
    path: &'static str,
    bodies: Vec<Vec<u8>>,
) -> Result<Vec<u8>, Status> {
    let mut grpc = tonic::client::Grpc::new(ch);
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    let stream = tokio_stream::iter(bodies);
    grpc.client_streaming(
        tonic::Request::new(stream),
        path.parse().expect("path"),
        RawCodec,
    )
    .await
    .map(|r| r.into_inner())
}

async fn assert_alive(c: &Cluster, round: &str) {
    for i in 0..c.nodes.len() {
        assert_alive_on(c, i, round).await;
    }
}

fn tcp_garbage(addr: &str, payload: &[u8]) {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = s.write_all(payload);
    let mut buf = [0u8; 4096];
    // Whatever comes back (an error frame, a GOAWAY, or a closed connection) is fine.
    let _ = s.read(&mut buf);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn garbage_never_crashes_a_node() {
    let c = Cluster::start(1, &[]).await;
    c.wait_replicated(0, 1, Duration::from_secs(60)).await;
    assert_alive(&c, "startup").await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(0xb1e1);
    let addr = c.nodes[0].addr.clone();

    // 1. Raw bytes on the listen port.
    let mut payloads: Vec<Vec<u8>> = vec![
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\xff\xff\xff\xff\xff\xff\xff\xff\xff".to_vec(),
        vec![0u8; 64],
        vec![0xffu8; 100_000],
        b"\x00\x00\x00\x08\x04\xd2\x16\x2f".to_vec(), // a Postgres SSLRequest
    ];
    for _ in 0..20 {
        let n = rng.random_range(1..2048);
        payloads.push((0..n).map(|_| rng.random()).collect());
    }
    for p in &payloads {
        tcp_garbage(&addr, p);
    }
    assert_alive(&c, "raw bytes on the listen port").await;

    // 2. Random bytes as the body of every gRPC method.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    for round in 0..5 {
        for &path in UNARY {
            let n = rng.random_range(0..512);
            let body: Vec<u8> = (0..n).map(|_| rng.random()).collect();
            let _ = raw_unary(channel.clone(), path, body).await;
        }
        for &path in STREAMING {
            let bodies: Vec<Vec<u8>> = (0..3)
                .map(|_| {
                    (0..rng.random_range(0..512))
                        .map(|_| rng.random())
                        .collect()
                })
                .collect();
            let _ = raw_stream(channel.clone(), path, bodies).await;
        }
        assert_alive(&c, &format!("random gRPC bodies, round {round}")).await;
    }

    // 3. Well-formed messages with nonsense inside.
    let batch = RaftMessageBatch {
        from_node: 77,
        from_addr: "127.0.0.1:1".into(),
        messages: (0..50)
            .map(|i| RaftMessage {
                range_id: rng.random_range(0..5),
                message: (0..rng.random_range(0..200))
                    .map(|_| rng.random())
                    .collect(),
                generation: i,
            })
            .collect(),
    };
    let _ = raw_stream(
        channel.clone(),
        "/bini.Raft/RaftMessages",
        vec![batch.encode_to_vec()],
    )
    .await;
    let snap = SnapshotChunk {
        from_node: 77,
        range_id: 2,
        header: vec![1, 2, 3],
        data: vec![9; 100],
        ..Default::default()
    };
    let _ = raw_stream(
        channel.clone(),
        "/bini.Raft/Snapshot",
        vec![snap.encode_to_vec()],
    )
    .await;
    let bogus: Vec<Request> = vec![
        Request { kind: None },
        put(Vec::<u8>::new(), b"empty key".to_vec()),
        put(b"\x01local".to_vec(), b"x".to_vec()),
        put(b"\xff\xff\xff".to_vec(), b"x".to_vec()),
        scan("z", "a"),
        scan(Vec::<u8>::new(), Vec::<u8>::new()),
        Request {
            kind: Some(bini_proto::request::Kind::Increment(
                bini_proto::IncrementRequest {
                    key: b"alive-startup".to_vec(),
                    delta: 1,
                },
            )),
        },
    ];
    for r in bogus {
        let res = c.batch(0, vec![r.clone()]).await;
        let _ = res;
        let rb = RangeBatchRequest {
            range_id: rng.random_range(0..100),
            requests: vec![r],
            header: None,
        };
        let _ = raw_unary(channel.clone(), "/bini.Node/RangeBatch", rb.encode_to_vec()).await;
    }
    let cr = ChangeReplicasRequest {
        range_id: 999,
        add_nodes: vec![5],
        remove_nodes: vec![],
    };
    let _ = tokio::time::timeout(
        Duration::from_secs(5),
        raw_unary(
            channel.clone(),
            "/bini.Node/ChangeReplicas",
            cr.encode_to_vec(),
        ),
    )
    .await;
    let tl = TransferLeaseRequest {
        range_id: 2,
        target_node: 42,
    };
    let _ = raw_unary(
        channel.clone(),
        "/bini.Node/TransferLease",
        tl.encode_to_vec(),
    )
    .await;
    assert_alive(&c, "nonsense in well-formed messages").await;
}

/// Sends messages on a client stream, naming `identity` (cluster id, node id) as a node would.
async fn stream_as(
    ch: Channel,
    path: &'static str,
    bodies: Vec<Vec<u8>>,
    identity: Option<(&str, u64)>,
) -> Result<Vec<u8>, Status> {
    let mut grpc = tonic::client::Grpc::new(ch);
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    let mut req = tonic::Request::new(tokio_stream::iter(bodies));
    add_identity(req.metadata_mut(), identity);
    grpc.client_streaming(req, path.parse().expect("path"), RawCodec)
        .await
        .map(|r| r.into_inner())
}

/// A unary call naming `identity`.
async fn unary_as(
    ch: Channel,
    path: &'static str,
    body: Vec<u8>,
    identity: Option<(&str, u64)>,
) -> Result<Vec<u8>, Status> {
    let mut grpc = tonic::client::Grpc::new(ch);
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    let mut req = tonic::Request::new(body);
    add_identity(req.metadata_mut(), identity);
    grpc.unary(req, path.parse().expect("path"), RawCodec)
        .await
        .map(|r| r.into_inner())
}

fn add_identity(meta: &mut tonic::metadata::MetadataMap, identity: Option<(&str, u64)>) {
    if let Some((cluster, node)) = identity {
        meta.insert("bini-cluster-id", cluster.parse().expect("ascii"));
        meta.insert("bini-node-id", node.to_string().parse().expect("ascii"));
    }
}

/// An encoded Raft message.
fn raft_message(
    kind: raft::eraftpb::MessageType,
    from: u64,
    to: u64,
    term: u64,
    entries: Vec<raft::eraftpb::Entry>,
) -> Vec<u8> {
    use protobuf::Message as _;
    let mut m = raft::eraftpb::Message::default();
    m.set_msg_type(kind);
    m.from = from;
    m.to = to;
    m.term = term;
    m.index = 5;
    m.log_term = 5;
    m.commit = 1_000;
    m.set_entries(entries.into());
    m.write_to_bytes().expect("encode")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_peer_messages_change_nothing() {
    use protobuf::Message as _;
    use raft::eraftpb::MessageType as T;
    use raft::eraftpb::{ConfChangeSingle, ConfChangeType, ConfChangeV2, Entry, EntryType};
    let c = Cluster::start(3, &[]).await;
    let before = c.wait_replicated(0, 3, Duration::from_secs(60)).await;
    for i in 0..3 {
        assert_alive_on(&c, i, "startup").await;
    }
    let status = c
        .node(0)
        .await
        .node_status(bini_proto::NodeStatusRequest {})
        .await
        .expect("status")
        .into_inner();
    let (cluster, me) = (status.cluster_id.clone(), status.node_id);
    let other = status
        .nodes
        .iter()
        .map(|n| n.node_id)
        .find(|n| *n != me)
        .expect("another node");
    let addr = c.nodes[0].addr.clone();
    let ch = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");

    // A proposal that would write a key, an empty proposal, a conf change removing every
    // voter: proposals never come from the network.
    let forged_put = bini_proto::RaftCommand {
        requests: vec![put(b"forged-proposal".to_vec(), b"x".to_vec())],
        ..Default::default()
    };
    let remove_all = {
        let mut cc = ConfChangeV2::default();
        for n in status.nodes.iter().map(|n| n.node_id) {
            let mut s = ConfChangeSingle::default();
            s.set_change_type(ConfChangeType::RemoveNode);
            s.node_id = n;
            cc.mut_changes().push(s);
        }
        cc.write_to_bytes().expect("encode")
    };
    let entry = |kind: EntryType, data: Vec<u8>| {
        let mut e = Entry::default();
        e.set_entry_type(kind);
        e.data = data.into();
        e
    };
    let mut messages = Vec::new();
    for range_id in [1, 2] {
        messages.push(raft_message(T::MsgPropose, other, me, 0, vec![]));
        messages.push(raft_message(
            T::MsgPropose,
            other,
            me,
            0,
            vec![entry(
                EntryType::EntryNormal,
                prost::Message::encode_to_vec(&forged_put),
            )],
        ));
        messages.push(raft_message(
            T::MsgPropose,
            other,
            me,
            0,
            vec![entry(EntryType::EntryConfChangeV2, remove_all.clone())],
        ));
        // Local-only kinds, and messages speaking for a node that is not in the cluster.
        messages.push(raft_message(T::MsgHup, other, me, 0, vec![]));
        messages.push(raft_message(T::MsgRequestVote, 77, me, 1_000_000, vec![]));
        messages.push(raft_message(T::MsgHeartbeat, 77, me, 1_000_000, vec![]));
        messages.push(raft_message(
            T::MsgAppend,
            77,
            me,
            1_000_000,
            vec![entry(
                EntryType::EntryNormal,
                prost::Message::encode_to_vec(&forged_put),
            )],
        ));
        let _ = range_id;
    }
    let batch = |from_node: u64, raw: &[Vec<u8>]| RaftMessageBatch {
        from_node,
        from_addr: "127.0.0.1:1".into(),
        messages: raw
            .iter()
            .enumerate()
            .map(|(i, m)| RaftMessage {
                range_id: 1 + (i as u64 % 2),
                message: m.clone(),
                generation: 1,
            })
            .collect(),
    };
    // Without an identity, from another cluster, or from a node the cluster does not have,
    // the stream itself is refused.
    for identity in [
        None,
        Some(("another-cluster", other)),
        Some((cluster.as_str(), 77)),
    ] {
        let r = stream_as(
            ch.clone(),
            "/bini.Raft/RaftMessages",
            vec![batch(other, &messages).encode_to_vec()],
            identity,
        )
        .await;
        assert_eq!(
            r.expect_err("refused").code(),
            tonic::Code::PermissionDenied,
            "{identity:?}"
        );
    }
    // As a member: the stream is taken, every message is dropped on the store thread; and a
    // batch speaking for another node than the stream's is dropped whole.
    let _ = stream_as(
        ch.clone(),
        "/bini.Raft/RaftMessages",
        vec![
            batch(other, &messages).encode_to_vec(),
            batch(me, &messages).encode_to_vec(),
        ],
        Some((&cluster, other)),
    )
    .await;
    let snap = SnapshotChunk {
        from_node: 77,
        range_id: 2,
        header: raft_message(T::MsgSnapshot, 77, me, 1_000_000, vec![]),
        ..Default::default()
    };
    let r = stream_as(
        ch.clone(),
        "/bini.Raft/Snapshot",
        vec![snap.encode_to_vec()],
        Some((&cluster, 77)),
    )
    .await;
    assert_eq!(
        r.expect_err("refused").code(),
        tonic::Code::PermissionDenied
    );

    // The client KV API takes no system-key writes or internal commands from a non-node.
    let internal = [
        put(b"\x02forged-meta".to_vec(), b"x".to_vec()),
        put(b"\x03forged-system".to_vec(), b"x".to_vec()),
        Request {
            kind: Some(bini_proto::request::Kind::EndTxn(
                bini_proto::EndTxnRequest {
                    txn: Some(bini_proto::TxnMeta {
                        id: vec![7; 16],
                        anchor: b"forged-anchor".to_vec(),
                        ..Default::default()
                    }),
                    commit: true,
                    ..Default::default()
                },
            )),
        },
        Request {
            kind: Some(bini_proto::request::Kind::PutDescriptor(
                before[1].descriptor.clone().expect("descriptor"),
            )),
        },
    ];
    for r in internal {
        let e = c.batch(0, vec![r]).await.expect_err("reserved for nodes");
        assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e}");
    }
    // Range batches and gossip are for nodes only; a member's gossip dated in the future is
    // ignored rather than allowed to win every later merge.
    let rb = RangeBatchRequest {
        range_id: 2,
        requests: vec![put(b"forged-range-batch".to_vec(), b"x".to_vec())],
        header: None,
    };
    let r = unary_as(
        ch.clone(),
        "/bini.Node/RangeBatch",
        rb.encode_to_vec(),
        None,
    )
    .await;
    assert_eq!(
        r.expect_err("refused").code(),
        tonic::Code::PermissionDenied
    );
    let forged_gossip = bini_proto::GossipRequest {
        nodes: vec![bini_proto::NodeInfo {
            node_id: other,
            address: "127.0.0.1:1".into(),
            updated_at_nanos: u64::MAX / 2,
            ..Default::default()
        }],
        first_range: None,
    };
    for identity in [None, Some((cluster.as_str(), 77))] {
        let r = unary_as(
            ch.clone(),
            "/bini.Node/Gossip",
            forged_gossip.encode_to_vec(),
            identity,
        )
        .await;
        assert_eq!(
            r.expect_err("refused").code(),
            tonic::Code::PermissionDenied
        );
    }
    let _ = unary_as(
        ch.clone(),
        "/bini.Node/Gossip",
        forged_gossip.encode_to_vec(),
        Some((&cluster, other)),
    )
    .await
    .expect("a member's gossip is taken");

    // Every node still runs its store and serves; the ranges are as they were; no forged
    // write landed.
    for i in 0..3 {
        assert_alive_on(&c, i, "hostile messages").await;
    }
    let after = c.wait_replicated(0, 3, Duration::from_secs(30)).await;
    let replicas = |rs: &[bini_proto::DebugRange]| -> Vec<(u64, Vec<u64>)> {
        rs.iter()
            .filter_map(|r| r.descriptor.as_ref())
            .map(|d| {
                let mut nodes: Vec<u64> = d.replicas.iter().map(|x| x.node_id).collect();
                nodes.sort();
                (d.range_id, nodes)
            })
            .collect()
    };
    assert_eq!(replicas(&after), replicas(&before), "replicas changed");
    for key in [
        &b"forged-proposal"[..],
        b"\x02forged-meta",
        b"\x03forged-system",
        b"forged-range-batch",
    ] {
        let r = c.batch(1, vec![get(key.to_vec())]).await.expect("read");
        assert_eq!(
            r[0].value,
            None,
            "{:?} was written",
            String::from_utf8_lossy(key)
        );
    }
}

/// Checks that node `i` runs, its store thread runs, and it serves a write and a read.
async fn assert_alive_on(c: &Cluster, i: usize, round: &str) {
    assert!(c.is_running(i), "node {i} died after {round}");
    let status = c
        .node(i)
        .await
        .node_status(bini_proto::NodeStatusRequest {})
        .await
        .unwrap_or_else(|e| panic!("node {i} status after {round}: {e}"))
        .into_inner();
    assert!(
        status.store_running,
        "node {i}'s store stopped after {round}"
    );
    let k = format!("alive-{round}-{i}").into_bytes();
    c.batch(i, vec![put(k.clone(), b"yes".to_vec())])
        .await
        .unwrap_or_else(|e| panic!("write through node {i} after {round}: {e}"));
    let r = c
        .batch(i, vec![get(k)])
        .await
        .unwrap_or_else(|e| panic!("read through node {i} after {round}: {e}"));
    assert_eq!(r[0].value.as_deref(), Some(&b"yes"[..]));
}
