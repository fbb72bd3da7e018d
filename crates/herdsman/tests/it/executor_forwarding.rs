//! `Executor` is implemented for `Box<X>` and `&mut X`, forwarding every method: a boxed
//! executor chosen at run time drives a whole run, and a borrowed one is still the caller's
//! afterwards.

use std::time::Duration;

use herdsman::{AttemptId, AttemptOutcome, Executor, FatalExecutorError};

type Finished<U, E> = Vec<(AttemptId, AttemptOutcome<U, E>)>;

/// Doubles numbers synchronously and counts what it was asked to do.
#[derive(Default)]
struct Doubler {
    done: Finished<u32, String>,
    submitted: usize,
    shut_down: bool,
}

impl Executor<u32> for Doubler {
    type Output = u32;
    type Error = String;
    fn capacity(&self) -> usize {
        4
    }
    fn concurrency(&self) -> usize {
        2
    }
    fn submit(&mut self, id: AttemptId, item: u32) -> Result<(), FatalExecutorError> {
        self.submitted += 1;
        self.done.push((id, AttemptOutcome::Success(item * 2)));
        Ok(())
    }
    fn poll(
        &mut self,
        _timeout: Duration,
        out: &mut Finished<u32, String>,
    ) -> Result<(), FatalExecutorError> {
        out.append(&mut self.done);
        Ok(())
    }
    fn abandon(&mut self, _id: AttemptId) {}
    fn stop_queued(&mut self, not_started: &mut Vec<AttemptId>) {
        not_started.extend(self.done.drain(..).map(|(id, _)| id));
    }
    fn shutdown(&mut self) {
        self.shut_down = true;
    }
}

#[test]
fn a_boxed_dyn_executor_runs_a_whole_map() {
    let boxed: Box<dyn Executor<u32, Output = u32, Error = String>> = Box::new(Doubler::default());
    let values = herdsman::map_with(1..=5u32, boxed)
        .collect()
        .into_values()
        .unwrap();
    assert_eq!(values, vec![2, 4, 6, 8, 10]);
}

/// Drives any executor by hand, as an engine would, and returns what it produced.
fn drive<X: Executor<u32, Output = u32, Error = String>>(
    mut executor: X,
    items: &[u32],
) -> Vec<u32> {
    assert_eq!(executor.capacity(), 4);
    assert_eq!(executor.concurrency(), 2);
    for (i, &item) in items.iter().enumerate() {
        let id = AttemptId {
            index: i as u64,
            attempt: 1,
        };
        executor.submit(id, item).unwrap();
    }
    let mut out = Vec::new();
    executor.poll(Duration::from_secs(10), &mut out).unwrap();
    let mut not_started = Vec::new();
    executor.stop_queued(&mut not_started);
    assert!(not_started.is_empty(), "everything was polled already");
    executor.shutdown();
    out.into_iter()
        .map(|(_, o)| match o {
            AttemptOutcome::Success(v) => v,
            other => panic!("unexpected outcome {other:?}"),
        })
        .collect()
}

#[test]
fn a_borrowed_executor_is_driven_and_stays_with_its_owner() {
    let mut doubler = Doubler::default();
    assert_eq!(drive(&mut doubler, &[1, 2, 3]), vec![2, 4, 6]);
    // The calls went to the caller's executor, which is still usable.
    assert_eq!(doubler.submitted, 3);
    assert!(doubler.shut_down);
    assert_eq!(drive(&mut doubler, &[7]), vec![14]);
    assert_eq!(doubler.submitted, 4);
}

#[test]
fn a_boxed_executor_forwards_every_method() {
    assert_eq!(drive(Box::new(Doubler::default()), &[5, 6]), vec![10, 12]);
}
