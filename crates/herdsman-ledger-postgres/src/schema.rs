//! The ledger's tables in their own PostgreSQL schema, created on first use and versioned.
//!
//! It must never rewrite a schema it does not know: a newer version is refused
//! ([`LedgerError::NewerSchema`]), and concurrent first uses by many nodes are serialized by a
//! transaction-level advisory lock, so exactly one of them creates the tables.

use herdsman_ledger::LedgerError;
use postgres::Client;

/// The newest schema version this build writes and reads.
pub const SCHEMA_VERSION: i32 = 2;

/// Schema migrations, applied in order; entry `i` takes the schema from version `i` to
/// `i + 1`. `{s}` stands for the quoted schema name.
const MIGRATIONS: &[(&str, &str)] = &[
    (
        "jobs and chunks with claims, leases, fenced commits and output parts",
        r#"
CREATE TABLE {s}.jobs (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    identity    text NOT NULL,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL,
    finished_at timestamptz,
    summary     text,
    created_op  text
);
CREATE TABLE {s}.chunks (
    job_id           bigint NOT NULL REFERENCES {s}.jobs(id) ON DELETE CASCADE,
    chunk            bigint NOT NULL CHECK (chunk >= 0),
    state            text NOT NULL CHECK (state IN ('pending', 'claimed', 'committed')),
    claim_owner      text,
    lease_expires_at timestamptz,
    attempt          bigint NOT NULL DEFAULT 0,
    start_file       bigint,
    start_seq        bigint,
    start_token      bytea,
    end_file         bigint,
    end_seq          bigint,
    end_token        bytea,
    records          bigint,
    ok               bigint,
    failed           bigint,
    filtered         bigint,
    outputs          bigint,
    retries          bigint,
    output_end       bigint,
    failures_end     bigint,
    parts            text[],
    committed_at     timestamptz,
    last_op          text,
    PRIMARY KEY (job_id, chunk),
    CHECK (state <> 'claimed' OR (claim_owner IS NOT NULL AND lease_expires_at IS NOT NULL)),
    CHECK (state <> 'committed' OR (
        start_file IS NOT NULL AND start_seq IS NOT NULL AND start_token IS NOT NULL
        AND end_file IS NOT NULL AND end_seq IS NOT NULL AND end_token IS NOT NULL
        AND records IS NOT NULL AND ok IS NOT NULL AND failed IS NOT NULL
        AND filtered IS NOT NULL AND outputs IS NOT NULL AND retries IS NOT NULL
        AND output_end IS NOT NULL AND failures_end IS NOT NULL AND parts IS NOT NULL
        AND committed_at IS NOT NULL))
);
CREATE INDEX chunks_open ON {s}.chunks (job_id, chunk) WHERE state <> 'committed';
CREATE INDEX chunks_output_end ON {s}.chunks (job_id, output_end) WHERE state = 'committed';
CREATE INDEX chunks_failures_end ON {s}.chunks (job_id, failures_end) WHERE state = 'committed';
"#,
    ),
    (
        "chunks without a foreign key to jobs: a job's reset deletes its chunks itself",
        // The key's check cost a lookup of the job per chunk row inserted: a third of the
        // time of planning a job's chunks, which every shared run waits for at its start.
        r#"
ALTER TABLE {s}.chunks DROP CONSTRAINT IF EXISTS chunks_job_id_fkey;
"#,
    ),
];

/// Creates or migrates the schema `quoted` (already quoted). `describe` builds the error for a
/// database failure; `location` names the ledger in refusals.
pub(crate) fn migrate(
    client: &mut Client,
    quoted: &str,
    location: &str,
) -> Result<(), MigrateError> {
    // A schema already at this version (every connection but the first ever made) needs
    // neither the lock nor the DDL: two reads, so that the connections of nodes starting
    // together do not queue behind each other's migration transaction.
    let made: bool = client
        .query_one(
            "SELECT to_regclass($1) IS NOT NULL",
            &[&format!("{quoted}.schema_migrations")],
        )?
        .get(0);
    if made {
        let version: i32 = client
            .query_one(
                &format!("SELECT COALESCE(MAX(version), 0) FROM {quoted}.schema_migrations"),
                &[],
            )?
            .get(0);
        if version == SCHEMA_VERSION {
            return Ok(());
        }
    }
    let mut tx = client.transaction()?;
    // One migrator per schema at a time, across every node: the others wait here, then find
    // the tables made.
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext('herdsman-ledger:' || $1::text))",
        &[&quoted],
    )?;
    tx.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS {quoted};
         CREATE TABLE IF NOT EXISTS {quoted}.schema_migrations (
             version     integer PRIMARY KEY,
             description text NOT NULL,
             applied_at  timestamptz NOT NULL DEFAULT now()
         );"
    ))?;
    let version: i32 = tx
        .query_one(
            &format!("SELECT COALESCE(MAX(version), 0) FROM {quoted}.schema_migrations"),
            &[],
        )?
        .get(0);
    if version > SCHEMA_VERSION {
        return Err(MigrateError::Refused(LedgerError::NewerSchema {
            path: location.into(),
            found: i64::from(version),
            supported: i64::from(SCHEMA_VERSION),
        }));
    }
    for (i, (description, sql)) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let to = i as i32 + 1;
        tx.batch_execute(&sql.replace("{s}", quoted))?;
        tx.execute(
            &format!(
                "INSERT INTO {quoted}.schema_migrations (version, description) VALUES ($1, $2)"
            ),
            &[&to, description],
        )?;
    }
    tx.commit()?;
    Ok(())
}

/// Why a migration failed.
pub(crate) enum MigrateError {
    /// The schema cannot be used by this build.
    Refused(LedgerError),
    /// The database failed.
    Db(postgres::Error),
}

impl From<postgres::Error> for MigrateError {
    fn from(e: postgres::Error) -> Self {
        MigrateError::Db(e)
    }
}
