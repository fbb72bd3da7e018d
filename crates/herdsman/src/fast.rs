//! The fast path of ordered `collect` on threads, taken only when no policy needs the
//! scheduler: an input of exactly known length, no retry, rate limit, timeout, deadline,
//! error limit, stop token, callback or explicit window.
//!
//! Each thread (the caller's included) claims the next contiguous block of indices from the
//! shared input (a short lock per block, never per item), runs the function on it with the
//! same panic capture as the engine, and moves the values straight into their final slots
//! of the run's [`DirectOut`]. Blocks shrink as the input runs out (guided scheduling), so
//! the threads finish together even when items differ in cost. Every item still ends
//! exactly once: a value in its slot or a failure with its index.

use std::sync::{Arc, Mutex};

use crate::direct::DirectOut;
use crate::engine::run_one;
use crate::executor::AttemptOutcome;
use crate::limiter::Clock;
use crate::map::SendInput;
use crate::outcome::{Failure, ItemError, RunResult, RunStatus, Successes, Summary};

/// Largest block a thread claims at once (bounds the items pulled and not yet finished).
const MAX_BLOCK: usize = 4096;

/// The shared input and the next index to hand out.
struct Claim<I> {
    input: SendInput<I>,
    next: u64,
    ended: bool,
}

/// What one thread produced.
struct Part<U, E> {
    ok: Vec<(u64, usize)>,
    overflow: Vec<(u64, U)>,
    failures: Vec<Failure<E>>,
}

/// Run `f` over `input` (of exactly `n` items by its size hint) on `workers` threads.
pub(crate) fn collect<I, T, U, E, F>(
    input: SendInput<I>,
    n: usize,
    f: &F,
    workers: usize,
    clock: &Arc<dyn Clock>,
) -> RunResult<U, E>
where
    I: Iterator<Item = T>,
    T: Send,
    U: Send,
    E: Send,
    F: Fn(T) -> Result<U, E> + Sync,
{
    let start = clock.now();
    let out = DirectOut::new(n);
    let claim = Mutex::new(Claim {
        input,
        next: 0,
        ended: false,
    });
    // Items claimed and not finished stay within the default window, whatever `workers`.
    let max_block = MAX_BLOCK.min(crate::map::DEFAULT_WINDOW / workers).max(1);
    let block_for = |next: u64| {
        let left = (n as u64).saturating_sub(next) as usize;
        (left / (workers * 4)).clamp(1, max_block)
    };
    let work = || run_blocks(&claim, &block_for, f, &out, clock);
    let mut parts = Vec::with_capacity(workers);
    std::thread::scope(|s| {
        let helpers: Vec<_> = (1..workers)
            .filter_map(|k| {
                // A thread the system refuses is simply not there: the others, the
                // caller's included, take its share.
                std::thread::Builder::new()
                    .name(format!("herdsman-worker-{k}"))
                    .spawn_scoped(s, work)
                    .ok()
            })
            .collect();
        parts.push(work());
        for h in helpers {
            match h.join() {
                Ok(p) => parts.push(p),
                // Only a panic outside `f` (none is expected) gets here.
                Err(p) => std::panic::resume_unwind(p),
            }
        }
    });
    let admitted = claim.into_inner().unwrap_or_else(|e| e.into_inner()).next;
    let mut ok = Vec::new();
    let mut overflow = Vec::new();
    let mut failures = Vec::new();
    for p in parts {
        ok.extend(p.ok);
        overflow.extend(p.overflow);
        failures.extend(p.failures);
    }
    let mut values = out.finish(&ok);
    overflow.sort_unstable_by_key(|(i, _)| *i);
    values.extend(overflow.into_iter().map(|(_, v)| v));
    failures.sort_unstable_by_key(|f| f.index);
    let holes = failures.iter().map(|f| f.index).collect();
    let failed = failures.len() as u64;
    let summary = Summary {
        status: RunStatus::Completed,
        succeeded: admitted - failed,
        failed,
        not_run: 0,
        retries: 0,
        admitted,
        elapsed: clock.now().saturating_sub(start),
    };
    RunResult {
        successes: Successes::Ordered { values, holes },
        failures,
        summary,
    }
}

/// One thread's loop: claim a block, run it, place its values; until the input ends.
fn run_blocks<I, T, U, E, F>(
    claim: &Mutex<Claim<I>>,
    block_for: &(dyn Fn(u64) -> usize + Sync),
    f: &F,
    out: &DirectOut<U>,
    clock: &Arc<dyn Clock>,
) -> Part<U, E>
where
    I: Iterator<Item = T>,
    F: Fn(T) -> Result<U, E>,
{
    let mut part = Part {
        ok: Vec::new(),
        overflow: Vec::new(),
        failures: Vec::new(),
    };
    let mut items: Vec<T> = Vec::new();
    let mut values: Vec<U> = Vec::new();
    loop {
        let first = {
            let mut c = claim.lock().unwrap_or_else(|e| e.into_inner());
            if c.ended {
                break;
            }
            let want = block_for(c.next);
            items.extend(c.input.get_mut().by_ref().take(want));
            if items.len() < want {
                c.ended = true;
            }
            let first = c.next;
            c.next += items.len() as u64;
            first
        };
        if items.is_empty() {
            break;
        }
        let len = items.len();
        let began = clock.now();
        // Index of `values[0]`.
        let mut at = first;
        let mut failed_at: Vec<(u64, ItemError<E>)> = Vec::new();
        for (k, item) in items.drain(..).enumerate() {
            let err = match run_one(f, item) {
                AttemptOutcome::Success(v) => {
                    values.push(v);
                    continue;
                }
                AttemptOutcome::Failure(e) => ItemError::Failed(e),
                AttemptOutcome::Panicked(m) => ItemError::Panicked(m),
            };
            let index = first + k as u64;
            place(out, at, &mut values, &mut part);
            failed_at.push((index, err));
            at = index + 1;
        }
        place(out, at, &mut values, &mut part);
        if !failed_at.is_empty() {
            let per_item = clock.now().saturating_sub(began) / len as u32;
            part.failures
                .extend(failed_at.into_iter().map(|(index, error)| Failure {
                    index,
                    error,
                    attempts: 1,
                    duration: per_item,
                }));
        }
    }
    part
}

/// Move the values of `at..` into the direct output (or the overflow, past its end).
fn place<U, E>(out: &DirectOut<U>, at: u64, values: &mut Vec<U>, part: &mut Part<U, E>) {
    if values.is_empty() {
        return;
    }
    let len = values.len();
    if out.write(at, values) {
        part.ok.push((at, len));
    } else {
        part.overflow.extend(
            values
                .drain(..)
                .enumerate()
                .map(|(k, v)| (at + k as u64, v)),
        );
    }
}
