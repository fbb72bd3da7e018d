//! Measures the PostgreSQL ledger alone: plans CHUNKS chunks, then CLIENTS nodes (threads, each
//! with its own connection) claim and commit them until none is left, and prints claims plus
//! commits per second.
//!
//! ```text
//! cargo run --release -p herdsman-ledger-postgres --features test-support --example claim_rate -- \
//!     [URL] [CHUNKS] [CLIENTS] [durable|fast] [combined|separate]
//! ```
//!
//! `combined` (the default) commits each chunk and claims the next in one call
//! ([`PostgresLedger::commit_and_claim`], as a node does); `separate` makes a claim and a
//! commit call per chunk, for comparison.
//!
//! URL `""` (the default) starts a throwaway server: `durable` (the default) keeps PostgreSQL's
//! own settings, so every commit waits for its WAL fsync; `fast` turns fsync off to show the
//! ledger's own cost.

use std::time::{Duration, Instant};

use herdsman_ledger::{ChunkCommit, ChunkPlan, Counts, JobIdentity, Ledger, Position};
use herdsman_ledger_postgres::test_server::{TestServer, FAST_SETTINGS};
use herdsman_ledger_postgres::{PostgresLedger, PostgresOptions};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let url = args.first().cloned().unwrap_or_default();
    let chunks: u64 = args.get(1).map_or(10_000, |s| s.parse().expect("CHUNKS"));
    let clients: usize = args.get(2).map_or(1, |s| s.parse().expect("CLIENTS"));
    let fast = match args.get(3).map_or("durable", String::as_str) {
        "durable" => false,
        "fast" => true,
        other => panic!("expected durable or fast, got {other}"),
    };
    let combined = match args.get(4).map_or("combined", String::as_str) {
        "combined" => true,
        "separate" => false,
        other => panic!("expected combined or separate, got {other}"),
    };
    let _server;
    let url = if url.is_empty() {
        let server = TestServer::start_with(if fast { FAST_SETTINGS } else { &[] })
            .unwrap_or_else(|e| panic!("could not start a throwaway PostgreSQL: {e}"));
        let url = server.url();
        _server = server;
        url
    } else {
        url
    };
    let options = PostgresOptions {
        schema: "herdsman_bench".into(),
        job: "claim_rate".into(),
        ..PostgresOptions::default()
    };
    let id = JobIdentity::new().with("bench", "claim_rate");
    let mut ledger = PostgresLedger::connect(&url, options.clone()).expect("connect");
    ledger.reset().expect("reset");
    ledger.open_job(&id).expect("open_job");
    let plans: Vec<ChunkPlan> = (0..chunks)
        .map(|k| ChunkPlan {
            chunk: k,
            start: Position {
                seq: k * 100,
                ..Position::default()
            },
            end: Position {
                seq: k * 100 + 100,
                ..Position::default()
            },
        })
        .collect();
    let t = Instant::now();
    ledger.plan_chunks(&plans).expect("plan");
    let plan_time = t.elapsed();

    let t = Instant::now();
    let per_client: Vec<(u64, Duration, Duration)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..clients)
            .map(|i| {
                let (url, options, id) = (&url, options.clone(), &id);
                s.spawn(move || {
                    let mut node = PostgresLedger::connect(url, options).expect("connect");
                    node.open_job(id).expect("open_job");
                    let owner = format!("bench-{i}");
                    let mut n = 0u64;
                    let (mut in_claim, mut in_commit) = (Duration::ZERO, Duration::ZERO);
                    let lease = Duration::from_secs(60);
                    let t = Instant::now();
                    let mut next = node.claim(&owner, lease).expect("claim");
                    in_claim += t.elapsed();
                    while let Some(claim) = next {
                        let c = ChunkCommit {
                            chunk: claim.chunk,
                            start: claim.start,
                            end: claim.end,
                            counts: Counts {
                                records: 100,
                                ok: 100,
                                outputs: 100,
                                ..Counts::default()
                            },
                            output_end: 0,
                            failures_end: 0,
                        };
                        let parts = [format!("part-{}-{}", claim.chunk, claim.attempt)];
                        let t = Instant::now();
                        if combined {
                            next = node
                                .commit_and_claim(&claim, &c, &parts, &owner, lease)
                                .expect("commit and claim");
                            in_commit += t.elapsed();
                        } else {
                            node.commit_with_parts(&claim, &c, &parts).expect("commit");
                            in_commit += t.elapsed();
                            let t = Instant::now();
                            next = node.claim(&owner, lease).expect("claim");
                            in_claim += t.elapsed();
                        }
                        n += 1;
                    }
                    (n, in_claim, in_commit)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("client"))
            .collect()
    });
    let done: u64 = per_client.iter().map(|p| p.0).sum();
    let claim_us = per_client
        .iter()
        .map(|p| p.1)
        .sum::<Duration>()
        .as_secs_f64()
        * 1e6
        / chunks as f64;
    let commit_us = per_client
        .iter()
        .map(|p| p.2)
        .sum::<Duration>()
        .as_secs_f64()
        * 1e6
        / chunks as f64;
    let elapsed = t.elapsed();
    let totals = ledger.totals().expect("totals");
    assert_eq!(done, chunks, "every chunk claimed and committed once");
    assert_eq!(totals.chunks, chunks);
    assert_eq!(totals.counts.records, chunks * 100);
    println!(
        "{chunks} chunks, {clients} client(s), {}, {}: planned in {:.1} ms; claim+commit {:.2} s = {:.0} chunks/s (claims {claim_us:.0} us, commits {commit_us:.0} us per chunk)",
        if fast { "fsync off" } else { "durable (fsync on)" },
        if combined { "commit+claim in one call" } else { "separate claim and commit calls" },
        plan_time.as_secs_f64() * 1e3,
        elapsed.as_secs_f64(),
        chunks as f64 / elapsed.as_secs_f64(),
    );
}
