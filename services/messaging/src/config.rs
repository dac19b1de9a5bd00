//! Messaging limits and tuning. Every one is explicit, configurable and documented in the README.

use std::time::Duration;

use tassis_runtime::config::{ensure, parse_duration};

use crate::backend::Retention;

/// Messaging configuration (flags with `TASSIS_*` env twins).
#[derive(Clone, Debug, clap::Args)]
pub struct MessagingConfig {
    /// Messages kept per device; beyond it the oldest are dropped.
    #[arg(long, env = "TASSIS_MAX_QUEUE_LEN", default_value_t = 10_000)]
    pub max_queue_len: u64,

    /// Age after which an unacked message is dropped.
    #[arg(long, env = "TASSIS_MAX_MESSAGE_AGE", default_value = "30days", value_parser = parse_duration)]
    pub max_message_age: Duration,

    /// Largest sealed-sender payload accepted, in bytes.
    #[arg(long, env = "TASSIS_MAX_MESSAGE_SIZE", default_value_t = 256 * 1024)]
    pub max_message_size: usize,

    /// Messages read from the queue and pushed per batch.
    #[arg(long, env = "TASSIS_DELIVERY_BATCH", default_value_t = 128)]
    pub delivery_batch: usize,

    /// Subscriptions one gateway stream may hold.
    #[arg(long, env = "TASSIS_MAX_SUBSCRIPTIONS_PER_STREAM", default_value_t = 1_000_000)]
    pub max_subscriptions_per_stream: usize,

    /// Redis backend: replica acknowledgements of every enqueue (and federation outbox push).
    #[command(flatten)]
    pub replica: tassis_redis::replicas::ReplicaAckArgs,
}

impl Default for MessagingConfig {
    fn default() -> Self {
        Self {
            max_queue_len: 10_000,
            max_message_age: Duration::from_secs(30 * 86400),
            max_message_size: 256 * 1024,
            delivery_batch: 128,
            max_subscriptions_per_stream: 1_000_000,
            replica: Default::default(),
        }
    }
}

impl MessagingConfig {
    pub fn validate(&self) -> Result<(), tassis_runtime::RuntimeError> {
        ensure(self.max_queue_len >= 1, || "--max-queue-len must be at least 1".into())?;
        ensure(self.max_message_age >= Duration::from_secs(1), || {
            "--max-message-age must be at least 1s".into()
        })?;
        ensure(self.max_message_size >= 1, || {
            "--max-message-size must be at least 1".into()
        })?;
        ensure((1..=10_000).contains(&self.delivery_batch), || {
            "--delivery-batch must be 1..=10000".into()
        })?;
        ensure(self.max_subscriptions_per_stream >= 1, || {
            "--max-subscriptions-per-stream must be at least 1".into()
        })?;
        self.replica.validate()
    }

    /// Replica acknowledgements an enqueue waits for, if any.
    pub fn replica_acks(&self) -> Option<(u32, Duration)> {
        self.replica.acks()
    }

    pub fn retention(&self) -> Retention {
        Retention {
            max_queue_len: self.max_queue_len,
            max_age: self.max_message_age,
        }
    }
}
