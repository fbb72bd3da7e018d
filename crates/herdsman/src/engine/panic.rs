//! Panic capture: an attempt that panics becomes a per-item failure, never a dead thread.

use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::executor::AttemptOutcome;

/// Run one attempt, turning a panic into [`AttemptOutcome::Panicked`].
pub(crate) fn run_one<T, U, E, F: Fn(T) -> Result<U, E>>(f: &F, item: T) -> AttemptOutcome<U, E> {
    match catch_unwind(AssertUnwindSafe(|| f(item))) {
        Ok(Ok(v)) => AttemptOutcome::Success(v),
        Ok(Err(e)) => AttemptOutcome::Failure(e),
        Err(payload) => AttemptOutcome::Panicked(panic_message(payload.as_ref())),
    }
}

pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_string()
    }
}
