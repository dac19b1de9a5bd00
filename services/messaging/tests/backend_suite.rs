//! The messaging backend behaviour suite. Every case is written once against a [`Fixture`] and
//! instantiated per backend by `backend_suite!`, so the embedded queues and Redis are held to the
//! same semantics.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use parking_lot::Mutex;
use tassis_messaging::backend::Retention;
use tassis_messaging::{DeviceAddress, MemoryQueues, MessagingError, QueueBackend, Registrations};

/// A backend plus a way to register devices in whatever the backend checks registrations against.
pub struct Fixture {
    pub queues: Arc<dyn QueueBackend>,
    pub register: Box<dyn Fn(DeviceAddress) -> BoxFuture<'static, ()> + Send + Sync>,
}

pub const RETENTION: Retention = Retention {
    max_queue_len: 5,
    max_age: Duration::from_secs(3600),
};

fn device() -> DeviceAddress {
    DeviceAddress {
        identity_key: Bytes::from(rand::random::<[u8; 32]>().to_vec()),
        device_id: Bytes::from_static(b"dev"),
    }
}

fn payload(i: usize) -> Bytes {
    Bytes::from(format!("m{i}"))
}

pub async fn unregistered_device_is_refused(f: Fixture) {
    let d = device();
    let e = f.queues.enqueue(&d, payload(0)).await.unwrap_err();
    assert!(matches!(e, MessagingError::UnknownDevice), "{e:?}");
    assert_eq!(f.queues.depth(&d).await.unwrap(), 0);
}

pub async fn read_in_send_order_and_ack(f: Fixture) {
    let d = device();
    (f.register)(d.clone()).await;
    let mut ids = Vec::new();
    for i in 0..4 {
        ids.push(f.queues.enqueue(&d, payload(i)).await.unwrap());
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids increase: {ids:?}");
    let all = f.queues.read(&d, None, 100).await.unwrap();
    assert_eq!(
        all.iter().map(|m| m.payload.clone()).collect::<Vec<_>>(),
        (0..4).map(payload).collect::<Vec<_>>()
    );
    let after = f.queues.read(&d, Some(ids[1]), 1).await.unwrap();
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].payload, payload(2));
    assert!(f.queues.ack(&d, ids[1]).await.unwrap());
    assert!(!f.queues.ack(&d, ids[1]).await.unwrap(), "second ack finds nothing");
    let left: Vec<_> = f
        .queues
        .read(&d, None, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(left, vec![ids[0], ids[2], ids[3]]);
    assert_eq!(f.queues.depth(&d).await.unwrap(), 3);
}

pub async fn cap_drops_oldest(f: Fixture) {
    let d = device();
    (f.register)(d.clone()).await;
    for i in 0..8 {
        f.queues.enqueue(&d, payload(i)).await.unwrap();
    }
    let left: Vec<_> = f
        .queues
        .read(&d, None, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.payload)
        .collect();
    assert_eq!(left, (3..8).map(payload).collect::<Vec<_>>());
}

pub async fn watch_announces_new_messages(f: Fixture) {
    let d = device();
    (f.register)(d.clone()).await;
    let mut w = f.queues.watch(&d).await.unwrap();
    let q = f.queues.clone();
    let d2 = d.clone();
    let sender = tokio::spawn(async move { q.enqueue(&d2, payload(1)).await.unwrap() });
    assert!(
        tokio::time::timeout(Duration::from_secs(10), w.changed())
            .await
            .expect("announced")
    );
    let id = sender.await.unwrap();
    let got = f.queues.read(&d, None, 10).await.unwrap();
    assert_eq!(got.last().unwrap().id, id);
}

pub async fn concurrent_enqueues_all_kept_with_distinct_ids(f: Fixture) {
    let d = device();
    (f.register)(d.clone()).await;
    let mut tasks = Vec::new();
    for i in 0..5 {
        let q = f.queues.clone();
        let d = d.clone();
        tasks.push(tokio::spawn(async move { q.enqueue(&d, payload(i)).await.unwrap() }));
    }
    let mut ids = HashSet::new();
    for t in tasks {
        ids.insert(t.await.unwrap());
    }
    assert_eq!(ids.len(), 5);
    assert_eq!(f.queues.read(&d, None, 100).await.unwrap().len(), 5);
}

/// Instantiates every case for one fixture factory (an async expression yielding a [`Fixture`]).
#[macro_export]
macro_rules! backend_suite {
    ($modname:ident, $factory:expr) => {
        mod $modname {
            use super::*;
            macro_rules! case {
                ($name:ident) => {
                    #[tokio::test]
                    async fn $name() {
                        let f: Fixture = $factory.await;
                        super::$name(f).await;
                    }
                };
            }
            case!(unregistered_device_is_refused);
            case!(read_in_send_order_and_ack);
            case!(cap_drops_oldest);
            case!(watch_announces_new_messages);
            case!(concurrent_enqueues_all_kept_with_distinct_ids);
        }
    };
}

/// Registrations held in a set, for the embedded backend.
#[derive(Default)]
struct SetRegistrations(Mutex<HashSet<DeviceAddress>>);

#[async_trait::async_trait]
impl Registrations for SetRegistrations {
    async fn is_registered(&self, d: &DeviceAddress) -> Result<bool, MessagingError> {
        Ok(self.0.lock().contains(d))
    }
}

async fn memory_fixture() -> Fixture {
    let regs = Arc::new(SetRegistrations::default());
    let r2 = regs.clone();
    Fixture {
        queues: Arc::new(MemoryQueues::new(regs, RETENTION)),
        register: Box::new(move |d| {
            r2.0.lock().insert(d);
            Box::pin(async {})
        }),
    }
}

backend_suite!(memory, memory_fixture());

/// Age retention, with a controllable clock (the Redis backend's age test waits for real time).
#[tokio::test]
async fn memory_age_limit_drops_old_messages() {
    use std::sync::atomic::{AtomicU64, Ordering};
    let regs = Arc::new(SetRegistrations::default());
    let now = Arc::new(AtomicU64::new(1_000_000));
    let n2 = now.clone();
    let q = MemoryQueues::with_clock(
        regs.clone(),
        Retention {
            max_queue_len: 100,
            max_age: Duration::from_secs(60),
        },
        Arc::new(move || n2.load(Ordering::SeqCst)),
    );
    let d = device();
    regs.0.lock().insert(d.clone());
    q.enqueue(&d, payload(0)).await.unwrap();
    now.fetch_add(30_000, Ordering::SeqCst);
    q.enqueue(&d, payload(1)).await.unwrap();
    now.fetch_add(31_000, Ordering::SeqCst);
    let left: Vec<_> = q
        .read(&d, None, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.payload)
        .collect();
    assert_eq!(left, vec![payload(1)]);
    now.fetch_add(60_000, Ordering::SeqCst);
    assert_eq!(q.depth(&d).await.unwrap(), 0);
}
