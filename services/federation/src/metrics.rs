//! The federation's Prometheus series (on the admin port of the roles that federate). Peer names
//! come from the allowlist, so label values are bounded; reasons are a fixed set.

use std::sync::Arc;

use prometheus::{IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

/// Counters and gauges of federation.
pub struct Metrics {
    /// Messages queued in the outbox for a peer (acked to their senders).
    pub queued: IntCounterVec,
    /// Messages a peer accepted.
    pub forwarded: IntCounterVec,
    /// Outbox entries dropped, by peer and reason (`timeout`, `unknown_device`, `invalid`,
    /// `unreadable`, `stale_claim`).
    pub dropped: IntCounterVec,
    /// Attempts to reach a peer that failed.
    pub failed_attempts: IntCounterVec,
    /// Forwarded messages received from peers, by outcome.
    pub received: IntCounterVec,
    /// Server-to-server requests refused (did not verify), by RPC.
    pub refused: IntCounterVec,
    /// Device-moved claims queued for the old home, by peer.
    pub claims: IntCounterVec,
    /// Messages handed over to a device's new home.
    pub handed_over: IntCounterVec,
    /// Outbox partitions this process holds the forwarding lease of.
    pub leases: IntGauge,
    /// Entries waiting in the outbox partitions this process forwards, by peer (sum over the
    /// replicas for the whole outbox).
    pub outbox_depth: IntGaugeVec,
}

impl Metrics {
    pub fn new(registry: &Registry) -> Arc<Self> {
        let vec = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            let _ = registry.register(Box::new(c.clone()));
            c
        };
        let leases = IntGauge::new(
            "tassis_federation_leases",
            "Outbox partitions this process forwards (holds the lease of)",
        )
        .expect("valid metric");
        let _ = registry.register(Box::new(leases.clone()));
        let outbox_depth = IntGaugeVec::new(
            Opts::new(
                "tassis_federation_outbox_depth",
                "Entries waiting in the outbox partitions this process forwards, by peer",
            ),
            &["peer"],
        )
        .expect("valid metric");
        let _ = registry.register(Box::new(outbox_depth.clone()));
        Arc::new(Self {
            queued: vec(
                "tassis_federation_queued_total",
                "Messages queued for forwarding to their home deployment",
                &["peer"],
            ),
            forwarded: vec(
                "tassis_federation_forwarded_total",
                "Forwarded messages the home deployment accepted",
                &["peer"],
            ),
            dropped: vec(
                "tassis_federation_dropped_total",
                "Outbox entries dropped, by reason (timeout: failing to reach the peer for --federation-timeout)",
                &["peer", "reason"],
            ),
            failed_attempts: vec(
                "tassis_federation_failed_attempts_total",
                "Attempts to forward to a peer that failed",
                &["peer"],
            ),
            received: vec(
                "tassis_federation_received_total",
                "Forwarded messages received from peers, by outcome",
                &["peer", "outcome"],
            ),
            refused: vec(
                "tassis_federation_refused_requests_total",
                "Server-to-server requests refused because they did not verify",
                &["rpc"],
            ),
            claims: vec(
                "tassis_federation_claims_total",
                "Device moves announced to the device's old home deployment",
                &["peer"],
            ),
            handed_over: vec(
                "tassis_federation_handed_over_total",
                "Queued messages handed over to a device's new home deployment",
                &["peer"],
            ),
            leases,
            outbox_depth,
        })
    }
}
