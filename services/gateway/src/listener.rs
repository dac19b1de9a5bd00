//! The accept loop: TCP accept, connection cap, WebSocket handshake on `/api` or `/<a>/<b>`, one
//! task per connection, and shutdown (stop accepting; sessions close their clients with 1001).
//! `GET /attachments/<key>` requests on the same port go to [`crate::download`].

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tassis_runtime::{Health, Shutdown};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use tassis_ratelimit::Limiter;

use crate::GatewayConfig;
use crate::auth::Schemes;
use crate::connection::{close_frame, drain, spawn_writer};
use crate::delivery::DeliveryHub;
use crate::metrics::Metrics;
use crate::session::Session;
use crate::upstream::{MessagingReplicas, Upstream, UpstreamArgs};

/// What every connection of this gateway shares.
pub struct Ctx {
    pub config: Arc<GatewayConfig>,
    pub upstream: Upstream,
    /// The messaging replica set and its delivery streams.
    pub replicas: MessagingReplicas,
    pub metrics: Metrics,
    pub schemes: Schemes,
    pub shutdown: Shutdown,
    /// Rate-limit buckets (shared through Redis when configured).
    pub limiter: Arc<Limiter>,
}

/// A gateway ready to accept.
pub struct Gateway {
    ctx: Arc<Ctx>,
    /// Where the messaging replicas come from.
    upstream_args: UpstreamArgs,
}

impl Gateway {
    /// Builds the gateway: upstream clients and the delivery streams (connected lazily).
    pub fn new(
        config: GatewayConfig,
        upstream: &UpstreamArgs,
        registry: &prometheus::Registry,
        shutdown: Shutdown,
        limiter: Arc<Limiter>,
    ) -> Result<Self, tassis_runtime::RuntimeError> {
        config.validate()?;
        let metrics = Metrics::new(registry);
        let hub = DeliveryHub::new(config.delivery_window, shutdown.clone(), metrics.clone());
        let (upstream_clients, replicas) = Upstream::new(upstream, config.upstream_timeout, hub)?;
        let schemes = Schemes {
            ed25519: config.auth_ed25519,
            xeddsa: config.auth_xeddsa,
        };
        Ok(Self {
            upstream_args: upstream.clone(),
            ctx: Arc::new(Ctx {
                config: Arc::new(config),
                upstream: upstream_clients,
                replicas,
                metrics,
                schemes,
                shutdown,
                limiter,
            }),
        })
    }

    /// Sets up the messaging replica set (static list or discovery), then fetches what clients are
    /// told at connect (the attachments configuration), retrying with backoff until it succeeds or
    /// shutdown, and keeps it fresh in the background.
    pub async fn prepare(&self) -> Result<bool, tassis_runtime::RuntimeError> {
        crate::upstream::start_messaging_source(&self.upstream_args, self.ctx.clone()).await?;
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.ctx.upstream.refresh_attachments_config().await {
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "waiting for the attachments service");
                    tokio::select! {
                        _ = self.ctx.shutdown.wait() => return Ok(false),
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        let ctx = self.ctx.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = ctx.shutdown.wait() => return,
                    _ = tokio::time::sleep(Duration::from_secs(30)) => {}
                }
                if let Err(e) = ctx.upstream.refresh_attachments_config().await {
                    tracing::warn!(error = %e, "refreshing attachments configuration");
                }
            }
        });
        Ok(true)
    }

    /// Accepts connections until shutdown, then waits (up to `grace`) for sessions to close.
    pub async fn run(self, listener: TcpListener, grace: Duration) {
        let ctx = self.ctx;
        let slots = Arc::new(Semaphore::new(ctx.config.max_connections));
        let tracker = TaskTracker::new();
        loop {
            let accepted = tokio::select! {
                _ = ctx.shutdown.wait() => break,
                a = listener.accept() => a,
            };
            // The peer address only keys the per-address connection limit (hashed): an anonymous
            // sender's address must not reach logs, spans or metrics (sender anonymity).
            let (stream, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Usually EMFILE: back off briefly instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let permit = slots.clone().try_acquire_owned().ok();
            let ctx = ctx.clone();
            tracker.spawn(async move {
                handle(ctx, stream, peer.ip(), permit.is_some()).await;
                drop(permit);
            });
        }
        drop(listener);
        tracker.close();
        if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
            tracing::warn!("grace period over with connections still open");
        }
    }
}

/// Whether a WebSocket may be opened at `path`: `/api` or `/<a>/<b>`.
pub fn path_allowed(path: &str) -> bool {
    if path == "/api" {
        return true;
    }
    let mut parts = path.strip_prefix('/').unwrap_or("").split('/');
    matches!((parts.next(), parts.next(), parts.next()), (Some(a), Some(b), None) if !a.is_empty() && !b.is_empty())
}

/// Initial read buffer of each connection.
const READ_BUFFER: usize = 1024;

async fn handle(ctx: Arc<Ctx>, stream: TcpStream, peer: std::net::IpAddr, has_slot: bool) {
    match crate::download::route(&stream, ctx.config.handshake_timeout).await {
        crate::download::Route::WebSocket => {}
        crate::download::Route::Download => return Box::pin(crate::download::serve(ctx, stream, has_slot)).await,
        crate::download::Route::Closed => return,
    }
    let cfg = &ctx.config;
    let ws_config = WebSocketConfig::default()
        .max_message_size(Some(cfg.max_frame_size as usize))
        .max_frame_size(Some(cfg.max_frame_size as usize))
        // Every connection keeps its read buffer: small, so that idle connections stay cheap
        // (BENCHMARKS.md, connection density); a larger frame grows it as needed.
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        .max_write_buffer_size(4 * cfg.max_frame_size as usize + 1024 * 1024);
    let mut forwarded: Option<String> = None;
    #[allow(clippy::result_large_err)]
    let check = |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
        if let Some(h) = &cfg.client_ip_header {
            forwarded = req
                .headers()
                .get(h.as_str())
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
        }
        if path_allowed(req.uri().path()) {
            Ok(resp)
        } else {
            let mut e = ErrorResponse::new(Some(
                "not found: WebSocket endpoints are /api and /<identityKey>/<deviceId>\n".into(),
            ));
            *e.status_mut() = StatusCode::NOT_FOUND;
            Err(e)
        }
    };
    let ws = match tokio::time::timeout(
        cfg.handshake_timeout,
        Box::pin(tokio_tungstenite::accept_hdr_async_with_config(
            stream,
            check,
            Some(ws_config),
        )),
    )
    .await
    {
        Ok(Ok(ws)) => ws,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "handshake failed");
            return;
        }
        Err(_) => return,
    };
    let (sink, mut source) = ws.split();
    let failed = CancellationToken::new();
    let out = spawn_writer(sink, cfg.outbound_queue, cfg.write_timeout, failed.clone());
    if !has_slot {
        if out
            .send(close_frame(CloseCode::Again, "gateway is at capacity, try another"))
            .await
            .is_ok()
        {
            drain(&mut source).await;
        }
        return;
    }
    let ip = crate::limits::client_ip(peer, forwarded.as_deref());
    let key = crate::limits::address_key(ip);
    let kind = crate::limits::Kind::ConnectionsPerIp;
    if let Err(e) = Box::pin(crate::limits::shared(&ctx, kind, &cfg.rate_connections_per_ip, &key)).await {
        let error = tassis_proto::tassis::message::Payload::Error(tassis_proto::tassis::Error {
            name: e.name.as_str().into(),
            description: e.description,
        });
        if out.send(crate::connection::frame(0, error)).await.is_ok()
            && out.send(close_frame(CloseCode::Policy, "rate limited")).await.is_ok()
        {
            drain(&mut source).await;
        }
        return;
    }
    // Boxed, like the handshake above: each future lives on the heap only as long as its stage,
    // and the connection's task stays a few hundred bytes.
    Box::pin(Session::new(ctx, out).run(source, failed)).await;
}

/// Runs a built gateway on `listener` until shutdown: the whole role, minus process setup.
pub async fn serve(
    gw: Gateway,
    listener: TcpListener,
    health: Arc<Health>,
    shutdown: Shutdown,
    grace: Duration,
) -> Result<(), tassis_runtime::RuntimeError> {
    if !gw.prepare().await? {
        return Ok(());
    }
    health.set_ready(true);
    let drain_health = health.clone();
    let s2 = shutdown.clone();
    tokio::spawn(async move {
        s2.wait().await;
        drain_health.set_ready(false);
    });
    gw.run(listener, grace).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::path_allowed;

    #[test]
    fn paths() {
        for ok in ["/api", "/abc/def", "/aGVsbG8=/1"] {
            assert!(path_allowed(ok), "{ok}");
        }
        for bad in ["/", "", "/api/", "/a", "/a/b/c", "//b", "/a/", "/other"] {
            assert!(!path_allowed(bad), "{bad}");
        }
    }
}
