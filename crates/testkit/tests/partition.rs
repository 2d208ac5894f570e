//! A leaseholder cut off from its followers: the majority elects a new leaseholder that takes
//! writes within 3 s, and the old one never serves a read that misses an acknowledged write.
//!
//! Whether the old leaseholder still believes it leads while the new one acknowledges writes
//! depends on how Raft's timers line up, so the scenario runs several rounds, each partitioning
//! whichever node holds the lease then.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bini_kv::{RangeId, StoreConfig};
use bini_proto::{request, GetRequest, PutRequest, Request};
use bini_testkit::{wait_for, TestCluster};

const ROUNDS: usize = 3;

fn put(key: &[u8], v: u64) -> Request {
    Request {
        kind: Some(request::Kind::Put(PutRequest {
            key: key.to_vec(),
            value: v.to_be_bytes().to_vec(),
        })),
    }
}

fn get(key: &[u8]) -> Request {
    Request {
        kind: Some(request::Kind::Get(GetRequest { key: key.to_vec() })),
    }
}

fn decode(v: Option<&Vec<u8>>) -> Option<u64> {
    Some(u64::from_be_bytes(v?.as_slice().try_into().ok()?))
}

/// One round: partition the current leaseholder, write on the majority, read on the old one,
/// check, heal. Returns the next value to write.
async fn round(c: &TestCluster, key: &'static [u8], mut v: u64) -> u64 {
    let (range, lh) = wait_for(
        Duration::from_secs(30),
        "a leaseholder for the key",
        || async {
            let ranges = c.ranges(0).await;
            let (d, lh) = ranges
                .into_iter()
                .find(|(d, _)| d.start_key.as_slice() <= key && key < d.end_key.as_slice())?;
            Some((RangeId(d.range_id), lh?))
        },
    )
    .await;
    let old = c.index_of(lh).expect("leaseholder index");
    let others: Vec<usize> = (0..c.len()).filter(|&i| i != old).collect();
    c.sender(old)
        .send(vec![put(key, v)])
        .await
        .expect("initial write");
    v += 1;

    // Read continuously from the old leaseholder's own replica, recording when each read
    // started and what it saw.
    let reads: Arc<Mutex<Vec<(Instant, u64)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let store = c.node(old).store().expect("store");
        let (reads, stop) = (reads.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                if let Ok(r) = store
                    .execute(range, Default::default(), vec![get(key)])
                    .await
                {
                    if let Some(seen) = decode(r[0].value.as_ref()) {
                        reads.lock().expect("lock").push((started, seen));
                    }
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
    };
    wait_for(
        Duration::from_secs(5),
        "the leaseholder to serve reads",
        || async { (!reads.lock().expect("lock").is_empty()).then_some(()) },
    )
    .await;

    let cut_at = Instant::now();
    c.partition(&[old]);

    // One writer on the key, one write at a time (so values grow in the order they apply),
    // straight at the majority's replicas so it is acknowledged the moment one of them leads.
    let acks: Arc<Mutex<Vec<(Instant, u64)>>> = Arc::default();
    let writer = {
        let stores: Vec<_> = others
            .iter()
            .map(|&i| c.node(i).store().expect("store"))
            .collect();
        let acks = acks.clone();
        tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(4);
            while Instant::now() < deadline {
                let mut acked = false;
                for s in &stores {
                    if s.execute(range, Default::default(), vec![put(key, v)])
                        .await
                        .is_ok()
                    {
                        acks.lock().expect("lock").push((Instant::now(), v));
                        acked = true;
                        break;
                    }
                }
                if acked {
                    v += 1;
                } else {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
            v
        })
    };
    // Probes through the majority's routers measure when the range takes writes again: a new
    // attempt every 50 ms, each on its own key of the same range.
    let probe_acks: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let mut probes = Vec::new();
    for n in 0..60u64 {
        let (sender, probe_acks) = (c.sender(others[(n % 2) as usize]), probe_acks.clone());
        probes.push(tokio::spawn(async move {
            let k = format!("{}/probe/{n}", String::from_utf8_lossy(key));
            if sender.send(vec![put(k.as_bytes(), n)]).await.is_ok() {
                probe_acks.lock().expect("lock").push(Instant::now());
            }
        }));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for p in probes {
        let _ = p.await;
    }
    let next_v = writer.await.expect("writer");
    stop.store(true, Ordering::Relaxed);
    reader.await.expect("reader");

    let first = probe_acks
        .lock()
        .expect("lock")
        .iter()
        .copied()
        .min()
        .expect("some write succeeded");
    let took = first.duration_since(cut_at);
    assert!(
        took < Duration::from_secs(3),
        "the majority took writes {took:?} after the partition"
    );
    let new_lh = c
        .ranges(others[0])
        .await
        .into_iter()
        .find(|(d, _)| d.range_id == range.0)
        .and_then(|(_, l)| l);
    assert!(
        new_lh.is_some_and(|l| l != c.node_id(old)),
        "a new leaseholder took over: {new_lh:?}"
    );

    // Linearizability of the old leaseholder's reads: a read that started after a write was
    // acknowledged must see that write or a later one.
    let acks = acks.lock().expect("lock").clone();
    assert!(!acks.is_empty(), "the majority acknowledged writes");
    for (started, seen) in reads.lock().expect("lock").iter() {
        let must_see = acks
            .iter()
            .filter(|(t, _)| t < started)
            .map(|(_, v)| *v)
            .max()
            .unwrap_or(0);
        assert!(
            *seen >= must_see,
            "stale read: saw {seen} after {must_see} was acknowledged"
        );
    }

    // After healing, the old leaseholder catches up.
    c.heal();
    let last = acks.iter().map(|(_, v)| *v).max().expect("acks");
    wait_for(
        Duration::from_secs(20),
        "the healed node to see the latest write",
        || async {
            let r = c.sender(old).send(vec![get(key)]).await.ok()?;
            (decode(r[0].value.as_ref())? >= last).then_some(())
        },
    )
    .await;
    next_v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn partitioned_leaseholder_never_serves_stale_reads() {
    let c = TestCluster::start(3, StoreConfig::default()).await;
    c.wait_replicated(3, Duration::from_secs(60)).await;
    let mut v = 1;
    for _ in 0..ROUNDS {
        v = round(&c, b"partition/key", v).await;
    }
}
