//! The forwarding outbox, in this deployment's Redis Cluster: what waits to be forwarded to each
//! peer deployment. A message is acked to its sender once it is here, so this is where "nothing
//! acked is lost" holds for messages whose recipient lives elsewhere.
//!
//! Layout (names from [`tassis_redis::keys`]): per peer, [`PARTITIONS`] partitions, each with its
//! own hash tag (so one peer's outbox spreads over the masters and several replicas can forward
//! to one peer at once); a device always maps to the same partition, so its messages stay in
//! send order. Per partition:
//! - a STREAM of entries (field `k`: `m` a [`ForwardedMessage`] or `c` a claim — "this device's
//!   home moved to the peer, hand its queue over"; field `p`: the protobuf; field `t`: the
//!   enqueue's traceparent). Entry ids are `<ms>-<seq>`: the ms is when it was queued;
//! - a HASH with the partition's failure streak (`first`, `last`: unix ms of the first and latest
//!   failed attempt since the last success), read by the forwarder to space retries and to drop
//!   messages that have failed for too long;
//! - a lease STRING naming the replica that forwards the partition (SET NX PX, renewed);
//! - a shard channel announcing new entries, so an idle forwarder wakes at once.
//!
//! Beside them, one ZSET of the live forwarders (messaging replicas), scored by their latest
//! heartbeat, from which each takes its fair share of the leases.
//!
//! The number of partitions is a layout constant, not a knob: changing it would strand entries in
//! partitions nobody forwards any more.

use prost::Message;
use tassis_proto::tassis::{Address, ForwardedMessage};
use tassis_redis::fred::interfaces::{HashesInterface, KeysInterface, SortedSetsInterface, StreamsInterface};
use tassis_redis::fred::types::{Expiration, Key, SetOptions, Value};
use tassis_redis::{Redis, Script, keys};

use crate::FederationError;

/// Outbox partitions per peer.
pub const PARTITIONS: u16 = 16;

/// The partition of a device (stable: derived from its queue's hash slot).
pub fn partition(identity_key: &[u8], device_id: &[u8]) -> u16 {
    let slot = keys::hash_slot(&keys::queue(identity_key, device_id));
    // The slot only depends on the identity; mix in the device id so one identity's devices spread.
    let mut h: u32 = u32::from(slot);
    for b in device_id {
        h = h.wrapping_mul(31).wrapping_add(u32::from(*b));
    }
    (h % u32::from(PARTITIONS)) as u16
}

/// What an outbox entry asks of the peer.
#[derive(Clone, Debug, PartialEq)]
pub enum Item {
    /// Queue this message for its device.
    Message(ForwardedMessage),
    /// This device's home moved to us: hand its queued messages over.
    Claim(Address),
    /// An entry that does not parse (never written by tassis): dropped and counted.
    Unreadable(String),
}

impl Item {
    /// A fresh (never failed) forwarded message of `payload` for `to`.
    pub fn message(to: &tassis_messaging::DeviceAddress, payload: bytes::Bytes) -> Item {
        Item::Message(ForwardedMessage {
            message: Some(tassis_proto::tassis::OutboundMessage {
                to: Some(Address {
                    identity_key: to.identity_key.clone(),
                    device_id: to.device_id.clone(),
                }),
                unidentified_sender_message: payload,
            }),
            first_failed: 0,
            last_failed: 0,
        })
    }
}

/// One outbox entry.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// The stream entry id.
    pub id: String,
    /// When it was queued (unix ms, from the id).
    pub queued_at_ms: i64,
    pub item: Item,
    /// The enqueue's W3C traceparent, when traced.
    pub trace: Option<String>,
}

/// A partition's failure streak: unix ms of the first and the latest failed attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Streak {
    pub first: i64,
    pub last: i64,
}

/// KEYS: the stream. ARGV: kind, payload, traceparent ('' when none), cap, channel, `1` to also
/// return the id of the node that ran it (for the replica-ack WAIT).
/// Returns the entry id (with `1`: `[id, node id]`), or false when the partition is full (the cap applies to messages only:
/// a claim is never refused, it stands for a whole queue of messages elsewhere).
const PUSH: &str = r#"
if ARGV[1] == 'm' and redis.call('XLEN', KEYS[1]) >= tonumber(ARGV[4]) then return false end
local id
if ARGV[3] ~= '' then
  id = redis.call('XADD', KEYS[1], '*', 'k', ARGV[1], 'p', ARGV[2], 't', ARGV[3])
else
  id = redis.call('XADD', KEYS[1], '*', 'k', ARGV[1], 'p', ARGV[2])
end
redis.call('SPUBLISH', ARGV[5], id)
if ARGV[6] == '1' then return {id, redis.call('CLUSTER', 'MYID')} end
return id
"#;

/// KEYS: the lease. ARGV: owner, ttl ms. Extends the lease if `owner` holds it.
const RENEW: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"#;

/// KEYS: the failure hash. ARGV: now (ms). Records a failed attempt; returns {first, last}.
const FAILED: &str = r#"
redis.call('HSETNX', KEYS[1], 'first', ARGV[1])
redis.call('HSET', KEYS[1], 'last', ARGV[1])
return {tonumber(redis.call('HGET', KEYS[1], 'first')), tonumber(ARGV[1])}
"#;

/// KEYS: the device's queue, its handoff marker. ARGV: the oldest id still within the age limit.
/// Ends the handoff (deletes the marker) if the queue is empty; returns 1 if it did.
const FINISH_HANDOFF: &str = r#"
redis.call('XTRIM', KEYS[1], 'MINID', ARGV[1])
if redis.call('XLEN', KEYS[1]) == 0 then
  redis.call('DEL', KEYS[2])
  return 1
end
return 0
"#;

/// How long a handoff marker outlives an interrupted handoff (the claimant retries the claim
/// long before; this only bounds a marker whose claim was lost with its whole deployment).
const HANDOFF_MARKER_TTL_MS: i64 = 24 * 3600 * 1000;

/// KEYS: the forwarders' membership ZSET. ARGV: owner, ttl ms. Records a heartbeat of `owner`
/// (scored by the Redis server's clock, so replicas' clocks do not matter), forgets members
/// silent for a ttl, and returns how many are alive.
const HEARTBEAT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
return redis.call('ZCARD', KEYS[1])
"#;

/// The outbox of one deployment.
pub struct Outbox {
    /// This deployment's Redis (Cluster).
    redis: Redis,
    /// Entries one partition may hold.
    max_len: u64,
    /// Replicas (and how long to wait for them) a push must reach before it returns.
    replica_acks: Option<(u32, std::time::Duration)>,
    push: Script,
    heartbeat: Script,
    finish_handoff: Script,
    renew: Script,
    release: Script,
    failed: Script,
}

fn bad_reply(what: &str, v: &impl std::fmt::Debug) -> FederationError {
    FederationError::Unavailable(format!("unexpected reply from Redis to {what}: {v:?}"))
}

impl Outbox {
    pub fn new(redis: Redis, max_len: u64) -> Self {
        Self {
            redis,
            max_len,
            replica_acks: None,
            push: Script::new(PUSH),
            heartbeat: Script::new(HEARTBEAT),
            finish_handoff: Script::new(FINISH_HANDOFF),
            renew: Script::new(RENEW),
            release: Script::new(tassis_redis::script::COMPARE_AND_DELETE),
            failed: Script::new(FAILED),
        }
    }

    /// A push returns only once `n` replicas of its master have it (as the messaging enqueue
    /// does with `--redis-min-replica-acks`): a message acked to its sender, or handed over from
    /// a local queue, must survive a failover.
    pub fn with_replica_acks(mut self, acks: Option<(u32, std::time::Duration)>) -> Self {
        self.replica_acks = acks;
        self
    }

    /// The Redis the outbox lives in.
    pub fn redis(&self) -> &Redis {
        &self.redis
    }

    /// Queues `item` for `peer` in the partition of its device. Returns only once Redis has it;
    /// [`FederationError::Unavailable`] when the partition is full.
    pub async fn push(&self, peer: &str, item: &Item, trace: Option<&str>) -> Result<String, FederationError> {
        let (kind, payload, address) = match item {
            Item::Message(m) => ("m", m.encode_to_vec(), m.message.as_ref().and_then(|o| o.to.as_ref())),
            Item::Claim(a) => ("c", a.encode_to_vec(), Some(a)),
            Item::Unreadable(_) => return Err(FederationError::InvalidRequest("an unreadable outbox entry".into())),
        };
        let a = address.ok_or_else(|| FederationError::InvalidRequest("an outbox entry without an address".into()))?;
        let p = partition(&a.identity_key, &a.device_id);
        let args = vec![
            Value::from(kind),
            Value::Bytes(payload.into()),
            Value::from(trace.unwrap_or_default()),
            Value::Integer(i64::try_from(self.max_len).unwrap_or(i64::MAX)),
            Value::from(keys::outbox_channel(peer, p)),
        ];
        let keys = vec![Key::from(keys::outbox(peer, p))];
        let reply = tassis_redis::replicas::run_acked(&self.redis, &self.push, keys, args, self.replica_acks).await?;
        match reply {
            Value::Null => Err(FederationError::Unavailable(format!(
                "the forwarding queue to {peer} is full ({} entries in partition {p})",
                self.max_len
            ))),
            other => other.as_string().ok_or_else(|| bad_reply("the outbox push", &other)),
        }
    }

    /// Starts handing a device's local queue over to `home`: while the marker exists, the local
    /// enqueue script keeps queueing the device's messages here (behind those being handed over)
    /// although its registration is gone.
    pub async fn begin_handoff(
        &self,
        identity_key: &[u8],
        device_id: &[u8],
        home: &str,
    ) -> Result<(), FederationError> {
        let _: Value = self
            .redis
            .pool()
            .set(
                keys::handoff(identity_key, device_id),
                home,
                Some(Expiration::PX(HANDOFF_MARKER_TTL_MS)),
                None,
                false,
            )
            .await?;
        Ok(())
    }

    /// Ends a handoff if the device's local queue is empty (what is older than `oldest_kept`
    /// is past retention and dropped first); false: more arrived, hand that over too.
    pub async fn finish_handoff(
        &self,
        identity_key: &[u8],
        device_id: &[u8],
        oldest_kept: &str,
    ) -> Result<bool, FederationError> {
        let n: i64 = self
            .finish_handoff
            .run(
                self.redis.pool(),
                vec![
                    Key::from(keys::queue(identity_key, device_id)),
                    Key::from(keys::handoff(identity_key, device_id)),
                ],
                vec![Value::from(oldest_kept)],
            )
            .await?;
        Ok(n == 1)
    }

    /// Up to `count` entries from the head of a partition, oldest first.
    pub async fn head(&self, peer: &str, p: u16, count: usize) -> Result<Vec<Entry>, FederationError> {
        let reply: Value = self
            .redis
            .pool()
            .xrange(keys::outbox(peer, p), "-", "+", Some(count as u64))
            .await?;
        match reply {
            Value::Null => Ok(Vec::new()),
            Value::Array(entries) => entries.into_iter().map(parse_entry).collect(),
            other => Err(bad_reply("XRANGE", &other)),
        }
    }

    /// Removes entries (forwarded, or dropped).
    pub async fn remove(&self, peer: &str, p: u16, ids: &[String]) -> Result<(), FederationError> {
        if ids.is_empty() {
            return Ok(());
        }
        let _: i64 = self.redis.pool().xdel(keys::outbox(peer, p), ids.to_vec()).await?;
        Ok(())
    }

    /// Entries waiting in a partition.
    pub async fn len(&self, peer: &str, p: u16) -> Result<u64, FederationError> {
        let n: i64 = self.redis.pool().xlen(keys::outbox(peer, p)).await?;
        Ok(n.max(0) as u64)
    }

    /// The partition's failure streak, if it is failing.
    pub async fn streak(&self, peer: &str, p: u16) -> Result<Option<Streak>, FederationError> {
        let v: Vec<Option<i64>> = self
            .redis
            .pool()
            .hmget(keys::outbox_failures(peer, p), vec!["first", "last"])
            .await?;
        Ok(match v.as_slice() {
            [Some(first), Some(last)] => Some(Streak {
                first: *first,
                last: *last,
            }),
            _ => None,
        })
    }

    /// Records a failed attempt at `now`.
    pub async fn record_failure(&self, peer: &str, p: u16, now: i64) -> Result<Streak, FederationError> {
        let v: Vec<i64> = self
            .failed
            .run(
                self.redis.pool(),
                vec![Key::from(keys::outbox_failures(peer, p))],
                vec![Value::Integer(now)],
            )
            .await?;
        match v.as_slice() {
            [first, last] => Ok(Streak {
                first: *first,
                last: *last,
            }),
            other => Err(bad_reply("the failure record", &other)),
        }
    }

    /// Ends the failure streak (an attempt succeeded).
    pub async fn clear_failures(&self, peer: &str, p: u16) -> Result<(), FederationError> {
        let _: i64 = self.redis.pool().del(keys::outbox_failures(peer, p)).await?;
        Ok(())
    }

    /// Records that forwarder `owner` is alive for `ttl`; returns how many forwarders are (so each
    /// can take its fair share of the partitions).
    pub async fn heartbeat(&self, owner: &str, ttl: std::time::Duration) -> Result<u64, FederationError> {
        let n: i64 = self
            .heartbeat
            .run(
                self.redis.pool(),
                vec![Key::from(keys::forwarders())],
                vec![Value::from(owner), Value::Integer(ttl.as_millis() as i64)],
            )
            .await?;
        Ok(n.max(1) as u64)
    }

    /// Removes forwarder `owner` from the membership (on shutdown).
    pub async fn leave(&self, owner: &str) -> Result<(), FederationError> {
        let _: i64 = self.redis.pool().zrem(keys::forwarders(), owner).await?;
        Ok(())
    }

    /// Takes the partition's lease for `ttl` if nobody holds it.
    pub async fn acquire(
        &self,
        peer: &str,
        p: u16,
        owner: &str,
        ttl: std::time::Duration,
    ) -> Result<bool, FederationError> {
        let v: Value = self
            .redis
            .pool()
            .set(
                keys::outbox_lease(peer, p),
                owner,
                Some(Expiration::PX(ttl.as_millis() as i64)),
                Some(SetOptions::NX),
                false,
            )
            .await?;
        Ok(!v.is_null())
    }

    /// Extends a lease `owner` holds; false if it lost it.
    pub async fn renew(
        &self,
        peer: &str,
        p: u16,
        owner: &str,
        ttl: std::time::Duration,
    ) -> Result<bool, FederationError> {
        let n: i64 = self
            .renew
            .run(
                self.redis.pool(),
                vec![Key::from(keys::outbox_lease(peer, p))],
                vec![Value::from(owner), Value::Integer(ttl.as_millis() as i64)],
            )
            .await?;
        Ok(n == 1)
    }

    /// Gives a lease up (on shutdown), so another replica takes over at once.
    pub async fn release(&self, peer: &str, p: u16, owner: &str) -> Result<(), FederationError> {
        let _: i64 = self
            .release
            .run(
                self.redis.pool(),
                vec![Key::from(keys::outbox_lease(peer, p))],
                vec![Value::from(owner)],
            )
            .await?;
        Ok(())
    }
}

/// One XRANGE entry: `[id, [field, value, ...]]`.
fn parse_entry(entry: Value) -> Result<Entry, FederationError> {
    let Value::Array(parts) = entry else {
        return Err(bad_reply("XRANGE", &entry));
    };
    let mut parts = parts.into_iter();
    let id = parts
        .next()
        .and_then(|v| v.as_string())
        .ok_or_else(|| bad_reply("XRANGE", &"an entry without an id"))?;
    let queued_at_ms = id
        .split_once('-')
        .and_then(|(ms, _)| ms.parse::<i64>().ok())
        .ok_or_else(|| bad_reply("XRANGE", &id))?;
    let Some(Value::Array(fields)) = parts.next() else {
        return Err(bad_reply("XRANGE", &"an entry without fields"));
    };
    let (mut kind, mut payload, mut trace) = (None, None, None);
    let mut fields = fields.into_iter();
    while let (Some(name), Some(value)) = (fields.next(), fields.next()) {
        match name.as_bytes() {
            Some(b"k") => kind = value.as_string(),
            Some(b"p") => payload = value.into_bytes(),
            Some(b"t") => trace = value.as_string(),
            _ => {}
        }
    }
    let item = match (kind.as_deref(), payload) {
        (Some("m"), Some(p)) => ForwardedMessage::decode(p)
            .map(Item::Message)
            .unwrap_or_else(|_| Item::Unreadable("a message that does not decode".into())),
        (Some("c"), Some(p)) => Address::decode(p)
            .map(Item::Claim)
            .unwrap_or_else(|_| Item::Unreadable("a claim that does not decode".into())),
        (kind, _) => Item::Unreadable(format!("an entry of kind {kind:?} without a payload")),
    };
    Ok(Entry {
        id,
        queued_at_ms,
        item,
        trace,
    })
}
