//! The messaging gRPC face: `Enqueue` validates and stores; `Deliver` hands the stream to
//! [`crate::delivery`].

use std::pin::Pin;
use std::sync::Arc;

use tassis_proto::messaging_v1::{
    DeliveryEvent, EnqueueReply, EnqueueRequest, GatewayEvent,
    messaging_server::{Messaging, MessagingServer},
};
use tassis_runtime::Shutdown;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status, Streaming};

use crate::delivery::{STREAM_BUFFER, run_stream};
use crate::metrics::{Instrumented, Metrics};
use crate::{DeviceAddress, MessagingConfig, MessagingError, QueueBackend};

/// The messaging gRPC service.
#[derive(Clone)]
pub struct MessagingService {
    /// Where queues live, wrapped in [`Instrumented`] (timed, traced).
    backend: Arc<dyn QueueBackend>,
    /// The backend as given, to re-wrap with other metrics.
    raw: Arc<dyn QueueBackend>,
    /// Prometheus series.
    metrics: Arc<Metrics>,
    /// Limits and tuning.
    config: Arc<MessagingConfig>,
    /// Ends every delivery stream when the service drains, so gateways move their subscriptions
    /// to other replicas and the gRPC server can finish.
    stop: Shutdown,
}

impl MessagingService {
    /// A service whose metrics are not exported (see [`MessagingService::with_metrics`]).
    pub fn new(backend: Arc<dyn QueueBackend>, config: MessagingConfig) -> Self {
        let metrics = Metrics::new(&prometheus::Registry::new());
        Self {
            backend: Arc::new(Instrumented::new(backend.clone(), metrics.clone())),
            raw: backend,
            metrics,
            config: Arc::new(config),
            stop: Shutdown::new(),
        }
    }

    /// Registers the service's series (`tassis_messaging_*`) in `registry`.
    pub fn with_metrics(mut self, registry: &prometheus::Registry) -> Self {
        self.metrics = Metrics::new(registry);
        self.backend = Arc::new(Instrumented::new(self.raw.clone(), self.metrics.clone()));
        self
    }

    /// The tonic server wrapper; accepts requests big enough for the largest allowed message.
    pub fn into_server(self) -> MessagingServer<Self> {
        let max = self.config.max_message_size + 4096;
        MessagingServer::new(self).max_decoding_message_size(max.max(4 << 20))
    }
}

#[tonic::async_trait]
impl Messaging for MessagingService {
    async fn enqueue(&self, req: Request<EnqueueRequest>) -> Result<Response<EnqueueReply>, Status> {
        let req = req.into_inner();
        let to = tassis_proto::address::check_address(req.to.as_ref())
            .map_err(|e| MessagingError::InvalidRequest(e.to_string()))?;
        if req.message.len() > self.config.max_message_size {
            return Err(MessagingError::InvalidRequest(format!(
                "message of {} bytes exceeds the {} byte limit",
                req.message.len(),
                self.config.max_message_size
            ))
            .into());
        }
        let device = DeviceAddress {
            identity_key: to.identity_key.clone(),
            device_id: to.device_id.clone(),
        };
        let id = self.backend.enqueue(&device, req.message).await?;
        self.metrics.enqueued.inc();
        Ok(Response::new(EnqueueReply {
            message_id: id.to_string(),
        }))
    }

    type DeliverStream = Pin<Box<dyn futures::Stream<Item = Result<DeliveryEvent, Status>> + Send + 'static>>;

    async fn deliver(&self, req: Request<Streaming<GatewayEvent>>) -> Result<Response<Self::DeliverStream>, Status> {
        let inbound = req.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(STREAM_BUFFER);
        let inbound = futures::StreamExt::take_until(inbound, Box::pin(self.stop.wait_owned()));
        tokio::spawn(run_stream(
            self.backend.clone(),
            self.config.clone(),
            self.metrics.clone(),
            inbound,
            tx,
        ));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// Serves the messaging gRPC API on `listener` until `shutdown`.
pub async fn serve(
    service: MessagingService,
    listener: tokio::net::TcpListener,
    shutdown: Shutdown,
) -> Result<(), tonic::transport::Error> {
    let mut service = service;
    service.stop = shutdown.clone();
    tonic::transport::Server::builder()
        .trace_fn(tassis_runtime::telemetry::grpc_server_span)
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(std::time::Duration::from_secs(20)))
        .add_service(service.into_server())
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown.wait_owned())
        .await
}
