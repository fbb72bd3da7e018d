//! Several nodes (ledgers with their own connections) on one job, with leases on the
//! database clock: concurrent claims never hand out a chunk twice; an expired lease is taken
//! over and the old holder, a zombie, can neither heartbeat nor commit.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use herdsman_ledger::{Claim, Ledger, LedgerError, Opened};
use herdsman_ledger_postgres::ChunkParts;

use crate::common::{self, commit_of, identity, node, part, plans};

#[test]
fn concurrent_nodes_never_get_the_same_chunk() {
    let server = crate::server_or_skip!("concurrent_nodes_never_get_the_same_chunk");
    let options = common::options("concurrent");
    const CHUNKS: u64 = 400;
    const NODES: usize = 4;
    let mut first = node(&server, &options);
    assert_eq!(first.open_job(&identity()).unwrap(), Opened::Fresh);
    let claimed: Vec<Vec<Claim>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..NODES)
            .map(|i| {
                let (server, options) = (&server, &options);
                s.spawn(move || {
                    let mut ledger = node(server, options);
                    ledger.open_job(&identity()).unwrap();
                    // Every node plans the same chunks, as they would.
                    ledger.plan_chunks(&plans(CHUNKS)).unwrap();
                    let mut mine = Vec::new();
                    let owner = format!("node-{i}");
                    while let Some(claim) = ledger.claim(&owner, Duration::from_secs(120)).unwrap()
                    {
                        ledger
                            .commit_with_parts(&claim, &commit_of(&claim), &part(&claim))
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
    let manifest = first.manifest().unwrap();
    assert_eq!(manifest.len() as u64, CHUNKS);
    for (k, m) in manifest.iter().enumerate() {
        assert_eq!(
            *m,
            ChunkParts {
                chunk: k as u64,
                attempt: 1,
                parts: vec![format!("part-{k}-1")]
            }
        );
    }
    assert!(first
        .claim("late", Duration::from_secs(1))
        .unwrap()
        .is_none());
}

#[test]
fn an_expired_lease_is_taken_over_and_the_zombie_is_fenced_off() {
    let server =
        crate::server_or_skip!("an_expired_lease_is_taken_over_and_the_zombie_is_fenced_off");
    let options = common::options("zombie");
    let mut zombie = node(&server, &options);
    zombie.open_job(&identity()).unwrap();
    zombie.plan_chunks(&plans(1)).unwrap();
    let old = zombie
        .claim("node-a", Duration::from_millis(300))
        .unwrap()
        .expect("chunk 0 is pending");
    assert_eq!((old.chunk, old.attempt), (0, 1));

    // node-a pauses; node-b waits for the lease to run out on the database clock.
    let mut taker = node(&server, &options);
    taker.open_job(&identity()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let new = loop {
        if let Some(c) = taker.claim("node-b", Duration::from_secs(120)).unwrap() {
            break c;
        }
        assert!(Instant::now() < deadline, "the 300 ms lease never ran out");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!((new.chunk, new.attempt), (0, 2));
    assert!(
        new.lease_expires_at > old.lease_expires_at,
        "the new lease ends later"
    );

    // node-a resumes: its heartbeat and its commit are refused, and change nothing.
    let stale = |r: Result<(), LedgerError>| match r {
        Err(LedgerError::StaleClaim {
            chunk: 0,
            attempt: 1,
        }) => {}
        other => panic!("expected StaleClaim for attempt 1, got {other:?}"),
    };
    stale(zombie.heartbeat(&old, Duration::from_secs(30)).map(drop));
    stale(zombie.commit_with_parts(&old, &commit_of(&old), &part(&old)));
    stale(zombie.release(&old));
    assert_eq!(zombie.totals().unwrap().chunks, 0);

    // node-b's claim is intact.
    taker.heartbeat(&new, Duration::from_secs(120)).unwrap();
    taker
        .commit_with_parts(&new, &commit_of(&new), &part(&new))
        .unwrap();
    stale(zombie.commit_with_parts(&old, &commit_of(&old), &part(&old)));
    assert_eq!(
        zombie.manifest().unwrap(),
        vec![ChunkParts {
            chunk: 0,
            attempt: 2,
            parts: vec!["part-0-2".into()]
        }],
        "only the live attempt's part is referenced"
    );
}

#[test]
fn a_node_with_another_identity_is_refused_and_changes_nothing() {
    let server =
        crate::server_or_skip!("a_node_with_another_identity_is_refused_and_changes_nothing");
    let options = common::options("identity");
    let mut a = node(&server, &options);
    assert_eq!(a.open_job(&identity()).unwrap(), Opened::Fresh);
    let mut b = node(&server, &options);
    match b.open_job(&identity().with("chunk_records", "50")) {
        Err(e @ LedgerError::IdentityChanged { .. }) => {
            assert!(
                e.to_string()
                    .contains("chunk_records changed from 100 to 50"),
                "{e}"
            );
        }
        other => panic!("expected IdentityChanged, got {other:?}"),
    }
    assert_eq!(b.status().unwrap().identity, Some(identity()));
    assert_eq!(
        b.open_job(&identity()).unwrap(),
        Opened::Resumed { commits: vec![] }
    );
    // Another job name in the same schema is another job.
    let mut other = node(
        &server,
        &herdsman_ledger_postgres::PostgresOptions {
            job: "other".into(),
            ..options.clone()
        },
    );
    assert_eq!(
        other
            .open_job(&identity().with("chunk_records", "50"))
            .unwrap(),
        Opened::Fresh
    );
}
