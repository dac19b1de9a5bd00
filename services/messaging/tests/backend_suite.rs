//! The messaging backend behaviour suite. Every case is written once against a [`Fixture`] and
//! instantiated per backend by `backend_suite!`, so the embedded queues and Redis are held to the
//! same semantics.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use parking_lot::Mutex;
use tassis_keystore::backend::RegisterLimits;
use tassis_keystore::{KeyBackend, RedisKeyStore};
use tassis_messaging::RedisQueues;
use tassis_messaging::backend::Retention;
use tassis_messaging::{DeviceAddress, MemoryQueues, MessageId, MessagingError, QueueBackend, Registrations};

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

pub async fn read_after_compares_ids_as_numbers(f: Fixture) {
    let d = device();
    (f.register)(d.clone()).await;
    let a = f.queues.enqueue(&d, payload(0)).await.unwrap();
    let b = f.queues.enqueue(&d, payload(1)).await.unwrap();
    // "9-999" sorts after every real id as a string, before every one as a number.
    let all = f.queues.read(&d, Some(MessageId::new(9, 999)), 10).await.unwrap();
    assert_eq!(all.iter().map(|m| m.id).collect::<Vec<_>>(), vec![a, b]);
    // Same millisecond, larger sequence ("x-10" < "x-9" as strings).
    let after_a = f.queues.read(&d, Some(MessageId::new(a.ms, a.seq)), 10).await.unwrap();
    assert_eq!(after_a.iter().map(|m| m.id).collect::<Vec<_>>(), vec![b]);
    assert!(f.queues.read(&d, Some(b), 10).await.unwrap().is_empty());
    assert!(
        f.queues
            .read(&d, Some(MessageId::new(u64::MAX, u64::MAX)), 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(f.queues.read(&d, None, 0).await.unwrap().is_empty());
    assert!(!f.queues.ack(&d, MessageId::new(b.ms, b.seq + 1)).await.unwrap());
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
            case!(read_after_compares_ids_as_numbers);
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

/// Registrations in the keystore's Redis hash, exactly as production writes them: the enqueue
/// Registers `d` in the keystore's Redis hash, as production does (the enqueue script checks it).
async fn register_in(keystore: &RedisKeyStore, d: &DeviceAddress) {
    let limits = RegisterLimits {
        max_devices_per_identity: 8,
        max_one_time_keys_per_device: 8,
    };
    keystore
        .register(
            &d.identity_key,
            &d.device_id,
            Bytes::from_static(b"spk"),
            vec![],
            limits,
        )
        .await
        .unwrap();
}

/// script checks that hash.
async fn redis_fixture(retention: Retention) -> (Fixture, tassis_redis::Redis, Arc<RedisKeyStore>) {
    let redis = tassis_redis::testing::connect().await;
    let keystore = Arc::new(RedisKeyStore::new(redis.clone()));
    let queues = RedisQueues::new(redis.clone(), retention).await.unwrap();
    let ks = keystore.clone();
    let fixture = Fixture {
        queues: Arc::new(queues),
        register: Box::new(move |d| {
            let ks = ks.clone();
            Box::pin(async move { register_in(&ks, &d).await })
        }),
    };
    (fixture, redis, keystore)
}

// The same cases on a real 3-master Redis Cluster (TASSIS_TEST_REDIS_URL, or one started for this
// test process by scripts/redis-cluster.sh).
backend_suite!(redis, async { redis_fixture(RETENTION).await.0 });

/// Behaviour specific to the Redis queues.
mod redis_cluster {
    use super::*;
    use tassis_messaging::Watch;
    use tassis_redis::fred::interfaces::{ClientLike, ClusterInterface, LuaInterface};
    use tassis_redis::fred::types::config::Server;
    use tassis_redis::fred::types::{ClusterHash, CustomCommand, Value};
    use tassis_redis::keys;

    async fn announced(w: &mut Watch) -> bool {
        tokio::time::timeout(Duration::from_secs(10), w.changed())
            .await
            .unwrap_or(false)
    }

    /// Subscribers of a shard channel, asked on the node owning its slot.
    async fn shard_subscribers(redis: &tassis_redis::Redis, channel: &str) -> i64 {
        let cmd = CustomCommand::new_static("PUBSUB", ClusterHash::Custom(keys::hash_slot(channel)), false);
        let reply: Value = redis.pool().custom(cmd, vec!["SHARDNUMSUB", channel]).await.unwrap();
        reply.into_array().get(1).and_then(Value::as_i64).unwrap()
    }

    #[tokio::test]
    async fn age_limit_drops_old_messages() {
        let retention = Retention {
            max_queue_len: 100,
            max_age: Duration::from_secs(1),
        };
        let (f, _, _) = redis_fixture(retention).await;
        let d = device();
        (f.register)(d.clone()).await;
        f.queues.enqueue(&d, payload(0)).await.unwrap();
        assert_eq!(f.queues.read(&d, None, 10).await.unwrap().len(), 1);
        // Age is wall-clock time on the server: there is no event to wait for instead.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(
            f.queues.read(&d, None, 10).await.unwrap().is_empty(),
            "expired message still read"
        );
        assert_eq!(f.queues.depth(&d).await.unwrap(), 0);
        // A new message trims the old one for good, and is itself kept.
        let id = f.queues.enqueue(&d, payload(1)).await.unwrap();
        let left = f.queues.read(&d, None, 10).await.unwrap();
        assert_eq!(left.iter().map(|m| m.id).collect::<Vec<_>>(), vec![id]);
    }

    #[tokio::test]
    async fn unregistered_after_unregister() {
        let (f, _, keystore) = redis_fixture(RETENTION).await;
        let d = device();
        (f.register)(d.clone()).await;
        f.queues.enqueue(&d, payload(0)).await.unwrap();
        keystore.unregister(&d.identity_key, &d.device_id).await.unwrap();
        let e = f.queues.enqueue(&d, payload(1)).await.unwrap_err();
        assert!(matches!(e, MessagingError::UnknownDevice), "{e:?}");
        // Queued messages are kept until acked or expired.
        assert_eq!(f.queues.depth(&d).await.unwrap(), 1);
    }

    #[tokio::test]
    async fn works_after_script_flush() {
        let (f, redis, _) = redis_fixture(RETENTION).await;
        let d = device();
        (f.register)(d.clone()).await;
        redis.pool().script_flush_cluster(false).await.unwrap();
        f.queues.enqueue(&d, payload(0)).await.unwrap();
        redis.pool().script_flush_cluster(false).await.unwrap();
        assert_eq!(f.queues.depth(&d).await.unwrap(), 1);
        redis.pool().script_flush_cluster(false).await.unwrap();
        let e = f.queues.enqueue(&device(), payload(0)).await.unwrap_err();
        assert!(matches!(e, MessagingError::UnknownDevice), "{e:?}");
    }

    #[tokio::test]
    async fn one_subscription_per_device_released_by_the_last_watch() {
        let (f, redis, _) = redis_fixture(RETENTION).await;
        let d = device();
        (f.register)(d.clone()).await;
        let channel = keys::notify_channel(&d.identity_key, &d.device_id);
        let mut w1 = f.queues.watch(&d).await.unwrap();
        let mut w2 = f.queues.watch(&d).await.unwrap();
        assert_eq!(
            shard_subscribers(&redis, &channel).await,
            1,
            "one server subscription for both watches"
        );
        f.queues.enqueue(&d, payload(0)).await.unwrap();
        assert!(announced(&mut w1).await && announced(&mut w2).await);
        drop(w1);
        f.queues.enqueue(&d, payload(1)).await.unwrap();
        assert!(announced(&mut w2).await, "the remaining watch still hears");
        assert_eq!(shard_subscribers(&redis, &channel).await, 1);
        drop(w2);
        // Unsubscribing runs in the background once the last watch is gone.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while shard_subscribers(&redis, &channel).await != 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "still subscribed after the last watch"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // And watching again subscribes again.
        let mut w3 = f.queues.watch(&d).await.unwrap();
        f.queues.enqueue(&d, payload(2)).await.unwrap();
        assert!(announced(&mut w3).await);
    }

    #[tokio::test]
    async fn watchers_are_woken_and_resubscribed_after_a_reconnect() {
        let redis = tassis_redis::testing::connect().await;
        let keystore = RedisKeyStore::new(redis.clone());
        let queues = RedisQueues::new(redis.clone(), RETENTION).await.unwrap();
        // Devices on (very likely) every master, so every subscriber connection matters.
        let mut devices = Vec::new();
        let mut watches = Vec::new();
        for _ in 0..12 {
            let d = device();
            register_in(&keystore, &d).await;
            watches.push(queues.watch(&d).await.unwrap());
            devices.push(d);
        }
        // Kill the subscriber's connections on every master, as a network blip or a node restart
        // would.
        let name = queues.subscriber_name();
        let nodes: String = redis.pool().cluster_nodes().await.unwrap();
        let mut killed = 0;
        for line in nodes.lines().filter(|l| l.contains("master")) {
            let addr = line.split_whitespace().nth(1).unwrap().split('@').next().unwrap();
            let (host, port) = addr.rsplit_once(':').unwrap();
            let node = redis
                .pool()
                .next()
                .with_cluster_node(Server::new(host, port.parse().unwrap()));
            let list: String = node
                .custom(
                    CustomCommand::new_static("CLIENT", ClusterHash::Random, false),
                    vec!["LIST"],
                )
                .await
                .unwrap();
            for client in list
                .lines()
                .filter(|l| l.split(' ').any(|f| f == format!("name={name}")))
            {
                let id = client
                    .split(' ')
                    .find_map(|f| f.strip_prefix("id="))
                    .unwrap()
                    .to_string();
                let n: i64 = node
                    .custom(
                        CustomCommand::new_static("CLIENT", ClusterHash::Random, false),
                        vec!["KILL", "ID", &id],
                    )
                    .await
                    .unwrap();
                killed += n;
            }
        }
        assert!(killed > 0, "found no subscriber connection named {name}");
        // Every watcher is woken (a notification may have been lost while disconnected)...
        for w in &mut watches {
            assert!(announced(w).await, "watch not woken after the reconnect");
        }
        // ...and every subscription is back on the server (asked on each channel's node: a
        // notification alone could be a left-over wake-up from the reconnect)...
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        for d in &devices {
            let channel = keys::notify_channel(&d.identity_key, &d.device_id);
            while shard_subscribers(&redis, &channel).await != 1 {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "{channel} not re-subscribed after the reconnect"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        // ...so new messages are announced again.
        for (d, w) in devices.iter().zip(&mut watches) {
            queues.enqueue(d, payload(0)).await.unwrap();
            assert!(announced(w).await, "no notification after the reconnect");
        }
    }

    /// With replica acks required, an enqueue on masters without replicas fails with
    /// `unavailable` instead of acking a message a failover could lose; with 0 required it is
    /// acked. (With real replicas: `replica_acks_on_a_cluster_with_replicas` below, and
    /// services/tassis/tests/faults.rs, Redis master failover.)
    #[tokio::test]
    async fn replica_acks_refuse_what_no_replica_has() {
        let (f, redis, _ks) = redis_fixture(RETENTION).await;
        let d = device();
        (f.register)(d.clone()).await;
        f.queues.enqueue(&d, payload(1)).await.unwrap();
        let strict = RedisQueues::new(redis, RETENTION)
            .await
            .unwrap()
            .with_replica_acks(Some((1, Duration::from_millis(50))));
        match strict.enqueue(&d, payload(2)).await {
            Err(tassis_messaging::MessagingError::Unavailable(why)) => assert!(why.contains("0 of the 1"), "{why}"),
            other => panic!("expected unavailable, got {other:?}"),
        }
    }

    /// On a cluster whose masters have one replica each (started for this test): with 1 replica
    /// ack required, enqueues on every master succeed and the message is then on the replica
    /// (read there, READONLY); with 2 required, more than any master has, the enqueue fails
    /// cleanly with `unavailable` naming how many replicas it reached — and the message, written
    /// on the master, is still delivered (at-least-once: the sender will retry it).
    #[tokio::test]
    async fn replica_acks_on_a_cluster_with_replicas() {
        let cluster = tassis_redis::testing::OwnCluster::start(&["--replicas", "1"]);
        let redis = cluster.connect().await;
        let keystore = RedisKeyStore::new(redis.clone());
        let register = |d: DeviceAddress| {
            let keystore = &keystore;
            async move {
                register_in(keystore, &d).await;
            }
        };
        let one = RedisQueues::new(redis.clone(), RETENTION)
            .await
            .unwrap()
            .with_replica_acks(Some((1, Duration::from_secs(3))));
        // Devices until every master has served one.
        let mut masters = HashSet::new();
        while masters.len() < 3 {
            let d = device();
            register(d.clone()).await;
            let id = one.enqueue(&d, payload(1)).await.expect("acked by one replica");
            let queue = keys::queue(&d.identity_key, &d.device_id);
            let master = cluster.master_of(keys::hash_slot(&queue));
            masters.insert(master);
            // WAIT returned: the master's replica has the entry.
            let replica = replica_of(master).expect("a replica of the master");
            let entries = on_replica(replica, &format!("READONLY\nXRANGE {queue} - +\n"));
            assert!(
                entries.contains(&id.to_string()),
                "{id} not on replica {replica}: {entries}"
            );
        }

        let two = RedisQueues::new(redis.clone(), RETENTION)
            .await
            .unwrap()
            .with_replica_acks(Some((2, Duration::from_millis(200))));
        let d = device();
        register(d.clone()).await;
        match two.enqueue(&d, payload(2)).await {
            Err(MessagingError::Unavailable(why)) => assert!(why.contains("reached 1 of the 2"), "{why}"),
            other => panic!("expected unavailable, got {other:?}"),
        }
        let read = one.read(&d, None, 10).await.unwrap();
        assert_eq!(
            read.iter().map(|m| m.payload.clone()).collect::<Vec<_>>(),
            vec![payload(2)]
        );
    }

    /// The port of a replica of the master on `master`.
    fn replica_of(master: u16) -> Option<u16> {
        let info = tassis_redis::testing::cli(master, &["INFO", "replication"]);
        info.lines()
            .find(|l| l.starts_with("slave0:"))
            .and_then(|l| l.split(',').find_map(|f| f.strip_prefix("port=")))
            .and_then(|p| p.parse().ok())
    }

    /// `commands` (one per line) run by redis-cli on one connection to the node on `port`.
    fn on_replica(port: u16, commands: &str) -> String {
        use std::io::Write;
        let mut child = std::process::Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("redis-cli");
        child.stdin.take().unwrap().write_all(commands.as_bytes()).unwrap();
        String::from_utf8_lossy(&child.wait_with_output().unwrap().stdout).into_owned()
    }
}
