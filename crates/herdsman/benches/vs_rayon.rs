//! herdsman against rayon side by side, round-robin in one process: each round runs every
//! contender once on the same workload, the order rotating from round to round, so a change
//! of the machine's load during the run falls on all of them alike.
//!
//! Run: `cargo bench -p herdsman --bench vs_rayon -- [ROUNDS] [WORKLOAD...]` (default 7
//! rounds of `trivial`, `primes` and `heavy`). `--only herdsman|rayon|sequential` runs one
//! contender alone (for `perf stat`).
//!
//! Workloads:
//! - `trivial`: 10 million `x * 2` over a range, ordered collect;
//! - `primes`: the reference workload, 100,000 prime counts of values uniform in 0..=1000
//!   (seeded), from a slice;
//! - `heavy`: 2,000 prime counts of values uniform in 5,000..=20,000 (about a millisecond
//!   each), from a slice.
//!
//! Prints, per workload and contender, the median, fastest and slowest time, and the median
//! of the per-round ratios herdsman / rayon.

use std::convert::Infallible;
use std::hint::black_box;
use std::time::{Duration, Instant};

use rayon::prelude::*;

fn count_primes(x: u64) -> u64 {
    (2..=x)
        .filter(|&n| (2..n).take_while(|d| d * d <= n).all(|d| n % d != 0))
        .count() as u64
}

fn seeded(n: usize, lo: u64, hi: u64) -> Vec<u64> {
    let mut rng = fastrand::Rng::with_seed(42);
    (0..n).map(|_| rng.u64(lo..=hi)).collect()
}

const CONTENDERS: [&str; 4] = ["herdsman", "rayon", "sequential", "scoped"];

/// CPU time (user + system) of this process so far, all threads, from `/proc/self/stat`
/// (in clock ticks, usually 10 ms; zero where that file does not exist).
fn cpu_time() -> Duration {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return Duration::ZERO;
    };
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name.
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

/// Run `who` on `workload` once; its wall-clock and CPU time and a checksum of the output.
fn run(workload: &str, who: &str, data: &[u64]) -> (Duration, Duration, u64) {
    let cpu = cpu_time();
    let began = Instant::now();
    let out: Vec<u64> = match (workload, who) {
        ("trivial", "herdsman") => {
            herdsman::map(0..10_000_000u64, |x| Ok::<_, Infallible>(black_box(x) * 2))
                .collect()
                .into_values()
                .unwrap()
        }
        ("trivial", "rayon") => (0..10_000_000u64)
            .into_par_iter()
            .map(|x| black_box(x) * 2)
            .collect(),
        ("trivial", _) => (0..10_000_000u64).map(|x| black_box(x) * 2).collect(),
        (_, "herdsman") => herdsman::map(data.iter().copied(), |x| {
            Ok::<_, Infallible>(count_primes(x))
        })
        .collect()
        .into_values()
        .unwrap(),
        (_, "rayon") => data.par_iter().map(|&x| count_primes(x)).collect(),
        (_, "scoped") => {
            let next = std::sync::atomic::AtomicUsize::new(0);
            let work = || {
                let mut v = Vec::new();
                loop {
                    let i = next.fetch_add(1024, std::sync::atomic::Ordering::Relaxed);
                    if i >= data.len() {
                        break v;
                    }
                    let end = (i + 1024).min(data.len());
                    v.push((
                        i,
                        data[i..end]
                            .iter()
                            .map(|&x| count_primes(x))
                            .collect::<Vec<u64>>(),
                    ));
                }
            };
            let mut parts = std::thread::scope(|s| {
                let h = s.spawn(work);
                let mut a = work();
                a.extend(h.join().unwrap());
                a
            });
            parts.sort_by_key(|p| p.0);
            parts.into_iter().flat_map(|p| p.1).collect()
        }
        _ => data.iter().map(|&x| count_primes(x)).collect(),
    };
    let took = began.elapsed();
    let cpu = cpu_time().saturating_sub(cpu);
    let sum = out.iter().fold(0u64, |a, &v| a.wrapping_add(v));
    drop(black_box(out));
    (took, cpu, sum)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn main() {
    let mut rounds = 7usize;
    let mut only: Option<String> = None;
    let mut workloads: Vec<String> = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--bench" => {}
            "--only" => only = args.next(),
            _ => match a.parse() {
                Ok(n) => rounds = n,
                Err(_) => workloads.push(a),
            },
        }
    }
    if workloads.is_empty() {
        workloads = vec!["trivial".into(), "primes".into(), "heavy".into()];
    }
    let contenders: Vec<&str> = match &only {
        Some(o) => CONTENDERS.iter().copied().filter(|c| c == o).collect(),
        None => CONTENDERS.to_vec(),
    };
    // rayon's pool starts before the first timed run, as herdsman's does.
    rayon::broadcast(|_| ());
    for w in &workloads {
        let data = match w.as_str() {
            "primes" => seeded(100_000, 0, 1000),
            "heavy" => seeded(2_000, 5_000, 20_000),
            _ => Vec::new(),
        };
        // One warm-up run each (page cache, lazy pools), not counted.
        let mut check = None;
        for c in &contenders {
            let (_, _, sum) = run(w, c, &data);
            assert!(
                *check.get_or_insert(sum) == sum,
                "{c} computed a different result"
            );
        }
        let mut times: Vec<Vec<f64>> = vec![Vec::new(); contenders.len()];
        let mut cpus: Vec<f64> = vec![0.0; contenders.len()];
        let mut ratios = Vec::new();
        for r in 0..rounds {
            let mut this = vec![0.0; contenders.len()];
            for k in 0..contenders.len() {
                let i = (r + k) % contenders.len();
                let (t, cpu, _) = run(w, contenders[i], &data);
                cpus[i] += cpu.as_secs_f64() * 1e3;
                this[i] = t.as_secs_f64() * 1e3;
                times[i].push(this[i]);
            }
            if contenders.len() > 1 {
                ratios.push(this[0] / this[1]);
            }
        }
        println!("{w} ({rounds} rounds, ms): median (min..max), mean CPU time per run");
        for (i, c) in contenders.iter().enumerate() {
            let t = &mut times[i];
            let m = median(t);
            println!(
                "  {c:<10} {m:9.1} ({:.1}..{:.1})  cpu {:.1}",
                t[0],
                t[t.len() - 1],
                cpus[i] / rounds as f64
            );
        }
        if !ratios.is_empty() {
            let per_round: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
            println!(
                "  herdsman / rayon: median {:.2} (rounds: {})",
                median(&mut ratios),
                per_round.join(" ")
            );
        }
    }
}
