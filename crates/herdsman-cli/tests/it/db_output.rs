//! Database output (`-o sqlite://…?table=T`, `-o postgres://…?table=T`): the rows equal the
//! JSONL output of the same run, `--if-exists`, records that do not fit the table, and
//! SIGKILL storms after which no chunk is missing or doubled.
//!
//! The PostgreSQL tests start a throwaway server; without one they are skipped, except when
//! `CI` is set, where they fail.

use crate::common;
use crate::crash::{spawn, Rng};

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use herdsman_ledger_postgres::test_server::TestServer;
use serde_json::Value;

/// `id,value` rows with a value that is not an integer every 37 rows.
fn input(rows: usize) -> String {
    let mut rng = Rng(0x5EED_DB00);
    let mut s = String::from("id,value\n");
    for i in 0..rows {
        if i % 37 == 5 {
            s.push_str(&format!("{i},bad-{i}\n"));
        } else {
            s.push_str(&format!("{i},{}\n", rng.below(5000)));
        }
    }
    s
}

fn args(output: &str, mode: &str, extra: &[&str]) -> Vec<String> {
    let worker = py_worker("db_rows.py", &[mode]);
    job_args(
        &["-w", &worker, "--protocol", "framed", "-j", "2"],
        output,
        extra,
    )
}

/// `herdsman run` over `in.csv` doing `work` into `output`, in chunks of 50, quiet, with a
/// summary in `s.json`, then `extra`.
fn job_args(work: &[&str], output: &str, extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = ["run", "-i", "in.csv"].map(String::from).to_vec();
    v.extend(work.iter().map(|s| s.to_string()));
    v.extend(
        [
            "-o",
            output,
            "--chunk-size",
            "50",
            "--progress",
            "none",
            "-q",
            "--summary-json",
            "s.json",
        ]
        .map(String::from),
    );
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

/// Runs herdsman in `s` with `args`; returns its exit code and stderr.
fn run(s: &Scratch, args: &[String]) -> (i32, String) {
    let o = s.herdsman().args(args).output().unwrap();
    (o.status.code().unwrap_or(-1), stderr(&o))
}

/// A record with its null values left out and every number as a float, so that a row read
/// back from a table compares with the JSON line it came from.
fn normal(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, normal(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(normal).collect()),
        Value::Number(n) => Value::from(n.as_f64().unwrap()),
        v => v,
    }
}

/// The rows of `table` in the SQLite file, in insertion order, as JSON records.
fn sqlite_rows(db: &Path, table: &str) -> Vec<Value> {
    let c = rusqlite::Connection::open(db).unwrap();
    let cols: Vec<(String, String)> = c
        .prepare(&format!(
            "SELECT name, type FROM pragma_table_info('{table}')"
        ))
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let mut st = c
        .prepare(&format!("SELECT * FROM {table} ORDER BY rowid"))
        .unwrap();
    let rows = st
        .query_map([], |r| {
            let mut m = serde_json::Map::new();
            for (i, (name, ty)) in cols.iter().enumerate() {
                use rusqlite::types::ValueRef as V;
                let v = match (r.get_ref(i)?, ty.as_str()) {
                    (V::Null, _) => Value::Null,
                    (V::Integer(n), "BOOLEAN") => Value::Bool(n != 0),
                    (V::Integer(n), _) => Value::from(n),
                    (V::Real(f), _) => Value::from(f),
                    (V::Text(t), "JSON_TEXT") => serde_json::from_slice(t).unwrap(),
                    (V::Text(t), _) => Value::from(String::from_utf8(t.to_vec()).unwrap()),
                    (V::Blob(_), _) => panic!("a blob in {name}"),
                };
                m.insert(name.clone(), v);
            }
            Ok(Value::Object(m))
        })
        .unwrap();
    rows.map(|r| normal(r.unwrap())).collect()
}

fn sqlite_markers(db: &Path) -> Vec<(i64, i64)> {
    let c = rusqlite::Connection::open(db).unwrap();
    let mut st = c
        .prepare("SELECT chunk, rows FROM herdsman_chunks ORDER BY chunk")
        .unwrap();
    st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn pg_rows(url: &str, table: &str) -> Vec<Value> {
    let mut c = postgres::Client::connect(url, postgres::NoTls).unwrap();
    let mut v: Vec<Value> = c
        .query(&format!("SELECT row_to_json(t)::text FROM {table} t"), &[])
        .unwrap()
        .iter()
        .map(|r| normal(serde_json::from_str(r.get::<_, &str>(0)).unwrap()))
        .collect();
    v.sort_by_key(|r| r["id"].as_f64().unwrap() as i64);
    v
}

fn pg_markers(url: &str) -> Vec<(i64, i64)> {
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

/// The uninterrupted JSONL run of the same job: its records (normalised) and dead letters.
fn jsonl_run(rows: usize, mode: &str) -> (Vec<Value>, String) {
    let s = Scratch::new();
    s.write("in.csv", input(rows));
    let (code, err) = run(&s, &args("out.jsonl", mode, &[]));
    assert_eq!(code, 1, "the input has bad rows: {err}");
    let out = json_lines(&s.read("out.jsonl"))
        .into_iter()
        .map(normal)
        .collect();
    (out, s.read("out.failures.jsonl"))
}

fn sorted_by_id(mut v: Vec<Value>) -> Vec<Value> {
    v.sort_by_key(|r| r["id"].as_f64().unwrap() as i64);
    v
}

fn assert_no_duplicate_id(rows: &[Value]) {
    let mut seen = BTreeMap::new();
    for r in rows {
        let id = r["id"].as_f64().unwrap() as i64;
        assert!(
            seen.insert(id, ()).is_none(),
            "row id {id} is in the table twice"
        );
    }
}

#[test]
fn sqlite_rows_equal_the_jsonl_output_row_for_row() {
    let (want, want_fail) = jsonl_run(500, "clean");
    let s = Scratch::new();
    s.write("in.csv", input(500));
    let (code, err) = run(&s, &args("sqlite://r.db?table=results", "clean", &[]));
    assert_eq!(code, 1, "{err}");
    let got = sqlite_rows(&s.path("r.db"), "results");
    assert_eq!(got.len(), want.len());
    assert!(got == want, "the table differs from the JSONL output");
    assert_eq!(s.read("results.failures.jsonl"), want_fail);
    assert_eq!(sqlite_markers(&s.path("r.db")).len(), 10);
    check_accounting(&s, "s.json", None, "results.failures.jsonl");
    // Run again: the job is finished, nothing is added.
    let (code, _) = run(&s, &args("sqlite://r.db?table=results", "clean", &[]));
    assert_eq!(code, 1);
    assert_eq!(sqlite_rows(&s.path("r.db"), "results").len(), want.len());
}

#[test]
fn if_exists_fail_append_and_replace() {
    let s = Scratch::new();
    s.write("in.csv", input(120));
    let url = format!("sqlite://{}?table=t", s.path("r.db").display());
    let first = args(&url, "clean", &["--no-checkpoint"]);
    assert_eq!(run(&s, &first).0, 1);
    let n = sqlite_rows(&s.path("r.db"), "t").len();
    assert!(n > 100);
    // Default: a new job refuses an existing table, before any work, and says what to do.
    let (code, err) = run(&s, &first);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("already exists") && err.contains("--if-exists append"),
        "{err}"
    );
    assert_eq!(sqlite_rows(&s.path("r.db"), "t").len(), n);
    let mut append = first.clone();
    append.extend(["--if-exists".into(), "append".into()]);
    assert_eq!(run(&s, &append).0, 1);
    assert_eq!(sqlite_rows(&s.path("r.db"), "t").len(), 2 * n);
    let mut replace = first.clone();
    replace.extend(["--if-exists".into(), "replace".into()]);
    assert_eq!(run(&s, &replace).0, 1);
    assert_eq!(sqlite_rows(&s.path("r.db"), "t").len(), n);
    // --if-exists means nothing for a file.
    let (code, err) = run(&s, &args("out.jsonl", "clean", &["--if-exists", "append"]));
    assert_eq!(code, 2, "{err}");
    // A URL without a table is a usage error.
    let (code, err) = run(&s, &args("sqlite://r.db", "clean", &[]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("?table="), "{err}");
}

#[test]
fn a_record_that_does_not_fit_the_table_is_a_dead_letter() {
    let s = Scratch::new();
    s.write("in.csv", input(200));
    let (code, err) = run(&s, &args("sqlite://r.db?table=t", "misfit", &[]));
    assert_eq!(code, 1, "{err}");
    let rows = sqlite_rows(&s.path("r.db"), "t");
    let dead = json_lines(&s.read("t.failures.jsonl"));
    let rejected: Vec<&Value> = dead
        .iter()
        .filter(|d| d["error"]["kind"] == "output_rejected")
        .collect();
    // Ids ending in 3 or 6 do not fit (unless their value was bad anyway).
    let misfits = (0..200)
        .filter(|i| (i % 10 == 3 || i % 10 == 6) && i % 37 != 5)
        .count();
    assert_eq!(rejected.len(), misfits);
    assert!(rejected.iter().any(|d| d["error"]["message"]
        .as_str()
        .unwrap()
        .contains("no column \"surprise\"")));
    assert!(rejected.iter().any(|d| d["error"]["message"]
        .as_str()
        .unwrap()
        .contains("column \"half\"")));
    let bad = (0..200).filter(|i| i % 37 == 5).count();
    assert_eq!(rows.len() + rejected.len() + bad, 200);
    check_accounting(&s, "s.json", None, "t.failures.jsonl");
}

fn pg_server(test: &str) -> Option<TestServer> {
    TestServer::start_or_skip(test)
}

#[test]
fn postgres_rows_equal_the_jsonl_output() {
    let Some(server) = pg_server("postgres_rows_equal_the_jsonl_output") else {
        return;
    };
    let (want, want_fail) = jsonl_run(500, "clean");
    let s = Scratch::new();
    s.write("in.csv", input(500));
    let url = format!("{}?table=results", server.url());
    let (code, err) = run(&s, &args(&url, "clean", &[]));
    assert_eq!(code, 1, "{err}");
    assert!(pg_rows(&server.url(), "results") == sorted_by_id(want));
    assert_eq!(s.read("results.failures.jsonl"), want_fail);
    assert_eq!(pg_markers(&server.url()).len(), 10);
    // A new job refuses the table; replace starts it over.
    let s2 = Scratch::new();
    s2.write("in.csv", input(100));
    let (code, err) = run(&s2, &args(&url, "misfit", &[]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("already exists"), "{err}");
    let (code, err) = run(&s2, &args(&url, "misfit", &["--if-exists", "replace"]));
    assert_eq!(code, 1, "{err}");
    let rows = pg_rows(&server.url(), "results");
    assert_eq!(rows.len(), 100 - 3 - 20);
    assert!(s2.read("results.failures.jsonl").contains("no column"));
}

/// Runs the job until it finishes, killing it with SIGKILL at seeded random moments and at
/// the crash points around the database commit (`kills_wanted` times at most, then once just
/// before the job is marked finished); returns how many times it was killed.
fn run_with_kills(dir: &Path, args: &[String], rng: &mut Rng, kills_wanted: usize) -> usize {
    let log = dir.join("runner.log");
    // The database crash points come first and twice (each kills at its first hit, at the
    // first chunk, however fast the machine); the ledger's points are hit only when a
    // checkpoint falls inside the run.
    let faults = [
        "after-db-commit",
        "before-db-commit",
        "after-db-commit",
        "before-db-commit",
        "after-sync",
        "after-commit",
    ];
    let mut kills = 0;
    let mut marked_finished_kill = false;
    for round in 0..400usize {
        // Every crash point twice first (each kills at its first hit, however fast the
        // machine), then timed kills at seeded moments.
        let (fault, after) = if kills < kills_wanted {
            if round < faults.len() {
                (Some(faults[round]), None)
            } else {
                (None, Some(Duration::from_millis(100 + rng.below(1500))))
            }
        } else if !marked_finished_kill {
            marked_finished_kill = true;
            (Some("before-mark-finished"), None)
        } else {
            (None, None)
        };
        let started = Instant::now();
        let mut child = spawn(dir, args, fault, &log);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                if status.code().is_none() {
                    kills += 1;
                    break;
                }
                assert!(
                    matches!(status.code(), Some(0) | Some(1)),
                    "run {round} ended with {status:?}: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
                return kills;
            }
            if after.is_some_and(|d| started.elapsed() >= d) {
                child.kill().unwrap();
                child.wait().unwrap();
                kills += 1;
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(300),
                "run {round} did not end in 5 minutes"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    panic!("the job never finished");
}

const STORM_ROWS: usize = 1500;

#[test]
fn sigkill_storm_sqlite_leaves_every_chunk_once() {
    let (want, want_fail) = jsonl_run(STORM_ROWS, "clean");
    let s = Scratch::new();
    s.write("in.csv", input(STORM_ROWS));
    let a = args("sqlite://r.db?table=results", "clean", &[]);
    let kills = run_with_kills(s.dir.path(), &a, &mut Rng(0xDB5_0001), 12);
    assert!(kills >= 4, "killed only {kills} times");
    let got = sqlite_rows(&s.path("r.db"), "results");
    assert_no_duplicate_id(&got);
    assert_eq!(got.len(), want.len());
    assert!(got == want, "the table differs from the uninterrupted run");
    assert_eq!(s.read("results.failures.jsonl"), want_fail);
    let markers = sqlite_markers(&s.path("r.db"));
    assert_eq!(markers.len(), STORM_ROWS.div_ceil(50));
    assert_eq!(markers.iter().map(|m| m.1).sum::<i64>(), want.len() as i64);
}

#[test]
fn sigkill_storm_postgres_leaves_every_chunk_once() {
    let Some(server) = pg_server("sigkill_storm_postgres_leaves_every_chunk_once") else {
        return;
    };
    let (want, want_fail) = jsonl_run(STORM_ROWS, "clean");
    let s = Scratch::new();
    s.write("in.csv", input(STORM_ROWS));
    let a = args(&format!("{}?table=results", server.url()), "clean", &[]);
    let kills = run_with_kills(s.dir.path(), &a, &mut Rng(0xDB5_0002), 12);
    assert!(kills >= 4, "killed only {kills} times");
    let got = pg_rows(&server.url(), "results");
    assert_no_duplicate_id(&got);
    assert!(
        got == sorted_by_id(want),
        "the table differs from the uninterrupted run"
    );
    assert_eq!(s.read("results.failures.jsonl"), want_fail);
    assert_eq!(pg_markers(&server.url()).len(), STORM_ROWS.div_ceil(50));
}

#[test]
fn a_chunk_postgres_refuses_fails_the_run_and_a_resume_keeps_every_chunk_once() {
    let Some(server) =
        pg_server("a_chunk_postgres_refuses_fails_the_run_and_a_resume_keeps_every_chunk_once")
    else {
        return;
    };
    let (want, want_fail) = jsonl_run(STORM_ROWS, "clean");
    let s = Scratch::new();
    s.write("in.csv", input(STORM_ROWS));
    // A table whose constraint refuses row 777 (chunk 15): its COPY fails on the background
    // connection, while later chunks are being assembled.
    let mut c = postgres::Client::connect(&server.url(), postgres::NoTls).unwrap();
    c.batch_execute(
        "CREATE TABLE results (id BIGINT CONSTRAINT no_777 CHECK (id <> 777), value BIGINT,
         half DOUBLE PRECISION, even BOOLEAN, name TEXT, tags JSONB, maybe TEXT)",
    )
    .unwrap();
    let url = format!("{}?table=results", server.url());
    let a = args(&url, "clean", &["--if-exists", "append"]);
    let (code, err) = run(&s, &a);
    // The same exit code and message as when the chunk was committed on the assembler's
    // thread.
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("herdsman: error: cannot write chunk 15 to ")
            && err.contains("the run can be resumed once the database is back")
            && err.contains("COPY of the chunk's rows failed")
            && err.contains("no_777"),
        "{err}"
    );
    let markers = pg_markers(&server.url());
    assert!(!markers.iter().any(|m| m.0 == 15), "{markers:?}");
    let rows = pg_rows(&server.url(), "results");
    assert_eq!(markers.iter().map(|m| m.1).sum::<i64>(), rows.len() as i64);
    assert_no_duplicate_id(&rows);
    // Once the database accepts the row, the same command finishes the job: every chunk once.
    c.batch_execute("ALTER TABLE results DROP CONSTRAINT no_777")
        .unwrap();
    let (code, err) = run(&s, &a);
    assert_eq!(code, 1, "{err}");
    let got = pg_rows(&server.url(), "results");
    assert_no_duplicate_id(&got);
    assert!(
        got == sorted_by_id(want),
        "the table differs from the uninterrupted run"
    );
    assert_eq!(s.read("results.failures.jsonl"), want_fail);
    assert_eq!(pg_markers(&server.url()).len(), STORM_ROWS.div_ceil(50));
}

/// `--copy` (no worker) arguments: `in.csv` with its types inferred, into `output`.
fn copy_args(output: &str, extra: &[&str]) -> Vec<String> {
    job_args(&["--copy", "--infer-types"], output, extra)
}

#[test]
fn copy_loads_the_records_as_read_and_equals_a_cat_worker_run() {
    let s = Scratch::new();
    s.write("in.csv", input(300));
    // Into a file: the same lines as a worker that answers each record with itself.
    let (code, err) = run(&s, &copy_args("copy.jsonl", &[]));
    assert_eq!(code, 0, "{err}");
    let mut cat = copy_args("cat.jsonl", &[]);
    cat[3] = "-w".into();
    cat.insert(4, "cat".into());
    let (code, err) = run(&s, &cat);
    assert_eq!(code, 0, "{err}");
    assert_eq!(s.read("copy.jsonl"), s.read("cat.jsonl"));
    assert_eq!(json_lines(&s.read("copy.jsonl")).len(), 300);
    // Into a table: the rows whose value is an integer fit the table inferred from the
    // first records; the others are dead letters, every record accounted for once.
    let (code, err) = run(&s, &copy_args("sqlite://r.db?table=t", &[]));
    assert_eq!(code, 1, "{err}");
    let rows = sqlite_rows(&s.path("r.db"), "t");
    let bad = (0..300).filter(|i| i % 37 == 5).count();
    assert_eq!(rows.len(), 300 - bad);
    assert_no_duplicate_id(&rows);
    let dead = json_lines(&s.read("t.failures.jsonl"));
    assert_eq!(dead.len(), bad);
    assert!(dead.iter().all(|d| d["error"]["kind"] == "output_rejected"));
    check_accounting(&s, "s.json", None, "t.failures.jsonl");
    assert_eq!(sqlite_markers(&s.path("r.db")).len(), 6);
}

#[test]
fn copy_refuses_worker_options_and_says_what_it_is() {
    let s = Scratch::new();
    s.write("in.csv", input(10));
    for extra in [
        &["-w", "cat"][..],
        &["-x", "echo {}"][..],
        &["--protocol", "framed"][..],
        &["--shell"][..],
        &["--no-retry-exit", "22"][..],
    ] {
        let (code, err) = run(&s, &copy_args("out.jsonl", extra));
        assert_eq!(code, 2, "--copy {extra:?}: {err}");
        assert!(err.contains("--copy"), "the message names --copy: {err}");
    }
    assert!(!s.path("out.jsonl").exists());
    // Without a worker or --copy, the message offers --copy for a load.
    let o = s
        .herdsman()
        .args(["run", "-i", "in.csv", "-o", "out.jsonl"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--copy"), "{}", stderr(&o));
}

/// Enough rows that a load with no worker, whose chunks come faster than a transaction
/// commits, still takes several transactions (each gathers at most 64 chunks).
const COPY_STORM_ROWS: usize = 20_000;

#[test]
fn sigkill_storm_copy_into_postgres_leaves_every_row_once() {
    let Some(server) = pg_server("sigkill_storm_copy_into_postgres_leaves_every_row_once") else {
        return;
    };
    let s = Scratch::new();
    s.write("in.csv", input(COPY_STORM_ROWS));
    let (code, err) = run(&s, &copy_args("want.jsonl", &["--no-checkpoint"]));
    assert_eq!(code, 0, "{err}");
    let want: Vec<Value> = json_lines(&s.read("want.jsonl"))
        .into_iter()
        .filter(|r| r["value"].is_i64())
        .map(normal)
        .collect();
    let a = copy_args(&format!("{}?table=loaded", server.url()), &[]);
    let kills = run_with_kills(s.dir.path(), &a, &mut Rng(0xDB5_0003), 12);
    assert!(kills >= 4, "killed only {kills} times");
    let got = pg_rows(&server.url(), "loaded");
    assert_no_duplicate_id(&got);
    assert!(
        got == sorted_by_id(want),
        "the table differs from the records read"
    );
    assert_eq!(
        pg_markers(&server.url()).len(),
        COPY_STORM_ROWS.div_ceil(50)
    );
    let dead = json_lines(&s.read("loaded.failures.jsonl"));
    assert_eq!(
        dead.len(),
        (0..COPY_STORM_ROWS).filter(|i| i % 37 == 5).count()
    );
}
