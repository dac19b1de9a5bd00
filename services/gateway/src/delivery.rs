//! Deliveries from messaging to this gateway's connections.
//!
//! The gateway holds one long-lived bidirectional gRPC stream ("link") per messaging replica and
//! multiplexes every subscribed connection over them. A [`Subscription`] is created when a device
//! logs in: the hub assigns it to a connected replica by rendezvous hashing of the device address
//! (stable while the replica set is stable), sends Subscribe, and the connection receives its
//! deliveries on a bounded channel, returns flow-control credit and sends acks. Dropping the
//! subscription unsubscribes.
//!
//! Any replica can serve any device (new-message notifications are routed per device by the
//! backend, not by replica), so failure handling is simple: when a link's stream breaks, or its
//! replica leaves the replica set, its subscriptions move to another connected replica, which
//! replays each device's unacked backlog — at-least-once, nothing lost. A link that cannot
//! connect keeps retrying with backoff and takes new subscriptions again once it is up.
//!
//! Flow control: each subscription has a window; messaging pushes at most that many deliveries
//! beyond the credit the connection has returned ([`Subscription::credit`]) as it hands
//! deliveries to its writer. A connection whose channel still overflows (possible only around a
//! re-subscribe) loses its subscription and is closed: one slow client never stalls a stream.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use tassis_proto::messaging_v1::{
    AckDelivery, Credit, Delivery, GatewayEvent, Subscribe, Unsubscribe, delivery_event, gateway_event,
    messaging_client::MessagingClient,
};
use tassis_proto::tassis::Address;
use tassis_runtime::Shutdown;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

/// What a subscription receives.
#[derive(Debug)]
pub enum HubEvent {
    /// Boxed: each subscription's queue allocates its first 32 slots up front (see
    /// `connection::Out`).
    Delivery(Box<Delivery>),
    /// Messaging could not serve the subscription.
    Failed(String),
}

/// Which link a subscription is on; shared by the subscription handle and the link's entry so
/// that moving a subscription and dropping it can never race (both hold this lock).
struct Placement {
    link: Arc<Link>,
    /// Set when the handle is dropped: a concurrent move must not re-insert the entry.
    closed: bool,
}

/// A subscribed connection as a link knows it.
struct SubEntry {
    address: Address,
    deliver: mpsc::Sender<HubEvent>,
    placement: Arc<Mutex<Placement>>,
}

/// Subscriptions and the current stream of one link, under one lock so that re-subscribing on
/// reconnect and subscribing a new connection cannot interleave badly.
#[derive(Default)]
struct LinkState {
    subs: HashMap<u64, SubEntry>,
    /// Sender of the live stream, if connected.
    tx: Option<mpsc::UnboundedSender<GatewayEvent>>,
}

/// The stream to one messaging replica.
struct Link {
    /// The replica's URL, also its identity in the replica set.
    endpoint: String,
    client: MessagingClient<Channel>,
    state: Mutex<LinkState>,
    /// Whether the stream is open.
    connected: AtomicBool,
    /// Cancelled when the replica leaves the replica set.
    retired: CancellationToken,
}

fn subscribe_event(id: u64, address: &Address, window: u32) -> GatewayEvent {
    GatewayEvent {
        event: Some(gateway_event::Event::Subscribe(Subscribe {
            subscription_id: id,
            address: Some(address.clone()),
            window,
        })),
    }
}

impl Link {
    fn send(&self, ev: gateway_event::Event) {
        if let Some(tx) = &self.state.lock().tx {
            let _ = tx.send(GatewayEvent { event: Some(ev) });
        }
    }

    fn insert(&self, id: u64, entry: SubEntry, window: u32) {
        let mut st = self.state.lock();
        if let Some(tx) = &st.tx {
            let _ = tx.send(subscribe_event(id, &entry.address, window));
        }
        st.subs.insert(id, entry);
    }

    fn remove(&self, id: u64) {
        let mut st = self.state.lock();
        if st.subs.remove(&id).is_some()
            && let Some(tx) = &st.tx
        {
            let _ = tx.send(GatewayEvent {
                event: Some(gateway_event::Event::Unsubscribe(Unsubscribe { subscription_id: id })),
            });
        }
    }

    fn route(&self, ev: delivery_event::Event) {
        let (id, hub_ev) = match ev {
            delivery_event::Event::Delivery(d) => (d.subscription_id, HubEvent::Delivery(Box::new(d))),
            delivery_event::Event::Failed(f) => (f.subscription_id, HubEvent::Failed(f.reason)),
        };
        let res = {
            let st = self.state.lock();
            let Some(sub) = st.subs.get(&id) else { return };
            sub.deliver.try_send(hub_ev)
        };
        if res.is_err() {
            // Full (the connection is not keeping up) or closed (it is gone): drop the
            // subscription; the connection notices its channel closing and closes itself.
            self.remove(id);
        }
    }

    /// Keeps the stream up until shutdown or retirement; after each failure, hands the link's
    /// subscriptions to another connected replica.
    async fn run(self: Arc<Self>, hub: Arc<HubShared>) {
        let mut backoff = Duration::from_millis(100);
        let stop = |this: &Arc<Self>| this.retired.is_cancelled() || hub.shutdown.is_triggered();
        while !stop(&self) {
            let (tx, rx) = mpsc::unbounded_channel();
            {
                let mut st = self.state.lock();
                for (id, s) in &st.subs {
                    let _ = tx.send(subscribe_event(*id, &s.address, hub.window));
                }
                st.tx = Some(tx);
            }
            let mut client = self.client.clone();
            let call = client.deliver(tokio_stream::wrappers::UnboundedReceiverStream::new(rx));
            let result = tokio::select! {
                _ = hub.shutdown.wait() => break,
                _ = self.retired.cancelled() => break,
                r = call => r,
            };
            match result {
                Ok(resp) => {
                    self.connected.store(true, Ordering::SeqCst);
                    hub.metrics.delivery_streams.inc();
                    tracing::info!(endpoint = %self.endpoint, "delivery stream open");
                    backoff = Duration::from_millis(100);
                    let mut inbound = resp.into_inner();
                    loop {
                        let msg = tokio::select! {
                            _ = hub.shutdown.wait() => break,
                            _ = self.retired.cancelled() => break,
                            m = inbound.message() => m,
                        };
                        match msg {
                            Ok(Some(ev)) => {
                                if let Some(e) = ev.event {
                                    self.route(e)
                                }
                            }
                            Ok(None) => {
                                tracing::warn!(endpoint = %self.endpoint, "delivery stream closed by messaging");
                                break;
                            }
                            Err(s) => {
                                tracing::warn!(endpoint = %self.endpoint, status = %s, "delivery stream broke");
                                break;
                            }
                        }
                    }
                }
                Err(s) => {
                    tracing::warn!(endpoint = %self.endpoint, status = %s, "cannot open delivery stream");
                }
            }
            if self.connected.swap(false, Ordering::SeqCst) {
                hub.metrics.delivery_streams.dec();
            }
            self.state.lock().tx = None;
            if stop(&self) {
                break;
            }
            hub.metrics.delivery_stream_reconnects.inc();
            hub.move_subscriptions_off(&self);
            tokio::select! {
                _ = hub.shutdown.wait() => break,
                _ = self.retired.cancelled() => break,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
        if self.connected.swap(false, Ordering::SeqCst) {
            hub.metrics.delivery_streams.dec();
        }
        self.state.lock().tx = None;
        if self.retired.is_cancelled() && !hub.shutdown.is_triggered() {
            hub.move_subscriptions_off(&self);
        }
    }
}

/// State shared by the hub handle and its links.
struct HubShared {
    /// The current replica set.
    links: RwLock<Vec<Arc<Link>>>,
    next_id: AtomicU64,
    /// Flow-control window of each subscription.
    window: u32,
    shutdown: Shutdown,
    /// Stream health series.
    metrics: crate::metrics::Metrics,
}

impl HubShared {
    /// The replica for a device among `candidates`: highest rendezvous score, so a device stays on
    /// its replica while the set is unchanged and only the departed replica's devices move.
    fn pick<'a>(address: &Address, candidates: impl Iterator<Item = &'a Arc<Link>>) -> Option<Arc<Link>> {
        candidates
            .max_by_key(|l| {
                let mut h = std::collections::hash_map::DefaultHasher::new();
                address.identity_key.hash(&mut h);
                address.device_id.hash(&mut h);
                l.endpoint.hash(&mut h);
                h.finish()
            })
            .cloned()
    }

    /// A connected replica for `address`, other than `except`; any replica if none is connected.
    fn choose(&self, address: &Address, except: Option<&Arc<Link>>) -> Option<Arc<Link>> {
        let links = self.links.read();
        let others = || links.iter().filter(|l| except.is_none_or(|e| !Arc::ptr_eq(l, e)));
        Self::pick(address, others().filter(|l| l.connected.load(Ordering::SeqCst))).or_else(|| {
            if except.is_some() {
                None
            } else {
                Self::pick(address, others())
            }
        })
    }

    /// Moves every subscription of `from` to other connected replicas (those with nowhere to go
    /// stay and are re-subscribed when `from` reconnects).
    fn move_subscriptions_off(&self, from: &Arc<Link>) {
        let entries: Vec<(u64, SubEntry)> = from.state.lock().subs.drain().collect();
        if entries.is_empty() {
            return;
        }
        let mut moved = 0usize;
        for (id, entry) in entries {
            let placement = entry.placement.clone();
            let mut p = placement.lock();
            if p.closed {
                continue;
            }
            let target = self.choose(&entry.address, Some(from)).unwrap_or_else(|| from.clone());
            if !Arc::ptr_eq(&target, from) {
                moved += 1;
            }
            p.link = target.clone();
            target.insert(id, entry, self.window);
        }
        if moved > 0 {
            tracing::info!(endpoint = %from.endpoint, moved, "subscriptions moved to other messaging replicas");
        }
    }
}

/// All delivery streams of this gateway.
#[derive(Clone)]
pub struct DeliveryHub {
    shared: Arc<HubShared>,
}

impl DeliveryHub {
    /// A hub with no replicas yet; add them with [`DeliveryHub::set_replicas`].
    pub fn new(window: u32, shutdown: Shutdown, metrics: crate::metrics::Metrics) -> Self {
        Self {
            shared: Arc::new(HubShared {
                links: RwLock::new(Vec::new()),
                next_id: AtomicU64::new(1),
                window,
                shutdown,
                metrics,
            }),
        }
    }

    /// Makes the replica set exactly `replicas` (URL and channel): starts links to new replicas,
    /// retires links to departed ones (their subscriptions move to the others).
    pub fn set_replicas(&self, replicas: &[(String, Channel)]) {
        let mut links = self.shared.links.write();
        links.retain(|l| {
            let keep = replicas.iter().any(|(e, _)| *e == l.endpoint);
            if !keep {
                tracing::info!(endpoint = %l.endpoint, "messaging replica left");
                l.retired.cancel();
            }
            keep
        });
        for (endpoint, ch) in replicas {
            if links.iter().any(|l| l.endpoint == *endpoint) {
                continue;
            }
            tracing::info!(%endpoint, "messaging replica joined");
            let link = Arc::new(Link {
                endpoint: endpoint.clone(),
                client: MessagingClient::new(ch.clone()).max_decoding_message_size(64 * 1024 * 1024),
                state: Mutex::new(LinkState::default()),
                connected: AtomicBool::new(false),
                retired: CancellationToken::new(),
            });
            tokio::spawn(link.clone().run(self.shared.clone()));
            links.push(link);
        }
        self.shared.metrics.messaging_replicas.set(links.len() as i64);
    }

    /// Whether at least one replica's stream is open.
    pub fn any_connected(&self) -> bool {
        self.shared
            .links
            .read()
            .iter()
            .any(|l| l.connected.load(Ordering::SeqCst))
    }

    /// Number of replicas with an open stream, and in the set.
    pub fn replica_counts(&self) -> (usize, usize) {
        let links = self.shared.links.read();
        (
            links.iter().filter(|l| l.connected.load(Ordering::SeqCst)).count(),
            links.len(),
        )
    }

    /// Subscribes a logged-in connection of `address`. None when there is no replica at all.
    pub fn subscribe(&self, address: Address) -> Option<Subscription> {
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let link = self.shared.choose(&address, None)?;
        // Room for a full window, plus one more for deliveries still in flight from before a
        // re-subscribe.
        let (tx, rx) = mpsc::channel(2 * self.shared.window as usize + 8);
        let placement = Arc::new(Mutex::new(Placement {
            link: link.clone(),
            closed: false,
        }));
        {
            let _p = placement.lock();
            link.insert(
                id,
                SubEntry {
                    address,
                    deliver: tx,
                    placement: placement.clone(),
                },
                self.shared.window,
            );
        }
        Some(Subscription { id, placement, rx })
    }
}

/// One connection's subscription. Dropping it unsubscribes.
pub struct Subscription {
    id: u64,
    placement: Arc<Mutex<Placement>>,
    rx: mpsc::Receiver<HubEvent>,
}

impl Subscription {
    /// The next event; None when the subscription was dropped by the hub (slow connection).
    pub async fn recv(&mut self) -> Option<HubEvent> {
        self.rx.recv().await
    }

    /// Returns flow-control credit for `messages` deliveries handed to the writer.
    pub fn credit(&self, messages: u32) {
        self.placement.lock().link.send(gateway_event::Event::Credit(Credit {
            subscription_id: self.id,
            messages,
        }));
    }

    /// Acknowledges a delivered message.
    pub fn ack(&self, message_id: String) {
        self.placement.lock().link.send(gateway_event::Event::Ack(AckDelivery {
            subscription_id: self.id,
            message_id,
        }));
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut p = self.placement.lock();
        p.closed = true;
        p.link.remove(self.id);
    }
}

#[cfg(test)]
mod size_tests {
    /// Every connection's queues allocate 32 slots up front; keep the slots small (connection
    /// density, BENCHMARKS.md).
    #[test]
    fn queued_items_stay_small() {
        assert!(std::mem::size_of::<super::HubEvent>() <= 32);
        assert_eq!(std::mem::size_of::<crate::connection::Out>(), 8);
    }
}
