//! Attachments against a real S3-compatible server (s3s-fs on 127.0.0.1, which checks SigV4 and
//! enforces POST policies), the way a client following the protocol uses them: request upload
//! authorizations on the WebSocket, POST the file as a multipart form with the given fields to
//! uploadURL, then GET downloadURL (a redirect from the gateway to a presigned GET).

mod common;

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use common::*;
use tassis_client::proto::UploadAuthorization;
use tassis_e2e::{Process, S3Server, http_get, start_failure_with_env};

const BUCKET: &str = "attachments";

/// s3s-fs with the bucket, and `tassis standalone` using it.
fn start(extra: &[&str]) -> (S3Server, Process) {
    let s3 = S3Server::start(&[BUCKET]);
    let p = tassis_on(&s3, extra);
    (s3, p)
}

fn s3_args(s3: &S3Server) -> Vec<String> {
    [
        "--s3-bucket",
        BUCKET,
        "--s3-endpoint",
        &s3.url,
        "--s3-path-style",
        "true",
        "--s3-region",
        "us-east-1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn tassis_on(s3: &S3Server, extra: &[&str]) -> Process {
    let mut args = s3_args(s3);
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Process::start_with_env(BIN, "standalone", &args, &s3.aws_env())
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// POSTs `data` with the authorization's form fields (as given, `file` last); returns (status,
/// body).
async fn upload(a: &UploadAuthorization, fields: &HashMap<String, String>, data: &[u8]) -> (u16, String) {
    let mut form = reqwest::multipart::Form::new();
    for (k, v) in fields {
        form = form.text(k.clone(), v.clone());
    }
    form = form.part(
        "file",
        reqwest::multipart::Part::bytes(data.to_vec()).file_name("attachment.bin"),
    );
    let resp = http().post(&a.upload_url).multipart(form).send().await.expect("POST");
    (resp.status().as_u16(), resp.text().await.unwrap_or_default())
}

/// GET following redirects: (status, body).
async fn download(url: &str) -> (u16, Vec<u8>) {
    let resp = http().get(url).send().await.expect("GET");
    (resp.status().as_u16(), resp.bytes().await.unwrap().to_vec())
}

async fn one(url: &str) -> UploadAuthorization {
    let c = anon(url).await;
    let mut a = c.request_upload_authorizations(1).await.expect("authorization");
    assert_eq!(a.len(), 1);
    a.pop().unwrap()
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

fn key_of(a: &UploadAuthorization) -> &str {
    &a.upload_form_data["key"]
}

/// The policy document of an authorization.
fn policy(a: &UploadAuthorization) -> serde_json::Value {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(&a.upload_form_data["policy"])
        .unwrap();
    serde_json::from_slice(&raw).unwrap()
}

/// Every byte value, then a pattern: `n` bytes.
fn payload(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + i / 256) as u8).collect()
}

#[tokio::test]
async fn upload_within_the_limit_and_download_byte_for_byte() {
    let (s3, p) = start(&["--max-attachment-size", "1000"]);
    let c = anon(&p.ws_url()).await;
    assert_eq!(c.configuration().max_attachment_size, 1000);
    let before = now_ms();
    let a = c.request_upload_authorizations(1).await.unwrap().pop().unwrap();

    // What the authorization says.
    assert_eq!(a.upload_url, s3.bucket_url(BUCKET));
    assert_eq!(a.max_upload_size, 1000);
    let key = key_of(&a).to_string();
    let (date, id) = key.split_once('/').unwrap();
    assert_eq!(date.len(), 8, "{key}");
    assert!(date.bytes().all(|b| b.is_ascii_digit()), "{key}");
    assert_eq!(id.len(), 36, "{key}");
    assert_eq!(&id[14..15], "4", "uuid v4: {key}");
    assert_eq!(a.download_url, format!("http://{}/attachments/{key}", p.listen));
    let mut names: Vec<&str> = a.upload_form_data.keys().map(String::as_str).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "key",
            "policy",
            "x-amz-algorithm",
            "x-amz-credential",
            "x-amz-date",
            "x-amz-signature"
        ]
    );
    assert_eq!(a.upload_form_data["x-amz-algorithm"], "AWS4-HMAC-SHA256");
    assert!(
        a.upload_form_data["x-amz-credential"].ends_with("/us-east-1/s3/aws4_request"),
        "{:?}",
        a.upload_form_data
    );
    let doc = policy(&a);
    let conditions = doc["conditions"].as_array().unwrap();
    assert!(conditions.contains(&serde_json::json!({"bucket": BUCKET})), "{doc}");
    assert!(conditions.contains(&serde_json::json!(["eq", "$key", key])), "{doc}");
    assert!(
        conditions.contains(&serde_json::json!(["content-length-range", 1, 1000])),
        "{doc}"
    );
    // Expiry: 24 h by default, reported a little (5 min) before the policy's.
    let day = 24 * 3600 * 1000;
    assert!(
        a.authorization_expires_at > before + day - 6 * 60_000
            && a.authorization_expires_at <= now_ms() + day - 5 * 60_000 + 1000,
        "{} vs now {before}",
        a.authorization_expires_at
    );

    // Nothing there yet.
    assert_eq!(download(&a.download_url).await.0, 404);

    // Exactly the limit is accepted, and comes back byte for byte through downloadURL.
    let data = payload(1000);
    let (status, body) = upload(&a, &a.upload_form_data, &data).await;
    assert!(
        (200..300).contains(&status),
        "upload refused: {status} {body}\n{}",
        s3.output()
    );
    assert_eq!(
        std::fs::read(s3.object_path(BUCKET, &key)).unwrap(),
        data,
        "stored as sent"
    );
    let (status, got) = download(&a.download_url).await;
    assert_eq!(status, 200);
    assert_eq!(got, data);

    // The gateway answers with a redirect to a presigned GET on the store (the bucket is private).
    let no_follow = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let resp = no_follow.get(&a.download_url).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 302);
    assert_eq!(resp.headers()["cache-control"], "no-store");
    let location = resp.headers()["location"].to_str().unwrap().to_string();
    assert!(
        location.starts_with(&format!("{}/{key}?", s3.bucket_url(BUCKET))),
        "{location}"
    );
    assert!(location.contains("X-Amz-Signature="), "{location}");
    let unsigned = http()
        .get(format!("{}/{key}", s3.bucket_url(BUCKET)))
        .send()
        .await
        .unwrap();
    assert_eq!(
        unsigned.status().as_u16(),
        403,
        "anonymous GET on the bucket is refused"
    );

    // A 1-byte upload is fine too; an empty one is not (content-length-range starts at 1).
    let b = one(&p.ws_url()).await;
    let (status, body) = upload(&b, &b.upload_form_data, b"x").await;
    assert!((200..300).contains(&status), "{status} {body}");
    assert_eq!(download(&b.download_url).await, (200, b"x".to_vec()));
    let e = one(&p.ws_url()).await;
    let (status, _) = upload(&e, &e.upload_form_data, b"").await;
    assert!(status >= 400, "empty upload accepted: {status}");

    // The WebSocket still works on the same port.
    assert_eq!(
        err_name(c.request_pre_keys(vec![1u8; 32], vec![]).await),
        "unknown_identity"
    );
}

#[tokio::test]
async fn one_byte_over_the_limit_is_refused() {
    let (s3, p) = start(&["--max-attachment-size", "1000"]);
    let a = one(&p.ws_url()).await;
    let (status, body) = upload(&a, &a.upload_form_data, &payload(1001)).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("EntityTooLarge"), "{body}");
    assert!(!s3.object_path(BUCKET, key_of(&a)).exists());
    assert_eq!(download(&a.download_url).await.0, 404);
}

#[tokio::test]
async fn tampered_uploads_are_refused() {
    let (s3, p) = start(&[]);
    let a = one(&p.ws_url()).await;
    let data = payload(300);

    // Another key (still a well-formed attachment key): the policy pins the exact key.
    let key = key_of(&a).to_string();
    let last = key.chars().last().unwrap();
    let other_key = format!("{}{}", &key[..key.len() - 1], if last == '0' { '1' } else { '0' });
    let mut fields = a.upload_form_data.clone();
    fields.insert("key".into(), other_key.clone());
    let (status, body) = upload(&a, &fields, &data).await;
    assert!((400..500).contains(&status), "changed key accepted: {status} {body}");
    assert!(body.contains("InvalidPolicyDocument") && body.contains("key"), "{body}");
    assert!(!s3.object_path(BUCKET, &other_key).exists());
    let other_url = a.download_url.replace(&key, &other_key);
    assert_eq!(download(&other_url).await.0, 404);

    // A wrong signature.
    let mut fields = a.upload_form_data.clone();
    let sig = fields["x-amz-signature"].clone();
    let flipped = if sig.ends_with('0') { "1" } else { "0" };
    fields.insert("x-amz-signature".into(), format!("{}{flipped}", &sig[..sig.len() - 1]));
    let (status, body) = upload(&a, &fields, &data).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("SignatureDoesNotMatch"), "{body}");

    // A policy loosened by the client (bigger limit) no longer matches the signature.
    let mut fields = a.upload_form_data.clone();
    let loosened = policy(&a).to_string().replace(
        &format!("[\"content-length-range\",1,{}]", a.max_upload_size),
        "[\"content-length-range\",1,999999999999]",
    );
    assert_ne!(loosened, policy(&a).to_string());
    fields.insert(
        "policy".into(),
        base64::engine::general_purpose::STANDARD.encode(loosened),
    );
    let (status, body) = upload(&a, &fields, &data).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("SignatureDoesNotMatch"), "{body}");

    // An extra form field the policy does not allow.
    let mut fields = a.upload_form_data.clone();
    fields.insert("acl".into(), "public-read".into());
    let (status, body) = upload(&a, &fields, &data).await;
    assert!((400..500).contains(&status), "extra field accepted: {status} {body}");
    assert!(body.contains("not specified in the policy"), "{body}");

    assert_eq!(download(&a.download_url).await.0, 404, "nothing was stored");
    // The untouched authorization still works.
    let (status, body) = upload(&a, &a.upload_form_data, &data).await;
    assert!((200..300).contains(&status), "{status} {body}");
    assert_eq!(download(&a.download_url).await, (200, data));
}

#[tokio::test]
async fn expired_policy_is_refused() {
    let (_s3, p) = start(&["--upload-expiry", "2s"]);
    let issued = now_ms();
    let a = one(&p.ws_url()).await;
    // The policy expires within 2 s (whole seconds); the authorization is reported earlier.
    let expiration = policy(&a)["expiration"].as_str().unwrap().to_string();
    assert!(
        a.authorization_expires_at <= issued + 2000 + 1000,
        "{}",
        a.authorization_expires_at
    );
    assert!(a.authorization_expires_at >= issued, "{}", a.authorization_expires_at);
    tokio::time::sleep(Duration::from_millis(3100)).await;
    let (status, body) = upload(&a, &a.upload_form_data, b"late").await;
    assert_eq!(status, 403, "upload after {expiration} accepted: {body}");
    assert!(body.to_lowercase().contains("expired"), "{body}");
    assert_eq!(download(&a.download_url).await.0, 404);
}

#[tokio::test]
async fn num_requested_zero_and_huge() {
    let (_s3, p) = start(&[]);
    let c = anon(&p.ws_url()).await;
    // Validated first: numRequested < 1 is invalid_request (with a bucket available too).
    assert_eq!(err_name(c.request_upload_authorizations(0).await), "invalid_request");
    assert_eq!(err_name(c.request_upload_authorizations(-1).await), "invalid_request");
    assert_eq!(
        err_name(c.request_upload_authorizations(i32::MIN).await),
        "invalid_request"
    );
    // Capped (default cap 10), each one for its own key.
    let all = c.request_upload_authorizations(i32::MAX).await.unwrap();
    assert_eq!(all.len(), 10);
    let mut keys: Vec<&str> = all.iter().map(key_of).collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 10, "distinct keys");
    assert_eq!(c.request_upload_authorizations(3).await.unwrap().len(), 3);
    // Authenticated connections may ask too.
    let d = registered(&p.ws_url(), tassis_client::Identity::generate_ed25519(), b"d", 1).await;
    assert_eq!(d.conn.request_upload_authorizations(2).await.unwrap().len(), 2);
}

#[tokio::test]
async fn download_links_of_unknown_keys_and_without_a_bucket() {
    let (s3, p) = start(&[]);
    let unknown = "20250101/5b1f3c1e-8a6f-4a8e-9d3c-0f6b2f7f6a11";
    for path in [
        format!("/attachments/{unknown}"),
        "/attachments/".to_string(),
        "/attachments/not-a-key".to_string(),
        "/attachments/../../etc/passwd".to_string(),
        format!("/attachments/{unknown}?x=1"),
    ] {
        let (status, _) = http_get(p.listen, &path).unwrap();
        assert_eq!(status, 404, "{path}");
    }
    // A CDN or public bucket base: downloadURL points there instead of the gateway.
    let cdn = tassis_on(&s3, &["--s3-public-url", "https://cdn.example.com/att/"]);
    let a = one(&cdn.ws_url()).await;
    assert_eq!(a.download_url, format!("https://cdn.example.com/att/{}", key_of(&a)));
    // No bucket: downloads are unavailable (503), like uploads.
    let none = standalone(&[]);
    let (status, body) = http_get(none.listen, &format!("/attachments/{unknown}")).unwrap();
    assert_eq!(status, 503, "{body}");
}

#[test]
fn unusable_buckets_stop_the_start_with_a_clear_message() {
    let s3 = S3Server::start(&[]);
    let base = ["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"];
    let run = |role: &str, extra: &[&str], env: &[(&str, &str)]| {
        let mut args = vec![role];
        args.extend(base);
        args.extend(extra);
        start_failure_with_env(BIN, &args, env)
    };
    let env = s3.aws_env();
    // A missing bucket.
    let missing = [
        "--s3-bucket",
        "missing",
        "--s3-endpoint",
        &s3.url,
        "--s3-path-style",
        "true",
        "--s3-region",
        "us-east-1",
    ];
    let (code, out) = run("standalone", &missing, &env);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("\"missing\"") && out.contains("does not exist"), "{out}");
    // Wrong credentials.
    let wrong: Vec<(&str, &str)> = env
        .iter()
        .map(|&(k, v)| {
            if k == "AWS_SECRET_ACCESS_KEY" {
                (k, "wrong-secret")
            } else {
                (k, v)
            }
        })
        .collect();
    let s3b = S3Server::start(&[BUCKET]);
    let ok_bucket = [
        "--s3-bucket",
        BUCKET,
        "--s3-endpoint",
        &s3b.url,
        "--s3-path-style",
        "true",
        "--s3-region",
        "us-east-1",
    ];
    let (code, out) = run("standalone", &ok_bucket, &wrong);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("access denied"), "{out}");
    // No credentials anywhere in the chain.
    let none = [
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("AWS_CONFIG_FILE", "/nonexistent/tassis-test"),
        ("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/tassis-test"),
    ];
    let (code, out) = run("standalone", &ok_bucket, &none);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("credentials"), "{out}");
    // An endpoint nobody listens on.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let unreachable = [
        "--s3-bucket",
        BUCKET,
        "--s3-endpoint",
        &closed,
        "--s3-path-style",
        "true",
        "--s3-region",
        "us-east-1",
    ];
    let (code, out) = run(
        "attachments",
        &[&unreachable[..], &["--public-url", "https://chat.example.com"]].concat(),
        &env,
    );
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("cannot reach"), "{out}");
    // A lifecycle rule that cannot be applied (s3s-fs has no lifecycle support).
    let (code, out) = run(
        "standalone",
        &[&ok_bucket[..], &["--s3-expire-after", "30days"]].concat(),
        &env,
    );
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains("cannot read the lifecycle configuration") && out.contains("NotImplemented"),
        "{out}"
    );
    // The split attachments role needs to know where download links point.
    let (code, out) = run("attachments", &ok_bucket, &env);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("--public-url"), "{out}");
    // Malformed values name their flag.
    for (extra, needle) in [
        (&["--s3-bucket", "Not/A/Bucket"][..], "--s3-bucket"),
        (
            &["--s3-bucket", BUCKET, "--public-url", "chat.example.com"],
            "--public-url",
        ),
        (&["--s3-bucket", BUCKET, "--s3-endpoint", "ftp://x"], "--s3-endpoint"),
        (&["--upload-expiry", "30days"], "--upload-expiry"),
    ] {
        let (code, out) = run("standalone", extra, &env);
        assert_eq!(code, Some(2), "{extra:?}: {out}");
        assert!(out.contains(needle), "{extra:?}: {out}");
    }
}

#[tokio::test]
async fn split_attachments_role_with_s3() {
    let s3 = S3Server::start(&[BUCKET]);
    let mut args = s3_args(&s3);
    args.extend(["--public-url".to_string(), "https://chat.example.com".to_string()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let at = Process::start_with_env(BIN, "attachments", &args, &s3.aws_env());
    let ks = Process::start(BIN, "keystore", &[]);
    let ms = Process::start(BIN, "messaging", &["--keystore", &ks.grpc_url()]);
    let gw = gateway_for(&ks, &ms, &at, &[]);
    let a = one(&gw.ws_url()).await;
    let key = key_of(&a).to_string();
    assert_eq!(a.download_url, format!("https://chat.example.com/attachments/{key}"));
    let (status, body) = upload(&a, &a.upload_form_data, b"split").await;
    assert!((200..300).contains(&status), "{status} {body}");
    // The gateway (whatever its public name) redirects to the object.
    let (status, got) = download(&format!("http://{}/attachments/{key}", gw.listen)).await;
    assert_eq!((status, got), (200, b"split".to_vec()));
}
