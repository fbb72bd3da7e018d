//! herdsman's thread pool as a public [`Executor`](crate::Executor).

use std::sync::Arc;
use std::time::Duration;

use super::{PoolConfig, ThreadPool};
use crate::engine::{Backend, GiveUp, Halt, Outcomes, Report, Slot};
use crate::executor::{AttemptId, AttemptOutcome, FatalExecutorError};
use crate::limiter::SystemClock;

/// herdsman's thread pool as a plain [`Executor`](crate::Executor), for use with
/// [`map_with`](crate::map_with) or any code that drives executors. One item per attempt,
/// `workers` attempts at once; `abandon` discards the late result and replaces the busy
/// thread. ([`map`](crate::map) uses the same pool with automatic batching on top.)
///
/// ```
/// use herdsman::ThreadExecutor;
/// let exec = ThreadExecutor::new(2, |x: u32| if x == 3 { Err("three") } else { Ok(x * 2) });
/// let run = herdsman::map_with(0..5u32, exec).collect();
/// assert_eq!(run.success_count(), 4);
/// assert_eq!(run.failures()[0].index, 3);
/// ```
///
/// If the operating system refuses to start a thread, the first `submit` or `poll` returns
/// that [`FatalExecutorError`] (kind [`Runtime`](crate::FatalKind::Runtime)).
pub struct ThreadExecutor<T, U, E, F> {
    pool: Result<ThreadPool<T, U, E, F>, FatalExecutorError>,
    workers: usize,
    buf: Vec<Report<U, E>>,
}

impl<T, U, E, F> ThreadExecutor<T, U, E, F>
where
    T: Send + 'static,
    U: Send + 'static,
    E: Send + 'static,
    F: Fn(T) -> Result<U, E> + Send + Sync + 'static,
{
    /// Start `workers` threads running `f`.
    pub fn new(workers: usize, f: F) -> Self {
        let workers = workers.max(1);
        ThreadExecutor {
            pool: ThreadPool::new(
                Arc::new(f),
                PoolConfig {
                    workers,
                    chunk: Some(1),
                    max_batch: 1,
                    track: true,
                    rate_limited: false,
                    clock: Arc::new(SystemClock::default()),
                },
            ),
            workers,
            buf: Vec::new(),
        }
    }
}

impl<T, U, E, F> crate::Executor<T> for ThreadExecutor<T, U, E, F>
where
    T: Send + 'static,
    U: Send + 'static,
    E: Send + 'static,
    F: Fn(T) -> Result<U, E> + Send + Sync + 'static,
{
    type Output = U;
    type Error = E;

    fn capacity(&self) -> usize {
        self.workers
    }

    fn submit(&mut self, id: AttemptId, item: T) -> Result<(), FatalExecutorError> {
        self.pool
            .as_mut()
            .map_err(|e| e.clone())?
            .submit(id, vec![item])
    }

    fn poll(
        &mut self,
        timeout: Duration,
        out: &mut crate::executor::Finished<U, E>,
    ) -> Result<(), FatalExecutorError> {
        self.pool
            .as_mut()
            .map_err(|e| e.clone())?
            .poll(timeout, &mut self.buf)?;
        for r in self.buf.drain(..) {
            let slots = match r.outcomes {
                Outcomes::AllOk(v) => v
                    .into_iter()
                    .map(|x| Slot::Done(AttemptOutcome::Success(x)))
                    .collect(),
                Outcomes::Mixed(v) => v,
                Outcomes::Written(_) => unreachable!("this pool has no direct output"),
            };
            for (k, slot) in slots.into_iter().enumerate() {
                let id = r.first.nth(k);
                let o = match slot {
                    Slot::Done(o) => o,
                    // The pool is never told to stop queued work through this interface.
                    Slot::NotRun | Slot::TimedOut => {
                        AttemptOutcome::Panicked("the attempt was not run".into())
                    }
                };
                out.push((id, o));
            }
        }
        Ok(())
    }

    fn abandon(&mut self, id: AttemptId) {
        if let Ok(pool) = self.pool.as_mut() {
            pool.abandon(GiveUp::One(id));
        }
    }

    fn shutdown(&mut self) {
        if let Ok(pool) = self.pool.as_mut() {
            pool.stop(Halt::Shutdown);
        }
    }
}
