//! Where federation meets the services: wrappers of the keystore's and messaging's backends, so
//! the services themselves (and the gateway) do not change.
//!
//! - [`FederatedKeys`] wraps the local [`KeyBackend`]: a Register claims the device in the
//!   presence directory for this deployment, and if the device was homed elsewhere, queues a claim
//!   for that old home (so it hands the device's queued messages over); an Unregister releases it.
//! - [`FederatedQueues`] wraps the local [`QueueBackend`]: devices registered here go to the local
//!   queue as before (the enqueue script's own registration check decides, so a local send costs
//!   nothing more); for any other device the directory is asked for its home, and a device homed
//!   at a peer gets the message in the outbox as a `ForwardedMessage`; the sender is acked once
//!   the outbox has it. Reads, acks and watches are the local queue's.

use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;
use tassis_keystore::backend::{DeviceStatus, PreKeyBundle, RegisterLimits, RegisterOutcome};
use tassis_keystore::{KeyBackend, KeystoreError};
use tassis_messaging::backend::{DeviceAddress, QueueBackend, StoredMessage, Watch, current_traceparent};
use tassis_messaging::{MessageId, MessagingError};
use tassis_proto::tassis::Address;

use crate::Federation;
use crate::outbox::Item;

/// The keystore backend of a federated deployment.
pub struct FederatedKeys {
    /// This deployment's own registrations.
    local: Arc<dyn KeyBackend>,
    /// The directory, the outbox (claims for old homes go there), this deployment's name.
    fed: Federation,
}

impl FederatedKeys {
    pub fn new(local: Arc<dyn KeyBackend>, fed: Federation) -> Self {
        Self { local, fed }
    }
}

#[async_trait::async_trait]
impl KeyBackend for FederatedKeys {
    async fn register(
        &self,
        identity_key: &Bytes,
        device_id: &Bytes,
        signed_pre_key: Bytes,
        one_time_pre_keys: Vec<Bytes>,
        limits: RegisterLimits,
    ) -> Result<RegisterOutcome, KeystoreError> {
        // Registered here first, so that whoever reads the new home can deliver to it.
        let out = self
            .local
            .register(identity_key, device_id, signed_pre_key, one_time_pre_keys, limits)
            .await?;
        let previous = self.fed.presence.claim(identity_key, device_id, &self.fed.name).await?;
        if let Some(old) = previous.filter(|p| *p != self.fed.name) {
            let claim = Item::Claim(Address {
                identity_key: identity_key.clone(),
                device_id: device_id.clone(),
            });
            if let Err(e) = self.fed.outbox.push(&old, &claim, None).await {
                // Put the old home back, so that the client's retry of this Register sees the
                // move again and queues the claim then.
                if let Err(undo) = self.fed.presence.claim(identity_key, device_id, &old).await {
                    tracing::error!(error = %undo, old_home = %old, "could not restore a device's home after a failed claim");
                }
                return Err(e.into());
            }
            self.fed.metrics.claims.with_label_values(&[old.as_str()]).inc();
            tracing::info!(old_home = %old, "device moved its home here; its old home will hand its messages over");
        }
        Ok(out)
    }

    async fn unregister(&self, identity_key: &Bytes, device_id: &Bytes) -> Result<bool, KeystoreError> {
        let existed = self.local.unregister(identity_key, device_id).await?;
        self.fed
            .presence
            .release(identity_key, device_id, &self.fed.name)
            .await?;
        Ok(existed)
    }

    async fn request_pre_keys(
        &self,
        identity_key: &Bytes,
        known_device_ids: &[Bytes],
    ) -> Result<Vec<PreKeyBundle>, KeystoreError> {
        self.local.request_pre_keys(identity_key, known_device_ids).await
    }

    async fn device_status(&self, identity_key: &Bytes, device_id: &Bytes) -> Result<DeviceStatus, KeystoreError> {
        self.local.device_status(identity_key, device_id).await
    }

    fn kind(&self) -> &'static str {
        self.local.kind()
    }
}

/// The queue backend of a federated deployment.
pub struct FederatedQueues {
    /// This deployment's own queues.
    local: Arc<dyn QueueBackend>,
    /// The directory, the outbox (messages for devices homed at peers), this deployment's name.
    fed: Federation,
    /// The allowlisted peers: the only deployments messages are forwarded to.
    peers: HashSet<String>,
}

impl FederatedQueues {
    pub fn new(local: Arc<dyn QueueBackend>, fed: Federation, peers: HashSet<String>) -> Self {
        Self { local, fed, peers }
    }

    /// Where the device lives now: None for here.
    async fn remote_home(&self, to: &DeviceAddress) -> Result<Option<String>, MessagingError> {
        let home = self.fed.presence.home(&to.identity_key, &to.device_id).await?;
        Ok(home.filter(|h| *h != self.fed.name))
    }

    /// Queues the message for the device's home deployment `home`.
    async fn forward(&self, home: &str, to: &DeviceAddress, payload: Bytes) -> Result<MessageId, MessagingError> {
        if !self.peers.contains(home) {
            // Not reachable from here, and retrying will not change that (the allowlists are
            // configuration): the sender hears `unknown_device`, and a relayed message is dropped
            // by its sender instead of blocking its outbox partition until the timeout.
            tracing::warn!(%home, "a recipient's home deployment is not a federation peer of this one");
            self.fed.metrics.dropped.with_label_values(&[home, "not_a_peer"]).inc();
            return Err(MessagingError::UnknownDevice);
        }
        let item = Item::message(to, payload);
        let id = self
            .fed
            .outbox
            .push(home, &item, current_traceparent().as_deref())
            .await?;
        self.fed.metrics.queued.with_label_values(&[home]).inc();
        id.parse()
            .map_err(|_| MessagingError::Unavailable(format!("the outbox returned a malformed id {id:?}")))
    }
}

#[async_trait::async_trait]
impl QueueBackend for FederatedQueues {
    /// Local first: a device registered here (or whose queue is being handed over from here) is
    /// queued here, so its messages stay in one order even while it moves; the directory is only
    /// asked for devices this deployment does not have.
    async fn enqueue(&self, to: &DeviceAddress, payload: Bytes) -> Result<MessageId, MessagingError> {
        match self.local.enqueue(to, payload.clone()).await {
            Err(MessagingError::UnknownDevice) => match self.remote_home(to).await? {
                Some(home) => self.forward(&home, to, payload).await,
                None => Err(MessagingError::UnknownDevice),
            },
            other => other,
        }
    }

    async fn read(
        &self,
        device: &DeviceAddress,
        after: Option<MessageId>,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, MessagingError> {
        self.local.read(device, after, limit).await
    }

    async fn ack(&self, device: &DeviceAddress, id: MessageId) -> Result<bool, MessagingError> {
        self.local.ack(device, id).await
    }

    async fn watch(&self, device: &DeviceAddress) -> Result<Watch, MessagingError> {
        self.local.watch(device).await
    }

    async fn depth(&self, device: &DeviceAddress) -> Result<u64, MessagingError> {
        self.local.depth(device).await
    }

    fn kind(&self) -> &'static str {
        self.local.kind()
    }
}
