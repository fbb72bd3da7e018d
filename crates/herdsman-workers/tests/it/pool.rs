//! Worker pool tests that drive real worker processes.

use crate::common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use herdsman_workers::{
    AttemptOutcome, Executor, FailureKind, PoolConfig, Protocol, WorkerCommand, WorkerPool,
};

const LIMIT: Duration = Duration::from_secs(60);

fn pool(cmd: WorkerCommand, workers: usize, depth: usize) -> WorkerPool {
    let mut cfg = PoolConfig::new(cmd);
    cfg.workers = workers;
    cfg.pipeline_depth = depth;
    cfg.kill_grace = Duration::from_millis(500);
    WorkerPool::start(cfg).unwrap()
}

#[test]
fn cat_echoes_every_record_in_order_with_pipelining() {
    let mut p = pool(WorkerCommand::argv(["cat"]), 3, 16);
    // Starts small until it has measured the workers, never above workers x depth.
    assert_eq!(p.capacity(), 12);
    let items: Vec<_> = (0..2000)
        .map(|i| item(i, &format!(r#"{{"i":{i},"s":"x y"}}"#)))
        .collect();
    let results = run_all(&mut p, items, LIMIT).unwrap();
    assert_eq!(results.len(), 2000);
    for i in 0..2000u64 {
        assert_eq!(
            text(success(&results[&i])),
            vec![format!(r#"{{"i":{i},"s":"x y"}}"#)]
        );
    }
    assert!((3..=48).contains(&p.capacity()));
    p.shutdown();
}

#[test]
fn slow_lines_worker_gets_one_record_at_a_time() {
    let mut cfg = PoolConfig::new(WorkerCommand::shell(
        "while read -r l; do sleep 0.05; echo \"$l\"; done",
    ));
    cfg.workers = 1;
    cfg.pipeline_depth = 64;
    let mut p = WorkerPool::start(cfg).unwrap();
    let items: Vec<_> = (0..8).map(|i| item(i, &format!("{i}"))).collect();
    let r = run_all(&mut p, items, LIMIT).unwrap();
    for i in 0..8u64 {
        assert_eq!(text(success(&r[&i])), vec![i.to_string()]);
    }
    // 50 ms per record is more than the 20 ms queue target: no pipelining.
    assert_eq!(p.effective_depth(), 1);
    assert_eq!(p.capacity(), 1);
}

const CRASH_ON_13: &str = r#"
import json, sys
for line in sys.stdin:
    rec = json.loads(line)
    if rec["i"] == 13:
        sys.stderr.write("about to crash on 13\n")
        sys.stderr.flush()
        sys.exit(3)
    print(json.dumps({"i": rec["i"], "sq": rec["i"] * rec["i"]}), flush=True)
"#;

#[test]
fn python_worker_crash_fails_only_that_record() {
    let dir = tempdir("crash");
    let path = script(&dir, "crash.py", CRASH_ON_13);
    let mut p = pool(WorkerCommand::argv(["python3", &path]), 2, 8);
    let items: Vec<_> = (0..60)
        .map(|i| item(i, &format!(r#"{{"i":{i}}}"#)))
        .collect();
    let results = run_all(&mut p, items, LIMIT).unwrap();
    for i in 0..60u64 {
        if i == 13 {
            let f = failure(&results[&i]);
            assert_eq!(f.kind, FailureKind::WorkerExited);
            assert!(f.retryable);
            assert!(f.message.contains("exited with status 3"), "{}", f.message);
            assert!(
                f.stderr_tail.iter().any(|l| l == "about to crash on 13"),
                "{:?}",
                f.stderr_tail
            );
        } else {
            let v: serde_json::Value = serde_json::from_slice(&success(&results[&i])[0]).unwrap();
            assert_eq!(v["sq"], i * i);
        }
    }
    // The pool still works after the restart.
    let results = run_all(&mut p, vec![item(0, r#"{"i":5}"#)], LIMIT).unwrap();
    assert_eq!(text(success(&results[&0])), vec![r#"{"i": 5, "sq": 25}"#]);
    p.shutdown();
}

#[test]
fn garbage_output_is_bad_output() {
    let mut p = pool(
        WorkerCommand::shell(
            r#"while read -r l; do case "$l" in *bad*) echo 'not json at all';; *) echo "$l";; esac; done"#,
        ),
        1,
        4,
    );
    let items = vec![
        item(0, r#"{"a":1}"#),
        item(1, r#"{"bad":1}"#),
        item(2, r#"{"a":3}"#),
    ];
    let r = run_all(&mut p, items, LIMIT).unwrap();
    assert_eq!(text(success(&r[&0])), vec![r#"{"a":1}"#]);
    let f = failure(&r[&1]);
    assert_eq!(f.kind, FailureKind::BadOutput);
    assert!(!f.retryable);
    assert!(f.message.contains("`not json at all`"), "{}", f.message);
    assert_eq!(text(success(&r[&2])), vec![r#"{"a":3}"#]);
}

#[test]
fn missing_program_is_fatal_at_start() {
    let cfg = PoolConfig::new(WorkerCommand::argv(["herdsman-no-such-program-xyz"]));
    let err = WorkerPool::start(cfg).err().expect("must fail");
    assert_eq!(
        err.message,
        "cannot start worker `herdsman-no-such-program-xyz`: No such file or directory; check the worker command"
    );
    assert_eq!(err.setting, Some(herdsman_workers::Setting::Command));
}

#[test]
fn not_executable_is_fatal_at_start() {
    let dir = tempdir("noexec");
    let path = script(&dir, "plain.txt", "not a program\n");
    let err = WorkerPool::start(PoolConfig::new(WorkerCommand::argv([path.clone()])))
        .err()
        .expect("must fail");
    assert!(err.message.contains("Permission denied"), "{}", err.message);
}

#[test]
fn worker_that_exits_at_once_becomes_fatal_instead_of_burning_records() {
    let mut cfg = PoolConfig::new(WorkerCommand::shell("echo broken >&2; exit 1"));
    cfg.workers = 1;
    cfg.restart_limit = 3;
    let mut p = WorkerPool::start(cfg).unwrap();
    let items: Vec<_> = (0..10).map(|i| item(i, "{}")).collect();
    let err = run_all(&mut p, items, LIMIT).expect_err("must become fatal");
    assert!(err.message.contains("3 times in a row"), "{}", err.message);
    assert!(err.message.contains("broken"), "{}", err.message);
    assert!(err.message.contains("check the worker command"));
}

#[test]
fn stderr_flood_does_not_deadlock_and_tail_is_kept() {
    // 4 MB of stderr per record before answering.
    let dir = tempdir("flood");
    let path = script(
        &dir,
        "flood.py",
        r#"
import sys
junk = "e" * 1000 + "\n"
for line in sys.stdin:
    sys.stderr.write(junk * 4000)
    sys.stderr.write("last words\n")
    sys.stderr.flush()
    if '"die"' in line:
        sys.exit(1)
    sys.stdout.write(line)
    sys.stdout.flush()
"#,
    );
    let lines = Arc::new(Mutex::new(0usize));
    let counter = lines.clone();
    let mut cfg = PoolConfig::new(WorkerCommand::argv(["python3", &path]));
    cfg.workers = 1;
    cfg.stderr = Some(Arc::new(move |_, _| *counter.lock().unwrap() += 1));
    let mut p = WorkerPool::start(cfg).unwrap();
    let items = vec![
        item(0, r#"{"a":1}"#),
        item(1, r#"{"die":1}"#),
        item(2, r#"{"a":2}"#),
    ];
    let r = run_all(&mut p, items, LIMIT).unwrap();
    assert_eq!(text(success(&r[&0])), vec![r#"{"a":1}"#]);
    let f = failure(&r[&1]);
    assert_eq!(f.stderr_tail.last().map(String::as_str), Some("last words"));
    assert!(f.stderr_tail.len() <= 20);
    assert_eq!(text(success(&r[&2])), vec![r#"{"a":2}"#]);
    p.shutdown();
    assert!(*lines.lock().unwrap() >= 3 * 4001);
}

#[test]
fn stdout_flood_without_newline_fails_the_record() {
    let mut cfg = PoolConfig::new(WorkerCommand::shell(
        "read -r l; head -c 3000000 /dev/zero | tr '\\0' x; echo; while read -r l; do echo \"$l\"; done",
    ));
    cfg.workers = 1;
    cfg.max_line_bytes = 1 << 20;
    let mut p = WorkerPool::start(cfg).unwrap();
    let items = vec![item(0, r#"{"a":0}"#), item(1, r#"{"a":1}"#)];
    let r = run_all(&mut p, items, LIMIT).unwrap();
    let f = failure(&r[&0]);
    assert_eq!(f.kind, FailureKind::BadOutput);
    assert!(
        f.message.contains("longer than 1048576 bytes"),
        "{}",
        f.message
    );
    assert_eq!(text(success(&r[&1])), vec![r#"{"a":1}"#]);
}

#[test]
fn abandon_kills_hung_worker_and_its_grandchild() {
    let dir = tempdir("hang");
    let pidfile = dir.join("grandchild.pid");
    let pidfile_s = pidfile.to_string_lossy().into_owned();
    let path = script(
        &dir,
        "hang.py",
        &format!(
            r#"
import subprocess, sys, time
for line in sys.stdin:
    if "hang" in line:
        child = subprocess.Popen(["sleep", "1000"])
        with open({pidfile_s:?} + ".tmp", "w") as f:
            f.write(str(child.pid))
        import os
        os.rename({pidfile_s:?} + ".tmp", {pidfile_s:?})
        time.sleep(1000)
    sys.stdout.write(line)
    sys.stdout.flush()
"#
        ),
    );
    let mut p = pool(WorkerCommand::argv(["python3", &path]), 1, 8);
    p.submit(id(0), item(0, r#"{"a":0}"#)).unwrap();
    p.submit(id(1), item(1, r#"{"hang":1}"#)).unwrap();
    p.submit(id(2), item(2, r#"{"a":2}"#)).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + LIMIT;
    while out.is_empty() || !pidfile.exists() {
        assert!(Instant::now() < deadline);
        p.poll(Duration::from_millis(50), &mut out).unwrap();
    }
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, id(0));
    let grandchild: i32 = std::fs::read_to_string(&pidfile).unwrap().parse().unwrap();
    assert!(!pid_gone(grandchild));
    p.abandon(id(1));
    out.clear();
    while out.is_empty() {
        assert!(Instant::now() < deadline);
        p.poll(Duration::from_millis(50), &mut out).unwrap();
    }
    // Only the re-sent record comes back; the abandoned one is never reported.
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, id(2));
    assert!(matches!(out[0].1, AttemptOutcome::Success(_)));
    assert!(
        wait_gone(grandchild, Duration::from_secs(10)),
        "grandchild survived"
    );
    out.clear();
    p.poll(Duration::from_millis(100), &mut out).unwrap();
    assert!(out.is_empty());
    p.shutdown();
}

#[test]
fn worker_that_never_reads_stdin_does_not_block_submit() {
    let mut p = pool(WorkerCommand::argv(["sleep", "1000"]), 1, 4096);
    // 4096 records of 64 KiB: far more than a pipe holds.
    let big = format!(r#"{{"pad":"{}"}}"#, "p".repeat(64 * 1024));
    let start = Instant::now();
    for i in 0..64 {
        p.submit(id(i), item(i, &big)).unwrap();
    }
    let mut out = Vec::new();
    p.poll(Duration::from_millis(50), &mut out).unwrap();
    assert!(out.is_empty());
    for i in 0..64 {
        p.abandon(id(i));
    }
    p.poll(Duration::from_millis(50), &mut out).unwrap();
    assert!(out.is_empty());
    p.shutdown();
    assert!(start.elapsed() < Duration::from_secs(30));
}

#[test]
fn shutdown_leaves_no_processes() {
    let pids = Arc::new(Mutex::new(Vec::<i32>::new()));
    let sink_pids = pids.clone();
    let mut cfg = PoolConfig::new(WorkerCommand::shell(
        "sleep 1000 & echo $! >&2; echo $$ >&2; exec cat",
    ));
    cfg.workers = 2;
    cfg.kill_grace = Duration::from_millis(500);
    cfg.stderr = Some(Arc::new(move |_, line| {
        sink_pids.lock().unwrap().push(line.trim().parse().unwrap());
    }));
    let mut p = WorkerPool::start(cfg).unwrap();
    let r = run_all(&mut p, vec![item(0, "{}"), item(1, "[]")], LIMIT).unwrap();
    assert_eq!(text(success(&r[&0])), vec!["{}"]);
    assert_eq!(text(success(&r[&1])), vec!["[]"]);
    let deadline = Instant::now() + LIMIT;
    while pids.lock().unwrap().len() < 4 {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(10));
    }
    let pids = pids.lock().unwrap().clone();
    assert!(pids.iter().all(|&pid| !pid_gone(pid)));
    p.shutdown();
    for pid in pids {
        assert!(
            wait_gone(pid, Duration::from_secs(10)),
            "process {pid} survived shutdown"
        );
    }
}

#[test]
fn framed_protocol_filter_explode_error_out_of_order() {
    let dir = tempdir("framed");
    let path = script(
        &dir,
        "framed.py",
        r#"
import json, sys
held = []
for line in sys.stdin:
    msg = json.loads(line)
    rid, rec = msg["id"], msg["record"]
    kind = rec["kind"]
    if kind == "drop":
        print(json.dumps({"id": rid, "done": True}), flush=True)
    elif kind == "explode":
        for k in range(rec["n"]):
            print(json.dumps({"id": rid, "output": {"part": k}}))
        print(json.dumps({"id": rid, "done": True}), flush=True)
    elif kind == "fail":
        print(json.dumps({"id": rid, "error": "cannot do " + str(rec["n"]), "retryable": rec["n"] % 2 == 0}), flush=True)
    elif kind == "hold":
        held.append(rid)
    elif kind == "release":
        print(json.dumps({"id": rid, "output": None, "done": True}), flush=True)
        for h in reversed(held):
            print(json.dumps({"id": h, "output": "held"}))
            print(json.dumps({"id": h, "done": True}), flush=True)
        held = []
    else:
        print(json.dumps({"id": rid, "output": rec, "done": True}), flush=True)
"#,
    );
    let mut cfg = PoolConfig::new(WorkerCommand::argv(["python3", &path]));
    cfg.workers = 1;
    cfg.protocol = Protocol::Framed;
    let mut p = WorkerPool::start(cfg).unwrap();
    let items = vec![
        item(0, r#"{"kind":"echo","n":0}"#),
        item(1, r#"{"kind":"drop"}"#),
        item(2, r#"{"kind":"explode","n":3}"#),
        item(3, r#"{"kind":"fail","n":1}"#),
        item(4, r#"{"kind":"fail","n":2}"#),
        item(5, r#"{"kind":"hold"}"#),
        item(6, r#"{"kind":"hold"}"#),
        item(7, r#"{"kind":"release"}"#),
    ];
    let r = run_all(&mut p, items, LIMIT).unwrap();
    assert_eq!(text(success(&r[&0])), vec![r#"{"kind": "echo", "n": 0}"#]);
    assert!(success(&r[&1]).is_empty());
    assert_eq!(
        text(success(&r[&2])),
        vec![r#"{"part": 0}"#, r#"{"part": 1}"#, r#"{"part": 2}"#]
    );
    let f = failure(&r[&3]);
    assert_eq!(f.kind, FailureKind::Reported);
    assert_eq!(f.message, "cannot do 1");
    assert!(!f.retryable);
    assert!(failure(&r[&4]).retryable);
    assert_eq!(text(success(&r[&5])), vec![r#""held""#]);
    assert_eq!(text(success(&r[&6])), vec![r#""held""#]);
    assert_eq!(text(success(&r[&7])), vec!["null"]);
}

#[test]
fn framed_crash_charges_oldest_unanswered_and_resends_the_rest() {
    let dir = tempdir("framedcrash");
    let marker = dir.join("crashed-once");
    let path = script(
        &dir,
        "fc.py",
        &format!(
            r#"
import json, os, sys
pending = []
for line in sys.stdin:
    msg = json.loads(line)
    pending.append(msg)
    if len(pending) < 3:
        continue
    if not os.path.exists({m:?}):
        open({m:?}, "w").close()
        os._exit(9)
    for p in pending:
        print(json.dumps({{"id": p["id"], "output": p["record"], "done": True}}), flush=True)
    pending = []
"#,
            m = marker.to_string_lossy()
        ),
    );
    let mut cfg = PoolConfig::new(WorkerCommand::argv(["python3", &path]));
    cfg.workers = 1;
    cfg.protocol = Protocol::Framed;
    let mut p = WorkerPool::start(cfg).unwrap();
    for i in 0..3 {
        p.submit(id(i), item(i, &format!("{i}"))).unwrap();
    }
    let mut out = Vec::new();
    let deadline = Instant::now() + LIMIT;
    while out.is_empty() {
        assert!(Instant::now() < deadline);
        p.poll(Duration::from_millis(50), &mut out).unwrap();
    }
    assert_eq!(out[0].0, id(0));
    assert_eq!(failure(&out[0].1).kind, FailureKind::WorkerExited);
    // The two others were re-sent; one more record lets the new worker answer all three.
    p.submit(id(3), item(3, "3")).unwrap();
    while out.len() < 4 {
        assert!(Instant::now() < deadline);
        p.poll(Duration::from_millis(50), &mut out).unwrap();
    }
    let mut ok: Vec<u64> = out[1..].iter().map(|(a, _)| a.index).collect();
    ok.sort();
    assert_eq!(ok, vec![1, 2, 3]);
    for (a, o) in &out[1..] {
        assert_eq!(text(success(o)), vec![a.index.to_string()]);
    }
}

#[test]
fn abandoning_everything_does_not_start_a_worker_per_record() {
    let starts = Arc::new(Mutex::new(0usize));
    let counter = starts.clone();
    let mut cfg = PoolConfig::new(WorkerCommand::shell("echo started >&2; exec sleep 1000"));
    cfg.workers = 3;
    cfg.pipeline_depth = 8;
    cfg.kill_grace = Duration::from_millis(200);
    cfg.stderr = Some(Arc::new(move |_, _| *counter.lock().unwrap() += 1));
    let mut p = WorkerPool::start(cfg).unwrap();
    let n = p.capacity() as u64;
    assert_eq!(n, 12);
    for i in 0..n {
        p.submit(id(i), item(i, "{}")).unwrap();
    }
    let mut out = Vec::new();
    p.poll(Duration::from_millis(50), &mut out).unwrap();
    for i in 0..n {
        p.abandon(id(i));
    }
    p.poll(Duration::from_millis(50), &mut out).unwrap();
    assert!(out.is_empty());
    p.shutdown();
    // Three workers started; none was restarted for the abandoned records.
    assert_eq!(*starts.lock().unwrap(), 3);
}

#[test]
fn worker_that_closes_stdout_but_keeps_running_is_killed() {
    let pid = Arc::new(Mutex::new(None::<i32>));
    let sink_pid = pid.clone();
    let mut cfg = PoolConfig::new(WorkerCommand::shell(
        "echo $$ >&2; read -r l; exec 1>&-; while :; do sleep 1; done",
    ));
    cfg.workers = 1;
    cfg.kill_grace = Duration::from_millis(200);
    cfg.stderr = Some(Arc::new(move |_, line| {
        let mut p = sink_pid.lock().unwrap();
        if p.is_none() {
            *p = line.trim().parse().ok();
        }
    }));
    let mut p = WorkerPool::start(cfg).unwrap();
    let r = run_all(&mut p, vec![item(0, "{}")], LIMIT).unwrap();
    let f = failure(&r[&0]);
    assert_eq!(f.kind, FailureKind::WorkerExited);
    assert!(f.message.contains("closed its stdout"), "{}", f.message);
    let first = pid.lock().unwrap().expect("the worker printed its pid");
    assert!(wait_gone(first, Duration::from_secs(10)), "worker survived");
    p.shutdown();
}

#[test]
fn abandoning_a_queued_lines_record_does_not_kill_the_worker() {
    let starts = Arc::new(Mutex::new(0usize));
    let counter = starts.clone();
    let dir = tempdir("queued");
    let gate = dir.join("gate");
    let gate_s = gate.to_string_lossy().into_owned();
    // The first record waits for a file to appear, so the others queue behind it.
    let mut cfg = PoolConfig::new(WorkerCommand::shell(format!(
        "echo started >&2; read -r l; while [ ! -e {gate_s} ]; do sleep 0.01; done; echo \"$l\"; exec cat"
    )));
    cfg.workers = 1;
    cfg.stderr = Some(Arc::new(move |_, _| *counter.lock().unwrap() += 1));
    let mut p = WorkerPool::start(cfg).unwrap();
    for i in 0..3 {
        p.submit(id(i), item(i, &format!("{i}"))).unwrap();
    }
    let mut out = Vec::new();
    p.poll(Duration::from_millis(20), &mut out).unwrap();
    assert!(out.is_empty());
    // Record 1 is queued behind record 0: abandoning it must not kill the worker.
    p.abandon(id(1));
    std::fs::write(&gate, b"").unwrap();
    let deadline = Instant::now() + LIMIT;
    while out.len() < 2 {
        assert!(Instant::now() < deadline);
        p.poll(Duration::from_millis(20), &mut out).unwrap();
    }
    let ids: Vec<u64> = out.iter().map(|(a, _)| a.index).collect();
    assert_eq!(ids, vec![0, 2]);
    assert_eq!(text(success(&out[0].1)), vec!["0"]);
    assert_eq!(text(success(&out[1].1)), vec!["2"]);
    out.clear();
    p.poll(Duration::from_millis(50), &mut out).unwrap();
    assert!(out.is_empty(), "the abandoned record was reported");
    p.shutdown();
    assert_eq!(*starts.lock().unwrap(), 1);
}

#[test]
fn records_queued_behind_a_stuck_record_move_to_other_workers() {
    let mut cfg = PoolConfig::new(WorkerCommand::shell(
        r#"while read -r l; do case "$l" in *hang*) sleep 1000;; esac; echo "$l"; echo r >&2; done"#,
    ));
    cfg.workers = 2;
    cfg.pipeline_depth = 8;
    cfg.kill_grace = Duration::from_millis(200);
    let answered_by = Arc::new(Mutex::new([0usize; 2]));
    let sink_counts = answered_by.clone();
    cfg.stderr = Some(Arc::new(move |w, _| sink_counts.lock().unwrap()[w] += 1));
    let mut p = WorkerPool::start(cfg).unwrap();
    // Warm both workers up.
    let warm: Vec<_> = (0..8).map(|i| item(i, &format!("{i}"))).collect();
    run_all(&mut p, warm, LIMIT).unwrap();
    // The stuck record, then more records than one worker holds.
    p.submit(id(100), item(100, r#""hang""#)).unwrap();
    for i in 101..111 {
        p.submit(id(i), item(i, &format!("{i}"))).unwrap();
    }
    let mut out = Vec::new();
    let deadline = Instant::now() + LIMIT;
    while out.len() < 10 {
        assert!(Instant::now() < deadline, "queued records stayed stuck");
        p.poll(Duration::from_millis(20), &mut out).unwrap();
    }
    let mut ids: Vec<u64> = out.iter().map(|(a, _)| a.index).collect();
    ids.sort();
    assert_eq!(ids, (101..111).collect::<Vec<_>>());
    for (a, o) in &out {
        assert_eq!(text(success(o)), vec![a.index.to_string()]);
    }
    // The stuck record is still in flight; abandoning it kills its worker, and nothing
    // else is ever reported.
    p.abandon(id(100));
    out.clear();
    p.submit(id(200), item(200, "200")).unwrap();
    while out.is_empty() {
        assert!(Instant::now() < deadline);
        p.poll(Duration::from_millis(20), &mut out).unwrap();
    }
    p.poll(Duration::from_millis(100), &mut out).unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, id(200));
    // Both workers take records again (the killed one was replaced, not left out).
    *answered_by.lock().unwrap() = [0, 0];
    let more: Vec<_> = (300..340).map(|i| item(i, &format!("{i}"))).collect();
    let r = run_all(&mut p, more, LIMIT).unwrap();
    assert_eq!(r.len(), 40);
    let counts = *answered_by.lock().unwrap();
    assert!(counts[0] > 0 && counts[1] > 0, "{counts:?}");
    p.shutdown();
}

const CRASH_SOMETIMES: &str = r#"
import json, os, sys
framed = len(sys.argv) > 1
for line in sys.stdin:
    msg = json.loads(line)
    rec = msg["record"] if framed else msg
    if rec["i"] % 20 == 3:
        os._exit(7)
    if rec["i"] % 10 == 5:
        out = "garbage %d" % rec["i"]
    elif framed:
        out = json.dumps({"id": msg["id"], "output": rec["i"] * 2, "done": True})
    else:
        out = json.dumps(rec["i"] * 2)
    print(out, flush=True)
"#;

#[test]
fn many_crashes_each_charge_exactly_their_own_record() {
    let dir = tempdir("chaos");
    let path = script(&dir, "chaos.py", CRASH_SOMETIMES);
    for protocol in [Protocol::Lines, Protocol::Framed] {
        let mut argv = vec!["python3".to_string(), path.clone()];
        if protocol == Protocol::Framed {
            argv.push("framed".into());
        }
        let mut cfg = PoolConfig::new(WorkerCommand::Argv(argv));
        cfg.workers = 3;
        cfg.pipeline_depth = 16;
        cfg.protocol = protocol;
        let mut p = WorkerPool::start(cfg).unwrap();
        let items: Vec<_> = (0..120)
            .map(|i| item(i, &format!(r#"{{"i":{i}}}"#)))
            .collect();
        let r = run_all(&mut p, items, LIMIT).unwrap();
        assert_eq!(r.len(), 120);
        for i in 0..120u64 {
            match (i % 20, i % 10) {
                (3, _) => {
                    let f = failure(&r[&i]);
                    assert_eq!(f.kind, FailureKind::WorkerExited, "{protocol:?} record {i}");
                    assert!(f.message.contains("exited with status 7"), "{}", f.message);
                }
                (_, 5) => {
                    let f = failure(&r[&i]);
                    assert_eq!(f.kind, FailureKind::BadOutput, "{protocol:?} record {i}");
                    assert!(
                        f.message.contains(&format!("`garbage {i}`")),
                        "{}",
                        f.message
                    );
                }
                _ => assert_eq!(
                    text(success(&r[&i])),
                    vec![(i * 2).to_string()],
                    "{protocol:?} record {i}"
                ),
            }
        }
        p.shutdown();
    }
}

#[test]
fn requests_larger_than_the_pipe_reach_a_slow_reader_whole_and_in_order() {
    // 256 records of 4 KiB in flight are 1 MiB, far more than a pipe holds: most of each
    // batch waits for the worker to read, and must still reach it whole and in order
    // after what was written before it.
    let mut p = pool(
        WorkerCommand::shell("while IFS= read -r l; do sleep 0.001; printf '%s\\n' \"$l\"; done"),
        1,
        256,
    );
    let pad = "p".repeat(4096);
    let items: Vec<_> = (0..600)
        .map(|i| item(i, &format!(r#"{{"i":{i},"pad":"{pad}"}}"#)))
        .collect();
    let results = run_all(&mut p, items, LIMIT).unwrap();
    assert_eq!(results.len(), 600);
    for i in 0..600u64 {
        assert_eq!(
            text(success(&results[&i])),
            vec![format!(r#"{{"i":{i},"pad":"{pad}"}}"#)]
        );
    }
    p.shutdown();
}
