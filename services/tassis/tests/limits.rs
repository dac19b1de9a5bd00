//! Every explicit size and count limit, seen from a client (docs/security.md#limits): each is set
//! low by its flag, the request at the limit passes, the one past it gets a clear protocol Error,
//! and nothing was half-applied. (Connections per gateway: connection.rs; frame size:
//! protocol.rs; queued messages per device: delivery.rs.)

mod common;

use bytes::Bytes;
use common::*;
use tassis_client::{ClientError, Identity};

fn description(e: ClientError) -> (String, String) {
    match e {
        ClientError::Server { name, description } => (name, description),
        other => panic!("expected a protocol Error, got {other:?}"),
    }
}

#[tokio::test]
async fn devices_per_identity() {
    let s = standalone(&["--max-devices-per-identity", "2"]);
    let id = Identity::generate_ed25519();
    let _a = registered(&s.ws_url(), id.clone(), b"a", 0).await;
    let _b = registered(&s.ws_url(), id.clone(), b"b", 0).await;
    let c = login(&s.ws_url(), &id, b"c").await;
    let (name, d) = description(c.register(spk(&id, b"c"), vec![]).await.unwrap_err());
    assert_eq!(name, "invalid_request");
    assert!(d.contains('2'), "the description names the limit: {d}");
    // The identity still has exactly its two devices.
    let fetched = anon(&s.ws_url())
        .await
        .request_pre_keys(id.public_key().to_vec(), vec![])
        .await;
    assert_eq!(
        prekey_ids(&fetched.unwrap()),
        vec![Bytes::from_static(b"a"), Bytes::from_static(b"b")]
    );
    // An existing device may re-register.
    let a = login(&s.ws_url(), &id, b"a").await;
    a.register(spk(&id, b"a"), vec![]).await.unwrap();
}

#[tokio::test]
async fn one_time_prekeys_per_device_and_per_register() {
    let s = standalone(&[
        "--max-one-time-keys-per-device",
        "5",
        "--max-one-time-keys-per-register",
        "3",
    ]);
    let id = Identity::generate_ed25519();
    let dev = registered(&s.ws_url(), id.clone(), b"d", 3).await;
    // 4 in one Register: refused whole.
    let (name, d) = description(
        dev.conn
            .register(spk(&id, b"d"), one_time_keys(b"d", 10..14))
            .await
            .unwrap_err(),
    );
    assert_eq!((name.as_str(), d.contains('3')), ("invalid_request", true), "{d}");
    // 3 + 2 = 5 fit; 3 + 3 would exceed 5: refused whole.
    dev.conn
        .register(spk(&id, b"d"), one_time_keys(b"d", 3..5))
        .await
        .unwrap();
    let e = dev.conn.register(spk(&id, b"d"), one_time_keys(b"d", 5..6)).await;
    assert_eq!(err_name(e), "invalid_request");
    // Exactly the 5 accepted keys are handed out, then none.
    let fetcher = anon(&s.ws_url()).await;
    let mut got = Vec::new();
    for _ in 0..6 {
        let k = fetcher
            .request_pre_keys(id.public_key().to_vec(), vec![])
            .await
            .unwrap();
        got.push(k[0].one_time_pre_key.clone());
    }
    let mut handed = got[..5].to_vec();
    handed.sort();
    assert_eq!(
        handed,
        one_time_keys(b"d", 0..5),
        "each accepted key once, in any order"
    );
    assert!(got[5].is_empty(), "no sixth one-time key");
}

#[tokio::test]
async fn key_sizes() {
    let s = standalone(&["--max-prekey-size", "64"]);
    let id = Identity::generate_ed25519();
    let c = login(&s.ws_url(), &id, b"d").await;
    for (spk, otk, ok) in [
        (vec![1u8; 64], vec![2u8; 64], true),
        (vec![1u8; 65], vec![2u8; 8], false),
        (vec![1u8; 8], vec![2u8; 65], false),
        (vec![], vec![], false),
    ] {
        let r = c.register(spk.clone(), vec![Bytes::from(otk.clone())]).await;
        match ok {
            true => r.unwrap(),
            false => assert_eq!(err_name(r), "invalid_request", "spk {} otk {}", spk.len(), otk.len()),
        }
    }
    // Identity keys are exactly 32 bytes; device ids 1..=64 bytes.
    let a = anon(&s.ws_url()).await;
    for bad in [vec![7u8; 31], vec![7u8; 33], vec![]] {
        assert_eq!(err_name(a.request_pre_keys(bad, vec![]).await), "invalid_identity_key");
    }
    let long_device = vec![b'x'; 65];
    let e = a.send(address(&id, &long_device), b"m".to_vec()).await;
    assert_eq!(err_name(e), "invalid_request");
}

#[tokio::test]
async fn message_size() {
    let s = standalone(&["--max-message-size", "1000"]);
    let dev = registered(&s.ws_url(), Identity::generate_ed25519(), b"d", 0).await;
    let a = anon(&s.ws_url()).await;
    a.send(dev.address(), vec![9u8; 1000]).await.unwrap();
    let (name, d) = description(a.send(dev.address(), vec![9u8; 1001]).await.unwrap_err());
    assert_eq!(name, "invalid_request");
    assert!(d.contains("1000"), "{d}");
    let (_, got) = recv(&dev.conn).await;
    assert_eq!(got.len(), 1000);
}
