//! The hybrid logical clock.
//!
//! A [`Timestamp`] is a physical wall time in nanoseconds plus a logical counter that orders
//! events within one nanosecond (or while the physical clock stands still or runs backwards).
//! [`Hlc::now`] is strictly increasing on a node; [`Hlc::update`] folds in a timestamp seen from
//! another node so causality is kept across nodes. The physical source is a trait so tests can
//! drive time and inject skew.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;

use crate::{Error, Result};

/// A hybrid logical clock timestamp.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp {
    /// Nanoseconds since the Unix epoch.
    pub wall: u64,
    /// Orders events with equal `wall`.
    pub logical: u32,
}

impl Timestamp {
    /// The zero timestamp, below every real one.
    pub const ZERO: Timestamp = Timestamp {
        wall: 0,
        logical: 0,
    };
    /// The largest timestamp: a read at `MAX` sees the newest version of everything.
    pub const MAX: Timestamp = Timestamp {
        wall: u64::MAX,
        logical: u32::MAX,
    };

    /// A timestamp from parts.
    pub const fn new(wall: u64, logical: u32) -> Self {
        Self { wall, logical }
    }

    /// The smallest timestamp greater than this one.
    pub fn next(self) -> Self {
        if self.logical == u32::MAX {
            Self {
                wall: self.wall.saturating_add(1),
                logical: 0,
            }
        } else {
            Self {
                wall: self.wall,
                logical: self.logical + 1,
            }
        }
    }

    /// The largest timestamp smaller than this one (`ZERO` stays `ZERO`).
    pub fn prev(self) -> Self {
        if self.logical > 0 {
            Self {
                wall: self.wall,
                logical: self.logical - 1,
            }
        } else if self.wall > 0 {
            Self {
                wall: self.wall - 1,
                logical: u32::MAX,
            }
        } else {
            self
        }
    }

    /// This timestamp plus a duration of wall time.
    pub fn add_duration(self, d: Duration) -> Self {
        Self {
            wall: self.wall.saturating_add(d.as_nanos() as u64),
            logical: self.logical,
        }
    }

    /// Whether this is the zero timestamp.
    pub fn is_zero(self) -> bool {
        self == Self::ZERO
    }

    /// Encodes as 12 big-endian bytes (order-preserving).
    pub fn to_bytes(self) -> [u8; 12] {
        let mut b = [0u8; 12];
        b[..8].copy_from_slice(&self.wall.to_be_bytes());
        b[8..].copy_from_slice(&self.logical.to_be_bytes());
        b
    }

    /// Decodes 12 bytes written by [`to_bytes`](Self::to_bytes).
    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        let wall = u64::from_be_bytes(b.get(..8)?.try_into().ok()?);
        let logical = u32::from_be_bytes(b.get(8..12)?.try_into().ok()?);
        Some(Self { wall, logical })
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{:09},{}",
            self.wall / 1_000_000_000,
            self.wall % 1_000_000_000,
            self.logical
        )
    }
}

impl From<bini_proto::Timestamp> for Timestamp {
    fn from(t: bini_proto::Timestamp) -> Self {
        Self::new(t.wall, t.logical)
    }
}

impl From<Timestamp> for bini_proto::Timestamp {
    fn from(t: Timestamp) -> Self {
        Self {
            wall: t.wall,
            logical: t.logical,
        }
    }
}

/// A source of physical time, in nanoseconds since the Unix epoch.
pub trait PhysicalClock: Send + Sync + 'static {
    /// The current physical time.
    fn now_nanos(&self) -> u64;
}

/// The operating system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl PhysicalClock for SystemClock {
    fn now_nanos(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
    }
}

/// A clock that only moves when told to, for tests; it can also add a fixed skew to another
/// clock.
#[derive(Debug, Default)]
pub struct ManualClock {
    nanos: AtomicU64,
}

impl ManualClock {
    /// A manual clock at `nanos`.
    pub fn new(nanos: u64) -> Self {
        Self {
            nanos: AtomicU64::new(nanos),
        }
    }

    /// Moves the clock forward (or backward) to `nanos`.
    pub fn set(&self, nanos: u64) {
        self.nanos.store(nanos, Ordering::SeqCst);
    }

    /// Advances the clock by `d`.
    pub fn advance(&self, d: Duration) {
        self.nanos.fetch_add(d.as_nanos() as u64, Ordering::SeqCst);
    }
}

impl PhysicalClock for ManualClock {
    fn now_nanos(&self) -> u64 {
        self.nanos.load(Ordering::SeqCst)
    }
}

/// The system clock shifted by an adjustable offset: a node whose clock runs fast or slow,
/// for clock-skew tests.
#[derive(Debug, Default)]
pub struct SkewedClock {
    offset_nanos: std::sync::atomic::AtomicI64,
}

impl SkewedClock {
    /// A clock `offset_nanos` ahead of the system clock (behind when negative).
    pub fn new(offset_nanos: i64) -> Self {
        Self {
            offset_nanos: std::sync::atomic::AtomicI64::new(offset_nanos),
        }
    }

    /// Changes the offset.
    pub fn set_offset(&self, offset_nanos: i64) {
        self.offset_nanos.store(offset_nanos, Ordering::SeqCst);
    }
}

impl PhysicalClock for SkewedClock {
    fn now_nanos(&self) -> u64 {
        let base = SystemClock.now_nanos() as i64;
        base.saturating_add(self.offset_nanos.load(Ordering::SeqCst))
            .max(0) as u64
    }
}

/// A hybrid logical clock over a physical source.
pub struct Hlc {
    physical: Arc<dyn PhysicalClock>,
    last: Mutex<Timestamp>,
    max_offset: Duration,
}

impl Hlc {
    /// A clock reading `physical`, tolerating `max_offset` between nodes.
    pub fn new(physical: Arc<dyn PhysicalClock>, max_offset: Duration) -> Self {
        Self {
            physical,
            last: Mutex::new(Timestamp::ZERO),
            max_offset,
        }
    }

    /// A clock on the system wall clock.
    pub fn system(max_offset: Duration) -> Self {
        Self::new(Arc::new(SystemClock), max_offset)
    }

    /// The configured maximum offset between nodes.
    pub fn max_offset(&self) -> Duration {
        self.max_offset
    }

    /// The physical clock's reading, in nanoseconds since the Unix epoch.
    pub fn physical_now(&self) -> u64 {
        self.physical.now_nanos()
    }

    /// A timestamp greater than every one this clock returned or was updated with before.
    pub fn now(&self) -> Timestamp {
        let physical = self.physical.now_nanos();
        let mut last = self.last.lock();
        *last = if physical > last.wall {
            Timestamp::new(physical, 0)
        } else {
            last.next()
        };
        *last
    }

    /// Folds in a timestamp seen from another node. Refuses a timestamp that is ahead of the
    /// local physical clock by more than the maximum offset: that node's clock (or ours) is
    /// broken, and accepting it would drag this clock forward.
    pub fn update(&self, remote: Timestamp) -> Result<()> {
        let physical = self.physical.now_nanos();
        let max = self.max_offset.as_nanos() as u64;
        if !self.max_offset.is_zero() && remote.wall > physical.saturating_add(max) {
            return Err(Error::ClockOffset {
                offset_ms: (remote.wall - physical) / 1_000_000,
                max_ms: max / 1_000_000,
            });
        }
        let mut last = self.last.lock();
        if remote > *last {
            *last = remote;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn now_is_strictly_increasing_when_physical_time_stands_still() {
        let physical = Arc::new(ManualClock::new(1_000));
        let hlc = Hlc::new(physical.clone(), Duration::from_millis(500));
        let a = hlc.now();
        let b = hlc.now();
        assert!(b > a);
        assert_eq!(b, Timestamp::new(1_000, 1));
        physical.set(500); // time runs backwards
        assert!(hlc.now() > b);
        physical.set(2_000);
        assert_eq!(hlc.now(), Timestamp::new(2_000, 0));
    }

    #[test]
    fn update_keeps_causality_and_refuses_excess_offset() {
        let physical = Arc::new(ManualClock::new(1_000_000_000));
        let hlc = Hlc::new(physical.clone(), Duration::from_millis(500));
        let remote = Timestamp::new(1_100_000_000, 7);
        hlc.update(remote).expect("within offset");
        assert!(hlc.now() > remote);
        let far = Timestamp::new(2_000_000_000, 0);
        let err = hlc.update(far).expect_err("beyond offset");
        assert!(
            err.to_string().contains("exceeds the maximum of 500 ms"),
            "{err}"
        );
    }

    #[test]
    fn timestamp_bytes_round_trip_and_keep_order() {
        let a = Timestamp::new(5, 9);
        let b = Timestamp::new(6, 0);
        assert_eq!(Timestamp::from_bytes(&a.to_bytes()), Some(a));
        assert!(a.to_bytes() < b.to_bytes());
        assert_eq!(Timestamp::from_bytes(&[1, 2]), None);
    }
}
