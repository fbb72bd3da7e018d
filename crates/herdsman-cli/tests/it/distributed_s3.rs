//! `herdsman run --ledger postgres://…` with the input, the parts and the output on object
//! storage: nodes that share no disk (each runs in a directory of its own), a throwaway
//! PostgreSQL and a local S3-compatible server (moto in server mode). Every test compares
//! the published output and dead-letter file byte for byte with a one-machine run of the
//! same input, which has failing and filtered records. Without PostgreSQL or moto the tests
//! skip with a printed reason; with `CI` set they fail.

use crate::common;
use crate::distributed::{self, input, server};
use crate::object_storage::Moto;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use herdsman_ledger::Ledger;
use herdsman_ledger_postgres::{ChunkRow, ChunkState, PostgresLedger, PostgresOptions};

/// The arguments of every run of the job: its input on object storage, the worker (its
/// delay per record in `DIST_DELAY_MS`), chunks of 10 records.
fn job_args() -> Vec<String> {
    distributed::job_args_for("s3://bkt/data/in.csv")
}

/// A bucket `bkt` holding the job's input (`rows` records) at `data/in.csv`, and the output
/// and dead-letter file of a one-machine run of the job into local files.
fn prepare(moto: &Moto, s: &Scratch, rows: usize) -> (Vec<u8>, Vec<u8>) {
    let d = s.dir.path();
    moto.ok(d, &["mkbucket", "bkt"]);
    s.write("in.csv", input(rows));
    moto.ok(d, &["put", "bkt", "data/in.csv", "in.csv"]);
    let mut args = job_args();
    args.extend(["-o", "ref.jsonl", "--failures", "ref.failures.jsonl"].map(String::from));
    let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("herdsman"));
    cmd.current_dir(d).args(&args);
    moto.point(&mut cmd);
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    (
        std::fs::read(s.path("ref.jsonl")).unwrap(),
        std::fs::read(s.path("ref.failures.jsonl")).unwrap(),
    )
}

/// A node of the shared job, started in the background in `dir` (its own disk) with the
/// extra arguments `extra`.
fn node(moto: &Moto, dir: &Path, url: &str, name: &str, delay_ms: u32, extra: &[&str]) -> Child {
    node_with(moto, dir, url, name, delay_ms, extra, &[])
}

/// [`node`] with more environment variables.
fn node_with(
    moto: &Moto,
    dir: &Path,
    url: &str,
    name: &str,
    delay_ms: u32,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Child {
    let mut args = job_args();
    args.extend(["--ledger", url, "--lease", "2s", "--node", name].map(String::from));
    args.extend(extra.iter().map(|s| s.to_string()));
    let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("herdsman"));
    cmd.current_dir(dir)
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .env("DIST_DELAY_MS", delay_ms.to_string());
    moto.point(&mut cmd);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().expect("start a node")
}

/// The output of a node whose output is on object storage.
const S3_OUT: [&str; 2] = ["-o", "s3://bkt/results/out.jsonl"];

/// Waits for a node to exit (at most a generous deadline) and returns its exit code and
/// its standard error.
fn wait(child: &mut Child, what: &str) -> (Option<i32>, String) {
    use std::io::Read;
    // Generous: every node talks to moto and PostgreSQL, which a loaded machine slows down.
    let deadline = Instant::now() + Duration::from_secs(300);
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{what} did not finish within 300 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut text = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut text);
    }
    (code, text)
}

/// The ledger of the job named `job`, as a test reads it.
fn ledger(url: &str, job: &str) -> PostgresLedger {
    let options = PostgresOptions {
        job: job.to_string(),
        ..PostgresOptions::default()
    };
    PostgresLedger::connect(url, options).expect("connect to the test server")
}

/// Waits until `ready` holds for the chunks of the job named `job`.
fn wait_for(url: &str, job: &str, what: &str, ready: impl Fn(&[ChunkRow]) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(180);
    let l = ledger(url, job);
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

fn exited_ok((code, stderr): &(Option<i32>, String)) {
    // 1: some records failed, as in the one-machine run.
    assert_eq!(*code, Some(1), "node failed: {stderr}");
}

/// The job's published objects equal the one-machine run's files, and no part is left
/// under the parts prefix.
fn assert_same_on_s3(moto: &Moto, dir: &Path, want: &(Vec<u8>, Vec<u8>)) {
    let out = moto.get(dir, "bkt", "results/out.jsonl");
    let failures = moto.get(dir, "bkt", "results/out.failures.jsonl");
    assert!(!want.1.is_empty(), "the job has failing records");
    assert!(
        out == want.0,
        "the output differs from the one-machine run's"
    );
    assert!(
        failures == want.1,
        "the dead-letter file differs from the one-machine run's"
    );
    let left = moto.keys(dir, "bkt", "results/out.jsonl.parts/");
    assert!(left.is_empty(), "parts left behind: {left:?}");
}

/// A directory of its own for one node: nodes share no disk.
fn own_dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

#[test]
fn three_nodes_on_object_storage_with_one_killed_mid_chunk_equal_one_machine() {
    let Some(pg) = server("s3_three_nodes") else {
        return;
    };
    let Some(moto) = Moto::start(&[]) else {
        return;
    };
    let s = Scratch::new();
    let want = prepare(&moto, &s, 300);
    let url = pg.url();
    let job = "s3://bkt/results/out.jsonl";
    let dirs = [own_dir(), own_dir(), own_dir()];
    // Node a starts first, so that it holds a chunk whatever the machine's load; b and c
    // join, and a is killed while it holds one.
    let mut a = node(&moto, dirs[0].path(), &url, "a", 30, &S3_OUT);
    wait_for(&url, job, "node a to hold a chunk after a commit", |rows| {
        committed(rows) >= 2 && held_by(rows, "a")
    });
    let mut b = node(&moto, dirs[1].path(), &url, "b", 30, &S3_OUT);
    let mut c = node(&moto, dirs[2].path(), &url, "c", 30, &S3_OUT);
    a.kill().unwrap();
    let _ = a.wait();
    exited_ok(&wait(&mut b, "node b"));
    exited_ok(&wait(&mut c, "node c"));
    assert_same_on_s3(&moto, s.dir.path(), &want);
    let rows = ledger(&url, job).chunk_rows().unwrap();
    assert!(
        rows.iter().any(|r| r.attempt >= 2),
        "a chunk of the killed node was taken over with a higher attempt: {rows:?}"
    );
    // The same command once more: the job is finished and its output is in the bucket.
    let again = wait(
        &mut node(&moto, dirs[2].path(), &url, "c", 0, &S3_OUT),
        "node c again",
    );
    exited_ok(&again);
    assert!(again.1.contains("already finished"), "{}", again.1);
    // `status` finds the job by the output's URL.
    let mut st = Command::new(assert_cmd::cargo::cargo_bin("herdsman"));
    st.current_dir(dirs[0].path())
        .args(["status", "--ledger", &url, job]);
    let st = st.output().unwrap();
    let text = String::from_utf8_lossy(&st.stdout).to_string();
    assert!(st.status.success(), "{}", stderr(&st));
    assert!(text.contains("state       finished"), "{text}");
}

#[test]
fn a_zombie_node_on_object_storage_leaves_no_duplicate() {
    let Some(pg) = server("s3_zombie") else {
        return;
    };
    let Some(moto) = Moto::start(&[]) else {
        return;
    };
    let s = Scratch::new();
    let want = prepare(&moto, &s, 200);
    let url = pg.url();
    let job = "s3://bkt/results/out.jsonl";
    let (zd, bd) = (own_dir(), own_dir());
    let mut z = node(&moto, zd.path(), &url, "zombie", 15, &S3_OUT);
    wait_for(
        &url,
        job,
        "the zombie to hold a chunk after a commit",
        |rows| committed(rows) >= 1 && held_by(rows, "zombie"),
    );
    signal(&z, nix::sys::signal::Signal::SIGSTOP);
    // Its committed parts are in the bucket, not on its disk.
    let parts = moto.keys(s.dir.path(), "bkt", "results/out.jsonl.parts/");
    assert!(
        parts.iter().any(|k| k.ends_with("part-0-1")),
        "the committed part of chunk 0 is in the bucket: {parts:?}"
    );
    assert!(!zd.path().join("out.jsonl.parts").exists());
    wait_for(&url, job, "the zombie's lease to run out", |rows| {
        rows.iter()
            .any(|r| r.lease_expired && r.owner.as_deref() == Some("zombie"))
    });
    let mut b = node(&moto, bd.path(), &url, "b", 5, &S3_OUT);
    exited_ok(&wait(&mut b, "node b"));
    assert_same_on_s3(&moto, s.dir.path(), &want);
    signal(&z, nix::sys::signal::Signal::SIGCONT);
    let zombie = wait(&mut z, "the zombie");
    exited_ok(&zombie);
    assert!(
        zombie.1.contains("discarded"),
        "the zombie says its part was discarded: {}",
        zombie.1
    );
    // Its late part was deleted from the bucket, and the output is unchanged.
    assert_same_on_s3(&moto, s.dir.path(), &want);
}

#[test]
fn an_object_storage_input_with_a_shared_parts_directory_equals_one_machine() {
    let Some(pg) = server("s3_input_local_parts") else {
        return;
    };
    let Some(moto) = Moto::start(&[]) else {
        return;
    };
    let s = Scratch::new();
    let want = prepare(&moto, &s, 150);
    let url = pg.url();
    let d = s.dir.path();
    let local = ["-o", "out.jsonl", "--failures", "out.failures.jsonl"];
    let mut a = node(&moto, d, &url, "a", 5, &local);
    let mut b = node(&moto, d, &url, "b", 5, &local);
    exited_ok(&wait(&mut a, "node a"));
    exited_ok(&wait(&mut b, "node b"));
    assert!(std::fs::read(s.path("out.jsonl")).unwrap() == want.0);
    assert!(std::fs::read(s.path("out.failures.jsonl")).unwrap() == want.1);
    assert!(
        !s.path("out.jsonl.parts").exists()
            || std::fs::read_dir(s.path("out.jsonl.parts"))
                .unwrap()
                .next()
                .is_none(),
        "parts left behind"
    );
}

#[test]
fn an_interrupted_upload_of_the_output_is_finished_by_another_node() {
    let Some(pg) = server("s3_interrupted_assembly") else {
        return;
    };
    let Some(moto) = Moto::start(&[]) else {
        return;
    };
    let s = Scratch::new();
    let want = prepare(&moto, &s, 120);
    let url = pg.url();
    let job = "s3://bkt/results/out.jsonl";
    let (ad, bd) = (own_dir(), own_dir());
    // Killed after assembling its staged copy, before uploading it.
    let mut a = node_with(
        &moto,
        ad.path(),
        &url,
        "a",
        0,
        &S3_OUT,
        &[("HERDSMAN_FAULT", "before-upload")],
    );
    let (code, err) = wait(&mut a, "the killed assembly");
    assert_eq!(code, None, "killed by the fault: {err}");
    assert!(
        !ledger(&url, job).status().unwrap().finished(),
        "not finished before the output is published"
    );
    let published = moto.keys(s.dir.path(), "bkt", "results/out");
    assert!(
        !published.iter().any(|k| k == "results/out.jsonl"),
        "nothing is visible at the output key: {published:?}"
    );
    assert!(!moto
        .keys(s.dir.path(), "bkt", "results/out.jsonl.parts/")
        .is_empty());
    // Another node, with nothing on its disk, assembles from the bucket and publishes.
    let mut b = node(&moto, bd.path(), &url, "b", 0, &S3_OUT);
    exited_ok(&wait(&mut b, "the repairing node"));
    assert_same_on_s3(&moto, s.dir.path(), &want);
    assert!(ledger(&url, job).status().unwrap().finished());
}
