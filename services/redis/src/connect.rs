//! Connecting: one [`Redis`] per process, shared by every backend in it. It holds a small pool of
//! multiplexed fred clients for commands and scripts (fred pipelines concurrent commands on each
//! connection, so a few connections carry a lot), and can open the dedicated pub/sub client the
//! messaging backend needs.
//!
//! [`connect`] refuses to return until Redis answers (bounded by `--redis-connect-timeout`), and
//! refuses outright a server older than [`MIN_VERSION`]: better a clear message at start than
//! "unknown command SPUBLISH" on the first message sent.

use std::time::Duration;

use fred::clients::{Client, Pool};
use fred::interfaces::{ClientLike, ClusterInterface};
use fred::types::config::{
    ClusterDiscoveryPolicy, Config, ConnectionConfig, PerformanceConfig, ReconnectPolicy, Server, ServerConfig,
    TcpConfig, TlsConnector,
};
use fred::types::{Builder, InfoKind, RespVersion};

use crate::{RedisArgs, RedisError, RedisTarget};

/// The oldest Redis tassis runs on: 7.0 brought sharded pub/sub (SPUBLISH/SSUBSCRIBE), on which
/// delivery notifications rely (XTRIM MINID, also used, is 6.2).
pub const MIN_VERSION: (u64, u64) = (7, 0);

/// A connected Redis (standalone or cluster), cheap to clone.
#[derive(Clone)]
pub struct Redis {
    /// Multiplexed connections for commands and scripts.
    pool: Pool,
    /// What the pool was built from, to build dedicated clients (the pub/sub subscriber) with the
    /// same servers, credentials, TLS and timeouts.
    builder: Builder,
    /// Whether the target is a cluster (routing by slot, several primaries to check).
    cluster: bool,
    /// Bound on connecting a dedicated client.
    connect_timeout: Duration,
}

/// Connects to the Redis named by `args`, waits until it answers, and checks every primary's
/// version. See the module docs.
pub async fn connect(args: &RedisArgs) -> Result<Redis, RedisError> {
    let target = args.target()?;
    let builder = builder(&target, args)?;
    let pool = builder.build_pool(args.redis_pool_size)?;
    let handles = pool.connect_pool();
    match tokio::time::timeout(args.redis_connect_timeout, pool.wait_for_connect()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            abandon(&pool);
            return Err(e.into());
        }
        Err(_) => {
            abandon(&pool);
            return Err(RedisError::ConnectTimeout(args.redis_connect_timeout));
        }
    }
    for (client, handle) in pool.clients().iter().zip(handles) {
        tokio::spawn(supervise(client.clone(), handle));
    }
    let redis = Redis {
        pool,
        builder,
        cluster: target.cluster,
        connect_timeout: args.redis_connect_timeout,
    };
    match tokio::time::timeout(args.redis_connect_timeout, redis.check_versions()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            abandon(&redis.pool);
            return Err(e);
        }
        Err(_) => {
            abandon(&redis.pool);
            return Err(RedisError::ConnectTimeout(args.redis_connect_timeout));
        }
    }
    tracing::info!(
        cluster = target.cluster,
        tls = target.tls,
        seeds = ?target.hosts,
        pool = args.redis_pool_size,
        "connected to Redis"
    );
    Ok(redis)
}

/// Keeps one pooled client's connection task alive. fred ends a client's routing task on some
/// routing errors (for example when an ASK redirection during a slot migration runs out of
/// attempts), which would leave that client dead for good: every later command on it would
/// wait for its timeout. A task that ends with an error is restarted after a short pause; one
/// that ends cleanly (QUIT, shutdown) is left ended.
async fn supervise(client: fred::clients::Client, mut handle: fred::types::ConnectHandle) {
    use fred::interfaces::ClientLike;
    let mut pause = std::time::Duration::from_millis(50);
    loop {
        match handle.await {
            Ok(Ok(())) => return,
            Ok(Err(e)) => {
                tracing::warn!(client = %client.id(), error = %e, "Redis connection task ended; restarting it")
            }
            Err(e) => tracing::warn!(client = %client.id(), error = %e, "Redis connection task failed; restarting it"),
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(std::time::Duration::from_secs(2));
        handle = client.connect();
    }
}

/// Closes a pool that start-up gave up on, so its reconnect loop stops.
fn abandon(pool: &Pool) {
    let pool = pool.clone();
    tokio::spawn(async move {
        let _ = pool.quit().await;
    });
}

fn builder(target: &RedisTarget, args: &RedisArgs) -> Result<Builder, RedisError> {
    let server = |(host, port): &(String, u16)| {
        if target.tls {
            Server::new_with_tls(host.as_str(), *port, Some(host.clone()))
        } else {
            Server::new(host.as_str(), *port)
        }
    };
    let servers = if target.cluster {
        ServerConfig::Clustered {
            hosts: target.hosts.iter().map(server).collect(),
            policy: ClusterDiscoveryPolicy::default(),
        }
    } else {
        let first = target
            .hosts
            .first()
            .ok_or_else(|| RedisError::Config("--redis-url names no host".into()))?;
        ServerConfig::Centralized { server: server(first) }
    };
    let config = Config {
        // Start-up errors (refused, bad password) surface to the caller instead of being retried.
        fail_fast: true,
        username: target.username.clone(),
        password: target.password.clone(),
        server: servers,
        version: RespVersion::RESP2,
        tls: if target.tls {
            // rustls needs one process-wide crypto provider; if other crates in the binary enable
            // a second one it cannot choose by itself and would panic. Install ring unless the
            // process already chose one (then this is a no-op).
            let _ = rustls::crypto::ring::default_provider().install_default();
            Some(TlsConnector::default_rustls()?.into())
        } else {
            None
        },
        ..Config::default()
    };
    let mut b = Builder::from_config(config);
    b.set_connection_config(ConnectionConfig {
        connection_timeout: args.redis_connect_timeout,
        tcp: TcpConfig {
            nodelay: Some(true),
            ..TcpConfig::default()
        },
        // Names connections (CLIENT SETNAME) after the fred client id, so operators can tell
        // them apart in CLIENT LIST.
        auto_client_setname: true,
        // Room for MOVED/ASK redirections and reconnects while slots migrate or masters fail
        // over; the command timeout still bounds the total time.
        max_command_attempts: 10,
        max_redirections: 10,
        ..ConnectionConfig::default()
    });
    b.set_performance_config(PerformanceConfig {
        default_command_timeout: args.redis_command_timeout,
        ..PerformanceConfig::default()
    });
    // After start-up, never give up: back off from 100 ms to 5 s between attempts, forever.
    b.set_policy(ReconnectPolicy::new_exponential(0, 100, 5_000, 2));
    Ok(b)
}

impl Redis {
    /// The connections to run commands and scripts on.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Whether this is a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        self.cluster
    }

    /// Opens a dedicated client for pub/sub, speaking RESP3 so that the connection stays usable
    /// for ordinary commands while subscribed. Its commands and reconnections are its own, so a
    /// subscription storm never delays queue commands and vice versa.
    pub async fn connect_subscriber(&self) -> Result<Client, RedisError> {
        let mut b = self.builder.clone();
        let mut config = b
            .get_config()
            .cloned()
            .ok_or_else(|| RedisError::Config("no Redis configuration to copy".into()))?;
        config.version = RespVersion::RESP3;
        b.set_config(config);
        // Room for bursts of notifications before the dispatcher lags (a lag wakes every watcher).
        let mut perf = b.get_performance_config().clone();
        perf.broadcast_channel_capacity = 4096;
        b.set_performance_config(perf);
        let client = b.build()?;
        match tokio::time::timeout(self.connect_timeout, client.init()).await {
            Ok(Ok(_driver)) => Ok(client),
            Ok(Err(e)) => {
                let _ = client.quit().await;
                Err(e.into())
            }
            Err(_) => {
                let c = client.clone();
                tokio::spawn(async move {
                    let _ = c.quit().await;
                });
                Err(RedisError::ConnectTimeout(self.connect_timeout))
            }
        }
    }

    /// The primaries (the only nodes tassis talks to): every master of a cluster, or the one server.
    pub fn primaries(&self) -> Vec<Server> {
        let client = self.pool.next();
        if self.cluster {
            client
                .cached_cluster_state()
                .map(|s| s.unique_primary_nodes())
                .unwrap_or_default()
        } else {
            client.active_connections()
        }
    }

    /// Refuses servers older than [`MIN_VERSION`], checking every primary.
    async fn check_versions(&self) -> Result<(), RedisError> {
        let client = self.pool.next();
        let primaries = self.primaries();
        if primaries.is_empty() {
            return Err(RedisError::Reply("no primary node known after connecting".into()));
        }
        for server in primaries {
            let info: String = if self.cluster {
                client.with_cluster_node(&server).info(Some(InfoKind::Server)).await?
            } else {
                client.info(Some(InfoKind::Server)).await?
            };
            check_version(&server.to_string(), &info)?;
        }
        Ok(())
    }
}

/// Checks `redis_version` in an `INFO server` reply.
pub fn check_version(server: &str, info: &str) -> Result<(), RedisError> {
    let version = info
        .lines()
        .find_map(|l| l.trim().strip_prefix("redis_version:"))
        .ok_or_else(|| RedisError::Reply(format!("{server}: INFO server has no redis_version")))?;
    let mut parts = version.split('.').map(|p| p.parse::<u64>());
    let (major, minor) = match (parts.next(), parts.next()) {
        (Some(Ok(a)), Some(Ok(b))) => (a, b),
        _ => {
            return Err(RedisError::Reply(format!(
                "{server}: unreadable redis_version {version:?}"
            )));
        }
    };
    if (major, minor) < MIN_VERSION {
        return Err(RedisError::TooOld {
            server: server.to_string(),
            version: version.to_string(),
            required: "7.0",
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_config_builds() {
        let target = crate::args::parse_url("rediss-cluster://redis.example:6380").unwrap();
        let b = builder(&target, &RedisArgs::default()).unwrap();
        assert!(b.get_config().is_some_and(|c| c.tls.is_some()));
    }

    #[test]
    fn version_gate() {
        assert!(check_version("n", "# Server\r\nredis_version:7.0.15\r\nredis_mode:cluster\r\n").is_ok());
        assert!(check_version("n", "redis_version:7.2.4").is_ok());
        assert!(check_version("n", "redis_version:10.0.0").is_ok());
        let e = check_version("127.0.0.1:7000", "redis_version:6.2.14\r\n").unwrap_err();
        let m = e.to_string();
        assert!(
            m.contains("6.2.14") && m.contains(">= 7.0") && m.contains("127.0.0.1:7000"),
            "{m}"
        );
        assert!(matches!(check_version("n", "nothing"), Err(RedisError::Reply(_))));
    }
}
