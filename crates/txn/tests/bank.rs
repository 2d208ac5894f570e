//! The bank: 1,000 accounts over more than 20 ranges on a 3-node cluster, 16 workers moving
//! money between random accounts while nodes die and restart and leaseholders are cut off.
//! Checked throughout and at the end:
//! - every snapshot read (a transaction scanning all accounts) sees the initial total and no
//!   negative balance;
//! - at the end, every acknowledged transfer's record is there, and each account's balance is
//!   exactly what the committed transfer records say it should be.
//!
//! Debugging knobs: `BANK_DEBUG=1` prints every committed transfer's timestamps and, on a
//! mismatch, the account's versions on every node; `BANK_FAULTS=kill|partition` limits the
//! fault run to one kind of fault.
//!
//! Also: the same workload with node clocks skewed within the maximum offset; a node whose
//! clock goes beyond it refusing service; and coordinator death (open transactions' intents
//! cleaned up, keys writable again within seconds).

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bini_kv::StoreConfig;
use bini_mvcc::{PhysicalClock, SkewedClock};
use bini_testkit::{wait_for, TestCluster};
use bini_txn::{put, Db};
use parking_lot::{Mutex, RwLock};
use rand::Rng;

type VersionDump = Box<dyn Fn(&[u8]) -> Vec<String> + Send>;
static DEBUG_VERSIONS: Mutex<Option<VersionDump>> = Mutex::new(None);

const ACCOUNTS: usize = 1000;
const INITIAL: i64 = 1000;
const WORKERS: usize = 16;

fn acct(i: usize) -> Vec<u8> {
    format!("bank/acct/{i:04}").into_bytes()
}

fn xfer(worker: usize, seq: u64) -> Vec<u8> {
    format!("bank/xfer/{worker:02}/{seq:08}").into_bytes()
}

fn parse_i64(v: &Option<Vec<u8>>) -> i64 {
    v.as_deref()
        .and_then(|b| std::str::from_utf8(b).ok())
        .and_then(|s| s.parse().ok())
        .expect("account balance")
}

/// The nodes' transaction clients, `None` while a node is down.
type Dbs = Arc<RwLock<Vec<Option<Db>>>>;

fn pick(dbs: &Dbs, hint: usize) -> Option<Db> {
    let dbs = dbs.read();
    (0..dbs.len()).find_map(|k| dbs[(hint + k) % dbs.len()].clone())
}

async fn setup(cluster: &TestCluster) {
    cluster.wait_replicated(3, Duration::from_secs(60)).await;
    let db = cluster.db(0);
    for chunk in (0..ACCOUNTS).collect::<Vec<_>>().chunks(100) {
        let reqs = chunk
            .iter()
            .map(|&i| put(&acct(i), INITIAL.to_string().as_bytes()))
            .collect();
        db.begin().commit_with(reqs).await.expect("load accounts");
    }
    for i in (1..25).map(|k| k * ACCOUNTS / 25) {
        cluster.split_at(&acct(i)).await;
    }
    cluster.split_at(b"bank/xfer/").await;
    let ranges = cluster.wait_replicated(3, Duration::from_secs(60)).await;
    let bank = ranges
        .iter()
        .filter(|(d, _)| d.end_key.as_slice() > acct(0).as_slice() && d.start_key < acct(ACCOUNTS))
        .count();
    assert!(bank >= 20, "accounts span only {bank} ranges");
}

/// One transfer attempt; `Ok(true)` when committed.
async fn transfer(db: &Db, worker: usize, seq: u64) -> Result<bool, bini_txn::Error> {
    let (from, to, amount) = {
        let mut rng = rand::rng();
        let from = rng.random_range(0..ACCOUNTS);
        let mut to = rng.random_range(0..ACCOUNTS - 1);
        if to >= from {
            to += 1;
        }
        (from, to, rng.random_range(1..=100i64))
    };
    let mut txn = db.begin();
    let vals = txn.get_many(&[acct(from), acct(to)]).await?;
    let (fb, tb) = (parse_i64(&vals[0]), parse_i64(&vals[1]));
    if fb < amount {
        txn.rollback().await?;
        return Ok(false);
    }
    let first_read = txn.read_timestamp();
    txn.commit_with(vec![
        put(&acct(from), (fb - amount).to_string().as_bytes()),
        put(&acct(to), (tb + amount).to_string().as_bytes()),
        put(
            &xfer(worker, seq),
            format!("{from},{to},{amount}").as_bytes(),
        ),
    ])
    .await?;
    if std::env::var("BANK_DEBUG").is_ok() {
        eprintln!(
            "COMMIT {worker:02}/{seq:08} {from}->{to} {amount} first-read {first_read} read {} commit {}",
            txn.read_timestamp(),
            txn.write_timestamp()
        );
    }
    Ok(true)
}

/// Reads every account in one transaction: the total, and whether any is negative.
async fn snapshot(db: &Db) -> Result<(i64, bool), bini_txn::Error> {
    let mut txn = db.begin();
    let rows = txn.scan(&acct(0), &acct(ACCOUNTS), 0).await?;
    txn.commit().await?;
    assert_eq!(rows.len(), ACCOUNTS, "a snapshot must see every account");
    let mut total = 0;
    let mut negative = false;
    for r in rows {
        let b = parse_i64(&Some(r.value));
        total += b;
        negative |= b < 0;
    }
    Ok((total, negative))
}

struct Outcome {
    acked: Vec<(usize, u64)>,
    snapshots: usize,
}

/// Runs the workers and the snapshot checker for `duration` while `faults` does its worst.
async fn run<F, Fut>(dbs: Dbs, duration: Duration, faults: F) -> Outcome
where
    F: FnOnce(Arc<AtomicBool>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let violations = Arc::new(Mutex::new(Vec::<String>::new()));
    let snapshots = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for w in 0..WORKERS {
        let (dbs, stop, acked) = (dbs.clone(), stop.clone(), acked.clone());
        tasks.push(tokio::spawn(async move {
            let mut seq = 0u64;
            while !stop.load(Ordering::Relaxed) {
                seq += 1;
                let Some(db) = pick(&dbs, w + seq as usize) else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let attempt = tokio::time::timeout(Duration::from_secs(15), transfer(&db, w, seq));
                if let Ok(Ok(true)) = attempt.await {
                    acked.lock().push((w, seq));
                }
            }
        }));
    }
    {
        let (dbs, stop, violations, snapshots) = (
            dbs.clone(),
            stop.clone(),
            violations.clone(),
            snapshots.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut k = 0;
            while !stop.load(Ordering::Relaxed) {
                k += 1;
                if let Some(db) = pick(&dbs, k) {
                    let attempt = tokio::time::timeout(Duration::from_secs(15), snapshot(&db));
                    if let Ok(Ok((total, negative))) = attempt.await {
                        snapshots.fetch_add(1, Ordering::Relaxed);
                        if total != INITIAL * ACCOUNTS as i64 || negative {
                            violations
                                .lock()
                                .push(format!("snapshot: total {total}, negative {negative}"));
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }));
    }
    let deadline = Instant::now() + duration;
    faults(stop.clone()).await;
    if Instant::now() < deadline {
        tokio::time::sleep(deadline - Instant::now()).await;
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.expect("worker");
    }
    let v = violations.lock().clone();
    assert!(v.is_empty(), "anomalies seen: {v:?}");
    let acked = acked.lock().clone();
    Outcome {
        acked,
        snapshots: snapshots.load(Ordering::Relaxed),
    }
}

/// The end-of-run check: totals, and balances agree with the committed transfer records.
async fn verify(db: &Db, outcome: &Outcome) {
    let (accounts, records) = wait_for(Duration::from_secs(60), "a final read", || async {
        let mut txn = db.begin();
        let accounts = txn.scan(&acct(0), &acct(ACCOUNTS), 0).await.ok()?;
        let records = txn.scan(b"bank/xfer/", b"bank/xfer0", 0).await.ok()?;
        txn.commit().await.ok()?;
        Some((accounts, records))
    })
    .await;
    let mut expected: BTreeMap<Vec<u8>, i64> = (0..ACCOUNTS).map(|i| (acct(i), INITIAL)).collect();
    let mut found = HashSet::new();
    for r in &records {
        let text = String::from_utf8_lossy(&r.value).into_owned();
        let parts: Vec<i64> = text
            .split(',')
            .map(|p| p.parse().expect("record"))
            .collect();
        *expected.get_mut(&acct(parts[0] as usize)).expect("from") -= parts[2];
        *expected.get_mut(&acct(parts[1] as usize)).expect("to") += parts[2];
        found.insert(r.key.clone());
    }
    for (w, seq) in &outcome.acked {
        assert!(
            found.contains(&xfer(*w, *seq)),
            "acknowledged transfer {w}/{seq} is missing"
        );
    }
    if std::env::var("BANK_DEBUG").is_ok() {
        for r in &accounts {
            let have = parse_i64(&Some(r.value.clone()));
            if have != expected[&r.key] {
                eprintln!(
                    "MISMATCH {} have {have} expected {}",
                    String::from_utf8_lossy(&r.key),
                    expected[&r.key]
                );
                for rec in &records {
                    let text = String::from_utf8_lossy(&rec.value).into_owned();
                    let parts: Vec<usize> = text
                        .split(',')
                        .map(|p| p.parse().expect("record"))
                        .collect();
                    if acct(parts[0]) == r.key || acct(parts[1]) == r.key {
                        eprintln!("  record {} {text}", String::from_utf8_lossy(&rec.key));
                    }
                }
                if let Some(dbg) = DEBUG_VERSIONS.lock().as_ref() {
                    for line in dbg(&r.key) {
                        eprintln!("  version {line}");
                    }
                }
            }
        }
    }
    let total: i64 = accounts
        .iter()
        .map(|r| parse_i64(&Some(r.value.clone())))
        .sum();
    assert_eq!(total, INITIAL * ACCOUNTS as i64, "the total changed");
    for r in &accounts {
        assert_eq!(
            parse_i64(&Some(r.value.clone())),
            expected[&r.key],
            "balance of {} disagrees with the committed transfers",
            String::from_utf8_lossy(&r.key)
        );
    }
    eprintln!(
        "bank: {} acknowledged transfers, {} committed records, {} snapshots checked",
        outcome.acked.len(),
        records.len(),
        outcome.snapshots
    );
    assert!(outcome.acked.len() >= 100, "too little progress");
    assert!(outcome.snapshots >= 5, "too few snapshots");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bank_keeps_its_total_through_kills_and_partitions() {
    let cluster = Arc::new(tokio::sync::Mutex::new(
        TestCluster::start(3, StoreConfig::default()).await,
    ));
    let dbs: Dbs = {
        let c = cluster.lock().await;
        setup(&c).await;
        Arc::new(RwLock::new((0..3).map(|i| Some(c.db(i))).collect()))
    };
    let (c2, dbs2) = (cluster.clone(), dbs.clone());
    let outcome = run(
        dbs.clone(),
        Duration::from_secs(60),
        move |stop| async move {
            let mut round = 0;
            while !stop.load(Ordering::Relaxed) && round < 4 {
                // Kill one node, let the others carry on, bring it back.
                let victim = round % 3;
                let only = std::env::var("BANK_FAULTS").unwrap_or_default();
                if only != "partition" {
                    dbs2.write()[victim] = None;
                    c2.lock().await.kill(victim).await;
                    tokio::time::sleep(Duration::from_secs(4)).await;
                    c2.lock().await.restart(victim).await;
                    dbs2.write()[victim] = Some(c2.lock().await.db(victim));
                }
                tokio::time::sleep(Duration::from_secs(3)).await;
                // Cut off the leaseholder of some account's range for a while.
                let key = acct(rand::rng().random_range(0..ACCOUNTS));
                let lh = c2.lock().await.leaseholder_of(&key).await;
                if let Some(lh) = lh.filter(|_| only != "kill") {
                    c2.lock().await.partition(&[lh]);
                    tokio::time::sleep(Duration::from_secs(3)).await;
                    c2.lock().await.heal();
                }
                tokio::time::sleep(Duration::from_secs(3)).await;
                round += 1;
            }
        },
    )
    .await;
    let c = cluster.lock().await;
    c.heal();
    let stores: Vec<_> = (0..3).filter_map(|i| c.node(i).store()).collect();
    *DEBUG_VERSIONS.lock() = Some(Box::new(move |k| {
        let mut out = Vec::new();
        for s in &stores {
            out.push(format!("--- n{}", s.node_id().0));
            out.extend(s.debug_versions(k).unwrap_or_default());
        }
        out
    }));
    verify(&c.db(0), &outcome).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bank_is_consistent_with_clocks_skewed_within_the_maximum_offset() {
    let ahead: Arc<dyn PhysicalClock> = Arc::new(SkewedClock::new(250_000_000));
    let behind: Arc<dyn PhysicalClock> = Arc::new(SkewedClock::new(-250_000_000));
    let cluster = TestCluster::start_with_clocks(
        3,
        StoreConfig::default(),
        vec![None, Some(ahead), Some(behind)],
    )
    .await;
    setup(&cluster).await;
    let dbs: Dbs = Arc::new(RwLock::new((0..3).map(|i| Some(cluster.db(i))).collect()));
    let outcome = run(dbs, Duration::from_secs(20), |_| async {}).await;
    // Read through the node whose clock is behind: it must still see every acknowledged
    // transfer, including those stamped by the node ahead.
    verify(&cluster.db(2), &outcome).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_whose_clock_is_too_far_off_refuses_to_serve() {
    let skew = Arc::new(SkewedClock::new(0));
    let clock: Arc<dyn PhysicalClock> = skew.clone();
    let cluster =
        TestCluster::start_with_clocks(3, StoreConfig::default(), vec![None, None, Some(clock)])
            .await;
    cluster.wait_replicated(3, Duration::from_secs(60)).await;
    let skewed = cluster.db(2);
    skewed
        .batch(vec![put(b"clock/a", b"1")])
        .await
        .expect("a write through the node while its clock is fine");
    skew.set_offset(3_000_000_000);
    let err = wait_for(
        Duration::from_secs(15),
        "the skewed node to refuse",
        || async {
            match skewed.begin().get(b"clock/a").await {
                Err(e) => Some(e.to_string()),
                Ok(_) => None,
            }
        },
    )
    .await;
    assert!(err.contains("maximum clock offset"), "{err}");
    // The others go on serving, also for ranges the skewed node led.
    let db = cluster.db(0);
    wait_for(
        Duration::from_secs(15),
        "the healthy nodes to serve",
        || async {
            let mut txn = db.begin();
            txn.put(b"clock/a", b"2").await.ok()?;
            txn.put(b"clock/b", b"2").await.ok()?;
            txn.commit().await.ok()
        },
    )
    .await;
    skew.set_offset(0);
    wait_for(
        Duration::from_secs(15),
        "the node to serve again",
        || async { skewed.begin().get(b"clock/a").await.ok().flatten() },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn intents_of_a_dead_coordinator_are_cleaned_up() {
    let mut cluster = TestCluster::start(3, StoreConfig::default()).await;
    cluster.wait_replicated(3, Duration::from_secs(60)).await;
    cluster.split_at(b"orphan/m").await;
    cluster.wait_replicated(3, Duration::from_secs(60)).await;
    let db = cluster.db(2);
    let keys: Vec<Vec<u8>> = (0..40)
        .map(|i| format!("orphan/{}{i:02}", if i % 2 == 0 { 'a' } else { 'z' }).into_bytes())
        .collect();
    let mut open = Vec::new();
    for chunk in keys.chunks(8) {
        let mut txn = db.begin();
        for k in chunk {
            txn.put(k, b"uncommitted").await.expect("write");
        }
        open.push(txn);
    }
    assert!(cluster.count_intents() > 0);
    cluster.kill(2).await;
    drop(open);
    // Readers and writers elsewhere get through once the records expire.
    let started = Instant::now();
    let db = cluster.db(0);
    let mut txn = db.begin();
    let rows = txn.scan(b"orphan/", b"orphan0", 0).await.expect("scan");
    txn.commit().await.expect("commit");
    assert!(rows.is_empty(), "uncommitted values are invisible");
    for k in &keys {
        db.batch(vec![put(k, b"new")])
            .await
            .expect("write after coordinator death");
    }
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(8),
        "keys writable again after {took:?}"
    );
    wait_for(
        Duration::from_secs(10),
        "every intent cleaned up",
        || async { (cluster.count_intents() == 0).then_some(()) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reads_in_the_past_and_garbage_collection() {
    let config = StoreConfig {
        gc_ttl: Duration::from_secs(3),
        ..Default::default()
    };
    let cluster = TestCluster::start(3, config).await;
    cluster.wait_replicated(3, Duration::from_secs(60)).await;
    let db = cluster.db(0);
    db.batch(vec![put(b"past/k", b"v1")]).await.expect("v1");
    let between = db.clock().now();
    db.batch(vec![put(b"past/k", b"v2")]).await.expect("v2");
    // AS OF SYSTEM TIME: a read-only transaction at a past timestamp sees the past.
    let mut old = db.begin_as_of(between);
    assert_eq!(
        old.get(b"past/k").await.expect("read"),
        Some(b"v1".to_vec())
    );
    assert!(
        old.put(b"past/k", b"no").await.is_err(),
        "past reads are read-only"
    );
    // Once the TTL has passed, the old version goes away on every replica and reads that far
    // back are refused.
    wait_for(
        Duration::from_secs(30),
        "old versions collected",
        || async {
            cluster
                .count_versions(b"past/k")
                .iter()
                .all(|&n| n == 1)
                .then_some(())
        },
    )
    .await;
    let err = db
        .begin_as_of(between)
        .get(b"past/k")
        .await
        .expect_err("below the GC threshold");
    assert!(
        err.to_string().contains("garbage collection threshold"),
        "{err}"
    );
    let mut now = db.begin();
    assert_eq!(
        now.get(b"past/k").await.expect("read"),
        Some(b"v2".to_vec())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn open_transactions_survive_lease_transfers_and_restarts() {
    let mut cluster = TestCluster::start(3, StoreConfig::default()).await;
    cluster.wait_replicated(3, Duration::from_secs(60)).await;
    let db = cluster.db(0);
    let mut txn = db.begin();
    txn.put(b"survive/a", b"1").await.expect("write a");
    txn.put(b"survive/b", b"2").await.expect("write b");
    // Move the lease of the range holding the intents and the record elsewhere.
    let (desc, lh) = cluster
        .ranges(0)
        .await
        .into_iter()
        .find(|(d, _)| {
            b"survive/a".as_slice() >= d.start_key.as_slice()
                && b"survive/a".as_slice() < d.end_key.as_slice()
        })
        .expect("range");
    let lh = cluster.index_of(lh.expect("leaseholder")).expect("running");
    let target = (lh + 1) % 3;
    let target_id = cluster.node_id(target);
    let store = cluster.node(lh).store().expect("store");
    wait_for(Duration::from_secs(30), "the lease to move", || async {
        let _ = store
            .transfer_lease(bini_kv::RangeId(desc.range_id), target_id)
            .await;
        (cluster.leaseholder_of(b"survive/a").await == Some(target)).then_some(())
    })
    .await;
    // Restart a replica (not the coordinator's node) while the transaction is open.
    let victim = if target != 0 { target } else { 1 };
    cluster.kill(victim).await;
    cluster.restart(victim).await;
    txn.commit()
        .await
        .expect("commit after lease transfer and restart");
    let mut check = cluster.db(1).begin();
    let vals = check
        .get_many(&[b"survive/a".to_vec(), b"survive/b".to_vec()])
        .await
        .expect("read");
    assert_eq!(vals, vec![Some(b"1".to_vec()), Some(b"2".to_vec())]);
}
