//! Fair shares across nodes: two nodes of one shared job, the second started once the first is up, each
//! commit a fair share of the chunks, because a node claims only what its workers run soon.
//! Without PostgreSQL installed the test skips with a printed reason; with `CI` set it fails.

use crate::common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use herdsman_ledger_postgres::test_server::TestServer;
use herdsman_ledger_postgres::{ChunkState, PostgresLedger, PostgresOptions};

/// Records in the job, chunks of `CHUNK`, `JOBS` workers per node.
const RECORDS: usize = 300;
const CHUNK: usize = 10;
const JOBS: usize = 2;

/// A worker that says it is ready (a file `ready-<pid>`), then holds every record until the
/// file `go` exists, and takes 30 ms per record after that.
const WORKER: &str = r#"
import os, sys, time
open(os.path.join(sys.argv[1], "ready-%d" % os.getpid()), "w").close()
go = os.path.join(sys.argv[1], "go")
for line in sys.stdin:
    while not os.path.exists(go):
        time.sleep(0.01)
    time.sleep(0.03)
    sys.stdout.write(line)
    sys.stdout.flush()
"#;

fn node(s: &Scratch, url: &str, name: &str) -> Child {
    let worker = format!(
        "python3 {} {}",
        s.path("gated.py").display(),
        s.dir.path().display()
    );
    let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("herdsman"));
    cmd.current_dir(s.dir.path())
        .args(["run", "-i", "in.txt", "-o", "out.txt", "-w", &worker])
        .args(["-j", &JOBS.to_string(), "--chunk-size", &CHUNK.to_string()])
        .args(["--progress", "none", "--ledger", url, "--node", name])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd.spawn().expect("start a node")
}

fn finish(child: &mut Child, what: &str) {
    use std::io::Read;
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{what} did not finish within 120 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    assert_eq!(status.code(), Some(0), "{what} failed: {err}");
}

/// Waits until `n` workers said they are ready.
fn workers_ready(s: &Scratch, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let ready = std::fs::read_dir(s.dir.path())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("ready-"))
            .count();
        if ready >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{n} workers did not start within 90 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_node_started_late_still_commits_a_fair_share() {
    let pg = match TestServer::start() {
        Ok(s) => s,
        Err(why) if std::env::var_os("CI").is_some() => {
            panic!("PostgreSQL is needed under CI: {why}")
        }
        Err(why) => {
            eprintln!("fair shares: skipped: {why}");
            return;
        }
    };
    let s = Scratch::new();
    let rows: String = (1..=RECORDS).map(|i| format!("{i}\n")).collect();
    s.write("in.txt", &rows);
    s.write("gated.py", WORKER);
    // Node a starts first and its engine pulls (claims) as far ahead as it will while its
    // workers hold the records; then node b starts, and both run from the same moment.
    let mut a = node(&s, &pg.url(), "a");
    workers_ready(&s, JOBS);
    std::thread::sleep(Duration::from_millis(500));
    let mut b = node(&s, &pg.url(), "b");
    workers_ready(&s, 2 * JOBS);
    s.write("go", "");
    finish(&mut a, "node a");
    finish(&mut b, "node b");
    assert_eq!(s.read("out.txt"), rows);

    let out: PathBuf = std::fs::canonicalize(s.dir.path()).unwrap().join("out.txt");
    let options = PostgresOptions {
        job: out.display().to_string(),
        ..PostgresOptions::default()
    };
    let ledger = PostgresLedger::connect(&pg.url(), options).expect("connect to the test server");
    let rows = ledger.chunk_rows().expect("read the job's chunks");
    assert_eq!(rows.len(), RECORDS / CHUNK);
    let mut by_node: HashMap<String, usize> = HashMap::new();
    for r in &rows {
        assert_eq!(
            r.state,
            ChunkState::Committed,
            "chunk {} not committed",
            r.chunk
        );
        *by_node
            .entry(r.owner.clone().unwrap_or_default())
            .or_default() += 1;
    }
    let total = rows.len();
    for name in ["a", "b"] {
        let mine = by_node.get(name).copied().unwrap_or(0);
        assert!(
            mine * 3 >= total,
            "node {name} committed {mine} of {total} chunks, less than a third ({by_node:?})"
        );
    }
}
