//! Database inputs through the public API: every row read once, in key order, with its types;
//! a source resumed at any record's position (page boundaries included) reads on exactly; a
//! null or repeated key, a missing key and rows changed before the resume point are clear
//! errors. SQLite always; PostgreSQL on a throwaway server (a failure, not a skip, under CI).

use crate::common;

use common::*;
use herdsman_io::{
    Format, InputPath, InputSpec, Position, Record, Source, SourceError, SourceOptions,
};
use herdsman_ledger_postgres::test_server::TestServer;

fn db_spec(url: &str, format: Format) -> InputSpec {
    InputSpec {
        path: InputPath::File(url.into()),
        format,
    }
}

fn read(url: &str, format: Format, opts: SourceOptions, at: Option<Position>) -> Vec<Record> {
    read_all(vec![db_spec(url, format)], opts, at)
}

/// Every record's text.
fn texts(recs: &[Record]) -> Vec<String> {
    recs.iter().map(text).collect()
}

/// The error that ends reading `url`, whether at opening or while reading.
fn read_error(url: &str, format: Format, opts: SourceOptions, at: Option<Position>) -> SourceError {
    match Source::open(vec![db_spec(url, format)], opts, at) {
        Err(e) => e,
        Ok(mut src) => loop {
            match src.next() {
                Some(Ok(_)) => continue,
                Some(Err(e)) => break e,
                None => panic!("{url} was read without an error"),
            }
        },
    }
}

/// Resuming at the position of record `k` (and at the end) reads exactly the records after it.
fn check_resume(url: &str, format: Format, opts: &SourceOptions, all: &[Record], ks: &[usize]) {
    for &k in ks {
        let p = all[k].pos;
        let back = Position::from_token(p.file_index, p.seq, &p.token()).unwrap();
        let rest = read(url, format, opts.clone(), Some(back));
        assert_eq!(rest, all[k..], "resumed at record {k}");
    }
}

fn sqlite_db(dir: &std::path::Path, sql: &str) -> String {
    let path = dir.join("db.sqlite");
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch(sql).unwrap();
    format!("sqlite://{}", path.display())
}

#[test]
fn sqlite_rows_come_once_in_key_order_with_their_types() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_db(
        dir.path(),
        "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, score REAL, raw BLOB, other);
         INSERT INTO items VALUES (3, 'c \"q\"', 1.5, x'00ff10', NULL);
         INSERT INTO items VALUES (-1, 'a', 1e300 * 1e300, NULL, NULL);
         INSERT INTO items VALUES (2, 'b', -0.25, x'', 7);",
    );
    let recs = read(
        &format!("{url}?table=items"),
        Format::Sqlite,
        SourceOptions::default(),
        None,
    );
    assert_eq!(
        texts(&recs),
        [
            r#"{"id":-1,"name":"a","score":"Infinity","raw":null,"other":null}"#,
            r#"{"id":2,"name":"b","score":-0.25,"raw":"","other":7}"#,
            r#"{"id":3,"name":"c \"q\"","score":1.5,"raw":"AP8Q","other":null}"#,
        ]
    );
    let lines: Vec<u64> = recs.iter().map(|r| r.pos.line).collect();
    assert_eq!(lines, [1, 2, 3], "a record's line is its row number");
}

#[test]
fn sqlite_resumes_exactly_at_any_row_across_pages() {
    let dir = tempfile::tempdir().unwrap();
    // More than two pages of rows, inserted out of key order, with text keys.
    let mut sql =
        String::from("CREATE TABLE t (k TEXT PRIMARY KEY, v INTEGER) WITHOUT ROWID; BEGIN;");
    for i in 0..9000u64 {
        let k = (i * 7919) % 9000;
        sql.push_str(&format!("INSERT INTO t VALUES ('key-{k:05}', {k});"));
    }
    sql.push_str("COMMIT;");
    let url = format!("{}?table=t", sqlite_db(dir.path(), &sql));
    let opts = SourceOptions::default();
    let all = read(&url, Format::Sqlite, opts.clone(), None);
    assert_eq!(all.len(), 9000);
    for (i, r) in all.iter().enumerate() {
        assert_eq!(text(r), format!(r#"{{"k":"key-{i:05}","v":{i}}}"#));
    }
    check_resume(
        &url,
        Format::Sqlite,
        &opts,
        &all,
        &[0, 1, 4095, 4096, 4097, 8192, 8999],
    );
    // The end position reads nothing more.
    let mut src = Source::open(vec![db_spec(&url, Format::Sqlite)], opts.clone(), None).unwrap();
    while src.next().is_some() {}
    let end = src.next_position();
    assert!(read(&url, Format::Sqlite, opts, Some(end)).is_empty());
}

#[test]
fn sqlite_reads_a_query_with_a_composite_key() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_db(
        dir.path(),
        "CREATE TABLE m (a INTEGER, b TEXT, v INTEGER);
         INSERT INTO m VALUES (1, 'y', 10), (1, 'x', 20), (0, 'z', 30), (2, 'x', 40), (1, 'z', 50);",
    );
    let opts = SourceOptions {
        query: Some("SELECT a, b, v FROM m WHERE v >= 20;".into()),
        key: Some(vec!["a".into(), "b".into()]),
        ..SourceOptions::default()
    };
    let all = read(&url, Format::Sqlite, opts.clone(), None);
    assert_eq!(
        texts(&all),
        [
            r#"{"a":0,"b":"z","v":30}"#,
            r#"{"a":1,"b":"x","v":20}"#,
            r#"{"a":1,"b":"z","v":50}"#,
            r#"{"a":2,"b":"x","v":40}"#,
        ]
    );
    check_resume(&url, Format::Sqlite, &opts, &all, &[1, 2, 3]);
}

#[test]
fn sqlite_null_or_repeated_keys_and_bad_requests_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_db(
        dir.path(),
        "CREATE TABLE d (id INTEGER, v TEXT);
         INSERT INTO d VALUES (1, 'a'), (2, 'b'), (2, 'c'), (3, 'd');
         CREATE TABLE n (id INTEGER, v TEXT);
         INSERT INTO n VALUES (1, 'a'), (NULL, 'b');
         CREATE TABLE nokey (v TEXT);",
    );
    let with_key = |q: &str| SourceOptions {
        query: Some(q.into()),
        key: Some(vec!["id".into()]),
        ..SourceOptions::default()
    };
    let e = read_error(&url, Format::Sqlite, with_key("SELECT * FROM d"), None).to_string();
    assert!(e.contains("two rows have the same key"), "{e}");
    assert!(e.contains("unique, non-null key"), "{e}");
    let e = read_error(&url, Format::Sqlite, with_key("SELECT * FROM n"), None).to_string();
    assert!(e.contains("null key"), "{e}");
    // A repeated key across a page boundary is seen too.
    let sub_dir = dir.path().join("x");
    std::fs::create_dir(&sub_dir).unwrap();
    let dup = sqlite_db(
        &sub_dir,
        &format!(
            "CREATE TABLE d (id INTEGER, v INTEGER); BEGIN; {} INSERT INTO d VALUES (4096, -1); COMMIT;",
            (1..=5000).map(|i| format!("INSERT INTO d VALUES ({i}, {i});")).collect::<String>()
        ),
    );
    let e = read_error(&dup, Format::Sqlite, with_key("SELECT * FROM d"), None).to_string();
    assert!(e.contains("two rows have the same key"), "{e}");
    // A query without a key; a table without a primary key; a key the query lacks.
    let no_key = SourceOptions {
        query: Some("SELECT * FROM d".into()),
        ..SourceOptions::default()
    };
    let e = read_error(&url, Format::Sqlite, no_key, None).to_string();
    assert!(e.contains("a query needs a key"), "{e}");
    let e = read_error(
        &format!("{url}?table=nokey"),
        Format::Sqlite,
        SourceOptions::default(),
        None,
    )
    .to_string();
    assert!(e.contains("has no primary key"), "{e}");
    let e = read_error(&url, Format::Sqlite, with_key("SELECT v FROM d"), None).to_string();
    assert!(
        e.contains("key column `id` is not among its columns (v)"),
        "{e}"
    );
    let e = read_error(&url, Format::Sqlite, SourceOptions::default(), None).to_string();
    assert!(e.contains("names no table and no query"), "{e}");
    let missing = format!("sqlite://{}/none.db?table=t", dir.path().display());
    let e = read_error(&missing, Format::Sqlite, SourceOptions::default(), None);
    assert!(matches!(e, SourceError::Open { .. }), "{e}");
    assert!(
        !dir.path().join("none.db").exists(),
        "a missing database is not created"
    );
}

#[test]
fn sqlite_refuses_to_resume_when_rows_before_the_position_changed() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_db(
        dir.path(),
        "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT);
         INSERT INTO t VALUES (10, 'a'), (20, 'b'), (30, 'c'), (40, 'd');",
    );
    let url = format!("{url}?table=t");
    let all = read(&url, Format::Sqlite, SourceOptions::default(), None);
    let at = all[2].pos;
    // Rows added after the resume point are read; a row deleted before it is refused.
    let conn = rusqlite::Connection::open(dir.path().join("db.sqlite")).unwrap();
    conn.execute_batch("INSERT INTO t VALUES (50, 'e')")
        .unwrap();
    let rest = read(&url, Format::Sqlite, SourceOptions::default(), Some(at));
    assert_eq!(
        texts(&rest),
        [
            r#"{"id":30,"v":"c"}"#,
            r#"{"id":40,"v":"d"}"#,
            r#"{"id":50,"v":"e"}"#
        ]
    );
    conn.execute_batch("DELETE FROM t WHERE id = 10").unwrap();
    let e = read_error(&url, Format::Sqlite, SourceOptions::default(), Some(at));
    assert!(matches!(e, SourceError::Resume { .. }), "{e}");
    assert!(
        e.to_string().contains("rows before the resume point"),
        "{e}"
    );
}

#[test]
fn postgres_rows_keep_their_types_and_resume_exactly() {
    let Some(server) =
        TestServer::start_or_skip("postgres_rows_keep_their_types_and_resume_exactly")
    else {
        return;
    };
    let mut client = postgres::Client::connect(&server.url(), postgres::NoTls).unwrap();
    client
        .batch_execute(
            "CREATE TABLE items (
                 id bigint PRIMARY KEY, i int, f double precision, n numeric(12, 3), t text,
                 b boolean, raw bytea, at timestamptz, local timestamp, day date, j json,
                 jb jsonb, arr int[], nothing text);
             INSERT INTO items VALUES
               (2, 7, 'NaN', 12.500, 'b \"q\"', true, '\\x00ff10', '2024-01-31 12:00:00.25+02',
                '2023-12-31 23:59:59', '2024-02-29', '{\"a\": [1, 2]}', '{\"z\": null, \"a\": 1}',
                '{1,NULL,3}', NULL),
               (1, -1, 1.5, -0.001, '', false, '', NULL, NULL, NULL, 'null', '[]', '{}', NULL);
             CREATE TABLE big (k text PRIMARY KEY, v int);
             INSERT INTO big SELECT 'k' || lpad(i::text, 5, '0'), i FROM generate_series(0, 8999) i;
             CREATE TABLE dup (id int, v int);
             INSERT INTO dup VALUES (1, 1), (2, 2), (2, 3);",
        )
        .unwrap();
    let url = format!("{}?table=items", server.url());
    let recs = read(&url, Format::Postgres, SourceOptions::default(), None);
    assert_eq!(
        texts(&recs),
        [
            r#"{"id":1,"i":-1,"f":1.5,"n":"-0.001","t":"","b":false,"raw":"","at":null,"local":null,"day":null,"j":null,"jb":[],"arr":[],"nothing":null}"#,
            r#"{"id":2,"i":7,"f":"NaN","n":"12.500","t":"b \"q\"","b":true,"raw":"AP8Q","at":"2024-01-31T10:00:00.25+00:00","local":"2023-12-31T23:59:59","day":"2024-02-29","j":{"a":[1,2]},"jb":{"a":1,"z":null},"arr":[1,null,3],"nothing":null}"#,
        ]
    );
    // Many pages of text keys: every row once, in order; resumed anywhere, exactly the rest.
    let big = format!("{}?table=big", server.url());
    let opts = SourceOptions::default();
    let all = read(&big, Format::Postgres, opts.clone(), None);
    assert_eq!(all.len(), 9000);
    for (i, r) in all.iter().enumerate() {
        assert_eq!(text(r), format!(r#"{{"k":"k{i:05}","v":{i}}}"#));
    }
    check_resume(&big, Format::Postgres, &opts, &all, &[1, 4096, 4097, 8999]);
    // A query with WHERE and a key.
    let q = SourceOptions {
        query: Some("SELECT v, k FROM big WHERE v % 1000 = 0".into()),
        key: Some(vec!["k".into()]),
        ..SourceOptions::default()
    };
    let some = read(&server.url(), Format::Postgres, q, None);
    assert_eq!(some.len(), 9);
    assert_eq!(text(&some[1]), r#"{"v":1000,"k":"k01000"}"#);
    // A repeated key is a clear error.
    let d = SourceOptions {
        query: Some("SELECT * FROM dup".into()),
        key: Some(vec!["id".into()]),
        ..SourceOptions::default()
    };
    let e = read_error(&server.url(), Format::Postgres, d, None).to_string();
    assert!(e.contains("two rows have the same key"), "{e}");
    // The password is never shown.
    let e = read_error(
        "postgres://me:s3cret@127.0.0.1:1/db?table=t",
        Format::Postgres,
        SourceOptions::default(),
        None,
    )
    .to_string();
    assert!(!e.contains("s3cret"), "{e}");
}
