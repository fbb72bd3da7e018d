//! The worker helpers (Python and Rust) driven through the real worker pool.

use crate::common;

use std::path::PathBuf;
use std::time::Duration;

use common::*;
use herdsman_workers::{Executor, FailureKind, PoolConfig, Protocol, WorkerCommand, WorkerPool};

const LIMIT: Duration = Duration::from_secs(60);

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn start(cmd: WorkerCommand, protocol: Protocol, workers: usize) -> WorkerPool {
    let mut cfg = PoolConfig::new(cmd);
    cfg.workers = workers;
    cfg.protocol = protocol;
    cfg.kill_grace = Duration::from_millis(500);
    WorkerPool::start(cfg).unwrap()
}

/// The Rust example worker, built by cargo on demand (it is an example of this crate).
fn framed_worker_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let examples = exe.parent().unwrap().parent().unwrap().join("examples");
    let bin = examples.join("framed_worker");
    if !bin.exists() {
        let profile_dir = exe.parent().unwrap().parent().unwrap();
        let target_dir = profile_dir.parent().unwrap();
        let mut args = vec![
            "build",
            "-p",
            "herdsman-workers",
            "--example",
            "framed_worker",
        ];
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            args.push("--release");
        }
        let status = std::process::Command::new(env!("CARGO"))
            .args(args)
            .env("CARGO_TARGET_DIR", target_dir)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .unwrap();
        assert!(status.success(), "cannot build the framed_worker example");
    }
    bin
}

#[test]
fn python_helper_framed() {
    let script = repo_root().join("examples/workers/python/example_worker.py");
    let mut p = start(
        WorkerCommand::argv(["python3".to_string(), script.to_string_lossy().into_owned()]),
        Protocol::Framed,
        2,
    );
    let items = vec![
        item(0, r#"{"name":"ann","age":"31"}"#),
        item(1, r#"{"name":""}"#),
        item(2, r#"{"name":"bo","age":"x"}"#),
        item(3, r#"{"name":"cy","age":"retry"}"#),
        item(4, r#"{"name":"di","age":"4","tags":"a;b"}"#),
    ];
    let r = run_all(&mut p, items, LIMIT).unwrap();
    assert_eq!(text(success(&r[&0])), vec![r#"{"name":"ANN","age":31}"#]);
    assert!(success(&r[&1]).is_empty());
    let f = failure(&r[&2]);
    assert_eq!(f.kind, FailureKind::Reported);
    assert!(!f.retryable);
    assert!(
        f.message.starts_with("ValueError: invalid literal"),
        "{}",
        f.message
    );
    let f = failure(&r[&3]);
    assert!(f.retryable);
    assert_eq!(f.message, "the age service is busy");
    assert_eq!(
        text(success(&r[&4])),
        vec![r#"{"name":"di","tag":"a"}"#, r#"{"name":"di","tag":"b"}"#]
    );
}

#[test]
fn python_helper_lines_crash_charges_the_failing_record() {
    let script = repo_root().join("examples/workers/python/example_worker.py");
    let mut p = start(
        WorkerCommand::argv([
            "python3".to_string(),
            script.to_string_lossy().into_owned(),
            "lines".into(),
        ]),
        Protocol::Lines,
        1,
    );
    let items: Vec<_> = (0..20)
        .map(|i| {
            let age = if i == 7 {
                "x".to_string()
            } else {
                i.to_string()
            };
            item(i, &format!(r#"{{"name":"n{i}","age":"{age}"}}"#))
        })
        .collect();
    let r = run_all(&mut p, items, LIMIT).unwrap();
    for i in 0..20u64 {
        if i == 7 {
            let f = failure(&r[&i]);
            assert_eq!(f.kind, FailureKind::WorkerExited);
            assert!(
                f.stderr_tail.iter().any(|l| l.contains("ValueError")),
                "{:?}",
                f.stderr_tail
            );
        } else {
            assert_eq!(
                text(success(&r[&i])),
                vec![format!(r#"{{"name":"N{i}","age":{i}}}"#)]
            );
        }
    }
}

#[test]
fn rust_example_worker_framed() {
    let bin = framed_worker_binary();
    let mut p = start(
        WorkerCommand::argv([bin.to_string_lossy().into_owned()]),
        Protocol::Framed,
        2,
    );
    let items = vec![
        item(0, r#"{"id":"1","value":"17"}"#),
        item(1, r#"{"id":2,"value":100}"#),
        item(2, r#"{"id":"3","value":"abc"}"#),
    ];
    let r = run_all(&mut p, items, LIMIT).unwrap();
    assert_eq!(
        text(success(&r[&0])),
        vec![r#"{"id":1,"value":17,"primes_up_to_value":7}"#]
    );
    assert_eq!(
        text(success(&r[&1])),
        vec![r#"{"id":2,"value":100,"primes_up_to_value":25}"#]
    );
    let f = failure(&r[&2]);
    assert_eq!(f.kind, FailureKind::Reported);
    assert_eq!(f.message, r#"value is not a non-negative integer: "abc""#);
    p.shutdown();

    let mut p = start(
        WorkerCommand::argv([bin.to_string_lossy().into_owned(), "--explode".into()]),
        Protocol::Framed,
        1,
    );
    let r = run_all(
        &mut p,
        vec![
            item(0, r#"{"id":1,"value":10}"#),
            item(1, r#"{"id":2,"value":1}"#),
        ],
        LIMIT,
    )
    .unwrap();
    assert_eq!(success(&r[&0]).len(), 4);
    assert!(success(&r[&1]).is_empty());
}
