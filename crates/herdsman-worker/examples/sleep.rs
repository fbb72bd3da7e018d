//! An I/O-bound worker: sleeps 10 ms per record (or the milliseconds given as its first
//! argument) and answers with the record itself, over the `lines` protocol. It stands for a
//! worker that waits on a service, and starts in about a millisecond, so that a benchmark
//! with it measures herdsman rather than an interpreter's start-up (`bench/distributed.sh`
//! runs it beside a Python worker that does the same).
//!
//! ```sh
//! cargo build --release -p herdsman-worker --example sleep
//! seq 1000 > in.txt
//! herdsman run -i in.txt -w target/release/examples/sleep -j 4 -o out.txt
//! ```

use std::time::Duration;

use herdsman_worker::serve_lines;
use serde_json::Value;

fn main() -> std::io::Result<()> {
    let ms = match std::env::args().nth(1) {
        None => 10,
        Some(a) => a.parse::<u64>().map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("the first argument is the milliseconds to sleep per record, not {a:?} ({e}); give e.g. 10"),
            )
        })?,
    };
    let pause = Duration::from_millis(ms);
    serve_lines(
        std::io::stdin().lock(),
        std::io::stdout().lock(),
        |record: Value| {
            std::thread::sleep(pause);
            Ok(record)
        },
    )
}
