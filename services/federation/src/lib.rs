//! Federation between tassis deployments (docs/federation.md): several deployments (say one per
//! region) serve one user base; a device's home is the deployment where it last registered, and a
//! message sent to it anywhere reaches it.
//!
//! - [`presence`]: the directory of homes, behind a trait (shared Redis, or static: federation off);
//! - [`router`]: the keystore and messaging backend wrappers that write the directory on
//!   Register/Unregister and route each enqueue to the local queue or the outbox;
//! - [`outbox`]: the durable forwarding queues in this deployment's Redis Cluster;
//! - [`forwarder`]: drains the outbox to the peers, in order, with spaced retries and the drop
//!   timeout;
//! - [`service`]: the server-to-server API (Forward, Claim) peers call;
//! - [`signing`]: how both sides authenticate each other (signed envelopes, allowlist);
//! - [`config`], [`metrics`], [`error`].
//!
//! [`Federation`] assembles them for a role.

pub mod config;
pub mod error;
pub mod forwarder;
pub mod metrics;
pub mod outbox;
pub mod presence;
pub mod router;
pub mod service;
pub mod signing;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use tassis_keystore::KeyBackend;
use tassis_messaging::QueueBackend;
use tassis_messaging::redis::RedisQueues;
use tassis_redis::Redis;
use tassis_runtime::Shutdown;

pub use config::{FederationArgs, PresenceArgs, generate_key};
pub use error::FederationError;
pub use presence::{Presence, RedisPresence, StaticPresence};

use crate::forwarder::{Forwarder, PeerClient, Timing};
use crate::metrics::Metrics;
use crate::outbox::Outbox;
use crate::router::{FederatedKeys, FederatedQueues};
use crate::service::FederationService;
use crate::signing::Credentials;

/// The federation pieces of one process of a federated deployment (cheap to clone: the routing
/// wrappers each hold one).
#[derive(Clone)]
pub struct Federation {
    /// This deployment's name.
    pub name: String,
    /// The shared directory.
    pub presence: Arc<dyn Presence>,
    /// The outbox in this deployment's Redis.
    pub outbox: Arc<Outbox>,
    pub metrics: Arc<Metrics>,
}

/// What [`Federation::serve_messaging`] started.
pub struct Serving {
    /// The queue backend to give the messaging service (routes enqueues).
    pub queues: Arc<dyn QueueBackend>,
    /// The listener and the forwarder tasks; they stop on the shutdown given.
    pub tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Federation {
    /// Connects to the presence directory of `args` (validated, federated; connection tunables
    /// as in `redis`, the role's own Redis flags) and builds the outbox on `local` (this
    /// deployment's Redis), whose pushes wait for `replica_acks` like the messaging enqueue.
    pub async fn connect(
        args: &PresenceArgs,
        redis: &tassis_redis::RedisArgs,
        local: Redis,
        max_queue_len: u64,
        replica_acks: Option<(u32, std::time::Duration)>,
        registry: &prometheus::Registry,
    ) -> Result<Self, FederationError> {
        let presence = tassis_redis::connect(&args.redis_args(redis))
            .await
            .map_err(|e| FederationError::Config(format!("presence directory (--presence-redis-url): {e}")))?;
        Ok(Self {
            name: args.name().to_string(),
            presence: Arc::new(RedisPresence::new(presence)),
            outbox: Arc::new(Outbox::new(local, max_queue_len).with_replica_acks(replica_acks)),
            metrics: Metrics::new(registry),
        })
    }

    /// The keystore backend: `local`, writing the directory on Register and Unregister.
    pub fn keys(&self, local: Arc<dyn KeyBackend>) -> Arc<dyn KeyBackend> {
        Arc::new(FederatedKeys::new(local, self.clone()))
    }

    /// For messaging: binds the server-to-server listener, starts the forwarder, and returns the
    /// routing queue backend wrapping `local`. `local_keys` is this deployment's own keystore
    /// backend (a handoff drops the moved device's registration).
    pub async fn serve_messaging(
        &self,
        args: &FederationArgs,
        local: Arc<RedisQueues>,
        local_keys: Arc<dyn KeyBackend>,
        messaging: &tassis_messaging::MessagingConfig,
        shutdown: Shutdown,
    ) -> Result<Serving, FederationError> {
        let (key, peers) = args.load(&self.name)?;
        let creds = Arc::new(Credentials::new(
            self.name.clone(),
            key,
            peers.clone(),
            args.federation_max_clock_skew,
        ));
        let local_dyn: Arc<dyn QueueBackend> = local.clone();
        let queues: Arc<dyn QueueBackend> = Arc::new(FederatedQueues::new(
            local_dyn.clone(),
            self.clone(),
            peers.keys().cloned().collect::<HashSet<_>>(),
        ));
        let max_request = args.federation_max_request_size;
        let mut clients = HashMap::new();
        for (name, peer) in peers {
            clients.insert(
                name,
                Arc::new(PeerClient::new(peer, args.federation_request_timeout, max_request)?),
            );
        }
        let forwarder = Arc::new(Forwarder::new(
            self.outbox.clone(),
            local,
            creds.clone(),
            clients,
            Timing::from(args),
            self.metrics.clone(),
        ));
        let service = FederationService {
            creds,
            router: queues.clone(),
            local_queues: local_dyn,
            local_keys,
            outbox: self.outbox.clone(),
            presence: self.presence.clone(),
            max_message_size: messaging.max_message_size,
            max_message_age: messaging.max_message_age,
            max_request_size: max_request,
            metrics: self.metrics.clone(),
        };
        let listener = tassis_runtime::bind(args.federation_listen)
            .await
            .map_err(|e| FederationError::Config(e.to_string()))?;
        let listen = listener
            .local_addr()
            .map_err(|e| FederationError::Config(format!("federation listener: {e}")))?;
        let mut tasks = forwarder.start(shutdown.clone());
        tasks.push(tokio::spawn(async move {
            if let Err(e) = service::serve(service, listener, shutdown).await {
                tracing::error!(error = %e, "the federation listener failed");
            }
        }));
        tracing::info!(%listen, name = %self.name, "federation listening");
        Ok(Serving { queues, tasks })
    }
}
