//! The gateway's Prometheus series (served on the admin port's /metrics).

use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};

/// Counters and gauges of one gateway.
#[derive(Clone)]
pub struct Metrics {
    /// Open client connections by kind (anonymous, authenticated).
    pub connections: IntGaugeVec,
    /// Login attempts by outcome (ok, refused).
    pub logins: IntCounterVec,
    /// Client operations by type and outcome (ok or the protocol error name).
    pub operations: IntCounterVec,
    /// Messages pushed to clients, and acked by them.
    pub deliveries: IntCounterVec,
}

impl Metrics {
    pub fn new(registry: &Registry) -> Self {
        let m = Self {
            connections: IntGaugeVec::new(
                Opts::new("tassis_gateway_connections", "Open client connections by kind"),
                &["kind"],
            )
            .expect("valid metric"),
            logins: IntCounterVec::new(
                Opts::new("tassis_gateway_logins_total", "Login attempts by outcome"),
                &["outcome"],
            )
            .expect("valid metric"),
            operations: IntCounterVec::new(
                Opts::new(
                    "tassis_gateway_operations_total",
                    "Client operations by type and outcome",
                ),
                &["op", "outcome"],
            )
            .expect("valid metric"),
            deliveries: IntCounterVec::new(
                Opts::new(
                    "tassis_gateway_deliveries_total",
                    "Inbound messages pushed to and acked by clients",
                ),
                &["event"],
            )
            .expect("valid metric"),
        };
        for c in [
            Box::new(m.connections.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(m.logins.clone()),
            Box::new(m.operations.clone()),
            Box::new(m.deliveries.clone()),
        ] {
            // Registering twice only happens in tests that share a registry; ignore it there.
            let _ = registry.register(c);
        }
        m
    }
}
