//! Observability end to end: traces exported over OTLP (to a test receiver) follow one message
//! across the gateway and messaging processes, without anything that identifies the sender; and
//! /metrics shows the operator's series with exact values after a scripted session.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::otlp::*;
use common::*;
use tassis_client::Identity;
use tassis_e2e::{Process, http_get};

#[tokio::test]
async fn one_message_is_one_trace_across_gateway_and_messaging() {
    let receiver = Receiver::default();
    let otlp = format!("http://{}", receiver.start().await);
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.as_str()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ("OTEL_TRACES_SAMPLER", "always_on"),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ];
    let ks = Process::start_with_env(BIN, "keystore", &[], &env);
    let ms = Process::start_with_env(BIN, "messaging", &["--keystore", &ks.grpc_url()], &env);
    let at = Process::start_with_env(BIN, "attachments", &[], &env);
    let gw = gateway_for(&ks, &ms, &at, &env);
    let url = gw.ws_url();
    let d = registered(&url, Identity::generate_ed25519(), b"d", 1).await;
    let a = anon(&url).await;
    a.send(d.address(), b"traced".to_vec()).await.unwrap();
    let (seq, body) = recv(&d.conn).await;
    assert_eq!(&body[..], b"traced");
    d.conn.ack(seq).await.unwrap();

    // The send: the gateway's operation span and messaging's Enqueue (and its backend call) share
    // one trace.
    let spans = receiver
        .wait_for("the send's trace in gateway and messaging", |spans| {
            trace_ids(spans, "tassis-gateway", "tassis send")
                .iter()
                .any(|t| in_trace(spans, "tassis-messaging", t))
        })
        .await;
    let send_traces = trace_ids(&spans, "tassis-gateway", "tassis send");
    assert_eq!(send_traces.len(), 1, "one send, one trace: {spans:#?}");
    let send_trace = &send_traces[0];
    let names_in = |trace: &[u8], service: &str| -> Vec<String> {
        spans
            .iter()
            .filter(|s| s.trace_id == trace && s.service == service)
            .map(|s| s.name.clone())
            .collect()
    };
    let messaging_names = names_in(send_trace, "tassis-messaging");
    assert!(
        messaging_names.iter().any(|n| n.ends_with("Messaging/Enqueue")),
        "messaging's gRPC span is in the send's trace: {messaging_names:?}"
    );
    assert!(
        messaging_names.iter().any(|n| n == "memory enqueue"),
        "the backend call is in the send's trace: {messaging_names:?}"
    );

    // Nothing in the anonymous send's trace identifies the sender: no peer address, no identity.
    for s in spans.iter().filter(|s| &s.trace_id == send_trace) {
        for (k, v) in &s.attributes {
            let k = k.to_ascii_lowercase();
            assert!(
                !(k.contains("peer") || k.contains("client.address") || k.contains("net.sock")),
                "span {} of {} has attribute {k}={v}",
                s.name,
                s.service
            );
            assert!(
                !v.contains("127.0.0.1"),
                "span {} of {} names an address: {k}={v}",
                s.name,
                s.service
            );
        }
    }

    // The delivery continues the send's trace: messaging's delivery span and the gateway's push
    // to the client carry the send's trace id, so one trace covers the message end to end.
    let send_trace = send_trace.clone();
    receiver
        .wait_for("the delivery in the send's trace, in messaging and gateway", |spans| {
            in_trace_named(spans, "tassis-messaging", "messaging deliver", &send_trace)
                && in_trace_named(spans, "tassis-gateway", "gateway push", &send_trace)
        })
        .await;
    drop((ks, ms, at, gw));
}

/// Value of one series line (`name{labels} value`) in a /metrics body.
fn series(metrics: &str, line_start: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(line_start) && l[line_start.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

async fn scrape(admin: SocketAddr) -> String {
    let (code, body) = tokio::task::spawn_blocking(move || http_get(admin, "/metrics"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(code, 200);
    body
}

/// Polls /metrics until `line_start` has `value` (metrics updated by background tasks, e.g. acks
/// applied after the client's ack frame, land shortly after the client sees its reply).
async fn wait_series(admin: SocketAddr, line_start: &str, value: f64) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let m = scrape(admin).await;
        if series(&m, line_start) == Some(value) || tokio::time::Instant::now() > deadline {
            return m;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn metrics_after_a_scripted_session() {
    let ks = Process::start(BIN, "keystore", &[]);
    let ms = Process::start(BIN, "messaging", &["--keystore", &ks.grpc_url()]);
    let at = Process::start(BIN, "attachments", &[]);
    let gw = gateway_for(&ks, &ms, &at, &[]);
    let url = gw.ws_url();

    // A device registers and goes away; two messages wait for it.
    let d = registered(&url, Identity::generate_ed25519(), b"d", 1).await;
    let d_addr = d.address();
    let identity = d.identity.clone();
    drop(d);
    let a = anon(&url).await;
    a.send(d_addr.clone(), b"one".to_vec()).await.unwrap();
    a.send(d_addr.clone(), b"two".to_vec()).await.unwrap();
    // A send to nobody.
    let unknown = address(&Identity::generate_ed25519(), b"x");
    assert_eq!(err_name(a.send(unknown, b"lost".to_vec()).await), "unknown_device");

    // It comes back: a backlog of two; it acks the first only and leaves.
    let c = login(&url, &identity, b"d").await;
    let (seq1, _) = recv(&c).await;
    let (_seq2, _) = recv(&c).await;
    c.ack(seq1).await.unwrap();
    wait_series(ms.admin, "tassis_messaging_acked_total", 1.0).await;
    drop(c);
    // Again: the unacked one is redelivered, and acked.
    let c = login(&url, &identity, b"d").await;
    let (seq, body) = recv(&c).await;
    assert_eq!(&body[..], b"two");
    c.ack(seq).await.unwrap();
    let m = wait_series(ms.admin, "tassis_messaging_acked_total", 2.0).await;
    // A wrong login (signed over another nonce): refused, and the connection is closed.
    let bad = anon(&url).await;
    let resp = tassis_client::frame::auth_response(&Identity::generate_ed25519(), b"z", &[0u8; 32]);
    assert_eq!(
        err_name(
            bad.request(tassis_client::proto::message::Payload::AuthResponse(resp))
                .await
        ),
        "unauthorized"
    );

    for (line, want) in [
        ("tassis_messaging_enqueued_total", 2.0),
        ("tassis_messaging_delivered_total", 3.0),
        ("tassis_messaging_acked_total", 2.0),
        ("tassis_messaging_redeliveries_total", 1.0),
        ("tassis_messaging_delivery_streams", 1.0),
        ("tassis_messaging_subscriptions", 1.0),
        // Two subscriptions found a backlog (2, then 1); the first login found none.
        ("tassis_messaging_backlog_at_subscribe_count", 3.0),
        ("tassis_messaging_backlog_at_subscribe_sum", 3.0),
        (r#"tassis_messaging_backend_seconds_count{op="enqueue"}"#, 3.0),
        (r#"tassis_messaging_backend_seconds_count{op="ack"}"#, 2.0),
    ] {
        assert_eq!(series(&m, line), Some(want), "{line} in:\n{m}");
    }

    // Connection gauges settle once closed connections are gone (the refused one, the dropped
    // devices').
    wait_series(gw.admin, r#"tassis_gateway_connections{kind="anonymous"}"#, 1.0).await;
    let g = wait_series(gw.admin, r#"tassis_gateway_connections{kind="authenticated"}"#, 1.0).await;
    for (line, want) in [
        (r#"tassis_gateway_connections{kind="authenticated"}"#, 1.0),
        (r#"tassis_gateway_connections{kind="anonymous"}"#, 1.0),
        (r#"tassis_gateway_logins_total{outcome="ok"}"#, 3.0),
        (r#"tassis_gateway_logins_total{outcome="refused"}"#, 1.0),
        (r#"tassis_gateway_operations_total{op="send",outcome="ok"}"#, 2.0),
        (
            r#"tassis_gateway_operations_total{op="send",outcome="unknown_device"}"#,
            1.0,
        ),
        (r#"tassis_gateway_operations_total{op="register",outcome="ok"}"#, 1.0),
        (r#"tassis_gateway_deliveries_total{event="pushed"}"#, 3.0),
        (r#"tassis_gateway_deliveries_total{event="acked"}"#, 2.0),
        ("tassis_gateway_enqueue_to_delivery_seconds_count", 3.0),
        (r#"tassis_gateway_rate_limited_total{limit="sends_per_device"}"#, 0.0),
        ("tassis_gateway_delivery_streams", 1.0),
        ("tassis_gateway_messaging_replicas", 1.0),
        ("tassis_gateway_delivery_stream_reconnects_total", 0.0),
    ] {
        assert_eq!(series(&g, line), Some(want), "{line} in:\n{g}");
    }

    let k = scrape(ks.admin).await;
    for (line, want) in [
        (r#"tassis_keystore_backend_seconds_count{op="register"}"#, 1.0),
        (r#"tassis_keystore_backend_errors_total{op="register"}"#, 0.0),
    ] {
        assert_eq!(series(&k, line).unwrap_or(0.0), want, "{line} in:\n{k}");
    }
    drop(bad);
}
