//! Integration tests of `herdsman run` driving the real binary with real worker processes.

use crate::common;

use common::*;
use predicates::prelude::*;
use serde_json::{json, Value};

#[test]
fn csv_through_cat_becomes_jsonl_in_order() {
    let s = Scratch::new();
    s.write(
        "in.csv",
        "id,name\n1,ann\n2,\"bob, jr\"\n3,\"multi\nline\"\n",
    );
    s.herdsman()
        .args([
            "run",
            "-i",
            "in.csv",
            "-w",
            "cat",
            "-j",
            "2",
            "-o",
            "out.jsonl",
        ])
        .args(["--summary-json", "sum.json", "--progress", "none"])
        .assert()
        .success()
        .stderr(predicate::str::contains(
            "3 = 3 succeeded + 0 failed + 0 filtered",
        ));
    assert_eq!(
        json_lines(&s.read("out.jsonl")),
        vec![
            json!({"id": "1", "name": "ann"}),
            json!({"id": "2", "name": "bob, jr"}),
            json!({"id": "3", "name": "multi\nline"}),
        ]
    );
    check_accounting(&s, "sum.json", Some("out.jsonl"), "out.failures.jsonl");
    assert!(!s.path("out.jsonl.partial").exists());
}

#[test]
fn jsonl_in_csv_out_with_columns_from_the_first_record() {
    let s = Scratch::new();
    s.write(
        "in.jsonl",
        "{\"a\":1,\"b\":\"x\"}\n\n{\"a\":2,\"b\":\"y, z\"}\n",
    );
    s.herdsman()
        .args([
            "run",
            "-i",
            "in.jsonl",
            "-w",
            "cat",
            "-o",
            "out.csv",
            "--summary-json",
            "s.json",
        ])
        .assert()
        .success();
    assert_eq!(s.read("out.csv"), "a,b\n1,x\n2,\"y, z\"\n");
    check_accounting(&s, "s.json", None, "out.failures.jsonl");
}

#[test]
fn stdout_output_streams_in_order() {
    let s = Scratch::new();
    s.write("in.csv", id_csv(50));
    let out = s
        .herdsman()
        .args(["run", "-i", "in.csv", "-w", "cat", "-j", "3", "-o", "-"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let got = json_lines(std::str::from_utf8(&out.stdout).unwrap());
    assert_eq!(got.len(), 50);
    // No failures, no dead-letter file was asked for: none is left behind.
    assert!(!s.path("herdsman.failures.jsonl").exists());
    for (i, v) in got.iter().enumerate() {
        assert_eq!(v["id"], json!(i.to_string()));
    }
}

#[test]
fn order_is_kept_with_four_jobs_and_random_delays() {
    let s = Scratch::new();
    s.write("in.csv", id_csv(300));
    s.job(
        &py_worker("delay.py", &[]),
        &["-j", "4", "--chunk-size", "7"],
    )
    .assert()
    .success();
    let got = json_lines(&s.read("out.jsonl"));
    let ids: Vec<String> = got
        .iter()
        .map(|v| v["id"].as_str().unwrap().to_string())
        .collect();
    let want: Vec<String> = (0..300).map(|i| i.to_string()).collect();
    assert_eq!(ids, want);
    s.accounting();
}

#[test]
fn unordered_output_holds_every_record_once() {
    let s = Scratch::new();
    s.write("in.csv", id_csv(200));
    s.job(
        &py_worker("delay.py", &[]),
        &["-j", "4", "--unordered", "--chunk-size", "5"],
    )
    .assert()
    .success();
    let mut ids: Vec<u64> = json_lines(&s.read("out.jsonl"))
        .iter()
        .map(|v| v["id"].as_str().unwrap().parse().unwrap())
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, (0..200).collect::<Vec<u64>>());
    s.accounting();
}

#[test]
fn a_worker_that_crashes_on_one_record_fails_only_that_record() {
    let s = Scratch::new();
    s.write("in.csv", id_csv(40));
    let out = s
        .job(
            &py_worker("crash_on.py", &["17"]),
            &["-j", "2", "--retries", "1", "--backoff", "10ms"],
        )
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let ok = json_lines(&s.read("out.jsonl"));
    assert_eq!(ok.len(), 39);
    assert!(ok.iter().all(|v| v["id"] != json!("17")));
    let dead = json_lines(&s.read("out.failures.jsonl"));
    assert_eq!(dead.len(), 1);
    let d = &dead[0];
    assert_eq!(d["record"], json!({"id": "17", "value": "51"}));
    assert_eq!(d["attempts"], json!(2));
    assert_eq!(d["source"]["line"], json!(19));
    assert_eq!(d["error"]["kind"], json!("worker_exited"));
    let tail = d["stderr_tail"].to_string();
    assert!(tail.contains("about to crash on 17"), "{d}");
    let sum = s.accounting();
    assert_eq!(sum["total"]["retries"], json!(1));
}

#[test]
fn a_hung_worker_is_killed_with_its_grandchild_on_timeout() {
    let s = Scratch::new();
    s.write("in.csv", id_csv(6));
    let pidfile = s.path("grandchild.pid");
    let out = s
        .herdsman()
        .args(["run", "-i", "in.csv", "-w"])
        .arg(py_worker("hang_on.py", &["2", pidfile.to_str().unwrap()]))
        // Generous: a worker slow to start on a loaded machine must not time out the
        // records that do answer; only the hung one waits this long.
        .args([
            "-j",
            "1",
            "--timeout",
            "10s",
            "-o",
            "out.jsonl",
            "--summary-json",
            "s.json",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(
        json_lines(&s.read("out.jsonl")).len(),
        5,
        "{}",
        s.read("out.failures.jsonl")
    );
    let dead = json_lines(&s.read("out.failures.jsonl"));
    assert_eq!(dead[0]["error"]["kind"], json!("timeout"));
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // The grandchild must be gone (allow a moment for the kernel to reap it).
    let gone = (0..50).any(|_| {
        let alive = std::path::Path::new(&format!("/proc/{pid}")).exists()
            && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .unwrap_or_default()
                .contains(") Z ");
        if alive {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        !alive
    });
    assert!(gone, "grandchild {pid} survived the timeout kill");
    s.accounting();
}

#[test]
fn garbage_output_fails_the_record_with_a_clear_message() {
    let s = Scratch::new();
    s.write("in.csv", id_csv(10));
    let out = s
        .job(&py_worker("garbage_on.py", &["4"]), &[])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let dead = json_lines(&s.read("out.failures.jsonl"));
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0]["record"]["id"], json!("4"));
    assert_eq!(dead[0]["error"]["kind"], json!("bad_output"));
    assert!(dead[0]["error"]["message"]
        .as_str()
        .unwrap()
        .contains("this is not json"));
    s.accounting();
}

#[test]
fn a_worker_flooding_stderr_does_not_deadlock() {
    let s = Scratch::new();
    s.write("in.csv", id_csv(64)); // 64 × 64 KiB = 4 MiB of stderr
    s.job(&py_worker("flood_stderr.py", &[]), &["-j", "2", "-q"])
        .assert()
        .success();
    assert_eq!(json_lines(&s.read("out.jsonl")).len(), 64);
}

#[test]
fn a_worker_that_never_reads_stdin_is_timed_out_not_deadlocked() {
    let s = Scratch::new();
    s.write("in.csv", id_csv(2));
    let out = s
        .job(
            &py_worker("no_read.py", &[]),
            &["-j", "1", "--timeout", "500ms"],
        )
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let dead = json_lines(&s.read("out.failures.jsonl"));
    assert_eq!(dead.len(), 2);
    s.accounting();
}

#[test]
fn a_missing_worker_program_is_a_usage_error_before_any_work() {
    let s = Scratch::new();
    s.write("in.csv", id_csv(5));
    s.herdsman()
        .args([
            "run",
            "-i",
            "in.csv",
            "-w",
            "no-such-program-herdsman",
            "-o",
            "out.jsonl",
        ])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("no-such-program-herdsman"));
    assert!(!s.path("out.jsonl").exists());
}

#[test]
fn exec_passes_fields_as_argv_without_a_shell() {
    let s = Scratch::new();
    s.write(
        "in.csv",
        "id,name\n1,plain\n2,\"; touch pwned; echo $HOME `id`\"\n",
    );
    s.herdsman()
        .args([
            "run",
            "-i",
            "in.csv",
            "-o",
            "out.jsonl",
            "--summary-json",
            "s.json",
            "--",
        ])
        .args(["printf", "%s|%s", "{#}", "{name}"])
        .assert()
        .success();
    assert!(!s.path("pwned").exists(), "a field was run by a shell");
    let out = s.read("out.jsonl");
    assert!(out.contains("; touch pwned; echo $HOME `id`"), "{out}");
    s.accounting();
}

#[test]
fn exec_with_an_unknown_column_is_refused_before_running() {
    let s = Scratch::new();
    s.write("in.csv", id_csv(3));
    s.herdsman()
        .args([
            "run",
            "-i",
            "in.csv",
            "-o",
            "out.jsonl",
            "-x",
            "touch {nope}",
        ])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("nope"));
    assert!(!s.path("out.jsonl").exists());
}

#[test]
fn exec_failures_carry_the_exit_status() {
    let s = Scratch::new();
    s.write("in.csv", "n\n0\n1\n0\n");
    let out = s
        .herdsman()
        .args([
            "run",
            "-i",
            "in.csv",
            "-o",
            "out.jsonl",
            "--summary-json",
            "s.json",
        ])
        .args(["--", "sh", "-c", "exit $0", "{n}"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let dead = json_lines(&s.read("out.failures.jsonl"));
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0]["source"]["record"], json!(2));
    s.accounting();
}

#[test]
fn malformed_csv_rows_become_dead_letters_with_their_line() {
    let s = Scratch::new();
    let mut csv = b"id,value\n1,a\n2,b,extra\n3,c\n4,\xff\xfe\n5,e\n".to_vec();
    csv.extend_from_slice(b"6,\"unterminated\n");
    s.write("in.csv", csv);
    let out = s.job("cat", &[]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let ok: Vec<Value> = json_lines(&s.read("out.jsonl"));
    let ids: Vec<&str> = ok.iter().map(|v| v["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["1", "3", "5"]);
    let dead = json_lines(&s.read("out.failures.jsonl"));
    let lines: Vec<u64> = dead
        .iter()
        .map(|d| d["source"]["line"].as_u64().unwrap())
        .collect();
    assert_eq!(lines, [3, 5, 7]);
    for d in &dead {
        assert!(
            d["error"]["kind"].as_str().unwrap().starts_with("input_"),
            "{d}"
        );
        assert!(
            d["error"]["message"].as_str().unwrap().contains("in.csv"),
            "{d}"
        );
        assert_eq!(d["attempts"], json!(1));
    }
    s.accounting();
}

#[test]
fn malformed_jsonl_lines_become_dead_letters() {
    let s = Scratch::new();
    s.write("in.jsonl", "{\"a\":1}\n{\"a\":\n[1,2]\nnot json\n\"ok\"\n");
    let out = s
        .herdsman()
        .args([
            "run",
            "-i",
            "in.jsonl",
            "-w",
            "cat",
            "-o",
            "out.jsonl",
            "--summary-json",
            "s.json",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(
        lines(&s.read("out.jsonl")),
        ["{\"a\":1}", "[1,2]", "\"ok\""]
    );
    let dead = json_lines(&s.read("out.failures.jsonl"));
    assert_eq!(dead.len(), 2);
    assert_eq!(dead[1]["raw"], json!("not json"));
    s.accounting();
}

#[test]
fn max_errors_stops_the_run_with_exit_code_3() {
    let s = Scratch::new();
    let mut csv = String::from("id,value\n");
    for i in 0..5000 {
        csv.push_str(&format!("{i},{}\n", if i % 2 == 0 { "x" } else { "1" }));
    }
    s.write("in.csv", csv);
    let out = s
        .job(
            &py_worker("filter_framed.py", &[]),
            &[
                "--protocol",
                "framed",
                "--max-errors",
                "5",
                "--no-checkpoint",
                // One record per chunk: records queued on the worker come back as not run
                // when the run stops, and a chunk holding one of them is not written.
                "--chunk-size",
                "1",
            ],
        )
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let sum = s.accounting();
    assert!(sum["total"]["failed"].as_u64().unwrap() >= 5);
    assert!(sum["total"]["records"].as_u64().unwrap() < 5000, "{sum}");
}

#[test]
fn framed_workers_can_filter_explode_and_fail_records() {
    let s = Scratch::new();
    s.write("in.csv", "id,value\n1,10\n2,20\n3,oops\n5,50\n");
    let out = s
        .job(
            &py_worker("filter_framed.py", &[]),
            &["--protocol", "framed"],
        )
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let got = json_lines(&s.read("out.jsonl"));
    assert_eq!(
        got,
        vec![
            json!({"id": "1", "copy": 0, "value": 10}),
            json!({"id": "1", "copy": 1, "value": 10}),
            json!({"id": "5", "copy": 0, "value": 50}),
            json!({"id": "5", "copy": 1, "value": 50}),
        ]
    );
    let sum = s.accounting();
    assert_eq!(sum["total"]["filtered"], json!(1));
    assert_eq!(sum["total"]["succeeded"], json!(2));
    let dead = json_lines(&s.read("out.failures.jsonl"));
    assert_eq!(dead[0]["error"]["kind"], json!("reported"));
}

#[test]
fn usage_errors_exit_2_with_one_sentence() {
    let s = Scratch::new();
    s.herdsman()
        .args(["run", "-i", "missing.csv", "-w", "cat"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("missing.csv"));
    s.write("in.csv", id_csv(1));
    s.herdsman()
        .args(["run", "-i", "in.csv"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("nothing to run"));
    s.herdsman()
        .args(["run", "-i", "in.csv", "-w", "cat", "--rate", "fast"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("20/second"));
}

#[test]
fn help_documents_every_option_with_examples() {
    let s = Scratch::new();
    s.herdsman()
        .args(["run", "--help"])
        .assert()
        .success()
        .stdout(predicate::str::contains("--max-errors"))
        .stdout(predicate::str::contains("Examples:"))
        .stdout(predicate::str::contains("Exit codes"));
}

#[test]
fn a_job_file_runs_and_flags_override_it() {
    let s = Scratch::new();
    s.write("in.csv", id_csv(20));
    s.write(
        "job.toml",
        "input = ['in.csv']\nworker = 'cat'\njobs = 3\noutput = 'job-out.jsonl'\nsummary_json = 's.json'\n",
    );
    s.herdsman()
        .args(["run", "job.toml", "-j", "1"])
        .assert()
        .success();
    assert_eq!(json_lines(&s.read("job-out.jsonl")).len(), 20);
}

/// A run of 400 records through `gate.py`, which holds records from id 200 on until the test
/// creates the file `open`: a signal sent after `reached` appears certainly lands mid-run, and
/// with a window of 20 most records are still unread then.
#[cfg(unix)]
fn gated_args(s: &Scratch) -> Vec<String> {
    let worker = py_worker("gate.py", &["200", s.dir.path().to_str().unwrap()]);
    [
        "run",
        "-i",
        "in.csv",
        "-w",
        worker.as_str(),
        "-j",
        "2",
        "-o",
        "out.jsonl",
        "--chunk-size",
        "10",
        "--window",
        "20",
        "--summary-json",
        "s.json",
        "--progress",
        "none",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect()
}

/// A gated run. Dropped (a test failed half way), it opens the gate and kills the run, so
/// that no process outlives the test.
#[cfg(unix)]
struct Gated {
    child: std::process::Child,
    gate: std::path::PathBuf,
}

#[cfg(unix)]
impl Drop for Gated {
    fn drop(&mut self) {
        let _ = std::fs::write(&self.gate, "");
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Starts `program args` with the gated run's arguments after them (the runner itself, or a
/// supervisor such as `timeout` in front of it), stdout discarded and stderr watched.
#[cfg(unix)]
fn spawn_gated(
    s: &Scratch,
    program: &std::path::Path,
    args: &[&str],
    close_stderr_after: Option<&'static str>,
) -> (Gated, StderrLines) {
    use std::process::{Command, Stdio};
    s.write("in.csv", id_csv(400));
    let mut child = Command::new(program)
        .args(args)
        .args(gated_args(s))
        .current_dir(s.dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = StderrLines::watch(child.stderr.take().unwrap(), close_stderr_after);
    let gated = Gated {
        child,
        gate: s.path("open"),
    };
    (gated, lines)
}

/// Starts a gated run and waits until it holds a record.
#[cfg(unix)]
fn start_gated(s: &Scratch, close_stderr_after: Option<&'static str>) -> (Gated, StderrLines) {
    let bin = assert_cmd::cargo::cargo_bin("herdsman");
    let (gated, lines) = spawn_gated(s, &bin, &[], close_stderr_after);
    wait_for_file(&s.path("reached"));
    (gated, lines)
}

/// After a drained stop: the summary adds up, the run stopped part way, and the same command
/// resumes and finishes with every record exactly once, in order.
#[cfg(unix)]
fn check_drained_and_resume(s: &Scratch, exit_code: i32) {
    let sum = check_accounting(s, "s.json", None, "out.failures.jsonl");
    assert_eq!(sum["ending"], json!("interrupted"), "{sum}");
    assert_eq!(sum["exit_code"], json!(exit_code), "{sum}");
    assert!(sum["total"]["succeeded"].as_u64().unwrap() < 400, "{sum}");
    assert!(s.path("out.jsonl.partial").exists());
    let out = s.herdsman().args(gated_args(s)).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let ids: Vec<String> = json_lines(&s.read("out.jsonl"))
        .iter()
        .map(|v| v["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, (0..400).map(|i| i.to_string()).collect::<Vec<_>>());
}

#[cfg(unix)]
#[test]
fn sigint_stops_admitting_writes_what_is_done_and_resumes() {
    let s = Scratch::new();
    let (mut run, lines) = start_gated(&s, None);
    nix_kill(run.child.id(), 2);
    lines.expect("stopping: finishing records in flight");
    s.write("open", "");
    let status = run.child.wait().unwrap();
    let err = lines.rest();
    assert_eq!(status.code(), Some(130), "{err}");
    assert!(err.contains("interrupted"), "{err}");
    check_drained_and_resume(&s, 130);
}

/// Supervisors repeat their signal: `timeout` sends SIGTERM to herdsman and to its process
/// group, systemd and container runtimes may send it again. A SIGTERM after the first, however
/// late, does not force a kill: the run drains once, writes its summary and exits with 143.
#[cfg(unix)]
#[test]
fn a_repeated_sigterm_drains_once() {
    let s = Scratch::new();
    let (mut run, lines) = start_gated(&s, None);
    nix_kill(run.child.id(), 15);
    lines.expect("SIGTERM received, stopping: finishing records in flight");
    // The second one is certainly handled on its own, after the first.
    nix_kill(run.child.id(), 15);
    lines.expect("SIGTERM received while stopping");
    nix_kill(run.child.id(), 15);
    nix_kill(run.child.id(), 1);
    s.write("open", "");
    let status = run.child.wait().unwrap();
    let err = lines.rest();
    assert_eq!(status.code(), Some(143), "{err}");
    assert!(err.contains("interrupted (SIGTERM)"), "{err}");
    assert!(!err.contains("quitting at once"), "{err}");
    check_drained_and_resume(&s, 143);
}

/// `timeout -s INT` sends SIGINT twice at once (to herdsman and to its group): a SIGINT within
/// a second of the first is a duplicate, not a second Ctrl-C, and the run drains once.
#[cfg(unix)]
#[test]
fn two_sigints_at_once_drain_once() {
    let s = Scratch::new();
    let (mut run, lines) = start_gated(&s, None);
    // One `kill` process sends both, back to back.
    let pid = run.child.id().to_string();
    let sent = std::process::Command::new("kill")
        .args(["-s", "INT", &pid, &pid])
        .status()
        .unwrap();
    assert!(sent.success());
    lines.expect("stopping: finishing records in flight");
    s.write("open", "");
    let status = run.child.wait().unwrap();
    let err = lines.rest();
    assert_eq!(status.code(), Some(130), "{err}");
    assert!(!err.contains("quitting at once"), "{err}");
    check_drained_and_resume(&s, 130);
}

/// The real `timeout`: it sends SIGTERM to herdsman and to its process group. The run drains
/// once and exits with 143, which `timeout --preserve-status` passes on.
#[cfg(unix)]
#[test]
fn under_timeout_the_run_drains_once_and_exits_143() {
    let s = Scratch::new();
    let bin = assert_cmd::cargo::cargo_bin("herdsman");
    let bin = bin.to_str().unwrap();
    let timeout = std::path::Path::new("timeout");
    let (mut run, lines) = spawn_gated(&s, timeout, &["--preserve-status", "1", bin], None);
    lines.expect("SIGTERM received, stopping");
    s.write("open", "");
    let status = run.child.wait().unwrap();
    let err = lines.rest();
    assert_eq!(status.code(), Some(143), "{err}");
    assert!(!err.contains("quitting at once"), "{err}");
    check_drained_and_resume(&s, 143);
}

/// SIGHUP (the terminal went away) stops the run like SIGTERM and exits with 129, even though
/// stderr can no longer be written to: the summary and notices are dropped, not a panic.
#[cfg(unix)]
#[test]
fn sighup_drains_and_exits_129_even_when_stderr_is_gone() {
    let s = Scratch::new();
    let (mut run, lines) = start_gated(&s, Some("stopping"));
    nix_kill(run.child.id(), 1);
    lines.expect("SIGHUP received, stopping");
    // The watcher closed its end of the pipe after that line: every later write fails.
    lines.closed();
    s.write("open", "");
    let status = run.child.wait().unwrap();
    assert_eq!(status.code(), Some(129));
    check_drained_and_resume(&s, 129);
}

/// The lines a child writes to stderr, read on a thread so that a test can wait for one with
/// a deadline instead of blocking forever.
#[cfg(unix)]
struct StderrLines {
    rx: std::sync::mpsc::Receiver<String>,
    seen: std::cell::RefCell<Vec<String>>,
}

#[cfg(unix)]
impl StderrLines {
    /// Reads `stderr` line by line; with `close_after`, closes it after the first line that
    /// contains that text.
    fn watch(stderr: std::process::ChildStderr, close_after: Option<&'static str>) -> Self {
        use std::io::BufRead;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let last = close_after.is_some_and(|c| line.contains(c));
                if tx.send(line).is_err() || last {
                    break;
                }
            }
        });
        StderrLines {
            rx,
            seen: Default::default(),
        }
    }

    /// Waits (a minute at most) for a line containing `needle`.
    fn expect(&self, needle: &str) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) => {
                    let hit = line.contains(needle);
                    self.seen.borrow_mut().push(line);
                    if hit {
                        return;
                    }
                }
                Err(e) => panic!(
                    "no stderr line with `{needle}` ({e:?}); stderr so far:\n{}",
                    self.seen.borrow().join("\n")
                ),
            }
        }
    }

    /// Waits until the reading thread has ended (and so closed the pipe).
    fn closed(&self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) => self.seen.borrow_mut().push(line),
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
                Err(e) => panic!("the stderr watcher did not end: {e:?}"),
            }
        }
    }

    /// Everything written to stderr, up to the end (call once the child has exited).
    fn rest(&self) -> String {
        let mut seen = self.seen.borrow_mut();
        seen.extend(self.rx.iter());
        seen.join("\n")
    }
}

/// Waits (a minute at most) for `path` to exist.
fn wait_for_file(path: &std::path::Path) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !path.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "{} did not appear within a minute",
            path.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

#[cfg(unix)]
fn nix_kill(pid: u32, sig: i32) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn status_and_failures_describe_a_job() {
    let s = Scratch::new();
    s.write("in.csv", "id,value\n1,10\n2,x\n3,30\n");
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
    s.herdsman()
        .args(["status", "out.jsonl"])
        .assert()
        .success()
        .stdout(predicate::str::contains("finished"))
        .stdout(predicate::str::contains("3 committed in 1 chunks"))
        .stdout(predicate::str::contains("1 failed"));
    let out = s
        .herdsman()
        .args(["status", "out.jsonl", "--json"])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["records"], json!(3));
    assert_eq!(v["finished"], json!(true));
    s.herdsman()
        .args(["failures", "out.jsonl"])
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "in.csv:3 record 2: [reported] value 'x' is not an integer",
        ));
    s.herdsman()
        .args(["status", "nowhere.jsonl"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("no checkpoint"));
}

#[test]
fn stdout_output_with_a_failure_keeps_the_default_dead_letter_file() {
    let s = Scratch::new();
    s.write("in.jsonl", "{\"a\":1}\nnot json\n");
    let out = s
        .herdsman()
        .args(["run", "-i", "in.jsonl", "-w", "cat", "-o", "-"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(
        lines(std::str::from_utf8(&out.stdout).unwrap()),
        ["{\"a\":1}"]
    );
    let dead = json_lines(&s.read("herdsman.failures.jsonl"));
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0]["source"]["line"], json!(2));
}

#[cfg(unix)]
#[test]
fn a_second_sigint_kills_the_workers_and_exits_at_once() {
    use std::process::{Command, Stdio};
    let s = Scratch::new();
    s.write("in.csv", id_csv(3));
    let worker = py_worker("no_read.py", &[]);
    let mut child = Command::new(assert_cmd::cargo::cargo_bin("herdsman"))
        .args([
            "run",
            "-i",
            "in.csv",
            "-w",
            worker.as_str(),
            "-j",
            "1",
            "-o",
            "out.jsonl",
        ])
        .current_dir(s.dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = StderrLines::watch(child.stderr.take().unwrap(), None);
    // Wait (a minute at most) for the worker process to exist.
    let mut worker_pid = None;
    for _ in 0..2400 {
        let out = Command::new("pgrep")
            .args(["-P", &child.id().to_string()])
            .output()
            .unwrap();
        if let Some(pid) = std::str::from_utf8(&out.stdout).unwrap().lines().next() {
            worker_pid = Some(pid.to_string());
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    let worker_pid = worker_pid.expect("the worker started");
    nix_kill(child.id(), 2);
    lines.expect("stopping: finishing records in flight");
    // A second Ctrl-C counts once a second has passed since the first was handled (sooner,
    // it is taken for a supervisor's duplicate); the rule itself is about time.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    nix_kill(child.id(), 2);
    let status = child.wait().unwrap();
    let err = lines.rest();
    assert_eq!(status.code(), Some(130), "{err}");
    assert!(err.contains("quitting at once"), "{err}");
    let gone = (0..50).any(|_| {
        let alive = std::fs::read_to_string(format!("/proc/{worker_pid}/stat"))
            .map(|st| !st.contains(") Z "))
            .unwrap_or(false);
        if alive {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        !alive
    });
    assert!(gone, "worker {worker_pid} survived the second Ctrl-C");
}

#[test]
fn max_errors_as_a_share_stops_only_above_it() {
    let s = Scratch::new();
    let mut csv = String::from("id,value\n");
    for i in 0..3000 {
        csv.push_str(&format!("{i},{}\n", if i % 10 == 0 { "x" } else { "1" }));
    }
    s.write("in.csv", csv);
    let run = |share: &str| {
        s.job(
            &py_worker("filter_framed.py", &[]),
            &[
                "--protocol",
                "framed",
                "--max-errors",
                share,
                "--no-checkpoint",
                "--chunk-size",
                "50",
            ],
        )
        .output()
        .unwrap()
    };
    // 10% of the records fail: a 20% limit lets the run finish...
    let out = run("20%");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let sum = s.accounting();
    assert_eq!(sum["total"]["failed"], json!(300));
    // ...and a 5% limit stops it early. (A stopped run without a checkpoint never replaces
    // an existing output, so the first run's files go first.)
    std::fs::remove_file(s.path("out.jsonl")).unwrap();
    std::fs::remove_file(s.path("out.failures.jsonl")).unwrap();
    let out = run("5%");
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let sum = s.accounting();
    assert!(sum["total"]["records"].as_u64().unwrap() < 3000, "{sum}");
}

/// Every absurd value is a usage error (exit 2, one sentence), never a panic (exit 101).
#[test]
fn absurd_values_are_usage_errors_never_panics() {
    let s = Scratch::new();
    s.write("in.csv", id_csv(3));
    s.write(
        "huge-timeout.toml",
        "input = 'in.csv'\nworker = 'cat'\ntimeout = \"1e30\"\n",
    );
    s.write(
        "huge-jobs.toml",
        "input = 'in.csv'\nworker = 'cat'\njobs = 18446744073709551615\n",
    );
    s.write(
        "huge-retries.toml",
        "input = 'in.csv'\nworker = 'cat'\nretries = 4294967295\n",
    );
    let flags: &[&[&str]] = &[
        &["--timeout", "1e30"],
        &["--timeout", "-1"],
        &["--timeout=-1"],
        &["--timeout", "nan"],
        &["--timeout", "inf"],
        &["--timeout", "0"],
        &["--timeout", "100000000000y"],
        &["--backoff", "1e30"],
        &["--backoff", "-5ms"],
        &["--max-backoff", "1e300"],
        &["--max-backoff", "100000000000y"],
        &["-j", "18446744073709551615"],
        &["-j", "18446744073709551616"],
        &["-j", "0"],
        &["-j", "-1"],
        &["-j", "1025"],
        &["--rate", "0/second"],
        &["--rate", "-1/second"],
        &["--rate", "99999999999/second"],
        &["--rate", "5/fortnight"],
        &["--chunk-size", "0"],
        &["--chunk-size", "-1"],
        &["--window", "0"],
        &["--window", "18446744073709551615"],
        &["--retries", "4294967295"],
        &["--retries", "1001"],
        &["--retries", "-1"],
        &["--max-errors", "-1"],
        &["--max-errors", "nan%"],
        &["--max-errors", "1e400%"],
        &["--max-errors", "101%"],
    ];
    let base = ["run", "-i", "in.csv", "-w", "cat", "-o", "out.jsonl"];
    let mut cases: Vec<Vec<&str>> = flags
        .iter()
        .map(|f| base.iter().chain(f.iter()).copied().collect())
        .collect();
    for job in ["huge-timeout.toml", "huge-jobs.toml", "huge-retries.toml"] {
        cases.push(vec!["run", job, "-o", "out.jsonl"]);
    }
    for args in &cases {
        let out = s.herdsman().args(args).output().unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(!err.trim().is_empty(), "{args:?}: no message");
        assert!(!s.path("out.jsonl").exists(), "{args:?} ran");
    }
}

/// `-j` has a ceiling, stated in the help and in the error.
#[test]
fn jobs_has_a_ceiling_stated_in_help_and_error() {
    let s = Scratch::new();
    s.write("in.csv", id_csv(3));
    s.herdsman()
        .args(["run", "--help"])
        .assert()
        .success()
        .stdout(predicate::str::contains("1 to 1024"));
    s.herdsman()
        .args([
            "run",
            "-i",
            "in.csv",
            "-w",
            "cat",
            "-o",
            "out.jsonl",
            "-j",
            "5000",
        ])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--jobs 5000"))
        .stderr(predicate::str::contains("limit of 1024"));
    // 1024 itself passes the check (the next setting's error is reported instead), without
    // starting 1024 workers.
    s.herdsman()
        .args([
            "run",
            "-i",
            "in.csv",
            "-w",
            "cat",
            "-o",
            "out.jsonl",
            "-j",
            "1024",
        ])
        .args(["--rate", "fast"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--rate `fast`"))
        .stderr(predicate::str::contains("--jobs").not());
}

/// A `--max-errors` stop writes the failures it counted to the dead-letter file the summary
/// names (the partial file of a job that can be resumed), and the counts add up: 5 records,
/// all failing, `--max-errors 2`.
#[test]
fn a_max_errors_stop_writes_the_failures_it_counted() {
    for extra in [&[][..], &["--no-checkpoint"][..]] {
        let s = Scratch::new();
        s.write("in.csv", "id,value\n0,a\n1,b\n2,c\n3,d\n4,e\n");
        let out = s
            .job(
                &py_worker("filter_framed.py", &[]),
                &[&["--protocol", "framed", "--max-errors", "2"], extra].concat(),
            )
            .output()
            .unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(3), "{extra:?}: {err}");
        let sum = check_max_errors_stop(&s, &err);
        assert_eq!(sum["total"]["records"], json!(5), "{sum}");
    }
}

/// The same with the failures in a chunk the stop cut short: a chunk of 1000 records of which
/// only the first few ran. Its failures are written (uncommitted: a resume redoes the chunk)
/// instead of being counted as not run, and resuming still gives the uninterrupted result.
#[test]
fn a_max_errors_stop_inside_a_chunk_writes_its_failures_and_resumes() {
    let s = Scratch::new();
    let mut csv = String::from("id,value\n");
    for i in 0..3000 {
        csv.push_str(&format!(
            "{i},{}\n",
            if i < 50 { "x".into() } else { i.to_string() }
        ));
    }
    s.write("in.csv", &csv);
    let worker = py_worker("filter_framed.py", &[]);
    let args = ["--protocol", "framed", "-j", "1", "--window", "8"];
    let out = s
        .job(&worker, &[&args[..], &["--max-errors", "2"]].concat())
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    let sum = check_max_errors_stop(&s, &err);
    assert!(sum["total"]["not_run"].as_u64().unwrap() > 0, "{sum}");
    // Resume without the limit: the job finishes as an uninterrupted run would.
    let out = s.job(&worker, &args).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let sum = s.accounting();
    assert_eq!(sum["total"]["records"], json!(3000), "{sum}");
    assert_eq!(sum["total"]["failed"], json!(50), "{sum}");
    let clean = Scratch::new();
    clean.write("in.csv", &csv);
    clean.job(&worker, &args).assert().code(1);
    assert!(s.read("out.jsonl") == clean.read("out.jsonl"));
    assert!(s.read("out.failures.jsonl") == clean.read("out.failures.jsonl"));
}

/// Checks a `--max-errors` stop: at least the limit failed, the summary adds up, and the file
/// it names as holding the failures holds exactly that many.
fn check_max_errors_stop(s: &Scratch, err: &str) -> Value {
    let sum: Value = serde_json::from_str(&s.read("s.json")).unwrap();
    let t = &sum["total"];
    let n = |k: &str| t[k].as_u64().unwrap();
    assert_eq!(sum["ending"], json!("aborted"), "{sum}");
    assert!(
        n("failed") >= 2,
        "the failures that stopped the run are counted: {sum}"
    );
    assert_eq!(
        n("records"),
        n("succeeded") + n("failed") + n("filtered") + n("not_run"),
        "{sum}"
    );
    let dead = sum["failures"].as_str().unwrap();
    assert!(err.contains(&format!("{} in {dead}", n("failed"))), "{err}");
    let dead = json_lines(&s.read(dead));
    assert_eq!(dead.len() as u64, n("failed"), "{sum}");
    assert!(dead.iter().all(|d| d["error"]["kind"] == json!("reported")));
    sum
}

/// Lines `1` to `n`, one number per line.
fn numbered_lines(n: u32) -> String {
    (1..=n).map(|k| format!("{k}\n")).collect()
}

/// Workers that answered records and then die at every start stop the run once the restart
/// limit is reached. That is trouble that arose while running, not a usage error: exit 1 (a
/// failed run that resumes), never 2, which promises that nothing ran.
#[test]
fn workers_that_keep_dying_end_the_run_with_exit_1_not_a_usage_error() {
    let s = Scratch::new();
    s.write("in.txt", numbered_lines(200));
    // The first worker answers one record, then every worker exits at once.
    let worker =
        "sh -c 'if [ -e answered ]; then exit 3; fi; read l; echo \"$l\"; touch answered; exit 3'";
    s.herdsman()
        .args(["run", "-i", "in.txt", "--format", "lines"])
        .args(["-w", worker, "-o", "out.jsonl"])
        .timeout(std::time::Duration::from_secs(120))
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "5 times in a row without answering",
        ))
        .stderr(predicate::str::contains("checkpointed"));
}

/// A worker command that never answers anything (it exits at every start) does not work at
/// all: a configuration problem, exit 2, like a worker program that does not exist.
#[test]
fn a_worker_that_never_answers_and_keeps_dying_is_a_usage_error() {
    let s = Scratch::new();
    s.write("in.txt", numbered_lines(200));
    s.herdsman()
        .args(["run", "-i", "in.txt", "--format", "lines"])
        .args(["-w", "sh -c 'exit 3'", "-o", "out.jsonl"])
        .timeout(std::time::Duration::from_secs(120))
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "5 times in a row without answering",
        ));
}

/// A worker program that does not exist is a configuration problem: exit 2, nothing ran.
#[test]
fn a_worker_that_cannot_start_is_a_usage_error() {
    let s = Scratch::new();
    s.write("in.txt", "1\n2\n");
    s.herdsman()
        .args(["run", "-i", "in.txt", "--format", "lines"])
        .args(["-w", "./no-such-worker-program", "-o", "out.jsonl"])
        .assert()
        .code(2);
}
