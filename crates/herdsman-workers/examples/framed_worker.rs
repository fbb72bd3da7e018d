//! A herdsman worker written in Rust, speaking the `framed` protocol.
//!
//! For each record `{"id": ..., "value": ...}` of the reference workload it counts the primes
//! up to `value` by trial division and answers `{"id", "value", "primes_up_to_value"}`; a
//! value that is not an integer fails the record (not retryable). With `--explode`, it
//! instead answers one output per prime (a record with value 10 gives 2, 3, 5, 7), and
//! filters records whose value is below 2.
//!
//! ```text
//! cargo build --release -p herdsman-workers --example framed_worker
//! herdsman run -i examples/primes/data.csv --protocol framed \
//!     -w target/release/examples/framed_worker -o primes.jsonl
//! echo '{"id":1,"record":{"id":"3","value":"17"}}' | target/release/examples/framed_worker
//! ```

use herdsman_workers::serve::{serve_framed, RecordError};
use serde::Serialize;
use serde_json::Value;

/// One output record; fields are written in this order.
#[derive(Serialize)]
#[serde(untagged)]
enum Output {
    Count {
        id: u64,
        value: u64,
        primes_up_to_value: usize,
    },
    Prime {
        id: u64,
        prime: u64,
    },
}

fn is_prime(n: u64) -> bool {
    if n < 2 {
        return false;
    }
    let mut d = 2;
    while d * d <= n {
        if n.checked_rem(d) == Some(0) {
            return false;
        }
        d += 1;
    }
    true
}

/// Reads an integer field given either as a JSON number or as a string (CSV input).
fn integer(record: &Value, field: &str) -> Result<u64, RecordError> {
    let v = &record[field];
    v.as_u64()
        .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
        .ok_or_else(|| RecordError::fatal(format!("{field} is not a non-negative integer: {v}")))
}

fn main() {
    let explode = std::env::args().any(|a| a == "--explode");
    let stdin = std::io::stdin().lock();
    let stdout = std::io::stdout().lock();
    let result = serve_framed(stdin, stdout, |record| {
        let id = integer(&record, "id")?;
        let value = integer(&record, "value")?;
        if explode {
            return Ok((2..=value)
                .filter(|&n| is_prime(n))
                .map(|prime| Output::Prime { id, prime })
                .collect());
        }
        let primes_up_to_value = (2..=value).filter(|&n| is_prime(n)).count();
        Ok(vec![Output::Count {
            id,
            value,
            primes_up_to_value,
        }])
    });
    if let Err(e) = result {
        eprintln!("framed_worker: {e}");
        std::process::exit(2);
    }
}
