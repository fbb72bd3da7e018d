//! Helpers shared by the tests: a server, ledgers on it, plans and commits.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use herdsman_ledger::{ChunkCommit, ChunkPlan, Claim, Counts, JobIdentity, Position, Token};
use herdsman_ledger_postgres::test_server::TestServer;
use herdsman_ledger_postgres::{PostgresLedger, PostgresOptions};

pub use herdsman_ledger_postgres::test_server;

/// Starts a throwaway server, or skips the test (returns from it) when PostgreSQL is missing
/// and `CI` is not set.
#[macro_export]
macro_rules! server_or_skip {
    ($name:expr) => {
        match $crate::common::test_server::TestServer::start_or_skip($name) {
            Some(server) => server,
            None => return,
        }
    };
}

/// Options naming a schema unique to this test process.
pub fn options(job: &str) -> PostgresOptions {
    static N: AtomicU64 = AtomicU64::new(0);
    PostgresOptions {
        schema: format!("t{}", N.fetch_add(1, Ordering::Relaxed)),
        job: job.into(),
        retry_for: Duration::from_secs(60),
        ..PostgresOptions::default()
    }
}

/// A ledger ("node") on `server` with `options`.
pub fn node(server: &TestServer, options: &PostgresOptions) -> PostgresLedger {
    PostgresLedger::connect(&server.url(), options.clone()).expect("connect to the test server")
}

pub fn identity() -> JobIdentity {
    JobIdentity::new()
        .with("input.0.path", "/data/in.csv")
        .with("chunk_records", "100")
}

pub fn position(k: u64) -> Position {
    Position {
        file_index: 0,
        seq: k * 100,
        token: Token::new(&(k * 4096).to_le_bytes()).unwrap(),
    }
}

pub fn plans(n: u64) -> Vec<ChunkPlan> {
    (0..n)
        .map(|k| ChunkPlan {
            chunk: k,
            start: position(k),
            end: position(k + 1),
        })
        .collect()
}

/// The commit of a claimed chunk: 100 records, no shared-file offsets (distributed mode).
pub fn commit_of(claim: &Claim) -> ChunkCommit {
    ChunkCommit {
        chunk: claim.chunk,
        start: claim.start,
        end: claim.end,
        counts: Counts {
            records: 100,
            ok: 99,
            failed: 1,
            outputs: 99,
            ..Counts::default()
        },
        output_end: 0,
        failures_end: 0,
    }
}

/// The name of the part an attempt writes.
pub fn part(claim: &Claim) -> Vec<String> {
    vec![format!("part-{}-{}", claim.chunk, claim.attempt)]
}
