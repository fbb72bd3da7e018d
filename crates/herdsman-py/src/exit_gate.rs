//! The gate between a run's threads and the interpreter's exit.
//!
//! A run's threads are Rust threads that take the GIL to call Python (the user's function,
//! the input iterator, callbacks). When the interpreter finalizes, CPython ends any thread
//! that then tries to take the GIL with `pthread_exit`, and that forced unwind through Rust
//! frames aborts the whole process (SIGABRT). A call that outlived its run — one that timed
//! out, or belongs to a run whose handle was never dropped — can end at exactly that moment.
//!
//! The same holds for a Python thread (a daemon thread still inside a map when the program
//! ends) that waits in Rust without the GIL and takes it back when its wait is over.
//!
//! So every GIL entry from a run's thread goes through [`with_gil`], which counts the calls
//! inside Python, every wait of a Python thread goes through [`allow_threads`], and the
//! package's `atexit` hook calls [`stop_runs`] and [`close`]: it stops every live run, waits
//! (without the GIL, for a bounded time) until no thread is inside Python, then shuts the
//! gate. Once it is shut, no thread of ours enters Python again, and a Python thread whose
//! wait ends does not take the GIL back: it stays parked until the process exits, which is
//! what CPython itself does with such threads from 3.14 on.
//!
//! This module must never hold the GIL while it waits, never let a thread enter Python
//! once the gate is shut, and never park the thread that is running the exit.

use std::collections::HashMap;
use std::sync::{Condvar, Mutex};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use herdsman::StopToken;
use pyo3::Python;

struct Gate {
    /// Threads of ours inside `Python::with_gil` right now.
    inside: usize,
    /// Set at exit: no thread of ours may enter Python any more.
    shut: bool,
    /// The thread running the exit hook (the one that finalizes the interpreter).
    exiting: Option<ThreadId>,
}

static GATE: Mutex<Gate> = Mutex::new(Gate {
    inside: 0,
    shut: false,
    exiting: None,
});
static LEFT_PYTHON: Condvar = Condvar::new();

/// Stop tokens of the runs that have not ended, by registration number.
static LIVE: Mutex<Option<HashMap<u64, StopToken>>> = Mutex::new(None);
static NEXT_RUN: Mutex<u64> = Mutex::new(0);

/// Leaves the count of threads inside Python when dropped (also on a panic).
struct Inside;

impl Drop for Inside {
    fn drop(&mut self) {
        let mut g = GATE.lock().unwrap_or_else(|e| e.into_inner());
        g.inside -= 1;
        LEFT_PYTHON.notify_all();
    }
}

/// Run `f` with the GIL from one of a run's threads, or return `None` (without touching
/// Python) once the interpreter is exiting.
pub fn with_gil<R>(f: impl for<'py> FnOnce(Python<'py>) -> R) -> Option<R> {
    {
        let mut g = GATE.lock().unwrap_or_else(|e| e.into_inner());
        if g.shut {
            return None;
        }
        g.inside += 1;
    }
    let _inside = Inside;
    Some(Python::with_gil(f))
}

/// `py.allow_threads(f)` for a Python thread that waits on a run: once the gate is shut,
/// the thread does not take the GIL back after `f` (unless it is the thread running the
/// exit) but parks until the process ends.
pub fn allow_threads<T: Send>(py: Python<'_>, f: impl Send + FnOnce() -> T) -> T {
    py.allow_threads(move || {
        let r = f();
        park_if_exiting();
        r
    })
}

fn park_if_exiting() {
    let g = GATE.lock().unwrap_or_else(|e| e.into_inner());
    if g.exiting.is_none() || g.exiting == Some(std::thread::current().id()) {
        return;
    }
    drop(g);
    loop {
        std::thread::park();
    }
}

/// A run the exit hook may stop; unregistered when dropped.
pub struct LiveRun(u64);

impl LiveRun {
    /// Register a run by its stop token.
    pub fn register(stop: StopToken) -> LiveRun {
        let id = {
            let mut n = NEXT_RUN.lock().unwrap_or_else(|e| e.into_inner());
            *n += 1;
            *n
        };
        LIVE.lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert_with(HashMap::new)
            .insert(id, stop);
        LiveRun(id)
    }
}

impl Drop for LiveRun {
    fn drop(&mut self) {
        if let Some(m) = LIVE.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            m.remove(&self.0);
        }
    }
}

/// Stop every live run, from the thread running the exit; return how many calls of ours
/// are inside Python now.
pub fn stop_runs() -> usize {
    let runs: Vec<StopToken> = LIVE
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .map(|m| m.values().cloned().collect())
        .unwrap_or_default();
    // From here on the exit has begun: a Python thread whose wait ends parks (a run just
    // stopped here ends its waits at once, before the gate shuts).
    let mut g = GATE.lock().unwrap_or_else(|e| e.into_inner());
    g.exiting = Some(std::thread::current().id());
    drop(g);
    for s in runs {
        s.stop();
    }
    GATE.lock().unwrap_or_else(|e| e.into_inner()).inside
}

/// Wait up to `grace` for every thread of ours to leave Python, then shut the gate if
/// `shut`. The caller must not hold the GIL (the threads need it to finish). Returns how
/// many calls were still inside Python at the end.
pub fn close(grace: Duration, shut: bool) -> usize {
    let end = Instant::now() + grace;
    let mut g = GATE.lock().unwrap_or_else(|e| e.into_inner());
    while g.inside > 0 {
        let now = Instant::now();
        if now >= end {
            break;
        }
        g = LEFT_PYTHON
            .wait_timeout(g, end - now)
            .unwrap_or_else(|e| e.into_inner())
            .0;
    }
    if shut {
        g.shut = true;
        g.exiting = Some(std::thread::current().id());
    }
    g.inside
}
