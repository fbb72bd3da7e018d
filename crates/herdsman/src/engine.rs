//! The scheduler: admits items from the input within the window, takes rate-limit tokens,
//! submits attempts to a backend, keeps waiting retries in a timer queue, enforces item
//! timeouts and the deadline, counts errors, and hands every final outcome to a sink.
//!
//! It must never lose or duplicate an item (each admitted index gets exactly one final
//! outcome), never pull input after a stop, and never sleep longer than a short tick
//! without checking the stop token.

use std::collections::BinaryHeap;

use rustc_hash::{FxHashMap as HashMap, FxHashSet};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::executor::{AttemptId, AttemptOutcome, FatalExecutorError};
use crate::limiter::Limiter;
use crate::outcome::{ItemError, ItemOutcome, Progress, RunStatus, Summary};
use crate::retry::Retry;
use crate::stop::StopToken;

/// Longest the scheduler waits without re-checking stop, deadline and timers.
pub(crate) const TICK: Duration = Duration::from_millis(20);

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

    fn into_slots(self) -> Vec<Slot<U, E>> {
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

/// A batch given up by [`Backend::abandon_all`].
pub(crate) struct Abandoned {
    pub first: AttemptId,
    pub len: usize,
    /// False when the batch provably never started (still queued).
    pub started: bool,
}

/// What the scheduler drives: threads, an inline runner, or any [`Executor`](crate::Executor).
pub(crate) trait Backend<T, U, E>: Send {
    /// How many more batches may be submitted now.
    fn free_slots(&self) -> usize;
    /// Items per batch the backend would like next (1 = no batching).
    fn batch_size(&self) -> usize;
    /// Batches submitted and not yet reported or abandoned.
    fn in_flight(&self) -> usize;
    /// Whether reports carry measured durations.
    fn measures(&self) -> bool;
    /// An empty buffer for the next batch (backends may recycle them).
    fn buffer(&mut self, cap: usize) -> Vec<T> {
        Vec::with_capacity(cap)
    }
    /// Take back an emptied value buffer (backends may reuse it).
    fn recycle_values(&mut self, _v: Vec<U>) {}
    /// Write successful values straight into `out`; false if the backend cannot.
    fn set_direct(&mut self, _out: Arc<crate::direct::DirectOut<U>>) -> bool {
        false
    }
    fn submit(&mut self, first: AttemptId, items: Vec<T>) -> Result<(), FatalExecutorError>;
    fn poll(
        &mut self,
        timeout: Duration,
        out: &mut Vec<Report<U, E>>,
    ) -> Result<(), FatalExecutorError>;
    /// Give up on one single-item batch.
    fn abandon(&mut self, id: AttemptId);
    /// Give up on everything in flight; returns each batch and whether it had started.
    fn abandon_all(&mut self) -> Vec<Abandoned>;
    /// Items not yet started should be reported as not run.
    fn stop_queued(&mut self);
    fn shutdown(&mut self);
}

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

pub(crate) type ProgressFn = Box<dyn FnMut(&Progress) + Send>;
pub(crate) type OutcomeFn<U, E> = Box<dyn FnMut(&ItemOutcome<U, E>) + Send>;

/// Every policy of a run.
pub(crate) struct Policies<T, U, E> {
    pub window: Option<usize>,
    pub ordered: bool,
    pub limiter: Option<Limiter>,
    pub retry: Option<Retry<E>>,
    pub cloner: Option<fn(&T) -> T>,
    pub deadline: Option<Duration>,
    pub item_timeout: Option<Duration>,
    pub max_errors: Option<u64>,
    pub stop: Option<StopToken>,
    pub total_hint: Option<u64>,
    pub on_progress: Option<ProgressFn>,
    pub on_outcome: Option<OutcomeFn<U, E>>,
}

impl<T, U, E> Default for Policies<T, U, E> {
    fn default() -> Self {
        Policies {
            window: None,
            ordered: true,
            limiter: None,
            retry: None,
            cloner: None,
            deadline: None,
            item_timeout: None,
            max_errors: None,
            stop: None,
            total_hint: None,
            on_progress: None,
            on_outcome: None,
        }
    }
}

/// Where final outcomes go.
pub(crate) trait Sink<U, E> {
    /// Take one final outcome; false means the consumer is gone and the run should stop.
    fn accept(&mut self, o: ItemOutcome<U, E>) -> bool;
    /// Take the values of consecutive successful items starting at `first`.
    fn accept_values(
        &mut self,
        first: u64,
        values: Vec<U>,
        attempts: u32,
        per_item: Duration,
    ) -> bool {
        let mut alive = true;
        for (k, v) in values.into_iter().enumerate() {
            alive &= self.accept(ItemOutcome {
                index: first + k as u64,
                result: Ok(v),
                attempts,
                duration: per_item,
            });
        }
        alive
    }
    /// Items no longer counted against the window (handed to the consumer).
    fn delivered(&self) -> u64;
    /// `n` consecutive successes from `first` whose values are in the direct output.
    fn accept_written(&mut self, _first: u64, _n: usize) -> bool {
        debug_assert!(false, "this sink has no direct output");
        true
    }
    /// An emptied value buffer the sink no longer needs, if any.
    fn take_spare(&mut self) -> Option<Vec<U>> {
        None
    }
    /// The run is over.
    fn finish(&mut self, _summary: &Summary) {}
}

struct Pending<T, E> {
    due: Instant,
    /// The attempt to run next.
    id: AttemptId,
    item: T,
    last_error: ItemError<E>,
    spent: Duration,
}

impl<T, E> PartialEq for Pending<T, E> {
    fn eq(&self, o: &Self) -> bool {
        self.due == o.due && self.id == o.id
    }
}
impl<T, E> Eq for Pending<T, E> {}
impl<T, E> PartialOrd for Pending<T, E> {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl<T, E> Ord for Pending<T, E> {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        // Reversed: BinaryHeap is a max-heap and the earliest due time must come first.
        (o.due, o.id).cmp(&(self.due, self.id))
    }
}

pub(crate) struct Engine<'s, I: Iterator, U, E> {
    input: Option<I>,
    backend: Box<dyn Backend<I::Item, U, E>>,
    p: Policies<I::Item, U, E>,
    sink: &'s mut dyn Sink<U, E>,
    window: usize,
    internal_stop: Option<Arc<AtomicBool>>,
    start: Instant,
    deadline_at: Option<Instant>,
    next_index: u64,
    clones: IndexSlab<I::Item>,
    spent: HashMap<u64, Duration>,
    retry_q: BinaryHeap<Pending<I::Item, E>>,
    times: HashMap<AttemptId, Instant>,
    track_times: bool,
    progress: Progress,
    status: Option<RunStatus>,
    deadline_hit: bool,
    rng: fastrand::Rng,
    token_wait: Option<Duration>,
    window_blocked: bool,
}

impl<'s, I, U, E> Engine<'s, I, U, E>
where
    I: Iterator,
{
    pub(crate) fn new(
        input: I,
        backend: Box<dyn Backend<I::Item, U, E>>,
        p: Policies<I::Item, U, E>,
        window: usize,
        sink: &'s mut dyn Sink<U, E>,
        internal_stop: Option<Arc<AtomicBool>>,
    ) -> Self {
        let start = Instant::now();
        let total = p.total_hint.or_else(|| match input.size_hint() {
            (lo, Some(hi)) if lo == hi => Some(lo as u64),
            _ => None,
        });
        let track_times = p.item_timeout.is_some() || !backend.measures();
        Engine {
            deadline_at: p.deadline.map(|d| start + d),
            input: Some(input),
            backend,
            sink,
            window: window.max(1),
            internal_stop,
            start,
            next_index: 0,
            clones: IndexSlab::default(),
            spent: HashMap::default(),
            retry_q: BinaryHeap::new(),
            times: HashMap::default(),
            track_times,
            progress: Progress {
                total,
                ..Progress::default()
            },
            status: None,
            deadline_hit: false,
            rng: fastrand::Rng::new(),
            token_wait: None,
            window_blocked: false,
            p,
        }
    }

    /// Drive the run to its end and return the summary.
    pub(crate) fn run(mut self) -> Summary {
        let mut reports = Vec::new();
        loop {
            self.check_stops();
            self.token_wait = None;
            self.window_blocked = false;
            if self.status.is_none() {
                if let Err(e) = self.submit_due_retries().and_then(|_| self.admit()) {
                    self.fatal(e);
                    break;
                }
            }
            if self.is_done() {
                break;
            }
            let timeout = self.poll_timeout();
            if let Err(e) = self.backend.poll(timeout, &mut reports) {
                self.fatal(e);
                break;
            }
            // One clock reading per batch of reports (they arrived together).
            let now = Instant::now();
            for r in reports.drain(..) {
                self.handle_report(r, now);
            }
            self.check_item_timeouts();
        }
        self.backend.shutdown();
        let summary = Summary {
            status: self.status.clone().unwrap_or(RunStatus::Completed),
            succeeded: self.progress.succeeded,
            failed: self.progress.failed,
            not_run: self.progress.not_run,
            retries: self.progress.retries,
            admitted: self.next_index,
            elapsed: self.start.elapsed(),
        };
        self.sink.finish(&summary);
        summary
    }

    fn is_done(&self) -> bool {
        self.input.is_none() && self.backend.in_flight() == 0 && self.retry_q.is_empty()
    }

    fn check_stops(&mut self) {
        let user = self.p.stop.as_ref().is_some_and(|s| s.is_stopped());
        let internal = self
            .internal_stop
            .as_ref()
            .is_some_and(|s| s.load(Ordering::Relaxed));
        if user || internal {
            self.begin_stop(RunStatus::Cancelled);
        }
        if !self.deadline_hit && self.deadline_at.is_some_and(|d| Instant::now() >= d) {
            self.deadline_hit = true;
            // Abandon before stopping: a backend that cancels in-flight work on stop (async)
            // would otherwise report it as not run rather than timed out.
            let abandoned = self.backend.abandon_all();
            self.begin_stop(RunStatus::TimedOut);
            let now = Instant::now();
            for a in abandoned {
                for k in 0..a.len as u64 {
                    let id = AttemptId {
                        index: a.first.index + k,
                        attempt: a.first.attempt,
                    };
                    let dur = self
                        .times
                        .remove(&id)
                        .map(|s| now.saturating_duration_since(s))
                        .unwrap_or_default();
                    if a.started {
                        self.finish(id.index, Err(ItemError::TimedOut), id.attempt, dur);
                    } else {
                        self.finish(id.index, Err(ItemError::NotRun), id.attempt - 1, dur);
                    }
                }
            }
        }
    }

    /// Stop admitting. The first reason wins.
    fn begin_stop(&mut self, status: RunStatus) {
        if self.status.is_some() {
            return;
        }
        self.status = Some(status);
        self.input = None;
        self.backend.stop_queued();
        while let Some(p) = self.retry_q.pop() {
            self.finish(p.id.index, Err(p.last_error), p.id.attempt - 1, p.spent);
        }
    }

    fn fatal(&mut self, e: FatalExecutorError) {
        self.begin_stop(RunStatus::ExecutorFailed(e.message.clone()));
        self.status = Some(RunStatus::ExecutorFailed(e.message.clone()));
        for a in self.backend.abandon_all() {
            for k in 0..a.len as u64 {
                self.times.remove(&AttemptId {
                    index: a.first.index + k,
                    attempt: a.first.attempt,
                });
                self.finish(
                    a.first.index + k,
                    Err(ItemError::Executor(e.message.clone())),
                    a.first.attempt,
                    Duration::ZERO,
                );
            }
        }
    }

    fn take_token(&mut self) -> bool {
        match &self.p.limiter {
            None => true,
            Some(l) => match l.try_acquire() {
                Ok(()) => true,
                Err(w) => {
                    self.token_wait = Some(w);
                    false
                }
            },
        }
    }

    fn submit_due_retries(&mut self) -> Result<(), FatalExecutorError> {
        let now = Instant::now();
        while let Some(top) = self.retry_q.peek() {
            if top.due > now || self.backend.free_slots() == 0 || self.status.is_some() {
                break;
            }
            if !self.take_token() {
                break;
            }
            let Some(p) = self.retry_q.pop() else { break };
            self.spent.insert(p.id.index, p.spent);
            if self.track_times {
                self.times.insert(p.id, Instant::now());
            }
            self.progress.retries += 1;
            self.backend.submit(p.id, vec![p.item])?;
        }
        Ok(())
    }

    fn admit(&mut self) -> Result<(), FatalExecutorError> {
        // One clock reading for everything admitted in this call: items are handed out
        // microseconds apart, and a clock read per item is a measurable share of the
        // per-item cost with one-item batches.
        let mut admitted_at: Option<Instant> = None;
        while self.input.is_some() && self.backend.free_slots() > 0 {
            let used = self.next_index - self.sink.delivered();
            if used >= self.window as u64 {
                self.window_blocked = true;
                break;
            }
            let room = (self.window as u64 - used) as usize;
            let mut n = self.backend.batch_size().clamp(1, room);
            if self.p.limiter.is_some() {
                n = 1;
                if !self.take_token() {
                    break;
                }
            }
            let first = self.next_index;
            let mut items = self.backend.buffer(n);
            if let Some(input) = self.input.as_mut() {
                // `extend` over `take` is specialized for many iterators (ranges, slices).
                items.extend(input.by_ref().take(n));
                if items.len() < n {
                    self.input = None;
                }
            }
            if items.is_empty() {
                break;
            }
            let len = items.len() as u64;
            if let Some(c) = self.p.cloner {
                if self.p.retry.as_ref().is_some_and(|r| r.attempts > 1) {
                    for (k, it) in items.iter().enumerate() {
                        self.clones.push(first + k as u64, c(it));
                    }
                }
            }
            if self.track_times {
                let now = *admitted_at.get_or_insert_with(Instant::now);
                for k in 0..len {
                    self.times.insert(
                        AttemptId {
                            index: first + k,
                            attempt: 1,
                        },
                        now,
                    );
                }
            }
            self.next_index += len;
            self.backend.submit(
                AttemptId {
                    index: first,
                    attempt: 1,
                },
                items,
            )?;
        }
        Ok(())
    }

    fn poll_timeout(&self) -> Duration {
        let now = Instant::now();
        let mut t = TICK;
        if self.window_blocked {
            t = t.min(Duration::from_millis(2));
        }
        if let Some(w) = self.token_wait {
            t = t.min(w);
        }
        if let Some(top) = self.retry_q.peek() {
            t = t.min(top.due.saturating_duration_since(now));
        }
        if let Some(d) = self.deadline_at {
            if !self.deadline_hit {
                t = t.min(d.saturating_duration_since(now));
            }
        }
        if let Some(it) = self.p.item_timeout {
            for s in self.times.values() {
                t = t.min((*s + it).saturating_duration_since(now));
            }
        }
        t
    }

    fn handle_report(&mut self, r: Report<U, E>, now: Instant) {
        if let Outcomes::Written(n) = r.outcomes {
            let first = r.first.index;
            if !self.clones.is_empty() || !self.spent.is_empty() {
                for k in 0..n as u64 {
                    self.clones.remove(first + k);
                    self.spent.remove(&(first + k));
                }
            }
            if self.track_times {
                for k in 0..n as u64 {
                    self.times.remove(&AttemptId {
                        index: first + k,
                        attempt: r.first.attempt,
                    });
                }
            }
            self.count_successes(n as u64);
            if !self.sink.accept_written(first, n) {
                self.begin_stop(RunStatus::Cancelled);
            }
            return;
        }
        let bulk = self.p.on_outcome.is_none() && !self.track_times && self.spent.is_empty();
        let r = match r.outcomes {
            Outcomes::AllOk(values) if bulk => {
                let n = values.len() as u64;
                let first = r.first.index;
                if !self.clones.is_empty() {
                    for k in 0..n {
                        self.clones.remove(first + k);
                    }
                }
                self.count_successes(n);
                let per_item = r.per_item.unwrap_or_default();
                if !self
                    .sink
                    .accept_values(first, values, r.first.attempt, per_item)
                {
                    self.begin_stop(RunStatus::Cancelled);
                }
                while let Some(v) = self.sink.take_spare() {
                    self.backend.recycle_values(v);
                }
                return;
            }
            outcomes => Report {
                first: r.first,
                outcomes: Outcomes::Mixed(outcomes.into_slots()),
                per_item: r.per_item,
            },
        };
        let Outcomes::Mixed(slots) = r.outcomes else {
            unreachable!("converted above")
        };
        for (k, slot) in slots.into_iter().enumerate() {
            let id = r.first.nth(k);
            let mut dur = r.per_item.unwrap_or_default();
            if self.track_times {
                if let Some(s) = self.times.remove(&id) {
                    if r.per_item.is_none() {
                        dur = now.saturating_duration_since(s);
                    }
                }
            }
            match slot {
                Slot::Done(AttemptOutcome::Success(v)) => {
                    self.finish(id.index, Ok(v), id.attempt, dur);
                }
                Slot::Done(AttemptOutcome::Failure(e)) => {
                    self.failed(id, ItemError::Failed(e), dur);
                }
                Slot::Done(AttemptOutcome::Panicked(m)) => {
                    self.failed(id, ItemError::Panicked(m), dur);
                }
                Slot::TimedOut => self.failed(id, ItemError::TimedOut, dur),
                Slot::NotRun => {
                    self.finish(id.index, Err(ItemError::NotRun), id.attempt - 1, dur);
                }
            }
        }
    }

    /// Count `n` successes handled in bulk (progress still fires once per item).
    fn count_successes(&mut self, n: u64) {
        if let Some(cb) = self.p.on_progress.as_mut() {
            for _ in 0..n {
                self.progress.succeeded += 1;
                self.progress.elapsed = self.start.elapsed();
                cb(&self.progress);
            }
        } else {
            self.progress.succeeded += n;
        }
    }

    fn check_item_timeouts(&mut self) {
        let Some(limit) = self.p.item_timeout else {
            return;
        };
        let now = Instant::now();
        let expired: Vec<(AttemptId, Duration)> = self
            .times
            .iter()
            .filter_map(|(id, s)| {
                let el = now.saturating_duration_since(*s);
                (el >= limit).then_some((*id, el))
            })
            .collect();
        for (id, el) in expired {
            self.times.remove(&id);
            self.backend.abandon(id);
            self.failed(id, ItemError::TimedOut, el);
        }
    }

    /// An attempt failed: schedule a retry or record the final failure.
    fn failed(&mut self, id: AttemptId, err: ItemError<E>, dur: Duration) {
        let mut delay = None;
        if let Some(r) = &self.p.retry {
            let server_wait = err.user_error().and_then(|e| r.server_wait(e));
            if let (Some(w), Some(l)) = (server_wait, &self.p.limiter) {
                l.pause(w);
            }
            let retryable = match &err {
                ItemError::Failed(e) => r.is_retryable(e),
                ItemError::TimedOut => r.retry_timeouts,
                _ => false,
            };
            if retryable && id.attempt < r.attempts && self.status.is_none() {
                delay =
                    Some(server_wait.unwrap_or_else(|| r.delay_after(id.attempt, self.rng.f64())));
            }
        }
        let prev = self.spent.remove(&id.index).unwrap_or_default();
        if let Some(delay) = delay {
            let copy = match (self.clones.get(id.index), self.p.cloner) {
                (Some(stored), Some(c)) => Some(c(stored)),
                _ => None,
            };
            if let Some(item) = copy {
                self.retry_q.push(Pending {
                    due: Instant::now() + delay,
                    id: AttemptId {
                        index: id.index,
                        attempt: id.attempt + 1,
                    },
                    item,
                    last_error: err,
                    spent: prev + dur,
                });
                return;
            }
        }
        self.finish(id.index, Err(err), id.attempt, prev + dur);
    }

    fn finish(
        &mut self,
        index: u64,
        result: Result<U, ItemError<E>>,
        attempts: u32,
        dur: Duration,
    ) {
        if !self.clones.is_empty() {
            self.clones.remove(index);
        }
        let dur = if self.spent.is_empty() {
            dur
        } else {
            dur + self.spent.remove(&index).unwrap_or_default()
        };
        let mut abort = false;
        match &result {
            Ok(_) => self.progress.succeeded += 1,
            Err(ItemError::NotRun) => self.progress.not_run += 1,
            Err(_) => {
                self.progress.failed += 1;
                abort = self.p.max_errors.is_some_and(|m| self.progress.failed >= m);
            }
        }
        let o = ItemOutcome {
            index,
            result,
            attempts,
            duration: dur,
        };
        if let Some(cb) = self.p.on_outcome.as_mut() {
            cb(&o);
        }
        if let Some(cb) = self.p.on_progress.as_mut() {
            self.progress.elapsed = self.start.elapsed();
            cb(&self.progress);
        }
        let alive = self.sink.accept(o);
        if abort {
            self.begin_stop(RunStatus::Aborted);
        }
        if !alive {
            self.begin_stop(RunStatus::Cancelled);
        }
    }
}

/// Adapts any [`Executor`](crate::Executor) to the scheduler.
pub(crate) struct ExecutorBackend<X: crate::Executor<T>, T> {
    exec: X,
    in_flight: FxHashSet<AttemptId>,
    /// Given back by the executor's `stop_queued`, reported as not run by the next poll.
    not_run: Vec<AttemptId>,
    buf: crate::executor::Finished<X::Output, X::Error>,
    _t: std::marker::PhantomData<fn(T)>,
}

impl<X: crate::Executor<T>, T> ExecutorBackend<X, T> {
    pub(crate) fn new(exec: X) -> Self {
        ExecutorBackend {
            exec,
            in_flight: Default::default(),
            not_run: Vec::new(),
            buf: Vec::new(),
            _t: std::marker::PhantomData,
        }
    }
}

impl<X, T> Backend<T, X::Output, X::Error> for ExecutorBackend<X, T>
where
    X: crate::Executor<T>,
{
    fn free_slots(&self) -> usize {
        self.exec
            .capacity()
            .max(1)
            .saturating_sub(self.in_flight.len())
    }
    fn batch_size(&self) -> usize {
        1
    }
    fn in_flight(&self) -> usize {
        self.in_flight.len() + self.not_run.len()
    }
    fn measures(&self) -> bool {
        false
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
        let timeout = if self.not_run.is_empty() {
            timeout
        } else {
            Duration::ZERO
        };
        for first in self.not_run.drain(..) {
            out.push(Report {
                first,
                outcomes: Outcomes::Mixed(vec![Slot::NotRun]),
                per_item: None,
            });
        }
        self.exec.poll(timeout, &mut self.buf)?;
        for (id, o) in self.buf.drain(..) {
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
                if first.attempt == id.attempt && first.index + slots.len() as u64 == id.index {
                    slots.push(Slot::Done(o));
                    continue;
                }
            }
            out.push(Report {
                first: id,
                outcomes: Outcomes::Mixed(vec![Slot::Done(o)]),
                per_item: None,
            });
        }
        Ok(())
    }
    fn abandon(&mut self, id: AttemptId) {
        if self.in_flight.remove(&id) {
            self.exec.abandon(id);
        }
    }
    fn abandon_all(&mut self) -> Vec<Abandoned> {
        let mut ids: Vec<AttemptId> = self.in_flight.drain().collect();
        ids.sort();
        for id in &ids {
            self.exec.abandon(*id);
        }
        let mut given_up: Vec<Abandoned> = ids
            .into_iter()
            .map(|first| Abandoned {
                first,
                len: 1,
                started: true,
            })
            .collect();
        given_up.extend(self.not_run.drain(..).map(|first| Abandoned {
            first,
            len: 1,
            started: false,
        }));
        given_up
    }
    fn stop_queued(&mut self) {
        // Reported as not run by the next poll (until then they still count as in flight).
        for id in self.exec.stop_queued() {
            if self.in_flight.remove(&id) {
                self.not_run.push(id);
            }
        }
    }
    fn shutdown(&mut self) {
        self.exec.shutdown();
    }
}

/// Values keyed by consecutive indices, pushed in index order and removed in any order.
pub(crate) struct IndexSlab<T> {
    base: u64,
    slots: std::collections::VecDeque<Option<T>>,
    live: usize,
}

impl<T> Default for IndexSlab<T> {
    fn default() -> Self {
        IndexSlab {
            base: 0,
            slots: Default::default(),
            live: 0,
        }
    }
}

impl<T> IndexSlab<T> {
    pub(crate) fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Store the value of `index`, which must follow every index pushed before.
    pub(crate) fn push(&mut self, index: u64, v: T) {
        if self.slots.is_empty() {
            self.base = index;
        }
        while self.base + (self.slots.len() as u64) < index {
            self.slots.push_back(None);
        }
        self.slots.push_back(Some(v));
        self.live += 1;
    }

    pub(crate) fn get(&self, index: u64) -> Option<&T> {
        let pos = index.checked_sub(self.base)?;
        self.slots.get(pos as usize)?.as_ref()
    }

    pub(crate) fn remove(&mut self, index: u64) -> Option<T> {
        let pos = index.checked_sub(self.base)? as usize;
        let v = self.slots.get_mut(pos)?.take();
        if v.is_some() {
            self.live -= 1;
        }
        while matches!(self.slots.front(), Some(None)) {
            self.slots.pop_front();
            self.base += 1;
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::IndexSlab;

    #[test]
    fn index_slab_keeps_values_until_removed() {
        let mut s = IndexSlab::default();
        for i in 0..5u64 {
            s.push(i, i * 10);
        }
        assert_eq!(s.remove(2), Some(20));
        assert_eq!(s.remove(2), None);
        assert_eq!(s.remove(0), Some(0));
        assert_eq!(s.get(1), Some(&10));
        assert_eq!(s.remove(1), Some(10));
        assert_eq!(s.get(3), Some(&30));
        s.push(7, 70);
        assert_eq!(s.get(5), None);
        assert_eq!(s.get(7), Some(&70));
        for i in [3, 4, 7] {
            assert!(s.remove(i).is_some());
        }
        assert!(s.is_empty());
    }
}
