//! Property: whatever the sizes, windows, worker counts and failure patterns, every admitted
//! index ends exactly once as a success or a failure, and ordered output is sorted.

use proptest::prelude::*;

use herdsman::{ItemError, RunStatus};

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
