//! `ProcessOptions::on_start`: every attempt a worker (or an `--exec` command) starts is told
//! once, with the worker's index and a moment no later than its outcome; and
//! `ProcessExecutor::poll_with_starts` reports each outcome with that same worker and moment
//! (the last one told, for a record sent again).

use crate::common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use herdsman_workers::{
    AttemptId, AttemptOutcome, ExecConfig, ExecPool, Executor, FailureKind, PoolConfig,
    ProcessExecutor, StartSink, Started, Template, WorkerCommand, WorkerPool,
};

const LIMIT: Duration = Duration::from_secs(60);

type Told = Arc<Mutex<Vec<(AttemptId, usize, Instant)>>>;

fn sink() -> (Told, StartSink) {
    let told: Told = Arc::default();
    let t = told.clone();
    let sink: StartSink = Arc::new(move |id, worker, at| t.lock().unwrap().push((id, worker, at)));
    (told, sink)
}

fn check(told: &Told, n: u64, workers: usize, before: Instant) {
    let mut told = told.lock().unwrap().clone();
    told.sort_by_key(|(id, _, _)| id.index);
    let ids: Vec<u64> = told.iter().map(|(id, _, _)| id.index).collect();
    assert_eq!(ids, (0..n).collect::<Vec<u64>>(), "each attempt told once");
    for (id, worker, at) in told {
        assert!(worker < workers, "{id:?} on worker {worker}");
        assert!(at >= before && at <= Instant::now());
    }
}

#[test]
fn the_worker_pool_tells_which_worker_starts_each_attempt() {
    let (told, on_start) = sink();
    let mut cfg = PoolConfig::new(WorkerCommand::argv(["cat"]));
    cfg.workers = 2;
    cfg.on_start = Some(on_start);
    let before = Instant::now();
    let mut p = WorkerPool::start(cfg).unwrap();
    let items = (0..50).map(|i| item(i, &format!("{i}"))).collect();
    let results = run_all(&mut p, items, LIMIT).unwrap();
    assert_eq!(results.len(), 50);
    check(&told, 50, 2, before);
    p.shutdown();
}

#[test]
fn the_command_runner_tells_which_job_slot_starts_each_command() {
    let (told, on_start) = sink();
    let template = Template::new(&["true".to_string()], false).unwrap();
    let mut cfg = ExecConfig::new(template);
    cfg.jobs = 3;
    cfg.on_start = Some(on_start);
    let before = Instant::now();
    let mut p = ExecPool::start(cfg).unwrap();
    let items = (0..9)
        .map(|i| item(i, &format!(r#"{{"n":{i}}}"#)))
        .collect();
    let results = run_all(&mut p, items, LIMIT).unwrap();
    assert_eq!(results.len(), 9);
    check(&told, 9, 3, before);
    p.shutdown();
}

/// Polls `p` with `poll_with_starts` until `n` outcomes came, checking that each poll gave one
/// start per outcome; returns the outcomes' ids, kinds of failure and starts, in order.
fn poll_starts<P: ProcessExecutor>(
    p: &mut P,
    n: usize,
) -> Vec<(AttemptId, Option<FailureKind>, Started)> {
    let deadline = Instant::now() + LIMIT;
    let (mut out, mut starts, mut got) = (Vec::new(), Vec::new(), Vec::new());
    while got.len() < n {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} outcomes",
            got.len()
        );
        p.poll_with_starts(Duration::from_millis(100), &mut out, &mut starts)
            .unwrap();
        assert_eq!(out.len(), starts.len(), "one start per outcome");
        for ((id, o), s) in out.drain(..).zip(starts.drain(..)) {
            let kind = match o {
                AttemptOutcome::Failure(f) => {
                    assert_eq!(f.worker, s.worker, "{id:?}: the failure's worker");
                    Some(f.kind)
                }
                _ => None,
            };
            got.push((id, kind, s));
        }
    }
    got
}

/// The last start `told` for `id`.
fn last_told(told: &Told, id: AttemptId) -> Option<(usize, Instant)> {
    let told = told.lock().unwrap();
    told.iter()
        .filter(|(t, _, _)| *t == id)
        .map(|(_, w, at)| (*w, *at))
        .next_back()
}

#[test]
fn the_worker_pool_reports_each_outcome_with_the_start_it_told() {
    let (told, on_start) = sink();
    let mut cfg = PoolConfig::new(WorkerCommand::argv(["cat"]));
    cfg.workers = 2;
    cfg.on_start = Some(on_start);
    let mut p = WorkerPool::start(cfg).unwrap();
    for i in 0..40 {
        p.submit(id(i), item(i, &format!("{i}"))).unwrap();
    }
    let got = poll_starts(&mut p, 40);
    let mut ids: Vec<u64> = got.iter().map(|(id, _, _)| id.index).collect();
    ids.sort_unstable();
    assert_eq!(ids, (0..40).collect::<Vec<u64>>());
    for (id, kind, s) in got {
        assert_eq!(kind, None);
        let (worker, at) = last_told(&told, id).expect("told");
        assert_eq!(
            s,
            Started {
                worker,
                at: Some(at)
            },
            "{id:?}"
        );
    }
    // A plain `poll` still works beside it, and `poll_with_starts` appends.
    p.submit(id(40), item(40, "40")).unwrap();
    let mut starts = vec![Started {
        worker: 9,
        at: None,
    }];
    let mut out = Vec::new();
    let deadline = Instant::now() + LIMIT;
    while out.is_empty() && Instant::now() < deadline {
        p.poll_with_starts(Duration::from_millis(100), &mut out, &mut starts)
            .unwrap();
    }
    assert_eq!(out.len(), 1);
    assert_eq!(starts.len(), 2);
    assert_eq!(starts[0].worker, 9);
    p.shutdown();
}

/// Exits (once, a marker file says when it did) on its first record, with three more records
/// sent to it behind that one.
const EXIT_ON_FIRST: &str = r#"
import os, sys
marker = sys.argv[1]
for line in sys.stdin:
    if not os.path.exists(marker):
        open(marker, "w").close()
        sys.exit(3)
    sys.stdout.write(line)
    sys.stdout.flush()
"#;

#[test]
fn a_record_sent_again_after_its_worker_exited_carries_its_last_start() {
    let dir = tempdir("started-again");
    let path = script(&dir, "exit_once.py", EXIT_ON_FIRST);
    let marker = dir.join("exited");
    let _ = std::fs::remove_file(&marker);
    let (told, on_start) = sink();
    let mut cfg = PoolConfig::new(WorkerCommand::argv([
        "python3".to_string(),
        path,
        marker.to_string_lossy().into_owned(),
    ]));
    cfg.workers = 1;
    cfg.pipeline_depth = 4;
    cfg.on_start = Some(on_start);
    let mut p = WorkerPool::start(cfg).unwrap();
    // All four go to the one worker before it reads any.
    for i in 0..4 {
        p.submit(id(i), item(i, &format!("{i}"))).unwrap();
    }
    let got = poll_starts(&mut p, 4);
    for (id, kind, s) in &got {
        let all: Vec<Instant> = told
            .lock()
            .unwrap()
            .iter()
            .filter(|(t, _, _)| t == id)
            .map(|(_, _, at)| *at)
            .collect();
        // The first record is charged with the exit; the three behind it were sent again.
        let (expected_kind, times) = if id.index == 0 {
            (Some(FailureKind::WorkerExited), 1)
        } else {
            (None, 2)
        };
        assert_eq!((*kind, all.len()), (expected_kind, times), "{id:?}");
        assert_eq!(s.at, all.last().copied(), "{id:?}: the last start");
        assert!(all[0] <= all[all.len() - 1]);
    }
    p.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_command_runner_reports_each_outcome_with_its_start_and_none_for_a_command_never_run() {
    let (told, on_start) = sink();
    let template = Template::new(&["echo".to_string(), "{n}".to_string()], false).unwrap();
    let mut cfg = ExecConfig::new(template);
    cfg.jobs = 2;
    cfg.on_start = Some(on_start);
    let mut p = ExecPool::start(cfg).unwrap();
    // Record 3 has no field `n`: its command is never spawned.
    for i in 0..6u64 {
        let json = if i == 3 {
            r#"{"m":1}"#.to_string()
        } else {
            format!(r#"{{"n":{i}}}"#)
        };
        p.submit(id(i), item(i, &json)).unwrap();
    }
    let got = poll_starts(&mut p, 6);
    for (id, kind, s) in got {
        assert!(s.worker < 2, "{id:?} on job slot {}", s.worker);
        if id.index == 3 {
            assert_eq!(kind, Some(FailureKind::BadRecord));
            assert_eq!(s.at, None);
            assert_eq!(last_told(&told, id), None);
        } else {
            assert_eq!(kind, None);
            let (worker, at) = last_told(&told, id).expect("told");
            assert_eq!(
                s,
                Started {
                    worker,
                    at: Some(at)
                },
                "{id:?}"
            );
        }
    }
    p.shutdown();
}
