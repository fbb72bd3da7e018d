//! A tiny driver that plays the engine: submits items up to the executor's capacity and
//! polls until every attempt is reported.

#![allow(dead_code)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use herdsman_workers::{
    AttemptId, AttemptOutcome, Executor, FatalExecutorError, WorkItem, WorkOutput, WorkerFailure,
};

pub type Outcome = AttemptOutcome<WorkOutput, WorkerFailure>;

pub fn id(index: u64) -> AttemptId {
    AttemptId { index, attempt: 1 }
}

pub fn item(seq: u64, json: &str) -> WorkItem {
    WorkItem::new(seq, json)
}

/// Runs every item once (no retries) and returns the outcomes by input index.
/// Panics if an attempt is reported twice, or if not everything finished within `limit`.
pub fn run_all<E>(
    exec: &mut E,
    items: Vec<WorkItem>,
    limit: Duration,
) -> Result<HashMap<u64, Outcome>, FatalExecutorError>
where
    E: Executor<WorkItem, Output = WorkOutput, Error = WorkerFailure>,
{
    let total = items.len();
    let mut pending = items.into_iter().enumerate();
    let mut in_flight = 0usize;
    let mut results = HashMap::new();
    let mut out = Vec::new();
    let deadline = Instant::now() + limit;
    while results.len() < total {
        while in_flight < exec.capacity() {
            match pending.next() {
                Some((i, it)) => {
                    exec.submit(id(i as u64), it)?;
                    in_flight += 1;
                }
                None => break,
            }
        }
        assert!(
            Instant::now() < deadline,
            "executor did not finish in {limit:?}"
        );
        exec.poll(Duration::from_millis(100), &mut out)?;
        for (aid, outcome) in out.drain(..) {
            in_flight -= 1;
            assert!(
                results.insert(aid.index, outcome).is_none(),
                "attempt {aid:?} reported twice"
            );
        }
    }
    // Nothing more may be reported.
    exec.poll(Duration::from_millis(20), &mut out)?;
    assert!(
        out.is_empty(),
        "extra outcomes after every attempt finished"
    );
    Ok(results)
}

pub fn success(o: &Outcome) -> &WorkOutput {
    match o {
        AttemptOutcome::Success(v) => v,
        AttemptOutcome::Failure(f) => panic!("expected success, got failure: {f:?}"),
        AttemptOutcome::Panicked(m) => panic!("expected success, got panic: {m}"),
    }
}

pub fn failure(o: &Outcome) -> &WorkerFailure {
    match o {
        AttemptOutcome::Failure(f) => f,
        AttemptOutcome::Success(v) => panic!("expected failure, got success: {v:?}"),
        AttemptOutcome::Panicked(m) => panic!("expected failure, got panic: {m}"),
    }
}

pub fn text(records: &WorkOutput) -> Vec<String> {
    records
        .iter()
        .map(|r| String::from_utf8(r.clone()).unwrap())
        .collect()
}

/// True once `pid` no longer exists (or is a zombie nobody reaped yet, which cannot run).
pub fn pid_gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => {
            let state = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .unwrap_or("");
            state == "Z" || state == "X"
        }
    }
}

pub fn wait_gone(pid: i32, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if pid_gone(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    pid_gone(pid)
}

/// Writes a Python script into a temp dir and returns its path.
pub fn script(dir: &std::path::Path, name: &str, body: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, body).unwrap();
    path.to_string_lossy().into_owned()
}

pub fn tempdir(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "herdsman-workers-test-{tag}-{}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
