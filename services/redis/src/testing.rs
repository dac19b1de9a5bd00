//! A real Redis Cluster for tests (DESIGN.md: tests use real Redis Cluster, never a stand-in),
//! shared by the keystore's, messaging's and this crate's tests. Behind the `testing` feature,
//! used only as a dev-dependency.
//!
//! The cluster is `TASSIS_TEST_REDIS_URL` when set (CI starts one), otherwise one started once per
//! test process with `scripts/redis-cluster.sh start` (3 masters on free 127.0.0.1 ports). A
//! detached watchdog stops it with `scripts/redis-cluster.sh stop --dir DIR` once the test process
//! has exited, however it exits. Tests share the cluster safely because each uses fresh random
//! identity keys; nothing here flushes or lists keys.
//!
//! Tests that change the cluster itself (migrate slots, kill nodes, need replicas) get one of
//! their own: [`OwnCluster`] (stopped when dropped, so also when the test fails, with the
//! watchdog as a backstop) or the older [`own_cluster`] (stopped by the watchdog only). Those
//! clusters live in fresh directories under `TASSIS_TEST_REDIS_CLUSTER_DIR` when it is set
//! (scripts/test.sh sets it and stops whatever is left there when the run ends), else in fresh
//! temporary directories.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::{Redis, RedisArgs};

/// Environment variable naming an already running cluster to test against.
pub const URL_ENV: &str = "TASSIS_TEST_REDIS_URL";

/// Environment variable naming the directory under which tests start clusters of their own.
pub const OWN_DIR_ENV: &str = "TASSIS_TEST_REDIS_CLUSTER_DIR";

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
    start(&[]).map(|(url, _)| url)
}

/// A fresh cluster for this test process alone (for tests that change the cluster itself:
/// migrate slots, kill nodes), started with extra `redis-cluster.sh start` flags such as
/// `--replicas 1`, and stopped once the process exits.
pub fn own_cluster(args: &[&str]) -> String {
    OwnCluster::start_detached(args).0
}

/// Starts a cluster with `redis-cluster.sh start <args>` (in a fresh directory under
/// [`OWN_DIR_ENV`] when it is set) and the watchdog that stops it once this process is gone;
/// returns its URL and directory.
fn start(args: &[&str]) -> Result<(String, PathBuf), String> {
    static STARTED: AtomicUsize = AtomicUsize::new(0);
    let script = script();
    let mut cmd = Command::new("bash");
    cmd.arg(&script).arg("start").args(args);
    if let Ok(base) = std::env::var(OWN_DIR_ENV)
        && !base.trim().is_empty()
    {
        let n = STARTED.fetch_add(1, Ordering::Relaxed);
        cmd.arg("--dir")
            .arg(Path::new(base.trim()).join(format!("own-{}-{n}", std::process::id())));
    }
    let out = cmd
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
    Ok((url, PathBuf::from(dir)))
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

/// A Redis Cluster of one test's own, started with `scripts/redis-cluster.sh start` and stopped
/// (`redis-cluster.sh stop`) when dropped — when the test ends, passed or panicked. A watchdog
/// stops it too should the test process die without unwinding.
///
/// It also drives faults for the fault tests: kill a node with SIGKILL, start it again, and wait,
/// by polling the nodes' own `CLUSTER NODES`/`CLUSTER INFO`/`INFO replication`, for a failover or
/// a replica's link.
pub struct OwnCluster {
    url: String,
    dir: PathBuf,
}

impl OwnCluster {
    /// Starts a cluster with extra `redis-cluster.sh start` flags, e.g.
    /// `["--replicas", "1", "--node-timeout", "2000"]`. Panics (failing the test) if it cannot.
    pub fn start(args: &[&str]) -> OwnCluster {
        let (url, dir) = Self::start_detached(args);
        OwnCluster { url, dir }
    }

    fn start_detached(args: &[&str]) -> (String, PathBuf) {
        start(args).unwrap_or_else(|e| panic!("{e}"))
    }

    /// `redis-cluster://127.0.0.1:P1,...`: the masters at start.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Flags naming this cluster.
    pub fn args(&self) -> RedisArgs {
        RedisArgs::from_url(self.url.clone())
    }

    /// A connection to this cluster.
    pub async fn connect(&self) -> Redis {
        match crate::connect(&self.args()).await {
            Ok(r) => r,
            Err(e) => panic!("cannot connect to the test's own Redis Cluster: {e}"),
        }
    }

    /// The directory the script runs the nodes in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The client port of every node (masters and replicas), from their config files.
    pub fn node_ports(&self) -> Vec<u16> {
        let mut ports = Vec::new();
        for entry in std::fs::read_dir(&self.dir).into_iter().flatten().flatten() {
            let conf = std::fs::read_to_string(entry.path().join("redis.conf")).unwrap_or_default();
            if let Some(p) = conf.lines().find_map(|l| l.strip_prefix("port ")) {
                ports.push(p.trim().parse().expect("a port in redis.conf"));
            }
        }
        ports.sort_unstable();
        ports
    }

    /// The master serving `slot`, as the first node that answers sees it.
    pub fn master_of(&self, slot: u16) -> u16 {
        self.node_ports()
            .into_iter()
            .find_map(|p| cluster_nodes(p).and_then(|nodes| owner(&nodes, slot)))
            .unwrap_or_else(|| panic!("no node of {} names an owner of slot {slot}", self.url))
    }

    /// Kills the node on `port` with SIGKILL (`redis-cluster.sh kill-node`), as a crash would.
    pub fn kill_node(&self, port: u16) {
        self.script(&["kill-node", "--port", &port.to_string()]);
    }

    /// Starts the node on `port` again from its own config and data (`redis-cluster.sh
    /// start-node`); a master that was failed over rejoins as a replica.
    pub fn start_node(&self, port: u16) {
        self.script(&["start-node", "--port", &port.to_string()]);
    }

    /// Waits, up to `within`, until a failover has replaced the dead master on `dead` as the
    /// owner of `slot`: every node that answers marks `dead` failed (`fail`, not just suspected),
    /// names another master for the slot and reports `cluster_state:ok`. Returns the new master.
    pub async fn wait_failover(&self, dead: u16, slot: u16, within: Duration) -> u16 {
        let ports = self.node_ports();
        self.poll(within, "the failover", || {
            let mut owners = Vec::new();
            for &p in ports.iter().filter(|&&p| p != dead) {
                let Some(nodes) = cluster_nodes(p) else { continue };
                let failed = nodes
                    .iter()
                    .any(|n| n.port == dead && n.flags.iter().any(|f| f == "fail"));
                if !failed || info_field(&cli(p, &["CLUSTER", "INFO"]), "cluster_state").as_deref() != Some("ok") {
                    return None;
                }
                owners.push(owner(&nodes, slot).filter(|&o| o != dead)?);
            }
            let first = *owners.first()?;
            owners.iter().all(|&o| o == first).then_some(first)
        })
        .await
    }

    /// Waits, up to `within`, until the node on `port` is a replica whose link to its master is
    /// up and that master counts it among its connected replicas. Returns the master's port.
    pub async fn wait_replica_linked(&self, port: u16, within: Duration) -> u16 {
        self.poll(within, "the replica's link", || {
            let info = cli(port, &["INFO", "replication"]);
            if info_field(&info, "role").as_deref() != Some("slave")
                || info_field(&info, "master_link_status").as_deref() != Some("up")
            {
                return None;
            }
            let master: u16 = info_field(&info, "master_port")?.parse().ok()?;
            let on_master = cli(master, &["INFO", "replication"]);
            let linked = on_master
                .lines()
                .any(|l| l.starts_with("slave") && l.contains(&format!("port={port},")) && l.contains("state=online"));
            linked.then_some(master)
        })
        .await
    }

    /// Polls `check` (which reads the cluster's state) every 100 ms until it answers, up to
    /// `within`; panics naming `what` otherwise.
    async fn poll<T>(&self, within: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(v) = check() {
                return v;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what} did not happen within {within:?} on {}",
                self.url
            );
            // The interval of a poll of the cluster's real state, not a wait for it.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn script(&self, args: &[&str]) {
        let out = Command::new("bash")
            .arg(script())
            .args(args)
            .arg("--dir")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .output()
            .expect("run redis-cluster.sh");
        assert!(
            out.status.success(),
            "redis-cluster.sh {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for OwnCluster {
    fn drop(&mut self) {
        let stopped = Command::new("bash")
            .arg(script())
            .arg("stop")
            .arg("--dir")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if !stopped.is_ok_and(|s| s.success()) {
            eprintln!(
                "warning: could not stop the test cluster in {} (the watchdog will retry when the test process exits)",
                self.dir.display()
            );
        }
    }
}

/// `redis-cli -h 127.0.0.1 -p <port> <args>`: its output, trimmed, without CRs; empty when the
/// node does not answer.
pub fn cli(port: u16, args: &[&str]) -> String {
    let out = Command::new(std::env::var("REDIS_CLI").unwrap_or_else(|_| "redis-cli".into()))
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("redis-cli (it ships with redis-server)");
    String::from_utf8_lossy(&out.stdout)
        .replace('\r', "")
        .trim()
        .to_string()
}

/// One `name:value` field of `INFO` or `CLUSTER INFO` output.
pub fn info_field(text: &str, name: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map(|v| v.trim().to_string())
}

/// One line of `CLUSTER NODES`.
#[derive(Clone, Debug)]
pub struct ClusterNode {
    pub port: u16,
    /// `myself`, `master`, `slave`, `fail?`, `fail`, …
    pub flags: Vec<String>,
    /// Slot ranges served (masters), inclusive.
    pub slots: Vec<(u16, u16)>,
}

/// The cluster as the node on `port` sees it (`CLUSTER NODES`); `None` if it does not answer.
pub fn cluster_nodes(port: u16) -> Option<Vec<ClusterNode>> {
    let text = cli(port, &["CLUSTER", "NODES"]);
    let nodes: Vec<ClusterNode> = text
        .lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let addr = f.get(1)?.split(['@', ',']).next()?;
            Some(ClusterNode {
                port: addr.rsplit(':').next()?.parse().ok()?,
                flags: f.get(2)?.split(',').map(str::to_string).collect(),
                slots: f
                    .iter()
                    .skip(8)
                    .filter(|s| !s.starts_with('[')) // slots being migrated: `[slot->-id]`
                    .filter_map(|s| {
                        let (a, b) = s.split_once('-').unwrap_or((s, s));
                        Some((a.parse().ok()?, b.parse().ok()?))
                    })
                    .collect(),
            })
        })
        .collect();
    (!nodes.is_empty()).then_some(nodes)
}

/// The master serving `slot` in `nodes`, unless it is marked failed.
fn owner(nodes: &[ClusterNode], slot: u16) -> Option<u16> {
    nodes
        .iter()
        .find(|n| {
            n.flags.iter().any(|f| f == "master")
                && !n.flags.iter().any(|f| f == "fail")
                && n.slots.iter().any(|&(a, b)| (a..=b).contains(&slot))
        })
        .map(|n| n.port)
}
