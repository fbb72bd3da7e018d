//! Direct output for ordered `collect` on the thread pool: when the input's length is known,
//! workers move each finished piece's values straight into their final slots of one
//! pre-sized buffer, so the scheduler neither copies nor page-faults the output.
//!
//! It is never used with item timeouts, so each slot is written at most once (a retry only
//! follows a failed attempt, which writes nothing). That is not taken on trust: a bitmap
//! of written slots refuses any write that would touch a slot twice, so the slots written
//! are exactly the union of disjoint ranges, and a count equal to the length means every
//! slot was written once. Every write happens under one lock that also records which slots
//! were written, and the buffer is taken out under that lock with the door closed, so a
//! late write (from an attempt given up after a timeout) can never race with the caller,
//! and every initialized slot is either returned or dropped exactly once.
//!
//! [`Slots`] is the lock-free variant for the fast path of ordered `collect` (see `fast`),
//! where every writer is a scoped thread joined before the result is taken: reservations
//! in an atomic bitmap prove the same "each slot at most once" without a lock per write.

use std::marker::PhantomData;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

struct State<U> {
    /// Storage for `n` values; its length stays 0, slots are initialized by `write`.
    buf: Vec<U>,
    n: usize,
    closed: bool,
    /// `(first index, count)` of every write (disjoint ranges: see `marks`).
    written: Vec<(u64, usize)>,
    /// One bit per slot, set when the slot is written.
    marks: Vec<u64>,
    /// Slots written: the sum of the ranges' lengths, which never overlap.
    count: usize,
}

/// Whether any bit of `first..end` is set.
fn any_marked(marks: &[u64], first: usize, end: usize) -> bool {
    let mut i = first;
    while i < end {
        let (w, b) = (i / 64, i % 64);
        let take = (64 - b).min(end - i);
        let mask = if take == 64 {
            u64::MAX
        } else {
            ((1u64 << take) - 1) << b
        };
        if marks[w] & mask != 0 {
            return true;
        }
        i += take;
    }
    false
}

/// Set every bit of `first..end`.
fn mark(marks: &mut [u64], first: usize, end: usize) {
    let mut i = first;
    while i < end {
        let (w, b) = (i / 64, i % 64);
        let take = (64 - b).min(end - i);
        let mask = if take == 64 {
            u64::MAX
        } else {
            ((1u64 << take) - 1) << b
        };
        marks[w] |= mask;
        i += take;
    }
}

pub(crate) struct DirectOut<U> {
    state: Mutex<State<U>>,
}

impl<U> DirectOut<U> {
    pub(crate) fn new(n: usize) -> Self {
        DirectOut {
            state: Mutex::new(State {
                buf: Vec::with_capacity(n),
                n,
                closed: false,
                written: Vec::new(),
                marks: vec![0; n.div_ceil(64)],
                count: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<U>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Move `values` into slots `first..`; on success `values` is left empty. Returns false
    /// (leaving `values` untouched) when closed, out of range, or when any of those slots
    /// was already written.
    pub(crate) fn write(&self, first: u64, values: &mut Vec<U>) -> bool {
        let mut st = self.lock();
        let len = values.len();
        let Some(end) = (first as usize).checked_add(len) else {
            return false;
        };
        if st.closed || end > st.n || len == 0 {
            return false;
        }
        let first_slot = first as usize;
        if any_marked(&st.marks, first_slot, end) {
            debug_assert!(false, "slots {first}..{end} were already written");
            return false;
        }
        // SAFETY: `buf` has capacity `n` >= `end`; the bitmap just showed that slots
        // `first..end` were never written, so nothing initialized is overwritten; `values`
        // gives up ownership by `set_len(0)` right after the bitwise move.
        unsafe {
            std::ptr::copy_nonoverlapping(
                values.as_ptr(),
                st.buf.as_mut_ptr().add(first as usize),
                len,
            );
            values.set_len(0);
        }
        mark(&mut st.marks, first_slot, end);
        st.count += len;
        st.written.push((first, len));
        true
    }

    /// Close for good and assemble the successes in index order: `ok` lists the ranges the
    /// engine reported as successes (all written); written slots outside them are dropped.
    pub(crate) fn finish(&self, ok: &[(u64, usize)]) -> Vec<U> {
        let mut st = self.lock();
        st.closed = true;
        let n = st.n;
        let written = std::mem::take(&mut st.written);
        let written_total = st.count;
        let mut buf = std::mem::take(&mut st.buf);
        drop(st);
        let ok_total: usize = ok.iter().map(|r| r.1).sum();
        if ok_total == n && written_total == n {
            // SAFETY: `write` accepts only ranges inside 0..n whose slots are all unmarked,
            // and marks them; so the written ranges are disjoint and `count` is the number
            // of distinct slots written. `count == n` slots of 0..n means every slot 0..n
            // is initialized, each by exactly one write.
            debug_assert!(written.iter().map(|r| r.1).sum::<usize>() == n);
            unsafe { buf.set_len(n) };
            return buf;
        }
        const EMPTY: u8 = 0;
        const WRITTEN: u8 = 1;
        const OK: u8 = 2;
        let mut state = vec![EMPTY; n];
        for &(f, l) in &written {
            state[f as usize..f as usize + l].fill(WRITTEN);
        }
        for &(f, l) in ok {
            for s in &mut state[f as usize..f as usize + l] {
                debug_assert_eq!(*s, WRITTEN, "a success was not written");
                if *s == WRITTEN {
                    *s = OK;
                }
            }
        }
        let mut values = Vec::with_capacity(ok_total);
        let base = buf.as_mut_ptr();
        for (i, s) in state.iter().enumerate() {
            // SAFETY: WRITTEN/OK slots are initialized and each is read or dropped once;
            // `buf` keeps length 0, so dropping it only frees the storage.
            unsafe {
                match *s {
                    OK => values.push(std::ptr::read(base.add(i))),
                    WRITTEN => std::ptr::drop_in_place(base.add(i)),
                    _ => {}
                }
            }
        }
        values
    }
}

/// Lock-free direct output for the fast path of ordered `collect` (see `fast`): each thread
/// reserves a contiguous range of slots and moves values straight into them, with no lock
/// and no intermediate buffer.
///
/// The proof that every slot is written at most once, without a lock: a reservation sets the
/// range's bits in an atomic bitmap and is refused if any of them was already set (one
/// atomic read-modify-write per 64 slots, so two reservations can never both own a slot);
/// a [`SlotWriter`] writes only inside its current reservation, at a cursor that only moves
/// forward, and records the runs of slots it initialized. The runs of all writers are thus
/// disjoint and inside `0..n`, so when they add up to `n` every slot was written exactly
/// once and the buffer can take length `n` as is. Writers borrow the [`Slots`] and
/// [`Slots::finish`] takes it by value, so no write can race with the result being taken.
pub(crate) struct Slots<U> {
    /// Storage for `n` values, from a `Vec` with capacity `cap`; no slot is initialized
    /// except through a writer.
    ptr: NonNull<U>,
    cap: usize,
    n: usize,
    /// One bit per slot, set when the slot is reserved.
    marks: Box<[AtomicU64]>,
    /// `(first, count)` runs of initialized slots handed over by writers (each once, when it
    /// is dropped); disjoint, see above.
    runs: Mutex<Vec<(u64, usize)>>,
    /// The storage was given away (to `finish`'s result) or freed.
    taken: bool,
    _owns: PhantomData<U>,
}

// SAFETY: `Slots` owns the values in its storage (moved in from writer threads, hence
// `U: Send`). Through `&Slots` a thread only writes slots it reserved, which no other thread
// touches (see the proof above); the values are read only by `finish`/`drop`, with `&mut`.
unsafe impl<U: Send> Send for Slots<U> {}
// SAFETY: as above: shared access only writes disjoint reserved slots.
unsafe impl<U: Send> Sync for Slots<U> {}

impl<U> Slots<U> {
    /// Room for `n` values, none written.
    pub(crate) fn new(n: usize) -> Self {
        let mut buf = std::mem::ManuallyDrop::new(Vec::<U>::with_capacity(n));
        let cap = buf.capacity();
        // A Vec's pointer is never null (dangling but aligned when nothing is allocated).
        let ptr = NonNull::new(buf.as_mut_ptr()).expect("a Vec's pointer is not null");
        Slots {
            ptr,
            cap,
            n,
            marks: (0..n.div_ceil(64)).map(|_| AtomicU64::new(0)).collect(),
            runs: Mutex::new(Vec::new()),
            taken: false,
            _owns: PhantomData,
        }
    }

    /// A writer for one thread (a thread may hold several; each writes only its own
    /// reservations).
    pub(crate) fn writer(&self) -> SlotWriter<'_, U> {
        SlotWriter {
            slots: self,
            cursor: 0,
            end: 0,
            run_start: 0,
            runs: Vec::new(),
        }
    }

    /// Set the bits of `first..end`; false (some bits may stay set, their slots unwritten) if
    /// any of them was set already.
    fn reserve(&self, first: usize, end: usize) -> bool {
        let mut i = first;
        while i < end {
            let (w, b) = (i / 64, i % 64);
            let take = (64 - b).min(end - i);
            let mask = if take == 64 {
                u64::MAX
            } else {
                ((1u64 << take) - 1) << b
            };
            if self.marks[w].fetch_or(mask, Ordering::AcqRel) & mask != 0 {
                return false;
            }
            i += take;
        }
        true
    }

    /// The written values in index order (every slot, when all were written).
    pub(crate) fn finish(mut self) -> Vec<U> {
        self.take()
    }

    fn take(&mut self) -> Vec<U> {
        if self.taken {
            return Vec::new();
        }
        self.taken = true;
        let mut runs = std::mem::take(self.runs.get_mut().unwrap_or_else(|e| e.into_inner()));
        let total: usize = runs.iter().map(|r| r.1).sum();
        if total == self.n {
            // SAFETY: the runs are disjoint and inside 0..n (see the type's proof), so runs
            // adding up to `n` slots cover every slot of 0..n, each initialized once; `ptr`
            // and `cap` come from a `Vec<U>` that was never freed.
            return unsafe { Vec::from_raw_parts(self.ptr.as_ptr(), self.n, self.cap) };
        }
        runs.sort_unstable_by_key(|r| r.0);
        let mut values: Vec<U> = Vec::with_capacity(total);
        for &(first, len) in &runs {
            // SAFETY: each run's slots are initialized and, the runs being disjoint, moved
            // out exactly once; `values` has room for `total` values.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    self.ptr.as_ptr().add(first as usize),
                    values.as_mut_ptr().add(values.len()),
                    len,
                );
                values.set_len(values.len() + len);
            }
        }
        // SAFETY: frees the storage only (length 0: every value was moved out above).
        drop(unsafe { Vec::from_raw_parts(self.ptr.as_ptr(), 0, self.cap) });
        values
    }
}

impl<U> Drop for Slots<U> {
    fn drop(&mut self) {
        // A run that did not finish (a panic outside the user's function): the values
        // written are dropped, each once.
        drop(self.take());
    }
}

/// One thread's access to [`Slots`]: reserve a range, then `put` (or `skip`) each of its
/// slots in order.
pub(crate) struct SlotWriter<'a, U> {
    slots: &'a Slots<U>,
    /// Next slot of the current reservation, which ends at `end`.
    cursor: usize,
    end: usize,
    /// First slot of the run being written (a run ends at a skipped slot).
    run_start: usize,
    /// Runs of initialized slots, handed to `slots` on drop.
    runs: Vec<(u64, usize)>,
}

impl<U> SlotWriter<'_, U> {
    /// Reserve slots `first..first + len` for the next `put`s and `skip`s; false (nothing
    /// reserved) when the range is empty, past the end, or overlaps a reserved slot.
    pub(crate) fn reserve(&mut self, first: u64, len: usize) -> bool {
        self.close_run();
        self.cursor = 0;
        self.end = 0;
        self.run_start = 0;
        let Ok(first) = usize::try_from(first) else {
            return false;
        };
        let Some(end) = first.checked_add(len) else {
            return false;
        };
        if len == 0 || end > self.slots.n || !self.slots.reserve(first, end) {
            return false;
        }
        self.cursor = first;
        self.end = end;
        self.run_start = first;
        true
    }

    /// Move `value` into the next slot of the reservation.
    ///
    /// # Panics
    /// When the reservation is used up (a bug of the caller).
    #[cfg(test)]
    pub(crate) fn put(&mut self, value: U) {
        assert!(self.cursor < self.end, "write outside the reserved slots");
        // SAFETY: `cursor` is inside this writer's reservation (`< end <= n <= cap`), which
        // no one else writes, and this writer has not written it (the cursor only moves
        // forward).
        unsafe { self.slots.ptr.as_ptr().add(self.cursor).write(value) };
        self.cursor += 1;
    }

    /// Leave the next slot of the reservation unwritten (the item failed).
    #[inline]
    pub(crate) fn skip(&mut self) {
        assert!(self.cursor < self.end, "skip outside the reserved slots");
        self.close_run();
        self.cursor += 1;
        self.run_start = self.cursor;
    }

    /// Run `each` over `items` in order: a `Some` value goes into the next slot of the
    /// reservation, a `None` leaves the next slot unwritten. The cursor lives in a local
    /// while the loop runs (the compiler cannot keep it in a register through `self`, as the
    /// slot writes might alias it) and is stored back when the loop ends, also when `each`
    /// panics: the slots written before the panic stay recorded.
    ///
    /// The slot is checked before `each` runs, not after: an item with no slot left is never
    /// run, and the check does not sit between the caller's inlined code and its loop's back
    /// edge (placed there, it made the compiler lay out a tight user loop, such as the
    /// reference workload's trial division, about 12% slower: see docs/performance.md).
    ///
    /// # Panics
    /// When `items` holds more items than the reservation has slots left (a bug of the
    /// caller; the extra item is not run), or when `each` panics.
    #[inline]
    pub(crate) fn write_each<T>(
        &mut self,
        items: &mut impl Iterator<Item = T>,
        mut each: impl FnMut(T) -> Option<U>,
    ) {
        /// Stores the local cursor back into the writer, on every way out of the loop.
        struct Back<'w, 'a, U> {
            w: &'w mut SlotWriter<'a, U>,
            cursor: usize,
        }
        impl<U> Drop for Back<'_, '_, U> {
            fn drop(&mut self) {
                self.w.cursor = self.cursor;
            }
        }
        let end = self.end;
        let base = self.slots.ptr.as_ptr();
        let mut at = Back {
            cursor: self.cursor,
            w: self,
        };
        for item in items {
            assert!(at.cursor < end, "write outside the reserved slots");
            match each(item) {
                // SAFETY: as in `put`: `cursor` is inside this writer's reservation and was
                // never written (it only moves forward).
                Some(v) => unsafe { base.add(at.cursor).write(v) },
                None => {
                    at.w.cursor = at.cursor;
                    at.w.close_run();
                    at.w.run_start = at.cursor + 1;
                }
            }
            at.cursor += 1;
        }
    }

    /// Record the run `run_start..cursor` (merged into the previous run when adjacent).
    fn close_run(&mut self) {
        if self.cursor > self.run_start {
            let (first, len) = (self.run_start as u64, self.cursor - self.run_start);
            match self.runs.last_mut() {
                Some(last) if last.0 + last.1 as u64 == first => last.1 += len,
                _ => self.runs.push((first, len)),
            }
        }
        self.run_start = self.cursor;
    }
}

impl<U> Drop for SlotWriter<'_, U> {
    fn drop(&mut self) {
        self.close_run();
        let mut runs = self.slots.runs.lock().unwrap_or_else(|e| e.into_inner());
        runs.append(&mut self.runs);
    }
}

#[cfg(test)]
mod tests {
    use super::{DirectOut, Slots};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[test]
    fn full_fast_path() {
        let d = DirectOut::new(4);
        assert!(d.write(2, &mut vec![20, 30]));
        assert!(d.write(0, &mut vec![0, 10]));
        assert_eq!(d.finish(&[(0, 2), (2, 2)]), vec![0, 10, 20, 30]);
    }

    #[test]
    fn unreported_writes_are_dropped_and_gaps_skipped() {
        let drops = Arc::new(AtomicUsize::new(0));
        struct D(u32, Arc<AtomicUsize>);
        impl Drop for D {
            fn drop(&mut self) {
                self.1.fetch_add(1, Ordering::SeqCst);
            }
        }
        let d = DirectOut::new(5);
        assert!(d.write(0, &mut vec![D(0, drops.clone())]));
        assert!(d.write(3, &mut vec![D(3, drops.clone()), D(4, drops.clone())]));
        // Out of range and empty writes are refused.
        assert!(!d.write(5, &mut vec![D(5, drops.clone())]));
        assert_eq!(drops.load(Ordering::SeqCst), 1);
        let got = d.finish(&[(0, 1), (4, 1)]);
        assert_eq!(got.iter().map(|x| x.0).collect::<Vec<_>>(), vec![0, 4]);
        // Item 3 was written but not reported: dropped once.
        assert_eq!(drops.load(Ordering::SeqCst), 2);
        drop(got);
        assert_eq!(drops.load(Ordering::SeqCst), 4);
        // Closed: later writes are refused.
        assert!(!d.write(1, &mut vec![D(1, drops.clone())]));
    }

    #[test]
    #[cfg_attr(debug_assertions, should_panic(expected = "already written"))]
    fn a_slot_is_never_written_twice() {
        let d = DirectOut::new(130);
        assert!(d.write(60, &mut (60..70).collect()));
        // Overlaps slot 69: refused (and a bug, so debug builds stop here).
        let mut again: Vec<u32> = (69..75).collect();
        assert!(!d.write(69, &mut again));
        assert_eq!(again.len(), 6, "a refused write keeps its values");
    }

    #[test]
    fn the_fast_path_needs_every_slot_written_once() {
        // Ranges that cross bitmap words, written out of order, tile 0..130 exactly.
        let d = DirectOut::new(130);
        for (first, end) in [(64, 130), (0, 1), (1, 63), (63, 64)] {
            let mut v: Vec<String> = (first..end).map(|i| i.to_string()).collect();
            assert!(d.write(first, &mut v));
            assert!(v.is_empty());
        }
        let got = d.finish(&[(0, 64), (64, 66)]);
        assert_eq!(got.len(), 130);
        assert!(got.iter().enumerate().all(|(i, s)| *s == i.to_string()));
    }

    #[test]
    fn a_hole_keeps_the_fast_path_off() {
        // 129 of 130 slots written: the result has the 129 values, and nothing
        // uninitialized is read.
        let d = DirectOut::new(130);
        assert!(d.write(0, &mut (0..100u64).map(Box::new).collect()));
        assert!(d.write(101, &mut (101..130u64).map(Box::new).collect()));
        let got = d.finish(&[(0, 100), (101, 29)]);
        assert_eq!(got.len(), 129);
        assert_eq!(*got[100], 101);
    }

    #[test]
    fn slots_every_slot_once_across_words_and_threads() {
        // Two threads reserve interleaved ranges that cross bitmap words; all 0..300 written.
        let slots = Slots::new(300);
        std::thread::scope(|s| {
            for t in 0..2u64 {
                let slots = &slots;
                s.spawn(move || {
                    let mut w = slots.writer();
                    let mut first = t * 50;
                    while first < 300 {
                        assert!(w.reserve(first, 50));
                        for i in first..first + 50 {
                            w.put(i.to_string());
                        }
                        first += 100;
                    }
                });
            }
        });
        let got = slots.finish();
        assert_eq!(got.len(), 300);
        assert!(got.iter().enumerate().all(|(i, s)| *s == i.to_string()));
    }

    #[test]
    fn slots_skipped_and_unreserved_slots_are_left_out() {
        let drops = Arc::new(AtomicUsize::new(0));
        struct D(u64, Arc<AtomicUsize>);
        impl Drop for D {
            fn drop(&mut self) {
                self.1.fetch_add(1, Ordering::SeqCst);
            }
        }
        let slots = Slots::new(10);
        {
            let mut w = slots.writer();
            assert!(w.reserve(0, 4));
            w.put(D(0, drops.clone()));
            w.skip();
            w.put(D(2, drops.clone()));
            w.put(D(3, drops.clone()));
            // 4..6 never reserved; 6..10 reserved, 9 never written.
            assert!(w.reserve(6, 4));
            for i in 6..9 {
                w.put(D(i, drops.clone()));
            }
        }
        let got = slots.finish();
        assert_eq!(
            got.iter().map(|d| d.0).collect::<Vec<_>>(),
            vec![0, 2, 3, 6, 7, 8]
        );
        assert_eq!(drops.load(Ordering::SeqCst), 0);
        drop(got);
        assert_eq!(drops.load(Ordering::SeqCst), 6);
    }

    #[test]
    fn slots_refuse_overlaps_and_out_of_range() {
        let slots = Slots::new(130);
        let mut a = slots.writer();
        let mut b = slots.writer();
        assert!(a.reserve(60, 10));
        assert!(!b.reserve(69, 5), "slot 69 is reserved");
        assert!(!b.reserve(125, 6), "past the end");
        assert!(!b.reserve(0, 0), "empty");
        assert!(!b.reserve(u64::MAX, 2), "overflow");
        for i in 60..70u32 {
            a.put(i);
        }
        drop((a, b));
        assert_eq!(slots.finish(), (60..70).collect::<Vec<_>>());
    }

    #[test]
    fn slots_write_each_keeps_what_was_written_before_a_panic() {
        let slots = Slots::new(10);
        {
            let mut w = slots.writer();
            assert!(w.reserve(2, 8));
            let mut items = 0..8u32;
            // 0 and 1 written, 2 skipped (a failure), 3 written, 4 panics.
            let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                w.write_each(&mut items, |x| match x {
                    2 => None,
                    4 => panic!("item 4"),
                    _ => Some(x.to_string()),
                });
            }));
            assert!(caught.is_err());
            // The panicked item's slot is skipped; the rest of the range goes on.
            w.skip();
            w.write_each(&mut items, |x| Some(x.to_string()));
        }
        let got = slots.finish();
        assert_eq!(got, ["0", "1", "3", "5", "6", "7"]);
    }

    #[test]
    fn slots_write_each_never_runs_an_item_with_no_slot() {
        let slots = Slots::new(4);
        let mut w = slots.writer();
        assert!(w.reserve(1, 2));
        let mut ran = Vec::new();
        let mut items = 10..14u32;
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            w.write_each(&mut items, |x| {
                ran.push(x);
                Some(x)
            });
        }));
        let msg = caught.expect_err("a third item has no slot");
        assert!(crate::engine::panic_message(msg.as_ref()).contains("reserved slots"));
        // The third item was taken from the input but never run.
        assert_eq!(ran, [10, 11]);
        assert_eq!(items.next(), Some(13));
        drop(w);
        assert_eq!(slots.finish(), [10, 11]);
    }

    #[test]
    #[should_panic(expected = "outside the reserved slots")]
    fn slots_a_write_past_the_reservation_panics() {
        let slots = Slots::new(4);
        let mut w = slots.writer();
        assert!(w.reserve(0, 1));
        w.put(1u8);
        w.put(2u8);
    }

    #[test]
    fn slots_dropped_unfinished_drop_each_value_once() {
        let drops = Arc::new(AtomicUsize::new(0));
        struct D(Arc<AtomicUsize>);
        impl Drop for D {
            fn drop(&mut self) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let slots = Slots::new(8);
        {
            let mut w = slots.writer();
            assert!(w.reserve(2, 3));
            for _ in 0..3 {
                w.put(D(drops.clone()));
            }
        }
        drop(slots);
        assert_eq!(drops.load(Ordering::SeqCst), 3);
        // Zero-sized values and an empty output work too.
        let z = Slots::new(3);
        let mut w = z.writer();
        assert!(w.reserve(0, 3));
        (0..3).for_each(|_| w.put(()));
        drop(w);
        assert_eq!(z.finish().len(), 3);
        assert!(Slots::<u8>::new(0).finish().is_empty());
    }
}
