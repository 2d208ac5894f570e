//! The replicated range store, end to end: real `bini` processes on loopback.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bini_e2e::{get, put, scan, scan_all, wait_for, Cluster};
use bini_proto::{
    ChangeReplicasRequest, NodeStatusRequest, RangeInfoRequest, TransferLeaseRequest,
};

/// Node id of each node index.
async fn node_ids(c: &Cluster) -> Vec<u64> {
    let mut ids = Vec::new();
    for i in 0..c.nodes.len() {
        let id = wait_for(
            Duration::from_secs(30),
            &format!("node {i} to have an id"),
            || async {
                let mut n = c.node(i).await;
                n.node_status(NodeStatusRequest {})
                    .await
                    .ok()
                    .map(|r| r.into_inner().node_id)
            },
        )
        .await;
        ids.push(id);
    }
    ids
}

fn key(i: usize) -> Vec<u8> {
    format!("k{i:06}").into_bytes()
}

fn value(i: usize) -> Vec<u8> {
    format!("value-{i}").into_bytes()
}

/// Writes keys `0..n` in batches of `per_batch`, spreading batches over `nodes`.
async fn load(
    c: &Arc<Cluster>,
    n: usize,
    per_batch: usize,
    nodes: &[usize],
    value_of: fn(usize) -> Vec<u8>,
) {
    let batches: Vec<usize> = (0..n.div_ceil(per_batch)).collect();
    let next = Arc::new(Mutex::new(batches.into_iter()));
    let mut tasks = Vec::new();
    for w in 0..8 {
        let (c, next, nodes) = (c.clone(), next.clone(), nodes.to_vec());
        tasks.push(tokio::spawn(async move {
            let mut client = c.kv(nodes[w % nodes.len()]).await;
            loop {
                let Some(b) = next.lock().expect("lock").next() else {
                    return;
                };
                let reqs = (b * per_batch..((b + 1) * per_batch).min(n))
                    .map(|i| put(key(i), value_of(i)))
                    .collect();
                client
                    .batch(bini_proto::BatchRequest {
                        requests: reqs,
                        header: None,
                    })
                    .await
                    .unwrap_or_else(|e| panic!("batch {b} failed: {e}"));
            }
        }));
    }
    for t in tasks {
        t.await.expect("writer");
    }
}

async fn count_and_check(c: &Cluster, via: usize, n: usize) {
    let rows = scan_all(c, via, b"k", b"l", 10_000).await.expect("scan");
    assert_eq!(rows.len(), n, "rows readable through node {via}");
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row.key, key(i));
        assert_eq!(
            row.value,
            value(i),
            "value of {}",
            String::from_utf8_lossy(&row.key)
        );
    }
}

async fn leaseholder_of(c: &Cluster, via: usize, k: &[u8]) -> (u64, u64) {
    wait_for(
        Duration::from_secs(30),
        "a leaseholder for the key's range",
        || async {
            let ranges = c.ranges(via).await?;
            let r = ranges.into_iter().find(|r| {
                let d = r.descriptor.as_ref().expect("descriptor");
                d.start_key.as_slice() <= k && k < d.end_key.as_slice()
            })?;
            let lh = r.leaseholder;
            (lh != 0).then(|| (r.descriptor.expect("descriptor").range_id, lh))
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_survive_sigkill_of_a_leaseholder() {
    let c = Cluster::start(3, &[]).await;
    c.wait_replicated(0, 3, Duration::from_secs(60)).await;
    let ids = node_ids(&c).await;
    let c = Arc::new(c);
    load(&c, 50_000, 100, &[0, 1, 2], value).await;

    // Kill the leaseholder of the data's range: the hardest node to lose.
    let (range, lh) = leaseholder_of(&c, 0, &key(25_000)).await;
    let victim = ids
        .iter()
        .position(|&id| id == lh)
        .expect("leaseholder is a node");
    let survivors: Vec<usize> = (0..3).filter(|&i| i != victim).collect();
    let killed_at = Instant::now();
    c.kill(victim);

    let write = c
        .batch(survivors[0], vec![put(key(25_000), value(25_000))])
        .await;
    let took = killed_at.elapsed();
    write.expect("write after the kill");
    assert!(
        took < Duration::from_secs(3),
        "writes resumed {took:?} after the kill"
    );

    for &s in &survivors {
        count_and_check(&c, s, 50_000).await;
    }

    // The killed node comes back on its data, catches up, and serves the data itself.
    c.restart(victim);
    let (_, new_lh) = leaseholder_of(&c, survivors[0], &key(25_000)).await;
    let lh_index = ids
        .iter()
        .position(|&id| id == new_lh)
        .expect("leaseholder is a node");
    let target_applied = {
        let mut n = c.node(lh_index).await;
        n.range_info(RangeInfoRequest { range_id: range })
            .await
            .expect("range info")
            .into_inner()
            .info
            .expect("info")
            .applied_index
    };
    wait_for(
        Duration::from_secs(60),
        "the restarted node to catch up",
        || async {
            let mut n = c.node(victim).await;
            let info = n
                .range_info(RangeInfoRequest { range_id: range })
                .await
                .ok()?
                .into_inner()
                .info?;
            (info.applied_index >= target_applied).then_some(())
        },
    )
    .await;
    wait_for(
        Duration::from_secs(30),
        "the lease to move to the restarted node",
        || async {
            let (_, lh) = leaseholder_of(&c, survivors[0], &key(25_000)).await;
            let lh_index = ids.iter().position(|&id| id == lh)?;
            if lh_index == victim {
                return Some(());
            }
            let mut n = c.node(lh_index).await;
            let _ = n
                .transfer_lease(TransferLeaseRequest {
                    range_id: range,
                    target_node: ids[victim],
                })
                .await;
            None
        },
    )
    .await;
    count_and_check(&c, victim, 50_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ranges_split_by_size_and_leases_spread() {
    let c = Cluster::start(3, &[("BINI_RANGE_MAX_BYTES", "1048576")]).await;
    c.wait_replicated(0, 3, Duration::from_secs(60)).await;
    let c = Arc::new(c);
    // 64 MiB: 16,384 values of 4 KiB.
    load(&c, 16_384, 16, &[0, 1, 2], |i| {
        let mut v = format!("value-{i}-").into_bytes();
        v.resize(4096, b'x');
        v
    })
    .await;
    let ranges = wait_for(
        Duration::from_secs(180),
        "at least 32 ranges, 3 replicas each, leases spread",
        || async {
            let ranges = c.ranges(0).await?;
            if ranges.len() < 32 {
                return None;
            }
            let mut leases: HashMap<u64, usize> = HashMap::new();
            for r in &ranges {
                let d = r.descriptor.as_ref()?;
                if d.replicas.len() != 3
                    || d.replicas
                        .iter()
                        .any(|x| x.kind != bini_proto::ReplicaKind::Voter as i32)
                {
                    return None;
                }
                let lh = r.leaseholder;
                if lh == 0 {
                    return None;
                }
                *leases.entry(lh).or_default() += 1;
            }
            let max = leases.values().copied().max().unwrap_or(0);
            (max * 100 <= ranges.len() * 60).then_some(ranges)
        },
    )
    .await;
    assert!(ranges.len() >= 32);
    let rows = scan_all(&c, 1, b"k", b"l", 1000).await.expect("scan");
    assert_eq!(rows.len(), 16_384, "every key readable after the splits");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replica_moves_to_a_new_node_under_writes() {
    let mut c = Cluster::start(3, &[]).await;
    c.wait_replicated(0, 3, Duration::from_secs(60)).await;
    let fourth = c.add_node();
    let ids = node_ids(&c).await;
    let (from, to) = (ids[0], ids[fourth]);
    wait_for(
        Duration::from_secs(30),
        "the 4th node to be known",
        || async {
            let mut n = c.node(1).await;
            let nodes = n
                .node_status(NodeStatusRequest {})
                .await
                .ok()?
                .into_inner()
                .nodes;
            nodes.iter().any(|x| x.node_id == to).then_some(())
        },
    )
    .await;
    let (range, _) = leaseholder_of(&c, 0, b"w").await;

    let c = Arc::new(c);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (c, stop) = (c.clone(), stop.clone());
        tokio::spawn(async move {
            let mut client = c.kv(2).await;
            let (mut ok, mut errors) = (0usize, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let k = format!("w{ok:06}");
                match client
                    .batch(bini_proto::BatchRequest {
                        requests: vec![put(k.clone(), k)],
                        header: None,
                    })
                    .await
                {
                    Ok(_) => ok += 1,
                    Err(e) => errors.push(e.to_string()),
                }
            }
            (ok, errors)
        })
    };
    wait_for(
        Duration::from_secs(10),
        "the writer to get going",
        || async {
            let r = c.batch(1, vec![get("w000010")]).await.ok()?;
            r[0].value.is_some().then_some(())
        },
    )
    .await;
    let mut n = c.node(1).await;
    let desc = n
        .change_replicas(ChangeReplicasRequest {
            range_id: range,
            add_nodes: vec![to],
            remove_nodes: vec![from],
        })
        .await
        .expect("move the replica")
        .into_inner()
        .descriptor
        .expect("descriptor");
    let mut members: Vec<u64> = desc.replicas.iter().map(|r| r.node_id).collect();
    members.sort();
    let mut want: Vec<u64> = ids.iter().copied().filter(|&i| i != from).collect();
    want.sort();
    assert_eq!(members, want);
    // Keep writing a little past the change, then stop.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, errors) = writer.await.expect("writer");
    assert!(
        errors.is_empty(),
        "writer saw errors during the move: {errors:?}"
    );
    assert!(ok > 10, "the writer kept writing ({ok} writes)");

    let mut n4 = c.node(fourth).await;
    let info = n4
        .range_info(RangeInfoRequest { range_id: range })
        .await
        .expect("info")
        .into_inner();
    let info = info.info.expect("node 4 has a replica of the range");
    assert!(
        info.snapshots_applied >= 1,
        "node 4 got the range by snapshot"
    );
    // Every acknowledged write is readable.
    let resp = c.batch(3, vec![scan("w", "x")]).await.expect("scan");
    assert_eq!(resp[0].rows.len(), ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_writes_survive_sigkill_of_every_node() {
    let c = Cluster::start(3, &[]).await;
    c.wait_replicated(0, 3, Duration::from_secs(60)).await;
    let c = Arc::new(c);
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..8 {
        let (c, acked, stop) = (c.clone(), acked.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let mut client = c.kv(w % 3).await;
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let k = format!("a{w}-{i:07}");
                let call = client.batch(bini_proto::BatchRequest {
                    requests: vec![put(k.clone(), k.clone())],
                    header: None,
                });
                match tokio::time::timeout(Duration::from_secs(2), call).await {
                    Ok(Ok(_)) => acked.lock().expect("lock").push(k),
                    _ => return,
                }
                i += 1;
            }
        }));
    }
    wait_for(
        Duration::from_secs(30),
        "some acknowledged writes",
        || async { (acked.lock().expect("lock").len() >= 500).then_some(()) },
    )
    .await;
    for i in 0..3 {
        c.kill(i);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in writers {
        let _ = w.await;
    }
    let acked = acked.lock().expect("lock").clone();
    for i in 0..3 {
        c.restart(i);
    }
    let resp = wait_for(
        Duration::from_secs(60),
        "the restarted cluster to answer a scan",
        || async { c.batch(0, vec![scan("a", "b")]).await.ok() },
    )
    .await;
    let present: std::collections::HashSet<Vec<u8>> =
        resp[0].rows.iter().map(|r| r.key.clone()).collect();
    let missing: Vec<&String> = acked
        .iter()
        .filter(|k| !present.contains(k.as_bytes()))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged writes lost, e.g. {:?}",
        missing.len(),
        acked.len(),
        &missing[..missing.len().min(5)]
    );
}
