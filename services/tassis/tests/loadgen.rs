//! The load generator (tassis-load) against a real `tassis standalone`: its report adds up, and
//! idle mode holds authenticated connections. (The measurements themselves are BENCHMARKS.md's.)

mod common;

use std::time::Duration;

use common::*;
use tassis_load::LoadConfig;

fn config(url: &str) -> LoadConfig {
    let mut c = LoadConfig::new(url);
    c.quiet = true;
    c.seed = format!("test-{}", rand::random::<u64>());
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_load_report_adds_up() {
    let s = standalone(&[]);
    let mut c = config(&s.ws_url());
    c.receivers = 5;
    c.senders = 3;
    c.rate = 200;
    c.duration = Duration::from_secs(2);
    c.warmup = Duration::from_millis(300);
    let r = tassis_load::run(c).await.unwrap();
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!((r.receivers_ready, r.senders_ready, r.peak_connections), (5, 3, 8));
    assert!(r.sent >= 400, "about 200/s for 2.3 s: {}", r.sent);
    assert_eq!(r.server_acked, r.sent, "every send acked");
    assert_eq!(r.delivered, r.sent, "every message delivered once");
    assert_eq!(r.receiver_acked, r.delivered);
    assert_eq!(r.stale_deliveries, 0);
    for p in [&r.send_to_delivered_ms, &r.send_to_ack_ms] {
        assert!(p.count > 0 && p.count <= r.sent);
        assert!(
            p.p50 > 0.0 && p.p50 <= p.p90 && p.p90 <= p.p99 && p.p99 <= p.p999 && p.p999 <= p.max,
            "{p:?}"
        );
    }
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["delivered"], r.delivered);
    assert!(json["send_to_delivered_ms"]["p99"].is_number());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_mode_holds_authenticated_connections() {
    let s = standalone(&[]);
    let mut c = config(&s.ws_url());
    c.receivers = 50;
    c.rate = 0;
    c.duration = Duration::from_millis(500);
    c.warmup = Duration::ZERO;
    let r = tassis_load::run(c).await.unwrap();
    assert_eq!((r.receivers_ready, r.connections_held, r.sent), (50, 50, 0));
    assert!(r.errors.is_empty(), "{:?}", r.errors);
}
