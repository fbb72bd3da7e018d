//! The reference workload as a herdsman worker in Rust, speaking the `framed` protocol.
//!
//! For each request line `{"id":N,"record":{"id":"3","value":"17"}}` on stdin it counts the
//! primes <= value by naive trial division and answers
//! `{"id":N,"output":{"id":3,"value":17,"primes_up_to_value":7},"done":true}`, or
//! `{"id":N,"error":"…","retryable":false}` when id or value is not an integer. It must never
//! crash on a bad record.
//!
//! It flushes only when no more input is already buffered, so a busy pipe costs one write per
//! batch while a lone request is answered at once. That is safe here because answers are cheap
//! (well under a millisecond each) and nothing in a record can make the worker die; a worker
//! that might crash mid-batch should flush after every answer instead, so that herdsman charges
//! the crash to the record that caused it (see docs/protocol.md).
//!
//! Build and run:
//! ```text
//! cargo build --release -p herdsman-cli --example primes_worker
//! herdsman run -i examples/primes/data.csv -w target/release/examples/primes_worker \
//!     --protocol framed -o examples/primes/out/primes.jsonl
//! ```

use std::io::{self, BufRead, BufReader, BufWriter, Write};

use serde_json::Value;

/// Whether `n` is prime, tested by trial division with odd divisors up to its square root.
fn is_prime(n: u64) -> bool {
    if n <= 1 {
        return false;
    }
    if n <= 3 {
        return true;
    }
    if n.is_multiple_of(2) {
        return false;
    }
    let mut i = 3;
    while i * i <= n {
        if n.is_multiple_of(i) {
            return false;
        }
        i += 2;
    }
    true
}

/// Number of primes <= `x`, the deliberately CPU-heavy way.
fn count_primes(x: i64) -> u64 {
    let top = u64::try_from(x).unwrap_or(0);
    (2..=top).filter(|&n| is_prime(n)).count() as u64
}

/// Reads an integer field that arrives as a string (CSV input) or a number (JSONL input).
fn integer_field(record: &Value, name: &str) -> Result<i64, String> {
    match record.get(name) {
        None => Err(format!("row has no '{name}' column")),
        Some(Value::String(text)) => text
            .trim()
            .parse()
            .map_err(|_| format!("{name} must be an integer, got {text:?}")),
        Some(Value::Number(number)) => number
            .as_i64()
            .ok_or_else(|| format!("{name} must be an integer, got {number}")),
        Some(other) => Err(format!("{name} must be an integer, got {other}")),
    }
}

/// Writes the reply lines for one request line.
fn answer(line: &[u8], out: &mut impl Write) -> io::Result<()> {
    let request: Value =
        serde_json::from_slice(line).map_err(|err| protocol_violation(line, &err.to_string()))?;
    let (Some(rid), Some(record)) = (request.get("id"), request.get("record")) else {
        return Err(protocol_violation(
            line,
            "expected an object with 'id' and 'record'",
        ));
    };
    let fields =
        integer_field(record, "id").and_then(|id| Ok((id, integer_field(record, "value")?)));
    // Written by hand (not through serde_json::Value) to keep the fields in this order.
    match fields {
        Ok((id, value)) => writeln!(
            out,
            "{{\"id\":{rid},\"output\":{{\"id\":{id},\"value\":{value},\"primes_up_to_value\":{}}},\"done\":true}}",
            count_primes(value)
        ),
        Err(message) => writeln!(
            out,
            "{{\"id\":{rid},\"error\":{},\"retryable\":false}}",
            Value::String(message)
        ),
    }
}

/// The error for a line that is not a framed request; without its id it cannot be answered.
fn protocol_violation(line: &[u8], why: &str) -> io::Error {
    let shown = String::from_utf8_lossy(&line[..line.len().min(200)]).into_owned();
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("cannot read request {shown:?}: {why}; run this worker with --protocol framed"),
    )
}

fn run() -> io::Result<()> {
    let mut input = BufReader::with_capacity(1 << 16, io::stdin().lock());
    let mut out = BufWriter::with_capacity(1 << 16, io::stdout().lock());
    let mut line = Vec::new();
    loop {
        line.clear();
        if input.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        if !line.iter().all(u8::is_ascii_whitespace) {
            answer(&line, &mut out)?;
        }
        // Flush only when the next read would block, batching replies under load.
        if input.buffer().is_empty() {
            out.flush()?;
        }
    }
    out.flush()
}

fn main() {
    match run() {
        Ok(()) => {}
        // herdsman closed our stdout: it wants no more replies, so stop quietly.
        Err(err) if err.kind() == io::ErrorKind::BrokenPipe => {}
        Err(err) => {
            eprintln!("primes_worker: {err}");
            std::process::exit(2);
        }
    }
}
