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
