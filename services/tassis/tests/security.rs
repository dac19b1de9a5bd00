//! The threat model's claims that no other test file pins down (docs/security.md): a captured
//! login cannot be replayed, a device never gets or acks another device's messages, and nothing
//! about an anonymous sender reaches the server's output or the recipient.

mod common;

use bytes::Bytes;
use common::*;
use futures::{SinkExt, StreamExt};
use tassis_client::frame;
use tassis_client::proto::{OutboundMessage, message::Payload};
use tassis_client::{Identity, ServerEvent};
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// A login observed on the wire (its AuthResponse) is useless on any other connection: each
/// connection has its own nonce, and the signature covers it.
#[tokio::test]
async fn captured_login_cannot_be_replayed() {
    let s = standalone(&[]);
    let id = Identity::generate_ed25519();
    let victim = anon(&s.ws_url()).await;
    let captured = frame::auth_response(&id, b"phone", victim.nonce());
    victim.request(Payload::AuthResponse(captured.clone())).await.unwrap();

    let attacker = anon(&s.ws_url()).await;
    assert_ne!(attacker.nonce(), victim.nonce(), "a fresh nonce per connection");
    let r = attacker
        .request(Payload::AuthResponse(captured))
        .await
        .and_then(frame::into_result);
    assert_eq!(err_name(r), "unauthorized");
    loop {
        if let ServerEvent::Closed { code, .. } = event(&attacker).await {
            assert_eq!(code, Some(1008), "a failed login closes the connection");
            break;
        }
    }
}

/// Messages go only to the device they are addressed to. Another device (of another identity,
/// or of the same one) gets none of them and cannot ack them away: acks name the acking
/// connection's own delivery sequence numbers.
#[tokio::test]
async fn a_device_never_gets_or_acks_another_devices_messages() {
    let s = standalone(&[]);
    let url = s.ws_url();
    let alice = Identity::generate_ed25519();
    let phone = registered(&url, alice.clone(), b"phone", 0).await;
    let laptop = registered(&url, alice.clone(), b"laptop", 0).await;
    let mallory = registered(&url, Identity::generate_ed25519(), b"m", 0).await;
    let sender = anon(&url).await;
    sender.send(phone.address(), b"for the phone".to_vec()).await.unwrap();

    let (seq, got) = recv(&phone.conn).await;
    assert_eq!(&got[..], b"for the phone");
    // The others try to ack the phone's delivery sequence (and its neighbours).
    for other in [&laptop, &mallory] {
        for s in seq.saturating_sub(2)..seq + 3 {
            other.conn.ack(s).await.unwrap();
        }
        assert_no_events(&other.conn).await;
    }
    // Still unacked: the phone gets it again at its next login.
    drop(phone);
    let phone = login(&url, &alice, b"phone").await;
    let (seq, again) = recv(&phone).await;
    assert_eq!(&again[..], b"for the phone");
    phone.ack(seq).await.unwrap();
}

/// What the recipient gets is the sealed payload byte for byte and nothing else, and the
/// server's output (at debug level) never names the sender's address.
#[tokio::test]
async fn nothing_about_the_sender_is_kept_or_passed_on() {
    let s = standalone(&["--log", "debug"]);
    let url = s.ws_url();
    let dev = registered(&url, Identity::generate_ed25519(), b"d", 0).await;

    let tcp = tokio::net::TcpStream::connect(s.listen).await.unwrap();
    let sender_addr = tcp.local_addr().unwrap().to_string();
    let (mut ws, _) = tokio_tungstenite::client_async(url.as_str(), tcp).await.unwrap();
    let sealed = Bytes::from_static(b"\x01sealed-sender envelope");
    let send = frame::message(
        7,
        Payload::OutboundMessage(OutboundMessage {
            to: Some(dev.address()),
            unidentified_sender_message: sealed.clone(),
        }),
    );
    ws.send(WsMessage::Binary(frame::encode(&send).into())).await.unwrap();
    // Configuration, AuthChallenge, then the Ack of sequence 7.
    loop {
        let Some(Ok(WsMessage::Binary(b))) = ws.next().await else {
            panic!("connection ended")
        };
        let m = frame::decode(&b).unwrap();
        if m.sequence == 7 {
            assert!(matches!(m.payload, Some(Payload::Ack(_))), "{m:?}");
            break;
        }
    }
    let (seq, got) = recv(&dev.conn).await;
    assert_eq!(got, sealed);
    dev.conn.ack(seq).await.unwrap();
    ws.close(None).await.unwrap();
    drop(dev);

    let out = s.output();
    assert!(out.contains("DEBUG"), "debug logging is on: {out}");
    assert!(
        !out.contains(&sender_addr),
        "the sender's address {sender_addr} is in the output:\n{out}"
    );
}
