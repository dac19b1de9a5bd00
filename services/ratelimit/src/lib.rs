//! Rate limits for the gateway: token buckets (as GCRA, one number per bucket), kept locally for
//! per-connection limits and in Redis for limits every gateway pod must share (sends to one
//! device, prekey fetches for one identity, new connections from one address).
//!
//! - [`Quota`]: what a limit allows (`N/period`: a burst of N, refilled at N per period).
//! - [`gcra`]: the bucket arithmetic, pure and clock-free so it is tested exactly.
//! - [`LocalBuckets`]: keyed buckets in process memory (the embedded default and the fast path).
//! - [`RedisBuckets`]: keyed buckets in Redis Cluster, one script call per check.
//! - [`Limiter`]: what the gateway calls: local fast path first, then the shared bucket.

pub mod gcra;
pub mod limiter;
pub mod local;
pub mod quota;
pub mod redis;

pub use gcra::{Decision, Gcra};
pub use limiter::Limiter;
pub use local::LocalBuckets;
pub use quota::Quota;
pub use redis::RedisBuckets;

/// Why a shared bucket could not be consulted.
#[derive(Debug, thiserror::Error)]
pub enum RateLimitError {
    #[error(transparent)]
    Redis(#[from] tassis_redis::RedisError),
    #[error("unexpected reply from the rate-limit script: {0}")]
    Reply(String),
}
