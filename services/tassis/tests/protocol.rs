//! Every row of the operation table of docs/protocol.md, the access rules and the settled edge
//! cases, over real WebSockets against `tassis standalone`.

mod common;

use bytes::Bytes;
use common::*;
use prost::Message as _;
use tassis_client::proto::{
    Ack, AuthResponse, Configuration, Login, Message, OutboundMessage, RequestPreKeys, message::Payload,
};
use tassis_client::{ClientError, Identity, ServerEvent, frame};

#[tokio::test]
async fn connect_gets_configuration_and_challenge() {
    let s = standalone(&[]);
    let c = anon(&s.ws_url()).await;
    assert_eq!(c.configuration().max_attachment_size, 100_000_000);
    assert_eq!(c.nonce().len(), 32);
    let c2 = anon(&s.ws_url()).await;
    assert_ne!(c.nonce(), c2.nonce(), "a fresh nonce per connection");
    // The documented path form works too.
    let c3 = anon(&format!("ws://{}/someIdentity/someDevice", s.listen)).await;
    assert_eq!(c3.nonce().len(), 32);
    // Other paths are refused at the handshake.
    assert!(
        tassis_client::Connection::connect(&format!("ws://{}/nope", s.listen))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn login_with_both_schemes() {
    let s = standalone(&[]);
    for identity in [Identity::generate_ed25519(), Identity::generate_curve25519()] {
        let d = registered(&s.ws_url(), identity, b"phone", 20).await;
        let a = anon(&s.ws_url()).await;
        a.send(d.address(), b"hi".to_vec()).await.unwrap();
        let (seq, payload) = recv(&d.conn).await;
        assert_eq!(payload.as_ref(), b"hi");
        d.conn.ack(seq).await.unwrap();
    }
}

#[tokio::test]
async fn login_schemes_can_be_switched_off() {
    let s = standalone(&["--auth-xeddsa", "false"]);
    let c = anon(&s.ws_url()).await;
    assert_eq!(
        err_name(c.login(&Identity::generate_curve25519(), b"d").await),
        "unauthorized"
    );
    let c = anon(&s.ws_url()).await;
    c.login(&Identity::generate_ed25519(), b"d").await.unwrap();
}

async fn expect_closed(c: &tassis_client::Connection, code: u16) {
    loop {
        match event(c).await {
            ServerEvent::Closed { code: got, .. } => {
                assert_eq!(got, Some(code));
                return;
            }
            _ => continue,
        }
    }
}

#[tokio::test]
async fn bad_logins_are_unauthorized_and_closed() {
    let s = standalone(&[]);
    let id = Identity::generate_ed25519();
    // Wrong nonce.
    let c = anon(&s.ws_url()).await;
    let resp = frame::auth_response(&id, b"d", &[0u8; 32]);
    assert_eq!(err_name(c.request(Payload::AuthResponse(resp)).await), "unauthorized");
    expect_closed(&c, 1008).await;
    // Signature by another key.
    let c = anon(&s.ws_url()).await;
    let mut resp = frame::auth_response(&id, b"d", c.nonce());
    resp.signature = Bytes::from(Identity::generate_ed25519().sign(&resp.login).to_vec());
    assert_eq!(
        err_name(
            c.request(Payload::AuthResponse(resp))
                .await
                .and_then(frame::into_result)
        ),
        "unauthorized"
    );
    // Signature over re-serialized bytes does not count: flip a byte of the login after signing.
    let c = anon(&s.ws_url()).await;
    let mut resp = frame::auth_response(&id, b"d", c.nonce());
    let mut login = resp.login.to_vec();
    login.push(0); // trailing field-0 garbage: a different byte string
    resp.login = Bytes::from(login);
    assert_eq!(
        err_name(
            c.request(Payload::AuthResponse(resp))
                .await
                .and_then(frame::into_result)
        ),
        "unauthorized"
    );
    // A 31-byte identity key, an empty and a 65-byte device id, a short signature.
    for (ik, dev) in [
        (vec![1u8; 31], b"d".to_vec()),
        (id.public_key().to_vec(), vec![]),
        (id.public_key().to_vec(), vec![7u8; 65]),
    ] {
        let c = anon(&s.ws_url()).await;
        let login = Login {
            address: Some(tassis_client::proto::Address {
                identity_key: ik.into(),
                device_id: dev.into(),
            }),
            nonce: c.nonce().clone(),
        }
        .encode_to_vec();
        let sig = id.sign(&login);
        let resp = AuthResponse {
            login: login.into(),
            signature: Bytes::from(sig.to_vec()),
        };
        assert_eq!(
            err_name(
                c.request(Payload::AuthResponse(resp))
                    .await
                    .and_then(frame::into_result)
            ),
            "unauthorized"
        );
    }
    let c = anon(&s.ws_url()).await;
    let mut resp = frame::auth_response(&id, b"d", c.nonce());
    resp.signature.truncate(63);
    assert_eq!(
        err_name(
            c.request(Payload::AuthResponse(resp))
                .await
                .and_then(frame::into_result)
        ),
        "unauthorized"
    );
    // A 64-byte device id is fine.
    let c = anon(&s.ws_url()).await;
    c.login(&id, &[9u8; 64]).await.unwrap();
    // A second AuthResponse on an authenticated connection.
    let again = frame::auth_response(&id, b"d", c.nonce());
    assert_eq!(
        err_name(
            c.request(Payload::AuthResponse(again))
                .await
                .and_then(frame::into_result)
        ),
        "attempted_anonymous_op_on_authenticated_connection"
    );
}

#[tokio::test]
async fn access_rules() {
    let s = standalone(&[]);
    let a = anon(&s.ws_url()).await;
    assert_eq!(
        err_name(a.register(Bytes::from_static(b"spk"), vec![]).await),
        "unauthorized"
    );
    assert_eq!(err_name(a.unregister().await), "unauthorized");
    // Anonymous connections stay usable after a refusal.
    assert_eq!(
        err_name(a.request_pre_keys(vec![3u8; 32], vec![]).await),
        "unknown_identity"
    );

    let d = registered(&s.ws_url(), Identity::generate_ed25519(), b"d", 1).await;
    let anon_op = "attempted_anonymous_op_on_authenticated_connection";
    assert_eq!(
        err_name(d.conn.request_pre_keys(d.identity.public_key().to_vec(), vec![]).await),
        anon_op
    );
    assert_eq!(err_name(d.conn.send(d.address(), b"x".to_vec()).await), anon_op);
    // Upload authorizations are allowed on both kinds (unavailable here: no bucket).
    assert_eq!(err_name(d.conn.request_upload_authorizations(1).await), "unavailable");
    assert_eq!(err_name(a.request_upload_authorizations(1).await), "unavailable");
}

#[tokio::test]
async fn register_appends_or_replaces_and_prekeys_consume() {
    let s = standalone(&[]);
    let url = s.ws_url();
    let id = Identity::generate_curve25519();
    let d = registered(&url, id.clone(), b"d1", 2).await;
    // Same signed prekey: append.
    d.conn
        .register(spk(&id, b"d1"), one_time_keys(b"d1", 2..3))
        .await
        .unwrap();
    let a = anon(&url).await;
    let ik = id.public_key().to_vec();
    let mut got = Vec::new();
    for _ in 0..4 {
        let k = a.request_pre_keys(ik.clone(), vec![]).await.unwrap();
        assert_eq!(k.len(), 1);
        assert_eq!(k[0].device_id.as_ref(), b"d1");
        assert_eq!(k[0].signed_pre_key, spk(&id, b"d1"));
        got.push(k[0].one_time_pre_key.clone());
    }
    // Most recently registered first; empty when none left.
    assert_eq!(
        got,
        vec![
            Bytes::from_static(b"otk:d1:2"),
            Bytes::from_static(b"otk:d1:1"),
            Bytes::from_static(b"otk:d1:0"),
            Bytes::new()
        ]
    );
    // A different signed prekey replaces the registration and drops old one-time keys.
    d.conn
        .register(spk(&id, b"d1"), one_time_keys(b"d1", 10..12))
        .await
        .unwrap();
    d.conn
        .register(Bytes::from_static(b"new-spk"), one_time_keys(b"d1", 20..21))
        .await
        .unwrap();
    let k = a.request_pre_keys(ik.clone(), vec![]).await.unwrap();
    assert_eq!(k[0].signed_pre_key.as_ref(), b"new-spk");
    assert_eq!(k[0].one_time_pre_key.as_ref(), b"otk:d1:20");
    assert!(
        a.request_pre_keys(ik, vec![]).await.unwrap()[0]
            .one_time_pre_key
            .is_empty()
    );
}

#[tokio::test]
async fn two_devices_known_device_ids_and_unregister() {
    let s = standalone(&[]);
    let url = s.ws_url();
    let id = Identity::generate_ed25519();
    let d1 = registered(&url, id.clone(), b"d1", 3).await;
    let d2 = registered(&url, id.clone(), b"d2", 3).await;
    let a = anon(&url).await;
    let ik = id.public_key().to_vec();
    let both = a.request_pre_keys(ik.clone(), vec![]).await.unwrap();
    assert_eq!(
        prekey_ids(&both),
        vec![Bytes::from_static(b"d1"), Bytes::from_static(b"d2")]
    );
    let only2 = a
        .request_pre_keys(ik.clone(), vec![Bytes::from_static(b"d1")])
        .await
        .unwrap();
    assert_eq!(prekey_ids(&only2), vec![Bytes::from_static(b"d2")]);
    let none = a
        .request_pre_keys(ik.clone(), vec![Bytes::from_static(b"d1"), Bytes::from_static(b"d2")])
        .await
        .unwrap();
    assert!(none.is_empty(), "all devices known -> empty PreKeys");

    // Messages to each device go to that device only.
    a.send(d1.address(), b"to d1".to_vec()).await.unwrap();
    a.send(d2.address(), b"to d2".to_vec()).await.unwrap();
    assert_eq!(recv(&d1.conn).await.1.as_ref(), b"to d1");
    assert_eq!(recv(&d2.conn).await.1.as_ref(), b"to d2");

    d1.conn.unregister().await.unwrap();
    assert_eq!(
        prekey_ids(&a.request_pre_keys(ik.clone(), vec![]).await.unwrap()),
        vec![Bytes::from_static(b"d2")]
    );
    assert_eq!(err_name(a.send(d1.address(), b"x".to_vec()).await), "unknown_device");
    d2.conn.unregister().await.unwrap();
    assert_eq!(err_name(a.request_pre_keys(ik, vec![]).await), "unknown_identity");
}

#[tokio::test]
async fn unregister_keeps_queued_messages() {
    let s = standalone(&[]);
    let url = s.ws_url();
    let id = Identity::generate_ed25519();
    let d = registered(&url, id.clone(), b"d", 1).await;
    d.conn.close().await.unwrap();
    let a = anon(&url).await;
    a.send(d.address(), b"kept".to_vec()).await.unwrap();
    let c = login(&url, &id, b"d").await;
    let (seq, _) = recv(&c).await;
    c.unregister().await.unwrap();
    drop(c);
    // Not acked: still there for the next login, even though the device is unregistered.
    let c = login(&url, &id, b"d").await;
    let (seq2, payload) = recv(&c).await;
    assert_eq!(payload.as_ref(), b"kept");
    let _ = (seq, seq2);
}

#[tokio::test]
async fn outbound_message_errors() {
    let s = standalone(&[]);
    let a = anon(&s.ws_url()).await;
    let id = Identity::generate_ed25519();
    assert_eq!(
        err_name(a.send(address(&id, b"nobody"), b"x".to_vec()).await),
        "unknown_device"
    );
    let mut bad = address(&id, b"d");
    bad.identity_key = Bytes::from_static(&[1u8; 33]);
    assert_eq!(err_name(a.send(bad, b"x".to_vec()).await), "invalid_identity_key");
    assert_eq!(
        err_name(a.send(address(&id, b""), b"x".to_vec()).await),
        "invalid_request"
    );
    assert_eq!(
        err_name(a.send(address(&id, &[1u8; 65]), b"x".to_vec()).await),
        "invalid_request"
    );
    let no_to = Payload::OutboundMessage(OutboundMessage {
        to: None,
        unidentified_sender_message: Bytes::from_static(b"x"),
    });
    assert_eq!(
        err_name(a.request(no_to).await.and_then(frame::into_result)),
        "invalid_request"
    );
    let short = Payload::RequestPreKeys(RequestPreKeys {
        identity_key: Bytes::from_static(b"short"),
        known_device_ids: vec![],
    });
    assert_eq!(
        err_name(a.request(short).await.and_then(frame::into_result)),
        "invalid_identity_key"
    );
}

#[tokio::test]
async fn upload_authorizations_validate_before_availability() {
    let s = standalone(&[]);
    let a = anon(&s.ws_url()).await;
    assert_eq!(err_name(a.request_upload_authorizations(0).await), "invalid_request");
    assert_eq!(err_name(a.request_upload_authorizations(-1).await), "invalid_request");
    match a.request_upload_authorizations(3).await {
        Err(ClientError::Server { name, description }) => {
            assert_eq!(name, "unavailable");
            assert!(description.contains("S3 bucket"), "{description}");
        }
        other => panic!("{other:?}"),
    }
}

/// Sends a raw frame and returns the next unsolicited event.
async fn raw(c: &tassis_client::Connection, bytes: Vec<u8>) -> ServerEvent {
    c.send_raw_frame(bytes).await.unwrap();
    event(c).await
}

fn is_error(ev: &ServerEvent, want_name: &str, want_seq: u32) -> bool {
    match ev {
        ServerEvent::Error { sequence, name, .. } => name == want_name && *sequence == want_seq,
        ServerEvent::Unsolicited(Message {
            sequence,
            payload: Some(Payload::Error(e)),
        }) => e.name == want_name && *sequence == want_seq,
        _ => false,
    }
}

#[tokio::test]
async fn malformed_frames_get_invalid_request_and_the_connection_stays() {
    let s = standalone(&[]);
    let c = anon(&s.ws_url()).await;
    // Not protobuf at all: sequence 0.
    let ev = raw(&c, vec![0xff, 0xff, 0xff, 0xff]).await;
    assert!(is_error(&ev, "invalid_request", 0), "{ev:?}");
    // A Message with no payload: the client's sequence is echoed.
    let ev = raw(
        &c,
        Message {
            sequence: 4242,
            payload: None,
        }
        .encode_to_vec(),
    )
    .await;
    assert!(is_error(&ev, "invalid_request", 4242), "{ev:?}");
    // An unknown oneof field (11 is reserved; 99 never existed): no known payload.
    let mut unknown = Message {
        sequence: 77,
        payload: None,
    }
    .encode_to_vec();
    unknown.extend_from_slice(&[0x5a, 0x00]); // field 11, length-delimited, empty
    let ev = raw(&c, unknown).await;
    assert!(is_error(&ev, "invalid_request", 77), "{ev:?}");
    // Payloads only the server sends.
    for (seq, p) in [
        (5u32, Payload::Configuration(Configuration { max_attachment_size: 1 })),
        (6, Payload::InboundMessage(Bytes::from_static(b"x"))),
        (7, Payload::Error(Default::default())),
        (8, Payload::PreKeys(Default::default())),
    ] {
        let ev = raw(
            &c,
            Message {
                sequence: seq,
                payload: Some(p),
            }
            .encode_to_vec(),
        )
        .await;
        assert!(is_error(&ev, "invalid_request", seq), "{ev:?}");
    }
    // An Ack for an unknown sequence is ignored: no reply, connection still fine.
    c.send_raw_frame(
        Message {
            sequence: 999,
            payload: Some(Payload::Ack(Ack {})),
        }
        .encode_to_vec(),
    )
    .await
    .unwrap();
    assert_no_events(&c).await;
    assert_eq!(
        err_name(c.request_pre_keys(vec![8u8; 32], vec![]).await),
        "unknown_identity"
    );
}

#[tokio::test]
async fn oversize_frame_is_refused_and_closed_1009() {
    let s = standalone(&["--max-frame-size", "1024"]);
    let c = anon(&s.ws_url()).await;
    let big = Message {
        sequence: 1,
        payload: Some(Payload::InboundMessage(Bytes::from(vec![0u8; 2000]))),
    }
    .encode_to_vec();
    c.send_raw_frame(big).await.unwrap();
    let ev = event(&c).await;
    assert!(is_error(&ev, "message_too_large", 0), "{ev:?}");
    expect_closed(&c, 1009).await;
    // The server is unaffected.
    let c2 = anon(&s.ws_url()).await;
    assert_eq!(
        err_name(c2.request_pre_keys(vec![8u8; 32], vec![]).await),
        "unknown_identity"
    );
}

#[tokio::test]
async fn prekeys_low_after_login_ack_only_for_registered_devices() {
    let s = standalone(&["--prekeys-low-watermark", "5", "--prekeys-requested", "33"]);
    let url = s.ws_url();
    let id = Identity::generate_ed25519();
    // Not registered: no PreKeysLow.
    let c = login(&url, &id, b"d").await;
    assert_no_events(&c).await;
    c.register(spk(&id, b"d"), one_time_keys(b"d", 0..2)).await.unwrap();
    drop(c);
    // Registered with 2 < 5 keys: PreKeysLow{33} right after the login's Ack.
    let c = login(&url, &id, b"d").await;
    assert_eq!(event(&c).await, ServerEvent::PreKeysLow { keys_requested: 33 });
    c.register(spk(&id, b"d"), one_time_keys(b"d", 2..10)).await.unwrap();
    drop(c);
    // Enough keys: nothing.
    let c = login(&url, &id, b"d").await;
    assert_no_events(&c).await;
}

#[tokio::test]
async fn prekeys_low_is_rechecked_periodically() {
    let s = standalone(&["--prekeys-low-watermark", "2", "--prekeys-low-interval", "1s"]);
    let url = s.ws_url();
    let id = Identity::generate_ed25519();
    let d = registered(&url, id.clone(), b"d", 2).await;
    let c = login(&url, &id, b"d").await;
    drop(d);
    let a = anon(&url).await;
    a.request_pre_keys(id.public_key().to_vec(), vec![]).await.unwrap();
    // Now 1 < 2 keys left: the next periodic check (within 1 s) asks for more.
    assert_eq!(event(&c).await, ServerEvent::PreKeysLow { keys_requested: 20 });
}
