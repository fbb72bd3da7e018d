//! The builder users configure a run with (`map`, `map_with`), and the collecting sink.
//!
//! It only gathers options and picks a backend; it must never run anything before
//! `collect`/`run`/`stream` is called.

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use crate::direct::DirectOut;
use crate::engine::{Backend, Engine, ExecutorBackend, Policies, Sink};
use crate::executor::Executor;
use crate::executor::FatalExecutorError;
use crate::limiter::{Clock, Limiter, RateLimit};
use crate::outcome::{Failure, ItemOutcome, Progress, RunResult, RunStatus, Successes, Summary};
use crate::reorder::Reorder;
use crate::retry::Retry;
use crate::stop::StopToken;
use crate::stream::Stream;
use crate::threads::{spawn_thread, Inline, PoolConfig, ThreadPool};

/// Largest output reserved up front for direct output.
const DIRECT_MAX_BYTES: usize = 1 << 30;

/// Default most items admitted but not yet handed out.
pub const DEFAULT_WINDOW: usize = 1 << 16;

/// Marker: a run on herdsman's own thread pool (see [`map`](crate::map)).
#[derive(Debug, Clone, Copy, Default)]
pub struct Threads;

/// Marker: a run on a caller-supplied [`Executor`] (see [`map_with`](crate::map_with)).
#[derive(Debug, Clone, Copy, Default)]
pub struct Custom;

/// What the backend factory gets to know about the run.
pub(crate) struct BackendCfg {
    pub workers: Option<usize>,
    pub sequential: bool,
    pub chunk: Option<usize>,
    pub window: usize,
    pub item_timeout: Option<Duration>,
    pub rate_limited: bool,
    /// The run's clock.
    pub clock: Arc<dyn Clock>,
}

pub(crate) type MakeBackend<T, U, E> =
    Box<dyn FnOnce(&BackendCfg) -> Result<Box<dyn Backend<T, U, E>>, FatalExecutorError> + Send>;

/// The summary of a run that could not start: nothing was admitted.
pub(crate) fn failed_to_start(e: &FatalExecutorError) -> Summary {
    Summary {
        status: RunStatus::ExecutorFailed(e.clone()),
        succeeded: 0,
        failed: 0,
        not_run: 0,
        retries: 0,
        admitted: 0,
        elapsed: Duration::ZERO,
    }
}

/// A configured run. Create it with [`map`](crate::map) or [`map_with`](crate::map_with),
/// set options, then call [`collect`](Map::collect) or [`stream`](Map::stream).
#[must_use = "a Map does nothing until `collect`, `stream` or `run` is called"]
pub struct Map<I: Iterator, U, E, K = Threads> {
    input: I,
    make: MakeBackend<I::Item, U, E>,
    policies: Policies<I::Item, U, E>,
    workers: Option<usize>,
    sequential: bool,
    chunk: Option<usize>,
    /// The fast path of ordered `collect`, for runs on herdsman's threads.
    fast: Option<FastCollect<I, U, E>>,
    _kind: PhantomData<K>,
}

/// The number of worker threads used when `workers` is not set.
pub fn default_workers() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// The fast path of ordered `collect` (see `fast`): input, its exact length, workers, clock.
pub(crate) type FastCollect<I, U, E> =
    Box<dyn FnOnce(SendInput<I>, usize, usize, &Arc<dyn Clock>) -> RunResult<U, E> + Send>;

/// An input proven `Send` where it was wrapped: the fast path is built when the input's type
/// is not yet known to be `Send`, and run only from `collect`, which requires it.
pub(crate) struct SendInput<I>(I);

impl<I: Send> SendInput<I> {
    pub(crate) fn new(input: I) -> Self {
        SendInput(input)
    }
}

impl<I> SendInput<I> {
    pub(crate) fn get_mut(&mut self) -> &mut I {
        &mut self.0
    }

    /// A bitwise copy of the input, `Send` like the original.
    ///
    /// # Safety
    /// `I` must be plain data whose bitwise copy is a clone: nothing owned, no `Drop`, no
    /// interior mutability (so the copy and the original never affect each other).
    pub(crate) unsafe fn bitwise_copy(&self) -> Self {
        // SAFETY: guaranteed by the caller (see above).
        SendInput(unsafe { std::ptr::read(&self.0) })
    }
}

// SAFETY: the only constructor, `new`, requires `I: Send`.
unsafe impl<I> Send for SendInput<I> {}

pub(crate) fn thread_map<I, T, U, E, F>(items: I, f: F) -> Map<I::IntoIter, U, E, Threads>
where
    I: IntoIterator<Item = T>,
    T: Send + 'static,
    U: Send + 'static,
    E: Send + 'static,
    F: Fn(T) -> Result<U, E> + Send + Sync + 'static,
{
    let f = Arc::new(f);
    let fast_f = Arc::clone(&f);
    let fast: FastCollect<I::IntoIter, U, E> = Box::new(move |input, n, workers, clock| {
        crate::fast::collect(input, n, &*fast_f, workers, clock)
    });
    let make: MakeBackend<T, U, E> = Box::new(move |cfg: &BackendCfg| {
        let workers = cfg.workers.unwrap_or_else(default_workers).max(1);
        if cfg.sequential || workers == 1 {
            let f = move |x: T| f(x);
            let inline = Inline::new(f, cfg.item_timeout, Arc::clone(&cfg.clock));
            return Ok(Box::new(inline) as Box<dyn Backend<T, U, E>>);
        }
        let chunk = if cfg.rate_limited { Some(1) } else { cfg.chunk };
        Ok(Box::new(ThreadPool::new(
            f,
            PoolConfig {
                workers,
                chunk,
                max_batch: (cfg.window / (2 * workers)).max(1),
                track: cfg.item_timeout.is_some(),
                rate_limited: cfg.rate_limited,
                clock: Arc::clone(&cfg.clock),
            },
        )?))
    });
    let mut m = Map::new(items.into_iter(), make);
    m.fast = Some(fast);
    m
}

pub(crate) fn executor_map<I, X>(
    items: I,
    executor: X,
) -> Map<I::IntoIter, X::Output, X::Error, Custom>
where
    I: IntoIterator,
    X: Executor<I::Item> + 'static,
    I::Item: 'static,
{
    let make: MakeBackend<I::Item, X::Output, X::Error> = Box::new(move |cfg: &BackendCfg| {
        Ok(Box::new(ExecutorBackend::new(executor, cfg.rate_limited)) as _)
    });
    Map::new(items.into_iter(), make)
}

impl<I: Iterator, U, E, K> Map<I, U, E, K> {
    pub(crate) fn new(input: I, make: MakeBackend<I::Item, U, E>) -> Self {
        Map {
            input,
            make,
            policies: Policies::default(),
            workers: None,
            sequential: false,
            chunk: None,
            fast: None,
            _kind: PhantomData,
        }
    }

    #[cfg(feature = "async")]
    pub(crate) fn set_workers(mut self, n: usize) -> Self {
        self.workers = Some(n);
        self
    }

    /// The most items admitted but not yet handed out (default 65 536). Input is pulled
    /// lazily, on a thread of its own, only when a slot is free, so an endless iterator
    /// works; after a stop the input is never pulled again. In ordered streams, results waiting for an earlier
    /// straggler count against the window, which bounds memory.
    ///
    /// ```
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    /// static NOW: AtomicUsize = AtomicUsize::new(0);
    /// static MAX: AtomicUsize = AtomicUsize::new(0);
    /// let run = herdsman::map(0..200, |x: u32| {
    ///     let n = NOW.fetch_add(1, Ordering::SeqCst) + 1;
    ///     MAX.fetch_max(n, Ordering::SeqCst);
    ///     NOW.fetch_sub(1, Ordering::SeqCst);
    ///     Ok::<_, ()>(x)
    /// })
    /// .workers(4)
    /// .window(3)
    /// .collect();
    /// assert!(run.is_ok());
    /// assert!(MAX.load(Ordering::SeqCst) <= 3);
    /// ```
    pub fn window(mut self, n: usize) -> Self {
        self.policies.window = Some(n.max(1));
        self
    }

    /// Results in input order (`true`, the default) or in completion order (`false`).
    ///
    /// ```
    /// let mut got: Vec<u32> = herdsman::map(0..10, |x: u32| Ok::<_, ()>(x))
    ///     .ordered(false)
    ///     .collect()
    ///     .into_values()
    ///     .unwrap();
    /// got.sort();
    /// assert_eq!(got, (0..10).collect::<Vec<_>>());
    /// ```
    pub fn ordered(mut self, ordered: bool) -> Self {
        self.policies.ordered = ordered;
        self
    }

    /// Limit attempts (retries included) to this rate, with a limiter private to this run.
    ///
    /// An attempt takes its token when it starts: a rate-limited run hands workers only as
    /// many attempts as they run at once, so none waits in a queue holding a token, and a
    /// [`Limiter::pause`] holds back everything not started yet.
    ///
    /// ```
    /// use herdsman::RateLimit;
    /// use std::num::NonZeroU32;
    /// let run = herdsman::map(0..3, |x: u32| Ok::<_, ()>(x))
    ///     .rate_limit(RateLimit::per_second(NonZeroU32::new(1000).unwrap()).burst(3))
    ///     .collect();
    /// assert!(run.is_ok());
    /// ```
    pub fn rate_limit(mut self, rate: RateLimit) -> Self {
        self.policies.limiter = Some(Limiter::new(rate));
        self
    }

    /// Draw attempts from a shared [`Limiter`] (several runs and threads may share one).
    pub fn limiter(mut self, limiter: Limiter) -> Self {
        self.policies.limiter = Some(limiter);
        self
    }

    /// Stop the whole run after `d`: nothing new is admitted, attempts still running are
    /// given up and reported [`ItemError::TimedOut`](crate::ItemError::TimedOut), and the
    /// status is `TimedOut`.
    ///
    /// ```
    /// use std::time::Duration;
    /// let run = herdsman::map(0.., |x: u64| {
    ///     std::thread::sleep(Duration::from_millis(5));
    ///     Ok::<_, ()>(x)
    /// })
    /// .deadline(Duration::from_millis(100))
    /// .collect();
    /// assert_eq!(run.status(), &herdsman::RunStatus::TimedOut);
    /// ```
    pub fn deadline(mut self, d: Duration) -> Self {
        self.policies.deadline = Some(d);
        self
    }

    /// Give up on an attempt that runs longer than `d`; it is reported
    /// [`ItemError::TimedOut`](crate::ItemError::TimedOut) (or retried, see
    /// [`Retry::retry_timeouts`]).
    ///
    /// Threads cannot be killed: on the thread pool the attempt keeps running in the
    /// background, its late result is discarded, and a new thread replaces the busy one so
    /// throughput holds. Batching is off while a timeout is set. In sequential runs the
    /// attempt cannot be interrupted at all: it is marked timed out after it returns.
    /// Executors of worker processes kill the process instead.
    ///
    /// ```
    /// use std::time::Duration;
    /// let run = herdsman::map(0..2, |x: u64| {
    ///     if x == 0 { std::thread::sleep(Duration::from_millis(300)); }
    ///     Ok::<_, ()>(x)
    /// })
    /// .workers(2)
    /// .item_timeout(Duration::from_millis(50))
    /// .collect();
    /// assert_eq!(run.failures()[0].index, 0);
    /// ```
    pub fn item_timeout(mut self, d: Duration) -> Self {
        self.policies.item_timeout = Some(d);
        self
    }

    /// Stop admitting after `n` final failures; admitted items that had not started are
    /// reported [`ItemError::NotRun`](crate::ItemError::NotRun) and the status is `Aborted`.
    ///
    /// ```
    /// let run = herdsman::map(0.., |x: u64| if x % 2 == 0 { Err("even") } else { Ok(x) })
    ///     .max_errors(3)
    ///     .collect();
    /// assert_eq!(run.status(), &herdsman::RunStatus::Aborted);
    /// ```
    pub fn max_errors(mut self, n: u64) -> Self {
        self.policies.max_errors = Some(n.max(1));
        self
    }

    /// Cancel the run from elsewhere (see [`StopToken`]).
    pub fn stop_token(mut self, token: StopToken) -> Self {
        self.policies.stop = Some(token);
        self
    }

    /// The number of items, for progress reports, when the input's `size_hint` is not exact.
    pub fn total_hint(mut self, n: u64) -> Self {
        self.policies.total_hint = Some(n);
        self
    }

    /// Called after each item's final outcome (not per attempt), on the scheduler thread.
    ///
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// let seen = Arc::new(Mutex::new(0));
    /// let s = seen.clone();
    /// herdsman::map(0..5, |x: u32| Ok::<_, ()>(x))
    ///     .on_progress(move |p| *s.lock().unwrap() = p.finished())
    ///     .collect();
    /// assert_eq!(*seen.lock().unwrap(), 5);
    /// ```
    pub fn on_progress(mut self, cb: impl FnMut(&Progress) + Send + 'static) -> Self {
        self.policies.on_progress = Some(Box::new(cb));
        self
    }

    /// Called with each item's final outcome, on the scheduler thread.
    ///
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// let failed = Arc::new(Mutex::new(Vec::new()));
    /// let f2 = failed.clone();
    /// herdsman::map(0..4, |x: u32| if x == 2 { Err("two") } else { Ok(x) })
    ///     .on_outcome(move |o| if o.result.is_err() { f2.lock().unwrap().push(o.index) })
    ///     .collect();
    /// assert_eq!(*failed.lock().unwrap(), vec![2]);
    /// ```
    pub fn on_outcome(mut self, cb: impl FnMut(&ItemOutcome<U, E>) + Send + 'static) -> Self {
        self.policies.on_outcome = Some(Box::new(cb));
        self
    }

    /// Read every time of the run (retry backoff, item timeouts, the deadline, measured
    /// durations) from `clock` instead of the system's monotonic clock. Meant for tests: with
    /// a [`ManualClock`](crate::ManualClock), time moves only when the test advances it.
    /// (A [`Limiter`] has its own clock: see [`Limiter::with_clock`].)
    ///
    /// ```
    /// use herdsman::ManualClock;
    /// use std::time::Duration;
    /// let clock = ManualClock::new();
    /// // The deadline is one simulated hour away: the run completes.
    /// let run = herdsman::map(0..3u32, |x| Ok::<_, ()>(x))
    ///     .clock(clock.clone())
    ///     .deadline(Duration::from_secs(3600))
    ///     .collect();
    /// assert!(run.is_ok());
    /// ```
    pub fn clock(mut self, clock: impl Clock + 'static) -> Self {
        self.policies.clock = Arc::new(clock);
        self
    }

    /// Retry failed attempts. Items are cloned before each attempt that may be retried,
    /// hence `T: Clone` here only. A waiting retry does not occupy a worker.
    ///
    /// ```
    /// use herdsman::Retry;
    /// use std::sync::atomic::{AtomicU32, Ordering};
    /// use std::time::Duration;
    /// static CALLS: AtomicU32 = AtomicU32::new(0);
    /// let run = herdsman::map(vec![7u32], |x| {
    ///     if CALLS.fetch_add(1, Ordering::SeqCst) < 2 { Err("flaky") } else { Ok(x) }
    /// })
    /// .retry(Retry::attempts(3).backoff(Duration::from_millis(1)))
    /// .collect();
    /// assert_eq!(run.into_values().unwrap(), vec![7]);
    /// ```
    pub fn retry(mut self, policy: Retry<E>) -> Self
    where
        I::Item: Clone,
    {
        self.policies.retry = Some(policy);
        self.policies.cloner = Some(<I::Item as Clone>::clone);
        self
    }

    /// The input's exact length when `collect` may take the fast path: an ordered run on
    /// several of herdsman's threads, an input of exactly known length, and no policy that
    /// needs the scheduler (retry, rate limit, timeouts, deadline, error limit, stop token,
    /// callbacks, an explicit window or chunk size).
    fn fast_len(&self) -> Option<usize> {
        let p = &self.policies;
        let workers = self.workers.unwrap_or_else(default_workers);
        let plain = self.fast.is_some()
            && p.ordered
            && !self.sequential
            && workers > 1
            && self.chunk.is_none()
            && p.window.is_none()
            && p.limiter.is_none()
            && p.retry.is_none()
            && p.deadline.is_none()
            && p.item_timeout.is_none()
            && p.max_errors.is_none()
            && p.stop.is_none()
            && p.on_progress.is_none()
            && p.on_outcome.is_none();
        if !plain {
            return None;
        }
        match self.input.size_hint() {
            (lo, Some(hi)) if lo == hi && lo > 0 => {
                let bytes = lo.saturating_mul(std::mem::size_of::<U>().max(1));
                (bytes <= DIRECT_MAX_BYTES).then_some(lo)
            }
            _ => None,
        }
    }

    fn resolve_window(&self) -> usize {
        self.policies.window.unwrap_or(DEFAULT_WINDOW)
    }

    fn backend_cfg(&self) -> BackendCfg {
        BackendCfg {
            workers: self.workers,
            sequential: self.sequential,
            chunk: self.chunk,
            window: self.resolve_window(),
            item_timeout: self.policies.item_timeout,
            rate_limited: self.policies.limiter.is_some(),
            clock: Arc::clone(&self.policies.clock),
        }
    }

    /// Run to the end on the calling thread (workers run on their own threads) and collect
    /// every outcome.
    ///
    /// The input is pulled on a thread of its own (hence `Send`), so a slow or blocked
    /// `next()` never delays the stop token, the deadline or the outcomes of other items.
    /// After the run ends, `collect` still waits for a `next()` call in progress to return
    /// (the iterator may borrow from the caller); the item it returns is dropped, neither run
    /// nor counted. Use [`stream`](Map::stream) to be free at once.
    ///
    /// ```
    /// let run = herdsman::map(vec!["1", "x", "3"], |s: &str| s.parse::<u32>()).collect();
    /// assert_eq!(run.success_count(), 2);
    /// assert_eq!(run.failures()[0].index, 1);
    /// assert!(!run.is_ok());
    /// ```
    pub fn collect(mut self) -> RunResult<U, E>
    where
        I: Send,
        I::Item: Send,
    {
        if let Some(n) = self.fast_len() {
            if let Some(fast) = self.fast.take() {
                let workers = self.workers.unwrap_or_else(default_workers).max(1);
                let input = SendInput::new(self.input);
                return fast(input, n, workers, &self.policies.clock);
            }
        }
        let window = self.resolve_window();
        let cfg = self.backend_cfg();
        let ordered = self.policies.ordered;
        let mut sink = CollectSink::new(ordered);
        let mut backend = match (self.make)(&cfg) {
            Ok(b) => b,
            Err(e) => return sink.into_result(failed_to_start(&e)),
        };
        // Ordered collect of an input of known length: workers put values straight into
        // their final slots (capped so a huge length hint cannot reserve absurd memory).
        if ordered && self.policies.on_outcome.is_none() {
            if let (lo, Some(hi)) = self.input.size_hint() {
                let bytes = lo.saturating_mul(std::mem::size_of::<U>().max(1));
                if lo == hi && lo > 0 && bytes <= DIRECT_MAX_BYTES {
                    let out = Arc::new(DirectOut::new(lo));
                    if backend.set_direct(Arc::clone(&out)) {
                        sink.direct = Some(out);
                    }
                }
            }
        }
        let hint = self.input.size_hint();
        let (feed, puller) = crate::feed::feed(self.input);
        let policies = self.policies;
        // The input is pulled on a scoped thread, so a slow `next()` never holds the
        // scheduler; a call in progress when the run ends is waited for here.
        let summary = std::thread::scope(|s| {
            let name = "herdsman-input";
            let started = std::thread::Builder::new()
                .name(name.into())
                .spawn_scoped(s, move || puller.run());
            if let Err(e) = started {
                backend.stop(crate::engine::Halt::Shutdown);
                return failed_to_start(&crate::threads::refused(name, &e));
            }
            Engine::new(feed, hint, backend, policies, window, &mut sink, None).run()
        });
        sink.into_result(summary)
    }

    /// Same as [`collect`](Map::collect).
    pub fn run(self) -> RunResult<U, E>
    where
        I: Send,
        I::Item: Send,
    {
        self.collect()
    }

    /// Run on a background scheduler thread and iterate over per-item outcomes (input order
    /// unless `ordered(false)`). Memory stays bounded by the window even on an endless input,
    /// and a slow consumer only stalls the run once the window is full. Dropping the stream
    /// cancels the run.
    ///
    /// ```
    /// let mut stream = herdsman::map(0..5u32, |x| Ok::<_, ()>(x * 10)).stream();
    /// let values: Vec<u32> = stream.by_ref().map(|o| o.result.unwrap()).collect();
    /// assert_eq!(values, vec![0, 10, 20, 30, 40]);
    /// assert_eq!(stream.summary().unwrap().succeeded, 5);
    /// ```
    pub fn stream(self) -> Stream<U, E>
    where
        I: Send + 'static,
        I::Item: Send + 'static,
        U: Send + 'static,
        E: Send + 'static,
    {
        let window = self.resolve_window();
        let cfg = self.backend_cfg();
        let make = self.make;
        let policies = self.policies;
        let hint = self.input.size_hint();
        let (feed, puller) = crate::feed::feed(self.input);
        // Not joined: a `next()` that blocks must not hold the end of the stream back. The
        // thread ends when its call returns, without pulling again.
        if let Err(e) = spawn_thread("herdsman-input".into(), move || puller.run()) {
            return Stream::failed(failed_to_start(&e));
        }
        let ordered = policies.ordered;
        Stream::spawn(ordered, move |sink, stop| match make(&cfg) {
            Ok(backend) => {
                Engine::new(feed, hint, backend, policies, window, sink, Some(stop)).run()
            }
            Err(e) => {
                drop(feed);
                let summary = failed_to_start(&e);
                sink.finish(&summary);
                summary
            }
        })
    }
}

impl<I: Iterator, U, E> Map<I, U, E, Threads> {
    /// Number of worker threads (default: available parallelism). `workers(1)` runs every
    /// item inline on the calling thread, like [`sequential`](Map::sequential).
    ///
    /// ```
    /// let run = herdsman::map(0..100u64, |x| Ok::<_, ()>(x * x)).workers(2).collect();
    /// assert_eq!(run.into_values().unwrap()[9], 81);
    /// ```
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = Some(n.max(1));
        self
    }

    /// Run every item inline on the calling thread, one at a time: deterministic order of
    /// calls and real stack traces. Item timeouts can only mark an item after it returns.
    ///
    /// ```
    /// let main = std::thread::current().id();
    /// let run = herdsman::map(0..3, move |x: u32| {
    ///     assert_eq!(std::thread::current().id(), main);
    ///     Ok::<_, ()>(x)
    /// })
    /// .sequential()
    /// .collect();
    /// assert!(run.is_ok());
    /// ```
    pub fn sequential(mut self) -> Self {
        self.sequential = true;
        self
    }

    /// Fix the number of items sent to a worker at once instead of adapting it to measured
    /// item duration (automatic batching aims at batches of about 2 ms).
    ///
    /// ```
    /// let run = herdsman::map(0..1000u32, |x| Ok::<_, ()>(x)).chunk_size(64).collect();
    /// assert_eq!(run.success_count(), 1000);
    /// ```
    pub fn chunk_size(mut self, n: usize) -> Self {
        self.chunk = Some(n.max(1));
        self
    }
}

/// A piece of ordered output that arrived before the items preceding it.
enum Piece<U> {
    Values(Vec<U>),
    Hole,
}

/// Gathers every outcome for [`RunResult`]. Ordered values are appended to one `Vec` as soon
/// as every earlier index is resolved; pieces that arrive early wait in `pending`.
pub(crate) struct CollectSink<U, E> {
    ordered: bool,
    values: Vec<U>,
    holes: Vec<u64>,
    /// Pieces that arrived before an earlier index.
    order: Reorder<Piece<U>>,
    unordered: Vec<(u64, U)>,
    failures: Vec<Failure<E>>,
    resolved: u64,
    /// Emptied value buffers to hand back to the backend.
    spares: Vec<Vec<U>>,
    /// Direct output (ordered runs of known length): successes live there.
    direct: Option<Arc<DirectOut<U>>>,
    /// Ranges of successes whose values are in `direct`.
    ok_ranges: Vec<(u64, usize)>,
    /// Successes that did not fit `direct` (an input longer than its size hint).
    overflow: Vec<(u64, U)>,
}

impl<U, E> CollectSink<U, E> {
    pub(crate) fn new(ordered: bool) -> Self {
        CollectSink {
            ordered,
            values: Vec::new(),
            holes: Vec::new(),
            order: Reorder::new(),
            unordered: Vec::new(),
            failures: Vec::new(),
            resolved: 0,
            spares: Vec::new(),
            direct: None,
            ok_ranges: Vec::new(),
            overflow: Vec::new(),
        }
    }

    fn apply(&mut self, first: u64, piece: Piece<U>) {
        match piece {
            Piece::Values(mut v) => {
                if self.values.is_empty() {
                    self.values = v;
                } else {
                    self.values.append(&mut v);
                    if v.capacity() > 0 && self.spares.len() < 16 {
                        self.spares.push(v);
                    }
                }
            }
            Piece::Hole => self.holes.push(first),
        }
    }

    fn place(&mut self, first: u64, piece: Piece<U>) {
        let span = match &piece {
            Piece::Values(v) => v.len() as u64,
            Piece::Hole => 1,
        };
        if self.order.advance_past(first, span) {
            self.apply(first, piece);
        } else {
            self.order.push(first, span, piece);
        }
        while let Some((first, piece)) = self.order.pop() {
            self.apply(first, piece);
        }
    }

    /// Direct mode: put values of `first..` into the direct output (or the overflow).
    fn direct_values(&mut self, first: u64, mut values: Vec<U>) {
        let Some(out) = self.direct.as_ref() else {
            return;
        };
        let n = values.len();
        if out.write(first, &mut values) {
            self.ok_ranges.push((first, n));
        } else {
            self.overflow.extend(
                values
                    .into_iter()
                    .enumerate()
                    .map(|(k, v)| (first + k as u64, v)),
            );
        }
    }

    pub(crate) fn into_result(mut self, summary: Summary) -> RunResult<U, E> {
        debug_assert!(self.order.is_empty(), "every admitted index is resolved");
        if let Some(out) = self.direct.take() {
            let mut values = out.finish(&self.ok_ranges);
            self.overflow.sort_unstable_by_key(|(i, _)| *i);
            values.extend(self.overflow.into_iter().map(|(_, v)| v));
            self.failures.sort_by_key(|f| f.index);
            let holes = self.failures.iter().map(|f| f.index).collect();
            return RunResult {
                successes: Successes::Ordered { values, holes },
                failures: self.failures,
                summary,
            };
        }
        let successes = if self.ordered {
            self.failures.sort_by_key(|f| f.index);
            Successes::Ordered {
                values: self.values,
                holes: self.holes,
            }
        } else {
            Successes::Unordered(self.unordered)
        };
        RunResult {
            successes,
            failures: self.failures,
            summary,
        }
    }
}

impl<U, E> Sink<U, E> for CollectSink<U, E> {
    fn accept(&mut self, o: ItemOutcome<U, E>) -> bool {
        self.resolved += 1;
        match o.result {
            Ok(v) if self.direct.is_some() => self.direct_values(o.index, vec![v]),
            Ok(v) => {
                if !self.ordered {
                    self.unordered.push((o.index, v));
                } else if self.order.advance_past(o.index, 1) {
                    self.values.push(v);
                } else {
                    self.place(o.index, Piece::Values(vec![v]));
                }
            }
            Err(error) => {
                if self.ordered && self.direct.is_none() {
                    self.place(o.index, Piece::Hole);
                }
                self.failures.push(Failure {
                    index: o.index,
                    error,
                    attempts: o.attempts,
                    duration: o.duration,
                });
            }
        }
        true
    }

    fn accept_values(
        &mut self,
        first: u64,
        values: Vec<U>,
        _attempts: u32,
        _per_item: Duration,
    ) -> bool {
        self.resolved += values.len() as u64;
        if self.direct.is_some() {
            self.direct_values(first, values);
        } else if self.ordered {
            self.place(first, Piece::Values(values));
        } else {
            self.unordered.extend(
                values
                    .into_iter()
                    .enumerate()
                    .map(|(k, v)| (first + k as u64, v)),
            );
        }
        true
    }

    fn delivered(&self) -> u64 {
        self.resolved
    }

    fn take_spare(&mut self) -> Option<Vec<U>> {
        self.spares.pop()
    }

    fn accept_written(&mut self, first: u64, n: usize) -> bool {
        self.resolved += n as u64;
        self.ok_ranges.push((first, n));
        true
    }
}
