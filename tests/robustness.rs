//! Garbage on the listen port and on every gRPC endpoint gets an error, never a crash.

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
        assert!(c.is_running(i), "node {i} died after {round}");
    }
    let k = format!("alive-{round}").into_bytes();
    c.batch(0, vec![put(k.clone(), b"yes".to_vec())])
        .await
        .unwrap_or_else(|e| panic!("write after {round}: {e}"));
    let r = c
        .batch(0, vec![get(k)])
        .await
        .unwrap_or_else(|e| panic!("read after {round}: {e}"));
    assert_eq!(
        r[0].value.as_deref(),
        Some(&b"yes"[..]),
        "node answers correctly after {round}"
    );
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
