//! The server restarts or goes away: calls reconnect with backoff and carry on, nothing
//! committed is lost and nothing is committed twice; a server that stays away past the retry
//! time fails the call with a message that says what to do.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use herdsman_ledger::{Ledger, LedgerError};

use crate::common::{self, commit_of, identity, node, part, plans};

const LEASE: Duration = Duration::from_secs(120);

#[test]
fn a_server_restart_between_calls_loses_nothing() {
    let server = crate::server_or_skip!("a_server_restart_between_calls_loses_nothing");
    let options = common::options("restart");
    let mut ledger = node(&server, &options);
    ledger.open_job(&identity()).unwrap();
    ledger.plan_chunks(&plans(5)).unwrap();
    let c0 = ledger.claim("node-a", LEASE).unwrap().unwrap();
    ledger
        .commit_with_parts(&c0, &commit_of(&c0), &part(&c0))
        .unwrap();
    let c1 = ledger.claim("node-a", LEASE).unwrap().unwrap();

    server.restart().unwrap();

    // The claim made before the restart is still held, and the next calls succeed.
    ledger.heartbeat(&c1, LEASE).unwrap();
    ledger
        .commit_with_parts(&c1, &commit_of(&c1), &part(&c1))
        .unwrap();
    let c2 = ledger.claim("node-a", LEASE).unwrap().unwrap();
    assert_eq!((c2.chunk, c2.attempt), (2, 1));
    server.restart().unwrap();
    ledger
        .commit_with_parts(&c2, &commit_of(&c2), &part(&c2))
        .unwrap();
    let status = ledger.status().unwrap();
    assert_eq!(
        status.commits.iter().map(|c| c.chunk).collect::<Vec<_>>(),
        vec![0, 1, 2]
    );
    assert_eq!(status.totals.counts.records, 300);
}

#[test]
fn a_server_restart_mid_run_loses_nothing() {
    let server = crate::server_or_skip!("a_server_restart_mid_run_loses_nothing");
    let options = common::options("midrun");
    const CHUNKS: u64 = 300;
    let mut first = node(&server, &options);
    first.open_job(&identity()).unwrap();
    first.plan_chunks(&plans(CHUNKS)).unwrap();
    let progress = AtomicU64::new(0);
    let mut restarts_mid_run = 0;
    let per_node: Vec<u64> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..2)
            .map(|i| {
                let (server, options, progress) = (&server, &options, &progress);
                s.spawn(move || {
                    let mut ledger = node(server, options);
                    ledger.open_job(&identity()).unwrap();
                    let owner = format!("node-{i}");
                    let mut n = 0;
                    while let Some(claim) = ledger.claim(&owner, LEASE).unwrap() {
                        // The chunk's work.
                        std::thread::sleep(Duration::from_millis(5));
                        ledger.heartbeat(&claim, LEASE).unwrap();
                        ledger
                            .commit_with_parts(&claim, &commit_of(&claim), &part(&claim))
                            .unwrap();
                        n += 1;
                        progress.fetch_add(1, Ordering::SeqCst);
                    }
                    n
                })
            })
            .collect();
        for at in [30, 120] {
            let deadline = Instant::now() + Duration::from_secs(120);
            while progress.load(Ordering::SeqCst) < at && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if progress.load(Ordering::SeqCst) < CHUNKS {
                restarts_mid_run += 1;
            }
            server.restart().unwrap();
        }
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(
        restarts_mid_run >= 1,
        "the nodes finished before any restart"
    );
    assert_eq!(per_node.iter().sum::<u64>(), CHUNKS, "{per_node:?}");
    let totals = first.totals().unwrap();
    assert_eq!(totals.chunks, CHUNKS);
    assert_eq!(totals.counts.records, CHUNKS * 100);
    let manifest = first.manifest().unwrap();
    assert!(
        manifest.iter().all(|m| m.attempt == 1),
        "no chunk was claimed twice"
    );
}

#[test]
fn a_server_away_past_the_retry_time_fails_clearly_then_recovers() {
    let server =
        crate::server_or_skip!("a_server_away_past_the_retry_time_fails_clearly_then_recovers");
    let options = herdsman_ledger_postgres::PostgresOptions {
        retry_for: Duration::from_secs(1),
        ..common::options("away")
    };
    let mut ledger = node(&server, &options);
    ledger.open_job(&identity()).unwrap();
    ledger.plan_chunks(&plans(2)).unwrap();
    server.stop().unwrap();
    let err = ledger.claim("node-a", LEASE).unwrap_err();
    assert!(matches!(err, LedgerError::Database { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("could not claim a chunk"), "{msg}");
    assert!(msg.contains("check that PostgreSQL is running"), "{msg}");
    assert!(msg.contains("committed chunks are kept"), "{msg}");
    assert!(
        std::error::Error::source(&err).is_some(),
        "the client's error is kept as the source"
    );
    server.start_again().unwrap();
    let c = ledger.claim("node-a", LEASE).unwrap().unwrap();
    assert_eq!((c.chunk, c.attempt), (0, 1));
}
