//! `tassis-cli` end to end against the scripted server: keygen/pubkey, register, send, listen
//! (with acks), prekeys.

mod common;

use std::path::PathBuf;
use std::process::Output;

use bytes::Bytes;
use futures::StreamExt;
use prost::Message as _;
use tassis_client::Identity;
use tassis_client::proto::{Ack, Login, PreKey, PreKeys, message::Payload};

use common::*;

async fn cli(args: &[&str]) -> Output {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_tassis-cli"))
        .args(args)
        .env_remove("TASSIS_SERVER")
        .output()
        .await
        .unwrap();
    if !out.status.success() {
        panic!("tassis-cli {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    out
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn temp_key(name: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("tassis-cli-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    path
}

/// Accepts a login for `device`, checking what the server checks; returns the identity key.
async fn accept_login(ws: &mut Ws, device: &[u8]) -> Bytes {
    greet(ws, true).await;
    let msg = take(ws).await;
    let Some(Payload::AuthResponse(resp)) = msg.payload else {
        panic!("want authResponse")
    };
    let login = Login::decode(resp.login.clone()).unwrap();
    let address = login.address.unwrap();
    assert_eq!(&login.nonce[..], &NONCE);
    assert_eq!(&address.device_id[..], device);
    assert!(server_verifies(&address.identity_key, &resp.login, &resp.signature));
    put(ws, msg.sequence, Payload::Ack(Ack {})).await;
    address.identity_key
}

#[tokio::test]
async fn keygen_and_pubkey() {
    for scheme in ["ed25519", "curve25519"] {
        let path = temp_key(scheme);
        let printed = stdout(&cli(&["keygen", "--scheme", scheme, "--out", path.to_str().unwrap()]).await);
        let identity = Identity::from_hex(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(identity.scheme().as_str(), scheme);
        assert_eq!(printed.trim(), hex::encode(identity.public_key()));
        let again = stdout(&cli(&["pubkey", "--key", path.to_str().unwrap()]).await);
        assert_eq!(again.trim(), printed.trim());
        std::fs::remove_file(&path).unwrap();
    }
}

#[tokio::test]
async fn register_listen_send_prekeys() {
    let key = temp_key("flow");
    let public = stdout(&cli(&["keygen", "--scheme", "curve25519", "--out", key.to_str().unwrap()]).await);
    let public = public.trim().to_owned();
    let key = key.to_str().unwrap().to_owned();

    // register
    let expected = public.clone();
    let (url, server) = serve(move |mut ws| async move {
        let identity_key = accept_login(&mut ws, b"phone").await;
        assert_eq!(hex::encode(&identity_key), expected);
        let msg = take(&mut ws).await;
        let Some(Payload::Register(r)) = msg.payload else {
            panic!("want register")
        };
        assert_eq!(r.signed_pre_key.len(), 32);
        assert_eq!(r.one_time_pre_keys.len(), 3);
        assert!(r.one_time_pre_keys.iter().all(|k| k.len() == 32));
        put(&mut ws, msg.sequence, Payload::Ack(Ack {})).await;
        while ws.next().await.is_some() {}
    })
    .await;
    let out = cli(&[
        "register",
        "--server",
        &url,
        "--key",
        &key,
        "--device",
        "phone",
        "--one-time-keys",
        "3",
    ])
    .await;
    assert!(stdout(&out).contains("registered"));
    server.await.unwrap();

    // listen --count 2
    let (url, server) = serve(|mut ws| async move {
        accept_login(&mut ws, b"phone").await;
        put(&mut ws, 5, Payload::InboundMessage(Bytes::from_static(b"hello"))).await;
        put(&mut ws, 6, Payload::InboundMessage(Bytes::from_static(&[0x00, 0xff]))).await;
        for expected in [5, 6] {
            let ack = take(&mut ws).await;
            assert_eq!(ack.sequence, expected);
            assert!(matches!(ack.payload, Some(Payload::Ack(_))));
        }
        while ws.next().await.is_some() {}
    })
    .await;
    let out = cli(&[
        "listen", "--server", &url, "--key", &key, "--device", "phone", "--count", "2",
    ])
    .await;
    let text = stdout(&out);
    assert!(text.contains("#5 text \"hello\""), "{text}");
    assert!(text.contains("#6 hex 00ff"), "{text}");
    server.await.unwrap();

    // send (anonymous: no AuthResponse before the outboundMessage)
    let expected = public.clone();
    let (url, server) = serve(move |mut ws| async move {
        greet(&mut ws, false).await;
        let msg = take(&mut ws).await;
        assert_eq!(msg.sequence, 1);
        let Some(Payload::OutboundMessage(o)) = msg.payload else {
            panic!("want outboundMessage")
        };
        let to = o.to.unwrap();
        assert_eq!(hex::encode(&to.identity_key), expected);
        assert_eq!(&to.device_id[..], b"phone");
        assert_eq!(&o.unidentified_sender_message[..], b"hi there");
        put(&mut ws, msg.sequence, Payload::Ack(Ack {})).await;
        while ws.next().await.is_some() {}
    })
    .await;
    cli(&[
        "send", "--server", &url, "--to", &public, "--device", "phone", "--text", "hi there",
    ])
    .await;
    server.await.unwrap();

    // prekeys
    let expected = public.clone();
    let (url, server) = serve(move |mut ws| async move {
        greet(&mut ws, false).await;
        let msg = take(&mut ws).await;
        let Some(Payload::RequestPreKeys(r)) = msg.payload else {
            panic!("want requestPreKeys")
        };
        assert_eq!(hex::encode(&r.identity_key), expected);
        assert_eq!(r.known_device_ids, vec![Bytes::from_static(b"tablet")]);
        let pre_keys = vec![PreKey {
            device_id: "phone".into(),
            signed_pre_key: Bytes::from_static(&[0xab; 4]),
            one_time_pre_key: Bytes::new(),
        }];
        put(&mut ws, msg.sequence, Payload::PreKeys(PreKeys { pre_keys })).await;
        while ws.next().await.is_some() {}
    })
    .await;
    let out = cli(&["prekeys", "--server", &url, "--identity", &public, "--known", "tablet"]).await;
    let text = stdout(&out);
    assert!(
        text.contains("device \"phone\" signedPreKey abababab oneTimePreKey (none left)"),
        "{text}"
    );
    server.await.unwrap();

    std::fs::remove_file(&key).unwrap();
}
