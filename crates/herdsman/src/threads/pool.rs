//! The thread pool: worker threads with automatic batching (batches aim at about 2 ms of
//! work, are split into pieces, and idle workers steal pieces from a busy worker's batch).
//! Idle workers block on the job queue (no polling) until a job arrives or an owner with
//! pieces left sends a steal hint.

use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError};

use super::spawn_thread;
use crate::direct::DirectOut;
use crate::engine::{run_one, Abandoned, Backend, GiveUp, Halt, Outcomes, Report, Room, Slot};
use crate::executor::AttemptOutcome;
use crate::executor::{AttemptId, FatalExecutorError};
use crate::limiter::Clock;

/// Target run time of one automatic batch.
const TARGET_BATCH: Duration = Duration::from_millis(2);
/// Upper bound of an automatic batch, whatever the window.
const MAX_BATCH: usize = 1 << 16;

/// How many pieces an owner splits its batch into, so idle workers can steal the rest
/// while it is stuck on a straggler.
const PIECES: usize = 8;
/// A piece is never smaller than this much estimated work (each piece costs a message).
const MIN_PIECE: Duration = Duration::from_micros(250);

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

/// What travels on the job queue.
enum Job<T> {
    /// A new batch: the worker that receives it owns it.
    Run(Arc<Cell<T>>),
    /// A hint from an owner with pieces left: steal from this batch.
    Steal(Arc<Cell<T>>),
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
    /// Where batch run times are read.
    clock: Arc<dyn Clock>,
    /// The job queue's sender (`None` once shut down: then idle workers see the queue
    /// disconnected and exit). Owners send steal hints through it.
    jobs: Mutex<Option<Sender<Job<T>>>>,
    /// Workers blocked on the job queue right now.
    idle: AtomicUsize,
    /// Times a worker blocked on the job queue (tests check that an idle pool stays put).
    #[cfg(test)]
    blocked: AtomicUsize,
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

    /// Queue a job; false once the pool is shut down or every worker is gone.
    fn send(&self, job: Job<T>) -> bool {
        let tx = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        tx.as_ref().is_some_and(|tx| tx.send(job).is_ok())
    }

    /// Close the queue: workers exit once it is empty.
    fn close(&self) {
        self.jobs.lock().unwrap_or_else(|e| e.into_inner()).take();
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
    /// Where batch run times are read.
    pub clock: Arc<dyn Clock>,
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
    jobs_rx: Receiver<Job<T>>,
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
    /// A replacement thread could not be started: the next `poll` reports it.
    broken: Option<FatalExecutorError>,
}

impl<T, U, E, F> ThreadPool<T, U, E, F>
where
    T: Send + 'static,
    U: Send + 'static,
    E: Send + 'static,
    F: Fn(T) -> Result<U, E> + Send + Sync + 'static,
{
    /// Start the pool's threads; an error if the operating system refuses one.
    pub(crate) fn new(f: Arc<F>, cfg: PoolConfig) -> Result<Self, FatalExecutorError> {
        let (jobs_tx, jobs_rx) = crossbeam_channel::unbounded();
        let (done_tx, done_rx) = crossbeam_channel::unbounded();
        let workers = cfg.workers.max(1);
        let batch = if cfg.track { 1 } else { cfg.chunk.unwrap_or(1) };
        let auto = !cfg.track && cfg.chunk.is_none();
        let mut pool = ThreadPool {
            f,
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
                clock: cfg.clock,
                jobs: Mutex::new(Some(jobs_tx)),
                idle: AtomicUsize::new(0),
                #[cfg(test)]
                blocked: AtomicUsize::new(0),
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
            broken: None,
        };
        for _ in 0..workers {
            // On failure, dropping the pool lets the threads already started exit.
            pool.spawn_worker()?;
        }
        Ok(pool)
    }

    fn spawn_worker(&mut self) -> Result<(), FatalExecutorError> {
        let id = self.next_worker;
        self.next_worker += 1;
        let f = Arc::clone(&self.f);
        let jobs = self.jobs_rx.clone();
        let done = self.done_tx.clone();
        let shared = Arc::clone(&self.shared);
        spawn_thread(format!("herdsman-worker-{id}"), move || {
            worker_loop(id, &*f, jobs, done, shared)
        })?;
        Ok(())
    }

    fn free_slots(&self) -> usize {
        self.slots.saturating_sub(self.in_flight.len())
    }

    /// Workers blocked on the job queue now, and times any worker blocked on it.
    #[cfg(test)]
    pub(crate) fn idle_counts(&self) -> (usize, usize) {
        (
            self.shared.idle.load(Ordering::SeqCst),
            self.shared.blocked.load(Ordering::SeqCst),
        )
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
    let start = shared.clock.now();
    let (outcomes, spare) = run_batch(f, items, shared);
    let outcomes = shared.place_direct(first, outcomes);
    let elapsed = shared.clock.now().saturating_sub(start);
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
    jobs: Receiver<Job<T>>,
    done: Sender<Done<T, U, E>>,
    shared: Arc<Shared<T, U>>,
) where
    F: Fn(T) -> Result<U, E>,
{
    loop {
        let job = match jobs.try_recv() {
            Ok(job) => job,
            Err(TryRecvError::Disconnected) => return,
            Err(TryRecvError::Empty) => {
                // Nothing queued: help a busy owner before going idle.
                if shared.steal {
                    let victim = shared.active().iter().find(|c| !c.is_empty()).cloned();
                    if let Some(v) = victim {
                        if let Some((first, items)) = v.steal_back() {
                            if !run_piece(f, v.key, first, items, &done, &shared) {
                                return;
                            }
                            continue;
                        }
                    }
                }
                // Block (no polling) until a job or a steal hint arrives.
                shared.idle.fetch_add(1, Ordering::SeqCst);
                #[cfg(test)]
                shared.blocked.fetch_add(1, Ordering::SeqCst);
                let got = jobs.recv();
                shared.idle.fetch_sub(1, Ordering::SeqCst);
                match got {
                    Ok(job) => job,
                    Err(_) => return,
                }
            }
        };
        let cell = match job {
            Job::Run(cell) => cell,
            Job::Steal(v) => {
                if let Some((first, items)) = v.steal_back() {
                    if !run_piece(f, v.key, first, items, &done, &shared) {
                        return;
                    }
                }
                continue;
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
        let mut woke = !shared.steal;
        while let Some((first, items)) = cell.take_front() {
            if !woke {
                // The rest of the batch can be stolen now: hint idle workers.
                woke = true;
                let idle = shared.idle.load(Ordering::SeqCst).min(PIECES - 1);
                for _ in 0..idle {
                    if cell.is_empty() || !shared.send(Job::Steal(Arc::clone(&cell))) {
                        break;
                    }
                }
            }
            let start = shared.clock.now();
            let (outcomes, spare) = run_batch(f, items, &shared);
            let outcomes = shared.place_direct(first, outcomes);
            let msg = Done {
                spare,
                key: cell.key,
                first,
                outcomes,
                elapsed: shared.clock.now().saturating_sub(start),
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
    fn room(&self) -> Room {
        Room {
            free: self.free_slots(),
            batch: self.batch,
            in_flight: self.in_flight.len(),
            // Workers keep a queue of batches when neither timeouts nor a rate limit are
            // on; the input may be pulled as far ahead as that queue goes.
            read_ahead: if self.slots > self.workers {
                self.slots
            } else {
                0
            },
            measures: true,
        }
    }
    fn set_direct(&mut self, out: Arc<DirectOut<U>>) -> bool {
        // With item timeouts an abandoned attempt may still finish and write late, and its
        // retry would write the same slot: keep the copying path there.
        !self.shared.track && self.shared.direct.set(out).is_ok()
    }
    fn recycle(&mut self, values: Option<Vec<U>>) -> Option<Vec<T>> {
        if let Some(v) = values {
            let mut spares = self
                .shared
                .value_spares
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if spares.len() < self.slots * 2 {
                spares.push(v);
            }
        }
        self.spares.pop()
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
        if self.shared.send(Job::Run(cell)) {
            Ok(())
        } else {
            Err(FatalExecutorError::runtime(
                "the thread pool was shut down or every worker thread has exited; start a new run",
            ))
        }
    }
    fn poll(
        &mut self,
        timeout: Duration,
        out: &mut Vec<Report<U, E>>,
    ) -> Result<(), FatalExecutorError> {
        if let Some(e) = self.broken.take() {
            return Err(e);
        }
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
    fn abandon(&mut self, what: GiveUp) -> Vec<Abandoned> {
        match what {
            GiveUp::One(id) => {
                self.abandon_one(id);
                Vec::new()
            }
            GiveUp::All => self.abandon_all(),
        }
    }
    fn stop(&mut self, halt: Halt) {
        match halt {
            Halt::Queued => self.shared.stop.store(true, Ordering::Relaxed),
            Halt::Shutdown => self.shutdown(),
        }
    }
}

impl<T, U, E, F> ThreadPool<T, U, E, F>
where
    T: Send + 'static,
    U: Send + 'static,
    E: Send + 'static,
    F: Fn(T) -> Result<U, E> + Send + Sync + 'static,
{
    /// Give up on one attempt; a worker stuck in it is replaced.
    pub(crate) fn abandon_one(&mut self, id: AttemptId) {
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
            if let Err(e) = self.spawn_worker() {
                self.broken.get_or_insert(e);
            }
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
    /// Close the job queue: workers exit once it is empty; threads stuck in abandoned
    /// attempts exit when their attempt returns.
    pub(crate) fn shutdown(&mut self) {
        self.shared.close();
    }
}

impl<T, U, E, F> Drop for ThreadPool<T, U, E, F> {
    fn drop(&mut self) {
        // Idle workers must see the closed queue and exit.
        self.shared.close();
    }
}
