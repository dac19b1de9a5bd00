//! Fault tests (docs/security.md, docs/architecture.md#fault-tests): steady traffic through
//! 2 gateways × 2 messaging replicas on a Redis Cluster while one part is killed with SIGKILL —
//! a gateway, a messaging replica, a Redis master (in a cluster with replicas, after its
//! failover). Every message the server acked must be delivered at least once; duplicates are
//! counted and reported.
//!
//! Senders send one message at a time (closed loop) and move to the other gateway when theirs
//! fails; receivers ack everything and log in again, on whichever gateway answers, when their
//! connection drops. A send that got no Ack may or may not be delivered.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::deployment::{Deployment, redis_cli};
use common::*;
use parking_lot::Mutex;
use tassis_client::proto::Address;
use tassis_client::{Connection, Identity, ServerEvent};
use tokio::sync::Notify;

const RECEIVERS: usize = 6;
const SENDERS: usize = 3;

/// What the traffic saw.
#[derive(Default)]
struct Ledger {
    /// Payloads the server acked.
    acked: BTreeSet<Vec<u8>>,
    /// Sends that failed (no Ack): they may or may not arrive.
    unacked: BTreeSet<Vec<u8>>,
    /// Every delivery, counted per payload.
    delivered: BTreeMap<Vec<u8>, usize>,
}

struct Traffic {
    ledger: Arc<Mutex<Ledger>>,
    /// Set to stop the senders.
    stop: Arc<AtomicBool>,
    /// Notified on every ack and delivery (the test waits on it instead of sleeping).
    progress: Arc<Notify>,
    acked: Arc<AtomicUsize>,
    receivers: Vec<tokio::task::JoinHandle<()>>,
    senders: Vec<tokio::task::JoinHandle<()>>,
}

impl Traffic {
    /// Registers the receivers and starts receiving and sending on `urls`.
    async fn start(urls: Vec<String>) -> Traffic {
        let ledger = Arc::new(Mutex::new(Ledger::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let progress = Arc::new(Notify::new());
        let acked = Arc::new(AtomicUsize::new(0));
        let mut addresses = Vec::new();
        let (mut receivers, mut senders) = (Vec::new(), Vec::new());
        for i in 0..RECEIVERS {
            let id = Identity::generate_ed25519();
            let dev = registered(&urls[i % urls.len()], id.clone(), b"d", 0).await;
            addresses.push(dev.address());
            let (urls, ledger, progress) = (urls.clone(), ledger.clone(), progress.clone());
            receivers.push(tokio::spawn(receive(dev.conn, id, urls, i, ledger, progress)));
        }
        for s in 0..SENDERS {
            let (urls, to, ledger) = (urls.clone(), addresses.clone(), ledger.clone());
            let (stop, progress, acked) = (stop.clone(), progress.clone(), acked.clone());
            senders.push(tokio::spawn(send(urls, s, to, ledger, stop, progress, acked)));
        }
        Traffic {
            ledger,
            stop,
            progress,
            acked,
            receivers,
            senders,
        }
    }

    /// Waits until the server has acked `n` messages in all.
    async fn until_acked(&self, n: usize) {
        tokio::time::timeout(Duration::from_secs(90), async {
            loop {
                let notified = self.progress.notified();
                if self.acked.load(Ordering::Relaxed) >= n {
                    return;
                }
                notified.await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("traffic stalled below {n} acked sends"));
    }

    /// Stops sending, waits until every acked message was delivered, and reports.
    async fn finish(self, what: &str) {
        self.stop.store(true, Ordering::Relaxed);
        // Each sender finishes its send in flight (recording it acked or not) and stops.
        for s in self.senders {
            tokio::time::timeout(Duration::from_secs(30), s)
                .await
                .expect("senders stop")
                .unwrap();
        }
        let all_delivered = tokio::time::timeout(Duration::from_secs(90), async {
            loop {
                let notified = self.progress.notified();
                {
                    let l = self.ledger.lock();
                    if l.acked.iter().all(|p| l.delivered.contains_key(p)) {
                        return;
                    }
                }
                notified.await;
            }
        })
        .await;
        let l = self.ledger.lock();
        let lost: Vec<_> = l.acked.iter().filter(|p| !l.delivered.contains_key(*p)).collect();
        let deliveries: usize = l.delivered.values().sum();
        let duplicates = deliveries - l.delivered.len();
        let strays = l
            .delivered
            .keys()
            .filter(|p| !l.acked.contains(*p) && !l.unacked.contains(*p))
            .count();
        println!(
            "{what}: sent {}, acked by the server {}, not acked {}, delivered {} ({} unique), duplicates {duplicates}, lost {}",
            l.acked.len() + l.unacked.len(),
            l.acked.len(),
            l.unacked.len(),
            deliveries,
            l.delivered.len(),
            lost.len()
        );
        assert!(
            all_delivered.is_ok() && lost.is_empty(),
            "{what}: acked but never delivered: {lost:?}"
        );
        assert_eq!(strays, 0, "{what}: delivered payloads nobody sent");
        // Redelivery happens only for what was unacked when the fault hit: bounded by the
        // receivers' windows, far below the traffic.
        assert!(duplicates < l.acked.len() / 2, "{what}: {duplicates} duplicates");
        drop(l);
        for t in self.receivers {
            t.abort();
        }
    }
}

/// Connects to the first gateway of `urls` (starting at `start`) that accepts a login.
async fn login_anywhere(urls: &[String], start: usize, id: &Identity) -> Connection {
    for attempt in 0.. {
        let url = &urls[(start + attempt) % urls.len()];
        if let Ok(c) = Connection::connect(url).await
            && c.login(id, b"d").await.is_ok()
        {
            return c;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    unreachable!()
}

async fn receive(
    mut conn: Connection,
    id: Identity,
    urls: Vec<String>,
    i: usize,
    ledger: Arc<Mutex<Ledger>>,
    progress: Arc<Notify>,
) {
    let mut reconnects = i;
    loop {
        match conn.next_event().await {
            Some(ServerEvent::Inbound { sequence, payload }) => {
                *ledger.lock().delivered.entry(payload.to_vec()).or_default() += 1;
                progress.notify_waiters();
                let _ = conn.ack(sequence).await;
            }
            Some(ServerEvent::Closed { .. }) | None => {
                reconnects += 1;
                conn = login_anywhere(&urls, reconnects, &id).await;
            }
            Some(_) => {}
        }
    }
}

async fn send(
    urls: Vec<String>,
    s: usize,
    to: Vec<Address>,
    ledger: Arc<Mutex<Ledger>>,
    stop: Arc<AtomicBool>,
    progress: Arc<Notify>,
    acked: Arc<AtomicUsize>,
) {
    let mut gateway = s;
    let mut conn: Option<Connection> = None;
    for k in 0usize.. {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        if conn.as_ref().is_none_or(|c| c.is_closed()) {
            gateway += 1;
            conn = Connection::connect(&urls[gateway % urls.len()]).await.ok();
            if conn.is_none() {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        }
        let payload = format!("s{s}-{k}").into_bytes();
        let c = conn.as_ref().expect("connected");
        match c.send(to[k % to.len()].clone(), payload.clone()).await {
            Ok(()) => {
                ledger.lock().acked.insert(payload);
                acked.fetch_add(1, Ordering::Relaxed);
                progress.notify_waiters();
            }
            Err(_) => {
                ledger.lock().unacked.insert(payload);
                // unavailable while a backend recovers: back off a little, maybe on the other gateway.
                conn = None;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_killed_under_traffic_loses_nothing() {
    let mut d = Deployment::start(2, 2);
    let t = Traffic::start(vec![d.url(0), d.url(1)]).await;
    t.until_acked(150).await;
    d.gateways[0].kill();
    let before = t.acked.load(Ordering::Relaxed);
    t.until_acked(before + 150).await;
    t.finish("gateway kill -9").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messaging_replica_killed_under_traffic_loses_nothing() {
    let mut d = Deployment::start(2, 2);
    let t = Traffic::start(vec![d.url(0), d.url(1)]).await;
    t.until_acked(150).await;
    d.messaging[0].kill();
    let before = t.acked.load(Ordering::Relaxed);
    t.until_acked(before + 150).await;
    t.finish("messaging replica kill -9").await;
}

/// A field of `INFO`/`CLUSTER INFO` output.
fn field(text: &str, name: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .map(|v| v.trim().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_master_killed_under_traffic_loses_nothing() {
    // A cluster of its own: 3 masters with a replica each, quick failure detection.
    let url = tassis_redis::testing::own_cluster(&["--replicas", "1", "--node-timeout", "2000"]);
    let ports: Vec<u16> = url
        .trim_start_matches("redis-cluster://")
        .split(',')
        .map(|hp| hp.rsplit(':').next().unwrap().parse().unwrap())
        .collect();
    // Sends are acked only once a replica has them: a failover cannot lose them.
    let d = Deployment::start_with(&url, 2, 2, &["--redis-min-replica-acks", "1"]);
    let t = Traffic::start(vec![d.url(0), d.url(1)]).await;
    t.until_acked(150).await;

    let victim = ports[0];
    let pid = field(&redis_cli(victim, &["INFO", "server"]), "process_id").expect("the master's pid");
    assert!(Command::new("kill").args(["-9", &pid]).status().unwrap().success());
    // The failover, read from the cluster's own state: a surviving node reports the cluster ok
    // again with the victim marked failed.
    let survivor = ports[1];
    tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let nodes = redis_cli(survivor, &["CLUSTER", "NODES"]);
            let failed = nodes
                .lines()
                .any(|l| l.contains(&format!(":{victim}@")) && l.contains("fail") && !l.contains("fail?"));
            if failed && field(&redis_cli(survivor, &["CLUSTER", "INFO"]), "cluster_state").as_deref() == Some("ok") {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await; // polling the cluster's state
        }
    })
    .await
    .expect("a replica took over within 60 s");

    let before = t.acked.load(Ordering::Relaxed);
    t.until_acked(before + 150).await;
    t.finish("redis master kill -9 (failover)").await;
}
