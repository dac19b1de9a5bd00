//! The Redis Cluster key store, for production: registrations survive restarts and are shared by
//! every keystore replica. Same semantics as [`crate::memory`], held to the same behaviour suite.
//!
//! Layout (names from [`tassis_redis::keys`]; one hash tag per identity, so one slot):
//! - `ks:{ik}:devices` HASH: raw device id -> signed prekey;
//! - `ks:{ik}:otk` ZSET, every score 0, members `<hex dev>:<16 hex digit seq><key bytes>`: the
//!   identity's one-time keys, one contiguous lex range per device in registration order.
//!
//! Each operation is ONE Lua script naming both keys in KEYS, so it is atomic and a single round
//! trip to the slot's master. A single ZSET (rather than a list per device) is what lets
//! `request_pre_keys` pop a key of *every* device while declaring every key it touches: the
//! device list is only known inside the script. Popping is O(log n) (ZRANGE BYLEX REV LIMIT 0 1).
//! When an identity's last device goes, both keys become empty and Redis deletes them.

use bytes::Bytes;
use tassis_redis::fred::types::{Key, Value};
use tassis_redis::{Redis, RedisArgs, RedisError, Script, keys};

use crate::KeystoreError;
use crate::backend::{DeviceStatus, KeyBackend, PreKeyBundle, RegisterLimits, RegisterOutcome};

/// Lua helpers every script starts with: `hex(s)` (device ids are hex in ZSET members, so that
/// a member's device prefix can never be ambiguous) and the lex range of one device's keys.
const PRELUDE: &str = r#"
local function hex(s)
  return (string.gsub(s, '.', function(c) return string.format('%02x', string.byte(c)) end))
end
-- Lex bounds of one device's members: '[<hex>:' .. '(<hex>;' (';' sorts right after ':', and
-- no hex digit lies between them, so a longer device id never falls in a shorter one's range).
local function range(dev)
  local h = hex(dev)
  return '[' .. h .. ':', '(' .. h .. ';', #h + 1
end
"#;

/// KEYS: devices, otk. ARGV: device id, signed prekey, max devices, max keys per device, keys...
/// Returns {0, devices} (device limit), {1, total} (key limit), or {2, replaced 0/1, total}.
const REGISTER: &str = r#"
local dev, spk = ARGV[1], ARGV[2]
local max_devices, max_keys = tonumber(ARGV[3]), tonumber(ARGV[4])
local new = #ARGV - 4
local lo, hi, plen = range(dev)
local old = redis.call('HGET', KEYS[1], dev)
if not old then
  local n = redis.call('HLEN', KEYS[1])
  if n >= max_devices then return {0, n} end
end
local append = (old == spk)
local kept = 0
if append then kept = redis.call('ZLEXCOUNT', KEYS[2], lo, hi) end
local total = kept + new
if total > max_keys then return {1, total} end
local replaced = 0
if not append then
  if old then
    replaced = 1
    redis.call('ZREMRANGEBYLEX', KEYS[2], lo, hi)
  end
  redis.call('HSET', KEYS[1], dev, spk)
end
if new > 0 then
  -- Sequence numbers continue after the device's newest key, so registration order is lex order.
  local seq = 0
  if append then
    local last = redis.call('ZRANGE', KEYS[2], hi, lo, 'BYLEX', 'REV', 'LIMIT', 0, 1)
    if last[1] then seq = tonumber(string.sub(last[1], plen + 1, plen + 16), 16) + 1 end
  end
  local prefix = string.sub(lo, 2)
  local batch = {}
  for i = 5, #ARGV do
    batch[#batch + 1] = 0
    batch[#batch + 1] = prefix .. string.format('%016x', seq) .. ARGV[i]
    seq = seq + 1
    if #batch >= 1000 then
      redis.call('ZADD', KEYS[2], unpack(batch))
      batch = {}
    end
  end
  if #batch > 0 then redis.call('ZADD', KEYS[2], unpack(batch)) end
end
return {2, replaced, total}
"#;

/// KEYS: devices, otk. ARGV: device id. Returns 1 if a registration was deleted, else 0.
const UNREGISTER: &str = r#"
local dev = ARGV[1]
if redis.call('HDEL', KEYS[1], dev) == 0 then return 0 end
local lo, hi = range(dev)
redis.call('ZREMRANGEBYLEX', KEYS[2], lo, hi)
return 1
"#;

/// KEYS: devices, otk. ARGV: known device ids. Returns {0} when no device is registered, else
/// {1, dev, signed prekey, one-time key ('' when none left), ...} for every unknown device, each
/// with its most recently registered one-time key removed.
const REQUEST_PRE_KEYS: &str = r#"
local all = redis.call('HGETALL', KEYS[1])
if #all == 0 then return {0} end
local known = {}
for i = 1, #ARGV do known[ARGV[i]] = true end
local out = {1}
for i = 1, #all, 2 do
  local dev = all[i]
  if not known[dev] then
    local lo, hi, plen = range(dev)
    local top = redis.call('ZRANGE', KEYS[2], hi, lo, 'BYLEX', 'REV', 'LIMIT', 0, 1)
    local otk = ''
    if top[1] then
      redis.call('ZREM', KEYS[2], top[1])
      otk = string.sub(top[1], plen + 17)
    end
    out[#out + 1] = dev
    out[#out + 1] = all[i + 1]
    out[#out + 1] = otk
  end
end
return out
"#;

/// KEYS: devices, otk. ARGV: device id. Returns {registered 0/1, one-time keys}.
const DEVICE_STATUS: &str = r#"
local dev = ARGV[1]
if redis.call('HEXISTS', KEYS[1], dev) == 0 then return {0, 0} end
local lo, hi = range(dev)
return {1, redis.call('ZLEXCOUNT', KEYS[2], lo, hi)}
"#;

/// Registrations in Redis (Cluster). Cheap to clone.
#[derive(Clone)]
pub struct RedisKeyStore {
    /// The process's shared connection pool.
    redis: Redis,
    /// [`REGISTER`].
    register: Script,
    /// [`UNREGISTER`].
    unregister: Script,
    /// [`REQUEST_PRE_KEYS`].
    request_pre_keys: Script,
    /// [`DEVICE_STATUS`].
    device_status: Script,
}

impl RedisKeyStore {
    /// A key store on an existing connection (shared with other backends of the process).
    pub fn new(redis: Redis) -> Self {
        let script = |body: &str| Script::new(format!("{PRELUDE}{body}"));
        Self {
            redis,
            register: script(REGISTER),
            unregister: script(UNREGISTER),
            request_pre_keys: script(REQUEST_PRE_KEYS),
            device_status: script(DEVICE_STATUS),
        }
    }

    /// Connects (see [`tassis_redis::connect()`]) and builds the key store.
    pub async fn connect(args: &RedisArgs) -> Result<Self, RedisError> {
        Ok(Self::new(tassis_redis::connect(args).await?))
    }

    /// The identity's two keys, in the order every script expects.
    fn keys(identity_key: &[u8]) -> Vec<Key> {
        vec![
            keys::keystore_devices(identity_key).into(),
            keys::keystore_one_time_keys(identity_key).into(),
        ]
    }

    async fn run(&self, script: &Script, identity_key: &[u8], args: Vec<Value>) -> Result<Vec<Value>, KeystoreError> {
        let reply: Value = script
            .run(self.redis.pool(), Self::keys(identity_key), args)
            .await
            .map_err(unavailable)?;
        match reply {
            Value::Array(items) => Ok(items),
            other => Err(bad_reply(&other)),
        }
    }
}

fn unavailable(e: RedisError) -> KeystoreError {
    KeystoreError::Unavailable(e.to_string())
}

fn bad_reply(v: &impl std::fmt::Debug) -> KeystoreError {
    KeystoreError::Unavailable(format!("unexpected reply from a keystore script: {v:?}"))
}

fn int(v: Option<&Value>) -> Result<i64, KeystoreError> {
    v.and_then(Value::as_i64).ok_or_else(|| bad_reply(&v))
}

fn count(v: Option<&Value>) -> Result<u32, KeystoreError> {
    u32::try_from(int(v)?).map_err(|_| bad_reply(&v))
}

fn bytes(v: Value) -> Result<Bytes, KeystoreError> {
    match v {
        Value::Bytes(b) => Ok(b),
        Value::String(s) => Ok(s.into_inner()),
        other => Err(bad_reply(&other)),
    }
}

#[async_trait::async_trait]
impl KeyBackend for RedisKeyStore {
    fn kind(&self) -> &'static str {
        "redis"
    }

    async fn register(
        &self,
        identity_key: &Bytes,
        device_id: &Bytes,
        signed_pre_key: Bytes,
        one_time_pre_keys: Vec<Bytes>,
        limits: RegisterLimits,
    ) -> Result<RegisterOutcome, KeystoreError> {
        let mut args = Vec::with_capacity(4 + one_time_pre_keys.len());
        args.push(Value::Bytes(device_id.clone()));
        args.push(Value::Bytes(signed_pre_key));
        args.push(Value::Integer(limits.max_devices_per_identity.into()));
        args.push(Value::Integer(limits.max_one_time_keys_per_device.into()));
        args.extend(one_time_pre_keys.into_iter().map(Value::Bytes));
        let r = self.run(&self.register, identity_key, args).await?;
        match int(r.first())? {
            0 => Err(KeystoreError::InvalidRequest(format!(
                "identity already has {} registered devices (limit {})",
                int(r.get(1))?,
                limits.max_devices_per_identity
            ))),
            1 => Err(KeystoreError::InvalidRequest(format!(
                "device would hold {} one-time prekeys (limit {})",
                int(r.get(1))?,
                limits.max_one_time_keys_per_device
            ))),
            2 => Ok(RegisterOutcome {
                replaced: int(r.get(1))? == 1,
                one_time_pre_keys: count(r.get(2))?,
            }),
            _ => Err(bad_reply(&r)),
        }
    }

    async fn unregister(&self, identity_key: &Bytes, device_id: &Bytes) -> Result<bool, KeystoreError> {
        let existed: i64 = self
            .unregister
            .run(
                self.redis.pool(),
                Self::keys(identity_key),
                vec![Value::Bytes(device_id.clone())],
            )
            .await
            .map_err(unavailable)?;
        Ok(existed == 1)
    }

    async fn request_pre_keys(
        &self,
        identity_key: &Bytes,
        known_device_ids: &[Bytes],
    ) -> Result<Vec<PreKeyBundle>, KeystoreError> {
        let args = known_device_ids.iter().cloned().map(Value::Bytes).collect();
        let r = self.run(&self.request_pre_keys, identity_key, args).await?;
        let mut items = r.into_iter();
        match items.next().as_ref().and_then(Value::as_i64) {
            Some(0) => return Err(KeystoreError::UnknownIdentity),
            Some(1) => {}
            other => return Err(bad_reply(&other)),
        }
        let mut bundles = Vec::new();
        while let Some(device_id) = items.next() {
            let (Some(spk), Some(otk)) = (items.next(), items.next()) else {
                return Err(bad_reply(&"a truncated prekey bundle"));
            };
            bundles.push(PreKeyBundle {
                device_id: bytes(device_id)?,
                signed_pre_key: bytes(spk)?,
                one_time_pre_key: bytes(otk)?,
            });
        }
        // HGETALL order is arbitrary; the contract is "sorted by device id".
        bundles.sort_by(|a, b| a.device_id.cmp(&b.device_id));
        Ok(bundles)
    }

    async fn device_status(&self, identity_key: &Bytes, device_id: &Bytes) -> Result<DeviceStatus, KeystoreError> {
        let r = self
            .run(&self.device_status, identity_key, vec![Value::Bytes(device_id.clone())])
            .await?;
        Ok(DeviceStatus {
            registered: int(r.first())? == 1,
            one_time_pre_keys: count(r.get(1))?,
        })
    }
}
