//! The inline runner: sequential runs, every attempt on the calling (scheduler) thread.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use crate::engine::{run_one, Abandoned, Backend, GiveUp, Halt, Outcomes, Report, Room, Slot};
use crate::executor::{AttemptId, FatalExecutorError};
use crate::limiter::Clock;

/// Runs attempts on the calling thread, one at a time, inside `poll`.
pub(crate) struct Inline<T, F> {
    f: F,
    queue: VecDeque<(AttemptId, T)>,
    item_timeout: Option<Duration>,
    stopped: bool,
    clock: Arc<dyn Clock>,
}

impl<T, F> Inline<T, F> {
    pub(crate) fn new(f: F, item_timeout: Option<Duration>, clock: Arc<dyn Clock>) -> Self {
        Inline {
            f,
            queue: VecDeque::new(),
            item_timeout,
            stopped: false,
            clock,
        }
    }
}

impl<T, U, E, F> Backend<T, U, E> for Inline<T, F>
where
    T: Send,
    F: Fn(T) -> Result<U, E> + Send,
{
    fn room(&self) -> Room {
        Room {
            free: usize::from(self.queue.is_empty()),
            batch: 1,
            in_flight: self.queue.len(),
            read_ahead: 0,
            measures: true,
        }
    }
    fn submit(&mut self, first: AttemptId, items: Vec<T>) -> Result<(), FatalExecutorError> {
        for (k, item) in items.into_iter().enumerate() {
            let id = first.nth(k);
            self.queue.push_back((id, item));
        }
        Ok(())
    }
    fn poll(
        &mut self,
        timeout: Duration,
        out: &mut Vec<Report<U, E>>,
    ) -> Result<(), FatalExecutorError> {
        let Some((id, item)) = self.queue.pop_front() else {
            std::thread::sleep(timeout);
            return Ok(());
        };
        if self.stopped {
            out.push(Report {
                first: id,
                outcomes: Outcomes::Mixed(vec![Slot::NotRun]),
                per_item: Some(Duration::ZERO),
            });
            return Ok(());
        }
        let start = self.clock.now();
        let outcome = run_one(&self.f, item);
        let elapsed = self.clock.now().saturating_sub(start);
        let slot = match self.item_timeout {
            Some(t) if elapsed > t => Slot::TimedOut,
            _ => Slot::Done(outcome),
        };
        out.push(Report {
            first: id,
            outcomes: Outcomes::Mixed(vec![slot]),
            per_item: Some(elapsed),
        });
        Ok(())
    }
    fn abandon(&mut self, what: GiveUp) -> Vec<Abandoned> {
        match what {
            GiveUp::One(id) => {
                self.queue.retain(|(q, _)| *q != id);
                Vec::new()
            }
            GiveUp::All => self
                .queue
                .drain(..)
                .map(|(first, _)| Abandoned {
                    first,
                    len: 1,
                    started: false,
                })
                .collect(),
        }
    }
    fn stop(&mut self, halt: Halt) {
        if halt == Halt::Queued {
            self.stopped = true;
        }
    }
}
