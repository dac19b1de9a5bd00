//! The limiter's behaviour, local and shared through a real Redis Cluster (TASSIS_TEST_REDIS_URL
//! or one started by scripts/redis-cluster.sh): the same suite runs on both, and the shared
//! limiter is checked to be shared between two "gateways".

use std::time::Duration;

use fred::interfaces::ClientLike;
use fred::types::{ClusterHash, CustomCommand};
use tassis_ratelimit::{Decision, Limiter, Quota, RedisBuckets};

fn key() -> Vec<u8> {
    rand::random::<[u8; 16]>().to_vec()
}

async fn burst_then_refuse(l: &Limiter) {
    let q = Quota::new(5, Duration::from_secs(3600));
    let k = key();
    for i in 0..5 {
        assert_eq!(l.check("t", &k, &q, 1).await, Decision::Allow, "request {i}");
    }
    match l.check("t", &k, &q, 1).await {
        Decision::Deny { retry_after } => {
            // One token comes back every 12 minutes.
            assert!(
                retry_after > Duration::from_secs(700) && retry_after <= Duration::from_secs(720),
                "{retry_after:?}"
            );
        }
        Decision::Allow => panic!("sixth request of a 5/1h bucket allowed"),
    }
    // Another key and another limit name are other buckets.
    assert_eq!(l.check("t", &key(), &q, 1).await, Decision::Allow);
    assert_eq!(l.check("u", &k, &q, 1).await, Decision::Allow);
}

async fn cost_counts(l: &Limiter) {
    let q = Quota::new(10, Duration::from_secs(3600));
    let k = key();
    assert!(l.check("c", &k, &q, 8).await.is_allowed());
    assert!(!l.check("c", &k, &q, 3).await.is_allowed());
    assert!(l.check("c", &k, &q, 2).await.is_allowed());
    assert!(
        !l.check("c", &k, &q, 11).await.is_allowed(),
        "more than the burst is never allowed"
    );
}

#[tokio::test]
async fn local_limiter() {
    let l = Limiter::local();
    assert!(!l.is_shared());
    burst_then_refuse(&l).await;
    cost_counts(&l).await;
}

#[tokio::test]
async fn redis_limiter() {
    let l = Limiter::shared(tassis_redis::testing::connect().await);
    assert!(l.is_shared());
    burst_then_refuse(&l).await;
    cost_counts(&l).await;
    assert_eq!(l.fallbacks(), 0);
}

#[tokio::test]
async fn two_gateways_share_one_bucket() {
    let a = Limiter::shared(tassis_redis::testing::connect().await);
    let b = Limiter::shared(tassis_redis::testing::connect().await);
    let q = Quota::new(6, Duration::from_secs(3600));
    let k = key();
    for _ in 0..4 {
        assert!(a.check("s", &k, &q, 1).await.is_allowed());
    }
    assert!(b.check("s", &k, &q, 1).await.is_allowed());
    assert!(b.check("s", &k, &q, 1).await.is_allowed());
    assert!(!b.check("s", &k, &q, 1).await.is_allowed(), "b sees what a took");
    assert!(!a.check("s", &k, &q, 1).await.is_allowed(), "a sees what b took");
}

#[tokio::test]
async fn buckets_expire_once_refilled() {
    let redis = tassis_redis::testing::connect().await;
    let l = RedisBuckets::new(redis.clone());
    let q = Quota::new(100, Duration::from_secs(10)); // one token = 100 ms
    let k = key();
    assert!(l.check("e", &k, &q, 3).await.unwrap().is_allowed());
    let bucket = RedisBuckets::bucket_key("e", &k);
    let cmd = CustomCommand::new_static("PTTL", ClusterHash::FirstKey, false);
    let ttl: i64 = redis.pool().custom(cmd, vec![bucket]).await.unwrap();
    assert!(
        (1..=301).contains(&ttl),
        "bucket lives until refilled (300 ms), pttl {ttl}"
    );
}
