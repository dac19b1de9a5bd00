//! The queue contract every messaging backend honours, stated once so the embedded store and
//! Redis behave the same and one behaviour suite covers both.

use bytes::Bytes;
use std::time::Duration;

use crate::{MessageId, MessagingError};

/// A device: identity key + device id, both already validated.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DeviceAddress {
    pub identity_key: Bytes,
    pub device_id: Bytes,
}

/// One queued message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredMessage {
    pub id: MessageId,
    pub payload: Bytes,
    /// W3C `traceparent` of the enqueue, when it was traced: the delivery continues that trace,
    /// so one trace covers a message from send to delivery. Carries no sender information.
    pub trace: Option<String>,
}

/// The `traceparent` of the current span, if it is being traced (stored with enqueued messages).
pub fn current_traceparent() -> Option<String> {
    tassis_runtime::telemetry::current_context().remove("traceparent")
}

/// Retention limits applied by a backend.
#[derive(Clone, Copy, Debug)]
pub struct Retention {
    /// Messages kept per device; the oldest are dropped beyond it.
    pub max_queue_len: u64,
    /// Messages older than this are dropped.
    pub max_age: Duration,
}

/// A subscription to a device's new-message notifications. Dropping it unsubscribes.
pub struct Watch {
    /// Bumped by the backend whenever a message is enqueued for the device.
    rx: tokio::sync::watch::Receiver<u64>,
    /// Releases the backend-side subscription when the watch is dropped.
    _guard: Box<dyn Send + Sync>,
}

impl Watch {
    pub fn new(rx: tokio::sync::watch::Receiver<u64>, guard: Box<dyn Send + Sync>) -> Self {
        Self { rx, _guard: guard }
    }

    /// Completes when a message has been enqueued since the last call (or since the watch was
    /// made). Returns false if the backend dropped the subscription (the caller should re-read
    /// and re-subscribe).
    pub async fn changed(&mut self) -> bool {
        self.rx.changed().await.is_ok()
    }
}

/// Durable per-device queues.
#[async_trait::async_trait]
pub trait QueueBackend: Send + Sync + 'static {
    /// Stores `payload` at the end of the device's queue, applying retention, and notifies
    /// watchers. [`MessagingError::UnknownDevice`] if the device is not registered. Returns only
    /// once the message is durable.
    async fn enqueue(&self, to: &DeviceAddress, payload: Bytes) -> Result<MessageId, MessagingError>;

    /// Up to `limit` messages after `after` (from the start when `None`), in send order,
    /// excluding messages past retention.
    async fn read(
        &self,
        device: &DeviceAddress,
        after: Option<MessageId>,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, MessagingError>;

    /// Removes one message; returns whether it was there.
    async fn ack(&self, device: &DeviceAddress, id: MessageId) -> Result<bool, MessagingError>;

    /// Subscribes to the device's notifications. Messages enqueued after this returns are
    /// announced on the watch.
    async fn watch(&self, device: &DeviceAddress) -> Result<Watch, MessagingError>;

    /// Number of messages queued for the device (within retention).
    async fn depth(&self, device: &DeviceAddress) -> Result<u64, MessagingError>;

    /// What stores the queues (`memory`, `redis`), for spans and metrics.
    fn kind(&self) -> &'static str {
        "custom"
    }
}
