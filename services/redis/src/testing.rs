//! A real Redis Cluster for tests (DESIGN.md: tests use real Redis Cluster, never a stand-in),
//! shared by the keystore's, messaging's and this crate's tests. Behind the `testing` feature,
//! used only as a dev-dependency.
//!
//! The cluster is `TASSIS_TEST_REDIS_URL` when set (CI starts one), otherwise one started once per
//! test process with `scripts/redis-cluster.sh start` (3 masters on free 127.0.0.1 ports). A
//! detached watchdog stops it with `scripts/redis-cluster.sh stop --dir DIR` once the test process
//! has exited, however it exits. Tests share the cluster safely because each uses fresh random
//! identity keys; nothing here flushes or lists keys.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use crate::{Redis, RedisArgs};

/// Environment variable naming an already running cluster to test against.
pub const URL_ENV: &str = "TASSIS_TEST_REDIS_URL";

/// The cluster of this test process: its URL, or why there is none.
static CLUSTER: OnceLock<Result<String, String>> = OnceLock::new();

/// The repository's cluster script.
fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/redis-cluster.sh")
}

/// The test cluster's URL, starting the cluster on first use. Panics (failing the test) with a
/// message saying how to fix things when no cluster can be had.
pub fn cluster_url() -> String {
    match CLUSTER.get_or_init(find_or_start) {
        Ok(url) => url.clone(),
        Err(e) => panic!("{e}"),
    }
}

/// Flags for the test cluster.
pub fn cluster_args() -> RedisArgs {
    RedisArgs::from_url(cluster_url())
}

/// A connection to the test cluster (one per test: fred's connection tasks live on the runtime
/// that opened them, and every `#[tokio::test]` has its own runtime).
pub async fn connect() -> Redis {
    match crate::connect(&cluster_args()).await {
        Ok(r) => r,
        Err(e) => panic!("cannot connect to the test Redis Cluster: {e}"),
    }
}

fn find_or_start() -> Result<String, String> {
    if let Ok(url) = std::env::var(URL_ENV)
        && !url.trim().is_empty()
    {
        return Ok(url.trim().to_string());
    }
    start(&[])
}

/// A fresh cluster for this test process alone (for tests that change the cluster itself:
/// migrate slots, kill nodes), started with extra `redis-cluster.sh start` flags such as
/// `--replicas 1`, and stopped once the process exits.
pub fn own_cluster(args: &[&str]) -> String {
    match start(args) {
        Ok(url) => url,
        Err(e) => panic!("{e}"),
    }
}

fn start(args: &[&str]) -> Result<String, String> {
    let script = script();
    let out = Command::new("bash")
        .arg(&script)
        .arg("start")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(format!(
            "could not start a test Redis Cluster with {} ({}). Install redis-server >= 7 \
             (apt-get install redis-server) or set {URL_ENV} to a running cluster's URL.\n{stderr}",
            script.display(),
            out.status
        ));
    }
    let url = String::from_utf8_lossy(&out.stdout).trim().to_string();
    // The script reports its directory alone on the last stderr line.
    let dir = stderr
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or_default()
        .to_string();
    if url.is_empty() || dir.is_empty() {
        return Err(format!(
            "{} start printed no URL or directory:\n{stderr}",
            script.display()
        ));
    }
    stop_when_process_exits(&script, &dir);
    Ok(url)
}

/// Spawns a detached watchdog that stops the cluster in `dir` once this process is gone. In its
/// own process group, so a Ctrl-C aimed at the tests does not kill it before it has cleaned up.
fn stop_when_process_exits(script: &std::path::Path, dir: &str) {
    use std::os::unix::process::CommandExt;
    let spawned = Command::new("bash")
        .arg("-c")
        .arg(r#"while kill -0 "$1" 2>/dev/null; do sleep 0.5; done; exec bash "$2" stop --dir "$3""#)
        .arg("redis-cluster-watchdog")
        .arg(std::process::id().to_string())
        .arg(script)
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn();
    if let Err(e) = spawned {
        eprintln!(
            "warning: cannot start the watchdog that stops the test cluster ({e}); stop it with: {} stop --dir {dir}",
            script.display()
        );
    }
}
