//! The roles `tassis` can run, each a thin composition of the service crates: parse and validate
//! configuration, bind listeners, serve until SIGTERM, drain.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result};
use tassis_attachments::{AttachmentsConfig, AttachmentsService};
use tassis_federation::{Federation, FederationArgs, PresenceArgs};
use tassis_gateway::GatewayConfig;
use tassis_gateway::upstream::UpstreamArgs;
use tassis_keystore::redis::RedisKeyStore;
use tassis_keystore::{KeyBackend, KeystoreConfig, KeystoreService, MemoryKeyStore};
use tassis_messaging::QueueBackend;
use tassis_messaging::backend::DeviceAddress;
use tassis_messaging::redis::RedisQueues;
use tassis_messaging::{
    KeystoreRegistrations, MemoryQueues, MessagingConfig, MessagingError, MessagingService, Registrations,
};
use tassis_redis::RedisArgs;
use tassis_runtime::config::CommonArgs;
use tassis_runtime::{AdminServer, Health, Shutdown};

// Parsed once at start and consumed by `run`: the size of the largest role does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(clap::Subcommand)]
pub enum Role {
    /// All four services in one process on embedded in-memory backends.
    Standalone {
        #[command(flatten)]
        common: CommonArgs,
        #[command(flatten)]
        gateway: GatewayConfig,
        #[command(flatten)]
        keystore: KeystoreConfig,
        #[command(flatten)]
        messaging: MessagingConfig,
        #[command(flatten)]
        attachments: AttachmentsConfig,
        #[command(flatten)]
        redis: RedisArgs,
        #[command(flatten)]
        presence: PresenceArgs,
        #[command(flatten)]
        federation: FederationArgs,
    },
    /// The WebSocket gateway.
    Gateway {
        #[command(flatten)]
        common: CommonArgs,
        #[command(flatten)]
        gateway: GatewayConfig,
        #[command(flatten)]
        upstream: UpstreamArgs,
        /// Redis for the rate-limit buckets all gateways share (unset: each gateway limits alone).
        #[command(flatten)]
        redis: RedisArgs,
    },
    /// The keystore gRPC service.
    Keystore {
        #[command(flatten)]
        common: CommonArgs,
        #[command(flatten)]
        keystore: KeystoreConfig,
        #[command(flatten)]
        redis: RedisArgs,
        /// Federation: Register and Unregister write the shared presence directory.
        #[command(flatten)]
        presence: PresenceArgs,
        /// Federation: device-moved claims wait for replicas like messaging's writes.
        #[command(flatten)]
        replica: tassis_redis::replicas::ReplicaAckArgs,
    },
    /// The messaging gRPC service.
    Messaging {
        #[command(flatten)]
        common: CommonArgs,
        #[command(flatten)]
        messaging: MessagingConfig,
        #[command(flatten)]
        redis: RedisArgs,
        /// Keystore gRPC endpoint, asked whether recipients are registered (embedded backend
        /// only: with Redis the check is part of the enqueue script).
        #[arg(long, env = "TASSIS_KEYSTORE", default_value = "http://127.0.0.1:50051")]
        keystore: String,
        /// Federation: enqueues are routed by the shared presence directory.
        #[command(flatten)]
        presence: PresenceArgs,
        /// Federation: the server-to-server listener, the peers and the forwarder.
        #[command(flatten)]
        federation: FederationArgs,
    },
    /// The attachments gRPC service.
    Attachments {
        #[command(flatten)]
        common: CommonArgs,
        #[command(flatten)]
        attachments: AttachmentsConfig,
    },
    /// Makes a federation signing key: writes it (64 hex digits, mode 0600) to --out for
    /// --federation-signing-key-file, and prints the public key peers put in their
    /// --federation-peers.
    FederationKeygen {
        /// File to write the key to (refused if it exists).
        #[arg(long)]
        out: std::path::PathBuf,
    },
}

/// `tassis federation-keygen`: writes the key file, returns the public key (hex).
fn federation_keygen(out: &std::path::Path) -> Result<String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let (seed, public) = tassis_federation::generate_key();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(out)
        .with_context(|| format!("cannot create {}", out.display()))?;
    writeln!(f, "{seed}").with_context(|| format!("cannot write {}", out.display()))?;
    Ok(public)
}

impl Role {
    /// The common flags of a role that serves (None for a one-shot command).
    pub fn common(&self) -> Option<&CommonArgs> {
        match self {
            Role::Standalone { common, .. }
            | Role::Gateway { common, .. }
            | Role::Keystore { common, .. }
            | Role::Messaging { common, .. }
            | Role::Attachments { common, .. } => Some(common),
            Role::FederationKeygen { .. } => None,
        }
    }

    /// The role's name, as on the command line.
    pub fn name(&self) -> &'static str {
        match self {
            Role::Standalone { .. } => "standalone",
            Role::Gateway { .. } => "gateway",
            Role::Keystore { .. } => "keystore",
            Role::Messaging { .. } => "messaging",
            Role::Attachments { .. } => "attachments",
            Role::FederationKeygen { .. } => "federation-keygen",
        }
    }

    /// Runs a one-shot command (a role without [`Role::common`]).
    pub fn run_once(&self) -> Result<()> {
        match self {
            Role::FederationKeygen { out } => {
                println!("{}", federation_keygen(out)?);
                Ok(())
            }
            _ => anyhow::bail!("{} is not a one-shot command", self.name()),
        }
    }

    pub async fn run(self) -> Result<()> {
        match self {
            Role::Standalone {
                common,
                gateway,
                keystore,
                messaging,
                attachments,
                redis,
                presence,
                federation,
            } => {
                standalone(
                    common,
                    Services {
                        gateway,
                        keystore,
                        messaging,
                        attachments,
                    },
                    redis,
                    presence,
                    federation,
                )
                .await
            }
            Role::Gateway {
                common,
                gateway,
                upstream,
                redis,
            } => {
                gateway.validate()?;
                redis.validate()?;
                let p = Process::start(&common, "gateway").await?;
                let limiter = Arc::new(if redis.is_configured() {
                    tassis_ratelimit::Limiter::shared(tassis_redis::connect(&redis).await?)
                } else {
                    tassis_ratelimit::Limiter::local()
                });
                let listener = tassis_runtime::bind(common.listen).await?;
                p.serve_gateway(gateway, upstream, listener, &common, limiter).await
            }
            Role::Keystore {
                common,
                keystore,
                redis,
                presence,
                replica,
            } => {
                keystore.validate()?;
                redis.validate()?;
                replica.validate()?;
                presence.validate(redis.is_configured())?;
                let p = Process::start(&common, "keystore").await?;
                let listener = tassis_runtime::bind(common.listen).await?;
                let backend: Arc<dyn KeyBackend> = if redis.is_configured() {
                    let r = tassis_redis::connect(&redis).await?;
                    let local: Arc<dyn KeyBackend> = Arc::new(RedisKeyStore::new(r.clone()));
                    if presence.is_federated() {
                        // Claims only: the outbox's message cap does not apply to them.
                        Federation::connect(&presence, &redis, r, u64::MAX, replica.acks(), &p.registry)
                            .await?
                            .keys(local)
                    } else {
                        local
                    }
                } else {
                    Arc::new(MemoryKeyStore::new())
                };
                let svc = KeystoreService::new(backend, keystore).with_metrics(&p.registry);
                p.ready_when_serving(listener.local_addr()?);
                p.health.set_ready(true);
                tassis_keystore::serve(svc, listener, p.shutdown.clone()).await?;
                Ok(())
            }
            Role::Messaging {
                common,
                messaging,
                redis,
                keystore,
                presence,
                federation,
            } => {
                messaging.validate()?;
                redis.validate()?;
                presence.validate(redis.is_configured())?;
                if presence.is_federated() {
                    federation.validate(presence.name(), messaging.max_message_size)?;
                }
                let p = Process::start(&common, "messaging").await?;
                let listener = tassis_runtime::bind(common.listen).await?;
                let mut federation_tasks = Vec::new();
                let queues: Arc<dyn QueueBackend> = if redis.is_configured() {
                    let r = tassis_redis::connect(&redis).await?;
                    let ctx = FederationCtx {
                        redis: &redis,
                        presence: &presence,
                        federation: &federation,
                        registry: &p.registry,
                        shutdown: p.shutdown.clone(),
                    };
                    let q = redis_queues(&r, &messaging, ctx).await?;
                    federation_tasks = q.tasks;
                    q.queues
                } else {
                    let ks = tassis_gateway::upstream::channel(&keystore)?;
                    Arc::new(MemoryQueues::new(
                        Arc::new(KeystoreRegistrations::new(ks)),
                        messaging.retention(),
                    ))
                };
                let svc = MessagingService::new(queues, messaging).with_metrics(&p.registry);
                p.ready_when_serving(listener.local_addr()?);
                p.health.set_ready(true);
                tassis_messaging::serve(svc, listener, p.shutdown.clone()).await?;
                finish_federation(federation_tasks, common.shutdown_grace).await;
                Ok(())
            }
            Role::FederationKeygen { .. } => self.run_once(),
            Role::Attachments { common, attachments } => {
                attachments.validate()?;
                attachments.s3(None)?;
                let p = Process::start(&common, "attachments").await?;
                let listener = tassis_runtime::bind(common.listen).await?;
                // With a bucket: checked now; a bucket that cannot be used stops the start.
                let signer = tassis_attachments::signer(&attachments, None).await?;
                let svc = AttachmentsService::new(signer, attachments);
                p.ready_when_serving(listener.local_addr()?);
                p.health.set_ready(true);
                tassis_attachments::serve(svc, listener, p.shutdown.clone()).await?;
                Ok(())
            }
        }
    }
}

/// Process-wide pieces every role has: shutdown on signals, health, metrics, the admin server.
struct Process {
    role: &'static str,
    shutdown: Shutdown,
    health: Arc<Health>,
    registry: prometheus::Registry,
    admin: SocketAddr,
}

impl Process {
    async fn start(common: &CommonArgs, role: &'static str) -> Result<Self> {
        let shutdown = Shutdown::on_signals();
        let health = Health::new();
        let registry = prometheus::Registry::new();
        let admin_listener = tassis_runtime::bind(common.admin_listen).await?;
        let admin = admin_listener.local_addr()?;
        // The admin server outlives the drain: /readyz answers 503 while draining and /metrics
        // stays scrapeable until the process exits.
        tokio::spawn(AdminServer::serve(
            admin_listener,
            health.clone(),
            registry.clone(),
            Shutdown::new(),
        ));
        let h = health.clone();
        let s = shutdown.clone();
        tokio::spawn(async move {
            s.wait().await;
            h.set_ready(false);
        });
        Ok(Self {
            role,
            shutdown,
            health,
            registry,
            admin,
        })
    }

    /// Runs the gateway on `listener` until the drain completes, logging the ready line.
    async fn serve_gateway(
        &self,
        gateway: GatewayConfig,
        upstream: UpstreamArgs,
        listener: tokio::net::TcpListener,
        common: &CommonArgs,
        limiter: Arc<tassis_ratelimit::Limiter>,
    ) -> Result<()> {
        self.ready_when_serving(listener.local_addr()?);
        let gw = tassis_gateway::Gateway::new(gateway, &upstream, &self.registry, self.shutdown.clone(), limiter)?;
        tassis_gateway::serve(
            gw,
            listener,
            self.health.clone(),
            self.shutdown.clone(),
            common.shutdown_grace,
        )
        .await?;
        Ok(())
    }

    /// Logs the one "ready" line once the role's health turns ready.
    fn ready_when_serving(&self, listen: SocketAddr) {
        let health = self.health.clone();
        let role = self.role;
        let admin = self.admin;
        tokio::spawn(async move {
            while !health.is_ready() {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            tracing::info!(role, %listen, %admin, version = env!("CARGO_PKG_VERSION"), "tassis ready");
        });
    }
}

/// Standalone's default `--public-url`: its own client listener (loopback when bound to all
/// interfaces, with a warning if download links then depend on it).
fn own_public_url(listen: SocketAddr, attachments: &AttachmentsConfig) -> String {
    let mut addr = listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
        let given = |v: &Option<String>| v.as_deref().is_some_and(|s| !s.trim().is_empty());
        if given(&attachments.s3_bucket) && !given(&attachments.public_url) && !given(&attachments.s3_public_url) {
            tracing::warn!(
                url = %format!("http://{addr}"),
                "download links point at this machine's loopback: set --public-url to the address clients reach"
            );
        }
    }
    format!("http://{addr}")
}

/// The registration check of the embedded messaging backend in standalone: the in-process keystore.
struct InProcessRegistrations(Arc<MemoryKeyStore>);

#[async_trait::async_trait]
impl Registrations for InProcessRegistrations {
    async fn is_registered(&self, d: &DeviceAddress) -> Result<bool, MessagingError> {
        Ok(self.0.is_registered(&d.identity_key, &d.device_id))
    }
}

/// What a role needs to federate its messaging.
struct FederationCtx<'a> {
    /// The role's Redis flags (the presence connection takes its tunables).
    redis: &'a RedisArgs,
    presence: &'a PresenceArgs,
    federation: &'a FederationArgs,
    registry: &'a prometheus::Registry,
    /// Stops the federation listener and the forwarder.
    shutdown: Shutdown,
}

/// Messaging's queues, as [`redis_queues`] builds them.
struct MessagingQueues {
    /// What the messaging service uses.
    queues: Arc<dyn QueueBackend>,
    /// With federation on: for the keystore wrapper in standalone.
    federation: Option<Federation>,
    /// The federation listener and forwarder, to wait for once their shutdown is triggered (the
    /// forwarder releases its leases and leaves the membership on the way out).
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Waits (at most `grace`) for the federation tasks to finish after their shutdown.
async fn finish_federation(tasks: Vec<tokio::task::JoinHandle<()>>, grace: std::time::Duration) {
    let deadline = tokio::time::Instant::now() + grace;
    for t in tasks {
        if tokio::time::timeout_at(deadline, t).await.is_err() {
            tracing::warn!("federation did not stop within the grace period");
            return;
        }
    }
}

/// Messaging's queues on Redis `r`: the Redis Cluster queues, and with federation on, the routing
/// wrapper around them (the federation listener and forwarder then run until the context's
/// shutdown).
async fn redis_queues(
    r: &tassis_redis::Redis,
    messaging: &MessagingConfig,
    ctx: FederationCtx<'_>,
) -> Result<MessagingQueues> {
    let local = Arc::new(
        RedisQueues::new(r.clone(), messaging.retention())
            .await?
            .with_replica_acks(messaging.replica_acks()),
    );
    if !ctx.presence.is_federated() {
        return Ok(MessagingQueues {
            queues: local,
            federation: None,
            tasks: Vec::new(),
        });
    }
    let fed = Federation::connect(
        ctx.presence,
        ctx.redis,
        r.clone(),
        ctx.federation.federation_max_queue_len,
        messaging.replica_acks(),
        ctx.registry,
    )
    .await?;
    let local_keys: Arc<dyn KeyBackend> = Arc::new(RedisKeyStore::new(r.clone()));
    let serving = fed
        .serve_messaging(ctx.federation, local, local_keys, messaging, ctx.shutdown)
        .await?;
    Ok(MessagingQueues {
        queues: serving.queues,
        federation: Some(fed),
        tasks: serving.tasks,
    })
}

/// The four services' configurations, for standalone.
struct Services {
    gateway: GatewayConfig,
    keystore: KeystoreConfig,
    messaging: MessagingConfig,
    attachments: AttachmentsConfig,
}

async fn standalone(
    common: CommonArgs,
    services: Services,
    redis: RedisArgs,
    presence: PresenceArgs,
    federation: FederationArgs,
) -> Result<()> {
    let Services {
        gateway,
        keystore,
        messaging,
        attachments,
    } = services;
    gateway.validate()?;
    keystore.validate()?;
    messaging.validate()?;
    attachments.validate()?;
    redis.validate()?;
    presence.validate(redis.is_configured())?;
    if presence.is_federated() {
        federation.validate(presence.name(), messaging.max_message_size)?;
    }
    let p = Process::start(&common, "standalone").await?;
    let local = "127.0.0.1:0".parse::<SocketAddr>().expect("literal");
    // The internal services (and federation) stop only after the gateway has drained its clients.
    let internal = Shutdown::new();

    let mut federation_tasks = Vec::new();
    type Backends = (Arc<dyn KeyBackend>, Arc<dyn QueueBackend>, tassis_ratelimit::Limiter);
    let (keys, queues, limiter): Backends = if redis.is_configured() {
        let r = tassis_redis::connect(&redis).await?;
        let local_keys: Arc<dyn KeyBackend> = Arc::new(RedisKeyStore::new(r.clone()));
        let ctx = FederationCtx {
            redis: &redis,
            presence: &presence,
            federation: &federation,
            registry: &p.registry,
            shutdown: internal.clone(),
        };
        let q = redis_queues(&r, &messaging, ctx).await?;
        federation_tasks = q.tasks;
        let keys = match q.federation {
            Some(fed) => fed.keys(local_keys),
            None => local_keys,
        };
        (keys, q.queues, tassis_ratelimit::Limiter::shared(r))
    } else {
        let keys = Arc::new(MemoryKeyStore::new());
        let regs = Arc::new(InProcessRegistrations(keys.clone()));
        let queues = Arc::new(MemoryQueues::new(regs, messaging.retention()));
        (keys, queues, tassis_ratelimit::Limiter::local())
    };

    let ks_listener = tassis_runtime::bind(local).await?;
    let ks_addr = ks_listener.local_addr()?;
    let ks = tokio::spawn(tassis_keystore::serve(
        KeystoreService::new(keys, keystore).with_metrics(&p.registry),
        ks_listener,
        internal.clone(),
    ));
    let msg_listener = tassis_runtime::bind(local).await?;
    let msg_addr = msg_listener.local_addr()?;
    let ms = tokio::spawn(tassis_messaging::serve(
        MessagingService::new(queues, messaging).with_metrics(&p.registry),
        msg_listener,
        internal.clone(),
    ));
    // The clients' listener first: its address is the default public URL of download links.
    let listener = tassis_runtime::bind(common.listen).await?;
    let public_url = own_public_url(listener.local_addr()?, &attachments);
    let signer = tassis_attachments::signer(&attachments, Some(&public_url)).await?;
    let at_listener = tassis_runtime::bind(local).await?;
    let at_addr = at_listener.local_addr()?;
    let at = tokio::spawn(tassis_attachments::serve(
        AttachmentsService::new(signer, attachments),
        at_listener,
        internal.clone(),
    ));

    let upstream = UpstreamArgs {
        keystore: format!("http://{ks_addr}"),
        messaging: vec![format!("http://{msg_addr}")],
        messaging_service: None,
        messaging_port_name: "grpc".into(),
        attachments: format!("http://{at_addr}"),
    };
    p.serve_gateway(gateway, upstream, listener, &common, Arc::new(limiter))
        .await
        .context("gateway")?;
    internal.trigger();
    for (name, h) in [("keystore", ks), ("messaging", ms), ("attachments", at)] {
        match tokio::time::timeout(common.shutdown_grace, h).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::warn!(service = name, error = %e, "stopped with an error"),
            Ok(Err(e)) => tracing::warn!(service = name, error = %e, "task failed"),
            Err(_) => tracing::warn!(service = name, "did not stop within the grace period"),
        }
    }
    finish_federation(federation_tasks, common.shutdown_grace).await;
    Ok(())
}
