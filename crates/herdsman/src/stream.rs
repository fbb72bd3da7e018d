//! Streaming results: a background scheduler thread feeds per-item outcomes to an iterator.
//!
//! Memory must stay bounded by the window: the scheduler counts an outcome against the
//! window until the consumer has taken it from the iterator. Dropping the iterator cancels
//! the run; it must never leave the scheduler blocked.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};

use crate::engine::Sink;
use crate::map::failed_to_start;
use crate::outcome::{ItemOutcome, RunStatus, Summary};
use crate::reorder::Reorder;
use crate::threads::spawn_thread;

enum Msg<U, E> {
    Item(ItemOutcome<U, E>),
    End(Summary),
}

struct StreamSink<U, E> {
    tx: Sender<Msg<U, E>>,
    consumed: Arc<AtomicU64>,
    ordered: bool,
    reorder: Reorder<ItemOutcome<U, E>>,
}

impl<U, E> Sink<U, E> for StreamSink<U, E> {
    fn accept(&mut self, o: ItemOutcome<U, E>) -> bool {
        if !self.ordered {
            return self.tx.send(Msg::Item(o)).is_ok();
        }
        let mut alive = true;
        if self.reorder.advance_past(o.index, 1) {
            alive = self.tx.send(Msg::Item(o)).is_ok();
        } else {
            self.reorder.push(o.index, 1, o);
        }
        while let Some((_, o)) = self.reorder.pop() {
            alive &= self.tx.send(Msg::Item(o)).is_ok();
        }
        alive
    }

    fn delivered(&self) -> u64 {
        self.consumed.load(Ordering::Acquire)
    }

    fn finish(&mut self, summary: &Summary) {
        let _ = self.tx.send(Msg::End(summary.clone()));
    }
}

/// An iterator over per-item outcomes of a running run (see [`Map::stream`](crate::Map::stream)).
///
/// After it returns `None`, [`summary`](Stream::summary) and [`status`](Stream::status) give
/// the run's final counters.
pub struct Stream<U, E> {
    rx: Receiver<Msg<U, E>>,
    consumed: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    summary: Option<Summary>,
    handle: Option<JoinHandle<()>>,
}

impl<U: Send + 'static, E: Send + 'static> Stream<U, E> {
    pub(crate) fn spawn<R>(ordered: bool, run: R) -> Self
    where
        R: FnOnce(&mut dyn Sink<U, E>, Arc<AtomicBool>) -> Summary + Send + 'static,
    {
        let (tx, rx) = crossbeam_channel::unbounded();
        let consumed = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let mut sink = StreamSink {
            tx,
            consumed: Arc::clone(&consumed),
            ordered,
            reorder: Reorder::new(),
        };
        let stop2 = Arc::clone(&stop);
        let started = spawn_thread("herdsman-scheduler".into(), move || {
            run(&mut sink, stop2);
        });
        let handle = match started {
            Ok(h) => h,
            Err(e) => return Stream::failed(failed_to_start(&e)),
        };
        Stream {
            rx,
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
        let (_, rx) = crossbeam_channel::unbounded();
        Stream {
            rx,
            consumed: Arc::new(AtomicU64::new(0)),
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

impl<U, E> Iterator for Stream<U, E> {
    type Item = ItemOutcome<U, E>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.summary.is_some() {
            return None;
        }
        match self.rx.recv() {
            Ok(Msg::Item(o)) => {
                self.consumed.fetch_add(1, Ordering::AcqRel);
                Some(o)
            }
            Ok(Msg::End(s)) => {
                self.summary = Some(s);
                if let Some(h) = self.handle.take() {
                    let _ = h.join();
                }
                None
            }
            Err(_) => {
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
