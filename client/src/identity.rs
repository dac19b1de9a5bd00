//! Identity keys and the two login signature schemes the server accepts.
//!
//! Exists because tassis authenticates a connection only by a signature over the `Login` bytes,
//! and deployed clients sign in two ways: plain Ed25519 (the documented scheme), and Signal-style
//! Curve25519 identity keys signing with XEdDSA (libsignal's `calculateSignature`). Having both
//! here lets tests and the CLI act as either kind of client.
//!
//! Key files: [`Identity::to_hex`] gives `<scheme>:<64 hex chars of the secret>`, e.g.
//! `ed25519:9d61…` or `curve25519:77a0…`, which [`Identity::from_hex`] reads back.

use std::fmt;
use std::str::FromStr;

use curve25519_dalek::constants::ED25519_BASEPOINT_TABLE;
use curve25519_dalek::montgomery::MontgomeryPoint;
use curve25519_dalek::scalar::{Scalar, clamp_integer};
use ed25519_dalek::{Signer, SigningKey};
use sha2::{Digest, Sha512};

use crate::error::{ClientError, Result};

/// The signature scheme of an identity key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// Ed25519 public key, plain Ed25519 signatures.
    Ed25519,
    /// X25519 (Montgomery u) public key, XEdDSA signatures.
    Curve25519,
}

impl Scheme {
    /// The name used in key files and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Ed25519 => "ed25519",
            Scheme::Curve25519 => "curve25519",
        }
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scheme {
    type Err = ClientError;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "ed25519" => Ok(Scheme::Ed25519),
            "curve25519" | "x25519" | "xeddsa" => Ok(Scheme::Curve25519),
            other => Err(ClientError::InvalidKey(format!("unknown scheme {other:?}"))),
        }
    }
}

/// A Curve25519 (X25519) private key as Signal stores it: 32 secret bytes, clamped when used.
#[derive(Clone)]
pub struct Curve25519Key {
    secret: [u8; 32],
}

impl Curve25519Key {
    /// Wraps 32 secret bytes (clamping happens on use, so any bytes are a valid key).
    pub fn from_bytes(secret: [u8; 32]) -> Self {
        Self { secret }
    }

    /// The secret bytes as given.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.secret
    }

    /// The X25519 public key: the Montgomery u coordinate of clamp(secret)·B.
    pub fn public_key(&self) -> [u8; 32] {
        MontgomeryPoint::mul_base_clamped(self.secret).to_bytes()
    }

    /// XEdDSA signature as libsignal's `calculateSignature`, with the sign bit of the Edwards
    /// public key normalised to 0 (the XEdDSA specification's convention).
    pub fn sign(&self, msg: &[u8]) -> [u8; 64] {
        let random: [u8; 64] = rand::random();
        self.sign_with_random(msg, &random)
    }

    fn sign_with_random(&self, msg: &[u8], random: &[u8; 64]) -> [u8; 64] {
        let mut a = Scalar::from_bytes_mod_order(clamp_integer(self.secret));
        let mut big_a = (&a * ED25519_BASEPOINT_TABLE).compress();
        if big_a.as_bytes()[31] & 0x80 != 0 {
            // Use the key pair (-a, -A) whose Edwards point has sign bit 0; its Montgomery u is
            // the same, so the published X25519 key still identifies it.
            a = -a;
            big_a = (&a * ED25519_BASEPOINT_TABLE).compress();
        }
        let sign_bit = big_a.as_bytes()[31] & 0x80; // 0 after normalisation

        let mut prefix = [0xFFu8; 32];
        prefix[0] = 0xFE;
        let mut h1 = Sha512::new();
        h1.update(prefix);
        h1.update(a.as_bytes());
        h1.update(msg);
        h1.update(random);
        let r = Scalar::from_bytes_mod_order_wide(&wide(h1.finalize().as_slice()));
        let big_r = (&r * ED25519_BASEPOINT_TABLE).compress();

        let mut h2 = Sha512::new();
        h2.update(big_r.as_bytes());
        h2.update(big_a.as_bytes());
        h2.update(msg);
        let h = Scalar::from_bytes_mod_order_wide(&wide(h2.finalize().as_slice()));
        let s = r + h * a;

        let mut sig = [0u8; 64];
        sig[..32].copy_from_slice(big_r.as_bytes());
        sig[32..].copy_from_slice(s.as_bytes());
        sig[63] &= 0x7F;
        sig[63] |= sign_bit;
        sig
    }
}

fn wide(bytes: &[u8]) -> [u8; 64] {
    let mut out = [0u8; 64];
    out.copy_from_slice(bytes);
    out
}

/// A client identity: the private half of the `identityKey` in an [`Address`].
///
/// [`Address`]: tassis_proto::tassis::Address
#[derive(Clone)]
pub enum Identity {
    /// Ed25519 identity key.
    Ed25519(SigningKey),
    /// Signal-style Curve25519 identity key (signs with XEdDSA).
    Curve25519(Curve25519Key),
}

impl Identity {
    /// A fresh random Ed25519 identity.
    pub fn generate_ed25519() -> Self {
        Identity::Ed25519(SigningKey::from_bytes(&rand::random::<[u8; 32]>()))
    }

    /// A fresh random Curve25519 identity.
    pub fn generate_curve25519() -> Self {
        Identity::Curve25519(Curve25519Key::from_bytes(rand::random()))
    }

    /// A fresh random identity of the given scheme.
    pub fn generate(scheme: Scheme) -> Self {
        match scheme {
            Scheme::Ed25519 => Self::generate_ed25519(),
            Scheme::Curve25519 => Self::generate_curve25519(),
        }
    }

    /// Rebuilds an identity from its scheme and 32 secret bytes.
    pub fn from_secret(scheme: Scheme, secret: [u8; 32]) -> Self {
        match scheme {
            Scheme::Ed25519 => Identity::Ed25519(SigningKey::from_bytes(&secret)),
            Scheme::Curve25519 => Identity::Curve25519(Curve25519Key::from_bytes(secret)),
        }
    }

    /// The scheme of this identity.
    pub fn scheme(&self) -> Scheme {
        match self {
            Identity::Ed25519(_) => Scheme::Ed25519,
            Identity::Curve25519(_) => Scheme::Curve25519,
        }
    }

    /// The 32 secret bytes.
    pub fn secret_bytes(&self) -> [u8; 32] {
        match self {
            Identity::Ed25519(k) => k.to_bytes(),
            Identity::Curve25519(k) => k.to_bytes(),
        }
    }

    /// The public identity key as sent in `Address.identityKey`: the Ed25519 public key, or the
    /// raw 32-byte X25519 Montgomery u coordinate.
    pub fn public_key(&self) -> [u8; 32] {
        match self {
            Identity::Ed25519(k) => k.verifying_key().to_bytes(),
            Identity::Curve25519(k) => k.public_key(),
        }
    }

    /// Signs `msg`: plain Ed25519, or XEdDSA for Curve25519 keys.
    pub fn sign(&self, msg: &[u8]) -> [u8; 64] {
        match self {
            Identity::Ed25519(k) => k.sign(msg).to_bytes(),
            Identity::Curve25519(k) => k.sign(msg),
        }
    }

    /// `<scheme>:<hex secret>`, the key-file form. Contains the secret: store it carefully.
    pub fn to_hex(&self) -> String {
        format!("{}:{}", self.scheme(), hex::encode(self.secret_bytes()))
    }

    /// Parses [`Identity::to_hex`] output (surrounding whitespace allowed). A bare 64-char hex
    /// secret without a scheme prefix is read as Ed25519.
    pub fn from_hex(s: &str) -> Result<Self> {
        let s = s.trim();
        let (scheme, hex_secret) = match s.split_once(':') {
            Some((scheme, rest)) => (scheme.parse()?, rest),
            None => (Scheme::Ed25519, s),
        };
        let bytes =
            hex::decode(hex_secret.trim()).map_err(|e| ClientError::InvalidKey(format!("secret is not hex: {e}")))?;
        let secret: [u8; 32] = bytes
            .try_into()
            .map_err(|b: Vec<u8>| ClientError::InvalidKey(format!("secret is {} bytes, want 32", b.len())))?;
        Ok(Self::from_secret(scheme, secret))
    }
}

impl fmt::Debug for Identity {
    /// Never prints the secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Identity::{}({})", self.scheme(), hex::encode(self.public_key()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signature, VerifyingKey};

    /// The server-side Ed25519 check.
    fn verify_ed25519(public: &[u8; 32], msg: &[u8], sig: &[u8; 64]) -> bool {
        VerifyingKey::from_bytes(public)
            .map(|k| k.verify_strict(msg, &Signature::from_bytes(sig)).is_ok())
            .unwrap_or(false)
    }

    /// The server-side XEdDSA check as PROTOCOL.md describes it: clear the top bit of u, convert
    /// u to the Edwards point (rejecting u = -1) with the sign from bit 7 of sig[63], clear that
    /// bit, verify strictly as Ed25519.
    fn verify_xeddsa(u: &[u8; 32], msg: &[u8], sig: &[u8; 64]) -> bool {
        let mut u = *u;
        u[31] &= 0x7F;
        let sign = sig[63] >> 7;
        let Some(point) = MontgomeryPoint(u).to_edwards(sign) else {
            return false;
        };
        let mut sig = *sig;
        sig[63] &= 0x7F;
        let key = VerifyingKey::from(point);
        key.verify_strict(msg, &Signature::from_bytes(&sig)).is_ok()
    }

    fn verify(identity: &Identity, msg: &[u8], sig: &[u8; 64]) -> bool {
        match identity.scheme() {
            Scheme::Ed25519 => verify_ed25519(&identity.public_key(), msg, sig),
            Scheme::Curve25519 => verify_xeddsa(&identity.public_key(), msg, sig),
        }
    }

    /// Flipping any single bit of the signature or the message must make verification fail.
    /// Debug-build curve arithmetic is slow (~10 ms a verification), so by default this checks the
    /// XEdDSA sign bit (sig[63] bit 7), the lowest and highest bit of R and of s, and a spread of
    /// other positions chosen from `seed`; `exhaustive` checks every bit (the `--ignored` tests).
    fn flips_fail(
        verify: impl Fn(&[u8], &[u8; 64]) -> bool,
        msg: &[u8],
        sig: &[u8; 64],
        seed: usize,
        exhaustive: bool,
    ) {
        let sig_bits = 64 * 8;
        let total = sig_bits + msg.len() * 8;
        let positions: Vec<usize> = if exhaustive {
            (0..total).collect()
        } else {
            let mut p = vec![0, 255, 256, 511, 63 * 8 + 7];
            p.extend((0..12).map(|i| (seed * 131 + i * 97 + 17) % total));
            p
        };
        for pos in positions {
            let (mut m, mut s) = (msg.to_vec(), *sig);
            if pos < sig_bits {
                s[pos / 8] ^= 1 << (pos % 8);
            } else {
                m[(pos - sig_bits) / 8] ^= 1 << (pos % 8);
            }
            assert!(
                !verify(&m, &s),
                "verified with bit {pos} flipped (sig bits first, then msg)"
            );
        }
    }

    #[test]
    fn ed25519_sign_verify() {
        let id = Identity::generate_ed25519();
        let msg = b"login bytes";
        let sig = id.sign(msg);
        assert!(verify(&id, msg, &sig));
        assert!(!verify(&id, b"other bytes", &sig));
        let other = Identity::generate_ed25519();
        assert!(!verify(&other, msg, &sig));
        flips_fail(|m, s| verify(&id, m, s), msg, &sig, 1, false);
    }

    #[test]
    fn ed25519_matches_rfc8032_test1() {
        // RFC 8032 section 7.1, TEST 1 (empty message).
        let secret: [u8; 32] = hex::decode("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
            .unwrap()
            .try_into()
            .unwrap();
        let id = Identity::from_secret(Scheme::Ed25519, secret);
        assert_eq!(
            hex::encode(id.public_key()),
            "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
        );
        assert_eq!(
            hex::encode(id.sign(b"")),
            "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
        );
    }

    #[test]
    fn xeddsa_signatures_verify_server_side() {
        // Many keys so both signs of the Edwards point (negation path) are exercised.
        let mut saw_negated = false;
        for i in 0..64u32 {
            let id = Identity::generate_curve25519();
            let Identity::Curve25519(k) = &id else { unreachable!() };
            let a = Scalar::from_bytes_mod_order(clamp_integer(k.to_bytes()));
            saw_negated |= (&a * ED25519_BASEPOINT_TABLE).compress().as_bytes()[31] & 0x80 != 0;

            let msg = format!("login bytes {i}");
            let sig = id.sign(msg.as_bytes());
            assert_eq!(sig[63] & 0x80, 0, "sign bit normalised to 0");
            assert!(verify(&id, msg.as_bytes(), &sig), "key {i} failed");
            assert!(!verify(&id, b"tampered", &sig));
            // Signatures are randomised but every one verifies.
            let sig2 = id.sign(msg.as_bytes());
            assert_ne!(sig, sig2);
            assert!(verify(&id, msg.as_bytes(), &sig2));
        }
        assert!(saw_negated, "no key needed negation in 64 tries");
    }

    #[test]
    fn xeddsa_bit_flips_fail() {
        let id = Identity::generate_curve25519();
        let msg = b"login bytes";
        let sig = id.sign(msg);
        flips_fail(|m, s| verify(&id, m, s), msg, &sig, 2, false);
    }

    #[test]
    #[ignore = "slow in debug builds; run with --ignored (or --release)"]
    fn exhaustive_bit_flips_fail() {
        for id in [Identity::generate_ed25519(), Identity::generate_curve25519()] {
            let msg = b"login bytes";
            let sig = id.sign(msg);
            flips_fail(|m, s| verify(&id, m, s), msg, &sig, 0, true);
        }
        for (key, msg, sig) in libsignal_vectors() {
            flips_fail(|m, s| verify_xeddsa(&key, m, s), &msg, &sig, 0, true);
        }
    }

    #[test]
    fn xeddsa_public_key_is_x25519() {
        // RFC 7748 section 6.1: Alice's private and public key.
        let secret: [u8; 32] = hex::decode("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
            .unwrap()
            .try_into()
            .unwrap();
        let id = Identity::from_secret(Scheme::Curve25519, secret);
        assert_eq!(
            hex::encode(id.public_key()),
            "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
        );
        let sig = id.sign(b"hello");
        assert!(verify(&id, b"hello", &sig));
    }

    /// (identityKey, msg, sig) of every vector made by the official Signal library.
    fn libsignal_vectors() -> Vec<([u8; 32], Vec<u8>, [u8; 64])> {
        let fixture: serde_json::Value =
            serde_json::from_str(include_str!("../tests/fixtures/xeddsa-libsignal.json")).unwrap();
        fixture["vectors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| {
                let field = |name: &str| hex::decode(v[name].as_str().unwrap()).unwrap();
                (
                    field("identityKey").try_into().unwrap(),
                    field("msg"),
                    field("sig").try_into().unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn libsignal_vectors_verify() {
        let vectors = libsignal_vectors();
        assert_eq!(vectors.len(), 20);
        let mut sign_bits = [0usize; 2];
        for (i, (key, msg, sig)) in vectors.iter().enumerate() {
            sign_bits[(sig[63] >> 7) as usize] += 1;
            assert!(verify_xeddsa(key, msg, sig), "vector {i} does not verify");
            flips_fail(|m, s| verify_xeddsa(key, m, s), msg, sig, i, false);
        }
        // libsignal transmits the Edwards key's real sign bit: both values occur.
        assert!(sign_bits[0] > 0 && sign_bits[1] > 0, "sign bits seen: {sign_bits:?}");
    }

    #[test]
    fn hex_round_trip() {
        for id in [Identity::generate_ed25519(), Identity::generate_curve25519()] {
            let text = id.to_hex();
            assert!(text.starts_with(id.scheme().as_str()));
            let back = Identity::from_hex(&format!("  {text}\n")).unwrap();
            assert_eq!(back.scheme(), id.scheme());
            assert_eq!(back.public_key(), id.public_key());
            assert_eq!(back.secret_bytes(), id.secret_bytes());
        }
        assert!(Identity::from_hex("ed25519:abcd").is_err());
        assert!(Identity::from_hex("rsa:00").is_err());
        assert!(Identity::from_hex("ed25519:zz").is_err());
        let bare = Identity::generate_ed25519();
        let parsed = Identity::from_hex(&hex::encode(bare.secret_bytes())).unwrap();
        assert_eq!(parsed.public_key(), bare.public_key());
    }

    #[test]
    fn debug_hides_secret() {
        let id = Identity::generate_curve25519();
        let dbg = format!("{id:?}");
        assert!(dbg.contains(&hex::encode(id.public_key())));
        assert!(!dbg.contains(&hex::encode(id.secret_bytes())));
    }

    #[test]
    fn u_minus_one_rejected() {
        // p - 1 = 2^255 - 20, little-endian.
        let mut u = [0xFFu8; 32];
        u[0] = 0xEC;
        u[31] = 0x7F;
        assert!(MontgomeryPoint(u).to_edwards(0).is_none());
        assert!(!verify_xeddsa(&u, b"x", &[0u8; 64]));
    }
}
