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
        ] {
            assert_eq!(hash_slot(&k), slot, "{k}");
        }
        assert_eq!(queue(&[0xab], b"\x01"), "mq:{ab}:01");
        assert_ne!(hash_slot(&keystore_devices(&[1])), hash_slot(&keystore_devices(&[2])));
    }
}
