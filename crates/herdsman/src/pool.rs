//! The thread backends: a pool of worker threads with automatic batching (batches aim at
//! about 2 ms of work, are split into pieces, and idle workers steal pieces from a busy
//! worker's batch), and an inline runner for sequential runs on the calling thread.
//!
//! Threads cannot be killed: an abandoned attempt keeps running on its thread, its late
//! result is discarded, and a fresh thread takes its place so the pool keeps its size. The
//! pool must never let a panic escape a worker (each attempt runs under `catch_unwind`).

use std::collections::VecDeque;

use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use crate::direct::DirectOut;
use crate::engine::{run_one, Abandoned, Backend, Outcomes, Report, Slot};
use crate::executor::AttemptOutcome;
use crate::executor::{AttemptId, FatalExecutorError};

/// Target run time of one automatic batch.
const TARGET_BATCH: Duration = Duration::from_millis(2);
/// Upper bound of an automatic batch, whatever the window.
const MAX_BATCH: usize = 1 << 16;

/// How many pieces an owner splits its batch into, so idle workers can steal the rest
/// while it is stuck on a straggler.
const PIECES: usize = 8;
/// A piece is never smaller than this much estimated work (each piece costs a message).
const MIN_PIECE: Duration = Duration::from_micros(250);
/// How long an idle worker waits for a job before looking for work to steal.
const STEAL_POLL: Duration = Duration::from_millis(1);

/// A submitted batch. Its owner takes pieces from the front; idle workers steal from the
/// back. Items leave the cell exactly once, so each is run (or reported) exactly once.
struct Cell<T> {
    key: AttemptId,
    piece: usize,
    state: Mutex<CellState<T>>,
}

struct CellState<T> {
    /// Items not taken yet, in input order.
    items: Vec<T>,
    /// Input index of `items[0]`.
    front: u64,
}

impl<T> Cell<T> {
    /// `per_item_ns`: the current estimate of one item's run time (0 = unknown).
    fn new(key: AttemptId, items: Vec<T>, per_item_ns: f64) -> Self {
        let min_piece = if per_item_ns > 0.0 {
            (MIN_PIECE.as_nanos() as f64 / per_item_ns) as usize
        } else {
            1
        };
        let piece = items.len().div_ceil(PIECES).max(min_piece).max(1);
        Cell {
            key,
            piece,
            state: Mutex::new(CellState {
                items,
                front: key.index,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CellState<T>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn take_front(&self) -> Option<(u64, Vec<T>)> {
        let mut st = self.lock();
        let len = st.items.len();
        if len == 0 {
            return None;
        }
        let first = st.front;
        let piece = if self.piece >= len {
            // The whole rest: no copy.
            std::mem::take(&mut st.items)
        } else {
            let rest = st.items.split_off(self.piece);
            std::mem::replace(&mut st.items, rest)
        };
        st.front += piece.len() as u64;
        Some((first, piece))
    }

    fn steal_back(&self) -> Option<(u64, Vec<T>)> {
        let mut st = self.lock();
        let len = st.items.len();
        if len == 0 {
            return None;
        }
        let n = len.div_ceil(2);
        let first = st.front + (len - n) as u64;
        Some((first, st.items.split_off(len - n)))
    }

    /// Take every item still waiting: `(first index, count)`.
    fn drain_all(&self) -> Option<(u64, usize)> {
        let mut st = self.lock();
        let n = st.items.len();
        if n == 0 {
            return None;
        }
        st.items.clear();
        let first = st.front;
        st.front += n as u64;
        Some((first, n))
    }

    fn is_empty(&self) -> bool {
        self.lock().items.is_empty()
    }
}

struct Done<T, U, E> {
    /// The emptied item buffer, for reuse by the input.
    spare: Vec<T>,
    /// The batch this piece belongs to.
    key: AttemptId,
    /// Input index of the piece's first item.
    first: u64,
    outcomes: Outcomes<U, E>,
    elapsed: Duration,
}

#[derive(Default)]
struct Registry {
    /// Which attempt each worker is running (only kept when item timeouts are on).
    current: HashMap<usize, AttemptId>,
    /// Abandoned before a worker picked them up.
    abandoned: HashSet<AttemptId>,
    /// Workers replaced while stuck: they exit after their attempt.
    retired: HashSet<usize>,
}

struct Shared<T, U> {
    stop: AtomicBool,
    /// Where successful pieces go directly (ordered collect with a known length).
    direct: std::sync::OnceLock<Arc<DirectOut<U>>>,
    /// Emptied value buffers handed back by the scheduler, for reuse.
    value_spares: Mutex<Vec<Vec<U>>>,
    registry: Mutex<Registry>,
    /// Batches being worked on, for idle workers to steal from.
    active: Mutex<Vec<Arc<Cell<T>>>>,
    track: bool,
    steal: bool,
}

impl<T, U> Shared<T, U> {
    /// Move an all-successful piece into the direct output, if the run has one.
    fn place_direct<E>(&self, first: u64, outcomes: Outcomes<U, E>) -> Outcomes<U, E> {
        let Some(out) = self.direct.get() else {
            return outcomes;
        };
        let Outcomes::AllOk(mut values) = outcomes else {
            return outcomes;
        };
        let n = values.len();
        if !out.write(first, &mut values) {
            return Outcomes::AllOk(values);
        }
        let mut spares = self.value_spares.lock().unwrap_or_else(|e| e.into_inner());
        if spares.len() < 16 {
            spares.push(values);
        }
        Outcomes::Written(n)
    }

    fn values_buffer(&self, cap: usize) -> Vec<U> {
        let spare = self
            .value_spares
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop();
        match spare {
            Some(mut v) => {
                v.reserve(cap);
                v
            }
            None => Vec::with_capacity(cap),
        }
    }

    fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn active(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Cell<T>>>> {
        self.active.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Configuration of the thread backend.
pub(crate) struct PoolConfig {
    pub workers: usize,
    /// Fixed batch size; `None` = automatic.
    pub chunk: Option<usize>,
    /// Largest automatic batch (derived from the window).
    pub max_batch: usize,
    /// Per-item timeouts are on: batches of one, one slot per worker, workers registered.
    pub track: bool,
    /// Rate-limited: one slot per worker, so an attempt starts when its token is taken
    /// instead of waiting in a queue with it.
    pub rate_limited: bool,
}

struct Track<T> {
    len: usize,
    remaining: usize,
    /// `(first index, count)` of every piece reported so far.
    reported: Vec<(u64, usize)>,
    cell: Arc<Cell<T>>,
}

pub(crate) struct ThreadPool<T, U, E, F> {
    f: Arc<F>,
    jobs_tx: Option<Sender<Arc<Cell<T>>>>,
    jobs_rx: Receiver<Arc<Cell<T>>>,
    done_tx: Sender<Done<T, U, E>>,
    done_rx: Receiver<Done<T, U, E>>,
    shared: Arc<Shared<T, U>>,
    in_flight: HashMap<AttemptId, Track<T>>,
    slots: usize,
    batch: usize,
    auto: bool,
    max_batch: usize,
    per_item_ns: f64,
    next_worker: usize,
    workers: usize,
    /// Emptied item buffers returned by workers, for the input to fill again.
    spares: Vec<Vec<T>>,
}

impl<T, U, E, F> ThreadPool<T, U, E, F>
where
    T: Send + 'static,
    U: Send + 'static,
    E: Send + 'static,
    F: Fn(T) -> Result<U, E> + Send + Sync + 'static,
{
    pub(crate) fn new(f: Arc<F>, cfg: PoolConfig) -> Self {
        let (jobs_tx, jobs_rx) = crossbeam_channel::unbounded();
        let (done_tx, done_rx) = crossbeam_channel::unbounded();
        let workers = cfg.workers.max(1);
        let batch = if cfg.track { 1 } else { cfg.chunk.unwrap_or(1) };
        let auto = !cfg.track && cfg.chunk.is_none();
        let mut pool = ThreadPool {
            f,
            jobs_tx: Some(jobs_tx),
            jobs_rx,
            done_tx,
            done_rx,
            shared: Arc::new(Shared {
                stop: AtomicBool::new(false),
                direct: std::sync::OnceLock::new(),
                value_spares: Mutex::new(Vec::new()),
                registry: Mutex::new(Registry::default()),
                active: Mutex::new(Vec::new()),
                track: cfg.track,
                steal: auto || batch > 1,
            }),
            in_flight: HashMap::default(),
            slots: if cfg.track || cfg.rate_limited {
                workers
            } else {
                workers * 4
            },
            batch: batch.max(1),
            auto,
            max_batch: cfg.max_batch.clamp(1, MAX_BATCH),
            per_item_ns: 0.0,
            next_worker: 0,
            workers,
            spares: Vec::new(),
        };
        for _ in 0..workers {
            pool.spawn_worker();
        }
        pool
    }

    fn spawn_worker(&mut self) {
        let id = self.next_worker;
        self.next_worker += 1;
        let f = Arc::clone(&self.f);
        let jobs = self.jobs_rx.clone();
        let done = self.done_tx.clone();
        let shared = Arc::clone(&self.shared);
        std::thread::Builder::new()
            .name(format!("herdsman-worker-{id}"))
            .spawn(move || worker_loop(id, &*f, jobs, done, shared))
            .expect("the operating system refused to start a worker thread; lower `workers`");
    }

    fn learn(&mut self, len: usize, elapsed: Duration) {
        if len == 0 {
            return;
        }
        let per = elapsed.as_nanos() as f64 / len as f64;
        self.per_item_ns = if self.per_item_ns == 0.0 {
            per
        } else {
            0.7 * self.per_item_ns + 0.3 * per
        };
        if !self.auto {
            return;
        }
        let ideal = (TARGET_BATCH.as_nanos() as f64 / self.per_item_ns.max(1.0)) as usize;
        self.batch = ideal
            .min(self.batch.saturating_mul(2))
            .clamp(1, self.max_batch);
    }
    fn accept_done(&mut self, d: Done<T, U, E>, out: &mut Vec<Report<U, E>>) {
        let len = d.outcomes.len();
        if d.spare.capacity() > 0 && self.spares.len() < self.slots * 2 {
            self.spares.push(d.spare);
        }
        let known = match self.in_flight.get_mut(&d.key) {
            Some(t) => {
                t.remaining -= len;
                if t.remaining == 0 {
                    self.in_flight.remove(&d.key);
                } else {
                    t.reported.push((d.first, len));
                }
                true
            }
            None => false,
        };
        if known {
            if !self.shared.stop.load(Ordering::Relaxed) {
                self.learn(len, d.elapsed);
            }
            out.push(Report {
                first: AttemptId {
                    index: d.first,
                    attempt: d.key.attempt,
                },
                outcomes: d.outcomes,
                per_item: Some(d.elapsed / len.max(1) as u32),
            });
        } else if self.shared.track {
            self.shared.registry().abandoned.remove(&d.key);
        }
    }
}

/// Run one piece of a batch and report it. False when the pool is gone.
fn run_piece<T, U, E, F>(
    f: &F,
    key: AttemptId,
    first: u64,
    items: Vec<T>,
    done: &Sender<Done<T, U, E>>,
    shared: &Shared<T, U>,
) -> bool
where
    F: Fn(T) -> Result<U, E>,
{
    let start = Instant::now();
    let (outcomes, spare) = run_batch(f, items, shared);
    let outcomes = shared.place_direct(first, outcomes);
    let elapsed = start.elapsed();
    done.send(Done {
        spare,
        key,
        first,
        outcomes,
        elapsed,
    })
    .is_ok()
}

fn worker_loop<T, U, E, F>(
    id: usize,
    f: &F,
    jobs: Receiver<Arc<Cell<T>>>,
    done: Sender<Done<T, U, E>>,
    shared: Arc<Shared<T, U>>,
) where
    F: Fn(T) -> Result<U, E>,
{
    loop {
        let cell = if shared.steal {
            match jobs.recv_timeout(STEAL_POLL) {
                Ok(c) => c,
                Err(RecvTimeoutError::Timeout) => {
                    let victim = shared.active().iter().find(|c| !c.is_empty()).cloned();
                    if let Some(v) = victim {
                        if let Some((first, items)) = v.steal_back() {
                            if !run_piece(f, v.key, first, items, &done, &shared) {
                                return;
                            }
                        }
                    }
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => return,
            }
        } else {
            match jobs.recv() {
                Ok(c) => c,
                Err(_) => return,
            }
        };
        if shared.track {
            let mut reg = shared.registry();
            if reg.abandoned.remove(&cell.key) {
                continue;
            }
            reg.current.insert(id, cell.key);
        }
        if shared.steal {
            shared.active().push(Arc::clone(&cell));
        }
        let mut alive = true;
        while let Some((first, items)) = cell.take_front() {
            let start = Instant::now();
            let (outcomes, spare) = run_batch(f, items, &shared);
            let outcomes = shared.place_direct(first, outcomes);
            let msg = Done {
                spare,
                key: cell.key,
                first,
                outcomes,
                elapsed: start.elapsed(),
            };
            if shared.track {
                let mut reg = shared.registry();
                reg.current.remove(&id);
                if reg.retired.remove(&id) {
                    // Replaced while stuck: the result is late and discarded; leave the pool.
                    return;
                }
            }
            if done.send(msg).is_err() {
                alive = false;
                break;
            }
        }
        if shared.steal {
            shared.active().retain(|c| !Arc::ptr_eq(c, &cell));
        }
        if !alive {
            return;
        }
    }
}

/// Run a batch; values stay a plain `Vec<U>` as long as every item succeeds.
/// Returns the emptied item buffer too.
fn run_batch<T, U, E, F>(
    f: &F,
    mut items: Vec<T>,
    shared: &Shared<T, U>,
) -> (Outcomes<U, E>, Vec<T>)
where
    F: Fn(T) -> Result<U, E>,
{
    let stop = &shared.stop;
    let n = items.len();
    let mut values = shared.values_buffer(n);
    let mut it = items.drain(..);
    let mut odd = None;
    for item in it.by_ref() {
        if stop.load(Ordering::Relaxed) {
            odd = Some(Slot::NotRun);
            break;
        }
        match run_one(f, item) {
            AttemptOutcome::Success(v) => values.push(v),
            other => {
                odd = Some(Slot::Done(other));
                break;
            }
        }
    }
    let Some(odd) = odd else {
        drop(it);
        return (Outcomes::AllOk(values), items);
    };
    let mut slots: Vec<Slot<U, E>> = Vec::with_capacity(n);
    slots.extend(
        values
            .into_iter()
            .map(|v| Slot::Done(AttemptOutcome::Success(v))),
    );
    slots.push(odd);
    for item in it {
        if stop.load(Ordering::Relaxed) {
            slots.push(Slot::NotRun);
        } else {
            slots.push(Slot::Done(run_one(f, item)));
        }
    }
    (Outcomes::Mixed(slots), items)
}

impl<T, U, E, F> Backend<T, U, E> for ThreadPool<T, U, E, F>
where
    T: Send + 'static,
    U: Send + 'static,
    E: Send + 'static,
    F: Fn(T) -> Result<U, E> + Send + Sync + 'static,
{
    fn free_slots(&self) -> usize {
        self.slots.saturating_sub(self.in_flight.len())
    }
    fn batch_size(&self) -> usize {
        self.batch
    }
    fn in_flight(&self) -> usize {
        self.in_flight.len()
    }
    fn take_spare_input(&mut self) -> Option<Vec<T>> {
        self.spares.pop()
    }
    fn read_ahead(&self) -> usize {
        // Workers keep a queue of batches when neither timeouts nor a rate limit are on;
        // the input may be pulled as far ahead as that queue goes.
        if self.slots > self.workers {
            self.slots
        } else {
            0
        }
    }
    fn set_direct(&mut self, out: Arc<DirectOut<U>>) -> bool {
        // With item timeouts an abandoned attempt may still finish and write late, and its
        // retry would write the same slot: keep the copying path there.
        !self.shared.track && self.shared.direct.set(out).is_ok()
    }
    fn recycle_values(&mut self, v: Vec<U>) {
        let mut spares = self
            .shared
            .value_spares
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if spares.len() < self.slots * 2 {
            spares.push(v);
        }
    }
    fn measures(&self) -> bool {
        true
    }
    fn submit(&mut self, first: AttemptId, items: Vec<T>) -> Result<(), FatalExecutorError> {
        let len = items.len();
        let cell = Arc::new(Cell::new(first, items, self.per_item_ns));
        self.in_flight.insert(
            first,
            Track {
                len,
                remaining: len,
                reported: Vec::new(),
                cell: Arc::clone(&cell),
            },
        );
        let tx = self.jobs_tx.as_ref().ok_or_else(|| FatalExecutorError {
            message: "the thread pool was already shut down; start a new run".into(),
        })?;
        tx.send(cell).map_err(|_| FatalExecutorError {
            message: "every worker thread has exited; start a new run".into(),
        })
    }
    fn poll(
        &mut self,
        timeout: Duration,
        out: &mut Vec<Report<U, E>>,
    ) -> Result<(), FatalExecutorError> {
        // With every slot full and several milliseconds of work queued, nothing needs the
        // scheduler soon: sleep briefly and take every report at once instead of being woken
        // for each piece (wake-ups steal CPU from the workers on small machines).
        let queued_ns = self.in_flight.len() as f64 * self.batch as f64 * self.per_item_ns;
        if !self.shared.track && self.free_slots() == 0 && queued_ns >= 4e6 {
            std::thread::sleep(timeout.min(Duration::from_millis(1)));
            let mut got = self.done_rx.try_recv().ok();
            if got.is_none() {
                return Ok(());
            }
            while let Some(d) = got.take() {
                self.accept_done(d, out);
                got = self.done_rx.try_recv().ok();
            }
            return Ok(());
        }
        let first = match self.done_rx.recv_timeout(timeout) {
            Ok(d) => d,
            Err(RecvTimeoutError::Timeout) => return Ok(()),
            Err(RecvTimeoutError::Disconnected) => unreachable!("the pool holds a sender"),
        };
        let mut next = Some(first);
        while let Some(d) = next.take() {
            self.accept_done(d, out);
            next = self.done_rx.try_recv().ok();
        }
        Ok(())
    }
    fn abandon(&mut self, id: AttemptId) {
        if self.in_flight.remove(&id).is_none() {
            return;
        }
        if !self.shared.track {
            return;
        }
        let stuck = {
            let mut reg = self.shared.registry();
            let worker = reg.current.iter().find(|(_, a)| **a == id).map(|(w, _)| *w);
            match worker {
                Some(w) => {
                    reg.current.remove(&w);
                    reg.retired.insert(w);
                    true
                }
                None => {
                    reg.abandoned.insert(id);
                    false
                }
            }
        };
        if stuck {
            self.spawn_worker();
        }
    }
    fn abandon_all(&mut self) -> Vec<Abandoned> {
        self.shared.stop.store(true, Ordering::Relaxed);
        let mut out = Vec::new();
        for (key, t) in self.in_flight.drain() {
            let mut covered = t.reported;
            // Items still in the cell never started.
            if let Some((first, len)) = t.cell.drain_all() {
                out.push(Abandoned {
                    first: AttemptId {
                        index: first,
                        attempt: key.attempt,
                    },
                    len,
                    started: false,
                });
                covered.push((first, len));
            }
            // The rest were taken by a worker and not reported: they had started.
            covered.sort_unstable();
            let mut at = key.index;
            let end = key.index + t.len as u64;
            for (first, len) in covered.into_iter().chain([(end, 0)]) {
                if first > at {
                    out.push(Abandoned {
                        first: AttemptId {
                            index: at,
                            attempt: key.attempt,
                        },
                        len: (first - at) as usize,
                        started: true,
                    });
                }
                at = at.max(first + len as u64);
            }
        }
        out.sort_by_key(|a| a.first);
        out
    }
    fn stop_queued(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
    }
    fn shutdown(&mut self) {
        // Workers exit once the queue is empty; threads stuck in abandoned attempts exit
        // when their attempt returns.
        self.jobs_tx = None;
    }
}

/// Runs attempts on the calling thread, one at a time, inside `poll`.
pub(crate) struct Inline<T, F> {
    f: F,
    queue: VecDeque<(AttemptId, T)>,
    item_timeout: Option<Duration>,
    stopped: bool,
}

impl<T, F> Inline<T, F> {
    pub(crate) fn new(f: F, item_timeout: Option<Duration>) -> Self {
        Inline {
            f,
            queue: VecDeque::new(),
            item_timeout,
            stopped: false,
        }
    }
}

impl<T, U, E, F> Backend<T, U, E> for Inline<T, F>
where
    T: Send,
    F: Fn(T) -> Result<U, E> + Send,
{
    fn free_slots(&self) -> usize {
        usize::from(self.queue.is_empty())
    }
    fn batch_size(&self) -> usize {
        1
    }
    fn in_flight(&self) -> usize {
        self.queue.len()
    }
    fn measures(&self) -> bool {
        true
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
        let start = Instant::now();
        let outcome = run_one(&self.f, item);
        let elapsed = start.elapsed();
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
    fn abandon(&mut self, id: AttemptId) {
        self.queue.retain(|(q, _)| *q != id);
    }
    fn abandon_all(&mut self) -> Vec<Abandoned> {
        self.queue
            .drain(..)
            .map(|(first, _)| Abandoned {
                first,
                len: 1,
                started: false,
            })
            .collect()
    }
    fn stop_queued(&mut self) {
        self.stopped = true;
    }
    fn shutdown(&mut self) {}
}

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
pub struct ThreadExecutor<T, U, E, F> {
    pool: ThreadPool<T, U, E, F>,
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
        self.pool.submit(id, vec![item])
    }

    fn poll(
        &mut self,
        timeout: Duration,
        out: &mut crate::executor::Finished<U, E>,
    ) -> Result<(), FatalExecutorError> {
        self.pool.poll(timeout, &mut self.buf)?;
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
        self.pool.abandon(id);
    }

    fn shutdown(&mut self) {
        self.pool.shutdown();
    }
}
