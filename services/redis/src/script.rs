//! Lua scripts run by hash. Every keystore and messaging operation is one script, so that it is
//! atomic and one round trip; sending only the SHA1 (EVALSHA) keeps requests small. A node that
//! does not have the script cached (restarted, failed over, SCRIPT FLUSH, a new node) answers
//! NOSCRIPT; the script is then sent whole with EVAL, which also caches it on that node for the
//! next call. The hash is computed locally, so start-up needs no SCRIPT LOAD on every node.

use fred::interfaces::LuaInterface;
use fred::types::{FromValue, Key, Value};

use crate::RedisError;

/// KEYS: a STRING. ARGV: a value. Deletes the key only if it holds that value; returns 1 if it
/// did. For ownership records (a lease, a device's home) that only their owner may remove.
pub const COMPARE_AND_DELETE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"#;

/// A Lua script and its SHA1.
#[derive(Clone, Debug)]
pub struct Script {
    /// The Lua source, sent only when a node answers NOSCRIPT.
    source: String,
    /// Hex SHA1 of `source`, what EVALSHA names.
    sha1: String,
}

impl Script {
    pub fn new(source: impl Into<String>) -> Self {
        let source = source.into();
        let sha1 = fred::util::sha1_hash(&source);
        Self { source, sha1 }
    }

    /// The hex SHA1 the script runs under.
    pub fn sha1(&self) -> &str {
        &self.sha1
    }

    /// Runs the script on the node owning `keys` (which must all share one slot): EVALSHA, and
    /// EVAL when the node does not know the hash.
    ///
    /// While a slot migrates, a node holding only some of the script's keys answers TRYAGAIN;
    /// the script is retried with a short backoff (bounded by [`TRYAGAIN_BUDGET`]) until the
    /// migration of those keys completes.
    pub async fn run<R, C>(&self, client: &C, keys: Vec<Key>, args: Vec<Value>) -> Result<R, RedisError>
    where
        R: FromValue,
        C: LuaInterface + Send + Sync,
    {
        let deadline = tokio::time::Instant::now() + TRYAGAIN_BUDGET;
        let mut pause = std::time::Duration::from_millis(5);
        loop {
            match self.run_once(client, keys.clone(), args.clone()).await {
                Err(RedisError::Redis(e)) if is_tryagain(&e) && tokio::time::Instant::now() < deadline => {
                    tracing::debug!(sha1 = %self.sha1, "TRYAGAIN during slot migration; retrying");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(std::time::Duration::from_millis(200));
                }
                other => return other,
            }
        }
    }

    async fn run_once<R, C>(&self, client: &C, keys: Vec<Key>, args: Vec<Value>) -> Result<R, RedisError>
    where
        R: FromValue,
        C: LuaInterface + Send + Sync,
    {
        match client
            .evalsha::<R, _, _, _>(self.sha1.as_str(), keys.clone(), args.clone())
            .await
        {
            Err(e) if is_noscript(&e) => {
                tracing::debug!(sha1 = %self.sha1, "script not cached on the node; sending it with EVAL");
                Ok(client.eval(self.source.as_str(), keys, args).await?)
            }
            other => Ok(other?),
        }
    }
}

/// How long a script keeps retrying TRYAGAIN answers before the error is returned.
pub const TRYAGAIN_BUDGET: std::time::Duration = std::time::Duration::from_secs(3);

fn is_tryagain(e: &fred::error::Error) -> bool {
    e.details().contains("TRYAGAIN")
}

fn is_noscript(e: &fred::error::Error) -> bool {
    e.details().starts_with("NOSCRIPT")
}

#[cfg(test)]
mod tests {
    #[test]
    fn sha1_is_computed_locally() {
        // SHA1("return 1"), as SCRIPT LOAD would report it.
        assert_eq!(
            super::Script::new("return 1").sha1(),
            "e0e1f9fabfc9d4800c877a703b823ac0578ff8db"
        );
    }
}
