//! The scheduler: admits items from the input within the window, takes rate-limit tokens,
//! submits attempts to a backend, keeps waiting retries in a timer queue, enforces item
//! timeouts and the deadline, counts errors, and hands every final outcome to a sink.
//!
//! It must never lose or duplicate an item (each admitted index gets exactly one final
//! outcome), never pull input after a stop, and never sleep longer than a short tick
//! without checking the stop token. The input is pulled on another thread (see `feed`), so
//! a slow `next()` cannot hold the scheduler. Time limits given by the user may be as large as
//! `Duration::MAX`: every `time + Duration` here is checked, and an overflow means "never".
//!
//! Every clock read goes through the run's [`Clock`] (durations since its origin), so
//! retries, item timeouts and the deadline can be tested on a [`ManualClock`](crate::ManualClock).
//!
//! Files: this loop (`mod.rs`), the backend protocol (`backend.rs`), the retry queue
//! (`retry_queue.rs`), the index slab for retry copies (`slab.rs`), panic capture (`panic.rs`).

mod backend;
mod panic;
mod retry_queue;
mod slab;

pub(crate) use backend::{
    Abandoned, Backend, ExecutorBackend, GiveUp, Halt, Outcomes, Report, Room, Slot,
};
pub(crate) use panic::panic_message;
pub(crate) use panic::run_one;
use retry_queue::{Pending, RetryQueue};
use slab::IndexSlab;

use rustc_hash::FxHashMap as HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::executor::{AttemptId, AttemptOutcome, FatalExecutorError};
use crate::feed::Feed;
use crate::limiter::Limiter;
use crate::limiter::{Clock, SystemClock};
use crate::outcome::{ItemError, ItemOutcome, Progress, RunStatus, Summary};
use crate::retry::Retry;
use crate::stop::StopToken;

/// Longest the scheduler waits without re-checking stop, deadline and timers.
pub(crate) const TICK: Duration = Duration::from_millis(20);

/// Longest the scheduler waits for the input while attempts are running (their reports
/// wake it, new input does not). The wait starts short and doubles while the input is slow.
const INPUT_WAIT: Duration = Duration::from_millis(5);
const FIRST_INPUT_WAIT: Duration = Duration::from_micros(50);

/// Fewest items a backend that queues batches may have pulled ahead.
const MIN_READ_AHEAD: usize = 1024;

/// `at + d`, or `None` ("never") when that is beyond what a time can hold.
pub(crate) fn later(at: Duration, d: Duration) -> Option<Duration> {
    at.checked_add(d)
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
    /// Where every time is read (the real clock unless a test sets another).
    pub clock: Arc<dyn Clock>,
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
            clock: Arc::new(SystemClock::default()),
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
    /// Waits up to `timeout` until [`delivered`](Sink::delivered) reaches `at_least`, and
    /// says whether it could wait at all; a sink that cannot be woken by its consumer says
    /// false at once, and the engine polls its backend instead.
    fn wait_delivered(&self, _at_least: u64, _timeout: Duration) -> bool {
        false
    }
    /// `n` consecutive successes from `first` whose values are in the direct output.
    fn accept_written(&mut self, _first: u64, _n: usize) -> bool {
        debug_assert!(false, "this sink has no direct output");
        true
    }
    /// An emptied value buffer the sink no longer needs, if any.
    fn take_spare(&mut self) -> Option<Vec<U>> {
        None
    }
    /// The engine is about to wait: hand over what was accepted since the last flush (a
    /// sink may collect outcomes to hand them over in one piece per batch).
    fn flush(&mut self) {}
    /// The run is over.
    fn finish(&mut self, _summary: &Summary) {}
}

pub(crate) struct Engine<'s, T, U, E> {
    /// `None` once the input has ended or the run stops.
    input: Option<Feed<T>>,
    backend: Box<dyn Backend<T, U, E>>,
    p: Policies<T, U, E>,
    sink: &'s mut dyn Sink<U, E>,
    window: usize,
    internal_stop: Option<Arc<AtomicBool>>,
    clock: Arc<dyn Clock>,
    /// When the run started, on `clock`.
    start: Duration,
    deadline_at: Option<Duration>,
    next_index: u64,
    clones: IndexSlab<T>,
    spent: HashMap<u64, Duration>,
    retry_q: RetryQueue<T, E>,
    /// When each attempt in flight started, on `clock` (kept only when needed).
    times: HashMap<AttemptId, Duration>,
    track_times: bool,
    progress: Progress,
    status: Option<RunStatus>,
    deadline_hit: bool,
    rng: fastrand::Rng,
    token_wait: Option<Duration>,
    window_blocked: bool,
    /// Free slots and nothing pulled yet: how long to wait for the input now.
    starving: Option<Duration>,
    input_wait: Duration,
}

impl<'s, T, U, E> Engine<'s, T, U, E> {
    /// `size_hint` is the input's, taken before it moved to the puller.
    pub(crate) fn new(
        input: Feed<T>,
        size_hint: (usize, Option<usize>),
        backend: Box<dyn Backend<T, U, E>>,
        p: Policies<T, U, E>,
        window: usize,
        sink: &'s mut dyn Sink<U, E>,
        internal_stop: Option<Arc<AtomicBool>>,
    ) -> Self {
        let clock = Arc::clone(&p.clock);
        let start = clock.now();
        let exact = match size_hint {
            (lo, Some(hi)) if lo == hi => Some(lo as u64),
            _ => None,
        };
        let total = p.total_hint.or(exact);
        let track_times = p.item_timeout.is_some() || !backend.room().measures;
        Engine {
            // A deadline too far to represent is no deadline.
            deadline_at: p.deadline.and_then(|d| later(start, d)),
            input: Some(input),
            backend,
            sink,
            window: window.max(1),
            internal_stop,
            clock,
            start,
            next_index: 0,
            clones: IndexSlab::default(),
            spent: HashMap::default(),
            retry_q: RetryQueue::default(),
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
            starving: None,
            input_wait: FIRST_INPUT_WAIT,
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
            self.sink.flush();
            if self.backend.room().in_flight == 0 && self.retry_q.is_empty() {
                // Nothing can report: wait for the input itself.
                if let (Some(input), true) = (self.input.as_mut(), self.starving.is_some()) {
                    input.wait(timeout);
                    self.check_item_timeouts();
                    continue;
                }
                // Nothing can report and the window is full: wait for the consumer to
                // take a share of it (not a single item, so that the next batch is large).
                if self.window_blocked {
                    let room = (self.window as u64 / 4).max(1);
                    let at_least = (self.next_index + room).saturating_sub(self.window as u64);
                    if self.sink.wait_delivered(at_least, timeout) {
                        self.check_item_timeouts();
                        continue;
                    }
                }
            }
            if let Err(e) = self.backend.poll(timeout, &mut reports) {
                self.fatal(e);
                break;
            }
            // One clock reading per batch of reports (they arrived together).
            let now = self.clock.now();
            for r in reports.drain(..) {
                self.handle_report(r, now);
            }
            if let Some(input) = self.input.as_ref() {
                while let Some(v) = self.backend.recycle(None) {
                    input.recycle(v);
                }
            }
            self.check_item_timeouts();
        }
        self.backend.stop(Halt::Shutdown);
        let summary = Summary {
            status: self.status.clone().unwrap_or(RunStatus::Completed),
            succeeded: self.progress.succeeded,
            failed: self.progress.failed,
            not_run: self.progress.not_run,
            retries: self.progress.retries,
            admitted: self.next_index,
            elapsed: self.elapsed(),
        };
        self.sink.finish(&summary);
        summary
    }

    /// Time since the run started, on the run's clock.
    fn elapsed(&self) -> Duration {
        self.clock.now().saturating_sub(self.start)
    }

    fn is_done(&self) -> bool {
        self.input.is_none() && self.backend.room().in_flight == 0 && self.retry_q.is_empty()
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
        if !self.deadline_hit && self.deadline_at.is_some_and(|d| self.clock.now() >= d) {
            self.deadline_hit = true;
            // Abandon before stopping: a backend that cancels in-flight work on stop (async)
            // would otherwise report it as not run rather than timed out.
            let abandoned = self.backend.abandon(GiveUp::All);
            self.begin_stop(RunStatus::TimedOut);
            let now = self.clock.now();
            for a in abandoned {
                for k in 0..a.len as u64 {
                    let id = AttemptId {
                        index: a.first.index + k,
                        attempt: a.first.attempt,
                    };
                    let dur = self
                        .times
                        .remove(&id)
                        .map(|s| now.saturating_sub(s))
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
        if let Some(input) = self.input.take() {
            // Items pulled before the stop were admitted: they are reported as not run.
            // Nothing is pulled after it.
            let left = input.close(TICK);
            for item in left {
                drop(item);
                let index = self.next_index;
                self.next_index += 1;
                self.finish(index, Err(ItemError::NotRun), 0, Duration::ZERO);
            }
        }
        self.backend.stop(Halt::Queued);
        while let Some(p) = self.retry_q.pop() {
            self.finish(p.id.index, Err(p.last_error), p.id.attempt - 1, p.spent);
        }
    }

    fn fatal(&mut self, e: FatalExecutorError) {
        self.begin_stop(RunStatus::ExecutorFailed(e.clone()));
        self.status = Some(RunStatus::ExecutorFailed(e.clone()));
        for a in self.backend.abandon(GiveUp::All) {
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
        let now = self.clock.now();
        while self.retry_q.is_due(now) {
            if self.backend.room().free == 0 || self.status.is_some() {
                break;
            }
            if !self.take_token() {
                break;
            }
            let Some(p) = self.retry_q.pop() else { break };
            self.spent.insert(p.id.index, p.spent);
            if self.track_times {
                self.times.insert(p.id, now);
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
        let mut admitted_at: Option<Duration> = None;
        self.starving = None;
        loop {
            let room = self.backend.room();
            if self.input.is_none() || room.free == 0 {
                break;
            }
            let used = self.next_index - self.sink.delivered();
            if used >= self.window as u64 {
                self.window_blocked = true;
                break;
            }
            let window_room = (self.window as u64 - used) as usize;
            let rate_limited = self.p.limiter.is_some();
            let n = if rate_limited {
                1
            } else {
                room.batch.clamp(1, window_room)
            };
            let Some(input) = self.input.as_mut() else {
                break;
            };
            if input.ready() == 0 {
                if input.exhausted() {
                    self.input = None;
                } else {
                    // Wait for the puller (never for long: see `run`). With nothing left to
                    // run, take whatever it has pulled so far rather than a whole batch.
                    // (Not on the first look: a fast input hands over a piece at once.)
                    if room.in_flight == 0 && self.input_wait > FIRST_INPUT_WAIT {
                        input.hungry();
                    }
                    self.starving = Some(self.input_wait);
                    self.input_wait = (self.input_wait * 2).min(INPUT_WAIT);
                }
                break;
            }
            self.input_wait = FIRST_INPUT_WAIT;
            // A token is taken only with an item in hand, right before it is handed to a
            // free worker: an ended input takes no token, and none waits in a queue.
            if rate_limited && !self.take_token() {
                break;
            }
            let Some(input) = self.input.as_mut() else {
                break;
            };
            let items = input.take(n);
            let first = self.next_index;
            let len = items.len() as u64;
            if let Some(c) = self.p.cloner {
                if self.p.retry.as_ref().is_some_and(|r| r.attempts > 1) {
                    for (k, it) in items.iter().enumerate() {
                        self.clones.push(first + k as u64, c(it));
                    }
                }
            }
            if self.track_times {
                let clock = &self.clock;
                let now = *admitted_at.get_or_insert_with(|| clock.now());
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
        // Let the puller pull what the free slots can take now (plus what the backend would
        // queue anyway), within the window: a stop finds little pulled and not started.
        if let Some(input) = self.input.as_mut() {
            let used = (self.next_index - self.sink.delivered()) as usize;
            let window_room = self.window.saturating_sub(used);
            let room = self.backend.room();
            let batch = if self.p.limiter.is_some() {
                1
            } else {
                room.batch.max(1)
            };
            let read_ahead = room.read_ahead;
            let mut ahead = (room.free + read_ahead).saturating_mul(batch);
            if read_ahead > 0 {
                // While batches are still small (the first milliseconds), one hand-over
                // of a few hundred items beats one per tiny batch.
                ahead = ahead.max(MIN_READ_AHEAD);
            }
            let ahead = ahead.min(window_room);
            input.want(ahead, batch);
        }
        Ok(())
    }

    fn poll_timeout(&self) -> Duration {
        let now = self.clock.now();
        let mut t = TICK;
        if self.window_blocked {
            t = t.min(Duration::from_millis(2));
        }
        if let Some(w) = self.token_wait {
            t = t.min(w);
        }
        if let Some(w) = self.starving {
            t = t.min(w);
        }
        if let Some(due) = self.retry_q.next_due() {
            t = t.min(due.saturating_sub(now));
        }
        if let Some(d) = self.deadline_at {
            if !self.deadline_hit {
                t = t.min(d.saturating_sub(now));
            }
        }
        if let Some(it) = self.p.item_timeout {
            for s in self.times.values() {
                // An end beyond what a time can hold never comes.
                if let Some(end) = later(*s, it) {
                    t = t.min(end.saturating_sub(now));
                }
            }
        }
        t
    }

    fn handle_report(&mut self, r: Report<U, E>, now: Duration) {
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
                    if let Some(i) = self.backend.recycle(Some(v)) {
                        if let Some(input) = self.input.as_ref() {
                            input.recycle(i);
                        }
                    }
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
                        dur = now.saturating_sub(s);
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
                self.progress.elapsed = self.clock.now().saturating_sub(self.start);
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
        let now = self.clock.now();
        let expired: Vec<(AttemptId, Duration)> = self
            .times
            .iter()
            .filter_map(|(id, s)| {
                let el = now.saturating_sub(*s);
                (el >= limit).then_some((*id, el))
            })
            .collect();
        for (id, el) in expired {
            self.times.remove(&id);
            tracing::info!(
                index = id.index,
                attempt = id.attempt,
                elapsed_ms = el.as_millis() as u64,
                "item timed out; abandoning its attempt"
            );
            self.backend.abandon(GiveUp::One(id));
            self.failed(id, ItemError::TimedOut, el);
        }
    }

    /// An attempt failed: schedule a retry or record the final failure.
    fn failed(&mut self, id: AttemptId, err: ItemError<E>, dur: Duration) {
        let mut delay = None;
        if let Some(r) = &self.p.retry {
            let server_wait = err.user_error().and_then(|e| r.server_wait(e));
            if let (Some(w), Some(l)) = (server_wait, &self.p.limiter) {
                tracing::info!(
                    index = id.index,
                    wait_ms = w.as_millis() as u64,
                    "rate limit paused: the server asked to wait (retry_after)"
                );
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
            tracing::info!(
                index = id.index,
                attempt = id.attempt,
                wait_ms = delay.as_millis() as u64,
                "attempt failed; retrying after a wait"
            );
            let copy = match (self.clones.get(id.index), self.p.cloner) {
                (Some(stored), Some(c)) => Some(c(stored)),
                _ => None,
            };
            if let Some(item) = copy {
                self.retry_q.push(Pending {
                    due: later(self.clock.now(), delay),
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
            self.progress.elapsed = self.clock.now().saturating_sub(self.start);
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

#[cfg(test)]
mod tests;
