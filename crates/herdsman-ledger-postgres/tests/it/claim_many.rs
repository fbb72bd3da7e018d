//! Claims grouped: `claim_many` takes several chunks in one transaction, and
//! `commit_batch_claiming` claims as many next chunks as it is allowed in the batch's
//! transaction, so that a node does not pay a claim transaction per chunk.

use std::time::Duration;

use herdsman_ledger::{Claim, Ledger};
use herdsman_ledger_postgres::ChunkState;

use crate::common::{self, commit_of, identity, node, part, plans};

const LEASE: Duration = Duration::from_secs(120);

#[test]
fn claim_many_takes_several_chunks_in_order_and_none_twice() {
    let server = crate::server_or_skip!("claim_many_takes_several_chunks_in_order_and_none_twice");
    let options = common::options("claim_many");
    let mut a = node(&server, &options);
    a.open_job(&identity()).unwrap();
    a.plan_chunks(&plans(5)).unwrap();
    let first = a.claim_many("node-a", LEASE, 2).unwrap();
    assert_eq!(
        first
            .iter()
            .map(|c| (c.chunk, c.attempt))
            .collect::<Vec<_>>(),
        vec![(0, 1), (1, 1)]
    );
    let mut b = node(&server, &options);
    b.open_job(&identity()).unwrap();
    let second = b.claim_many("node-b", LEASE, 10).unwrap();
    assert_eq!(
        second.iter().map(|c| c.chunk).collect::<Vec<_>>(),
        vec![2, 3, 4],
        "only the chunks nobody holds, each once"
    );
    assert!(a.claim_many("node-a", LEASE, 2).unwrap().is_empty());
    let rows = a.chunk_rows().unwrap();
    assert!(rows.iter().all(|r| r.state == ChunkState::Claimed));
    assert_eq!(rows[1].owner.as_deref(), Some("node-a"));
    assert_eq!(rows[4].owner.as_deref(), Some("node-b"));
}

#[test]
fn a_batch_commit_claims_as_many_next_chunks_as_it_is_allowed() {
    let server =
        crate::server_or_skip!("a_batch_commit_claims_as_many_next_chunks_as_it_is_allowed");
    let options = common::options("batch_claiming");
    let mut a = node(&server, &options);
    a.open_job(&identity()).unwrap();
    a.plan_chunks(&plans(6)).unwrap();
    let held: Vec<Claim> = a.claim_many("node-a", LEASE, 3).unwrap();
    assert_eq!(held.len(), 3);
    let batch: Vec<_> = held
        .iter()
        .map(|c| (c.clone(), commit_of(c), part(c)))
        .collect();
    let (results, next) = a
        .commit_batch_claiming(&batch, Some(("node-a", LEASE)), 2)
        .unwrap();
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(
        next.iter()
            .map(|c| (c.chunk, c.owner.as_str()))
            .collect::<Vec<_>>(),
        vec![(3, "node-a"), (4, "node-a")]
    );
    let rows = a.chunk_rows().unwrap();
    let states: Vec<ChunkState> = rows.iter().map(|r| r.state).collect();
    assert_eq!(
        states,
        vec![
            ChunkState::Committed,
            ChunkState::Committed,
            ChunkState::Committed,
            ChunkState::Claimed,
            ChunkState::Claimed,
            ChunkState::Pending
        ]
    );
}

#[test]
fn all_committed_says_whether_any_chunk_is_still_open() {
    let server = crate::server_or_skip!("all_committed_says_whether_any_chunk_is_still_open");
    let options = common::options("all_committed");
    let mut a = node(&server, &options);
    a.open_job(&identity()).unwrap();
    a.plan_chunks(&plans(3)).unwrap();
    // Waiting, then claimed: open.
    assert!(!a.all_committed().unwrap());
    let held = a.claim_many("node-a", LEASE, 3).unwrap();
    assert!(!a.all_committed().unwrap());
    for c in &held[..2] {
        a.commit_with_parts(c, &commit_of(c), &part(c)).unwrap();
        assert!(!a.all_committed().unwrap(), "chunk 2 is still claimed");
    }
    // The last commit, seen from another connection to the same job.
    a.commit_with_parts(&held[2], &commit_of(&held[2]), &part(&held[2]))
        .unwrap();
    let b = node(&server, &options);
    assert!(b.all_committed().unwrap());
    assert_eq!(b.totals().unwrap().chunks, 3);
}

#[test]
fn is_finished_says_what_status_says_and_mark_finished_announces_it() {
    let server =
        crate::server_or_skip!("is_finished_says_what_status_says_and_mark_finished_announces_it");
    let options = common::options("is_finished");
    let mut a = node(&server, &options);
    // No job yet: not finished.
    assert!(!a.is_finished().unwrap());
    a.open_job(&identity()).unwrap();
    a.plan_chunks(&plans(2)).unwrap();
    let held = a.claim_many("node-a", LEASE, 2).unwrap();
    for c in &held {
        a.commit_with_parts(c, &commit_of(c), &part(c)).unwrap();
    }
    // Every chunk committed, but the output not yet published.
    assert!(!a.is_finished().unwrap());
    assert!(!a.status().unwrap().finished());
    let mut listener = postgres::Client::connect(&server.url(), postgres::NoTls).unwrap();
    listener
        .batch_execute(&format!(
            "LISTEN {}",
            herdsman_ledger_postgres::FINISHED_CHANNEL
        ))
        .unwrap();
    a.mark_finished("{}").unwrap();
    let b = node(&server, &options);
    assert!(b.is_finished().unwrap());
    assert!(b.status().unwrap().finished());
    // Marking the job finished announced it, with the job's name.
    use postgres::fallible_iterator::FallibleIterator;
    let heard = listener
        .notifications()
        .timeout_iter(Duration::from_secs(30))
        .next()
        .unwrap()
        .expect("the end of the job is announced");
    assert_eq!(heard.channel(), herdsman_ledger_postgres::FINISHED_CHANNEL);
    assert_eq!(heard.payload(), options.job);
}
