//! The embedded SQLite ledger passes the ledger conformance suite: fresh/resume/finished,
//! identity changes, claims, lease takeover, fencing, heartbeats, release, atomic commits and
//! totals, with leases driven by a hand-moved clock.

use std::sync::Arc;

use herdsman_ledger::conformance::{self, Backend};
use herdsman_ledger::{Clock, Ledger, SqliteLedger, StateDir};

/// A state directory in a temporary directory.
struct SqliteStore {
    tmp: tempfile::TempDir,
}

impl Backend for SqliteStore {
    fn open(&self, clock: Arc<dyn Clock>) -> Box<dyn Ledger> {
        let state = StateDir::open(&self.tmp.path().join("state")).unwrap();
        Box::new(SqliteLedger::open(&state).unwrap().with_clock(clock))
    }
}

#[test]
fn sqlite_passes_the_ledger_conformance_suite() {
    conformance::run_all(|| SqliteStore {
        tmp: tempfile::tempdir().unwrap(),
    });
}

/// The suite itself catches a broken backend: a ledger that ignores fencing fails it, naming
/// the check.
#[test]
fn the_suite_rejects_a_ledger_that_ignores_the_fence() {
    struct Unfenced(Box<dyn Ledger>);
    impl Ledger for Unfenced {
        fn open_job(
            &mut self,
            id: &herdsman_ledger::JobIdentity,
        ) -> Result<herdsman_ledger::Opened, herdsman_ledger::LedgerError> {
            self.0.open_job(id)
        }
        fn reset(&mut self) -> Result<(), herdsman_ledger::LedgerError> {
            self.0.reset()
        }
        fn plan_chunks(
            &mut self,
            chunks: &[herdsman_ledger::ChunkPlan],
        ) -> Result<(), herdsman_ledger::LedgerError> {
            self.0.plan_chunks(chunks)
        }
        fn claim(
            &mut self,
            owner: &str,
            lease: std::time::Duration,
        ) -> Result<Option<herdsman_ledger::Claim>, herdsman_ledger::LedgerError> {
            self.0.claim(owner, lease)
        }
        fn heartbeat(
            &mut self,
            claim: &herdsman_ledger::Claim,
            lease: std::time::Duration,
        ) -> Result<std::time::SystemTime, herdsman_ledger::LedgerError> {
            self.0.heartbeat(claim, lease)
        }
        fn release(
            &mut self,
            claim: &herdsman_ledger::Claim,
        ) -> Result<(), herdsman_ledger::LedgerError> {
            self.0.release(claim)
        }
        /// Broken on purpose: commits whatever the claim says.
        fn commit(
            &mut self,
            _claim: &herdsman_ledger::Claim,
            c: &herdsman_ledger::ChunkCommit,
        ) -> Result<(), herdsman_ledger::LedgerError> {
            self.0.commit_chunk(c)
        }
        fn commit_chunks(
            &mut self,
            commits: &[herdsman_ledger::ChunkCommit],
        ) -> Result<(), herdsman_ledger::LedgerError> {
            self.0.commit_chunks(commits)
        }
        fn mark_finished(&mut self, summary: &str) -> Result<(), herdsman_ledger::LedgerError> {
            self.0.mark_finished(summary)
        }
        fn totals(&self) -> Result<herdsman_ledger::Totals, herdsman_ledger::LedgerError> {
            self.0.totals()
        }
        fn status(&self) -> Result<herdsman_ledger::LedgerStatus, herdsman_ledger::LedgerError> {
            self.0.status()
        }
    }
    struct UnfencedStore(SqliteStore);
    impl Backend for UnfencedStore {
        fn open(&self, clock: Arc<dyn Clock>) -> Box<dyn Ledger> {
            Box::new(Unfenced(self.0.open(clock)))
        }
    }
    let failed = std::panic::catch_unwind(|| {
        conformance::run_all(|| {
            UnfencedStore(SqliteStore {
                tmp: tempfile::tempdir().unwrap(),
            })
        })
    })
    .expect_err("a ledger that ignores fencing must fail the suite");
    let msg = failed.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains("ledger conformance check `"), "{msg}");
}
