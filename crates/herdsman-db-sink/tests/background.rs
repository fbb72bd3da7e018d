//! PostgreSQL chunks commit on the sink's background connection: the caller goes on while the
//! database works, chunks commit in the order they were handed over, `sync` waits for them,
//! and the first chunk the database refuses is reported and stops every later one.
//!
//! Starts a throwaway PostgreSQL server; without one the test is skipped, except when `CI`
//! is set, where it fails.

use std::sync::mpsc;
use std::time::Duration;

use herdsman_db_sink::{DbError, DbSink, DbUrl, IfExists};
use herdsman_ledger_postgres::test_server::TestServer;

fn markers(url: &str) -> Vec<(i64, i64)> {
    let mut c = postgres::Client::connect(url, postgres::NoTls).unwrap();
    c.query(
        "SELECT chunk, rows FROM herdsman_chunks ORDER BY chunk",
        &[],
    )
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect()
}

fn ids(url: &str) -> Vec<i64> {
    let mut c = postgres::Client::connect(url, postgres::NoTls).unwrap();
    c.query("SELECT id FROM t ORDER BY id", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[test]
fn postgres_commits_in_the_background_and_stops_at_the_first_refused_chunk() {
    let Some(server) = TestServer::start_or_skip(
        "postgres_commits_in_the_background_and_stops_at_the_first_refused_chunk",
    ) else {
        return;
    };
    let base = server.url();
    let url = DbUrl::parse(&format!("{base}?table=t")).unwrap();
    let mut sink = DbSink::open(&url, "job", IfExists::Fail, true, 0).unwrap();
    sink.write(br#"{"id":1,"name":"a\tb"}"#).unwrap();
    sink.commit_chunk(0, "m0").unwrap();
    sink.sync().unwrap();
    assert_eq!(markers(&base), [(0, 1)]);

    // Another session locks the table: the database cannot take chunk 1 now, yet handing it
    // over returns (before, the caller waited for the lock).
    let mut locker = postgres::Client::connect(&base, postgres::NoTls).unwrap();
    let mut lock = locker.transaction().unwrap();
    lock.batch_execute("LOCK TABLE t IN ACCESS EXCLUSIVE MODE")
        .unwrap();
    let (handed, was_handed) = mpsc::channel();
    let (go_on, may_go_on) = mpsc::channel::<()>();
    let worker = std::thread::spawn(move || {
        sink.write(br#"{"id":2,"name":null}"#).unwrap();
        sink.commit_chunk(1, "m1").unwrap();
        handed.send(()).unwrap();
        may_go_on.recv().unwrap();
        sink
    });
    let returned = was_handed.recv_timeout(Duration::from_secs(60)).is_ok();
    assert_eq!(markers(&base), [(0, 1)], "chunk 1 waits for the lock");
    lock.rollback().unwrap();
    go_on.send(()).unwrap();
    let mut sink = worker.join().unwrap();
    assert!(
        returned,
        "commit_chunk waited for the database instead of handing the chunk over"
    );
    sink.sync().unwrap();
    assert_eq!(markers(&base), [(0, 1), (1, 1)]);
    assert_eq!(sink.rows(), 2);

    // Chunk 1 again is refused (its marker exists); chunk 2 after it is never committed.
    sink.write(br#"{"id":3}"#).unwrap();
    sink.commit_chunk(1, "again").unwrap();
    sink.write(br#"{"id":4}"#).unwrap();
    let later = sink.commit_chunk(2, "m2");
    let err = match later {
        Err(e) => e,
        Ok(()) => sink.sync().unwrap_err(),
    };
    assert!(
        matches!(
            &err,
            DbError::Postgres {
                action: "cannot record the chunk in herdsman_chunks",
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(sink.failed_chunk(), Some(1));
    // Every later call fails, and names the chunk that failed.
    let again = sink.sync().unwrap_err();
    assert!(
        matches!(again, DbError::Abandoned { chunk: 1, .. }),
        "{again}"
    );
    assert!(sink.commit_chunk(3, "m3").is_err());
    drop(sink);
    assert_eq!(markers(&base), [(0, 1), (1, 1)]);
    assert_eq!(ids(&base), [1, 2]);
}
