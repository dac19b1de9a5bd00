//! The federation's Redis parts on a real Redis Cluster (the test cluster: scripts/test.sh starts
//! one, or `tassis_redis::testing` does): the presence directory's claim/release semantics, the
//! outbox (order, cap, claims, failure streak, leases), the handoff marker's effect on the
//! enqueue script, and the routing of [`FederatedQueues`]. Each test uses fresh random identity
//! keys and peer names, so tests share the cluster safely.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tassis_federation::metrics::Metrics;
use tassis_federation::outbox::{Item, Outbox, PARTITIONS, Streak, partition};
use tassis_federation::router::FederatedQueues;
use tassis_federation::{Federation, Presence, RedisPresence, StaticPresence};
use tassis_keystore::backend::RegisterLimits;
use tassis_keystore::{KeyBackend, RedisKeyStore};
use tassis_messaging::backend::Retention;
use tassis_messaging::{DeviceAddress, MessagingError, QueueBackend, RedisQueues};
use tassis_proto::tassis::Address;

fn device() -> DeviceAddress {
    DeviceAddress {
        identity_key: Bytes::from(rand::random::<[u8; 32]>().to_vec()),
        device_id: Bytes::from_static(b"phone"),
    }
}

/// A peer name no other test uses (outbox keys are per peer).
fn peer() -> String {
    format!("peer-{}.test", hex::encode(rand::random::<[u8; 6]>()))
}

fn message(to: &DeviceAddress, text: &str) -> Item {
    Item::message(to, Bytes::copy_from_slice(text.as_bytes()))
}

fn address(d: &DeviceAddress) -> Address {
    Address {
        identity_key: d.identity_key.clone(),
        device_id: d.device_id.clone(),
    }
}

fn retention() -> Retention {
    Retention {
        max_queue_len: 100,
        max_age: Duration::from_secs(3600),
    }
}

async fn register(keys: &RedisKeyStore, d: &DeviceAddress) {
    let limits = RegisterLimits {
        max_devices_per_identity: 8,
        max_one_time_keys_per_device: 8,
    };
    keys.register(
        &d.identity_key,
        &d.device_id,
        Bytes::from_static(b"spk"),
        vec![],
        limits,
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn presence_claims_return_the_previous_home_and_only_the_home_releases() {
    let p = RedisPresence::new(tassis_redis::testing::connect().await);
    let d = device();
    let (ik, dev) = (&d.identity_key, &d.device_id);
    assert_eq!(p.home(ik, dev).await.unwrap(), None);
    assert_eq!(p.claim(ik, dev, "a.test").await.unwrap(), None, "first registration");
    assert_eq!(p.claim(ik, dev, "a.test").await.unwrap().as_deref(), Some("a.test"));
    assert_eq!(
        p.claim(ik, dev, "b.test").await.unwrap().as_deref(),
        Some("a.test"),
        "moved"
    );
    assert_eq!(p.home(ik, dev).await.unwrap().as_deref(), Some("b.test"));
    assert!(
        !p.release(ik, dev, "a.test").await.unwrap(),
        "the old home cannot release it"
    );
    assert_eq!(p.home(ik, dev).await.unwrap().as_deref(), Some("b.test"));
    assert!(p.release(ik, dev, "b.test").await.unwrap());
    assert_eq!(p.home(ik, dev).await.unwrap(), None);
    assert!(p.is_federated());
}

#[tokio::test]
async fn the_outbox_keeps_order_refuses_messages_when_full_but_never_claims() {
    let outbox = Outbox::new(tassis_redis::testing::connect().await, 3);
    let (peer, d) = (peer(), device());
    let p = partition(&d.identity_key, &d.device_id);
    assert!(p < PARTITIONS);
    for i in 0..3 {
        outbox.push(&peer, &message(&d, &format!("m{i}")), None).await.unwrap();
    }
    let full = outbox.push(&peer, &message(&d, "m3"), None).await.unwrap_err();
    assert!(full.to_string().contains("full"), "{full}");
    outbox
        .push(&peer, &Item::Claim(address(&d)), Some("00-trace-01"))
        .await
        .unwrap();
    assert_eq!(outbox.len(&peer, p).await.unwrap(), 4);

    let head = outbox.head(&peer, p, 10).await.unwrap();
    let items: Vec<Item> = head.iter().map(|e| e.item.clone()).collect();
    let mut want: Vec<Item> = (0..3).map(|i| message(&d, &format!("m{i}"))).collect();
    want.push(Item::Claim(address(&d)));
    assert_eq!(items, want, "in push order");
    assert_eq!(head[3].trace.as_deref(), Some("00-trace-01"));
    assert!(head.windows(2).all(|w| w[0].queued_at_ms <= w[1].queued_at_ms));
    assert_eq!(outbox.head(&peer, p, 2).await.unwrap().len(), 2, "count is honoured");

    let ids: Vec<String> = head[..2].iter().map(|e| e.id.clone()).collect();
    outbox.remove(&peer, p, &ids).await.unwrap();
    let rest = outbox.head(&peer, p, 10).await.unwrap();
    assert_eq!(rest.len(), 2);
    assert_eq!(rest[0].item, message(&d, "m2"));
    // Room again.
    outbox.push(&peer, &message(&d, "m4"), None).await.unwrap();
}

#[tokio::test]
async fn failure_streaks_keep_their_first_failure_until_cleared() {
    let outbox = Outbox::new(tassis_redis::testing::connect().await, 10);
    let peer = peer();
    assert_eq!(outbox.streak(&peer, 5).await.unwrap(), None);
    assert_eq!(
        outbox.record_failure(&peer, 5, 1_000).await.unwrap(),
        Streak {
            first: 1_000,
            last: 1_000
        }
    );
    assert_eq!(
        outbox.record_failure(&peer, 5, 4_000).await.unwrap(),
        Streak {
            first: 1_000,
            last: 4_000
        }
    );
    assert_eq!(
        outbox.streak(&peer, 5).await.unwrap(),
        Some(Streak {
            first: 1_000,
            last: 4_000
        })
    );
    assert_eq!(outbox.streak(&peer, 6).await.unwrap(), None, "per partition");
    outbox.clear_failures(&peer, 5).await.unwrap();
    assert_eq!(outbox.streak(&peer, 5).await.unwrap(), None);
}

#[tokio::test]
async fn one_lease_holder_per_partition() {
    let outbox = Outbox::new(tassis_redis::testing::connect().await, 10);
    let peer = peer();
    let ttl = Duration::from_secs(30);
    assert!(outbox.acquire(&peer, 1, "r1", ttl).await.unwrap());
    assert!(!outbox.acquire(&peer, 1, "r2", ttl).await.unwrap(), "held by r1");
    assert!(outbox.acquire(&peer, 2, "r2", ttl).await.unwrap(), "another partition");
    assert!(outbox.renew(&peer, 1, "r1", ttl).await.unwrap());
    assert!(
        !outbox.renew(&peer, 1, "r2", ttl).await.unwrap(),
        "only the holder renews"
    );
    outbox.release(&peer, 1, "r2").await.unwrap();
    assert!(
        !outbox.acquire(&peer, 1, "r2", ttl).await.unwrap(),
        "only the holder releases"
    );
    outbox.release(&peer, 1, "r1").await.unwrap();
    assert!(outbox.acquire(&peer, 1, "r2", ttl).await.unwrap());
    // An expired lease is free.
    assert!(outbox.acquire(&peer, 3, "r1", Duration::from_millis(1)).await.unwrap());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !outbox.acquire(&peer, 3, "r2", ttl).await.unwrap() {
        assert!(tokio::time::Instant::now() < deadline, "a 1 ms lease never expired");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_handoff_marker_keeps_the_queue_open_until_it_is_empty() {
    let redis = tassis_redis::testing::connect().await;
    let queues = RedisQueues::new(redis.clone(), retention()).await.unwrap();
    let keys = RedisKeyStore::new(redis.clone());
    let outbox = Outbox::new(redis, 10);
    let d = device();
    register(&keys, &d).await;
    let first = queues.enqueue(&d, Bytes::from_static(b"before")).await.unwrap();

    outbox
        .begin_handoff(&d.identity_key, &d.device_id, "b.test")
        .await
        .unwrap();
    keys.unregister(&d.identity_key, &d.device_id).await.unwrap();
    // Unregistered, but being handed over: still queued here, behind the rest.
    let second = queues.enqueue(&d, Bytes::from_static(b"during")).await.unwrap();
    assert!(second > first);
    let oldest = "0-0";
    assert!(
        !outbox
            .finish_handoff(&d.identity_key, &d.device_id, oldest)
            .await
            .unwrap(),
        "not empty"
    );
    for m in queues.read(&d, None, 10).await.unwrap() {
        queues.ack(&d, m.id).await.unwrap();
    }
    assert!(
        outbox
            .finish_handoff(&d.identity_key, &d.device_id, oldest)
            .await
            .unwrap()
    );
    assert!(matches!(
        queues.enqueue(&d, Bytes::from_static(b"after")).await,
        Err(MessagingError::UnknownDevice)
    ));
}

/// A router of deployment `here.test` with one peer, over the test cluster.
struct Routing {
    local: Arc<dyn QueueBackend>,
    keys: RedisKeyStore,
    outbox: Arc<Outbox>,
    peer: String,
    metrics: Arc<Metrics>,
    router: FederatedQueues,
}

async fn routing(presence: Arc<dyn Presence>) -> Routing {
    let redis = tassis_redis::testing::connect().await;
    let local: Arc<dyn QueueBackend> = Arc::new(RedisQueues::new(redis.clone(), retention()).await.unwrap());
    let outbox = Arc::new(Outbox::new(redis.clone(), 10));
    let (peer, metrics) = (peer(), Metrics::new(&prometheus::Registry::new()));
    let fed = Federation {
        name: "here.test".into(),
        presence,
        outbox: outbox.clone(),
        metrics: metrics.clone(),
    };
    let router = FederatedQueues::new(local.clone(), fed, HashSet::from([peer.clone()]));
    Routing {
        local,
        keys: RedisKeyStore::new(redis),
        outbox,
        peer,
        metrics,
        router,
    }
}

#[tokio::test]
async fn sends_go_local_first_then_by_the_directory() {
    let presence = Arc::new(RedisPresence::new(tassis_redis::testing::connect().await));
    let Routing {
        local,
        keys,
        outbox,
        peer,
        metrics,
        router,
    } = routing(presence.clone()).await;

    // Registered here: the local queue, whatever the directory says.
    let here = device();
    register(&keys, &here).await;
    presence
        .claim(&here.identity_key, &here.device_id, &peer)
        .await
        .unwrap();
    router.enqueue(&here, Bytes::from_static(b"local")).await.unwrap();
    assert_eq!(local.depth(&here).await.unwrap(), 1);

    // Homed at the peer: the outbox, as a ForwardedMessage.
    let there = device();
    presence
        .claim(&there.identity_key, &there.device_id, &peer)
        .await
        .unwrap();
    router.enqueue(&there, Bytes::from_static(b"remote")).await.unwrap();
    let p = partition(&there.identity_key, &there.device_id);
    let head = outbox.head(&peer, p, 10).await.unwrap();
    assert_eq!(head.len(), 1);
    assert_eq!(head[0].item, message(&there, "remote"));
    assert_eq!(local.depth(&there).await.unwrap(), 0);
    assert_eq!(metrics.queued.with_label_values(&[peer.as_str()]).get(), 1);

    // Homed at a deployment that is not a peer: unreachable from here, nothing queued anywhere.
    let stray = device();
    presence
        .claim(&stray.identity_key, &stray.device_id, "stranger.test")
        .await
        .unwrap();
    assert!(matches!(
        router.enqueue(&stray, Bytes::from_static(b"?")).await,
        Err(MessagingError::UnknownDevice)
    ));
    let p = partition(&stray.identity_key, &stray.device_id);
    assert_eq!(outbox.len("stranger.test", p).await.unwrap(), 0);
    assert_eq!(
        metrics
            .dropped
            .with_label_values(&["stranger.test", "not_a_peer"])
            .get(),
        1
    );
    // Registered nowhere.
    let nobody = device();
    assert!(matches!(
        router.enqueue(&nobody, Bytes::from_static(b"?")).await,
        Err(MessagingError::UnknownDevice)
    ));
}

#[tokio::test]
async fn with_the_static_directory_everything_is_local() {
    let presence = Arc::new(StaticPresence {
        name: "here.test".into(),
    });
    let Routing {
        local,
        keys,
        outbox,
        peer,
        router,
        ..
    } = routing(presence.clone()).await;
    let here = device();
    register(&keys, &here).await;
    router.enqueue(&here, Bytes::from_static(b"local")).await.unwrap();
    assert_eq!(local.depth(&here).await.unwrap(), 1);
    // Not registered here is not registered anywhere: nothing goes to the outbox.
    let other = device();
    assert!(matches!(
        router.enqueue(&other, Bytes::from_static(b"?")).await,
        Err(MessagingError::UnknownDevice)
    ));
    assert_eq!(
        outbox
            .len(&peer, partition(&other.identity_key, &other.device_id))
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        presence
            .claim(&here.identity_key, &here.device_id, "elsewhere")
            .await
            .unwrap(),
        None
    );
    assert!(!presence.is_federated());
}

#[tokio::test]
async fn forwarders_count_each_other_by_heartbeat() {
    let outbox = Outbox::new(tassis_redis::testing::connect().await, 10);
    let (one, two) = (peer(), peer()); // unique owner ids
    let ttl = Duration::from_secs(30);
    let n = outbox.heartbeat(&one, ttl).await.unwrap();
    assert_eq!(outbox.heartbeat(&two, ttl).await.unwrap(), n + 1);
    assert_eq!(
        outbox.heartbeat(&one, ttl).await.unwrap(),
        n + 1,
        "a heartbeat again is the same member"
    );
    outbox.leave(&two).await.unwrap();
    assert_eq!(outbox.heartbeat(&one, ttl).await.unwrap(), n);
    outbox.leave(&one).await.unwrap();
    // A member silent for longer than the ttl is forgotten (the time must pass: it is what is
    // tested). Only this test heartbeats into this cluster, so `one` is then alone.
    outbox.heartbeat(&two, ttl).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(outbox.heartbeat(&one, Duration::from_millis(20)).await.unwrap(), 1);
    outbox.leave(&one).await.unwrap();
}
