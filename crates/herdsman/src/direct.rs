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

#[cfg(test)]
mod tests {
    use super::DirectOut;
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
}
