//! Rate limits (docs/security.md#rate-limits), end to end against real processes: a flooder is
//! refused while other clients of the same gateway go on untouched, each limit refuses with
//! `rate_limited` and says when to retry, and the shared limits are shared between gateways
//! through the Redis Cluster.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use futures::StreamExt;
use tassis_client::{ClientError, ConnectOptions, Connection, Identity};
use tassis_e2e::{Process, http_get};
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// A counter's value on a process's /metrics.
fn metric(admin: SocketAddr, series: &str) -> f64 {
    let (_, body) = http_get(admin, "/metrics").expect("/metrics");
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{series} not in:\n{body}"))
}

/// The "retry after N ms" of a rate_limited error, checking its shape.
fn retry_ms(e: &ClientError) -> u64 {
    match e {
        ClientError::Server { name, description } if name == "rate_limited" => {
            let ms = description
                .strip_suffix(" ms")
                .and_then(|d| d.rsplit("retry after ").next())
                .and_then(|n| n.parse().ok());
            ms.unwrap_or_else(|| panic!("description must say when to retry: {description:?}"))
        }
        other => panic!("expected rate_limited, got {other:?}"),
    }
}

/// At the default limits a connection flooding one device as fast as it can (1,000 messages
/// pipelined) is cut to the device's bucket, while a normal client on the same gateway, at the
/// same time, sends its burst of 100 messages to another device and fetches prekeys 20 times
/// (PROTOCOL.md's "must pass" examples) without meeting any limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flooder_is_limited_while_others_are_not() {
    let s = standalone(&[]);
    let url = s.ws_url();
    let victim = registered(&url, Identity::generate_ed25519(), b"victim", 0).await;
    let friend = registered(&url, Identity::generate_ed25519(), b"friend", 25).await;
    // Hundreds of pipelined requests: a slow (loaded) machine must not turn into client timeouts.
    let patient = ConnectOptions {
        request_timeout: Duration::from_secs(120),
        ..ConnectOptions::default()
    };

    let started = std::time::Instant::now();
    let flood = {
        let (url, to, patient) = (url.clone(), victim.address(), patient.clone());
        tokio::spawn(async move {
            let c = Connection::connect_with(&url, patient).await.unwrap();
            let sends = (0..1000u32).map(|i| c.send(to.clone(), i.to_be_bytes().to_vec()));
            futures::future::join_all(sends).await
        })
    };
    let normal = {
        let (url, to, ik) = (url.clone(), friend.address(), friend.identity.public_key().to_vec());
        tokio::spawn(async move {
            let c = Connection::connect_with(&url, patient).await.unwrap();
            let sends = (0..100u32).map(|i| c.send(to.clone(), format!("hi {i}").into_bytes()));
            let sent = futures::future::join_all(sends).await;
            let mut fetched = Vec::new();
            for _ in 0..20 {
                fetched.push(c.request_pre_keys(ik.clone(), vec![]).await.map(|k| k.len()));
            }
            (sent, fetched)
        })
    };
    let (sent, fetched) = normal.await.unwrap();
    let flooded = flood.await.unwrap();

    for (i, r) in sent.iter().enumerate() {
        assert!(r.is_ok(), "normal send {i} refused: {r:?}");
    }
    for (i, r) in fetched.iter().enumerate() {
        assert_eq!(r.as_ref().ok(), Some(&1), "prekey request {i}: {r:?}");
    }
    let accepted = flooded.iter().filter(|r| r.is_ok()).count();
    let refused: Vec<u64> = flooded.iter().filter_map(|r| r.as_ref().err()).map(retry_ms).collect();
    assert_eq!(
        accepted + refused.len(),
        1000,
        "every send answered: acked or rate_limited"
    );
    // 600/1m: the burst of 600, plus what refills (10/s) while the flood runs.
    let refilled = (started.elapsed().as_secs_f64() * 10.0).ceil() as usize;
    assert!(
        (600..=600 + refilled).contains(&accepted),
        "flooder got {accepted} of 1000 through"
    );
    assert!(
        refused.iter().all(|&ms| (1..=100).contains(&ms)),
        "a token every 100 ms"
    );
    println!(
        "flood: {accepted} accepted, {} refused; normal client: 100 sends, 20 prekey fetches, 0 refused",
        refused.len()
    );

    // What was accepted is delivered, all of it; the normal client's burst too.
    for (dev, want) in [(&victim, accepted), (&friend, 100)] {
        for _ in 0..want {
            let (seq, _) = recv(&dev.conn).await;
            dev.conn.ack(seq).await.unwrap();
        }
        assert_no_events(&dev.conn).await;
    }
    let limited = metric(
        s.admin,
        r#"tassis_gateway_rate_limited_total{limit="sends_per_device"}"#,
    );
    assert_eq!(limited as usize, refused.len());
}

/// Per-connection limits: requests (acks are not requests) and upload authorizations.
#[tokio::test]
async fn per_connection_limits() {
    let s = standalone(&[
        "--rate-requests-per-connection",
        "10/1h",
        "--rate-upload-authorizations-per-connection",
        "7/1h",
    ]);
    let url = s.ws_url();
    // Login and Register: 2 requests. The 10 deliveries it acks below are not requests.
    let dev = registered(&url, Identity::generate_ed25519(), b"d", 0).await;
    let sender = anon(&url).await;
    for i in 0..10u8 {
        sender.send(dev.address(), vec![i]).await.unwrap();
    }
    let limited = sender.send(dev.address(), b"11th".to_vec()).await.unwrap_err();
    assert!(retry_ms(&limited) > 300_000, "one request per 6 minutes: {limited:?}");
    assert_eq!(
        err_name(sender.send(dev.address(), b"12th".to_vec()).await),
        "rate_limited"
    );
    for _ in 0..10 {
        let (seq, _) = recv(&dev.conn).await;
        dev.conn.ack(seq).await.unwrap();
    }
    // The receiver's acks took nothing from its bucket: 8 more requests still pass.
    for _ in 0..7 {
        let r = dev.conn.request_upload_authorizations(1).await;
        assert_eq!(err_name(r), "unavailable", "no object store here: past the limit check");
    }
    // 2 + 7 = 9 requests; 7 upload requests, none granted (no object store here), each counted
    // as one: the upload bucket (7) is empty.
    assert_eq!(
        err_name(dev.conn.request_upload_authorizations(1).await),
        "rate_limited"
    );
    // ...and that request was the 10th: the connection is out of requests too.
    let e = dev.conn.request_upload_authorizations(1).await.unwrap_err();
    assert!(matches!(&e, ClientError::Server { description, .. } if description.starts_with("too many requests")));
    // Other connections are not affected.
    let other = anon(&url).await;
    other.send(dev.address(), b"other".to_vec()).await.unwrap();
}

/// Prekey fetches are limited per target identity, whoever asks.
#[tokio::test]
async fn prekey_fetches_per_identity_across_connections() {
    let s = standalone(&["--rate-prekey-fetches-per-identity", "5/1h"]);
    let url = s.ws_url();
    let a = registered(&url, Identity::generate_ed25519(), b"a", 10).await;
    let b = registered(&url, Identity::generate_ed25519(), b"b", 10).await;
    let (ik_a, ik_b) = (a.identity.public_key().to_vec(), b.identity.public_key().to_vec());
    let (c1, c2) = (anon(&url).await, anon(&url).await);
    for c in [&c1, &c2, &c1, &c2, &c1] {
        c.request_pre_keys(ik_a.clone(), vec![]).await.unwrap();
    }
    assert_eq!(
        err_name(c2.request_pre_keys(ik_a.clone(), vec![]).await),
        "rate_limited"
    );
    assert_eq!(
        err_name(c1.request_pre_keys(ik_a.clone(), vec![]).await),
        "rate_limited"
    );
    c2.request_pre_keys(ik_b, vec![]).await.unwrap();
    let limited = metric(
        s.admin,
        r#"tassis_gateway_rate_limited_total{limit="prekey_fetches_per_identity"}"#,
    );
    assert_eq!(limited, 2.0);
}

/// Connects from `source` and returns the first thing the server does: `Ok(())` for the
/// greeting (Configuration), or the Error name and close code of a refusal.
async fn connect_from(source: &str, server: &str) -> Result<(), (String, Option<u16>)> {
    let addr: SocketAddr = server
        .trim_start_matches("ws://")
        .trim_end_matches("/api")
        .parse()
        .unwrap();
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind(format!("{source}:0").parse().unwrap()).unwrap();
    let tcp = sock.connect(addr).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(server, tcp).await.unwrap();
    let mut error = None;
    while let Some(Ok(m)) = tokio::time::timeout(Duration::from_secs(10), ws.next()).await.unwrap() {
        match m {
            WsMessage::Binary(b) => {
                match tassis_client::frame::into_result(tassis_client::frame::decode(&b).unwrap()) {
                    Ok(_) => return Ok(()),
                    Err(ClientError::Server { name, .. }) => error = Some(name),
                    Err(e) => panic!("{e}"),
                }
            }
            WsMessage::Close(f) => return Err((error.unwrap_or_default(), f.map(|f| u16::from(f.code)))),
            _ => {}
        }
    }
    Err((error.unwrap_or_default(), None))
}

/// New connections per client address: the 4th from 127.0.0.1 is refused (Error rate_limited,
/// close 1008) while another address still connects.
#[tokio::test]
async fn connections_per_address() {
    let s = standalone(&["--rate-connections-per-ip", "3/1h"]);
    let url = s.ws_url();
    for _ in 0..3 {
        assert_eq!(connect_from("127.0.0.1", &url).await, Ok(()));
    }
    assert_eq!(
        connect_from("127.0.0.1", &url).await,
        Err(("rate_limited".to_string(), Some(1008)))
    );
    assert_eq!(connect_from("127.0.0.2", &url).await, Ok(()));
    let limited = metric(
        s.admin,
        r#"tassis_gateway_rate_limited_total{limit="connections_per_ip"}"#,
    );
    assert_eq!(limited, 1.0);
}

/// Two gateways on one Redis Cluster share the send bucket of a device: what one let through
/// counts at the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateways_share_limits_through_redis() {
    let redis = tassis_redis::testing::cluster_url();
    let ks = Process::start(BIN, "keystore", &["--redis-url", &redis]);
    let ms = Process::start(BIN, "messaging", &["--redis-url", &redis]);
    let at = Process::start(BIN, "attachments", &[]);
    let env = [
        ("TASSIS_REDIS_URL", redis.as_str()),
        ("TASSIS_RATE_SENDS_PER_DEVICE", "10/1h"),
    ];
    let (g1, g2) = (gateway_for(&ks, &ms, &at, &env), gateway_for(&ks, &ms, &at, &env));
    let dev = registered(&g1.ws_url(), Identity::generate_ed25519(), b"d", 0).await;
    let (s1, s2) = (anon(&g1.ws_url()).await, anon(&g2.ws_url()).await);
    for i in 0..6u8 {
        s1.send(dev.address(), vec![i]).await.unwrap();
    }
    for i in 6..10u8 {
        s2.send(dev.address(), vec![i]).await.unwrap();
    }
    assert_eq!(err_name(s2.send(dev.address(), b"x".to_vec()).await), "rate_limited");
    assert_eq!(err_name(s1.send(dev.address(), b"y".to_vec()).await), "rate_limited");
    for _ in 0..10 {
        let (seq, _) = recv(&dev.conn).await;
        dev.conn.ack(seq).await.unwrap();
    }
    assert_no_events(&dev.conn).await;
}
