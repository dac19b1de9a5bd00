//! The server-to-server face of a federated deployment (served by messaging on
//! `--federation-listen`): peers forward messages for devices homed here, and claim devices that
//! moved their home to them, whose queued messages this deployment then hands over.

use std::sync::Arc;

use tassis_keystore::KeyBackend;
use tassis_messaging::MessagingError;
use tassis_messaging::backend::{DeviceAddress, QueueBackend};
use tassis_proto::federation_v1::federation_server::{Federation, FederationServer};
use tassis_proto::federation_v1::{ClaimReply, ClaimRequest, ForwardReply, ForwardRequest, Outcome, Signed};
use tassis_proto::tassis::{ForwardedMessage, OutboundMessage};
use tassis_runtime::Shutdown;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};

use crate::FederationError;
use crate::metrics::Metrics;
use crate::outbox::{Item, Outbox};
use crate::presence::Presence;
use crate::signing::{Credentials, header, kind};

/// Messages read from a moving device's queue per round of its handoff.
const HANDOFF_BATCH: usize = 256;

/// The federation gRPC service.
#[derive(Clone)]
pub struct FederationService {
    pub(crate) creds: Arc<Credentials>,
    /// Routes forwarded messages (local queue, or on to the device's current home).
    pub(crate) router: Arc<dyn QueueBackend>,
    /// This deployment's own queues (what a handoff drains).
    pub(crate) local_queues: Arc<dyn QueueBackend>,
    /// This deployment's own registrations (what a handoff removes).
    pub(crate) local_keys: Arc<dyn KeyBackend>,
    pub(crate) outbox: Arc<Outbox>,
    pub(crate) presence: Arc<dyn Presence>,
    /// Largest forwarded payload accepted (the messaging limit).
    pub(crate) max_message_size: usize,
    /// The messaging age limit (what a handoff leaves behind as expired).
    pub(crate) max_message_age: std::time::Duration,
    /// Largest request accepted.
    pub(crate) max_request_size: usize,
    pub(crate) metrics: Arc<Metrics>,
}

impl FederationService {
    pub fn into_server(self) -> FederationServer<Self> {
        let max = self.max_request_size;
        FederationServer::new(self)
            .max_decoding_message_size(max)
            .max_encoding_message_size(max)
    }

    /// Opens a signed request, counting refusals.
    async fn open<M: crate::signing::Headed>(
        &self,
        req: Request<Signed>,
        kind: &str,
        rpc: &str,
    ) -> Result<(M, crate::config::Peer), Status> {
        match self
            .creds
            .open_request::<M>(req.get_ref(), kind, self.outbox.redis())
            .await
        {
            Ok(v) => Ok(v),
            Err(e @ FederationError::Unauthenticated(_)) => {
                self.metrics.refused.with_label_values(&[rpc]).inc();
                tracing::warn!(error = %e, rpc, "refused a server-to-server request");
                Err(e.into())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Queues one forwarded message.
    async fn accept(&self, m: ForwardedMessage) -> Outcome {
        let Some(OutboundMessage {
            to,
            unidentified_sender_message: payload,
        }) = m.message
        else {
            return Outcome::Invalid;
        };
        let Ok(to) = tassis_proto::address::check_address(to.as_ref()) else {
            return Outcome::Invalid;
        };
        if payload.len() > self.max_message_size {
            return Outcome::Invalid;
        }
        let device = DeviceAddress {
            identity_key: to.identity_key.clone(),
            device_id: to.device_id.clone(),
        };
        match self.router.enqueue(&device, payload).await {
            Ok(_) => Outcome::Queued,
            Err(MessagingError::UnknownDevice) => Outcome::UnknownDevice,
            Err(MessagingError::InvalidRequest(_)) => Outcome::Invalid,
            Err(MessagingError::Unavailable(e)) => {
                tracing::warn!(error = %e, "could not queue a forwarded message");
                Outcome::Unavailable
            }
        }
    }

    /// Hands a device's queued messages over to `home`, in order: marks the handoff (new messages
    /// for the device keep queueing locally, behind the rest), drops the device's registration
    /// here, moves the queue into the outbox, and ends the handoff once the queue is empty (from
    /// then on new messages find no local device and go straight to the outbox, after everything
    /// handed over). Interrupted, it is simply done again when the claimant retries. Returns how
    /// many messages it moved.
    async fn hand_over(&self, device: &DeviceAddress, home: &str) -> Result<u32, FederationError> {
        let (ik, dev) = (&device.identity_key, &device.device_id);
        let unavailable = |e: &dyn std::fmt::Display| FederationError::Unavailable(e.to_string());
        self.outbox.begin_handoff(ik, dev, home).await?;
        self.local_keys.unregister(ik, dev).await.map_err(|e| unavailable(&e))?;
        let mut moved = 0u32;
        let mut empty_rounds = 0;
        loop {
            let batch = self
                .local_queues
                .read(device, None, HANDOFF_BATCH)
                .await
                .map_err(|e| unavailable(&e))?;
            if batch.is_empty() {
                if self.outbox.finish_handoff(ik, dev, &self.oldest_kept()).await? {
                    return Ok(moved);
                }
                empty_rounds += 1;
                if empty_rounds > 100 {
                    return Err(FederationError::Unavailable(
                        "the queue being handed over does not drain; the claim will be retried".into(),
                    ));
                }
                continue;
            }
            for m in batch {
                let item = Item::message(device, m.payload);
                // Each message leaves the local queue only once the outbox has it.
                self.outbox.push(home, &item, m.trace.as_deref()).await?;
                self.local_queues.ack(device, m.id).await.map_err(|e| unavailable(&e))?;
                moved += 1;
                self.metrics.handed_over.with_label_values(&[home]).inc();
            }
        }
    }

    /// The oldest message id still within the age limit, by this process's clock.
    fn oldest_kept(&self) -> String {
        let now = tassis_runtime::unix_ms().max(0) as u64;
        let age = u64::try_from(self.max_message_age.as_millis()).unwrap_or(u64::MAX);
        format!("{}-0", now.saturating_sub(age))
    }
}

#[tonic::async_trait]
impl Federation for FederationService {
    async fn forward(&self, req: Request<Signed>) -> Result<Response<Signed>, Status> {
        let (r, peer): (ForwardRequest, _) = self.open(req, kind::FORWARD, "forward").await?;
        let nonce = r.header.as_ref().map(|h| h.nonce.clone()).unwrap_or_default();
        let mut outcomes = Vec::with_capacity(r.messages.len());
        for (i, m) in r.messages.into_iter().enumerate() {
            // Continue the trace of the message's send at its home (the stored message records
            // this span's context, so its delivery joins the same trace).
            let span = tracing::info_span!("forwarded", otel.name = "federation receive", otel.kind = "consumer");
            if let Some(tp) = r.traceparents.get(i).filter(|t| !t.is_empty()) {
                let carrier = std::collections::HashMap::from([("traceparent".to_string(), tp.clone())]);
                tassis_runtime::telemetry::set_parent_from(&span, &carrier);
            }
            let outcome = tracing::Instrument::instrument(self.accept(m), span).await;
            let label = match outcome {
                Outcome::Queued => "queued",
                Outcome::UnknownDevice => "unknown_device",
                Outcome::Invalid => "invalid",
                _ => "unavailable",
            };
            self.metrics
                .received
                .with_label_values(&[peer.name.as_str(), label])
                .inc();
            outcomes.push(outcome as i32);
            // Nothing behind a message that could not be queued may overtake it.
            if outcome == Outcome::Unavailable {
                break;
            }
        }
        let reply = ForwardReply {
            header: Some(header(&self.creds.name, &peer.name, kind::FORWARD_REPLY, nonce)),
            outcomes,
        };
        Ok(Response::new(self.creds.seal(&reply)))
    }

    async fn claim(&self, req: Request<Signed>) -> Result<Response<Signed>, Status> {
        let (r, peer): (ClaimRequest, _) = self.open(req, kind::CLAIM, "claim").await?;
        let nonce = r.header.as_ref().map(|h| h.nonce.clone()).unwrap_or_default();
        let a = tassis_proto::address::check_address(r.address.as_ref())
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let device = DeviceAddress {
            identity_key: a.identity_key.clone(),
            device_id: a.device_id.clone(),
        };
        // Hand over to wherever the device lives now (normally the claimant; if the device has
        // moved on again, its newest home), unless it is back here or registered nowhere.
        let home = self.presence.home(&device.identity_key, &device.device_id).await?;
        let (accepted, handed_over) = match home {
            Some(h) if h != self.creds.name && self.creds.peers.contains_key(&h) => {
                let n = self.hand_over(&device, &h).await?;
                tracing::info!(claimant = %peer.name, new_home = %h, messages = n, "handed a moved device's queue over");
                (true, n)
            }
            _ => (false, 0),
        };
        let reply = ClaimReply {
            header: Some(header(&self.creds.name, &peer.name, kind::CLAIM_REPLY, nonce)),
            accepted,
            handed_over,
        };
        Ok(Response::new(self.creds.seal(&reply)))
    }
}

/// Serves the federation API on `listener` until `shutdown`.
pub async fn serve(
    service: FederationService,
    listener: tokio::net::TcpListener,
    shutdown: Shutdown,
) -> Result<(), tonic::transport::Error> {
    tonic::transport::Server::builder()
        .trace_fn(tassis_runtime::telemetry::grpc_server_span)
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(30)))
        .add_service(service.into_server())
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown.wait_owned())
        .await
}
