//! Cancellation: a token that any thread (or a signal handler) can trigger to stop a run.
//!
//! Triggering must stay a single atomic store, so it is safe to call from a signal handler;
//! it must never block, allocate or lock.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Stops a run from another thread or a signal handler: running items finish, nothing new
/// starts, the input is not pulled again, and the run's status becomes `Cancelled`.
///
/// ```
/// use herdsman::{RunStatus, StopToken};
/// let token = StopToken::new();
/// token.stop();
/// let run = herdsman::map(0.., |x: u64| Ok::<_, ()>(x)).stop_token(token).collect();
/// assert_eq!(run.status(), &RunStatus::Cancelled);
/// ```
#[derive(Debug, Clone, Default)]
pub struct StopToken {
    flag: Arc<AtomicBool>,
}

impl StopToken {
    /// A token that has not been triggered.
    pub fn new() -> Self {
        Self::default()
    }

    /// Ask every run holding this token to stop. Only an atomic store: async-signal-safe.
    pub fn stop(&self) {
        self.flag.store(true, Ordering::SeqCst);
    }

    /// Whether `stop` was called.
    pub fn is_stopped(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }

    /// The shared flag itself, e.g. to hand to `signal_hook::flag::register`.
    pub fn as_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.flag)
    }
}
