//! The delivery stream logic on the embedded backend: backlog replay in send order, live pushes,
//! acks, and redelivery of unacked messages to a new subscription.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tassis_messaging::delivery::run_stream;
use tassis_messaging::{DeviceAddress, MemoryQueues, MessagingConfig, MessagingError, QueueBackend, Registrations};
use tassis_proto::messaging_v1::{
    AckDelivery, Credit, Delivery, DeliveryEvent, GatewayEvent, Subscribe, Unsubscribe, delivery_event, gateway_event,
};
use tassis_proto::tassis::Address;
use tokio::sync::mpsc;
use tonic::Status;

struct All;
#[async_trait::async_trait]
impl Registrations for All {
    async fn is_registered(&self, _: &DeviceAddress) -> Result<bool, MessagingError> {
        Ok(true)
    }
}

struct Stream {
    to_replica: mpsc::UnboundedSender<Result<GatewayEvent, Status>>,
    from_replica: mpsc::Receiver<Result<DeliveryEvent, Status>>,
}

impl Stream {
    fn open(backend: Arc<dyn QueueBackend>) -> Stream {
        let (gtx, grx) = mpsc::unbounded_channel();
        let (dtx, drx) = mpsc::channel(64);
        let cfg = MessagingConfig {
            delivery_batch: 2,
            ..MessagingConfig::default()
        };
        tokio::spawn(run_stream(
            backend,
            Arc::new(cfg),
            tassis_messaging::Metrics::new(&prometheus::Registry::new()),
            tokio_stream::wrappers::UnboundedReceiverStream::new(grx),
            dtx,
        ));
        Stream {
            to_replica: gtx,
            from_replica: drx,
        }
    }
    fn send(&self, e: gateway_event::Event) {
        self.to_replica.send(Ok(GatewayEvent { event: Some(e) })).unwrap();
    }
    async fn next(&mut self) -> Delivery {
        let ev = tokio::time::timeout(Duration::from_secs(10), self.from_replica.recv())
            .await
            .expect("a delivery in time")
            .expect("stream open")
            .expect("ok event");
        match ev.event {
            Some(delivery_event::Event::Delivery(d)) => d,
            other => panic!("unexpected {other:?}"),
        }
    }
}

fn device() -> (DeviceAddress, Address) {
    let ik = Bytes::from(vec![5u8; 32]);
    let dev = Bytes::from_static(b"phone");
    (
        DeviceAddress {
            identity_key: ik.clone(),
            device_id: dev.clone(),
        },
        Address {
            identity_key: ik,
            device_id: dev,
        },
    )
}

#[tokio::test]
async fn backlog_then_live_then_ack_and_redelivery() {
    let q: Arc<dyn QueueBackend> = Arc::new(MemoryQueues::new(Arc::new(All), MessagingConfig::default().retention()));
    let (d, a) = device();
    for i in 0..5 {
        q.enqueue(&d, Bytes::from(format!("old{i}"))).await.unwrap();
    }
    let mut s = Stream::open(q.clone());
    s.send(gateway_event::Event::Subscribe(Subscribe {
        subscription_id: 7,
        address: Some(a.clone()),
        window: 0,
    }));
    let mut ids = Vec::new();
    for i in 0..5 {
        let m = s.next().await;
        assert_eq!(m.subscription_id, 7);
        assert_eq!(
            m.message,
            Bytes::from(format!("old{i}")),
            "backlog in send order (batches of 2)"
        );
        ids.push(m.message_id);
    }
    q.enqueue(&d, Bytes::from_static(b"live")).await.unwrap();
    let live = s.next().await;
    assert_eq!(live.message, Bytes::from_static(b"live"));
    // Ack two, then a second subscription sees only the rest.
    s.send(gateway_event::Event::Ack(AckDelivery {
        subscription_id: 7,
        message_id: ids[0].clone(),
    }));
    s.send(gateway_event::Event::Ack(AckDelivery {
        subscription_id: 7,
        message_id: live.message_id.clone(),
    }));
    s.send(gateway_event::Event::Unsubscribe(Unsubscribe { subscription_id: 7 }));
    // Acks are applied asynchronously; wait for the queue to show them.
    tokio::time::timeout(Duration::from_secs(10), async {
        while q.depth(&d).await.unwrap() != 4 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("acks applied");
    s.send(gateway_event::Event::Subscribe(Subscribe {
        subscription_id: 8,
        address: Some(a),
        window: 0,
    }));
    let mut again = HashSet::new();
    for _ in 0..4 {
        let m = s.next().await;
        assert_eq!(m.subscription_id, 8);
        again.insert(m.message_id);
    }
    let want: HashSet<_> = ids[1..].iter().cloned().collect();
    assert_eq!(again, want);
}

#[tokio::test]
async fn bad_address_fails_the_subscription() {
    let q: Arc<dyn QueueBackend> = Arc::new(MemoryQueues::new(Arc::new(All), MessagingConfig::default().retention()));
    let mut s = Stream::open(q);
    s.send(gateway_event::Event::Subscribe(Subscribe {
        subscription_id: 1,
        address: Some(Address {
            identity_key: Bytes::from_static(b"short"),
            device_id: Bytes::from_static(b"d"),
        }),
        window: 0,
    }));
    let ev = s.from_replica.recv().await.unwrap().unwrap();
    assert!(matches!(ev.event, Some(delivery_event::Event::Failed(f)) if f.subscription_id == 1));
}

#[tokio::test]
async fn pushes_stop_at_the_window_until_credit() {
    let q: Arc<dyn QueueBackend> = Arc::new(MemoryQueues::new(Arc::new(All), MessagingConfig::default().retention()));
    let (d, a) = device();
    for i in 0..5 {
        q.enqueue(&d, Bytes::from(format!("m{i}"))).await.unwrap();
    }
    let mut s = Stream::open(q);
    s.send(gateway_event::Event::Subscribe(Subscribe {
        subscription_id: 1,
        address: Some(a),
        window: 2,
    }));
    assert_eq!(s.next().await.message, Bytes::from_static(b"m0"));
    assert_eq!(s.next().await.message, Bytes::from_static(b"m1"));
    // Window used up: nothing more arrives without credit. (An absence can only be observed
    // over some time; 200 ms is ample for an in-process channel.)
    let more = tokio::time::timeout(Duration::from_millis(200), s.from_replica.recv()).await;
    assert!(more.is_err(), "pushed past the window: {more:?}");
    s.send(gateway_event::Event::Credit(Credit {
        subscription_id: 1,
        messages: 2,
    }));
    assert_eq!(s.next().await.message, Bytes::from_static(b"m2"));
    assert_eq!(s.next().await.message, Bytes::from_static(b"m3"));
    // Credit beyond the window is capped at the window.
    s.send(gateway_event::Event::Credit(Credit {
        subscription_id: 1,
        messages: 1000,
    }));
    assert_eq!(s.next().await.message, Bytes::from_static(b"m4"));
}
