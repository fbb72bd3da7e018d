//! Measures how many durable chunk commits per second the SQLite ledger sustains in a directory
//! (default: a temporary one). Each commit is one fsynced transaction, so the number mostly
//! reflects the disk's fsync latency.
//!
//! `cargo run --release -p herdsman-ledger --example commit_rate -- [DIR] [COMMITS] [BATCH]`
//! (an empty DIR means a temporary directory; BATCH chunks per `commit_chunks` transaction,
//! default 1). The ledger in DIR is reset first.

use std::time::Instant;

use herdsman_ledger::{
    ChunkCommit, Counts, JobIdentity, Ledger, Position, SqliteLedger, StateDir, Token,
};

/// A position token as a text format might make one: a byte offset and a line.
fn tok(offset: u64, line: u64) -> Token {
    let mut b = offset.to_le_bytes().to_vec();
    b.extend(line.to_le_bytes());
    Token::new(&b).unwrap()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let tmp = tempfile::tempdir()?;
    let dir = match args.next() {
        Some(d) if !d.is_empty() => std::path::PathBuf::from(d),
        _ => tmp.path().join("state"),
    };
    let n: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(2000);
    let batch: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(1);

    let state = StateDir::open(&dir)?;
    let mut ledger = SqliteLedger::open(&state)?;
    ledger.reset()?;
    ledger.open_job(&JobIdentity::new().with("bench", "commit_rate"))?;
    let started = Instant::now();
    let at = |k: u64| Position {
        file_index: 0,
        seq: k * 100,
        token: tok(k * 4096, k * 100),
    };
    let commits: Vec<ChunkCommit> = (0..n)
        .map(|k| ChunkCommit {
            chunk: k,
            start: at(k),
            end: at(k + 1),
            counts: Counts {
                records: 100,
                ok: 100,
                failed: 0,
                filtered: 0,
                outputs: 100,
                retries: 0,
            },
            output_end: (k + 1) * 8192,
            failures_end: 0,
        })
        .collect();
    for group in commits.chunks(batch.max(1)) {
        ledger.commit_chunks(group)?;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{n} commits in batches of {batch} in {secs:.3} s: {:.0} chunks/s, {:.1} µs per chunk ({})",
        n as f64 / secs,
        secs * 1e6 / n as f64,
        dir.display()
    );
    Ok(())
}
