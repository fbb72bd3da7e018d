//! The scheduler's time policies on a manual clock, with a mock backend that "runs" each
//! attempt for a scripted time: retries with backoff, item timeouts and the deadline are
//! checked to the exact simulated instant, with no sleeps.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::*;
use crate::limiter::ManualClock;
use crate::map::CollectSink;
use crate::outcome::RunResult;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// What a scripted attempt does: runs for a while, then ends with this outcome.
type Script =
    Box<dyn FnMut(AttemptId, u64) -> (Duration, AttemptOutcome<u64, &'static str>) + Send>;

/// A backend whose attempts take simulated time: `poll` moves the manual clock forward to
/// the next attempt's end (or by the whole timeout) instead of waiting.
struct Mock {
    clock: ManualClock,
    capacity: usize,
    script: Script,
    /// Attempts running: id, simulated end, outcome.
    running: Vec<(AttemptId, Duration, AttemptOutcome<u64, &'static str>)>,
    /// When each attempt was submitted, on the manual clock.
    log: Arc<Mutex<Vec<(AttemptId, Duration)>>>,
}

impl Backend<u64, u64, &'static str> for Mock {
    fn room(&self) -> Room {
        Room {
            free: self.capacity.saturating_sub(self.running.len()),
            batch: 1,
            in_flight: self.running.len(),
            read_ahead: 0,
            measures: false,
        }
    }
    fn submit(&mut self, first: AttemptId, items: Vec<u64>) -> Result<(), FatalExecutorError> {
        let now = self.clock.now();
        for (k, item) in items.into_iter().enumerate() {
            let id = first.nth(k);
            let (takes, outcome) = (self.script)(id, item);
            self.log.lock().unwrap().push((id, now));
            self.running.push((id, now + takes, outcome));
        }
        Ok(())
    }
    fn poll(
        &mut self,
        timeout: Duration,
        out: &mut Vec<Report<u64, &'static str>>,
    ) -> Result<(), FatalExecutorError> {
        let now = self.clock.now();
        let next = self.running.iter().map(|r| r.1).min();
        match next {
            Some(end) if end <= now + timeout => {
                self.clock.advance(end.saturating_sub(now));
                let (done, rest): (Vec<_>, Vec<_>) =
                    self.running.drain(..).partition(|r| r.1 <= end);
                self.running = rest;
                for (id, _, o) in done {
                    out.push(Report {
                        first: id,
                        outcomes: Outcomes::Mixed(vec![Slot::Done(o)]),
                        per_item: None,
                    });
                }
            }
            _ => self.clock.advance(timeout),
        }
        Ok(())
    }
    fn abandon(&mut self, what: GiveUp) -> Vec<Abandoned> {
        match what {
            GiveUp::One(id) => {
                self.running.retain(|r| r.0 != id);
                Vec::new()
            }
            GiveUp::All => self
                .running
                .drain(..)
                .map(|r| Abandoned {
                    first: r.0,
                    len: 1,
                    started: true,
                })
                .collect(),
        }
    }
    fn stop(&mut self, _halt: Halt) {}
}

/// Run `items` through a mock backend of `capacity` slots on a manual clock.
fn run_mock(
    items: u64,
    capacity: usize,
    script: Script,
    policies: impl FnOnce(&mut Policies<u64, u64, &'static str>),
) -> (RunResult<u64, &'static str>, Vec<(AttemptId, Duration)>) {
    let clock = ManualClock::new();
    let log = Arc::new(Mutex::new(Vec::new()));
    let backend = Mock {
        clock: clock.clone(),
        capacity,
        script,
        running: Vec::new(),
        log: Arc::clone(&log),
    };
    let mut p = Policies {
        clock: Arc::new(clock),
        ..Policies::default()
    };
    policies(&mut p);
    let input = 0..items;
    let hint = input.size_hint();
    let (feed, puller) = crate::feed::feed(input);
    let mut sink = CollectSink::new(true);
    let summary = std::thread::scope(|s| {
        s.spawn(move || puller.run());
        Engine::new(feed, hint, Box::new(backend), p, 64, &mut sink, None).run()
    });
    let log = log.lock().unwrap().clone();
    (sink.into_result(summary), log)
}

#[test]
fn retries_wait_their_backoff_on_the_clock() {
    // Item 0 fails twice, each attempt taking 10 ms; backoff 100 ms, doubling.
    let script: Script = Box::new(|id, x| {
        let o = if x == 0 && id.attempt < 3 {
            AttemptOutcome::Failure("flaky")
        } else {
            AttemptOutcome::Success(x)
        };
        (ms(10), o)
    });
    let (run, log) = run_mock(2, 2, script, |p| {
        p.retry = Some(Retry::attempts(3).backoff(ms(100)).jitter(false));
        p.cloner = Some(|x: &u64| *x);
    });
    assert_eq!(run.success_count(), 2);
    assert_eq!(run.summary.retries, 2);
    let item0: Vec<Duration> = log
        .iter()
        .filter(|(id, _)| id.index == 0)
        .map(|(_, t)| *t)
        .collect();
    // Submitted at 0; failed at 10, retried 100 later; failed at 120, retried 200 later.
    assert_eq!(item0, vec![ms(0), ms(110), ms(320)]);
    assert_eq!(run.summary.elapsed, ms(330));
}

#[test]
fn an_item_timeout_fires_at_its_limit_and_is_retried() {
    // The first attempt of item 1 hangs for an hour; its retry takes 5 ms.
    let script: Script = Box::new(|id, x| {
        let takes = if x == 1 && id.attempt == 1 {
            Duration::from_secs(3600)
        } else {
            ms(5)
        };
        (takes, AttemptOutcome::Success(x))
    });
    let (run, log) = run_mock(3, 3, script, |p| {
        p.item_timeout = Some(ms(250));
        p.retry = Some(
            Retry::attempts(2)
                .backoff(ms(50))
                .jitter(false)
                .retry_timeouts(true),
        );
        p.cloner = Some(|x: &u64| *x);
    });
    assert_eq!(run.success_count(), 3);
    assert_eq!(run.summary.retries, 1);
    let retry = log.iter().find(|(id, _)| id.attempt == 2).unwrap();
    // Timed out at exactly 250 ms, retried 50 ms later.
    assert_eq!(
        *retry,
        (
            AttemptId {
                index: 1,
                attempt: 2
            },
            ms(300)
        )
    );
    assert_eq!(run.summary.elapsed, ms(305));

    // Without a retry, the timeout is the item's final outcome, measured to the limit.
    let script: Script = Box::new(|_, x| {
        let takes = if x == 1 {
            Duration::from_secs(3600)
        } else {
            ms(5)
        };
        (takes, AttemptOutcome::Success(x))
    });
    let (run, _) = run_mock(3, 3, script, |p| p.item_timeout = Some(ms(250)));
    assert_eq!(run.failures().len(), 1);
    let f = &run.failures()[0];
    assert_eq!(
        (f.index, &f.error, f.duration),
        (1, &ItemError::TimedOut, ms(250))
    );
}

#[test]
fn the_deadline_stops_the_run_at_its_instant_and_accounts_for_every_item() {
    // 100 items of 40 ms each on 2 slots; the deadline falls in the middle of an attempt.
    let script: Script = Box::new(|_, x| (ms(40), AttemptOutcome::Success(x)));
    let (run, _) = run_mock(100, 2, script, |p| p.deadline = Some(ms(100)));
    let s = &run.summary;
    assert_eq!(s.status, RunStatus::TimedOut);
    assert_eq!(s.elapsed, ms(100));
    // Two rounds finished (at 40 and 80 ms); the third round was given up at 100 ms.
    assert_eq!(s.succeeded, 4);
    let timed_out = run
        .failures()
        .iter()
        .filter(|f| f.error == ItemError::TimedOut)
        .count();
    assert_eq!(timed_out, 2);
    assert_eq!(s.succeeded + s.failed + s.not_run, s.admitted);
}
