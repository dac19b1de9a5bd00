//! What one limit allows, as operators write it: `N/period` (`300/1m`, `20/1s`, `1000/1h`) — a
//! bucket of N tokens refilled evenly at N per period, so a client may burst N requests at once
//! and then sustain N per period — or `off`.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// A limit: `burst` requests at once, refilled at `burst` per `period`. `None` quota = no limit.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// Bucket size: requests allowed back to back.
    pub burst: u32,
    /// Time to refill the whole bucket.
    pub period: Duration,
}

impl Quota {
    pub const fn new(burst: u32, period: Duration) -> Self {
        Self { burst, period }
    }

    /// Time for one token to come back, in microseconds (at least 1).
    pub fn emission_us(&self) -> u64 {
        (self.period.as_micros() as u64 / self.burst as u64).max(1)
    }

    /// How far ahead of now the bucket's schedule may run: `burst` tokens' worth.
    pub fn tolerance_us(&self) -> u64 {
        self.emission_us() * self.burst as u64
    }
}

impl fmt::Debug for Quota {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl fmt::Display for Quota {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = self.period;
        if p.as_secs().is_multiple_of(3600) && p.subsec_nanos() == 0 && !p.is_zero() {
            write!(f, "{}/{}h", self.burst, p.as_secs() / 3600)
        } else if p.as_secs().is_multiple_of(60) && p.subsec_nanos() == 0 && !p.is_zero() {
            write!(f, "{}/{}m", self.burst, p.as_secs() / 60)
        } else if p.subsec_nanos() == 0 {
            write!(f, "{}/{}s", self.burst, p.as_secs())
        } else {
            write!(f, "{}/{}ms", self.burst, p.as_millis())
        }
    }
}

/// A limit flag's value: a [`Quota`] or `off`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limit(pub Option<Quota>);

impl Limit {
    pub const fn per(burst: u32, period: Duration) -> Self {
        Self(Some(Quota::new(burst, period)))
    }
    pub const OFF: Limit = Limit(None);
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(q) => write!(f, "{q}"),
            None => f.write_str("off"),
        }
    }
}

impl FromStr for Limit {
    type Err = String;

    /// Parses `N/period` (period: a number with unit ms, s, m or h; a bare unit means 1 of it)
    /// or `off`.
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("off") {
            return Ok(Limit::OFF);
        }
        let usage = || format!("'{s}' is not a rate limit: expected N/period such as 300/1m, 20/1s, 1000/1h, or off");
        let (n, period) = s.split_once('/').ok_or_else(usage)?;
        let burst: u32 = n.trim().parse().map_err(|_| usage())?;
        let period = period.trim();
        let digits = period.find(|c: char| !c.is_ascii_digit()).unwrap_or(period.len());
        let (num, unit) = period.split_at(digits);
        let num: u64 = if num.is_empty() {
            1
        } else {
            num.parse().map_err(|_| usage())?
        };
        let unit_ms: u64 = match unit {
            "ms" => 1,
            "s" => 1000,
            "m" | "min" => 60_000,
            "h" => 3_600_000,
            _ => return Err(usage()),
        };
        let period = Duration::from_millis(num.checked_mul(unit_ms).ok_or_else(usage)?);
        if burst == 0 {
            return Err(format!("'{s}': N must be at least 1 (use off to disable the limit)"));
        }
        if period.is_zero() || period > Duration::from_secs(24 * 3600) {
            return Err(format!("'{s}': the period must be 1ms..24h"));
        }
        if period.as_micros() < burst as u128 {
            return Err(format!(
                "'{s}': more than one request per microsecond is not a limit; use off"
            ));
        }
        Ok(Limit(Some(Quota::new(burst, period))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        for (s, burst, ms, shown) in [
            ("300/1m", 300, 60_000, "300/1m"),
            ("20/1s", 20, 1000, "20/1s"),
            ("20/s", 20, 1000, "20/1s"),
            ("1000/1h", 1000, 3_600_000, "1000/1h"),
            (" 5/250ms ", 5, 250, "5/250ms"),
            ("60/90s", 60, 90_000, "60/90s"),
            ("7/2min", 7, 120_000, "7/2m"),
        ] {
            let l: Limit = s.parse().unwrap();
            let q = l.0.unwrap();
            assert_eq!((q.burst, q.period.as_millis() as u64), (burst, ms), "{s}");
            assert_eq!(l.to_string(), shown);
            assert_eq!(shown.parse::<Limit>().unwrap(), l, "round trip of {shown}");
        }
        assert_eq!("off".parse::<Limit>().unwrap(), Limit::OFF);
        assert_eq!("OFF".parse::<Limit>().unwrap().to_string(), "off");
    }

    #[test]
    fn rejects_nonsense() {
        for bad in [
            "", "300", "300/", "/1m", "0/1m", "-1/1m", "1/0s", "1/2d", "x/1m", "1/1y", "5/25h", "2000/1ms",
        ] {
            let e = bad.parse::<Limit>().unwrap_err();
            assert!(e.contains(bad.trim()), "{bad}: {e}");
        }
    }

    #[test]
    fn emission_and_tolerance() {
        let q = Quota::new(300, Duration::from_secs(60));
        assert_eq!(q.emission_us(), 200_000);
        assert_eq!(q.tolerance_us(), 60_000_000);
    }
}
