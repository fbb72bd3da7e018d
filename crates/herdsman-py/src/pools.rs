//! Worker pools of `executor="process"` kept between maps.
//!
//! A map on processes ends by handing its [`WorkerPool`] back here instead of stopping its
//! workers, when the pool is healthy (nothing in flight, nothing abandoned, no fatal error).
//! The next map with the same [`PoolKey`] (the same worker command, environment, working
//! directory, worker count, timeout and pipeline depth) takes it and sends its records to the same worker
//! processes: what to call travels with every record (the setup file's path), so one worker
//! serves any function. A pool nobody takes within [`IDLE_TIMEOUT`] is shut down by a
//! janitor thread; [`shutdown_idle`] shuts every idle pool down at once (the package's exit
//! hook and `herdsman.shutdown_workers()`).
//!
//! This module must never hand a pool to two maps, never keep a pool past the interpreter's
//! exit hook (once closed, pools handed back are shut down at once), and never touch a pool
//! inherited through `fork()` (its threads do not exist in the child: it is forgotten).

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::{Condvar, Mutex, MutexGuard, Once};
use std::time::{Duration, Instant};

use herdsman::Executor as _;
use herdsman_workers::WorkerPool;

/// How long a pool waits, idle, for the next map before its workers are stopped.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// What makes the workers of two maps interchangeable: the settings of the pool, and what
/// a worker inherited when it started (the process environment, the working directory),
/// so that a map after `os.environ[...] = ...` or `os.chdir()` gets workers that see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PoolKey {
    pub(crate) argv: Vec<String>,
    pub(crate) env: Vec<(String, String)>,
    pub(crate) workers: usize,
    pub(crate) timeout: Option<Duration>,
    pub(crate) pipeline_depth: Option<usize>,
    inherited: Vec<(OsString, OsString)>,
    cwd: Option<PathBuf>,
}

impl PoolKey {
    /// The key of a pool with these settings, started now.
    pub(crate) fn new(
        argv: Vec<String>,
        env: Vec<(String, String)>,
        workers: usize,
        timeout: Option<Duration>,
        pipeline_depth: Option<usize>,
    ) -> Self {
        let mut inherited: Vec<(OsString, OsString)> = std::env::vars_os().collect();
        inherited.sort();
        PoolKey {
            argv,
            env,
            workers,
            timeout,
            pipeline_depth,
            inherited,
            cwd: std::env::current_dir().ok(),
        }
    }
}

struct Idle {
    key: PoolKey,
    pool: WorkerPool,
    since: Instant,
    /// The process that kept it: a child forked later must not use it.
    pid: u32,
}

struct Shelf {
    idle: Vec<Idle>,
    /// Set by the exit hook: pools handed back from now on are shut down.
    closed: bool,
}

static SHELF: Mutex<Shelf> = Mutex::new(Shelf {
    idle: Vec::new(),
    closed: false,
});
static CHANGED: Condvar = Condvar::new();
static JANITOR: Once = Once::new();

fn shelf() -> MutexGuard<'static, Shelf> {
    let mut s = SHELF.lock().unwrap_or_else(|e| e.into_inner());
    let me = std::process::id();
    if s.idle.iter().any(|e| e.pid != me) {
        // Pools inherited through fork(): their pipe threads and children belong to the
        // parent. Forget them without running any of their code.
        let (ours, theirs): (Vec<Idle>, Vec<Idle>) = std::mem::take(&mut s.idle)
            .into_iter()
            .partition(|e| e.pid == me);
        s.idle = ours;
        std::mem::forget(theirs);
    }
    s
}

/// An idle pool for `key`, if one was kept.
pub(crate) fn take(key: &PoolKey) -> Option<WorkerPool> {
    let mut s = shelf();
    let k = s.idle.iter().position(|e| e.key == *key)?;
    let got = s.idle.swap_remove(k);
    CHANGED.notify_all();
    Some(got.pool)
}

/// Keep a healthy pool for the next map (or shut it down if the interpreter is exiting).
pub(crate) fn give_back(key: PoolKey, mut pool: WorkerPool) {
    {
        let mut s = shelf();
        if !s.closed {
            s.idle.push(Idle {
                key,
                pool,
                since: Instant::now(),
                pid: std::process::id(),
            });
            drop(s);
            JANITOR.call_once(|| {
                let _ = std::thread::Builder::new()
                    .name("herdsman-py-idle".into())
                    .spawn(janitor);
            });
            CHANGED.notify_all();
            return;
        }
    }
    pool.shutdown();
}

/// Shut every idle pool down now; with `close`, also every pool handed back later.
/// Returns how many pools were shut down.
pub(crate) fn shutdown_idle(close: bool) -> usize {
    let pools: Vec<Idle> = {
        let mut s = shelf();
        s.closed |= close;
        std::mem::take(&mut s.idle)
    };
    CHANGED.notify_all();
    let n = pools.len();
    for mut e in pools {
        e.pool.shutdown();
    }
    n
}

/// Stops pools that stayed idle for [`IDLE_TIMEOUT`]; sleeps until the next one is due.
fn janitor() {
    let mut s = shelf();
    loop {
        let now = Instant::now();
        let (expired, kept): (Vec<Idle>, Vec<Idle>) = std::mem::take(&mut s.idle)
            .into_iter()
            .partition(|e| now.duration_since(e.since) >= IDLE_TIMEOUT);
        s.idle = kept;
        if !expired.is_empty() {
            drop(s);
            for mut e in expired {
                e.pool.shutdown();
            }
            s = shelf();
            continue;
        }
        let next = s.idle.iter().map(|e| e.since + IDLE_TIMEOUT).min();
        s = match next {
            Some(due) => {
                let wait = due.saturating_duration_since(Instant::now());
                CHANGED
                    .wait_timeout(s, wait)
                    .unwrap_or_else(|e| e.into_inner())
                    .0
            }
            None => CHANGED.wait(s).unwrap_or_else(|e| e.into_inner()),
        };
    }
}
