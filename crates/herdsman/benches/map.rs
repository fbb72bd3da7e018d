//! Benchmarks: herdsman against rayon and a sequential loop on (1) 10 million trivial items,
//! (2) the reference prime-counting workload, and (3) per-item engine overhead with retries
//! and progress enabled.
//!
//! Run: `cargo bench -p herdsman --bench map` (add `-- --sample-count 5` for a quick run).

use std::convert::Infallible;
use std::sync::OnceLock;
use std::time::Duration;

use divan::counter::ItemsCount;
use divan::{black_box, Bencher};
use rayon::prelude::*;

fn main() {
    divan::main();
}

const TRIVIAL: u64 = 10_000_000;
const PRIME_ITEMS: usize = 100_000;
const OVERHEAD_ITEMS: u64 = 200_000;

fn count_primes(x: u64) -> u64 {
    (2..=x)
        .filter(|&n| (2..n).take_while(|d| d * d <= n).all(|d| n % d != 0))
        .count() as u64
}

/// 100k values uniform in 0..=1000, seeded.
fn prime_inputs() -> &'static [u64] {
    static DATA: OnceLock<Vec<u64>> = OnceLock::new();
    DATA.get_or_init(|| {
        let mut rng = fastrand::Rng::with_seed(42);
        (0..PRIME_ITEMS).map(|_| rng.u64(0..=1000)).collect()
    })
}

mod trivial_10m {
    use super::*;

    #[divan::bench(sample_count = 5, sample_size = 1)]
    fn herdsman(b: Bencher) {
        b.counter(ItemsCount::new(TRIVIAL)).bench(|| {
            herdsman::map(0..TRIVIAL, |x| Ok::<_, Infallible>(black_box(x) * 2))
                .collect()
                .into_values()
                .unwrap()
        });
    }

    #[divan::bench(sample_count = 5, sample_size = 1)]
    fn rayon(b: Bencher) {
        b.counter(ItemsCount::new(TRIVIAL)).bench(|| {
            (0..TRIVIAL)
                .into_par_iter()
                .map(|x| black_box(x) * 2)
                .collect::<Vec<u64>>()
        });
    }

    #[divan::bench(sample_count = 5, sample_size = 1)]
    fn sequential(b: Bencher) {
        b.counter(ItemsCount::new(TRIVIAL))
            .bench(|| (0..TRIVIAL).map(|x| black_box(x) * 2).collect::<Vec<u64>>());
    }
}

mod primes_100k {
    use super::*;

    #[divan::bench(sample_count = 5, sample_size = 1)]
    fn herdsman(b: Bencher) {
        let data = prime_inputs();
        b.counter(ItemsCount::new(data.len())).bench(|| {
            herdsman::map(data.iter().copied(), |x| {
                Ok::<_, Infallible>(count_primes(x))
            })
            .collect()
            .into_values()
            .unwrap()
        });
    }

    #[divan::bench(sample_count = 5, sample_size = 1)]
    fn rayon(b: Bencher) {
        let data = prime_inputs();
        b.counter(ItemsCount::new(data.len())).bench(|| {
            data.par_iter()
                .map(|&x| count_primes(x))
                .collect::<Vec<u64>>()
        });
    }

    #[divan::bench(sample_count = 5, sample_size = 1)]
    fn sequential(b: Bencher) {
        let data = prime_inputs();
        b.counter(ItemsCount::new(data.len()))
            .bench(|| data.iter().map(|&x| count_primes(x)).collect::<Vec<u64>>());
    }
}

mod overhead_noop_200k {
    use super::*;

    /// No-op items with a retry policy (items are cloned for possible retries) and a
    /// progress callback: the engine's bookkeeping per item.
    #[divan::bench(sample_count = 5, sample_size = 1)]
    fn retries_and_progress(b: Bencher) {
        b.counter(ItemsCount::new(OVERHEAD_ITEMS)).bench(|| {
            herdsman::map(0..OVERHEAD_ITEMS, |x| Ok::<_, Infallible>(black_box(x)))
                .retry(herdsman::Retry::attempts(3).backoff(Duration::from_millis(1)))
                .on_progress(|p| {
                    black_box(p.finished());
                })
                .collect()
                .into_values()
                .unwrap()
        });
    }

    /// The same items with no policy, for comparison.
    #[divan::bench(sample_count = 5, sample_size = 1)]
    fn no_policies(b: Bencher) {
        b.counter(ItemsCount::new(OVERHEAD_ITEMS)).bench(|| {
            herdsman::map(0..OVERHEAD_ITEMS, |x| Ok::<_, Infallible>(black_box(x)))
                .collect()
                .into_values()
                .unwrap()
        });
    }
}
