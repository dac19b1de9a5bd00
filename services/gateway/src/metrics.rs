//! The gateway's Prometheus series (served on the admin port's /metrics).

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

/// Counters, gauges and histograms of one gateway.
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
    /// Time from enqueue (at messaging) to the push to the client's socket queue.
    pub enqueue_to_delivery: Histogram,
    /// Requests and connections refused with `rate_limited`, by limit.
    pub rate_limited: IntCounterVec,
    /// Open delivery streams to messaging replicas.
    pub delivery_streams: IntGauge,
    /// Messaging replicas in the replica set (connected or not).
    pub messaging_replicas: IntGauge,
    /// Delivery streams that broke or could not be opened (each is retried).
    pub delivery_stream_reconnects: IntCounter,
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
            enqueue_to_delivery: Histogram::with_opts(
                HistogramOpts::new(
                    "tassis_gateway_enqueue_to_delivery_seconds",
                    "Time from a message's enqueue to its push to the recipient's connection",
                )
                .buckets(vec![
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0, 600.0, 3600.0, 86400.0,
                ]),
            )
            .expect("valid metric"),
            rate_limited: IntCounterVec::new(
                Opts::new(
                    "tassis_gateway_rate_limited_total",
                    "Requests and connections refused with rate_limited, by limit",
                ),
                &["limit"],
            )
            .expect("valid metric"),
            delivery_streams: IntGauge::new(
                "tassis_gateway_delivery_streams",
                "Open delivery streams to messaging replicas",
            )
            .expect("valid metric"),
            messaging_replicas: IntGauge::new(
                "tassis_gateway_messaging_replicas",
                "Messaging replicas in the gateway's replica set",
            )
            .expect("valid metric"),
            delivery_stream_reconnects: IntCounter::new(
                "tassis_gateway_delivery_stream_reconnects_total",
                "Delivery streams to messaging that broke or could not be opened (then retried)",
            )
            .expect("valid metric"),
        };
        // Series that exist before anything happened, so dashboards and alerts see zeros.
        for kind in ["anonymous", "authenticated"] {
            m.connections.with_label_values(&[kind]);
        }
        for outcome in ["ok", "refused"] {
            m.logins.with_label_values(&[outcome]);
        }
        for event in ["pushed", "acked"] {
            m.deliveries.with_label_values(&[event]);
        }
        for limit in crate::limits::Kind::ALL {
            m.rate_limited.with_label_values(&[limit.as_str()]);
        }
        for c in [
            Box::new(m.connections.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(m.logins.clone()),
            Box::new(m.operations.clone()),
            Box::new(m.deliveries.clone()),
            Box::new(m.enqueue_to_delivery.clone()),
            Box::new(m.rate_limited.clone()),
            Box::new(m.delivery_streams.clone()),
            Box::new(m.messaging_replicas.clone()),
            Box::new(m.delivery_stream_reconnects.clone()),
        ] {
            // Registering twice only happens in tests that share a registry; ignore it there.
            let _ = registry.register(c);
        }
        m
    }
}
