//! A real S3-compatible server for tests: `s3s-fs` (it checks SigV4 signatures and enforces POST
//! policies) on an OS-picked 127.0.0.1 port, storing into a fresh temporary directory. A bucket
//! is a directory under the root.
//!
//! `.ci/run` installs the binary (`cargo install s3s-fs@0.14.1 --features binary --locked`);
//! `TASSIS_TEST_S3S_FS` may name it elsewhere. Without it the tests fail, never pass silently.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

/// Credentials the test server accepts.
pub const S3_ACCESS_KEY: &str = "tassis-test-access-key";
pub const S3_SECRET_KEY: &str = "tassis-test-secret-key-0123456789";

/// A running s3s-fs.
pub struct S3Server {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    /// The temporary directory (holds `root/`, the store).
    dir: PathBuf,
    /// Everything the server printed.
    pub logs: Arc<Mutex<Vec<String>>>,
}

impl S3Server {
    /// Starts s3s-fs with the given buckets already created.
    pub fn start(buckets: &[&str]) -> S3Server {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "tassis-s3-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let root = dir.join("root");
        for b in buckets {
            std::fs::create_dir_all(root.join(b)).expect("create bucket directory");
        }
        std::fs::create_dir_all(&root).expect("create store directory");
        let bin = std::env::var("TASSIS_TEST_S3S_FS").unwrap_or_else(|_| "s3s-fs".into());
        let mut child = Command::new(&bin)
            .args(["--host", "127.0.0.1", "--port", "0", "--access-key", S3_ACCESS_KEY])
            .args(["--secret-key", S3_SECRET_KEY])
            .arg(&root)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {bin:?} ({e}): the S3 tests need s3s-fs; install it with \
                     `cargo install s3s-fs@0.14.1 --features binary --locked` (.ci/run does), \
                     or name it in TASSIS_TEST_S3S_FS"
                )
            });
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel::<String>();
        let out = child.stdout.take().expect("piped");
        let err = child.stderr.take().expect("piped");
        let l1 = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Some((_, url)) = line.split_once("server is running at ") {
                    let _ = tx.send(url.trim().to_string());
                }
                l1.lock().unwrap().push(line);
            }
        });
        let l2 = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                l2.lock().unwrap().push(line);
            }
        });
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(url) => S3Server { child, url, dir, logs },
            Err(_) => {
                let _ = child.kill();
                let status = child.wait().ok();
                panic!(
                    "s3s-fs did not start (exit: {status:?}); output:\n{}",
                    logs.lock().unwrap().join("\n")
                );
            }
        }
    }

    /// Path-style URL of a bucket.
    pub fn bucket_url(&self, bucket: &str) -> String {
        format!("{}/{bucket}", self.url)
    }

    /// The environment that gives tassis this server's credentials through the standard AWS
    /// chain (and keeps it from probing instance metadata or local profiles).
    pub fn aws_env(&self) -> Vec<(&'static str, &'static str)> {
        vec![
            ("AWS_ACCESS_KEY_ID", S3_ACCESS_KEY),
            ("AWS_SECRET_ACCESS_KEY", S3_SECRET_KEY),
            ("AWS_EC2_METADATA_DISABLED", "true"),
            ("AWS_CONFIG_FILE", "/nonexistent/tassis-test"),
            ("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/tassis-test"),
        ]
    }

    /// Where an object's bytes are stored, to look at them directly.
    pub fn object_path(&self, bucket: &str, key: &str) -> PathBuf {
        self.dir.join("root").join(bucket).join(key)
    }

    pub fn output(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
