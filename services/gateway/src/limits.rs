//! The gateway's rate limits (docs/security.md): which requests each limit counts, whose bucket
//! it is, and the `rate_limited` Error a refusal becomes (its description says when to retry).
//!
//! Shared limits — new connections per client address, sends per recipient device, prekey
//! fetches per target identity — are buckets every gateway pod shares through Redis (when the
//! gateway has `--redis-url`), behind a local fast path ([`tassis_ratelimit::Limiter`]).
//! Per-connection limits — requests, upload authorizations — are an 8-byte bucket in the session.

use std::net::IpAddr;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tassis_ratelimit::quota::Limit;
use tassis_ratelimit::{Decision, Gcra};

use crate::listener::Ctx;
use crate::{ErrorName, GatewayError};

/// The limits, named as in flags, metrics and docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    ConnectionsPerIp,
    RequestsPerConnection,
    SendsPerDevice,
    PrekeyFetchesPerIdentity,
    UploadAuthorizationsPerConnection,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::ConnectionsPerIp,
        Kind::RequestsPerConnection,
        Kind::SendsPerDevice,
        Kind::PrekeyFetchesPerIdentity,
        Kind::UploadAuthorizationsPerConnection,
    ];

    /// Name in metrics and shared bucket keys.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::ConnectionsPerIp => "connections_per_ip",
            Kind::RequestsPerConnection => "requests_per_connection",
            Kind::SendsPerDevice => "sends_per_device",
            Kind::PrekeyFetchesPerIdentity => "prekey_fetches_per_identity",
            Kind::UploadAuthorizationsPerConnection => "upload_authorizations_per_connection",
        }
    }

    /// What the client did too often, for the Error description.
    fn what(self) -> &'static str {
        match self {
            Kind::ConnectionsPerIp => "too many new connections from your address",
            Kind::RequestsPerConnection => "too many requests on this connection",
            Kind::SendsPerDevice => "too many messages to this device",
            Kind::PrekeyFetchesPerIdentity => "too many prekey requests for this identity",
            Kind::UploadAuthorizationsPerConnection => "too many upload authorizations on this connection",
        }
    }
}

/// The Error for a refusal: `rate_limited:<what>; retry after <ms> ms`.
pub fn refused(kind: Kind, retry_after: Duration) -> GatewayError {
    let ms = retry_after.as_micros().div_ceil(1000).max(1);
    GatewayError::new(ErrorName::RateLimited, format!("{}; retry after {ms} ms", kind.what()))
}

/// Checks a shared limit for `key` (one token); a refusal is counted in the metrics.
pub async fn shared(ctx: &Ctx, kind: Kind, limit: &Limit, key: &[u8]) -> Result<(), GatewayError> {
    let Some(q) = &limit.0 else { return Ok(()) };
    let d = ctx.limiter.check(kind.as_str(), key, q, 1).await;
    outcome(ctx, kind, d)
}

/// Checks a per-connection limit whose bucket the session holds.
pub fn own(ctx: &Ctx, bucket: &mut Gcra, kind: Kind, limit: &Limit, cost: u32) -> Result<(), GatewayError> {
    let Some(q) = &limit.0 else { return Ok(()) };
    let d = bucket.check(q, cost.min(q.burst), ctx.limiter.now_us());
    outcome(ctx, kind, d)
}

/// Whether a per-connection bucket has a token left, taking none (for requests charged by what
/// they turn out to be granted, see [`charge`]).
pub fn own_available(ctx: &Ctx, bucket: &Gcra, kind: Kind, limit: &Limit) -> Result<(), GatewayError> {
    let Some(q) = &limit.0 else { return Ok(()) };
    outcome(ctx, kind, bucket.peek(q, 1, ctx.limiter.now_us()))
}

/// Takes `cost` tokens from a per-connection bucket for what was granted.
pub fn charge(ctx: &Ctx, bucket: &mut Gcra, limit: &Limit, cost: u32) {
    if let Some(q) = &limit.0 {
        bucket.charge(q, cost, ctx.limiter.now_us());
    }
}

fn outcome(ctx: &Ctx, kind: Kind, d: Decision) -> Result<(), GatewayError> {
    match d {
        Decision::Allow => Ok(()),
        Decision::Deny { retry_after } => {
            ctx.metrics.rate_limited.with_label_values(&[kind.as_str()]).inc();
            Err(refused(kind, retry_after))
        }
    }
}

/// The bucket key of a client address. Addresses are not stored as such: the key is a hash
/// (pseudonymous, and it lives only until the bucket refills). IPv6 clients are limited per /64,
/// the block one subscriber usually holds.
pub fn address_key(ip: IpAddr) -> Vec<u8> {
    let ip = match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut o = v6.octets();
                o[8..].fill(0);
                IpAddr::V6(o.into())
            }
        },
        v4 => v4,
    };
    let mut h = Sha256::new();
    h.update(b"tassis rate limit address\0");
    h.update(ip.to_string().as_bytes());
    h.finalize()[..16].to_vec()
}

/// The client's address: the last entry of the trusted proxy's header when one is configured
/// (the entry the proxy itself appended, which the client cannot forge), else the TCP peer.
pub fn client_ip(peer: IpAddr, header: Option<&str>) -> IpAddr {
    header
        .and_then(|v| v.rsplit(',').next())
        .and_then(|last| last.trim().parse().ok())
        .unwrap_or(peer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn description_says_when_to_retry() {
        let e = refused(Kind::SendsPerDevice, Duration::from_micros(1_200_001));
        assert_eq!(e.name, ErrorName::RateLimited);
        assert_eq!(
            e.to_string(),
            "rate_limited:too many messages to this device; retry after 1201 ms"
        );
        assert_eq!(
            refused(Kind::ConnectionsPerIp, Duration::ZERO)
                .description
                .rsplit(' ')
                .nth(1),
            Some("1")
        );
    }

    #[test]
    fn addresses() {
        let peer: IpAddr = "10.0.0.9".parse().unwrap();
        assert_eq!(client_ip(peer, None), peer);
        assert_eq!(
            client_ip(peer, Some("1.2.3.4, 5.6.7.8")),
            "5.6.7.8".parse::<IpAddr>().unwrap()
        );
        assert_eq!(client_ip(peer, Some("garbage")), peer);
        let a = address_key("2001:db8::1".parse().unwrap());
        assert_eq!(
            a,
            address_key("2001:db8::ffff:1".parse().unwrap()),
            "one /64, one bucket"
        );
        assert_ne!(a, address_key("2001:db8:0:1::1".parse().unwrap()));
        assert_eq!(
            address_key("1.2.3.4".parse().unwrap()),
            address_key("::ffff:1.2.3.4".parse().unwrap())
        );
        assert_eq!(a.len(), 16);
    }
}
