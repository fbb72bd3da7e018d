//! The thread backends: a pool of worker threads with automatic batching (batches aim at
//! about 2 ms of work, are split into pieces, and idle workers steal pieces from a busy
//! worker's batch), and an inline runner for sequential runs on the calling thread.
//!
//! Threads cannot be killed: an abandoned attempt keeps running on its thread, its late
//! result is discarded, and a fresh thread takes its place so the pool keeps its size. The
//! pool must never let a panic escape a worker (each attempt runs under `catch_unwind`).
//!
//! Files: the pool with batching and stealing (`pool.rs`), the inline runner (`inline.rs`),
//! the pool as a public [`Executor`](crate::Executor) (`executor.rs`), and thread start-up
//! (`spawn.rs`: a thread the operating system refuses to start is a
//! [`FatalExecutorError`](crate::FatalExecutorError), never a panic).

mod executor;
mod inline;
mod pool;
mod spawn;

pub use executor::ThreadExecutor;
pub(crate) use inline::Inline;
pub(crate) use pool::{PoolConfig, ThreadPool};
pub(crate) use spawn::{refused, spawn_thread};

#[cfg(test)]
mod tests;
