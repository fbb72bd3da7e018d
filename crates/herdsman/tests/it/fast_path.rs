//! Ordered `collect` with no policy takes a fast path (threads claim index blocks of the
//! input and write values straight into their slots). Its results must be exactly those of
//! the general engine: same values, same failures, every item once.

use herdsman::{ItemError, RunResult, RunStatus, DEFAULT_WINDOW};

fn f(x: u64) -> Result<u64, String> {
    if x % 11 == 5 {
        panic!("item {x} panicked");
    }
    if x % 7 == 3 {
        return Err(format!("item {x} failed"));
    }
    Ok(x * 3)
}

/// Successes, failures (index, what), succeeded, admitted.
type Parts = (Vec<(u64, u64)>, Vec<(u64, String)>, u64, u64);

fn parts(run: RunResult<u64, String>) -> Parts {
    let s = run.summary().clone();
    assert_eq!(s.status, RunStatus::Completed);
    assert_eq!(s.succeeded + s.failed + s.not_run, s.admitted);
    let (ok, failed) = run.into_parts();
    let failed = failed
        .into_iter()
        .map(|f| {
            let what = match f.error {
                ItemError::Failed(e) => e,
                ItemError::Panicked(m) => format!("panic: {m}"),
                other => panic!("unexpected {other:?}"),
            };
            (f.index, what)
        })
        .collect();
    (ok, failed, s.succeeded, s.admitted)
}

#[test]
fn the_fast_path_gives_what_the_engine_gives() {
    std::panic::set_hook(Box::new(|_| {}));
    for n in [1u64, 2, 63, 4097, 50_000] {
        for workers in [2, 3, 8] {
            let fast = herdsman::map(0..n, f).workers(workers).collect();
            // An explicit window (even the default one) sends the run through the engine.
            let engine = herdsman::map(0..n, f)
                .workers(workers)
                .window(DEFAULT_WINDOW)
                .collect();
            let (fast, engine) = (parts(fast), parts(engine));
            assert_eq!(fast, engine, "n = {n}, workers = {workers}");
            assert_eq!(fast.3, n);
            let ok: Vec<u64> = fast.0.iter().map(|(i, _)| *i).collect();
            let mut all: Vec<u64> = ok
                .iter()
                .copied()
                .chain(fast.1.iter().map(|f| f.0))
                .collect();
            all.sort_unstable();
            assert_eq!(all, (0..n).collect::<Vec<_>>());
        }
    }
}

/// An iterator whose exact size hint is wrong.
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
fn a_wrong_length_hint_loses_and_duplicates_nothing() {
    std::panic::set_hook(Box::new(|_| {}));
    for (end, claimed) in [(10_000u64, 6_000usize), (6_000, 10_000)] {
        let input = Liar {
            next: 0,
            end,
            claimed,
        };
        let (ok, failed, succeeded, admitted) = parts(herdsman::map(input, f).workers(4).collect());
        assert_eq!(admitted, end, "every item pulled once");
        assert_eq!(succeeded as usize, ok.len());
        assert!(
            ok.windows(2).all(|w| w[0].0 < w[1].0),
            "values in input order"
        );
        assert!(ok.iter().all(|(i, v)| *v == i * 3));
        let mut all: Vec<u64> = ok
            .iter()
            .map(|(i, _)| *i)
            .chain(failed.iter().map(|f| f.0))
            .collect();
        all.sort_unstable();
        assert_eq!(all, (0..end).collect::<Vec<_>>());
    }
}

/// Successes with their indices, failures (index, what, attempts), and the summary's counts
/// and status: everything of a run but the measured durations.
type Full = (
    Vec<(u64, u64)>,
    Vec<(u64, String, u32)>,
    (RunStatus, u64, u64, u64, u64),
);

fn full(run: RunResult<u64, String>) -> Full {
    let s = run.summary().clone();
    let counts = (s.status, s.succeeded, s.failed, s.not_run, s.admitted);
    let (ok, failed) = run.into_parts();
    let failed = failed
        .into_iter()
        .map(|f| {
            let what = match f.error {
                ItemError::Failed(e) => format!("failed: {e}"),
                ItemError::Panicked(m) => format!("panic: {m}"),
                other => format!("other: {other:?}"),
            };
            (f.index, what, f.attempts)
        })
        .collect();
    (ok, failed, counts)
}

/// An item's fate from a seed: a success, an error or a panic (in runs of any length, so
/// chunks hold none, one or several failures).
fn fate(x: u64, seed: u64, rate: u64) -> Result<u64, String> {
    let h = (x ^ seed).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40;
    match h % 100 {
        r if r < rate => Err(format!("item {x} failed")),
        r if r < 2 * rate => panic!("item {x} panicked"),
        _ => Ok(x.wrapping_mul(3) ^ seed),
    }
}

/// The same map on the fast path (no policy) and through the engine (an explicit window,
/// even the default one, needs the scheduler).
fn both<I>(input: impl Fn() -> I, workers: usize, seed: u64, rate: u64) -> (Full, Full)
where
    I: IntoIterator<Item = u64>,
    I::IntoIter: Send,
{
    let f = move |x: u64| fate(x, seed, rate);
    let fast = herdsman::map(input(), f).workers(workers).collect();
    let engine = herdsman::map(input(), f)
        .workers(workers)
        .window(DEFAULT_WINDOW)
        .collect();
    (full(fast), full(engine))
}

static DATA: std::sync::OnceLock<Vec<u64>> = std::sync::OnceLock::new();

fn data() -> &'static [u64] {
    DATA.get_or_init(|| (0..20_000u64).map(|i| i * 7 + 1).collect())
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig {
        cases: 48,
        rng_seed: proptest::test_runner::RngSeed::Fixed(0xFA57_2026),
        ..proptest::prelude::ProptestConfig::default()
    })]

    /// Indexed inputs (ranges, inclusive ranges, copied slices) and sequential ones (a vector,
    /// a mapped range): the fast path gives the engine's values, outcomes and order.
    #[test]
    fn the_fast_path_equals_the_engine_for_any_input(
        start in 0u64..1_000,
        len in 1usize..12_000,
        workers in 2usize..6,
        seed in proptest::prelude::any::<u64>(),
        rate in 0u64..20,
        kind in 0u8..5,
    ) {
        std::panic::set_hook(Box::new(|_| {}));
        let end = start + len as u64;
        let (fast, engine) = match kind {
            0 => both(|| start..end, workers, seed, rate),
            1 => both(|| start..=end - 1, workers, seed, rate),
            2 => both(
                || data()[start as usize..(start as usize + len).min(20_000)].iter().copied(),
                workers,
                seed,
                rate,
            ),
            3 => both(|| (start..end).collect::<Vec<_>>(), workers, seed, rate),
            _ => both(|| (start..end).map(|x| x ^ 1), workers, seed, rate),
        };
        proptest::prop_assert_eq!(&fast, &engine);
        let (ok, failed, (status, succeeded, nfailed, not_run, admitted)) = fast;
        proptest::prop_assert_eq!(status, RunStatus::Completed);
        proptest::prop_assert_eq!(not_run, 0);
        proptest::prop_assert_eq!(succeeded as usize, ok.len());
        proptest::prop_assert_eq!(nfailed as usize, failed.len());
        let mut all: Vec<u64> = ok.iter().map(|p| p.0).chain(failed.iter().map(|f| f.0)).collect();
        all.sort_unstable();
        proptest::prop_assert_eq!(all, (0..admitted).collect::<Vec<_>>());
    }
}

/// A fast-path run inside another fast-path run's function, and two fast-path runs started
/// at once from two threads: each finishes, with every item exactly once.
#[test]
fn fast_path_runs_nest_and_run_side_by_side() {
    let inner_sum = |k: u64| -> u64 {
        let run = herdsman::map(0..1000u64, move |x| Ok::<_, String>(x + k))
            .workers(2)
            .collect();
        assert_eq!(run.summary().admitted, 1000);
        run.into_values().expect("no failure").iter().sum()
    };
    let outer = herdsman::map(0..16u64, move |k| Ok::<_, String>(inner_sum(k)))
        .workers(3)
        .collect()
        .into_values()
        .expect("no failure");
    let want: Vec<u64> = (0..16u64).map(|k| 499_500 + 1000 * k).collect();
    assert_eq!(outer, want);

    let side = |seed: u64| {
        std::thread::spawn(move || {
            herdsman::map(0..200_000u64, move |x| Ok::<_, String>(x ^ seed))
                .workers(2)
                .collect()
                .into_values()
                .expect("no failure")
        })
    };
    let (a, b) = (side(7), side(11));
    let (a, b) = (a.join().expect("run a"), b.join().expect("run b"));
    assert!(a.iter().enumerate().all(|(i, v)| *v == i as u64 ^ 7));
    assert!(b.iter().enumerate().all(|(i, v)| *v == i as u64 ^ 11));
    assert_eq!((a.len(), b.len()), (200_000, 200_000));
}
