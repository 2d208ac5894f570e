//! A leaseholder cut off from its followers: the majority elects a new leaseholder that takes
//! writes within 3 s, and the old one never serves a read that misses an acknowledged write.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bini_kv::{RangeId, StoreConfig};
use bini_proto::{request, GetRequest, PutRequest, Request};
use bini_testkit::{wait_for, TestCluster};

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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn partitioned_leaseholder_never_serves_stale_reads() {
    let c = TestCluster::start(3, StoreConfig::default()).await;
    let key = b"partition/key";
    let ranges = c.wait_replicated(3, Duration::from_secs(60)).await;
    let (desc, lh) = ranges
        .iter()
        .find(|(d, _)| d.start_key.as_slice() <= &key[..] && &key[..] < d.end_key.as_slice())
        .cloned()
        .expect("a range holds the key");
    let range = RangeId(desc.range_id);
    let old = c
        .index_of(lh.expect("leaseholder"))
        .expect("leaseholder index");
    let others: Vec<usize> = (0..3).filter(|&i| i != old).collect();
    c.sender(others[0])
        .send(vec![put(key, 0)])
        .await
        .expect("initial write");

    // Read continuously from the old leaseholder's own replica, recording when each read
    // started and what it saw.
    let reads: Arc<Mutex<Vec<(Instant, u64)>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (store, reads, stop) = (
            c.node(old).store().expect("store"),
            reads.clone(),
            stop.clone(),
        );
        tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let started = Instant::now();
                if let Ok(r) = store.execute(range, vec![get(key)]).await {
                    if let Some(v) = r[0]
                        .value
                        .as_ref()
                        .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
                    {
                        reads
                            .lock()
                            .expect("lock")
                            .push((started, u64::from_be_bytes(v)));
                    }
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !reads.lock().expect("lock").is_empty(),
        "the leaseholder serves reads before the partition"
    );

    let cut_at = Instant::now();
    c.partition(&[old]);

    // Writers on the majority side: a new attempt every 50 ms, each value larger than the last.
    let acks: Arc<Mutex<Vec<(Instant, u64)>>> = Arc::default();
    let mut attempts = Vec::new();
    for v in 1..=80u64 {
        let (sender, acks) = (c.sender(others[(v % 2) as usize]), acks.clone());
        attempts.push(tokio::spawn(async move {
            if sender.send(vec![put(key, v)]).await.is_ok() {
                acks.lock().expect("lock").push((Instant::now(), v));
            }
        }));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for a in attempts {
        let _ = a.await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    reader.await.expect("reader");

    let acks = acks.lock().expect("lock").clone();
    let first = acks
        .iter()
        .map(|(t, _)| *t)
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
    // acknowledged must see that write (or a later one).
    let reads = reads.lock().expect("lock").clone();
    for (started, seen) in &reads {
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
            let v = u64::from_be_bytes(r[0].value.as_ref()?.as_slice().try_into().ok()?);
            (v >= last).then_some(())
        },
    )
    .await;
}
