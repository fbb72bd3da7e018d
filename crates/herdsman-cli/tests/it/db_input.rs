//! Database inputs through the real binary: `-i sqlite://…` and `-i postgres://…` (a table,
//! or `--query` with `--key`) process every row once with its types; a run killed at any
//! moment and resumed publishes the same files as an uninterrupted one; a repeated or null
//! key is a clear error; `--query` without `--key` is a usage error; a changed query is a
//! changed job. The PostgreSQL tests run on a throwaway server (a failure, not a skip, under
//! CI).

use std::path::Path;

use crate::common::*;
use crate::crash::{run_with_kills, spawn, workload, Rng};
use herdsman_ledger_postgres::test_server::TestServer;

/// The reference workload's rows (`id`, `value`; some values are not integers).
fn rows(n: usize) -> Vec<(i64, String)> {
    workload(n, false)
        .lines()
        .skip(1)
        .map(|l| {
            let (id, value) = l.split_once(',').unwrap();
            (id.parse().unwrap(), value.to_string())
        })
        .collect()
}

/// An SQLite file `db.sqlite` in `dir` holding `sql`.
fn sqlite(dir: &Path, sql: &str) {
    let conn = rusqlite::Connection::open(dir.join("db.sqlite")).unwrap();
    conn.execute_batch(sql).unwrap();
}

/// The workload as table `items` (inserted in reverse key order).
fn items_sql(n: usize) -> String {
    let mut sql = String::from("CREATE TABLE items (id INTEGER PRIMARY KEY, value TEXT); BEGIN;");
    for (id, value) in rows(n).into_iter().rev() {
        sql.push_str(&format!("INSERT INTO items VALUES ({id}, '{value}');"));
    }
    sql.push_str("COMMIT;");
    sql
}

/// The storm's command: the primes worker over `input`, 2 workers, chunks of 50.
fn storm_args(input: &str, extra: &[&str]) -> Vec<String> {
    let worker = format!(
        "python3 {}",
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../examples/primes/worker.py")
            .display()
    );
    let mut v: Vec<String> = [
        "run",
        "-i",
        input,
        "-w",
        &worker,
        "--protocol",
        "framed",
        "-j",
        "2",
        "-o",
        "out.jsonl",
        "--chunk-size",
        "50",
        "--progress",
        "none",
        "-q",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

/// Runs `args` once uninterrupted in `clean`, then in `crashed` under SIGKILLs until a run
/// finishes, a few times over: every resumed job publishes the same output and dead letters.
fn storm(clean: &Scratch, crashed: &Scratch, args: &[String], seed: u64) {
    let logs = Scratch::new();
    let log = logs.path("runner.log");
    let status = spawn(clean.dir.path(), args, None, &log).wait().unwrap();
    assert_eq!(
        status.code(),
        Some(1),
        "the workload has bad rows: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let want_out = clean.read("out.jsonl");
    let want_fail = clean.read("out.failures.jsonl");
    assert_eq!(lines(&want_out).len() + lines(&want_fail).len(), 600);
    assert!(!want_fail.is_empty());
    let mut rng = Rng(seed);
    let mut kills = 0;
    while kills < 6 {
        for f in ["out.jsonl", "out.failures.jsonl"] {
            let _ = std::fs::remove_file(crashed.path(f));
        }
        let _ = std::fs::remove_dir_all(crashed.path(".out.jsonl.herdsman"));
        kills += run_with_kills(crashed.dir.path(), args, &mut rng, &log);
        assert_eq!(
            crashed.read("out.jsonl"),
            want_out,
            "output after {kills} kills"
        );
        assert_eq!(crashed.read("out.failures.jsonl"), want_fail);
    }
}

#[test]
fn sqlite_rows_are_processed_once_with_their_types() {
    let s = Scratch::new();
    sqlite(
        s.dir.path(),
        "CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, score REAL, raw BLOB, n INTEGER);
         INSERT INTO t VALUES (2, 'b', 0.5, x'01', NULL), (1, 'a', 2.0, NULL, 3), (3, 'c', -1.25, x'ff', 0);",
    );
    let out = s
        .herdsman()
        .args([
            "run",
            "-i",
            "sqlite://db.sqlite?table=t",
            "-w",
            "cat",
            "-o",
            "out.jsonl",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        s.read("out.jsonl"),
        concat!(
            r#"{"id":1,"name":"a","score":2.0,"raw":null,"n":3}"#,
            "\n",
            r#"{"id":2,"name":"b","score":0.5,"raw":"AQ==","n":null}"#,
            "\n",
            r#"{"id":3,"name":"c","score":-1.25,"raw":"/w==","n":0}"#,
            "\n"
        )
    );
    // A query with WHERE, read in the order of its key.
    let out = s
        .herdsman()
        .args([
            "run",
            "-i",
            &format!("sqlite://{}", s.path("db.sqlite").display()),
            "--query",
            "SELECT name, id FROM t WHERE score > 0",
            "--key",
            "name",
            "-w",
            "cat",
            "-o",
            "q.jsonl",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        s.read("q.jsonl"),
        "{\"name\":\"a\",\"id\":1}\n{\"name\":\"b\",\"id\":2}\n"
    );
}

#[test]
fn sigkill_storm_with_sqlite_input_gives_the_same_files() {
    let (clean, crashed) = (Scratch::new(), Scratch::new());
    for s in [&clean, &crashed] {
        sqlite(s.dir.path(), &items_sql(600));
    }
    let args = storm_args("sqlite://db.sqlite?table=items", &[]);
    storm(&clean, &crashed, &args, 0x0DB1_5EED);
    // The output is the workload's rows in key order.
    let first = json_lines(&clean.read("out.jsonl"))[0].clone();
    assert_eq!(first["id"], 0);
}

#[test]
fn a_repeated_or_null_key_is_a_clear_error() {
    let s = Scratch::new();
    sqlite(
        s.dir.path(),
        "CREATE TABLE d (id INTEGER, v TEXT); INSERT INTO d VALUES (1, 'a'), (2, 'b'), (2, 'c');
         CREATE TABLE n (id INTEGER, v TEXT); INSERT INTO n VALUES (1, 'a'), (NULL, 'b');",
    );
    for (table, says) in [("d", "two rows have the same key"), ("n", "null key")] {
        let out = s
            .herdsman()
            .args([
                "run",
                "-i",
                "sqlite://db.sqlite",
                "--query",
                &format!("SELECT * FROM {table}"),
                "--key",
                "id",
                "-w",
                "cat",
                "-o",
                &format!("{table}.jsonl"),
            ])
            .output()
            .unwrap();
        let err = stderr(&out);
        assert!(!out.status.success(), "{err}");
        assert!(err.contains(says), "{err}");
        assert!(err.contains("unique, non-null key"), "{err}");
    }
}

#[test]
fn query_without_key_and_other_misuse_are_usage_errors() {
    let s = Scratch::new();
    sqlite(s.dir.path(), &items_sql(5));
    let cases: &[(&[&str], &str)] = &[
        (
            &["-i", "sqlite://db.sqlite", "--query", "SELECT * FROM items"],
            "--query needs --key",
        ),
        (
            &[
                "-i",
                "sqlite://db.sqlite?table=items",
                "--query",
                "SELECT 1",
                "--key",
                "id",
            ],
            "names a table and --query is given too",
        ),
        (&["-i", "sqlite://db.sqlite"], "names no table"),
        (
            &["-i", "in.csv", "--key", "id"],
            "apply to a database input",
        ),
        (
            &["-i", "sqlite://db.sqlite?table=nope"],
            "it has no table `nope`",
        ),
        (
            &[
                "-i",
                "sqlite://db.sqlite",
                "--query",
                "SELECT value FROM items",
                "--key",
                "id",
            ],
            "key column `id` is not among its columns",
        ),
    ];
    s.write("in.csv", "id\n1\n");
    for (args, says) in cases {
        let out = s
            .herdsman()
            .arg("run")
            .args(*args)
            .args(["-w", "cat", "-o", "out.jsonl"])
            .output()
            .unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
    assert!(!s.path("out.jsonl").exists());
}

#[test]
fn a_changed_query_refuses_to_resume_like_a_changed_job() {
    let s = Scratch::new();
    let logs = Scratch::new();
    sqlite(s.dir.path(), &items_sql(600));
    let query = "SELECT id, value FROM items WHERE id >= 0";
    let args = storm_args("sqlite://db.sqlite", &["--query", query, "--key", "id"]);
    // Killed right after its first commit: a checkpoint to resume.
    let status = spawn(s.dir.path(), &args, Some("after-commit"), &logs.path("log"))
        .wait()
        .unwrap();
    assert_eq!(status.code(), None, "killed at its fault point");
    for (flag, value) in [
        ("--query", "SELECT id, value FROM items WHERE id >= 1"),
        ("--key", "id,value"),
    ] {
        let mut changed = args.clone();
        let i = changed.iter().position(|a| a == flag).unwrap();
        changed[i + 1] = value.into();
        let out = s.herdsman().args(&changed).output().unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(
            err.contains("the job changed since the checkpoint"),
            "{err}"
        );
    }
    // The same query resumes and finishes.
    let out = s.herdsman().args(&args).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        !stderr(&out).contains("the job changed"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        lines(&s.read("out.jsonl")).len() + lines(&s.read("out.failures.jsonl")).len(),
        600
    );
}

#[test]
fn postgres_rows_are_processed_once_and_a_killed_run_resumes_to_the_same_files() {
    let Some(server) = TestServer::start_or_skip(
        "postgres_rows_are_processed_once_and_a_killed_run_resumes_to_the_same_files",
    ) else {
        return;
    };
    let mut client = postgres::Client::connect(&server.url(), postgres::NoTls).unwrap();
    let mut sql = String::from(
        "CREATE TABLE items (id bigint PRIMARY KEY, value text);
         CREATE TABLE typed (id int PRIMARY KEY, n numeric, at timestamptz, tags text[], j jsonb, b boolean, raw bytea);
         INSERT INTO typed VALUES (1, 1.50, '2024-01-31 12:00:00+00', '{a,b}', '{\"k\": [1]}', true, '\\x0102');
         INSERT INTO items VALUES ",
    );
    let values: Vec<String> = rows(600)
        .into_iter()
        .map(|(id, v)| format!("({id}, '{v}')"))
        .collect();
    sql.push_str(&values.join(", "));
    client.batch_execute(&sql).unwrap();

    let s = Scratch::new();
    let out = s
        .herdsman()
        .args([
            "run",
            "-i",
            &format!("{}?table=typed", server.url()),
            "-w",
            "cat",
            "-o",
            "typed.jsonl",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        s.read("typed.jsonl"),
        "{\"id\":1,\"n\":\"1.50\",\"at\":\"2024-01-31T12:00:00+00:00\",\"tags\":[\"a\",\"b\"],\"j\":{\"k\":[1]},\"b\":true,\"raw\":\"AQI=\"}\n"
    );

    let (clean, crashed) = (Scratch::new(), Scratch::new());
    let args = storm_args(
        &server.url(),
        &[
            "--query",
            "SELECT id, value FROM items WHERE id < 600",
            "--key",
            "id",
        ],
    );
    storm(&clean, &crashed, &args, 0x0905_76E5);
}
