//! Golden scripts of the classic anomalies (`src/testscripts/anomalies/`), each shown
//! impossible, against a real 3-node in-process cluster. Regenerate expected output with
//! `UPDATE_GOLDENFILES=1 cargo test --workspace --test anomalies` and review the diff.
//!
//! Commands (transactions are named `T1`, `T2`, …; all are coordinated by node 0, so their
//! start timestamps follow the script's order):
//! - `begin T`, `commit T`, `rollback T`
//! - `get T KEY…`, `scan T START END`, `put T KEY VALUE`, `del T KEY`
//! - `load KEY=VALUE…`: commits the values (setup).
//! - `read KEY…`: a fresh transaction reads and commits (what is committed now).
//! - `wait T`: waits for T's blocked operation and prints its outcome.
//!
//! An operation that blocks (a writer waiting for another transaction to finish) prints
//! `T2: blocked on T1` — detected from the coordinator's wait-for table, not from timing — and
//! finishes later under `wait T2`.

use std::collections::HashMap;
use std::error::Error;
use std::fmt::Write as _;
use std::time::Duration;

use bini_kv::StoreConfig;
use bini_testkit::TestCluster;
use bini_txn::{Db, Txn};
use tokio::task::JoinHandle;

/// What an operation produced: its printed outcome and the transaction, handed back.
type Outcome = (String, Txn);

struct Runner {
    rt: tokio::runtime::Runtime,
    _cluster: TestCluster,
    db: Db,
    txns: HashMap<String, Txn>,
    ids: HashMap<Vec<u8>, String>,
    blocked: HashMap<String, JoinHandle<Outcome>>,
    /// Prepended to every key of the current script.
    prefix: Vec<u8>,
}

fn show_err(e: bini_txn::Error) -> String {
    match e {
        bini_txn::Error::Retry { reason, .. } => {
            format!("error: restart transaction: {}", reason.as_str())
        }
        e => format!("error: {e}"),
    }
}

fn show_value(v: Option<Vec<u8>>) -> String {
    v.map(|v| String::from_utf8_lossy(&v).into_owned())
        .unwrap_or_else(|| "∅".into())
}

async fn run_op(
    mut txn: Txn,
    name: String,
    op: String,
    args: Vec<String>,
    prefix: Vec<u8>,
) -> Outcome {
    let prefixed = |a: &str| [prefix.as_slice(), a.as_bytes()].concat();
    let key = |i: usize| prefixed(args.get(i).map(String::as_str).unwrap_or_default());
    let out = match op.as_str() {
        "get" => {
            let keys: Vec<Vec<u8>> = args.iter().map(|a| prefixed(a)).collect();
            match txn.get_many(&keys).await {
                Ok(vals) => args
                    .iter()
                    .zip(vals)
                    .map(|(k, v)| format!("{name}: {k} = {}", show_value(v)))
                    .collect::<Vec<_>>()
                    .join("\n"),
                Err(e) => format!("{name}: {}", show_err(e)),
            }
        }
        "scan" => match txn.scan(&key(0), &key(1), 0).await {
            Ok(rows) => {
                let rows: Vec<String> = rows
                    .iter()
                    .map(|kv| {
                        format!(
                            "{}={}",
                            String::from_utf8_lossy(&kv.key[prefix.len().min(kv.key.len())..]),
                            String::from_utf8_lossy(&kv.value)
                        )
                    })
                    .collect();
                format!("{name}: [{}]", rows.join(", "))
            }
            Err(e) => format!("{name}: {}", show_err(e)),
        },
        "put" => match txn
            .put(
                &key(0),
                args.get(1)
                    .map(String::as_str)
                    .unwrap_or_default()
                    .as_bytes(),
            )
            .await
        {
            Ok(()) => format!("{name}: ok"),
            Err(e) => format!("{name}: {}", show_err(e)),
        },
        "del" => match txn.delete(&key(0)).await {
            Ok(()) => format!("{name}: ok"),
            Err(e) => format!("{name}: {}", show_err(e)),
        },
        "commit" => match txn.commit().await {
            Ok(()) => format!("{name}: committed"),
            Err(e) => format!("{name}: {}", show_err(e)),
        },
        "rollback" => match txn.rollback().await {
            Ok(()) => format!("{name}: rolled back"),
            Err(e) => format!("{name}: {}", show_err(e)),
        },
        other => format!("unknown operation {other}"),
    };
    (out, txn)
}

impl Runner {
    fn new() -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let cluster = rt.block_on(async {
            let c = TestCluster::start(3, StoreConfig::default()).await;
            c.wait_replicated(3, Duration::from_secs(60)).await;
            c
        });
        let db = cluster.db(0);
        Self {
            rt,
            _cluster: cluster,
            db,
            txns: HashMap::new(),
            ids: HashMap::new(),
            blocked: HashMap::new(),
            prefix: Vec::new(),
        }
    }

    /// Runs `op` of transaction `name`; prints its outcome, or that it blocked.
    fn op(&mut self, name: &str, op: &str, args: Vec<String>) -> Result<String, Box<dyn Error>> {
        if self.blocked.contains_key(name) {
            return Err(format!("{name} is blocked; `wait {name}` first").into());
        }
        let txn = self
            .txns
            .remove(name)
            .ok_or(format!("no transaction {name}"))?;
        let id = txn.id().to_vec();
        let handle = self.rt.spawn(run_op(
            txn,
            name.to_string(),
            op.to_string(),
            args,
            self.prefix.clone(),
        ));
        let db = self.db.clone();
        // Either the operation finishes, or its coordinator records that it waits.
        let waiting = self.rt.block_on(async {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            loop {
                if handle.is_finished() {
                    return None;
                }
                if let Some(w) = db.waiting_for(&id) {
                    return Some(w.id);
                }
                assert!(tokio::time::Instant::now() < deadline, "operation hung");
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        });
        match waiting {
            None => self.finish(name, handle),
            Some(other) => {
                let other = self.ids.get(&other).cloned().unwrap_or("?".into());
                self.blocked.insert(name.to_string(), handle);
                Ok(format!("{name}: blocked on {other}\n"))
            }
        }
    }

    fn finish(
        &mut self,
        name: &str,
        handle: JoinHandle<Outcome>,
    ) -> Result<String, Box<dyn Error>> {
        // A transaction the script finishes must finish: bounded, not a hang.
        let (out, txn) = self
            .rt
            .block_on(async { tokio::time::timeout(Duration::from_secs(30), handle).await })
            .map_err(|_| format!("{name} did not finish within 30 s"))??;
        self.txns.insert(name.to_string(), txn);
        Ok(format!("{out}\n"))
    }
}

impl goldenscript::Runner for Runner {
    type Command = goldenscript::Command;

    fn run(
        &mut self,
        command: &goldenscript::Command,
        _: &goldenscript::Context,
    ) -> Result<String, Box<dyn Error>> {
        let args: Vec<String> = command
            .args
            .iter()
            .map(|a| match a {
                goldenscript::Argument::Positional(v) => v.clone(),
                goldenscript::Argument::KeyValue(k, v) => format!("{k}={v}"),
                other => other.to_string(),
            })
            .collect();
        match command.name.as_str() {
            "begin" => {
                for name in &args {
                    let txn = self.db.begin();
                    self.ids.insert(txn.id().to_vec(), name.clone());
                    self.txns.insert(name.clone(), txn);
                }
                Ok(String::new())
            }
            "wait" => {
                let name = args.first().ok_or("wait needs a transaction")?;
                let handle = self
                    .blocked
                    .remove(name)
                    .ok_or(format!("{name} is not blocked"))?;
                self.finish(name, handle)
            }
            "load" => {
                let db = self.db.clone();
                let mut reqs = Vec::new();
                for a in &args {
                    let (k, v) = a.split_once('=').ok_or("load takes KEY=VALUE")?;
                    let key = [self.prefix.as_slice(), k.as_bytes()].concat();
                    reqs.push(bini_txn::put(&key, v.as_bytes()));
                }
                self.rt
                    .block_on(async move { db.begin().commit_with(reqs).await })?;
                Ok(String::new())
            }
            "read" => {
                let db = self.db.clone();
                let keys: Vec<Vec<u8>> = args
                    .iter()
                    .map(|a| [self.prefix.as_slice(), a.as_bytes()].concat())
                    .collect();
                let vals = self.rt.block_on(async move {
                    let mut t = db.begin();
                    let v = t.get_many(&keys).await?;
                    t.commit().await?;
                    Ok::<_, bini_txn::Error>(v)
                })?;
                let mut out = String::new();
                for (k, v) in args.iter().zip(vals) {
                    writeln!(out, "{k} = {}", show_value(v))?;
                }
                Ok(out)
            }
            op @ ("get" | "scan" | "put" | "del" | "commit" | "rollback") => {
                let (name, rest) = args.split_first().ok_or("missing transaction")?;
                self.op(name, op, rest.to_vec())
            }
            other => Err(format!("unknown command {other}").into()),
        }
    }

    fn end_script(&mut self) -> Result<(), Box<dyn Error>> {
        for (name, h) in self.blocked.drain() {
            h.abort();
            let _ = self.rt.block_on(h);
            eprintln!("{name} was still blocked at the end of the script");
        }
        self.txns.clear();
        Ok(())
    }
}

#[test]
fn anomalies() -> std::io::Result<()> {
    let mut runner = Runner::new();
    let mut paths: Vec<_> = std::fs::read_dir("src/testscripts/anomalies")?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    paths.sort();
    for path in paths {
        // Each script gets its own keys.
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        runner.prefix = format!("{name}/").into_bytes();
        goldenscript::run(&mut runner, &path)?;
    }
    Ok(())
}
