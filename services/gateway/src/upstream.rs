//! The gateway's gRPC clients to the internal services, and the attachments configuration it
//! announces to every client (fetched from the attachments service, refreshed periodically).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use tassis_proto::attachments_v1::{GetConfigurationRequest, attachments_client::AttachmentsClient};
use tassis_proto::keystore_v1::key_store_client::KeyStoreClient;
use tassis_proto::messaging_v1::messaging_client::MessagingClient;
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

    /// Attachments gRPC endpoint URL.
    #[arg(long, env = "TASSIS_ATTACHMENTS", default_value = "http://127.0.0.1:50053")]
    pub attachments: String,
}

/// Builds a lazily connecting channel; fails only on a malformed URL.
pub fn channel(url: &str) -> Result<Channel, tassis_runtime::RuntimeError> {
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
        .keep_alive_while_idle(true)
        .connect_lazy())
}

/// Clients of every internal service.
#[derive(Clone)]
pub struct Upstream {
    pub keystore: KeyStoreClient<Channel>,
    /// For enqueues: balanced over every messaging replica.
    pub messaging: MessagingClient<Channel>,
    /// One channel per messaging replica, for delivery streams.
    pub messaging_replicas: Vec<(String, Channel)>,
    pub attachments: AttachmentsClient<Channel>,
    /// Deadline applied to every unary call.
    pub timeout: Duration,
    /// Configuration.maxAttachmentSize, as last fetched.
    max_attachment_size: Arc<AtomicI64>,
}

impl Upstream {
    pub fn new(args: &UpstreamArgs, timeout: Duration) -> Result<Self, tassis_runtime::RuntimeError> {
        if args.messaging.is_empty() {
            return Err(tassis_runtime::RuntimeError::Config(
                "--messaging needs at least one URL".into(),
            ));
        }
        let mut replicas = Vec::new();
        for url in &args.messaging {
            replicas.push((url.clone(), channel(url)?));
        }
        let balanced = if replicas.len() == 1 {
            replicas[0].1.clone()
        } else {
            let eps: Vec<Endpoint> = args
                .messaging
                .iter()
                .map(|u| {
                    Endpoint::from_shared(u.clone())
                        .expect("validated above")
                        .connect_timeout(Duration::from_secs(5))
                })
                .collect();
            Channel::balance_list(eps.into_iter())
        };
        let max = 64 * 1024 * 1024;
        Ok(Self {
            keystore: KeyStoreClient::new(channel(&args.keystore)?),
            messaging: MessagingClient::new(balanced).max_decoding_message_size(max),
            messaging_replicas: replicas,
            attachments: AttachmentsClient::new(channel(&args.attachments)?),
            timeout,
            max_attachment_size: Arc::new(AtomicI64::new(-1)),
        })
    }

    /// A request with the unary deadline set.
    pub fn request<T>(&self, msg: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        r.set_timeout(self.timeout);
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
