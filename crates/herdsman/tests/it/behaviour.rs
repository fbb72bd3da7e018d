//! One test per promised behaviour of `herdsman::map`, `map_with` and `stream`.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use herdsman::{
    AttemptId, AttemptOutcome, Executor, FatalExecutorError, ItemError, Limiter, RateLimit, Retry,
    RunStatus, StopToken,
};

/// Tracks how many calls are inside `f` at once.
#[derive(Default, Clone)]
struct Gauge {
    now: Arc<AtomicUsize>,
    max: Arc<AtomicUsize>,
}

impl Gauge {
    fn enter(&self) -> GaugeGuard {
        let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.max.fetch_max(n, Ordering::SeqCst);
        GaugeGuard(self.now.clone())
    }
    fn max(&self) -> usize {
        self.max.load(Ordering::SeqCst)
    }
}

struct GaugeGuard(Arc<AtomicUsize>);
impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// An endless input that counts how many items were pulled.
fn counted_input(pulled: Arc<AtomicU64>) -> impl Iterator<Item = u64> + Send + 'static {
    (0u64..).inspect(move |_| {
        pulled.fetch_add(1, Ordering::SeqCst);
    })
}

fn sleep_ms(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

#[test]
fn ordered_collect_and_stream_keep_input_order() {
    let f = |x: u64| {
        // Later items finish sooner, so completion order differs from input order.
        sleep_ms((20 - x % 20) / 4);
        Ok::<_, ()>(x * 3)
    };
    let values = herdsman::map(0..200u64, f)
        .workers(4)
        .collect()
        .into_values()
        .unwrap();
    assert_eq!(values, (0..200).map(|x| x * 3).collect::<Vec<_>>());

    let idx: Vec<u64> = herdsman::map(0..200u64, f)
        .workers(4)
        .stream()
        .map(|o| o.index)
        .collect();
    assert_eq!(idx, (0..200).collect::<Vec<_>>());
}

#[test]
fn unordered_collect_has_every_index_once() {
    let run = herdsman::map(0..500u64, |x| {
        if x % 7 == 0 {
            sleep_ms(1);
        }
        Ok::<_, ()>(x)
    })
    .workers(3)
    .ordered(false)
    .collect();
    let (succ, fail) = run.into_parts();
    assert!(fail.is_empty());
    let mut idx: Vec<u64> = succ.iter().map(|(i, _)| *i).collect();
    idx.sort();
    assert_eq!(idx, (0..500).collect::<Vec<_>>());
}

#[test]
fn window_is_never_exceeded() {
    for (workers, window) in [(4, 3), (2, 1), (3, 5)] {
        let g = Gauge::default();
        let g2 = g.clone();
        let run = herdsman::map(0..60u64, move |x| {
            let _in = g2.enter();
            sleep_ms(2);
            Ok::<_, ()>(x)
        })
        .workers(workers)
        .window(window)
        .collect();
        assert!(run.is_ok());
        assert!(
            g.max() <= window,
            "max in flight {} > window {window}",
            g.max()
        );
        assert!(g.max() >= window.min(workers).min(2));
    }
}

#[test]
fn endless_input_stops_on_max_errors_and_is_not_pulled_after() {
    let pulled = Arc::new(AtomicU64::new(0));
    let run = herdsman::map(counted_input(pulled.clone()), |x: u64| {
        if x % 10 == 9 {
            Err(format!("bad {x}"))
        } else {
            Ok(x)
        }
    })
    .workers(2)
    .window(8)
    .max_errors(3)
    .collect();
    assert_eq!(run.status(), &RunStatus::Aborted);
    let s = run.summary().clone();
    assert!(s.failed >= 3);
    assert_eq!(pulled.load(Ordering::SeqCst), s.admitted);
    assert_eq!(s.succeeded + s.failed + s.not_run, s.admitted);
    // Every admitted index appears exactly once.
    let (succ, fail) = run.into_parts();
    let mut all: Vec<u64> = succ.iter().map(|(i, _)| *i).collect();
    all.extend(fail.iter().map(|f| f.index));
    all.sort();
    assert_eq!(all, (0..s.admitted).collect::<Vec<_>>());
}

#[test]
fn stop_token_stops_endless_input_and_input_is_not_pulled_again() {
    let pulled = Arc::new(AtomicU64::new(0));
    let token = StopToken::new();
    let t2 = token.clone();
    let run = herdsman::map(counted_input(pulled.clone()), move |x: u64| {
        if x == 50 {
            t2.stop();
        }
        sleep_ms(1);
        Ok::<_, ()>(x)
    })
    .workers(2)
    .window(4)
    .stop_token(token)
    .collect();
    assert_eq!(run.status(), &RunStatus::Cancelled);
    let after = pulled.load(Ordering::SeqCst);
    assert_eq!(after, run.summary().admitted);
    assert!(after < 60, "pulled {after} items for a stop at item 50");
}

#[test]
fn retries_are_counted_and_reported() {
    let calls = Arc::new(Mutex::new(std::collections::HashMap::<u64, u32>::new()));
    let c2 = calls.clone();
    let retries_seen = Arc::new(AtomicU64::new(0));
    let r2 = retries_seen.clone();
    let progress_calls = Arc::new(AtomicU64::new(0));
    let pc2 = progress_calls.clone();
    let run = herdsman::map(0..10u64, move |x| {
        let mut m = c2.lock().unwrap();
        let n = m.entry(x).or_insert(0);
        *n += 1;
        // Item 3 succeeds on its 3rd attempt, item 5 always fails.
        match (x, *n) {
            (3, k) if k < 3 => Err("flaky"),
            (5, _) => Err("broken"),
            _ => Ok(x),
        }
    })
    .workers(2)
    .retry(
        Retry::attempts(3)
            .backoff(Duration::from_millis(5))
            .jitter(false),
    )
    .on_progress(move |p| {
        r2.store(p.retries, Ordering::SeqCst);
        pc2.fetch_add(1, Ordering::SeqCst);
    })
    .collect();
    // Once per item's final outcome, not per attempt.
    assert_eq!(progress_calls.load(Ordering::SeqCst), 10);
    assert_eq!(run.success_count(), 9);
    let f = &run.failures()[0];
    assert_eq!(f.index, 5);
    assert_eq!(f.attempts, 3);
    assert_eq!(f.error, ItemError::Failed("broken"));
    assert_eq!(calls.lock().unwrap()[&3], 3);
    assert_eq!(calls.lock().unwrap()[&0], 1);
    assert_eq!(run.summary().retries, 4);
    assert_eq!(retries_seen.load(Ordering::SeqCst), 4);
}

#[test]
fn retry_predicate_limits_what_is_retried() {
    let calls = Arc::new(AtomicU32::new(0));
    let c2 = calls.clone();
    let run = herdsman::map(vec![1u32], move |_| {
        c2.fetch_add(1, Ordering::SeqCst);
        Err::<u32, _>(404u16)
    })
    .retry(Retry::attempts(5).when(|e: &u16| *e >= 500))
    .collect();
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(run.failures()[0].attempts, 1);
}

/// Item 0 fails and waits 200 ms for its retry; item 1 must run meanwhile on the only worker.
#[test]
fn waiting_retry_does_not_occupy_the_worker() {
    for sequential in [true, false] {
        let order = Arc::new(Mutex::new(Vec::new()));
        let o2 = order.clone();
        let tries = Arc::new(AtomicU32::new(0));
        let t2 = tries.clone();
        let start = Instant::now();
        let map = herdsman::map(0..2u64, move |x| {
            if x == 0 && t2.fetch_add(1, Ordering::SeqCst) == 0 {
                return Err("first try fails");
            }
            sleep_ms(20);
            Ok(x)
        })
        .retry(
            Retry::attempts(2)
                .backoff(Duration::from_millis(200))
                .jitter(false),
        )
        .on_outcome(move |o| o2.lock().unwrap().push((o.index, start.elapsed())));
        let map = if sequential {
            map.sequential()
        } else {
            map.workers(2).window(2)
        };
        let run = map.collect();
        assert!(run.is_ok());
        let order = order.lock().unwrap();
        assert_eq!(order[0].0, 1, "item 1 finished first: {order:?}");
        assert!(order[0].1 < Duration::from_millis(180), "{order:?}");
        assert!(order[1].1 >= Duration::from_millis(200), "{order:?}");
    }
}

#[test]
fn rate_limit_is_accurate_within_ten_percent() {
    let stamps = Arc::new(Mutex::new(Vec::new()));
    let s2 = stamps.clone();
    let start = Instant::now();
    let run = herdsman::map(0..41u32, move |x| {
        s2.lock().unwrap().push(start.elapsed());
        Ok::<_, ()>(x)
    })
    .workers(2)
    .rate_limit(RateLimit::per_second(NonZeroU32::new(20).unwrap()).burst(2))
    .collect();
    assert!(run.is_ok());
    let mut st = stamps.lock().unwrap().clone();
    st.sort();
    // 41 attempts at 20/s with a burst of 2 (so a late wake-up is caught up, not
    // accumulated): 2 at once, then 39 intervals of 50 ms = 1.95 s.
    let span = st[40] - st[0];
    let expected = Duration::from_millis(1950);
    assert!(
        span >= expected.mul_f64(0.9) && span <= expected.mul_f64(1.1),
        "span {span:?}, expected {expected:?} within 10%"
    );
}

#[test]
fn server_wait_pauses_the_shared_limiter() {
    let limiter = Limiter::new(RateLimit::per_second(NonZeroU32::new(10).unwrap()));
    let stamps = Arc::new(Mutex::new(Vec::new()));
    let s2 = stamps.clone();
    let first = Arc::new(AtomicBool::new(true));
    let start = Instant::now();
    let run = herdsman::map(0..6u32, move |x| {
        s2.lock().unwrap().push((x, start.elapsed()));
        if x == 0 && first.swap(false, Ordering::SeqCst) {
            return Err(429u16);
        }
        Ok(x)
    })
    .workers(2)
    .limiter(limiter.clone())
    .retry(
        Retry::attempts(3).retry_after(|e: &u16| (*e == 429).then_some(Duration::from_millis(400))),
    )
    .collect();
    assert!(run.is_ok());
    let st = stamps.lock().unwrap().clone();
    let t429 = st.iter().find(|(x, _)| *x == 0).unwrap().1;
    // Every attempt that started after the 429 started after the pause ended.
    let later: Vec<_> = st.iter().filter(|(_, t)| *t > t429).collect();
    assert!(!later.is_empty());
    for (x, t) in later {
        assert!(
            *t >= t429 + Duration::from_millis(350),
            "item {x} started at {t:?}, 429 at {t429:?}"
        );
    }
    // A second run sharing the limiter is paused too.
    limiter.pause(Duration::from_millis(300));
    let t0 = Instant::now();
    let run2 = herdsman::map(0..1u32, Ok::<_, ()>)
        .limiter(limiter)
        .collect();
    assert!(run2.is_ok());
    assert!(t0.elapsed() >= Duration::from_millis(250));
}

#[test]
fn panics_become_failures_and_pool_keeps_its_size() {
    let g = Gauge::default();
    let g2 = g.clone();
    let late_max = Arc::new(AtomicUsize::new(0));
    let lm = late_max.clone();
    let run = herdsman::map(0..40u64, move |x| {
        let _in = g2.enter();
        if x < 10 && x % 2 == 0 {
            panic!("boom at {x}");
        }
        sleep_ms(10);
        if x >= 20 {
            lm.fetch_max(g2.now.load(Ordering::SeqCst), Ordering::SeqCst);
        }
        Ok::<_, ()>(x)
    })
    .workers(2)
    .chunk_size(1)
    .collect();
    assert_eq!(run.failures().len(), 5);
    for f in run.failures() {
        assert_eq!(f.error, ItemError::Panicked(format!("boom at {}", f.index)));
    }
    assert_eq!(run.success_count(), 35);
    assert_eq!(late_max.load(Ordering::SeqCst), 2, "both workers still run");
}

#[test]
fn item_timeout_reports_and_replaces_the_worker() {
    let intervals = Arc::new(Mutex::new(Vec::new()));
    let iv = intervals.clone();
    let start = Instant::now();
    let run = herdsman::map(0..41u64, move |x| {
        let t0 = start.elapsed();
        if x == 0 {
            sleep_ms(2500);
        } else {
            sleep_ms(30);
        }
        iv.lock().unwrap().push((x, t0, start.elapsed()));
        Ok::<_, ()>(x)
    })
    .workers(2)
    .item_timeout(Duration::from_millis(300))
    .collect();
    let elapsed = start.elapsed();
    assert_eq!(run.failures().len(), 1);
    assert_eq!(run.failures()[0].index, 0);
    assert_eq!(run.failures()[0].error, ItemError::TimedOut);
    assert_eq!(run.success_count(), 40);
    // With the stuck thread replaced, items 1..=40 run two at a time after the first 0.3 s,
    // and the run does not wait for the stuck attempt (2.5 s).
    assert!(elapsed < Duration::from_millis(2000), "took {elapsed:?}");
    let iv = intervals.lock().unwrap();
    let after: Vec<_> = iv
        .iter()
        .filter(|(x, s, _)| *x != 0 && *s > Duration::from_millis(320))
        .collect();
    let overlapping = after
        .iter()
        .any(|a| after.iter().any(|b| a.0 != b.0 && a.1 < b.2 && b.1 < a.2));
    assert!(overlapping, "two items ran at once after the timeout");
}

#[test]
fn deadline_returns_partial_results() {
    let start = Instant::now();
    let run = herdsman::map(0u64.., |x| {
        sleep_ms(10);
        Ok::<_, ()>(x)
    })
    .workers(2)
    .deadline(Duration::from_millis(200))
    .collect();
    assert_eq!(run.status(), &RunStatus::TimedOut);
    assert!(start.elapsed() < Duration::from_secs(1));
    assert!(run.success_count() > 5);
    let s = run.summary();
    assert_eq!(s.succeeded + s.failed + s.not_run, s.admitted);
    for f in run.failures() {
        assert!(matches!(f.error, ItemError::TimedOut | ItemError::NotRun));
    }
    // At most the in-flight slots (2 workers x 2) are given up as timed out.
    assert!(s.failed <= 4, "{s:?}");
    assert!(run.into_values().is_err());
}

#[test]
fn stop_latency_is_short_while_rate_limited() {
    let token = StopToken::new();
    let t2 = token.clone();
    let stopped_at = Arc::new(Mutex::new(None));
    let sa = stopped_at.clone();
    std::thread::spawn(move || {
        sleep_ms(300);
        *sa.lock().unwrap() = Some(Instant::now());
        t2.stop();
    });
    let run = herdsman::map(0u64.., Ok::<_, ()>)
        .workers(2)
        .rate_limit(RateLimit::per_minute(NonZeroU32::new(1).unwrap()))
        .stop_token(token)
        .collect();
    let latency = stopped_at.lock().unwrap().unwrap().elapsed();
    assert_eq!(run.status(), &RunStatus::Cancelled);
    assert!(latency < Duration::from_secs(1), "stop took {latency:?}");
    assert_eq!(run.success_count(), 1);
}

#[test]
fn stream_memory_is_bounded_by_window_with_slow_consumer() {
    let pulled = Arc::new(AtomicU64::new(0));
    let window = 16;
    let mut stream = herdsman::map(counted_input(pulled.clone()), |x: u64| Ok::<_, ()>(x))
        .workers(2)
        .window(window)
        .stream();
    for consumed in 1..=200u64 {
        let o = stream.next().unwrap();
        assert_eq!(o.index, consumed - 1);
        if consumed % 50 == 0 {
            sleep_ms(20);
        }
        let ahead = pulled.load(Ordering::SeqCst) - consumed;
        assert!(ahead <= window as u64, "{ahead} items pulled ahead");
    }
    stream.cancel();
    let rest = stream.by_ref().count();
    assert!(rest <= window);
    assert_eq!(stream.status(), Some(&RunStatus::Cancelled));
}

#[test]
fn stream_summary_counts_failures() {
    let mut s = herdsman::map(0..20u32, |x| if x % 5 == 0 { Err(x) } else { Ok(x) })
        .ordered(false)
        .workers(2)
        .stream();
    let mut idx: Vec<u64> = s.by_ref().map(|o| o.index).collect();
    idx.sort();
    assert_eq!(idx, (0..20).collect::<Vec<_>>());
    let sum = s.summary().unwrap();
    assert_eq!((sum.succeeded, sum.failed), (16, 4));
    assert_eq!(sum.status, RunStatus::Completed);
}

#[test]
fn into_values_error_lists_every_failure() {
    let err = herdsman::map(0..6u32, |x| {
        if x == 1 || x == 4 {
            Err(format!("bad value {x}"))
        } else {
            Ok(x)
        }
    })
    .collect()
    .into_values()
    .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("item 1: the function failed: bad value 1"),
        "{msg}"
    );
    assert!(
        msg.contains("item 4: the function failed: bad value 4"),
        "{msg}"
    );
    assert_eq!(err.failures.len(), 2);
}

#[test]
fn progress_total_comes_from_size_hint_or_hint() {
    let last = Arc::new(Mutex::new(None));
    let l2 = last.clone();
    let _ = herdsman::map(0..7u32, Ok::<_, ()>)
        .on_progress(move |p| *l2.lock().unwrap() = Some(p.clone()))
        .collect();
    let p = last.lock().unwrap().clone().unwrap();
    assert_eq!((p.total, p.succeeded), (Some(7), 7));

    let l3 = last.clone();
    let _ = herdsman::map((0..7u32).filter(|_| true), Ok::<_, ()>)
        .total_hint(7)
        .on_progress(move |p| *l3.lock().unwrap() = Some(p.clone()))
        .collect();
    assert_eq!(last.lock().unwrap().as_ref().unwrap().total, Some(7));
}

#[test]
fn automatic_batching_handles_many_tiny_items() {
    let run = herdsman::map(0..200_000u64, |x| Ok::<_, ()>(x ^ 1))
        .workers(2)
        .collect();
    let v = run.into_values().unwrap();
    assert_eq!(v.len(), 200_000);
    assert!(v.iter().enumerate().all(|(i, x)| *x == (i as u64) ^ 1));
}

/// A minimal thread-per-attempt executor used to check `map_with`.
struct SpawnExecutor {
    cap: usize,
    tx: crossbeam_channel::Sender<(AttemptId, AttemptOutcome<u64, String>)>,
    rx: crossbeam_channel::Receiver<(AttemptId, AttemptOutcome<u64, String>)>,
    abandoned: Arc<Mutex<Vec<AttemptId>>>,
    shutdown: Arc<AtomicBool>,
}

impl SpawnExecutor {
    fn new(cap: usize) -> Self {
        let (tx, rx) = crossbeam_channel::unbounded();
        SpawnExecutor {
            cap,
            tx,
            rx,
            abandoned: Default::default(),
            shutdown: Default::default(),
        }
    }
}

impl Executor<u64> for SpawnExecutor {
    type Output = u64;
    type Error = String;
    fn capacity(&self) -> usize {
        self.cap
    }
    fn submit(&mut self, id: AttemptId, item: u64) -> Result<(), FatalExecutorError> {
        let tx = self.tx.clone();
        std::thread::spawn(move || {
            let out = match item {
                7 if id.attempt == 1 => AttemptOutcome::Failure("transient".into()),
                9 => {
                    sleep_ms(2000);
                    AttemptOutcome::Success(9)
                }
                11 => AttemptOutcome::Panicked("worker died".into()),
                x => {
                    sleep_ms(2);
                    AttemptOutcome::Success(x * 2)
                }
            };
            let _ = tx.send((id, out));
        });
        Ok(())
    }
    fn poll(
        &mut self,
        timeout: Duration,
        out: &mut Vec<(AttemptId, AttemptOutcome<u64, String>)>,
    ) -> Result<(), FatalExecutorError> {
        if let Ok(x) = self.rx.recv_timeout(timeout) {
            out.push(x);
            out.extend(self.rx.try_iter());
        }
        Ok(())
    }
    fn abandon(&mut self, id: AttemptId) {
        self.abandoned.lock().unwrap().push(id);
    }
    fn shutdown(&mut self) {
        self.shutdown.store(true, Ordering::SeqCst);
    }
}

#[test]
fn map_with_applies_the_same_policies() {
    let exec = SpawnExecutor::new(3);
    let abandoned = exec.abandoned.clone();
    let shut = exec.shutdown.clone();
    let mut stream = herdsman::map_with(0..14u64, exec)
        .window(4)
        .retry(Retry::attempts(2).backoff(Duration::from_millis(5)))
        .item_timeout(Duration::from_millis(500))
        .stream();
    let outs: Vec<_> = stream.by_ref().collect();
    assert_eq!(
        outs.iter().map(|o| o.index).collect::<Vec<_>>(),
        (0..14).collect::<Vec<_>>()
    );
    assert_eq!(outs[7].attempts, 2);
    assert_eq!(outs[7].result.as_ref().ok(), Some(&14));
    assert_eq!(outs[9].result.as_ref().unwrap_err(), &ItemError::TimedOut);
    assert_eq!(
        outs[11].result.as_ref().unwrap_err(),
        &ItemError::Panicked("worker died".into())
    );
    assert_eq!(
        *abandoned.lock().unwrap(),
        vec![AttemptId {
            index: 9,
            attempt: 1
        }]
    );
    assert!(shut.load(Ordering::SeqCst));
    assert_eq!(stream.summary().unwrap().failed, 2);
}

#[test]
fn sequential_runs_on_the_calling_thread_in_order() {
    let me = std::thread::current().id();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = seen.clone();
    let run = herdsman::map(0..20u32, move |x| {
        assert_eq!(std::thread::current().id(), me);
        s2.lock().unwrap().push(x);
        Ok::<_, ()>(x)
    })
    .workers(1)
    .collect();
    assert!(run.is_ok());
    assert_eq!(*seen.lock().unwrap(), (0..20).collect::<Vec<_>>());
}

#[test]
fn dropping_a_stream_cancels_the_run() {
    let pulled = Arc::new(AtomicU64::new(0));
    let mut s = herdsman::map(counted_input(pulled.clone()), |x: u64| Ok::<_, ()>(x))
        .window(8)
        .stream();
    assert!(s.next().is_some());
    drop(s);
    sleep_ms(100);
    let a = pulled.load(Ordering::SeqCst);
    sleep_ms(100);
    assert_eq!(
        a,
        pulled.load(Ordering::SeqCst),
        "input pulled after the drop"
    );
    assert!(a <= 9);
}

#[test]
fn thread_executor_through_map_with_keeps_pool_size_after_timeout() {
    let exec = herdsman::ThreadExecutor::new(2, |x: u64| {
        if x == 0 {
            sleep_ms(4000);
        } else {
            sleep_ms(20);
        }
        if x == 5 {
            panic!("five");
        }
        Ok::<_, String>(x)
    });
    let start = Instant::now();
    let run = herdsman::map_with(0..21u64, exec)
        .item_timeout(Duration::from_millis(1000))
        .collect();
    // Without a replacement thread the run would wait for the stuck attempt (4 s).
    assert!(start.elapsed() < Duration::from_millis(3000));
    let f = run.failures();
    assert_eq!(f.len(), 2);
    assert_eq!((f[0].index, &f[0].error), (0, &ItemError::TimedOut));
    assert_eq!(
        (f[1].index, &f[1].error),
        (5, &ItemError::Panicked("five".into()))
    );
    assert_eq!(run.success_count(), 19);
}

/// Item 0 of a 64-item batch is slow: idle workers steal the rest of its batch, so the
/// straggler only delays itself.
#[test]
fn a_straggler_only_delays_itself() {
    let start = Instant::now();
    let done_at = Arc::new(Mutex::new(Vec::new()));
    let d2 = done_at.clone();
    let run = herdsman::map(0..64u64, move |x| {
        sleep_ms(if x == 0 { 600 } else { 2 });
        d2.lock().unwrap().push((x, start.elapsed()));
        Ok::<_, ()>(x)
    })
    .workers(2)
    .chunk_size(64)
    .collect();
    assert!(run.is_ok());
    let done = done_at.lock().unwrap();
    let others_done = done
        .iter()
        .filter(|(x, _)| *x != 0)
        .map(|(_, t)| *t)
        .max()
        .unwrap();
    let straggler = done.iter().find(|(x, _)| *x == 0).unwrap().1;
    // The piece the straggler's worker already holds (8 items) waits for it; the other 56
    // are stolen and finish long before it.
    let early = done
        .iter()
        .filter(|(x, t)| *x != 0 && *t < Duration::from_millis(450))
        .count();
    assert!(
        early >= 50,
        "only {early} items finished early; straggler at {straggler:?}"
    );
    // Generous: on a loaded machine the 8 held items can take a while to be scheduled.
    assert!(others_done <= straggler + Duration::from_millis(1500));
}

#[test]
fn deadline_inside_batches_accounts_for_every_item() {
    let run = herdsman::map(0u64.., |x| {
        sleep_ms(if x % 50 == 3 { 300 } else { 3 });
        Ok::<_, ()>(x)
    })
    .workers(2)
    .chunk_size(50)
    .ordered(false)
    .deadline(Duration::from_millis(150))
    .collect();
    assert_eq!(run.status(), &RunStatus::TimedOut);
    let s = run.summary().clone();
    assert!(s.not_run > 0, "{s:?}");
    assert!(s.failed > 0, "{s:?}");
    let (succ, fail) = run.into_parts();
    let mut idx: Vec<u64> = succ.iter().map(|(i, _)| *i).collect();
    idx.extend(fail.iter().map(|f| f.index));
    idx.sort_unstable();
    assert_eq!(idx, (0..s.admitted).collect::<Vec<_>>());
}

/// `map` itself needs no `Clone` on items; only `retry` does.
#[test]
fn items_need_not_be_clone_without_retry() {
    struct Token(u32);
    let run = herdsman::map((0..50).map(Token), |t: Token| Ok::<_, ()>(t.0 + 1))
        .workers(2)
        .collect();
    assert_eq!(run.into_values().unwrap()[49], 50);
}

/// An iterator whose exact size hint is wrong (allowed: `size_hint` is only a hint).
struct Liar {
    next: u64,
    end: u64,
    claimed: usize,
}

impl Iterator for Liar {
    type Item = u64;
    fn next(&mut self) -> Option<u64> {
        (self.next < self.end).then(|| {
            self.next += 1;
            self.next - 1
        })
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.claimed, Some(self.claimed))
    }
}

#[test]
fn wrong_size_hints_still_yield_every_value_in_order() {
    for (end, claimed) in [(3000u64, 1000usize), (1000, 3000), (5000, 5000)] {
        let input = Liar {
            next: 0,
            end,
            claimed,
        };
        let run = herdsman::map(
            input,
            |x: u64| {
                if x % 997 == 5 {
                    Err(x)
                } else {
                    Ok(x * 2)
                }
            },
        )
        .workers(2)
        .collect();
        let succ: Vec<(u64, u64)> = run.successes().map(|(i, v)| (i, *v)).collect();
        let expected: Vec<(u64, u64)> = (0..end)
            .filter(|x| x % 997 != 5)
            .map(|x| (x, x * 2))
            .collect();
        assert_eq!(succ, expected, "end {end}, claimed {claimed}");
        let failed: Vec<u64> = run.failures().iter().map(|f| f.index).collect();
        assert_eq!(
            failed,
            (0..end).filter(|x| x % 997 == 5).collect::<Vec<_>>()
        );
    }
}

#[test]
fn deadline_with_known_length_keeps_indices_and_values() {
    let run = herdsman::map(0..100_000u64, |x| {
        sleep_ms(if x % 50 == 3 { 300 } else { 2 });
        Ok::<_, ()>(x + 7)
    })
    .workers(2)
    .chunk_size(20)
    .deadline(Duration::from_millis(150))
    .collect();
    assert_eq!(run.status(), &RunStatus::TimedOut);
    let s = run.summary().clone();
    assert!(s.succeeded > 0 && s.failed > 0, "{s:?}");
    for (i, v) in run.successes() {
        assert_eq!(*v, i + 7);
    }
    let (succ, fail) = run.into_parts();
    let mut idx: Vec<u64> = succ.iter().map(|(i, _)| *i).collect();
    idx.extend(fail.iter().map(|f| f.index));
    idx.sort_unstable();
    assert_eq!(idx, (0..s.admitted).collect::<Vec<_>>());
}
