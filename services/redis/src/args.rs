//! The Redis flags every Redis-backed role takes, and their validation. One place parses the URL
//! so the keystore and messaging can never disagree on what `--redis-url` means.
//!
//! Accepted URLs (the password may instead come from `--redis-password-file`):
//! - `redis://[[user]:password@]host[:port]` — one standalone server (development);
//! - `redis-cluster://[[user]:password@]host:port[,host:port...]` — a Redis Cluster, any number of
//!   seed nodes (the rest are discovered with CLUSTER SLOTS);
//! - `rediss://...` and `rediss-cluster://...` — the same over TLS (system root certificates).

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use tassis_runtime::config::parse_duration;

use crate::RedisError;

/// Port used when a host in the URL has none.
pub const DEFAULT_PORT: u16 = 6379;

/// Redis connection flags (with `TASSIS_*` env twins).
#[derive(Clone, clap::Args)]
pub struct RedisArgs {
    /// Redis holding keys and queues: redis://host:port, redis-cluster://host:port[,host:port...],
    /// or rediss:// / rediss-cluster:// for TLS. Unset: the embedded in-memory backends are used.
    #[arg(long, env = "TASSIS_REDIS_URL")]
    pub redis_url: Option<String>,

    /// File holding the Redis password (trailing newline ignored), so that it need not appear in
    /// the URL, the environment or the process list. Mutually exclusive with a password in the URL.
    #[arg(long, env = "TASSIS_REDIS_PASSWORD_FILE")]
    pub redis_password_file: Option<PathBuf>,

    /// Multiplexed connections per process (each pipelines many commands; in a cluster each one
    /// reaches every master).
    #[arg(long, env = "TASSIS_REDIS_POOL_SIZE", default_value_t = 4)]
    pub redis_pool_size: usize,

    /// How long start-up waits for Redis before giving up; also bounds each connection attempt.
    #[arg(long, env = "TASSIS_REDIS_CONNECT_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub redis_connect_timeout: Duration,

    /// How long one command may take (including retries while reconnecting) before the request
    /// fails with `unavailable`.
    #[arg(long, env = "TASSIS_REDIS_COMMAND_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub redis_command_timeout: Duration,
}

impl Default for RedisArgs {
    fn default() -> Self {
        Self {
            redis_url: None,
            redis_password_file: None,
            redis_pool_size: 4,
            redis_connect_timeout: Duration::from_secs(10),
            redis_command_timeout: Duration::from_secs(5),
        }
    }
}

/// Never prints a password (URLs may carry one).
impl fmt::Debug for RedisArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisArgs")
            .field("redis_url", &self.redis_url.as_deref().map(redact_url))
            .field("redis_password_file", &self.redis_password_file)
            .field("redis_pool_size", &self.redis_pool_size)
            .field("redis_connect_timeout", &self.redis_connect_timeout)
            .field("redis_command_timeout", &self.redis_command_timeout)
            .finish()
    }
}

/// Where and how to connect, parsed from [`RedisArgs`].
#[derive(Clone, PartialEq, Eq)]
pub struct RedisTarget {
    /// Cluster mode (`*-cluster://`): hosts are seeds and keys are routed by slot.
    pub cluster: bool,
    /// TLS (`rediss*://`).
    pub tls: bool,
    /// host, port: one for a standalone server, one or more seeds for a cluster.
    pub hosts: Vec<(String, u16)>,
    /// ACL user, if any.
    pub username: Option<String>,
    /// Password, from the URL or the password file.
    pub password: Option<String>,
}

impl fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisTarget")
            .field("cluster", &self.cluster)
            .field("tls", &self.tls)
            .field("hosts", &self.hosts)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl RedisArgs {
    /// Flags naming `url`, other settings at their defaults (handy for tests and tools).
    pub fn from_url(url: impl Into<String>) -> Self {
        Self {
            redis_url: Some(url.into()),
            ..Self::default()
        }
    }

    /// Whether a Redis is configured at all (otherwise the embedded backends are used).
    pub fn is_configured(&self) -> bool {
        self.redis_url.as_deref().is_some_and(|u| !u.trim().is_empty())
    }

    /// Checks every flag (reading the password file), so a bad setting stops the process at start
    /// with a message naming the flag. Without a URL there is nothing to check (embedded backends),
    /// unless a password file was given, which makes no sense alone.
    pub fn validate(&self) -> Result<(), RedisError> {
        if !self.is_configured() && self.redis_password_file.is_none() {
            return Ok(());
        }
        self.target().map(|_| ())
    }

    /// The parsed connection target; an error when no URL is configured or a flag is invalid.
    pub fn target(&self) -> Result<RedisTarget, RedisError> {
        let url = self
            .redis_url
            .as_deref()
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .ok_or_else(|| config("--redis-url (TASSIS_REDIS_URL) is not set"))?;
        if !(1..=64).contains(&self.redis_pool_size) {
            return Err(config(format!(
                "--redis-pool-size must be 1..=64, got {}",
                self.redis_pool_size
            )));
        }
        if self.redis_connect_timeout < Duration::from_millis(100) {
            return Err(config("--redis-connect-timeout must be at least 100ms"));
        }
        if self.redis_command_timeout < Duration::from_millis(100) {
            return Err(config("--redis-command-timeout must be at least 100ms"));
        }
        let mut target = parse_url(url)?;
        if let Some(path) = &self.redis_password_file {
            if target.password.is_some() {
                return Err(config(
                    "a password is given both in --redis-url and in --redis-password-file; give it in one place",
                ));
            }
            let raw = std::fs::read_to_string(path)
                .map_err(|e| config(format!("--redis-password-file {}: cannot read it: {e}", path.display())))?;
            let pw = raw.trim_end_matches(['\r', '\n']);
            if pw.is_empty() {
                return Err(config(format!("--redis-password-file {} is empty", path.display())));
            }
            target.password = Some(pw.to_string());
        }
        Ok(target)
    }
}

fn config(msg: impl Into<String>) -> RedisError {
    RedisError::Config(msg.into())
}

const URL_FORMS: &str = "redis://host:port, redis-cluster://host:port[,host:port...], \
                         rediss://host:port or rediss-cluster://host:port[,host:port...]";

/// Parses a Redis URL (see the module docs for the forms).
pub fn parse_url(url: &str) -> Result<RedisTarget, RedisError> {
    let bad = |why: &str| config(format!("--redis-url {}: {why}; expected {URL_FORMS}", redact_url(url)));
    let (scheme, rest) = url.split_once("://").ok_or_else(|| bad("no scheme"))?;
    let (cluster, tls) = match scheme.to_ascii_lowercase().as_str() {
        "redis" => (false, false),
        "rediss" => (false, true),
        "redis-cluster" => (true, false),
        "rediss-cluster" => (true, true),
        _ => return Err(bad(&format!("unknown scheme {scheme:?}"))),
    };
    if rest.contains(['?', '#']) {
        return Err(bad("query strings and fragments are not supported"));
    }
    // Only database 0 exists in a cluster, and the key layout assumes one keyspace: no path.
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains('/') {
        return Err(bad("a path (database number) is not supported"));
    }
    let (userinfo, hostlist) = match rest.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, rest),
    };
    let (username, password) = match userinfo {
        None => (None, None),
        Some(u) => {
            let (user, pass) = u
                .split_once(':')
                .ok_or_else(|| bad("put the password after a colon: redis://:PASSWORD@host:port"))?;
            let user = percent_decode(user).map_err(|e| bad(&e))?;
            let pass = percent_decode(pass).map_err(|e| bad(&e))?;
            if pass.is_empty() {
                return Err(bad("empty password"));
            }
            ((!user.is_empty()).then_some(user), Some(pass))
        }
    };
    let mut hosts = Vec::new();
    for h in hostlist.split(',') {
        hosts.push(parse_host(h.trim()).map_err(|e| bad(&e))?);
    }
    if !cluster && hosts.len() != 1 {
        return Err(bad(
            "several hosts need a cluster scheme (redis-cluster:// or rediss-cluster://)",
        ));
    }
    Ok(RedisTarget {
        cluster,
        tls,
        hosts,
        username,
        password,
    })
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`.
fn parse_host(h: &str) -> Result<(String, u16), String> {
    if h.is_empty() {
        return Err("empty host".into());
    }
    let (host, port) = if let Some(v6) = h.strip_prefix('[') {
        let (addr, after) = v6.split_once(']').ok_or_else(|| format!("unclosed '[' in {h:?}"))?;
        match after {
            "" => (addr, None),
            p => (
                addr,
                Some(p.strip_prefix(':').ok_or_else(|| format!("bad host {h:?}"))?),
            ),
        }
    } else {
        match h.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (h, None),
        }
    };
    if host.is_empty() || host.contains(['@', ' ', '[', ']']) {
        return Err(format!("bad host {h:?}"));
    }
    let port = match port {
        None => DEFAULT_PORT,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("bad port in {h:?}"))?,
    };
    Ok((host.to_string(), port))
}

/// Decodes `%XX` escapes (passwords with reserved characters must be escaped in URLs).
fn percent_decode(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hexpair = b.get(i + 1..i + 3).ok_or("truncated %-escape in the user info")?;
            let v = std::str::from_utf8(hexpair)
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or("bad %-escape in the user info")?;
            out.push(v);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "the user info is not UTF-8 after %-decoding".to_string())
}

/// The URL with any user info replaced, fit for logs and error messages.
pub fn redact_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((_, hosts)) => format!("{scheme}://<redacted>@{hosts}"),
            None => url.to_string(),
        },
        None => url
            .split_once('@')
            .map_or_else(|| url.to_string(), |(_, h)| format!("<redacted>@{h}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(url: &str) -> String {
        parse_url(url).unwrap_err().to_string()
    }

    #[test]
    fn forms() {
        let t = parse_url("redis://localhost:7000").unwrap();
        assert!(!t.cluster && !t.tls);
        assert_eq!(t.hosts, vec![("localhost".to_string(), 7000)]);
        let t = parse_url("redis-cluster://127.0.0.1:1,127.0.0.1:2, 127.0.0.1:3/").unwrap();
        assert!(t.cluster && !t.tls);
        assert_eq!(t.hosts.len(), 3);
        let t = parse_url("rediss-cluster://u:p%40ss@h1,[::1]:9").unwrap();
        assert!(t.cluster && t.tls);
        assert_eq!(t.hosts, vec![("h1".to_string(), 6379), ("::1".to_string(), 9)]);
        assert_eq!(t.username.as_deref(), Some("u"));
        assert_eq!(t.password.as_deref(), Some("p@ss"));
        let t = parse_url("rediss://:secret@h").unwrap();
        assert!(!t.cluster && t.tls && t.username.is_none());
        assert!(!format!("{t:?}").contains("secret"));
    }

    #[test]
    fn rejects_with_clear_messages() {
        assert!(err("localhost:6379").contains("no scheme"));
        assert!(err("http://h").contains("unknown scheme"));
        assert!(err("redis://a:1,b:2").contains("cluster scheme"));
        assert!(err("redis://h:0").contains("bad port"));
        assert!(err("redis://h:x").contains("bad port"));
        assert!(err("redis://h/3").contains("database"));
        assert!(err("redis://h?x=1").contains("query"));
        assert!(err("redis-cluster://h1,,h2").contains("empty host"));
        let e = err("redis://pw@h");
        assert!(e.contains("colon") && !e.contains("pw@"), "{e}");
    }

    #[test]
    fn password_file() {
        let dir = std::env::temp_dir().join(format!("tassis-redis-pw-{}", std::process::id()));
        std::fs::write(&dir, "s3cret\n").unwrap();
        let mut a = RedisArgs::from_url("redis://h:1");
        a.redis_password_file = Some(dir.clone());
        assert_eq!(a.target().unwrap().password.as_deref(), Some("s3cret"));
        a.redis_url = Some("redis://:other@h:1".into());
        assert!(a.validate().unwrap_err().to_string().contains("one place"));
        a.redis_password_file = Some(dir.with_extension("missing"));
        a.redis_url = Some("redis://h:1".into());
        assert!(a.validate().unwrap_err().to_string().contains("cannot read"));
        std::fs::remove_file(&dir).unwrap();
        // No URL: the embedded backends are used, nothing to check; but a password file alone
        // is a mistake worth stopping for.
        assert!(RedisArgs::default().validate().is_ok());
        assert!(
            RedisArgs::default()
                .target()
                .unwrap_err()
                .to_string()
                .contains("not set")
        );
        let lone = RedisArgs {
            redis_password_file: Some(dir.clone()),
            ..RedisArgs::default()
        };
        assert!(lone.validate().unwrap_err().to_string().contains("not set"));
        assert!(!format!("{:?}", RedisArgs::from_url("redis://:pw@h")).contains("pw"));
    }
}
