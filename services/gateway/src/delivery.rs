//! Deliveries from messaging to this gateway's connections.
//!
//! The gateway holds one long-lived bidirectional gRPC stream per messaging replica and
//! multiplexes every subscribed connection over it: a [`Subscription`] is created when a device
//! logs in (Subscribe on the stream), receives its deliveries on a bounded channel, sends acks,
//! and unsubscribes when dropped. If a stream breaks, the link reconnects with backoff and
//! re-subscribes every connection; the replica replays unacked backlogs (at-least-once).
//!
//! Flow control: each subscription has a window; messaging pushes at most that many deliveries
//! beyond the credit the connection has returned ([`Subscription::credit`]) as it hands
//! deliveries to its writer. A connection whose channel still overflows (it can only after a
//! re-subscribe) loses its subscription and is closed: one slow client never stalls the stream.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tassis_proto::messaging_v1::{
    AckDelivery, Credit, Delivery, GatewayEvent, Subscribe, Unsubscribe, delivery_event, gateway_event,
    messaging_client::MessagingClient,
};
use tassis_proto::tassis::Address;
use tassis_runtime::Shutdown;
use tokio::sync::mpsc;
use tonic::transport::Channel;

/// What a subscription receives.
#[derive(Debug)]
pub enum HubEvent {
    Delivery(Delivery),
    /// Messaging could not serve the subscription.
    Failed(String),
}

/// A subscribed connection as the link knows it.
struct SubEntry {
    address: Address,
    deliver: mpsc::Sender<HubEvent>,
}

/// Subscriptions and the current stream of one link, under one lock so that (re)subscribing on
/// reconnect and subscribing a new connection can never interleave badly.
#[derive(Default)]
struct LinkState {
    subs: HashMap<u64, SubEntry>,
    /// Sender of the live stream, if connected.
    tx: Option<mpsc::UnboundedSender<GatewayEvent>>,
}

/// The stream to one messaging replica.
struct Link {
    endpoint: String,
    client: MessagingClient<Channel>,
    state: Mutex<LinkState>,
    connected: AtomicBool,
}

impl Link {
    fn send(&self, ev: gateway_event::Event) {
        if let Some(tx) = &self.state.lock().tx {
            let _ = tx.send(GatewayEvent { event: Some(ev) });
        }
    }

    fn remove(&self, id: u64, notify: bool) {
        let mut st = self.state.lock();
        if st.subs.remove(&id).is_some()
            && notify
            && let Some(tx) = &st.tx
        {
            let _ = tx.send(GatewayEvent {
                event: Some(gateway_event::Event::Unsubscribe(Unsubscribe { subscription_id: id })),
            });
        }
    }

    fn route(&self, ev: delivery_event::Event) {
        let (id, hub_ev) = match ev {
            delivery_event::Event::Delivery(d) => (d.subscription_id, HubEvent::Delivery(d)),
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
            self.remove(id, true);
        }
    }

    /// Keeps the stream up until shutdown.
    async fn run(self: Arc<Self>, window: u32, shutdown: Shutdown) {
        let mut backoff = Duration::from_millis(100);
        while !shutdown.is_triggered() {
            let (tx, rx) = mpsc::unbounded_channel();
            {
                let mut st = self.state.lock();
                for (id, s) in &st.subs {
                    let _ = tx.send(GatewayEvent {
                        event: Some(gateway_event::Event::Subscribe(Subscribe {
                            subscription_id: *id,
                            address: Some(s.address.clone()),
                            window,
                        })),
                    });
                }
                st.tx = Some(tx);
            }
            let mut client = self.client.clone();
            let call = client.deliver(tokio_stream::wrappers::UnboundedReceiverStream::new(rx));
            let result = tokio::select! {
                _ = shutdown.wait() => break,
                r = call => r,
            };
            match result {
                Ok(resp) => {
                    self.connected.store(true, Ordering::SeqCst);
                    tracing::info!(endpoint = %self.endpoint, "delivery stream open");
                    backoff = Duration::from_millis(100);
                    let mut inbound = resp.into_inner();
                    loop {
                        let msg = tokio::select! {
                            _ = shutdown.wait() => break,
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
            self.connected.store(false, Ordering::SeqCst);
            self.state.lock().tx = None;
            tokio::select! {
                _ = shutdown.wait() => break,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
        self.state.lock().tx = None;
    }
}

/// All delivery streams of this gateway.
#[derive(Clone)]
pub struct DeliveryHub {
    links: Arc<Vec<Arc<Link>>>,
    next_id: Arc<AtomicU64>,
    /// Flow-control window of each subscription.
    window: u32,
}

impl DeliveryHub {
    /// Starts one link per messaging replica.
    pub fn start(replicas: &[(String, Channel)], window: u32, shutdown: Shutdown) -> Self {
        let links: Vec<Arc<Link>> = replicas
            .iter()
            .map(|(endpoint, ch)| {
                Arc::new(Link {
                    endpoint: endpoint.clone(),
                    client: MessagingClient::new(ch.clone()).max_decoding_message_size(64 * 1024 * 1024),
                    state: Mutex::new(LinkState::default()),
                    connected: AtomicBool::new(false),
                })
            })
            .collect();
        for l in &links {
            tokio::spawn(l.clone().run(window, shutdown.clone()));
        }
        Self {
            links: Arc::new(links),
            next_id: Arc::new(AtomicU64::new(1)),
            window,
        }
    }

    /// Whether every link has its stream open.
    pub fn all_connected(&self) -> bool {
        self.links.iter().all(|l| l.connected.load(Ordering::SeqCst))
    }

    /// Subscribes a logged-in connection of `address`.
    pub fn subscribe(&self, address: Address) -> Subscription {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let link = self.pick(&address);
        // Room for a full window, plus one more for deliveries still in flight from before a
        // re-subscribe.
        let (tx, rx) = mpsc::channel(2 * self.window as usize + 8);
        {
            let mut st = link.state.lock();
            if let Some(t) = &st.tx {
                let _ = t.send(GatewayEvent {
                    event: Some(gateway_event::Event::Subscribe(Subscribe {
                        subscription_id: id,
                        address: Some(address.clone()),
                        window: self.window,
                    })),
                });
            }
            st.subs.insert(id, SubEntry { address, deliver: tx });
        }
        Subscription { id, link, rx }
    }

    /// The replica serving a device: spread by hash of the address.
    fn pick(&self, address: &Address) -> Arc<Link> {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        address.identity_key.hash(&mut h);
        address.device_id.hash(&mut h);
        let n = self.links.len();
        self.links[(h.finish() % n as u64) as usize].clone()
    }
}

/// One connection's subscription. Dropping it unsubscribes.
pub struct Subscription {
    id: u64,
    link: Arc<Link>,
    rx: mpsc::Receiver<HubEvent>,
}

impl Subscription {
    /// The next event; None when the subscription was dropped by the hub (slow connection).
    pub async fn recv(&mut self) -> Option<HubEvent> {
        self.rx.recv().await
    }

    /// Returns flow-control credit for `messages` deliveries handed to the writer.
    pub fn credit(&self, messages: u32) {
        self.link.send(gateway_event::Event::Credit(Credit {
            subscription_id: self.id,
            messages,
        }));
    }

    /// Acknowledges a delivered message.
    pub fn ack(&self, message_id: String) {
        self.link.send(gateway_event::Event::Ack(AckDelivery {
            subscription_id: self.id,
            message_id,
        }));
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.link.remove(self.id, true);
    }
}
