//! What a run reports: per-item outcomes, progress snapshots, the run's status and the
//! collected result.
//!
//! These types only describe what happened. They must never hide an item: every admitted
//! input index ends up exactly once as a success or as a [`Failure`].

use std::fmt;
use std::time::Duration;

/// Why one item did not produce a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ItemError<E> {
    /// The function returned this error (on its last attempt).
    #[error("the function failed: {0}")]
    Failed(E),
    /// The function panicked; the message is the panic's payload.
    #[error("the function panicked: {0}")]
    Panicked(String),
    /// The attempt ran longer than `item_timeout`, or was still running when the run's
    /// `deadline` passed. Its late result (if any) was discarded.
    #[error("the item timed out; raise item_timeout or deadline if it needs more time")]
    TimedOut,
    /// The item was admitted but never started because the run stopped first
    /// (cancel, `max_errors`, or deadline).
    #[error("the item was not run because the run stopped before it started")]
    NotRun,
    /// The executor failed as a whole while this item was in flight.
    #[error("the executor failed while the item was in flight: {0}")]
    Executor(String),
}

impl<E> ItemError<E> {
    /// The user error, if this is [`ItemError::Failed`].
    pub fn user_error(&self) -> Option<&E> {
        match self {
            ItemError::Failed(e) => Some(e),
            _ => None,
        }
    }

    /// True for [`ItemError::NotRun`].
    pub fn is_not_run(&self) -> bool {
        matches!(self, ItemError::NotRun)
    }
}

/// The final outcome of one item, as given to `on_outcome` and yielded by `stream()`.
#[derive(Debug)]
pub struct ItemOutcome<U, E> {
    /// 0-based position of the item in the input.
    pub index: u64,
    /// The value, or why there is none.
    pub result: Result<U, ItemError<E>>,
    /// How many attempts ran (0 when the item never started).
    pub attempts: u32,
    /// Time spent running the item's attempts (for automatically batched items, the batch's
    /// average per item).
    pub duration: Duration,
}

/// A snapshot of a run's counters, given to `on_progress` after each final item outcome.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Progress {
    /// Items that produced a value.
    pub succeeded: u64,
    /// Items that ended in a failure (errors, panics, timeouts), not counting `not_run`.
    pub failed: u64,
    /// Items admitted but never started because the run stopped.
    pub not_run: u64,
    /// Retry attempts started so far (attempts beyond each item's first).
    pub retries: u64,
    /// The number of items, when known (from `total_hint` or an exact `size_hint`).
    pub total: Option<u64>,
    /// Time since the run started.
    pub elapsed: Duration,
}

impl Progress {
    /// Items with a final outcome so far (`succeeded + failed + not_run`).
    pub fn finished(&self) -> u64 {
        self.succeeded + self.failed + self.not_run
    }
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RunStatus {
    /// The input was exhausted and every admitted item has a final outcome.
    Completed,
    /// The run's `deadline` passed: admission stopped and unfinished items were given up.
    TimedOut,
    /// `max_errors` final failures happened: admission stopped.
    Aborted,
    /// The [`StopToken`](crate::StopToken) was triggered (or the stream was dropped).
    Cancelled,
    /// The executor reported a fatal error: what happened, and whether it is a configuration
    /// problem or one that arose while running ([`FatalKind`](crate::FatalKind)).
    ExecutorFailed(crate::FatalExecutorError),
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunStatus::Completed => f.write_str("completed"),
            RunStatus::TimedOut => f.write_str("timed out (deadline reached)"),
            RunStatus::Aborted => f.write_str("aborted (max_errors reached)"),
            RunStatus::Cancelled => f.write_str("cancelled"),
            RunStatus::ExecutorFailed(m) => write!(f, "executor failed: {m}"),
        }
    }
}

/// Final counters of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Summary {
    /// How the run ended.
    pub status: RunStatus,
    /// Items that produced a value.
    pub succeeded: u64,
    /// Items that failed (errors, panics, timeouts), not counting `not_run`.
    pub failed: u64,
    /// Items admitted but never started.
    pub not_run: u64,
    /// Retry attempts started.
    pub retries: u64,
    /// Items pulled from the input.
    pub admitted: u64,
    /// Wall time of the run.
    pub elapsed: Duration,
}

impl Summary {
    /// The summary of a run that resolved no item: `status` and every count zero (for front
    /// ends that must report a run whose thread ended before it could summarise).
    ///
    /// ```
    /// use herdsman::{RunStatus, Summary};
    /// let s = Summary::empty(RunStatus::Cancelled);
    /// assert_eq!((s.succeeded, s.failed, s.admitted), (0, 0, 0));
    /// ```
    pub fn empty(status: RunStatus) -> Summary {
        Summary {
            status,
            succeeded: 0,
            failed: 0,
            not_run: 0,
            retries: 0,
            admitted: 0,
            elapsed: std::time::Duration::ZERO,
        }
    }
}

/// One item that did not produce a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure<E> {
    /// 0-based position of the item in the input.
    pub index: u64,
    /// Why it failed.
    pub error: ItemError<E>,
    /// How many attempts ran.
    pub attempts: u32,
    /// Time spent in its attempts.
    pub duration: Duration,
}

pub(crate) enum Successes<U> {
    /// Values in input order; `holes` are the (sorted) indices without a value.
    Ordered { values: Vec<U>, holes: Vec<u64> },
    /// `(index, value)` in completion order.
    Unordered(Vec<(u64, U)>),
}

/// The collected result of a run: its status, every success with its index, and every
/// failure.
#[must_use = "a run's failures are only in its RunResult; check them (or `into_values()`)"]
pub struct RunResult<U, E> {
    pub(crate) successes: Successes<U>,
    pub(crate) failures: Vec<Failure<E>>,
    pub(crate) summary: Summary,
}

impl<U: fmt::Debug, E: fmt::Debug> fmt::Debug for RunResult<U, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunResult")
            .field("summary", &self.summary)
            .field("failures", &self.failures)
            .finish_non_exhaustive()
    }
}

impl<U, E> RunResult<U, E> {
    /// How the run ended.
    pub fn status(&self) -> &RunStatus {
        &self.summary.status
    }

    /// True when the run completed and every item succeeded.
    pub fn is_ok(&self) -> bool {
        self.summary.status == RunStatus::Completed && self.failures.is_empty()
    }

    /// Final counters.
    pub fn summary(&self) -> &Summary {
        &self.summary
    }

    /// Every failure (in input order for ordered runs, completion order otherwise).
    pub fn failures(&self) -> &[Failure<E>] {
        &self.failures
    }

    /// Number of successes.
    pub fn success_count(&self) -> usize {
        match &self.successes {
            Successes::Ordered { values, .. } => values.len(),
            Successes::Unordered(v) => v.len(),
        }
    }

    /// Every success as `(input index, &value)`, in input order for ordered runs.
    pub fn successes(&self) -> Box<dyn Iterator<Item = (u64, &U)> + '_> {
        match &self.successes {
            Successes::Ordered { values, holes } => {
                let mut idx = IndexWalk::new(holes);
                Box::new(values.iter().map(move |v| (idx.next_index(), v)))
            }
            Successes::Unordered(v) => Box::new(v.iter().map(|(i, v)| (*i, v))),
        }
    }

    /// Split into `(successes as (index, value), failures)`.
    pub fn into_parts(self) -> (Vec<(u64, U)>, Vec<Failure<E>>) {
        let succ = match self.successes {
            Successes::Ordered { values, holes } => {
                let mut idx = IndexWalk::new(&holes);
                values.into_iter().map(|v| (idx.next_index(), v)).collect()
            }
            Successes::Unordered(v) => v,
        };
        (succ, self.failures)
    }

    /// The values when the run completed and every item succeeded; otherwise a
    /// [`MapError`] listing every failure with its index.
    ///
    /// ```
    /// let values = herdsman::map(1..=3, |x: u32| Ok::<_, String>(x * 2)).collect().into_values();
    /// assert_eq!(values.unwrap(), vec![2, 4, 6]);
    /// ```
    pub fn into_values(self) -> Result<Vec<U>, MapError<E>> {
        if !self.is_ok() {
            return Err(MapError {
                status: self.summary.status.clone(),
                succeeded: self.summary.succeeded,
                failures: self.failures,
            });
        }
        Ok(match self.successes {
            Successes::Ordered { values, .. } => values,
            Successes::Unordered(v) => v.into_iter().map(|(_, v)| v).collect(),
        })
    }
}

/// Walks input indices in order, skipping the sorted `holes`.
struct IndexWalk<'a> {
    holes: &'a [u64],
    next: u64,
}

impl<'a> IndexWalk<'a> {
    fn new(holes: &'a [u64]) -> Self {
        IndexWalk { holes, next: 0 }
    }

    fn next_index(&mut self) -> u64 {
        while let Some((&h, rest)) = self.holes.split_first() {
            if h != self.next {
                break;
            }
            self.holes = rest;
            self.next += 1;
        }
        self.next += 1;
        self.next - 1
    }
}

/// The error of [`RunResult::into_values`]: the run did not complete, or some items failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapError<E> {
    /// How the run ended.
    pub status: RunStatus,
    /// How many items succeeded.
    pub succeeded: u64,
    /// Every failure with its index.
    pub failures: Vec<Failure<E>>,
}

impl<E: fmt::Display> fmt::Display for MapError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "run {} with {} item(s) failed and {} succeeded",
            self.status,
            self.failures.len(),
            self.succeeded
        )?;
        if self.status != RunStatus::Completed {
            write!(f, " (items after the stop were not pulled from the input)")?;
        }
        for fl in &self.failures {
            write!(
                f,
                "\n  item {}: {} (after {} attempt(s))",
                fl.index, fl.error, fl.attempts
            )?;
        }
        if !self.failures.is_empty() {
            write!(
                f,
                "\nfix the failing items or use RunResult::into_parts to keep the successes"
            )?;
        }
        Ok(())
    }
}

impl<E: fmt::Display + fmt::Debug> std::error::Error for MapError<E> {}

#[cfg(test)]
mod chain_tests {
    use std::error::Error;

    use super::*;

    /// One value of every error of this crate; the match makes a new variant fail to compile
    /// here until it is added.
    fn every_error() -> Vec<Box<dyn Error>> {
        let items: Vec<ItemError<String>> = vec![
            ItemError::Failed("HTTP 503".into()),
            ItemError::Panicked("index out of bounds".into()),
            ItemError::TimedOut,
            ItemError::NotRun,
            ItemError::Executor("the worker cannot start".into()),
        ];
        let mut all: Vec<Box<dyn Error>> = Vec::new();
        for e in items {
            match e {
                ItemError::Failed(_)
                | ItemError::Panicked(_)
                | ItemError::TimedOut
                | ItemError::NotRun
                | ItemError::Executor(_) => all.push(Box::new(e)),
            }
        }
        all.push(Box::new(MapError::<String> {
            status: RunStatus::Completed,
            succeeded: 1,
            failures: vec![Failure {
                index: 2,
                error: ItemError::Failed("HTTP 503".into()),
                attempts: 1,
                duration: Duration::ZERO,
            }],
        }));
        all.push(Box::new(crate::FatalExecutorError::configuration(
            "the worker cannot start",
        )));
        #[cfg(feature = "checkpoint")]
        {
            use crate::checkpoint::CheckpointError;
            for e in [
                CheckpointError::Io {
                    path: "ck.jsonl".into(),
                    source: std::io::Error::new(
                        std::io::ErrorKind::StorageFull,
                        "No space left on device",
                    ),
                },
                CheckpointError::Corrupt {
                    path: "ck.jsonl".into(),
                    line: 3,
                    message: "not JSON".into(),
                },
            ] {
                match e {
                    CheckpointError::Io { .. } | CheckpointError::Corrupt { .. } => {
                        all.push(Box::new(e));
                    }
                }
            }
        }
        all
    }

    #[test]
    fn no_message_repeats_its_cause() {
        for e in every_error() {
            let mut outer: &dyn Error = e.as_ref();
            while let Some(inner) = outer.source() {
                let (o, i) = (outer.to_string(), inner.to_string());
                assert!(!o.contains(&i), "`{o}` repeats its cause `{i}`");
                outer = inner;
            }
        }
    }
}
