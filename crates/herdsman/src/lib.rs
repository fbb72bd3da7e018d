//! herdsman: run one function over every item of a large input, in parallel, with bounded
//! memory, and account for every item.
//!
//! This crate is the engine. It must never lose or duplicate an item, never pull more input
//! than its window allows, and never abort the process because a user function panicked.
//!
//! ```
//! use herdsman::{RateLimit, Retry};
//! use std::num::NonZeroU32;
//! use std::time::Duration;
//!
//! let run = herdsman::map(vec!["1", "2", "x", "4"], |s: &str| s.parse::<u64>())
//!     .workers(2)
//!     .retry(Retry::attempts(2).backoff(Duration::from_millis(1)))
//!     .rate_limit(RateLimit::per_second(NonZeroU32::new(1000).unwrap()).burst(10))
//!     .collect();
//! assert_eq!(run.success_count(), 3);
//! assert_eq!(run.failures()[0].index, 2);
//! let err = run.into_values().unwrap_err();
//! assert!(err.to_string().contains("item 2"));
//! ```

#![warn(missing_docs)]

// The Rust examples of the README and of docs/library.md are compiled and run as doctests,
// so the documentation cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeDoctests;

#[cfg(doctest)]
#[doc = include_str!("../../../docs/library.md")]
struct LibraryDocDoctests;

#[cfg(feature = "async")]
mod async_map;
#[cfg(feature = "checkpoint")]
pub mod checkpoint;
mod direct;
mod engine;
pub mod executor;
mod fast;
mod feed;
mod limiter;
mod map;
mod outcome;
pub mod reorder;
mod retry;
mod stop;
mod stream;
mod threads;

#[cfg(feature = "async")]
pub use async_map::{Async, StreamInput, DEFAULT_CONCURRENCY};
pub use executor::{AttemptId, AttemptOutcome, Executor, FatalExecutorError, FatalKind, Setting};
pub use limiter::{Clock, Limiter, ManualClock, RateLimit, SystemClock};
pub use map::{default_workers, Custom, Map, Threads, DEFAULT_WINDOW};
pub use outcome::{
    Failure, ItemError, ItemOutcome, MapError, Progress, RunResult, RunStatus, Summary,
};
pub use retry::Retry;
pub use stop::StopToken;
pub use stream::{Stream, StreamNext};
pub use threads::ThreadExecutor;

/// Apply `f` to every item on a pool of worker threads; returns a builder to set options on
/// before [`collect`](Map::collect) or [`stream`](Map::stream).
///
/// `f` returns `Result`; a panic in `f` becomes that item's failure. `T`, `U`, `E` and `f`
/// must be `'static` because worker threads outlive no borrow: an attempt given up after
/// `item_timeout` may still be running when the run returns.
///
/// ```
/// let squares = herdsman::map(1..=4u64, |x| Ok::<_, std::convert::Infallible>(x * x))
///     .collect()
///     .into_values()
///     .unwrap();
/// assert_eq!(squares, vec![1, 4, 9, 16]);
/// ```
pub fn map<I, T, U, E, F>(items: I, f: F) -> Map<I::IntoIter, U, E, Threads>
where
    I: IntoIterator<Item = T>,
    T: Send + 'static,
    U: Send + 'static,
    E: Send + 'static,
    F: Fn(T) -> Result<U, E> + Send + Sync + 'static,
{
    map::thread_map(items, f)
}

/// Run every item through a caller-supplied [`Executor`] (for example a pool of worker
/// processes), with the same policies as [`map`].
///
/// ```
/// use herdsman::{AttemptId, AttemptOutcome, Executor, FatalExecutorError};
/// use std::time::Duration;
///
/// /// Doubles numbers synchronously.
/// struct Doubler(Vec<(AttemptId, AttemptOutcome<u32, String>)>);
/// impl Executor<u32> for Doubler {
///     type Output = u32;
///     type Error = String;
///     fn capacity(&self) -> usize { 4 }
///     fn submit(&mut self, id: AttemptId, item: u32) -> Result<(), FatalExecutorError> {
///         self.0.push((id, AttemptOutcome::Success(item * 2)));
///         Ok(())
///     }
///     fn poll(&mut self, _t: Duration, out: &mut Vec<(AttemptId, AttemptOutcome<u32, String>)>)
///         -> Result<(), FatalExecutorError> {
///         out.append(&mut self.0);
///         Ok(())
///     }
///     fn abandon(&mut self, _id: AttemptId) {}
///     fn shutdown(&mut self) {}
/// }
///
/// let values = herdsman::map_with(1..=3u32, Doubler(Vec::new())).collect().into_values();
/// assert_eq!(values.unwrap(), vec![2, 4, 6]);
/// ```
pub fn map_with<I, X>(items: I, executor: X) -> Map<I::IntoIter, X::Output, X::Error, Custom>
where
    I: IntoIterator,
    I::Item: 'static,
    X: Executor<I::Item> + 'static,
{
    map::executor_map(items, executor)
}

/// Apply an async `f` to every item as tokio tasks (cargo feature `async`), with the same
/// policies as [`map`]; set [`concurrency`](Map::concurrency) instead of workers.
///
/// Uses the tokio runtime current when this is called, else starts a small one. An attempt
/// that exceeds `item_timeout` is aborted (its future is dropped), and when the run stops,
/// every future in flight is dropped and reported as not run. Inside async code, use
/// [`collect_async`](Map::collect_async) rather than the blocking `collect`.
///
/// ```
/// use std::time::Duration;
/// let run = herdsman::map_async(0..20u64, |x| async move {
///     tokio::time::sleep(Duration::from_millis(5)).await;
///     Ok::<_, String>(x * 2)
/// })
/// .concurrency(10)
/// .collect();
/// assert_eq!(run.into_values().unwrap()[19], 38);
/// ```
#[cfg(feature = "async")]
pub fn map_async<I, T, U, E, F, Fut>(items: I, f: F) -> Map<I::IntoIter, U, E, Async>
where
    I: IntoIterator<Item = T>,
    T: Send + 'static,
    U: Send + 'static,
    E: Send + 'static,
    F: Fn(T) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<U, E>> + Send + 'static,
{
    async_map::async_map(items, f)
}

/// Like [`map_async`], over a `futures::Stream` of items (cargo feature `async`). The stream
/// is pulled lazily, one item per free slot, like an iterator.
///
/// ```
/// let items = futures::stream::iter(vec![1u32, 2, 3]);
/// let run = herdsman::map_async_stream(items, |x| async move { Ok::<_, ()>(x * 10) }).collect();
/// assert_eq!(run.into_values().unwrap(), vec![10, 20, 30]);
/// ```
#[cfg(feature = "async")]
pub fn map_async_stream<S, U, E, F, Fut>(items: S, f: F) -> Map<StreamInput<S>, U, E, Async>
where
    S: futures::Stream + Unpin,
    S::Item: Send + 'static,
    U: Send + 'static,
    E: Send + 'static,
    F: Fn(S::Item) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<U, E>> + Send + 'static,
{
    async_map::async_map_stream(items, f)
}
