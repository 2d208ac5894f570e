//! Append-only lists (the Elle "list-append" workload): concurrent transactions read lists and
//! append unique values to a few hundred keys. From the recorded history the checker derives,
//! for every key, the order of its versions (the final list), and from it the dependencies
//! between committed transactions — write-write (an append right after another's), write-read
//! (a read that saw another's append as its last element) and read-write (a read that missed
//! the next append). Serializability means that graph has no cycle. It also checks that no
//! acknowledged append is lost, no aborted append is ever seen, and every read is a prefix of
//! the final list.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bini_kv::StoreConfig;
use bini_testkit::{wait_for, TestCluster};
use bini_txn::Db;
use parking_lot::Mutex;
use rand::Rng;

const KEYS: usize = 200;
const WORKERS: usize = 8;

fn key(k: usize) -> Vec<u8> {
    format!("list/{k:03}").into_bytes()
}

fn decode(v: Option<Vec<u8>>) -> Vec<u64> {
    v.map(|b| {
        String::from_utf8_lossy(&b)
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|s| s.parse().expect("list element"))
            .collect()
    })
    .unwrap_or_default()
}

fn encode(l: &[u64]) -> Vec<u8> {
    l.iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(",")
        .into_bytes()
}

#[derive(Clone, Debug)]
enum Op {
    Read(usize, Vec<u64>),
    Append(usize, u64),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Status {
    Committed,
    Aborted,
    Unknown,
}

#[derive(Clone, Debug)]
struct Record {
    ops: Vec<Op>,
    status: Status,
}

async fn one_txn(
    db: &Db,
    plan: &[(usize, Option<u64>)],
    ops: &mut Vec<Op>,
) -> bini_txn::Result<()> {
    let mut txn = db.begin();
    for &(k, append) in plan {
        let list = decode(txn.get(&key(k)).await?);
        ops.push(Op::Read(k, list.clone()));
        if let Some(v) = append {
            let mut next = list;
            next.push(v);
            txn.put(&key(k), &encode(&next)).await?;
            ops.push(Op::Append(k, v));
        }
    }
    txn.commit().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn list_append_history_is_serializable() {
    let cluster = TestCluster::start(3, StoreConfig::default()).await;
    cluster.wait_replicated(3, Duration::from_secs(60)).await;
    for k in [50, 100, 150] {
        cluster.split_at(&key(k)).await;
    }
    let history = Arc::new(Mutex::new(Vec::<Record>::new()));
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut tasks = Vec::new();
    for w in 0..WORKERS {
        let db = cluster.db(w % 3);
        let history = history.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < deadline {
                let plan: Vec<(usize, Option<u64>)> = {
                    let mut rng = rand::rng();
                    (0..rng.random_range(1..=4))
                        .map(|_| {
                            // A small hot set, so transactions really contend.
                            let k = if rng.random_bool(0.5) {
                                rng.random_range(0..10)
                            } else {
                                rng.random_range(0..KEYS)
                            };
                            let append = rng.random_bool(0.6).then(|| {
                                n += 1;
                                (w as u64) * 1_000_000 + n
                            });
                            (k, append)
                        })
                        .collect()
                };
                let mut ops = Vec::new();
                let res =
                    tokio::time::timeout(Duration::from_secs(10), one_txn(&db, &plan, &mut ops))
                        .await;
                let status = match res {
                    Ok(Ok(())) => Status::Committed,
                    Ok(Err(e)) if e.is_retryable() => Status::Aborted,
                    _ => Status::Unknown,
                };
                history.lock().push(Record { ops, status });
            }
        }));
    }
    for t in tasks {
        t.await.expect("worker");
    }
    let db = cluster.db(0);
    let finals: Vec<Vec<u64>> = wait_for(Duration::from_secs(30), "the final read", || async {
        let mut txn = db.begin();
        let keys: Vec<Vec<u8>> = (0..KEYS).map(key).collect();
        let vals = txn.get_many(&keys).await.ok()?;
        txn.commit().await.ok()?;
        Some(vals.into_iter().map(decode).collect())
    })
    .await;
    let history = history.lock().clone();
    check(&history, &finals);
}

/// Checks a list-append history against the final lists; panics describing any anomaly.
fn check(history: &[Record], finals: &[Vec<u64>]) {
    let committed = history
        .iter()
        .filter(|r| r.status == Status::Committed)
        .count();
    assert!(committed >= 50, "too little progress: {committed} commits");
    // Who appended each value.
    let mut writer: HashMap<u64, usize> = HashMap::new();
    for (t, r) in history.iter().enumerate() {
        for op in &r.ops {
            if let Op::Append(_, v) = op {
                writer.insert(*v, t);
            }
        }
    }
    // Values in final lists are unique, appended by someone, never by an aborted transaction.
    let mut position: HashMap<u64, (usize, usize)> = HashMap::new();
    for (k, list) in finals.iter().enumerate() {
        for (i, v) in list.iter().enumerate() {
            assert!(
                position.insert(*v, (k, i)).is_none(),
                "value {v} appears twice"
            );
            let t = *writer
                .get(v)
                .unwrap_or_else(|| panic!("value {v} was never appended"));
            assert_ne!(
                history[t].status,
                Status::Aborted,
                "G1a: aborted append {v} is in the final list"
            );
        }
    }
    // A transaction "happened" if it committed, or if its outcome is unknown but its appends
    // are visible.
    let happened: Vec<bool> = history
        .iter()
        .map(|r| match r.status {
            Status::Committed => true,
            Status::Aborted => false,
            Status::Unknown => r
                .ops
                .iter()
                .any(|op| matches!(op, Op::Append(_, v) if position.contains_key(v))),
        })
        .collect();
    let mut edges: Vec<HashSet<usize>> = vec![HashSet::new(); history.len()];
    for (t, r) in history.iter().enumerate() {
        if r.status != Status::Committed {
            continue;
        }
        for op in &r.ops {
            match op {
                Op::Append(k, v) => {
                    let (fk, i) = *position
                        .get(v)
                        .unwrap_or_else(|| panic!("acknowledged append {v} to key {k} was lost"));
                    assert_eq!(fk, *k, "value {v} landed in the wrong list");
                    if i > 0 {
                        let prev = writer[&finals[*k][i - 1]];
                        if prev != t {
                            edges[prev].insert(t); // ww
                        }
                    }
                }
                Op::Read(k, seen) => {
                    let fin = &finals[*k];
                    assert!(
                        seen.len() <= fin.len() && fin[..seen.len()] == seen[..],
                        "read of key {k} {seen:?} is not a prefix of the final list {fin:?}"
                    );
                    for v in seen {
                        assert!(
                            happened[writer[v]],
                            "G1a: a committed read saw aborted append {v}"
                        );
                    }
                    if let Some(last) = seen.last() {
                        let w = writer[last];
                        if w != t {
                            edges[w].insert(t); // wr
                        }
                    }
                    if let Some(next) = fin.get(seen.len()) {
                        let w = writer[next];
                        if w != t {
                            edges[t].insert(w); // rw
                        }
                    }
                }
            }
        }
    }
    if let Some(cycle) = find_cycle(&edges, &happened) {
        let shown: Vec<String> = cycle
            .iter()
            .map(|&t| format!("T{t}{:?}", history[t].ops))
            .collect();
        panic!("dependency cycle: {}", shown.join(" → "));
    }
    eprintln!(
        "list-append: {} transactions, {committed} committed, {} values in final lists",
        history.len(),
        position.len()
    );
}

/// A cycle among the nodes marked in `include`, if any (iterative depth-first search).
fn find_cycle(edges: &[HashSet<usize>], include: &[bool]) -> Option<Vec<usize>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Active,
        Done,
    }
    let mut mark = vec![Mark::New; edges.len()];
    for root in 0..edges.len() {
        if !include[root] || mark[root] != Mark::New {
            continue;
        }
        let mut stack: Vec<(usize, Vec<usize>)> =
            vec![(root, edges[root].iter().copied().collect())];
        mark[root] = Mark::Active;
        while let Some((node, pending)) = stack.last_mut() {
            let node = *node;
            match pending.pop() {
                Some(next) if !include[next] => {}
                Some(next) => match mark[next] {
                    Mark::Active => {
                        let start = stack.iter().position(|(n, _)| *n == next).unwrap_or(0);
                        return Some(stack[start..].iter().map(|(n, _)| *n).collect());
                    }
                    Mark::New => {
                        mark[next] = Mark::Active;
                        stack.push((next, edges[next].iter().copied().collect()));
                    }
                    Mark::Done => {}
                },
                None => {
                    mark[node] = Mark::Done;
                    stack.pop();
                }
            }
        }
    }
    None
}
