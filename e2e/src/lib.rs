//! Starting and stopping real `tassis` processes for tests.
//!
//! Each process listens on `127.0.0.1:0` (OS-picked ports) and logs JSON; the harness reads its
//! stdout until the one `tassis ready` line, which names the bound addresses — a signal, not a
//! sleep. Output keeps being drained (and kept) so the child never blocks on a full pipe.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

pub mod s3;
pub use s3::S3Server;

/// A running tassis process.
pub struct Process {
    child: Child,
    /// The role's main listener (WebSocket or gRPC).
    pub listen: SocketAddr,
    /// The admin listener.
    pub admin: SocketAddr,
    /// Every line the process printed so far.
    pub logs: Arc<Mutex<Vec<String>>>,
    /// Receives the exit status once the process ends (after `wait_exit`).
    exited: bool,
}

/// How long a process may take to become ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);

impl Process {
    /// Starts `bin <role> <args…>` with OS-picked ports and waits for its ready line.
    pub fn start(bin: &str, role: &str, args: &[&str]) -> Process {
        Self::start_with_env(bin, role, args, &[])
    }

    pub fn start_with_env(bin: &str, role: &str, args: &[&str], env: &[(&str, &str)]) -> Process {
        let mut cmd = Command::new(bin);
        cmd.arg(role)
            .args([
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
                "--log-format",
                "json",
            ])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        isolate_env(&mut cmd, env);
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = mpsc::channel::<(SocketAddr, SocketAddr)>();
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        let l2 = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
                    && v["message"] == "tassis ready"
                {
                    let listen = v["listen"].as_str().and_then(|s| s.parse().ok());
                    let admin = v["admin"].as_str().and_then(|s| s.parse().ok());
                    if let (Some(l), Some(a)) = (listen, admin) {
                        let _ = ready_tx.send((l, a));
                    }
                }
                l2.lock().unwrap().push(line);
            }
        });
        let l3 = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                l3.lock().unwrap().push(line);
            }
        });
        match ready_rx.recv_timeout(READY_TIMEOUT) {
            Ok((listen, admin)) => Process {
                child,
                listen,
                admin,
                logs,
                exited: false,
            },
            Err(_) => {
                let _ = child.kill();
                let status = child.wait().ok();
                panic!(
                    "{bin} {role} did not become ready (exit: {status:?}); output:\n{}",
                    logs.lock().unwrap().join("\n")
                );
            }
        }
    }

    /// The WebSocket URL clients dial.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/api", self.listen)
    }

    /// The gRPC URL of an internal service.
    pub fn grpc_url(&self) -> String {
        format!("http://{}", self.listen)
    }

    /// Sends SIGTERM (graceful drain).
    pub fn terminate(&self) {
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
    }

    /// Kills the process at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.exited = true;
    }

    /// Waits for the process to exit, up to `timeout`; returns its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                self.exited = true;
                return st.code();
            }
            if std::time::Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything printed so far.
    pub fn output(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if !self.exited {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Flags given explicitly win: keeps the test runner's TASSIS_* settings (and AWS_* ones, which
/// would change what the AWS credential chain finds) out of the child, except those in `env`.
fn isolate_env(cmd: &mut Command, env: &[(&str, &str)]) {
    for (k, _) in std::env::vars() {
        if (k.starts_with("TASSIS_") || k.starts_with("AWS_")) && !env.iter().any(|(e, _)| *e == k) {
            cmd.env_remove(&k);
        }
    }
}

/// Runs `bin args…` expecting it to fail at start-up; returns (exit code, combined output).
pub fn start_failure(bin: &str, args: &[&str]) -> (Option<i32>, String) {
    start_failure_with_env(bin, args, &[])
}

/// [`start_failure`] with extra environment variables.
pub fn start_failure_with_env(bin: &str, args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut cmd = Command::new(bin);
    cmd.args(args).stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    isolate_env(&mut cmd, env);
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.code(), text)
}

/// A plain HTTP/1.0 GET (for admin endpoints); returns (status code, body).
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    let status = buf.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = buf
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}
