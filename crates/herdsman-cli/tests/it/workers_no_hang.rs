//! The real binary with workers that misbehave: killed runs leave no processes behind, a
//! Ctrl-C gives queued records back at once, invalid UTF-8 is a dead letter, a record with
//! no answer for long is reported, and idle workers are never started.

use crate::common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

/// Generous: these tests must pass on a heavily loaded machine.
const LIMIT: Duration = Duration::from_secs(60);

fn spawn(s: &Scratch, args: &[&str], env: &[(&str, &str)]) -> Child {
    let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("herdsman"));
    cmd.args(args)
        .current_dir(s.dir.path())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(s.path("stderr.txt")).unwrap());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().expect("spawn herdsman")
}

/// Waits for `cond`, polling; false after `LIMIT`.
fn wait_for(mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + LIMIT;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}

/// Waits for the child to exit; kills it and fails if it does not within `LIMIT`.
fn wait_exit(child: &mut Child, what: &str) -> Option<i32> {
    let mut status = None;
    let exited = wait_for(|| {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    if !exited {
        let _ = child.kill();
        let _ = child.wait();
        panic!("herdsman did not exit within {LIMIT:?}: {what}");
    }
    status.unwrap().code()
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|st| {
            let state = st
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .unwrap_or("");
            state != "Z" && state != "X"
        })
        .unwrap_or(false)
}

fn file_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

fn jsonl(n: usize) -> String {
    (0..n).map(|i| format!("{{\"id\":\"{i}\"}}\n")).collect()
}

#[test]
fn a_herdsman_killed_with_sigkill_leaves_no_worker_and_no_worker_child() {
    let s = Scratch::new();
    s.write("in.jsonl", jsonl(3));
    // The worker records its pid and its child's, then waits for the child forever.
    let worker = "sh -c 'echo $$ >> pids; sleep 1000 & echo $! >> pids; wait'";
    let mut child = spawn(
        &s,
        &[
            "run",
            "-i",
            "in.jsonl",
            "-w",
            worker,
            "-j",
            "1",
            "-o",
            "out.jsonl",
        ],
        &[],
    );
    let pids_file = s.path("pids");
    let started = wait_for(|| file_lines(&pids_file).len() >= 2);
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(started, "the worker did not start");
    let pids: Vec<i32> = file_lines(&pids_file)
        .iter()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    let gone = wait_for(|| pids.iter().all(|&p| !alive(p)));
    if !gone {
        for &p in &pids {
            let _ = Command::new("kill").args(["-9", &p.to_string()]).status();
        }
    }
    assert!(
        gone,
        "worker or its child outlived a killed herdsman: {pids:?}"
    );
}

#[test]
fn a_herdsman_killed_the_moment_its_worker_starts_leaves_no_worker_child() {
    let s = Scratch::new();
    s.write("in.jsonl", jsonl(1));
    // The worker starts a child and kills herdsman (its parent) at once: the guard must
    // already know the worker's process group by then.
    let worker = "sh -c 'sleep 1000 & echo $! >> pids; kill -9 $PPID; wait'";
    let mut child = spawn(
        &s,
        &["run", "-i", "in.jsonl", "-w", worker, "-o", "out.jsonl"],
        &[],
    );
    let code = wait_exit(&mut child, "a worker that kills herdsman");
    assert_eq!(
        code,
        None,
        "herdsman was not killed: {}",
        s.read("stderr.txt")
    );
    let pids_file = s.path("pids");
    let pids: Vec<i32> = file_lines(&pids_file)
        .iter()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    assert_eq!(pids.len(), 1, "the worker did not start its child");
    let gone = wait_for(|| pids.iter().all(|&p| !alive(p)));
    if !gone {
        for &p in &pids {
            let _ = Command::new("kill").args(["-9", &p.to_string()]).status();
        }
    }
    assert!(
        gone,
        "the worker's child outlived a killed herdsman: {pids:?}"
    );
}

#[test]
fn ctrl_c_gives_queued_records_back_at_once_and_keeps_the_one_in_progress() {
    let s = Scratch::new();
    s.write("in.jsonl", jsonl(20));
    // A framed worker that answers record 0 only once its stdin is closed (herdsman closes
    // a framed worker's stdin when the run stops), and every other record at once.
    s.write(
        "gated.py",
        r#"import json, sys, threading
lines, cv = [], threading.Condition()
eof = threading.Event()
def read():
    for line in sys.stdin:
        with cv:
            lines.append(line)
            cv.notify_all()
    with cv:
        eof.set()
        cv.notify_all()
threading.Thread(target=read, daemon=True).start()
i = 0
while True:
    with cv:
        while i >= len(lines) and not eof.is_set():
            cv.wait()
        if i >= len(lines):
            break
        line = lines[i]
    i += 1
    req = json.loads(line)
    rid = req["record"]["id"]
    open("started-" + rid, "w").close()
    if rid == "0":
        eof.wait()
    reply = {"id": req["id"], "output": req["record"], "done": True}
    print(json.dumps(reply, separators=(",", ":")), flush=True)
"#,
    );
    let mut child = spawn(
        &s,
        &[
            "run",
            "-i",
            "in.jsonl",
            "-w",
            "python3 gated.py",
            "--protocol",
            "framed",
            "-j",
            "1",
            "-o",
            "out.jsonl",
            "--chunk-size",
            "1",
            "--summary-json",
            "s.json",
            "--progress",
            "none",
        ],
        &[],
    );
    let started = wait_for(|| s.path("started-0").exists());
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    assert!(started, "the worker did not start record 0");
    let code = wait_exit(
        &mut child,
        "records queued on the worker were not given back",
    );
    assert_eq!(code, Some(130), "{}", s.read("stderr.txt"));
    let sum = check_accounting(&s, "s.json", None, "out.failures.jsonl");
    assert_eq!(sum["total"]["succeeded"], json!(1), "{sum}");
    assert_eq!(sum["total"]["failed"], json!(0), "{sum}");
    // What finished is kept, for the next run to resume from.
    assert_eq!(lines(&s.read("out.jsonl.partial")), [r#"{"id":"0"}"#]);
}

#[test]
fn invalid_utf8_from_a_lines_worker_is_a_bad_output_dead_letter() {
    let s = Scratch::new();
    s.write("in.jsonl", jsonl(2));
    s.write(
        "bad.sh",
        "while read -r l; do printf '{\"a\":\"\\377\"}\\n'; done\n",
    );
    let mut child = spawn(
        &s,
        &[
            "run",
            "-i",
            "in.jsonl",
            "-w",
            "sh bad.sh",
            "-o",
            "out.jsonl",
        ],
        &[],
    );
    let code = wait_exit(&mut child, "invalid UTF-8");
    assert_eq!(code, Some(1), "{}", s.read("stderr.txt"));
    let out = std::fs::read(s.path("out.jsonl")).unwrap();
    assert!(
        out.is_empty(),
        "raw worker bytes reached the output: {out:?}"
    );
    let dead = json_lines(&s.read("out.failures.jsonl"));
    assert_eq!(dead.len(), 2);
    for d in &dead {
        assert_eq!(d["error"]["kind"], json!("bad_output"), "{d}");
        assert!(d["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not valid UTF-8"));
    }
}

#[test]
fn a_record_with_no_answer_for_long_is_reported_on_stderr() {
    let s = Scratch::new();
    s.write("in.jsonl", jsonl(1));
    let worker = "sh -c 'while [ ! -e go ]; do sleep 0.02; done; exec cat'";
    let mut child = spawn(
        &s,
        &["run", "-i", "in.jsonl", "-w", worker, "-o", "out.jsonl"],
        &[("HERDSMAN_NO_ANSWER_NOTICE_MS", "200")],
    );
    let noticed = wait_for(|| {
        std::fs::read_to_string(s.path("stderr.txt"))
            .unwrap_or_default()
            .contains("herdsman: record 1 on worker 0: no answer for ")
    });
    s.write("go", "");
    let code = wait_exit(&mut child, "a gated worker");
    assert!(noticed, "no notice: {}", s.read("stderr.txt"));
    assert_eq!(code, Some(0), "{}", s.read("stderr.txt"));
    assert_eq!(lines(&s.read("out.jsonl")), [r#"{"id":"0"}"#]);
}

#[test]
fn more_jobs_than_records_starts_no_idle_worker() {
    let s = Scratch::new();
    s.write("in.jsonl", jsonl(2));
    let worker = "sh -c 'echo $$ >> started; exec cat'";
    let mut child = spawn(
        &s,
        &[
            "run",
            "-i",
            "in.jsonl",
            "-w",
            worker,
            "-j",
            "8",
            "-o",
            "out.jsonl",
        ],
        &[],
    );
    let code = wait_exit(&mut child, "cat");
    assert_eq!(code, Some(0), "{}", s.read("stderr.txt"));
    let started = file_lines(&s.path("started")).len();
    assert!(started <= 2, "{started} workers started for 2 records");
}
