//! Fault tests (docs/architecture.md#fault-tests): steady traffic through 2 gateways × 2 messaging
//! replicas on a Redis Cluster while one part is killed with SIGKILL — a gateway, a messaging
//! replica, a Redis master (in a cluster with replicas, after its failover). Every message the
//! server acked must be delivered at least once; duplicates are counted, reported and bounded.
//!
//! Senders send one message at a time (closed loop) to every receiver in turn, and move to the
//! other gateway when theirs fails. Receivers ack everything and log in again, on whichever gateway
//! answers, when their connection drops. One more receiver stays offline until the fault is over,
//! so acked messages sit in its queue across the fault and are read back only afterwards. A send
//! that got no Ack (its connection died, or `unavailable`) may or may not be delivered.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::deployment::Deployment;
use common::*;
use parking_lot::Mutex;
use tassis_client::proto::Address;
use tassis_client::{Connection, Identity, ServerEvent};
use tassis_redis::keys;
use tassis_redis::testing::OwnCluster;
use tokio::sync::Notify;

/// Receivers logged in from the start.
const RECEIVERS: usize = 6;
/// Index of the receiver that logs in only once the fault is over.
const OFFLINE: usize = RECEIVERS;
const SENDERS: usize = 3;
/// The gateway's `--delivery-window` (its default): deliveries a device may have unacked. A broken
/// subscription can redeliver at most that many of its messages.
const DELIVERY_WINDOW: usize = 64;

/// What the traffic saw.
#[derive(Default)]
struct Ledger {
    /// Payloads the server acked.
    acked: BTreeSet<Vec<u8>>,
    /// Sends that failed (no Ack): they may or may not arrive.
    unacked: BTreeSet<Vec<u8>>,
    /// Every delivery, counted per payload.
    delivered: BTreeMap<Vec<u8>, usize>,
    /// Acked sends per receiver.
    acked_to: Vec<usize>,
    /// The test's phase, set by the test as the fault unfolds.
    phase: usize,
    /// Sends that began and ended within one phase, by (phase, receiver): acked, and not acked.
    acked_within: BTreeMap<(usize, usize), usize>,
    failed_within: BTreeMap<(usize, usize), usize>,
}

struct Traffic {
    ledger: Arc<Mutex<Ledger>>,
    /// Set to stop the senders.
    stop: Arc<AtomicBool>,
    /// Notified on every ack and delivery (the test waits on it instead of sleeping).
    progress: Arc<Notify>,
    /// Lets the offline receiver log in.
    go_online: Arc<Notify>,
    /// Every receiver's address, the offline one last.
    addresses: Vec<Address>,
    receivers: Vec<tokio::task::JoinHandle<()>>,
    senders: Vec<tokio::task::JoinHandle<()>>,
    started: Instant,
}

impl Traffic {
    /// Registers the receivers and starts receiving and sending on `urls`.
    async fn start(urls: Vec<String>) -> Traffic {
        let ledger = Arc::new(Mutex::new(Ledger {
            acked_to: vec![0; RECEIVERS + 1],
            ..Ledger::default()
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let progress = Arc::new(Notify::new());
        let go_online = Arc::new(Notify::new());
        let mut addresses = Vec::new();
        let (mut receivers, mut senders) = (Vec::new(), Vec::new());
        for i in 0..=RECEIVERS {
            let id = Identity::generate_ed25519();
            let dev = registered(&urls[i % urls.len()], id.clone(), b"d", 0).await;
            addresses.push(dev.address());
            let conn = if i == OFFLINE {
                let _ = dev.conn.close().await;
                None
            } else {
                Some(dev.conn)
            };
            let (urls, ledger, progress, go_online) =
                (urls.clone(), ledger.clone(), progress.clone(), go_online.clone());
            receivers.push(tokio::spawn(async move {
                let conn = match conn {
                    Some(c) => c,
                    None => {
                        go_online.notified().await;
                        login_anywhere(&urls, i, &id).await
                    }
                };
                receive(conn, id, urls, i, ledger, progress).await
            }));
        }
        for s in 0..SENDERS {
            let (urls, to, ledger) = (urls.clone(), addresses.clone(), ledger.clone());
            let (stop, progress) = (stop.clone(), progress.clone());
            senders.push(tokio::spawn(send(urls, s, to, ledger, stop, progress)));
        }
        Traffic {
            ledger,
            stop,
            progress,
            go_online,
            addresses,
            receivers,
            senders,
            started: Instant::now(),
        }
    }

    /// Starts phase `n` (sends in flight belong to no phase).
    fn set_phase(&self, n: usize) {
        self.ledger.lock().phase = n;
    }

    /// Acked sends so far, per receiver.
    fn acked_to(&self) -> Vec<usize> {
        self.ledger.lock().acked_to.clone()
    }

    /// Waits until `done` holds for the ledger (re-checked on every ack and delivery).
    async fn until(&self, what: &str, done: impl Fn(&Ledger) -> bool) {
        tokio::time::timeout(Duration::from_secs(60), async {
            loop {
                let notified = self.progress.notified();
                if done(&self.ledger.lock()) {
                    return;
                }
                notified.await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("traffic stalled before {what}"));
    }

    /// Waits until the server has acked `n` more sends than `since` (an `acked_to` snapshot) to
    /// the receivers `to`, together.
    async fn until_acked(&self, since: &[usize], to: &[usize], n: usize) {
        let total = |a: &[usize]| to.iter().map(|&i| a[i]).sum::<usize>();
        let goal = total(since) + n;
        self.until(&format!("{n} more acked sends to receivers {to:?}"), |l| {
            total(&l.acked_to) >= goal
        })
        .await;
    }

    /// Stops sending, lets the offline receiver log in, waits until every acked message was
    /// delivered, and reports.
    async fn finish(self, what: &str) {
        self.stop.store(true, Ordering::Relaxed);
        // Each sender finishes its send in flight (recording it acked or not) and stops.
        for s in self.senders {
            tokio::time::timeout(Duration::from_secs(30), s)
                .await
                .expect("senders stop")
                .unwrap();
        }
        self.go_online.notify_one();
        let all_delivered = tokio::time::timeout(Duration::from_secs(60), async {
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
        let lost: Vec<_> = l
            .acked
            .iter()
            .filter(|p| !l.delivered.contains_key(*p))
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect();
        let deliveries: usize = l.delivered.values().sum();
        let duplicates = deliveries - l.delivered.len();
        let most = l.delivered.values().copied().max().unwrap_or(0);
        let strays = l
            .delivered
            .keys()
            .filter(|p| !l.acked.contains(*p) && !l.unacked.contains(*p))
            .count();
        println!(
            "{what}: sent {}, acked by the server {}, not acked {}, delivered {deliveries} ({} unique, {} of them \
             not acked), duplicates {duplicates} (at most {most} deliveries of one message), lost {}, {:.1}s of traffic",
            l.acked.len() + l.unacked.len(),
            l.acked.len(),
            l.unacked.len(),
            l.delivered.len(),
            l.delivered.keys().filter(|p| l.unacked.contains(*p)).count(),
            lost.len(),
            self.started.elapsed().as_secs_f64(),
        );
        assert!(
            all_delivered.is_ok() && lost.is_empty(),
            "{what}: acked but never delivered: {lost:?}"
        );
        assert!(
            l.acked_to[OFFLINE] > 0,
            "{what}: nothing acked for the offline receiver"
        );
        assert_eq!(strays, 0, "{what}: delivered payloads nobody sent");
        // Only messages delivered but not yet acked when a subscription broke come again: at most
        // one delivery window per receiver for the one fault.
        assert!(
            duplicates <= (RECEIVERS + 1) * DELIVERY_WINDOW,
            "{what}: {duplicates} duplicates"
        );
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
        tokio::time::sleep(Duration::from_millis(100)).await; // retry backoff
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
                tokio::time::sleep(Duration::from_millis(50)).await; // retry backoff
                continue;
            }
        }
        let payload = format!("s{s}-{k}").into_bytes();
        let c = conn.as_ref().expect("connected");
        let r = k % to.len();
        let phase = ledger.lock().phase;
        match c.send(to[r].clone(), payload.clone()).await {
            Ok(()) => {
                let mut l = ledger.lock();
                l.acked.insert(payload);
                l.acked_to[r] += 1;
                if l.phase == phase {
                    *l.acked_within.entry((phase, r)).or_default() += 1;
                }
                drop(l);
                progress.notify_waiters();
            }
            Err(_) => {
                {
                    let mut l = ledger.lock();
                    l.unacked.insert(payload);
                    if l.phase == phase {
                        *l.failed_within.entry((phase, r)).or_default() += 1;
                    }
                }
                progress.notify_waiters();
                // unavailable while a backend recovers: back off a little, maybe on the other gateway.
                conn = None;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Every receiver, the offline one included.
fn everyone() -> Vec<usize> {
    (0..=RECEIVERS).collect()
}

/// The receivers logged in from the start.
fn online() -> Vec<usize> {
    (0..RECEIVERS).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_killed_under_traffic_loses_nothing() {
    let mut d = Deployment::start(2, 2);
    let t = Traffic::start(vec![d.url(0), d.url(1)]).await;
    t.until_acked(&t.acked_to(), &everyone(), 150).await;
    d.gateways[0].kill();
    t.until_acked(&t.acked_to(), &everyone(), 150).await;
    t.finish("gateway kill -9").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messaging_replica_killed_under_traffic_loses_nothing() {
    let mut d = Deployment::start(2, 2);
    let t = Traffic::start(vec![d.url(0), d.url(1)]).await;
    t.until_acked(&t.acked_to(), &everyone(), 150).await;
    d.messaging[0].kill();
    t.until_acked(&t.acked_to(), &everyone(), 150).await;
    t.finish("messaging replica kill -9").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_master_killed_under_traffic_loses_nothing() {
    // A cluster of its own (stopped when the test ends, however it ends): 3 masters with a
    // replica each, quick failure detection.
    let cluster = OwnCluster::start(&["--replicas", "1", "--node-timeout", "2000"]);
    // Sends are acked only once a replica has them: a failover cannot lose them.
    let d = Deployment::start_with(cluster.url(), 2, 2, &["--redis-min-replica-acks", "1"]);
    let t = Traffic::start(vec![d.url(0), d.url(1)]).await;
    t.until_acked(&t.acked_to(), &everyone(), 150).await;

    // The victim: the master holding the offline receiver's queue, full of acked messages.
    let slot_of = |a: &Address| keys::hash_slot(&keys::queue(&a.identity_key, &a.device_id));
    let slot = slot_of(&t.addresses[OFFLINE]);
    let victim = cluster.master_of(slot);
    let (on_victim, elsewhere): (Vec<usize>, Vec<usize>) = everyone()
        .into_iter()
        .partition(|&i| cluster.master_of(slot_of(&t.addresses[i])) == victim);
    assert!(t.acked_to()[OFFLINE] > 0);
    let killed = Instant::now();
    cluster.kill_node(victim);

    // The failover, read from the cluster's own state.
    let promoted = cluster.wait_failover(victim, slot, Duration::from_secs(30)).await;
    let failed_over = killed.elapsed();
    // The promoted replica has no replica of its own yet: with 1 replica ack required, sends to
    // its queues are refused (`unavailable`), never acked; the other masters' keep flowing. Phase 1:
    // sends begun and answered in it saw the promoted master without a replica.
    t.set_phase(1);
    let at_failover = t.acked_to();
    let in_phase_1 = |m: &BTreeMap<(usize, usize), usize>, to: &[usize]| -> usize {
        to.iter().map(|&i| m.get(&(1, i)).copied().unwrap_or(0)).sum()
    };
    let more = if elsewhere.is_empty() { 0 } else { 10 };
    let (v, e) = (on_victim.clone(), elsewhere.clone());
    t.until("sends refused on the promoted master and acked elsewhere", move |l| {
        let total = |a: &[usize]| e.iter().map(|&i| a[i]).sum::<usize>();
        in_phase_1(&l.failed_within, &v) > 0 && total(&l.acked_to) >= total(&at_failover) + more
    })
    .await;
    t.set_phase(2);
    let acked_unreplicated = in_phase_1(&t.ledger.lock().acked_within, &on_victim);
    assert_eq!(
        acked_unreplicated, 0,
        "a send to a device of the promoted master was acked while it had no replica"
    );

    // The old master comes back as the promoted one's replica; its queues take sends again.
    let restarted = Instant::now();
    cluster.start_node(victim);
    let master = cluster.wait_replica_linked(victim, Duration::from_secs(30)).await;
    assert_eq!(
        master, promoted,
        "the old master rejoined as a replica of the promoted one"
    );
    let relinked = restarted.elapsed();
    t.until_acked(&t.acked_to(), &on_victim, 10).await;
    println!(
        "redis master kill -9: failover seen {:.1}s after the kill; old master restarted {:.1}s after the kill, \
         linked as a replica {:.1}s later; {} of {} receivers on that master",
        failed_over.as_secs_f64(),
        (restarted - killed).as_secs_f64(),
        relinked.as_secs_f64(),
        on_victim.len(),
        RECEIVERS + 1
    );
    // Every online receiver gets acked sends again.
    let now = t.acked_to();
    for i in online() {
        t.until_acked(&now, &[i], 3).await;
    }
    t.finish("redis master kill -9 (failover)").await;
}
