//! Queue positions. A message id is `<unix ms>-<sequence>`, the Redis Streams id format, used by
//! every backend so ids mean the same everywhere. Ids are compared as numbers, never as strings
//! (`"9-0" < "10-0"` must hold).

use std::fmt;
use std::str::FromStr;

/// A position in a device queue, ordered by (ms, seq).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct MessageId {
    /// Milliseconds since the Unix epoch when the message was stored.
    pub ms: u64,
    /// Order among messages stored in the same millisecond.
    pub seq: u64,
}

impl MessageId {
    pub const fn new(ms: u64, seq: u64) -> Self {
        Self { ms, seq }
    }

    /// The id a queue assigns next: the current time, or one past `last` if the clock has not
    /// moved past it (ids never go backwards, even when the wall clock does).
    pub fn next_after(last: Option<MessageId>, now_ms: u64) -> MessageId {
        match last {
            Some(l) if now_ms <= l.ms => MessageId::new(l.ms, l.seq + 1),
            _ => MessageId::new(now_ms, 0),
        }
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// A string that is not `<u64>-<u64>`.
#[derive(Debug, thiserror::Error)]
#[error("malformed message id {0:?}")]
pub struct BadMessageId(pub String);

impl FromStr for MessageId {
    type Err = BadMessageId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadMessageId(s.chars().take(64).collect());
        let (ms, seq) = s.split_once('-').ok_or_else(bad)?;
        Ok(MessageId {
            ms: ms.parse().map_err(|_| bad())?,
            seq: seq.parse().map_err(|_| bad())?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_order_not_string_order() {
        let a: MessageId = "9-5".parse().unwrap();
        let b: MessageId = "10-0".parse().unwrap();
        assert!(a < b);
        assert!("9-5" > "10-0");
        let c: MessageId = "10-10".parse().unwrap();
        let d: MessageId = "10-9".parse().unwrap();
        assert!(d < c);
    }

    #[test]
    fn round_trip_and_rejects() {
        let id = MessageId::new(1_700_000_000_000, 42);
        assert_eq!(id.to_string().parse::<MessageId>().unwrap(), id);
        for bad in ["", "1", "a-1", "1-b", "-1", "1-", "1-2-3", "18446744073709551616-0"] {
            assert!(bad.parse::<MessageId>().is_err(), "{bad}");
        }
    }

    #[test]
    fn next_after_is_monotonic() {
        assert_eq!(MessageId::next_after(None, 5), MessageId::new(5, 0));
        assert_eq!(
            MessageId::next_after(Some(MessageId::new(5, 0)), 5),
            MessageId::new(5, 1)
        );
        // Clock went backwards: stay after the last id.
        assert_eq!(
            MessageId::next_after(Some(MessageId::new(9, 3)), 5),
            MessageId::new(9, 4)
        );
        assert_eq!(
            MessageId::next_after(Some(MessageId::new(5, 3)), 6),
            MessageId::new(6, 0)
        );
    }
}
