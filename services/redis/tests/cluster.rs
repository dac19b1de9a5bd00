//! The shared Redis pieces against a real 3-master Redis Cluster (see `tassis_redis::testing`).

use std::time::{Duration, Instant};

use tassis_redis::fred::interfaces::{ClientLike, LuaInterface};
use tassis_redis::fred::types::Value;
use tassis_redis::{RedisArgs, RedisError, Script, keys, testing};

#[tokio::test]
async fn connects_to_every_master() {
    let redis = testing::connect().await;
    assert!(redis.is_cluster());
    assert_eq!(redis.primaries().len(), 3, "{:?}", redis.primaries());
    let sub = redis.connect_subscriber().await.unwrap();
    assert!(sub.is_connected());
}

#[tokio::test]
async fn scripts_fall_back_to_eval_on_noscript() {
    let redis = testing::connect().await;
    let script = Script::new("return {KEYS[1], ARGV[1]}");
    let key = keys::keystore_devices(&rand_key());
    // Whatever the node has cached, after a flush it has nothing: EVALSHA alone would fail.
    redis.pool().script_flush_cluster(false).await.unwrap();
    let exists: Vec<bool> = redis.pool().script_exists(script.sha1()).await.unwrap();
    assert_eq!(exists, vec![false]);
    let got: Vec<String> = script
        .run(redis.pool(), vec![key.as_str().into()], vec![Value::from("x")])
        .await
        .unwrap();
    assert_eq!(got, vec![key.clone(), "x".to_string()]);
    // The EVAL cached it on the key's node: now EVALSHA alone works there.
    let again: Vec<String> = redis
        .pool()
        .evalsha(script.sha1(), vec![key.as_str()], vec!["y"])
        .await
        .unwrap();
    assert_eq!(again, vec![key, "y".to_string()]);
}

#[tokio::test]
async fn unreachable_redis_fails_fast_and_clearly() {
    // A port nobody listens on (bound, then released).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut args = RedisArgs::from_url(format!("redis-cluster://127.0.0.1:{port}"));
    args.redis_connect_timeout = Duration::from_secs(2);
    let started = Instant::now();
    let e = match tassis_redis::connect(&args).await {
        Ok(_) => panic!("connected to a closed port"),
        Err(e) => e,
    };
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        matches!(e, RedisError::Redis(_) | RedisError::ConnectTimeout(_)),
        "{e:?}"
    );
}

#[tokio::test]
async fn bad_flags_are_refused_before_connecting() {
    let e = match tassis_redis::connect(&RedisArgs::from_url("redis://a:1,b:2")).await {
        Ok(_) => panic!("accepted two hosts without a cluster scheme"),
        Err(e) => e,
    };
    assert!(e.to_string().contains("cluster scheme"), "{e}");
}

fn rand_key() -> Vec<u8> {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
        .to_le_bytes()
        .to_vec()
}
