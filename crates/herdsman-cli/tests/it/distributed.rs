//! `herdsman run --ledger postgres://…`: nodes sharing one job through a throwaway
//! PostgreSQL server. Every test compares the output and dead-letter file byte for byte with
//! a one-machine run of the same input, which has failing and filtered records. Without
//! PostgreSQL installed the tests skip with a printed reason; with `CI` set they fail.

use crate::common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use herdsman_ledger::Ledger;
use herdsman_ledger_postgres::test_server::TestServer;
use herdsman_ledger_postgres::{ChunkRow, ChunkState, PostgresLedger, PostgresOptions};

/// A throwaway server, or `None` (skip) when PostgreSQL is not installed and `CI` is unset.
pub(crate) fn server(test: &str) -> Option<TestServer> {
    match TestServer::start() {
        Ok(s) => Some(s),
        Err(why) if std::env::var_os("CI").is_some() => {
            panic!("{test}: PostgreSQL is needed under CI: {why}")
        }
        Err(why) => {
            eprintln!("{test}: skipped: {why}");
            None
        }
    }
}

/// `rows` CSV rows, one in 7 failing ("bad") and one in 11 filtered ("skip").
pub(crate) fn input(rows: usize) -> String {
    let mut s = String::from("id,value\n");
    for i in 0..rows {
        let v = if i % 7 == 3 {
            format!("bad-{i}")
        } else if i % 11 == 5 {
            format!("skip-{i}")
        } else {
            "v".repeat(i % 13 + 1)
        };
        s.push_str(&format!("{i},{v}\n"));
    }
    s
}

/// The shared arguments of every run: input, worker (its delay per record in `DIST_DELAY_MS`),
/// chunks of 10 records.
fn job_args() -> Vec<String> {
    job_args_for("in.csv")
}

/// The arguments of every run of the job reading `input`.
pub(crate) fn job_args_for(input: &str) -> Vec<String> {
    [
        "run",
        "-i",
        input,
        "-w",
        &py_worker("dist_worker.py", &[]),
        "--protocol",
        "framed",
        "-j",
        "2",
        "--chunk-size",
        "10",
        "--progress",
        "none",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// The output and dead-letter file of a one-machine run of the job.
pub(crate) fn reference(s: &Scratch) -> (Vec<u8>, Vec<u8>) {
    let mut args = job_args();
    args.extend(["-o", "ref.jsonl", "--failures", "ref.failures.jsonl"].map(String::from));
    let out = s.herdsman().args(&args).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    (
        std::fs::read(s.path("ref.jsonl")).unwrap(),
        std::fs::read(s.path("ref.failures.jsonl")).unwrap(),
    )
}

/// A node of the shared job, started in the background.
fn node(s: &Scratch, url: &str, name: &str, delay_ms: u32, env: &[(&str, &str)]) -> Child {
    let mut args = job_args();
    args.extend(
        [
            "-o",
            "out.jsonl",
            "--failures",
            "out.failures.jsonl",
            "--ledger",
            url,
            "--lease",
            "2s",
            "--node",
            name,
        ]
        .map(String::from),
    );
    let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("herdsman"));
    cmd.current_dir(s.dir.path())
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .env("DIST_DELAY_MS", delay_ms.to_string());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().expect("start a node")
}

/// Waits for a node to exit (at most a generous deadline) and returns its exit code.
fn wait(child: &mut Child, what: &str) -> Option<i32> {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{what} did not finish within 90 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn stderr_of(child: &mut Child) -> String {
    use std::io::Read;
    let mut text = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut text);
    }
    text
}

/// The ledger of the job that writes `out.jsonl` in the scratch directory, as a test reads it.
fn ledger(s: &Scratch, url: &str) -> PostgresLedger {
    let out: PathBuf = std::fs::canonicalize(s.dir.path())
        .unwrap()
        .join("out.jsonl");
    let options = PostgresOptions {
        job: out.display().to_string(),
        ..PostgresOptions::default()
    };
    PostgresLedger::connect(url, options).expect("connect to the test server")
}

/// Waits until `ready` holds for the job's chunks.
fn wait_for(s: &Scratch, url: &str, what: &str, ready: impl Fn(&[ChunkRow]) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let l = ledger(s, url);
    loop {
        if let Ok(rows) = l.chunk_rows() {
            if ready(&rows) {
                return;
            }
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn committed(rows: &[ChunkRow]) -> usize {
    rows.iter()
        .filter(|r| r.state == ChunkState::Committed)
        .count()
}

fn held_by(rows: &[ChunkRow], name: &str) -> bool {
    rows.iter()
        .any(|r| r.state == ChunkState::Claimed && r.owner.as_deref() == Some(name))
}

fn signal(child: &Child, sig: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), sig).unwrap();
}

/// The shared job's files equal the one-machine run's, and no part is left behind.
pub(crate) fn assert_same(s: &Scratch, reference: &(Vec<u8>, Vec<u8>)) {
    let out = std::fs::read(s.path("out.jsonl")).expect("the output is published");
    let failures = std::fs::read(s.path("out.failures.jsonl")).expect("dead letters published");
    assert!(
        out == reference.0,
        "the output differs from the one-machine run's"
    );
    assert!(
        failures == reference.1,
        "the dead-letter file differs from the one-machine run's"
    );
    let parts = s.path("out.jsonl.parts");
    let left: Vec<_> = std::fs::read_dir(&parts)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        left.is_empty(),
        "parts left behind in {}: {left:?}",
        parts.display()
    );
}

fn exited_ok(code: Option<i32>, stderr: &str) {
    // 1: some records failed, as in the one-machine run.
    assert_eq!(code, Some(1), "node failed: {stderr}");
}

#[test]
fn three_nodes_with_one_killed_mid_chunk_equal_one_machine() {
    let Some(pg) = server("three_nodes_killed") else {
        return;
    };
    let s = Scratch::new();
    s.write("in.csv", input(300));
    let want = reference(&s);
    let url = pg.url();
    // Node a starts alone, so it holds a chunk under any load (b and c could otherwise
    // finish the job before a slow a claims anything); it dies holding it, and b and c
    // take the job over.
    let mut a = node(&s, &url, "a", 15, &[]);
    wait_for(&s, &url, "node a to hold a chunk after a commit", |rows| {
        committed(rows) >= 2 && held_by(rows, "a")
    });
    a.kill().unwrap();
    let mut b = node(&s, &url, "b", 15, &[]);
    let mut c = node(&s, &url, "c", 15, &[]);
    let _ = a.wait();
    let (cb, cc) = (wait(&mut b, "node b"), wait(&mut c, "node c"));
    exited_ok(cb, &stderr_of(&mut b));
    exited_ok(cc, &stderr_of(&mut c));
    assert_same(&s, &want);
    let rows = ledger(&s, &url).chunk_rows().unwrap();
    assert!(
        rows.iter().any(|r| r.attempt >= 2),
        "a chunk of the killed node was taken over with a higher attempt"
    );
}

#[test]
fn a_zombie_node_paused_past_its_lease_commits_nothing() {
    let Some(pg) = server("zombie") else { return };
    let s = Scratch::new();
    s.write("in.csv", input(200));
    let want = reference(&s);
    let url = pg.url();
    let mut z = node(&s, &url, "zombie", 15, &[]);
    wait_for(&s, &url, "the zombie to hold a chunk", |rows| {
        held_by(rows, "zombie")
    });
    signal(&z, nix::sys::signal::Signal::SIGSTOP);
    // Paused past its leases, before anyone took its chunks: status calls it dead. The
    // zombie may hold more than one claim (a node claims two chunks at once), taken at
    // different times: status names a node dead only once all of its leases ran out.
    wait_for(&s, &url, "the zombie's leases to run out", |rows| {
        let mut held = rows
            .iter()
            .filter(|r| r.state == ChunkState::Claimed && r.owner.as_deref() == Some("zombie"));
        let first = held.next();
        first.is_some_and(|r| r.lease_expired) && held.all(|r| r.lease_expired)
    });
    let st = s
        .herdsman()
        .args(["status", "--ledger", &url, "out.jsonl"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&st.stdout).to_string();
    assert!(st.status.success(), "{}", stderr(&st));
    assert!(text.contains("dead nodes  zombie"), "{text}");
    assert!(
        text.contains("by zombie (attempt 1): lease ran out"),
        "{text}"
    );
    assert!(
        text.contains("leased, ") && text.contains(" waiting, of 20"),
        "{text}"
    );
    let json: serde_json::Value = serde_json::from_slice(
        &s.herdsman()
            .args(["status", "--json", "--ledger", &url, "out.jsonl"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert_eq!(json["chunks"], 20);
    assert_eq!(json["dead_nodes"][0], "zombie");
    let mut b = node(&s, &url, "b", 5, &[]);
    let cb = wait(&mut b, "node b");
    exited_ok(cb, &stderr_of(&mut b));
    assert_same(&s, &want);
    let before = std::fs::read(s.path("out.jsonl")).unwrap();
    signal(&z, nix::sys::signal::Signal::SIGCONT);
    let cz = wait(&mut z, "the zombie");
    let err = stderr_of(&mut z);
    exited_ok(cz, &err);
    assert!(
        err.contains("discarded"),
        "the zombie says its part was discarded: {err}"
    );
    assert_eq!(std::fs::read(s.path("out.jsonl")).unwrap(), before);
    assert_same(&s, &want);
    let st = s
        .herdsman()
        .args(["status", "--ledger", &url, "out.jsonl"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&st.stdout).to_string();
    assert!(text.contains("state       finished"), "{text}");
    assert!(
        text.contains("chunks      20 done, 0 leased, 0 waiting, of 20"),
        "{text}"
    );
    assert!(text.contains("node        b: "), "{text}");
}

#[test]
fn a_postgres_restart_mid_run_loses_nothing() {
    let Some(pg) = server("pg_restart") else {
        return;
    };
    let s = Scratch::new();
    s.write("in.csv", input(200));
    let want = reference(&s);
    let url = pg.url();
    let mut a = node(&s, &url, "a", 10, &[]);
    let mut b = node(&s, &url, "b", 10, &[]);
    wait_for(&s, &url, "some commits", |rows| committed(rows) >= 3);
    pg.restart().expect("restart PostgreSQL");
    let (ca, cb) = (wait(&mut a, "node a"), wait(&mut b, "node b"));
    exited_ok(ca, &stderr_of(&mut a));
    exited_ok(cb, &stderr_of(&mut b));
    assert_same(&s, &want);
}

#[test]
fn all_nodes_killed_then_the_same_command_resumes() {
    let Some(pg) = server("all_killed") else {
        return;
    };
    let s = Scratch::new();
    s.write("in.csv", input(200));
    let want = reference(&s);
    let url = pg.url();
    let mut a = node(&s, &url, "a", 10, &[]);
    let mut b = node(&s, &url, "b", 10, &[]);
    wait_for(&s, &url, "some commits", |rows| committed(rows) >= 3);
    a.kill().unwrap();
    b.kill().unwrap();
    let _ = (a.wait(), b.wait());
    let rows = ledger(&s, &url).chunk_rows().unwrap();
    assert!(
        committed(&rows) < rows.len(),
        "the kill came before the end"
    );
    let mut again = node(&s, &url, "a", 0, &[]);
    let code = wait(&mut again, "the second run");
    exited_ok(code, &stderr_of(&mut again));
    assert_same(&s, &want);
}

#[test]
fn an_interrupted_assembly_is_finished_by_the_next_run() {
    let Some(pg) = server("assembly") else { return };
    let s = Scratch::new();
    s.write("in.csv", input(120));
    let want = reference(&s);
    let url = pg.url();
    for point in ["assembly-before-rename", "assembly-between-renames"] {
        let _ = std::fs::remove_file(s.path("out.jsonl"));
        let _ = std::fs::remove_file(s.path("out.failures.jsonl"));
        ledger(&s, &url).reset().unwrap();
        let mut a = node(&s, &url, "a", 0, &[("HERDSMAN_FAULT", point)]);
        let code = wait(&mut a, "the killed assembly");
        assert_eq!(
            code,
            None,
            "{point}: killed by the fault: {}",
            stderr_of(&mut a)
        );
        assert!(
            !ledger(&s, &url).status().unwrap().finished(),
            "{point}: not finished before its files are in place"
        );
        let mut again = node(&s, &url, "b", 0, &[]);
        let code = wait(&mut again, "the repairing run");
        exited_ok(code, &stderr_of(&mut again));
        assert_same(&s, &want);
        assert!(ledger(&s, &url).status().unwrap().finished());
    }
}

#[test]
fn a_node_with_another_job_identity_is_refused() {
    let Some(pg) = server("identity") else { return };
    let s = Scratch::new();
    s.write("in.csv", input(30));
    let url = pg.url();
    let mut a = node(&s, &url, "a", 0, &[]);
    exited_ok(wait(&mut a, "node a"), &stderr_of(&mut a));
    s.write("in.csv", input(31));
    let mut b = node(&s, &url, "b", 0, &[]);
    let code = wait(&mut b, "node b");
    let err = stderr_of(&mut b);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("input.0.size"), "names what changed: {err}");
    assert!(
        err.contains("write the changed job to another output"),
        "{err}"
    );
}

#[test]
fn an_empty_input_publishes_empty_files() {
    let Some(pg) = server("empty") else { return };
    let s = Scratch::new();
    s.write("in.csv", "id,value\n");
    let url = pg.url();
    let mut a = node(&s, &url, "a", 0, &[]);
    let code = wait(&mut a, "node a");
    assert_eq!(code, Some(0), "{}", stderr_of(&mut a));
    assert_eq!(std::fs::read(s.path("out.jsonl")).unwrap(), b"");
    assert_eq!(std::fs::read(s.path("out.failures.jsonl")).unwrap(), b"");
    let rows = ledger(&s, &url).chunk_rows().unwrap();
    assert_eq!(rows.len(), 1);
    assert!(ledger(&s, &url).status().unwrap().finished());
}

#[test]
fn the_flags_of_a_shared_run_are_checked_before_any_work() {
    let s = Scratch::new();
    s.write("in.csv", input(5));
    let run = |extra: &[&str]| {
        let mut args = job_args();
        args.extend(extra.iter().map(|a| a.to_string()));
        s.herdsman()
            .env_remove("HERDSMAN_LEDGER")
            .args(&args)
            .output()
            .unwrap()
    };
    let out = run(&["-o", "o.jsonl", "--lease", "5s"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--lease belongs to a run shared by many machines"));
    let out = run(&["-o", "o.jsonl", "--ledger", "mysql://db/x"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("is not a PostgreSQL URL"));
    let url = "postgres://nobody@127.0.0.1:1/none";
    let out = run(&["-o", "o.csv", "--ledger", url]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("CSV and Parquet outputs"),
        "{}",
        stderr(&out)
    );
    let out = run(&["-o", "o.jsonl", "--ledger", url, "--lease", "10ms"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("too short"));
    assert!(!s.path("o.jsonl").exists() && !s.path("o.csv").exists());
}

#[test]
fn a_fast_worker_on_large_chunks_finishes() {
    // The engine pulls a fast input in pieces: the node's input must never wait for its own
    // chunks to commit, or the last records of a piece would never run.
    let Some(pg) = server("fast") else { return };
    let s = Scratch::new();
    let rows: String = (1..=20_000).map(|i| format!("{i}\n")).collect();
    s.write("rows.txt", &rows);
    let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("herdsman"));
    cmd.current_dir(s.dir.path())
        .args([
            "run",
            "-i",
            "rows.txt",
            "-w",
            "cat",
            "-o",
            "out.txt",
            "--progress",
            "none",
        ])
        .args(["--chunk-size", "1000", "--ledger", &pg.url()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let code = wait(&mut child, "the node");
    assert_eq!(code, Some(0), "{}", stderr_of(&mut child));
    assert_eq!(s.read("out.txt"), rows);
}
