//! The presence directory: which deployment is each device's home. Written on Register (the
//! registering deployment claims the device) and Unregister (its home releases it), read by every
//! enqueue to route a message to the local queue or the forwarding outbox.
//!
//! Behind [`Presence`] so the routing does not care where it lives:
//! - [`StaticPresence`]: every device is local. The default; federation is off.
//! - [`RedisPresence`]: a Redis (standalone or Cluster) the operator designates as shared by every
//!   federated deployment. One STRING per device, `pr:{ik}:<dev>` = home name. Claims are
//!   `SET … GET` (atomic: the previous home comes back, so exactly one deployment learns it must
//!   hand its queue over) and releases are compare-and-delete, so a deployment can never release
//!   a device another one has claimed since.

use bytes::Bytes;
use tassis_redis::fred::interfaces::KeysInterface;
use tassis_redis::fred::types::{Expiration, SetOptions, Value};
use tassis_redis::{Redis, Script, keys};

use crate::FederationError;

/// Where devices live.
#[async_trait::async_trait]
pub trait Presence: Send + Sync + 'static {
    /// The device's home deployment, or None when no deployment has it registered.
    async fn home(&self, identity_key: &Bytes, device_id: &Bytes) -> Result<Option<String>, FederationError>;

    /// Records `home` as the device's home; returns the previous home, if any.
    async fn claim(
        &self,
        identity_key: &Bytes,
        device_id: &Bytes,
        home: &str,
    ) -> Result<Option<String>, FederationError>;

    /// Removes the device's entry if its home is `home`; returns whether it did.
    async fn release(&self, identity_key: &Bytes, device_id: &Bytes, home: &str) -> Result<bool, FederationError>;

    /// Whether devices can live elsewhere (false: every device is local, federation is off).
    fn is_federated(&self) -> bool;
}

/// Every device is local: the single-deployment default.
pub struct StaticPresence {
    /// This deployment's name, the home of everything.
    pub name: String,
}

#[async_trait::async_trait]
impl Presence for StaticPresence {
    async fn home(&self, _: &Bytes, _: &Bytes) -> Result<Option<String>, FederationError> {
        Ok(Some(self.name.clone()))
    }

    async fn claim(&self, _: &Bytes, _: &Bytes, _: &str) -> Result<Option<String>, FederationError> {
        Ok(None)
    }

    async fn release(&self, _: &Bytes, _: &Bytes, _: &str) -> Result<bool, FederationError> {
        Ok(true)
    }

    fn is_federated(&self) -> bool {
        false
    }
}

/// The shared directory in Redis.
pub struct RedisPresence {
    /// The shared presence Redis (not this deployment's own cluster).
    redis: Redis,
    /// Compare-and-delete: only the device's home releases it.
    release: Script,
}

impl RedisPresence {
    pub fn new(redis: Redis) -> Self {
        Self {
            redis,
            release: Script::new(tassis_redis::script::COMPARE_AND_DELETE),
        }
    }
}

fn text(v: Value) -> Option<String> {
    v.as_string()
}

#[async_trait::async_trait]
impl Presence for RedisPresence {
    async fn home(&self, identity_key: &Bytes, device_id: &Bytes) -> Result<Option<String>, FederationError> {
        let v: Value = self.redis.pool().get(keys::presence(identity_key, device_id)).await?;
        Ok(text(v))
    }

    async fn claim(
        &self,
        identity_key: &Bytes,
        device_id: &Bytes,
        home: &str,
    ) -> Result<Option<String>, FederationError> {
        let key = keys::presence(identity_key, device_id);
        let v: Value = self
            .redis
            .pool()
            .set(key, home, None::<Expiration>, None::<SetOptions>, true)
            .await?;
        Ok(text(v))
    }

    async fn release(&self, identity_key: &Bytes, device_id: &Bytes, home: &str) -> Result<bool, FederationError> {
        let key = keys::presence(identity_key, device_id);
        let n: i64 = self
            .release
            .run(self.redis.pool(), vec![key.into()], vec![Value::from(home)])
            .await?;
        Ok(n == 1)
    }

    fn is_federated(&self) -> bool {
        true
    }
}
