//! Connection-level behaviour: keepalive and idle timeout, the connection cap, graceful
//! shutdown, admin endpoints, start-up validation, and the split roles as separate processes.

mod common;

use std::time::Duration;

use common::*;
use futures::StreamExt;
use tassis_client::{Identity, ServerEvent};
use tassis_e2e::{Process, http_get, start_failure};
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// Reads raw frames until the server's close frame; returns (pings seen, close code).
async fn read_until_close(
    ws: &mut tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
) -> (usize, Option<u16>) {
    let mut pings = 0;
    while let Some(Ok(m)) = ws.next().await {
        match m {
            WsMessage::Ping(_) => pings += 1,
            WsMessage::Close(f) => return (pings, f.map(|f| u16::from(f.code))),
            _ => {}
        }
    }
    (pings, None)
}

#[tokio::test]
async fn pings_and_idle_timeout() {
    let s = standalone(&["--ping-interval", "200ms", "--idle-timeout", "1s"]);
    let (mut ws, _) = tokio_tungstenite::connect_async(s.ws_url()).await.unwrap();
    // Do not read (so no pong goes back) for longer than the idle timeout: the server must give
    // up on us. Nothing signals "idle" but the passing of time itself.
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let (pings, code) = tokio::time::timeout(Duration::from_secs(10), read_until_close(&mut ws))
        .await
        .unwrap();
    assert!(pings >= 3, "pinged every 200ms: {pings}");
    assert_eq!(code, Some(1000), "closed for idleness");

    // A client that keeps reading (and so answers pings) stays connected past the idle timeout.
    let c = anon(&s.ws_url()).await;
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert_eq!(
        err_name(c.request_pre_keys(vec![1u8; 32], vec![]).await),
        "unknown_identity"
    );
}

#[tokio::test]
async fn connection_cap_refuses_with_1013() {
    let s = standalone(&["--max-connections", "2"]);
    let c1 = anon(&s.ws_url()).await;
    let _c2 = anon(&s.ws_url()).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(s.ws_url()).await.unwrap();
    let (_, code) = tokio::time::timeout(Duration::from_secs(10), read_until_close(&mut ws))
        .await
        .unwrap();
    assert_eq!(code, Some(1013));
    // Freeing a slot lets the next one in.
    c1.close().await.unwrap();
    drop(c1);
    let mut admitted = false;
    for _ in 0..50 {
        if let Ok(c) = tassis_client::Connection::connect(&s.ws_url()).await {
            assert_eq!(c.nonce().len(), 32);
            admitted = true;
            break;
        }
    }
    assert!(admitted, "a slot was freed");
}

#[tokio::test]
async fn sigterm_closes_clients_with_1001_and_exits() {
    let mut s = standalone(&[]);
    let d = registered(&s.ws_url(), Identity::generate_ed25519(), b"d", 0).await;
    let a = anon(&s.ws_url()).await;
    s.terminate();
    for c in [&d.conn, &a] {
        loop {
            match event(c).await {
                ServerEvent::Closed { code, .. } => {
                    assert_eq!(code, Some(1001));
                    break;
                }
                _ => continue,
            }
        }
    }
    assert_eq!(s.wait_exit(Duration::from_secs(30)), Some(0), "{}", s.output());
}

#[tokio::test]
async fn admin_endpoints() {
    let s = standalone(&[]);
    let admin = s.admin;
    let (code, body) = tokio::task::spawn_blocking(move || http_get(admin, "/healthz"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((code, body.as_str()), (200, "ok\n"));
    let (code, _) = tokio::task::spawn_blocking(move || http_get(admin, "/readyz"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(code, 200);
    let d = registered(&s.ws_url(), Identity::generate_ed25519(), b"d", 0).await;
    let a = anon(&s.ws_url()).await;
    a.send(d.address(), b"x".to_vec()).await.unwrap();
    let (seq, _) = recv(&d.conn).await;
    d.conn.ack(seq).await.unwrap();
    let _ = d.conn.request_upload_authorizations(0).await;
    let (code, metrics) = tokio::task::spawn_blocking(move || http_get(admin, "/metrics"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(code, 200);
    for want in [
        r#"tassis_gateway_connections{kind="authenticated"} 1"#,
        r#"tassis_gateway_connections{kind="anonymous"} 1"#,
        r#"tassis_gateway_logins_total{outcome="ok"} 1"#,
        r#"tassis_gateway_operations_total{op="send",outcome="ok"} 1"#,
        r#"tassis_gateway_deliveries_total{event="acked"} 1"#,
    ] {
        assert!(metrics.contains(want), "missing {want} in:\n{metrics}");
    }
}

#[test]
fn bad_configuration_is_refused_at_start() {
    for (args, needle) in [
        (
            vec!["standalone", "--ping-interval", "5s", "--idle-timeout", "1s"],
            "--idle-timeout must be longer",
        ),
        (vec!["standalone", "--max-frame-size", "10"], "--max-frame-size"),
        (vec!["standalone", "--max-queue-len", "0"], "--max-queue-len"),
        (
            vec!["standalone", "--auth-ed25519", "false", "--auth-xeddsa", "false"],
            "nobody could log in",
        ),
        (vec!["standalone", "--listen", "nonsense"], "invalid value"),
        (
            vec![
                "gateway",
                "--keystore",
                "ftp://x",
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
            ],
            "bad endpoint URL",
        ),
    ] {
        let (code, out) = start_failure(BIN, &args);
        assert_eq!(code, Some(2), "{args:?}: {out}");
        assert!(out.contains(needle), "{args:?}: expected {needle:?} in {out}");
    }
}

#[tokio::test]
async fn split_roles_as_separate_processes() {
    let ks = Process::start(BIN, "keystore", &[]);
    let ms = Process::start(BIN, "messaging", &["--keystore", &ks.grpc_url()]);
    let at = Process::start(BIN, "attachments", &["--max-attachment-size", "12345"]);
    let gw = gateway_for(&ks, &ms, &at, &[]);
    let url = gw.ws_url();
    let d = registered(&url, Identity::generate_curve25519(), b"d", 3).await;
    assert_eq!(d.conn.configuration().max_attachment_size, 12345);
    let a = anon(&url).await;
    assert_eq!(
        a.request_pre_keys(d.identity.public_key().to_vec(), vec![])
            .await
            .unwrap()
            .len(),
        1
    );
    a.send(d.address(), b"across processes".to_vec()).await.unwrap();
    let (seq, p) = recv(&d.conn).await;
    assert_eq!(p.as_ref(), b"across processes");
    d.conn.ack(seq).await.unwrap();
    assert_eq!(
        err_name(a.send(address(&d.identity, b"other"), b"x".to_vec()).await),
        "unknown_device"
    );
}
