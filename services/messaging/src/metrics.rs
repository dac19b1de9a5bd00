//! The messaging service's Prometheus series (served on the role's admin port), and
//! [`Instrumented`], the [`QueueBackend`] wrapper that times every backend call and gives it a
//! span.

use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;
use prometheus::{Histogram, HistogramOpts, HistogramVec, IntCounter, IntGauge, Registry};

use crate::{DeviceAddress, MessageId, MessagingError, QueueBackend, StoredMessage, Watch};

/// Most delivered-and-unacked message ids remembered to recognise redeliveries.
const REMEMBERED: usize = 100_000;

/// Counters, gauges and histograms of one messaging service.
pub struct Metrics {
    /// Messages stored by Enqueue.
    pub enqueued: IntCounter,
    /// Messages pushed to gateways.
    pub delivered: IntCounter,
    /// Acks that removed a message.
    pub acked: IntCounter,
    /// Deliveries of a message this replica had already delivered (not acked in between).
    pub redeliveries: IntCounter,
    /// Messages waiting for a device when it subscribed (its backlog replay).
    pub backlog: Histogram,
    /// Backend call latency by operation.
    pub backend_seconds: HistogramVec,
    /// Backend calls that failed, by operation.
    pub backend_errors: prometheus::IntCounterVec,
    /// Open delivery streams from gateways.
    pub streams: IntGauge,
    /// Device subscriptions served on those streams.
    pub subscriptions: IntGauge,
    /// (device, message) pairs delivered and not acked yet, to recognise redeliveries.
    delivered_unacked: Mutex<HashSet<u64>>,
}

fn key(device: &DeviceAddress, id: MessageId) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    device.hash(&mut h);
    id.hash(&mut h);
    h.finish()
}

impl Metrics {
    /// Creates the series and registers them in `registry`.
    pub fn new(registry: &Registry) -> Arc<Self> {
        let counter = |name: &str, help: &str| IntCounter::new(name, help).expect("valid metric");
        let gauge = |name: &str, help: &str| IntGauge::new(name, help).expect("valid metric");
        let m = Self {
            enqueued: counter("tassis_messaging_enqueued_total", "Messages stored by Enqueue"),
            delivered: counter("tassis_messaging_delivered_total", "Messages pushed to gateways"),
            acked: counter(
                "tassis_messaging_acked_total",
                "Delivered messages acked (removed from the queue)",
            ),
            redeliveries: counter(
                "tassis_messaging_redeliveries_total",
                "Deliveries of a message this replica had delivered before without an ack",
            ),
            backlog: Histogram::with_opts(
                HistogramOpts::new(
                    "tassis_messaging_backlog_at_subscribe",
                    "Messages queued for a device when it subscribed (replayed backlog)",
                )
                .buckets(vec![0.0, 1.0, 5.0, 10.0, 50.0, 100.0, 500.0, 1000.0, 5000.0]),
            )
            .expect("valid metric"),
            backend_seconds: HistogramVec::new(
                HistogramOpts::new(
                    "tassis_messaging_backend_seconds",
                    "Queue backend call latency by operation",
                )
                .buckets(vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                ]),
                &["op"],
            )
            .expect("valid metric"),
            backend_errors: prometheus::IntCounterVec::new(
                prometheus::Opts::new(
                    "tassis_messaging_backend_errors_total",
                    "Queue backend calls that failed, by operation",
                ),
                &["op"],
            )
            .expect("valid metric"),
            streams: gauge(
                "tassis_messaging_delivery_streams",
                "Open delivery streams from gateways",
            ),
            subscriptions: gauge(
                "tassis_messaging_subscriptions",
                "Device subscriptions served on the open delivery streams",
            ),
            delivered_unacked: Mutex::new(HashSet::new()),
        };
        for c in [
            Box::new(m.enqueued.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(m.delivered.clone()),
            Box::new(m.acked.clone()),
            Box::new(m.redeliveries.clone()),
            Box::new(m.backlog.clone()),
            Box::new(m.backend_seconds.clone()),
            Box::new(m.backend_errors.clone()),
            Box::new(m.streams.clone()),
            Box::new(m.subscriptions.clone()),
        ] {
            // Registering twice only happens when services share a registry in tests.
            let _ = registry.register(c);
        }
        Arc::new(m)
    }

    /// Counts one delivery, and a redelivery if it was delivered before and not acked since.
    pub fn on_delivered(&self, device: &DeviceAddress, id: MessageId) {
        self.delivered.inc();
        let mut seen = self.delivered_unacked.lock();
        if seen.len() >= REMEMBERED {
            seen.clear();
        }
        if !seen.insert(key(device, id)) {
            self.redeliveries.inc();
        }
    }

    /// Counts one ack that removed a message.
    pub fn on_acked(&self, device: &DeviceAddress, id: MessageId, removed: bool) {
        self.delivered_unacked.lock().remove(&key(device, id));
        if removed {
            self.acked.inc();
        }
    }
}

/// A [`QueueBackend`] that times each call into `tassis_messaging_backend_seconds{op}` and runs it
/// in a span (`<backend> <op>`, e.g. `redis enqueue`). Spans carry no addresses.
pub struct Instrumented {
    inner: Arc<dyn QueueBackend>,
    metrics: Arc<Metrics>,
}

impl Instrumented {
    pub fn new(inner: Arc<dyn QueueBackend>, metrics: Arc<Metrics>) -> Self {
        Self { inner, metrics }
    }

    async fn call<T>(
        &self,
        op: &'static str,
        f: impl std::future::Future<Output = Result<T, MessagingError>>,
    ) -> Result<T, MessagingError> {
        tassis_runtime::telemetry::backend_call(
            self.inner.kind(),
            op,
            &self.metrics.backend_seconds,
            &self.metrics.backend_errors,
            |e| !matches!(e, MessagingError::UnknownDevice | MessagingError::InvalidRequest(_)),
            f,
        )
        .await
    }
}

#[async_trait::async_trait]
impl QueueBackend for Instrumented {
    async fn enqueue(&self, to: &DeviceAddress, payload: Bytes) -> Result<MessageId, MessagingError> {
        self.call("enqueue", self.inner.enqueue(to, payload)).await
    }

    async fn read(
        &self,
        device: &DeviceAddress,
        after: Option<MessageId>,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, MessagingError> {
        self.call("read", self.inner.read(device, after, limit)).await
    }

    async fn ack(&self, device: &DeviceAddress, id: MessageId) -> Result<bool, MessagingError> {
        self.call("ack", self.inner.ack(device, id)).await
    }

    async fn watch(&self, device: &DeviceAddress) -> Result<Watch, MessagingError> {
        self.call("watch", self.inner.watch(device)).await
    }

    async fn depth(&self, device: &DeviceAddress) -> Result<u64, MessagingError> {
        self.call("depth", self.inner.depth(device)).await
    }

    fn kind(&self) -> &'static str {
        self.inner.kind()
    }
}
