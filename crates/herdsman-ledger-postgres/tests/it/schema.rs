//! The schema's versions: a version 1 schema (chunks with a foreign key to jobs) is migrated
//! to version 2 (no foreign key) on connect, and a job's reset deletes its chunks itself.

use herdsman_ledger::Ledger;
use herdsman_ledger_postgres::SCHEMA_VERSION;

use crate::common::{self, identity, node, plans};

fn client(server: &common::test_server::TestServer) -> postgres::Client {
    postgres::Client::connect(&server.url(), postgres::NoTls).expect("connect to the test server")
}

fn foreign_keys(db: &mut postgres::Client, schema: &str) -> i64 {
    db.query_one(
        "SELECT COUNT(*) FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace \
          WHERE n.nspname = $1 AND c.contype = 'f'",
        &[&schema],
    )
    .unwrap()
    .get(0)
}

#[test]
fn a_version_1_schema_loses_its_foreign_key_on_connect() {
    let server = crate::server_or_skip!("a_version_1_schema_loses_its_foreign_key_on_connect");
    let options = common::options("schema_v1");
    let s = &options.schema;
    drop(node(&server, &options));
    // Back to what version 1 made: the key, and no record of version 2.
    let mut db = client(&server);
    db.batch_execute(&format!(
        "ALTER TABLE {s}.chunks ADD CONSTRAINT chunks_job_id_fkey \
           FOREIGN KEY (job_id) REFERENCES {s}.jobs(id) ON DELETE CASCADE; \
         DELETE FROM {s}.schema_migrations WHERE version > 1;"
    ))
    .unwrap();
    assert_eq!(foreign_keys(&mut db, s), 1);
    let mut ledger = node(&server, &options);
    assert_eq!(foreign_keys(&mut db, s), 0, "version 2 drops the key");
    let version: i32 = db
        .query_one(
            &format!("SELECT MAX(version) FROM {s}.schema_migrations"),
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(version, SCHEMA_VERSION);
    // The migrated ledger works.
    ledger.open_job(&identity()).unwrap();
    ledger.plan_chunks(&plans(3)).unwrap();
    assert_eq!(ledger.chunk_rows().unwrap().len(), 3);
}

#[test]
fn a_reset_deletes_the_jobs_chunks_and_no_other_jobs() {
    let server = crate::server_or_skip!("a_reset_deletes_the_jobs_chunks_and_no_other_jobs");
    let options = common::options("reset_a");
    let other = herdsman_ledger_postgres::PostgresOptions {
        job: "reset_b".into(),
        ..options.clone()
    };
    let mut a = node(&server, &options);
    a.open_job(&identity()).unwrap();
    a.plan_chunks(&plans(4)).unwrap();
    let mut b = node(&server, &other);
    b.open_job(&identity()).unwrap();
    b.plan_chunks(&plans(2)).unwrap();
    a.reset().unwrap();
    let mut db = client(&server);
    let rows: i64 = db
        .query_one(
            &format!("SELECT COUNT(*) FROM {}.chunks", options.schema),
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(rows, 2, "only the other job's chunks are left");
    assert_eq!(b.chunk_rows().unwrap().len(), 2);
    assert!(a.chunk_rows().unwrap().is_empty());
}
