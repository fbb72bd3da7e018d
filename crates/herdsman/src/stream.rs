//! Streaming results: a background scheduler thread feeds per-item outcomes to an iterator.
//!
//! Memory must stay bounded by the window: the scheduler counts an outcome against the
//! window until the consumer has taken it from the iterator. Dropping the iterator cancels
//! the run; it must never leave the scheduler blocked.
//!
//! The outcomes travel over std's channel, not crossbeam's: a blocking crossbeam `recv`
//! yields the CPU a few times before it sleeps, and a consumer that keeps up with the
//! scheduler waits once per batch of outcomes, so those yields (thousands per run) preempted
//! whatever else was running, such as the worker processes.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::engine::Sink;
use crate::map::failed_to_start;
use crate::outcome::{ItemOutcome, RunStatus, Summary};
use crate::reorder::Reorder;
use crate::threads::spawn_thread;

enum Msg<U, E> {
    /// Outcomes in the order the consumer gets them.
    Items(Vec<ItemOutcome<U, E>>),
    End(Summary),
}

/// How far the consumer has taken outcomes, and how the scheduler waits for it: a scheduler
/// whose window is full and that has nothing in flight parks until the consumer has taken
/// what it waits for.
struct Consumed {
    taken: AtomicU64,
    /// What the parked scheduler waits for `taken` to reach; 0 when it is not waiting.
    waiting_for: AtomicU64,
    /// The scheduler thread, once it runs.
    scheduler: std::sync::OnceLock<std::thread::Thread>,
}

impl Consumed {
    fn new() -> Arc<Consumed> {
        Arc::new(Consumed {
            taken: AtomicU64::new(0),
            waiting_for: AtomicU64::new(0),
            scheduler: std::sync::OnceLock::new(),
        })
    }

    /// The consumer took one more outcome: wakes the scheduler if it waits for this one.
    #[inline]
    fn took_one(&self) {
        // SeqCst on both sides: either the scheduler sees this count before it parks, or
        // this sees its wait and unparks it.
        let taken = self.taken.fetch_add(1, Ordering::SeqCst) + 1;
        let want = self.waiting_for.load(Ordering::SeqCst);
        if want != 0 && taken >= want {
            self.waiting_for.store(0, Ordering::SeqCst);
            if let Some(t) = self.scheduler.get() {
                t.unpark();
            }
        }
    }
}

struct StreamSink<U, E> {
    tx: Sender<Msg<U, E>>,
    consumed: Arc<Consumed>,
    ordered: bool,
    reorder: Reorder<ItemOutcome<U, E>>,
    /// Outcomes accepted since the last flush: handed over in one message per batch, so
    /// that a consumer that keeps up is woken once per batch, not once per outcome.
    batch: Vec<ItemOutcome<U, E>>,
    /// The consumer is gone.
    gone: bool,
}

impl<U, E> Sink<U, E> for StreamSink<U, E> {
    fn accept(&mut self, o: ItemOutcome<U, E>) -> bool {
        if !self.ordered {
            self.batch.push(o);
            return !self.gone;
        }
        if self.reorder.advance_past(o.index, 1) {
            self.batch.push(o);
        } else {
            self.reorder.push(o.index, 1, o);
        }
        while let Some((_, o)) = self.reorder.pop() {
            self.batch.push(o);
        }
        !self.gone
    }

    fn delivered(&self) -> u64 {
        self.consumed.taken.load(Ordering::Acquire)
    }

    fn wait_delivered(&self, at_least: u64, timeout: std::time::Duration) -> bool {
        if self.gone || self.consumed.scheduler.get().is_none() {
            return false;
        }
        let deadline = std::time::Instant::now() + timeout;
        self.consumed
            .waiting_for
            .store(at_least.max(1), Ordering::SeqCst);
        // A park may end early (spuriously, or from an earlier unpark): wait on until the
        // consumer got there or the time is up.
        while self.consumed.taken.load(Ordering::SeqCst) < at_least {
            let now = std::time::Instant::now();
            if now >= deadline {
                break;
            }
            std::thread::park_timeout(deadline - now);
        }
        self.consumed.waiting_for.store(0, Ordering::SeqCst);
        true
    }

    fn flush(&mut self) {
        if !self.batch.is_empty() {
            let batch = std::mem::take(&mut self.batch);
            self.gone |= self.tx.send(Msg::Items(batch)).is_err();
        }
    }

    fn finish(&mut self, summary: &Summary) {
        self.flush();
        let _ = self.tx.send(Msg::End(summary.clone()));
    }
}

/// An iterator over per-item outcomes of a running run (see [`Map::stream`](crate::Map::stream)).
///
/// After it returns `None`, [`summary`](Stream::summary) and [`status`](Stream::status) give
/// the run's final counters.
pub struct Stream<U, E> {
    /// Behind a mutex (never contended: only the iterator takes from it) so that the stream
    /// stays `Sync`, as it was with crossbeam's receiver.
    rx: Mutex<Receiver<Msg<U, E>>>,
    /// Outcomes received and not yet taken, in order.
    ready: std::vec::IntoIter<ItemOutcome<U, E>>,
    consumed: Arc<Consumed>,
    stop: Arc<AtomicBool>,
    summary: Option<Summary>,
    handle: Option<JoinHandle<()>>,
}

impl<U: Send + 'static, E: Send + 'static> Stream<U, E> {
    pub(crate) fn spawn<R>(ordered: bool, run: R) -> Self
    where
        R: FnOnce(&mut dyn Sink<U, E>, Arc<AtomicBool>) -> Summary + Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::channel();
        let consumed = Consumed::new();
        let stop = Arc::new(AtomicBool::new(false));
        let mut sink = StreamSink {
            tx,
            consumed: Arc::clone(&consumed),
            ordered,
            reorder: Reorder::new(),
            batch: Vec::new(),
            gone: false,
        };
        let stop2 = Arc::clone(&stop);
        let started = spawn_thread("herdsman-scheduler".into(), move || {
            let _ = sink.consumed.scheduler.set(std::thread::current());
            run(&mut sink, stop2);
        });
        let handle = match started {
            Ok(h) => h,
            Err(e) => return Stream::failed(failed_to_start(&e)),
        };
        Stream {
            rx: Mutex::new(rx),
            ready: Vec::new().into_iter(),
            consumed,
            stop,
            summary: None,
            handle: Some(handle),
        }
    }
}

impl<U, E> Stream<U, E> {
    /// A stream of a run that could not start: it yields nothing and ends with `summary`.
    pub(crate) fn failed(summary: Summary) -> Self {
        let (_, rx) = std::sync::mpsc::channel();
        Stream {
            rx: Mutex::new(rx),
            ready: Vec::new().into_iter(),
            consumed: Consumed::new(),
            stop: Arc::new(AtomicBool::new(false)),
            summary: Some(summary),
            handle: None,
        }
    }

    /// Final counters, once the iterator has ended.
    pub fn summary(&self) -> Option<&Summary> {
        self.summary.as_ref()
    }

    /// Final status, once the iterator has ended.
    pub fn status(&self) -> Option<&RunStatus> {
        self.summary.as_ref().map(|s| &s.status)
    }

    /// Ask the run to stop (like a [`StopToken`](crate::StopToken)); keep iterating to
    /// receive the outcomes of items that were still running.
    pub fn cancel(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// What [`Stream::next_within`] found.
#[derive(Debug)]
pub enum StreamNext<T> {
    /// The next outcome.
    Item(T),
    /// None came within the wait; the run goes on.
    Pending,
    /// The run has ended (see [`Stream::summary`]).
    Ended,
}

impl<U, E> Stream<U, E> {
    /// Like [`Iterator::next`], but waits at most `wait` for the next outcome, so a caller
    /// can do periodic work (a checkpoint, a progress line) while every item in flight is
    /// slow.
    ///
    /// ```
    /// use std::time::Duration;
    /// use herdsman::StreamNext;
    ///
    /// let mut s = herdsman::map(0..3u32, |x| Ok::<_, ()>(x * 2)).stream();
    /// let mut got = Vec::new();
    /// loop {
    ///     match s.next_within(Duration::from_millis(50)) {
    ///         StreamNext::Item(o) => got.push(o.result.unwrap()),
    ///         StreamNext::Pending => continue,
    ///         StreamNext::Ended => break,
    ///     }
    /// }
    /// assert_eq!(got, [0, 2, 4]);
    /// ```
    pub fn next_within(&mut self, wait: std::time::Duration) -> StreamNext<ItemOutcome<U, E>> {
        if self.summary.is_some() {
            return StreamNext::Ended;
        }
        loop {
            if let Some(o) = self.ready.next() {
                self.consumed.took_one();
                return StreamNext::Item(o);
            }
            let msg = self
                .rx
                .get_mut()
                .unwrap_or_else(|p| p.into_inner())
                .recv_timeout(wait);
            let ended = match msg {
                Ok(Msg::Items(batch)) => {
                    self.ready = batch.into_iter();
                    continue;
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => return StreamNext::Pending,
                Ok(Msg::End(summary)) => self.end(Some(summary)),
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => self.end(None),
            };
            debug_assert!(ended.is_none());
            return StreamNext::Ended;
        }
    }
}

impl<U, E> Iterator for Stream<U, E> {
    type Item = ItemOutcome<U, E>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.summary.is_some() {
            return None;
        }
        loop {
            if let Some(o) = self.ready.next() {
                self.consumed.took_one();
                return Some(o);
            }
            let msg = self.rx.get_mut().unwrap_or_else(|p| p.into_inner()).recv();
            match msg {
                Ok(Msg::Items(batch)) => self.ready = batch.into_iter(),
                Ok(Msg::End(summary)) => return self.end(Some(summary)),
                Err(_) => return self.end(None),
            }
        }
    }
}

impl<U, E> Stream<U, E> {
    /// The run ended with `summary` (`None`: the scheduler thread died without one).
    fn end(&mut self, summary: Option<Summary>) -> Option<ItemOutcome<U, E>> {
        match summary {
            Some(s) => {
                self.summary = Some(s);
                if let Some(h) = self.handle.take() {
                    let _ = h.join();
                }
                None
            }
            None => {
                // The scheduler thread died without a summary: only possible if a callback
                // panicked on it.
                self.summary = Some(Summary {
                    status: RunStatus::ExecutorFailed(crate::FatalExecutorError::runtime(
                        "the scheduler thread panicked (in the input iterator, or in an on_progress or on_outcome callback?)",
                    )),
                    succeeded: 0,
                    failed: 0,
                    not_run: 0,
                    retries: 0,
                    admitted: 0,
                    elapsed: Default::default(),
                });
                None
            }
        }
    }
}

impl<U, E> Drop for Stream<U, E> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}
