//! The retry policy: how many attempts, how long to wait between them, and which errors
//! deserve another attempt.
//!
//! It only computes decisions and delays; it must never sleep or run anything itself (the
//! engine keeps waiting retries in a timer queue so they do not occupy a worker).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

type Pred<E> = Arc<dyn Fn(&E) -> bool + Send + Sync>;
type After<E> = Arc<dyn Fn(&E) -> Option<Duration> + Send + Sync>;

/// Retry policy: exponential backoff with optional jitter, a predicate selecting retryable
/// errors, and an optional server-mandated wait.
///
/// ```
/// use herdsman::Retry;
/// use std::time::Duration;
/// let policy: Retry<String> = Retry::attempts(4)
///     .backoff(Duration::from_millis(100))
///     .max_delay(Duration::from_secs(2))
///     .jitter(true)
///     .when(|e: &String| e.contains("temporary"));
/// assert_eq!(policy.max_attempts(), 4);
/// ```
#[must_use = "a retry policy does nothing until it is given to `Map::retry`"]
pub struct Retry<E> {
    pub(crate) attempts: u32,
    pub(crate) base: Duration,
    pub(crate) max_delay: Duration,
    pub(crate) jitter: bool,
    pub(crate) retry_timeouts: bool,
    pub(crate) when: Option<Pred<E>>,
    pub(crate) retry_after: Option<After<E>>,
}

impl<E> Clone for Retry<E> {
    fn clone(&self) -> Self {
        Retry {
            attempts: self.attempts,
            base: self.base,
            max_delay: self.max_delay,
            jitter: self.jitter,
            retry_timeouts: self.retry_timeouts,
            when: self.when.clone(),
            retry_after: self.retry_after.clone(),
        }
    }
}

impl<E> fmt::Debug for Retry<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Retry")
            .field("attempts", &self.attempts)
            .field("base", &self.base)
            .field("max_delay", &self.max_delay)
            .field("jitter", &self.jitter)
            .field("retry_timeouts", &self.retry_timeouts)
            .finish_non_exhaustive()
    }
}

impl<E> Retry<E> {
    /// At most `n` attempts in total per item (1 = no retry). Defaults: 100 ms base backoff,
    /// 30 s max delay, jitter on, every user error retryable, panics and timeouts not.
    pub fn attempts(n: u32) -> Self {
        Retry {
            attempts: n.max(1),
            base: Duration::from_millis(100),
            max_delay: Duration::from_secs(30),
            jitter: true,
            retry_timeouts: false,
            when: None,
            retry_after: None,
        }
    }

    /// Delay before the 2nd attempt; each later delay doubles.
    pub fn backoff(mut self, base: Duration) -> Self {
        self.base = base;
        self
    }

    /// Upper bound of one backoff delay.
    pub fn max_delay(mut self, d: Duration) -> Self {
        self.max_delay = d;
        self
    }

    /// Randomize each delay within `[delay/2, delay]` so retries of many items spread out.
    pub fn jitter(mut self, on: bool) -> Self {
        self.jitter = on;
        self
    }

    /// Also retry attempts that hit `item_timeout`.
    pub fn retry_timeouts(mut self, on: bool) -> Self {
        self.retry_timeouts = on;
        self
    }

    /// Retry only errors for which `pred` returns true.
    pub fn when(mut self, pred: impl Fn(&E) -> bool + Send + Sync + 'static) -> Self {
        self.when = Some(Arc::new(pred));
        self
    }

    /// Extract a server-mandated wait from an error (e.g. HTTP 429 Retry-After). When it
    /// returns `Some(d)`, the retry waits `d` instead of the backoff, and the run's rate
    /// limiter (if any) is paused for `d` so no other attempt goes out meanwhile. A wait too
    /// long to represent (`Duration::MAX`) never ends: the item waits until the run stops or
    /// its deadline, and is then reported with the error it had.
    pub fn retry_after(
        mut self,
        extract: impl Fn(&E) -> Option<Duration> + Send + Sync + 'static,
    ) -> Self {
        self.retry_after = Some(Arc::new(extract));
        self
    }

    /// The maximum number of attempts per item.
    pub fn max_attempts(&self) -> u32 {
        self.attempts
    }

    /// Whether this error may be retried (ignoring the attempt count).
    pub fn is_retryable(&self, e: &E) -> bool {
        self.when.as_ref().is_none_or(|p| p(e))
    }

    /// The server-mandated wait carried by this error, if any.
    pub fn server_wait(&self, e: &E) -> Option<Duration> {
        self.retry_after.as_ref().and_then(|f| f(e))
    }

    /// The backoff delay after attempt `failed_attempt` (1-based) failed; `unit` in `[0,1)`
    /// is the random draw used for jitter.
    pub fn delay_after(&self, failed_attempt: u32, unit: f64) -> Duration {
        let exp = failed_attempt.saturating_sub(1).min(31);
        let raw = self.base.saturating_mul(1u32 << exp).min(self.max_delay);
        if self.jitter {
            // `mul_f64` rounds through f64: near `Duration::MAX` the sum could overflow.
            let half = raw / 2;
            let extra = Duration::try_from_secs_f64(half.as_secs_f64() * unit.clamp(0.0, 1.0))
                .unwrap_or(half)
                .min(half);
            half.saturating_add(extra)
        } else {
            raw
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exponential_and_capped() {
        let r: Retry<()> = Retry::attempts(10)
            .backoff(Duration::from_millis(100))
            .max_delay(Duration::from_millis(500))
            .jitter(false);
        assert_eq!(r.delay_after(1, 0.0), Duration::from_millis(100));
        assert_eq!(r.delay_after(2, 0.0), Duration::from_millis(200));
        assert_eq!(r.delay_after(3, 0.0), Duration::from_millis(400));
        assert_eq!(r.delay_after(4, 0.0), Duration::from_millis(500));
        assert_eq!(r.delay_after(40, 0.0), Duration::from_millis(500));
    }

    #[test]
    fn jitter_stays_in_half_to_full() {
        let r: Retry<()> = Retry::attempts(3).backoff(Duration::from_millis(100));
        assert_eq!(r.delay_after(1, 0.0), Duration::from_millis(50));
        assert!(r.delay_after(1, 0.999) <= Duration::from_millis(100));
    }

    #[test]
    fn predicate_and_server_wait() {
        let r: Retry<u16> = Retry::attempts(3)
            .when(|c| *c == 429 || *c >= 500)
            .retry_after(|c| (*c == 429).then_some(Duration::from_secs(1)));
        assert!(r.is_retryable(&429));
        assert!(!r.is_retryable(&404));
        assert_eq!(r.server_wait(&429), Some(Duration::from_secs(1)));
        assert_eq!(r.server_wait(&500), None);
    }
}
