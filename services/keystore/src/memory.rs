//! The embedded in-memory key store: the default when no Redis is configured, so that one command
//! runs a working server. Same semantics as the Redis backend, atomic per call under one lock.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use parking_lot::Mutex;

use crate::KeystoreError;
use crate::backend::{DeviceStatus, KeyBackend, PreKeyBundle, RegisterLimits, RegisterOutcome};

/// One device's registration.
#[derive(Debug)]
struct Registration {
    /// The device's current signed prekey.
    signed_pre_key: Bytes,
    /// One-time keys in registration order; handed out from the back (most recent first).
    one_time_pre_keys: Vec<Bytes>,
}

/// Registrations of every identity, in memory.
#[derive(Debug, Default)]
pub struct MemoryKeyStore {
    /// identity key -> device id -> registration. Identities with no device are removed.
    identities: Mutex<HashMap<Bytes, BTreeMap<Bytes, Registration>>>,
}

impl MemoryKeyStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the device is registered, without going through the async trait (used by the
    /// embedded messaging backend's registration check).
    pub fn is_registered(&self, identity_key: &[u8], device_id: &[u8]) -> bool {
        self.identities
            .lock()
            .get(identity_key)
            .is_some_and(|d| d.contains_key(device_id))
    }
}

#[async_trait::async_trait]
impl KeyBackend for MemoryKeyStore {
    fn kind(&self) -> &'static str {
        "memory"
    }

    async fn register(
        &self,
        identity_key: &Bytes,
        device_id: &Bytes,
        signed_pre_key: Bytes,
        one_time_pre_keys: Vec<Bytes>,
        limits: RegisterLimits,
    ) -> Result<RegisterOutcome, KeystoreError> {
        let mut ids = self.identities.lock();
        let devices = ids.entry(identity_key.clone()).or_default();
        let existing = devices.get(device_id);
        if existing.is_none() && devices.len() as u32 >= limits.max_devices_per_identity {
            let none_left = devices.is_empty();
            if none_left {
                ids.remove(identity_key);
            }
            return Err(KeystoreError::InvalidRequest(format!(
                "identity already has {} registered devices (limit {})",
                limits.max_devices_per_identity, limits.max_devices_per_identity
            )));
        }
        let append = existing.is_some_and(|r| r.signed_pre_key == signed_pre_key);
        let kept = if append {
            existing.map_or(0, |r| r.one_time_pre_keys.len())
        } else {
            0
        };
        let total = kept + one_time_pre_keys.len();
        if total as u64 > limits.max_one_time_keys_per_device as u64 {
            return Err(KeystoreError::InvalidRequest(format!(
                "device would hold {total} one-time prekeys (limit {})",
                limits.max_one_time_keys_per_device
            )));
        }
        let replaced = existing.is_some() && !append;
        if append {
            let reg = devices.get_mut(device_id).expect("checked above");
            reg.one_time_pre_keys.extend(one_time_pre_keys);
        } else {
            devices.insert(
                device_id.clone(),
                Registration {
                    signed_pre_key,
                    one_time_pre_keys,
                },
            );
        }
        Ok(RegisterOutcome {
            replaced,
            one_time_pre_keys: total as u32,
        })
    }

    async fn unregister(&self, identity_key: &Bytes, device_id: &Bytes) -> Result<bool, KeystoreError> {
        let mut ids = self.identities.lock();
        let Some(devices) = ids.get_mut(identity_key) else {
            return Ok(false);
        };
        let existed = devices.remove(device_id).is_some();
        if devices.is_empty() {
            ids.remove(identity_key);
        }
        Ok(existed)
    }

    async fn request_pre_keys(
        &self,
        identity_key: &Bytes,
        known_device_ids: &[Bytes],
    ) -> Result<Vec<PreKeyBundle>, KeystoreError> {
        let mut ids = self.identities.lock();
        let devices = ids.get_mut(identity_key).ok_or(KeystoreError::UnknownIdentity)?;
        Ok(devices
            .iter_mut()
            .filter(|(id, _)| !known_device_ids.contains(id))
            .map(|(id, reg)| PreKeyBundle {
                device_id: id.clone(),
                signed_pre_key: reg.signed_pre_key.clone(),
                one_time_pre_key: reg.one_time_pre_keys.pop().unwrap_or_default(),
            })
            .collect())
    }

    async fn device_status(&self, identity_key: &Bytes, device_id: &Bytes) -> Result<DeviceStatus, KeystoreError> {
        let ids = self.identities.lock();
        Ok(ids
            .get(identity_key)
            .and_then(|d| d.get(device_id))
            .map(|r| DeviceStatus {
                registered: true,
                one_time_pre_keys: r.one_time_pre_keys.len() as u32,
            })
            .unwrap_or_default())
    }
}
