//! The conformance suite every [`Ledger`] implementation must pass, written once against the
//! trait: the embedded SQLite ledger runs it in `tests/conformance.rs`, and a shared backend
//! calls the same [`run_all`] with its own [`Backend`].
//!
//! It must never depend on wall-clock time: leases are driven by a [`ManualClock`] that the
//! suite moves, so no check sleeps or races a timer.
//!
//! Available with the `test-support` feature.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use crate::{
    ChunkCommit, ChunkPlan, Claim, Clock, Counts, JobIdentity, Ledger, LedgerError, ManualClock,
    Opened, Position, ResumePoint, Token, Totals,
};

/// One empty store of a backend, which the suite opens (and reopens) ledgers on.
pub trait Backend {
    /// Opens a ledger on this store whose leases and timestamps read `clock`. The suite drops
    /// every ledger it opened before opening the store again, so a backend that allows one
    /// writer at a time (the SQLite state directory lock) can serve it.
    fn open(&self, clock: Arc<dyn Clock>) -> Box<dyn Ledger>;
}

/// One check of the suite: it panics when the backend breaks the [`Ledger`] contract.
pub type Check = fn(&dyn Backend);

/// Every check of the suite, by name.
pub const CHECKS: &[(&str, Check)] = &[
    ("fresh_resume_finished", fresh_resume_finished),
    (
        "identity_change_is_refused_and_changes_nothing",
        identity_change_is_refused_and_changes_nothing,
    ),
    (
        "claims_hand_each_chunk_to_one_owner",
        claims_hand_each_chunk_to_one_owner,
    ),
    (
        "an_expired_lease_is_taken_over_with_a_higher_attempt",
        an_expired_lease_is_taken_over_with_a_higher_attempt,
    ),
    (
        "a_stale_commit_is_refused_and_changes_nothing",
        a_stale_commit_is_refused_and_changes_nothing,
    ),
    (
        "heartbeat_extends_the_lease_and_fails_after_loss",
        heartbeat_extends_the_lease_and_fails_after_loss,
    ),
    ("release_gives_the_chunk_back", release_gives_the_chunk_back),
    (
        "a_commit_changes_state_and_counts_together",
        a_commit_changes_state_and_counts_together,
    ),
    (
        "a_direct_commit_respects_a_live_claim",
        a_direct_commit_respects_a_live_claim,
    ),
    (
        "totals_sum_the_committed_chunks",
        totals_sum_the_committed_chunks,
    ),
];

/// Runs every check in [`CHECKS`], each on a fresh store from `new_store`, and panics with the
/// name of the first check that fails.
pub fn run_all<B: Backend>(new_store: impl Fn() -> B) {
    for (name, check) in CHECKS {
        let store = new_store();
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(&store)));
        if let Err(panic) = outcome {
            let why = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("(no message)");
            panic!("ledger conformance check `{name}` failed: {why}");
        }
    }
}

const LEASE: Duration = Duration::from_secs(30);

fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::at(
        UNIX_EPOCH + Duration::from_secs(1_700_000_000),
    ))
}

fn open(store: &dyn Backend, clock: &Arc<ManualClock>) -> Box<dyn Ledger> {
    store.open(clock.clone())
}

fn identity() -> JobIdentity {
    JobIdentity::new()
        .with("input.0.path", "/data/in.csv")
        .with("input.0.size", "1000")
        .with("worker", "python3 w.py")
        .with("chunk_records", "10")
}

fn position(k: u64) -> Position {
    // The token is opaque to a ledger: any bytes a format might write, given back unchanged.
    let mut token = (k * 100).to_le_bytes().to_vec();
    token.extend_from_slice(&(k * 10 + 1).to_le_bytes());
    Position {
        file_index: 0,
        seq: k * 10,
        token: Token::new(&token).expect("16 bytes fit a token"),
    }
}

fn plan(k: u64) -> ChunkPlan {
    ChunkPlan {
        chunk: k,
        start: position(k),
        end: position(k + 1),
    }
}

/// Chunk `k` with 10 records (k % 3 failed), ending the files at `offset`.
fn commit(k: u64, offset: u64) -> ChunkCommit {
    let failed = k % 3;
    ChunkCommit {
        chunk: k,
        start: position(k),
        end: position(k + 1),
        counts: Counts {
            records: 10,
            ok: 10 - failed,
            failed,
            filtered: 0,
            outputs: 10 - failed,
            retries: k,
        },
        output_end: offset * 7,
        failures_end: offset * 3,
    }
}

fn fresh_job(store: &dyn Backend, clock: &Arc<ManualClock>, chunks: u64) -> Box<dyn Ledger> {
    let mut ledger = open(store, clock);
    assert_eq!(ledger.open_job(&identity()).unwrap(), Opened::Fresh);
    let plans: Vec<ChunkPlan> = (0..chunks).map(plan).collect();
    ledger.plan_chunks(&plans).unwrap();
    ledger
}

fn claim(ledger: &mut dyn Ledger, owner: &str) -> Claim {
    ledger
        .claim(owner, LEASE)
        .unwrap()
        .unwrap_or_else(|| panic!("{owner} found nothing to claim"))
}

fn expire_lease(clock: &ManualClock) {
    clock.advance(LEASE + Duration::from_millis(1));
}

fn committed(ledger: &dyn Ledger) -> Vec<ChunkCommit> {
    ledger.status().unwrap().commits
}

fn is_stale(result: Result<impl std::fmt::Debug, LedgerError>, claim: &Claim) {
    match result {
        Err(LedgerError::StaleClaim { chunk, attempt }) => {
            assert_eq!((chunk, attempt), (claim.chunk, claim.attempt));
        }
        other => panic!("expected StaleClaim for {claim:?}, got {other:?}"),
    }
}

/// A new job opens `Fresh`; reopened, it resumes with exactly its commits; once finished, it
/// reopens `Finished` with its summary, and refuses more commits.
pub fn fresh_resume_finished(store: &dyn Backend) {
    let clock = clock();
    {
        let mut ledger = open(store, &clock);
        assert_eq!(ledger.open_job(&identity()).unwrap(), Opened::Fresh);
        ledger.commit_chunks(&[commit(0, 1), commit(1, 2)]).unwrap();
    }
    {
        let mut ledger = open(store, &clock);
        assert_eq!(
            ledger.open_job(&identity()).unwrap(),
            Opened::Resumed {
                commits: vec![commit(0, 1), commit(1, 2)]
            }
        );
        let p = ResumePoint::from_commits(&committed(ledger.as_ref()));
        assert_eq!((p.next_chunk, p.output_end), (2, 14));
        ledger.commit_chunk(&commit(2, 3)).unwrap();
        ledger.mark_finished(r#"{"done":true}"#).unwrap();
    }
    let mut ledger = open(store, &clock);
    assert_eq!(
        ledger.open_job(&identity()).unwrap(),
        Opened::Finished {
            commits: vec![commit(0, 1), commit(1, 2), commit(2, 3)],
            summary_json: Some(r#"{"done":true}"#.into()),
        }
    );
    assert!(ledger.status().unwrap().finished());
    assert!(matches!(
        ledger.commit_chunk(&commit(3, 4)),
        Err(LedgerError::AlreadyFinished { chunk: 3 })
    ));
    ledger.reset().unwrap();
    assert_eq!(ledger.open_job(&identity()).unwrap(), Opened::Fresh);
    assert!(committed(ledger.as_ref()).is_empty());
}

/// A changed identity is refused with every change listed, and the stored job is untouched.
pub fn identity_change_is_refused_and_changes_nothing(store: &dyn Backend) {
    let clock = clock();
    {
        let mut ledger = open(store, &clock);
        ledger.open_job(&identity()).unwrap();
        ledger.commit_chunk(&commit(0, 1)).unwrap();
    }
    let mut ledger = open(store, &clock);
    let changed = identity().with("input.0.size", "1200");
    match ledger.open_job(&changed) {
        Err(LedgerError::IdentityChanged { changes }) => {
            let listed: Vec<String> = changes.iter().map(ToString::to_string).collect();
            assert_eq!(listed, vec!["input.0.size changed from 1000 to 1200"]);
        }
        other => panic!("expected IdentityChanged, got {other:?}"),
    }
    assert_eq!(ledger.status().unwrap().identity, Some(identity()));
    assert_eq!(
        ledger.open_job(&identity()).unwrap(),
        Opened::Resumed {
            commits: vec![commit(0, 1)]
        }
    );
}

/// Each planned chunk goes to exactly one owner, lowest first, with the planned positions and
/// attempt 1; with every chunk held nothing is left to claim; planning again changes nothing.
pub fn claims_hand_each_chunk_to_one_owner(store: &dyn Backend) {
    let clock = clock();
    let mut ledger = fresh_job(store, &clock, 3);
    let owners = ["node-a", "node-b", "node-c"];
    let claims: Vec<Claim> = owners.iter().map(|o| claim(ledger.as_mut(), o)).collect();
    for (k, (c, owner)) in claims.iter().zip(owners).enumerate() {
        let k = k as u64;
        assert_eq!((c.chunk, c.attempt), (k, 1), "{c:?}");
        assert_eq!(c.owner, owner);
        assert_eq!((c.start, c.end), (position(k), position(k + 1)));
        assert_eq!(c.lease_expires_at, clock.now() + LEASE);
    }
    assert_eq!(ledger.claim("node-d", LEASE).unwrap(), None);
    // Every node plans the same chunks; a repeated plan neither frees nor duplicates them.
    ledger
        .plan_chunks(&(0..3).map(plan).collect::<Vec<_>>())
        .unwrap();
    assert_eq!(ledger.claim("node-d", LEASE).unwrap(), None);
    // Chunks discovered later are claimable as soon as they are planned.
    ledger.plan_chunks(&[plan(3)]).unwrap();
    let late = claim(ledger.as_mut(), "node-d");
    assert_eq!((late.chunk, late.attempt), (3, 1));
    // Nothing is committed by claiming.
    assert_eq!(ledger.totals().unwrap(), Totals::default());
}

/// A lease that has not run out keeps its chunk; once it runs out another owner takes the
/// chunk over with a higher attempt number.
pub fn an_expired_lease_is_taken_over_with_a_higher_attempt(store: &dyn Backend) {
    let clock = clock();
    let mut ledger = fresh_job(store, &clock, 2);
    let first = claim(ledger.as_mut(), "node-a");
    assert_eq!((first.chunk, first.attempt), (0, 1));
    clock.advance(LEASE / 2);
    let other = claim(ledger.as_mut(), "node-b");
    assert_eq!(other.chunk, 1, "chunk 0 is still leased to node-a");
    clock.advance(LEASE / 2);
    assert_eq!(
        ledger.claim("node-c", LEASE).unwrap(),
        None,
        "a lease is held up to its expiry time"
    );
    clock.advance(Duration::from_millis(1));
    let taken = claim(ledger.as_mut(), "node-c");
    assert_eq!((taken.chunk, taken.attempt), (0, 2));
    assert_eq!(taken.owner, "node-c");
    expire_lease(&clock);
    let again = claim(ledger.as_mut(), "node-a");
    assert_eq!(
        (again.chunk, again.attempt),
        (0, 3),
        "the lowest claimable chunk goes first"
    );
}

/// After a takeover the old owner's commit is refused and changes nothing; the new owner's
/// commit goes through.
pub fn a_stale_commit_is_refused_and_changes_nothing(store: &dyn Backend) {
    let clock = clock();
    let mut ledger = fresh_job(store, &clock, 1);
    let old = claim(ledger.as_mut(), "node-a");
    expire_lease(&clock);
    let new = claim(ledger.as_mut(), "node-b");
    assert!(new.attempt > old.attempt);
    let before = ledger.status().unwrap();
    is_stale(ledger.commit(&old, &commit(0, 1)), &old);
    let after = ledger.status().unwrap();
    assert_eq!(after.commits, before.commits);
    assert_eq!(after.totals, Totals::default());
    // The new owner still holds the chunk: its heartbeat and commit work.
    ledger.heartbeat(&new, LEASE).unwrap();
    ledger.commit(&new, &commit(0, 2)).unwrap();
    assert_eq!(committed(ledger.as_ref()), vec![commit(0, 2)]);
    // Late again, after the commit: still refused, still nothing changed.
    is_stale(ledger.commit(&old, &commit(0, 1)), &old);
    assert!(matches!(
        ledger.commit(&new, &commit(0, 2)),
        Err(LedgerError::AlreadyCommitted { chunk: 0 })
    ));
    assert_eq!(committed(ledger.as_ref()), vec![commit(0, 2)]);
    // A claim commits only its own chunk.
    ledger.plan_chunks(&[plan(1)]).unwrap();
    let next = claim(ledger.as_mut(), "node-b");
    assert!(matches!(
        ledger.commit(&next, &commit(2, 3)),
        Err(LedgerError::ClaimMismatch {
            claimed: 1,
            committed: 2
        })
    ));
    // The attempt is the fence, not the owner's name: the same owner claiming the chunk again
    // (a restarted process with the same name) fences off its own earlier attempt.
    expire_lease(&clock);
    let again = claim(ledger.as_mut(), "node-b");
    assert_eq!((again.chunk, again.attempt), (1, next.attempt + 1));
    is_stale(ledger.commit(&next, &commit(1, 3)), &next);
    assert_eq!(committed(ledger.as_ref()), vec![commit(0, 2)]);
    ledger.commit(&again, &commit(1, 3)).unwrap();
}

/// A heartbeat moves the lease's expiry forward, keeping the chunk from other owners (even
/// after the lease ran out, if nobody took the chunk); after the chunk was taken over, the old
/// owner's heartbeat fails.
pub fn heartbeat_extends_the_lease_and_fails_after_loss(store: &dyn Backend) {
    let clock = clock();
    let mut ledger = fresh_job(store, &clock, 1);
    let held = claim(ledger.as_mut(), "node-a");
    clock.advance(LEASE - Duration::from_secs(1));
    let expiry = ledger.heartbeat(&held, LEASE).unwrap();
    assert_eq!(expiry, clock.now() + LEASE);
    clock.advance(Duration::from_secs(2));
    assert_eq!(
        ledger.claim("node-b", LEASE).unwrap(),
        None,
        "the heartbeat kept the chunk"
    );
    // A lease that ran out while nobody took the chunk can still be extended.
    expire_lease(&clock);
    ledger.heartbeat(&held, LEASE).unwrap();
    assert_eq!(ledger.claim("node-b", LEASE).unwrap(), None);
    expire_lease(&clock);
    let taker = claim(ledger.as_mut(), "node-b");
    assert_eq!(taker.chunk, 0);
    is_stale(ledger.heartbeat(&held, LEASE), &held);
    // The failed heartbeat did not take the chunk back.
    assert_eq!(ledger.claim("node-c", LEASE).unwrap(), None);
    ledger.heartbeat(&taker, LEASE).unwrap();
    // Lost to the same owner's later claim: the earlier attempt's heartbeat fails too.
    expire_lease(&clock);
    let retaken = claim(ledger.as_mut(), "node-b");
    assert_eq!(retaken.attempt, taker.attempt + 1);
    is_stale(ledger.heartbeat(&taker, LEASE), &taker);
    is_stale(ledger.release(&taker), &taker);
    ledger.heartbeat(&retaken, LEASE).unwrap();
}

/// A released chunk is claimable again, with a higher attempt; the released claim can neither
/// commit nor be released again.
pub fn release_gives_the_chunk_back(store: &dyn Backend) {
    let clock = clock();
    let mut ledger = fresh_job(store, &clock, 1);
    let given_up = claim(ledger.as_mut(), "node-a");
    ledger.release(&given_up).unwrap();
    let next = claim(ledger.as_mut(), "node-b");
    assert_eq!((next.chunk, next.attempt), (0, 2));
    is_stale(ledger.release(&given_up), &given_up);
    is_stale(ledger.commit(&given_up, &commit(0, 1)), &given_up);
    assert!(committed(ledger.as_ref()).is_empty());
    ledger.commit(&next, &commit(0, 1)).unwrap();
    // A committed chunk is no longer held: releasing it is refused.
    is_stale(ledger.release(&next), &next);
    assert_eq!(committed(ledger.as_ref()), vec![commit(0, 1)]);
}

/// A commit changes the chunk's state and the totals together, or neither: a refused commit
/// (offsets going backwards, a batch with a repeated chunk) leaves no committed chunk and no
/// counts behind.
pub fn a_commit_changes_state_and_counts_together(store: &dyn Backend) {
    let clock = clock();
    let mut ledger = fresh_job(store, &clock, 3);
    let c0 = claim(ledger.as_mut(), "node-a");
    ledger.commit(&c0, &commit(0, 5)).unwrap();
    let t = ledger.totals().unwrap();
    assert_eq!(t.chunks, 1);
    assert_eq!(t.counts, commit(0, 5).counts);
    assert_eq!(committed(ledger.as_ref()), vec![commit(0, 5)]);

    // Offsets below committed ones: refused, the claim still holds the chunk.
    let c1 = claim(ledger.as_mut(), "node-a");
    assert!(matches!(
        ledger.commit(&c1, &commit(1, 4)),
        Err(LedgerError::OffsetsWentBackwards { chunk: 1, .. })
    ));
    assert_eq!(ledger.totals().unwrap(), t);
    assert_eq!(committed(ledger.as_ref()), vec![commit(0, 5)]);
    ledger.heartbeat(&c1, LEASE).unwrap();

    // A batch that repeats a chunk is refused whole.
    assert!(matches!(
        ledger.commit_chunks(&[commit(2, 6), commit(2, 7)]),
        Err(LedgerError::AlreadyCommitted { chunk: 2 })
    ));
    assert_eq!(ledger.totals().unwrap(), t);
    assert_eq!(committed(ledger.as_ref()), vec![commit(0, 5)]);

    ledger.commit(&c1, &commit(1, 6)).unwrap();
    ledger.commit_chunks(&[commit(2, 7)]).unwrap();
    let all = committed(ledger.as_ref());
    assert_eq!(all, vec![commit(0, 5), commit(1, 6), commit(2, 7)]);
    assert_eq!(ledger.totals().unwrap(), Totals::of(&all));
    // Committed chunks are never claimed again.
    expire_lease(&clock);
    assert_eq!(ledger.claim("node-b", LEASE).unwrap(), None);
}

/// A direct commit (by a process holding the job alone) may not take a chunk that another
/// owner holds under a live lease, but may once that lease ran out; the old owner is then
/// fenced off.
pub fn a_direct_commit_respects_a_live_claim(store: &dyn Backend) {
    let clock = clock();
    let mut ledger = fresh_job(store, &clock, 1);
    let held = claim(ledger.as_mut(), "node-a");
    match ledger.commit_chunk(&commit(0, 1)) {
        Err(LedgerError::ClaimHeld { chunk: 0, owner }) => assert_eq!(owner, "node-a"),
        other => panic!("expected ClaimHeld, got {other:?}"),
    }
    assert!(committed(ledger.as_ref()).is_empty());
    expire_lease(&clock);
    ledger.commit_chunk(&commit(0, 1)).unwrap();
    is_stale(ledger.commit(&held, &commit(0, 2)), &held);
    assert_eq!(committed(ledger.as_ref()), vec![commit(0, 1)]);
}

/// The totals are the sums over the committed chunks only (not over planned or claimed ones),
/// and survive a reopen.
pub fn totals_sum_the_committed_chunks(store: &dyn Backend) {
    let clock = clock();
    {
        let mut ledger = fresh_job(store, &clock, 6);
        assert_eq!(ledger.totals().unwrap(), Totals::default());
        ledger
            .commit_chunks(&[commit(0, 1), commit(1, 2), commit(2, 3)])
            .unwrap();
        let c = claim(ledger.as_mut(), "node-a");
        assert_eq!(c.chunk, 3);
        ledger.commit(&c, &commit(3, 4)).unwrap();
        let _held = claim(ledger.as_mut(), "node-a");
    }
    let mut ledger = open(store, &clock);
    ledger.open_job(&identity()).unwrap();
    let want = Totals {
        chunks: 4,
        counts: Counts {
            records: 40,
            ok: 40 - (1 + 2),
            failed: 1 + 2,
            filtered: 0,
            outputs: 40 - (1 + 2),
            retries: 1 + 2 + 3,
        },
    };
    assert_eq!(ledger.totals().unwrap(), want);
    assert_eq!(ledger.status().unwrap().totals, want);
}
