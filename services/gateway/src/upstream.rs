//! The gateway's gRPC clients to the internal services, and the attachments configuration it
//! announces to every client (fetched from the attachments service, refreshed periodically).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use tassis_proto::attachments_v1::{GetConfigurationRequest, attachments_client::AttachmentsClient};
use tassis_proto::keystore_v1::key_store_client::KeyStoreClient;
use tassis_proto::messaging_v1::messaging_client::MessagingClient;
use tonic::transport::channel::Change;
use tonic::transport::{Channel, Endpoint};

use crate::GatewayError;

/// Where the internal services are.
#[derive(Clone, Debug, clap::Args)]
pub struct UpstreamArgs {
    /// Keystore gRPC endpoint URL.
    #[arg(long, env = "TASSIS_KEYSTORE", default_value = "http://127.0.0.1:50051")]
    pub keystore: String,

    /// Messaging gRPC endpoint URLs, comma-separated (one per replica outside Kubernetes).
    #[arg(
        long,
        env = "TASSIS_MESSAGING",
        default_value = "http://127.0.0.1:50052",
        value_delimiter = ','
    )]
    pub messaging: Vec<String>,

    /// Discover messaging replicas from the EndpointSlices of this Kubernetes Service
    /// (`name` or `namespace/name`) instead of `--messaging`.
    #[arg(long, env = "TASSIS_MESSAGING_SERVICE")]
    pub messaging_service: Option<String>,

    /// Name of the gRPC port in the messaging Service's EndpointSlices.
    #[arg(long, env = "TASSIS_MESSAGING_PORT_NAME", default_value = "grpc")]
    pub messaging_port_name: String,

    /// Attachments gRPC endpoint URL.
    #[arg(long, env = "TASSIS_ATTACHMENTS", default_value = "http://127.0.0.1:50053")]
    pub attachments: String,
}

/// The endpoint settings every internal channel uses; fails only on a malformed URL.
pub fn endpoint(url: &str) -> Result<Endpoint, tassis_runtime::RuntimeError> {
    let ep = Endpoint::from_shared(url.to_string())
        .map_err(|e| tassis_runtime::RuntimeError::Config(format!("bad endpoint URL {url:?}: {e}")))?;
    if !matches!(ep.uri().scheme_str(), Some("http") | Some("https")) || ep.uri().host().is_none() {
        return Err(tassis_runtime::RuntimeError::Config(format!(
            "bad endpoint URL {url:?}: expected http://host:port"
        )));
    }
    Ok(ep
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(20))
        .keep_alive_while_idle(true))
}

/// A lazily connecting channel to `url`.
pub fn channel(url: &str) -> Result<Channel, tassis_runtime::RuntimeError> {
    Ok(endpoint(url)?.connect_lazy())
}

/// Clients of every internal service.
#[derive(Clone)]
pub struct Upstream {
    pub keystore: KeyStoreClient<Channel>,
    /// For enqueues: balanced over the current messaging replicas.
    pub messaging: MessagingClient<Channel>,
    pub attachments: AttachmentsClient<Channel>,
    /// Deadline applied to every unary call.
    pub timeout: Duration,
    /// Configuration.maxAttachmentSize, as last fetched.
    max_attachment_size: Arc<AtomicI64>,
}

/// The messaging replica set: feeds both the enqueue load balancer and the delivery hub, from a
/// static list or from discovery.
pub struct MessagingReplicas {
    /// Endpoint changes for the balanced enqueue channel.
    balance: tokio::sync::mpsc::Sender<Change<String, Endpoint>>,
    /// The delivery streams.
    hub: crate::delivery::DeliveryHub,
    /// Replicas in the set now, by URL.
    current: tokio::sync::Mutex<HashMap<String, Channel>>,
}

impl MessagingReplicas {
    /// Makes the replica set exactly `urls`. Invalid URLs are refused with an error (and change
    /// nothing).
    pub async fn set(&self, urls: &[String]) -> Result<(), tassis_runtime::RuntimeError> {
        let mut current = self.current.lock().await;
        let mut next = HashMap::new();
        for url in urls {
            let ch = match current.get(url) {
                Some(ch) => ch.clone(),
                None => channel(url)?,
            };
            next.insert(url.clone(), ch);
        }
        for url in current.keys().filter(|u| !next.contains_key(*u)) {
            let _ = self.balance.send(Change::Remove(url.clone())).await;
        }
        for url in next.keys().filter(|u| !current.contains_key(*u)) {
            let _ = self.balance.send(Change::Insert(url.clone(), endpoint(url)?)).await;
        }
        let mut list: Vec<(String, Channel)> = next.iter().map(|(u, c)| (u.clone(), c.clone())).collect();
        list.sort_by(|a, b| a.0.cmp(&b.0));
        self.hub.set_replicas(&list);
        *current = next;
        Ok(())
    }

    pub fn hub(&self) -> &crate::delivery::DeliveryHub {
        &self.hub
    }
}

impl Upstream {
    /// Builds the clients and an (empty) messaging replica set to fill with
    /// [`MessagingReplicas::set`].
    pub fn new(
        args: &UpstreamArgs,
        timeout: Duration,
        hub: crate::delivery::DeliveryHub,
    ) -> Result<(Self, MessagingReplicas), tassis_runtime::RuntimeError> {
        let (balanced, balance) = Channel::balance_channel(64);
        let max = 64 * 1024 * 1024;
        Ok((
            Self {
                keystore: KeyStoreClient::new(channel(&args.keystore)?),
                messaging: MessagingClient::new(balanced).max_decoding_message_size(max),
                attachments: AttachmentsClient::new(channel(&args.attachments)?),
                timeout,
                max_attachment_size: Arc::new(AtomicI64::new(-1)),
            },
            MessagingReplicas {
                balance,
                hub,
                current: tokio::sync::Mutex::new(HashMap::new()),
            },
        ))
    }

    /// A request with the unary deadline set, carrying the current span's trace context (W3C
    /// `traceparent`) so the service's spans join the client operation's trace.
    pub fn request<T>(&self, msg: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        r.set_timeout(self.timeout);
        tassis_runtime::telemetry::inject(r.metadata_mut());
        r
    }

    /// The last known maximum attachment size, or None before the first successful fetch.
    pub fn max_attachment_size(&self) -> Option<i64> {
        let v = self.max_attachment_size.load(Ordering::Relaxed);
        (v >= 0).then_some(v)
    }

    /// Fetches the attachments configuration once.
    pub async fn refresh_attachments_config(&self) -> Result<i64, GatewayError> {
        let reply = self
            .attachments
            .clone()
            .get_configuration(self.request(GetConfigurationRequest {}))
            .await
            .map_err(|s| GatewayError::from_status(s, crate::ErrorName::Unavailable))?
            .into_inner();
        self.max_attachment_size
            .store(reply.max_attachment_size, Ordering::Relaxed);
        Ok(reply.max_attachment_size)
    }
}

/// Fills the messaging replica set: once from `--messaging`, or continuously from Kubernetes
/// EndpointSlices when `--messaging-service` is set.
pub async fn start_messaging_source(
    args: &UpstreamArgs,
    ctx: Arc<crate::listener::Ctx>,
) -> Result<(), tassis_runtime::RuntimeError> {
    match &args.messaging_service {
        None => ctx.replicas.set(&args.messaging).await,
        Some(service) => {
            let target = tassis_discovery::Target::parse(service, &args.messaging_port_name)?;
            let mut rx = tassis_discovery::watch(target, ctx.shutdown.wait_owned()).await?;
            tokio::spawn(async move {
                loop {
                    let urls = rx.borrow_and_update().clone();
                    if let Err(e) = ctx.replicas.set(&urls).await {
                        tracing::warn!(error = %e, "ignoring discovered messaging endpoints");
                    }
                    if rx.changed().await.is_err() {
                        return;
                    }
                }
            });
            Ok(())
        }
    }
}
