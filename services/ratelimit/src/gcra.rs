//! The generic cell rate algorithm: a token bucket stored as one number, the bucket's theoretical
//! arrival time (TAT). A request is allowed when `TAT + cost*emission - tolerance <= now`; the
//! TAT then advances by `cost*emission`. Storing one number (not count + timestamp) is what lets
//! the Redis version be a single GET/SET in one script and the local version an 8-byte cell.
//! Time is passed in (microseconds) so the arithmetic is exact under test.

use std::time::Duration;

use crate::Quota;

/// The outcome of a check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// Refused; the same request would be allowed after this long.
    Deny {
        retry_after: Duration,
    },
}

impl Decision {
    pub fn is_allowed(&self) -> bool {
        matches!(self, Decision::Allow)
    }
}

/// One bucket's state: its TAT in microseconds (0 = full bucket).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Gcra {
    tat_us: u64,
}

impl Gcra {
    /// Takes `cost` tokens at `now_us` if the bucket holds them. A cost above the burst can never
    /// be met; it is refused with the time to refill the whole bucket.
    pub fn check(&mut self, q: &Quota, cost: u32, now_us: u64) -> Decision {
        let (d, tat) = decide(self.tat_us, q, cost, now_us);
        self.tat_us = tat;
        d
    }

    /// Whether `cost` tokens are there now, without taking them.
    pub fn peek(&self, q: &Quota, cost: u32, now_us: u64) -> Decision {
        decide(self.tat_us, q, cost, now_us).0
    }

    /// Takes `cost` tokens whether or not they are there (for what was granted before it could be
    /// counted): the bucket may go into debt, which later requests wait out.
    pub fn charge(&mut self, q: &Quota, cost: u32, now_us: u64) {
        self.tat_us = self
            .tat_us
            .max(now_us)
            .saturating_add(q.emission_us().saturating_mul(cost as u64));
    }

    /// Makes the bucket refuse everything until `until_us` (used to remember a shared bucket's
    /// refusal locally).
    pub fn deny_until(&mut self, q: &Quota, until_us: u64) {
        let tat = until_us + q.tolerance_us() - q.emission_us();
        self.tat_us = self.tat_us.max(tat);
    }

    /// When the bucket is full again; after that the state carries no information.
    pub fn full_at_us(&self) -> u64 {
        self.tat_us
    }
}

/// The GCRA step: the decision and the new TAT (unchanged on refusal).
fn decide(tat_us: u64, q: &Quota, cost: u32, now_us: u64) -> (Decision, u64) {
    let emission = q.emission_us();
    let tolerance = q.tolerance_us();
    let tat = tat_us.max(now_us);
    let increment = emission.saturating_mul(cost as u64);
    if increment > tolerance {
        return (
            Decision::Deny {
                retry_after: Duration::from_micros(tolerance),
            },
            tat_us,
        );
    }
    let new_tat = tat + increment;
    let allow_at = new_tat.saturating_sub(tolerance);
    if allow_at > now_us {
        (
            Decision::Deny {
                retry_after: Duration::from_micros(allow_at - now_us),
            },
            tat_us,
        )
    } else {
        (Decision::Allow, new_tat)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000;

    #[test]
    fn burst_then_refill_at_the_rate() {
        let q = Quota::new(10, Duration::from_secs(10)); // 10 at once, then 1/s
        let mut b = Gcra::default();
        let t0 = 1000 * S;
        for i in 0..10 {
            assert_eq!(b.check(&q, 1, t0), Decision::Allow, "request {i} of the burst");
        }
        assert_eq!(
            b.check(&q, 1, t0),
            Decision::Deny {
                retry_after: Duration::from_secs(1)
            }
        );
        // A refusal costs nothing: half a second later, half a second to wait.
        assert_eq!(
            b.check(&q, 1, t0 + S / 2),
            Decision::Deny {
                retry_after: Duration::from_millis(500)
            }
        );
        assert_eq!(b.check(&q, 1, t0 + S), Decision::Allow);
        assert!(!b.check(&q, 1, t0 + S).is_allowed());
        // After a full period idle the whole burst is back, and not more.
        let t1 = t0 + 20 * S;
        for _ in 0..10 {
            assert!(b.check(&q, 1, t1).is_allowed());
        }
        assert!(!b.check(&q, 1, t1).is_allowed());
        assert_eq!(b.full_at_us(), t1 + 10 * S);
    }

    #[test]
    fn sustained_rate_is_the_quota() {
        // A client hammering 1000/s against 300/1m gets the burst plus 5/s.
        let q = Quota::new(300, Duration::from_secs(60));
        let mut b = Gcra::default();
        let t0 = 50 * S;
        let allowed = (0..60_000u64)
            .filter(|i| b.check(&q, 1, t0 + i * 1000).is_allowed())
            .count();
        assert_eq!(allowed, 300 + 299, "60 s at 1000/s: the burst of 300 plus 5/s refill");
    }

    #[test]
    fn cost_and_impossible_cost() {
        let q = Quota::new(10, Duration::from_secs(10));
        let mut b = Gcra::default();
        assert!(b.check(&q, 7, S).is_allowed());
        assert_eq!(
            b.check(&q, 4, S),
            Decision::Deny {
                retry_after: Duration::from_secs(1)
            }
        );
        assert!(b.check(&q, 3, S).is_allowed());
        assert_eq!(
            Gcra::default().check(&q, 11, S),
            Decision::Deny {
                retry_after: Duration::from_secs(10)
            }
        );
    }

    #[test]
    fn charge_goes_into_debt() {
        let q = Quota::new(10, Duration::from_secs(10));
        let mut b = Gcra::default();
        b.charge(&q, 15, S);
        assert_eq!(
            b.peek(&q, 1, S),
            Decision::Deny {
                retry_after: Duration::from_secs(6)
            }
        );
        assert!(b.peek(&q, 1, 7 * S).is_allowed());
    }

    #[test]
    fn peek_and_deny_until() {
        let q = Quota::new(2, Duration::from_secs(2));
        let mut b = Gcra::default();
        assert!(b.peek(&q, 1, S).is_allowed());
        assert!(b.peek(&q, 1, S).is_allowed());
        assert_eq!(b, Gcra::default(), "peek takes nothing");
        b.deny_until(&q, 5 * S);
        assert_eq!(
            b.peek(&q, 1, S),
            Decision::Deny {
                retry_after: Duration::from_secs(4)
            }
        );
        assert!(b.peek(&q, 1, 5 * S).is_allowed());
    }
}
