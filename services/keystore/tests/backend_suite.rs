//! The keystore backend behaviour suite. Every case is written once, generic over a backend
//! factory, and instantiated per backend by `backend_suite!` so the embedded store and Redis are
//! held to exactly the same semantics.

use std::sync::Arc;

use bytes::Bytes;
use tassis_keystore::backend::{PreKeyBundle, RegisterLimits};
use tassis_keystore::{KeyBackend, KeystoreError, MemoryKeyStore};

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
        }
    };
}

backend_suite!(memory, async { Arc::new(MemoryKeyStore::new()) as Arc<dyn KeyBackend> });
