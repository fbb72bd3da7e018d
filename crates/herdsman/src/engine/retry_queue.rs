//! The retry queue: attempts waiting for their retry, earliest due first. A waiting retry
//! holds no worker; it is submitted again when due. Times are read from the run's
//! [`Clock`](crate::Clock) (durations since its origin).

use std::collections::BinaryHeap;
use std::time::Duration;

use crate::executor::AttemptId;
use crate::outcome::ItemError;

/// One attempt waiting for its retry.
pub(crate) struct Pending<T, E> {
    /// `None`: never due (a wait too long to represent); it ends with the run.
    pub due: Option<Duration>,
    /// The attempt to run next.
    pub id: AttemptId,
    pub item: T,
    pub last_error: ItemError<E>,
    pub spent: Duration,
}

impl<T, E> PartialEq for Pending<T, E> {
    fn eq(&self, o: &Self) -> bool {
        self.due == o.due && self.id == o.id
    }
}
impl<T, E> Eq for Pending<T, E> {}
impl<T, E> PartialOrd for Pending<T, E> {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl<T, E> Ord for Pending<T, E> {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        // Reversed: BinaryHeap is a max-heap and the earliest due time must come first;
        // `None` (never) comes last.
        let key = |p: &Self| (p.due.is_none(), p.due, p.id);
        key(o).cmp(&key(self))
    }
}

/// Waiting retries, earliest due first.
pub(crate) struct RetryQueue<T, E> {
    heap: BinaryHeap<Pending<T, E>>,
}

impl<T, E> Default for RetryQueue<T, E> {
    fn default() -> Self {
        RetryQueue {
            heap: BinaryHeap::new(),
        }
    }
}

impl<T, E> RetryQueue<T, E> {
    pub(crate) fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    pub(crate) fn push(&mut self, p: Pending<T, E>) {
        self.heap.push(p);
    }

    /// When the earliest retry is due (`None`: nothing waits, or only never-due ones).
    pub(crate) fn next_due(&self) -> Option<Duration> {
        self.heap.peek().and_then(|p| p.due)
    }

    /// Whether the earliest retry is due at `now`.
    pub(crate) fn is_due(&self, now: Duration) -> bool {
        self.next_due().is_some_and(|d| d <= now)
    }

    /// Take the earliest retry, due or not (the run is stopping, or it is due).
    pub(crate) fn pop(&mut self) -> Option<Pending<T, E>> {
        self.heap.pop()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(due: Option<u64>, index: u64) -> Pending<(), ()> {
        Pending {
            due: due.map(Duration::from_millis),
            id: AttemptId { index, attempt: 2 },
            item: (),
            last_error: ItemError::TimedOut,
            spent: Duration::ZERO,
        }
    }

    #[test]
    fn earliest_due_first_and_never_due_last() {
        let mut q = RetryQueue::default();
        q.push(pending(None, 0));
        q.push(pending(Some(30), 1));
        q.push(pending(Some(10), 2));
        assert_eq!(q.next_due(), Some(Duration::from_millis(10)));
        assert!(!q.is_due(Duration::from_millis(9)));
        assert!(q.is_due(Duration::from_millis(10)));
        let order: Vec<u64> = std::iter::from_fn(|| q.pop().map(|p| p.id.index)).collect();
        assert_eq!(order, vec![2, 1, 0]);
        assert!(q.is_empty());
    }
}
