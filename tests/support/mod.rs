//! Support for end-to-end tests: a cluster of real `bini` processes on loopback.
//!
//! Each node gets a temporary store directory and ports the OS hands out; nodes are started,
//! killed (SIGKILL) and restarted by pid. Every wait polls a condition with a deadline. When a
//! test panics, the tail of every node's log is printed so CI output explains the failure.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bini_proto::kv_client::KvClient;
use bini_proto::node_client::NodeClient;
use bini_proto::{request, BatchRequest, DebugRange, Request, Response};
use tonic::transport::Channel;

/// The `bini` binary built alongside the tests (`cargo build --workspace` puts it next to the
/// test executables' parent directory), or the one `BINI_BIN` names (to run the end-to-end
/// tests against another build, such as the release binary).
pub fn bini_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("BINI_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("test executable path");
    // Tests live in `<profile>/deps/`, binaries such as the benchmarks in `<profile>/`.
    let dir = exe.parent().expect("executable directory");
    let candidates = [Some(dir.join("bini")), dir.parent().map(|d| d.join("bini"))];
    candidates
        .into_iter()
        .flatten()
        .find(|p| p.exists())
        .unwrap_or_else(|| {
            panic!(
                "bini not found near {}: run `cargo build --workspace --all-targets`",
                dir.display()
            )
        })
}

/// A free TCP port on loopback, chosen by the OS.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind loopback")
        .local_addr()
        .expect("local addr")
        .port()
}

pub use bini_testkit::wait_for;

/// One `bini` node process.
pub struct NodeProc {
    /// The listen address, `127.0.0.1:PORT`.
    pub addr: String,
    /// The store directory.
    pub store: PathBuf,
    log: PathBuf,
    child: std::sync::Mutex<Option<Child>>,
}

impl NodeProc {
    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.lock().expect("lock").as_ref().map(Child::id)
    }
}

/// A cluster of real `bini` processes.
pub struct Cluster {
    /// The nodes, by index (node index i is usually node id i+1, but tests should not rely on
    /// that).
    pub nodes: Vec<NodeProc>,
    dir: tempfile::TempDir,
    env: Vec<(String, String)>,
}

impl Cluster {
    /// Starts `n` nodes that join each other and initialises the cluster through the first.
    pub async fn start(n: usize, env: &[(&str, &str)]) -> Cluster {
        Self::start_on(n, env, None).await
    }

    /// [`start`](Self::start), with each node's store in the given directory (else in the
    /// cluster's temporary directory).
    pub async fn start_on(n: usize, env: &[(&str, &str)], stores: Option<Vec<PathBuf>>) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut c = Cluster {
            nodes: Vec::new(),
            dir,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        let addrs: Vec<String> = (0..n)
            .map(|_| format!("127.0.0.1:{}", free_port()))
            .collect();
        for (i, addr) in addrs.iter().enumerate() {
            let store = match &stores {
                Some(s) => s[i].clone(),
                None => c.dir.path().join(format!("node{i}")),
            };
            let log = c.dir.path().join(format!("node{i}.log"));
            c.nodes.push(NodeProc {
                addr: addr.clone(),
                store,
                log,
                child: Default::default(),
            });
            c.spawn(i, &addrs);
        }
        let out = Command::new(bini_bin())
            .args(["init", "--insecure", "--host", &addrs[0]])
            .output()
            .expect("run bini init");
        // The first attempt may race the listener; retry until it answers.
        if !out.status.success() {
            wait_for(Duration::from_secs(20), "bini init to succeed", || async {
                let out = Command::new(bini_bin())
                    .args(["init", "--insecure", "--host", &addrs[0]])
                    .output()
                    .ok()?;
                out.status.success().then_some(())
            })
            .await;
        }
        c
    }

    fn join_list(&self) -> Vec<String> {
        self.nodes.iter().take(3).map(|n| n.addr.clone()).collect()
    }

    fn spawn(&self, i: usize, join: &[String]) {
        let node = &self.nodes[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .expect("open log");
        let log2 = log.try_clone().expect("clone log handle");
        let mut cmd = Command::new(bini_bin());
        cmd.args([
            "start",
            "--insecure",
            "--store",
            node.store.to_str().expect("utf8 path"),
            "--listen-addr",
            &node.addr,
            "--http-addr",
            &format!("127.0.0.1:{}", free_port()),
            "--join",
            &join.join(","),
        ])
        .env(
            "BINI_LOG",
            std::env::var("BINI_LOG").unwrap_or_else(|_| "info".into()),
        )
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        *node.child.lock().expect("lock") = Some(cmd.spawn().expect("spawn bini start"));
    }

    /// Starts one more node that joins the cluster; returns its index.
    pub fn add_node(&mut self) -> usize {
        let i = self.nodes.len();
        let addr = format!("127.0.0.1:{}", free_port());
        let store = self.dir.path().join(format!("node{i}"));
        let log = self.dir.path().join(format!("node{i}.log"));
        self.nodes.push(NodeProc {
            addr,
            store,
            log,
            child: Default::default(),
        });
        let join = self.join_list();
        self.spawn(i, &join);
        i
    }

    /// Kills node `i` with SIGKILL (no flush, no goodbye).
    pub fn kill(&self, i: usize) {
        let child = self.nodes[i].child.lock().expect("lock").take();
        if let Some(mut child) = child {
            // `Child::kill` sends SIGKILL on Unix.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Restarts node `i` on its store directory and address.
    pub fn restart(&self, i: usize) {
        assert!(self.nodes[i].pid().is_none(), "node {i} is still running");
        let join = self.join_list();
        self.spawn(i, &join);
    }

    /// A KV client connected to node `i`.
    pub async fn kv(&self, i: usize) -> KvClient<Channel> {
        KvClient::new(self.channel(i).await).max_decoding_message_size(256 << 20)
    }

    /// A node-service client connected to node `i`.
    pub async fn node(&self, i: usize) -> NodeClient<Channel> {
        NodeClient::new(self.channel(i).await)
    }

    async fn channel(&self, i: usize) -> Channel {
        let addr = self.nodes[i].addr.clone();
        wait_for(
            Duration::from_secs(20),
            &format!("node {i} to accept connections"),
            || {
                let addr = addr.clone();
                async move {
                    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
                        .ok()?
                        .connect_timeout(Duration::from_secs(1))
                        .timeout(Duration::from_secs(20))
                        .connect()
                        .await
                        .ok()
                }
            },
        )
        .await
    }

    /// The ranges as node `i` reports them.
    pub async fn ranges(&self, i: usize) -> Option<Vec<DebugRange>> {
        let mut c = self.node(i).await;
        c.debug_ranges(bini_proto::DebugRangesRequest {})
            .await
            .ok()
            .map(|r| r.into_inner().ranges)
    }

    /// Waits until every range has `voters` voting replicas and a leaseholder.
    pub async fn wait_replicated(
        &self,
        via: usize,
        voters: usize,
        timeout: Duration,
    ) -> Vec<DebugRange> {
        wait_for(
            timeout,
            &format!("every range to have {voters} voters and a leaseholder"),
            || async {
                let ranges = self.ranges(via).await?;
                let ok = !ranges.is_empty()
                    && ranges.iter().all(|r| {
                        let d = r.descriptor.as_ref();
                        d.is_some_and(|d| {
                            d.replicas
                                .iter()
                                .filter(|x| x.kind == bini_proto::ReplicaKind::Voter as i32)
                                .count()
                                == voters
                                && d.replicas.len() == voters
                        }) && r.leaseholder != 0
                    });
                ok.then_some(ranges)
            },
        )
        .await
    }

    /// Runs a KV batch through node `i`.
    pub async fn batch(
        &self,
        i: usize,
        requests: Vec<Request>,
    ) -> Result<Vec<Response>, tonic::Status> {
        let mut c = self.kv(i).await;
        c.batch(BatchRequest {
            requests,
            header: None,
        })
        .await
        .map(|r| r.into_inner().responses)
    }

    /// Whether node `i`'s process is still running (it has not crashed).
    pub fn is_running(&self, i: usize) -> bool {
        let mut guard = self.nodes[i].child.lock().expect("lock");
        guard
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The directory holding the nodes' stores and logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
        if std::thread::panicking() {
            for (i, n) in self.nodes.iter().enumerate() {
                let log = std::fs::read_to_string(&n.log).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                eprintln!("---- node {i} ({}) log tail ----", n.addr);
                for l in tail.iter().rev() {
                    eprintln!("{l}");
                }
            }
        }
    }
}

/// Scans `[start, end)` through node `i` in pages of `page` rows, as a client reading a large
/// span would.
pub async fn scan_all(
    c: &Cluster,
    i: usize,
    start: &[u8],
    end: &[u8],
    page: u64,
) -> Result<Vec<bini_proto::KeyValue>, tonic::Status> {
    let mut rows = Vec::new();
    let mut from = start.to_vec();
    loop {
        let req = Request {
            kind: Some(request::Kind::Scan(bini_proto::ScanRequest {
                start_key: from.clone(),
                end_key: end.to_vec(),
                limit: page,
            })),
        };
        let mut resp = c.batch(i, vec![req]).await?;
        let r = resp.pop().unwrap_or_default();
        rows.extend(r.rows);
        if r.resume_key.is_empty() {
            return Ok(rows);
        }
        from = r.resume_key;
    }
}

/// A put request.
pub fn put(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Request {
    Request {
        kind: Some(request::Kind::Put(bini_proto::PutRequest {
            key: key.into(),
            value: value.into(),
        })),
    }
}

/// A get request.
pub fn get(key: impl Into<Vec<u8>>) -> Request {
    Request {
        kind: Some(request::Kind::Get(bini_proto::GetRequest {
            key: key.into(),
        })),
    }
}

/// A scan request over `[start, end)`.
pub fn scan(start: impl Into<Vec<u8>>, end: impl Into<Vec<u8>>) -> Request {
    Request {
        kind: Some(request::Kind::Scan(bini_proto::ScanRequest {
            start_key: start.into(),
            end_key: end.into(),
            limit: 0,
        })),
    }
}

/// A libpq-style connection string for `root` on `defaultdb` at `host:port`.
pub fn pg_conn_str(addr: &str) -> String {
    let (host, port) = addr.rsplit_once(':').expect("host:port");
    format!("host={host} port={port} user=root dbname=defaultdb connect_timeout=10")
}

/// A client connected with `conn_str`, its connection driven by a task; panics if the
/// server refuses.
pub async fn pg_connect(conn_str: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(conn_str, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect {conn_str}: {e}"));
    tokio::spawn(conn);
    client
}

/// Waits until every node answers SQL (the catalog bootstraps right after init).
pub async fn wait_for_sql(c: &Cluster) {
    for n in &c.nodes {
        let cs = pg_conn_str(&n.addr);
        wait_for(Duration::from_secs(60), "SQL to answer", || async {
            let (client, conn) = tokio_postgres::connect(&cs, tokio_postgres::NoTls)
                .await
                .ok()?;
            tokio::spawn(conn);
            client.simple_query("SHOW TABLES").await.ok().map(|_| ())
        })
        .await;
    }
}
