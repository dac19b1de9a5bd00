//! Connection behaviour against a scripted in-process WebSocket server (no tassis server needed):
//! greeting in either order, login bytes and signatures as the server checks them, sequence
//! numbering, concurrent requests answered out of order, errors, events, acks, timeouts, close.

mod common;

use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use prost::Message as _;
use tassis_client::proto::{
    Ack, Configuration, Error, Login, PreKey, PreKeys, PreKeysLow, UploadAuthorization, UploadAuthorizations,
    message::Payload,
};
use tassis_client::{ClientError, ConnectOptions, Connection, Identity, Scheme, ServerEvent, frame};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use common::*;

#[tokio::test]
async fn greeting_in_either_order() {
    for challenge_first in [false, true] {
        let (url, server) = serve(move |mut ws| async move {
            greet(&mut ws, challenge_first).await;
            let _ = ws.next().await; // wait for the client to go
        })
        .await;
        let conn = Connection::connect_with(&url, fast()).await.unwrap();
        assert_eq!(conn.configuration().max_attachment_size, MAX_ATTACHMENT);
        assert_eq!(&conn.nonce()[..], &NONCE);
        conn.close().await.unwrap();
        server.await.unwrap();
    }
}

#[tokio::test]
async fn greeting_error_and_timeout() {
    let (url, _server) = serve(|mut ws| async move {
        put(
            &mut ws,
            0,
            Payload::Error(Error {
                name: "unavailable".into(),
                description: "later".into(),
            }),
        )
        .await;
        let _ = ws.next().await;
    })
    .await;
    let err = Connection::connect_with(&url, fast()).await.unwrap_err();
    assert_eq!(err.to_string(), "unavailable:later");

    let (url, _server) = serve(|mut ws| async move {
        put(
            &mut ws,
            1,
            Payload::Configuration(Configuration { max_attachment_size: 1 }),
        )
        .await;
        tokio::time::sleep(Duration::from_secs(10)).await; // never challenges
    })
    .await;
    let opts = ConnectOptions {
        handshake_timeout: Duration::from_millis(300),
        ..fast()
    };
    assert!(matches!(
        Connection::connect_with(&url, opts).await,
        Err(ClientError::Timeout(_))
    ));
}

#[tokio::test]
async fn login_with_both_schemes() {
    for scheme in [Scheme::Ed25519, Scheme::Curve25519] {
        let identity = Identity::generate(scheme);
        let public = identity.public_key();
        let (url, server) = serve(move |mut ws| async move {
            greet(&mut ws, scheme == Scheme::Curve25519).await;
            let msg = take(&mut ws).await;
            assert_eq!(msg.sequence, 1, "client numbers its messages from 1");
            let Some(Payload::AuthResponse(resp)) = msg.payload else {
                panic!("want authResponse")
            };
            let login = Login::decode(resp.login.clone()).unwrap();
            let address = login.address.unwrap();
            assert_eq!(&address.identity_key[..], &public);
            assert_eq!(&address.device_id[..], b"dev-1");
            assert_eq!(&login.nonce[..], &NONCE);
            assert!(server_verifies(&address.identity_key, &resp.login, &resp.signature));
            put(&mut ws, msg.sequence, Payload::Ack(Ack {})).await;

            // A second login attempt is refused.
            let msg = take(&mut ws).await;
            assert_eq!(msg.sequence, 2);
            let error = Error {
                name: "attempted_anonymous_op_on_authenticated_connection".into(),
                description: "already logged in".into(),
            };
            put(&mut ws, msg.sequence, Payload::Error(error)).await;
            let _ = ws.next().await;
        })
        .await;
        let conn = Connection::connect_with(&url, fast()).await.unwrap();
        conn.login(&identity, b"dev-1").await.unwrap();
        let err = conn.login(&identity, b"dev-1").await.unwrap_err();
        assert_eq!(
            err.server_error_name(),
            Some("attempted_anonymous_op_on_authenticated_connection")
        );
        assert_eq!(
            err.to_string(),
            "attempted_anonymous_op_on_authenticated_connection:already logged in"
        );
        conn.close().await.unwrap();
        server.await.unwrap();
    }
}

#[tokio::test]
async fn concurrent_requests_get_their_own_replies() {
    let (url, server) = serve(|mut ws| async move {
        greet(&mut ws, false).await;
        let mut requests = Vec::new();
        for _ in 0..4 {
            requests.push(take(&mut ws).await);
        }
        let mut seqs: Vec<u32> = requests.iter().map(|m| m.sequence).collect();
        seqs.sort();
        assert_eq!(seqs, [1, 2, 3, 4]);
        // Answer in reverse order of arrival, with an unrelated event in between.
        put(&mut ws, 99, Payload::PreKeysLow(PreKeysLow { keys_requested: 20 })).await;
        for req in requests.into_iter().rev() {
            let reply = match req.payload.unwrap() {
                Payload::RequestPreKeys(r) => {
                    assert_eq!(&r.identity_key[..], &[5u8; 32]);
                    assert_eq!(r.known_device_ids, vec![Bytes::from_static(b"known")]);
                    Payload::PreKeys(PreKeys {
                        pre_keys: vec![PreKey {
                            device_id: "d1".into(),
                            signed_pre_key: "spk".into(),
                            one_time_pre_key: "otk".into(),
                        }],
                    })
                }
                Payload::OutboundMessage(o) => {
                    assert_eq!(&o.to.unwrap().device_id[..], b"d1");
                    assert_eq!(&o.unidentified_sender_message[..], b"sealed");
                    Payload::Ack(Ack {})
                }
                Payload::RequestUploadAuthorizations(r) => {
                    assert_eq!(r.num_requested, 2);
                    let auth = UploadAuthorization {
                        upload_url: "https://up".into(),
                        ..Default::default()
                    };
                    Payload::UploadAuthorizations(UploadAuthorizations {
                        authorizations: vec![auth.clone(), auth],
                    })
                }
                Payload::Register(r) => {
                    assert_eq!(&r.signed_pre_key[..], b"spk");
                    assert_eq!(r.one_time_pre_keys.len(), 3);
                    Payload::Error(Error {
                        name: "unauthorized".into(),
                        description: "anonymous".into(),
                    })
                }
                other => panic!("unexpected {}", frame::payload_name(&other)),
            };
            put(&mut ws, req.sequence, reply).await;
        }
        let _ = ws.next().await;
    })
    .await;
    let conn = Connection::connect_with(&url, fast()).await.unwrap();
    let (pre_keys, sent, uploads, registered) = tokio::join!(
        conn.request_pre_keys(vec![5u8; 32], vec![Bytes::from_static(b"known")]),
        conn.send(frame::address(vec![5u8; 32], b"d1".to_vec()), b"sealed".to_vec()),
        conn.request_upload_authorizations(2),
        conn.register(b"spk".to_vec(), vec![Bytes::from_static(b"1"), "2".into(), "3".into()]),
    );
    let pre_keys = pre_keys.unwrap();
    assert_eq!(pre_keys.len(), 1);
    assert_eq!(&pre_keys[0].one_time_pre_key[..], b"otk");
    sent.unwrap();
    assert_eq!(uploads.unwrap().len(), 2);
    assert_eq!(registered.unwrap_err().to_string(), "unauthorized:anonymous");
    assert_eq!(
        conn.next_event().await,
        Some(ServerEvent::PreKeysLow { keys_requested: 20 })
    );
    conn.close().await.unwrap();
    server.await.unwrap();
}

#[tokio::test]
async fn inbound_events_and_acks() {
    let (url, server) = serve(|mut ws| async move {
        greet(&mut ws, false).await;
        put(&mut ws, 3, Payload::InboundMessage(Bytes::from_static(b"first"))).await;
        put(
            &mut ws,
            0,
            Payload::Error(Error {
                name: "invalid_request".into(),
                description: "bad".into(),
            }),
        )
        .await;
        put(&mut ws, 4, Payload::InboundMessage(Bytes::from_static(b"second"))).await;
        for expected in [3, 4] {
            let ack = take(&mut ws).await;
            assert_eq!(ack.sequence, expected);
            assert!(matches!(ack.payload, Some(Payload::Ack(_))));
        }
        // A raw frame arrives byte for byte.
        match ws.next().await.unwrap().unwrap() {
            WsMessage::Binary(b) => assert_eq!(&b[..], &[0xff, 0x00, 0x13]),
            other => panic!("{other:?}"),
        }
        put(
            &mut ws,
            0,
            Payload::Error(Error {
                name: "invalid_request".into(),
                description: "unreadable".into(),
            }),
        )
        .await;
        let close = CloseFrame {
            code: CloseCode::Policy,
            reason: "bye".into(),
        };
        ws.send(WsMessage::Close(Some(close))).await.unwrap();
        while ws.next().await.is_some() {}
    })
    .await;
    let conn = Connection::connect_with(&url, fast()).await.unwrap();
    assert_eq!(
        conn.next_event().await,
        Some(ServerEvent::Inbound {
            sequence: 3,
            payload: Bytes::from_static(b"first")
        })
    );
    conn.ack(3).await.unwrap();
    assert_eq!(
        conn.next_event().await,
        Some(ServerEvent::Error {
            sequence: 0,
            name: "invalid_request".into(),
            description: "bad".into()
        })
    );
    // receive() skips to the next inbound message.
    assert_eq!(conn.receive().await.unwrap(), (4, Bytes::from_static(b"second")));
    conn.ack(4).await.unwrap();
    conn.send_raw_frame(vec![0xff, 0x00, 0x13]).await.unwrap();
    assert!(matches!(
        conn.next_event().await,
        Some(ServerEvent::Error { sequence: 0, .. })
    ));
    assert_eq!(
        conn.next_event().await,
        Some(ServerEvent::Closed {
            code: Some(1008),
            reason: "bye".into()
        })
    );
    assert_eq!(conn.next_event().await, None);
    assert!(conn.is_closed());
    assert!(matches!(conn.unregister().await, Err(ClientError::Closed { .. })));
    server.await.unwrap();
}

#[tokio::test]
async fn timeouts_and_late_replies() {
    let (url, server) = serve(|mut ws| async move {
        greet(&mut ws, false).await;
        let req = take(&mut ws).await;
        tokio::time::sleep(Duration::from_millis(800)).await; // past the client's 500 ms
        put(&mut ws, req.sequence, Payload::Ack(Ack {})).await;
        let req = take(&mut ws).await;
        assert_eq!(req.sequence, 2);
        put(&mut ws, req.sequence, Payload::Ack(Ack {})).await;
        let _ = ws.next().await;
    })
    .await;
    let conn = Connection::connect_with(&url, fast()).await.unwrap();
    assert!(matches!(conn.unregister().await, Err(ClientError::Timeout(_))));
    // The late Ack surfaces as an event, and the connection still works.
    match conn.next_event().await {
        Some(ServerEvent::Unsolicited(m)) => assert_eq!(m.sequence, 1),
        other => panic!("{other:?}"),
    }
    conn.unregister().await.unwrap();
    conn.close().await.unwrap();
    server.await.unwrap();
}

#[tokio::test]
async fn server_close_fails_pending_requests() {
    let (url, server) = serve(|mut ws| async move {
        greet(&mut ws, false).await;
        let _ = take(&mut ws).await;
        let close = CloseFrame {
            code: CloseCode::Size,
            reason: "too big".into(),
        };
        ws.send(WsMessage::Close(Some(close))).await.unwrap();
        while ws.next().await.is_some() {}
    })
    .await;
    let conn = Connection::connect_with(&url, ConnectOptions::default()).await.unwrap();
    let started = std::time::Instant::now();
    let err = conn.request_pre_keys(vec![1u8; 32], vec![]).await.unwrap_err();
    assert!(matches!(err, ClientError::Closed { .. }), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "failed fast, not by timeout"
    );
    assert_eq!(
        conn.next_event().await,
        Some(ServerEvent::Closed {
            code: Some(1009),
            reason: "too big".into()
        })
    );
    server.await.unwrap();
}

#[tokio::test]
async fn pings_are_answered_and_close_is_clean() {
    let (url, server) = serve(|mut ws| async move {
        greet(&mut ws, false).await;
        ws.send(WsMessage::Ping(Bytes::from_static(b"are you there")))
            .await
            .unwrap();
        match ws.next().await.unwrap().unwrap() {
            WsMessage::Pong(p) => assert_eq!(&p[..], b"are you there"),
            other => panic!("{other:?}"),
        }
        match ws.next().await.unwrap().unwrap() {
            WsMessage::Close(Some(f)) => assert_eq!(f.code, CloseCode::Normal),
            other => panic!("{other:?}"),
        }
        while ws.next().await.is_some() {}
    })
    .await;
    let conn = Connection::connect_with(&url, fast()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await; // no request in flight: reader alone answers
    conn.close().await.unwrap();
    assert!(conn.is_closed());
    assert!(matches!(
        conn.next_event().await,
        Some(ServerEvent::Closed { code: Some(1000), .. })
    ));
    server.await.unwrap();
}
