//! Authentication of the server-to-server channel: signed envelopes with an allowlist of peers.
//!
//! Why signatures rather than only mutual TLS: the trust decision ("is this a peer of ours?")
//! stays with tassis and its allowlist of (name, Ed25519 key), whatever terminates TLS in front of
//! it (an Ingress, a mesh); the signed bytes are exactly the bytes sent (like the client login),
//! so nothing depends on re-serialization. TLS (https:// peer URLs) is still what keeps the
//! metadata confidential on the way.
//!
//! A request is accepted only if its payload decodes, its header names a peer on the allowlist
//! as sender and this deployment as addressee, the signature over
//! [`DOMAIN`] || payload verifies strictly under that peer's key, the kind matches the RPC, the
//! time is within the allowed skew, and the nonce was not seen before (remembered in this
//! deployment's Redis for twice the skew, so a replay to another replica is caught too). A reply
//! is accepted only if it is signed by the peer the request went to and carries the request's
//! nonce.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use ed25519_dalek::{Signature, Signer, SigningKey};
use prost::Message;
use tassis_proto::federation_v1::{ClaimReply, ClaimRequest, ForwardReply, ForwardRequest, Header, Signed};
use tassis_redis::Redis;
use tassis_redis::fred::interfaces::KeysInterface;
use tassis_redis::fred::types::{Expiration, SetOptions, Value};

use crate::FederationError;
use crate::config::Peer;

/// Domain separation: these signatures can never be taken for any other tassis signature.
pub const DOMAIN: &[u8] = b"tassis-federation-v1\0";

/// Nonce length.
pub const NONCE_LEN: usize = 16;

/// The payload kinds, one per message type.
pub mod kind {
    pub const FORWARD: &str = "Forward";
    pub const FORWARD_REPLY: &str = "ForwardReply";
    pub const CLAIM: &str = "Claim";
    pub const CLAIM_REPLY: &str = "ClaimReply";
}

/// A payload with a [`Header`] in field 1.
pub trait Headed: Message + Default {
    fn header(&self) -> Option<&Header>;
}

macro_rules! headed {
    ($($t:ty),*) => {$(
        impl Headed for $t {
            fn header(&self) -> Option<&Header> {
                self.header.as_ref()
            }
        }
    )*};
}
headed!(ForwardRequest, ForwardReply, ClaimRequest, ClaimReply);

/// This deployment's signing identity and its allowlist.
pub struct Credentials {
    /// This deployment's name.
    pub name: String,
    /// Its signing key.
    key: SigningKey,
    /// Allowed peers by name.
    pub peers: HashMap<String, Peer>,
    /// Allowed clock skew.
    skew: Duration,
}

fn unauthenticated(why: impl Into<String>) -> FederationError {
    FederationError::Unauthenticated(why.into())
}

/// A header addressed to `to`.
pub fn header(from: &str, to: &str, kind: &str, nonce: Bytes) -> Header {
    Header {
        from: from.to_string(),
        to: to.to_string(),
        sent_at_ms: tassis_runtime::unix_ms(),
        nonce,
        kind: kind.to_string(),
    }
}

/// A fresh random nonce.
pub fn nonce() -> Bytes {
    Bytes::copy_from_slice(&rand::random::<[u8; NONCE_LEN]>())
}

impl Credentials {
    pub fn new(name: String, key: SigningKey, peers: HashMap<String, Peer>, skew: Duration) -> Self {
        Self { name, key, peers, skew }
    }

    /// Serializes and signs `payload`.
    pub fn seal(&self, payload: &impl Message) -> Signed {
        let bytes = payload.encode_to_vec();
        let signature = self.key.sign(&[DOMAIN, &bytes].concat());
        Signed {
            payload: bytes.into(),
            signature: Bytes::copy_from_slice(&signature.to_bytes()),
        }
    }

    /// Decodes and checks the signature and addressing of `signed`, of kind `kind`; returns the
    /// payload and its sender. Freshness and replay are checked by [`Credentials::open_request`].
    fn open<M: Headed>(&self, signed: &Signed, kind: &str) -> Result<(M, &Peer), FederationError> {
        let m = M::decode(signed.payload.as_ref()).map_err(|_| unauthenticated("the payload does not decode"))?;
        let h = m.header().ok_or_else(|| unauthenticated("no header"))?;
        let peer = self.peers.get(&h.from).ok_or_else(|| {
            unauthenticated(format!(
                "{:?} is not a federation peer of this deployment",
                clip(&h.from)
            ))
        })?;
        let sig = <[u8; 64]>::try_from(signed.signature.as_ref())
            .map(|b| Signature::from_bytes(&b))
            .map_err(|_| unauthenticated("the signature is not 64 bytes"))?;
        peer.key
            .verify_strict(&[DOMAIN, signed.payload.as_ref()].concat(), &sig)
            .map_err(|_| unauthenticated(format!("bad signature for peer {}", peer.name)))?;
        if h.to != self.name {
            return Err(unauthenticated(format!(
                "addressed to {:?}, not to this deployment",
                clip(&h.to)
            )));
        }
        if h.kind != kind {
            return Err(unauthenticated(format!(
                "a {:?} payload where {kind} was expected",
                clip(&h.kind)
            )));
        }
        if h.nonce.len() != NONCE_LEN {
            return Err(unauthenticated("the nonce is not 16 bytes"));
        }
        Ok((m, peer))
    }

    /// Opens a request: [`Credentials::open`], then freshness (within the skew of this clock) and the
    /// replay guard (the nonce is remembered in `redis` for twice the skew).
    pub async fn open_request<M: Headed>(
        &self,
        signed: &Signed,
        kind: &str,
        redis: &Redis,
    ) -> Result<(M, Peer), FederationError> {
        let (m, peer) = self.open::<M>(signed, kind)?;
        let h = m.header().expect("checked by open");
        let age = tassis_runtime::unix_ms().saturating_sub(h.sent_at_ms);
        let skew = i64::try_from(self.skew.as_millis()).unwrap_or(i64::MAX);
        if age.unsigned_abs() > skew as u64 {
            return Err(unauthenticated(format!(
                "sent {age} ms from this deployment's clock, beyond the {skew} ms allowed"
            )));
        }
        let key = tassis_redis::keys::federation_nonce(&peer.name, &h.nonce);
        let remember = Expiration::PX(skew.saturating_mul(2));
        let fresh: Value = redis
            .pool()
            .set(key, 1, Some(remember), Some(SetOptions::NX), false)
            .await?;
        if fresh.is_null() {
            return Err(unauthenticated("replayed (this nonce was seen before)"));
        }
        let peer = peer.clone();
        Ok((m, peer))
    }

    /// Opens the reply of `peer` to a request made with `nonce`.
    pub fn open_reply<M: Headed>(
        &self,
        signed: &Signed,
        kind: &str,
        peer: &str,
        nonce: &Bytes,
    ) -> Result<M, FederationError> {
        let (m, from) = self.open::<M>(signed, kind)?;
        if from.name != peer {
            return Err(unauthenticated(format!(
                "a reply signed by {} instead of {peer}",
                from.name
            )));
        }
        if m.header().is_some_and(|h| h.nonce != *nonce) {
            return Err(unauthenticated("a reply to another request"));
        }
        Ok(m)
    }
}

/// At most 64 characters of untrusted text, for error messages.
fn clip(s: &str) -> String {
    s.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;

    fn deployment(name: &str, key: &SigningKey, peer: (&str, &SigningKey)) -> Credentials {
        let p = Peer {
            name: peer.0.into(),
            url: "http://127.0.0.1:1".into(),
            key: peer.1.verifying_key(),
        };
        Credentials::new(
            name.into(),
            key.clone(),
            HashMap::from([(peer.0.to_string(), p)]),
            Duration::from_secs(60),
        )
    }

    fn keys() -> (SigningKey, SigningKey) {
        (SigningKey::from_bytes(&[1u8; 32]), SigningKey::from_bytes(&[2u8; 32]))
    }

    fn request(from: &str, to: &str) -> ForwardRequest {
        ForwardRequest {
            header: Some(header(from, to, kind::FORWARD, nonce())),
            messages: vec![],
            traceparents: vec![],
        }
    }

    #[test]
    fn a_peer_request_opens_and_forgeries_do_not() {
        let (ka, kb) = keys();
        let a = deployment("a", &ka, ("b", &kb));
        let b = deployment("b", &kb, ("a", &ka));
        let sealed = a.seal(&request("a", "b"));
        let (m, peer) = b.open::<ForwardRequest>(&sealed, kind::FORWARD).expect("valid");
        assert_eq!(peer.name, "a");
        assert_eq!(m.header.unwrap().to, "b");

        // A flipped payload bit, a flipped signature bit.
        let mut tampered = sealed.clone();
        let mut p = tampered.payload.to_vec();
        *p.last_mut().unwrap() ^= 1;
        tampered.payload = p.into();
        assert!(b.open::<ForwardRequest>(&tampered, kind::FORWARD).is_err());
        let mut tampered = sealed.clone();
        let mut s = tampered.signature.to_vec();
        s[0] ^= 1;
        tampered.signature = s.into();
        assert!(b.open::<ForwardRequest>(&tampered, kind::FORWARD).is_err());

        // Signed by a key not on the allowlist, claiming to be `a`.
        let mallory = deployment("a", &SigningKey::from_bytes(&[3u8; 32]), ("b", &kb));
        let e = b
            .open::<ForwardRequest>(&mallory.seal(&request("a", "b")), kind::FORWARD)
            .unwrap_err();
        assert!(e.to_string().contains("bad signature"), "{e}");

        // Addressed to somebody else, of another kind, from an unknown deployment.
        assert!(
            b.open::<ForwardRequest>(&a.seal(&request("a", "c")), kind::FORWARD)
                .is_err()
        );
        assert!(b.open::<ForwardRequest>(&sealed, kind::CLAIM).is_err());
        let e = b
            .open::<ForwardRequest>(&a.seal(&request("z", "b")), kind::FORWARD)
            .unwrap_err();
        assert!(e.to_string().contains("not a federation peer"), "{e}");
        // Garbage.
        let junk = Signed {
            payload: Bytes::from_static(b"\xff\xff\xff"),
            signature: Bytes::from_static(&[0u8; 64]),
        };
        assert!(b.open::<ForwardRequest>(&junk, kind::FORWARD).is_err());
    }

    #[test]
    fn replies_bind_the_request_nonce_and_the_peer() {
        let (ka, kb) = keys();
        let a = deployment("a", &ka, ("b", &kb));
        let b = deployment("b", &kb, ("a", &ka));
        let n = nonce();
        let reply = ForwardReply {
            header: Some(header("b", "a", kind::FORWARD_REPLY, n.clone())),
            outcomes: vec![1],
        };
        let sealed = b.seal(&reply);
        assert!(
            a.open_reply::<ForwardReply>(&sealed, kind::FORWARD_REPLY, "b", &n)
                .is_ok()
        );
        assert!(
            a.open_reply::<ForwardReply>(&sealed, kind::FORWARD_REPLY, "b", &nonce())
                .is_err()
        );
        assert!(
            a.open_reply::<ForwardReply>(&sealed, kind::CLAIM_REPLY, "b", &n)
                .is_err()
        );
    }
}
