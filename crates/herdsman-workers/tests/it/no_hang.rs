//! The worker pool never hangs and never charges the wrong record: exits noticed while a
//! child holds the worker's stdout, incomplete last lines, skipped `lines` answers, invalid
//! UTF-8, records without an answer for long, a stop with records queued, lazy start, and
//! workers killed from outside before they answer.

use crate::common;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use herdsman_workers::{
    AttemptId, AttemptOutcome, Executor, FailureKind, PoolConfig, Protocol, WorkerCommand,
    WorkerPool,
};

/// Generous: these tests must pass on a heavily loaded machine.
const LIMIT: Duration = Duration::from_secs(60);

fn sh(script: &str) -> WorkerCommand {
    WorkerCommand::argv(["sh", "-c", script])
}

fn config(cmd: WorkerCommand, workers: usize) -> PoolConfig {
    let mut cfg = PoolConfig::new(cmd);
    cfg.workers = workers;
    cfg.kill_grace = Duration::from_millis(500);
    cfg
}

/// Polls until `want` outcomes arrived (panics after `LIMIT`).
fn poll_n(pool: &mut WorkerPool, want: usize) -> Vec<(AttemptId, Outcome)> {
    let deadline = Instant::now() + LIMIT;
    let mut got = Vec::new();
    while got.len() < want {
        assert!(Instant::now() < deadline, "no outcome within {LIMIT:?}");
        pool.poll(Duration::from_millis(100), &mut got).unwrap();
    }
    got
}

/// Waits until `path` holds at least `n` lines and returns them.
fn wait_lines(path: &Path, n: usize) -> Vec<String> {
    let deadline = Instant::now() + LIMIT;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        if lines.len() >= n {
            return lines;
        }
        assert!(
            Instant::now() < deadline,
            "{} has fewer than {n} lines",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn kill9(pid: i32) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    );
}

#[test]
fn a_worker_that_exits_while_its_child_holds_stdout_is_charged_at_once() {
    let dir = tempdir("exit-child-holds-stdout");
    let pids = dir.join("sleep.pid");
    // Reads one record, leaves a child holding its stdout, and exits with status 3.
    let script = format!(
        "read -r line; sleep 1000 & echo $! > {}; exit 3",
        pids.display()
    );
    for timeout in [None, Some(Duration::from_secs(30))] {
        let _ = std::fs::remove_file(&pids);
        let mut cfg = config(sh(&script), 1);
        cfg.timeout = timeout;
        let mut pool = WorkerPool::start(cfg).unwrap();
        let r = run_all(&mut pool, vec![item(0, r#"{"a":1}"#)], LIMIT).unwrap();
        let f = failure(&r[&0]);
        assert_eq!(f.kind, FailureKind::WorkerExited, "{f:?}");
        assert!(f.retryable);
        assert!(
            f.message
                .contains("exited with status 3 while processing this record"),
            "{}",
            f.message
        );
        // The child it left behind died with its process group.
        let sleep: i32 = wait_lines(&pids, 1)[0].trim().parse().unwrap();
        let gone = wait_gone(sleep, LIMIT);
        if !gone {
            kill9(sleep);
        }
        assert!(gone, "the worker's child survived");
        pool.shutdown();
    }
}

#[test]
fn a_worker_that_dies_in_the_middle_of_a_line_charges_only_its_record() {
    // Echoes records; on a record with "die", writes half a line and exits.
    let script = r#"while read -r l; do case $l in *die*) printf '{"half'; exit 1;; *) echo "$l";; esac; done"#;
    for protocol in [Protocol::Lines, Protocol::Framed] {
        let mut cfg = config(sh(script), 1);
        cfg.protocol = protocol;
        cfg.pipeline_depth = 8;
        let mut pool = WorkerPool::start(cfg).unwrap();
        let items = vec![
            item(0, r#"{"n":0}"#),
            item(1, r#"{"n":1,"die":true}"#),
            item(2, r#"{"n":2}"#),
            item(3, r#"{"n":3}"#),
        ];
        let r = run_all(&mut pool, items, LIMIT).unwrap();
        let f = failure(&r[&1]);
        assert_eq!(f.kind, FailureKind::WorkerExited, "{protocol:?}: {f:?}");
        assert!(f.retryable);
        assert!(
            f.message.contains("incomplete answer line `{\"half`"),
            "{}",
            f.message
        );
        if protocol == Protocol::Lines {
            // The records after it are not blamed: they run again on a new worker.
            assert_eq!(text(success(&r[&2])), vec![r#"{"n":2}"#]);
            assert_eq!(text(success(&r[&3])), vec![r#"{"n":3}"#]);
        } else {
            // (This worker does not speak `framed`: its echoes are not replies. What
            // matters is that record 2 is not charged with record 1's death.)
            assert_ne!(failure(&r[&2]).kind, FailureKind::WorkerExited);
        }
        pool.shutdown();
    }
}

#[test]
fn a_lines_worker_that_skips_an_answer_never_gives_a_record_another_records_output() {
    // Hangs on "hang", answers nothing for "skip", echoes everything else.
    let script = r#"while read -r l; do case $l in *hang*) sleep 1000;; *skip*) ;; *) echo "$l";; esac; done"#;
    let mut cfg = config(sh(script), 1);
    cfg.timeout = Some(Duration::from_secs(3));
    let mut pool = WorkerPool::start(cfg).unwrap();
    let items = vec![
        item(0, r#"{"n":0,"hang":true}"#),
        item(1, r#"{"n":1,"skip":true}"#),
        item(2, r#"{"n":2}"#),
        item(3, r#"{"n":3}"#),
        item(4, r#"{"n":4}"#),
    ];
    let inputs: Vec<String> = items
        .iter()
        .map(|i| String::from_utf8(i.json.to_vec()).unwrap())
        .collect();
    let r = run_all(&mut pool, items, LIMIT).unwrap();
    assert_eq!(failure(&r[&0]).kind, FailureKind::Timeout);
    // The skipped record times out on its own; it never carries record 2's output.
    assert_eq!(failure(&r[&1]).kind, FailureKind::Timeout, "{:?}", r[&1]);
    for k in 2..5u64 {
        assert_eq!(text(success(&r[&k])), vec![inputs[k as usize].clone()]);
    }
    // From then on, one record at a time.
    assert_eq!(pool.effective_depth(), 1);
    pool.shutdown();
}

#[test]
fn invalid_utf8_from_a_lines_worker_is_bad_output() {
    let script = r#"while read -r l; do printf '{"a":"\377"}\n'; done"#;
    let mut pool = WorkerPool::start(config(sh(script), 1)).unwrap();
    let r = run_all(&mut pool, vec![item(0, r#"{"a":1}"#)], LIMIT).unwrap();
    let f = failure(&r[&0]);
    assert_eq!(f.kind, FailureKind::BadOutput);
    assert!(!f.retryable);
    assert!(f.message.contains("not valid UTF-8"), "{}", f.message);
    pool.shutdown();
}

#[test]
fn a_record_without_an_answer_for_long_is_noticed_at_growing_intervals() {
    let dir = tempdir("no-answer-notice");
    let go = dir.join("go");
    let _ = std::fs::remove_file(&go);
    // Answers only once the test lets it.
    let script = format!(
        "while read -r l; do while [ ! -e {} ]; do sleep 0.02; done; echo \"$l\"; done",
        go.display()
    );
    let notices: Arc<Mutex<Vec<String>>> = Arc::default();
    let sink = notices.clone();
    let mut cfg = config(sh(&script), 2);
    cfg.no_answer_notice = Duration::from_millis(200);
    cfg.notices = Some(Arc::new(move |m: &str| sink.lock().unwrap().push(m.into())));
    let mut pool = WorkerPool::start(cfg).unwrap();
    pool.submit(id(0), item(811, r#"{"n":811}"#)).unwrap();
    let deadline = Instant::now() + LIMIT;
    let mut out = Vec::new();
    while notices.lock().unwrap().len() < 3 {
        assert!(Instant::now() < deadline, "no notices: {notices:?}");
        pool.poll(Duration::from_millis(50), &mut out).unwrap();
        assert!(out.is_empty());
    }
    let seen = notices.lock().unwrap().clone();
    // Each notice comes only once the wait reached the next doubled threshold.
    for (k, notice) in seen.iter().take(3).enumerate() {
        assert!(
            notice.starts_with("record 812 on worker 0: no answer for "),
            "{notice}"
        );
        assert!(notice.contains("set the per-record timeout"), "{notice}");
        let waited = notice
            .split("no answer for ")
            .nth(1)
            .unwrap()
            .split(';')
            .next()
            .unwrap();
        let ms: u64 = match waited.strip_suffix(" ms") {
            Some(ms) => ms.parse().unwrap(),
            None => waited.strip_suffix(" s").unwrap().parse::<u64>().unwrap() * 1000,
        };
        assert!(ms >= 200 << k, "notice {k} came after {ms} ms: {notice}");
    }
    std::fs::write(&go, "").unwrap();
    let got = poll_n(&mut pool, 1);
    assert_eq!(text(success(&got[0].1)), vec![r#"{"n":811}"#]);
    pool.shutdown();
}

#[test]
fn stopping_gives_back_records_queued_behind_the_one_in_progress() {
    let dir = tempdir("stop-queued");
    let go = dir.join("go");
    let _ = std::fs::remove_file(&go);
    let pids = dir.join("pids");
    let _ = std::fs::remove_file(&pids);
    // The first record waits for the test; the others would be answered at once. Lines
    // records are echoed; framed requests are answered `done` (sed turns the request
    // `{"id":N,"record":...}` into `{"id":N,"done":true}`).
    let reply = r#"sed -u 's/,"record".*/,"done":true}/'"#;
    let script = format!(
        "echo $$ >> {}; read -r l; while [ ! -e {} ]; do sleep 0.02; done; echo \"$l\" | {reply}; exec {reply}",
        pids.display(),
        go.display()
    );
    for protocol in [Protocol::Lines, Protocol::Framed] {
        let _ = std::fs::remove_file(&go);
        let mut cfg = config(sh(&script), 1);
        cfg.protocol = protocol;
        cfg.pipeline_depth = 8;
        let mut pool = WorkerPool::start(cfg).unwrap();
        for k in 0..4u64 {
            pool.submit(id(k), item(k, &format!(r#"{{"n":{k}}}"#)))
                .unwrap();
        }
        let mut out = Vec::new();
        pool.poll(Duration::from_millis(50), &mut out).unwrap();
        assert!(out.is_empty());
        let mut not_run = Vec::new();
        pool.stop_queued(&mut not_run);
        assert_eq!(not_run, vec![id(1), id(2), id(3)], "{protocol:?}");
        std::fs::write(&go, "").unwrap();
        // The record in progress finishes and is kept.
        let got = poll_n(&mut pool, 1);
        assert_eq!(got[0].0, id(0));
        let want: Vec<&str> = match protocol {
            Protocol::Lines => vec![r#"{"n":0}"#],
            Protocol::Framed => vec![],
        };
        assert_eq!(text(success(&got[0].1)), want);
        // Nothing given back is ever reported.
        let until = Instant::now() + Duration::from_millis(500);
        while Instant::now() < until {
            pool.poll(Duration::from_millis(50), &mut out).unwrap();
            assert!(out.iter().all(|(i, _)| *i == id(0)), "{out:?}");
        }
        pool.shutdown();
        let _ = std::fs::remove_file(&pids);
    }
}

#[test]
fn more_workers_than_records_starts_only_the_workers_it_needs() {
    let dir = tempdir("lazy-start");
    let started = dir.join("started");
    let _ = std::fs::remove_file(&started);
    let script = format!("echo $$ >> {}; exec cat", started.display());
    let mut pool = WorkerPool::start(config(sh(&script), 8)).unwrap();
    let items = vec![item(0, r#"{"n":0}"#), item(1, r#"{"n":1}"#)];
    let r = run_all(&mut pool, items, LIMIT).unwrap();
    assert_eq!(text(success(&r[&1])), vec![r#"{"n":1}"#]);
    pool.shutdown();
    let text = std::fs::read_to_string(&started).unwrap();
    assert!(
        text.lines().count() <= 2,
        "started {} workers for 2 records",
        text.lines().count()
    );
}

#[test]
fn workers_killed_from_outside_before_answering_do_not_stop_the_pool() {
    let dir = tempdir("killed-from-outside");
    let go = dir.join("go");
    let _ = std::fs::remove_file(&go);
    let pids = dir.join("pids");
    let _ = std::fs::remove_file(&pids);
    // A worker that is slow to start: it answers only once the test lets it.
    let script = format!(
        "echo $$ >> {}; while [ ! -e {} ]; do sleep 0.02; done; exec cat",
        pids.display(),
        go.display()
    );
    let mut cfg = config(sh(&script), 1);
    cfg.restart_limit = 3;
    let mut pool = WorkerPool::start(cfg).unwrap();
    let mut attempt = 1;
    for kill in 0..5 {
        let aid = AttemptId { index: 0, attempt };
        pool.submit(aid, item(0, r#"{"n":0}"#)).unwrap();
        let pid: i32 = wait_lines(&pids, kill + 1)[kill].trim().parse().unwrap();
        kill9(pid);
        let got = poll_n(&mut pool, 1);
        assert_eq!(got[0].0, aid);
        let f = failure(&got[0].1);
        assert_eq!(f.kind, FailureKind::WorkerExited);
        assert!(f.message.contains("SIGKILL"), "{}", f.message);
        attempt += 1;
    }
    std::fs::write(&go, "").unwrap();
    let aid = AttemptId { index: 0, attempt };
    pool.submit(aid, item(0, r#"{"n":0}"#)).unwrap();
    let got = poll_n(&mut pool, 1);
    match &got[0].1 {
        AttemptOutcome::Success(v) => assert_eq!(text(v), vec![r#"{"n":0}"#]),
        other => panic!("expected success, got {other:?}"),
    }
    pool.shutdown();
}

#[test]
fn a_worker_outlives_the_thread_that_started_it() {
    let dir = tempdir("starter-thread-ends");
    let pids = dir.join("pids");
    let _ = std::fs::remove_file(&pids);
    let script = format!("echo $$ >> {}; exec cat", pids.display());
    let cfg = config(sh(&script), 1);
    // A short-lived thread starts the pool's only worker (on its first record), then ends.
    let mut pool = std::thread::spawn(move || {
        let mut pool = WorkerPool::start(cfg).unwrap();
        pool.submit(id(0), item(0, r#"{"n":0}"#)).unwrap();
        let got = poll_n(&mut pool, 1);
        assert!(matches!(got[0].1, AttemptOutcome::Success(_)), "{got:?}");
        pool
    })
    .join()
    .unwrap();
    // The worker it started still serves the pool, driven from this thread now.
    for n in 1..=3u64 {
        pool.submit(id(n), item(n, &format!(r#"{{"n":{n}}}"#)))
            .unwrap();
        let got = poll_n(&mut pool, 1);
        match &got[0].1 {
            AttemptOutcome::Success(v) => assert_eq!(text(v), vec![format!(r#"{{"n":{n}}}"#)]),
            other => panic!("record {n}: the worker did not survive its starter thread: {other:?}"),
        }
    }
    let started = wait_lines(&pids, 1);
    assert_eq!(started.len(), 1, "the worker was restarted: {started:?}");
    pool.shutdown();
}
