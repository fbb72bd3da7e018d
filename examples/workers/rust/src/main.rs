//! A herdsman worker in Rust for the reference workload, built on the `herdsman-worker`
//! crate and speaking the `framed` protocol.
//!
//! For each record `{"id": ..., "value": ...}` (CSV fields arrive as strings) it counts the
//! primes up to `value` by trial division and outputs `{"id", "value",
//! "primes_up_to_value"}`. A row whose id or value is not a non-negative integer fails, not
//! retryable, and lands in herdsman's dead-letter file. With `--filter-small`, records whose
//! value is below 2 (no primes) are filtered out instead of written.
//!
//! ```text
//! cargo build --release -p herdsman-example-worker
//! herdsman run -i examples/primes/data.csv --protocol framed \
//!     -w target/release/primes-worker -o primes.jsonl
//! ```

use herdsman_worker::{serve_framed, RecordError};
use serde::Serialize;
use serde_json::Value;

/// One output record; fields are written in this order.
#[derive(Serialize)]
struct Count {
    id: u64,
    value: u64,
    primes_up_to_value: usize,
}

fn is_prime(n: u64) -> bool {
    if n < 2 {
        return false;
    }
    let mut d = 2;
    while d * d <= n {
        if n.is_multiple_of(d) {
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

fn count(record: &Value, filter_small: bool) -> Result<Vec<Count>, RecordError> {
    let id = integer(record, "id")?;
    let value = integer(record, "value")?;
    if filter_small && value < 2 {
        return Ok(Vec::new());
    }
    let primes_up_to_value = (2..=value).filter(|&n| is_prime(n)).count();
    Ok(vec![Count {
        id,
        value,
        primes_up_to_value,
    }])
}

fn main() {
    let filter_small = std::env::args().any(|a| a == "--filter-small");
    let stdin = std::io::stdin().lock();
    let stdout = std::io::stdout().lock();
    if let Err(e) = serve_framed(stdin, stdout, |record| count(&record, filter_small)) {
        eprintln!("primes-worker: {e}");
        std::process::exit(2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_filters_and_fails() {
        let input = concat!(
            "{\"id\":0,\"record\":{\"id\":\"1\",\"value\":\"17\"}}\n",
            "{\"id\":1,\"record\":{\"id\":\"2\",\"value\":\"1\"}}\n",
            "{\"id\":2,\"record\":{\"id\":\"3\",\"value\":\"x\"}}\n",
        );
        let mut out = Vec::new();
        serve_framed(input.as_bytes(), &mut out, |r| count(&r, true)).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            concat!(
                "{\"id\":0,\"output\":{\"id\":1,\"value\":17,\"primes_up_to_value\":7}}\n",
                "{\"id\":0,\"done\":true}\n",
                "{\"id\":1,\"done\":true}\n",
                "{\"id\":2,\"error\":\"value is not a non-negative integer: \\\"x\\\"\",\"retryable\":false}\n",
            )
        );
    }
}
