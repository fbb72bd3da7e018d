//! What happened to the records of a chunk, a run or a job: one set of counters shared by a
//! chunk's commit, the ledger's totals and the run summary.
//!
//! It must never count a record twice: `records` is the sum of the outcomes the owner tracks
//! (here `ok + failed + filtered` for a committed chunk; a run summary adds the records it
//! never ran).

use std::ops::{Add, AddAssign};

use serde::{Deserialize, Serialize};

/// Counters of records and their outcomes.
///
/// In a committed chunk every record reached a final state, so
/// `records == ok + failed + filtered`; `outputs` may differ from `ok` when a transform
/// filters or explodes records.
///
/// ```
/// use herdsman_ledger::Counts;
/// let a = Counts { records: 10, ok: 9, failed: 1, outputs: 9, ..Counts::default() };
/// let b = Counts { records: 5, ok: 4, filtered: 1, outputs: 4, retries: 2, ..Counts::default() };
/// let sum = a + b;
/// assert_eq!(sum.records, 15);
/// assert_eq!(sum.resolved(), 15);
/// assert_eq!(sum.retries, 2);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Counts {
    /// Records counted.
    pub records: u64,
    /// Records processed successfully (at least one output, or an empty success).
    pub ok: u64,
    /// Records that went to the failures (dead-letter) file.
    pub failed: u64,
    /// Records dropped by a filter (the transform answered with no output).
    pub filtered: u64,
    /// Output records written (differs from `ok` with filter/explode).
    pub outputs: u64,
    /// Extra attempts spent on retries.
    pub retries: u64,
}

impl Counts {
    /// Adds every counter of `other` to this one.
    pub fn add(&mut self, other: &Counts) {
        self.records += other.records;
        self.ok += other.ok;
        self.failed += other.failed;
        self.filtered += other.filtered;
        self.outputs += other.outputs;
        self.retries += other.retries;
    }

    /// Records that reached a final state: `ok + failed + filtered`.
    pub fn resolved(&self) -> u64 {
        self.ok + self.failed + self.filtered
    }
}

impl AddAssign for Counts {
    fn add_assign(&mut self, other: Counts) {
        Counts::add(self, &other);
    }
}

impl Add for Counts {
    type Output = Counts;

    fn add(mut self, other: Counts) -> Counts {
        self += other;
        self
    }
}

impl std::iter::Sum for Counts {
    fn sum<I: Iterator<Item = Counts>>(iter: I) -> Counts {
        iter.fold(Counts::default(), Add::add)
    }
}
