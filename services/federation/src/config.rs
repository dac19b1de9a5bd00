//! Federation flags (each with a `TASSIS_*` env twin), parsed and validated before anything
//! starts. Two groups, because the roles need different parts:
//! - [`PresenceArgs`] (keystore, messaging, standalone): this deployment's name and the shared
//!   presence directory. Unset directory: the static directory, federation off.
//! - [`FederationArgs`] (messaging, standalone): the server-to-server listener, this deployment's
//!   signing key, the allowlist of peers, and the forwarding limits.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ed25519_dalek::{SigningKey, VerifyingKey};
use tassis_redis::RedisArgs;
use tassis_runtime::config::parse_duration;

use crate::FederationError;

/// Longest deployment name (a DNS name's limit).
pub const MAX_NAME_LEN: usize = 253;

/// This deployment's identity in the federation and the shared presence directory.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct PresenceArgs {
    /// This deployment's name in the federation (e.g. `eu.chat.example`): what the presence
    /// directory records as the home of devices registered here, and what peers list in their
    /// --federation-peers. Required with --presence-redis-url.
    #[arg(long, env = "TASSIS_PUBLIC_ADDR")]
    pub public_addr: Option<String>,

    /// The presence directory every federated deployment shares (device -> home deployment):
    /// redis://, redis-cluster://, rediss:// or rediss-cluster://. Unset: the static directory
    /// (every device is local; federation off).
    #[arg(long, env = "TASSIS_PRESENCE_REDIS_URL")]
    pub presence_redis_url: Option<String>,

    /// File holding the presence Redis password (instead of putting it in the URL).
    #[arg(long, env = "TASSIS_PRESENCE_REDIS_PASSWORD_FILE")]
    pub presence_redis_password_file: Option<PathBuf>,
}

impl PresenceArgs {
    /// Whether federation is on (a shared presence directory is configured).
    pub fn is_federated(&self) -> bool {
        self.presence_redis_url.as_deref().is_some_and(|u| !u.trim().is_empty())
    }

    /// The presence Redis's connection flags: its URL and password file, with the pool size and
    /// timeouts of `base` (the role's --redis-* flags).
    pub fn redis_args(&self, base: &RedisArgs) -> RedisArgs {
        RedisArgs {
            redis_url: self.presence_redis_url.clone(),
            redis_password_file: self.presence_redis_password_file.clone(),
            ..base.clone()
        }
    }

    /// This deployment's name (validated by [`PresenceArgs::validate`]).
    pub fn name(&self) -> &str {
        self.public_addr.as_deref().unwrap_or_default()
    }

    /// Checks the flags; `local_redis` says whether the role has --redis-url (the outbox lives
    /// there).
    pub fn validate(&self, local_redis: bool) -> Result<(), FederationError> {
        if !self.is_federated() {
            return Ok(());
        }
        let name = self.public_addr.as_deref().unwrap_or_default();
        if name.trim().is_empty() {
            return Err(config(
                "--presence-redis-url needs --public-addr (this deployment's name)",
            ));
        }
        check_name("--public-addr", name)?;
        if !local_redis {
            return Err(config(
                "--presence-redis-url needs --redis-url: the forwarding outbox is kept in this deployment's Redis",
            ));
        }
        self.redis_args(&RedisArgs::default())
            .validate()
            .map_err(|e| config(format!("--presence-redis-url: {e}")))
    }
}

/// One allowed peer deployment.
#[derive(Clone, Debug)]
pub struct Peer {
    /// Its name (its --public-addr).
    pub name: String,
    /// Its federation endpoint, `http(s)://host:port`.
    pub url: String,
    /// The key its requests and replies are signed with.
    pub key: VerifyingKey,
}

/// The server-to-server channel and the forwarding limits.
#[derive(Clone, Debug, clap::Args)]
pub struct FederationArgs {
    /// Address of the server-to-server gRPC listener peers forward to (federation only).
    #[arg(long, env = "TASSIS_FEDERATION_LISTEN", default_value = "0.0.0.0:50054")]
    pub federation_listen: SocketAddr,

    /// File holding this deployment's Ed25519 signing key: 64 hex digits (the 32-byte seed),
    /// as printed by `tassis federation-keygen`. Every replica of the deployment uses the same key.
    #[arg(long, env = "TASSIS_FEDERATION_SIGNING_KEY_FILE")]
    pub federation_signing_key_file: Option<PathBuf>,

    /// The allowlist of peer deployments, comma-separated `name=<64 hex digit public key>@<url>`
    /// (url `http(s)://host:port` of the peer's federation listener). Requests from anybody else
    /// are refused, and messages are only forwarded to these.
    #[arg(long, env = "TASSIS_FEDERATION_PEERS", value_delimiter = ',')]
    pub federation_peers: Vec<String>,

    /// Least time between two attempts to forward to a peer that failed.
    #[arg(long, env = "TASSIS_FEDERATION_RETRY_INTERVAL", default_value = "1m", value_parser = parse_duration)]
    pub federation_retry_interval: Duration,

    /// A message that has been failing to reach its home deployment for this long is dropped
    /// (counted in tassis_federation_dropped_total{reason="timeout"}).
    #[arg(long, env = "TASSIS_FEDERATION_TIMEOUT", default_value = "1h", value_parser = parse_duration)]
    pub federation_timeout: Duration,

    /// Messages sent to a peer in one request.
    #[arg(long, env = "TASSIS_FEDERATION_BATCH", default_value_t = 100)]
    pub federation_batch: usize,

    /// Entries one outbox partition may hold (16 partitions per peer); a send that finds it full
    /// is refused with `unavailable` rather than dropping anything.
    #[arg(long, env = "TASSIS_FEDERATION_MAX_QUEUE_LEN", default_value_t = 100_000)]
    pub federation_max_queue_len: u64,

    /// Deadline of one request to a peer.
    #[arg(long, env = "TASSIS_FEDERATION_REQUEST_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub federation_request_timeout: Duration,

    /// Signed requests older or newer than this (by the receiver's clock) are refused; nonces are
    /// remembered for twice as long.
    #[arg(long, env = "TASSIS_FEDERATION_MAX_CLOCK_SKEW", default_value = "5m", value_parser = parse_duration)]
    pub federation_max_clock_skew: Duration,

    /// How long a replica's lease on an outbox partition lasts unless renewed (a crashed
    /// forwarder's partitions are taken over after this).
    #[arg(long, env = "TASSIS_FEDERATION_LEASE_TTL", default_value = "15s", value_parser = parse_duration)]
    pub federation_lease_ttl: Duration,

    /// Largest request accepted on the federation listener, in bytes.
    #[arg(long, env = "TASSIS_FEDERATION_MAX_REQUEST_SIZE", default_value_t = 64 * 1024 * 1024)]
    pub federation_max_request_size: usize,
}

impl Default for FederationArgs {
    fn default() -> Self {
        Self {
            federation_listen: "0.0.0.0:50054".parse().expect("literal"),
            federation_signing_key_file: None,
            federation_peers: Vec::new(),
            federation_retry_interval: Duration::from_secs(60),
            federation_timeout: Duration::from_secs(3600),
            federation_batch: 100,
            federation_max_queue_len: 100_000,
            federation_request_timeout: Duration::from_secs(10),
            federation_max_clock_skew: Duration::from_secs(300),
            federation_lease_ttl: Duration::from_secs(15),
            federation_max_request_size: 64 * 1024 * 1024,
        }
    }
}

fn config(msg: impl Into<String>) -> FederationError {
    FederationError::Config(msg.into())
}

fn check_name(flag: &str, name: &str) -> Result<(), FederationError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'));
    if ok {
        Ok(())
    } else {
        Err(config(format!(
            "{flag} {name:?}: a deployment name is 1..={MAX_NAME_LEN} characters of letters, digits, '.', '-', '_', ':'"
        )))
    }
}

/// Parses 64 hex digits into 32 bytes.
fn hex32(what: &str, s: &str) -> Result<[u8; 32], FederationError> {
    let bytes = hex::decode(s.trim()).map_err(|_| config(format!("{what}: not hex")))?;
    bytes
        .try_into()
        .map_err(|_| config(format!("{what}: expected 64 hex digits (32 bytes)")))
}

/// Parses one `name=<hex key>@<url>` allowlist entry.
pub fn parse_peer(spec: &str) -> Result<Peer, FederationError> {
    let bad = |why: &str| {
        config(format!(
            "--federation-peers entry {spec:?}: {why} (expected name=<64 hex digit key>@http(s)://host:port)"
        ))
    };
    let (name, rest) = spec.trim().split_once('=').ok_or_else(|| bad("no '='"))?;
    let (key, url) = rest.split_once('@').ok_or_else(|| bad("no '@'"))?;
    check_name("--federation-peers", name)?;
    let key = VerifyingKey::from_bytes(&hex32("peer key", key).map_err(|_| bad("the key is not 64 hex digits"))?)
        .map_err(|_| bad("the key is not an Ed25519 public key"))?;
    let uri: http::Uri = url.parse().map_err(|_| bad("the URL does not parse"))?;
    if !matches!(uri.scheme_str(), Some("http") | Some("https")) || uri.host().is_none() {
        return Err(bad("the URL must be http(s)://host:port"));
    }
    Ok(Peer {
        name: name.to_string(),
        url: url.to_string(),
        key,
    })
}

impl FederationArgs {
    /// Checks the flags of a federated deployment named `own_name` whose messages are at most
    /// `max_message_size` bytes.
    pub fn validate(&self, own_name: &str, max_message_size: usize) -> Result<(), FederationError> {
        let (_, peers) = self.load(own_name)?;
        if peers.is_empty() {
            return Err(config(
                "federation is on (--presence-redis-url) but --federation-peers lists no peer",
            ));
        }
        let positive = |d: Duration, flag: &str| {
            if d >= Duration::from_millis(1) {
                Ok(())
            } else {
                Err(config(format!("{flag} must be at least 1ms")))
            }
        };
        positive(self.federation_retry_interval, "--federation-retry-interval")?;
        positive(self.federation_timeout, "--federation-timeout")?;
        positive(self.federation_request_timeout, "--federation-request-timeout")?;
        if self.federation_max_clock_skew < Duration::from_secs(1) {
            return Err(config("--federation-max-clock-skew must be at least 1s"));
        }
        if self.federation_lease_ttl < Duration::from_millis(300) {
            return Err(config("--federation-lease-ttl must be at least 300ms"));
        }
        if !(1..=10_000).contains(&self.federation_batch) {
            return Err(config("--federation-batch must be 1..=10000"));
        }
        if self.federation_max_queue_len < 1 {
            return Err(config("--federation-max-queue-len must be at least 1"));
        }
        if self.federation_max_request_size < 64 * 1024 {
            return Err(config("--federation-max-request-size must be at least 65536"));
        }
        // A full batch must fit in one request (peers are expected to run the same limits).
        let batch_bytes = self
            .federation_batch
            .saturating_mul(max_message_size.saturating_add(1024));
        if batch_bytes > self.federation_max_request_size {
            return Err(config(format!(
                "--federation-batch {} of messages up to --max-message-size {max_message_size} bytes can exceed --federation-max-request-size {}",
                self.federation_batch, self.federation_max_request_size
            )));
        }
        Ok(())
    }

    /// The signing key and the allowlist (by name).
    pub fn load(&self, own_name: &str) -> Result<(SigningKey, HashMap<String, Peer>), FederationError> {
        let path = self.federation_signing_key_file.as_ref().ok_or_else(|| {
            config("federation is on (--presence-redis-url) but --federation-signing-key-file is not set")
        })?;
        let text = std::fs::read_to_string(path)
            .map_err(|e| config(format!("--federation-signing-key-file {}: {e}", path.display())))?;
        let key = SigningKey::from_bytes(&hex32(
            &format!("--federation-signing-key-file {}", path.display()),
            &text,
        )?);
        let mut peers = HashMap::new();
        for spec in self.federation_peers.iter().filter(|s| !s.trim().is_empty()) {
            let p = parse_peer(spec)?;
            if p.name == own_name {
                return Err(config(format!(
                    "--federation-peers lists this deployment itself ({own_name})"
                )));
            }
            if peers.insert(p.name.clone(), p).is_some() {
                return Err(config(format!("--federation-peers lists {spec:?}'s name twice")));
            }
        }
        Ok((key, peers))
    }
}

/// A new signing key: (seed hex for the key file, public key hex for the peers' allowlists).
pub fn generate_key() -> (String, String) {
    let key = SigningKey::from_bytes(&rand::random::<[u8; 32]>());
    (hex::encode(key.to_bytes()), hex::encode(key.verifying_key().to_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_parse_and_refuse() {
        let (_, public) = generate_key();
        let p = parse_peer(&format!("us.example={public}@https://us.example:50054")).unwrap();
        assert_eq!(p.name, "us.example");
        assert_eq!(p.url, "https://us.example:50054");
        for bad in [
            "us.example".to_string(),
            format!("us.example={public}"),
            format!("us example={public}@http://h:1"),
            "us=abcd@http://h:1".to_string(),
            format!("us={public}@ftp://h:1"),
            format!("={public}@http://h:1"),
        ] {
            assert!(parse_peer(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn presence_needs_name_and_local_redis() {
        let mut a = PresenceArgs::default();
        assert!(a.validate(false).is_ok(), "static directory needs nothing");
        a.presence_redis_url = Some("redis://127.0.0.1:6379".into());
        assert!(a.validate(true).unwrap_err().to_string().contains("--public-addr"));
        a.public_addr = Some("eu.example".into());
        assert!(a.validate(false).unwrap_err().to_string().contains("--redis-url"));
        assert!(a.validate(true).is_ok());
        a.public_addr = Some("eu example".into());
        assert!(a.validate(true).is_err());
    }
}
