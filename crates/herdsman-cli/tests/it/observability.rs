//! Logs, the job log and the summary's failures by kind, driven through the real binary:
//! `--log-format json` stderr parsed line by line, `-v` and `HERDSMAN_LOG` changing what is
//! logged, `--log-file`, `--joblog` lines counted against attempts (TSV and JSONL, and after
//! a SIGKILL and a resume), and the failures by kind in the end summary.

use std::collections::BTreeMap;
use std::process::{Command as StdCommand, Stdio};

use serde_json::Value;

use crate::common::{self, stderr, Scratch};

/// A lines-protocol worker that writes a stderr line for every record, exits (status 3) on
/// the record with id 2 and hangs on the one with id 4; echoes the others.
const MISBEHAVING: &str = r#"import json, sys, time
for line in sys.stdin:
    rec = json.loads(line)
    sys.stderr.write("seen %s\n" % rec["id"])
    sys.stderr.flush()
    if rec["id"] == "2":
        sys.exit(3)
    if rec["id"] == "4":
        time.sleep(300)
    sys.stdout.write(line)
    sys.stdout.flush()
"#;

/// A framed worker that fails the first attempt of every record whose id is a multiple of 3
/// (retryable; a marker file remembers the attempt), always fails record 7 (retryable), and
/// echoes the rest.
const FAIL_FIRST: &str = r#"import json, os, sys
marks = sys.argv[1]
for line in sys.stdin:
    msg = json.loads(line)
    rid, rec = msg["id"], msg["record"]
    n = int(rec["id"])
    mark = os.path.join(marks, str(n))
    if n == 7 or (n % 3 == 0 and not os.path.exists(mark)):
        open(mark, "w").close()
        print(json.dumps({"id": rid, "error": "try again", "retryable": True}))
    else:
        print(json.dumps({"id": rid, "output": rec}))
        print(json.dumps({"id": rid, "done": True}))
    sys.stdout.flush()
"#;

/// A lines-protocol worker that echoes each record after 5 ms, so that a run of a few hundred
/// records spans several checkpoints.
const SLOW_ECHO: &str = r#"import sys, time
for line in sys.stdin:
    time.sleep(0.005)
    sys.stdout.write(line)
    sys.stdout.flush()
"#;

fn events(err: &str) -> Vec<Value> {
    err.lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap_or_else(|e| {
                panic!("stderr line is not JSON ({e}): {l:?}\nall of it:\n{err}")
            })
        })
        .collect()
}

fn message_is(e: &Value, text: &str) -> bool {
    e["message"].as_str().is_some_and(|m| m.contains(text))
}

#[test]
fn json_logs_make_every_stderr_line_a_json_event_with_the_summary_last() {
    let s = Scratch::new();
    s.write("w.py", MISBEHAVING);
    s.write("in.csv", common::id_csv(6));
    let out = s
        .job(
            "python3 w.py",
            &[
                "-j",
                "1",
                "--retries",
                "1",
                "--backoff",
                "10ms",
                "--timeout",
                "2s",
                "--log-format",
                "json",
                "-v",
            ],
        )
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let ev = events(&err);
    for e in &ev {
        for key in ["timestamp", "level", "message", "target"] {
            assert!(e.get(key).is_some(), "{key} missing in {e}");
        }
    }
    // Forwarded worker stderr, as events naming the worker.
    assert!(
        ev.iter().any(|e| e["target"] == "herdsman::worker"
            && e["worker"] == 1
            && e["message"] == "seen 1"),
        "{err}"
    );
    // The crash and the restart, with the exit status and the last stderr line.
    let exit = ev
        .iter()
        .find(|e| message_is(e, "worker exited"))
        .unwrap_or_else(|| panic!("no worker exit event: {err}"));
    assert_eq!(exit["status"], "exited with status 3", "{exit}");
    assert_eq!(exit["last_stderr"], "seen 2", "{exit}");
    assert!(
        ev.iter()
            .filter(|e| message_is(e, "worker started"))
            .count()
            >= 2,
        "{err}"
    );
    // The retry with its wait, and the timeout.
    assert!(
        ev.iter()
            .any(|e| message_is(e, "retrying") && e["wait_ms"].is_u64()),
        "{err}"
    );
    assert!(
        ev.iter()
            .any(|e| message_is(e, "timed out") && e["timeout_ms"] == 2000),
        "{err}"
    );
    assert!(
        ev.iter().any(|e| message_is(e, "checkpoint committed")),
        "{err}"
    );
    // The summary is the last event, with every number and the failures by kind.
    let last = ev.last().unwrap();
    assert_eq!(last["target"], "herdsman::summary", "{last}");
    assert_eq!(last["message"], "done with failures");
    let summary = &last["summary"];
    assert_eq!(summary["total"]["records"], 6);
    assert_eq!(summary["total"]["failed"], 2);
    assert_eq!(summary["failures_by_kind"]["worker_exited"], 1, "{summary}");
    assert_eq!(summary["failures_by_kind"]["timeout"], 1, "{summary}");
    assert_eq!(
        s.accounting()["failures_by_kind"]["timeout"],
        1,
        "--summary-json holds them too"
    );
}

#[test]
fn a_usage_error_is_a_json_event_too() {
    let s = Scratch::new();
    for args in [
        vec!["run", "--log-format", "json", "-w", "cat", "--retries", "x"],
        vec![
            "run",
            "--log-format",
            "json",
            "-w",
            "cat",
            "-i",
            "missing.csv",
        ],
    ] {
        let out = s.herdsman().args(&args).output().unwrap();
        let err = stderr(&out);
        assert!(out.status.code().is_some_and(|c| c >= 2), "{err}");
        let ev = events(&err);
        assert!(!ev.is_empty());
        assert_eq!(ev.last().unwrap()["level"], "ERROR", "{err}");
    }
}

/// Runs the misbehaving-free echo job with `args` and `env`, in text format; its stderr.
fn logged(args: &[&str], env: Option<&str>) -> String {
    let s = Scratch::new();
    s.write("in.csv", common::id_csv(3));
    let mut cmd = s.job("cat", args);
    cmd.env_remove("HERDSMAN_LOG");
    if let Some(filter) = env {
        cmd.env("HERDSMAN_LOG", filter);
    }
    let out = cmd.output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    err
}

#[test]
fn verbosity_and_herdsman_log_choose_what_is_logged() {
    let started = "worker started";
    let quiet = logged(&["-j", "1"], None);
    assert!(!quiet.contains(started), "{quiet}");
    let info = logged(&["-j", "1", "-v"], None);
    assert!(info.contains(started) && info.contains(" INFO "), "{info}");
    assert!(!info.contains(" DEBUG "), "{info}");
    let debug = logged(&["-j", "1", "-vv"], None);
    assert!(debug.contains(" DEBUG "), "{debug}");
    // HERDSMAN_LOG is an EnvFilter that wins over -v.
    let env = logged(&["-j", "1"], Some("herdsman_workers=info"));
    assert!(env.contains(started), "{env}");
    assert!(!env.contains("checkpoint committed"), "{env}");
    let off = logged(&["-j", "1", "-vv"], Some("off"));
    assert!(!off.contains(started), "{off}");
    // A filter that does not parse is a usage error that says what to write.
    let s = Scratch::new();
    s.write("in.csv", common::id_csv(1));
    let out = s
        .job("cat", &[])
        .env("HERDSMAN_LOG", "a=b=c")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("HERDSMAN_LOG=info"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn log_file_gets_the_log_events_and_stderr_keeps_the_summary() {
    let s = Scratch::new();
    s.write("in.csv", common::id_csv(3));
    let out = s
        .job("cat", &["-j", "1", "-v", "--log-file", "logs/herdsman.log"])
        .env_remove("HERDSMAN_LOG")
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(!err.contains("worker started"), "{err}");
    assert!(err.contains("herdsman: done"), "{err}");
    let log = s.read("logs/herdsman.log");
    assert!(log.contains("worker started"), "{log}");
    assert!(log.contains("checkpoint committed"), "{log}");
}

/// Parses a job log: one map per attempt line.
fn joblog(s: &Scratch, name: &str) -> Vec<BTreeMap<String, Value>> {
    let text = s.read(name);
    if name.ends_with(".tsv") {
        let mut lines = text.lines();
        let header: Vec<&str> = lines.next().expect("a header").split('\t').collect();
        assert_eq!(
            header,
            [
                "record", "file", "line", "worker", "start", "duration", "outcome", "kind",
                "attempt"
            ]
        );
        lines
            .map(|l| {
                let fields: Vec<&str> = l.split('\t').collect();
                assert_eq!(fields.len(), header.len(), "{l}");
                header
                    .iter()
                    .zip(fields)
                    .map(|(h, f)| {
                        let v = f
                            .parse::<u64>()
                            .map(Value::from)
                            .unwrap_or_else(|_| Value::from(f));
                        (h.to_string(), v)
                    })
                    .collect()
            })
            .collect()
    } else {
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }
}

#[test]
fn joblog_has_one_line_per_attempt_in_tsv_and_jsonl() {
    for name in ["jobs.tsv", "jobs.jsonl"] {
        let s = Scratch::new();
        s.write("w.py", FAIL_FIRST);
        std::fs::create_dir(s.path("marks")).unwrap();
        s.write("in.csv", common::id_csv(30));
        let out = s
            .job(
                "python3 w.py marks",
                &[
                    "--protocol",
                    "framed",
                    "-j",
                    "2",
                    "--retries",
                    "2",
                    "--backoff",
                    "1ms",
                    "--joblog",
                    name,
                ],
            )
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        let lines = joblog(&s, name);
        // 30 records; ids 0, 3, …, 27 (10 records) take two attempts; id 7 takes three.
        assert_eq!(lines.len(), 30 + 10 + 2, "{name}: {}", s.read(name));
        let mut by_record: BTreeMap<u64, Vec<&BTreeMap<String, Value>>> = BTreeMap::new();
        for l in &lines {
            by_record
                .entry(l["record"].as_u64().unwrap())
                .or_default()
                .push(l);
        }
        assert_eq!(by_record.len(), 30);
        for (record, attempts) in &by_record {
            let id = record - 1;
            let want = if id == 7 {
                3
            } else if id % 3 == 0 {
                2
            } else {
                1
            };
            let numbers: Vec<u64> = attempts
                .iter()
                .map(|a| a["attempt"].as_u64().unwrap())
                .collect();
            assert_eq!(
                numbers,
                (1..=want).collect::<Vec<u64>>(),
                "{name} record {record}"
            );
            let last = attempts.last().unwrap();
            let first = attempts[0];
            assert_eq!(first["file"], "in.csv");
            assert_eq!(first["line"], record + 1, "{name}: the header is line 1");
            let worker = first["worker"].as_u64().expect("a worker");
            assert!((1..=2).contains(&worker), "{first:?}");
            if id == 7 {
                assert_eq!(last["outcome"], "failed");
                assert_eq!(last["kind"], "reported");
            } else {
                assert_eq!(last["outcome"], "succeeded", "{name} record {record}");
            }
            if want > 1 {
                assert_eq!(first["outcome"], "failed");
            }
        }
        let summary = s.accounting();
        assert_eq!(summary["total"]["retries"], 12);
    }
}

/// Starts the job in `s` with `fault` (an injected SIGKILL at a point of the commit
/// protocol) and waits for it to end.
pub(crate) fn run_job(s: &Scratch, args: &[&str], fault: Option<&str>) -> std::process::ExitStatus {
    let mut cmd = StdCommand::new(assert_cmd::cargo::cargo_bin("herdsman"));
    cmd.args(args)
        .current_dir(s.dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(f) = fault {
        cmd.env("HERDSMAN_FAULT", f);
    }
    cmd.status().expect("run herdsman")
}

#[test]
fn joblog_after_sigkill_and_resume_has_exactly_the_attempts_of_committed_work() {
    for name in ["jobs.tsv", "jobs.jsonl"] {
        let s = Scratch::new();
        s.write("w.py", SLOW_ECHO);
        s.write("in.csv", common::id_csv(300));
        let args = [
            "run",
            "-i",
            "in.csv",
            "-w",
            "python3 w.py",
            "-o",
            "out.jsonl",
            "-j",
            "1",
            "--chunk-size",
            "10",
            "--joblog",
            name,
        ];
        // Killed right after its first commit: the lines written so far are committed.
        let first = run_job(&s, &args, Some("after-commit"));
        assert!(!first.success(), "the first run was killed");
        let kept = joblog(&s, name).len();
        assert!(kept > 0, "{name}: lines of the committed chunks");
        // Killed after its chunks are written and synced but before they are committed:
        // their lines are in the job log and must not survive the resume.
        let second = run_job(&s, &args, Some("after-sync"));
        assert!(!second.success(), "the second run was killed");
        let before_resume = joblog(&s, name).len();
        assert!(
            before_resume > kept,
            "{name}: the second run wrote uncommitted lines"
        );
        let third = run_job(&s, &args, None);
        assert!(third.success());
        let lines = joblog(&s, name);
        let mut records: Vec<u64> = lines
            .iter()
            .map(|l| l["record"].as_u64().unwrap())
            .collect();
        records.sort_unstable();
        assert_eq!(
            records,
            (1..=300).collect::<Vec<u64>>(),
            "{name}: one line per record"
        );
        assert!(lines
            .iter()
            .all(|l| l["attempt"] == 1 && l["outcome"] == "succeeded"));
        assert_eq!(common::lines(&s.read("out.jsonl")).len(), 300);
    }
}

#[test]
fn the_summary_counts_failures_by_kind() {
    let s = Scratch::new();
    s.write(
        "in.jsonl",
        "{\"id\":\"1\"}\n{\"id\":\"2\"}\nnot json\n{\"id\":\"3\"}\n{\"id\":\"2\"}\n",
    );
    let out = s
        .herdsman()
        .args([
            "run",
            "-i",
            "in.jsonl",
            "-w",
            &common::py_worker("crash_on.py", &["2"]),
            "-o",
            "out.jsonl",
            "-j",
            "1",
        ])
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("failures  3 in out.failures.jsonl (2 worker_exited, 1 input_json)"),
        "{err}"
    );
}
