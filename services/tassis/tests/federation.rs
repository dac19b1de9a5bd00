//! Federation between two deployments on 127.0.0.1 (docs/federation.md): each deployment is a
//! `tassis standalone` on a Redis Cluster of its own, both share a presence directory (the test
//! Redis Cluster), and each allowlists the other. Short retry intervals and timeouts are set by
//! flag; every wait is on a signal (a delivery, a /metrics counter), never a fixed sleep.
//!
//! - delivery across deployments, and a recipient registered nowhere;
//! - a peer down for less than the timeout: delivered once it is back;
//! - a peer down for longer: dropped and counted, and the next message goes through;
//! - a device moving its home with messages queued: all handed over, in send order (with what is
//!   sent through the old home meanwhile behind them), and nothing of it stays at the old home;
//! - forged, tampered, misaddressed, stale and replayed server-to-server requests refused;
//! - configuration mistakes refused at start.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use common::otlp::{Receiver, in_trace_named, trace_ids};
use common::*;
use ed25519_dalek::SigningKey;
use tassis_client::Identity;
use tassis_e2e::Process;
use tassis_federation::config::Peer;
use tassis_federation::signing::{Credentials, header, kind, nonce};
use tassis_proto::federation_v1::federation_client::FederationClient;
use tassis_proto::federation_v1::{ClaimRequest, ForwardReply, ForwardRequest, Outcome, Signed};
use tassis_proto::tassis::{Address, ForwardedMessage, OutboundMessage};
use tassis_redis::testing::OwnCluster;

/// A free 127.0.0.1 port (the federation listener must be known to the peer before it starts, and
/// stay the same across a restart).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One deployment: its own Redis Cluster, name, signing key and federation port; its process
/// when running.
struct Deployment {
    name: &'static str,
    /// Started with the deployment's first start, kept across restarts.
    cluster: Option<OwnCluster>,
    key: SigningKey,
    key_file: PathBuf,
    port: u16,
    /// Extra flags (retry interval, timeout).
    flags: Vec<String>,
    /// Environment of its processes (OTLP export).
    env: Vec<(String, String)>,
    process: Option<Process>,
    _dir: tempdir::Dir,
}

mod tempdir {
    /// A temporary directory removed on drop.
    pub struct Dir(pub std::path::PathBuf);
    impl Dir {
        pub fn new() -> Dir {
            let p = std::env::temp_dir().join(format!("tassis-fed-{}", hex::encode(rand::random::<[u8; 8]>())));
            std::fs::create_dir_all(&p).unwrap();
            Dir(p)
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl Deployment {
    fn new(name: &'static str, flags: &[&str]) -> Deployment {
        let dir = tempdir::Dir::new();
        let key = SigningKey::from_bytes(&rand::random::<[u8; 32]>());
        let key_file = dir.0.join(format!("{name}.key"));
        std::fs::write(&key_file, hex::encode(key.to_bytes())).unwrap();
        Deployment {
            name,
            cluster: None,
            key,
            key_file,
            port: free_port(),
            flags: flags.iter().map(|s| s.to_string()).collect(),
            env: Vec::new(),
            process: None,
            _dir: dir,
        }
    }

    /// This deployment as an entry of a peer's allowlist.
    fn peer_spec(&self) -> String {
        format!(
            "{}={}@http://127.0.0.1:{}",
            self.name,
            hex::encode(self.key.verifying_key().to_bytes()),
            self.port
        )
    }

    /// The flags of a federated role of this deployment (storage, presence, and for messaging,
    /// federation with its listener on `port`).
    fn flags(&mut self, peers: &[&Deployment], port: Option<u16>) -> Vec<String> {
        let cluster = self
            .cluster
            .get_or_insert_with(|| OwnCluster::start(&[]))
            .url()
            .to_string();
        let mut args = vec![
            "--redis-url".to_string(),
            cluster,
            "--public-addr".into(),
            self.name.into(),
            "--presence-redis-url".into(),
            tassis_redis::testing::cluster_url(),
        ];
        if let Some(port) = port {
            let peers = peers.iter().map(|p| p.peer_spec()).collect::<Vec<_>>().join(",");
            args.extend([
                "--federation-listen".to_string(),
                format!("127.0.0.1:{port}"),
                "--federation-signing-key-file".into(),
                self.key_file.display().to_string(),
                "--federation-peers".into(),
                peers,
                "--federation-lease-ttl".into(),
                "1s".into(),
            ]);
            args.extend(self.flags.iter().cloned());
        }
        args
    }

    fn start(&mut self, peers: &[&Deployment]) {
        let port = self.port;
        let args = self.flags(peers, Some(port));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let env: Vec<(&str, &str)> = self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        self.process = Some(Process::start_with_env(BIN, "standalone", &args, &env));
    }

    fn process(&self) -> &Process {
        self.process.as_ref().expect("running")
    }

    fn url(&self) -> String {
        self.process().ws_url()
    }

    fn admin(&self) -> SocketAddr {
        self.process().admin
    }

    fn kill(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.kill();
        }
    }

    fn federation_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// This deployment's credentials, for speaking to `peer` as this deployment would.
    fn credentials(&self, peer: &Deployment) -> Credentials {
        credentials(self.name, &self.key, peer)
    }
}

/// Credentials of a deployment named `name` signing with `key`, that allowlists `peer`.
fn credentials(name: &str, key: &SigningKey, peer: &Deployment) -> Credentials {
    {
        Credentials::new(
            name.to_string(),
            key.clone(),
            [(
                peer.name.to_string(),
                Peer {
                    name: peer.name.to_string(),
                    url: peer.federation_url(),
                    key: peer.key.verifying_key(),
                },
            )]
            .into(),
            Duration::from_secs(300),
        )
    }
}

/// A pair of deployments that allowlist each other, both started.
fn pair(flags: &[&str]) -> (Deployment, Deployment) {
    let mut a = Deployment::new("a.test", flags);
    let mut b = Deployment::new("b.test", flags);
    a.start(&[&b]);
    b.start(&[&a]);
    (a, b)
}

/// Receives `n` messages on `c`, acking each; returns their payloads in order.
async fn receive_all(c: &tassis_client::Connection, n: usize) -> Vec<Bytes> {
    let mut got = Vec::new();
    for _ in 0..n {
        let (seq, payload) = recv(c).await;
        c.ack(seq).await.unwrap();
        got.push(payload);
    }
    got
}

fn payloads(prefix: &str, n: usize) -> Vec<Bytes> {
    (0..n).map(|i| Bytes::from(format!("{prefix} {i}"))).collect()
}

#[tokio::test]
async fn delivers_across_deployments() {
    let (a, b) = pair(&["--federation-retry-interval", "200ms"]);
    let d = registered(&b.url(), Identity::generate_ed25519(), b"phone", 2).await;
    let sender = anon(&a.url()).await;
    let sent = payloads("from a", 5);
    for p in &sent {
        sender
            .send(d.address(), p.clone())
            .await
            .expect("acked once queued for forwarding");
    }
    assert_eq!(receive_all(&d.conn, 5).await, sent, "every message, in send order");
    let forwarded = r#"tassis_federation_forwarded_total{peer="b.test"}"#;
    wait_metric(a.admin(), forwarded, |v| v == 5.0).await;
    assert_eq!(
        metric(a.admin(), r#"tassis_federation_queued_total{peer="b.test"}"#),
        5.0
    );
    assert_eq!(
        metric(
            b.admin(),
            r#"tassis_federation_received_total{outcome="queued",peer="a.test"}"#
        ),
        5.0
    );
    // The other way round, and a device of neither deployment.
    let e = registered(&a.url(), Identity::generate_ed25519(), b"laptop", 2).await;
    anon(&b.url())
        .await
        .send(e.address(), b"from b".to_vec())
        .await
        .unwrap();
    assert_eq!(recv(&e.conn).await.1, Bytes::from_static(b"from b"));
    let nobody = address(&Identity::generate_ed25519(), b"x");
    assert_eq!(err_name(sender.send(nobody, b"?".to_vec()).await), "unknown_device");
}

/// A pair with `flags`, a device registered at b (offline), and b killed.
async fn device_at_b_then_b_down(flags: &[&str]) -> (Deployment, Deployment, Identity, Address) {
    let (a, mut b) = pair(flags);
    let identity = Identity::generate_ed25519();
    let d = registered(&b.url(), identity.clone(), b"phone", 2).await;
    let to = d.address();
    drop(d);
    b.kill();
    (a, b, identity, to)
}

#[tokio::test]
async fn a_peer_down_for_less_than_the_timeout_gets_its_messages_when_back() {
    let (a, mut b, identity, to) =
        device_at_b_then_b_down(&["--federation-retry-interval", "300ms", "--federation-timeout", "10m"]).await;

    let sender = anon(&a.url()).await;
    sender
        .send(to.clone(), b"while b was down".to_vec())
        .await
        .expect("acked: durable in a's outbox");
    // Retries are spaced, and keep failing while b is down.
    let failed = r#"tassis_federation_failed_attempts_total{peer="b.test"}"#;
    wait_metric(a.admin(), failed, |v| v >= 2.0).await;
    assert_eq!(
        metric(a.admin(), r#"tassis_federation_forwarded_total{peer="b.test"}"#),
        0.0
    );

    b.start(&[&a]);
    let c = login(&b.url(), &identity, b"phone").await;
    assert_eq!(recv(&c).await.1, Bytes::from_static(b"while b was down"));
    assert_eq!(
        metric(
            a.admin(),
            r#"tassis_federation_dropped_total{peer="b.test",reason="timeout"}"#
        ),
        0.0
    );
}

#[tokio::test]
async fn a_peer_down_for_longer_than_the_timeout_loses_the_message_counted() {
    let (a, mut b, identity, to) =
        device_at_b_then_b_down(&["--federation-retry-interval", "200ms", "--federation-timeout", "1s"]).await;

    let sender = anon(&a.url()).await;
    sender.send(to.clone(), b"too late".to_vec()).await.unwrap();
    let dropped = r#"tassis_federation_dropped_total{peer="b.test",reason="timeout"}"#;
    wait_metric(a.admin(), dropped, |v| v == 1.0).await;
    assert!(metric(a.admin(), r#"tassis_federation_failed_attempts_total{peer="b.test"}"#) >= 2.0);

    b.start(&[&a]);
    sender.send(to, b"after b is back".to_vec()).await.unwrap();
    let c = login(&b.url(), &identity, b"phone").await;
    // Delivery is in send order: had the first one survived, it would come first.
    let (seq, payload) = recv(&c).await;
    assert_eq!(payload, Bytes::from_static(b"after b is back"));
    c.ack(seq).await.unwrap();
    assert_no_events(&c).await;
    assert_eq!(metric(a.admin(), dropped), 1.0);
}

#[tokio::test]
async fn a_device_moving_home_gets_its_queued_messages_in_order() {
    let (a, b) = pair(&["--federation-retry-interval", "200ms"]);
    let identity = Identity::generate_ed25519();
    let d = registered(&a.url(), identity.clone(), b"phone", 3).await;
    let to = d.address();
    drop(d);

    // Queued at its home a: sent there, and sent via b (forwarded to a).
    let via_a = anon(&a.url()).await;
    let via_b = anon(&b.url()).await;
    let mut sent = Vec::new();
    for p in payloads("queued at a", 3) {
        via_a.send(to.clone(), p.clone()).await.unwrap();
        sent.push(p);
    }
    for p in payloads("queued via b", 2) {
        via_b.send(to.clone(), p.clone()).await.unwrap();
        sent.push(p);
    }
    wait_metric(b.admin(), r#"tassis_federation_forwarded_total{peer="a.test"}"#, |v| {
        v == 2.0
    })
    .await;

    // The device registers at b: its home moves; a hands its queue over.
    let moved = login(&b.url(), &identity, b"phone").await;
    moved
        .register(spk(&identity, b"phone"), one_time_keys(b"phone", 0..3))
        .await
        .unwrap();
    // Sent right after the move, from both sides. What goes through the old home queues behind
    // what it hands over; what reaches the new home directly is delivered at once, so it may come
    // before the handed-over backlog. Nothing is lost (an interrupted handoff could deliver
    // something twice; this one is not interrupted, so each arrives once).
    let mut through_old_home = sent.clone();
    let mut direct = Vec::new();
    for (i, p) in payloads("after the move", 4).into_iter().enumerate() {
        if i % 2 == 0 {
            via_a.send(to.clone(), p.clone()).await.unwrap();
            through_old_home.push(p);
        } else {
            via_b.send(to.clone(), p.clone()).await.unwrap();
            direct.push(p);
        }
    }
    let got = receive_all(&moved, through_old_home.len() + direct.len()).await;
    let in_order: Vec<Bytes> = got.iter().filter(|p| !direct.contains(p)).cloned().collect();
    assert_eq!(
        in_order, through_old_home,
        "the old home's queue, handed over in send order: {got:?}"
    );
    let direct_got: Vec<Bytes> = got.iter().filter(|p| direct.contains(p)).cloned().collect();
    assert_eq!(direct_got, direct, "{got:?}");
    assert_no_events(&moved).await;
    // The queue, and whatever joined it while the handoff ran (a later send through the old home
    // finds no device there and goes straight to the outbox).
    let handed = wait_metric(
        a.admin(),
        r#"tassis_federation_handed_over_total{peer="b.test"}"#,
        |v| v >= 5.0,
    )
    .await;
    assert!(handed <= through_old_home.len() as f64, "handed over {handed}");
    assert_eq!(
        metric(b.admin(), r#"tassis_federation_claims_total{peer="a.test"}"#),
        1.0
    );

    // Nothing of the device stays at its old home: no prekeys to hand out, no queue to log in to.
    let ik = Bytes::copy_from_slice(&identity.public_key());
    assert_eq!(
        err_name(via_a.request_pre_keys(ik.clone(), vec![]).await),
        "unknown_identity"
    );
    let old = login(&a.url(), &identity, b"phone").await;
    assert_no_events(&old).await;
    // b hands out its keys.
    assert_eq!(via_b.request_pre_keys(ik, vec![]).await.unwrap().len(), 1);
}

/// A Forward request with one message for `to`, as `from` would seal it for `at`.
fn forward(creds: &Credentials, at: &str, to: &Address, text: &'static [u8]) -> (Signed, Bytes) {
    let n = nonce();
    let req = ForwardRequest {
        header: Some(header(&creds.name, at, kind::FORWARD, n.clone())),
        messages: vec![ForwardedMessage {
            message: Some(OutboundMessage {
                to: Some(to.clone()),
                unidentified_sender_message: Bytes::from_static(text),
            }),
            first_failed: 0,
            last_failed: 0,
        }],
        traceparents: vec![],
    };
    (creds.seal(&req), n)
}

#[tokio::test]
async fn forged_server_to_server_requests_are_refused() {
    let mut a = Deployment::new("a.test", &[]);
    let b = Deployment::new("b.test", &[]);
    a.start(&[&b]); // b need not run: the test speaks for it
    let identity = Identity::generate_ed25519();
    let d = registered(&a.url(), identity.clone(), b"phone", 2).await;
    let to = d.address();
    let mut client = FederationClient::connect(a.federation_url()).await.unwrap();
    let refused = |s: tonic::Status| assert_eq!(s.code(), tonic::Code::Unauthenticated, "{s:?}");

    let real = b.credentials(&a);
    // Somebody with another key, claiming to be b.
    let other_key = SigningKey::from_bytes(&rand::random::<[u8; 32]>());
    let forged = credentials("b.test", &other_key, &a);
    refused(
        client
            .forward(forward(&forged, "a.test", &to, b"forged").0)
            .await
            .unwrap_err(),
    );
    // A deployment not on the allowlist.
    let stranger = credentials("c.test", &other_key, &a);
    refused(
        client
            .forward(forward(&stranger, "a.test", &to, b"stranger").0)
            .await
            .unwrap_err(),
    );
    // b's real key, but addressed to another deployment.
    refused(
        client
            .forward(forward(&real, "c.test", &to, b"misaddressed").0)
            .await
            .unwrap_err(),
    );
    // b's real request, tampered with on the way.
    let (mut tampered, _) = forward(&real, "a.test", &to, b"tampered");
    let mut p = tampered.payload.to_vec();
    let at = p.len() - 1;
    p[at] ^= 0x20;
    tampered.payload = p.into();
    refused(client.forward(tampered).await.unwrap_err());
    // Stale: signed ten minutes ago.
    let mut req = ForwardRequest {
        header: Some(header("b.test", "a.test", kind::FORWARD, nonce())),
        messages: vec![],
        traceparents: vec![],
    };
    req.header.as_mut().unwrap().sent_at_ms -= 600_000;
    refused(client.forward(real.seal(&req)).await.unwrap_err());
    // A Forward payload presented as a Claim.
    refused(client.claim(forward(&real, "a.test", &to, b"x").0).await.unwrap_err());
    // A forged claim would take the device away from a: refused, the device stays.
    let claim = ClaimRequest {
        header: Some(header("b.test", "a.test", kind::CLAIM, nonce())),
        address: Some(to.clone()),
    };
    refused(client.claim(forged.seal(&claim)).await.unwrap_err());

    // The genuine request goes through once; its replay is refused.
    let (genuine, n) = forward(&real, "a.test", &to, b"genuine");
    let reply = client.forward(genuine.clone()).await.unwrap().into_inner();
    let reply: ForwardReply = real
        .open_reply(&reply, kind::FORWARD_REPLY, "a.test", &n)
        .expect("a's reply is signed by a and answers this request");
    assert_eq!(reply.outcomes, vec![Outcome::Queued as i32]);
    refused(client.forward(genuine).await.unwrap_err());

    // Only the genuine message arrived, and the device is still a's.
    assert_eq!(recv(&d.conn).await.1, Bytes::from_static(b"genuine"));
    assert_no_events(&d.conn).await;
    let keys = anon(&a.url())
        .await
        .request_pre_keys(Bytes::copy_from_slice(&identity.public_key()), vec![])
        .await
        .unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(
        metric(a.admin(), r#"tassis_federation_refused_requests_total{rpc="forward"}"#),
        6.0
    );
    assert_eq!(
        metric(a.admin(), r#"tassis_federation_refused_requests_total{rpc="claim"}"#),
        2.0
    );
}

#[test]
fn configuration_mistakes_are_refused_at_start() {
    let redis = tassis_redis::testing::cluster_url();
    let dir = tempdir::Dir::new();
    let key = dir.0.join("k");
    std::fs::write(&key, hex::encode([7u8; 32])).unwrap();
    let key = key.display().to_string();
    let public = SigningKey::from_bytes(&[8u8; 32]).verifying_key().to_bytes();
    let peer = format!("b.test={}@http://127.0.0.1:1", hex::encode(public));
    let base = ["standalone", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"];
    let presence = ["--redis-url", &redis, "--presence-redis-url", &redis];
    // A complete federated configuration of a.test but for what `flags` overrides or adds.
    let federated = |flags: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = presence.iter().map(|s| s.to_string()).collect();
        let mut set = vec![
            ("--public-addr", "a.test"),
            ("--federation-signing-key-file", key.as_str()),
            ("--federation-peers", peer.as_str()),
        ];
        for pair in flags.chunks(2) {
            match set.iter_mut().find(|(f, _)| *f == pair[0]) {
                Some(slot) => slot.1 = pair[1],
                None => set.push((pair[0], pair[1])),
            }
        }
        for (f, val) in set.into_iter().filter(|(_, val)| !val.is_empty()) {
            v.extend([f.to_string(), val.to_string()]);
        }
        v
    };
    let owned = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<String>>();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (owned(&["--presence-redis-url", &redis]), "--public-addr"),
        (
            owned(&["--presence-redis-url", &redis, "--public-addr", "a.test"]),
            "--redis-url",
        ),
        (federated(&["--public-addr", "a test"]), "a deployment name"),
        (federated(&["--federation-peers", ""]), "lists no peer"),
        (
            federated(&["--federation-signing-key-file", ""]),
            "--federation-signing-key-file is not set",
        ),
        (
            federated(&["--federation-peers", "b.test=zz@http://h:1"]),
            "--federation-peers entry",
        ),
        (federated(&["--public-addr", "b.test"]), "lists this deployment itself"),
        (
            federated(&["--federation-signing-key-file", "/nonexistent/key"]),
            "/nonexistent/key",
        ),
        (
            federated(&["--federation-batch", "1000", "--federation-max-request-size", "1048576"]),
            "can exceed --federation-max-request-size",
        ),
    ];
    for (flags, expected) in cases {
        let args: Vec<&str> = base.iter().copied().chain(flags.iter().map(String::as_str)).collect();
        let (code, out) = tassis_e2e::start_failure(BIN, &args);
        assert_eq!(code, Some(2), "{flags:?} must fail at start:\n{out}");
        assert!(out.contains(expected), "{flags:?}: expected {expected:?} in:\n{out}");
    }
}

/// Starts `bin role args…` with `args` given as owned strings.
fn role(name: &str, args: &[String]) -> Process {
    Process::start(BIN, name, &args.iter().map(String::as_str).collect::<Vec<_>>())
}

#[tokio::test]
async fn split_roles_share_the_forwarding_and_take_over_from_a_dead_replica() {
    let mut a = Deployment::new("a.test", &["--federation-retry-interval", "200ms"]);
    let mut b = Deployment::new("b.test", &["--federation-retry-interval", "200ms"]);
    // a as separate processes: keystore, two messaging replicas (b forwards to the first), gateway.
    let ks = role("keystore", &a.flags(&[], None));
    let ports = [a.port, free_port()];
    let mut ms: Vec<Process> = ports
        .iter()
        .map(|p| role("messaging", &a.flags(&[&b], Some(*p))))
        .collect();
    let at = Process::start(BIN, "attachments", &[]);
    let replicas = ms.iter().map(|m| m.grpc_url()).collect::<Vec<_>>().join(",");
    let gw = Process::start(
        BIN,
        "gateway",
        &[
            "--keystore",
            &ks.grpc_url(),
            "--messaging",
            &replicas,
            "--attachments",
            &at.grpc_url(),
            "--upstream-timeout",
            "3s",
        ],
    );
    b.start(&[&a]);

    // Each replica forwards its fair share of a's 16 partitions to b.
    for m in &ms {
        wait_metric(m.admin, "tassis_federation_leases", |v| v == 8.0).await;
    }

    // Through the split roles both ways: b -> a's first replica -> a's gateway, and back.
    let d = registered(&gw.ws_url(), Identity::generate_ed25519(), b"phone", 2).await;
    let e = registered(&b.url(), Identity::generate_ed25519(), b"laptop", 2).await;
    anon(&b.url()).await.send(d.address(), b"to a".to_vec()).await.unwrap();
    assert_eq!(recv(&d.conn).await.1, Bytes::from_static(b"to a"));

    // The second replica dies: the first takes its partitions over once their leases expire.
    ms[1].kill();
    wait_metric(ms[0].admin, "tassis_federation_leases", |v| v == 16.0).await;
    let sender = anon(&gw.ws_url()).await;
    let sent = payloads("after the kill", 10);
    for p in &sent {
        // The gateway may still pick the dead replica for an enqueue: not acked, so send again.
        let mut tries = 0;
        while let Err(err) = sender.send(e.address(), p.clone()).await {
            tries += 1;
            assert!(tries < 50, "never acked: {err:?}");
            // Pacing the retries (as a client would), not waiting for an event.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert_eq!(receive_all(&e.conn, sent.len()).await, sent);
    assert_no_events(&e.conn).await;
}

#[tokio::test]
async fn one_trace_follows_a_message_across_deployments() {
    let receiver = Receiver::default();
    let otlp = format!("http://{}", receiver.start().await);
    let mut a = Deployment::new("a.test", &["--federation-retry-interval", "200ms"]);
    let mut b = Deployment::new("b.test", &["--federation-retry-interval", "200ms"]);
    for (d, service) in [(&mut a, "tassis-a"), (&mut b, "tassis-b")] {
        for (k, v) in [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.as_str()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_TRACES_SAMPLER", "always_on"),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ("OTEL_SERVICE_NAME", service),
        ] {
            d.env.push((k.into(), v.into()));
        }
    }
    a.start(&[&b]);
    b.start(&[&a]);
    let d = registered(&b.url(), Identity::generate_ed25519(), b"phone", 2).await;
    anon(&a.url())
        .await
        .send(d.address(), b"traced".to_vec())
        .await
        .unwrap();
    assert_eq!(recv(&d.conn).await.1, Bytes::from_static(b"traced"));

    // The send at a, its arrival at b, and b's push to the device: one trace.
    let spans = receiver
        .wait_for("the send at a", |s| trace_ids(s, "tassis-a", "tassis send").len() == 1)
        .await;
    let trace = trace_ids(&spans, "tassis-a", "tassis send").remove(0);
    receiver
        .wait_for("b's receive and push in the send's trace", |s| {
            in_trace_named(s, "tassis-b", "federation receive", &trace)
                && in_trace_named(s, "tassis-b", "messaging deliver", &trace)
                && in_trace_named(s, "tassis-b", "gateway push", &trace)
        })
        .await;
}

#[tokio::test]
async fn a_graceful_stop_hands_the_forwarding_leases_back() {
    use tassis_redis::fred::interfaces::{KeysInterface, SortedSetsInterface};
    let (mut a, _b) = pair(&[]);
    let redis = a.cluster.as_ref().expect("started").connect().await;
    let leases = || async {
        let mut held = 0;
        for p in 0..tassis_federation::outbox::PARTITIONS {
            let v: Option<String> = redis
                .pool()
                .get(tassis_redis::keys::outbox_lease("b.test", p))
                .await
                .unwrap();
            held += usize::from(v.is_some());
        }
        held
    };
    wait_metric(a.admin(), "tassis_federation_leases", |v| v == 16.0).await;
    assert_eq!(leases().await, 16);
    let members: i64 = redis.pool().zcard(tassis_redis::keys::forwarders()).await.unwrap();
    assert_eq!(members, 1);

    // SIGTERM: a drains and exits; its leases and its membership go with it, so a replica that
    // takes over need not wait for them to expire.
    let mut p = a.process.take().unwrap();
    p.terminate();
    assert_eq!(p.wait_exit(Duration::from_secs(30)), Some(0));
    assert_eq!(leases().await, 0, "every lease released");
    let members: i64 = redis.pool().zcard(tassis_redis::keys::forwarders()).await.unwrap();
    assert_eq!(members, 0, "left the membership");
}

#[tokio::test]
async fn a_peer_relays_to_a_devices_current_home_but_only_among_its_own_peers() {
    use tassis_redis::fred::interfaces::KeysInterface;
    // a (the test speaks for it) forwards to b; b relays to c, its peer, and refuses x, which
    // it does not federate with.
    let a = Deployment::new("a.test", &[]);
    let mut b = Deployment::new("b.test", &["--federation-retry-interval", "200ms"]);
    let mut c = Deployment::new("c.test", &["--federation-retry-interval", "200ms"]);
    b.start(&[&a, &c]);
    c.start(&[&b]);
    let d = registered(&c.url(), Identity::generate_ed25519(), b"phone", 2).await;
    let stray = address(&Identity::generate_ed25519(), b"phone");
    let presence = tassis_redis::testing::connect().await;
    let _: () = presence
        .pool()
        .set(
            tassis_redis::keys::presence(&stray.identity_key, &stray.device_id),
            "x.test",
            None,
            None,
            false,
        )
        .await
        .unwrap();

    let creds = a.credentials(&b);
    let n = nonce();
    let message = |to: &Address, text: &'static [u8]| ForwardedMessage {
        message: Some(OutboundMessage {
            to: Some(to.clone()),
            unidentified_sender_message: Bytes::from_static(text),
        }),
        first_failed: 0,
        last_failed: 0,
    };
    let req = ForwardRequest {
        header: Some(header("a.test", "b.test", kind::FORWARD, n.clone())),
        messages: vec![message(&d.address(), b"relayed"), message(&stray, b"nowhere")],
        traceparents: vec![],
    };
    let mut client = FederationClient::connect(b.federation_url()).await.unwrap();
    let reply = client.forward(creds.seal(&req)).await.unwrap().into_inner();
    let reply: ForwardReply = creds.open_reply(&reply, kind::FORWARD_REPLY, "b.test", &n).unwrap();
    assert_eq!(
        reply.outcomes,
        vec![Outcome::Queued as i32, Outcome::UnknownDevice as i32],
        "queued on for c; x is not b's peer"
    );
    assert_eq!(recv(&d.conn).await.1, Bytes::from_static(b"relayed"));
    assert_eq!(
        metric(b.admin(), r#"tassis_federation_queued_total{peer="c.test"}"#),
        1.0
    );
    assert_eq!(
        metric(
            b.admin(),
            r#"tassis_federation_dropped_total{peer="x.test",reason="not_a_peer"}"#
        ),
        1.0
    );
    wait_metric(
        c.admin(),
        r#"tassis_federation_received_total{outcome="queued",peer="b.test"}"#,
        |v| v == 1.0,
    )
    .await;
}
