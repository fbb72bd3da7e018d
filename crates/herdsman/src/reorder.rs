//! Restoring input order: outcomes arrive in completion order and leave in index order.
//!
//! One buffer for every ordered consumer (the collecting sink, the stream, and callers such
//! as a command-line assembler). It holds only what arrived before an earlier index, so its
//! size is bounded by how far completion runs ahead of order (the run's window).
//!
//! Entries that arrive one after the other in index order (the usual case: a consumer that
//! holds a chunk's records until the chunk is complete) go into a queue, with no tree node
//! allocated or searched per entry; the others into a tree. Every index is covered once, so
//! at most one of the two holds the next index.

use std::collections::{BTreeMap, VecDeque};

/// A reorder buffer over consecutive indices: hand entries in any order with
/// [`push`](Reorder::push), take them out in index order with [`pop`](Reorder::pop).
///
/// An entry may cover several consecutive indices (a batch of values): its `span`.
/// Every index must be covered exactly once, by one entry.
///
/// ```
/// use herdsman::reorder::Reorder;
/// let mut r = Reorder::new();
/// r.push(2, 1, "c");
/// assert_eq!(r.pop(), None); // 0 and 1 are still missing
/// r.push(0, 2, "ab"); // one entry for indices 0 and 1
/// assert_eq!(r.pop(), Some((0, "ab")));
/// assert_eq!(r.pop(), Some((2, "c")));
/// assert_eq!(r.next_index(), 3);
/// assert!(r.is_empty());
/// ```
#[derive(Debug, Clone)]
pub struct Reorder<T> {
    next: u64,
    /// Entries that arrived out of turn, by first index.
    waiting: BTreeMap<u64, (u64, T)>,
    /// A run of consecutive entries (each starts where the one before ends), as
    /// `(first, span, value)`.
    run: VecDeque<(u64, u64, T)>,
}

impl<T> Default for Reorder<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Reorder<T> {
    /// An empty buffer expecting index 0 first.
    pub fn new() -> Self {
        Self::starting_at(0)
    }

    /// An empty buffer expecting index `next` first.
    pub fn starting_at(next: u64) -> Self {
        Reorder {
            next,
            waiting: BTreeMap::new(),
            run: VecDeque::new(),
        }
    }

    /// The first index not handed out yet.
    pub fn next_index(&self) -> u64 {
        self.next
    }

    /// Entries waiting for an earlier index.
    pub fn len(&self) -> usize {
        self.waiting.len() + self.run.len()
    }

    /// Whether no entry waits.
    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty() && self.run.is_empty()
    }

    /// If `first` is the next index and nothing waits, move past `span` indices and return
    /// true: the caller uses its entry at once, without buffering it. Otherwise change
    /// nothing and return false: then [`push`](Reorder::push) the entry, and
    /// [`pop`](Reorder::pop) what became ready (maybe that very entry).
    ///
    /// ```
    /// use herdsman::reorder::Reorder;
    /// let mut r: Reorder<&str> = Reorder::new();
    /// assert!(r.advance_past(0, 3));
    /// assert!(!r.advance_past(5, 1));
    /// assert_eq!(r.next_index(), 3);
    /// ```
    pub fn advance_past(&mut self, first: u64, span: u64) -> bool {
        if first == self.next && self.is_empty() {
            self.next += span;
            true
        } else {
            false
        }
    }

    /// Hand in the entry covering indices `first..first + span`.
    ///
    /// # Panics
    ///
    /// In debug builds, if `first` was already handed out or pushed.
    pub fn push(&mut self, first: u64, span: u64, value: T) {
        debug_assert!(first >= self.next, "index {first} was already handed out");
        debug_assert!(!self.holds(first), "index {first} was pushed twice");
        let follows_run = match self.run.back() {
            Some(&(f, n, _)) => f + n == first,
            None => true,
        };
        if follows_run {
            self.run.push_back((first, span, value));
        } else {
            self.waiting.insert(first, (span, value));
        }
    }

    /// The entry at the next index, with its first index, if it has arrived.
    pub fn pop(&mut self) -> Option<(u64, T)> {
        if self.run.front().is_some_and(|e| e.0 == self.next) {
            let (first, span, value) = self.run.pop_front().expect("checked above");
            self.next = first + span;
            return Some((first, value));
        }
        let entry = self.waiting.first_entry()?;
        if *entry.key() != self.next {
            return None;
        }
        let (first, (span, value)) = entry.remove_entry();
        self.next = first + span;
        Some((first, value))
    }

    /// The entry at the next index if it has arrived; otherwise `missing()` stands in for that
    /// one index, which is then handed out as if it had arrived with a span of 1. For a
    /// consumer that knows an index will never arrive (a run that stopped before it) and
    /// must still go past it in order.
    ///
    /// ```
    /// use herdsman::reorder::Reorder;
    /// let mut r = Reorder::new();
    /// r.push(1, 1, "b");
    /// assert_eq!(r.pop_or_else(|| "never ran"), (0, "never ran"));
    /// assert_eq!(r.pop_or_else(|| "never ran"), (1, "b"));
    /// assert_eq!(r.next_index(), 2);
    /// ```
    pub fn pop_or_else(&mut self, missing: impl FnOnce() -> T) -> (u64, T) {
        match self.pop() {
            Some(entry) => entry,
            None => {
                let index = self.next;
                self.next += 1;
                (index, missing())
            }
        }
    }

    /// Whether the entry covering `index` was handed out already or waits in the buffer (an
    /// entry is found by its first index: an index inside a waiting entry's span counts only
    /// once that entry is handed out).
    ///
    /// ```
    /// use herdsman::reorder::Reorder;
    /// let mut r = Reorder::new();
    /// r.push(1, 1, 'b');
    /// assert!(r.holds(1));
    /// assert!(!r.holds(0));
    /// r.push(0, 1, 'a');
    /// r.pop();
    /// assert!(r.holds(0));
    /// ```
    pub fn holds(&self, index: u64) -> bool {
        index < self.next || self.waiting.contains_key(&index) || self.in_run(index)
    }

    /// Whether an entry of the run starts at `index` (found at once when `index` is past
    /// the run's end, as a new entry is).
    fn in_run(&self, index: u64) -> bool {
        match (self.run.front(), self.run.back()) {
            (Some(front), Some(back)) if index >= front.0 && index < back.0 + back.1 => {
                self.run.binary_search_by_key(&index, |e| e.0).is_ok()
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Reorder;

    #[test]
    fn any_arrival_order_leaves_in_index_order() {
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..200 {
            let n = rng.usize(1..60) as u64;
            let mut idx: Vec<u64> = (0..n).collect();
            rng.shuffle(&mut idx);
            let mut r = Reorder::new();
            let mut out = Vec::new();
            for i in idx {
                if r.advance_past(i, 1) {
                    out.push(i);
                } else {
                    r.push(i, 1, i);
                }
                while let Some((first, v)) = r.pop() {
                    assert_eq!(first, v);
                    out.push(v);
                }
            }
            assert_eq!(out, (0..n).collect::<Vec<_>>());
            assert!(r.is_empty());
        }
    }

    #[test]
    fn entries_of_any_span_in_any_order_leave_in_index_order() {
        let mut rng = fastrand::Rng::with_seed(23);
        for _ in 0..300 {
            // Consecutive entries of spans 1..4, handed in mostly in order, some swapped.
            let mut entries = Vec::new();
            let mut at = rng.u64(0..100);
            let start = at;
            for _ in 0..rng.usize(1..40) {
                let span = rng.u64(1..4);
                entries.push((at, span));
                at += span;
            }
            for _ in 0..rng.usize(0..4) {
                let (a, b) = (rng.usize(..entries.len()), rng.usize(..entries.len()));
                entries.swap(a, b);
            }
            let mut r = Reorder::starting_at(start);
            let mut out = Vec::new();
            for &(first, span) in &entries {
                r.push(first, span, (first, span));
                assert!(r.holds(first));
                while let Some((f, (v, n))) = r.pop() {
                    assert_eq!(f, v);
                    out.push((v, n));
                }
            }
            let mut want = entries.clone();
            want.sort();
            assert_eq!(out, want);
            assert!(r.is_empty());
            assert_eq!(r.next_index(), at);
        }
    }

    #[test]
    fn pop_or_else_fills_the_gaps_in_order_and_keeps_what_arrived() {
        let mut rng = fastrand::Rng::with_seed(11);
        for _ in 0..200 {
            let n = rng.u64(1..40);
            let start = rng.u64(0..1000);
            let mut r = Reorder::starting_at(start);
            let arrived: Vec<u64> = (start..start + n).filter(|_| rng.bool()).collect();
            for &i in &arrived {
                r.push(i, 1, Some(i));
                assert!(r.holds(i));
            }
            let mut out = Vec::new();
            while r.next_index() < start + n {
                out.push(r.pop_or_else(|| None));
            }
            for (k, (i, v)) in out.into_iter().enumerate() {
                assert_eq!(i, start + k as u64);
                assert_eq!(v.is_some(), arrived.contains(&i));
                assert!(v.is_none_or(|v| v == i));
                assert!(r.holds(i));
            }
            assert!(r.is_empty());
            assert!(!r.holds(start + n));
        }
    }

    #[test]
    fn holds_an_index_only_once_it_waits_or_was_handed_out() {
        let mut r = Reorder::starting_at(5);
        assert!(r.holds(4), "indices before the start were handed out");
        assert!(!r.holds(5));
        r.push(7, 2, "hi");
        assert!(r.holds(7));
        assert!(!r.holds(8), "inside a waiting span");
        r.push(5, 2, "lo");
        assert_eq!(r.pop(), Some((5, "lo")));
        assert_eq!(r.pop(), Some((7, "hi")));
        assert!(r.holds(8));
        assert!(!r.holds(9));
    }
}
