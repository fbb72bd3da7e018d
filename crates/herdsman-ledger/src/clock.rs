//! Where a ledger reads the time for leases and timestamps: the system clock in production, a
//! clock moved by hand in tests, so lease expiry is tested without sleeping.
//!
//! It must never go backwards by itself: a [`ManualClock`] moves only when told to.

use std::fmt::Debug;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A source of the current time.
pub trait Clock: Send + Sync + Debug {
    /// The current time.
    fn now(&self) -> SystemTime;
}

/// The system's wall clock ([`SystemTime::now`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock that stands still until moved, with millisecond resolution (what ledgers store).
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use herdsman_ledger::{Clock, ManualClock};
/// let clock = ManualClock::at(UNIX_EPOCH + Duration::from_secs(1_700_000_000));
/// let before = clock.now();
/// clock.advance(Duration::from_secs(30));
/// assert_eq!(clock.now().duration_since(before).unwrap(), Duration::from_secs(30));
/// ```
#[derive(Debug)]
pub struct ManualClock {
    /// Milliseconds since the Unix epoch.
    ms: AtomicU64,
}

impl ManualClock {
    /// A clock showing `time` (truncated to the millisecond; times before 1970 show 1970).
    pub fn at(time: SystemTime) -> ManualClock {
        let ms = time
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        ManualClock {
            ms: AtomicU64::new(ms),
        }
    }

    /// Moves the clock forward by `by` (truncated to the millisecond).
    pub fn advance(&self, by: Duration) {
        let by = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        // fetch_update never fails with a closure that always returns Some.
        let _ = self
            .ms
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |ms| {
                Some(ms.saturating_add(by))
            });
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.ms.load(Ordering::SeqCst))
    }
}
