//! The key layout, in one place because the keystore and messaging share a slot: the enqueue
//! script checks registrations in the keystore's hash, which works on a cluster only because both
//! carry the same hash tag.
//!
//! Every key (and sharded channel) of one identity carries the hash tag `{<hex identity key>}`,
//! so all of an identity's data lives in one slot and every operation is one atomic script on
//! one node. Hex, not raw bytes: a raw key may contain `}` (which would end the tag early) or be
//! unprintable in `redis-cli`. Device ids are hex too, so a key name can never be ambiguous.
//!
//! | key | type | holds |
//! |---|---|---|
//! | `ks:{ik}:devices` | HASH | raw device id -> signed prekey (one field per registered device) |
//! | `ks:{ik}:otk` | ZSET | one-time prekeys of every device, see [`keystore_one_time_keys`] |
//! | `mq:{ik}:<dev>` | STREAM | the device's queue; field `p` is the sealed-sender payload |
//! | `mn:{ik}:<dev>` | shard channel | new-message notifications (the payload is the entry id) |
//! | `mh:{ik}:<dev>` | STRING | federation: the device's queue is being handed over to its new home (value: that home) |
//! | `fo:{fw:<peer>:<p>}` | STREAM | federation outbox: what waits to be forwarded to one peer deployment, partition `p` |
//! | `fs:{fw:<peer>:<p>}` | HASH | that outbox's failure streak (`first`, `last`: unix ms of failed attempts) |
//! | `fl:{fw:<peer>:<p>}` | STRING | the lease of the messaging replica forwarding that outbox |
//! | `fn:{fw:<peer>:<p>}` | shard channel | "new entry" notifications of that outbox |
//! | `fm:{fw}` | ZSET | live federation forwarders (messaging replicas) by latest heartbeat |
//! | `fr:{fw:<peer>}:<nonce>` | STRING | a signed federation request's nonce, kept through the skew window (replay guard) |
//! | `pr:{ik}:<dev>` | STRING | presence directory (in the *shared* presence Redis): the device's home deployment |
//!
//! `<peer>` is the hex of the peer deployment's name; outbox partitions carry their own hash tag so
//! one peer's outbox spreads over the cluster.
//!
//! Nothing ever lists keys (no KEYS/SCAN) and no command spans two identities.

/// `{<hex identity key>}`: the hash tag of every key of the identity.
pub fn identity_tag(identity_key: &[u8]) -> String {
    format!("{{{}}}", hex::encode(identity_key))
}

/// HASH of the identity's registered devices: raw device id -> signed prekey.
pub fn keystore_devices(identity_key: &[u8]) -> String {
    format!("ks:{}:devices", identity_tag(identity_key))
}

/// ZSET (all scores 0, ordered by member bytes) of the identity's one-time prekeys. A member is
/// `<hex device id>:<16 hex digit sequence><key bytes>`, so one device's keys are the contiguous
/// lex range `[<hex dev>:` .. `(<hex dev>;` in registration order. One key per identity rather
/// than a list per device, because `request_pre_keys` touches every device's keys in one script
/// and a script must declare, in KEYS, every key it touches.
pub fn keystore_one_time_keys(identity_key: &[u8]) -> String {
    format!("ks:{}:otk", identity_tag(identity_key))
}

/// STREAM: the device's message queue.
pub fn queue(identity_key: &[u8], device_id: &[u8]) -> String {
    format!("mq:{}:{}", identity_tag(identity_key), hex::encode(device_id))
}

/// Sharded pub/sub channel announcing new messages of the device.
pub fn notify_channel(identity_key: &[u8], device_id: &[u8]) -> String {
    format!("mn:{}:{}", identity_tag(identity_key), hex::encode(device_id))
}

/// STRING: present while the device's queue is being handed over to its new home deployment
/// (federation); the enqueue script still queues locally while it exists.
pub fn handoff(identity_key: &[u8], device_id: &[u8]) -> String {
    format!("mh:{}:{}", identity_tag(identity_key), hex::encode(device_id))
}

/// `{fw:<hex peer>:<partition>}`: the hash tag of one outbox partition's keys.
fn outbox_tag(peer: &str, partition: u16) -> String {
    format!("{{fw:{}:{partition}}}", hex::encode(peer))
}

/// STREAM: the federation outbox partition of messages (and claims) waiting for `peer`.
pub fn outbox(peer: &str, partition: u16) -> String {
    format!("fo:{}", outbox_tag(peer, partition))
}

/// HASH: the failure streak of an outbox partition.
pub fn outbox_failures(peer: &str, partition: u16) -> String {
    format!("fs:{}", outbox_tag(peer, partition))
}

/// STRING: the forwarding lease of an outbox partition.
pub fn outbox_lease(peer: &str, partition: u16) -> String {
    format!("fl:{}", outbox_tag(peer, partition))
}

/// Sharded pub/sub channel announcing new outbox entries.
pub fn outbox_channel(peer: &str, partition: u16) -> String {
    format!("fn:{}", outbox_tag(peer, partition))
}

/// ZSET: the live federation forwarders, scored by their latest heartbeat (unix ms).
pub fn forwarders() -> String {
    "fm:{fw}".to_string()
}

/// STRING: a federation request nonce seen from `peer`.
pub fn federation_nonce(peer: &str, nonce: &[u8]) -> String {
    format!("fr:{{fw:{}}}:{}", hex::encode(peer), hex::encode(nonce))
}

/// STRING (presence Redis): the home deployment of a device.
pub fn presence(identity_key: &[u8], device_id: &[u8]) -> String {
    format!("pr:{}:{}", identity_tag(identity_key), hex::encode(device_id))
}

/// The cluster hash slot of a key or shard channel (CRC16 of the hash tag, mod 16384).
pub fn hash_slot(key: &str) -> u16 {
    fred::util::redis_keyslot(key.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_identity_one_slot() {
        let ik = [0x7du8; 32]; // '}' bytes: why the tag is hex
        let slot = hash_slot(&keystore_devices(&ik));
        for k in [
            keystore_one_time_keys(&ik),
            queue(&ik, b"d}1"),
            notify_channel(&ik, b"x"),
            handoff(&ik, b"x"),
        ] {
            assert_eq!(hash_slot(&k), slot, "{k}");
        }
        assert_eq!(queue(&[0xab], b"\x01"), "mq:{ab}:01");
        assert_ne!(hash_slot(&keystore_devices(&[1])), hash_slot(&keystore_devices(&[2])));
    }

    #[test]
    fn one_outbox_partition_one_slot() {
        let slot = hash_slot(&outbox("eu.example", 3));
        for k in [
            outbox_failures("eu.example", 3),
            outbox_lease("eu.example", 3),
            outbox_channel("eu.example", 3),
        ] {
            assert_eq!(hash_slot(&k), slot, "{k}");
        }
        assert_eq!(outbox("a", 1), "fo:{fw:61:1}");
        assert_ne!(hash_slot(&outbox("eu.example", 3)), hash_slot(&outbox("eu.example", 4)));
    }
}
