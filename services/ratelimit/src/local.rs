//! Keyed buckets in this process's memory. The embedded deployment's only buckets, and every
//! gateway's fast path in front of the shared ones: a key this gateway alone has already pushed
//! over its limit is refused without a Redis round trip.
//!
//! Memory stays bounded by what is live: a bucket that has refilled completely carries no state,
//! so a shard sweeps such buckets whenever it has doubled in size since its last sweep.

use std::collections::HashMap;
use std::time::Instant;

use parking_lot::Mutex;

use crate::{Decision, Gcra, Quota};

const SHARDS: usize = 16;
const MIN_SWEEP: usize = 1024;

struct Shard {
    /// Buckets by key (SipHash: keys come from clients).
    buckets: HashMap<Box<[u8]>, Gcra>,
    /// Sweep again once the shard holds this many buckets.
    sweep_at: usize,
}

/// Keyed token buckets in memory, safe to share between tasks.
pub struct LocalBuckets {
    shards: Vec<Mutex<Shard>>,
    /// The clock's origin: bucket times are microseconds since it.
    epoch: Instant,
}

impl Default for LocalBuckets {
    fn default() -> Self {
        Self::new()
    }
}

impl LocalBuckets {
    pub fn new() -> Self {
        Self {
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        buckets: HashMap::new(),
                        sweep_at: MIN_SWEEP,
                    })
                })
                .collect(),
            epoch: Instant::now(),
        }
    }

    /// Microseconds on this instance's clock (starts at 1 s, so a fresh bucket's 0 is the past).
    pub fn now_us(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64 + 1_000_000
    }

    fn shard(&self, key: &[u8]) -> &Mutex<Shard> {
        // FNV-1a just to spread keys over shards; the map inside uses SipHash.
        let h = key.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ *b as u64).wrapping_mul(0x100_0000_01b3)
        });
        &self.shards[(h as usize) % SHARDS]
    }

    /// Takes `cost` tokens from `key`'s bucket now.
    pub fn check(&self, key: &[u8], q: &Quota, cost: u32) -> Decision {
        self.check_at(key, q, cost, self.now_us())
    }

    /// [`Self::check`] at a given time (tests).
    pub fn check_at(&self, key: &[u8], q: &Quota, cost: u32, now_us: u64) -> Decision {
        self.with_bucket(key, now_us, |b| b.check(q, cost, now_us))
    }

    /// Whether `key`'s bucket holds `cost` tokens now, taking nothing.
    pub fn peek(&self, key: &[u8], q: &Quota, cost: u32) -> Decision {
        let now = self.now_us();
        let shard = self.shard(key).lock();
        shard.buckets.get(key).map_or(Decision::Allow, |b| b.peek(q, cost, now))
    }

    /// Makes `key` refuse until `retry_after` from now.
    pub fn deny_for(&self, key: &[u8], q: &Quota, retry_after: std::time::Duration) {
        let now = self.now_us();
        self.with_bucket(key, now, |b| b.deny_until(q, now + retry_after.as_micros() as u64));
    }

    /// Buckets held (tests, metrics).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().buckets.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn with_bucket<R>(&self, key: &[u8], now_us: u64, f: impl FnOnce(&mut Gcra) -> R) -> R {
        let mut shard = self.shard(key).lock();
        if let Some(b) = shard.buckets.get_mut(key) {
            return f(b);
        }
        if shard.buckets.len() >= shard.sweep_at {
            shard.buckets.retain(|_, b| b.full_at_us() > now_us);
            shard.sweep_at = (shard.buckets.len() * 2).max(MIN_SWEEP);
        }
        let mut b = Gcra::default();
        let r = f(&mut b);
        if b != Gcra::default() {
            shard.buckets.insert(key.into(), b);
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn keys_are_independent() {
        let l = LocalBuckets::new();
        let q = Quota::new(3, Duration::from_secs(60));
        let t = 5_000_000;
        for _ in 0..3 {
            assert!(l.check_at(b"a", &q, 1, t).is_allowed());
        }
        assert!(!l.check_at(b"a", &q, 1, t).is_allowed());
        assert!(l.check_at(b"b", &q, 1, t).is_allowed());
    }

    #[test]
    fn refilled_buckets_are_swept() {
        let l = LocalBuckets::new();
        let q = Quota::new(1, Duration::from_secs(1));
        let t = 5_000_000;
        for i in 0..(SHARDS * MIN_SWEEP) as u32 {
            assert!(l.check_at(&i.to_be_bytes(), &q, 1, t).is_allowed());
        }
        let before = l.len();
        assert!(before > SHARDS * MIN_SWEEP / 2);
        // Two seconds later every one of those buckets is full again: inserting new keys sweeps
        // every shard once it doubles, which drops all the old (refilled) buckets.
        let later = t + 2_000_000;
        let fresh = 2 * (SHARDS * MIN_SWEEP) as u32;
        for i in 0..fresh {
            assert!(l.check_at(&(i + 1_000_000).to_be_bytes(), &q, 1, later).is_allowed());
        }
        assert_eq!(
            l.len(),
            fresh as usize,
            "only the {fresh} live buckets remain (had {before} old)"
        );
        // A refusal is still remembered after sweeps.
        assert!(!l.check_at(&1_000_000u32.to_be_bytes(), &q, 1, later).is_allowed());
    }

    #[test]
    fn deny_for_refuses_then_recovers() {
        let l = LocalBuckets::new();
        let q = Quota::new(100, Duration::from_secs(1));
        assert!(l.peek(b"k", &q, 1).is_allowed());
        l.deny_for(b"k", &q, Duration::from_secs(3600));
        match l.peek(b"k", &q, 1) {
            Decision::Deny { retry_after } => assert!(retry_after > Duration::from_secs(3599)),
            Decision::Allow => panic!("denied key allowed"),
        }
    }
}
