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

/// Commits of three chunks with values of their own: counts, offsets, and one or two
/// parts with names that need escaping.
fn varied(claims: &[Claim], output_ends: [u64; 3]) -> Vec<(Claim, ChunkCommit, Vec<String>)> {
    claims
        .iter()
        .zip(output_ends)
        .enumerate()
        .map(|(i, (c, end))| {
            let mut commit = commit_of(c);
            commit.counts.records = 10 + i as u64;
            commit.counts.retries = i as u64;
            commit.output_end = end;
            commit.failures_end = 7 * i as u64;
            let mut parts = vec![format!("seg-\"q\"-{i}@0-{end}")];
            if i == 1 {
                parts.push("seg-é,{x}-1.failures@0-7".to_string());
            }
            (c.clone(), commit, parts)
        })
        .collect()
}

#[test]
fn a_batch_stores_every_value_as_commits_one_at_a_time_do() {
    let server = crate::server_or_skip!("a_batch_stores_every_value_as_commits_one_at_a_time_do");
    let mut stored = Vec::new();
    for (job, batched) in [("one_at_a_time", false), ("batched", true)] {
        let options = common::options(job);
        let mut l = node(&server, &options);
        l.open_job(&identity()).unwrap();
        l.plan_chunks(&plans(3)).unwrap();
        let held = l.claim_many("node-a", LEASE, 3).unwrap();
        let batch = varied(&held, [5, 9, 30]);
        if batched {
            let (results, _) = l.commit_batch(&batch, None).unwrap();
            assert!(results.iter().all(Result::is_ok), "{results:?}");
        } else {
            for (claim, c, parts) in &batch {
                l.commit_with_parts(claim, c, parts).unwrap();
            }
        }
        let status = l.status().unwrap();
        let manifest: Vec<Vec<String>> =
            l.manifest().unwrap().into_iter().map(|c| c.parts).collect();
        stored.push((status.commits, status.totals, manifest));
    }
    assert_eq!(stored[0], stored[1]);
    assert_eq!(
        stored[1].2[1],
        ["seg-\"q\"-1@0-9", "seg-é,{x}-1.failures@0-7"]
    );
}

#[test]
fn a_batch_whose_offsets_go_down_refuses_the_chunk_that_goes_back() {
    let server =
        crate::server_or_skip!("a_batch_whose_offsets_go_down_refuses_the_chunk_that_goes_back");
    let options = common::options("backwards");
    let mut l = node(&server, &options);
    l.open_job(&identity()).unwrap();
    l.plan_chunks(&plans(3)).unwrap();
    let held = l.claim_many("node-a", LEASE, 3).unwrap();
    // Chunk 2's output ends before chunk 1's: refused as one commit after the other would.
    let (results, _) = l.commit_batch(&varied(&held, [5, 9, 6]), None).unwrap();
    assert!(results[0].is_ok() && results[1].is_ok(), "{results:?}");
    assert!(
        matches!(
            results[2],
            Err(LedgerError::OffsetsWentBackwards { chunk: 2, .. })
        ),
        "{results:?}"
    );
    let rows = l.chunk_rows().unwrap();
    assert_eq!(rows[2].state, ChunkState::Claimed);
}
