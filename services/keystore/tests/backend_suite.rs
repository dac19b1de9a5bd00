//! The keystore backend behaviour suite. Every case is written once, generic over a backend
//! factory, and instantiated per backend by `backend_suite!` so the embedded store and Redis are
//! held to exactly the same semantics.

use std::sync::Arc;

use bytes::Bytes;
use tassis_keystore::backend::{PreKeyBundle, RegisterLimits};
use tassis_keystore::{KeyBackend, KeystoreError, MemoryKeyStore, RedisKeyStore};

const LIMITS: RegisterLimits = RegisterLimits {
    max_devices_per_identity: 3,
    max_one_time_keys_per_device: 10,
};

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

/// A fresh random 32-byte identity key, so cases never see each other's data.
fn ik() -> Bytes {
    Bytes::from(rand::random::<[u8; 32]>().to_vec())
}

fn keys(list: &[&str]) -> Vec<Bytes> {
    list.iter().map(|k| b(k)).collect()
}

async fn otk_of(be: &dyn KeyBackend, id: &Bytes) -> Vec<PreKeyBundle> {
    be.request_pre_keys(id, &[]).await.unwrap()
}

pub async fn append_when_signed_prekey_matches(be: Arc<dyn KeyBackend>) {
    let id = ik();
    let out = be
        .register(&id, &b("d1"), b("spk"), keys(&["a", "b"]), LIMITS)
        .await
        .unwrap();
    assert!(!out.replaced);
    assert_eq!(out.one_time_pre_keys, 2);
    let out = be
        .register(&id, &b("d1"), b("spk"), keys(&["c"]), LIMITS)
        .await
        .unwrap();
    assert!(!out.replaced);
    assert_eq!(out.one_time_pre_keys, 3);
    // Most recently registered first.
    for want in ["c", "b", "a", ""] {
        let got = otk_of(&*be, &id).await;
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].signed_pre_key, b("spk"));
        assert_eq!(got[0].one_time_pre_key, b(want));
    }
}

pub async fn replace_when_signed_prekey_differs(be: Arc<dyn KeyBackend>) {
    let id = ik();
    be.register(&id, &b("d1"), b("spk1"), keys(&["a", "b"]), LIMITS)
        .await
        .unwrap();
    let out = be
        .register(&id, &b("d1"), b("spk2"), keys(&["x"]), LIMITS)
        .await
        .unwrap();
    assert!(out.replaced);
    assert_eq!(out.one_time_pre_keys, 1);
    let got = otk_of(&*be, &id).await;
    assert_eq!(got[0].signed_pre_key, b("spk2"));
    assert_eq!(got[0].one_time_pre_key, b("x"));
    assert_eq!(otk_of(&*be, &id).await[0].one_time_pre_key, Bytes::new());
}

pub async fn known_devices_are_skipped_and_sorted(be: Arc<dyn KeyBackend>) {
    let id = ik();
    for d in ["d3", "d1", "d2"] {
        be.register(&id, &b(d), b(&format!("spk-{d}")), keys(&[&format!("k-{d}")]), LIMITS)
            .await
            .unwrap();
    }
    let got = be.request_pre_keys(&id, &[b("d2")]).await.unwrap();
    let ids: Vec<_> = got.iter().map(|p| p.device_id.clone()).collect();
    assert_eq!(ids, vec![b("d1"), b("d3")]);
    assert_eq!(got[0].one_time_pre_key, b("k-d1"));
    // d2 still has its key: it was not consumed.
    let st = be.device_status(&id, &b("d2")).await.unwrap();
    assert_eq!(st.one_time_pre_keys, 1);
    let all_known = be.request_pre_keys(&id, &[b("d1"), b("d2"), b("d3")]).await.unwrap();
    assert!(all_known.is_empty());
}

pub async fn unregister_and_unknown_identity(be: Arc<dyn KeyBackend>) {
    let id = ik();
    assert!(matches!(
        be.request_pre_keys(&id, &[]).await,
        Err(KeystoreError::UnknownIdentity)
    ));
    be.register(&id, &b("d1"), b("spk"), keys(&["a"]), LIMITS)
        .await
        .unwrap();
    assert!(be.device_status(&id, &b("d1")).await.unwrap().registered);
    assert!(be.unregister(&id, &b("d1")).await.unwrap());
    assert!(!be.unregister(&id, &b("d1")).await.unwrap());
    let st = be.device_status(&id, &b("d1")).await.unwrap();
    assert!(!st.registered);
    assert_eq!(st.one_time_pre_keys, 0);
    // No device left: the identity is unknown again.
    assert!(matches!(
        be.request_pre_keys(&id, &[]).await,
        Err(KeystoreError::UnknownIdentity)
    ));
    // Re-registering starts from nothing.
    let out = be.register(&id, &b("d1"), b("spk"), vec![], LIMITS).await.unwrap();
    assert!(!out.replaced);
    assert_eq!(otk_of(&*be, &id).await[0].one_time_pre_key, Bytes::new());
}

pub async fn limits_refuse_without_change(be: Arc<dyn KeyBackend>) {
    let id = ik();
    for d in ["a", "b", "c"] {
        be.register(&id, &b(d), b("spk"), vec![], LIMITS).await.unwrap();
    }
    let e = be.register(&id, &b("d"), b("spk"), vec![], LIMITS).await.unwrap_err();
    assert!(matches!(e, KeystoreError::InvalidRequest(_)), "{e:?}");
    assert!(!be.device_status(&id, &b("d")).await.unwrap().registered);
    // An existing device may still re-register.
    be.register(&id, &b("a"), b("spk"), keys(&["1"; 10]), LIMITS)
        .await
        .unwrap();
    let e = be
        .register(&id, &b("a"), b("spk"), keys(&["2"]), LIMITS)
        .await
        .unwrap_err();
    assert!(matches!(e, KeystoreError::InvalidRequest(_)), "{e:?}");
    assert_eq!(be.device_status(&id, &b("a")).await.unwrap().one_time_pre_keys, 10);
}

pub async fn concurrent_fetches_never_share_a_key(be: Arc<dyn KeyBackend>) {
    let id = ik();
    let ks: Vec<String> = (0..10).map(|i| format!("k{i}")).collect();
    let refs: Vec<&str> = ks.iter().map(|s| s.as_str()).collect();
    be.register(&id, &b("d1"), b("spk"), keys(&refs), LIMITS).await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let be = be.clone();
        let id = id.clone();
        tasks.push(tokio::spawn(
            async move { be.request_pre_keys(&id, &[]).await.unwrap() },
        ));
    }
    let mut got = Vec::new();
    for t in tasks {
        got.push(t.await.unwrap()[0].one_time_pre_key.clone());
    }
    let nonempty: std::collections::HashSet<_> = got.iter().filter(|k| !k.is_empty()).cloned().collect();
    assert_eq!(nonempty.len(), 10, "each key handed out exactly once");
    assert_eq!(got.iter().filter(|k| k.is_empty()).count(), 6);
}

pub async fn binary_ids_never_mix(be: Arc<dyn KeyBackend>) {
    // Bytes that are special in Redis key names ('}' ends a hash tag) or in our member encoding
    // (':' and ';'), NUL, and a device id that is a prefix of another.
    let mut raw = rand::random::<[u8; 32]>();
    raw[..4].copy_from_slice(b"}{:;");
    let id = Bytes::from(raw.to_vec());
    let devs = [
        Bytes::from_static(b"a"),
        Bytes::from_static(b"a:"),
        Bytes::from_static(b"\0;}"),
        Bytes::from_static(b"ab"),
    ];
    for (i, d) in devs.iter().enumerate() {
        let ks: Vec<Bytes> = (0..=i).map(|k| Bytes::from(format!("{i}-{k}"))).collect();
        be.register(&id, d, Bytes::from(vec![i as u8; 3]), ks, LIMITS_WIDE)
            .await
            .unwrap();
    }
    for (i, d) in devs.iter().enumerate() {
        assert_eq!(
            be.device_status(&id, d).await.unwrap().one_time_pre_keys,
            i as u32 + 1,
            "{d:?}"
        );
    }
    let got = be.request_pre_keys(&id, &[]).await.unwrap();
    let mut want: Vec<_> = devs.to_vec();
    want.sort();
    assert_eq!(got.iter().map(|p| p.device_id.clone()).collect::<Vec<_>>(), want);
    for p in &got {
        let i = devs.iter().position(|d| *d == p.device_id).unwrap();
        assert_eq!(p.signed_pre_key, Bytes::from(vec![i as u8; 3]));
        assert_eq!(
            p.one_time_pre_key,
            Bytes::from(format!("{i}-{i}")),
            "newest key of {:?}",
            p.device_id
        );
    }
    // Unregistering "a" leaves "a:" and "ab" (whose hex starts with a's) untouched.
    assert!(be.unregister(&id, &devs[0]).await.unwrap());
    assert_eq!(be.device_status(&id, &devs[1]).await.unwrap().one_time_pre_keys, 1);
    assert_eq!(be.device_status(&id, &devs[3]).await.unwrap().one_time_pre_keys, 3);
}

const LIMITS_WIDE: RegisterLimits = RegisterLimits {
    max_devices_per_identity: 8,
    max_one_time_keys_per_device: 100,
};

/// Instantiates every case for one backend factory (an async expression yielding
/// `Arc<dyn KeyBackend>`).
#[macro_export]
macro_rules! backend_suite {
    ($modname:ident, $factory:expr) => {
        mod $modname {
            use super::*;
            macro_rules! case {
                ($name:ident) => {
                    #[tokio::test]
                    async fn $name() {
                        let be: Arc<dyn KeyBackend> = $factory.await;
                        super::$name(be).await;
                    }
                };
            }
            case!(append_when_signed_prekey_matches);
            case!(replace_when_signed_prekey_differs);
            case!(known_devices_are_skipped_and_sorted);
            case!(unregister_and_unknown_identity);
            case!(limits_refuse_without_change);
            case!(concurrent_fetches_never_share_a_key);
            case!(binary_ids_never_mix);
        }
    };
}

backend_suite!(memory, async { Arc::new(MemoryKeyStore::new()) as Arc<dyn KeyBackend> });

// The same cases on a real 3-master Redis Cluster (TASSIS_TEST_REDIS_URL, or one started for this
// test process by scripts/redis-cluster.sh).
backend_suite!(redis, async {
    Arc::new(RedisKeyStore::new(tassis_redis::testing::connect().await)) as Arc<dyn KeyBackend>
});

/// Cluster-specific behaviour of the Redis key store.
mod redis_cluster {
    use super::*;
    use tassis_redis::fred::interfaces::{ClientLike, ClusterInterface, LuaInterface};
    use tassis_redis::fred::types::config::Server;
    use tassis_redis::fred::types::{ClusterHash, CustomCommand};
    use tassis_redis::keys;

    /// (master address, slot ranges) from CLUSTER NODES, read from the server rather than from
    /// the client's routing table so the test checks Redis's own view.
    async fn masters(redis: &tassis_redis::Redis) -> Vec<(Server, Vec<(u16, u16)>)> {
        let text: String = redis.pool().cluster_nodes().await.unwrap();
        let mut out = Vec::new();
        for line in text.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 8 || !f[2].split(',').any(|x| x == "master") {
                continue;
            }
            let addr = f[1].split('@').next().unwrap();
            let (host, port) = addr.rsplit_once(':').unwrap();
            let ranges = f[8..]
                .iter()
                .filter(|r| !r.starts_with('['))
                .map(|r| match r.split_once('-') {
                    Some((a, b)) => (a.parse().unwrap(), b.parse().unwrap()),
                    None => (r.parse().unwrap(), r.parse().unwrap()),
                })
                .collect();
            out.push((Server::new(host, port.parse().unwrap()), ranges));
        }
        out
    }

    #[tokio::test]
    async fn identities_spread_over_every_master() {
        let redis = tassis_redis::testing::connect().await;
        let be = RedisKeyStore::new(redis.clone());
        let masters = masters(&redis).await;
        assert_eq!(masters.len(), 3, "a 3-master cluster: {masters:?}");
        let mut per_master = vec![0usize; masters.len()];
        for _ in 0..60 {
            let id = ik();
            be.register(&id, &b("d1"), b("spk"), keys(&["k"]), LIMITS)
                .await
                .unwrap();
            let key = keys::keystore_devices(&id);
            let slot: u16 = redis.pool().cluster_keyslot(key.as_str()).await.unwrap();
            assert_eq!(slot, keys::hash_slot(&key), "client and server agree on the slot");
            assert_eq!(slot, keys::hash_slot(&keys::keystore_one_time_keys(&id)));
            let owner = masters
                .iter()
                .position(|(_, ranges)| ranges.iter().any(|(a, b)| (*a..=*b).contains(&slot)))
                .expect("every slot has an owner");
            // The registration really lives on that master.
            let exists: i64 = redis
                .pool()
                .next()
                .with_cluster_node(&masters[owner].0)
                .custom(
                    CustomCommand::new_static("EXISTS", ClusterHash::FirstKey, false),
                    vec![key],
                )
                .await
                .unwrap();
            assert_eq!(exists, 1);
            per_master[owner] += 1;
        }
        assert!(
            per_master.iter().all(|n| *n > 0),
            "identities per master: {per_master:?}"
        );
    }

    #[tokio::test]
    async fn works_after_script_flush() {
        let redis = tassis_redis::testing::connect().await;
        let be = RedisKeyStore::new(redis.clone());
        let id = ik();
        be.register(&id, &b("d1"), b("spk"), keys(&["a", "b"]), LIMITS)
            .await
            .unwrap();
        // Every node forgets every script (as after a restart or failover): EVALSHA now answers
        // NOSCRIPT and the backend must fall back to EVAL.
        redis.pool().script_flush_cluster(false).await.unwrap();
        assert_eq!(otk_of(&be, &id).await[0].one_time_pre_key, b("b"));
        redis.pool().script_flush_cluster(false).await.unwrap();
        let out = be
            .register(&id, &b("d1"), b("spk"), keys(&["c"]), LIMITS)
            .await
            .unwrap();
        assert_eq!(out.one_time_pre_keys, 2);
        redis.pool().script_flush_cluster(false).await.unwrap();
        assert_eq!(be.device_status(&id, &b("d1")).await.unwrap().one_time_pre_keys, 2);
        redis.pool().script_flush_cluster(false).await.unwrap();
        assert!(be.unregister(&id, &b("d1")).await.unwrap());
    }
}
