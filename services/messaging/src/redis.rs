//! The Redis Cluster queues, for production: queues survive restarts, and any messaging replica
//! can serve any device. Same semantics as [`crate::memory`], held to the same behaviour suite.
//!
//! Per device (names from [`tassis_redis::keys`], under the identity's hash tag, so in the same
//! slot as the keystore's registrations):
//! - the queue, a Stream `mq:{ik}:<dev>`, one entry per message with field `p` = payload. Entry
//!   ids are Redis's `<ms>-<seq>`, which is exactly [`MessageId`];
//! - a sharded pub/sub channel `mn:{ik}:<dev>` announcing new entries.
//!
//! **Enqueue** is one script on the slot's master: registration check (HEXISTS on the keystore's
//! devices hash), `XADD MAXLEN = cap` (exact trimming: the cap is honoured exactly, oldest first),
//! `XTRIM MINID` (the age limit, measured from the new entry's id so both use the server's clock),
//! `PEXPIRE` (a queue nobody comes back for disappears once its newest message is too old), and
//! `SPUBLISH`. The channel travels in ARGV, not KEYS: it is not a key (declaring it would make ACL
//! key patterns apply to it), and Redis only requires a script's shard channels to live on the
//! script's node — ours share the hash tag, hence the slot (checked on Redis 7.0: a channel of
//! another node's slot fails with "non local key", one in the same slot works undeclared).
//!
//! **Replica acks** (`--redis-min-replica-acks N`): Redis replicates asynchronously, so an entry
//! the master stored can die with it. With N > 0 the enqueue script also returns the id of the
//! node that ran it, and `WAIT N timeout` follows on the same client's connection to that node;
//! the enqueue succeeds only if N replicas confirmed the write in time, and fails with
//! `unavailable` otherwise (the sender retries; the entry may exist and be delivered twice).
//! Acks (XDEL) need no wait: a lost one only causes a redelivery.
//!
//! **Notifications** need no connection per device: one dedicated subscriber client per process
//! (RESP3, cluster-aware: fred sends each SSUBSCRIBE to the channel's slot owner) carries every
//! watched channel. Watches are reference-counted per channel: SSUBSCRIBE when the first watcher
//! of a device arrives, SUNSUBSCRIBE when the last one is dropped. A dispatcher task bumps the
//! device's `tokio::sync::watch` on each message. When the subscriber reconnects (or the cluster
//! layout changes, which can move a channel's slot), every subscribed channel is SSUBSCRIBEd again
//! and *then* every watcher is bumped, so delivery tasks re-read anything announced while the
//! subscription was down.
//!
//! A slot migration silently moves channels: the old owner drops their subscribers (its
//! SUNSUBSCRIBE push is swallowed by fred) and the subscriber client issues no command that would
//! reveal a MOVED. So the subscriber re-reads the cluster layout every
//! [`CLUSTER_CHECK_INTERVAL`]; a changed layout triggers the resubscribe-and-wake above.
//! Notifications published in between are caught by that wake-up: late, never lost.

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use bytes::Bytes;
use futures::StreamExt;
use parking_lot::Mutex;
use tassis_redis::fred::clients::Client;
use tassis_redis::fred::interfaces::{ClientLike, EventInterface, PubsubInterface, StreamsInterface};
use tassis_redis::fred::types::{Key, Value};
use tassis_redis::{Redis, RedisArgs, RedisError, Script, keys};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::backend::{DeviceAddress, QueueBackend, Retention, StoredMessage, Watch};
use crate::{MessageId, MessagingError};

/// The stream field holding the payload.
const PAYLOAD_FIELD: &str = "p";

/// The stream field holding the enqueue's W3C traceparent (absent when not traced).
const TRACE_FIELD: &str = "t";

/// KEYS: the keystore's devices hash, the queue, the device's federation handoff marker.
/// ARGV: device id, payload, cap, max age (ms), notification channel, traceparent (empty when not
/// traced), `1` to also return the id of the cluster node that ran it (for the replica-ack WAIT).
/// Returns the new entry id (with `1`: `[entry id, node id]`), or nil when the device is not
/// registered. A device whose queue is being handed over to its new home deployment (the marker
/// exists; its registration is already gone) still queues here, behind what is being handed
/// over, so that the new home gets everything in send order (tassis-federation).
const ENQUEUE: &str = r#"
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 and redis.call('EXISTS', KEYS[3]) == 0 then return false end
local id
if ARGV[6] ~= '' then
  id = redis.call('XADD', KEYS[2], 'MAXLEN', '=', ARGV[3], '*', 'p', ARGV[2], 't', ARGV[6])
else
  id = redis.call('XADD', KEYS[2], 'MAXLEN', '=', ARGV[3], '*', 'p', ARGV[2])
end
local ms = tonumber(string.match(id, '^(%d+)-'))
local max_age = tonumber(ARGV[4])
if ms > max_age then redis.call('XTRIM', KEYS[2], 'MINID', string.format('%.0f', ms - max_age)) end
redis.call('PEXPIRE', KEYS[2], max_age)
redis.call('SPUBLISH', ARGV[5], id)
if ARGV[7] == '1' then return {id, redis.call('CLUSTER', 'MYID')} end
return id
"#;

/// KEYS: the queue. ARGV: oldest id still within the age limit. Drops older entries and returns
/// the number left.
const DEPTH: &str = r#"
redis.call('XTRIM', KEYS[1], 'MINID', ARGV[1])
return redis.call('XLEN', KEYS[1])
"#;

/// Queues in Redis (Cluster).
pub struct RedisQueues {
    /// The process's shared connection pool.
    redis: Redis,
    /// Retention limits, applied at enqueue (cap and age) and at read (age).
    retention: Retention,
    /// [`ENQUEUE`].
    enqueue: Script,
    /// [`DEPTH`].
    depth: Script,
    /// New-message notifications over sharded pub/sub.
    notifier: Notifier,
    /// Replicas (and how long to wait for them) an enqueue must reach before it is acked.
    replica_acks: Option<(u32, std::time::Duration)>,
}

impl RedisQueues {
    /// Queues on an existing connection; opens the process's pub/sub subscriber.
    pub async fn new(redis: Redis, retention: Retention) -> Result<Self, RedisError> {
        let notifier = Notifier::start(redis.connect_subscriber().await?);
        Ok(Self {
            redis,
            retention,
            enqueue: Script::new(ENQUEUE),
            depth: Script::new(DEPTH),
            notifier,
            replica_acks: None,
        })
    }

    /// Acks an enqueue only once `n` replicas of the queue's master have it (Redis WAIT on the
    /// connection that wrote it), waiting at most `timeout`.
    pub fn with_replica_acks(mut self, acks: Option<(u32, std::time::Duration)>) -> Self {
        self.replica_acks = acks;
        self
    }

    /// Connects (see [`tassis_redis::connect()`]) and builds the queues.
    pub async fn connect(args: &RedisArgs, retention: Retention) -> Result<Self, RedisError> {
        Self::new(tassis_redis::connect(args).await?, retention).await
    }

    /// The name (CLIENT SETNAME) of the pub/sub subscriber's connections, to find them in
    /// `CLIENT LIST`.
    pub fn subscriber_name(&self) -> String {
        self.notifier.shared.client.id().to_string()
    }

    /// A watch on any shard channel, through the same reference-counted subscriber as the
    /// devices' notifications (the federation forwarder watches its outbox partitions' channels).
    pub async fn watch_channel(&self, channel: String) -> Result<Watch, MessagingError> {
        self.notifier.watch(channel).await
    }

    /// The age limit in ms, capped at a century so that server-side arithmetic (XTRIM MINID,
    /// PEXPIRE) never overflows whatever is configured.
    fn max_age_ms(&self) -> u64 {
        const CENTURY_MS: u64 = 100 * 365 * 86_400_000;
        u64::try_from(self.retention.max_age.as_millis()).map_or(CENTURY_MS, |ms| ms.min(CENTURY_MS))
    }

    /// The oldest id still within the age limit, by this process's clock.
    fn oldest_kept(&self) -> MessageId {
        let now = tassis_runtime::unix_ms().max(0) as u64;
        MessageId::new(now.saturating_sub(self.max_age_ms()), 0)
    }
}

fn unavailable(e: impl std::fmt::Display) -> MessagingError {
    MessagingError::Unavailable(e.to_string())
}

fn bad_reply(what: &str, v: &impl std::fmt::Debug) -> MessagingError {
    MessagingError::Unavailable(format!("unexpected reply from Redis to {what}: {v:?}"))
}

fn value_bytes(v: Value) -> Option<Bytes> {
    match v {
        Value::Bytes(b) => Some(b),
        Value::String(s) => Some(s.into_inner()),
        _ => None,
    }
}

/// The smallest id greater than `id`, if any.
fn id_after(id: MessageId) -> Option<MessageId> {
    match id.seq.checked_add(1) {
        Some(seq) => Some(MessageId::new(id.ms, seq)),
        None => id.ms.checked_add(1).map(|ms| MessageId::new(ms, 0)),
    }
}

/// One XRANGE entry: `[id, [field, value, ...]]`.
fn parse_entry(entry: Value) -> Result<StoredMessage, MessagingError> {
    let Value::Array(parts) = entry else {
        return Err(bad_reply("XRANGE", &entry));
    };
    let mut parts = parts.into_iter();
    let id = parts
        .next()
        .and_then(|v| v.as_string())
        .and_then(|s| s.parse::<MessageId>().ok())
        .ok_or_else(|| bad_reply("XRANGE", &"an entry without a valid id"))?;
    let fields = match parts.next() {
        Some(Value::Array(f)) => f,
        other => return Err(bad_reply("XRANGE", &other)),
    };
    let mut fields = fields.into_iter();
    let (mut payload, mut trace) = (None, None);
    while let (Some(name), Some(value)) = (fields.next(), fields.next()) {
        if name.as_bytes() == Some(PAYLOAD_FIELD.as_bytes()) {
            payload = Some(value_bytes(value).ok_or_else(|| bad_reply("XRANGE", &"a non-string payload"))?);
        } else if name.as_bytes() == Some(TRACE_FIELD.as_bytes()) {
            trace = value.as_string();
        }
    }
    let payload = payload.ok_or_else(|| bad_reply("XRANGE", &format!("entry {id} without a payload")))?;
    Ok(StoredMessage { id, payload, trace })
}

#[async_trait::async_trait]
impl QueueBackend for RedisQueues {
    fn kind(&self) -> &'static str {
        "redis"
    }

    async fn enqueue(&self, to: &DeviceAddress, payload: Bytes) -> Result<MessageId, MessagingError> {
        let (ik, dev) = (&to.identity_key[..], &to.device_id[..]);
        let keys: Vec<Key> = vec![
            keys::keystore_devices(ik).into(),
            keys::queue(ik, dev).into(),
            keys::handoff(ik, dev).into(),
        ];
        let args = vec![
            Value::Bytes(to.device_id.clone()),
            Value::Bytes(payload),
            Value::Integer(i64::try_from(self.retention.max_queue_len).unwrap_or(i64::MAX)),
            Value::Integer(i64::try_from(self.max_age_ms()).unwrap_or(i64::MAX)),
            Value::String(keys::notify_channel(ik, dev).into()),
            Value::String(crate::backend::current_traceparent().unwrap_or_default().into()),
        ];
        let reply = tassis_redis::replicas::run_acked(&self.redis, &self.enqueue, keys, args, self.replica_acks)
            .await
            .map_err(unavailable)?;
        match reply {
            Value::Null => Err(MessagingError::UnknownDevice),
            other => other
                .as_string()
                .and_then(|s| s.parse::<MessageId>().ok())
                .ok_or_else(|| bad_reply("the enqueue script", &other)),
        }
    }

    async fn read(
        &self,
        device: &DeviceAddress,
        after: Option<MessageId>,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, MessagingError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        // Entries older than the age limit may not be trimmed yet (trimming happens on enqueue):
        // start no earlier than the oldest id still kept. The start is inclusive, so "after `a`"
        // starts at the id right after `a` (compared as numbers by Redis, as by MessageId).
        let oldest = self.oldest_kept();
        let start = match after {
            None => oldest,
            Some(a) => match id_after(a) {
                Some(next) => next.max(oldest),
                None => return Ok(Vec::new()), // nothing can come after the largest id
            },
        };
        let key = keys::queue(&device.identity_key, &device.device_id);
        let reply: Value = self
            .redis
            .pool()
            .xrange(key, start.to_string(), "+", Some(limit as u64))
            .await
            .map_err(unavailable)?;
        match reply {
            Value::Null => Ok(Vec::new()),
            Value::Array(entries) => entries.into_iter().map(parse_entry).collect(),
            other => Err(bad_reply("XRANGE", &other)),
        }
    }

    async fn ack(&self, device: &DeviceAddress, id: MessageId) -> Result<bool, MessagingError> {
        let key = keys::queue(&device.identity_key, &device.device_id);
        let removed: i64 = self.redis.pool().xdel(key, id.to_string()).await.map_err(unavailable)?;
        Ok(removed > 0)
    }

    async fn watch(&self, device: &DeviceAddress) -> Result<Watch, MessagingError> {
        self.notifier
            .watch(keys::notify_channel(&device.identity_key, &device.device_id))
            .await
    }

    async fn depth(&self, device: &DeviceAddress) -> Result<u64, MessagingError> {
        let key = keys::queue(&device.identity_key, &device.device_id);
        let n: i64 = self
            .depth
            .run(
                self.redis.pool(),
                vec![key.into()],
                vec![Value::String(self.oldest_kept().to_string().into())],
            )
            .await
            .map_err(unavailable)?;
        Ok(n.max(0) as u64)
    }
}

/// The process's notification subscriptions.
struct Notifier {
    /// State shared with the dispatcher tasks and watch guards.
    shared: Arc<Shared>,
    /// The message dispatcher and the reconnect handler, stopped with the notifier.
    tasks: Vec<JoinHandle<()>>,
}

/// What the notifier's tasks and watch guards share.
struct Shared {
    /// The dedicated pub/sub client.
    client: Client,
    /// Every channel somebody watches (or that is being unsubscribed), by name.
    channels: Mutex<HashMap<String, Channel>>,
}

/// One watched device channel.
struct Channel {
    /// Bumped on every notification; each watcher holds a receiver.
    tx: watch::Sender<u64>,
    /// Live [`Watch`]es (plus ones being set up).
    watchers: usize,
    /// Whether the server-side subscription is (believed to be) in place.
    subscribed: bool,
    /// Serialises SSUBSCRIBE/SUNSUBSCRIBE of this channel: whoever holds it makes the server
    /// side match `watchers`, so concurrent watch/drop can never leave a watcher unsubscribed.
    op: Arc<tokio::sync::Mutex<()>>,
}

/// How often the subscriber re-reads the cluster layout to notice migrated slots.
pub const CLUSTER_CHECK_INTERVAL: std::time::Duration = std::time::Duration::from_secs(2);

/// Channels re-subscribed at once after a reconnect.
const RESUBSCRIBE_CONCURRENCY: usize = 64;

impl Notifier {
    fn start(client: Client) -> Self {
        let shared = Arc::new(Shared {
            client,
            channels: Mutex::new(HashMap::new()),
        });
        let mut tasks = Vec::new();
        // Messages -> watchers.
        let mut messages = shared.client.message_rx();
        let s = Arc::downgrade(&shared);
        tasks.push(tokio::spawn(async move {
            loop {
                let received = messages.recv().await;
                let Some(shared) = s.upgrade() else { return };
                match received {
                    Ok(m) => shared.bump(&m.channel),
                    // Some notifications were dropped: wake everyone to re-read.
                    Err(RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "notification dispatcher lagged; waking every watcher");
                        shared.bump_all();
                    }
                    Err(RecvError::Closed) => return,
                }
            }
        }));
        // Reconnects and cluster changes -> restore subscriptions, then wake everyone.
        let mut reconnects = shared.client.reconnect_rx();
        let mut changes = shared.client.cluster_change_rx();
        let s = Arc::downgrade(&shared);
        tasks.push(tokio::spawn(async move {
            loop {
                let why = tokio::select! {
                    r = reconnects.recv() => match r {
                        Ok(server) => format!("reconnected to {server}"),
                        Err(RecvError::Lagged(_)) => "reconnected".to_string(),
                        Err(RecvError::Closed) => return,
                    },
                    c = changes.recv() => match c {
                        Ok(_) | Err(RecvError::Lagged(_)) => "cluster layout changed".to_string(),
                        Err(RecvError::Closed) => return,
                    },
                };
                let Some(shared) = s.upgrade() else { return };
                tracing::info!(reason = %why, "restoring notification subscriptions");
                shared.resubscribe_all().await;
                shared.bump_all();
            }
        }));
        // Slot migrations -> a cluster change event (handled above).
        if shared.client.is_clustered() {
            let s = Arc::downgrade(&shared);
            tasks.push(tokio::spawn(async move {
                let mut tick = tokio::time::interval(CLUSTER_CHECK_INTERVAL);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    let Some(shared) = s.upgrade() else { return };
                    if let Err(e) = tassis_redis::fred::interfaces::ClusterInterface::sync_cluster(&shared.client).await
                    {
                        tracing::debug!(error = %e, "re-reading the cluster layout failed");
                    }
                }
            }));
        }
        Self { shared, tasks }
    }

    /// Subscribes to `channel` (unless already subscribed) and returns a watch on it. Returns only
    /// once the server-side subscription is in place, so every later SPUBLISH reaches it.
    async fn watch(&self, channel: String) -> Result<Watch, MessagingError> {
        let (rx, op) = {
            let mut channels = self.shared.channels.lock();
            let c = channels.entry(channel.clone()).or_insert_with(|| Channel {
                tx: watch::channel(0).0,
                watchers: 0,
                subscribed: false,
                op: Arc::new(tokio::sync::Mutex::new(())),
            });
            c.watchers += 1;
            (c.tx.subscribe(), c.op.clone())
        };
        // From here on the guard owns our count: if subscribing fails, dropping it undoes it.
        let guard = WatchGuard {
            shared: Arc::downgrade(&self.shared),
            channel: channel.clone(),
        };
        self.shared.reconcile(&channel, &op).await.map_err(unavailable)?;
        Ok(Watch::new(rx, Box::new(guard)))
    }
}

impl Drop for Notifier {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        let client = self.shared.client.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = client.quit().await;
            });
        }
    }
}

impl Shared {
    fn bump(&self, channel: &str) {
        if let Some(c) = self.channels.lock().get(channel) {
            c.tx.send_modify(|v| *v = v.wrapping_add(1));
        }
    }

    fn bump_all(&self) {
        for c in self.channels.lock().values() {
            c.tx.send_modify(|v| *v = v.wrapping_add(1));
        }
    }

    /// Makes the server-side subscription of `channel` match its watcher count, under the
    /// channel's op lock; forgets the channel once nobody watches it.
    async fn reconcile(&self, channel: &str, op: &Arc<tokio::sync::Mutex<()>>) -> Result<(), RedisError> {
        let _serialised = op.lock().await;
        let state = self
            .channels
            .lock()
            .get(channel)
            .filter(|c| Arc::ptr_eq(&c.op, op))
            .map(|c| (c.watchers > 0, c.subscribed));
        let Some((wanted, subscribed)) = state else {
            return Ok(());
        };
        let result = match (wanted, subscribed) {
            (true, false) => {
                self.client.ssubscribe(channel).await?;
                self.set_subscribed(channel, op, true);
                Ok(())
            }
            (false, true) => {
                // Even if this fails the subscription is gone with the connection or harmless:
                // messages for channels nobody watches are ignored.
                let r = self.client.sunsubscribe(channel).await;
                self.set_subscribed(channel, op, false);
                r.map_err(RedisError::from)
            }
            _ => Ok(()),
        };
        if !wanted {
            let mut channels = self.channels.lock();
            if channels
                .get(channel)
                .is_some_and(|c| Arc::ptr_eq(&c.op, op) && c.watchers == 0)
            {
                channels.remove(channel);
            }
        }
        result
    }

    fn set_subscribed(&self, channel: &str, op: &Arc<tokio::sync::Mutex<()>>, value: bool) {
        if let Some(c) = self.channels.lock().get_mut(channel).filter(|c| Arc::ptr_eq(&c.op, op)) {
            c.subscribed = value;
        }
    }

    /// SSUBSCRIBEs every subscribed channel again (after a reconnect the new connection has
    /// none). Failures are logged: the next reconnect retries, and delivery re-reads anyway.
    async fn resubscribe_all(&self) {
        let subscribed: Vec<(String, Arc<tokio::sync::Mutex<()>>)> = self
            .channels
            .lock()
            .iter()
            .filter(|(_, c)| c.subscribed)
            .map(|(name, c)| (name.clone(), c.op.clone()))
            .collect();
        futures::stream::iter(subscribed)
            .for_each_concurrent(RESUBSCRIBE_CONCURRENCY, |(name, op)| async move {
                let _serialised = op.lock().await;
                let still = self
                    .channels
                    .lock()
                    .get(&name)
                    .is_some_and(|c| Arc::ptr_eq(&c.op, &op) && c.subscribed);
                if still && let Err(e) = self.client.ssubscribe(name.as_str()).await {
                    tracing::warn!(error = %e, channel = %name, "re-subscribing failed");
                }
            })
            .await;
    }
}

/// Releases one watcher of a channel; the last one unsubscribes.
struct WatchGuard {
    /// The notifier (weak: a watch outliving its backend just stops hearing anything).
    shared: Weak<Shared>,
    /// The watched channel.
    channel: String,
}

impl Drop for WatchGuard {
    fn drop(&mut self) {
        let Some(shared) = self.shared.upgrade() else { return };
        let op = {
            let mut channels = shared.channels.lock();
            let Some(c) = channels.get_mut(&self.channel) else {
                return;
            };
            c.watchers = c.watchers.saturating_sub(1);
            if c.watchers > 0 {
                return;
            }
            c.op.clone()
        };
        let channel = std::mem::take(&mut self.channel);
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move {
                    if let Err(e) = shared.reconcile(&channel, &op).await {
                        tracing::debug!(error = %e, "unsubscribing failed");
                    }
                });
            }
            // No runtime (process shutting down): nothing can be sent; forget the channel.
            Err(_) => {
                let mut channels = shared.channels.lock();
                if channels.get(&channel).is_some_and(|c| c.watchers == 0) {
                    channels.remove(&channel);
                }
            }
        }
    }
}
