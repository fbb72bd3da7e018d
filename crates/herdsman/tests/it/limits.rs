//! Limits that must hold whatever the input, the timing or the values given: rate-limit
//! spacing of attempt starts, a slow input that never delays stop, deadline or results, huge
//! durations that mean "no limit", and `max_errors` on inputs smaller than the window.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use herdsman::{
    AttemptId, AttemptOutcome, Executor, FatalExecutorError, ItemError, Limiter, ManualClock,
    RateLimit, Retry, RunStatus, StopToken,
};

fn sleep_ms(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

/// Run `f` on its own thread and fail the test if it has not returned within `limit`
/// (a hang would otherwise block the test binary forever).
fn within<T: Send + 'static>(
    limit: Duration,
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(limit) {
        Ok(v) => v,
        Err(_) => panic!("{what} did not finish within {limit:?}"),
    }
}

/// Wait until `cond` holds, for at most `limit`; returns whether it held.
fn wait_until(limit: Duration, cond: impl Fn() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return true;
        }
        sleep_ms(2);
    }
    cond()
}

// ---------------------------------------------------------------------------------------
// Rate limits space attempt starts (item 21)
// ---------------------------------------------------------------------------------------

/// Two slow items keep both workers busy; the items behind them must still start one
/// interval apart when the workers free up, not all at once with tokens taken while queued.
#[test]
fn rate_limited_starts_stay_spaced_after_a_busy_spell() {
    let starts = Arc::new(Mutex::new(Vec::new()));
    let s2 = starts.clone();
    let t0 = Instant::now();
    let run = herdsman::map(0..8u64, move |x| {
        s2.lock().unwrap().push(t0.elapsed());
        if x < 2 {
            sleep_ms(600);
        }
        Ok::<_, ()>(x)
    })
    .workers(2)
    .rate_limit(RateLimit::per_second(NonZeroU32::new(5).unwrap()))
    .collect();
    assert!(run.is_ok());
    let mut st = starts.lock().unwrap().clone();
    st.sort();
    assert_eq!(st.len(), 8);
    // The interval is 200 ms; allow half of it for scheduling noise on a loaded machine.
    for w in st.windows(2) {
        let gap = w[1] - w[0];
        assert!(
            gap >= Duration::from_millis(100),
            "two attempts started {gap:?} apart at 5/s: {st:?}"
        );
    }
}

/// A 429 with Retry-After pauses the limiter; attempts already handed to the pool must be
/// held back too, not start during the pause.
#[test]
fn a_retry_after_pause_holds_back_attempts_already_queued() {
    let starts = Arc::new(Mutex::new(Vec::new()));
    let s2 = starts.clone();
    let said_429 = Arc::new(Mutex::new(None));
    let s429 = said_429.clone();
    let first = Arc::new(AtomicBool::new(true));
    let t0 = Instant::now();
    let run = herdsman::map(0..8u32, move |x| {
        s2.lock().unwrap().push((x, t0.elapsed()));
        sleep_ms(150);
        if x == 0 && first.swap(false, Ordering::SeqCst) {
            *s429.lock().unwrap() = Some(t0.elapsed());
            return Err(429u16);
        }
        Ok(x)
    })
    .workers(2)
    .rate_limit(RateLimit::per_second(NonZeroU32::new(20).unwrap()))
    .retry(
        Retry::attempts(2).retry_after(|e: &u16| (*e == 429).then_some(Duration::from_millis(600))),
    )
    .collect();
    assert!(run.is_ok(), "{:?}", run.failures());
    let t429 = said_429.lock().unwrap().expect("item 0 answered 429");
    let st = starts.lock().unwrap().clone();
    for (x, t) in &st {
        assert!(
            !(*t > t429 && *t < t429 + Duration::from_millis(450)),
            "item {x} started at {t:?}, during the 600 ms pause that began at {t429:?}: {st:?}"
        );
    }
}

/// Once the input has ended the run neither waits for another token nor takes one.
#[test]
fn a_finished_input_neither_waits_for_nor_takes_a_token() {
    // The clock never moves: a run that asked for a third token would wait forever.
    let clock = ManualClock::new();
    let limiter = Limiter::with_clock(
        RateLimit::per_second(NonZeroU32::new(1).unwrap()).burst(2),
        clock.clone(),
    );
    let l2 = limiter.clone();
    let run = within(
        Duration::from_secs(30),
        "a run of 2 items with 2 tokens",
        move || {
            herdsman::map(vec![1u32, 2], Ok::<_, ()>)
                .workers(2)
                .limiter(l2)
                .collect()
        },
    );
    assert_eq!(run.into_values().unwrap(), vec![1, 2]);

    // Two items out of a burst of three leave exactly one token.
    let limiter = Limiter::with_clock(
        RateLimit::per_second(NonZeroU32::new(1).unwrap()).burst(3),
        clock,
    );
    let run = within(Duration::from_secs(30), "a run of 2 items", {
        let l = limiter.clone();
        move || {
            herdsman::map(vec![1u32, 2], Ok::<_, ()>)
                .limiter(l)
                .collect()
        }
    });
    assert!(run.is_ok());
    assert!(
        limiter.try_acquire().is_ok(),
        "the run took a token it did not use"
    );
    assert!(limiter.try_acquire().is_err());
    drop(limiter);
}

// ---------------------------------------------------------------------------------------
// A slow input never delays stop, deadline or results (item 22)
// ---------------------------------------------------------------------------------------

/// An endless input whose 4th `next()` blocks until released (or 60 s). Counts calls and
/// notes when the iterator is dropped.
struct Blocking {
    calls: Arc<AtomicU64>,
    dropped: Arc<AtomicBool>,
    release: mpsc::Receiver<()>,
    next: u64,
}

impl Iterator for Blocking {
    type Item = u64;
    fn next(&mut self) -> Option<u64> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.next == 3 {
            let _ = self.release.recv_timeout(Duration::from_secs(60));
        }
        self.next += 1;
        Some(self.next - 1)
    }
}

impl Drop for Blocking {
    fn drop(&mut self) {
        self.dropped.store(true, Ordering::SeqCst);
    }
}

fn blocking_input() -> (Blocking, Arc<AtomicU64>, Arc<AtomicBool>, mpsc::Sender<()>) {
    let calls = Arc::new(AtomicU64::new(0));
    let dropped = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel();
    let it = Blocking {
        calls: calls.clone(),
        dropped: dropped.clone(),
        release: rx,
        next: 0,
    };
    (it, calls, dropped, tx)
}

#[test]
fn a_blocked_input_does_not_delay_the_deadline_of_a_stream() {
    let (input, calls, dropped, release) = blocking_input();
    let t0 = Instant::now();
    let mut stream = herdsman::map(input, Ok::<_, ()>)
        .workers(2)
        .deadline(Duration::from_millis(300))
        .stream();
    let got: Vec<u64> = stream.by_ref().map(|o| o.index).collect();
    let took = t0.elapsed();
    assert!(
        took < Duration::from_secs(8),
        "the stream ended after {took:?}"
    );
    assert_eq!(stream.status(), Some(&RunStatus::TimedOut));
    assert_eq!(got, vec![0, 1, 2]);
    let s = stream.summary().unwrap();
    assert_eq!(
        s.admitted, 3,
        "the item pulled after the deadline is not counted"
    );
    assert_eq!(s.succeeded, 3);
    // Let the blocked call return: the iterator is dropped without being pulled again.
    release.send(()).unwrap();
    assert!(wait_until(Duration::from_secs(30), || dropped.load(Ordering::SeqCst)));
    assert_eq!(
        calls.load(Ordering::SeqCst),
        4,
        "pulled again after the deadline"
    );
}

#[test]
fn a_blocked_input_does_not_delay_results_or_stop() {
    let (input, calls, dropped, release) = blocking_input();
    let token = StopToken::new();
    let seen = Arc::new(AtomicU64::new(0));
    let seen2 = seen.clone();
    let results_came = Arc::new(AtomicBool::new(false));
    let rc = results_came.clone();
    let t2 = token.clone();
    let calls2 = calls.clone();
    let watcher = std::thread::spawn(move || {
        // Outcomes of the items already pulled arrive while the 4th pull is blocked (waited
        // for too: on a loaded machine the 4th pull may start after the 3rd outcome).
        let ok = wait_until(Duration::from_secs(30), || {
            seen.load(Ordering::SeqCst) == 3 && calls2.load(Ordering::SeqCst) == 4
        });
        rc.store(ok, Ordering::SeqCst);
        t2.stop();
        // collect() returns once the pull in progress returns: release it.
        sleep_ms(50);
        let _ = release.send(());
    });
    let run = herdsman::map(input, Ok::<_, ()>)
        .workers(2)
        .stop_token(token)
        .on_outcome(move |_| {
            seen2.fetch_add(1, Ordering::SeqCst);
        })
        .collect();
    watcher.join().unwrap();
    assert!(
        results_came.load(Ordering::SeqCst),
        "outcomes were held back while the input was blocked"
    );
    assert_eq!(run.status(), &RunStatus::Cancelled);
    let admitted = run.summary().admitted;
    let (succ, fail) = run.into_parts();
    assert_eq!(succ, vec![(0, 0), (1, 1), (2, 2)]);
    // The 4th item is released 50 ms after the stop. On a loaded machine the engine may
    // notice the stop only after the pull returned: the item was then admitted before the
    // stop took effect, and is reported as never run. It is never run either way.
    match admitted {
        3 => assert!(fail.is_empty()),
        4 => {
            assert_eq!(fail.len(), 1);
            assert_eq!(fail[0].index, 3);
            assert!(matches!(fail[0].error, herdsman::ItemError::NotRun));
            assert_eq!(fail[0].attempts, 0);
        }
        n => panic!("{n} items admitted"),
    }
    assert!(dropped.load(Ordering::SeqCst));
    assert_eq!(
        calls.load(Ordering::SeqCst),
        4,
        "pulled again after the stop"
    );
}

// ---------------------------------------------------------------------------------------
// Huge durations mean "no limit" and never panic (item 24)
// ---------------------------------------------------------------------------------------

#[test]
fn huge_item_timeout_and_deadline_mean_no_limit() {
    for workers in [1, 2] {
        let run = within(
            Duration::from_secs(30),
            "a run with Duration::MAX limits",
            move || {
                herdsman::map(0..20u64, Ok::<_, ()>)
                    .workers(workers)
                    .item_timeout(Duration::MAX)
                    .deadline(Duration::MAX)
                    .collect()
            },
        );
        assert_eq!(run.status(), &RunStatus::Completed);
        assert_eq!(run.success_count(), 20);
    }
    let run = within(
        Duration::from_secs(30),
        "a run with a huge item timeout",
        || {
            herdsman::map(0..5u64, Ok::<_, ()>)
                .workers(2)
                .item_timeout(Duration::from_secs(u64::MAX / 2))
                .collect()
        },
    );
    assert!(run.is_ok());
}

#[test]
fn huge_pause_and_server_wait_never_panic() {
    let limiter = Limiter::new(RateLimit::per_second(NonZeroU32::new(10).unwrap()).burst(3));
    limiter.pause(Duration::MAX);
    limiter.pause(Duration::MAX);
    assert!(limiter.paused_for() > Duration::from_secs(3600 * 24 * 365));
    assert!(limiter.try_acquire().is_err());

    // A server asks for an endless wait: the item waits (the rate limiter is paused) until the
    // run's deadline ends it, reported with the error it had.
    let t0 = Instant::now();
    let run = within(
        Duration::from_secs(30),
        "a run told to wait forever",
        || {
            herdsman::map(vec![0u32], |_| Err::<u32, _>(429u16))
                .workers(2)
                .rate_limit(RateLimit::per_second(NonZeroU32::new(1000).unwrap()))
                .retry(Retry::attempts(3).retry_after(|_: &u16| Some(Duration::MAX)))
                .deadline(Duration::from_millis(300))
                .collect()
        },
    );
    assert_eq!(run.status(), &RunStatus::TimedOut);
    assert_eq!(run.failures()[0].error, ItemError::Failed(429));
    assert!(t0.elapsed() < Duration::from_secs(20));

    // Backoff of Duration::MAX, with and without jitter.
    for jitter in [true, false] {
        let run = within(
            Duration::from_secs(30),
            "a run with an endless backoff",
            move || {
                herdsman::map(vec![0u32], |_| Err::<u32, _>("no"))
                    .retry(
                        Retry::attempts(5)
                            .backoff(Duration::MAX)
                            .max_delay(Duration::MAX)
                            .jitter(jitter),
                    )
                    .deadline(Duration::from_millis(200))
                    .collect()
            },
        );
        assert_eq!(run.status(), &RunStatus::TimedOut);
        assert_eq!(run.failures()[0].error, ItemError::Failed("no"));
        assert_eq!(run.failures()[0].attempts, 1);
    }
    let r: Retry<()> = Retry::attempts(3)
        .backoff(Duration::MAX)
        .max_delay(Duration::MAX);
    for unit in [0.0, 0.5, 0.999_999_999, 1.0] {
        assert!(r.delay_after(40, unit) >= Duration::from_secs(u64::MAX / 4));
    }
}

// ---------------------------------------------------------------------------------------
// max_errors on inputs smaller than the window (item 13)
// ---------------------------------------------------------------------------------------

/// An executor like a worker pool with a pipeline: it accepts many attempts, runs one at a
/// time (one per `poll`, each failing), and can give back those it has not started.
struct Pipeline {
    queue: std::collections::VecDeque<AttemptId>,
    ran: Arc<AtomicU64>,
}

impl Executor<u32> for Pipeline {
    type Output = u32;
    type Error = String;
    fn capacity(&self) -> usize {
        64
    }
    fn submit(&mut self, id: AttemptId, _item: u32) -> Result<(), FatalExecutorError> {
        self.queue.push_back(id);
        Ok(())
    }
    fn poll(
        &mut self,
        _timeout: Duration,
        out: &mut Vec<(AttemptId, AttemptOutcome<u32, String>)>,
    ) -> Result<(), FatalExecutorError> {
        if let Some(id) = self.queue.pop_front() {
            sleep_ms(20);
            self.ran.fetch_add(1, Ordering::SeqCst);
            out.push((
                id,
                AttemptOutcome::Failure(format!("record {} failed", id.index)),
            ));
        }
        Ok(())
    }
    fn stop_queued(&mut self, not_started: &mut Vec<AttemptId>) {
        not_started.extend(self.queue.drain(..));
    }
    fn abandon(&mut self, id: AttemptId) {
        self.queue.retain(|q| *q != id);
    }
    fn shutdown(&mut self) {}
}

#[test]
fn max_errors_on_a_small_input_stops_at_once_and_keeps_its_failures() {
    // An executor: attempts it had queued come back as not run, the failures are kept.
    let ran = Arc::new(AtomicU64::new(0));
    let exec = Pipeline {
        queue: Default::default(),
        ran: ran.clone(),
    };
    let run = herdsman::map_with(0..5u32, exec)
        .window(1024)
        .max_errors(2)
        .collect();
    assert_eq!(run.status(), &RunStatus::Aborted);
    assert_eq!(ran.load(Ordering::SeqCst), 2, "attempts ran after the stop");
    let s = run.summary().clone();
    assert_eq!((s.failed, s.not_run, s.admitted), (2, 3, 5));
    let failed: Vec<_> = run
        .failures()
        .iter()
        .filter(|f| matches!(f.error, ItemError::Failed(_)))
        .map(|f| f.index)
        .collect();
    assert_eq!(failed, vec![0, 1]);

    // Threads, streamed: the two failures that caused the stop are among the outcomes.
    let calls = Arc::new(AtomicU64::new(0));
    let c2 = calls.clone();
    let t0 = Instant::now();
    let mut stream = herdsman::map(0..5u32, move |x| {
        c2.fetch_add(1, Ordering::SeqCst);
        sleep_ms(200);
        Err::<u32, _>(format!("record {x} failed"))
    })
    .workers(2)
    .max_errors(2)
    .stream();
    let outcomes: Vec<_> = stream.by_ref().collect();
    let s = stream.summary().unwrap().clone();
    assert_eq!(stream.status(), Some(&RunStatus::Aborted));
    assert_eq!(outcomes.len() as u64, s.admitted);
    assert_eq!(s.succeeded + s.failed + s.not_run, s.admitted);
    let failed = outcomes
        .iter()
        .filter(|o| matches!(o.result, Err(ItemError::Failed(_))))
        .count() as u64;
    assert!(failed >= 2 && failed == s.failed, "{s:?}");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        s.failed,
        "only the counted items ran"
    );
    // Two workers ran the two failures side by side: at most one more round of attempts.
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t0.elapsed()
    );
}

// ---------------------------------------------------------------------------------------
// map_async_stream from sync code (item 25)
// ---------------------------------------------------------------------------------------

/// A stream that needs a tokio runtime to be polled (it sleeps on tokio's timer), given to
/// `map_async_stream` from plain sync code.
#[cfg(feature = "async")]
#[test]
fn map_async_stream_from_sync_code_pulls_a_tokio_stream() {
    let items = futures::stream::unfold(0u32, |i| async move {
        if i == 5 {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
        Some((i, i + 1))
    });
    let run = within(Duration::from_secs(30), "map_async_stream", move || {
        herdsman::map_async_stream(Box::pin(items), |x| async move {
            tokio::time::sleep(Duration::from_millis(1)).await;
            Ok::<_, ()>(x * 2)
        })
        .collect()
    });
    assert_eq!(run.into_values().unwrap(), vec![0, 2, 4, 6, 8]);
}

/// A panic in the input iterator (now pulled on its own thread) still reaches the caller of
/// `collect`, with its message, as it did when the input was pulled on the calling thread.
#[test]
fn a_panicking_input_panics_the_caller() {
    let input = (0u64..10).inspect(|x| {
        if *x == 5 {
            panic!("input broke at 5");
        }
    });
    let caught =
        std::panic::catch_unwind(move || herdsman::map(input, Ok::<_, ()>).workers(2).collect());
    let payload = caught.expect_err("the input's panic reaches the caller");
    let msg = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    assert!(msg.contains("input broke at 5"), "{msg}");
}
