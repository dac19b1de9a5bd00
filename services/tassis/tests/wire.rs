//! A client written from docs/protocol.md alone: frames are encoded and decoded by hand, field
//! number by field number, without the project's generated types. It guards the wire contract:
//! a wrong field number in proto/tassis.proto would pass every test that uses the shared schema,
//! but not this one.

mod common;

use std::time::Duration;

use common::*;
use ed25519_dalek::{Signer, SigningKey};
use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message as WsMessage;

fn varint(mut n: u64, out: &mut Vec<u8>) {
    loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

/// A length-delimited field.
fn ld(field: u64, data: &[u8], out: &mut Vec<u8>) {
    varint(field << 3 | 2, out);
    varint(data.len() as u64, out);
    out.extend_from_slice(data);
}

fn message(seq: u32, payload_field: u64, payload: &[u8]) -> Vec<u8> {
    let mut m = vec![0x08];
    varint(seq as u64, &mut m);
    ld(payload_field, payload, &mut m);
    m
}

/// Decodes one level of protobuf into (field, wire type, bytes or varint value).
fn fields(mut b: &[u8]) -> Vec<(u64, Vec<u8>, u64)> {
    fn read_varint(b: &mut &[u8]) -> u64 {
        let mut v = 0u64;
        let mut shift = 0;
        loop {
            let byte = b[0];
            *b = &b[1..];
            v |= ((byte & 0x7f) as u64) << shift;
            if byte & 0x80 == 0 {
                return v;
            }
            shift += 7;
        }
    }
    let mut out = Vec::new();
    while !b.is_empty() {
        let key = read_varint(&mut b);
        match key & 7 {
            0 => {
                let v = read_varint(&mut b);
                out.push((key >> 3, vec![], v));
            }
            2 => {
                let len = read_varint(&mut b) as usize;
                out.push((key >> 3, b[..len].to_vec(), 0));
                b = &b[len..];
            }
            t => panic!("unexpected wire type {t}"),
        }
    }
    out
}

fn field(f: &[(u64, Vec<u8>, u64)], n: u64) -> Option<&(u64, Vec<u8>, u64)> {
    f.iter().find(|x| x.0 == n)
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Next binary frame as top-level fields, skipping pings.
async fn next(ws: &mut Ws) -> Vec<(u64, Vec<u8>, u64)> {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let WsMessage::Binary(b) = m {
            return fields(&b);
        }
    }
}

async fn send(ws: &mut Ws, frame: Vec<u8>) {
    ws.send(WsMessage::Binary(frame.into())).await.unwrap();
}

/// Asserts the frame is an Ack (field 2) answering `seq`.
fn assert_ack(f: &[(u64, Vec<u8>, u64)], seq: u32) {
    assert_eq!(field(f, 1).map(|x| x.2), Some(seq as u64), "{f:?}");
    assert!(field(f, 2).is_some(), "expected Ack, got {f:?}");
}

#[tokio::test]
async fn hand_encoded_client_round_trip() {
    let s = standalone(&[]);
    let url = format!("ws://{}/someone/phone", s.listen);
    let key = SigningKey::from_bytes(&[42u8; 32]);
    let ik = key.verifying_key().to_bytes();

    // Authenticated connection: Configuration (4) and AuthChallenge (5), in either order.
    let (mut authed, _) = tokio_tungstenite::connect_async(url.as_str()).await.unwrap();
    let mut nonce = None;
    let mut max_attachment = None;
    for _ in 0..2 {
        let f = next(&mut authed).await;
        if let Some(c) = field(&f, 4) {
            max_attachment = Some(field(&fields(&c.1), 1).map(|x| x.2).unwrap_or(0));
        }
        if let Some(c) = field(&f, 5) {
            nonce = Some(field(&fields(&c.1), 1).unwrap().1.clone());
        }
    }
    assert_eq!(max_attachment, Some(100_000_000));
    let nonce = nonce.expect("challenge");
    assert_eq!(nonce.len(), 32);

    // Login{address{identityKey, deviceId}, nonce}, signed exactly as sent.
    let mut addr = Vec::new();
    ld(1, &ik, &mut addr);
    ld(2, b"phone", &mut addr);
    let mut login = Vec::new();
    ld(1, &addr, &mut login);
    ld(2, &nonce, &mut login);
    let sig = key.sign(&login).to_bytes();
    let mut auth = Vec::new();
    ld(1, &login, &mut auth);
    ld(2, &sig, &mut auth);
    send(&mut authed, message(1, 6, &auth)).await;
    assert_ack(&next(&mut authed).await, 1);

    // Register{signedPreKey, oneTimePreKeys...} (7).
    let mut reg = Vec::new();
    ld(1, b"my-signed-prekey", &mut reg);
    ld(2, b"otk-1", &mut reg);
    ld(2, b"otk-2", &mut reg);
    send(&mut authed, message(2, 7, &reg)).await;
    let f = next(&mut authed).await;
    if field(&f, 12).is_some() {
        // PreKeysLow may come first (2 keys is below the default low-water mark).
        assert_eq!(field(&fields(&field(&f, 12).unwrap().1), 1).map(|x| x.2), Some(20));
        assert_ack(&next(&mut authed).await, 2);
    } else {
        assert_ack(&f, 2);
    }

    // Anonymous connection: RequestPreKeys (9) -> PreKeys (10).
    let (mut anon, _) = tokio_tungstenite::connect_async(format!("ws://{}/api", s.listen))
        .await
        .unwrap();
    next(&mut anon).await;
    next(&mut anon).await;
    let mut rpk = Vec::new();
    ld(1, &ik, &mut rpk);
    send(&mut anon, message(7, 9, &rpk)).await;
    let f = next(&mut anon).await;
    assert_eq!(field(&f, 1).map(|x| x.2), Some(7));
    let pre_keys = fields(&field(&f, 10).expect("PreKeys").1);
    assert_eq!(pre_keys.len(), 1);
    let pk = fields(&pre_keys[0].1);
    assert_eq!(field(&pk, 1).unwrap().1, b"phone");
    assert_eq!(field(&pk, 2).unwrap().1, b"my-signed-prekey");
    assert_eq!(field(&pk, 3).unwrap().1, b"otk-2", "most recently registered first");

    // OutboundMessage{to, unidentifiedSenderMessage} (15) -> Ack.
    let mut out = Vec::new();
    ld(1, &addr, &mut out);
    ld(2, b"sealed bytes", &mut out);
    send(&mut anon, message(8, 15, &out)).await;
    assert_ack(&next(&mut anon).await, 8);

    // The recipient gets inboundMessage (16, plain bytes) and acks it with its sequence.
    let mut f = next(&mut authed).await;
    while field(&f, 12).is_some() {
        f = next(&mut authed).await;
    }
    let inbound = field(&f, 16).expect("inboundMessage");
    assert_eq!(inbound.1, b"sealed bytes");
    let seq = field(&f, 1).unwrap().2 as u32;
    let mut ack = vec![0x08];
    varint(seq as u64, &mut ack);
    ack.extend_from_slice(&[0x12, 0x00]);
    send(&mut authed, ack).await;

    // An Error (3) carries name (1) and description (2).
    let mut bad = Vec::new();
    ld(1, &[1u8; 5], &mut bad);
    send(&mut anon, message(9, 9, &bad)).await;
    let f = next(&mut anon).await;
    assert_eq!(field(&f, 1).map(|x| x.2), Some(9));
    let e = fields(&field(&f, 3).expect("Error").1);
    assert_eq!(field(&e, 1).unwrap().1, b"invalid_identity_key");
    assert!(!field(&e, 2).unwrap().1.is_empty());
}
