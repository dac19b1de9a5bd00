//! The embedded in-memory queues: the default when no Redis is configured, so that one command
//! runs a working server. Same semantics as the Redis backend; durability is the process's
//! lifetime, which is what an embedded single-process deployment offers (README says so).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Weak};

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::watch;

use crate::backend::{DeviceAddress, QueueBackend, Retention, StoredMessage, Watch};
use crate::{MessageId, MessagingError, Registrations};

/// Where the current time comes from (replaceable so retention can be tested without waiting).
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// The system clock in unix milliseconds.
pub fn system_clock() -> Clock {
    Arc::new(|| tassis_runtime::unix_ms().max(0) as u64)
}

/// One device's queue and its notification channel.
#[derive(Default)]
struct DeviceQueue {
    /// Messages in id order.
    entries: VecDeque<StoredMessage>,
    /// Last id assigned, so ids keep increasing after the queue empties.
    last_id: Option<MessageId>,
    /// Present while somebody watches the device.
    notify: Option<watch::Sender<u64>>,
}

impl DeviceQueue {
    fn trim(&mut self, retention: &Retention, now_ms: u64) {
        let min_ms = now_ms.saturating_sub(retention.max_age.as_millis() as u64);
        while self.entries.front().is_some_and(|m| m.id.ms < min_ms) {
            self.entries.pop_front();
        }
        while self.entries.len() as u64 > retention.max_queue_len {
            self.entries.pop_front();
        }
    }

    fn unused(&self) -> bool {
        self.entries.is_empty() && self.notify.is_none()
    }
}

/// State shared with watch guards.
struct Inner {
    /// Every device that has messages or watchers.
    queues: Mutex<HashMap<DeviceAddress, DeviceQueue>>,
}

/// In-memory per-device queues.
pub struct MemoryQueues {
    /// Queues, shared with watch guards (which hold it weakly).
    inner: Arc<Inner>,
    /// The enqueue-time registration check.
    registrations: Arc<dyn Registrations>,
    /// Retention limits.
    retention: Retention,
    /// Time source.
    clock: Clock,
}

impl MemoryQueues {
    pub fn new(registrations: Arc<dyn Registrations>, retention: Retention) -> Self {
        Self::with_clock(registrations, retention, system_clock())
    }

    pub fn with_clock(registrations: Arc<dyn Registrations>, retention: Retention, clock: Clock) -> Self {
        Self {
            inner: Arc::new(Inner {
                queues: Mutex::new(HashMap::new()),
            }),
            registrations,
            retention,
            clock,
        }
    }
}

/// Removes a device's notification sender when its last watcher goes away.
struct WatchGuard {
    inner: Weak<Inner>,
    device: DeviceAddress,
}

impl Drop for WatchGuard {
    fn drop(&mut self) {
        let Some(inner) = self.inner.upgrade() else { return };
        let mut queues = inner.queues.lock();
        if let Some(q) = queues.get_mut(&self.device) {
            // The Watch drops its receiver before this guard, so a count of 0 means no watcher is left.
            if q.notify.as_ref().is_some_and(|n| n.receiver_count() == 0) {
                q.notify = None;
            }
            // A device that never had a message needs no entry; one that had keeps its `last_id`
            // so that ids are never reused (a stale ack must never match a newer message).
            if q.unused() && q.last_id.is_none() {
                queues.remove(&self.device);
            }
        }
    }
}

#[async_trait::async_trait]
impl QueueBackend for MemoryQueues {
    fn kind(&self) -> &'static str {
        "memory"
    }

    async fn enqueue(&self, to: &DeviceAddress, payload: Bytes) -> Result<MessageId, MessagingError> {
        if !self.registrations.is_registered(to).await? {
            return Err(MessagingError::UnknownDevice);
        }
        let now = (self.clock)();
        let mut queues = self.inner.queues.lock();
        let q = queues.entry(to.clone()).or_default();
        let id = MessageId::next_after(q.last_id, now);
        q.last_id = Some(id);
        q.entries.push_back(StoredMessage {
            id,
            payload,
            trace: crate::backend::current_traceparent(),
        });
        q.trim(&self.retention, now);
        if let Some(n) = &q.notify {
            n.send_modify(|v| *v = v.wrapping_add(1));
        }
        Ok(id)
    }

    async fn read(
        &self,
        device: &DeviceAddress,
        after: Option<MessageId>,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, MessagingError> {
        let now = (self.clock)();
        let mut queues = self.inner.queues.lock();
        let Some(q) = queues.get_mut(device) else {
            return Ok(Vec::new());
        };
        q.trim(&self.retention, now);
        let start = match after {
            Some(a) => q.entries.partition_point(|m| m.id <= a),
            None => 0,
        };
        Ok(q.entries.iter().skip(start).take(limit).cloned().collect())
    }

    async fn ack(&self, device: &DeviceAddress, id: MessageId) -> Result<bool, MessagingError> {
        let mut queues = self.inner.queues.lock();
        let Some(q) = queues.get_mut(device) else {
            return Ok(false);
        };
        let found = match q.entries.binary_search_by(|m| m.id.cmp(&id)) {
            Ok(i) => {
                q.entries.remove(i);
                true
            }
            Err(_) => false,
        };
        Ok(found)
    }

    async fn watch(&self, device: &DeviceAddress) -> Result<Watch, MessagingError> {
        let mut queues = self.inner.queues.lock();
        let q = queues.entry(device.clone()).or_default();
        let rx = match &q.notify {
            Some(n) => n.subscribe(),
            None => {
                let (tx, rx) = watch::channel(0);
                q.notify = Some(tx);
                rx
            }
        };
        Ok(Watch::new(
            rx,
            Box::new(WatchGuard {
                inner: Arc::downgrade(&self.inner),
                device: device.clone(),
            }),
        ))
    }

    async fn depth(&self, device: &DeviceAddress) -> Result<u64, MessagingError> {
        let now = (self.clock)();
        let mut queues = self.inner.queues.lock();
        Ok(queues
            .get_mut(device)
            .map(|q| {
                q.trim(&self.retention, now);
                q.entries.len() as u64
            })
            .unwrap_or(0))
    }
}
