//! The admin HTTP listener every role exposes: `/healthz` (the process is alive), `/readyz` (the
//! role can serve: upstreams reachable, not draining) and `/metrics` (Prometheus text format).
//! Kept off the client port so probes and scrapes never compete with client traffic and the port
//! need not be exposed outside the cluster.

use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use prometheus::{Encoder, Registry, TextEncoder};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::Shutdown;

/// Liveness and readiness of one role.
#[derive(Debug, Default)]
pub struct Health {
    /// True once the role can serve, false again while it drains.
    ready: AtomicBool,
}

impl Health {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }
}

/// The admin server's shared state.
#[derive(Clone)]
struct AdminState {
    /// Readiness flag the role flips.
    health: Arc<Health>,
    /// Metrics of the role.
    registry: Registry,
}

/// The admin endpoints of one role.
pub struct AdminServer;

impl AdminServer {
    /// Serves the admin endpoints on `listener` until `shutdown`.
    pub async fn serve(
        listener: tokio::net::TcpListener,
        health: Arc<Health>,
        registry: Registry,
        shutdown: Shutdown,
    ) -> std::io::Result<()> {
        let app = Router::new()
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/readyz", get(readyz))
            .route("/metrics", get(metrics))
            .with_state(AdminState { health, registry });
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.wait_owned())
            .await
    }
}

async fn readyz(State(s): State<AdminState>) -> impl IntoResponse {
    if s.health.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

async fn metrics(State(s): State<AdminState>) -> impl IntoResponse {
    let mut buf = Vec::new();
    let enc = TextEncoder::new();
    if let Err(e) = enc.encode(&s.registry.gather(), &mut buf) {
        return (StatusCode::INTERNAL_SERVER_ERROR, format!("encoding metrics: {e}")).into_response();
    }
    ([(axum::http::header::CONTENT_TYPE, enc.format_type().to_string())], buf).into_response()
}
