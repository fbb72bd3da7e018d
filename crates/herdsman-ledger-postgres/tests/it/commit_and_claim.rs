//! `commit_and_claim`: a chunk's commit and the claim of the next in one transaction. It
//! hands out every chunk once, never the chunk it just committed, and a refused commit (a
//! stale claim, a finished job) claims nothing.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use herdsman_ledger::{Claim, Ledger, LedgerError, ManualClock};
use herdsman_ledger_postgres::{ChunkParts, ChunkState};

use crate::common::{self, commit_of, identity, node, part, plans};

const LEASE: Duration = Duration::from_secs(120);

#[test]
fn each_commit_claims_the_next_chunk_until_none_is_left() {
    let server = crate::server_or_skip!("each_commit_claims_the_next_chunk_until_none_is_left");
    let options = common::options("chain");
    let mut ledger = node(&server, &options);
    ledger.open_job(&identity()).unwrap();
    ledger.plan_chunks(&plans(3)).unwrap();
    let mut next = ledger.claim("node-a", LEASE).unwrap();
    let mut seen = Vec::new();
    while let Some(claim) = next {
        seen.push((claim.chunk, claim.attempt));
        next = ledger
            .commit_and_claim(&claim, &commit_of(&claim), &part(&claim), "node-a", LEASE)
            .unwrap();
        if let Some(n) = &next {
            // The next claim is held, under a lease, by the node that asked for it.
            let rows = ledger.chunk_rows().unwrap();
            let row = &rows[n.chunk as usize];
            assert_eq!(row.state, ChunkState::Claimed);
            assert_eq!(row.owner.as_deref(), Some("node-a"));
            assert_eq!(Some(n.lease_expires_at), row.lease_expires_at);
            assert_eq!(rows[claim.chunk as usize].state, ChunkState::Committed);
        }
    }
    assert_eq!(seen, vec![(0, 1), (1, 1), (2, 1)]);
    let totals = ledger.totals().unwrap();
    assert_eq!(totals.chunks, 3);
    assert_eq!(totals.counts.records, 300);
    let manifest = ledger.manifest().unwrap();
    assert_eq!(
        manifest[1],
        ChunkParts {
            chunk: 1,
            attempt: 1,
            parts: vec!["part-1-1".into()]
        }
    );
    assert!(ledger.claim("late", LEASE).unwrap().is_none());
}

#[test]
fn the_committed_chunk_is_never_claimed_again_even_with_its_lease_run_out() {
    let server = crate::server_or_skip!(
        "the_committed_chunk_is_never_claimed_again_even_with_its_lease_run_out"
    );
    let options = common::options("expired");
    let clock = Arc::new(ManualClock::at(SystemTime::now()));
    let mut ledger = node(&server, &options).with_clock(clock.clone());
    ledger.open_job(&identity()).unwrap();
    ledger.plan_chunks(&plans(2)).unwrap();
    let c0 = ledger
        .claim("node-a", Duration::from_secs(1))
        .unwrap()
        .unwrap();
    // The lease ran out but nobody took the chunk over: the claim is still current.
    clock.advance(Duration::from_secs(5));
    let next = ledger
        .commit_and_claim(&c0, &commit_of(&c0), &part(&c0), "node-a", LEASE)
        .unwrap()
        .expect("chunk 1 is pending");
    assert_eq!((next.chunk, next.attempt), (1, 1));
    let rows = ledger.chunk_rows().unwrap();
    assert_eq!(rows[0].state, ChunkState::Committed);
    assert_eq!(rows[0].attempt, 1);
    let last = ledger
        .commit_and_claim(&next, &commit_of(&next), &part(&next), "node-a", LEASE)
        .unwrap();
    assert!(last.is_none(), "nothing is left to claim: {last:?}");
    assert_eq!(ledger.totals().unwrap().chunks, 2);
}

#[test]
fn a_stale_claim_is_refused_and_claims_nothing() {
    let server = crate::server_or_skip!("a_stale_claim_is_refused_and_claims_nothing");
    let options = common::options("stale");
    let clock = Arc::new(ManualClock::at(SystemTime::now()));
    let mut zombie = node(&server, &options).with_clock(clock.clone());
    zombie.open_job(&identity()).unwrap();
    zombie.plan_chunks(&plans(3)).unwrap();
    let old = zombie
        .claim("node-a", Duration::from_secs(1))
        .unwrap()
        .unwrap();
    clock.advance(Duration::from_secs(5));
    let mut taker = node(&server, &options).with_clock(clock.clone());
    taker.open_job(&identity()).unwrap();
    let new = taker.claim("node-b", LEASE).unwrap().unwrap();
    assert_eq!((new.chunk, new.attempt), (0, 2));

    match zombie.commit_and_claim(&old, &commit_of(&old), &part(&old), "node-a", LEASE) {
        Err(LedgerError::StaleClaim {
            chunk: 0,
            attempt: 1,
        }) => {}
        other => panic!("expected StaleClaim for attempt 1, got {other:?}"),
    }
    let rows = zombie.chunk_rows().unwrap();
    assert_eq!(rows[0].state, ChunkState::Claimed);
    assert_eq!(rows[0].owner.as_deref(), Some("node-b"));
    for row in &rows[1..] {
        assert_eq!(
            row.state,
            ChunkState::Pending,
            "the refused call claimed nothing"
        );
        assert_eq!(row.attempt, 0);
    }
    assert_eq!(zombie.totals().unwrap().chunks, 0);

    // The live holder commits and claims the next chunk.
    let next = taker
        .commit_and_claim(&new, &commit_of(&new), &part(&new), "node-b", LEASE)
        .unwrap()
        .unwrap();
    assert_eq!((next.chunk, next.attempt), (1, 1));
    assert_eq!(
        zombie.manifest().unwrap(),
        vec![ChunkParts {
            chunk: 0,
            attempt: 2,
            parts: vec!["part-0-2".into()]
        }]
    );
}

#[test]
fn a_commit_after_the_job_finished_is_refused_and_claims_nothing() {
    let server =
        crate::server_or_skip!("a_commit_after_the_job_finished_is_refused_and_claims_nothing");
    let options = common::options("finished");
    let mut ledger = node(&server, &options);
    ledger.open_job(&identity()).unwrap();
    ledger.plan_chunks(&plans(2)).unwrap();
    let c0 = ledger.claim("node-a", LEASE).unwrap().unwrap();
    ledger.mark_finished("{}").unwrap();
    match ledger.commit_and_claim(&c0, &commit_of(&c0), &part(&c0), "node-a", LEASE) {
        Err(LedgerError::AlreadyFinished { chunk: 0 }) => {}
        other => panic!("expected AlreadyFinished, got {other:?}"),
    }
    let rows = ledger.chunk_rows().unwrap();
    assert_eq!(rows[1].state, ChunkState::Pending);
    assert_eq!(rows[1].attempt, 0);
}

#[test]
fn concurrent_nodes_chaining_commits_and_claims_never_share_a_chunk() {
    let server =
        crate::server_or_skip!("concurrent_nodes_chaining_commits_and_claims_never_share_a_chunk");
    let options = common::options("chained");
    const CHUNKS: u64 = 400;
    const NODES: usize = 4;
    let mut first = node(&server, &options);
    first.open_job(&identity()).unwrap();
    first.plan_chunks(&plans(CHUNKS)).unwrap();
    let claimed: Vec<Vec<Claim>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..NODES)
            .map(|i| {
                let (server, options) = (&server, &options);
                s.spawn(move || {
                    let mut ledger = node(server, options);
                    ledger.open_job(&identity()).unwrap();
                    let owner = format!("node-{i}");
                    let mut mine = Vec::new();
                    let mut next = ledger.claim(&owner, LEASE).unwrap();
                    while let Some(claim) = next {
                        next = ledger
                            .commit_and_claim(
                                &claim,
                                &commit_of(&claim),
                                &part(&claim),
                                &owner,
                                LEASE,
                            )
                            .unwrap();
                        mine.push(claim);
                    }
                    mine
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut by_chunk: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for claim in claimed.iter().flatten() {
        assert_eq!(claim.attempt, 1, "no chunk was claimed twice: {claim:?}");
        by_chunk
            .entry(claim.chunk)
            .or_default()
            .push(claim.owner.clone());
    }
    assert_eq!(by_chunk.len() as u64, CHUNKS, "every chunk was claimed");
    for (chunk, owners) in &by_chunk {
        assert_eq!(owners.len(), 1, "chunk {chunk} went to {owners:?}");
    }
    let totals = first.totals().unwrap();
    assert_eq!(totals.chunks, CHUNKS);
    assert_eq!(totals.counts.records, CHUNKS * 100);
}
