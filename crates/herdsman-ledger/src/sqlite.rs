//! The SQLite ledger: one file, `<state dir>/ledger.sqlite`, in WAL mode with
//! `synchronous=FULL`, so a returned commit survives a crash or power loss.
//!
//! It must never return from a commit before the transaction is durable, and never change
//! anything when a call fails. The schema is described in the crate README.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{
    params, Connection, ErrorCode, OpenFlags, OptionalExtension, Row, TransactionBehavior,
};

use crate::{
    ChunkCommit, ChunkPlan, Claim, Clock, Counts, HistorySample, JobIdentity, Ledger, LedgerError,
    LedgerStatus, Opened, Position, SlowRecord, StateDir, SystemClock, Token, Totals,
};

/// The name of the ledger file inside the state directory.
pub const LEDGER_FILE_NAME: &str = "ledger.sqlite";

/// The newest schema version this build writes and reads (`PRAGMA user_version`).
pub const SCHEMA_VERSION: i64 = 4;

/// How long a statement waits for another connection (e.g. `herdsman status` reading) before
/// giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Schema migrations, applied in order; entry `i` takes the schema from version `i` to `i + 1`.
const MIGRATIONS: &[(&str, &str)] = &[
    (
        "jobs and chunks",
        r#"
CREATE TABLE schema_migrations (
    version     INTEGER PRIMARY KEY,
    description TEXT NOT NULL,
    applied_at  INTEGER NOT NULL
);
CREATE TABLE jobs (
    id          INTEGER PRIMARY KEY,
    identity    TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    finished_at INTEGER,
    summary     TEXT
);
CREATE TABLE chunks (
    job_id           INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    chunk            INTEGER NOT NULL CHECK (chunk >= 0),
    state            TEXT NOT NULL CHECK (state IN ('pending', 'claimed', 'committed')),
    claim_owner      TEXT,
    lease_expires_at INTEGER,
    attempt          INTEGER NOT NULL DEFAULT 0,
    start_file       INTEGER,
    start_offset     INTEGER,
    start_line       INTEGER,
    start_seq        INTEGER,
    end_file         INTEGER,
    end_offset       INTEGER,
    end_line         INTEGER,
    end_seq          INTEGER,
    records          INTEGER,
    ok               INTEGER,
    failed           INTEGER,
    filtered         INTEGER,
    outputs          INTEGER,
    retries          INTEGER,
    output_end       INTEGER,
    failures_end     INTEGER,
    committed_at     INTEGER,
    PRIMARY KEY (job_id, chunk),
    CHECK (state <> 'committed' OR (
        start_file IS NOT NULL AND start_offset IS NOT NULL AND start_line IS NOT NULL
        AND start_seq IS NOT NULL AND end_file IS NOT NULL AND end_offset IS NOT NULL
        AND end_line IS NOT NULL AND end_seq IS NOT NULL AND records IS NOT NULL
        AND ok IS NOT NULL AND failed IS NOT NULL AND filtered IS NOT NULL
        AND outputs IS NOT NULL AND retries IS NOT NULL AND output_end IS NOT NULL
        AND failures_end IS NOT NULL AND committed_at IS NOT NULL))
) WITHOUT ROWID;
CREATE INDEX chunks_by_state ON chunks (job_id, state, chunk);
"#,
    ),
    (
        "format-neutral input positions",
        r#"
CREATE TABLE chunks_v1 AS SELECT * FROM chunks;
DROP TABLE chunks;
CREATE TABLE chunks (
    job_id           INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    chunk            INTEGER NOT NULL CHECK (chunk >= 0),
    state            TEXT NOT NULL CHECK (state IN ('pending', 'claimed', 'committed')),
    claim_owner      TEXT,
    lease_expires_at INTEGER,
    attempt          INTEGER NOT NULL DEFAULT 0,
    start_file       INTEGER,
    start_seq        INTEGER,
    start_token      BLOB,
    end_file         INTEGER,
    end_seq          INTEGER,
    end_token        BLOB,
    records          INTEGER,
    ok               INTEGER,
    failed           INTEGER,
    filtered         INTEGER,
    outputs          INTEGER,
    retries          INTEGER,
    output_end       INTEGER,
    failures_end     INTEGER,
    committed_at     INTEGER,
    PRIMARY KEY (job_id, chunk),
    CHECK (state <> 'committed' OR (
        start_file IS NOT NULL AND start_seq IS NOT NULL AND start_token IS NOT NULL
        AND end_file IS NOT NULL AND end_seq IS NOT NULL AND end_token IS NOT NULL
        AND records IS NOT NULL AND ok IS NOT NULL AND failed IS NOT NULL
        AND filtered IS NOT NULL AND outputs IS NOT NULL AND retries IS NOT NULL
        AND output_end IS NOT NULL AND failures_end IS NOT NULL AND committed_at IS NOT NULL))
) WITHOUT ROWID;
CREATE INDEX chunks_by_state ON chunks (job_id, state, chunk);
"#,
    ),
    (
        "run history and slowest records",
        r#"
CREATE TABLE history (
    job_id             INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    run                INTEGER NOT NULL CHECK (run >= 1),
    at                 INTEGER NOT NULL,
    elapsed_ms         INTEGER NOT NULL,
    interval_ms        INTEGER NOT NULL,
    ok                 INTEGER NOT NULL,
    failed             INTEGER NOT NULL,
    filtered           INTEGER NOT NULL,
    finished           INTEGER NOT NULL,
    records_per_sec    REAL NOT NULL,
    p50_ms             REAL,
    p90_ms             REAL,
    p99_ms             REAL,
    max_ms             REAL,
    latency_buckets    TEXT NOT NULL,
    in_flight          INTEGER NOT NULL,
    workers            TEXT NOT NULL,
    restarts           INTEGER NOT NULL,
    retries            INTEGER NOT NULL,
    rate_limit_wait_ms INTEGER NOT NULL
);
CREATE INDEX history_by_run ON history (job_id, run, at);
CREATE TABLE slowest (
    job_id      INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    run         INTEGER NOT NULL,
    record      INTEGER NOT NULL,
    file        TEXT NOT NULL,
    line        INTEGER NOT NULL,
    duration_ms REAL NOT NULL,
    attempts    INTEGER NOT NULL,
    outcome     TEXT NOT NULL,
    PRIMARY KEY (job_id, run, record)
);
"#,
    ),
    (
        "indexes for the largest committed offsets",
        // Each commit checks its offsets against the largest committed ones: without these,
        // a scan of every committed chunk of the job, so a job's commits cost the square of
        // its chunks (50,000 chunks: 19 ms per commit at the end).
        r#"
CREATE INDEX chunks_output_end ON chunks (job_id, state, output_end);
CREATE INDEX chunks_failures_end ON chunks (job_id, state, failures_end);
"#,
    ),
];

/// The largest committed output and dead-letter offsets of job `?1`: one step down each
/// index of migration 4, whatever the number of committed chunks.
const MAX_OFFSETS: &str = "SELECT \
     (SELECT MAX(output_end) FROM chunks WHERE job_id = ?1 AND state = 'committed'), \
     (SELECT MAX(failures_end) FROM chunks WHERE job_id = ?1 AND state = 'committed')";

/// The table migration 2 keeps version 1's chunks in: their byte offsets and lines cannot be
/// turned into format tokens, so a job that has any cannot be resumed (only restarted).
const LEGACY_CHUNKS: &str = "chunks_v1";

const CHUNK_COLUMNS: &str = "chunk, start_file, start_seq, start_token, \
     end_file, end_seq, end_token, records, ok, failed, filtered, outputs, retries, \
     output_end, failures_end";

/// The embedded ledger: SQLite through rusqlite (bundled SQLite), one job per state directory.
///
/// Open it with [`SqliteLedger::open`] from a locked [`StateDir`] to run a job, or with
/// [`SqliteLedger::open_read_only`] to look at a job while a run holds the lock.
#[derive(Debug)]
pub struct SqliteLedger {
    conn: Connection,
    path: PathBuf,
    job_id: Option<i64>,
    read_only: bool,
    /// Where leases and timestamps read the time.
    clock: Arc<dyn Clock>,
    /// Keeps the state directory locked for as long as this ledger exists.
    _lock: Option<Arc<crate::state_dir::HeldLock>>,
}

struct JobRow {
    id: i64,
    identity: String,
    created_at: i64,
    updated_at: i64,
    finished_at: Option<i64>,
    summary: Option<String>,
}

impl SqliteLedger {
    /// Opens (creating and migrating if needed) the ledger in a locked state directory.
    ///
    /// The ledger keeps its own handle on the lock, so the directory stays locked until both
    /// the `StateDir` and the ledger are dropped.
    pub fn open(state: &StateDir) -> Result<Self, LedgerError> {
        let path = state.path().join(LEDGER_FILE_NAME);
        let lock = state.lock_handle();
        let conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| sql_err(&path, "be opened", e))?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(|e| sql_err(&path, "set a busy timeout", e))?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(|e| sql_err(&path, "switch to WAL mode", e))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(LedgerError::Corrupt {
                path,
                detail: format!("SQLite refused WAL mode and stayed in {mode} mode"),
            });
        }
        conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")
            .map_err(|e| sql_err(&path, "set durability options", e))?;
        let mut ledger = SqliteLedger {
            conn,
            path,
            job_id: None,
            read_only: false,
            clock: Arc::new(SystemClock),
            _lock: Some(lock),
        };
        ledger.migrate()?;
        Ok(ledger)
    }

    /// Opens the ledger in `dir` read-only, without taking the lock, for `herdsman status`
    /// while a run may be writing. Fails with [`LedgerError::NotFound`] if there is no ledger.
    pub fn open_read_only(dir: &Path) -> Result<Self, LedgerError> {
        let path = dir.join(LEDGER_FILE_NAME);
        if !path.is_file() {
            return Err(LedgerError::NotFound {
                dir: dir.to_path_buf(),
            });
        }
        let conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| sql_err(&path, "be opened for reading", e))?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(|e| sql_err(&path, "set a busy timeout", e))?;
        let ledger = SqliteLedger {
            conn,
            path,
            job_id: None,
            read_only: true,
            clock: Arc::new(SystemClock),
            _lock: None,
        };
        let version = ledger.user_version()?;
        if version > SCHEMA_VERSION {
            return Err(ledger.newer_schema(version));
        }
        if version == 1 {
            // Not migrated yet (only a run migrates): its chunks hold version 1 positions.
            // (Version 2 reads fine: it only lacks the history, which then reads as empty.)
            return Err(LedgerError::OlderSchema {
                path: ledger.path,
                found: version,
            });
        }
        Ok(ledger)
    }

    /// The ledger file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the time for leases and timestamps from `clock` instead of the system clock (tests
    /// move a [`crate::ManualClock`] to expire leases without sleeping).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The clock's time in Unix milliseconds.
    fn now_ms(&self) -> i64 {
        to_ms(self.clock.now())
    }

    fn user_version(&self) -> Result<i64, LedgerError> {
        self.conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| sql_err(&self.path, "be read", e))
    }

    fn newer_schema(&self, found: i64) -> LedgerError {
        LedgerError::NewerSchema {
            path: self.path.clone(),
            found,
            supported: SCHEMA_VERSION,
        }
    }

    fn migrate(&mut self) -> Result<(), LedgerError> {
        let path = self.path.clone();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| sql_err(&path, "start a migration", e))?;
        let version: i64 = tx
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| sql_err(&path, "be read", e))?;
        if version > SCHEMA_VERSION {
            return Err(LedgerError::NewerSchema {
                path,
                found: version,
                supported: SCHEMA_VERSION,
            });
        }
        if version < 0 {
            return Err(LedgerError::Corrupt {
                path,
                detail: format!("negative schema version {version}"),
            });
        }
        let now = now_ms();
        for (i, (description, sql)) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let to = i as i64 + 1;
            let action = || format!("be migrated to schema version {to}");
            tx.execute_batch(sql)
                .map_err(|e| sql_err(&path, &action(), e))?;
            tx.execute(
                "INSERT INTO schema_migrations (version, description, applied_at) VALUES (?1, ?2, ?3)",
                params![to, description, now],
            )
            .map_err(|e| sql_err(&path, &action(), e))?;
            tx.pragma_update(None, "user_version", to)
                .map_err(|e| sql_err(&path, &action(), e))?;
        }
        if version < 2 {
            // Nothing to keep from version 1 unless it had chunks.
            let legacy: i64 = tx
                .query_row(&format!("SELECT COUNT(*) FROM {LEGACY_CHUNKS}"), [], |r| {
                    r.get(0)
                })
                .map_err(|e| sql_err(&path, "be migrated to schema version 2", e))?;
            if legacy == 0 {
                tx.execute_batch(&format!("DROP TABLE {LEGACY_CHUNKS}"))
                    .map_err(|e| sql_err(&path, "be migrated to schema version 2", e))?;
            }
        }
        tx.commit()
            .map_err(|e| sql_err(&path, "commit a migration", e))
    }

    /// Refuses a ledger that still holds chunks of schema version 1, whose positions cannot
    /// be read back (see [`LEGACY_CHUNKS`]).
    fn refuse_legacy_chunks(&self) -> Result<(), LedgerError> {
        let exists: bool = self
            .conn
            .query_row(
                "SELECT COUNT(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = ?1",
                [LEGACY_CHUNKS],
                |r| r.get(0),
            )
            .map_err(|e| sql_err(&self.path, "be read", e))?;
        if exists {
            return Err(LedgerError::OlderSchema {
                path: self.path.clone(),
                found: 1,
            });
        }
        Ok(())
    }

    /// The job row, if any. `None` also when the schema was never created (read-only view
    /// of a ledger whose first run died before migrating).
    fn job_row(&self) -> Result<Option<JobRow>, LedgerError> {
        if self.read_only && self.user_version()? == 0 {
            return Ok(None);
        }
        self.conn
            .query_row(
                "SELECT id, identity, created_at, updated_at, finished_at, summary \
                 FROM jobs ORDER BY id LIMIT 1",
                [],
                |r| {
                    Ok(JobRow {
                        id: r.get(0)?,
                        identity: r.get(1)?,
                        created_at: r.get(2)?,
                        updated_at: r.get(3)?,
                        finished_at: r.get(4)?,
                        summary: r.get(5)?,
                    })
                },
            )
            .optional()
            .map_err(|e| sql_err(&self.path, "read the job", e))
    }

    fn parse_identity(&self, json: &str) -> Result<JobIdentity, LedgerError> {
        serde_json::from_str(json).map_err(|e| LedgerError::Corrupt {
            path: self.path.clone(),
            detail: format!("the stored job identity is not valid JSON: {e}"),
        })
    }

    fn commits(&self, job_id: i64) -> Result<Vec<ChunkCommit>, LedgerError> {
        let sql = format!(
            "SELECT {CHUNK_COLUMNS} FROM chunks WHERE job_id = ?1 AND state = 'committed' ORDER BY chunk"
        );
        let mut stmt = self
            .conn
            .prepare_cached(&sql)
            .map_err(|e| sql_err(&self.path, "read the committed chunks", e))?;
        let rows = stmt
            .query_map([job_id], |r| Ok(read_commit(r)))
            .map_err(|e| sql_err(&self.path, "read the committed chunks", e))?;
        let mut out = Vec::new();
        for row in rows {
            let commit = row.map_err(|e| sql_err(&self.path, "read the committed chunks", e))?;
            out.push(commit.map_err(|detail| LedgerError::Corrupt {
                path: self.path.clone(),
                detail,
            })?);
        }
        Ok(out)
    }

    fn writable_job(&self) -> Result<i64, LedgerError> {
        if self.read_only {
            return Err(LedgerError::ReadOnly);
        }
        self.job_id.ok_or(LedgerError::NoJob)
    }

    /// Commits `commits` in one transaction: directly (`fence` = `None`), or through the
    /// claim `fence`, which must still be current.
    fn commit_rows(
        &mut self,
        commits: &[ChunkCommit],
        fence: Option<&Claim>,
    ) -> Result<(), LedgerError> {
        if commits.is_empty() {
            return Ok(());
        }
        let job_id = self.writable_job()?;
        let values = commits
            .iter()
            .map(Values::of)
            .collect::<Result<Vec<_>, _>>()?;
        let Some(first) = commits.first() else {
            return Ok(());
        };
        let path = self.path.clone();
        let now = self.now_ms();
        let action = || match commits {
            [one] => format!("commit chunk {}", one.chunk),
            many => format!(
                "commit chunks {} to {}",
                first.chunk,
                many[many.len() - 1].chunk
            ),
        };
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| sql_err(&path, &action(), e))?;
        let finished: Option<i64> = tx
            .query_row(
                "SELECT finished_at FROM jobs WHERE id = ?1",
                [job_id],
                |r| r.get(0),
            )
            .map_err(|e| sql_err(&path, &action(), e))?;
        if finished.is_some() {
            return Err(LedgerError::AlreadyFinished { chunk: first.chunk });
        }
        for (c, v) in commits.iter().zip(&values) {
            insert_commit(&tx, job_id, c, v, now, fence).map_err(|e| match e {
                Insert::Refused(e) => e,
                Insert::Sql(e) => sql_err(&path, &action(), e),
            })?;
        }
        tx.execute(
            "UPDATE jobs SET updated_at = ?2 WHERE id = ?1",
            params![job_id, now],
        )
        .map_err(|e| sql_err(&path, &action(), e))?;
        // Dropping the transaction on any early return above rolls everything back.
        tx.commit().map_err(|e| sql_err(&path, &action(), e))
    }
}

impl Ledger for SqliteLedger {
    fn open_job(&mut self, id: &JobIdentity) -> Result<Opened, LedgerError> {
        match self.job_row()? {
            None => {
                if self.read_only {
                    return Err(LedgerError::ReadOnly);
                }
                let json = serde_json::to_string(id).expect("a map of strings always serializes");
                let now = self.now_ms();
                self.conn
                    .execute(
                        "INSERT INTO jobs (identity, created_at, updated_at) VALUES (?1, ?2, ?2)",
                        params![json, now],
                    )
                    .map_err(|e| sql_err(&self.path, "record the job", e))?;
                self.job_id = Some(self.conn.last_insert_rowid());
                Ok(Opened::Fresh)
            }
            Some(job) => {
                self.refuse_legacy_chunks()?;
                let stored = self.parse_identity(&job.identity)?;
                if &stored != id {
                    return Err(LedgerError::IdentityChanged {
                        changes: stored.diff(id),
                    });
                }
                let commits = self.commits(job.id)?;
                self.job_id = Some(job.id);
                Ok(if job.finished_at.is_some() {
                    Opened::Finished {
                        commits,
                        summary_json: job.summary,
                    }
                } else {
                    Opened::Resumed { commits }
                })
            }
        }
    }

    fn reset(&mut self) -> Result<(), LedgerError> {
        if self.read_only {
            return Err(LedgerError::ReadOnly);
        }
        let path = self.path.clone();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| sql_err(&path, "start a reset", e))?;
        tx.execute_batch(&format!(
            "DELETE FROM history; DELETE FROM slowest; DELETE FROM chunks; DELETE FROM jobs; \
             DROP TABLE IF EXISTS {LEGACY_CHUNKS};"
        ))
        .map_err(|e| sql_err(&path, "be reset", e))?;
        tx.commit()
            .map_err(|e| sql_err(&path, "commit a reset", e))?;
        self.job_id = None;
        Ok(())
    }

    fn commit_chunks(&mut self, commits: &[ChunkCommit]) -> Result<(), LedgerError> {
        self.commit_rows(commits, None)
    }

    fn commit(&mut self, claim: &Claim, c: &ChunkCommit) -> Result<(), LedgerError> {
        if claim.chunk != c.chunk {
            return Err(LedgerError::ClaimMismatch {
                claimed: claim.chunk,
                committed: c.chunk,
            });
        }
        self.commit_rows(std::slice::from_ref(c), Some(claim))
    }

    fn plan_chunks(&mut self, chunks: &[ChunkPlan]) -> Result<(), LedgerError> {
        let job_id = self.writable_job()?;
        if chunks.is_empty() {
            return Ok(());
        }
        let values = chunks
            .iter()
            .map(plan_values)
            .collect::<Result<Vec<_>, _>>()?;
        let path = self.path.clone();
        let action = "record the planned chunks";
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| sql_err(&path, action, e))?;
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO chunks (job_id, chunk, state, attempt, \
                     start_file, start_seq, start_token, end_file, end_seq, end_token) \
                     VALUES (?1, ?2, 'pending', 0, ?3, ?4, ?5, ?6, ?7, ?8)",
                )
                .map_err(|e| sql_err(&path, action, e))?;
            for (v, p) in values.iter().zip(chunks) {
                insert
                    .execute(params![
                        job_id,
                        v[0],
                        v[1],
                        v[2],
                        p.start.token.as_bytes(),
                        v[3],
                        v[4],
                        p.end.token.as_bytes()
                    ])
                    .map_err(|e| sql_err(&path, action, e))?;
            }
        }
        tx.commit().map_err(|e| sql_err(&path, action, e))
    }

    fn claim(&mut self, owner: &str, lease: Duration) -> Result<Option<Claim>, LedgerError> {
        let job_id = self.writable_job()?;
        let now = self.now_ms();
        let expires = now.saturating_add(lease_ms(lease));
        let path = self.path.clone();
        let action = "claim a chunk";
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| sql_err(&path, action, e))?;
        let finished: Option<i64> = tx
            .query_row(
                "SELECT finished_at FROM jobs WHERE id = ?1",
                [job_id],
                |r| r.get(0),
            )
            .map_err(|e| sql_err(&path, action, e))?;
        if finished.is_some() {
            return Ok(None);
        }
        // The lowest pending chunk, or one whose lease ran out (`lease_expires_at < now`, as
        // the shared ledger's `FOR UPDATE SKIP LOCKED` query selects it).
        let found = tx
            .prepare_cached(
                "SELECT chunk, attempt, start_file, start_seq, start_token, \
                 end_file, end_seq, end_token FROM chunks \
                 WHERE job_id = ?1 AND (state = 'pending' \
                 OR (state = 'claimed' AND lease_expires_at < ?2)) \
                 ORDER BY chunk LIMIT 1",
            )
            .and_then(|mut stmt| {
                stmt.query_row(params![job_id, now], |r| Ok(read_planned(r)))
                    .optional()
            })
            .map_err(|e| sql_err(&path, action, e))?;
        let Some(found) = found else {
            return Ok(None);
        };
        let (chunk, attempt, start, end) = found.map_err(|detail| LedgerError::Corrupt {
            path: path.clone(),
            detail,
        })?;
        let attempt = attempt + 1;
        tx.execute(
            "UPDATE chunks SET state = 'claimed', claim_owner = ?3, lease_expires_at = ?4, \
             attempt = ?5 WHERE job_id = ?1 AND chunk = ?2",
            params![job_id, fenced(chunk), owner, expires, fenced(attempt)],
        )
        .map_err(|e| sql_err(&path, action, e))?;
        tx.commit().map_err(|e| sql_err(&path, action, e))?;
        Ok(Some(Claim {
            chunk,
            attempt,
            owner: owner.to_string(),
            start,
            end,
            lease_expires_at: from_ms(expires),
        }))
    }

    fn heartbeat(&mut self, claim: &Claim, lease: Duration) -> Result<SystemTime, LedgerError> {
        let job_id = self.writable_job()?;
        let expires = self.now_ms().saturating_add(lease_ms(lease));
        let action = format!("extend the lease on chunk {}", claim.chunk);
        let changed = self
            .conn
            .execute(
                "UPDATE chunks SET lease_expires_at = ?5 WHERE job_id = ?1 AND chunk = ?2 \
                 AND attempt = ?3 AND claim_owner = ?4 AND state = 'claimed'",
                params![
                    job_id,
                    fenced(claim.chunk),
                    fenced(claim.attempt),
                    claim.owner,
                    expires
                ],
            )
            .map_err(|e| sql_err(&self.path, &action, e))?;
        if changed == 0 {
            return Err(stale(claim));
        }
        Ok(from_ms(expires))
    }

    fn release(&mut self, claim: &Claim) -> Result<(), LedgerError> {
        let job_id = self.writable_job()?;
        let action = format!("release chunk {}", claim.chunk);
        let changed = self
            .conn
            .execute(
                "UPDATE chunks SET state = 'pending', claim_owner = NULL, lease_expires_at = NULL \
                 WHERE job_id = ?1 AND chunk = ?2 AND attempt = ?3 AND claim_owner = ?4 \
                 AND state = 'claimed'",
                params![
                    job_id,
                    fenced(claim.chunk),
                    fenced(claim.attempt),
                    claim.owner
                ],
            )
            .map_err(|e| sql_err(&self.path, &action, e))?;
        if changed == 0 {
            return Err(stale(claim));
        }
        Ok(())
    }

    fn totals(&self) -> Result<Totals, LedgerError> {
        let Some(job) = self.job_row()? else {
            return Ok(Totals::default());
        };
        let sums: [i64; 7] = self
            .conn
            .query_row(
                "SELECT COUNT(*), COALESCE(SUM(records), 0), COALESCE(SUM(ok), 0), \
                 COALESCE(SUM(failed), 0), COALESCE(SUM(filtered), 0), \
                 COALESCE(SUM(outputs), 0), COALESCE(SUM(retries), 0) \
                 FROM chunks WHERE job_id = ?1 AND state = 'committed'",
                [job.id],
                |r| {
                    Ok([
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                        r.get(6)?,
                    ])
                },
            )
            .map_err(|e| sql_err(&self.path, "sum the committed chunks", e))?;
        let mut u = [0u64; 7];
        for (slot, v) in u.iter_mut().zip(sums) {
            *slot = u64::try_from(v).map_err(|_| LedgerError::Corrupt {
                path: self.path.clone(),
                detail: format!("a sum over the committed chunks is negative ({v})"),
            })?;
        }
        Ok(Totals {
            chunks: u[0],
            counts: Counts {
                records: u[1],
                ok: u[2],
                failed: u[3],
                filtered: u[4],
                outputs: u[5],
                retries: u[6],
            },
        })
    }

    fn mark_finished(&mut self, summary_json: &str) -> Result<(), LedgerError> {
        let job_id = self.writable_job()?;
        let now = self.now_ms();
        self.conn
            .execute(
                "UPDATE jobs SET finished_at = ?2, updated_at = ?2, summary = ?3 WHERE id = ?1",
                params![job_id, now, summary_json],
            )
            .map_err(|e| sql_err(&self.path, "mark the job finished", e))?;
        Ok(())
    }

    fn status(&self) -> Result<LedgerStatus, LedgerError> {
        // One read transaction, so the job row and its chunks come from the same snapshot
        // even while a run is committing.
        let snapshot = self
            .conn
            .unchecked_transaction()
            .map_err(|e| sql_err(&self.path, "be read", e))?;
        let Some(job) = self.job_row()? else {
            return Ok(LedgerStatus::default());
        };
        self.refuse_legacy_chunks()?;
        let identity = self.parse_identity(&job.identity)?;
        let commits = self.commits(job.id)?;
        snapshot
            .finish()
            .map_err(|e| sql_err(&self.path, "be read", e))?;
        Ok(LedgerStatus {
            identity: Some(identity),
            totals: Totals::of(&commits),
            commits,
            created_at: Some(from_ms(job.created_at)),
            updated_at: Some(from_ms(job.updated_at)),
            finished_at: job.finished_at.map(from_ms),
            summary_json: job.summary,
        })
    }

    fn append_history(&mut self, samples: &[HistorySample]) -> Result<(), LedgerError> {
        let job_id = self.writable_job()?;
        if samples.is_empty() {
            return Ok(());
        }
        let path = self.path.clone();
        let action = "record the run's history";
        self.without_fsync(|conn| {
            let tx = conn.unchecked_transaction()?;
            {
                let mut stmt = tx.prepare_cached(
                    "INSERT INTO history (job_id, run, at, elapsed_ms, interval_ms, ok, failed, \
                     filtered, finished, records_per_sec, p50_ms, p90_ms, p99_ms, max_ms, \
                     latency_buckets, in_flight, workers, restarts, retries, rate_limit_wait_ms) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, \
                     ?16, ?17, ?18, ?19, ?20)",
                )?;
                for s in samples {
                    let buckets = serde_json::to_string(&s.latency_buckets)
                        .expect("a list of numbers always serializes");
                    let workers = serde_json::to_string(&s.workers)
                        .expect("a list of worker samples always serializes");
                    stmt.execute(params![
                        job_id,
                        s.run,
                        s.at_ms,
                        sat(s.elapsed_ms),
                        sat(s.interval_ms),
                        sat(s.ok),
                        sat(s.failed),
                        sat(s.filtered),
                        sat(s.finished),
                        finite(s.records_per_sec),
                        s.p50_ms.map(finite),
                        s.p90_ms.map(finite),
                        s.p99_ms.map(finite),
                        s.max_ms.map(finite),
                        buckets,
                        sat(s.in_flight),
                        workers,
                        sat(s.restarts),
                        sat(s.retries),
                        sat(s.rate_limit_wait_ms),
                    ])?;
                }
            }
            tx.commit()
        })
        .map_err(|e| sql_err(&path, action, e))
    }

    fn history(&self) -> Result<Vec<HistorySample>, LedgerError> {
        let Some(job) = self.job_row()? else {
            return Ok(Vec::new());
        };
        if !self.has_table("history")? {
            return Ok(Vec::new());
        }
        let action = "read the run's history";
        let mut stmt = self
            .conn
            .prepare(
                "SELECT run, at, elapsed_ms, interval_ms, ok, failed, filtered, finished, \
                 records_per_sec, p50_ms, p90_ms, p99_ms, max_ms, latency_buckets, in_flight, \
                 workers, restarts, retries, rate_limit_wait_ms \
                 FROM history WHERE job_id = ?1 ORDER BY run, at, rowid",
            )
            .map_err(|e| sql_err(&self.path, action, e))?;
        let rows = stmt
            .query_map([job.id], |r| {
                let buckets: String = r.get(13)?;
                let workers: String = r.get(15)?;
                Ok(HistorySample {
                    run: r.get(0)?,
                    at_ms: r.get(1)?,
                    elapsed_ms: unsat(r.get(2)?),
                    interval_ms: unsat(r.get(3)?),
                    ok: unsat(r.get(4)?),
                    failed: unsat(r.get(5)?),
                    filtered: unsat(r.get(6)?),
                    finished: unsat(r.get(7)?),
                    records_per_sec: r.get(8)?,
                    p50_ms: r.get(9)?,
                    p90_ms: r.get(10)?,
                    p99_ms: r.get(11)?,
                    max_ms: r.get(12)?,
                    // A damaged list reads as empty: history is for looking, not for resuming.
                    latency_buckets: serde_json::from_str(&buckets).unwrap_or_default(),
                    in_flight: unsat(r.get(14)?),
                    workers: serde_json::from_str(&workers).unwrap_or_default(),
                    restarts: unsat(r.get(16)?),
                    retries: unsat(r.get(17)?),
                    rate_limit_wait_ms: unsat(r.get(18)?),
                })
            })
            .map_err(|e| sql_err(&self.path, action, e))?;
        rows.collect::<Result<Vec<_>, _>>()
            .map_err(|e| sql_err(&self.path, action, e))
    }

    fn last_history_run(&self) -> Result<u32, LedgerError> {
        let Some(job) = self.job_row()? else {
            return Ok(0);
        };
        if !self.has_table("history")? {
            return Ok(0);
        }
        self.conn
            .query_row(
                "SELECT COALESCE(MAX(run), 0) FROM history WHERE job_id = ?1",
                [job.id],
                |r| r.get(0),
            )
            .map_err(|e| sql_err(&self.path, "read the run's history", e))
    }

    fn replace_slowest(&mut self, run: u32, records: &[SlowRecord]) -> Result<(), LedgerError> {
        let job_id = self.writable_job()?;
        let path = self.path.clone();
        self.without_fsync(|conn| {
            let tx = conn.unchecked_transaction()?;
            tx.execute(
                "DELETE FROM slowest WHERE job_id = ?1 AND run = ?2",
                params![job_id, run],
            )?;
            {
                let mut stmt = tx.prepare_cached(
                    "INSERT OR REPLACE INTO slowest (job_id, run, record, file, line, \
                     duration_ms, attempts, outcome) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )?;
                for s in records {
                    stmt.execute(params![
                        job_id,
                        run,
                        sat(s.record),
                        s.file,
                        sat(s.line),
                        finite(s.duration_ms),
                        s.attempts,
                        s.outcome,
                    ])?;
                }
            }
            tx.commit()
        })
        .map_err(|e| sql_err(&path, "record the slowest records", e))
    }

    fn slowest(&self) -> Result<Vec<SlowRecord>, LedgerError> {
        let Some(job) = self.job_row()? else {
            return Ok(Vec::new());
        };
        if !self.has_table("slowest")? {
            return Ok(Vec::new());
        }
        let action = "read the slowest records";
        let mut stmt = self
            .conn
            .prepare(
                "SELECT run, record, file, line, duration_ms, attempts, outcome FROM slowest \
                 WHERE job_id = ?1 ORDER BY run, duration_ms DESC, record",
            )
            .map_err(|e| sql_err(&self.path, action, e))?;
        let rows = stmt
            .query_map([job.id], |r| {
                Ok(SlowRecord {
                    run: r.get(0)?,
                    record: unsat(r.get(1)?),
                    file: r.get(2)?,
                    line: unsat(r.get(3)?),
                    duration_ms: r.get(4)?,
                    attempts: r.get(5)?,
                    outcome: r.get(6)?,
                })
            })
            .map_err(|e| sql_err(&self.path, action, e))?;
        rows.collect::<Result<Vec<_>, _>>()
            .map_err(|e| sql_err(&self.path, action, e))
    }
}

impl SqliteLedger {
    /// Runs `f` with `synchronous = NORMAL`: in WAL mode its commit then waits for no fsync,
    /// and the next chunk commit (`synchronous = FULL`) makes it durable with its own.
    fn without_fsync<T>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T> {
        self.conn.execute_batch("PRAGMA synchronous = NORMAL")?;
        let result = f(&self.conn);
        let restored = self.conn.execute_batch("PRAGMA synchronous = FULL");
        let value = result?;
        restored?;
        Ok(value)
    }

    /// Whether the ledger has the table `name` (a ledger of schema version 2, read without
    /// migrating, has no history tables).
    fn has_table(&self, name: &str) -> Result<bool, LedgerError> {
        self.conn
            .query_row(
                "SELECT COUNT(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = ?1",
                [name],
                |r| r.get(0),
            )
            .map_err(|e| sql_err(&self.path, "be read", e))
    }
}

/// A count as SQLite stores it (saturating: history is for looking, a clipped count is fine).
fn sat(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A stored count read back (a negative one, which this code never writes, reads as 0).
fn unsat(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// A finite number to store (SQLite stores NaN as NULL, which a NOT NULL column refuses).
fn finite(x: f64) -> f64 {
    if x.is_finite() {
        x
    } else {
        0.0
    }
}

/// A chunk's row as a commit finds it.
struct Existing {
    state: String,
    attempt: i64,
    owner: Option<String>,
    lease_expires_at: Option<i64>,
}

enum Insert {
    Refused(LedgerError),
    Sql(rusqlite::Error),
}

impl From<rusqlite::Error> for Insert {
    fn from(e: rusqlite::Error) -> Self {
        Insert::Sql(e)
    }
}

/// Inserts one committed chunk inside `tx`, after checking it is not committed yet and that its
/// offsets do not go below committed ones.
fn insert_commit(
    tx: &rusqlite::Transaction<'_>,
    job_id: i64,
    c: &ChunkCommit,
    v: &Values,
    now: i64,
    fence: Option<&Claim>,
) -> Result<(), Insert> {
    let n = &v.numbers;
    let existing: Option<Existing> = tx
        .prepare_cached(
            "SELECT state, attempt, claim_owner, lease_expires_at FROM chunks \
             WHERE job_id = ?1 AND chunk = ?2",
        )?
        .query_row(params![job_id, n[0]], |r| {
            Ok(Existing {
                state: r.get(0)?,
                attempt: r.get(1)?,
                owner: r.get(2)?,
                lease_expires_at: r.get(3)?,
            })
        })
        .optional()?;
    let refuse = |e| Err(Insert::Refused(e));
    let attempt = match (fence, &existing) {
        (_, Some(e))
            if e.state == "committed" && fence.is_none_or(|f| fenced(f.attempt) == e.attempt) =>
        {
            return refuse(LedgerError::AlreadyCommitted { chunk: c.chunk });
        }
        // Fenced: only the chunk's current claim may commit it.
        (Some(f), Some(e))
            if e.state == "claimed"
                && e.attempt == fenced(f.attempt)
                && e.owner.as_deref() == Some(f.owner.as_str()) =>
        {
            e.attempt
        }
        (Some(f), _) => return refuse(stale(f)),
        // Direct: a chunk someone holds under a live lease is theirs to commit.
        (None, Some(e)) if e.state == "claimed" && e.lease_expires_at.is_some_and(|t| t >= now) => {
            return refuse(LedgerError::ClaimHeld {
                chunk: c.chunk,
                owner: e.owner.clone().unwrap_or_default(),
            });
        }
        (None, existing) => existing.as_ref().map_or(1, |e| e.attempt + 1),
    };
    let (max_out, max_fail): (Option<i64>, Option<i64>) = tx
        .prepare_cached(MAX_OFFSETS)?
        .query_row([job_id], |r| Ok((r.get(0)?, r.get(1)?)))?;
    for (file, got, committed) in [
        ("output", c.output_end, max_out),
        ("failures", c.failures_end, max_fail),
    ] {
        if let Some(committed) = committed {
            let committed = committed as u64;
            if got < committed {
                return Err(Insert::Refused(LedgerError::OffsetsWentBackwards {
                    chunk: c.chunk,
                    file,
                    got,
                    committed,
                }));
            }
        }
    }
    tx.prepare_cached(&format!(
        "INSERT OR REPLACE INTO chunks (job_id, state, attempt, committed_at, \
         claim_owner, lease_expires_at, {CHUNK_COLUMNS}) \
         VALUES (?1, 'committed', ?2, ?3, NULL, NULL, \
         ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)"
    ))?
    .execute(params![
        job_id,
        attempt,
        now,
        n[0],
        n[1],
        n[2],
        c.start.token.as_bytes(),
        n[3],
        n[4],
        c.end.token.as_bytes(),
        n[5],
        n[6],
        n[7],
        n[8],
        n[9],
        n[10],
        n[11],
        n[12]
    ])?;
    Ok(())
}

/// The commit's numbers in `CHUNK_COLUMNS` order (the two tokens left out), checked to fit
/// SQLite's signed integers.
struct Values {
    numbers: [i64; 13],
}

impl Values {
    fn of(c: &ChunkCommit) -> Result<Values, LedgerError> {
        let fields: [(&'static str, u64); 13] = [
            ("chunk", c.chunk),
            ("start.file_index", u64::from(c.start.file_index)),
            ("start.seq", c.start.seq),
            ("end.file_index", u64::from(c.end.file_index)),
            ("end.seq", c.end.seq),
            ("records", c.counts.records),
            ("ok", c.counts.ok),
            ("failed", c.counts.failed),
            ("filtered", c.counts.filtered),
            ("outputs", c.counts.outputs),
            ("retries", c.counts.retries),
            ("output_end", c.output_end),
            ("failures_end", c.failures_end),
        ];
        let mut numbers = [0i64; 13];
        for (slot, (field, value)) in numbers.iter_mut().zip(fields) {
            *slot =
                i64::try_from(value).map_err(|_| LedgerError::ValueTooLarge { field, value })?;
        }
        Ok(Values { numbers })
    }
}

/// Reads one `CHUNK_COLUMNS` row; the inner error says which stored value is invalid.
fn read_commit(r: &Row<'_>) -> Result<ChunkCommit, String> {
    let u = |i: usize| -> Result<u64, String> {
        let v: i64 = r
            .get(i)
            .map_err(|e| format!("chunk column {i} is unreadable: {e}"))?;
        u64::try_from(v).map_err(|_| format!("chunk column {i} holds the negative value {v}"))
    };
    let f = |i: usize| -> Result<u32, String> {
        let v = u(i)?;
        u32::try_from(v).map_err(|_| format!("chunk column {i} holds the file index {v}"))
    };
    let t = |i: usize| -> Result<Token, String> {
        let v: Vec<u8> = r
            .get(i)
            .map_err(|e| format!("chunk column {i} is unreadable: {e}"))?;
        Token::new(&v).map_err(|_| {
            format!(
                "chunk column {i} holds a position token of {} bytes (at most {} are written)",
                v.len(),
                Token::CAPACITY
            )
        })
    };
    Ok(ChunkCommit {
        chunk: u(0)?,
        start: Position {
            file_index: f(1)?,
            seq: u(2)?,
            token: t(3)?,
        },
        end: Position {
            file_index: f(4)?,
            seq: u(5)?,
            token: t(6)?,
        },
        counts: Counts {
            records: u(7)?,
            ok: u(8)?,
            failed: u(9)?,
            filtered: u(10)?,
            outputs: u(11)?,
            retries: u(12)?,
        },
        output_end: u(13)?,
        failures_end: u(14)?,
    })
}

/// A planned chunk's number and positions' numbers in the order of the `INSERT` in
/// `plan_chunks` (the tokens left out, as in [`Values::of`]), checked to fit SQLite's signed
/// integers.
fn plan_values(p: &ChunkPlan) -> Result<[i64; 5], LedgerError> {
    let fields: [(&'static str, u64); 5] = [
        ("chunk", p.chunk),
        ("start.file_index", u64::from(p.start.file_index)),
        ("start.seq", p.start.seq),
        ("end.file_index", u64::from(p.end.file_index)),
        ("end.seq", p.end.seq),
    ];
    let mut out = [0i64; 5];
    for (slot, (field, value)) in out.iter_mut().zip(fields) {
        *slot = i64::try_from(value).map_err(|_| LedgerError::ValueTooLarge { field, value })?;
    }
    Ok(out)
}

/// Reads `chunk, attempt` and the six position columns (mapped as in [`read_commit`]) of a
/// claimable row; the inner error says which stored value is invalid.
#[allow(clippy::type_complexity)]
fn read_planned(r: &Row<'_>) -> Result<(u64, u64, Position, Position), String> {
    let u = |i: usize| -> Result<u64, String> {
        let v: Option<i64> = r
            .get(i)
            .map_err(|e| format!("chunk column {i} is unreadable: {e}"))?;
        let v = v.ok_or_else(|| format!("planned chunk column {i} is empty"))?;
        u64::try_from(v).map_err(|_| format!("chunk column {i} holds the negative value {v}"))
    };
    let f = |i: usize| -> Result<u32, String> {
        let v = u(i)?;
        u32::try_from(v).map_err(|_| format!("chunk column {i} holds the file index {v}"))
    };
    let t = |i: usize| -> Result<Token, String> {
        let v: Option<Vec<u8>> = r
            .get(i)
            .map_err(|e| format!("chunk column {i} is unreadable: {e}"))?;
        let v = v.ok_or_else(|| format!("planned chunk column {i} is empty"))?;
        Token::new(&v).map_err(|_| {
            format!(
                "chunk column {i} holds a position token of {} bytes (at most {} are written)",
                v.len(),
                Token::CAPACITY
            )
        })
    };
    Ok((
        u(0)?,
        u(1)?,
        Position {
            file_index: f(2)?,
            seq: u(3)?,
            token: t(4)?,
        },
        Position {
            file_index: f(5)?,
            seq: u(6)?,
            token: t(7)?,
        },
    ))
}

/// A chunk or attempt number as stored; one too large to be stored matches no row.
fn fenced(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(-1)
}

/// A lease length in milliseconds, saturating.
fn lease_ms(lease: Duration) -> i64 {
    i64::try_from(lease.as_millis()).unwrap_or(i64::MAX)
}

/// The refusal of a claim that is no longer current.
fn stale(claim: &Claim) -> LedgerError {
    LedgerError::StaleClaim {
        chunk: claim.chunk,
        attempt: claim.attempt,
    }
}

fn sql_err(path: &Path, action: &str, e: rusqlite::Error) -> LedgerError {
    match e.sqlite_error_code() {
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => LedgerError::Corrupt {
            path: path.to_path_buf(),
            detail: e.to_string(),
        },
        _ => LedgerError::Sqlite {
            path: path.to_path_buf(),
            action: action.to_string(),
            source: e,
        },
    }
}

fn now_ms() -> i64 {
    to_ms(SystemTime::now())
}

fn to_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn from_ms(ms: i64) -> SystemTime {
    if ms >= 0 {
        UNIX_EPOCH + Duration::from_millis(ms as u64)
    } else {
        UNIX_EPOCH - Duration::from_millis(ms.unsigned_abs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commit(k: u64) -> ChunkCommit {
        ChunkCommit {
            chunk: k,
            start: Position::default(),
            end: Position::default(),
            counts: Counts {
                records: 1,
                ok: 1,
                outputs: 1,
                ..Counts::default()
            },
            output_end: k + 1,
            failures_end: 0,
        }
    }

    /// A full disk, simulated by capping the database size: the commit that does not fit fails
    /// with a message about free space, changes nothing, and the ledger works again once there
    /// is room.
    #[test]
    fn a_full_disk_fails_the_commit_cleanly() {
        let tmp = tempfile::tempdir().unwrap();
        let state = StateDir::open(&tmp.path().join("state")).unwrap();
        let mut ledger = SqliteLedger::open(&state).unwrap();
        ledger
            .open_job(&JobIdentity::new().with("identity", "x".repeat(100)))
            .unwrap();
        let pages: i64 = ledger
            .conn
            .query_row("PRAGMA page_count", [], |r| r.get(0))
            .unwrap();
        ledger
            .conn
            .pragma_update(None, "max_page_count", pages)
            .unwrap();
        let mut committed = 0;
        let err = loop {
            match ledger.commit_chunk(&commit(committed)) {
                Ok(()) => committed += 1,
                Err(e) => break e,
            }
            assert!(committed < 100_000, "the capped database never filled");
        };
        assert!(
            matches!(&err, LedgerError::Sqlite { source, .. }
                if source.sqlite_error_code() == Some(ErrorCode::DiskFull)),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("could not commit chunk {committed}")),
            "{msg}"
        );
        assert!(msg.contains("free space"), "{msg}");
        let commits = ledger.status().unwrap().commits;
        assert_eq!(commits, (0..committed).map(commit).collect::<Vec<_>>());

        ledger
            .conn
            .pragma_update(None, "max_page_count", 1_000_000)
            .unwrap();
        ledger.commit_chunk(&commit(committed)).unwrap();
        assert_eq!(ledger.status().unwrap().totals.chunks, committed + 1);
    }

    #[test]
    fn a_negative_stored_count_is_reported_as_damaged() {
        let tmp = tempfile::tempdir().unwrap();
        let state = StateDir::open(&tmp.path().join("state")).unwrap();
        let mut ledger = SqliteLedger::open(&state).unwrap();
        let id = JobIdentity::new().with("a", "b");
        ledger.open_job(&id).unwrap();
        ledger.commit_chunk(&commit(0)).unwrap();
        ledger
            .conn
            .execute("UPDATE chunks SET records = -1", [])
            .unwrap();
        let err = ledger.open_job(&id).unwrap_err();
        match err {
            LedgerError::Corrupt { detail, .. } => {
                assert_eq!(detail, "chunk column 7 holds the negative value -1")
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }

    #[test]
    fn the_largest_committed_offsets_are_read_from_indexes_not_a_scan() {
        let tmp = tempfile::tempdir().unwrap();
        let state = StateDir::open(&tmp.path().join("state")).unwrap();
        let mut ledger = SqliteLedger::open(&state).unwrap();
        ledger.open_job(&JobIdentity::new().with("a", "b")).unwrap();
        for k in 0..3 {
            ledger.commit_chunk(&commit(k)).unwrap();
        }
        let plan: Vec<String> = ledger
            .conn
            .prepare(&format!("EXPLAIN QUERY PLAN {MAX_OFFSETS}"))
            .unwrap()
            .query_map([1], |r| r.get::<_, String>(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let searches: Vec<&String> = plan.iter().filter(|d| d.contains("chunks")).collect();
        assert_eq!(searches.len(), 2, "{plan:?}");
        assert!(
            searches[0].contains("USING COVERING INDEX chunks_output_end (job_id=? AND state=?)"),
            "{plan:?}"
        );
        assert!(
            searches[1].contains("USING COVERING INDEX chunks_failures_end (job_id=? AND state=?)"),
            "{plan:?}"
        );
        let (out, fail): (Option<i64>, Option<i64>) = ledger
            .conn
            .query_row(MAX_OFFSETS, [1], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap();
        let last = commit(2);
        assert_eq!(
            (out, fail),
            (Some(last.output_end as i64), Some(last.failures_end as i64))
        );
    }

    #[test]
    fn migration_records_every_version_and_is_idempotent() {
        let tmp = tempfile::tempdir().unwrap();
        let state = StateDir::open(&tmp.path().join("state")).unwrap();
        drop(SqliteLedger::open(&state).unwrap());
        let ledger = SqliteLedger::open(&state).unwrap();
        let versions: Vec<i64> = ledger
            .conn
            .prepare("SELECT version FROM schema_migrations ORDER BY version")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(versions, (1..=SCHEMA_VERSION).collect::<Vec<_>>());
        assert_eq!(ledger.user_version().unwrap(), SCHEMA_VERSION);
        let mode: String = ledger
            .conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let sync: i64 = ledger
            .conn
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap();
        assert_eq!(sync, 2, "synchronous=FULL");
    }
}
