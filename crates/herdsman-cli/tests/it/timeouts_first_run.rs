//! Per-record timeouts that count only the time a worker could spend on the record, and
//! worker lifespans (`--max-tasks-per-worker`), through the real binary.

use crate::common;

use std::collections::BTreeMap;

use common::*;
use serde_json::Value;

/// A framed worker that works on one record at a time, taking `secs` per record, after
/// sleeping `startup` seconds before it reads anything (an interpreter importing modules).
fn slow_framed(scratch: &Scratch, startup: f64, secs: f64) -> String {
    let script = format!(
        r#"import json, sys, time
time.sleep({startup})
for line in sys.stdin:
    req = json.loads(line)
    time.sleep({secs})
    sys.stdout.write(json.dumps({{"id": req["id"], "output": req["record"], "done": True}}) + "\n")
    sys.stdout.flush()
"#
    );
    scratch.write("slow_framed.py", script);
    format!("python3 {}", scratch.path("slow_framed.py").display())
}

fn summary_total(scratch: &Scratch, key: &str) -> u64 {
    scratch.accounting()["total"][key].as_u64().unwrap()
}

#[test]
fn framed_records_queued_behind_others_do_not_use_up_their_timeout() {
    // 15 records of 0.3 s each on one worker that works on one at a time: the last one waits
    // about 4 s in the worker's queue, twice the timeout, but takes only 0.3 s itself.
    let s = Scratch::new();
    s.write("in.csv", id_csv(15));
    let worker = slow_framed(&s, 0.0, 0.3);
    let out = s
        .job(
            &worker,
            &["--protocol", "framed", "-j", "1", "--timeout", "2s"],
        )
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(summary_total(&s, "succeeded"), 15);
    assert_eq!(summary_total(&s, "retries"), 0);
    assert_eq!(json_lines(&s.read("out.jsonl")).len(), 15);
}

#[test]
fn lines_records_queued_behind_others_do_not_use_up_their_timeout() {
    let s = Scratch::new();
    s.write("in.csv", id_csv(15));
    s.write(
        "slow_lines.py",
        "import sys, time\nfor line in sys.stdin:\n    time.sleep(0.3)\n    sys.stdout.write(line)\n    sys.stdout.flush()\n",
    );
    let worker = format!("python3 {}", s.path("slow_lines.py").display());
    let out = s
        .job(&worker, &["-j", "1", "--timeout", "2s"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(summary_total(&s, "succeeded"), 15);
    assert_eq!(summary_total(&s, "retries"), 0);
}

#[test]
fn a_fresh_workers_start_up_gets_an_allowance_on_its_first_record() {
    // The worker takes 12 s to start, longer than the 10 s timeout; the first record gets
    // the timeout again as a start-up allowance (20 s in all), so nothing times out. The
    // 8 s margin is for a loaded machine, where starting the interpreter alone has taken
    // several seconds.
    let s = Scratch::new();
    s.write("in.csv", id_csv(3));
    let worker = slow_framed(&s, 12.0, 0.0);
    let out = s
        .job(
            &worker,
            &["--protocol", "framed", "-j", "1", "--timeout", "10s"],
        )
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(summary_total(&s, "succeeded"), 3);
    assert_eq!(summary_total(&s, "retries"), 0);
}

#[test]
fn the_summary_says_what_its_latency_measures() {
    let s = Scratch::new();
    s.write("in.csv", id_csv(3));
    let out = s.job("cat", &["-j", "1"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("per record, from hand-off to the workers to its answer (queued behind other records included, all attempts)"),
        "{err}"
    );
}

/// A worker that answers each record with its own pid, and, when its stdin ends, leaves a
/// file `exited-<pid>` behind (it was retired gracefully, not killed).
fn pid_worker(scratch: &Scratch, framed: bool) -> String {
    let answer = if framed {
        r#"json.dumps({"id": req["id"], "output": {"rec": req["record"]["id"], "pid": os.getpid()}, "done": True})"#
    } else {
        r#"json.dumps({"rec": req["id"], "pid": os.getpid()})"#
    };
    let script = format!(
        r#"import json, os, sys
for line in sys.stdin:
    req = json.loads(line)
    sys.stdout.write({answer} + "\n")
    sys.stdout.flush()
open(os.path.join({dir:?}, "exited-%d" % os.getpid()), "w").close()
"#,
        dir = scratch.dir.path().display().to_string()
    );
    scratch.write("pid_worker.py", script);
    format!("python3 {}", scratch.path("pid_worker.py").display())
}

fn check_lifespans(framed: bool) {
    let s = Scratch::new();
    s.write("in.csv", id_csv(40));
    let worker = pid_worker(&s, framed);
    let mut args = vec!["-j", "2", "--max-tasks-per-worker", "3"];
    if framed {
        args.extend(["--protocol", "framed"]);
    }
    let out = s.job(&worker, &args).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let summary = s.accounting();
    assert_eq!(summary["total"]["succeeded"], 40, "{summary}");
    assert_eq!(summary["total"]["retries"], 0, "{summary}");
    let outputs = json_lines(&s.read("out.jsonl"));
    // Every record once, in input order.
    let recs: Vec<String> = outputs
        .iter()
        .map(|o| match &o["rec"] {
            Value::String(v) => v.clone(),
            v => v.to_string(),
        })
        .collect();
    let want: Vec<String> = (0..40).map(|i| i.to_string()).collect();
    assert_eq!(recs, want);
    let mut per_pid: BTreeMap<u64, usize> = BTreeMap::new();
    for o in &outputs {
        *per_pid.entry(o["pid"].as_u64().unwrap()).or_default() += 1;
    }
    assert!(
        per_pid.values().all(|&n| n <= 3),
        "a worker process answered more than 3 records: {per_pid:?}"
    );
    assert!(per_pid.len() >= 14, "{per_pid:?}");
    for pid in per_pid.keys() {
        assert!(
            s.path(&format!("exited-{pid}")).exists(),
            "worker {pid} did not end on its own after its stdin closed: {per_pid:?}"
        );
    }
}

#[test]
fn max_tasks_per_worker_replaces_framed_workers_after_n_records() {
    check_lifespans(true);
}

#[test]
fn max_tasks_per_worker_replaces_lines_workers_after_n_records() {
    check_lifespans(false);
}

#[test]
fn max_tasks_per_worker_is_refused_for_exec_and_zero() {
    let s = Scratch::new();
    s.write("in.csv", id_csv(2));
    let out = s
        .herdsman()
        .args(["run", "-i", "in.csv", "-o", "out.jsonl"])
        .args(["--max-tasks-per-worker", "2", "-x", "echo {id}"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("--max-tasks-per-worker applies to --worker only"),
        "{}",
        stderr(&out)
    );
    let out = s
        .job("cat", &["--max-tasks-per-worker", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("--max-tasks-per-worker must be at least 1"),
        "{}",
        stderr(&out)
    );
}
