//! `ProcessOptions::on_start`: every attempt a worker (or an `--exec` command) starts is told
//! once, with the worker's index and a moment no later than its outcome.

use crate::common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use herdsman_workers::{
    AttemptId, ExecConfig, ExecPool, Executor, PoolConfig, StartSink, Template, WorkerCommand,
    WorkerPool,
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
