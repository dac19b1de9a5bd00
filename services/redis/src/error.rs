//! The crate's one error type. Backends map it onto their own (`Unavailable`): to a client every
//! Redis failure means "retry later"; to an operator the text says what went wrong.

use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    /// A flag is missing or invalid; the text names it.
    #[error("invalid Redis configuration: {0}")]
    Config(String),
    /// Start-up could not connect in time.
    #[error("could not connect to Redis within {0:?} (is it running and reachable? check --redis-url)")]
    ConnectTimeout(Duration),
    /// A server is too old for the commands tassis relies on.
    #[error(
        "Redis at {server} is version {version}; tassis needs Redis >= {required} \
         (sharded pub/sub SPUBLISH/SSUBSCRIBE, XTRIM MINID)"
    )]
    TooOld {
        /// The node that answered.
        server: String,
        /// Its `redis_version`.
        version: String,
        /// The minimum tassis needs.
        required: &'static str,
    },
    /// Redis answered with something the caller cannot interpret.
    #[error("unexpected reply from Redis: {0}")]
    Reply(String),
    /// Too few replicas confirmed a write in time (or its node is not known yet).
    #[error("{0}")]
    Replicas(String),
    /// A command or connection failed.
    #[error("Redis: {0}")]
    Redis(#[from] fred::error::Error),
}
