//! A bini node.
//!
//! [`Node::start`] opens the store directory, binds the listen port and serves gRPC on it
//! (`Raft`, `Node`, `Kv` services). A node whose directory already holds a store identity
//! starts its store at once — a restart with the same directory is the same node. A new node
//! waits: either `bini init` reaches it (it bootstraps the cluster as node 1), or it asks the
//! nodes in its `--join` list until one that is initialised gives it a node id.
//!
//! Once the store runs, background work keeps the cluster in shape (`background.rs`): node
//! records with liveness heartbeats, gossip of addresses and the first range, meta updates after
//! splits and replica changes, the split queue, the replicate queue (up-replication to the
//! replication factor) and lease balancing.

mod admin;
mod background;
mod faults;
mod resources;
mod services;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bini_kv::{
    DistSender, GrpcTransport, NodeDirectory, NodeId, RangeId, Store, StoreConfig, Transport,
};
use bini_mvcc::{Hlc, PhysicalClock, SystemClock};
use bini_proto::StoreIdent;
use bini_storage::{Cf, Engine, RocksEngine, RocksOptions, WriteBatch};
use bini_txn::Db;
use prost::Message as _;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use faults::{NetworkFaults, RaftFilter};
pub use resources::{memory_available, parse_size};

/// The SQL memory budget of a node configured in code (tests, `bini demo`): `bini start`
/// defaults to a quarter of the memory available instead.
pub const DEFAULT_MAX_SQL_MEMORY: u64 = 1 << 30;

/// The build identifier shown in node status.
pub const BUILD: &str = env!("CARGO_PKG_VERSION");

/// Settings of a node.
#[derive(Clone)]
pub struct NodeConfig {
    /// The store directory.
    pub store_dir: PathBuf,
    /// Address to listen on (`host:port`; port 0 picks a free one).
    pub listen_addr: String,
    /// Address other nodes and clients use; defaults to the bound listen address.
    pub advertise_addr: Option<String>,
    /// The admin HTTP address to listen on (`host:port`; port 0 picks a free one); no admin
    /// server when unset.
    pub http_addr: Option<String>,
    /// Nodes to join.
    pub join: Vec<String>,
    /// Store settings.
    pub store: StoreConfig,
    /// Drops or delays Raft traffic between nodes (tests).
    pub raft_filter: Option<Arc<dyn RaftFilter>>,
    /// The physical clock; the system clock when unset (tests inject skew here).
    pub clock: Option<Arc<dyn PhysicalClock>>,
    /// The SQL memory budget in bytes (`--max-sql-memory`).
    pub max_sql_memory: u64,
}

impl NodeConfig {
    /// Defaults for a store directory and listen address.
    pub fn new(store_dir: impl Into<PathBuf>, listen_addr: impl Into<String>) -> Self {
        Self {
            store_dir: store_dir.into(),
            listen_addr: listen_addr.into(),
            advertise_addr: None,
            http_addr: None,
            join: Vec::new(),
            store: StoreConfig::default(),
            raft_filter: None,
            clock: None,
            max_sql_memory: DEFAULT_MAX_SQL_MEMORY,
        }
    }
}

/// Errors starting or running a node.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store directory could not be opened.
    #[error(transparent)]
    Storage(#[from] bini_storage::Error),
    /// The replication layer failed.
    #[error(transparent)]
    Kv(#[from] bini_kv::Error),
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Stored identity is corrupt.
    #[error("store identity: {0}")]
    Ident(String),
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, Error>;

pub(crate) struct NodeState {
    pub config: NodeConfig,
    pub engine: Arc<dyn Engine>,
    pub clock: Arc<Hlc>,
    pub directory: Arc<NodeDirectory>,
    pub sender: Arc<DistSender>,
    pub db: Db,
    pub store: OnceLock<Store>,
    pub cluster_id: OnceLock<String>,
    pub advertise: String,
    pub started_at_nanos: u64,
    pub start_lock: tokio::sync::Mutex<()>,
    pub shutdown: watch::Receiver<bool>,
    /// Set once the SQL catalog's default database exists; SQL clients wait for it.
    pub sql_ready: watch::Sender<bool>,
    pub runtime: tokio::runtime::Handle,
    /// Background tasks, aborted when the node stops.
    pub tasks: parking_lot::Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// When the node id counter was last read to recognise a new node (`services.rs`).
    pub node_ids_checked: parking_lot::Mutex<Option<std::time::Instant>>,
}

pub(crate) fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

impl NodeState {
    /// Writes the store identity and starts the store and its background work.
    pub(crate) fn start_store(
        self: &Arc<Self>,
        cluster_id: String,
        node_id: NodeId,
    ) -> Result<Store> {
        if let Some(s) = self.store.get() {
            return Ok(s.clone());
        }
        let ident = StoreIdent {
            cluster_id: cluster_id.clone(),
            node_id: node_id.0,
        };
        let mut b = WriteBatch::new();
        b.put(
            Cf::Data,
            bini_kv::keys::STORE_IDENT_KEY.to_vec(),
            ident.encode_to_vec(),
        );
        self.engine.write(&b, true)?;
        let grpc: Arc<dyn Transport> = Arc::new(GrpcTransport::new(
            node_id,
            self.advertise.clone(),
            self.directory.clone(),
            self.runtime.clone(),
        ));
        let transport = match &self.config.raft_filter {
            Some(f) => Arc::new(faults::FilteredTransport::new(
                node_id,
                grpc,
                f.clone(),
                self.runtime.clone(),
            )) as Arc<dyn Transport>,
            None => grpc,
        };
        self.directory.learn_address(node_id, &self.advertise);
        self.directory.auth.set(&cluster_id, node_id);
        let store = Store::start(
            node_id,
            self.engine.clone(),
            self.config.store.clone(),
            self.clock.clone(),
            transport,
        )?;
        // The replicas of the ranges this node holds are nodes of the cluster: after a restart
        // of every node, their Raft traffic must be accepted before any record can be read.
        for (desc, _, _) in store.replicas() {
            for r in &desc.replicas {
                self.directory.note_member(NodeId(r.node_id));
            }
        }
        let _ = self.cluster_id.set(cluster_id);
        if self.store.set(store.clone()).is_err() {
            store.stop();
            return Ok(self.store.get().expect("set by the winner").clone());
        }
        self.sender.set_local(store.clone());
        self.db.set_node_id(node_id);
        background::spawn(self.clone(), store.clone());
        tracing::info!(node_id = node_id.0, address = %self.advertise, "node started");
        Ok(store)
    }
}

/// A running node.
pub struct Node {
    state: Arc<NodeState>,
    addr: SocketAddr,
    http_addr: Option<SocketAddr>,
    shutdown: watch::Sender<bool>,
    server: tokio::task::JoinHandle<()>,
}

impl Node {
    /// Opens the store, binds the listener and starts serving. Returns once the listener is
    /// bound; the store starts now (existing identity) or after init/join.
    pub async fn start(config: NodeConfig) -> Result<Node> {
        let dir = config.store_dir.clone();
        let engine: Arc<dyn Engine> =
            tokio::task::spawn_blocking(move || RocksEngine::open(&dir, &RocksOptions::default()))
                .await
                .map_err(|e| Error::Ident(e.to_string()))??
                .into_arc();
        let listener = TcpListener::bind(&config.listen_addr)
            .await
            .map_err(|source| Error::Listen {
                addr: config.listen_addr.clone(),
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| Error::Listen {
            addr: config.listen_addr.clone(),
            source,
        })?;
        let advertise = config
            .advertise_addr
            .clone()
            .unwrap_or_else(|| addr.to_string());
        let mut config = config;
        let http = match config.http_addr.clone() {
            Some(a) => {
                let err = |source| Error::Listen {
                    addr: a.clone(),
                    source,
                };
                let l = TcpListener::bind(&a).await.map_err(err)?;
                let bound = l.local_addr().map_err(err)?;
                // Node records carry an address others can reach: the advertised host when
                // listening on every interface.
                let host = if bound.ip().is_unspecified() {
                    advertise
                        .rsplit_once(':')
                        .map(|(h, _)| h.to_string())
                        .unwrap_or_else(|| bound.ip().to_string())
                } else {
                    bound.ip().to_string()
                };
                config.http_addr = Some(format!("{host}:{}", bound.port()));
                Some((l, bound))
            }
            None => None,
        };
        let directory = Arc::new(NodeDirectory::new());
        let sender = Arc::new(DistSender::new(directory.clone(), None));
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let physical = config
            .clock
            .clone()
            .unwrap_or_else(|| Arc::new(SystemClock) as Arc<dyn PhysicalClock>);
        let clock = Arc::new(Hlc::new(physical, config.store.max_clock_offset));
        let db = Db::new(sender.clone(), clock.clone());
        let state = Arc::new(NodeState {
            clock,
            config,
            engine,
            directory,
            sender,
            db,
            store: OnceLock::new(),
            cluster_id: OnceLock::new(),
            advertise,
            started_at_nanos: now_nanos(),
            start_lock: tokio::sync::Mutex::new(()),
            shutdown: shutdown_rx.clone(),
            sql_ready: watch::channel(false).0,
            runtime: tokio::runtime::Handle::current(),
            tasks: parking_lot::Mutex::new(Vec::new()),
            node_ids_checked: parking_lot::Mutex::new(None),
        });
        let http_addr = http.as_ref().map(|(_, a)| *a);
        if let Some((l, _)) = http {
            let status = Arc::new(admin::AdminStatus(state.clone()));
            let task = tokio::spawn(bini_admin::serve(l, status, shutdown_rx.clone()));
            state.tasks.lock().push(task);
        }
        let server = tokio::spawn(services::serve(state.clone(), listener, shutdown_rx));
        match state.engine.get(Cf::Data, bini_kv::keys::STORE_IDENT_KEY)? {
            Some(b) => {
                let ident =
                    StoreIdent::decode(b.as_slice()).map_err(|e| Error::Ident(e.to_string()))?;
                state.start_store(ident.cluster_id, NodeId(ident.node_id))?;
            }
            None => {
                let task = tokio::spawn(background::join_loop(state.clone()));
                state.tasks.lock().push(task);
            }
        }
        Ok(Node {
            state,
            addr,
            http_addr,
            shutdown: shutdown_tx,
            server,
        })
    }

    /// The bound listen address.
    pub fn listen_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The bound admin HTTP address, if the node serves one.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// The address advertised to others.
    pub fn advertise_addr(&self) -> &str {
        &self.state.advertise
    }

    /// The node id, once the node has joined or bootstrapped.
    pub fn node_id(&self) -> Option<NodeId> {
        self.state.store.get().map(Store::node_id)
    }

    /// The store, once started.
    pub fn store(&self) -> Option<Store> {
        self.state.store.get().cloned()
    }

    /// The router of this node.
    pub fn sender(&self) -> Arc<DistSender> {
        self.state.sender.clone()
    }

    /// The transaction layer's client on this node.
    pub fn db(&self) -> Db {
        self.state.db.clone()
    }

    /// Splits the range holding `key` at `key`, if this node leads that range (an operator
    /// and test tool; ranges also split by size on their own).
    pub async fn split_at(&self, key: &[u8]) -> Result<()> {
        let store = self.store().ok_or(bini_kv::Error::NotInitialized)?;
        let Some((desc, _, _)) = store.replicas().into_iter().find(|(d, _, leader)| {
            key >= d.start_key.as_slice()
                && key < d.end_key.as_slice()
                && *leader == store.node_id().0
        }) else {
            return Err(bini_kv::Error::NotLeaseholder {
                range: bini_kv::RangeId(0),
                leaseholder: None,
                descriptor: None,
            }
            .into());
        };
        if desc.start_key.as_slice() == key {
            return Ok(());
        }
        background::split_range_at(&self.state, &store, RangeId(desc.range_id), key.to_vec())
            .await?;
        Ok(())
    }

    /// Waits until the store runs, up to `timeout`.
    pub async fn wait_started(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.state.store.get().is_none() {
            if tokio::time::Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }

    /// Stops serving and stops the store (a clean shutdown). When this returns, background
    /// work has ended; the engine closes once the last in-flight request lets go of it.
    pub async fn stop(self) {
        self.state.db.shutdown();
        let _ = self.shutdown.send(true);
        let mut server = self.server;
        if tokio::time::timeout(Duration::from_secs(3), &mut server)
            .await
            .is_err()
        {
            server.abort();
        }
        for t in self.state.tasks.lock().drain(..) {
            t.abort();
        }
        if let Some(store) = self.state.store.get().cloned() {
            let _ = tokio::task::spawn_blocking(move || store.stop()).await;
        }
        let _ = self.state.engine.sync();
    }

    /// Stops the node abruptly, the closest an in-process node comes to SIGKILL: no draining,
    /// no waiting for requests in flight, the store thread halts where it is (mid-round work is
    /// dropped, proposers are never answered) and nothing is flushed. Writes already in
    /// RocksDB's log survive, as they do a process kill.
    pub async fn kill(self) {
        self.state.db.shutdown();
        let _ = self.shutdown.send(true);
        self.server.abort();
        for t in self.state.tasks.lock().drain(..) {
            t.abort();
        }
        if let Some(store) = self.state.store.get().cloned() {
            let _ = tokio::task::spawn_blocking(move || store.kill()).await;
        }
    }
}

trait IntoArc {
    fn into_arc(self) -> Arc<dyn Engine>;
}

impl IntoArc for RocksEngine {
    fn into_arc(self) -> Arc<dyn Engine> {
        Arc::new(self)
    }
}
