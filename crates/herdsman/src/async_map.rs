//! The async backend (cargo feature `async`): each attempt is a tokio task running the
//! future `f(item)`, so thousands of I/O-bound items can be in flight on a few threads.
//!
//! Unlike threads, futures can really be cancelled: an attempt that times out, and every
//! in-flight attempt when the run stops, is aborted, which drops its future. This module must
//! never block a runtime thread.

use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use futures::FutureExt;
use tokio::runtime::{Handle, Runtime};
use tokio::task::AbortHandle;

use crate::engine::{
    panic_message, Abandoned, Backend, GiveUp, Halt, Outcomes, Report, Room, Slot,
};
use crate::executor::{AttemptId, AttemptOutcome, FatalExecutorError};
use crate::map::{BackendCfg, MakeBackend, Map};
use crate::outcome::RunResult;

/// Marker: a run of futures on tokio (see [`map_async`](crate::map_async)).
#[derive(Debug, Clone, Copy, Default)]
pub struct Async;

/// Default number of futures in flight when `concurrency` is not set.
pub const DEFAULT_CONCURRENCY: usize = 64;

struct AsyncBackend<U, E, F> {
    f: Arc<F>,
    handle: Handle,
    runtime: Option<Runtime>,
    tasks: HashMap<AttemptId, AbortHandle>,
    tx: Sender<(AttemptId, AttemptOutcome<U, E>)>,
    rx: Receiver<(AttemptId, AttemptOutcome<U, E>)>,
    ready: Vec<Report<U, E>>,
    concurrency: usize,
}

impl<U, E, F> AsyncBackend<U, E, F> {
    fn new(f: Arc<F>, concurrency: usize, caller: Option<Handle>) -> Self {
        let (handle, runtime) = match caller.or_else(|| Handle::try_current().ok()) {
            Some(h) => (h, None),
            None => {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .thread_name("herdsman-async")
                    .enable_all()
                    .build()
                    .expect("cannot start a tokio runtime; check thread limits");
                (rt.handle().clone(), Some(rt))
            }
        };
        let (tx, rx) = crossbeam_channel::unbounded();
        AsyncBackend {
            f,
            handle,
            runtime,
            tasks: HashMap::new(),
            tx,
            rx,
            ready: Vec::new(),
            concurrency: concurrency.max(1),
        }
    }
}

impl<T, U, E, F, Fut> Backend<T, U, E> for AsyncBackend<U, E, F>
where
    T: Send + 'static,
    U: Send + 'static,
    E: Send + 'static,
    F: Fn(T) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<U, E>> + Send + 'static,
{
    fn room(&self) -> Room {
        Room {
            free: self.concurrency.saturating_sub(self.tasks.len()),
            batch: 1,
            in_flight: self.tasks.len() + self.ready.len(),
            read_ahead: 0,
            measures: false,
        }
    }
    fn submit(&mut self, first: AttemptId, items: Vec<T>) -> Result<(), FatalExecutorError> {
        for (k, item) in items.into_iter().enumerate() {
            let id = first.nth(k);
            let f = Arc::clone(&self.f);
            let tx = self.tx.clone();
            let task = self.handle.spawn(async move {
                // Building the future may panic too.
                let out = match std::panic::catch_unwind(AssertUnwindSafe(|| f(item))) {
                    Err(p) => AttemptOutcome::Panicked(panic_message(p.as_ref())),
                    Ok(fut) => match AssertUnwindSafe(fut).catch_unwind().await {
                        Ok(Ok(v)) => AttemptOutcome::Success(v),
                        Ok(Err(e)) => AttemptOutcome::Failure(e),
                        Err(p) => AttemptOutcome::Panicked(panic_message(p.as_ref())),
                    },
                };
                let _ = tx.send((id, out));
            });
            self.tasks.insert(id, task.abort_handle());
        }
        Ok(())
    }
    fn poll(
        &mut self,
        timeout: Duration,
        out: &mut Vec<Report<U, E>>,
    ) -> Result<(), FatalExecutorError> {
        out.append(&mut self.ready);
        let first = if out.is_empty() {
            match self.rx.recv_timeout(timeout) {
                Ok(x) => Some(x),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => unreachable!("the backend holds a sender"),
            }
        } else {
            self.rx.try_recv().ok()
        };
        let mut next = first;
        while let Some((id, o)) = next.take() {
            if self.tasks.remove(&id).is_some() {
                out.push(Report {
                    first: id,
                    outcomes: Outcomes::Mixed(vec![Slot::Done(o)]),
                    per_item: None,
                });
            }
            next = self.rx.try_recv().ok();
        }
        Ok(())
    }
    fn abandon(&mut self, what: GiveUp) -> Vec<Abandoned> {
        let GiveUp::One(id) = what else {
            return self.abandon_all();
        };
        if let Some(t) = self.tasks.remove(&id) {
            t.abort();
        }
        Vec::new()
    }
    fn stop(&mut self, halt: Halt) {
        match halt {
            Halt::Queued => self.stop_queued(),
            Halt::Shutdown => self.shutdown(),
        }
    }
}

impl<U, E, F> AsyncBackend<U, E, F> {
    fn abandon_all(&mut self) -> Vec<Abandoned> {
        let mut v: Vec<Abandoned> = self
            .tasks
            .drain()
            .map(|(first, t)| {
                t.abort();
                Abandoned {
                    first,
                    len: 1,
                    started: true,
                }
            })
            .collect();
        v.sort_by_key(|a| a.first);
        v
    }
    fn stop_queued(&mut self) {
        // Futures can be cancelled: drop every one in flight and report it as not run.
        for a in self.abandon_all() {
            self.ready.push(Report {
                first: a.first,
                outcomes: Outcomes::Mixed(vec![Slot::NotRun]),
                per_item: None,
            });
        }
    }
    fn shutdown(&mut self) {
        for (_, t) in self.tasks.drain() {
            t.abort();
        }
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

pub(crate) fn async_map<I, T, U, E, F, Fut>(items: I, f: F) -> Map<I::IntoIter, U, E, Async>
where
    I: IntoIterator<Item = T>,
    T: Send + 'static,
    U: Send + 'static,
    E: Send + 'static,
    F: Fn(T) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<U, E>> + Send + 'static,
{
    async_map_on(items, f, None)
}

/// Like [`async_map`]; the runtime the run uses is also published in `runtime` (for an input
/// that must be pulled inside it).
fn async_map_on<I, T, U, E, F, Fut>(
    items: I,
    f: F,
    runtime: Option<Arc<OnceLock<Handle>>>,
) -> Map<I::IntoIter, U, E, Async>
where
    I: IntoIterator<Item = T>,
    T: Send + 'static,
    U: Send + 'static,
    E: Send + 'static,
    F: Fn(T) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<U, E>> + Send + 'static,
{
    let f = Arc::new(f);
    let caller = Handle::try_current().ok();
    let make: MakeBackend<T, U, E> = Box::new(move |cfg: &BackendCfg| {
        let n = cfg.workers.unwrap_or(DEFAULT_CONCURRENCY);
        let backend = AsyncBackend::<U, E, F>::new(f, n, caller);
        if let Some(cell) = runtime {
            let _ = cell.set(backend.handle.clone());
        }
        Ok(Box::new(backend) as Box<dyn Backend<T, U, E>>)
    });
    Map::new(items.into_iter(), make)
}

pub(crate) fn async_map_stream<S, U, E, F, Fut>(items: S, f: F) -> Map<StreamInput<S>, U, E, Async>
where
    S: futures::Stream + Unpin,
    S::Item: Send + 'static,
    U: Send + 'static,
    E: Send + 'static,
    F: Fn(S::Item) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<U, E>> + Send + 'static,
{
    let runtime = Arc::new(OnceLock::new());
    let input = StreamInput {
        inner: futures::executor::block_on_stream(items),
        runtime: Arc::clone(&runtime),
    };
    async_map_on(input, f, Some(runtime))
}

/// A `futures::Stream` read as a blocking iterator by the thread that pulls the input,
/// inside the run's tokio runtime (the caller's, or the one the run started), so streams
/// built on tokio (timers, channels, sockets) work even when the run is started from
/// synchronous code.
pub struct StreamInput<S: futures::Stream + Unpin> {
    inner: futures::executor::BlockingStream<S>,
    runtime: Arc<OnceLock<Handle>>,
}

impl<S: futures::Stream + Unpin> Iterator for StreamInput<S> {
    type Item = S::Item;
    fn next(&mut self) -> Option<S::Item> {
        let _guard = self.runtime.get().map(|h| h.enter());
        self.inner.next()
    }
}

impl<I: Iterator, U, E> Map<I, U, E, Async> {
    /// Most futures in flight at once (default 64). Replaces `workers` for async runs.
    ///
    /// ```
    /// let run = herdsman::map_async(0..10u64, |x| async move { Ok::<_, ()>(x + 1) })
    ///     .concurrency(4)
    ///     .collect();
    /// assert_eq!(run.into_values().unwrap()[9], 10);
    /// ```
    pub fn concurrency(self, n: usize) -> Self {
        self.set_workers(n.max(1))
    }

    /// Run to the end without blocking the async caller (the scheduler runs on tokio's
    /// blocking pool).
    ///
    /// ```
    /// # let rt = tokio::runtime::Runtime::new().unwrap();
    /// # rt.block_on(async {
    /// let run = herdsman::map_async(0..3u64, |x| async move { Ok::<_, ()>(x) })
    ///     .collect_async()
    ///     .await;
    /// assert!(run.is_ok());
    /// # });
    /// ```
    pub async fn collect_async(self) -> RunResult<U, E>
    where
        I: Send + 'static,
        I::Item: Send + 'static,
        U: Send + 'static,
        E: Send + 'static,
    {
        match tokio::task::spawn_blocking(move || self.collect()).await {
            Ok(r) => r,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
}
