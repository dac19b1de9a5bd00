//! The production shape as separate processes on a Redis Cluster: keystore, messaging replicas,
//! attachments and gateways (used by cluster.rs and faults.rs).

use tassis_e2e::Process;

use super::BIN;

/// Every role as its own process.
pub struct Deployment {
    pub keystore: Process,
    pub messaging: Vec<Process>,
    pub attachments: Process,
    pub gateways: Vec<Process>,
}

impl Deployment {
    /// On the test Redis Cluster.
    pub fn start(messaging: usize, gateways: usize) -> Deployment {
        Self::start_on(&tassis_redis::testing::cluster_url(), messaging, gateways)
    }

    pub fn start_on(redis: &str, messaging: usize, gateways: usize) -> Deployment {
        Self::start_with(redis, messaging, gateways, &[])
    }

    /// With extra flags for the messaging replicas.
    pub fn start_with(redis: &str, messaging: usize, gateways: usize, messaging_args: &[&str]) -> Deployment {
        let ks = Process::start(BIN, "keystore", &["--redis-url", redis]);
        let ms: Vec<Process> = (0..messaging)
            .map(|_| {
                let mut args = vec!["--redis-url", redis];
                args.extend_from_slice(messaging_args);
                Process::start(BIN, "messaging", &args)
            })
            .collect();
        let at = Process::start(BIN, "attachments", &[]);
        let ms_urls = ms.iter().map(|m| m.grpc_url()).collect::<Vec<_>>().join(",");
        let gws = (0..gateways)
            .map(|_| {
                Process::start(
                    BIN,
                    "gateway",
                    &[
                        "--keystore",
                        &ks.grpc_url(),
                        "--messaging",
                        &ms_urls,
                        "--attachments",
                        &at.grpc_url(),
                        "--upstream-timeout",
                        "3s",
                    ],
                )
            })
            .collect();
        Deployment {
            keystore: ks,
            messaging: ms,
            attachments: at,
            gateways: gws,
        }
    }

    pub fn url(&self, gateway: usize) -> String {
        self.gateways[gateway].ws_url()
    }
}

/// `redis-cli -h 127.0.0.1 -p port args…`: its output, trimmed (empty when the node does not
/// answer).
#[allow(unused_imports)] // not every test binary that includes `common` uses it
pub use tassis_redis::testing::cli as redis_cli;
