//! The fast path of ordered `collect` on threads, taken only when no policy needs the
//! scheduler: an input of exactly known length, no retry, rate limit, timeout, deadline,
//! error limit, stop token, callback or explicit window.
//!
//! Threads (the caller's included) claim contiguous index ranges ("chunks") and run them
//! with the same per-item panic capture as the engine, moving each value straight into its
//! final slot of the run's [`Slots`] (no intermediate buffer, no lock per chunk). Chunks
//! shrink as the input runs out (guided scheduling), so threads finish together even when
//! items differ in cost. Every item still ends exactly once: a value in its slot or a
//! failure with its index.
//!
//! Two kinds of input:
//!
//! - **Indexed** inputs (a range of integers or other `Step` values, `a..b` or `a..=b`, and
//!   a copied slice, `slice.iter().copied()`) are split by index with no central puller, as
//!   rayon's indexed producers do: a chunk is claimed with one atomic compare-exchange, and
//!   each thread reads its chunk from its own copy of the input, positioned with an O(1)
//!   `nth`. These types are recognized by their type identity (lifetimes aside): Rust has
//!   no specialization, and they are the ones whose copy is a plain bitwise clone.
//! - Any **other** iterator is sequential by nature: a thread pulls its chunk under a short
//!   lock (one per chunk, never per item) into a reused buffer, then runs it unlocked.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::direct::{SlotWriter, Slots};
use crate::engine::panic_message;
use crate::limiter::Clock;
use crate::map::SendInput;
use crate::outcome::{Failure, ItemError, RunResult, RunStatus, Successes, Summary};

/// Largest chunk a thread claims at once (bounds the items pulled and not yet finished).
const MAX_BLOCK: usize = 4096;
/// A thread's first chunk, which measures the items' cost.
const FIRST_BLOCK: usize = 64;
/// Longest a chunk should run, by the thread's latest measure: a thread that the system
/// stops while it holds a chunk holds back at most about this much work at the end.
const TARGET_CHUNK: Duration = Duration::from_micros(500);

/// Chunk sizes shared by all threads.
struct Sizes {
    workers: usize,
    max_block: usize,
}

impl Sizes {
    /// Guided: a quarter of each thread's share of the `left` items, at most `max_block`.
    fn chunk_for(&self, left: usize) -> usize {
        (left / (self.workers * 4)).clamp(1, self.max_block)
    }
}

/// One thread's chunk size limit from the cost of its items so far.
struct Pace {
    cap: usize,
    max: usize,
}

impl Pace {
    fn new(max: usize) -> Self {
        Pace {
            cap: FIRST_BLOCK.min(max),
            max,
        }
    }

    /// `len` items took `elapsed`.
    fn measured(&mut self, len: usize, elapsed: Duration) {
        let per_item = elapsed.as_nanos() / len.max(1) as u128;
        self.cap = match TARGET_CHUNK.as_nanos().checked_div(per_item) {
            Some(fit) => usize::try_from(fit)
                .unwrap_or(usize::MAX)
                .clamp(1, self.max),
            None => self.max,
        };
    }
}

/// What one thread produced (its values are in the [`Slots`]).
struct Part<U, E> {
    /// Items run.
    ran: u64,
    /// Values whose index is past the input's length hint (an iterator that lied).
    overflow: Vec<(u64, U)>,
    failures: Vec<Failure<E>>,
}

impl<U, E> Part<U, E> {
    fn new() -> Self {
        Part {
            ran: 0,
            overflow: Vec::new(),
            failures: Vec::new(),
        }
    }
}

/// Whether `I` is one of the indexed inputs: a type whose bitwise copy is an independent
/// clone (plain data, no `Drop`, no ownership) and whose `nth` is O(1) with no side effect.
///
/// `Range<T>` and `RangeInclusive<T>` iterate only for the standard library's `Step` types
/// (integers, `char`, IP addresses: all `Copy`, and `Step` cannot be implemented outside
/// the standard library); `Copied<slice::Iter<T>>` is a shared view of a slice of `Copy`
/// values. `typeid::of` compares types with lifetimes erased, which is exact for these.
fn is_indexed<I: Iterator<Item = T>, T: 'static>() -> bool {
    let id = typeid::of::<I>();
    id == typeid::of::<std::ops::Range<T>>()
        || id == typeid::of::<std::ops::RangeInclusive<T>>()
        || id == typeid::of::<std::iter::Copied<std::slice::Iter<'static, T>>>()
}

/// Run `f` over `input` (of exactly `n` items by its size hint) on `workers` threads.
pub(crate) fn collect<I, T, U, E, F>(
    mut input: SendInput<I>,
    n: usize,
    f: &F,
    workers: usize,
    clock: &Arc<dyn Clock>,
) -> RunResult<U, E>
where
    I: Iterator<Item = T>,
    T: Send + 'static,
    U: Send,
    E: Send,
    F: Fn(T) -> Result<U, E> + Sync,
{
    let start = clock.now();
    let slots = Slots::new(n);
    // Items claimed and not finished stay within the default window, whatever `workers`.
    let max_block = MAX_BLOCK.min(crate::map::DEFAULT_WINDOW / workers).max(1);
    let sizes = Sizes { workers, max_block };
    let parts = if is_indexed::<I, T>() {
        // One copy of the input per thread, made here and moved to it.
        let copies: Vec<SendInput<I>> = (0..workers)
            .map(|_| {
                // SAFETY: `is_indexed` showed `I` is a range of `Copy` values or a copied
                // slice view: plain data whose bitwise copy is a clone (nothing owned, no
                // `Drop`), so the copies and `input` iterate independently. Each copy is
                // `Send` because `input` is (`SendInput` was proven `Send`).
                unsafe { SendInput::bitwise_copy(&input) }
            })
            .collect();
        let next = AtomicUsize::new(0);
        on_threads(copies, |it| {
            run_indexed(it, n, &next, &sizes, f, &slots, clock)
        })
    } else {
        let claim = Mutex::new(Claim {
            input: &mut input,
            next: 0,
            ended: false,
        });
        let shares = (0..workers).map(|_| ()).collect();
        on_threads(shares, |()| run_pulled(&claim, n, &sizes, f, &slots, clock))
    };
    let mut admitted = 0;
    let mut overflow = Vec::new();
    let mut failures = Vec::new();
    for p in parts {
        admitted += p.ran;
        overflow.extend(p.overflow);
        failures.extend(p.failures);
    }
    let mut values = slots.finish();
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

/// Run `work` once per element of `shares`, the first on the calling thread and the others
/// on scoped threads; the parts in `shares` order.
fn on_threads<S, P, W>(shares: Vec<S>, work: W) -> Vec<P>
where
    S: Send,
    P: Send,
    W: Fn(S) -> P + Sync,
{
    let mut shares = shares.into_iter();
    let Some(mine) = shares.next() else {
        return Vec::new();
    };
    let work = &work;
    std::thread::scope(|s| {
        let helpers: Vec<_> = shares
            .enumerate()
            .filter_map(|(k, share)| {
                // A thread the system refuses is simply not there: the others, the
                // caller's included, take its share of the chunks.
                std::thread::Builder::new()
                    .name(format!("herdsman-worker-{}", k + 1))
                    .spawn_scoped(s, move || work(share))
                    .ok()
            })
            .collect();
        let mut parts = vec![work(mine)];
        for h in helpers {
            match h.join() {
                Ok(p) => parts.push(p),
                // Only a panic outside `f` (the input's own, say) gets here.
                Err(p) => std::panic::resume_unwind(p),
            }
        }
        parts
    })
}

/// Claim the next chunk of `0..n`: its first index and length (one compare-exchange).
fn claim_chunk(
    next: &AtomicUsize,
    n: usize,
    chunk_for: &(dyn Fn(usize) -> usize + Sync),
) -> Option<(usize, usize)> {
    let mut first = next.load(Ordering::Relaxed);
    loop {
        if first >= n {
            return None;
        }
        let len = chunk_for(n - first).min(n - first);
        match next.compare_exchange_weak(first, first + len, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return Some((first, len)),
            Err(now) => first = now,
        }
    }
}

/// One thread's loop over an indexed input: claim a chunk, move this thread's copy of the
/// input to its start, run it; until every index is claimed.
fn run_indexed<I, T, U, E, F>(
    mut input: SendInput<I>,
    n: usize,
    next: &AtomicUsize,
    sizes: &Sizes,
    f: &F,
    slots: &Slots<U>,
    clock: &Arc<dyn Clock>,
) -> Part<U, E>
where
    I: Iterator<Item = T>,
    F: Fn(T) -> Result<U, E>,
{
    let it = input.get_mut();
    let mut part = Part::new();
    let mut out = slots.writer();
    // Items of `it` already passed.
    let mut pos = 0usize;
    let mut pace = Pace::new(sizes.max_block);
    while let Some((first, len)) = claim_chunk(next, n, &|left| sizes.chunk_for(left).min(pace.cap))
    {
        if first > pos {
            // O(1) for indexed inputs, and the skipped item is plain data.
            it.nth(first - pos - 1);
        }
        pos = first + len;
        let took = run_chunk(
            first as u64,
            len,
            it.by_ref().take(len),
            f,
            &mut out,
            &mut part,
            clock,
        );
        pace.measured(len, took);
    }
    part
}

/// The shared input of a sequential (not indexed) iterator and the next index to hand out.
struct Claim<'a, I> {
    input: &'a mut SendInput<I>,
    next: u64,
    ended: bool,
}

/// One thread's loop over a sequential input: pull a chunk under the lock, run it unlocked;
/// until the input ends.
fn run_pulled<I, T, U, E, F>(
    claim: &Mutex<Claim<'_, I>>,
    n: usize,
    sizes: &Sizes,
    f: &F,
    slots: &Slots<U>,
    clock: &Arc<dyn Clock>,
) -> Part<U, E>
where
    I: Iterator<Item = T>,
    F: Fn(T) -> Result<U, E>,
{
    let mut part = Part::new();
    let mut out = slots.writer();
    let mut items: Vec<T> = Vec::new();
    let mut pace = Pace::new(sizes.max_block);
    loop {
        let first = {
            let mut c = claim.lock().unwrap_or_else(|e| e.into_inner());
            if c.ended {
                break;
            }
            let left = (n as u64).saturating_sub(c.next) as usize;
            let want = sizes.chunk_for(left).min(pace.cap);
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
        let took = run_chunk(first, len, items.drain(..), f, &mut out, &mut part, clock);
        pace.measured(len, took);
    }
    part
}

/// A failure of the first attempt, its duration set once the chunk is done.
fn failure<E>(index: u64, error: ItemError<E>) -> Failure<E> {
    Failure {
        index,
        error,
        attempts: 1,
        duration: Duration::ZERO,
    }
}

/// Run the `len` items of one chunk starting at index `first`: values go straight into
/// their slots (or the overflow, past the input's length hint), failures into `part`.
fn run_chunk<T, U, E, F>(
    first: u64,
    len: usize,
    items: impl Iterator<Item = T>,
    f: &F,
    out: &mut SlotWriter<'_, U>,
    part: &mut Part<U, E>,
    clock: &Arc<dyn Clock>,
) -> Duration
where
    F: Fn(T) -> Result<U, E>,
{
    let began = clock.now();
    let direct = out.reserve(first, len);
    let failed_before = part.failures.len();
    let mut items = items;
    let mut ran = 0u64;
    // One panic guard per chunk, not per item (it keeps the loop tight); a panic is still
    // charged to the one item that raised it, and the chunk goes on after it. Only `f` can
    // panic in the guarded loop: the items of an indexed input are plain data, those of a
    // sequential one were pulled before.
    loop {
        let done = catch_unwind(AssertUnwindSafe(|| {
            let mut run = |index: u64, item: T| match f(item) {
                Ok(v) => Some(v),
                Err(e) => {
                    part.failures.push(failure(index, ItemError::Failed(e)));
                    None
                }
            };
            if direct {
                out.write_each(&mut items, |item| {
                    ran += 1;
                    run(first + ran - 1, item)
                });
            } else {
                for item in items.by_ref() {
                    ran += 1;
                    let index = first + ran - 1;
                    if let Some(v) = run(index, item) {
                        part.overflow.push((index, v));
                    }
                }
            }
        }));
        match done {
            Ok(()) => break,
            Err(payload) => {
                // The item counted last raised it.
                if direct {
                    out.skip();
                }
                let m = panic_message(payload.as_ref());
                part.failures
                    .push(failure(first + ran - 1, ItemError::Panicked(m)));
            }
        }
    }
    part.ran += ran;
    let took = clock.now().saturating_sub(began);
    if part.failures.len() > failed_before {
        // As in the engine's batches: each item of the chunk is charged an equal share.
        let per_item = took / ran.max(1) as u32;
        for fl in &mut part.failures[failed_before..] {
            fl.duration = per_item;
        }
    }
    took
}

#[cfg(test)]
mod tests {
    use super::*;

    fn indexed<I: Iterator<Item = T>, T: 'static>(_: &I) -> bool {
        is_indexed::<I, T>()
    }

    #[test]
    fn ranges_and_copied_slices_are_indexed() {
        assert!(indexed(&(0..10u64)));
        assert!(indexed(&(-5i32..=5)));
        assert!(indexed(&('a'..='z')));
        // A slice that lives on this stack frame only: lifetimes do not matter.
        let local = [1u8, 2, 3];
        assert!(indexed(&local.iter().copied()));
    }

    #[test]
    fn other_iterators_are_pulled() {
        let v = [String::from("a")];
        // `cloned` runs user code (`Clone`) and its `nth` is not O(1).
        assert!(!indexed(&v.iter().cloned()));
        assert!(!indexed(&vec![1u64].into_iter()));
        assert!(!indexed(&(0..10u64).map(|x| x + 1)));
        assert!(!indexed(&(0..10u64).step_by(2)));
        // Items that are references: the slice itself is not read by index.
        static WORDS: [&str; 2] = ["a", "b"];
        assert!(!indexed(&WORDS.iter()));
    }

    #[test]
    fn an_indexed_input_partly_consumed_starts_where_it_stands() {
        let mut input = 100..200u64;
        input.nth(9);
        let clock: Arc<dyn Clock> = Arc::new(crate::limiter::SystemClock::default());
        let f = |x: u64| if x % 10 == 3 { Err(x) } else { Ok(x * 2) };
        let run = collect(SendInput::new(input), 90, &f, 3, &clock);
        assert_eq!(run.summary().admitted, 90);
        let (ok, failed) = run.into_parts();
        let want: Vec<(u64, u64)> = (110..200u64)
            .filter(|x| x % 10 != 3)
            .map(|x| (x - 110, x * 2))
            .collect();
        assert_eq!(ok, want);
        assert_eq!(failed.len(), 9);
        assert!(failed.iter().all(|fl| (fl.index + 110) % 10 == 3));
    }
}
