//! The `bini` binary. It parses flags and calls library code; nothing else lives here.
//!
//! Errors print one line, `ERROR: ...`, on stderr and exit non-zero.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use bini_kv::keys::{parse_pretty, pretty};
use bini_proto::kv_client::KvClient;
use bini_proto::node_client::NodeClient;
use bini_proto::{request, BatchRequest, Request};
use clap::{Args, Parser, Subcommand};
use tabled::builder::Builder;
use tabled::settings::Style;
use tonic::transport::Channel;

/// The default listen port for SQL and inter-node traffic.
const DEFAULT_PORT: u16 = 26257;

#[derive(Parser)]
#[command(name = "bini", version, about = "bini: a distributed SQL database")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Run or connect without TLS and authentication (the only mode so far). Accepted by every
    /// subcommand.
    #[arg(long, global = true)]
    insecure: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Start a node of a multi-node cluster.
    Start(StartArgs),
    /// Start a one-node cluster (replication factor 1) and initialise it.
    StartSingleNode(StartArgs),
    /// Run a throwaway cluster in this process with an example database, and open the shell.
    Demo(DemoArgs),
    /// Initialise a cluster whose nodes have been started.
    Init(ClientArgs),
    /// Open a SQL shell, or run statements with -e / -f.
    Sql(SqlArgs),
    /// Operator and debugging commands.
    #[command(subcommand)]
    Debug(DebugCommand),
    /// Print the version.
    Version,
}

#[derive(Args)]
struct StartArgs {
    /// The store directory.
    #[arg(long, default_value = "bini-data")]
    store: String,
    /// Address to listen on for SQL and inter-node traffic.
    #[arg(long, default_value = "localhost:26257")]
    listen_addr: String,
    /// Address other nodes and clients use to reach this node.
    #[arg(long)]
    advertise_addr: Option<String>,
    /// Comma-separated addresses of nodes to join.
    #[arg(long, value_delimiter = ',')]
    join: Vec<String>,
    /// Address of the admin HTTP server.
    #[arg(long, default_value = "localhost:8080")]
    http_addr: String,
    /// Split ranges larger than this many bytes.
    #[arg(long, env = "BINI_RANGE_MAX_BYTES", default_value_t = 512 << 20)]
    range_max_bytes: u64,
    /// Log format: text or json.
    #[arg(long, default_value = "text")]
    log_format: String,
    /// Memory SQL statements may hold at once, all sessions together: a size (64MiB, 2GiB)
    /// or a share of the container's memory limit, else of physical memory (25%, .25).
    #[arg(long, env = "BINI_MAX_SQL_MEMORY", default_value = "25%")]
    max_sql_memory: String,
}

#[derive(Args)]
struct DemoArgs {
    /// Number of nodes.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// A statement to run instead of the interactive shell (repeatable).
    #[arg(short = 'e', long = "execute")]
    execute: Vec<String>,
    /// How results print.
    #[arg(long, value_enum, default_value = "table")]
    format: bini_cli::shell::OutputFormat,
}

#[derive(Args)]
struct SqlArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// A connection URL, `postgresql://user@host:port/database`.
    #[arg(long)]
    url: Option<String>,
    /// The database to use.
    #[arg(short = 'd', long, default_value = "defaultdb")]
    database: String,
    /// The user to connect as.
    #[arg(short = 'u', long, default_value = "root")]
    user: String,
    /// A statement to run (repeatable); the shell exits afterwards.
    #[arg(short = 'e', long = "execute")]
    execute: Vec<String>,
    /// A file of statements to run.
    #[arg(short = 'f', long = "file")]
    file: Option<String>,
    /// How results print.
    #[arg(long, value_enum, default_value = "table")]
    format: bini_cli::shell::OutputFormat,
}

#[derive(Args, Clone)]
struct ClientArgs {
    /// The node to talk to, as HOST or HOST:PORT.
    #[arg(long, default_value = "localhost")]
    host: String,
    /// The port, when --host has none.
    #[arg(long)]
    port: Option<u16>,
}

impl ClientArgs {
    fn addr(&self) -> String {
        let has_port = self
            .host
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
            && !self.host.ends_with(']');
        if has_port {
            self.host.clone()
        } else {
            format!("{}:{}", self.host, self.port.unwrap_or(DEFAULT_PORT))
        }
    }

    async fn channel(&self) -> Result<Channel> {
        let addr = self.addr();
        let ep = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .with_context(|| format!("bad address {addr}"))?
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(60));
        ep.connect()
            .await
            .map_err(|e| anyhow!("cannot reach {addr}: {e}"))
    }
}

#[derive(Subcommand)]
enum DebugCommand {
    /// Read and write raw keys (printable bytes, or \xNN escapes).
    #[command(subcommand)]
    Kv(KvCommand),
    /// List ranges: id, span, replicas, leaseholder.
    Ranges(ClientArgs),
    /// Add and remove replicas of a range.
    ChangeReplicas {
        /// The range.
        #[arg(long)]
        range: u64,
        /// Nodes to add.
        #[arg(long, value_delimiter = ',')]
        add: Vec<u64>,
        /// Nodes to remove.
        #[arg(long, value_delimiter = ',')]
        remove: Vec<u64>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Move a range's lease to another node.
    TransferLease {
        /// The range.
        #[arg(long)]
        range: u64,
        /// The node to receive the lease.
        #[arg(long)]
        to: u64,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Subcommand)]
enum KvCommand {
    /// Write a key.
    Put {
        key: String,
        value: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Read a key.
    Get {
        key: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Delete a key.
    Del {
        key: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List keys in [START, END).
    Scan {
        #[arg(default_value = "\\x04")]
        start: String,
        #[arg(default_value = "\\xff\\xff")]
        end: String,
        /// At most this many keys (0: all).
        #[arg(long, default_value_t = 0)]
        limit: u64,
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// jemalloc, not the system allocator: glibc keeps what a large statement freed in the arena
/// of the thread that freed it, so a node running big statements on different worker threads
/// grows well past its SQL memory budget; jemalloc reuses memory across threads and returns
/// what stays unused to the system (as TiKV and most Rust databases do).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Statements recurse once per level of nesting (up to 2,048 levels, see bini-sql's
    // `nesting.rs`); 16 MiB stacks hold that in a debug build without the walks having to
    // switch to heap-allocated stack segments for every row. Untouched stack costs no memory.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_stack_size(16 << 20)
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ERROR: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ERROR: {}", format!("{e:#}").replace('\n', " "));
            ExitCode::FAILURE
        }
    }
}

/// Whether a connection URL's query sets `sslmode=disable`.
fn url_disables_tls(url: &str) -> bool {
    url.split_once('?').is_some_and(|(_, q)| {
        q.split('&')
            .any(|kv| kv.eq_ignore_ascii_case("sslmode=disable"))
    })
}

async fn run(cli: Cli) -> Result<()> {
    // The demo listens on loopback only and is thrown away: no security to ask for.
    // A URL that turns TLS off (`sslmode=disable`, as `bini demo` prints them) says insecure too.
    let url_insecure = match &cli.command {
        Command::Sql(a) => a.url.as_deref().is_some_and(url_disables_tls),
        _ => false,
    };
    if !cli.insecure && !url_insecure && !matches!(cli.command, Command::Version | Command::Demo(_))
    {
        // Secure mode (TLS, certificates, passwords) is not built yet; say so instead of
        // silently running without it.
        bail!("secure mode is not available yet; pass --insecure");
    }
    match cli.command {
        Command::Start(args) => start(args, false).await,
        Command::StartSingleNode(args) => start(args, true).await,
        Command::Demo(args) => {
            let cfg = bini_cli::demo::DemoConfig {
                nodes: args.nodes,
                execute: args.execute,
                format: args.format,
            };
            if bini_cli::demo::run(cfg).await? {
                Ok(())
            } else {
                std::process::exit(1)
            }
        }
        Command::Init(client) => {
            let mut c = NodeClient::new(client.channel().await?);
            match c.init(bini_proto::InitRequest {}).await {
                Ok(_) => {
                    println!("Cluster successfully initialized");
                    Ok(())
                }
                Err(s) => bail!("{}", s.message()),
            }
        }
        Command::Sql(args) => {
            let (host, port) = match args.client.addr().rsplit_once(':') {
                Some((h, p)) => (h.to_string(), p.parse().unwrap_or(DEFAULT_PORT)),
                None => (args.client.host.clone(), DEFAULT_PORT),
            };
            let mut cfg = bini_cli::shell::ShellConfig {
                host,
                port,
                user: args.user,
                database: args.database,
                execute: args.execute,
                file: args.file,
                format: args.format,
            };
            if let Some(url) = &args.url {
                cfg.apply_url(url)?;
            }
            if bini_cli::shell::run(cfg).await? {
                Ok(())
            } else {
                // The failing statement's error is already printed.
                std::process::exit(1)
            }
        }
        Command::Version => {
            println!("bini {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Command::Debug(cmd) => debug(cmd).await,
    }
}

fn init_logging(format: &str) -> Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_env("BINI_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        "json" => builder.json().init(),
        "text" => builder.init(),
        other => bail!("unknown --log-format {other:?} (text or json)"),
    }
    Ok(())
}

/// `bini start`, or with `single` `bini start-single-node`: a cluster of this one node, with
/// one replica per range, initialised on its first start.
async fn start(args: StartArgs, single: bool) -> Result<()> {
    if single && !args.join.is_empty() {
        bail!("start-single-node takes no --join; use `bini start` for a multi-node cluster");
    }
    init_logging(&args.log_format)?;
    let mut config = bini_server::NodeConfig::new(&args.store, &args.listen_addr);
    config.advertise_addr = args.advertise_addr.clone();
    config.join = args
        .join
        .iter()
        .filter(|j| !j.is_empty())
        .map(|j| with_default_port(j))
        .collect();
    config.http_addr = Some(args.http_addr.clone());
    config.store.range_max_bytes = args.range_max_bytes;
    config.max_sql_memory =
        bini_server::parse_size(&args.max_sql_memory, bini_server::memory_available())
            .map_err(|e| anyhow!("--max-sql-memory={e}"))?;
    if single {
        config.store.replication_factor = 1;
    }
    let node = bini_server::Node::start(config)
        .await
        .map_err(|e| anyhow!("{e}"))?;
    if single {
        bini_cli::demo::init(&node.listen_addr().to_string()).await?;
    }
    eprintln!(
        "bini node listening on {} (advertised as {})",
        node.listen_addr(),
        node.advertise_addr()
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
    tracing::info!("shutting down");
    node.stop().await;
    Ok(())
}

fn with_default_port(addr: &str) -> String {
    if addr
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        addr.to_string()
    } else {
        format!("{addr}:{DEFAULT_PORT}")
    }
}

fn key_arg(s: &str) -> Result<Vec<u8>> {
    parse_pretty(s).map_err(|e| anyhow!("bad key {s:?}: {e}"))
}

async fn kv(client: &ClientArgs, requests: Vec<Request>) -> Result<Vec<bini_proto::Response>> {
    let mut c = KvClient::new(client.channel().await?).max_decoding_message_size(256 << 20);
    let resp = c
        .batch(BatchRequest {
            requests,
            header: None,
        })
        .await
        .map_err(|s| anyhow!("{}", s.message()))?;
    Ok(resp.into_inner().responses)
}

fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let n = rows.len();
    let mut b = Builder::default();
    b.push_record(header.iter().map(|s| s.to_string()));
    for r in rows {
        b.push_record(r);
    }
    let mut t = b.build();
    t.with(Style::psql());
    format!("{t}\n({n} row{})", if n == 1 { "" } else { "s" })
}

async fn debug(cmd: DebugCommand) -> Result<()> {
    match cmd {
        DebugCommand::Kv(KvCommand::Put { key, value, client }) => {
            let req = Request {
                kind: Some(request::Kind::Put(bini_proto::PutRequest {
                    key: key_arg(&key)?,
                    value: value.into_bytes(),
                })),
            };
            kv(&client, vec![req]).await?;
            println!("OK");
        }
        DebugCommand::Kv(KvCommand::Get { key, client }) => {
            let req = Request {
                kind: Some(request::Kind::Get(bini_proto::GetRequest {
                    key: key_arg(&key)?,
                })),
            };
            let resp = kv(&client, vec![req]).await?;
            match resp.into_iter().next().and_then(|r| r.value) {
                Some(v) => println!("{}", pretty(&v)),
                None => bail!("key {key} not found"),
            }
        }
        DebugCommand::Kv(KvCommand::Del { key, client }) => {
            let req = Request {
                kind: Some(request::Kind::Delete(bini_proto::DeleteRequest {
                    key: key_arg(&key)?,
                })),
            };
            kv(&client, vec![req]).await?;
            println!("OK");
        }
        DebugCommand::Kv(KvCommand::Scan {
            start,
            end,
            limit,
            client,
        }) => {
            let req = Request {
                kind: Some(request::Kind::Scan(bini_proto::ScanRequest {
                    start_key: key_arg(&start)?,
                    end_key: key_arg(&end)?,
                    limit,
                })),
            };
            let resp = kv(&client, vec![req]).await?;
            for row in resp.into_iter().flat_map(|r| r.rows) {
                println!("{}\t{}", pretty(&row.key), pretty(&row.value));
            }
        }
        DebugCommand::Ranges(client) => {
            let mut c = NodeClient::new(client.channel().await?);
            let resp = c
                .debug_ranges(bini_proto::DebugRangesRequest {})
                .await
                .map_err(|s| anyhow!("{}", s.message()))?;
            let rows = resp
                .into_inner()
                .ranges
                .into_iter()
                .filter_map(|r| {
                    let d = r.descriptor?;
                    let replicas: Vec<String> = d
                        .replicas
                        .iter()
                        .map(|r| {
                            if r.kind == bini_proto::ReplicaKind::Learner as i32 {
                                format!("{}(learner)", r.node_id)
                            } else {
                                r.node_id.to_string()
                            }
                        })
                        .collect();
                    Some(vec![
                        d.range_id.to_string(),
                        pretty(&d.start_key),
                        pretty(&d.end_key),
                        format!("{{{}}}", replicas.join(",")),
                        match r.leaseholder {
                            0 => "NULL".to_string(),
                            l => l.to_string(),
                        },
                    ])
                })
                .collect();
            println!(
                "{}",
                table(
                    &[
                        "range_id",
                        "start_key",
                        "end_key",
                        "replicas",
                        "lease_holder"
                    ],
                    rows
                )
            );
        }
        DebugCommand::ChangeReplicas {
            range,
            add,
            remove,
            client,
        } => {
            let mut c = NodeClient::new(client.channel().await?);
            let resp = c
                .change_replicas(bini_proto::ChangeReplicasRequest {
                    range_id: range,
                    add_nodes: add,
                    remove_nodes: remove,
                })
                .await
                .map_err(|s| anyhow!("{}", s.message()))?;
            let d = resp.into_inner().descriptor.unwrap_or_default();
            let nodes: Vec<String> = d.replicas.iter().map(|r| r.node_id.to_string()).collect();
            println!("range {} replicas {{{}}}", d.range_id, nodes.join(","));
        }
        DebugCommand::TransferLease { range, to, client } => {
            let mut c = NodeClient::new(client.channel().await?);
            c.transfer_lease(bini_proto::TransferLeaseRequest {
                range_id: range,
                target_node: to,
            })
            .await
            .map_err(|s| anyhow!("{}", s.message()))?;
            println!("OK");
        }
    }
    Ok(())
}
