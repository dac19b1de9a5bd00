//! What the Redis Cluster backends of the keystore and messaging share, and nothing more:
//!
//! - [`args`]: the `--redis-*` flags and the URL forms they accept, validated at start;
//! - [`mod@connect`]: one connection pool per process, refusing Redis older than 7.0;
//! - [`script`]: Lua scripts run by SHA1 with a fallback to EVAL on NOSCRIPT — every backend
//!   operation is one script, atomic on one slot;
//! - [`replicas`]: waiting for replica acknowledgements of a write (`--redis-min-replica-acks`);
//! - [`keys`]: the key layout, shared because messaging's enqueue script reads the keystore's
//!   registrations (same hash tag, same slot);
//! - `testing` (feature `testing`): a real Redis Cluster for the backends' tests.
//!
//! The backends themselves live with their traits (`tassis_keystore::redis`,
//! `tassis_messaging::redis`), so this crate stays small and free of service logic.

pub mod args;
pub mod connect;
pub mod error;
pub mod keys;
pub mod replicas;
pub mod script;
#[cfg(feature = "testing")]
pub mod testing;

pub use args::{RedisArgs, RedisTarget};
pub use connect::{MIN_VERSION, Redis, connect};
pub use error::RedisError;
pub use script::Script;

/// Re-exported so backends name the same fred version as this crate.
pub use fred;
