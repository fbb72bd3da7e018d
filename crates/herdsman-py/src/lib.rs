//! `herdsman._native`: the Rust half of the `herdsman` Python package.
//!
//! It starts one herdsman run per call (`start`) on herdsman's public API only — the thread
//! pool of [`herdsman::map`] for `executor="thread"`, and [`herdsman::map_with`] over a
//! [`herdsman_workers::WorkerPool`] of Python worker processes for `executor="process"` —
//! and hands the outcomes to Python through a [`Run`] handle that Python polls. A process
//! run that ends cleanly hands its pool to [`pools`], where the next map with the same
//! settings finds it.
//!
//! This module must never hold the GIL while it waits (the run's threads need it to call
//! the user's function), never lose an outcome between the engine and Python, and never let
//! a run outlive its handle: dropping the handle, or `cancel()`, stops the run.
//!
//! The policy layer (argument checking, defaults, result objects, exceptions, pickling of
//! the function) lives in `python/herdsman/__init__.py`; this file only wires the engine.

// PyO3's #[pyfunction]/#[pymethods] expansion converts PyResult errors into PyErr, which
// clippy reports at the signature of every fallible function.
#![allow(clippy::useless_conversion)]

mod exit_gate;
mod pools;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use herdsman::{
    AttemptId, AttemptOutcome, Executor, FatalExecutorError, ItemError, ItemOutcome, Limiter, Map,
    Progress, RateLimit, Retry, StopToken, Summary,
};
use herdsman_workers::{
    FailureKind, PoolConfig, Protocol, WorkItem, WorkOutput, WorkerCommand, WorkerFailure,
    WorkerPool,
};
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyIterator, PyList, PyTuple};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// An input item on the thread executor: shared so retries can clone it without the GIL.
#[derive(Clone)]
struct PyItem(Arc<PyObject>);

/// An input item on the process executor: the pickled item ready to send, or why it could
/// not be pickled (that item fails, the run goes on).
type ProcItem = Result<WorkItem, Arc<PyErr>>;

/// Why one attempt on the process executor failed.
enum ProcErr {
    /// The worker (or the pool) reported it.
    Worker(WorkerFailure),
    /// An item of a batch raised: its pickled `(exception, traceback)` and what the worker
    /// said about retrying it.
    Reported {
        pickled: Vec<u8>,
        retryable: bool,
        retry_after: Option<Duration>,
    },
    /// The item could not be pickled in this process.
    Local(Arc<PyErr>),
}

/// One item's final outcome, on its way to Python.
struct Raw {
    index: u64,
    attempts: u32,
    duration: Duration,
    kind: RawKind,
}

enum RawKind {
    /// A Python value (thread executor).
    Value(PyObject),
    /// A pickled value (process executor).
    Pickled(Vec<u8>),
    /// A Python exception raised by the function (thread executor).
    Raised(PyErr),
    /// An item that could not be pickled (process executor).
    LocalErr(Arc<PyErr>),
    /// A failure without a Python exception: (kind, message, pickled exception if any).
    Other(&'static str, String, Option<Vec<u8>>),
}

enum Msg {
    Item(Raw),
    End(Summary),
}

/// Pulls items from a Python iterator, taking the GIL for each `next()`. An exception raised
/// by the iterator ends the input and is kept for Python to re-raise.
///
/// Items of a sized input (a list, a tuple, a range: already in memory, or cheap) are taken
/// `chunk` at a time, so the GIL changes hands once per chunk rather than once per item; any
/// other iterable is pulled one item at a time, so no more is taken than the run asks for.
/// Each item is turned into a `T` by `conv` under the same hold of the GIL (the process
/// executor pickles it there).
struct PyIter<T = PyObject> {
    iter: Py<PyIterator>,
    error: Arc<std::sync::Mutex<Option<PyErr>>>,
    done: bool,
    chunk: usize,
    buf: std::collections::VecDeque<T>,
    conv: ItemConv<T>,
}

/// How [`PyIter`] turns a Python item into what the run takes.
type ItemConv<T> = Box<dyn for<'py> FnMut(Bound<'py, PyAny>) -> T + Send>;

impl PyIter<PyObject> {
    /// The same input, each item turned into a `U` by `conv` as it is taken.
    fn converted<U>(self, conv: ItemConv<U>) -> PyIter<U> {
        debug_assert!(self.buf.is_empty(), "convert before taking any item");
        PyIter {
            iter: self.iter,
            error: self.error,
            done: self.done,
            chunk: self.chunk,
            buf: Default::default(),
            conv,
        }
    }
}

impl<T> Iterator for PyIter<T> {
    type Item = T;
    fn next(&mut self) -> Option<T> {
        if let Some(v) = self.buf.pop_front() {
            return Some(v);
        }
        if self.done {
            return None;
        }
        // Once the interpreter is exiting, the input ends here.
        let entered = exit_gate::with_gil(|py| {
            let mut it = self.iter.bind(py).clone();
            while self.buf.len() < self.chunk {
                match it.next() {
                    Some(Ok(v)) => self.buf.push_back((self.conv)(v)),
                    Some(Err(e)) => {
                        self.done = true;
                        *self.error.lock().unwrap() = Some(e);
                        break;
                    }
                    None => {
                        self.done = true;
                        break;
                    }
                }
            }
        });
        if entered.is_none() {
            self.done = true;
        }
        self.buf.pop_front()
    }
}

/// The process executor: a [`WorkerPool`] speaking the framed protocol to
/// `python -S .../herdsman/_worker.py`, plus the items that failed to pickle here.
///
/// Tiny items travel in batches: submitted items wait in `pending` until the next `poll`,
/// which sends them as records of up to [`MAX_BATCH`] items (a JSON list), sized so that
/// one record takes about [`BATCH_TARGET`] of the worker's time as the worker measures it,
/// with at most [`BATCH_DEPTH`] records in flight per worker. Every record is a list from
/// the first one on (of one item until a reply has said how long items take), so every
/// reply carries the worker's time. A batch whose record fails as a whole (the worker
/// crashed, or sent something unreadable) is sent again one item per record, so only the
/// item that crashes a worker is charged; a record of one item that fails is that item's
/// failure. With a per-item timeout nothing is batched: the pool times records, not items.
///
/// Every record, of one item or many, is a JSON list whose first member names the setup
/// file (what to call), so that a pool kept from an earlier map (see [`pools`]) serves this
/// one. At shutdown, a pool with nothing in flight whose run was neither stopped nor
/// abandoned an item is handed back to [`pools`] instead of being shut down.
struct ProcExec {
    /// The pool; taken out at shutdown (kept for the next map, or shut down).
    pool: Option<WorkerPool>,
    /// What the pool is kept under for the next map.
    key: Option<pools::PoolKey>,
    /// Whether the pool is fit for another map: nothing was abandoned or stopped and the
    /// pool never failed.
    clean: bool,
    /// The first member of every record: a JSON string `"s:<setup file>"` that tells the
    /// worker what to call (a kept worker serves the maps that follow with other functions).
    setup: Vec<u8>,
    local: Vec<(AttemptId, AttemptOutcome<WorkOutput, ProcErr>)>,
    scratch: Vec<(AttemptId, AttemptOutcome<WorkOutput, WorkerFailure>)>,
    /// Submitted, not yet sent: (attempt, item, may be batched).
    pending: std::collections::VecDeque<(AttemptId, WorkItem, bool)>,
    /// Records of several items in flight, by the record's id (its first member's):
    /// (attempt, item, still wanted).
    batches: rustc_hash::FxHashMap<AttemptId, Vec<(AttemptId, WorkItem, bool)>>,
    /// Records in flight on the pool.
    in_flight: usize,
    /// Most items in one record (1: no batching).
    max_batch: usize,
    /// Measured seconds of worker time per item (exponential average), once known.
    per_item: Option<f64>,
}

/// Most items in one record sent to a worker process.
const MAX_BATCH: usize = 512;
/// Records of several items in flight on one worker process.
const BATCH_DEPTH: usize = 2;
/// The worker time one batch should take. Larger batches cost less per item: every batch
/// wakes about seven of the parent's threads, each of which takes a core from a worker
/// while it runs (bench (a): 40 ms took about a quarter less parent CPU than 10 ms, and
/// 100 ms about half as many context switches per run as 40 ms). The batches at the end of
/// a run are cut smaller anyway (a share of what is left for every record in flight), so
/// that the workers finish together.
const BATCH_TARGET: f64 = 0.100;

impl ProcExec {
    fn new(pool: WorkerPool, key: pools::PoolKey, setup: &str, batching: bool) -> Self {
        ProcExec {
            pool: Some(pool),
            key: Some(key),
            clean: true,
            setup: serde_json::to_vec(&format!("s:{setup}")).expect("a string serializes"),
            local: Vec::new(),
            scratch: Vec::new(),
            pending: Default::default(),
            batches: Default::default(),
            in_flight: 0,
            max_batch: if batching { MAX_BATCH } else { 1 },
            per_item: None,
        }
    }

    fn pool(&self) -> &WorkerPool {
        self.pool
            .as_ref()
            .expect("the pool is used only before shutdown")
    }

    fn pool_mut(&mut self) -> &mut WorkerPool {
        self.pool
            .as_mut()
            .expect("the pool is used only before shutdown")
    }

    /// Send pending items while the pool has room, batched as measured durations allow.
    ///
    /// While batching is on, every batchable record is a list (of one item at first), so
    /// that every reply carries the worker's time and the batch size follows the function
    /// from the first answer on.
    fn flush(&mut self) -> Result<(), FatalExecutorError> {
        let room = if self.max_batch > 1 {
            // One batch running and one waiting per worker: enough to keep it busy, few
            // enough that the batches are sized from what is left.
            self.pool()
                .capacity()
                .min(self.pool().concurrency() * BATCH_DEPTH)
        } else {
            self.pool().capacity()
        };
        while !self.pending.is_empty() && self.in_flight < room {
            // A share of what is left for every record that may be in flight, not only for
            // the free ones: at the end of a run the last items are spread over every
            // worker instead of going to whichever worker answered first.
            let fair = self.pending.len().div_ceil(room);
            let want = match self.per_item {
                Some(t) if t > 0.0 => ((BATCH_TARGET / t) as usize).max(1),
                Some(_) => self.max_batch,
                None => 1,
            };
            let n = fair.min(want).min(self.max_batch).max(1);
            let (id, item, batchable) = self.pending.pop_front().expect("not empty");
            let alone = self.max_batch == 1 || !batchable;
            let mut members = vec![(id, item, true)];
            while !alone && members.len() < n {
                match self.pending.front() {
                    Some((_, _, true)) => members.push(self.pending.pop_front().expect("front")),
                    _ => break,
                }
            }
            let mut json = Vec::with_capacity(
                members.iter().map(|m| m.1.json.len() + 1).sum::<usize>() + self.setup.len() + 2,
            );
            json.push(b'[');
            json.extend_from_slice(&self.setup);
            for (_, it, _) in members.iter() {
                json.push(b',');
                json.extend_from_slice(&it.json);
            }
            json.push(b']');
            if let Err(e) = self.pool_mut().submit(id, WorkItem::new(0, json)) {
                self.clean = false;
                return Err(e);
            }
            self.batches.insert(id, members);
            self.in_flight += 1;
        }
        Ok(())
    }

    /// One finished record of several items: split it into the items' outcomes.
    fn split(
        &mut self,
        members: Vec<(AttemptId, WorkItem, bool)>,
        outcome: AttemptOutcome<WorkOutput, WorkerFailure>,
        out: &mut Vec<(AttemptId, AttemptOutcome<WorkOutput, ProcErr>)>,
    ) {
        if let AttemptOutcome::Success(outs) = &outcome {
            if let Some(parts) = outs
                .first()
                .and_then(|b| serde_json::from_slice::<Vec<String>>(b).ok())
                .filter(|p| p.len() == members.len() + 1)
            {
                if let Some(t) = parts[members.len()]
                    .strip_prefix("t:")
                    .and_then(|t| t.parse::<f64>().ok())
                {
                    let t = t / members.len() as f64;
                    self.per_item = Some(match self.per_item {
                        Some(p) => 0.7 * p + 0.3 * t,
                        None => t,
                    });
                }
                for ((id, _, alive), part) in members.into_iter().zip(parts) {
                    if alive {
                        out.push((id, part_outcome(&part)));
                    }
                }
                return;
            }
        }
        // A record of one item that failed as a whole is that item's failure, as if it had
        // travelled alone.
        if members.len() == 1 {
            let (id, _, alive) = members.into_iter().next().expect("one member");
            if alive {
                out.push((id, single_outcome(outcome)));
            }
            return;
        }
        // The record failed as a whole: try each item alone, so that only the item that
        // crashes a worker is charged.
        for (id, item, alive) in members.into_iter().rev() {
            if alive {
                self.pending.push_front((id, item, false));
            }
        }
    }
}

/// The outcome of a record that carried one item alone.
fn single_outcome(
    o: AttemptOutcome<WorkOutput, WorkerFailure>,
) -> AttemptOutcome<WorkOutput, ProcErr> {
    match o {
        AttemptOutcome::Success(v) => AttemptOutcome::Success(v),
        AttemptOutcome::Failure(f) => AttemptOutcome::Failure(ProcErr::Worker(f)),
        AttemptOutcome::Panicked(m) => AttemptOutcome::Panicked(m),
    }
}

/// One item's answer inside a batch reply: `o:B64` (the pickled value) or
/// `e:R:W:B64` (retryable 0/1, the wait in seconds or nothing, the pickled exception).
fn part_outcome(part: &str) -> AttemptOutcome<WorkOutput, ProcErr> {
    if let Some(v) = part.strip_prefix("o:") {
        let mut json = Vec::with_capacity(v.len() + 2);
        json.push(b'"');
        json.extend_from_slice(v.as_bytes());
        json.push(b'"');
        return AttemptOutcome::Success(vec![json]);
    }
    if let Some(rest) = part.strip_prefix("e:") {
        let mut it = rest.splitn(3, ':');
        let retryable = it.next() == Some("1");
        let wait = it
            .next()
            .and_then(|w| w.parse::<f64>().ok())
            .filter(|w| w.is_finite() && *w >= 0.0)
            .map(|w| {
                Duration::from_secs_f64(w.min(herdsman_workers::MAX_RETRY_AFTER.as_secs_f64()))
            });
        if let Some(p) = it.next().and_then(|b| B64.decode(b.as_bytes()).ok()) {
            return AttemptOutcome::Failure(ProcErr::Reported {
                pickled: p,
                retryable,
                retry_after: wait.filter(|_| retryable),
            });
        }
    }
    AttemptOutcome::Panicked("the worker process sent an answer herdsman could not read".into())
}

impl Executor<ProcItem> for ProcExec {
    type Output = WorkOutput;
    type Error = ProcErr;

    fn capacity(&self) -> usize {
        self.pool().capacity() * self.max_batch
    }

    fn concurrency(&self) -> usize {
        self.pool().concurrency()
    }

    fn submit(&mut self, id: AttemptId, item: ProcItem) -> Result<(), FatalExecutorError> {
        match item {
            Ok(w) => {
                self.pending.push_back((id, w, true));
                Ok(())
            }
            Err(e) => {
                self.local
                    .push((id, AttemptOutcome::Failure(ProcErr::Local(e))));
                Ok(())
            }
        }
    }

    fn poll(
        &mut self,
        timeout: Duration,
        out: &mut Vec<(AttemptId, AttemptOutcome<WorkOutput, ProcErr>)>,
    ) -> Result<(), FatalExecutorError> {
        self.flush()?;
        let wait = if self.local.is_empty() {
            timeout
        } else {
            Duration::ZERO
        };
        out.append(&mut self.local);
        let mut scratch = std::mem::take(&mut self.scratch);
        let r = self.pool_mut().poll(wait, &mut scratch);
        self.scratch = scratch;
        if r.is_err() {
            self.clean = false;
        }
        let finished: Vec<_> = self.scratch.drain(..).collect();
        for (id, o) in finished {
            self.in_flight = self.in_flight.saturating_sub(1);
            if let Some(members) = self.batches.remove(&id) {
                self.split(members, o, out);
                continue;
            }
            out.push((id, single_outcome(o)));
        }
        r?;
        self.flush()
    }

    fn abandon(&mut self, id: AttemptId) {
        self.clean = false;
        self.local.retain(|(i, _)| *i != id);
        if let Some(k) = self.pending.iter().position(|(i, _, _)| *i == id) {
            self.pending.remove(k);
            return;
        }
        // In a batch, the item's slot stays (the reply has one part per item sent) but is
        // marked dead; the record is given up only when none of its items is wanted.
        let owner = self.batches.iter_mut().find_map(|(rid, m)| {
            let slot = m.iter_mut().find(|x| x.0 == id)?;
            slot.2 = false;
            Some((*rid, m.iter().all(|x| !x.2)))
        });
        match owner {
            Some((rid, true)) => {
                self.batches.remove(&rid);
                self.pool_mut().abandon(rid);
                self.in_flight = self.in_flight.saturating_sub(1);
            }
            Some((_, false)) => {}
            None => {
                self.pool_mut().abandon(id);
                self.in_flight = self.in_flight.saturating_sub(1);
            }
        }
    }

    fn stop_queued(&mut self, not_started: &mut Vec<AttemptId>) {
        self.clean = false;
        not_started.extend(self.pending.drain(..).map(|(id, _, _)| id));
        let mut records = Vec::new();
        self.pool_mut().stop_queued(&mut records);
        for rid in records {
            self.in_flight = self.in_flight.saturating_sub(1);
            match self.batches.remove(&rid) {
                Some(members) => not_started.extend(
                    members
                        .into_iter()
                        .filter(|(_, _, alive)| *alive)
                        .map(|(id, _, _)| id),
                ),
                None => not_started.push(rid),
            }
        }
    }

    /// A healthy pool is kept for the next map with the same settings; any other is shut
    /// down.
    fn shutdown(&mut self) {
        let Some(mut pool) = self.pool.take() else {
            return;
        };
        let idle = self.in_flight == 0 && self.pending.is_empty() && self.batches.is_empty();
        match self.key.take() {
            Some(key) if self.clean && idle => pools::give_back(key, pool),
            _ => pool.shutdown(),
        }
    }
}

/// Retry settings as Python gives them (`herdsman.Retry`).
struct RetrySpec {
    attempts: u32,
    backoff: f64,
    max_delay: Option<f64>,
    jitter: bool,
    retry_timeouts: bool,
    /// Exception types to retry (thread executor; `None`: every exception).
    on: Option<PyObject>,
    /// `retry_after(exc) -> seconds | None` (thread executor).
    retry_after: Option<PyObject>,
}

impl RetrySpec {
    fn base<E>(&self) -> Retry<E> {
        let mut r = Retry::attempts(self.attempts)
            .backoff(Duration::from_secs_f64(self.backoff.max(0.0)))
            .jitter(self.jitter)
            .retry_timeouts(self.retry_timeouts);
        if let Some(m) = self.max_delay {
            r = r.max_delay(Duration::from_secs_f64(m.max(0.0)));
        }
        r
    }

    fn for_threads(&self) -> Retry<PyErr> {
        let mut r = self.base::<PyErr>();
        if let Some(on) = &self.on {
            let on = Python::with_gil(|py| on.clone_ref(py));
            r = r.when(move |e: &PyErr| {
                exit_gate::with_gil(|py| e.is_instance_bound(py, on.bind(py))).unwrap_or(false)
            });
        }
        if let Some(f) = &self.retry_after {
            let f = Python::with_gil(|py| f.clone_ref(py));
            r = r.retry_after(move |e: &PyErr| {
                exit_gate::with_gil(|py| {
                    let v = f.call1(py, (e.value_bound(py),)).ok()?;
                    let s: Option<f64> = v.extract(py).ok()?;
                    s.filter(|s| s.is_finite() && *s >= 0.0)
                        .map(Duration::from_secs_f64)
                })
                .flatten()
            });
        }
        r
    }

    /// On processes the worker decides `retryable` and `retry_after` (it has the exception);
    /// here the engine follows what it said.
    fn for_processes(&self) -> Retry<ProcErr> {
        let retry_timeouts = self.retry_timeouts;
        self.base::<ProcErr>()
            .when(move |e: &ProcErr| match e {
                ProcErr::Worker(f) => match f.kind {
                    FailureKind::Reported => f.retryable,
                    FailureKind::Timeout => retry_timeouts,
                    _ => false,
                },
                ProcErr::Reported { retryable, .. } => *retryable,
                ProcErr::Local(_) => false,
            })
            .retry_after(|e: &ProcErr| match e {
                ProcErr::Worker(f) => f.retry_after,
                ProcErr::Reported { retry_after, .. } => *retry_after,
                ProcErr::Local(_) => None,
            })
    }
}

/// A shared rate limiter: `herdsman.RateLimit(90, "minute", burst=...)`.
///
/// One object may be passed to several maps and used from several threads; they all draw
/// from the same budget.
#[pyclass(module = "herdsman", name = "RateLimit", frozen)]
struct PyLimiter {
    inner: Limiter,
    count: u32,
    per: String,
    burst: u32,
}

#[pymethods]
impl PyLimiter {
    #[new]
    #[pyo3(signature = (count, per="second", burst=None))]
    fn new(count: u32, per: &str, burst: Option<u32>) -> PyResult<Self> {
        if count == 0 {
            return Err(PyValueError::new_err(
                "a rate limit of 0 would never let anything run; give a positive count",
            ));
        }
        let count = std::num::NonZeroU32::new(count).expect("zero was refused above");
        let rate = match per {
            "second" | "s" | "sec" => RateLimit::per_second(count),
            "minute" | "m" | "min" => RateLimit::per_minute(count),
            "hour" | "h" => RateLimit::per_hour(count),
            other => {
                return Err(PyValueError::new_err(format!(
                    "unknown rate unit {other:?}; use \"second\", \"minute\" or \"hour\""
                )))
            }
        };
        let rate = match burst {
            Some(0) => {
                return Err(PyValueError::new_err(
                    "burst must be at least 1; leave it out for the default",
                ))
            }
            Some(b) => rate.burst(b),
            None => rate,
        };
        let burst = rate.burst_size();
        Ok(PyLimiter {
            inner: Limiter::new(rate),
            count: count.get(),
            per: per.to_string(),
            burst,
        })
    }

    /// Block until a token is free and take it (for use outside a map).
    fn acquire(&self, py: Python<'_>) {
        let l = self.inner.clone();
        exit_gate::allow_threads(py, move || l.acquire_blocking());
    }

    /// Take a token if one is free: returns 0.0, else the seconds to wait before trying again.
    fn try_acquire(&self) -> f64 {
        match self.inner.try_acquire() {
            Ok(()) => 0.0,
            Err(wait) => wait.as_secs_f64().max(1e-6),
        }
    }

    /// Hold back every user of this limiter for `seconds` (a server's Retry-After).
    fn pause(&self, seconds: f64) -> PyResult<()> {
        if !(seconds.is_finite() && seconds >= 0.0) {
            return Err(PyValueError::new_err(
                "pause takes a finite, non-negative number of seconds",
            ));
        }
        self.inner.pause(Duration::from_secs_f64(seconds));
        Ok(())
    }

    /// Seconds until the limiter lets the next attempt go after a pause (0 when not paused).
    fn paused_for(&self) -> f64 {
        self.inner.paused_for().as_secs_f64()
    }

    #[getter]
    fn count(&self) -> u32 {
        self.count
    }

    #[getter]
    fn per(&self) -> String {
        self.per.clone()
    }

    #[getter]
    fn burst(&self) -> u32 {
        self.burst
    }

    fn __repr__(&self) -> String {
        format!(
            "RateLimit({}, {:?}, burst={})",
            self.count, self.per, self.burst
        )
    }
}

/// A run in progress; Python polls it for outcomes.
#[pyclass(module = "herdsman._native", name = "Run")]
struct PyRun {
    rx: Receiver<Msg>,
    stop: StopToken,
    input_error: Arc<std::sync::Mutex<Option<PyErr>>>,
    ended: Option<Summary>,
    cleanup: Option<Box<dyn FnOnce() + Send>>,
    /// Items seen so far: (succeeded, failed, not run), counted here because the engine
    /// counts chunks when items travel in chunks.
    counts: (u64, u64, u64),
    /// The index of the last outcome handed to Python.
    last: Option<u64>,
    /// Whether every outcome so far came in increasing index order.
    sorted: bool,
    /// Lets the interpreter's exit stop this run.
    _live: exit_gate::LiveRun,
}

impl Drop for PyRun {
    fn drop(&mut self) {
        self.stop.stop();
    }
}

fn kind_name(k: &FailureKind) -> &'static str {
    match k {
        FailureKind::WorkerExited => "worker_exited",
        FailureKind::BadOutput => "bad_output",
        FailureKind::Reported => "reported",
        FailureKind::CommandFailed => "command_failed",
        FailureKind::BadRecord => "bad_record",
        FailureKind::Timeout => "timeout",
        _ => "worker_failed",
    }
}

fn status_name(s: &herdsman::RunStatus) -> (&'static str, String) {
    use herdsman::RunStatus::*;
    match s {
        Completed => ("completed", String::new()),
        TimedOut => ("timed_out", String::new()),
        Aborted => ("aborted", String::new()),
        Cancelled => ("cancelled", String::new()),
        ExecutorFailed(e) => ("executor_failed", e.message.clone()),
        #[allow(unreachable_patterns)]
        _ => ("unknown", s.to_string()),
    }
}

fn common_err<E>(e: ItemError<E>) -> Result<E, RawKind> {
    match e {
        ItemError::Failed(e) => Ok(e),
        ItemError::Panicked(m) => Err(RawKind::Other("panicked", m, None)),
        ItemError::TimedOut => Err(RawKind::Other(
            "timeout",
            "the item timed out; raise timeout (or deadline) if it needs more time".into(),
            None,
        )),
        ItemError::NotRun => Err(RawKind::Other(
            "not_run",
            "the item was not run because the run stopped before it started".into(),
            None,
        )),
        ItemError::Executor(m) => Err(RawKind::Other("executor", m, None)),
        // An outcome a newer engine may add: reported as a failure, never dropped.
        _ => Err(RawKind::Other(
            "unknown",
            "the item failed for a reason this version cannot name".into(),
            None,
        )),
    }
}

fn thread_raw(o: ItemOutcome<PyObject, PyErr>) -> Raw {
    let kind = match o.result {
        Ok(v) => RawKind::Value(v),
        Err(e) => match common_err(e) {
            Ok(e) => RawKind::Raised(e),
            Err(k) => k,
        },
    };
    Raw {
        index: o.index,
        attempts: o.attempts,
        duration: o.duration,
        kind,
    }
}

/// Decodes one output of the worker: a JSON string holding base64 of a pickle.
fn decode_b64_json(bytes: &[u8]) -> Option<Vec<u8>> {
    let s: String = serde_json::from_slice(bytes).ok()?;
    B64.decode(s.as_bytes()).ok()
}

fn proc_raw(o: ItemOutcome<WorkOutput, ProcErr>) -> Raw {
    let kind = match o.result {
        Ok(outs) => match outs.first().and_then(|b| decode_b64_json(b)) {
            Some(p) if outs.len() == 1 => RawKind::Pickled(p),
            _ => RawKind::Other(
                "bad_output",
                "the worker process sent a reply herdsman could not read".into(),
                None,
            ),
        },
        Err(e) => match common_err(e) {
            Ok(ProcErr::Local(e)) => RawKind::LocalErr(e),
            Ok(ProcErr::Reported { pickled, .. }) => RawKind::Other(
                "reported",
                "the function raised in its worker process".into(),
                Some(pickled),
            ),
            Ok(ProcErr::Worker(f)) => {
                let pickled = if f.kind == FailureKind::Reported {
                    B64.decode(f.message.as_bytes()).ok()
                } else {
                    None
                };
                let mut msg = f.message.clone();
                if pickled.is_none() && !f.stderr_tail.is_empty() {
                    msg.push_str("\nlast lines the worker wrote to stderr:\n");
                    msg.push_str(&f.stderr_tail.join("\n"));
                }
                RawKind::Other(kind_name(&f.kind), msg, pickled)
            }
            Err(k) => k,
        },
    };
    Raw {
        index: o.index,
        attempts: o.attempts,
        duration: o.duration,
        kind,
    }
}

/// Everything `start` needs to know, as Python passes it.
struct Options {
    ordered: bool,
    window: Option<usize>,
    limiter: Option<Limiter>,
    item_timeout: Option<Duration>,
    deadline: Option<Duration>,
    max_errors: Option<u64>,
    total: Option<u64>,
    on_progress: Option<PyObject>,
    stop: StopToken,
}

fn apply<I: Iterator, U, E, K>(mut m: Map<I, U, E, K>, o: Options) -> Map<I, U, E, K> {
    m = m.ordered(o.ordered).stop_token(o.stop);
    if let Some(w) = o.window {
        m = m.window(w);
    }
    if let Some(l) = o.limiter {
        m = m.limiter(l);
    }
    if let Some(t) = o.item_timeout {
        m = m.item_timeout(t);
    }
    if let Some(d) = o.deadline {
        m = m.deadline(d);
    }
    if let Some(n) = o.max_errors {
        m = m.max_errors(n);
    }
    if let Some(t) = o.total {
        m = m.total_hint(t);
    }
    if let Some(cb) = o.on_progress {
        m = m.on_progress(move |p: &Progress| {
            exit_gate::with_gil(|py| {
                let total = p.total;
                if let Err(e) = cb.call1(py, (p.finished(), total)) {
                    // A failing progress callback must not stop the run; say so once per call.
                    e.print(py);
                }
            });
        });
    }
    m
}

fn pump<U, E, F>(stream: herdsman::Stream<U, E>, tx: Sender<Msg>, conv: F)
where
    U: Send + 'static,
    E: Send + 'static,
    F: FnMut(ItemOutcome<U, E>, &mut dyn FnMut(Raw)) + Send + 'static,
{
    std::thread::Builder::new()
        .name("herdsman-py-pump".into())
        .spawn(move || {
            let mut stream = stream;
            let mut conv = conv;
            let mut gone = false;
            while let Some(o) = Iterator::next(&mut stream) {
                conv(o, &mut |r| {
                    if !gone && tx.send(Msg::Item(r)).is_err() {
                        // The handle is gone: stop the run and drain what is left.
                        gone = true;
                        stream.cancel();
                    }
                });
            }
            if let Some(s) = stream.summary() {
                let _ = tx.send(Msg::End(s.clone()));
            }
        })
        .expect("the operating system refused to start a thread");
}

/// The error of a call that was not made because the interpreter is exiting.
fn exiting() -> PyErr {
    PyRuntimeError::new_err(
        "the Python interpreter is exiting, so herdsman stopped the run before this call; \
         finish the run (iterate its results) before the program ends",
    )
}

fn secs(v: Option<f64>, what: &str) -> PyResult<Option<Duration>> {
    match v {
        None => Ok(None),
        Some(s) if s.is_finite() && s > 0.0 => Ok(Some(Duration::from_secs_f64(s))),
        Some(s) => Err(PyValueError::new_err(format!(
            "{what} must be a positive number of seconds, got {s}"
        ))),
    }
}

/// Start a run. Called by `herdsman.parallel_map` and `herdsman.imap`; see there.
#[pyfunction]
#[pyo3(signature = (fn_, items, *, executor, workers, sequential, ordered, window, limiter,
    retry, timeout, deadline, max_errors, total, on_progress, worker_argv, worker_env,
    pickle_item, pipeline_depth, cleanup, inline=false, chunked=false, setup_path=None))]
#[allow(clippy::too_many_arguments)]
fn start(
    py: Python<'_>,
    fn_: PyObject,
    items: &Bound<'_, PyAny>,
    executor: &str,
    workers: usize,
    sequential: bool,
    ordered: bool,
    window: Option<usize>,
    limiter: Option<PyRef<'_, PyLimiter>>,
    retry: Option<&Bound<'_, PyDict>>,
    timeout: Option<f64>,
    deadline: Option<f64>,
    max_errors: Option<u64>,
    total: Option<u64>,
    on_progress: Option<PyObject>,
    worker_argv: Vec<String>,
    worker_env: Vec<(String, String)>,
    pickle_item: Option<PyObject>,
    pipeline_depth: Option<usize>,
    cleanup: Option<PyObject>,
    inline: bool,
    chunked: bool,
    setup_path: Option<String>,
) -> PyResult<PyRun> {
    let sized = items.len().is_ok();
    let iter = items.iter()?.unbind();
    let input_error = Arc::new(std::sync::Mutex::new(None));
    let input = PyIter {
        iter,
        error: Arc::clone(&input_error),
        done: false,
        chunk: if sized { 1024 } else { 1 },
        buf: std::collections::VecDeque::new(),
        conv: Box::new(|v: Bound<'_, PyAny>| v.unbind()),
    };
    let retry = match retry {
        None => None,
        Some(d) => {
            let get = |k: &str| -> PyResult<Option<Bound<'_, PyAny>>> {
                Ok(d.get_item(k)?.filter(|v| !v.is_none()))
            };
            Some(RetrySpec {
                attempts: get("attempts")?
                    .map(|v| v.extract())
                    .transpose()?
                    .unwrap_or(3),
                backoff: get("backoff")?
                    .map(|v| v.extract())
                    .transpose()?
                    .unwrap_or(1.0),
                max_delay: get("max_delay")?.map(|v| v.extract()).transpose()?,
                jitter: get("jitter")?
                    .map(|v| v.extract())
                    .transpose()?
                    .unwrap_or(true),
                retry_timeouts: get("retry_timeouts")?
                    .map(|v| v.extract())
                    .transpose()?
                    .unwrap_or(false),
                on: get("on")?.map(|v| v.unbind()),
                retry_after: get("retry_after")?.map(|v| v.unbind()),
            })
        }
    };
    let stop = StopToken::new();
    let live = exit_gate::LiveRun::register(stop.clone());
    let opts = Options {
        ordered,
        window,
        limiter: limiter.map(|l| l.inner.clone()),
        item_timeout: secs(timeout, "timeout")?,
        deadline: secs(deadline, "deadline")?,
        max_errors,
        total,
        on_progress,
        stop: stop.clone(),
    };
    let (tx, rx) = crossbeam_channel::bounded(4096);
    match executor {
        "thread" if chunked => {
            return start_chunked(
                py,
                fn_,
                input,
                workers,
                sequential,
                inline,
                opts,
                input_error,
                live,
            );
        }
        "thread" => {
            let f = Arc::new(fn_);
            let items = input.map(|o| PyItem(Arc::new(o)));
            let halt = stop.clone();
            let mut m = herdsman::map(items, move |x: PyItem| {
                exit_gate::with_gil(|py| {
                    let r = f.call1(py, (x.0.clone_ref(py),));
                    if let Err(e) = &r {
                        // KeyboardInterrupt, SystemExit: stop the run; Python re-raises it.
                        if !e.is_instance_of::<pyo3::exceptions::PyException>(py) {
                            halt.stop();
                        }
                    }
                    r
                })
                .unwrap_or_else(|| Err(exiting()))
            });
            m = if sequential {
                m.sequential()
            } else {
                m.workers(workers.max(1))
            };
            if let Some(r) = &retry {
                m = m.retry(r.for_threads());
            }
            let m = apply(m, opts);
            if inline {
                // `workers=1`: every item runs on the calling thread, one after the other.
                let (tx, rx2) = crossbeam_channel::unbounded();
                let stats = Arc::new(std::sync::Mutex::new(Vec::new()));
                let s2 = Arc::clone(&stats);
                let m = m.on_outcome(move |o: &ItemOutcome<PyObject, PyErr>| {
                    s2.lock().unwrap().push((o.index, o.attempts, o.duration));
                });
                let res = exit_gate::allow_threads(py, move || m.collect());
                let summary = res.summary().clone();
                let (succ, fails) = res.into_parts();
                let mut raws: Vec<Raw> = Vec::with_capacity(succ.len() + fails.len());
                for (index, v) in succ {
                    raws.push(Raw {
                        index,
                        attempts: 1,
                        duration: Duration::ZERO,
                        kind: RawKind::Value(v),
                    });
                }
                for f in fails {
                    raws.push(thread_raw(ItemOutcome {
                        index: f.index,
                        result: Err(f.error),
                        attempts: f.attempts,
                        duration: f.duration,
                    }));
                }
                let mut stats = std::mem::take(&mut *stats.lock().unwrap());
                stats.sort_unstable_by_key(|s| s.0);
                raws.sort_unstable_by_key(|r| r.index);
                for r in raws.iter_mut() {
                    if let Ok(k) = stats.binary_search_by_key(&r.index, |s| s.0) {
                        r.attempts = stats[k].1;
                        r.duration = stats[k].2;
                    }
                }
                for r in raws {
                    let _ = tx.send(Msg::Item(r));
                }
                let _ = tx.send(Msg::End(summary));
                return Ok(PyRun {
                    rx: rx2,
                    stop,
                    input_error,
                    ended: None,
                    cleanup: None,
                    counts: (0, 0, 0),
                    last: None,
                    sorted: true,
                    _live: live,
                });
            }
            let stream = exit_gate::allow_threads(py, move || m.stream());
            pump(stream, tx, |o, emit| emit(thread_raw(o)));
        }
        "process" => {
            let dumps = pickle_item
                .ok_or_else(|| PyValueError::new_err("the process executor needs pickle_item"))?;
            let items = input.converted(Box::new(move |o: Bound<'_, PyAny>| -> ProcItem {
                let py = o.py();
                let b = dumps.call1(py, (o,)).and_then(|b| {
                    b.downcast_bound::<PyBytes>(py)
                        .map(|b| b.as_bytes().to_vec())
                        .map_err(PyErr::from)
                });
                match b {
                    Ok(b) => {
                        let mut json = Vec::with_capacity(b.len() * 4 / 3 + 6);
                        json.push(b'"');
                        let s = B64.encode(b);
                        json.extend_from_slice(s.as_bytes());
                        json.push(b'"');
                        Ok(WorkItem::new(0, json))
                    }
                    Err(e) => Err(Arc::new(e)),
                }
            }));
            let setup_path = setup_path
                .ok_or_else(|| PyValueError::new_err("the process executor needs setup_path"))?;
            let key = pools::PoolKey::new(
                worker_argv.clone(),
                worker_env.clone(),
                workers.max(1),
                secs(timeout, "timeout")?,
                pipeline_depth,
            );
            let kept = pools::take(&key);
            let mut cfg = PoolConfig::new(WorkerCommand::argv(worker_argv));
            cfg.workers = workers.max(1);
            cfg.protocol = Protocol::Framed;
            cfg.env = worker_env;
            cfg.timeout = secs(timeout, "timeout")?;
            cfg.kill_grace = Duration::from_millis(500);
            if let Some(d) = pipeline_depth {
                cfg.pipeline_depth = d.max(1);
            }
            cfg.stderr = Some(Arc::new(|_w: usize, line: &str| eprintln!("{line}")));
            // The workers of an earlier map with the same settings, if they are still kept.
            let pool = match kept {
                Some(pool) => pool,
                None => WorkerPool::start(cfg).map_err(|e| {
                    PyRuntimeError::new_err(format!(
                        "could not start the worker processes: {}",
                        e.message
                    ))
                })?,
            };
            let exec = ProcExec::new(pool, key, &setup_path, timeout.is_none());
            let mut m = herdsman::map_with(items, exec);
            if let Some(r) = &retry {
                m = m.retry(r.for_processes());
            }
            // The pool enforces the per-item timeout itself (it kills the process group).
            let opts = Options {
                item_timeout: None,
                ..opts
            };
            let m = apply(m, opts);
            let stream = exit_gate::allow_threads(py, move || m.stream());
            pump(stream, tx, |o, emit| emit(proc_raw(o)));
        }
        other => {
            return Err(PyValueError::new_err(format!(
                "unknown executor {other:?}; use \"thread\" or \"process\""
            )))
        }
    }
    let cleanup: Option<Box<dyn FnOnce() + Send>> = cleanup.map(|c| {
        Box::new(move || {
            exit_gate::with_gil(|py| {
                let _ = c.call0(py);
            });
        }) as Box<dyn FnOnce() + Send>
    });
    Ok(PyRun {
        rx,
        stop,
        input_error,
        ended: None,
        cleanup,
        counts: (0, 0, 0),
        last: None,
        sorted: true,
        _live: live,
    })
}

/// Several consecutive items, run by one worker under one hold of the GIL.
struct Chunk {
    start: u64,
    items: Vec<PyObject>,
}

/// What one item of a chunk gave.
enum ChunkItem {
    Ok(PyObject, Duration),
    Err(PyErr, Duration),
    /// The run stopped (KeyboardInterrupt) before this item of the chunk ran.
    NotRun,
}

/// Most items in one chunk.
const MAX_CHUNK: usize = 256;
/// The time one chunk should take, from measured item durations.
const CHUNK_TARGET: Duration = Duration::from_micros(200);

/// The thread executor without per-item policies (no retry, timeout, rate limit or
/// max_errors): items go to the engine in chunks sized from measured durations (one item
/// at first, up to [`MAX_CHUNK`] for functions far faster than [`CHUNK_TARGET`]), so the
/// GIL changes hands once per chunk, not once per item. Every item still ends exactly once.
#[allow(clippy::too_many_arguments)]
fn start_chunked(
    py: Python<'_>,
    fn_: PyObject,
    input: PyIter,
    workers: usize,
    sequential: bool,
    inline: bool,
    opts: Options,
    input_error: Arc<std::sync::Mutex<Option<PyErr>>>,
    live: exit_gate::LiveRun,
) -> PyResult<PyRun> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let size = Arc::new(AtomicUsize::new(1));
    let size_in = Arc::clone(&size);
    let spans: Arc<std::sync::Mutex<rustc_hash::FxHashMap<u64, (u64, usize)>>> = Arc::default();
    let spans_in = Arc::clone(&spans);
    let mut input = input;
    let mut next_start = 0u64;
    let mut next_chunk = 0u64;
    let chunks = std::iter::from_fn(move || {
        let k = size_in.load(Ordering::Relaxed).clamp(1, MAX_CHUNK);
        let mut items = Vec::with_capacity(k);
        for _ in 0..k {
            match input.next() {
                Some(v) => items.push(v),
                None => break,
            }
        }
        if items.is_empty() {
            return None;
        }
        let c = Chunk {
            start: next_start,
            items,
        };
        spans_in
            .lock()
            .unwrap()
            .insert(next_chunk, (c.start, c.items.len()));
        next_chunk += 1;
        next_start += c.items.len() as u64;
        Some(c)
    });
    let f = Arc::new(fn_);
    let halt = opts.stop.clone();
    let run_stop = opts.stop.clone();
    let size_fn = Arc::clone(&size);
    let mut m = herdsman::map(chunks, move |c: Chunk| {
        let begun = std::time::Instant::now();
        let n = c.items.len();
        let out = exit_gate::with_gil(|py| {
            let mut out = Vec::with_capacity(n);
            let mut stopped = false;
            for x in c.items {
                if stopped {
                    out.push(ChunkItem::NotRun);
                    continue;
                }
                let t = std::time::Instant::now();
                match f.call1(py, (x,)) {
                    Ok(v) => out.push(ChunkItem::Ok(v, t.elapsed())),
                    Err(e) => {
                        if !e.is_instance_of::<pyo3::exceptions::PyException>(py) {
                            // KeyboardInterrupt, SystemExit: stop; Python re-raises it.
                            halt.stop();
                            stopped = true;
                        }
                        out.push(ChunkItem::Err(e, t.elapsed()));
                    }
                }
            }
            out
        })
        .unwrap_or_else(|| {
            (0..n)
                .map(|_| ChunkItem::Err(exiting(), Duration::ZERO))
                .collect()
        });
        let per_item = begun.elapsed() / n as u32;
        let k = if per_item.is_zero() {
            MAX_CHUNK
        } else {
            (CHUNK_TARGET.as_nanos() / per_item.as_nanos()).clamp(1, MAX_CHUNK as u128) as usize
        };
        size_fn.store(k, Ordering::Relaxed);
        Ok::<_, std::convert::Infallible>(out)
    });
    // Chunks are sized here already: the engine hands out one chunk at a time.
    m = if sequential {
        m.sequential()
    } else {
        m.workers(workers.max(1)).chunk_size(1)
    };
    // Progress is counted in items here, not in chunks.
    let on_progress = opts.on_progress;
    let total = opts.total;
    let opts = Options {
        on_progress: None,
        window: Some(opts.window.unwrap_or(256)),
        total: None,
        ..opts
    };
    let m = apply(m, opts);
    let mut done = 0u64;
    let mut conv = move |o: ItemOutcome<Vec<ChunkItem>, std::convert::Infallible>,
                         emit: &mut dyn FnMut(Raw)| {
        let (start, len) = spans
            .lock()
            .unwrap()
            .remove(&o.index)
            .unwrap_or((o.index, 1));
        match o.result {
            Ok(items) => {
                for (i, it) in items.into_iter().enumerate() {
                    let (kind, attempts, duration) = match it {
                        ChunkItem::Ok(v, d) => (RawKind::Value(v), 1, d),
                        ChunkItem::Err(e, d) => (RawKind::Raised(e), 1, d),
                        ChunkItem::NotRun => (
                            RawKind::Other(
                                "not_run",
                                "the item was not run because the run stopped before it started"
                                    .into(),
                                None,
                            ),
                            0,
                            Duration::ZERO,
                        ),
                    };
                    emit(Raw {
                        index: start + i as u64,
                        attempts,
                        duration,
                        kind,
                    });
                }
            }
            Err(e) => {
                let kind = match common_err(e) {
                    Ok(never) => match never {},
                    Err(k) => k,
                };
                for i in 0..len {
                    let kind = match &kind {
                        RawKind::Other(k, m, _) => RawKind::Other(k, m.clone(), None),
                        _ => RawKind::Other("executor", "the item failed".into(), None),
                    };
                    emit(Raw {
                        index: start + i as u64,
                        attempts: o.attempts,
                        duration: o.duration,
                        kind,
                    });
                }
            }
        }
        done += len as u64;
        if let Some(cb) = &on_progress {
            exit_gate::with_gil(|py| {
                if let Err(e) = cb.call1(py, (done, total)) {
                    e.print(py);
                }
            });
        }
    };
    let (tx, rx) = crossbeam_channel::bounded(4096);
    if inline {
        // `workers=1`: every item runs on the calling thread, one after the other.
        let (tx, rx) = crossbeam_channel::unbounded();
        let outs = Arc::new(std::sync::Mutex::new(Vec::new()));
        let o2 = Arc::clone(&outs);
        let m = m.on_outcome(move |o: &ItemOutcome<_, _>| {
            o2.lock().unwrap().push((o.index, o.attempts, o.duration));
        });
        let res = exit_gate::allow_threads(py, move || m.collect());
        let summary = res.summary().clone();
        let (succ, fails) = res.into_parts();
        let stats: rustc_hash::FxHashMap<u64, (u32, Duration)> =
            std::mem::take(&mut *outs.lock().unwrap())
                .into_iter()
                .map(|(i, a, d)| (i, (a, d)))
                .collect();
        let mut all: Vec<ItemOutcome<Vec<ChunkItem>, std::convert::Infallible>> = succ
            .into_iter()
            .map(|(index, v)| ItemOutcome {
                index,
                result: Ok(v),
                attempts: 1,
                duration: Duration::ZERO,
            })
            .chain(fails.into_iter().map(|f| ItemOutcome {
                index: f.index,
                result: Err(f.error),
                attempts: f.attempts,
                duration: f.duration,
            }))
            .collect();
        all.sort_unstable_by_key(|o| o.index);
        for mut o in all {
            if let Some((a, d)) = stats.get(&o.index) {
                o.attempts = *a;
                o.duration = *d;
            }
            conv(o, &mut |r| {
                let _ = tx.send(Msg::Item(r));
            });
        }
        let _ = tx.send(Msg::End(summary));
        return Ok(PyRun {
            rx,
            stop: run_stop,
            input_error,
            ended: None,
            cleanup: None,
            counts: (0, 0, 0),
            last: None,
            sorted: true,
            _live: live,
        });
    }
    let stream = exit_gate::allow_threads(py, move || m.stream());
    pump(stream, tx, conv);
    Ok(PyRun {
        rx,
        stop: run_stop,
        input_error,
        ended: None,
        cleanup: None,
        counts: (0, 0, 0),
        last: None,
        sorted: true,
        _live: live,
    })
}

fn raw_to_py(py: Python<'_>, r: Raw) -> PyResult<PyObject> {
    let (tag, payload): (&str, PyObject) = match r.kind {
        RawKind::Value(v) => ("value", v),
        RawKind::Pickled(b) => ("pickled", PyBytes::new_bound(py, &b).into_any().unbind()),
        RawKind::Raised(e) => ("raised", e.into_value(py).into_any()),
        RawKind::LocalErr(e) => ("raised", e.value_bound(py).clone().into_any().unbind()),
        RawKind::Other(kind, msg, pickled) => {
            let p = pickled.map(|b| PyBytes::new_bound(py, &b).into_any().unbind());
            (kind, (msg, p).into_py(py))
        }
    };
    Ok(PyTuple::new_bound(
        py,
        [
            r.index.into_py(py),
            tag.into_py(py),
            payload,
            r.attempts.into_py(py),
            r.duration.as_secs_f64().into_py(py),
        ],
    )
    .into_any()
    .unbind())
}

impl PyRun {
    /// Up to `max` outcomes, waiting up to `timeout` seconds without the GIL; `None` once
    /// the run has ended and everything was handed out.
    fn receive(&mut self, py: Python<'_>, max: usize, timeout: f64) -> Option<Vec<Raw>> {
        if self.ended.is_some() {
            return None;
        }
        let mut got: Vec<Raw> = Vec::new();
        let rx = self.rx.clone();
        let mut end = None;
        let wait = Duration::from_secs_f64(timeout.max(0.0));
        exit_gate::allow_threads(py, || {
            let first = match rx.try_recv() {
                Ok(m) => Ok(m),
                Err(_) => rx.recv_timeout(wait),
            };
            let mut next = first;
            loop {
                match next {
                    Ok(Msg::Item(r)) => got.push(r),
                    Ok(Msg::End(s)) => {
                        end = Some(s);
                        break;
                    }
                    Err(RecvTimeoutError::Timeout) => break,
                    Err(RecvTimeoutError::Disconnected) => {
                        end = Some(Summary::empty(herdsman::RunStatus::ExecutorFailed(
                            herdsman::FatalExecutorError::runtime(
                                "the run's thread ended without a summary",
                            ),
                        )));
                        break;
                    }
                }
                if got.len() >= max {
                    break;
                }
                next = rx.try_recv().map_err(|e| {
                    if e.is_disconnected() {
                        RecvTimeoutError::Disconnected
                    } else {
                        RecvTimeoutError::Timeout
                    }
                });
            }
        });
        let ended = end.is_some();
        if let Some(s) = end {
            self.ended = Some(s);
            if let Some(c) = self.cleanup.take() {
                c();
            }
        }
        for r in &got {
            match &r.kind {
                RawKind::Value(_) | RawKind::Pickled(_) => self.counts.0 += 1,
                RawKind::Other("not_run", _, _) => self.counts.2 += 1,
                _ => self.counts.1 += 1,
            }
        }
        for r in &got {
            if self.last.is_some_and(|l| r.index <= l) {
                self.sorted = false;
            }
            self.last = Some(r.index);
        }
        if got.is_empty() && ended {
            return None;
        }
        Some(got)
    }
}

#[pymethods]
impl PyRun {
    /// Wait up to `timeout` seconds (without the GIL) for outcomes and return at most `max`
    /// of them as `(index, tag, payload, attempts, seconds)` tuples; `None` once the run
    /// has ended and everything was returned.
    fn poll(
        &mut self,
        py: Python<'_>,
        max: usize,
        timeout: f64,
    ) -> PyResult<Option<Vec<PyObject>>> {
        let Some(got) = self.receive(py, max, timeout) else {
            return Ok(None);
        };
        got.into_iter()
            .map(|r| raw_to_py(py, r))
            .collect::<PyResult<Vec<_>>>()
            .map(Some)
    }

    /// Like `poll`, for callers that need only the values of the successes: returns
    /// `(indices, values, others)`, the indices and values (or pickled values) of the
    /// successes as two lists, and every other outcome as `poll` gives it; `None` once the
    /// run has ended and everything was returned.
    fn poll_split(
        &mut self,
        py: Python<'_>,
        max: usize,
        timeout: f64,
    ) -> PyResult<Option<PyObject>> {
        let Some(got) = self.receive(py, max, timeout) else {
            return Ok(None);
        };
        let indices = PyList::empty_bound(py);
        let values = PyList::empty_bound(py);
        let others = PyList::empty_bound(py);
        for r in got {
            match r.kind {
                RawKind::Value(v) => {
                    indices.append(r.index)?;
                    values.append(v)?;
                }
                RawKind::Pickled(b) => {
                    indices.append(r.index)?;
                    values.append(PyBytes::new_bound(py, &b))?;
                }
                _ => others.append(raw_to_py(py, r)?)?,
            }
        }
        Ok(Some((indices, values, others).into_py(py)))
    }

    /// Whether every outcome handed to Python so far came in increasing index order (then
    /// an ordered result needs no sorting).
    fn in_order(&self) -> bool {
        self.sorted
    }

    /// Ask the run to stop: nothing new starts; keep polling for what was running.
    fn cancel(&self) {
        self.stop.stop();
    }

    /// The final counters once the run has ended (a dict), else `None`.
    fn summary(&self, py: Python<'_>) -> PyResult<Option<PyObject>> {
        let Some(s) = &self.ended else {
            return Ok(None);
        };
        let d = PyDict::new_bound(py);
        let (status, msg) = status_name(&s.status);
        d.set_item("status", status)?;
        d.set_item("message", msg)?;
        let (succeeded, failed, not_run) = self.counts;
        d.set_item("succeeded", succeeded)?;
        d.set_item("failed", failed)?;
        d.set_item("not_run", not_run)?;
        d.set_item("retries", s.retries)?;
        d.set_item("admitted", succeeded + failed + not_run)?;
        d.set_item("elapsed", s.elapsed.as_secs_f64())?;
        Ok(Some(d.into_any().unbind()))
    }

    /// The exception the input iterator raised, if it raised one (it ended the input).
    fn input_error(&self, py: Python<'_>) -> Option<PyObject> {
        self.input_error
            .lock()
            .unwrap()
            .as_ref()
            .map(|e| e.value_bound(py).clone().into_any().unbind())
    }
}

/// The number of CPUs herdsman sees (the default worker count of processes).
#[pyfunction]
fn cpu_count() -> usize {
    herdsman::default_workers()
}

/// Stop the worker processes that `executor="process"` keeps between maps; with `close`,
/// also those of maps that end later (the exit hook). Returns how many pools were stopped.
#[pyfunction]
#[pyo3(signature = (close=false))]
fn shutdown_idle_workers(py: Python<'_>, close: bool) -> usize {
    py.allow_threads(move || pools::shutdown_idle(close))
}

/// The native half of the `herdsman` package; use the functions of `herdsman` instead.
/// Stop every live run and return how many calls of a run's threads are inside Python.
/// Called by the package's exit hook.
#[pyfunction]
fn stop_runs_at_exit() -> usize {
    exit_gate::stop_runs()
}

/// Wait (without the GIL) up to `grace` seconds for the runs' threads to leave Python, then,
/// if `shut`, keep them out for good; returns how many calls were still running. Called by
/// the package's exit hook, after [`stop_runs_at_exit`].
#[pyfunction]
fn close_at_exit(py: Python<'_>, grace: f64, shut: bool) -> usize {
    let grace = Duration::from_secs_f64(grace.clamp(0.0, 86_400.0));
    py.allow_threads(move || exit_gate::close(grace, shut))
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(start, m)?)?;
    m.add_function(wrap_pyfunction!(stop_runs_at_exit, m)?)?;
    m.add_function(wrap_pyfunction!(close_at_exit, m)?)?;
    m.add_function(wrap_pyfunction!(cpu_count, m)?)?;
    m.add_function(wrap_pyfunction!(shutdown_idle_workers, m)?)?;
    m.add_class::<PyLimiter>()?;
    m.add_class::<PyRun>()?;
    Ok(())
}
