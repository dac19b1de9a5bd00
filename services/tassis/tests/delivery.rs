//! Store-and-forward guarantees end to end: offline delivery, redelivery until acked, several
//! connections of one device, retention limits, and a client that stops reading.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use tassis_client::{Identity, ServerEvent};

#[tokio::test]
async fn offline_delivery_in_send_order() {
    let s = standalone(&[]);
    let url = s.ws_url();
    let id = Identity::generate_curve25519();
    let d = registered(&url, id.clone(), b"d", 0).await;
    d.conn.close().await.unwrap();
    let a = anon(&url).await;
    for i in 0..20 {
        a.send(d.address(), format!("m{i}").into_bytes()).await.unwrap();
    }
    let c = login(&url, &id, b"d").await;
    for i in 0..20 {
        let (seq, p) = recv(&c).await;
        assert_eq!(p, format!("m{i}").into_bytes(), "send order");
        c.ack(seq).await.unwrap();
    }
}

#[tokio::test]
async fn redelivered_until_acked_and_not_after() {
    let s = standalone(&[]);
    let url = s.ws_url();
    let id = Identity::generate_ed25519();
    let d = registered(&url, id.clone(), b"d", 0).await;
    let a = anon(&url).await;
    for i in 0..3 {
        a.send(d.address(), format!("m{i}").into_bytes()).await.unwrap();
    }
    // Receive all three, ack only the middle one, disconnect.
    let mut seqs = Vec::new();
    for i in 0..3 {
        let (seq, p) = recv(&d.conn).await;
        assert_eq!(p, format!("m{i}").into_bytes());
        seqs.push(seq);
    }
    d.conn.ack(seqs[1]).await.unwrap();
    // Make sure the ack went through before disconnecting: a round trip on the same connection.
    let _ = d.conn.request_upload_authorizations(0).await;
    d.conn.close().await.unwrap();
    // The unacked ones come back in order, and then nothing else.
    let c = login(&url, &id, b"d").await;
    let (s0, p0) = recv(&c).await;
    let (s2, p2) = recv(&c).await;
    assert_eq!((p0.as_ref(), p2.as_ref()), (&b"m0"[..], &b"m2"[..]));
    c.ack(s0).await.unwrap();
    c.ack(s2).await.unwrap();
    a.send(d.address(), b"marker".to_vec()).await.unwrap();
    let (sm, pm) = recv(&c).await;
    assert_eq!(pm.as_ref(), b"marker", "the acked messages were not redelivered");
    c.ack(sm).await.unwrap();
    let _ = c.request_upload_authorizations(0).await;
    c.close().await.unwrap();
    // Everything acked: a new login gets nothing before a new marker.
    let c = login(&url, &id, b"d").await;
    a.send(d.address(), b"marker2".to_vec()).await.unwrap();
    assert_eq!(recv(&c).await.1.as_ref(), b"marker2");
}

#[tokio::test]
async fn one_device_connected_twice() {
    let s = standalone(&[]);
    let url = s.ws_url();
    let id = Identity::generate_ed25519();
    let d = registered(&url, id.clone(), b"d", 0).await;
    let c2 = login(&url, &id, b"d").await;
    let a = anon(&url).await;
    a.send(d.address(), b"both".to_vec()).await.unwrap();
    // Every connection receives new messages.
    let (s1, p1) = recv(&d.conn).await;
    let (_s2, p2) = recv(&c2).await;
    assert_eq!((p1.as_ref(), p2.as_ref()), (&b"both"[..], &b"both"[..]));
    a.send(d.address(), b"second".to_vec()).await.unwrap();
    assert_eq!(recv(&d.conn).await.1.as_ref(), b"second");
    assert_eq!(recv(&c2).await.1.as_ref(), b"second");
    // The first ack removes "both"; "second" (pushed to both, acked by none) is replayed to a new login.
    d.conn.ack(s1).await.unwrap();
    let _ = d.conn.request_upload_authorizations(0).await;
    let c3 = login(&url, &id, b"d").await;
    assert_eq!(recv(&c3).await.1.as_ref(), b"second");
}

#[tokio::test]
async fn retention_count_cap_drops_oldest() {
    let s = standalone(&["--max-queue-len", "3"]);
    let url = s.ws_url();
    let id = Identity::generate_ed25519();
    let d = registered(&url, id.clone(), b"d", 0).await;
    d.conn.close().await.unwrap();
    let a = anon(&url).await;
    for i in 0..5 {
        a.send(d.address(), format!("m{i}").into_bytes()).await.unwrap();
    }
    let c = login(&url, &id, b"d").await;
    for i in 2..5 {
        assert_eq!(recv(&c).await.1, format!("m{i}").into_bytes());
    }
    a.send(d.address(), b"marker".to_vec()).await.unwrap();
    assert_eq!(recv(&c).await.1.as_ref(), b"marker", "m0 and m1 were dropped");
}

#[tokio::test]
async fn retention_age_limit_drops_old_messages() {
    let s = standalone(&["--max-message-age", "1s"]);
    let url = s.ws_url();
    let id = Identity::generate_ed25519();
    let d = registered(&url, id.clone(), b"d", 0).await;
    d.conn.close().await.unwrap();
    let a = anon(&url).await;
    a.send(d.address(), b"old".to_vec()).await.unwrap();
    // Age is measured in wall-clock time; there is nothing to wait on but the clock.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    a.send(d.address(), b"fresh".to_vec()).await.unwrap();
    let c = login(&url, &id, b"d").await;
    assert_eq!(recv(&c).await.1.as_ref(), b"fresh", "the expired message is gone");
}

#[tokio::test]
async fn client_that_stops_reading_is_dropped_and_loses_nothing() {
    let s = standalone(&["--outbound-queue", "8", "--write-timeout", "300ms"]);
    let url = s.ws_url();
    let id = Identity::generate_ed25519();
    let d = registered(&url, id.clone(), b"d", 0).await;
    // A raw connection that logs in and then never reads. Its receive buffer is kept small, so
    // that what the kernel can hold for it (receive buffer + the server's send buffer) is well
    // below the 8 MB sent: the server's writes must stall.
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(32 * 1024).unwrap();
    let tcp = sock.connect(s.listen).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(url.as_str(), tcp).await.unwrap();
    use futures::{SinkExt, StreamExt};
    use prost::Message as _;
    let mut nonce = None;
    while nonce.is_none() {
        if let Some(Ok(tokio_tungstenite::tungstenite::Message::Binary(b))) = ws.next().await {
            let m = tassis_client::proto::Message::decode(b).unwrap();
            if let Some(tassis_client::proto::message::Payload::AuthChallenge(c)) = m.payload {
                nonce = Some(c.nonce);
            }
        }
    }
    let resp = tassis_client::frame::auth_response(&id, b"d", &nonce.unwrap());
    let login_frame = tassis_client::frame::encode(&tassis_client::frame::message(
        1,
        tassis_client::proto::message::Payload::AuthResponse(resp),
    ));
    ws.send(tokio_tungstenite::tungstenite::Message::Binary(login_frame.into()))
        .await
        .unwrap();
    d.conn.close().await.unwrap();

    // Flood the device with 8 MB while the raw connection reads nothing.
    let a = anon(&url).await;
    let n = 250;
    let body = vec![b'x'; 32 * 1024];
    for i in 0..n {
        let mut p = format!("{i:05}:").into_bytes();
        p.extend_from_slice(&body);
        a.send(d.address(), p).await.unwrap();
    }
    // Meanwhile the gateway keeps serving others promptly.
    let other = anon(&url).await;
    assert_eq!(
        err_name(other.request_pre_keys(vec![4u8; 32], vec![]).await),
        "unknown_identity"
    );

    // Every acknowledged send is still queued: a reading client gets all of them, in order.
    let c = login(&url, &id, b"d").await;
    let mut seen = BTreeSet::new();
    while seen.len() < n {
        let (seq, p) = recv(&c).await;
        let i: usize = std::str::from_utf8(&p[..5]).unwrap().parse().unwrap();
        seen.insert(i);
        c.ack(seq).await.unwrap();
    }
    assert_eq!(seen.len(), n);
    // And the stalled raw connection was dropped by the server: reading it now ends in an error
    // or a close rather than the full 8 MB.
    let mut total = 0usize;
    let ended = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(Ok(m)) = ws.next().await {
            total += m.len();
            if m.is_close() {
                break;
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the server closed the stalled connection");
    assert!(
        total < n * body.len(),
        "the stalled client did not get everything: {total}"
    );
}

#[tokio::test]
async fn messages_to_a_connected_device_arrive_without_reconnect() {
    let s = standalone(&[]);
    let url = s.ws_url();
    let d = registered(&url, Identity::generate_ed25519(), b"d", 0).await;
    let a = anon(&url).await;
    let mut tasks = Vec::new();
    for i in 0..50 {
        let a2 = tassis_client::Connection::connect(&url).await.unwrap();
        let to = d.address();
        tasks.push(tokio::spawn(async move {
            a2.send(to, format!("p{i}").into_bytes()).await.unwrap()
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    drop(a);
    let mut got = BTreeSet::new();
    while got.len() < 50 {
        match event(&d.conn).await {
            ServerEvent::Inbound { sequence, payload } => {
                got.insert(payload);
                d.conn.ack(sequence).await.unwrap();
            }
            other => panic!("{other:?}"),
        }
    }
}
