//! Property: whatever the sizes, windows, worker counts and failure patterns, every admitted
//! index ends exactly once as a success or a failure, and ordered output is sorted.

use proptest::prelude::*;

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use herdsman::{
    ItemError, ItemOutcome, ManualClock, RateLimit, Retry, RunStatus, Summary, ThreadExecutor,
};

fn verdict(i: u64, seed: u64) -> u64 {
    (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ seed) % 17
}

fn f(seed: u64) -> impl Fn(u64) -> Result<u64, String> + Send + Sync + 'static {
    move |i| match verdict(i, seed) {
        0 => Err(format!("item {i} failed")),
        1 => panic!("item {i} panicked"),
        // A few slow items make idle workers steal from their batches.
        2 => {
            std::thread::sleep(std::time::Duration::from_millis(1));
            Ok(i * 2)
        }
        _ => Ok(i * 2),
    }
}

fn check_indices(mut idx: Vec<u64>, admitted: u64) {
    idx.sort_unstable();
    assert_eq!(idx, (0..admitted).collect::<Vec<_>>());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]

    #[test]
    fn every_index_exactly_once(
        n in 0u64..300,
        window in 1usize..20,
        workers in 1usize..4,
        seed in any::<u64>(),
        ordered in any::<bool>(),
        max_errors in proptest::option::of(1u64..6),
        use_stream in any::<bool>(),
        chunk in proptest::option::of(1usize..24),
    ) {
        std::panic::set_hook(Box::new(|_| {}));
        let mut m = herdsman::map(0..n, f(seed)).workers(workers).window(window).ordered(ordered);
        if let Some(k) = max_errors {
            m = m.max_errors(k);
        }
        if let Some(c) = chunk {
            m = m.chunk_size(c);
        }
        let (idx, summary) = if use_stream {
            let mut s = m.stream();
            let outs: Vec<_> = s.by_ref().collect();
            for o in &outs {
                match &o.result {
                    Ok(v) => prop_assert_eq!(*v, o.index * 2),
                    Err(ItemError::Failed(_)) => prop_assert_eq!(verdict(o.index, seed), 0),
                    Err(ItemError::Panicked(_)) => prop_assert_eq!(verdict(o.index, seed), 1),
                    Err(ItemError::NotRun) => {}
                    Err(e) => prop_assert!(false, "unexpected {e:?}"),
                }
            }
            let idx: Vec<u64> = outs.iter().map(|o| o.index).collect();
            if ordered {
                prop_assert!(idx.windows(2).all(|w| w[0] < w[1]));
            }
            (idx, s.summary().unwrap().clone())
        } else {
            let run = m.collect();
            let summary = run.summary().clone();
            let (succ, fail) = run.into_parts();
            if ordered {
                prop_assert!(succ.windows(2).all(|w| w[0].0 < w[1].0));
                prop_assert!(fail.windows(2).all(|w| w[0].index < w[1].index));
            }
            for (i, v) in &succ {
                prop_assert_eq!(*v, i * 2);
            }
            let mut idx: Vec<u64> = succ.iter().map(|(i, _)| *i).collect();
            idx.extend(fail.iter().map(|f| f.index));
            (idx, summary)
        };
        prop_assert_eq!(idx.len() as u64, summary.admitted);
        check_indices(idx, summary.admitted);
        prop_assert_eq!(summary.succeeded + summary.failed + summary.not_run, summary.admitted);
        match summary.status {
            RunStatus::Completed => prop_assert_eq!(summary.admitted, n),
            RunStatus::Aborted => prop_assert!(summary.failed >= max_errors.unwrap()),
            other => prop_assert!(false, "unexpected status {other:?}"),
        }
    }
}

/// What item `i` does in the mixed-policy property (seeded).
fn mixed_verdict(i: u64, seed: u64) -> u64 {
    (i.wrapping_mul(0xD1B5_4A32_D192_ED03) ^ seed.rotate_left(17)) % 13
}

/// The function of the mixed-policy property: some items fail always, some fail on their
/// first attempt only, some panic, and some "run" 30 ms of simulated time on the run's
/// manual clock (longer than any item timeout drawn below). Every call also moves the clock
/// 1 ms, so simulated time passes with work.
fn mixed_f(
    seed: u64,
    clock: ManualClock,
    calls: Arc<Vec<AtomicU32>>,
) -> impl Fn(u64) -> Result<u64, String> + Send + Sync + 'static {
    move |i| {
        clock.advance(Duration::from_millis(1));
        let call = calls[i as usize].fetch_add(1, Ordering::SeqCst) + 1;
        match mixed_verdict(i, seed) {
            0 => Err(format!("item {i} always fails")),
            1 if call == 1 => Err(format!("item {i} fails its first attempt")),
            2 => panic!("item {i} panicked"),
            3 => {
                clock.advance(Duration::from_millis(30));
                Ok(i * 2)
            }
            _ => Ok(i * 2),
        }
    }
}

/// Moves the manual clock 1 ms per real millisecond while a run lasts, so that waiting
/// retries and the deadline come due even when no item is running.
struct Ticker {
    done: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Ticker {
    fn start(clock: ManualClock) -> Self {
        let done = Arc::new(AtomicBool::new(false));
        let d = Arc::clone(&done);
        let handle = std::thread::spawn(move || {
            while !d.load(Ordering::SeqCst) {
                clock.advance(Duration::from_millis(1));
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        Ticker {
            done,
            handle: Some(handle),
        }
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.done.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

proptest! {
    // Seeded: the same 32 cases every run.
    #![proptest_config(ProptestConfig {
        cases: 32,
        rng_seed: proptest::test_runner::RngSeed::Fixed(0x5EED_2026),
        ..ProptestConfig::default()
    })]

    /// Retries (of errors and of timeouts), item timeouts and a deadline on a manual clock,
    /// a rate limit, the thread pool or `map_with` on a `ThreadExecutor`, collect or
    /// stream: every item ends exactly once (ok, failed or not run), nothing is duplicated,
    /// and each kind of end has a cause.
    #[test]
    fn every_item_ends_once_under_mixed_policies(
        n in 0u64..160,
        window in 1usize..24,
        workers in 1usize..4,
        seed in any::<u64>(),
        ordered in any::<bool>(),
        use_stream in any::<bool>(),
        use_executor in any::<bool>(),
        attempts in 1u32..4,
        retry_timeouts in any::<bool>(),
        backoff_ms in 0u64..20,
        item_timeout_ms in proptest::option::of(5u64..25),
        deadline_ms in proptest::option::of(20u64..400),
        rate in proptest::option::of(2_000u32..20_000),
        max_errors in proptest::option::of(1u64..8),
    ) {
        std::panic::set_hook(Box::new(|_| {}));
        let clock = ManualClock::new();
        let calls: Arc<Vec<AtomicU32>> = Arc::new((0..n).map(|_| AtomicU32::new(0)).collect());
        let f = mixed_f(seed, clock.clone(), Arc::clone(&calls));
        let retry = Retry::attempts(attempts)
            .backoff(Duration::from_millis(backoff_ms))
            .retry_timeouts(retry_timeouts);
        macro_rules! configure {
            ($m:expr) => {{
                let mut m = $m
                    .window(window)
                    .ordered(ordered)
                    .clock(clock.clone())
                    .retry(retry);
                if let Some(t) = item_timeout_ms {
                    m = m.item_timeout(Duration::from_millis(t));
                }
                if let Some(d) = deadline_ms {
                    m = m.deadline(Duration::from_millis(d));
                }
                if let Some(r) = rate {
                    m = m.rate_limit(
                        RateLimit::per_second(std::num::NonZeroU32::new(r).expect("rates are positive"))
                            .burst(8),
                    );
                }
                if let Some(k) = max_errors {
                    m = m.max_errors(k);
                }
                m
            }};
        }
        let _ticker = Ticker::start(clock.clone());
        let outcomes: Vec<ItemOutcome<u64, String>>;
        let summary: Summary;
        if use_executor {
            let m = configure!(herdsman::map_with(0..n, ThreadExecutor::new(workers, f)));
            if use_stream {
                let mut s = m.stream();
                outcomes = s.by_ref().collect();
                summary = s.summary().unwrap().clone();
            } else {
                let mut seen = Arc::new(Mutex::new(Vec::new()));
                let sink = Arc::clone(&seen);
                let run = m
                    .on_outcome(move |o| sink.lock().unwrap().push(copy(o)))
                    .collect();
                summary = run.summary().clone();
                outcomes = std::mem::take(Arc::get_mut(&mut seen).unwrap().get_mut().unwrap());
            }
        } else {
            let m = configure!(herdsman::map(0..n, f).workers(workers));
            if use_stream {
                let mut s = m.stream();
                outcomes = s.by_ref().collect();
                summary = s.summary().unwrap().clone();
            } else {
                let mut seen = Arc::new(Mutex::new(Vec::new()));
                let sink = Arc::clone(&seen);
                let run = m
                    .on_outcome(move |o| sink.lock().unwrap().push(copy(o)))
                    .collect();
                summary = run.summary().clone();
                outcomes = std::mem::take(Arc::get_mut(&mut seen).unwrap().get_mut().unwrap());
            }
        }
        // Exactly once: the indices are 0..admitted, each once.
        let idx: Vec<u64> = outcomes.iter().map(|o| o.index).collect();
        if ordered && use_stream {
            prop_assert!(idx.windows(2).all(|w| w[0] < w[1]), "out of order: {idx:?}");
        }
        prop_assert_eq!(idx.len() as u64, summary.admitted);
        check_indices(idx, summary.admitted);
        prop_assert_eq!(summary.succeeded + summary.failed + summary.not_run, summary.admitted);
        let stopped = summary.status != RunStatus::Completed;
        match &summary.status {
            RunStatus::Completed => prop_assert_eq!(summary.admitted, n),
            RunStatus::Aborted => prop_assert!(summary.failed >= max_errors.unwrap()),
            RunStatus::TimedOut => prop_assert!(deadline_ms.is_some()),
            other => prop_assert!(false, "unexpected status {other:?}"),
        }
        // Each end has a cause.
        for o in &outcomes {
            let v = mixed_verdict(o.index, seed);
            prop_assert!(o.attempts <= attempts, "{} attempts of item {}", o.attempts, o.index);
            match &o.result {
                Ok(x) => prop_assert_eq!(*x, o.index * 2),
                Err(ItemError::Failed(_)) => prop_assert!(v == 0 || v == 1),
                Err(ItemError::Panicked(_)) => prop_assert_eq!(v, 2),
                Err(ItemError::TimedOut) => {
                    prop_assert!(item_timeout_ms.is_some() || summary.status == RunStatus::TimedOut)
                }
                Err(ItemError::NotRun) => prop_assert!(stopped),
                Err(e) => prop_assert!(false, "unexpected {e:?}"),
            }
        }
    }
}

fn copy(o: &ItemOutcome<u64, String>) -> ItemOutcome<u64, String> {
    ItemOutcome {
        index: o.index,
        result: match &o.result {
            Ok(v) => Ok(*v),
            Err(ItemError::Failed(e)) => Err(ItemError::Failed(e.clone())),
            Err(ItemError::Panicked(m)) => Err(ItemError::Panicked(m.clone())),
            Err(ItemError::TimedOut) => Err(ItemError::TimedOut),
            Err(ItemError::NotRun) => Err(ItemError::NotRun),
            Err(ItemError::Executor(m)) => Err(ItemError::Executor(m.clone())),
            Err(_) => unreachable!("an outcome this test does not produce"),
        },
        attempts: o.attempts,
        duration: o.duration,
    }
}
