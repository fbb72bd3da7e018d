//! The reference workload: count the primes ≤ `value` for every row of a CSV (`id,value`)
//! with `herdsman::map`, print JSON lines in input order on stdout and a summary on stderr.
//!
//! Rows whose value is not an integer are reported as failures, never crash the run.
//!
//! ```sh
//! cargo run --release --example primes -p herdsman [-- path/to/data.csv]
//! ```

use std::fmt;
use std::io::{BufWriter, Write};
use std::time::Instant;

/// Why a row could not be processed.
#[derive(Debug)]
struct BadValue(String);

impl fmt::Display for BadValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "value {:?} is not a non-negative integer", self.0)
    }
}

/// Naive trial division, on purpose (it is the benchmark's CPU-bound work).
fn count_primes(x: u64) -> u64 {
    (2..=x)
        .filter(|&n| (2..n).take_while(|d| d * d <= n).all(|d| n % d != 0))
        .count() as u64
}

fn main() {
    let path = std::env::args().nth(1).unwrap_or_else(|| {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../examples/primes/data.csv"
        )
        .to_string()
    });
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("cannot read {path}: {e}; pass the CSV path as the first argument");
            std::process::exit(2);
        }
    };
    let rows: Vec<(String, String)> = text
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (id, value) = l.split_once(',').unwrap_or((l, ""));
            (id.trim().to_string(), value.trim().to_string())
        })
        .collect();

    let start = Instant::now();
    let run = herdsman::map(rows.clone(), |(id, value): (String, String)| {
        let x: u64 = value.parse().map_err(|_| BadValue(value.clone()))?;
        Ok::<_, BadValue>((id, x, count_primes(x)))
    })
    .collect();
    let elapsed = start.elapsed();

    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    for (_, (id, value, primes)) in run.successes() {
        let id_json = match id.parse::<i64>() {
            Ok(n) => n.to_string(),
            Err(_) => format!("{id:?}"),
        };
        let _ = writeln!(
            out,
            "{{\"id\":{id_json},\"value\":{value},\"primes_up_to_value\":{primes}}}"
        );
    }
    let _ = out.flush();

    let failures: Vec<String> = run
        .failures()
        .iter()
        .map(|f| {
            format!(
                "row {} (id {}): {}",
                f.index, rows[f.index as usize].0, f.error
            )
        })
        .collect();
    eprintln!(
        "primes: {} succeeded, {} failed, status {}, {:.3} s on {} threads",
        run.success_count(),
        failures.len(),
        run.status(),
        elapsed.as_secs_f64(),
        herdsman::default_workers()
    );
    for f in &failures {
        eprintln!("  failed {f}");
    }
}
