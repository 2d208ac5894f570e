//! Abrupt in-process kills and restarts under a write load lose no acknowledged write.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bini_kv::StoreConfig;
use bini_proto::{request, PutRequest, Request, ScanRequest};
use bini_testkit::{wait_for, TestCluster};

fn put(key: &str) -> Request {
    Request {
        kind: Some(request::Kind::Put(PutRequest {
            key: key.as_bytes().to_vec(),
            value: key.as_bytes().to_vec(),
        })),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_nodes_come_back_with_every_acknowledged_write() {
    let mut c = TestCluster::start(3, StoreConfig::default()).await;
    c.wait_replicated(3, Duration::from_secs(60)).await;
    for round in 0..3 {
        let victim = round % 3;
        let writer_node = (round + 1) % 3;
        let sender = c.sender(writer_node);
        let acked: Arc<Mutex<Vec<String>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let (acked, stop) = (acked.clone(), stop.clone());
            tokio::spawn(async move {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let k = format!("crash/{round}/{i:06}");
                    if sender.send(vec![put(&k)]).await.is_ok() {
                        acked.lock().expect("lock").push(k);
                    }
                    i += 1;
                }
            })
        };
        wait_for(
            Duration::from_secs(20),
            "writes before the kill",
            || async { (acked.lock().expect("lock").len() >= 50).then_some(()) },
        )
        .await;
        c.kill(victim).await;
        let after_kill = acked.lock().expect("lock").len();
        wait_for(Duration::from_secs(20), "writes after the kill", || async {
            (acked.lock().expect("lock").len() >= after_kill + 50).then_some(())
        })
        .await;
        c.restart(victim).await;
        stop.store(true, Ordering::Relaxed);
        writer.await.expect("writer");

        // Every acknowledged write is there, read through the restarted node.
        let acked = acked.lock().expect("lock").clone();
        let prefix = format!("crash/{round}/");
        let end = format!("crash/{round}0");
        let rows = wait_for(
            Duration::from_secs(30),
            "a scan through the restarted node",
            || async {
                let scan = Request {
                    kind: Some(request::Kind::Scan(ScanRequest {
                        start_key: prefix.clone().into_bytes(),
                        end_key: end.clone().into_bytes(),
                        limit: 0,
                    })),
                };
                c.sender(victim)
                    .send(vec![scan])
                    .await
                    .ok()
                    .map(|mut r| r.remove(0).rows)
            },
        )
        .await;
        let present: std::collections::HashSet<Vec<u8>> =
            rows.into_iter().map(|kv| kv.key).collect();
        let missing: Vec<&String> = acked
            .iter()
            .filter(|k| !present.contains(k.as_bytes()))
            .collect();
        assert!(
            missing.is_empty(),
            "round {round}: {} of {} acknowledged writes missing",
            missing.len(),
            acked.len()
        );
    }
}
