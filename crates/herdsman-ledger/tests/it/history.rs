//! The run's history in the SQLite ledger: samples and slowest records are kept with the job,
//! read back in order, continued across resumes, forgotten by a reset, and a ledger written
//! before history existed (schema version 2) stays readable.

use herdsman_ledger::{
    HistorySample, JobIdentity, Ledger, LedgerError, SlowRecord, SqliteLedger, StateDir,
    WorkerSample, LEDGER_FILE_NAME, SCHEMA_VERSION,
};

fn identity() -> JobIdentity {
    JobIdentity::new().with("input.0.path", "in.csv")
}

fn sample(run: u32, at_ms: i64, ok: u64) -> HistorySample {
    HistorySample {
        run,
        at_ms,
        elapsed_ms: 1000,
        interval_ms: 1000,
        ok,
        failed: 1,
        filtered: 0,
        records_per_sec: 12.5,
        finished: 12,
        p50_ms: Some(3.0),
        p90_ms: Some(9.0),
        p99_ms: Some(20.0),
        max_ms: Some(21.5),
        latency_buckets: vec![0, 1, 5, 6],
        in_flight: 4,
        workers: vec![WorkerSample {
            worker: 1,
            busy_ms: 800,
            attempts: 12,
            restarts: 1,
        }],
        restarts: 1,
        retries: 2,
        rate_limit_wait_ms: 1500,
    }
}

fn slow(run: u32, record: u64, ms: f64) -> SlowRecord {
    SlowRecord {
        run,
        record,
        file: "in.csv".into(),
        line: record + 2,
        duration_ms: ms,
        attempts: 1,
        outcome: "succeeded".into(),
    }
}

#[test]
fn samples_and_slowest_records_round_trip_and_continue_across_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    {
        let mut ledger = herdsman_ledger::open(&state).unwrap();
        ledger.open_job(&identity()).unwrap();
        assert_eq!(ledger.last_history_run().unwrap(), 0);
        ledger
            .append_history(&[sample(1, 1_000, 5), sample(1, 2_000, 10)])
            .unwrap();
        ledger
            .replace_slowest(1, &[slow(1, 7, 90.0), slow(1, 3, 40.0)])
            .unwrap();
        // Replacing keeps only the new list of that run.
        ledger.replace_slowest(1, &[slow(1, 9, 95.0)]).unwrap();
    }
    // A resumed run numbers its samples after the earlier ones and keeps them.
    let mut ledger = herdsman_ledger::open(&state).unwrap();
    ledger.open_job(&identity()).unwrap();
    assert_eq!(ledger.last_history_run().unwrap(), 1);
    ledger.append_history(&[sample(2, 3_000, 20)]).unwrap();
    ledger.replace_slowest(2, &[slow(2, 11, 5.0)]).unwrap();
    drop(ledger);

    let view = herdsman_ledger::open_read_only(&state).unwrap();
    let history = view.history().unwrap();
    assert_eq!(
        history.iter().map(|s| (s.run, s.ok)).collect::<Vec<_>>(),
        vec![(1, 5), (1, 10), (2, 20)]
    );
    assert_eq!(history[0], sample(1, 1_000, 5));
    assert_eq!(view.last_history_run().unwrap(), 2);
    let slowest = view.slowest().unwrap();
    assert_eq!(
        slowest
            .iter()
            .map(|s| (s.run, s.record))
            .collect::<Vec<_>>(),
        vec![(1, 9), (2, 11)]
    );
    // Writing through a read-only view is refused.
    let mut view = view;
    assert!(matches!(
        view.append_history(&[sample(3, 4_000, 1)]),
        Err(LedgerError::ReadOnly)
    ));
}

#[test]
fn history_needs_a_job_and_a_reset_forgets_it() {
    let tmp = tempfile::tempdir().unwrap();
    let state = StateDir::open(tmp.path()).unwrap();
    let mut ledger = SqliteLedger::open(&state).unwrap();
    assert!(matches!(
        ledger.append_history(&[sample(1, 1, 1)]),
        Err(LedgerError::NoJob)
    ));
    ledger.open_job(&identity()).unwrap();
    ledger.append_history(&[sample(1, 1, 1)]).unwrap();
    ledger.replace_slowest(1, &[slow(1, 1, 1.0)]).unwrap();
    ledger.reset().unwrap();
    assert!(ledger.history().unwrap().is_empty());
    assert!(ledger.slowest().unwrap().is_empty());
    assert_eq!(ledger.last_history_run().unwrap(), 0);
}

#[test]
fn non_finite_numbers_are_stored_as_zero() {
    let tmp = tempfile::tempdir().unwrap();
    let mut ledger = herdsman_ledger::open(tmp.path()).unwrap();
    ledger.open_job(&identity()).unwrap();
    let mut s = sample(1, 1, 1);
    s.records_per_sec = f64::NAN;
    s.p99_ms = Some(f64::INFINITY);
    ledger.append_history(&[s]).unwrap();
    let back = &ledger.history().unwrap()[0];
    assert_eq!(back.records_per_sec, 0.0);
    assert_eq!(back.p99_ms, Some(0.0));
}

#[test]
fn a_ledger_from_before_history_is_readable_and_migrates() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let mut ledger = herdsman_ledger::open(tmp.path()).unwrap();
        ledger.open_job(&identity()).unwrap();
    }
    // Turn it back into a schema version 2 ledger, as the previous release wrote it.
    {
        let conn = rusqlite::Connection::open(tmp.path().join(LEDGER_FILE_NAME)).unwrap();
        conn.execute_batch(
            "DROP TABLE history; DROP TABLE slowest; \
             DROP INDEX chunks_output_end; DROP INDEX chunks_failures_end; \
             DELETE FROM schema_migrations WHERE version >= 3; PRAGMA user_version = 2;",
        )
        .unwrap();
    }
    let view = herdsman_ledger::open_read_only(tmp.path()).unwrap();
    assert!(view.status().unwrap().identity.is_some());
    assert!(view.history().unwrap().is_empty());
    assert!(view.slowest().unwrap().is_empty());
    assert_eq!(view.last_history_run().unwrap(), 0);
    drop(view);
    // A run migrates it and keeps history from then on.
    let mut ledger = herdsman_ledger::open(tmp.path()).unwrap();
    ledger.open_job(&identity()).unwrap();
    ledger.append_history(&[sample(1, 1, 1)]).unwrap();
    assert_eq!(ledger.history().unwrap().len(), 1);
    let conn = rusqlite::Connection::open(tmp.path().join(LEDGER_FILE_NAME)).unwrap();
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
}

/// A backend that keeps no history says so with a typed error.
#[test]
fn a_backend_without_history_says_unsupported() {
    struct NoHistory;
    impl Ledger for NoHistory {
        fn open_job(&mut self, _: &JobIdentity) -> Result<herdsman_ledger::Opened, LedgerError> {
            Ok(herdsman_ledger::Opened::Fresh)
        }
        fn reset(&mut self) -> Result<(), LedgerError> {
            Ok(())
        }
        fn plan_chunks(&mut self, _: &[herdsman_ledger::ChunkPlan]) -> Result<(), LedgerError> {
            Ok(())
        }
        fn claim(
            &mut self,
            _: &str,
            _: std::time::Duration,
        ) -> Result<Option<herdsman_ledger::Claim>, LedgerError> {
            Ok(None)
        }
        fn heartbeat(
            &mut self,
            _: &herdsman_ledger::Claim,
            _: std::time::Duration,
        ) -> Result<std::time::SystemTime, LedgerError> {
            Ok(std::time::SystemTime::now())
        }
        fn release(&mut self, _: &herdsman_ledger::Claim) -> Result<(), LedgerError> {
            Ok(())
        }
        fn commit(
            &mut self,
            _: &herdsman_ledger::Claim,
            _: &herdsman_ledger::ChunkCommit,
        ) -> Result<(), LedgerError> {
            Ok(())
        }
        fn commit_chunks(&mut self, _: &[herdsman_ledger::ChunkCommit]) -> Result<(), LedgerError> {
            Ok(())
        }
        fn mark_finished(&mut self, _: &str) -> Result<(), LedgerError> {
            Ok(())
        }
        fn totals(&self) -> Result<herdsman_ledger::Totals, LedgerError> {
            Ok(herdsman_ledger::Totals::default())
        }
        fn status(&self) -> Result<herdsman_ledger::LedgerStatus, LedgerError> {
            Ok(herdsman_ledger::LedgerStatus::default())
        }
    }
    let mut l = NoHistory;
    let err = l.append_history(&[]).unwrap_err();
    assert!(matches!(err, LedgerError::Unsupported { .. }));
    assert!(err.to_string().contains("does not keep the run's history"));
    assert!(matches!(l.history(), Err(LedgerError::Unsupported { .. })));
    assert!(matches!(l.slowest(), Err(LedgerError::Unsupported { .. })));
}
