//! The gateway's entry point: one call per limited request. Per-connection limits never leave the
//! process; shared limits go to Redis (when the gateway has one) behind a local fast path:
//!
//! 1. the local bucket of the same key and quota is consulted first. It counts only what this
//!    gateway let through, a subset of what the shared bucket counted, so a local refusal is
//!    always right and costs no round trip — a flooder on this gateway is refused locally;
//! 2. otherwise the shared bucket decides (one script call); a refusal is remembered locally
//!    until its retry time, an allowance is recorded locally;
//! 3. if Redis cannot be reached, the local bucket decides alone (per-pod limits) rather than
//!    refusing everyone or letting everything through; such checks are counted.

use std::sync::atomic::{AtomicU64, Ordering};

use tassis_redis::Redis;

use crate::{Decision, LocalBuckets, Quota, RedisBuckets};

/// Rate-limit checks for one gateway process.
pub struct Limiter {
    /// Every bucket this process holds: per-connection limits and the fast path of shared ones.
    local: LocalBuckets,
    /// The buckets every gateway shares, when a Redis is configured.
    shared: Option<RedisBuckets>,
    /// Shared checks that fell back to the local bucket because Redis failed.
    fallbacks: AtomicU64,
    /// Last time (local µs) a fallback was logged, to log at most every 10 s.
    last_warned_us: AtomicU64,
}

impl Limiter {
    /// Buckets in this process only (the embedded deployment, or gateways without Redis).
    pub fn local() -> Self {
        Self::build(None)
    }

    /// Shared buckets in `redis`, with the local fast path.
    pub fn shared(redis: Redis) -> Self {
        Self::build(Some(RedisBuckets::new(redis)))
    }

    fn build(shared: Option<RedisBuckets>) -> Self {
        Self {
            local: LocalBuckets::new(),
            shared,
            fallbacks: AtomicU64::new(0),
            last_warned_us: AtomicU64::new(0),
        }
    }

    /// Whether shared limits go through Redis.
    pub fn is_shared(&self) -> bool {
        self.shared.is_some()
    }

    /// Shared checks decided locally because Redis failed.
    pub fn fallbacks(&self) -> u64 {
        self.fallbacks.load(Ordering::Relaxed)
    }

    /// Takes `cost` tokens from the bucket of (`limit`, `key`), shared by all gateways when a
    /// Redis is configured.
    pub async fn check(&self, limit: &str, key: &[u8], q: &Quota, cost: u32) -> Decision {
        let local_key = [limit.as_bytes(), &[0], key].concat();
        let Some(shared) = &self.shared else {
            return self.local.check(&local_key, q, cost);
        };
        if let d @ Decision::Deny { .. } = self.local.peek(&local_key, q, cost) {
            return d;
        }
        match shared.check(limit, key, q, cost).await {
            Ok(Decision::Allow) => {
                let _ = self.local.check(&local_key, q, cost);
                Decision::Allow
            }
            Ok(d @ Decision::Deny { retry_after }) => {
                self.local.deny_for(&local_key, q, retry_after);
                d
            }
            Err(e) => {
                self.fallbacks.fetch_add(1, Ordering::Relaxed);
                let now = self.local.now_us();
                let last = self.last_warned_us.load(Ordering::Relaxed);
                if now.saturating_sub(last) > 10_000_000
                    && self
                        .last_warned_us
                        .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                        .is_ok()
                {
                    tracing::warn!(error = %e, limit, "shared rate limit unavailable; this gateway's own buckets decide");
                }
                self.local.check(&local_key, q, cost)
            }
        }
    }

    /// This process's rate-limit clock in microseconds, for buckets a caller keeps itself (a
    /// connection's own [`crate::Gcra`]).
    pub fn now_us(&self) -> u64 {
        self.local.now_us()
    }
}
