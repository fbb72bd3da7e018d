//! A checkpoint written by a herdsman with schema version 1 (byte offsets and lines instead of
//! format tokens): a job with committed chunks cannot be resumed and says so, `--restart`
//! (reset) clears it, and one without chunks migrates silently.

use std::path::Path;

use herdsman_ledger::{
    ChunkCommit, Counts, JobIdentity, Ledger, LedgerError, Opened, Position, SqliteLedger,
    StateDir, Token, LEDGER_FILE_NAME, SCHEMA_VERSION,
};

/// Schema version 1, as herdsman 0.x wrote it.
const V1: &str = r#"
CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, description TEXT NOT NULL, applied_at INTEGER NOT NULL);
CREATE TABLE jobs (id INTEGER PRIMARY KEY, identity TEXT NOT NULL, created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL, finished_at INTEGER, summary TEXT);
CREATE TABLE chunks (
    job_id INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    chunk INTEGER NOT NULL CHECK (chunk >= 0),
    state TEXT NOT NULL CHECK (state IN ('pending', 'claimed', 'committed')),
    claim_owner TEXT, lease_expires_at INTEGER, attempt INTEGER NOT NULL DEFAULT 0,
    start_file INTEGER, start_offset INTEGER, start_line INTEGER, start_seq INTEGER,
    end_file INTEGER, end_offset INTEGER, end_line INTEGER, end_seq INTEGER,
    records INTEGER, ok INTEGER, failed INTEGER, filtered INTEGER, outputs INTEGER, retries INTEGER,
    output_end INTEGER, failures_end INTEGER, committed_at INTEGER,
    PRIMARY KEY (job_id, chunk)) WITHOUT ROWID;
CREATE INDEX chunks_by_state ON chunks (job_id, state, chunk);
INSERT INTO schema_migrations VALUES (1, 'jobs and chunks', 0);
PRAGMA user_version = 1;
"#;

fn identity() -> JobIdentity {
    JobIdentity::new().with("input.0.path", "in.csv")
}

/// A version 1 ledger in `dir` holding the job, with `chunks` committed chunks.
fn write_v1(dir: &Path, chunks: u64) {
    std::fs::create_dir_all(dir).unwrap();
    let conn = rusqlite::Connection::open(dir.join(LEDGER_FILE_NAME)).unwrap();
    conn.execute_batch(V1).unwrap();
    conn.execute(
        "INSERT INTO jobs (identity, created_at, updated_at) VALUES (?1, 0, 0)",
        [serde_json::to_string(&identity()).unwrap()],
    )
    .unwrap();
    for k in 0..chunks {
        conn.execute(
            "INSERT INTO chunks VALUES (1, ?1, 'committed', NULL, NULL, 1, 0, ?2, ?3, ?4, 0, ?5, ?6, ?7, 10, 10, 0, 0, 10, 0, ?8, 0, 0)",
            rusqlite::params![k, k * 50, k * 10 + 1, k * 10, k * 50 + 50, k * 10 + 11, k * 10 + 10, (k + 1) * 70],
        )
        .unwrap();
    }
}

fn commit(k: u64) -> ChunkCommit {
    let at = |n: u64| Position {
        file_index: 0,
        seq: n * 10,
        token: Token::new(&n.to_le_bytes()).unwrap(),
    };
    ChunkCommit {
        chunk: k,
        start: at(k),
        end: at(k + 1),
        counts: Counts {
            records: 10,
            ok: 10,
            outputs: 10,
            ..Counts::default()
        },
        output_end: (k + 1) * 70,
        failures_end: 0,
    }
}

#[test]
fn a_version_1_job_with_chunks_is_refused_until_restarted() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    write_v1(&dir, 3);

    // Before any run migrated it, `status` refuses it too.
    let err = SqliteLedger::open_read_only(&dir).unwrap_err();
    assert!(
        matches!(err, LedgerError::OlderSchema { found: 1, .. }),
        "{err:?}"
    );

    let state = StateDir::open(&dir).unwrap();
    let mut ledger = SqliteLedger::open(&state).unwrap();
    let err = ledger.open_job(&identity()).unwrap_err();
    assert!(
        matches!(err, LedgerError::OlderSchema { found: 1, .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains("older herdsman"), "{msg}");
    assert!(msg.contains("cannot resume"), "{msg}");
    assert!(msg.contains("reset the checkpoint"), "{msg}");
    assert!(ledger.status().is_err());
    drop(ledger);
    drop(state);

    // Migrated, it is refused the same way by a read-only view.
    let err = SqliteLedger::open_read_only(&dir)
        .unwrap()
        .status()
        .unwrap_err();
    assert!(matches!(err, LedgerError::OlderSchema { .. }), "{err:?}");

    // --restart: reset, then the job starts afresh and checkpoints as usual.
    let state = StateDir::open(&dir).unwrap();
    let mut ledger = SqliteLedger::open(&state).unwrap();
    ledger.reset().unwrap();
    assert_eq!(ledger.open_job(&identity()).unwrap(), Opened::Fresh);
    ledger.commit_chunk(&commit(0)).unwrap();
    drop(ledger);
    drop(state);
    let state = StateDir::open(&dir).unwrap();
    let mut ledger = SqliteLedger::open(&state).unwrap();
    assert_eq!(
        ledger.open_job(&identity()).unwrap(),
        Opened::Resumed {
            commits: vec![commit(0)]
        }
    );
}

#[test]
fn a_version_1_ledger_without_chunks_migrates_silently() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    write_v1(&dir, 0);
    let state = StateDir::open(&dir).unwrap();
    let mut ledger = SqliteLedger::open(&state).unwrap();
    assert_eq!(
        ledger.open_job(&identity()).unwrap(),
        Opened::Resumed { commits: vec![] }
    );
    ledger.commit_chunk(&commit(0)).unwrap();
    assert_eq!(ledger.status().unwrap().commits, vec![commit(0)]);
    drop(ledger);
    drop(state);
    let conn = rusqlite::Connection::open(dir.join(LEDGER_FILE_NAME)).unwrap();
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
}
