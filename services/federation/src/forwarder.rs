//! The forwarder: drains the outbox to the peer deployments, in order, with spaced retries.
//!
//! Every messaging replica runs one task per (peer, outbox partition) that competes for the
//! partition's lease; the holder forwards it, so each partition has one forwarder at a time
//! (ordering) while partitions spread over the replicas (throughput), and a crashed holder's
//! partitions are taken over once its lease expires. A holder that loses its lease stops.
//!
//! Spreading: each replica heartbeats into a membership set and holds at most its fair share of
//! each peer's partitions (`ceil(partitions / live replicas)`). A replica over its share (one has
//! joined) gives the excess up at its next renewal, and the newcomer picks them up; when a replica
//! dies, its entry and leases expire and the others' shares grow to cover its partitions.
//!
//! One step of a held partition:
//! 1. read the failure streak and the head of the partition;
//! 2. drop what has failed for too long: a message counts as failing since the streak's first
//!    failure, or since it was queued if that is later, provided it was queued before the latest
//!    failed attempt (a message queued after it has not failed yet). Failing for
//!    `--federation-timeout` or more: dropped and counted. Claims are never dropped this way: they
//!    stand for a device's whole queue at its old home, which keeps it until the old home answers;
//! 3. if the last failure is less than `--federation-retry-interval` ago, wait until it is not;
//! 4. send the leading run of messages in one signed Forward (or the leading claim in one Claim),
//!    each message stamped with its `firstFailed`/`lastFailed`. What the peer queued, or refused
//!    for good (unknown device, malformed), leaves the outbox; at the first failure the streak is
//!    recorded and the step ends, so nothing behind a failed message overtakes it.
//!
//! An idle forwarder waits on the partition's shard channel (a push announces itself), with a
//! poll as a backstop.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tassis_messaging::redis::RedisQueues;
use tassis_proto::federation_v1::federation_client::FederationClient;
use tassis_proto::federation_v1::{ClaimReply, ClaimRequest, ForwardReply, ForwardRequest, Outcome, Signed};
use tassis_proto::tassis::{Address, ForwardedMessage};
use tassis_runtime::Shutdown;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use crate::FederationError;
use crate::config::{FederationArgs, Peer};
use crate::metrics::Metrics;
use crate::outbox::{Entry, Item, Outbox, PARTITIONS, Streak};
use crate::signing::{Credentials, header, kind, nonce};

/// How often an idle forwarder looks at its partition even without a notification.
const IDLE_POLL: Duration = Duration::from_secs(5);

/// A signed client of one peer.
pub struct PeerClient {
    /// The peer.
    peer: Peer,
    /// Its lazily connected federation endpoint.
    client: FederationClient<Channel>,
    /// Request deadline.
    timeout: Duration,
}

/// Connects lazily to a peer's federation endpoint (TLS with the system roots for https://).
pub fn peer_channel(url: &str) -> Result<Channel, FederationError> {
    let mut ep = Endpoint::from_shared(url.to_string())
        .map_err(|e| FederationError::Config(format!("peer URL {url:?}: {e}")))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(20));
    if url.starts_with("https://") {
        ep = ep
            .tls_config(ClientTlsConfig::new().with_native_roots())
            .map_err(|e| FederationError::Config(format!("peer URL {url:?}: TLS: {e}")))?;
    }
    Ok(ep.connect_lazy())
}

impl PeerClient {
    pub fn new(peer: Peer, timeout: Duration, max_message: usize) -> Result<Self, FederationError> {
        let client = FederationClient::new(peer_channel(&peer.url)?)
            .max_decoding_message_size(max_message)
            .max_encoding_message_size(max_message);
        Ok(Self { peer, client, timeout })
    }

    /// Calls one RPC with `signed`, under the request deadline and the current trace context.
    async fn call<F, Fut>(&self, signed: Signed, rpc: F) -> Result<Signed, FederationError>
    where
        F: FnOnce(FederationClient<Channel>, tonic::Request<Signed>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<Signed>, tonic::Status>>,
    {
        let mut r = tonic::Request::new(signed);
        r.set_timeout(self.timeout);
        tassis_runtime::telemetry::inject(r.metadata_mut());
        rpc(self.client.clone(), r)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| FederationError::Unavailable(format!("{}: {}", self.peer.name, s.message())))
    }

    /// Forwards messages (each with the traceparent of its send, "" when none); returns the
    /// peer's outcome of each (possibly fewer: see the proto).
    pub async fn forward(
        &self,
        creds: &Credentials,
        messages: Vec<ForwardedMessage>,
        traceparents: Vec<String>,
    ) -> Result<Vec<Outcome>, FederationError> {
        let n = nonce();
        let req = ForwardRequest {
            header: Some(header(&creds.name, &self.peer.name, kind::FORWARD, n.clone())),
            messages,
            traceparents,
        };
        let reply = self
            .call(creds.seal(&req), |mut c, r| async move { c.forward(r).await })
            .await?;
        let reply: ForwardReply = creds.open_reply(&reply, kind::FORWARD_REPLY, &self.peer.name, &n)?;
        Ok(reply
            .outcomes
            .into_iter()
            .map(|o| Outcome::try_from(o).unwrap_or(Outcome::Unspecified))
            .collect())
    }

    /// Tells the peer (a device's old home) that the device now lives here.
    pub async fn claim(&self, creds: &Credentials, address: Address) -> Result<ClaimReply, FederationError> {
        let n = nonce();
        let req = ClaimRequest {
            header: Some(header(&creds.name, &self.peer.name, kind::CLAIM, n.clone())),
            address: Some(address),
        };
        let reply = self
            .call(creds.seal(&req), |mut c, r| async move { c.claim(r).await })
            .await?;
        creds.open_reply(&reply, kind::CLAIM_REPLY, &self.peer.name, &n)
    }
}

/// Timing and batching of the forwarder.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    pub retry_interval: Duration,
    pub timeout: Duration,
    pub batch: usize,
    pub lease_ttl: Duration,
}

impl From<&FederationArgs> for Timing {
    fn from(a: &FederationArgs) -> Self {
        Self {
            retry_interval: a.federation_retry_interval,
            timeout: a.federation_timeout,
            batch: a.federation_batch,
            lease_ttl: a.federation_lease_ttl,
        }
    }
}

/// What a step leaves to do.
enum Next {
    /// More may be ready at once.
    Busy,
    /// Nothing queued.
    Idle,
    /// Failing: try again at this unix ms.
    RetryAt(i64),
}

/// Forwards every peer's outbox partitions that this process holds the lease of.
pub struct Forwarder {
    outbox: Arc<Outbox>,
    /// For the partitions' notification channels.
    queues: Arc<RedisQueues>,
    creds: Arc<Credentials>,
    clients: HashMap<String, Arc<PeerClient>>,
    timing: Timing,
    metrics: Arc<Metrics>,
    /// This process's lease owner id.
    owner: String,
    /// Live forwarders of the deployment, as of the latest heartbeat.
    live: AtomicU64,
    /// Partitions held, per peer.
    held: HashMap<String, AtomicUsize>,
    /// Entries waiting in each held partition, as of its latest step (for the depth gauge).
    depths: parking_lot::Mutex<HashMap<(String, u16), u64>>,
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Forwarder {
    pub fn new(
        outbox: Arc<Outbox>,
        queues: Arc<RedisQueues>,
        creds: Arc<Credentials>,
        clients: HashMap<String, Arc<PeerClient>>,
        timing: Timing,
        metrics: Arc<Metrics>,
    ) -> Self {
        let held = clients.keys().map(|p| (p.clone(), AtomicUsize::new(0))).collect();
        Self {
            outbox,
            queues,
            creds,
            clients,
            timing,
            metrics,
            owner: hex::encode(rand::random::<[u8; 12]>()),
            live: AtomicU64::new(1),
            held,
            depths: parking_lot::Mutex::new(HashMap::new()),
        }
    }

    /// Partitions of one peer this replica should hold at most.
    fn fair_share(&self) -> usize {
        let live = self.live.load(Ordering::Relaxed).max(1) as usize;
        usize::from(PARTITIONS).div_ceil(live)
    }

    fn held(&self, peer: &str) -> &AtomicUsize {
        self.held.get(peer).expect("a counter per peer")
    }

    /// Takes one held partition of `peer` off this replica's count if it holds more than its
    /// share; true: the caller gives its lease up.
    fn shed(&self, peer: &str) -> bool {
        let fair = self.fair_share();
        self.held(peer)
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |h| (h > fair).then(|| h - 1))
            .is_ok()
    }

    /// Records a held partition's depth (None: no longer held) and updates the peer's gauge.
    fn set_depth(&self, peer: &str, p: u16, depth: Option<u64>) {
        let mut depths = self.depths.lock();
        match depth {
            Some(d) => depths.insert((peer.to_string(), p), d),
            None => depths.remove(&(peer.to_string(), p)),
        };
        let total: u64 = depths.iter().filter(|((q, _), _)| q == peer).map(|(_, d)| *d).sum();
        self.metrics
            .outbox_depth
            .with_label_values(&[peer])
            .set(i64::try_from(total).unwrap_or(i64::MAX));
    }

    /// Heartbeats into the membership set until `shutdown`, then leaves it.
    async fn membership(self: Arc<Self>, shutdown: Shutdown) {
        let ttl = self.timing.lease_ttl;
        loop {
            match self.outbox.heartbeat(&self.owner, ttl).await {
                Ok(n) => self.live.store(n, Ordering::Relaxed),
                Err(e) => tracing::debug!(error = %e, "forwarder heartbeat"),
            }
            tokio::select! {
                _ = tokio::time::sleep(ttl / 3) => {}
                _ = shutdown.wait() => break,
            }
        }
        let _ = self.outbox.leave(&self.owner).await;
    }

    /// Starts a task per (peer, partition); they stop (releasing their leases) on `shutdown`.
    pub fn start(self: &Arc<Self>, shutdown: Shutdown) -> Vec<tokio::task::JoinHandle<()>> {
        let mut tasks = vec![tokio::spawn(self.clone().membership(shutdown.clone()))];
        for peer in self.clients.keys() {
            for p in 0..PARTITIONS {
                let (me, peer, stop) = (self.clone(), peer.clone(), shutdown.clone());
                tasks.push(tokio::spawn(async move { me.partition_task(peer, p, stop).await }));
            }
        }
        tasks
    }

    /// Competes for the partition's lease and forwards it while held.
    async fn partition_task(self: Arc<Self>, peer: String, p: u16, shutdown: Shutdown) {
        // Free leases (an expired holder's, one given up) are picked up within a quarter TTL.
        let poll = self.timing.lease_ttl / 4;
        while !shutdown.is_triggered() {
            let room = self.held(&peer).load(Ordering::Acquire) < self.fair_share();
            if room {
                match self.outbox.acquire(&peer, p, &self.owner, self.timing.lease_ttl).await {
                    Ok(true) => {
                        self.held(&peer).fetch_add(1, Ordering::AcqRel);
                        self.metrics.leases.inc();
                        let shed = self.forward_leased(&peer, p, &shutdown).await;
                        self.metrics.leases.dec();
                        if !shed {
                            self.held(&peer).fetch_sub(1, Ordering::AcqRel);
                        }
                    }
                    Ok(false) => {}
                    Err(e) => tracing::debug!(error = %e, %peer, partition = p, "outbox lease"),
                }
            }
            // Spread the replicas' attempts over the interval.
            let jitter = Duration::from_millis(rand::random::<u64>() % (poll.as_millis() as u64 + 1));
            tokio::select! {
                _ = tokio::time::sleep(poll / 4 + jitter * 3 / 4) => {}
                _ = shutdown.wait() => {}
            }
        }
    }

    /// Forwards a partition while this process holds its lease. Returns true if it gave the lease
    /// up as excess over its fair share ([`Forwarder::shed`] has already counted it off).
    ///
    /// The lease is renewed until the forwarding loop has finished its current step, and only
    /// then released: a batch in flight is never forwarded twice because its lease was handed on
    /// under it (on a rebalance or a shutdown).
    async fn forward_leased(self: &Arc<Self>, peer: &str, p: u16, shutdown: &Shutdown) -> bool {
        // `stop`: the loop should end after its step (shed, shutdown, lease lost); `done`: it has.
        let (stop, done) = (CancellationToken::new(), CancellationToken::new());
        let renewer = {
            let (me, stop, done, ttl) = (self.clone(), stop.clone(), done.clone(), self.timing.lease_ttl);
            let (peer, shutdown) = (peer.to_string(), shutdown.clone());
            tokio::spawn(async move {
                let mut last_ok = tokio::time::Instant::now();
                let mut shed = false;
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep(ttl / 3) => {}
                        _ = shutdown.wait(), if !stop.is_cancelled() => stop.cancel(),
                        _ = done.cancelled() => return shed,
                    }
                    if !stop.is_cancelled() && me.shed(&peer) {
                        tracing::debug!(%peer, partition = p, "giving an outbox partition up to another replica");
                        shed = true;
                        stop.cancel();
                    }
                    match me.outbox.renew(&peer, p, &me.owner, ttl).await {
                        Ok(true) => last_ok = tokio::time::Instant::now(),
                        // Keep forwarding through a blip, but never past the lease's own expiry.
                        Err(_) if last_ok.elapsed() < ttl * 2 / 3 => {}
                        Ok(false) | Err(_) => {
                            stop.cancel();
                            done.cancelled().await;
                            return shed;
                        }
                    }
                }
            })
        };
        let mut watch = match self
            .queues
            .watch_channel(tassis_redis::keys::outbox_channel(peer, p))
            .await
        {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(error = %e, %peer, partition = p, "cannot watch the outbox; polling");
                None
            }
        };
        while !stop.is_cancelled() {
            let next = match self.step(peer, p).await {
                Ok(next) => next,
                Err(e) => {
                    tracing::warn!(error = %e, %peer, partition = p, "forwarding step failed");
                    Next::RetryAt(tassis_runtime::unix_ms() + 1000)
                }
            };
            match next {
                Next::Busy => continue,
                Next::Idle => {
                    tokio::select! {
                        _ = async { match watch.as_mut() { Some(w) => { w.changed().await; } None => std::future::pending().await } } => {}
                        _ = tokio::time::sleep(IDLE_POLL) => {}
                        _ = stop.cancelled() => {}
                    }
                }
                Next::RetryAt(at) => {
                    let wait = Duration::from_millis((at - tassis_runtime::unix_ms()).max(0) as u64);
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = stop.cancelled() => {}
                    }
                }
            }
        }
        done.cancel();
        self.set_depth(peer, p, None);
        let shed = renewer.await.unwrap_or(false);
        // Compare-and-delete: harmless if the lease expired and somebody else holds it now.
        let _ = self.outbox.release(peer, p, &self.owner).await;
        shed
    }

    /// One step (see the module docs).
    async fn step(&self, peer: &str, p: u16) -> Result<Next, FederationError> {
        self.set_depth(peer, p, Some(self.outbox.len(peer, p).await?));
        let streak = self.outbox.streak(peer, p).await?;
        let entries = self.outbox.head(peer, p, self.timing.batch).await?;
        if entries.is_empty() {
            if streak.is_some() {
                self.outbox.clear_failures(peer, p).await?;
            }
            return Ok(Next::Idle);
        }
        let now = tassis_runtime::unix_ms();
        let (expired, live): (Vec<Entry>, Vec<Entry>) = entries
            .into_iter()
            .partition(|e| self.expired(e, streak, now) || matches!(e.item, Item::Unreadable(_)));
        if !expired.is_empty() {
            for e in &expired {
                let reason = match &e.item {
                    Item::Unreadable(why) => {
                        tracing::error!(%peer, entry = %e.id, why = %why, "dropping an unreadable outbox entry");
                        "unreadable"
                    }
                    _ => {
                        let (first, last) = stamps(e, streak);
                        tracing::warn!(%peer, entry = %e.id, first_failed = first, last_failed = last,
                            "dropping a message that failed to reach its home deployment for the federation timeout");
                        "timeout"
                    }
                };
                self.metrics.dropped.with_label_values(&[peer, reason]).inc();
            }
            let ids: Vec<String> = expired.into_iter().map(|e| e.id).collect();
            self.outbox.remove(peer, p, &ids).await?;
            return Ok(Next::Busy);
        }
        if let Some(s) = streak {
            let due = s.last.saturating_add(ms(self.timing.retry_interval));
            if now < due {
                return Ok(Next::RetryAt(due));
            }
        }
        let client = self
            .clients
            .get(peer)
            .ok_or_else(|| FederationError::Config(format!("no client for peer {peer}")))?;
        match &live[0].item {
            Item::Claim(address) => match client.claim(&self.creds, address.clone()).await {
                Ok(reply) => {
                    if !reply.accepted {
                        tracing::info!(%peer, "a device-moved claim was refused as stale (the device has moved on)");
                        self.metrics.dropped.with_label_values(&[peer, "stale_claim"]).inc();
                    }
                    self.outbox.remove(peer, p, std::slice::from_ref(&live[0].id)).await?;
                    self.succeeded(peer, p, streak).await?;
                    Ok(Next::Busy)
                }
                Err(e) => self.failed(peer, p, e).await,
            },
            _ => {
                let run: Vec<&Entry> = live.iter().take_while(|e| matches!(e.item, Item::Message(_))).collect();
                let messages = run
                    .iter()
                    .map(|e| {
                        let Item::Message(m) = &e.item else {
                            unreachable!("taken while messages")
                        };
                        let (first, last) = stamps(e, streak);
                        ForwardedMessage {
                            first_failed: first,
                            last_failed: last,
                            ..m.clone()
                        }
                    })
                    .collect();
                let traces = run.iter().map(|e| e.trace.clone().unwrap_or_default()).collect();
                let outcomes = match client.forward(&self.creds, messages, traces).await {
                    Ok(o) => o,
                    Err(e) => return self.failed(peer, p, e).await,
                };
                let mut done = Vec::new();
                let mut complete = true;
                for (i, e) in run.iter().enumerate() {
                    match outcomes.get(i).copied().unwrap_or(Outcome::Unspecified) {
                        Outcome::Queued => self.metrics.forwarded.with_label_values(&[peer]).inc(),
                        Outcome::UnknownDevice => {
                            self.metrics.dropped.with_label_values(&[peer, "unknown_device"]).inc()
                        }
                        Outcome::Invalid => self.metrics.dropped.with_label_values(&[peer, "invalid"]).inc(),
                        Outcome::Unavailable | Outcome::Unspecified => {
                            complete = false;
                            break;
                        }
                    }
                    done.push(e.id.clone());
                }
                self.outbox.remove(peer, p, &done).await?;
                if complete {
                    self.succeeded(peer, p, streak).await?;
                    Ok(Next::Busy)
                } else {
                    self.failed(
                        peer,
                        p,
                        FederationError::Unavailable(format!("{peer} could not queue every message")),
                    )
                    .await
                }
            }
        }
    }

    /// Whether a message has been failing for the timeout (claims never expire).
    fn expired(&self, e: &Entry, streak: Option<Streak>, now: i64) -> bool {
        if !matches!(e.item, Item::Message(_)) {
            return false;
        }
        let (first, _) = stamps(e, streak);
        first != 0 && now.saturating_sub(first) >= ms(self.timing.timeout)
    }

    async fn succeeded(&self, peer: &str, p: u16, streak: Option<Streak>) -> Result<(), FederationError> {
        if streak.is_some() {
            self.outbox.clear_failures(peer, p).await?;
            tracing::info!(%peer, partition = p, "forwarding to the peer works again");
        }
        Ok(())
    }

    async fn failed(&self, peer: &str, p: u16, e: FederationError) -> Result<Next, FederationError> {
        self.metrics.failed_attempts.with_label_values(&[peer]).inc();
        let s = self.outbox.record_failure(peer, p, tassis_runtime::unix_ms()).await?;
        tracing::warn!(error = %e, %peer, partition = p, failing_since = s.first, "forwarding failed; will retry");
        Ok(Next::RetryAt(s.last.saturating_add(ms(self.timing.retry_interval))))
    }
}

/// A message's (firstFailed, lastFailed): the streak as it applies to it; (0, 0) when it has not
/// failed (no streak, or queued after the latest failed attempt).
pub fn stamps(e: &Entry, streak: Option<Streak>) -> (i64, i64) {
    match streak {
        Some(s) if e.queued_at_ms <= s.last => (s.first.max(e.queued_at_ms), s.last),
        _ => (0, 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(queued_at_ms: i64) -> Entry {
        Entry {
            id: format!("{queued_at_ms}-0"),
            queued_at_ms,
            item: Item::Message(ForwardedMessage::default()),
            trace: None,
        }
    }

    #[test]
    fn a_message_fails_from_the_streak_or_its_queueing_whichever_is_later() {
        let s = Some(Streak {
            first: 1_000,
            last: 5_000,
        });
        assert_eq!(stamps(&entry(500), s), (1_000, 5_000), "queued before the streak");
        assert_eq!(stamps(&entry(3_000), s), (3_000, 5_000), "queued during it");
        assert_eq!(stamps(&entry(6_000), s), (0, 0), "queued after the latest failure");
        assert_eq!(stamps(&entry(500), None), (0, 0), "no streak");
    }
}
