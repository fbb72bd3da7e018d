//! Rate limiting: a GCRA (generic cell rate algorithm) limiter that several runs and threads
//! can share, with bursts and a `pause` for server-mandated waits (HTTP 429 Retry-After).
//!
//! It never sleeps: callers ask for a token and get either the token or how long to wait, so
//! a waiting run can keep checking its stop token. Any pause, even `Duration::MAX`, is
//! accepted: time arithmetic saturates instead of overflowing. `governor` was considered; it has no way
//! to pause a limiter for a server-mandated wait, so this small GCRA is hand-written.

use std::fmt;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A source of time for a [`Limiter`]; tests use [`ManualClock`].
pub trait Clock: Send + Sync + fmt::Debug {
    /// Time elapsed since an arbitrary fixed origin, which must never go backwards.
    fn now(&self) -> Duration;
}

/// The real monotonic clock.
#[derive(Debug)]
pub struct SystemClock {
    origin: Instant,
}

impl Default for SystemClock {
    fn default() -> Self {
        SystemClock {
            origin: Instant::now(),
        }
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }
}

/// A clock that only moves when told to, for deterministic tests.
///
/// ```
/// use herdsman::{Limiter, ManualClock, RateLimit};
/// use std::num::NonZeroU32;
/// use std::time::Duration;
/// let clock = ManualClock::new();
/// let limiter = Limiter::with_clock(RateLimit::per_second(NonZeroU32::new(2).unwrap()), clock.clone());
/// assert!(limiter.try_acquire().is_ok());
/// assert!(limiter.try_acquire().is_err());
/// clock.advance(Duration::from_millis(500));
/// assert!(limiter.try_acquire().is_ok());
/// ```
#[derive(Debug, Clone, Default)]
pub struct ManualClock {
    now: Arc<Mutex<Duration>>,
}

impl ManualClock {
    /// A clock at time zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Move the clock forward.
    pub fn advance(&self, by: Duration) {
        *self.now.lock().unwrap_or_else(|e| e.into_inner()) += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Duration {
        *self.now.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A rate: `n` attempts per period, with an optional burst.
///
/// ```
/// use herdsman::RateLimit;
/// use std::num::NonZeroU32;
/// let r = RateLimit::per_second(NonZeroU32::new(10).unwrap()).burst(5);
/// assert_eq!(r.burst_size(), 5);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    interval: Duration,
    burst: u32,
}

impl RateLimit {
    fn per(n: NonZeroU32, period: Duration) -> Self {
        RateLimit {
            interval: period / n.get(),
            burst: 1,
        }
    }

    /// At most `n` attempts per second.
    pub fn per_second(n: NonZeroU32) -> Self {
        Self::per(n, Duration::from_secs(1))
    }

    /// At most `n` attempts per minute.
    pub fn per_minute(n: NonZeroU32) -> Self {
        Self::per(n, Duration::from_secs(60))
    }

    /// At most `n` attempts per hour.
    pub fn per_hour(n: NonZeroU32) -> Self {
        Self::per(n, Duration::from_secs(3600))
    }

    /// Allow up to `b` attempts at once after an idle period (default 1: evenly spaced).
    pub fn burst(mut self, b: u32) -> Self {
        self.burst = b.max(1);
        self
    }

    /// The burst size.
    pub fn burst_size(&self) -> u32 {
        self.burst
    }

    /// The steady spacing between attempts.
    pub fn interval(&self) -> Duration {
        self.interval
    }
}

#[derive(Debug)]
struct State {
    /// Theoretical arrival time of the next token (GCRA).
    tat: Duration,
    paused_until: Duration,
    /// When a refused [`Limiter::try_acquire`] started a wait that no token has ended yet.
    waiting_since: Option<Duration>,
    /// Waits that a token ended, in all.
    waited: Duration,
}

#[derive(Debug)]
struct Inner {
    rate: RateLimit,
    clock: Arc<dyn Clock>,
    state: Mutex<State>,
}

/// A shareable rate limiter: clone it and give the clones to several runs or threads; they
/// all draw from the same budget.
///
/// ```
/// use herdsman::{Limiter, RateLimit};
/// use std::num::NonZeroU32;
/// let shared = Limiter::new(RateLimit::per_second(NonZeroU32::new(100).unwrap()).burst(10));
/// let a = herdsman::map(0..5, |x: u32| Ok::<_, ()>(x)).limiter(shared.clone()).collect();
/// let b = herdsman::map(0..5, |x: u32| Ok::<_, ()>(x)).limiter(shared.clone()).collect();
/// assert!(a.is_ok() && b.is_ok());
/// ```
#[derive(Debug, Clone)]
pub struct Limiter {
    inner: Arc<Inner>,
}

impl Limiter {
    /// A limiter on the real clock.
    pub fn new(rate: RateLimit) -> Self {
        Self::with_clock(rate, SystemClock::default())
    }

    /// A limiter on the given clock (see [`ManualClock`]).
    pub fn with_clock(rate: RateLimit, clock: impl Clock + 'static) -> Self {
        let now = clock.now();
        Limiter {
            inner: Arc::new(Inner {
                rate,
                clock: Arc::new(clock),
                state: Mutex::new(State {
                    tat: now,
                    paused_until: Duration::ZERO,
                    waiting_since: None,
                    waited: Duration::ZERO,
                }),
            }),
        }
    }

    /// The configured rate.
    pub fn rate(&self) -> RateLimit {
        self.inner.rate
    }

    fn tolerance(&self) -> Duration {
        self.inner
            .rate
            .interval
            .saturating_mul(self.inner.rate.burst - 1)
    }

    /// Take one token now, or return how long to wait before one may be available.
    pub fn try_acquire(&self) -> Result<(), Duration> {
        let now = self.inner.clock.now();
        let mut st = self.inner.state.lock().unwrap_or_else(|e| e.into_inner());
        let refused = if now < st.paused_until {
            Some(st.paused_until - now)
        } else {
            let earliest = st.tat.saturating_sub(self.tolerance());
            (now < earliest).then(|| earliest - now)
        };
        if let Some(wait) = refused {
            st.waiting_since.get_or_insert(now);
            return Err(wait);
        }
        if let Some(since) = st.waiting_since.take() {
            st.waited = st.waited.saturating_add(now.saturating_sub(since));
        }
        st.tat = st.tat.max(now).saturating_add(self.inner.rate.interval);
        Ok(())
    }

    /// How long callers were held back so far, in all: the time from each refused
    /// [`try_acquire`](Limiter::try_acquire) to the token that ended that wait (a wait still
    /// going on counts up to now), pauses included. Waits of several callers at the same time
    /// count once: this is the time the limiter kept work waiting, not a sum per caller.
    ///
    /// ```
    /// use herdsman::{Limiter, ManualClock, RateLimit};
    /// use std::num::NonZeroU32;
    /// use std::time::Duration;
    /// let clock = ManualClock::new();
    /// let l = Limiter::with_clock(RateLimit::per_second(NonZeroU32::new(1).unwrap()), clock.clone());
    /// assert!(l.try_acquire().is_ok());
    /// assert!(l.try_acquire().is_err());
    /// clock.advance(Duration::from_millis(1000));
    /// assert!(l.try_acquire().is_ok());
    /// assert_eq!(l.waited(), Duration::from_millis(1000));
    /// ```
    pub fn waited(&self) -> Duration {
        let now = self.inner.clock.now();
        let st = self.inner.state.lock().unwrap_or_else(|e| e.into_inner());
        let ongoing = st
            .waiting_since
            .map_or(Duration::ZERO, |since| now.saturating_sub(since));
        st.waited.saturating_add(ongoing)
    }

    /// Block until a token is available (sleeping in short steps) and take it.
    pub fn acquire_blocking(&self) {
        while let Err(wait) = self.try_acquire() {
            std::thread::sleep(wait.min(Duration::from_millis(50)));
        }
    }

    /// Stop handing out tokens for `d` (for example, what an HTTP 429's Retry-After said).
    /// After the pause, tokens resume at the steady rate, without a burst. A pause too long
    /// to represent (`Duration::MAX`) lasts forever.
    pub fn pause(&self, d: Duration) {
        let now = self.inner.clock.now();
        let mut st = self.inner.state.lock().unwrap_or_else(|e| e.into_inner());
        let until = now.saturating_add(d);
        if until > st.paused_until {
            st.paused_until = until;
        }
        let no_burst = st.paused_until.saturating_add(self.tolerance());
        if st.tat < no_burst {
            st.tat = no_burst;
        }
    }

    /// How long the limiter stays paused from now (zero if not paused).
    pub fn paused_for(&self) -> Duration {
        let now = self.inner.clock.now();
        let st = self.inner.state.lock().unwrap_or_else(|e| e.into_inner());
        st.paused_until.saturating_sub(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waited_counts_refused_time_once_including_pauses() {
        let clock = ManualClock::new();
        let l = Limiter::with_clock(
            RateLimit::per_second(NonZeroU32::new(10).unwrap()),
            clock.clone(),
        );
        assert!(l.try_acquire().is_ok());
        assert_eq!(l.waited(), Duration::ZERO);
        // Refused twice in a row: one wait, counted from the first refusal.
        assert!(l.try_acquire().is_err());
        clock.advance(Duration::from_millis(40));
        assert!(l.try_acquire().is_err());
        assert_eq!(
            l.waited(),
            Duration::from_millis(40),
            "an ongoing wait counts"
        );
        clock.advance(Duration::from_millis(60));
        assert!(l.try_acquire().is_ok());
        assert_eq!(l.waited(), Duration::from_millis(100));
        // Time without a refusal is not waiting.
        clock.advance(Duration::from_secs(5));
        assert!(l.try_acquire().is_ok());
        assert_eq!(l.waited(), Duration::from_millis(100));
        // A pause (a server's Retry-After) is waited for like a token.
        l.pause(Duration::from_secs(2));
        assert!(l.try_acquire().is_err());
        clock.advance(Duration::from_secs(2));
        assert!(l.try_acquire().is_ok());
        assert_eq!(l.waited(), Duration::from_millis(2100));
    }

    #[test]
    fn steady_rate_on_manual_clock() {
        let clock = ManualClock::new();
        let l = Limiter::with_clock(
            RateLimit::per_second(NonZeroU32::new(10).unwrap()),
            clock.clone(),
        );
        let mut granted = 0;
        // 2 simulated seconds in 1 ms steps.
        for _ in 0..2000 {
            while l.try_acquire().is_ok() {
                granted += 1;
            }
            clock.advance(Duration::from_millis(1));
        }
        assert!((20..=21).contains(&granted), "granted {granted}");
    }

    #[test]
    fn burst_then_steady() {
        let clock = ManualClock::new();
        let l = Limiter::with_clock(
            RateLimit::per_second(NonZeroU32::new(10).unwrap()).burst(5),
            clock.clone(),
        );
        let mut now = 0;
        while l.try_acquire().is_ok() {
            now += 1;
        }
        assert_eq!(now, 5);
        let wait = l.try_acquire().unwrap_err();
        assert_eq!(wait, Duration::from_millis(100));
        clock.advance(wait);
        assert!(l.try_acquire().is_ok());
        assert!(l.try_acquire().is_err());
    }

    #[test]
    fn pause_blocks_then_resumes_without_burst() {
        let clock = ManualClock::new();
        let l = Limiter::with_clock(
            RateLimit::per_second(NonZeroU32::new(10).unwrap()).burst(5),
            clock.clone(),
        );
        l.pause(Duration::from_secs(2));
        assert_eq!(l.try_acquire().unwrap_err(), Duration::from_secs(2));
        clock.advance(Duration::from_millis(1999));
        assert!(l.try_acquire().is_err());
        clock.advance(Duration::from_millis(1));
        assert!(l.try_acquire().is_ok());
        assert!(l.try_acquire().is_err(), "no burst right after a pause");
        assert_eq!(l.paused_for(), Duration::ZERO);
    }

    #[test]
    fn shared_between_threads_never_over_grants() {
        fn assert_shareable<T: Clone + Send + Sync + 'static>() {}
        assert_shareable::<Limiter>();
        let clock = ManualClock::new();
        let l = Limiter::with_clock(
            RateLimit::per_second(NonZeroU32::new(10).unwrap()).burst(10),
            clock.clone(),
        );
        let granted = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (l, g) = (l.clone(), granted.clone());
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        if l.try_acquire().is_ok() {
                            g.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        // The clock never moved: exactly the burst was granted.
        assert_eq!(granted.load(std::sync::atomic::Ordering::SeqCst), 10);
        clock.advance(Duration::from_millis(350));
        let mut more = 0;
        while l.try_acquire().is_ok() {
            more += 1;
        }
        assert_eq!(more, 3);
    }

    #[test]
    fn per_minute_and_hour_intervals() {
        assert_eq!(
            RateLimit::per_minute(NonZeroU32::new(60).unwrap()).interval(),
            Duration::from_secs(1)
        );
        assert_eq!(
            RateLimit::per_hour(NonZeroU32::new(3600).unwrap()).interval(),
            Duration::from_secs(1)
        );
    }
}
