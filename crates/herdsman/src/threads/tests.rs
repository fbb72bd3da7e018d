//! Thread start failures become errors; idle workers stay blocked instead of polling.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::spawn::SPAWNS_LEFT;
use super::{PoolConfig, ThreadPool};
use crate::executor::FatalKind;
use crate::limiter::SystemClock;
use crate::{Executor, RunStatus, ThreadExecutor};

fn config(workers: usize) -> PoolConfig {
    PoolConfig {
        workers,
        chunk: None,
        max_batch: 1024,
        track: false,
        rate_limited: false,
        clock: Arc::new(SystemClock::default()),
    }
}

/// Let only `n` more threads start from this thread.
fn allow_spawns(n: Option<usize>) {
    SPAWNS_LEFT.with(|s| s.set(n));
}

#[test]
fn a_worker_thread_that_cannot_start_is_a_runtime_error() {
    allow_spawns(Some(1));
    let pool = ThreadPool::<u32, u32, (), _>::new(Arc::new(|x: u32| Ok(x)), config(3));
    allow_spawns(None);
    let e = pool.err().expect("the second worker could not start");
    assert_eq!(e.kind, FatalKind::Runtime);
    assert!(
        e.message.contains("herdsman-worker-1") && e.message.contains("lower `workers`"),
        "{e}"
    );
}

#[test]
fn map_reports_a_pool_that_cannot_start_instead_of_panicking() {
    allow_spawns(Some(2));
    // A window sends the run through the scheduler and its thread pool.
    let run = crate::map(0..10u32, Ok::<_, ()>)
        .workers(4)
        .window(16)
        .collect();
    allow_spawns(None);
    match run.status() {
        RunStatus::ExecutorFailed(e) => {
            assert!(e.message.contains("refused to start thread"), "{e}")
        }
        other => panic!("expected a failed start, got {other:?}"),
    }
    assert_eq!(run.summary.admitted, 0);
    assert_eq!(run.success_count(), 0);

    allow_spawns(Some(0));
    let mut stream = crate::map(0..10u32, Ok::<_, ()>).workers(2).stream();
    allow_spawns(None);
    assert!(stream.next().is_none());
    assert!(matches!(
        stream.status(),
        Some(RunStatus::ExecutorFailed(_))
    ));
}

#[test]
fn a_thread_executor_that_cannot_start_fails_its_first_submit() {
    allow_spawns(Some(0));
    let mut exec = ThreadExecutor::new(2, Ok::<u32, ()>);
    allow_spawns(None);
    let id = crate::AttemptId {
        index: 0,
        attempt: 1,
    };
    let e = exec.submit(id, 1).unwrap_err();
    assert_eq!(e.kind, FatalKind::Runtime);
    let run = crate::map_with(0..3u32, {
        allow_spawns(Some(0));
        let exec = ThreadExecutor::new(2, Ok::<u32, ()>);
        allow_spawns(None);
        exec
    })
    .collect();
    assert!(matches!(run.status(), RunStatus::ExecutorFailed(_)));
}

#[test]
fn idle_workers_block_instead_of_polling() {
    let mut pool = ThreadPool::<u32, u32, (), _>::new(Arc::new(|x: u32| Ok(x)), config(4))
        .expect("threads start");
    // Wait (generously) until every worker has gone idle.
    let deadline = Instant::now() + Duration::from_secs(30);
    while pool.idle_counts().0 < 4 {
        assert!(Instant::now() < deadline, "workers never went idle");
        std::thread::sleep(Duration::from_millis(1));
    }
    // An idle pool stays blocked: a worker that polled (every millisecond, say) would
    // block again and again.
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(pool.idle_counts(), (4, 4));
    pool.shutdown();
}
