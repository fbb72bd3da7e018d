//! `commit_batch`: several chunks committed in one transaction, each fenced by its own claim.
//! A refused chunk (a stale claim, a finished job) changes nothing and keeps none of the
//! others from committing; the next chunk is claimed only when one committed.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use herdsman_ledger::{ChunkCommit, Claim, Ledger, LedgerError, ManualClock};
use herdsman_ledger_postgres::{ChunkParts, ChunkState};

use crate::common::{self, commit_of, identity, node, part, plans};

const LEASE: Duration = Duration::from_secs(120);

fn batch_of(claims: &[Claim]) -> Vec<(Claim, ChunkCommit, Vec<String>)> {
    claims
        .iter()
        .map(|c| (c.clone(), commit_of(c), part(c)))
        .collect()
}

#[test]
fn a_batch_with_one_stale_chunk_commits_the_others_and_claims_the_next() {
    let server = crate::server_or_skip!(
        "a_batch_with_one_stale_chunk_commits_the_others_and_claims_the_next"
    );
    let options = common::options("batch");
    let clock = Arc::new(ManualClock::at(SystemTime::now()));
    let mut zombie = node(&server, &options).with_clock(clock.clone());
    zombie.open_job(&identity()).unwrap();
    zombie.plan_chunks(&plans(4)).unwrap();
    let held: Vec<Claim> = (0..3)
        .map(|_| {
            zombie
                .claim("node-a", Duration::from_secs(1))
                .unwrap()
                .unwrap()
        })
        .collect();
    // Every lease of node-a ran out; node-b takes chunk 0 over, chunks 1 and 2 stay node-a's.
    clock.advance(Duration::from_secs(5));
    let mut taker = node(&server, &options).with_clock(clock.clone());
    taker.open_job(&identity()).unwrap();
    let new = taker.claim("node-b", LEASE).unwrap().unwrap();
    assert_eq!((new.chunk, new.attempt), (0, 2));

    let (results, next) = zombie
        .commit_batch(&batch_of(&held), Some(("node-a", LEASE)))
        .unwrap();
    assert_eq!(results.len(), 3);
    match &results[0] {
        Err(LedgerError::StaleClaim {
            chunk: 0,
            attempt: 1,
        }) => {}
        other => panic!("expected StaleClaim for chunk 0 attempt 1, got {other:?}"),
    }
    assert!(results[1].is_ok(), "{:?}", results[1]);
    assert!(results[2].is_ok(), "{:?}", results[2]);
    let next = next.expect("chunk 3 is pending");
    assert_eq!(
        (next.chunk, next.attempt, next.owner.as_str()),
        (3, 1, "node-a")
    );

    let rows = zombie.chunk_rows().unwrap();
    assert_eq!(rows[0].state, ChunkState::Claimed);
    assert_eq!(rows[0].owner.as_deref(), Some("node-b"));
    assert_eq!(rows[1].state, ChunkState::Committed);
    assert_eq!(rows[2].state, ChunkState::Committed);
    assert_eq!(rows[3].state, ChunkState::Claimed);
    assert_eq!(rows[3].owner.as_deref(), Some("node-a"));
    // The refused chunk's part is never named; the others' are.
    assert_eq!(
        zombie.manifest().unwrap(),
        vec![
            ChunkParts {
                chunk: 1,
                attempt: 1,
                parts: vec!["part-1-1".into()]
            },
            ChunkParts {
                chunk: 2,
                attempt: 1,
                parts: vec!["part-2-1".into()]
            },
        ]
    );

    // The live holder of chunk 0 still commits it.
    taker
        .commit_with_parts(&new, &commit_of(&new), &part(&new))
        .unwrap();
    assert_eq!(zombie.totals().unwrap().chunks, 3);
}

#[test]
fn a_batch_refused_whole_claims_nothing() {
    let server = crate::server_or_skip!("a_batch_refused_whole_claims_nothing");
    let options = common::options("batch-finished");
    let mut ledger = node(&server, &options);
    ledger.open_job(&identity()).unwrap();
    ledger.plan_chunks(&plans(3)).unwrap();
    let held: Vec<Claim> = (0..2)
        .map(|_| ledger.claim("node-a", LEASE).unwrap().unwrap())
        .collect();
    ledger.mark_finished("{}").unwrap();
    let (results, next) = ledger
        .commit_batch(&batch_of(&held), Some(("node-a", LEASE)))
        .unwrap();
    assert!(
        next.is_none(),
        "a batch that committed nothing claims nothing"
    );
    for (r, c) in results.iter().zip(&held) {
        match r {
            Err(LedgerError::AlreadyFinished { chunk }) if *chunk == c.chunk => {}
            other => panic!(
                "expected AlreadyFinished for chunk {}, got {other:?}",
                c.chunk
            ),
        }
    }
    let rows = ledger.chunk_rows().unwrap();
    assert_eq!(rows[2].state, ChunkState::Pending);
    assert_eq!(ledger.totals().unwrap().chunks, 0);
}
