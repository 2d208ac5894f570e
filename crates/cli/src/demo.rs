//! `bini demo`: a throwaway cluster of N real nodes inside this process, on free loopback
//! ports with stores in a temporary directory, an example database, and the SQL shell. The
//! nodes are the same code as `bini start` (DESIGN.md: a demo is a cluster, not a mock).

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bini_server::{Node, NodeConfig};

use crate::shell::{OutputFormat, ShellConfig};

/// The example database `bini demo` loads: a few riders, vehicles and rides.
const EXAMPLE: &str = "
create database movr;
create table movr.users (id int primary key, name string not null, city string not null);
create table movr.vehicles (id int primary key, type string not null, city string not null,
  owner_id int, status string default 'available');
create table movr.rides (id uuid primary key default gen_random_uuid(), rider_id int not null,
  vehicle_id int not null, city string not null, start_time timestamptz not null,
  end_time timestamptz, revenue decimal(10,2));
insert into movr.users values (1, 'Ada Lovelace', 'london'), (2, 'Alan Turing', 'london'),
  (3, 'Grace Hopper', 'new york'), (4, 'Edsger Dijkstra', 'amsterdam'),
  (5, 'Barbara Liskov', 'boston');
insert into movr.vehicles (id, type, city, owner_id) values (1, 'bike', 'london', 1),
  (2, 'scooter', 'london', 2), (3, 'skateboard', 'new york', 3), (4, 'bike', 'amsterdam', 4),
  (5, 'scooter', 'boston', 5);
insert into movr.rides (rider_id, vehicle_id, city, start_time, end_time, revenue) values
  (2, 1, 'london', '2026-11-01 08:00:00+00', '2026-11-01 08:20:00+00', 4.50),
  (1, 2, 'london', '2026-11-01 09:10:00+00', '2026-11-01 09:45:00+00', 7.25),
  (5, 3, 'new york', '2026-11-02 17:30:00+00', '2026-11-02 17:41:00+00', 3.10),
  (3, 5, 'boston', '2026-11-03 12:00:00+00', '2026-11-03 12:30:00+00', 6.00),
  (4, 4, 'amsterdam', '2026-11-03 18:05:00+00', NULL, NULL);
";

/// What `bini demo` runs.
pub struct DemoConfig {
    /// Number of nodes.
    pub nodes: usize,
    /// Statements to run instead of an interactive shell.
    pub execute: Vec<String>,
    /// How results print.
    pub format: OutputFormat,
}

/// Starts the cluster, loads the example, runs the shell, then stops every node. Returns
/// whether the shell's statements all succeeded.
pub async fn run(cfg: DemoConfig) -> Result<bool> {
    if cfg.nodes == 0 {
        bail!("--nodes must be at least 1");
    }
    let dir = tempfile::Builder::new()
        .prefix("bini-demo-")
        .tempdir()
        .context("create a temporary directory")?;
    let mut nodes: Vec<Node> = Vec::new();
    let result = async {
        for i in 0..cfg.nodes {
            let mut config = NodeConfig::new(dir.path().join(format!("node{}", i + 1)), "127.0.0.1:0");
            config.http_addr = Some("127.0.0.1:0".into());
            if let Some(first) = nodes.first() {
                config.join = vec![first.advertise_addr().to_string()];
            }
            if cfg.nodes < config.store.replication_factor {
                config.store.replication_factor = cfg.nodes;
            }
            let node = Node::start(config).await.map_err(|e| anyhow!("{e}"))?;
            if i == 0 {
                init(&node.listen_addr().to_string()).await?;
            }
            nodes.push(node);
        }
        let addrs: Vec<String> = nodes.iter().map(|n| n.listen_addr().to_string()).collect();
        for a in &addrs {
            wait_for_sql(a).await?;
        }
        load_example(&addrs[0]).await?;
        println!(
            "# Welcome to the bini demo: {} node{} in this process, stores in {} (removed on exit).",
            addrs.len(),
            if addrs.len() == 1 { "" } else { "s" },
            dir.path().display()
        );
        println!("# Connect with psql, a driver or `bini sql --url` to any node:");
        for (i, a) in addrs.iter().enumerate() {
            println!(
                "#   node {}: postgresql://root@{a}/movr?sslmode=disable",
                i + 1
            );
        }
        if let Some(http) = nodes[0].http_addr() {
            println!("# Admin UI: http://{http}");
        }
        println!("# The example database `movr` holds users, vehicles and rides.");
        let (host, port) = addrs[0].rsplit_once(':').expect("socket address");
        crate::shell::run(ShellConfig {
            host: host.to_string(),
            port: port.parse().expect("port"),
            user: "root".into(),
            database: "movr".into(),
            execute: cfg.execute,
            file: None,
            format: cfg.format,
        })
        .await
    }
    .await;
    for n in nodes {
        n.stop().await;
    }
    result
}

/// Initialises the cluster through its first node, as `bini init` would.
pub async fn init(addr: &str) -> Result<()> {
    let mut c = bini_proto::node_client::NodeClient::connect(format!("http://{addr}"))
        .await
        .with_context(|| format!("cannot reach {addr}"))?;
    match c.init(bini_proto::InitRequest {}).await {
        Ok(_) => Ok(()),
        Err(s) if s.code() == tonic::Code::AlreadyExists => Ok(()),
        Err(s) => bail!("init: {}", s.message()),
    }
}

/// Waits until a node answers SQL and its catalog is bootstrapped (right after init).
pub async fn wait_for_sql(addr: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let last = match connect(addr).await {
            Ok(c) => match c.simple_query("show databases").await {
                Ok(msgs)
                    if msgs.iter().any(|m| {
                        matches!(m,
                    tokio_postgres::SimpleQueryMessage::Row(r) if r.get(0) == Some("defaultdb"))
                    }) =>
                {
                    return Ok(())
                }
                Ok(_) => "the catalog is not bootstrapped yet".to_string(),
                Err(e) => e.to_string(),
            },
            Err(e) => e.to_string(),
        };
        if Instant::now() > deadline {
            bail!("node {addr} did not answer SQL within 60s: {last}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn connect(addr: &str) -> Result<tokio_postgres::Client> {
    let (host, port) = addr.rsplit_once(':').context("host:port")?;
    let (client, conn) = tokio_postgres::connect(
        &format!("host={host} port={port} user=root dbname=defaultdb connect_timeout=5"),
        tokio_postgres::NoTls,
    )
    .await?;
    tokio::spawn(conn);
    Ok(client)
}

async fn load_example(addr: &str) -> Result<()> {
    let c = connect(addr).await?;
    c.batch_execute(EXAMPLE)
        .await
        .map_err(|e| anyhow!("loading the example database: {e}"))
}
