//! Token buckets in Redis Cluster, shared by every gateway pod: one script call per check (GET the
//! bucket's TAT, decide, SET it with an expiry), atomic on the bucket's node. The script reads the
//! time from Redis (`TIME`), so gateway clocks never need to agree. A bucket expires as soon as it
//! has refilled, so Redis holds only the buckets of recently active keys.
//!
//! Keys: `rl:{<limit>:<hex key>}`; the braces make each bucket its own hash slot, spreading
//! buckets over the cluster.

use fred::types::Value;
use tassis_redis::{Redis, script::Script};

use crate::{Decision, Quota, RateLimitError};

/// ARGV: emission µs, tolerance µs, cost. Returns 0 (allowed) or the µs to wait.
const GCRA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local emission = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local increment = emission * tonumber(ARGV[3])
if increment > tolerance then return tolerance end
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local new_tat = tat + increment
local allow_at = new_tat - tolerance
if allow_at > now then return allow_at - now end
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.floor((new_tat - now) / 1000) + 1)
return 0
"#;

/// Shared buckets on a Redis (Cluster).
#[derive(Clone)]
pub struct RedisBuckets {
    redis: Redis,
    script: Script,
}

impl RedisBuckets {
    pub fn new(redis: Redis) -> Self {
        Self {
            redis,
            script: Script::new(GCRA),
        }
    }

    /// The Redis key of `limit`'s bucket for `key`.
    pub fn bucket_key(limit: &str, key: &[u8]) -> String {
        format!("rl:{{{limit}:{}}}", hex::encode(key))
    }

    /// Takes `cost` tokens from the shared bucket of (`limit`, `key`).
    pub async fn check(&self, limit: &str, key: &[u8], q: &Quota, cost: u32) -> Result<Decision, RateLimitError> {
        let wait: i64 = self
            .script
            .run(
                self.redis.pool(),
                vec![Self::bucket_key(limit, key).into()],
                vec![
                    Value::Integer(q.emission_us() as i64),
                    Value::Integer(q.tolerance_us() as i64),
                    Value::Integer(cost as i64),
                ],
            )
            .await?;
        match wait {
            0 => Ok(Decision::Allow),
            w if w > 0 => Ok(Decision::Deny {
                retry_after: std::time::Duration::from_micros(w as u64),
            }),
            w => Err(RateLimitError::Reply(format!("negative wait {w}"))),
        }
    }
}
