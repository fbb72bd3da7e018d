//! The protocol between the scheduler and what runs attempts: batches go in through
//! [`Backend::submit`], their outcomes come back as [`Report`]s from [`Backend::poll`], and
//! the scheduler may give batches up ([`Backend::abandon`]) or stop the backend.
//!
//! A backend must report every submitted item exactly once (a [`Report`] slot, or an
//! [`Abandoned`] range), unless the scheduler gave it up first.

use rustc_hash::FxHashSet;
use std::sync::Arc;
use std::time::Duration;

use crate::executor::{AttemptId, AttemptOutcome, FatalExecutorError};

/// How one item of a submitted batch ended, as seen by a backend.
pub(crate) enum Slot<U, E> {
    Done(AttemptOutcome<U, E>),
    NotRun,
    TimedOut,
}

/// The outcomes of a batch: entry `k` belongs to index `first.index + k`.
pub(crate) enum Outcomes<U, E> {
    /// Every item succeeded (the common case, handled in bulk).
    AllOk(Vec<U>),
    Mixed(Vec<Slot<U, E>>),
    /// Every item succeeded and its value is already in the run's direct output.
    Written(usize),
}

impl<U, E> Outcomes<U, E> {
    pub(crate) fn len(&self) -> usize {
        match self {
            Outcomes::AllOk(v) => v.len(),
            Outcomes::Mixed(v) => v.len(),
            Outcomes::Written(n) => *n,
        }
    }

    pub(crate) fn into_slots(self) -> Vec<Slot<U, E>> {
        match self {
            Outcomes::AllOk(v) => v
                .into_iter()
                .map(|x| Slot::Done(AttemptOutcome::Success(x)))
                .collect(),
            Outcomes::Mixed(v) => v,
            Outcomes::Written(_) => unreachable!("written outcomes are handled in bulk"),
        }
    }
}

/// The outcomes of one submitted batch.
pub(crate) struct Report<U, E> {
    pub first: AttemptId,
    pub outcomes: Outcomes<U, E>,
    /// Measured run time per item, when the backend measures it.
    pub per_item: Option<Duration>,
}

/// A batch given up by [`Backend::abandon`].
pub(crate) struct Abandoned {
    pub first: AttemptId,
    pub len: usize,
    /// False when the batch provably never started (still queued).
    pub started: bool,
}

/// What a backend can take now: read on every turn of the scheduler's loop.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Room {
    /// How many more batches may be submitted now.
    pub free: usize,
    /// Items per batch the backend would like next (1 = no batching).
    pub batch: usize,
    /// Batches submitted and not yet reported or abandoned.
    pub in_flight: usize,
    /// How many batches beyond the free slots the input may be pulled ahead (items pulled
    /// and not submitted when a run stops are reported not run, like queued ones).
    pub read_ahead: usize,
    /// Whether reports carry measured durations.
    pub measures: bool,
}

/// What to give up in [`Backend::abandon`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum GiveUp {
    /// One single-item batch (its item timed out); nothing is returned for it.
    One(AttemptId),
    /// Everything in flight (deadline, fatal error); each batch is returned with whether
    /// it had started.
    All,
}

/// How far a backend is told to stop in [`Backend::stop`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Halt {
    /// The run stops: items not yet started are reported not run; running ones finish.
    Queued,
    /// The run is over: release threads and processes.
    Shutdown,
}

/// What the scheduler drives: threads, an inline runner, async tasks, or any
/// [`Executor`](crate::Executor).
pub(crate) trait Backend<T, U, E>: Send {
    /// What the backend can take now.
    fn room(&self) -> Room;
    /// Run the items of one batch (consecutive indices from `first`, one attempt number).
    fn submit(&mut self, first: AttemptId, items: Vec<T>) -> Result<(), FatalExecutorError>;
    /// Wait up to `timeout` for outcomes and append them to `out`.
    fn poll(
        &mut self,
        timeout: Duration,
        out: &mut Vec<Report<U, E>>,
    ) -> Result<(), FatalExecutorError>;
    /// Give up on work in flight; never report it afterwards.
    fn abandon(&mut self, what: GiveUp) -> Vec<Abandoned>;
    /// Stop queued work, or shut down.
    fn stop(&mut self, halt: Halt);
    /// Write successful values straight into `out`; false if the backend cannot.
    fn set_direct(&mut self, _out: Arc<crate::direct::DirectOut<U>>) -> bool {
        false
    }
    /// Trade buffers: take back an emptied value buffer (if any) and hand out an emptied
    /// item buffer (if any) for the input to fill again. Saves allocating and page-faulting
    /// fresh buffers per batch.
    fn recycle(&mut self, _values: Option<Vec<U>>) -> Option<Vec<T>> {
        None
    }
}

/// Adapts any [`Executor`](crate::Executor) to the scheduler.
pub(crate) struct ExecutorBackend<X: crate::Executor<T>, T> {
    exec: X,
    in_flight: FxHashSet<AttemptId>,
    buf: crate::executor::Finished<X::Output, X::Error>,
    /// Attempts given back by `stop_queued`, reported as not run by the next `poll`.
    not_run: Vec<AttemptId>,
    /// Submit no more than the executor runs at once (each attempt starts with its token).
    rate_limited: bool,
    /// For each outcome of `buf`, how many consecutive attempts start there (the room its
    /// report needs, so that a long run of in-order outcomes is one allocation).
    runs: Vec<u32>,
    _t: std::marker::PhantomData<fn(T)>,
}

impl<X: crate::Executor<T>, T> ExecutorBackend<X, T> {
    pub(crate) fn new(exec: X, rate_limited: bool) -> Self {
        ExecutorBackend {
            exec,
            in_flight: Default::default(),
            buf: Vec::new(),
            not_run: Vec::new(),
            rate_limited,
            runs: Vec::new(),
            _t: std::marker::PhantomData,
        }
    }
}

impl<X, T> Backend<T, X::Output, X::Error> for ExecutorBackend<X, T>
where
    X: crate::Executor<T>,
{
    fn room(&self) -> Room {
        let cap = if self.rate_limited {
            self.exec.concurrency().min(self.exec.capacity())
        } else {
            self.exec.capacity()
        };
        Room {
            free: cap.max(1).saturating_sub(self.in_flight.len()),
            batch: 1,
            in_flight: self.in_flight.len() + self.not_run.len(),
            read_ahead: 0,
            measures: false,
        }
    }
    fn submit(&mut self, first: AttemptId, items: Vec<T>) -> Result<(), FatalExecutorError> {
        for (k, item) in items.into_iter().enumerate() {
            let id = first.nth(k);
            self.in_flight.insert(id);
            self.exec.submit(id, item)?;
        }
        Ok(())
    }
    fn poll(
        &mut self,
        timeout: Duration,
        out: &mut Vec<Report<X::Output, X::Error>>,
    ) -> Result<(), FatalExecutorError> {
        if !self.not_run.is_empty() {
            for id in self.not_run.drain(..) {
                out.push(Report {
                    first: id,
                    outcomes: Outcomes::Mixed(vec![Slot::NotRun]),
                    per_item: None,
                });
            }
            // Do not wait: these are reported now.
            self.exec.poll(Duration::ZERO, &mut self.buf)?;
        } else {
            self.exec.poll(timeout, &mut self.buf)?;
        }
        // How many consecutive attempts follow each outcome, counted from the end.
        self.runs.clear();
        self.runs.resize(self.buf.len(), 1);
        for k in (0..self.buf.len().saturating_sub(1)).rev() {
            let (a, b) = (self.buf[k].0, self.buf[k + 1].0);
            if a.attempt == b.attempt && a.index + 1 == b.index {
                self.runs[k] = self.runs[k + 1].saturating_add(1);
            }
        }
        for (k, (id, o)) in self.buf.drain(..).enumerate() {
            if !self.in_flight.remove(&id) {
                continue;
            }
            // Outcomes of consecutive items (the usual case with in-order workers) share
            // one report, which saves an allocation per item.
            if let Some(Report {
                first,
                outcomes: Outcomes::Mixed(slots),
                per_item: None,
            }) = out.last_mut()
            {
                if first.attempt == id.attempt
                    && first.index + slots.len() as u64 == id.index
                    && !matches!(slots.last(), Some(Slot::NotRun))
                {
                    slots.push(Slot::Done(o));
                    continue;
                }
            }
            let mut slots = Vec::with_capacity(self.runs[k] as usize);
            slots.push(Slot::Done(o));
            out.push(Report {
                first: id,
                outcomes: Outcomes::Mixed(slots),
                per_item: None,
            });
        }
        Ok(())
    }
    fn abandon(&mut self, what: GiveUp) -> Vec<Abandoned> {
        let GiveUp::One(id) = what else {
            return self.abandon_all();
        };
        if self.in_flight.remove(&id) {
            self.exec.abandon(id);
        }
        Vec::new()
    }
    fn stop(&mut self, halt: Halt) {
        match halt {
            Halt::Queued => self.stop_queued(),
            Halt::Shutdown => self.exec.shutdown(),
        }
    }
}

impl<X, T> ExecutorBackend<X, T>
where
    X: crate::Executor<T>,
{
    fn abandon_all(&mut self) -> Vec<Abandoned> {
        let mut ids: Vec<AttemptId> = self.in_flight.drain().collect();
        ids.sort();
        for id in &ids {
            self.exec.abandon(*id);
        }
        let mut out: Vec<Abandoned> = ids
            .into_iter()
            .map(|first| Abandoned {
                first,
                len: 1,
                started: true,
            })
            .collect();
        out.extend(self.not_run.drain(..).map(|first| Abandoned {
            first,
            len: 1,
            started: false,
        }));
        out.sort_by_key(|a| a.first);
        out
    }
    fn stop_queued(&mut self) {
        let mut back = Vec::new();
        self.exec.stop_queued(&mut back);
        back.sort();
        for id in back {
            // Only attempts the engine still waits for, each once.
            if self.in_flight.remove(&id) {
                self.not_run.push(id);
            }
        }
    }
}
