//! Messaging hot paths (`cargo bench -p tassis-messaging`): enqueue of a 1 KiB message, and a
//! message's whole queue life (enqueue, read as a delivery, ack), on the embedded queues, and on
//! Redis Cluster when TASSIS_TEST_REDIS_URL names one (scripts/redis-cluster.sh start prints it).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tassis_keystore::KeyBackend;
use tassis_keystore::backend::RegisterLimits;
use tassis_messaging::backend::Retention;
use tassis_messaging::{DeviceAddress, MemoryQueues, MessagingError, QueueBackend, Registrations};

const RETENTION: Retention = Retention {
    max_queue_len: 100_000,
    max_age: Duration::from_secs(3600),
};

struct Everyone;

#[async_trait::async_trait]
impl Registrations for Everyone {
    async fn is_registered(&self, _: &DeviceAddress) -> Result<bool, MessagingError> {
        Ok(true)
    }
}

fn device() -> DeviceAddress {
    DeviceAddress {
        identity_key: Bytes::from(rand::random::<[u8; 32]>().to_vec()),
        device_id: Bytes::from_static(b"bench"),
    }
}

fn run(c: &mut Criterion, name: &str, rt: &tokio::runtime::Runtime, q: Arc<dyn QueueBackend>, d: DeviceAddress) {
    let payload = Bytes::from(vec![0x5a; 1024]);
    let mut g = c.benchmark_group(name);
    g.throughput(Throughput::Elements(1));
    g.bench_function("enqueue_1k", |b| {
        b.to_async(rt).iter(|| {
            let (q, d, p) = (q.clone(), d.clone(), payload.clone());
            async move { q.enqueue(&d, p).await.unwrap() }
        })
    });
    // Start the life cycle from an empty queue.
    rt.block_on(async {
        loop {
            let batch = q.read(&d, None, 1000).await.unwrap();
            if batch.is_empty() {
                break;
            }
            for m in batch {
                q.ack(&d, m.id).await.unwrap();
            }
        }
    });
    g.bench_function("enqueue_read_ack_1k", |b| {
        b.to_async(rt).iter(|| {
            let (q, d, p) = (q.clone(), d.clone(), payload.clone());
            async move {
                let id = q.enqueue(&d, p).await.unwrap();
                let m = q.read(&d, None, 1).await.unwrap();
                assert_eq!(m[0].id, id);
                assert!(q.ack(&d, id).await.unwrap());
            }
        })
    });
    g.finish();
}

fn memory(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let q: Arc<dyn QueueBackend> = Arc::new(MemoryQueues::new(Arc::new(Everyone), RETENTION));
    run(c, "memory", &rt, q, device());
}

fn redis(c: &mut Criterion) {
    let Ok(url) = std::env::var("TASSIS_TEST_REDIS_URL") else {
        eprintln!("redis benches skipped: set TASSIS_TEST_REDIS_URL (scripts/redis-cluster.sh start prints one)");
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (q, d) = rt.block_on(async {
        let r = tassis_redis::connect(&tassis_redis::RedisArgs::from_url(url))
            .await
            .unwrap();
        let d = device();
        let limits = RegisterLimits {
            max_devices_per_identity: 8,
            max_one_time_keys_per_device: 8,
        };
        tassis_keystore::RedisKeyStore::new(r.clone())
            .register(
                &d.identity_key,
                &d.device_id,
                Bytes::from_static(b"spk"),
                vec![],
                limits,
            )
            .await
            .unwrap();
        let q: Arc<dyn QueueBackend> = Arc::new(tassis_messaging::RedisQueues::new(r, RETENTION).await.unwrap());
        (q, d)
    });
    run(c, "redis_cluster", &rt, q, d);
}

criterion_group!(benches, memory, redis);
criterion_main!(benches);
