//! One client connection: its login state, its server-side sequence counter, its keepalive and
//! the dispatch of each inbound payload to the operation modules in [`crate::ops`].
//!
//! Requests are handled one at a time in arrival order, so a client's sends are queued in the
//! order it made them. Deliveries do not wait behind requests of other connections: they arrive
//! on the device's subscription and go straight to the writer queue.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use prost::Message as _;
use tassis_proto::tassis::{AuthChallenge, Configuration, Error as ProtoError, Message, message::Payload};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_util::sync::CancellationToken;

use tassis_ratelimit::Gcra;

use crate::connection::{Out, WsSource, close_frame, drain, frame};
use crate::delivery::{HubEvent, Subscription};
use crate::listener::Ctx;
use crate::{ErrorName, GatewayError, ops};

/// A logged-in device on this connection.
pub struct LoggedIn {
    /// The device address proven at login.
    pub address: tassis_proto::tassis::Address,
    /// Deliveries for the device.
    pub subscription: Subscription,
    /// Delivered, not yet acked: our sequence -> message id, oldest first.
    pub pending: BTreeMap<u32, String>,
    /// Deliveries handed to the writer since credit was last returned.
    pub uncredited: u32,
}

/// What the session loop does after handling an event.
pub enum Flow {
    Continue,
    Close(CloseCode, &'static str),
}

/// One connection's state.
pub struct Session {
    pub ctx: Arc<Ctx>,
    /// Frames to the writer task.
    pub out: mpsc::Sender<Out>,
    /// Next server-originated sequence number.
    next_seq: u32,
    /// This connection's login challenge.
    pub nonce: [u8; 32],
    /// Set once the connection has logged in.
    pub login: Option<LoggedIn>,
    /// This connection's request bucket (`--rate-requests-per-connection`).
    pub requests: Gcra,
    /// This connection's upload-authorization bucket.
    pub uploads: Gcra,
}

impl Session {
    pub fn new(ctx: Arc<Ctx>, out: mpsc::Sender<Out>) -> Self {
        Self {
            ctx,
            out,
            next_seq: 1,
            nonce: rand::random(),
            login: None,
            requests: Gcra::default(),
            uploads: Gcra::default(),
        }
    }

    /// Allocates the next server sequence number.
    pub fn next_seq(&mut self) -> u32 {
        let s = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1).max(1);
        s
    }

    /// Queues a frame for the writer, waiting for room (the write deadline bounds the wait).
    pub async fn send(&self, sequence: u32, payload: Payload) -> Result<(), ()> {
        self.out.send(frame(sequence, payload)).await.map_err(|_| ())
    }

    /// Queues a server-originated message with a fresh sequence.
    pub async fn push(&mut self, payload: Payload) -> Result<u32, ()> {
        let seq = self.next_seq();
        self.send(seq, payload).await?;
        Ok(seq)
    }

    /// Queues an Error reply.
    pub async fn send_error(&self, sequence: u32, e: &GatewayError) -> Result<(), ()> {
        self.send(
            sequence,
            Payload::Error(ProtoError {
                name: e.name.as_str().to_string(),
                description: e.description.clone(),
            }),
        )
        .await
    }

    fn kind(&self) -> &'static str {
        if self.login.is_some() {
            "authenticated"
        } else {
            "anonymous"
        }
    }

    /// Runs the connection to its end.
    pub async fn run(mut self, mut source: WsSource, writer_failed: CancellationToken) {
        let shutdown = self.ctx.shutdown.clone();
        let cfg = self.ctx.config.clone();
        let max_attachment_size = self.ctx.upstream.max_attachment_size().unwrap_or(0);
        self.ctx.metrics.connections.with_label_values(&["anonymous"]).inc();
        let mut kind = "anonymous";

        let greeted = async {
            self.push(Payload::Configuration(Configuration { max_attachment_size }))
                .await?;
            let nonce = Bytes::copy_from_slice(&self.nonce);
            self.push(Payload::AuthChallenge(AuthChallenge { nonce })).await
        };
        let mut flow = if greeted.await.is_err() {
            Flow::Close(CloseCode::Error, "")
        } else {
            Flow::Continue
        };

        let mut ping = tokio::time::interval_at(Instant::now() + cfg.ping_interval, cfg.ping_interval);
        let mut prekeys = tokio::time::interval_at(Instant::now() + cfg.prekeys_low_interval, cfg.prekeys_low_interval);
        let idle = tokio::time::sleep(cfg.idle_timeout);
        tokio::pin!(idle);

        while matches!(flow, Flow::Continue) {
            flow = tokio::select! {
                _ = shutdown.wait() => Flow::Close(CloseCode::Away, "server shutting down"),
                _ = writer_failed.cancelled() => break,
                _ = &mut idle => Flow::Close(CloseCode::Normal, "idle timeout"),
                _ = ping.tick() => {
                    match self.out.try_send(Box::new(WsMessage::Ping(Bytes::new()))) {
                        Ok(()) => Flow::Continue,
                        Err(_) => Flow::Close(CloseCode::Policy, "client is not reading"),
                    }
                }
                _ = prekeys.tick(), if self.login.is_some() => Box::pin(ops::prekeys_low::check(&mut self)).await,
                ev = next_delivery(&mut self.login) => self.on_delivery(ev).await,
                f = source.next() => {
                    idle.as_mut().reset(Instant::now() + cfg.idle_timeout);
                    match f {
                        None => break,
                        // Boxed: a request's future (gRPC call included) is large and exists only
                        // while the request runs; an idle connection's task stays small.
                        Some(Ok(WsMessage::Binary(data))) => Box::pin(self.on_frame(data)).await,
                        Some(Ok(WsMessage::Text(_))) => self.reply_unreadable("text frames are not tassis messages").await,
                        Some(Ok(WsMessage::Close(_))) => break,
                        Some(Ok(_)) => Flow::Continue, // ping (auto-answered), pong, raw frame
                        Some(Err(WsError::Capacity(CapacityError::MessageTooLong { size, max_size }))) => {
                            let e = GatewayError::new(
                                ErrorName::MessageTooLarge,
                                format!("frame of {size} bytes exceeds the {max_size} byte limit"),
                            );
                            let _ = self.send_error(0, &e).await;
                            Flow::Close(CloseCode::Size, "message too large")
                        }
                        Some(Err(e)) => {
                            tracing::debug!(error = %e, "read failed");
                            break;
                        }
                    }
                }
            };
            if self.kind() != kind {
                self.ctx.metrics.connections.with_label_values(&[kind]).dec();
                kind = self.kind();
                self.ctx.metrics.connections.with_label_values(&[kind]).inc();
            }
        }
        if let Flow::Close(code, reason) = flow
            && self.out.send(close_frame(code, reason)).await.is_ok()
        {
            drain(&mut source).await;
        }
        self.ctx.metrics.connections.with_label_values(&[kind]).dec();
    }

    async fn reply_unreadable(&self, why: &str) -> Flow {
        match self.send_error(0, &GatewayError::invalid_request(why)).await {
            Ok(()) => Flow::Continue,
            Err(()) => Flow::Close(CloseCode::Error, ""),
        }
    }

    /// Handles one binary frame.
    async fn on_frame(&mut self, data: Bytes) -> Flow {
        let msg = match Message::decode(data) {
            Ok(m) => m,
            Err(_) => return self.reply_unreadable("frame is not a valid tassis Message").await,
        };
        let seq = msg.sequence;
        // One span per client operation. Only the operation and its outcome: nothing that could
        // identify the client (no peer address, no sender of an anonymous send).
        let span_op = ops::name(msg.payload.as_ref()).unwrap_or("invalid");
        let span = tracing::info_span!(
            "client.op",
            otel.name = %format!("tassis {span_op}"),
            otel.kind = "server",
            tassis.op = span_op,
            tassis.outcome = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        );
        let (op, result) = {
            use tracing::Instrument;
            // Acks are not requests: they follow deliveries, which the server paces itself.
            let counted = !matches!(msg.payload, Some(Payload::Ack(_)));
            let limit = &self.ctx.config.rate_requests_per_connection;
            let kind = crate::limits::Kind::RequestsPerConnection;
            match crate::limits::own(&self.ctx, &mut self.requests, kind, limit, counted as u32) {
                Ok(()) => ops::dispatch(self, seq, msg.payload).instrument(span.clone()).await,
                Err(e) => (ops::name(msg.payload.as_ref()), Err(e)),
            }
        };
        let op_name = op.unwrap_or("invalid");
        match result {
            Ok(flow) => {
                span.record("tassis.outcome", "ok");
                if let Some(op) = op {
                    self.ctx.metrics.operations.with_label_values(&[op, "ok"]).inc();
                }
                flow
            }
            Err(e) => {
                span.record("tassis.outcome", e.name.as_str());
                span.record("otel.status_code", "ERROR");
                drop(span);
                self.ctx
                    .metrics
                    .operations
                    .with_label_values(&[op_name, e.name.as_str()])
                    .inc();
                if self.send_error(seq, &e).await.is_err() {
                    return Flow::Close(CloseCode::Error, "");
                }
                if e.name == ErrorName::Unauthorized && op == Some("login") {
                    Flow::Close(CloseCode::Policy, "unauthorized")
                } else {
                    Flow::Continue
                }
            }
        }
    }

    /// Forwards one delivery to the client.
    ///
    /// Waits for room in the writer queue: a client that reads slowly slows its own deliveries
    /// (credit returns later) and one that stops reading is cut off by the write deadline.
    async fn on_delivery(&mut self, ev: Option<HubEvent>) -> Flow {
        let seq = self.next_seq();
        let max_pending = self.ctx.config.max_unacked_per_connection;
        let credit_every = (self.ctx.config.delivery_window / 4).max(1);
        match ev {
            Some(HubEvent::Delivery(d)) => {
                // The push joins the trace of messaging's delivery span.
                let span = tracing::info_span!(
                    "push",
                    otel.name = "gateway push",
                    otel.kind = "consumer",
                    messaging.message.id = %d.message_id,
                );
                tassis_runtime::telemetry::set_parent_from(&span, &d.trace_context);
                let sent = {
                    use tracing::Instrument;
                    self.out
                        .send(frame(seq, Payload::InboundMessage(d.message)))
                        .instrument(span)
                        .await
                };
                if sent.is_err() {
                    return Flow::Close(CloseCode::Error, "");
                }
                self.ctx.metrics.deliveries.with_label_values(&["pushed"]).inc();
                if d.enqueued_at_ms > 0 {
                    let waited = (tassis_runtime::unix_ms() - d.enqueued_at_ms).max(0);
                    self.ctx.metrics.enqueue_to_delivery.observe(waited as f64 / 1000.0);
                }
                let Some(login) = self.login.as_mut() else {
                    return Flow::Continue;
                };
                login.pending.insert(seq, d.message_id);
                while login.pending.len() > max_pending {
                    login.pending.pop_first();
                }
                login.uncredited += 1;
                if login.uncredited >= credit_every {
                    login.subscription.credit(login.uncredited);
                    login.uncredited = 0;
                }
                Flow::Continue
            }
            Some(HubEvent::Failed(reason)) => {
                tracing::warn!(%reason, "subscription failed");
                let e = GatewayError::new(ErrorName::UnableToOpenSubscriber, "message delivery failed, reconnect");
                let _ = self.out.try_send(frame(
                    seq,
                    Payload::Error(ProtoError {
                        name: e.name.as_str().into(),
                        description: e.description,
                    }),
                ));
                Flow::Close(CloseCode::Again, "delivery failed")
            }
            None => Flow::Close(CloseCode::Policy, "client is not reading"),
        }
    }
}

/// Waits for the next delivery of a logged-in connection; never completes otherwise.
async fn next_delivery(login: &mut Option<LoggedIn>) -> Option<HubEvent> {
    match login {
        Some(l) => l.subscription.recv().await,
        None => std::future::pending().await,
    }
}
