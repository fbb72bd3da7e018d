//! The PostgreSQL ledger: many machines share one job through one database. Chunks are rows;
//! a node claims the lowest claimable one with `FOR UPDATE SKIP LOCKED` under a lease whose
//! expiry is computed by the database clock (`now()`), extends it with heartbeats, and commits
//! the chunk's state, counts, positions and output part names in one transaction fenced by the
//! claim's attempt number, so a node that lost its lease (a paused "zombie") can never commit.
//!
//! It must never report a commit that is not durable or apply one twice: every commit is one
//! transaction with `synchronous_commit = on`, and every call that lost its connection is
//! retried on a new one with backoff, made idempotent by an operation id stored with the row
//! (a commit whose reply was lost is recognised as done, not refused or repeated).
//!
//! [`PostgresLedger::commit_and_claim`] commits a chunk and claims the next in one statement
//! (one transaction, one round trip, one WAL flush), so a node pays one durable transaction
//! per chunk; the claim is made only if the commit is.
//!
//! [`PostgresLedger`] implements [`herdsman_ledger::Ledger`] and passes its conformance suite.
//! The wire connection is plain TCP or a Unix socket ([`postgres::NoTls`]): TLS is not
//! supported yet. See `docs/distributed.md` for the protocol and every failure case.
//!
//! ```no_run
//! use std::time::Duration;
//! use herdsman_ledger::{ChunkPlan, JobIdentity, Ledger, Position};
//! use herdsman_ledger_postgres::{PostgresLedger, PostgresOptions};
//! let mut ledger = PostgresLedger::connect(
//!     "postgres://herdsman@db.internal:5432/jobs",
//!     PostgresOptions { job: "nightly-scores".into(), ..PostgresOptions::default() },
//! )?;
//! ledger.open_job(&JobIdentity::new().with("input.0.path", "s3://bucket/in.csv"))?;
//! ledger.plan_chunks(&[ChunkPlan { chunk: 0, start: Position::default(), end: Position::default() }])?;
//! while let Some(claim) = ledger.claim("node-a:4242", Duration::from_secs(30))? {
//!     // ... process the chunk, heartbeat every 10 s, write part-<chunk>-<attempt> ...
//!     let commit = herdsman_ledger::ChunkCommit {
//!         chunk: claim.chunk, start: claim.start, end: claim.end,
//!         counts: herdsman_ledger::Counts::default(), output_end: 0, failures_end: 0,
//!     };
//!     ledger.commit_with_parts(&claim, &commit, &[format!("part-{}-{}", claim.chunk, claim.attempt)])?;
//! }
//! # Ok::<(), herdsman_ledger::LedgerError>(())
//! ```

#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod schema;
#[cfg(feature = "test-support")]
pub mod test_server;

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use herdsman_ledger::{
    ChunkCommit, ChunkPlan, Claim, Clock, Counts, JobIdentity, Ledger, LedgerError, LedgerStatus,
    Opened, Position, Token, Totals,
};
use postgres::types::ToSql;
use postgres::{Client, GenericClient, NoTls, Row, Statement};

pub use schema::SCHEMA_VERSION;

/// The name errors give the backend.
const BACKEND: &str = "PostgreSQL";

/// The first wait before retrying a call whose connection was lost; it doubles up to
/// [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(50);

/// The longest wait between two retries.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// The channel on which [`Ledger::mark_finished`] announces that a job is finished, with the
/// job's name as the payload (delivered when its transaction commits): nodes waiting for
/// the end `LISTEN` on it instead of polling.
pub const FINISHED_CHANNEL: &str = "herdsman_job_finished";

/// Leases longer than this are cut to it (timestamps have a finite range).
pub const MAX_LEASE: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Where a ledger lives inside its database, and how patiently it talks to the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PostgresOptions {
    /// The PostgreSQL schema holding the ledger's tables, created on first use (lowercase
    /// letters, digits and `_`, not starting with a digit, at most 63 bytes). Default
    /// `herdsman`.
    pub schema: String,
    /// The job's name: every node that names the same job in the same schema shares it.
    /// Default `default`.
    pub job: String,
    /// How long one call keeps retrying (reconnecting with backoff) when the server cannot be
    /// reached or restarts, before it fails. Default 60 s.
    pub retry_for: Duration,
    /// How long one connection attempt may take. Default 10 s.
    pub connect_timeout: Duration,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        PostgresOptions {
            schema: "herdsman".into(),
            job: "default".into(),
            retry_for: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
        }
    }
}

/// The output parts a committed chunk references: written by the attempt that committed it,
/// and by no other.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkParts {
    /// The chunk number.
    pub chunk: u64,
    /// The attempt that committed the chunk.
    pub attempt: u64,
    /// The part names given to [`PostgresLedger::commit_with_parts`] (empty for a commit
    /// without parts).
    pub parts: Vec<String>,
}

/// Where a planned chunk is in its life: [`PostgresLedger::chunk_rows`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChunkState {
    /// Planned, waiting for a node to claim it.
    Pending,
    /// Held by a node under a lease.
    Claimed,
    /// Done: its counts and parts are recorded.
    Committed,
}

/// One planned chunk as [`PostgresLedger::chunk_rows`] reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkRow {
    /// The chunk number.
    pub chunk: u64,
    /// Pending, claimed or committed.
    pub state: ChunkState,
    /// The node that holds it, or that last held it (for a committed chunk, the committer).
    pub owner: Option<String>,
    /// When the holder's lease runs out (database clock).
    pub lease_expires_at: Option<SystemTime>,
    /// Whether it is claimed under a lease that already ran out (its holder looks dead).
    pub lease_expired: bool,
    /// Claims so far (the fencing token of the last one).
    pub attempt: u64,
    /// Records in it, once committed (0 before).
    pub records: u64,
    /// When it was committed.
    pub committed_at: Option<SystemTime>,
}

/// What [`PostgresLedger::commit_batch`] did: one result per chunk of the batch, in its order
/// (`Ok` committed, or the chunk's refusal), and the next chunk claimed with the batch.
pub type BatchOutcome = (Vec<Result<(), LedgerError>>, Option<Claim>);

/// What [`PostgresLedger::commit_batch_claiming`] did: one result per chunk of the batch, in
/// its order, and the next chunks claimed with the batch, in chunk order.
pub type BatchClaims = (Vec<Result<(), LedgerError>>, Vec<Claim>);

/// A [`Ledger`] in a PostgreSQL database, shared by every node that connects to the same
/// database, schema and job.
///
/// Lease expiry times come from the database clock (`now()`), so nodes need not agree on the
/// time; [`PostgresLedger::with_clock`] replaces it with a [`Clock`] in tests.
pub struct PostgresLedger {
    config: postgres::Config,
    options: PostgresOptions,
    /// The schema name, quoted for SQL.
    quoted: String,
    /// The ledger's place without credentials, for messages.
    location: String,
    /// The connection, `None` after it was lost until the next call reconnects.
    conn: Mutex<Option<Conn>>,
    job_id: Option<i64>,
    /// `None`: the database clock.
    clock: Option<Arc<dyn Clock>>,
    /// Unique to this ledger: the prefix of its operation ids.
    instance: String,
    ops: AtomicU64,
}

impl std::fmt::Debug for PostgresLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresLedger")
            .field("location", &self.location)
            .field("job_id", &self.job_id)
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

/// One connection and its prepared statements.
struct Conn {
    client: Client,
    q: Queries,
}

/// Why a call failed: a refusal by the ledger's rules, or the database.
enum Fail {
    Refused(LedgerError),
    Db(postgres::Error),
}

impl From<postgres::Error> for Fail {
    fn from(e: postgres::Error) -> Self {
        Fail::Db(e)
    }
}

impl From<LedgerError> for Fail {
    fn from(e: LedgerError) -> Self {
        Fail::Refused(e)
    }
}

/// The columns of a committed chunk, in the order [`read_commit`] reads them.
const CHUNK_COLUMNS: &str = "chunk, start_file, start_seq, start_token, end_file, end_seq, \
     end_token, records, ok, failed, filtered, outputs, retries, output_end, failures_end";

/// The `SET` list writing a commit's values from parameters `$first`.. in the order of
/// [`CommitValues::params`], then the part names.
fn set_commit(first: usize, keep_owner: bool) -> String {
    let columns = [
        "start_file",
        "start_seq",
        "start_token",
        "end_file",
        "end_seq",
        "end_token",
        "records",
        "ok",
        "failed",
        "filtered",
        "outputs",
        "retries",
        "output_end",
        "failures_end",
        "parts",
    ];
    // A commit through a claim keeps the committing node's name (shown by status); a direct
    // commit has no owner.
    let mut out = String::from(if keep_owner {
        "state = 'committed', lease_expires_at = NULL"
    } else {
        "state = 'committed', claim_owner = NULL, lease_expires_at = NULL"
    });
    for (i, column) in columns.iter().enumerate() {
        out.push_str(&format!(", {column} = ${}", first + i));
    }
    out
}

/// One statement of a connection: its text, and its prepared form once it first ran.
struct Lazy {
    sql: String,
    prepared: std::cell::OnceCell<Statement>,
}

impl Lazy {
    fn new(sql: String) -> Lazy {
        Lazy {
            sql,
            prepared: std::cell::OnceCell::new(),
        }
    }

    /// The prepared statement, preparing it on `c` (the connection it belongs to, or a
    /// transaction on it) the first time.
    fn get(&self, c: &mut impl GenericClient) -> Result<&Statement, postgres::Error> {
        if let Some(st) = self.prepared.get() {
            return Ok(st);
        }
        let st = c.prepare(&self.sql)?;
        Ok(self.prepared.get_or_init(|| st))
    }

    fn execute(
        &self,
        c: &mut impl GenericClient,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, postgres::Error> {
        let st = self.get(c)?;
        c.execute(st, params)
    }

    fn query(
        &self,
        c: &mut impl GenericClient,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, postgres::Error> {
        let st = self.get(c)?;
        c.query(st, params)
    }

    fn query_one(
        &self,
        c: &mut impl GenericClient,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Row, postgres::Error> {
        let st = self.get(c)?;
        c.query_one(st, params)
    }

    fn query_opt(
        &self,
        c: &mut impl GenericClient,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, postgres::Error> {
        let st = self.get(c)?;
        c.query_opt(st, params)
    }
}

/// Every statement the ledger runs, each prepared on its connection the first time it runs
/// there (a heartbeat's connection prepares one statement, not thirty).
struct Queries {
    job_insert: Lazy,
    job_select: Lazy,
    job_finished: Lazy,
    commits: Lazy,
    reset: Lazy,
    plan: Lazy,
    claim: Lazy,
    claim_many: Lazy,
    claimed_by_op: Lazy,
    heartbeat: Lazy,
    release: Lazy,
    commit_fenced: Lazy,
    commit_and_claim: Lazy,
    commit_diagnose: Lazy,
    committed_by_op: Lazy,
    ensure_row: Lazy,
    lock_row: Lazy,
    max_offsets: Lazy,
    commit_direct: Lazy,
    finish: Lazy,
    totals: Lazy,
    all_committed: Lazy,
    finished_by_name: Lazy,
    commit_many: Lazy,
    status_job: Lazy,
    manifest: Lazy,
    chunk_rows: Lazy,
}

impl Queries {
    fn new(s: &str) -> Queries {
        // `now` in every statement: the test clock's time when given, else the database's.
        let now = "COALESCE($3::timestamptz, now())";
        // The claim of up to `limit` chunks (a number or a parameter), in chunk order.
        let claim_sql = |limit: &str| {
            format!(
                "WITH pick AS ( \
                     SELECT chunk FROM {s}.chunks \
                      WHERE job_id = $1 AND state <> 'committed' \
                        AND (state = 'pending' OR lease_expires_at < {now}) \
                        AND NOT EXISTS (SELECT 1 FROM {s}.jobs \
                                         WHERE id = $1 AND finished_at IS NOT NULL) \
                      ORDER BY chunk LIMIT {limit} \
                      FOR UPDATE SKIP LOCKED) \
                 UPDATE {s}.chunks c SET state = 'claimed', claim_owner = $2, \
                        lease_expires_at = {now} + $4::bigint * interval '1 microsecond', \
                        attempt = c.attempt + 1, last_op = $5 \
                  WHERE c.job_id = $1 AND c.chunk = ANY(ARRAY(SELECT chunk FROM pick)) \
                 RETURNING c.chunk, c.attempt, c.start_file, c.start_seq, c.start_token, \
                           c.end_file, c.end_seq, c.end_token, c.lease_expires_at"
            )
        };
        let p = Lazy::new;
        Queries {
            job_insert: p(format!(
                "INSERT INTO {s}.jobs (name, identity, created_at, updated_at, created_op) \
                 VALUES ($1, $2, {now}, {now}, $4) ON CONFLICT (name) DO NOTHING RETURNING id"
            )),
            job_select: p(format!(
                "SELECT id, identity, finished_at, summary, created_op FROM {s}.jobs WHERE name = $1"
            )),
            job_finished: p(format!(
                "SELECT finished_at IS NOT NULL FROM {s}.jobs WHERE id = $1"
            )),
            commits: p(format!(
                "SELECT {CHUNK_COLUMNS} FROM {s}.chunks WHERE job_id = $1 AND state = 'committed' \
                 ORDER BY chunk"
            )),
            // The job and its chunks (no foreign key deletes them: schema version 2).
            reset: p(format!(
                "WITH gone AS (DELETE FROM {s}.jobs WHERE name = $1 RETURNING id) \
                 DELETE FROM {s}.chunks WHERE job_id IN (SELECT id FROM gone)"
            )),
            plan: p(format!(
                "INSERT INTO {s}.chunks (job_id, chunk, state, attempt, start_file, start_seq, \
                 start_token, end_file, end_seq, end_token) \
                 SELECT $1, k, 'pending', 0, sf, ss, st, ef, es, et \
                 FROM unnest($2::bigint[], $3::bigint[], $4::bigint[], $5::bytea[], \
                             $6::bigint[], $7::bigint[], $8::bytea[]) AS p(k, sf, ss, st, ef, es, et) \
                 ON CONFLICT (job_id, chunk) DO NOTHING"
            )),
            // The lowest pending chunk, or one whose lease ran out; rows other claimers hold
            // locked are skipped, not waited for.
            claim: p(claim_sql("1")),
            // The claim of up to $6 chunks at once, in chunk order.
            claim_many: p(claim_sql("$6")),
            claimed_by_op: p(format!(
                "SELECT chunk, attempt, start_file, start_seq, start_token, end_file, end_seq, \
                        end_token, lease_expires_at \
                   FROM {s}.chunks WHERE job_id = $1 AND state = 'claimed' AND last_op = $2"
            )),
            heartbeat: p(format!(
                "UPDATE {s}.chunks \
                    SET lease_expires_at = {now} + $6::bigint * interval '1 microsecond' \
                  WHERE job_id = $1 AND chunk = $2 AND attempt = $4 AND claim_owner = $5 \
                    AND state = 'claimed' \
                 RETURNING lease_expires_at"
            )),
            // A release already done by this same operation (its reply was lost) matches too.
            release: p(format!(
                "UPDATE {s}.chunks SET state = 'pending', claim_owner = NULL, \
                        lease_expires_at = NULL, last_op = $5 \
                  WHERE job_id = $1 AND chunk = $2 AND attempt = $3 \
                    AND ((state = 'claimed' AND claim_owner = $4) \
                         OR (state = 'pending' AND last_op = $5))"
            )),
            // The fenced commit in one statement: only the current claim, only while the job
            // is not finished, only with offsets not below committed ones.
            commit_fenced: p(format!(
                "UPDATE {s}.chunks SET {}, committed_at = {now}, last_op = $6 \
                  WHERE job_id = $1 AND chunk = $2 AND attempt = $4 AND claim_owner = $5 \
                    AND state = 'claimed' \
                    AND NOT EXISTS (SELECT 1 FROM {s}.jobs \
                                     WHERE id = $1 AND finished_at IS NOT NULL) \
                    AND $19 >= COALESCE((SELECT MAX(output_end) FROM {s}.chunks \
                                          WHERE job_id = $1 AND state = 'committed'), 0) \
                    AND $20 >= COALESCE((SELECT MAX(failures_end) FROM {s}.chunks \
                                          WHERE job_id = $1 AND state = 'committed'), 0)",
                set_commit(7, true)
            )),
            // The fenced commit and the next claim in one statement, so in one transaction,
            // one round trip and one WAL flush. The claim runs only if the commit did, and
            // never picks the committed chunk (the statement's snapshot still shows it
            // claimed). Parameters as in `commit_fenced`, then `$22` owner, `$23` lease (µs)
            // and `$24` the claim's operation id.
            commit_and_claim: p(format!(
                "WITH done AS ( \
                     UPDATE {s}.chunks SET {}, committed_at = {now}, last_op = $6 \
                      WHERE job_id = $1 AND chunk = $2 AND attempt = $4 AND claim_owner = $5 \
                        AND state = 'claimed' \
                        AND NOT EXISTS (SELECT 1 FROM {s}.jobs \
                                         WHERE id = $1 AND finished_at IS NOT NULL) \
                        AND $19 >= COALESCE((SELECT MAX(output_end) FROM {s}.chunks \
                                              WHERE job_id = $1 AND state = 'committed'), 0) \
                        AND $20 >= COALESCE((SELECT MAX(failures_end) FROM {s}.chunks \
                                              WHERE job_id = $1 AND state = 'committed'), 0) \
                     RETURNING chunk), \
                 pick AS ( \
                     SELECT chunk FROM {s}.chunks \
                      WHERE job_id = $1 AND state <> 'committed' AND chunk <> $2 \
                        AND (state = 'pending' OR lease_expires_at < {now}) \
                        AND EXISTS (SELECT 1 FROM done) \
                      ORDER BY chunk LIMIT 1 \
                      FOR UPDATE SKIP LOCKED), \
                 got AS ( \
                     UPDATE {s}.chunks c SET state = 'claimed', claim_owner = $22, \
                            lease_expires_at = {now} + $23::bigint * interval '1 microsecond', \
                            attempt = c.attempt + 1, last_op = $24 \
                      WHERE c.job_id = $1 AND c.chunk = ANY(ARRAY(SELECT chunk FROM pick)) \
                     RETURNING c.chunk, c.attempt, c.start_file, c.start_seq, c.start_token, \
                               c.end_file, c.end_seq, c.end_token, c.lease_expires_at) \
                 SELECT got.chunk, got.attempt, got.start_file, got.start_seq, got.start_token, \
                        got.end_file, got.end_seq, got.end_token, got.lease_expires_at, \
                        (SELECT COUNT(*) FROM done) \
                   FROM (SELECT 1) one LEFT JOIN got ON true",
                set_commit(7, true)
            )),
            commit_diagnose: p(format!(
                "SELECT j.finished_at IS NOT NULL, c.state, c.attempt, c.claim_owner, \
                        (SELECT MAX(output_end) FROM {s}.chunks \
                          WHERE job_id = $1 AND state = 'committed'), \
                        (SELECT MAX(failures_end) FROM {s}.chunks \
                          WHERE job_id = $1 AND state = 'committed') \
                   FROM {s}.jobs j LEFT JOIN {s}.chunks c ON c.job_id = j.id AND c.chunk = $2 \
                  WHERE j.id = $1"
            )),
            committed_by_op: p(format!(
                "SELECT 1 FROM {s}.chunks \
                  WHERE job_id = $1 AND chunk = $2 AND state = 'committed' AND last_op = $3"
            )),
            ensure_row: p(format!(
                "INSERT INTO {s}.chunks (job_id, chunk, state, attempt) \
                 VALUES ($1, $2, 'pending', 0) ON CONFLICT (job_id, chunk) DO NOTHING"
            )),
            lock_row: p(format!(
                "SELECT state, attempt, claim_owner, \
                        state = 'claimed' AND lease_expires_at >= {now} \
                   FROM {s}.chunks WHERE job_id = $1 AND chunk = $2 FOR UPDATE"
            )),
            max_offsets: p(format!(
                "SELECT MAX(output_end), MAX(failures_end) FROM {s}.chunks \
                  WHERE job_id = $1 AND state = 'committed'"
            )),
            commit_direct: p(format!(
                "UPDATE {s}.chunks SET {}, attempt = $4, committed_at = {now}, last_op = $5 \
                  WHERE job_id = $1 AND chunk = $2",
                set_commit(6, false)
            )),
            // The job's end is announced to the listeners of FINISHED_CHANNEL when the
            // transaction commits.
            finish: p(format!(
                "WITH done AS (UPDATE {s}.jobs SET finished_at = {now}, updated_at = {now}, \
                                      summary = $2 \
                                WHERE id = $1 RETURNING name) \
                 SELECT pg_notify('{FINISHED_CHANNEL}', name) FROM done"
            )),
            totals: p(format!(
                "SELECT COUNT(*), COALESCE(SUM(records), 0)::bigint, COALESCE(SUM(ok), 0)::bigint, \
                        COALESCE(SUM(failed), 0)::bigint, COALESCE(SUM(filtered), 0)::bigint, \
                        COALESCE(SUM(outputs), 0)::bigint, COALESCE(SUM(retries), 0)::bigint \
                   FROM {s}.chunks c JOIN {s}.jobs j ON j.id = c.job_id \
                  WHERE j.name = $1 AND c.state = 'committed'"
            )),
            // The fenced commit of several chunks in one statement, each fenced by its own
            // claim exactly as `commit_fenced` (the same conditions, row by row); returns
            // the chunks it committed. `$1` job, `$2` the test clock, `$3` the operation,
            // then one array per value, a chunk per element (its parts as a JSON array),
            // and `$22` the state 'claimed'. The rows are found by their key (job, chunk);
            // the state is a parameter so that the planner cannot prove the partial index of
            // open chunks applies, which it would scan whole (every open chunk of the job,
            // its statistics counting a new job's chunks as one row) to find a dozen.
            commit_many: p(format!(
                "UPDATE {s}.chunks c SET state = 'committed', lease_expires_at = NULL, \
                        start_file = v.start_file, start_seq = v.start_seq, \
                        start_token = v.start_token, end_file = v.end_file, \
                        end_seq = v.end_seq, end_token = v.end_token, records = v.records, \
                        ok = v.ok, failed = v.failed, filtered = v.filtered, \
                        outputs = v.outputs, retries = v.retries, output_end = v.output_end, \
                        failures_end = v.failures_end, \
                        parts = ARRAY(SELECT jsonb_array_elements_text(v.parts::jsonb)), \
                        committed_at = COALESCE($2::timestamptz, now()), last_op = $3 \
                   FROM unnest($4::bigint[], $5::bigint[], $6::text[], $7::bigint[], \
                               $8::bigint[], $9::bytea[], $10::bigint[], $11::bigint[], \
                               $12::bytea[], $13::bigint[], $14::bigint[], $15::bigint[], \
                               $16::bigint[], $17::bigint[], $18::bigint[], $19::bigint[], \
                               $20::bigint[], $21::text[]) \
                        AS v(chunk, attempt, owner, start_file, start_seq, start_token, \
                             end_file, end_seq, end_token, records, ok, failed, filtered, \
                             outputs, retries, output_end, failures_end, parts) \
                  WHERE c.job_id = $1 AND c.chunk = ANY($4::bigint[]) AND c.chunk = v.chunk \
                    AND c.attempt = v.attempt \
                    AND c.claim_owner = v.owner AND c.state = $22::text \
                    AND NOT EXISTS (SELECT 1 FROM {s}.jobs \
                                     WHERE id = $1 AND finished_at IS NOT NULL) \
                    AND v.output_end >= COALESCE((SELECT MAX(output_end) FROM {s}.chunks \
                                          WHERE job_id = $1 AND state = 'committed'), 0) \
                    AND v.failures_end >= COALESCE((SELECT MAX(failures_end) FROM {s}.chunks \
                                          WHERE job_id = $1 AND state = 'committed'), 0) \
                 RETURNING c.chunk"
            )),
            // Through the partial index of open chunks: one probe, whatever the job's size.
            all_committed: p(format!(
                "SELECT NOT EXISTS (SELECT 1 FROM {s}.chunks c JOIN {s}.jobs j ON j.id = c.job_id \
                  WHERE j.name = $1 AND c.state <> 'committed')"
            )),
            finished_by_name: p(format!(
                "SELECT finished_at IS NOT NULL FROM {s}.jobs WHERE name = $1"
            )),
            status_job: p(format!(
                "SELECT id, identity, created_at, \
                        GREATEST(updated_at, (SELECT MAX(committed_at) FROM {s}.chunks \
                                               WHERE job_id = j.id)), \
                        finished_at, summary \
                   FROM {s}.jobs j WHERE name = $1"
            )),
            manifest: p(format!(
                "SELECT c.chunk, c.attempt, c.parts FROM {s}.chunks c \
                   JOIN {s}.jobs j ON j.id = c.job_id \
                  WHERE j.name = $1 AND c.state = 'committed' ORDER BY c.chunk"
            )),
            chunk_rows: p(format!(
                "SELECT c.chunk, c.state, c.claim_owner, c.lease_expires_at, c.attempt, \
                        COALESCE(c.records, 0), c.committed_at, \
                        (c.state = 'claimed' AND c.lease_expires_at < now()) \
                   FROM {s}.chunks c JOIN {s}.jobs j ON j.id = c.job_id \
                  WHERE j.name = $1 ORDER BY c.chunk"
            )),
        }
    }
}

impl PostgresLedger {
    /// Connects to the database at `url` (`postgres://user[:password]@host[:port]/database`,
    /// or libpq's `key=value` form), creating or migrating the ledger's schema, with the
    /// server unreachable retried for [`PostgresOptions::retry_for`].
    ///
    /// Fails with [`LedgerError::Database`] for a URL that cannot be read, an invalid schema
    /// name, a server that stays unreachable, or a refused login; with
    /// [`LedgerError::NewerSchema`] when a newer herdsman created the schema.
    pub fn connect(url: &str, options: PostgresOptions) -> Result<PostgresLedger, LedgerError> {
        let unusable =
            |action: &str, remedy: &str, source: Box<dyn std::error::Error + Send + Sync>| {
                LedgerError::Database {
                    backend: BACKEND,
                    location: format!(
                        "{} (schema {}, job {})",
                        redact(url),
                        options.schema,
                        options.job
                    ),
                    action: action.to_string(),
                    remedy: remedy.to_string(),
                    source,
                }
            };
        let mut config: postgres::Config = url.parse().map_err(|e: postgres::Error| {
            unusable(
                "be opened: the URL cannot be read",
                "write it as postgres://user[:password]@host[:port]/database",
                Box::new(e),
            )
        })?;
        if !valid_schema_name(&options.schema) {
            return Err(unusable(
                "be opened: the schema name is not allowed",
                "use lowercase letters, digits and _ (not starting with a digit, at most 63 bytes)",
                format!("schema name {:?}", options.schema).into(),
            ));
        }
        if options.job.is_empty() {
            return Err(unusable(
                "be opened: the job name is empty",
                "name the job",
                "empty job name".into(),
            ));
        }
        config
            .connect_timeout(options.connect_timeout)
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(30));
        if config.get_application_name().is_none() {
            config.application_name("herdsman");
        }
        let location = format!(
            "{} (schema {}, job {})",
            describe(&config),
            options.schema,
            options.job
        );
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let ledger = PostgresLedger {
            config,
            quoted: format!("\"{}\"", options.schema),
            options,
            location,
            conn: Mutex::new(None),
            job_id: None,
            clock: None,
            instance: format!("{}-{}-{now:x}", hostname(), std::process::id()),
            ops: AtomicU64::new(0),
        };
        ledger.run(|| "be opened".into(), |_, _| Ok(()))?;
        Ok(ledger)
    }

    /// Reads the time for leases and timestamps from `clock` instead of the database's
    /// `now()` (tests move a [`herdsman_ledger::ManualClock`] to expire leases without
    /// sleeping). Nodes sharing a job must then share the clock too.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Where the ledger lives, without credentials: server, database, schema and job.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// [`Ledger::commit`] that also records the names of the chunk's output parts, in the same
    /// transaction: exactly the committing attempt's parts are ever referenced
    /// ([`PostgresLedger::manifest`]).
    pub fn commit_with_parts(
        &mut self,
        claim: &Claim,
        c: &ChunkCommit,
        parts: &[String],
    ) -> Result<(), LedgerError> {
        if claim.chunk != c.chunk {
            return Err(LedgerError::ClaimMismatch {
                claimed: claim.chunk,
                committed: c.chunk,
            });
        }
        let job_id = self.job()?;
        let v = CommitValues::of(c)?;
        let chunk = fenced(claim.chunk);
        let attempt = fenced(claim.attempt);
        let now = self.now();
        let op = self.op();
        let parts = parts.to_vec();
        self.run(
            || format!("commit chunk {}", c.chunk),
            |conn, retry| {
                let Conn { client, q } = conn;
                if retry
                    && q.committed_by_op
                        .query_opt(client, &[&job_id, &chunk, &op])?
                        .is_some()
                {
                    return Ok(()); // The first try committed; its reply was lost.
                }
                for _ in 0..3 {
                    let mut params: Vec<&(dyn ToSql + Sync)> =
                        vec![&job_id, &chunk, &now, &attempt, &claim.owner, &op];
                    params.extend(v.params());
                    params.push(&parts);
                    if q.commit_fenced.execute(client, &params)? == 1 {
                        return Ok(());
                    }
                    self.why_refused(client, q, claim, c, job_id)?;
                }
                Err(Fail::Refused(self.refused_without_reason(c.chunk)))
            },
        )
    }

    /// [`PostgresLedger::commit_with_parts`] and then [`Ledger::claim`] for `owner`, in one
    /// transaction and one round trip: the chunk's commit and the claim of the next chunk
    /// become durable together, with one WAL flush. A node's loop calls it after each chunk
    /// and already holds its next claim.
    ///
    /// Returns the new claim, or `None` when no chunk is claimable now. A refused commit
    /// (the same errors as [`PostgresLedger::commit_with_parts`]) claims nothing. A call
    /// whose reply was lost is retried like every call: a retry finds its own commit done and
    /// returns the claim made with it.
    pub fn commit_and_claim(
        &mut self,
        claim: &Claim,
        c: &ChunkCommit,
        parts: &[String],
        owner: &str,
        lease: Duration,
    ) -> Result<Option<Claim>, LedgerError> {
        if claim.chunk != c.chunk {
            return Err(LedgerError::ClaimMismatch {
                claimed: claim.chunk,
                committed: c.chunk,
            });
        }
        let job_id = self.job()?;
        let v = CommitValues::of(c)?;
        let chunk = fenced(claim.chunk);
        let attempt = fenced(claim.attempt);
        let now = self.now();
        let op = self.op();
        let claim_op = self.op();
        let lease = lease_us(lease);
        let parts = parts.to_vec();
        let row = self.run(
            || format!("commit chunk {} and claim the next", c.chunk),
            |conn, retry| {
                let Conn { client, q } = conn;
                if retry
                    && q.committed_by_op
                        .query_opt(client, &[&job_id, &chunk, &op])?
                        .is_some()
                {
                    // The first try committed (and claimed with it); its reply was lost.
                    return Ok(q.claimed_by_op.query_opt(client, &[&job_id, &claim_op])?);
                }
                for _ in 0..3 {
                    let mut params: Vec<&(dyn ToSql + Sync)> =
                        vec![&job_id, &chunk, &now, &attempt, &claim.owner, &op];
                    params.extend(v.params());
                    params.push(&parts);
                    params.extend([
                        &owner as &(dyn ToSql + Sync),
                        &lease as &(dyn ToSql + Sync),
                        &claim_op as &(dyn ToSql + Sync),
                    ]);
                    let row = q.commit_and_claim.query_one(client, &params)?;
                    if row.get::<_, i64>(9) == 1 {
                        let claimed: Option<i64> = row.get(0);
                        return Ok(claimed.map(|_| row));
                    }
                    self.why_refused(client, q, claim, c, job_id)?;
                }
                Err(Fail::Refused(self.refused_without_reason(c.chunk)))
            },
        )?;
        let Some(row) = row else {
            return Ok(None);
        };
        let (chunk, attempt, start, end) = read_planned(&row).map_err(|d| self.corrupt(d))?;
        Ok(Some(Claim {
            chunk,
            attempt,
            owner: owner.to_string(),
            start,
            end,
            lease_expires_at: row.get(8),
        }))
    }

    /// Whether every planned chunk of the job is committed: what a node asks after its
    /// commits to learn whether it completed the job, at the cost of one index probe (where
    /// [`Ledger::totals`] sums over every committed chunk). True for a job with no chunks
    /// planned.
    pub fn all_committed(&self) -> Result<bool, LedgerError> {
        let name = self.options.job.clone();
        self.run(
            || "check for uncommitted chunks".into(),
            |conn, _| {
                Ok(conn
                    .q
                    .all_committed
                    .query_one(&mut conn.client, &[&name])?
                    .get(0))
            },
        )
    }

    /// Whether the job is finished (its output published and the job marked so): one read
    /// of the job's row, where [`Ledger::status`] also reads every chunk. A job that does
    /// not exist is not finished.
    pub fn is_finished(&self) -> Result<bool, LedgerError> {
        let name = self.options.job.clone();
        self.run(
            || "check whether the job is finished".into(),
            |conn, _| {
                Ok(conn
                    .q
                    .finished_by_name
                    .query_opt(&mut conn.client, &[&name])?
                    .is_some_and(|row| row.get(0)))
            },
        )
    }

    /// [`Ledger::claim`] of up to `n` chunks for `owner` in one transaction (one round trip
    /// and one WAL flush), in chunk order; empty when no chunk is claimable now. A call whose
    /// reply was lost is retried like every call: the retry returns the claims made by the
    /// first try.
    pub fn claim_many(
        &mut self,
        owner: &str,
        lease: Duration,
        n: u32,
    ) -> Result<Vec<Claim>, LedgerError> {
        let job_id = self.job()?;
        let now = self.now();
        let lease = lease_us(lease);
        let op = self.op();
        let n = i64::from(n.max(1));
        let rows = self.run(
            || format!("claim up to {n} chunks"),
            |conn, retry| {
                let Conn { client, q } = conn;
                if retry {
                    let rows = q.claimed_by_op.query(client, &[&job_id, &op])?;
                    if !rows.is_empty() {
                        return Ok(rows); // The first try claimed them; its reply was lost.
                    }
                }
                Ok(q.claim_many
                    .query(client, &[&job_id, &owner, &now, &lease, &op, &n])?)
            },
        )?;
        let mut claims = Vec::with_capacity(rows.len());
        for row in &rows {
            let (chunk, attempt, start, end) = read_planned(row).map_err(|d| self.corrupt(d))?;
            claims.push(Claim {
                chunk,
                attempt,
                owner: owner.to_string(),
                start,
                end,
                lease_expires_at: row.get(8),
            });
        }
        claims.sort_by_key(|c| c.chunk);
        Ok(claims)
    }

    /// Commits several chunks, each through its own claim and fenced by it, with their part
    /// names, in one transaction (one round trip per chunk and one WAL flush for the batch),
    /// and with `next` (`owner`, lease) also claims the next chunk in that transaction, as
    /// [`PostgresLedger::commit_and_claim`] does, when at least one chunk committed.
    ///
    /// Returns one result per entry of `batch`, in its order: `Ok` for a committed chunk, or
    /// the refusal [`PostgresLedger::commit_with_parts`] would return (a stale claim, a
    /// finished job, ...). A refused chunk changes nothing and does not keep the others from
    /// committing. The call fails as a whole only for the database (then nothing of it is
    /// committed, or, when its reply was lost, the retry finds what it committed).
    pub fn commit_batch(
        &mut self,
        batch: &[(Claim, ChunkCommit, Vec<String>)],
        next: Option<(&str, Duration)>,
    ) -> Result<BatchOutcome, LedgerError> {
        let (results, claims) = self.commit_batch_claiming(batch, next, 1)?;
        Ok((results, claims.into_iter().next()))
    }

    /// [`PostgresLedger::commit_batch`] that claims up to `n` next chunks (in chunk order)
    /// in the batch's transaction, when at least one chunk committed: a node that committed
    /// several chunks takes as many to go on with, without a claim transaction of their own.
    pub fn commit_batch_claiming(
        &mut self,
        batch: &[(Claim, ChunkCommit, Vec<String>)],
        next: Option<(&str, Duration)>,
        n: u32,
    ) -> Result<BatchClaims, LedgerError> {
        let limit = i64::from(n.max(1));
        let job_id = self.job()?;
        let now = self.now();
        let op = self.op();
        let claim_op = self.op();
        let mut prepared = Vec::with_capacity(batch.len());
        for (claim, c, _) in batch {
            if claim.chunk != c.chunk {
                return Err(LedgerError::ClaimMismatch {
                    claimed: claim.chunk,
                    committed: c.chunk,
                });
            }
            prepared.push((
                CommitValues::of(c)?,
                fenced(claim.chunk),
                fenced(claim.attempt),
            ));
        }
        let next = next.map(|(owner, lease)| (owner.to_string(), lease_us(lease)));
        let rising = batch.windows(2).all(|w| {
            w[1].1.output_end >= w[0].1.output_end && w[1].1.failures_end >= w[0].1.failures_end
        });
        let many = (batch.len() > 1 && rising).then(|| BatchArrays::of(batch, &prepared));
        let (results, rows) = self.run(
            || format!("commit {} chunks and claim the next", batch.len()),
            |conn, retry| {
                let Conn { client, q } = conn;
                if retry {
                    // The batch commits whole or not at all: one chunk committed by this
                    // operation means the first try went through and only its reply was lost.
                    let mut results = Vec::with_capacity(batch.len());
                    let mut any = false;
                    for ((claim, c, _), (_, chunk, _)) in batch.iter().zip(&prepared) {
                        if q.committed_by_op
                            .query_opt(client, &[&job_id, chunk, &op])?
                            .is_some()
                        {
                            any = true;
                            results.push(Ok(()));
                        } else {
                            results.push(match self.why_refused(client, q, claim, c, job_id) {
                                Err(Fail::Refused(e)) => Err(e),
                                Err(Fail::Db(e)) => return Err(Fail::Db(e)),
                                Ok(()) => Err(self.refused_without_reason(c.chunk)),
                            });
                        }
                    }
                    if any {
                        let rows = match next {
                            Some(_) => q.claimed_by_op.query(client, &[&job_id, &claim_op])?,
                            None => Vec::new(),
                        };
                        return Ok((results, rows));
                    }
                }
                let mut tx = client.transaction()?;
                // The whole batch in one statement when its offsets never go down from one
                // chunk to the next (the statement checks each against the offsets
                // committed before it, as one commit after the other would); the chunks it
                // did not commit go one by one below, which says why each was refused.
                let done: HashSet<i64> = match &many {
                    Some(arrays) => q
                        .commit_many
                        .query(&mut tx, &arrays.params(&job_id, &now, &op))?
                        .iter()
                        .map(|r| r.get(0))
                        .collect(),
                    None => HashSet::new(),
                };
                let mut results = Vec::with_capacity(batch.len());
                for ((claim, c, parts), (v, chunk, attempt)) in batch.iter().zip(&prepared) {
                    if done.contains(chunk) {
                        results.push(Ok(()));
                        continue;
                    }
                    let mut result = Err(self.refused_without_reason(c.chunk));
                    for _ in 0..3 {
                        let mut params: Vec<&(dyn ToSql + Sync)> =
                            vec![&job_id, chunk, &now, attempt, &claim.owner, &op];
                        params.extend(v.params());
                        params.push(parts);
                        if q.commit_fenced.execute(&mut tx, &params)? == 1 {
                            result = Ok(());
                            break;
                        }
                        match self.why_refused(&mut tx, q, claim, c, job_id) {
                            Ok(()) => {}
                            Err(Fail::Refused(e)) => {
                                result = Err(e);
                                break;
                            }
                            Err(Fail::Db(e)) => return Err(Fail::Db(e)),
                        }
                    }
                    results.push(result);
                }
                let rows = match &next {
                    Some((owner, lease)) if results.iter().any(Result::is_ok) => q
                        .claim_many
                        .query(&mut tx, &[&job_id, owner, &now, lease, &claim_op, &limit])?,
                    _ => Vec::new(),
                };
                tx.commit()?;
                Ok((results, rows))
            },
        )?;
        let mut claimed = Vec::with_capacity(rows.len());
        if let Some((owner, _)) = &next {
            for row in &rows {
                let (chunk, attempt, start, end) =
                    read_planned(row).map_err(|d| self.corrupt(d))?;
                claimed.push(Claim {
                    chunk,
                    attempt,
                    owner: owner.clone(),
                    start,
                    end,
                    lease_expires_at: row.get(8),
                });
            }
        }
        claimed.sort_by_key(|c| c.chunk);
        Ok((results, claimed))
    }

    /// Why the fenced commit of `c` through `claim` changed no row: the refusal, or `Ok` when
    /// nothing refuses it now (the state changed between the two statements; try again).
    fn why_refused(
        &self,
        client: &mut impl postgres::GenericClient,
        q: &Queries,
        claim: &Claim,
        c: &ChunkCommit,
        job_id: i64,
    ) -> Result<(), Fail> {
        let row = q
            .commit_diagnose
            .query_opt(client, &[&job_id, &fenced(claim.chunk)])?;
        let Some(row) = row else {
            return Err(Fail::Refused(LedgerError::NoJob));
        };
        let finished: bool = row.get(0);
        let state: Option<String> = row.get(1);
        let row_attempt: Option<i64> = row.get(2);
        let owner: Option<String> = row.get(3);
        if finished {
            return Err(LedgerError::AlreadyFinished { chunk: c.chunk }.into());
        }
        let current = row_attempt == Some(fenced(claim.attempt));
        match state.as_deref() {
            Some("committed") if current => {
                return Err(LedgerError::AlreadyCommitted { chunk: c.chunk }.into())
            }
            Some("claimed") if current && owner.as_deref() == Some(&claim.owner) => {}
            _ => return Err(stale(claim).into()),
        }
        let max_out: Option<i64> = row.get(4);
        let max_fail: Option<i64> = row.get(5);
        backwards(c, max_out, max_fail)
    }

    fn refused_without_reason(&self, chunk: u64) -> LedgerError {
        LedgerError::Corrupt {
            path: self.location.clone().into(),
            detail: format!("the commit of chunk {chunk} was refused three times without a reason"),
        }
    }

    /// The output parts of every committed chunk, by chunk number: the manifest an assembler
    /// concatenates.
    pub fn manifest(&self) -> Result<Vec<ChunkParts>, LedgerError> {
        let name = self.options.job.clone();
        let rows = self.run(
            || "read the committed chunks' parts".into(),
            |conn, _| Ok(conn.q.manifest.query(&mut conn.client, &[&name])?),
        )?;
        rows.iter()
            .map(|r| {
                let chunk: i64 = r.get(0);
                let attempt: i64 = r.get(1);
                Ok(ChunkParts {
                    chunk: unsigned(chunk, "chunk").map_err(|d| self.corrupt(d))?,
                    attempt: unsigned(attempt, "attempt").map_err(|d| self.corrupt(d))?,
                    parts: r.get(2),
                })
            })
            .collect()
    }

    /// Every planned chunk of the job with its state, holder and lease, by chunk number: what
    /// `herdsman status` shows of a job shared by many nodes. Empty when nothing is planned.
    /// Chunks are planned in one transaction, so a non-empty list holds every chunk.
    pub fn chunk_rows(&self) -> Result<Vec<ChunkRow>, LedgerError> {
        let name = self.options.job.clone();
        let rows = self.run(
            || "read the planned chunks".into(),
            |conn, _| Ok(conn.q.chunk_rows.query(&mut conn.client, &[&name])?),
        )?;
        rows.iter()
            .map(|r| {
                let chunk: i64 = r.get(0);
                let state: String = r.get(1);
                let attempt: i64 = r.get(4);
                let records: i64 = r.get(5);
                Ok(ChunkRow {
                    chunk: unsigned(chunk, "chunk").map_err(|d| self.corrupt(d))?,
                    state: match state.as_str() {
                        "pending" => ChunkState::Pending,
                        "claimed" => ChunkState::Claimed,
                        _ => ChunkState::Committed,
                    },
                    owner: r.get(2),
                    lease_expires_at: r.get(3),
                    attempt: unsigned(attempt, "attempt").map_err(|d| self.corrupt(d))?,
                    records: unsigned(records, "records").map_err(|d| self.corrupt(d))?,
                    committed_at: r.get(6),
                    lease_expired: r.get::<_, Option<bool>>(7).unwrap_or(false),
                })
            })
            .collect()
    }

    fn now(&self) -> Option<SystemTime> {
        self.clock.as_ref().map(|c| c.now())
    }

    /// A fresh operation id: stored with the rows a call changes, so a retry after a lost
    /// reply recognises its own earlier success.
    fn op(&self) -> String {
        format!(
            "{}-{}",
            self.instance,
            self.ops.fetch_add(1, Ordering::Relaxed)
        )
    }

    fn job(&self) -> Result<i64, LedgerError> {
        self.job_id.ok_or(LedgerError::NoJob)
    }

    fn corrupt(&self, detail: String) -> LedgerError {
        LedgerError::Corrupt {
            path: self.location.clone().into(),
            detail,
        }
    }

    fn connect_once(&self) -> Result<Conn, Fail> {
        let mut client = self.config.connect(NoTls)?;
        // A commit returns only once it is durable, whatever the server's default says.
        client.batch_execute(
            "SET synchronous_commit = on; SET plan_cache_mode = force_generic_plan",
        )?;
        schema::migrate(&mut client, &self.quoted, &self.location).map_err(|e| match e {
            schema::MigrateError::Refused(e) => Fail::Refused(e),
            schema::MigrateError::Db(e) => Fail::Db(e),
        })?;
        let q = Queries::new(&self.quoted);
        Ok(Conn { client, q })
    }

    /// Runs `f` on the connection (connecting first if needed). A connection lost or a server
    /// restarting is retried on a new connection, with backoff, until
    /// [`PostgresOptions::retry_for`] has passed; `f`'s second argument then says that an
    /// earlier try may have taken effect.
    fn run<T>(
        &self,
        action: impl Fn() -> String,
        mut f: impl FnMut(&mut Conn, bool) -> Result<T, Fail>,
    ) -> Result<T, LedgerError> {
        let mut guard = self.conn.lock().unwrap_or_else(PoisonError::into_inner);
        let started = Instant::now();
        let mut delay = FIRST_BACKOFF;
        let mut retry = false;
        loop {
            let outcome = match guard.as_mut() {
                Some(conn) => f(conn, retry),
                None => match self.connect_once() {
                    Ok(conn) => f(guard.insert(conn), retry),
                    Err(e) => Err(e),
                },
            };
            let e = match outcome {
                Ok(v) => return Ok(v),
                Err(Fail::Refused(e)) => return Err(e),
                Err(Fail::Db(e)) => e,
            };
            if !transient(&e) {
                return Err(self.db_error(&action(), e, false));
            }
            *guard = None;
            if started.elapsed() + delay > self.options.retry_for {
                return Err(self.db_error(&action(), e, true));
            }
            std::thread::sleep(jitter(delay));
            delay = (delay * 2).min(MAX_BACKOFF);
            retry = true;
        }
    }

    fn db_error(&self, action: &str, e: postgres::Error, gave_up: bool) -> LedgerError {
        let code = e.code().map(|c| c.code().to_string()).unwrap_or_default();
        let remedy = if gave_up {
            format!(
                "the server could not be reached for {} s; check that PostgreSQL is running and \
                 reachable, then run again (committed chunks are kept)",
                self.options.retry_for.as_secs()
            )
        } else if code.starts_with("28") {
            "check the user name and password in the URL, and the server's pg_hba.conf".into()
        } else if code == "3D000" {
            "create the database first, or fix its name in the URL".into()
        } else if code == "42501" {
            "grant the database user the right to create the ledger's schema and tables, or \
             create them once as their owner"
                .into()
        } else {
            "the database refused it and the ledger was not changed; fix the cause below and run \
             again"
                .into()
        };
        LedgerError::Database {
            backend: BACKEND,
            location: self.location.clone(),
            action: action.to_string(),
            remedy,
            source: Box::new(e),
        }
    }

    fn read_commits(
        &self,
        tx: &mut impl postgres::GenericClient,
        q: &Queries,
        job_id: i64,
    ) -> Result<Vec<ChunkCommit>, Fail> {
        q.commits
            .query(tx, &[&job_id])?
            .iter()
            .map(|r| read_commit(r).map_err(|d| Fail::Refused(self.corrupt(d))))
            .collect()
    }

    fn parse_identity(&self, json: &str) -> Result<JobIdentity, LedgerError> {
        serde_json::from_str(json)
            .map_err(|e| self.corrupt(format!("the stored job identity is not valid JSON: {e}")))
    }

    /// The direct commit of `commits`, in one transaction.
    fn commit_direct(&mut self, commits: &[ChunkCommit]) -> Result<(), LedgerError> {
        let Some(first) = commits.first() else {
            return Ok(());
        };
        let job_id = self.job()?;
        let values = commits
            .iter()
            .map(CommitValues::of)
            .collect::<Result<Vec<_>, _>>()?;
        let now = self.now();
        let op = self.op();
        let no_parts: Vec<String> = Vec::new();
        let action = || match commits {
            [one] => format!("commit chunk {}", one.chunk),
            many => format!(
                "commit chunks {} to {}",
                first.chunk,
                many[many.len() - 1].chunk
            ),
        };
        self.run(action, |conn, retry| {
            let Conn { client, q } = conn;
            let mut tx = client.transaction()?;
            if retry
                && q.committed_by_op
                    .query_opt(&mut tx, &[&job_id, &fenced(first.chunk), &op])?
                    .is_some()
            {
                return Ok(()); // The first try committed; its reply was lost.
            }
            let finished = q
                .job_finished
                .query_opt(&mut tx, &[&job_id])?
                .ok_or(Fail::Refused(LedgerError::NoJob))?;
            if finished.get::<_, bool>(0) {
                return Err(LedgerError::AlreadyFinished { chunk: first.chunk }.into());
            }
            for (c, v) in commits.iter().zip(&values) {
                let chunk = fenced(c.chunk);
                q.ensure_row.execute(&mut tx, &[&job_id, &chunk])?;
                let row = q.lock_row.query_one(&mut tx, &[&job_id, &chunk, &now])?;
                let state: String = row.get(0);
                let attempt: i64 = row.get(1);
                let owner: Option<String> = row.get(2);
                let live: bool = row.get(3);
                if state == "committed" {
                    return Err(LedgerError::AlreadyCommitted { chunk: c.chunk }.into());
                }
                if live {
                    return Err(LedgerError::ClaimHeld {
                        chunk: c.chunk,
                        owner: owner.unwrap_or_default(),
                    }
                    .into());
                }
                let max = q.max_offsets.query_one(&mut tx, &[&job_id])?;
                backwards(c, max.get(0), max.get(1))?;
                let next = attempt + 1;
                let mut params: Vec<&(dyn ToSql + Sync)> = vec![&job_id, &chunk, &now, &next, &op];
                params.extend(v.params());
                params.push(&no_parts);
                q.commit_direct.execute(&mut tx, &params)?;
            }
            tx.commit()?;
            Ok(())
        })
    }
}

impl Ledger for PostgresLedger {
    fn open_job(&mut self, id: &JobIdentity) -> Result<Opened, LedgerError> {
        let json = serde_json::to_string(id).expect("a map of strings always serializes");
        let name = self.options.job.clone();
        let now = self.now();
        let op = self.op();
        let (job_id, opened) = self.run(
            || "record the job".into(),
            |conn, _| {
                let Conn { client, q } = conn;
                let mut tx = client.transaction()?;
                if let Some(row) = q
                    .job_insert
                    .query_opt(&mut tx, &[&name, &json, &now, &op])?
                {
                    tx.commit()?;
                    return Ok((row.get::<_, i64>(0), Opened::Fresh));
                }
                let row = q.job_select.query_one(&mut tx, &[&name])?;
                let job_id: i64 = row.get(0);
                let created_op: Option<String> = row.get(4);
                if created_op.as_deref() == Some(op.as_str()) {
                    // This call created it on an earlier try whose reply was lost.
                    tx.commit()?;
                    return Ok((job_id, Opened::Fresh));
                }
                let stored = self.parse_identity(row.get(1))?;
                if &stored != id {
                    return Err(LedgerError::IdentityChanged {
                        changes: stored.diff(id),
                    }
                    .into());
                }
                let finished: Option<SystemTime> = row.get(2);
                let summary_json: Option<String> = row.get(3);
                let commits = self.read_commits(&mut tx, q, job_id)?;
                tx.commit()?;
                Ok((
                    job_id,
                    if finished.is_some() {
                        Opened::Finished {
                            commits,
                            summary_json,
                        }
                    } else {
                        Opened::Resumed { commits }
                    },
                ))
            },
        )?;
        self.job_id = Some(job_id);
        Ok(opened)
    }

    fn reset(&mut self) -> Result<(), LedgerError> {
        let name = self.options.job.clone();
        self.run(
            || "be reset".into(),
            |conn, _| Ok(conn.q.reset.execute(&mut conn.client, &[&name])?),
        )?;
        self.job_id = None;
        Ok(())
    }

    fn plan_chunks(&mut self, chunks: &[ChunkPlan]) -> Result<(), LedgerError> {
        let job_id = self.job()?;
        if chunks.is_empty() {
            return Ok(());
        }
        let mut cols: [Vec<i64>; 5] = Default::default();
        let mut start_tokens = Vec::with_capacity(chunks.len());
        let mut end_tokens = Vec::with_capacity(chunks.len());
        for p in chunks {
            let fields: [(&'static str, u64); 5] = [
                ("chunk", p.chunk),
                ("start.file_index", u64::from(p.start.file_index)),
                ("start.seq", p.start.seq),
                ("end.file_index", u64::from(p.end.file_index)),
                ("end.seq", p.end.seq),
            ];
            for (col, (field, value)) in cols.iter_mut().zip(fields) {
                col.push(signed(field, value)?);
            }
            start_tokens.push(p.start.token.as_bytes().to_vec());
            end_tokens.push(p.end.token.as_bytes().to_vec());
        }
        let [k, sf, ss, ef, es] = &cols;
        self.run(
            || "record the planned chunks".into(),
            |conn, _| {
                conn.q.plan.execute(
                    &mut conn.client,
                    &[&job_id, k, sf, ss, &start_tokens, ef, es, &end_tokens],
                )?;
                Ok(())
            },
        )
    }

    fn claim(&mut self, owner: &str, lease: Duration) -> Result<Option<Claim>, LedgerError> {
        let job_id = self.job()?;
        let now = self.now();
        let lease = lease_us(lease);
        let op = self.op();
        let row = self.run(
            || "claim a chunk".into(),
            |conn, retry| {
                let Conn { client, q } = conn;
                if retry {
                    if let Some(row) = q.claimed_by_op.query_opt(client, &[&job_id, &op])? {
                        return Ok(Some(row)); // The first try claimed it; its reply was lost.
                    }
                }
                Ok(q.claim
                    .query_opt(client, &[&job_id, &owner, &now, &lease, &op])?)
            },
        )?;
        let Some(row) = row else {
            return Ok(None);
        };
        let (chunk, attempt, start, end) = read_planned(&row).map_err(|d| self.corrupt(d))?;
        Ok(Some(Claim {
            chunk,
            attempt,
            owner: owner.to_string(),
            start,
            end,
            lease_expires_at: row.get(8),
        }))
    }

    fn heartbeat(&mut self, claim: &Claim, lease: Duration) -> Result<SystemTime, LedgerError> {
        let job_id = self.job()?;
        let now = self.now();
        let lease = lease_us(lease);
        let (chunk, attempt) = (fenced(claim.chunk), fenced(claim.attempt));
        let row = self.run(
            || format!("extend the lease on chunk {}", claim.chunk),
            |conn, _| {
                Ok(conn.q.heartbeat.query_opt(
                    &mut conn.client,
                    &[&job_id, &chunk, &now, &attempt, &claim.owner, &lease],
                )?)
            },
        )?;
        row.map(|r| r.get(0)).ok_or_else(|| stale(claim))
    }

    fn release(&mut self, claim: &Claim) -> Result<(), LedgerError> {
        let job_id = self.job()?;
        let (chunk, attempt) = (fenced(claim.chunk), fenced(claim.attempt));
        let op = self.op();
        let changed = self.run(
            || format!("release chunk {}", claim.chunk),
            |conn, _| {
                Ok(conn.q.release.execute(
                    &mut conn.client,
                    &[&job_id, &chunk, &attempt, &claim.owner, &op],
                )?)
            },
        )?;
        if changed == 0 {
            return Err(stale(claim));
        }
        Ok(())
    }

    fn commit(&mut self, claim: &Claim, c: &ChunkCommit) -> Result<(), LedgerError> {
        self.commit_with_parts(claim, c, &[])
    }

    fn commit_chunks(&mut self, commits: &[ChunkCommit]) -> Result<(), LedgerError> {
        self.commit_direct(commits)
    }

    fn mark_finished(&mut self, summary_json: &str) -> Result<(), LedgerError> {
        let job_id = self.job()?;
        let now = self.now();
        let changed = self.run(
            || "mark the job finished".into(),
            |conn, _| {
                // `$3` is `now`, as in every statement.
                Ok(conn
                    .q
                    .finish
                    .execute(&mut conn.client, &[&job_id, &summary_json, &now])?)
            },
        )?;
        if changed == 0 {
            return Err(LedgerError::NoJob);
        }
        Ok(())
    }

    fn totals(&self) -> Result<Totals, LedgerError> {
        let name = self.options.job.clone();
        let row = self.run(
            || "sum the committed chunks".into(),
            |conn, _| Ok(conn.q.totals.query_one(&mut conn.client, &[&name])?),
        )?;
        let mut u = [0u64; 7];
        for (i, slot) in u.iter_mut().enumerate() {
            let v: i64 = row.get(i);
            *slot = u64::try_from(v).map_err(|_| {
                self.corrupt(format!("a sum over the committed chunks is negative ({v})"))
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

    fn status(&self) -> Result<LedgerStatus, LedgerError> {
        let name = self.options.job.clone();
        self.run(
            || "be read".into(),
            |conn, _| {
                let Conn { client, q } = conn;
                // One snapshot: the job row and its chunks agree even while nodes commit.
                let mut tx = client
                    .build_transaction()
                    .isolation_level(postgres::IsolationLevel::RepeatableRead)
                    .read_only(true)
                    .start()?;
                let Some(job) = q.status_job.query_opt(&mut tx, &[&name])? else {
                    return Ok(LedgerStatus::default());
                };
                let identity = self.parse_identity(job.get(1))?;
                let commits = self.read_commits(&mut tx, q, job.get(0))?;
                tx.commit()?;
                Ok(LedgerStatus {
                    identity: Some(identity),
                    totals: Totals::of(&commits),
                    commits,
                    created_at: Some(job.get(2)),
                    updated_at: job.get(3),
                    finished_at: job.get(4),
                    summary_json: job.get(5),
                })
            },
        )
    }
}

/// A commit's values as parameters of [`set_commit`], checked to fit PostgreSQL's
/// signed 64-bit integers.
struct CommitValues {
    numbers: [i64; 12],
    start_token: Vec<u8>,
    end_token: Vec<u8>,
}

impl CommitValues {
    fn of(c: &ChunkCommit) -> Result<CommitValues, LedgerError> {
        signed("chunk", c.chunk)?;
        let fields: [(&'static str, u64); 12] = [
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
        let mut numbers = [0i64; 12];
        for (slot, (field, value)) in numbers.iter_mut().zip(fields) {
            *slot = signed(field, value)?;
        }
        Ok(CommitValues {
            numbers,
            start_token: c.start.token.as_bytes().to_vec(),
            end_token: c.end.token.as_bytes().to_vec(),
        })
    }

    /// Start file, seq, token; end file, seq, token; the six counts; the offsets.
    fn params(&self) -> [&(dyn ToSql + Sync); 14] {
        let n = &self.numbers;
        [
            &n[0],
            &n[1],
            &self.start_token,
            &n[2],
            &n[3],
            &self.end_token,
            &n[4],
            &n[5],
            &n[6],
            &n[7],
            &n[8],
            &n[9],
            &n[10],
            &n[11],
        ]
    }
}

/// A batch of commits as the arrays of [`Queries::commit_many`], a chunk per element.
struct BatchArrays {
    chunks: Vec<i64>,
    attempts: Vec<i64>,
    owners: Vec<String>,
    /// The [`CommitValues`] numbers, column by column.
    numbers: [Vec<i64>; 12],
    start_tokens: Vec<Vec<u8>>,
    end_tokens: Vec<Vec<u8>>,
    /// Each chunk's part names as a JSON array.
    parts: Vec<String>,
}

impl BatchArrays {
    fn of(
        batch: &[(Claim, ChunkCommit, Vec<String>)],
        prepared: &[(CommitValues, i64, i64)],
    ) -> BatchArrays {
        let mut a = BatchArrays {
            chunks: Vec::with_capacity(batch.len()),
            attempts: Vec::with_capacity(batch.len()),
            owners: Vec::with_capacity(batch.len()),
            numbers: Default::default(),
            start_tokens: Vec::with_capacity(batch.len()),
            end_tokens: Vec::with_capacity(batch.len()),
            parts: Vec::with_capacity(batch.len()),
        };
        for ((claim, _, parts), (v, chunk, attempt)) in batch.iter().zip(prepared) {
            a.chunks.push(*chunk);
            a.attempts.push(*attempt);
            a.owners.push(claim.owner.clone());
            for (column, n) in a.numbers.iter_mut().zip(v.numbers) {
                column.push(n);
            }
            a.start_tokens.push(v.start_token.clone());
            a.end_tokens.push(v.end_token.clone());
            a.parts
                .push(serde_json::to_string(parts).expect("a list of strings always serializes"));
        }
        a
    }

    /// The statement's parameters, in its order.
    fn params<'a>(
        &'a self,
        job_id: &'a i64,
        now: &'a Option<SystemTime>,
        op: &'a String,
    ) -> Vec<&'a (dyn ToSql + Sync)> {
        let n = &self.numbers;
        vec![
            job_id,
            now,
            op,
            &self.chunks,
            &self.attempts,
            &self.owners,
            &n[0],
            &n[1],
            &self.start_tokens,
            &n[2],
            &n[3],
            &self.end_tokens,
            &n[4],
            &n[5],
            &n[6],
            &n[7],
            &n[8],
            &n[9],
            &n[10],
            &n[11],
            &self.parts,
            &"claimed",
        ]
    }
}

/// Refuses `c` if its offsets are below the largest committed ones.
fn backwards(c: &ChunkCommit, max_out: Option<i64>, max_fail: Option<i64>) -> Result<(), Fail> {
    for (file, got, committed) in [
        ("output", c.output_end, max_out),
        ("failures", c.failures_end, max_fail),
    ] {
        if let Some(committed) = committed.and_then(|m| u64::try_from(m).ok()) {
            if got < committed {
                return Err(LedgerError::OffsetsWentBackwards {
                    chunk: c.chunk,
                    file,
                    got,
                    committed,
                }
                .into());
            }
        }
    }
    Ok(())
}

/// Reads one [`CHUNK_COLUMNS`] row; the error says which stored value is invalid.
fn read_commit(r: &Row) -> Result<ChunkCommit, String> {
    let u = |i: usize| -> Result<u64, String> {
        let v: i64 = r
            .try_get(i)
            .map_err(|e| format!("chunk column {i} is unreadable: {e}"))?;
        unsigned(v, &format!("chunk column {i}"))
    };
    let f = |i: usize| -> Result<u32, String> {
        let v = u(i)?;
        u32::try_from(v).map_err(|_| format!("chunk column {i} holds the file index {v}"))
    };
    let t = |i: usize| -> Result<Token, String> {
        let v: Vec<u8> = r
            .try_get(i)
            .map_err(|e| format!("chunk column {i} is unreadable: {e}"))?;
        token(&v, i)
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

/// Reads `chunk, attempt` and the six position columns of a claimed row.
#[allow(clippy::type_complexity)]
fn read_planned(r: &Row) -> Result<(u64, u64, Position, Position), String> {
    let u = |i: usize| -> Result<u64, String> {
        let v: Option<i64> = r
            .try_get(i)
            .map_err(|e| format!("chunk column {i} is unreadable: {e}"))?;
        let v = v.ok_or_else(|| format!("planned chunk column {i} is empty"))?;
        unsigned(v, &format!("chunk column {i}"))
    };
    let f = |i: usize| -> Result<u32, String> {
        let v = u(i)?;
        u32::try_from(v).map_err(|_| format!("chunk column {i} holds the file index {v}"))
    };
    let t = |i: usize| -> Result<Token, String> {
        let v: Option<Vec<u8>> = r
            .try_get(i)
            .map_err(|e| format!("chunk column {i} is unreadable: {e}"))?;
        let v = v.ok_or_else(|| format!("planned chunk column {i} is empty"))?;
        token(&v, i)
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

fn token(v: &[u8], i: usize) -> Result<Token, String> {
    Token::new(v).map_err(|_| {
        format!(
            "chunk column {i} holds a position token of {} bytes (at most {} are written)",
            v.len(),
            Token::CAPACITY
        )
    })
}

fn unsigned(v: i64, what: &str) -> Result<u64, String> {
    u64::try_from(v).map_err(|_| format!("{what} holds the negative value {v}"))
}

fn signed(field: &'static str, value: u64) -> Result<i64, LedgerError> {
    i64::try_from(value).map_err(|_| LedgerError::ValueTooLarge { field, value })
}

/// A chunk or attempt number as stored; one too large to be stored matches no row.
fn fenced(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(-1)
}

/// A lease in microseconds, at most [`MAX_LEASE`].
fn lease_us(lease: Duration) -> i64 {
    i64::try_from(lease.min(MAX_LEASE).as_micros()).unwrap_or(i64::MAX)
}

/// The refusal of a claim that is no longer current.
fn stale(claim: &Claim) -> LedgerError {
    LedgerError::StaleClaim {
        chunk: claim.chunk,
        attempt: claim.attempt,
    }
}

/// Whether `e` means the connection or the server went away (or a transaction lost a race
/// that a retry wins), so that the call may be retried on a new connection.
fn transient(e: &postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    match e.code() {
        Some(code) => {
            let code = code.code();
            code.starts_with("08") // connection exception
                || matches!(
                    code,
                    "57P01" // admin_shutdown: the server is stopping or restarting
                        | "57P02" // crash_shutdown
                        | "57P03" // cannot_connect_now: starting up or shutting down
                        | "53300" // too_many_connections
                        | "40001" // serialization_failure
                        | "40P01" // deadlock_detected
                )
        }
        // No SQLSTATE: the socket failed (connect, read or write).
        None => {
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                if s.is::<std::io::Error>() {
                    return true;
                }
                source = s.source();
            }
            false
        }
    }
}

/// `delay` ± 25 %, so nodes that lost the server together do not reconnect in lockstep.
fn jitter(delay: Duration) -> Duration {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let factor = 0.75 + f64::from(nanos % 1000) / 2000.0;
    delay.mul_f64(factor)
}

fn valid_schema_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some('a'..='z' | '_'))
        && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_'))
        && s.len() <= 63
}

/// `postgres://user@host:port/db` from a parsed config, without the password.
fn describe(config: &postgres::Config) -> String {
    use postgres::config::Host;
    let user = config.get_user().unwrap_or("");
    let ports = config.get_ports();
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let host = match h {
                Host::Tcp(name) => name.clone(),
                Host::Unix(path) => path.display().to_string(),
            };
            match ports.get(i).or(ports.first()) {
                Some(port) => format!("{host}:{port}"),
                None => host,
            }
        })
        .collect();
    format!(
        "postgres://{user}@{}/{}",
        hosts.join(","),
        config.get_dbname().unwrap_or("")
    )
}

/// `url` with any password replaced by `***`, for messages about a URL that cannot be parsed.
fn redact(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        if let Some((creds, host)) = rest.split_once('@') {
            if let Some((user, _)) = creds.split_once(':') {
                return format!("{scheme}://{user}:***@{host}");
            }
        }
        return url.to_string();
    }
    // key=value form: hide password=...
    url.split_whitespace()
        .map(|kv| {
            if kv.starts_with("password=") {
                "password=***"
            } else {
                kv
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// This machine's name, for operation ids (unique across nodes).
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "host".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_are_checked() {
        assert!(valid_schema_name("herdsman"));
        assert!(valid_schema_name("_h2"));
        assert!(!valid_schema_name("2h"));
        assert!(!valid_schema_name("Herdsman"));
        assert!(!valid_schema_name("a\"; DROP TABLE x; --"));
        assert!(!valid_schema_name(""));
        assert!(!valid_schema_name(&"a".repeat(64)));
    }

    #[test]
    fn urls_in_messages_hide_the_password() {
        assert_eq!(
            redact("postgres://u:secret@db:5432/x"),
            "postgres://u:***@db:5432/x"
        );
        assert_eq!(redact("postgres://u@db/x"), "postgres://u@db/x");
        assert_eq!(
            redact("host=db password=secret user=u"),
            "host=db password=*** user=u"
        );
        let config: postgres::Config = "postgres://u:secret@db:5433/jobs".parse().unwrap();
        assert_eq!(describe(&config), "postgres://u@db:5433/jobs");
    }

    #[test]
    fn a_bad_url_or_schema_is_refused_before_connecting() {
        let err =
            PostgresLedger::connect("postgres://u:pw@db:notaport/x", PostgresOptions::default())
                .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("the URL cannot be read"), "{msg}");
        assert!(!msg.contains("pw@"), "{msg}");
        let err = PostgresLedger::connect(
            "postgres://u@127.0.0.1:1/x",
            PostgresOptions {
                schema: "Bad Name".into(),
                ..PostgresOptions::default()
            },
        )
        .unwrap_err();
        assert!(err.to_string().contains("schema name"), "{err}");
    }

    #[test]
    fn leases_are_cut_to_the_longest_storable() {
        assert_eq!(lease_us(Duration::from_secs(30)), 30_000_000);
        assert_eq!(lease_us(Duration::MAX), lease_us(MAX_LEASE));
    }
}
