//! Live status: `herdsman status` tells a running job from an interrupted or finished one,
//! with its run's progress, rate and workers; `--watch` follows it to the end; `failures`
//! filters and groups dead letters by kind.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use predicates::prelude::*;
use serde_json::Value;

use crate::common::{self, id_csv, py_worker, stderr, Scratch};

/// Generous: the machine may be heavily loaded.
const DEADLINE: Duration = Duration::from_secs(60);

/// A run in the background whose worker holds every record from id 10 on until the file
/// `open` exists (tests/workers/gate.py).
struct Gated {
    child: Child,
    pid: u32,
}

impl Drop for Gated {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run_args(s: &Scratch) -> Vec<String> {
    let gate = py_worker("gate.py", &["10", &s.dir.path().display().to_string()]);
    [
        "run",
        "-i",
        "in.csv",
        "-w",
        &gate,
        "-j",
        "2",
        "-o",
        "out.jsonl",
        "-q",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect()
}

/// Starts the gated run and waits until a worker holds a record.
fn start_gated(s: &Scratch) -> Gated {
    s.write("in.csv", id_csv(40));
    let child = Command::new(assert_cmd::cargo::cargo_bin("herdsman"))
        .args(run_args(s))
        .current_dir(s.dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let gated = Gated { child, pid };
    wait_until("a worker to reach the gate", || s.path("reached").exists());
    gated
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !done() {
        assert!(Instant::now() < deadline, "waited a minute for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn status_json(s: &Scratch) -> Value {
    let out = s
        .herdsman()
        .args(["status", "out.jsonl", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_slice(&out.stdout).expect("status --json prints one JSON object")
}

fn status_text(s: &Scratch) -> String {
    let out = s.herdsman().args(["status", "out.jsonl"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    String::from_utf8(out.stdout).unwrap()
}

/// Waits until `status --json` shows the run's live snapshot with a worker busy on a record
/// and at least `done` records succeeded.
fn wait_for_busy_worker(s: &Scratch, done: u64) -> Value {
    let mut last = Value::Null;
    let deadline = Instant::now() + DEADLINE;
    loop {
        let v = status_json(s);
        let busy = v["run"]["live"]["workers"]
            .as_array()
            .is_some_and(|ws| ws.iter().any(|w| w["record"].is_u64()));
        if busy && v["run"]["live"]["succeeded"].as_u64() >= Some(done) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "no busy worker within a minute: {last}"
        );
        last = v;
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn status_of_a_running_job_names_its_pid_progress_and_workers_then_says_finished() {
    let s = Scratch::new();
    let mut run = start_gated(&s);
    // Records 1 to 10 (ids 0 to 9) pass the gate.
    let v = wait_for_busy_worker(&s, 10);
    assert_eq!(v["run"]["state"], "running", "{v}");
    assert_eq!(v["run"]["pid"], run.pid, "{v}");
    assert_eq!(v["finished"], false, "{v}");
    let live = &v["run"]["live"];
    assert_eq!(live["pid"], run.pid, "{live}");
    assert_eq!(live["final"], false, "{live}");
    assert_eq!(live["workers"].as_array().unwrap().len(), 2, "{live}");
    // The input is a file: its size is known, so is the share done.
    assert!(live["input"]["bytes_total"].as_u64().unwrap() > 0, "{live}");
    assert!(v["run"]["percent_done"].is_f64(), "{v}");
    // Each worker holds one of the others, the oldest it was given.
    let held: Vec<u64> = live["workers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|w| w["record"].as_u64())
        .collect();
    assert!(held.iter().all(|&r| r >= 11), "{live}");

    let text = status_text(&s);
    assert!(
        text.contains(&format!("state       running (pid {}", run.pid)),
        "{text}"
    );
    assert!(text.contains("progress    "), "{text}");
    assert!(text.contains("ETA"), "{text}");
    assert!(
        predicate::str::is_match(r"worker 1 +(busy on record \d+ since|idle)")
            .unwrap()
            .eval(&text),
        "{text}"
    );
    assert!(text.contains("busy on record"), "{text}");

    s.write("open", "");
    let code = run.child.wait().unwrap();
    assert!(code.success(), "the run failed: {code:?}");
    let v = status_json(&s);
    assert_eq!(v["run"]["state"], "finished", "{v}");
    assert_eq!(v["records"], 40, "{v}");
    let text = status_text(&s);
    assert!(text.contains("state       finished"), "{text}");
    assert!(!text.contains("running"), "{text}");
    // The run's last snapshot is marked final.
    let snapshot: Value = serde_json::from_str(&s.read(".out.jsonl.herdsman/live.json")).unwrap();
    assert_eq!(snapshot["final"], true, "{snapshot}");
    assert_eq!(snapshot["succeeded"], 40, "{snapshot}");
}

#[test]
fn status_after_sigkill_says_interrupted_with_the_pid_not_running() {
    let s = Scratch::new();
    let mut run = start_gated(&s);
    wait_for_busy_worker(&s, 0);
    run.child.kill().unwrap();
    // Not collected yet: the dead run is a zombie, and still not running.
    let v = status_json(&s);
    assert_eq!(v["run"]["state"], "interrupted", "{v}");
    assert_eq!(v["run"]["pid"], run.pid, "{v}");
    assert_eq!(v["run"]["stopped"], false, "{v}");
    assert!(v["run"]["last_seen"].is_f64(), "{v}");
    run.child.wait().unwrap();
    let text = status_text(&s);
    assert!(
        text.contains(&format!(
            "state       interrupted: its last run (pid {}) died; last seen",
            run.pid
        )),
        "{text}"
    );
    assert!(text.contains("run the same command again"), "{text}");
    assert!(!text.contains("running"), "{text}");
    // Its lock file still names the dead pid: a stale file is not a running job.
    assert_eq!(
        s.read(".out.jsonl.herdsman/lock").trim(),
        run.pid.to_string()
    );
}

#[test]
fn watch_follows_the_run_and_exits_by_itself_when_it_ends() {
    let s = Scratch::new();
    let mut run = start_gated(&s);
    wait_for_busy_worker(&s, 0);
    let mut watch = Command::new(assert_cmd::cargo::cargo_bin("herdsman"))
        .args(["status", "--watch", "0.2", "out.jsonl"])
        .current_dir(s.dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read what it prints as it prints it; let the run end only once it has shown the
    // running job (on a loaded machine its start can take seconds).
    let shown = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let reader = {
        let shown = shown.clone();
        let mut stdout = watch.stdout.take().unwrap();
        std::thread::spawn(move || {
            use std::io::Read;
            let mut buf = [0u8; 4096];
            loop {
                match stdout.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => shown
                        .lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&buf[..n])),
                }
            }
        })
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !shown.lock().unwrap().contains("running (pid") {
        assert!(
            Instant::now() < deadline,
            "status --watch showed no running job within 60 s: {}",
            shown.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    s.write("open", "");
    assert!(run.child.wait().unwrap().success());
    let out = watch.wait_with_output().unwrap();
    reader.join().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = shown.lock().unwrap().clone();
    let blocks: Vec<&str> = text.split("\n\n").collect();
    assert!(blocks.len() >= 2, "one block per refresh: {text}");
    assert!(blocks[0].contains("running (pid"), "{text}");
    let last = blocks.last().unwrap();
    assert!(last.contains("state       finished"), "{text}");

    // `--watch OUTPUT` reads OUTPUT as the job; a finished job is shown once.
    s.herdsman()
        .args(["status", "--watch", "out.jsonl"])
        .assert()
        .success()
        .stdout(predicate::str::contains("state       finished"));
}

#[test]
fn failures_filter_and_group_by_kind() {
    let s = Scratch::new();
    // Two kinds: rows the worker reports (values that are not integers) and a row with a
    // field too many.
    s.write("in.csv", "id,value\n1,10\n2,x\n3,30,extra\n4,y\n5,50\n");
    s.herdsman()
        .args([
            "run",
            "-i",
            "in.csv",
            "-w",
            &py_worker("filter_framed.py", &[]),
        ])
        .args(["--protocol", "framed", "-o", "out.jsonl"])
        .assert()
        .code(1);

    let out = s
        .herdsman()
        .args(["failures", "out.jsonl", "--group"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    let lines = common::lines(&text);
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        predicate::str::is_match(
            r"^reported +2  e\.g\. in\.csv:3 record 2: value 'x' is not an integer"
        )
        .unwrap()
        .eval(lines[0]),
        "{text}"
    );
    assert!(
        predicate::str::is_match(r"^input_field_count +1  e\.g\. in\.csv:4 record 3: ")
            .unwrap()
            .eval(lines[1]),
        "{text}"
    );

    let out = s
        .herdsman()
        .args(["failures", "out.jsonl", "--group", "--json"])
        .output()
        .unwrap();
    let groups: Vec<Value> = common::json_lines(std::str::from_utf8(&out.stdout).unwrap());
    assert_eq!(groups[0]["kind"], "reported", "{groups:?}");
    assert_eq!(groups[0]["count"], 2, "{groups:?}");
    assert_eq!(groups[0]["example"]["record"], 2, "{groups:?}");

    let out = s
        .herdsman()
        .args(["failures", "out.jsonl", "--kind", "reported"])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(common::lines(&text).len(), 2, "{text}");
    assert!(text.contains("record 2: [reported]"), "{text}");
    assert!(text.contains("record 4: [reported]"), "{text}");
    assert!(!text.contains("input_field_count"), "{text}");

    s.herdsman()
        .args(["failures", "out.jsonl", "--kind", "timeout"])
        .assert()
        .success()
        .stdout("no failed records\n");

    s.herdsman()
        .args(["failures", "out.jsonl", "--kind", "nope"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--kind nope"))
        .stderr(predicate::str::contains("worker_exited"))
        .stderr(predicate::str::contains(
            "this job's failures are of kind reported, input_field_count",
        ));

    // `status` groups them too.
    let text = status_text(&s);
    assert!(text.contains("failures    by kind"), "{text}");
    assert!(text.contains("  reported"), "{text}");
    let v = status_json(&s);
    assert_eq!(v["failures_by_kind"][0]["kind"], "reported", "{v}");
    assert_eq!(v["failures_by_kind"][1]["kind"], "input_field_count", "{v}");
    assert_eq!(v["failures_by_kind"][1]["count"], 1, "{v}");
}
