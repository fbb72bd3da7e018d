//! Behaviour of the SQLite ledger through its public API: fresh, resume, identity changes,
//! reset, refusals, status, read-only views, and damaged files.

use std::path::Path;

use herdsman_ledger::{
    ChunkCommit, Counts, JobIdentity, Ledger, LedgerError, Opened, Position, ResumePoint,
    SqliteLedger, StateDir, Token, Totals, LEDGER_FILE_NAME, SCHEMA_VERSION,
};

/// A position token as a text format might make one: a byte offset and a line.
fn tok(offset: u64, line: u64) -> Token {
    let mut b = offset.to_le_bytes().to_vec();
    b.extend(line.to_le_bytes());
    Token::new(&b).unwrap()
}

fn identity() -> JobIdentity {
    JobIdentity::new()
        .with("input.0.path", "/data/in.csv")
        .with("input.0.size", "100")
        .with("input.0.mtime", "1700000000")
        .with("worker", "python3 w.py")
        .with("ordered", "true")
        .with("chunk_records", "10")
}

/// Chunk `k` of a job with 10 records per chunk and 7 output bytes per record.
fn commit(k: u64) -> ChunkCommit {
    ChunkCommit {
        chunk: k,
        start: Position {
            file_index: 0,
            seq: k * 10,
            token: tok(k * 50, k * 10 + 1),
        },
        end: Position {
            file_index: 0,
            seq: k * 10 + 10,
            token: tok(k * 50 + 50, k * 10 + 11),
        },
        counts: Counts {
            records: 10,
            ok: 9,
            failed: 1,
            filtered: 0,
            outputs: 9,
            retries: k,
        },
        output_end: (k + 1) * 63,
        failures_end: (k + 1) * 20,
    }
}

fn open(dir: &Path) -> (StateDir, SqliteLedger) {
    let state = StateDir::open(dir).unwrap();
    let ledger = SqliteLedger::open(&state).unwrap();
    (state, ledger)
}

#[test]
fn fresh_then_commits_then_reopen_resumes_with_exact_commits() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    {
        let (_state, mut ledger) = open(&dir);
        assert_eq!(ledger.open_job(&identity()).unwrap(), Opened::Fresh);
        for k in 0..3 {
            ledger.commit_chunk(&commit(k)).unwrap();
        }
    }
    let (_state, mut ledger) = open(&dir);
    assert_eq!(
        ledger.open_job(&identity()).unwrap(),
        Opened::Resumed {
            commits: vec![commit(0), commit(1), commit(2)]
        }
    );
    // The job goes on after a resume.
    ledger.commit_chunk(&commit(3)).unwrap();
    assert_eq!(ledger.status().unwrap().commits.len(), 4);
}

#[test]
fn reopening_an_empty_job_resumes_with_no_commits() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    {
        let (_s, mut ledger) = open(&dir);
        assert_eq!(ledger.open_job(&identity()).unwrap(), Opened::Fresh);
    }
    let (_s, mut ledger) = open(&dir);
    assert_eq!(
        ledger.open_job(&identity()).unwrap(),
        Opened::Resumed { commits: vec![] }
    );
}

#[test]
fn out_of_order_commits_come_back_sorted_and_give_the_resume_point() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    // Unordered mode: the offsets grow in commit order, not chunk order.
    let order = [2u64, 0, 4, 1];
    let commits: Vec<ChunkCommit> = order
        .iter()
        .enumerate()
        .map(|(i, &k)| ChunkCommit {
            output_end: (i as u64 + 1) * 100,
            failures_end: (i as u64 + 1) * 10,
            ..commit(k)
        })
        .collect();
    {
        let (_s, mut ledger) = open(&dir);
        ledger.open_job(&identity()).unwrap();
        for c in &commits {
            ledger.commit_chunk(c).unwrap();
        }
    }
    let (_s, mut ledger) = open(&dir);
    let Opened::Resumed { commits: got } = ledger.open_job(&identity()).unwrap() else {
        panic!("expected Resumed");
    };
    let mut want = commits.clone();
    want.sort_by_key(|c| c.chunk);
    assert_eq!(got, want);
    let p = ResumePoint::from_commits(&got);
    assert_eq!(p.next_chunk, 3);
    assert_eq!(p.position, Some(commit(2).end));
    assert_eq!(p.output_end, 400);
    assert_eq!(p.failures_end, 40);
    assert_eq!(p.committed_after, vec![4]);
}

#[test]
fn resume_point_of_nothing_starts_at_the_beginning() {
    let p = ResumePoint::from_commits(&[]);
    assert_eq!(p.next_chunk, 0);
    assert_eq!(p.position, None);
    assert_eq!((p.output_end, p.failures_end), (0, 0));
    assert!(p.committed_after.is_empty());
}

#[test]
fn changed_identity_is_refused_with_every_change_and_the_remedy() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    {
        let (_s, mut ledger) = open(&dir);
        ledger.open_job(&identity()).unwrap();
        ledger.commit_chunk(&commit(0)).unwrap();
    }
    let (_s, mut ledger) = open(&dir);
    let mut changed = identity().with("input.0.size", "120");
    changed.entries.remove("ordered");
    let err = ledger.open_job(&changed).unwrap_err();
    let LedgerError::IdentityChanged { changes } = &err else {
        panic!("expected IdentityChanged, got {err:?}");
    };
    assert_eq!(changes.len(), 2);
    assert_eq!(
        err.to_string(),
        "the job changed since the checkpoint: input.0.size changed from 100 to 120; \
         ordered was true and is no longer set; reset the checkpoint to start over, \
         or restore the original inputs and settings"
    );
    // Refusing changes nothing: the original identity still resumes.
    assert_eq!(
        ledger.open_job(&identity()).unwrap(),
        Opened::Resumed {
            commits: vec![commit(0)]
        }
    );
}

#[test]
fn reset_forgets_the_job_and_its_chunks() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    {
        let (_s, mut ledger) = open(&dir);
        ledger.open_job(&identity()).unwrap();
        ledger.commit_chunk(&commit(0)).unwrap();
        ledger.mark_finished("{}").unwrap();
    }
    let (_s, mut ledger) = open(&dir);
    let other = identity().with("input.0.size", "120");
    assert!(matches!(
        ledger.open_job(&other),
        Err(LedgerError::IdentityChanged { .. })
    ));
    ledger.reset().unwrap();
    assert_eq!(ledger.status().unwrap(), Default::default());
    // After a reset nothing is open until open_job.
    assert!(matches!(
        ledger.commit_chunk(&commit(0)),
        Err(LedgerError::NoJob)
    ));
    assert_eq!(ledger.open_job(&other).unwrap(), Opened::Fresh);
    ledger.commit_chunk(&commit(0)).unwrap();
    drop(ledger);
    drop(_s);
    let (_s, mut ledger) = open(&dir);
    assert_eq!(
        ledger.open_job(&other).unwrap(),
        Opened::Resumed {
            commits: vec![commit(0)]
        }
    );
}

#[test]
fn committing_a_chunk_twice_is_refused_and_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (_s, mut ledger) = open(&tmp.path().join("state"));
    ledger.open_job(&identity()).unwrap();
    ledger.commit_chunk(&commit(0)).unwrap();
    ledger.commit_chunk(&commit(1)).unwrap();
    let again = ChunkCommit {
        output_end: 10_000,
        failures_end: 10_000,
        ..commit(0)
    };
    let err = ledger.commit_chunk(&again).unwrap_err();
    assert!(
        matches!(err, LedgerError::AlreadyCommitted { chunk: 0 }),
        "{err:?}"
    );
    assert!(err.to_string().contains("chunk 0 is already committed"));
    assert_eq!(ledger.status().unwrap().commits, vec![commit(0), commit(1)]);
}

#[test]
fn offsets_going_backwards_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (_s, mut ledger) = open(&tmp.path().join("state"));
    ledger.open_job(&identity()).unwrap();
    ledger.commit_chunk(&commit(1)).unwrap();
    let err = ledger.commit_chunk(&commit(0)).unwrap_err();
    assert!(
        matches!(
            err,
            LedgerError::OffsetsWentBackwards {
                chunk: 0,
                file: "output",
                got: 63,
                committed: 126
            }
        ),
        "{err:?}"
    );
    let err = ledger
        .commit_chunk(&ChunkCommit {
            output_end: 126,
            failures_end: 5,
            ..commit(0)
        })
        .unwrap_err();
    assert!(
        matches!(
            err,
            LedgerError::OffsetsWentBackwards {
                file: "failures",
                ..
            }
        ),
        "{err:?}"
    );
    // Equal offsets are fine: a chunk may write nothing.
    ledger
        .commit_chunk(&ChunkCommit {
            output_end: 126,
            failures_end: 40,
            ..commit(0)
        })
        .unwrap();
    assert_eq!(ledger.status().unwrap().commits.len(), 2);
}

#[test]
fn values_beyond_i64_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (_s, mut ledger) = open(&tmp.path().join("state"));
    ledger.open_job(&identity()).unwrap();
    let err = ledger
        .commit_chunk(&ChunkCommit {
            output_end: u64::MAX,
            ..commit(0)
        })
        .unwrap_err();
    assert!(
        matches!(
            err,
            LedgerError::ValueTooLarge {
                field: "output_end",
                value: u64::MAX
            }
        ),
        "{err:?}"
    );
    assert!(ledger.status().unwrap().commits.is_empty());
}

#[test]
fn writing_before_open_job_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (_s, mut ledger) = open(&tmp.path().join("state"));
    assert!(matches!(
        ledger.commit_chunk(&commit(0)),
        Err(LedgerError::NoJob)
    ));
    assert!(matches!(
        ledger.mark_finished("{}"),
        Err(LedgerError::NoJob)
    ));
}

#[test]
fn finished_job_reopens_as_finished_and_refuses_more_chunks() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    {
        let (_s, mut ledger) = open(&dir);
        ledger.open_job(&identity()).unwrap();
        ledger.commit_chunk(&commit(0)).unwrap();
        ledger.mark_finished(r#"{"ok":9}"#).unwrap();
        let err = ledger.commit_chunk(&commit(1)).unwrap_err();
        assert!(
            matches!(err, LedgerError::AlreadyFinished { chunk: 1 }),
            "{err:?}"
        );
    }
    let (_s, mut ledger) = open(&dir);
    assert_eq!(
        ledger.open_job(&identity()).unwrap(),
        Opened::Finished {
            commits: vec![commit(0)],
            summary_json: Some(r#"{"ok":9}"#.into())
        }
    );
}

#[test]
fn status_reports_identity_totals_and_timestamps() {
    let tmp = tempfile::tempdir().unwrap();
    let (_s, mut ledger) = open(&tmp.path().join("state"));
    assert_eq!(ledger.status().unwrap(), Default::default());
    let before = std::time::SystemTime::now() - std::time::Duration::from_secs(1);
    ledger.open_job(&identity()).unwrap();
    ledger.commit_chunk(&commit(0)).unwrap();
    ledger.commit_chunk(&commit(1)).unwrap();
    let s = ledger.status().unwrap();
    assert_eq!(s.identity.as_ref(), Some(&identity()));
    assert_eq!(
        s.totals,
        Totals {
            chunks: 2,
            counts: Counts {
                records: 20,
                ok: 18,
                failed: 2,
                filtered: 0,
                outputs: 18,
                retries: 1
            },
        }
    );
    assert!(!s.finished());
    let created = s.created_at.unwrap();
    assert!(created >= before);
    assert!(s.updated_at.unwrap() >= created);
    ledger.mark_finished("{}").unwrap();
    let s = ledger.status().unwrap();
    assert!(s.finished());
    assert!(s.finished_at.unwrap() >= created);
    assert_eq!(s.summary_json.as_deref(), Some("{}"));
}

#[test]
fn second_open_in_the_same_process_is_locked_until_both_handles_drop() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    let state = StateDir::open(&dir).unwrap();
    assert_eq!(state.path(), dir);
    let ledger = SqliteLedger::open(&state).unwrap();
    let err = StateDir::open(&dir).unwrap_err();
    match &err {
        LedgerError::Locked { dir: d, holder_pid } => {
            assert_eq!(d, &dir);
            assert_eq!(*holder_pid, Some(std::process::id()));
        }
        other => panic!("expected Locked, got {other:?}"),
    }
    assert!(err
        .to_string()
        .contains(&format!("(pid {})", std::process::id())));
    // The ledger keeps the directory locked on its own.
    drop(state);
    assert!(matches!(
        StateDir::open(&dir),
        Err(LedgerError::Locked { .. })
    ));
    drop(ledger);
    StateDir::open(&dir).unwrap();
}

#[test]
fn read_only_view_works_while_a_run_holds_the_lock() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    let (_state, mut ledger) = open(&dir);
    ledger.open_job(&identity()).unwrap();
    ledger.commit_chunk(&commit(0)).unwrap();

    let mut view = SqliteLedger::open_read_only(&dir).unwrap();
    let s = view.status().unwrap();
    assert_eq!(s.identity, Some(identity()));
    assert_eq!(s.commits, vec![commit(0)]);
    // The view sees later commits too.
    ledger.commit_chunk(&commit(1)).unwrap();
    assert_eq!(view.status().unwrap().commits.len(), 2);
    // The view can open the same job, but not write.
    assert!(matches!(
        view.open_job(&identity()).unwrap(),
        Opened::Resumed { .. }
    ));
    assert!(matches!(
        view.commit_chunk(&commit(2)),
        Err(LedgerError::ReadOnly)
    ));
    assert!(matches!(view.reset(), Err(LedgerError::ReadOnly)));
    assert!(matches!(
        view.mark_finished("{}"),
        Err(LedgerError::ReadOnly)
    ));
    assert_eq!(ledger.status().unwrap().commits.len(), 2);
}

#[test]
fn read_only_view_after_the_run_ended() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    {
        let (_state, mut ledger) = open(&dir);
        ledger.open_job(&identity()).unwrap();
        ledger.commit_chunk(&commit(0)).unwrap();
    }
    let view = SqliteLedger::open_read_only(&dir).unwrap();
    assert_eq!(view.status().unwrap().commits, vec![commit(0)]);
}

#[test]
fn read_only_view_of_a_missing_ledger_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let err = SqliteLedger::open_read_only(tmp.path()).unwrap_err();
    assert!(matches!(err, LedgerError::NotFound { .. }), "{err:?}");
    assert!(err.to_string().contains("there is no checkpoint in"));
}

#[test]
fn garbage_ledger_file_is_reported_as_damaged() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join(LEDGER_FILE_NAME),
        "this is not an SQLite database, just some text long enough to have a header ..........",
    )
    .unwrap();
    let state = StateDir::open(&dir).unwrap();
    let err = SqliteLedger::open(&state).unwrap_err();
    assert!(matches!(err, LedgerError::Corrupt { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("is damaged"), "{msg}");
    assert!(msg.contains("reset the checkpoint"), "{msg}");
    let err = SqliteLedger::open_read_only(&dir)
        .and_then(|l| l.status())
        .unwrap_err();
    assert!(matches!(err, LedgerError::Corrupt { .. }), "{err:?}");
}

#[test]
fn unreadable_stored_identity_is_reported_as_damaged() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    {
        let (_s, mut ledger) = open(&dir);
        ledger.open_job(&identity()).unwrap();
    }
    let conn = rusqlite::Connection::open(dir.join(LEDGER_FILE_NAME)).unwrap();
    conn.execute("UPDATE jobs SET identity = 'not json'", [])
        .unwrap();
    drop(conn);
    let (_s, mut ledger) = open(&dir);
    let err = ledger.open_job(&identity()).unwrap_err();
    assert!(matches!(err, LedgerError::Corrupt { .. }), "{err:?}");
}

#[test]
fn ledger_from_a_newer_version_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    drop(open(&dir));
    let conn = rusqlite::Connection::open(dir.join(LEDGER_FILE_NAME)).unwrap();
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    let migrations: i64 = conn
        .query_row("SELECT COUNT(*) FROM schema_migrations", [], |r| r.get(0))
        .unwrap();
    assert_eq!(migrations, SCHEMA_VERSION);
    conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
        .unwrap();
    drop(conn);
    let state = StateDir::open(&dir).unwrap();
    let err = SqliteLedger::open(&state).unwrap_err();
    assert!(
        matches!(err, LedgerError::NewerSchema { found, .. } if found == SCHEMA_VERSION + 1),
        "{err:?}"
    );
    assert!(err.to_string().contains("upgrade herdsman"));
    assert!(matches!(
        SqliteLedger::open_read_only(&dir),
        Err(LedgerError::NewerSchema { .. })
    ));
}

#[test]
fn state_path_that_is_a_file_gives_a_clear_io_error() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("state");
    std::fs::write(&file, "x").unwrap();
    let err = StateDir::open(&file).unwrap_err();
    assert!(matches!(err, LedgerError::Io { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("could not create the state directory"),
        "{msg}"
    );
    assert!(msg.contains("writable directory"), "{msg}");
}

#[test]
fn ledger_path_that_is_a_directory_gives_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    std::fs::create_dir_all(dir.join(LEDGER_FILE_NAME)).unwrap();
    let state = StateDir::open(&dir).unwrap();
    let err = SqliteLedger::open(&state).unwrap_err();
    assert!(matches!(err, LedgerError::Sqlite { .. }), "{err:?}");
    assert!(err.to_string().contains("could not be opened"), "{err}");
}

#[test]
fn a_batch_commits_all_or_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    {
        let (_s, mut ledger) = open(&dir);
        ledger.open_job(&identity()).unwrap();
        ledger.commit_chunks(&[]).unwrap();
        ledger.commit_chunks(&[commit(0), commit(1)]).unwrap();
        // Chunk 3 is fine, but chunk 1 repeats: nothing of the batch is kept.
        let err = ledger
            .commit_chunks(&[commit(2), commit(3), commit(1)])
            .unwrap_err();
        assert!(
            matches!(err, LedgerError::AlreadyCommitted { chunk: 1 }),
            "{err:?}"
        );
        // A batch whose own offsets go down is refused whole too.
        let err = ledger.commit_chunks(&[commit(3), commit(2)]).unwrap_err();
        assert!(
            matches!(err, LedgerError::OffsetsWentBackwards { chunk: 2, .. }),
            "{err:?}"
        );
        // A batch that repeats a chunk within itself.
        let err = ledger.commit_chunks(&[commit(2), commit(2)]).unwrap_err();
        assert!(
            matches!(err, LedgerError::AlreadyCommitted { chunk: 2 }),
            "{err:?}"
        );
        assert_eq!(ledger.status().unwrap().commits, vec![commit(0), commit(1)]);
        ledger.commit_chunks(&[commit(2), commit(3)]).unwrap();
    }
    let (_s, mut ledger) = open(&dir);
    assert_eq!(
        ledger.open_job(&identity()).unwrap(),
        Opened::Resumed {
            commits: (0..4).map(commit).collect()
        }
    );
}
