//! One gateway's delivery stream, seen from a messaging replica.
//!
//! The gateway subscribes each authenticated connection (a subscription id names it). For every
//! subscription a task watches the device's notifications *first*, then replays the unacked
//! backlog in send order, then reads past the last delivered id whenever a notification arrives —
//! so a message enqueued at any moment is either in the backlog read or announced afterwards,
//! never missed. Any replica can serve any device because notifications are routed per device by
//! the backend (Redis sharded pub/sub, or in-process channels), not by replica.
//!
//! Flow control: each subscription has a window of deliveries it may push before the gateway
//! grants more credit (as its client's socket queue drains), so a backlog replay never floods a
//! slow connection and the gateway's per-connection buffers stay bounded.
//!
//! Acks from the gateway delete messages. When the stream ends (gateway gone), every subscription
//! task is cancelled; unacked messages stay queued for the next login.

use std::collections::HashMap;
use std::sync::Arc;

use tassis_proto::messaging_v1::{
    AckDelivery, Delivery, DeliveryEvent, GatewayEvent, Subscribe, SubscriptionFailed, delivery_event, gateway_event,
};
use tokio::sync::{Semaphore, mpsc};

/// Window used when a Subscribe does not name one.
pub const DEFAULT_WINDOW: u32 = 64;
/// Largest window (and largest credit balance) a subscription may have.
pub const MAX_WINDOW: u32 = 4096;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use crate::metrics::Metrics;
use crate::{DeviceAddress, MessageId, MessagingConfig, MessagingError, QueueBackend};

/// Events flowing to the gateway.
pub type Outbound = mpsc::Sender<Result<DeliveryEvent, Status>>;

/// How many deliveries may wait for the gRPC stream before subscription tasks pause.
pub const STREAM_BUFFER: usize = 1024;
/// How many acks one stream applies at once.
const ACKS_IN_FLIGHT: usize = 256;

/// A live subscription on this stream.
struct Subscription {
    /// The device being delivered.
    device: DeviceAddress,
    /// Stops the subscription's task.
    cancel: CancellationToken,
    /// Deliveries the task may still push (flow-control credit).
    credits: Arc<Semaphore>,
    /// The subscription's window, which bounds its credit balance.
    window: u32,
}

/// Runs one gateway stream until the gateway closes it (or it breaks).
pub async fn run_stream<S>(
    backend: Arc<dyn QueueBackend>,
    config: Arc<MessagingConfig>,
    metrics: Arc<Metrics>,
    mut inbound: S,
    out: Outbound,
) where
    S: futures::Stream<Item = Result<GatewayEvent, Status>> + Unpin,
{
    metrics.streams.inc();
    let mut subs: HashMap<u64, Subscription> = HashMap::new();
    run_events(&backend, &config, &metrics, &mut inbound, &out, &mut subs).await;
    metrics.streams.dec();
    metrics.subscriptions.sub(subs.len() as i64);
    for s in subs.values() {
        s.cancel.cancel();
    }
}

/// The event loop of [`run_stream`]; `subs` is left holding the subscriptions still open.
async fn run_events<S>(
    backend: &Arc<dyn QueueBackend>,
    config: &Arc<MessagingConfig>,
    metrics: &Arc<Metrics>,
    inbound: &mut S,
    out: &Outbound,
    subs: &mut HashMap<u64, Subscription>,
) where
    S: futures::Stream<Item = Result<GatewayEvent, Status>> + Unpin,
{
    use futures::StreamExt;
    let stream_cancel = CancellationToken::new();
    let _cancel_all = stream_cancel.clone().drop_guard();
    let acks = Arc::new(Semaphore::new(ACKS_IN_FLIGHT));
    while let Some(event) = inbound.next().await {
        let event = match event {
            Ok(GatewayEvent { event: Some(e) }) => e,
            Ok(GatewayEvent { event: None }) => continue,
            Err(status) => {
                tracing::debug!(%status, "delivery stream broke");
                break;
            }
        };
        match event {
            gateway_event::Event::Subscribe(Subscribe {
                subscription_id,
                address,
                window,
            }) => {
                let device = match tassis_proto::address::check_address(address.as_ref()) {
                    Ok(a) => DeviceAddress {
                        identity_key: a.identity_key.clone(),
                        device_id: a.device_id.clone(),
                    },
                    Err(e) => {
                        fail(out, subscription_id, &e.to_string()).await;
                        continue;
                    }
                };
                if let Some(old) = subs.remove(&subscription_id) {
                    old.cancel.cancel();
                    metrics.subscriptions.dec();
                }
                if subs.len() >= config.max_subscriptions_per_stream {
                    fail(out, subscription_id, "too many subscriptions on this stream").await;
                    continue;
                }
                let cancel = stream_cancel.child_token();
                let window = if window == 0 {
                    DEFAULT_WINDOW
                } else {
                    window.min(MAX_WINDOW)
                };
                let credits = Arc::new(Semaphore::new(window as usize));
                tokio::spawn(serve_subscription(
                    backend.clone(),
                    device.clone(),
                    subscription_id,
                    config.delivery_batch,
                    out.clone(),
                    cancel.clone(),
                    credits.clone(),
                    metrics.clone(),
                ));
                metrics.subscriptions.inc();
                subs.insert(
                    subscription_id,
                    Subscription {
                        device,
                        cancel,
                        credits,
                        window,
                    },
                );
            }
            gateway_event::Event::Credit(c) => {
                if let Some(s) = subs.get(&c.subscription_id) {
                    let room = (s.window as usize).saturating_sub(s.credits.available_permits());
                    s.credits.add_permits((c.messages as usize).min(room));
                }
            }
            gateway_event::Event::Unsubscribe(u) => {
                if let Some(s) = subs.remove(&u.subscription_id) {
                    s.cancel.cancel();
                    metrics.subscriptions.dec();
                }
            }
            gateway_event::Event::Ack(AckDelivery {
                subscription_id,
                message_id,
            }) => {
                let Some(sub) = subs.get(&subscription_id) else {
                    continue;
                };
                let Ok(id) = message_id.parse::<MessageId>() else {
                    tracing::debug!(%message_id, "ignoring ack with malformed id");
                    continue;
                };
                let Ok(permit) = acks.clone().acquire_owned().await else {
                    break;
                };
                let backend = backend.clone();
                let device = sub.device.clone();
                let metrics = metrics.clone();
                tokio::spawn(async move {
                    match backend.ack(&device, id).await {
                        Ok(removed) => metrics.on_acked(&device, id, removed),
                        // The message stays queued and is redelivered at the next login.
                        Err(e) => tracing::warn!(error = %e, "ack failed"),
                    }
                    drop(permit);
                });
            }
        }
    }
}

async fn fail(out: &Outbound, subscription_id: u64, reason: &str) {
    let _ = out
        .send(Ok(DeliveryEvent {
            event: Some(delivery_event::Event::Failed(SubscriptionFailed {
                subscription_id,
                reason: reason.to_string(),
            })),
        }))
        .await;
}

/// How long a subscription rides out a failing backend (a slot migration, a failover) before it
/// gives up and tells the gateway, which then asks the client to reconnect.
pub const BACKEND_RETRY_BUDGET: std::time::Duration = std::time::Duration::from_secs(15);

/// Runs `op` until it succeeds, retrying with backoff for up to [`BACKEND_RETRY_BUDGET`]:
/// messages are durable, so a transient backend failure only delays delivery.
async fn retrying<T, F, Fut>(mut op: F) -> Result<T, MessagingError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, MessagingError>>,
{
    let deadline = tokio::time::Instant::now() + BACKEND_RETRY_BUDGET;
    let mut pause = std::time::Duration::from_millis(20);
    loop {
        match op().await {
            Err(MessagingError::Unavailable(e)) if tokio::time::Instant::now() < deadline => {
                tracing::debug!(error = %e, "backend unavailable for a subscription; retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(std::time::Duration::from_secs(1));
            }
            other => return other,
        }
    }
}

/// Delivers one device's queue to one subscription until cancelled.
#[allow(clippy::too_many_arguments)] // one task's whole state, passed once at spawn
async fn serve_subscription(
    backend: Arc<dyn QueueBackend>,
    device: DeviceAddress,
    subscription_id: u64,
    batch: usize,
    out: Outbound,
    cancel: CancellationToken,
    credits: Arc<Semaphore>,
    metrics: Arc<Metrics>,
) {
    let run = async {
        // Watch before reading, so nothing enqueued in between goes unannounced.
        let mut watch = retrying(|| backend.watch(&device)).await?;
        let mut last: Option<MessageId> = None;
        // Messages found queued at subscribe, counted until the first short read.
        let mut backlog = Some(0usize);
        loop {
            let msgs = retrying(|| backend.read(&device, last, batch)).await?;
            let full = msgs.len() == batch;
            if let Some(n) = backlog.as_mut() {
                *n += msgs.len();
            }
            for m in msgs {
                match credits.acquire().await {
                    Ok(p) => p.forget(),
                    Err(_) => return Ok(()),
                }
                last = Some(m.id);
                // One span per delivered message; its context travels in the Delivery so the
                // gateway's push to the client joins the trace. No addresses in it.
                let span = tracing::info_span!(
                    "deliver",
                    otel.name = "messaging deliver",
                    otel.kind = "producer",
                    messaging.message.id = %m.id,
                    messaging.backlog = backlog.is_some(),
                );
                // Continue the trace of the message's enqueue, so send and delivery are one trace.
                if let Some(tp) = &m.trace {
                    let carrier = std::collections::HashMap::from([("traceparent".to_string(), tp.clone())]);
                    tassis_runtime::telemetry::set_parent_from(&span, &carrier);
                }
                let trace_context = span.in_scope(tassis_runtime::telemetry::current_context);
                let ev = DeliveryEvent {
                    event: Some(delivery_event::Event::Delivery(Delivery {
                        subscription_id,
                        message_id: m.id.to_string(),
                        message: m.payload,
                        enqueued_at_ms: m.id.ms as i64,
                        trace_context,
                    })),
                };
                if out.send(Ok(ev)).await.is_err() {
                    return Ok(());
                }
                metrics.on_delivered(&device, m.id);
                drop(span);
            }
            if full {
                continue;
            }
            if let Some(n) = backlog.take() {
                metrics.backlog.observe(n as f64);
            }
            if !watch.changed().await {
                // The backend dropped our subscription (e.g. its pub/sub connection was reset):
                // subscribe again and re-read, which catches anything announced meanwhile.
                watch = retrying(|| backend.watch(&device)).await?;
            }
        }
    };
    let res: Result<(), MessagingError> = tokio::select! {
        _ = cancel.cancelled() => Ok(()),
        r = run => r,
    };
    if let Err(e) = res {
        tracing::warn!(error = %e, "subscription failed");
        fail(&out, subscription_id, &e.to_string()).await;
    }
}
