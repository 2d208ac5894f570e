//! The admin HTTP server every node runs beside its SQL port (DESIGN.md layer 8).
//!
//! What it serves, all read-only:
//! - `GET /health`: 200 while the node process runs and answers (a liveness probe).
//! - `GET /health?ready=1`: 200 once the node takes SQL (its store runs and the catalog is
//!   bootstrapped), 503 before — the readiness probe a StatefulSet waits on until
//!   `bini init`.
//! - `GET /api/v2/nodes`: the cluster's nodes as this node knows them (JSON).
//! - `GET /`: the web UI, one page embedded in the binary (no build step), which polls the
//!   JSON API.
//!
//! The server knows nothing of stores or Raft: the node hands it a [`Status`] to ask. Left
//! out for now: ranges, replication and SQL activity pages, charts, `/_status/vars`.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// What the admin server asks the node.
pub trait Status: Send + Sync + 'static {
    /// Whether the node takes SQL: its store runs and the catalog is ready.
    fn ready(&self) -> bool;
    /// The cluster's nodes as this node knows them, by id.
    fn nodes(&self) -> Vec<NodeView>;
}

/// A node as the API shows it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeView {
    /// Node id.
    pub id: u64,
    /// SQL and RPC address (`host:port`).
    pub address: String,
    /// Admin HTTP address.
    pub http_address: String,
    /// Build.
    pub build: String,
    /// When the node started (RFC 3339, UTC).
    pub started_at: String,
    /// When its record was last refreshed (RFC 3339, UTC).
    pub updated_at: String,
    /// Whether its record is fresh (it heartbeats).
    pub is_live: bool,
    /// Range leases it holds.
    pub leases: u64,
    /// Replicas it holds.
    pub replicas: u64,
}

/// The UI page.
const INDEX_HTML: &str = include_str!("ui/index.html");

/// Serves the admin API on `listener` until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    status: Arc<dyn Status>,
    mut shutdown: watch::Receiver<bool>,
) {
    let app = router(status);
    let stop = async move {
        while !*shutdown.borrow() {
            if shutdown.changed().await.is_err() {
                break;
            }
        }
    };
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(stop)
        .await
    {
        tracing::warn!(error = %e, "admin HTTP server stopped");
    }
}

fn router(status: Arc<dyn Status>) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/health", get(health))
        .route("/api/v2/nodes", get(nodes))
        .with_state(status)
}

async fn index() -> Html<&'static str> {
    Html(INDEX_HTML)
}

#[derive(Deserialize)]
struct HealthParams {
    ready: Option<String>,
}

async fn health(
    State(status): State<Arc<dyn Status>>,
    Query(params): Query<HealthParams>,
) -> Response {
    let want_ready = params
        .ready
        .as_deref()
        .is_some_and(|v| matches!(v, "1" | "true"));
    if want_ready && !status.ready() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CONTENT_TYPE, "application/json")],
            r#"{"status":"not ready"}"#,
        )
            .into_response();
    }
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        r#"{"status":"ok"}"#,
    )
        .into_response()
}

#[derive(Serialize)]
struct NodesResponse {
    nodes: Vec<NodeView>,
}

async fn nodes(State(status): State<Arc<dyn Status>>) -> Json<NodesResponse> {
    Json(NodesResponse {
        nodes: status.nodes(),
    })
}
