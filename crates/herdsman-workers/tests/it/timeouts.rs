//! Per-record timeouts enforced by the executors, and the working directory of workers and
//! commands.

use crate::common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use herdsman_workers::{
    ExecConfig, ExecOutputMode, ExecPool, Executor, FailureKind, PoolConfig, Protocol, Template,
    WorkerCommand, WorkerPool,
};

const LIMIT: Duration = Duration::from_secs(60);

fn pool_cfg(cmd: WorkerCommand, workers: usize, timeout_ms: u64) -> PoolConfig {
    let mut cfg = PoolConfig::new(cmd);
    cfg.workers = workers;
    cfg.pipeline_depth = 16;
    cfg.kill_grace = Duration::from_millis(300);
    cfg.timeout = Some(Duration::from_millis(timeout_ms));
    cfg
}

/// A `lines` worker that echoes records; on a record with `"hang"` it starts a grandchild
/// (`sleep 300`), writes its pid to `pidfile`, says so on stderr and hangs. (Shell workers
/// start in a millisecond, so a busy machine does not eat into the timeouts.)
fn hang_script(dir: &Path, pidfile: &Path) -> String {
    let pidfile = pidfile.to_string_lossy().into_owned();
    script(
        dir,
        "hang.sh",
        &format!(
            r#"
while IFS= read -r l; do
  case "$l" in
    *hang*)
      sleep 300 &
      echo $! > '{pidfile}.tmp'
      mv '{pidfile}.tmp' '{pidfile}'
      echo "stuck on $l" >&2
      wait
      ;;
  esac
  printf '%s\n' "$l"
done
"#
        ),
    )
}

fn grandchild(pidfile: &Path) -> i32 {
    std::fs::read_to_string(pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn hung_lines_record_times_out_alone_and_the_records_behind_it_succeed() {
    let dir = tempdir("timeout-lines");
    let pidfile = dir.join("grandchild.pid");
    let path = hang_script(&dir, &pidfile);
    let mut p = WorkerPool::start(pool_cfg(WorkerCommand::argv(["sh", &path]), 1, 400)).unwrap();
    let items: Vec<_> = (0..6u64)
        .map(|i| {
            if i == 1 {
                item(i, r#"{"id":2,"hang":true}"#)
            } else {
                item(i, &format!(r#"{{"id":{}}}"#, i + 1))
            }
        })
        .collect();
    let r = run_all(&mut p, items, LIMIT).unwrap();
    for i in 0..6u64 {
        if i == 1 {
            let f = failure(&r[&i]);
            assert_eq!(f.kind, FailureKind::Timeout);
            assert!(f.retryable);
            assert_eq!(f.worker, 0);
            assert_eq!(
                f.message,
                "no answer within 400ms (the per-record timeout); worker 0 was killed and restarted"
            );
            assert!(
                f.stderr_tail.iter().any(|l| l.contains("stuck on")),
                "{:?}",
                f.stderr_tail
            );
        } else {
            assert_eq!(
                text(success(&r[&i])),
                vec![format!(r#"{{"id":{}}}"#, i + 1)]
            );
        }
    }
    assert!(
        wait_gone(grandchild(&pidfile), Duration::from_secs(10)),
        "the hung record's grandchild survived"
    );
    p.shutdown();
}

#[test]
fn lines_clock_starts_when_the_record_becomes_the_oldest_unanswered() {
    // Four records written at once to one worker that takes 200 ms each: the last one is
    // answered about 800 ms after it was written, but each took only 200 ms of work.
    let line = r#"while IFS= read -r l; do sleep 0.2; printf '%s\n' "$l"; done"#;
    let mut p = WorkerPool::start(pool_cfg(WorkerCommand::shell(line), 1, 500)).unwrap();
    assert!(p.capacity() >= 4);
    let start = Instant::now();
    let items: Vec<_> = (0..4)
        .map(|i| item(i, &format!(r#"{{"i":{i}}}"#)))
        .collect();
    let r = run_all(&mut p, items, LIMIT).unwrap();
    for i in 0..4u64 {
        assert_eq!(text(success(&r[&i])), vec![format!(r#"{{"i":{i}}}"#)]);
    }
    assert!(start.elapsed() >= Duration::from_millis(800));
    p.shutdown();
}

/// A `framed` worker in shell. It never answers records containing "hang". The first
/// process started (per `marker` file) answers records containing "late" only after 2 s;
/// every other record is answered at once with `{"pid":<worker pid>,"r":<record>}`.
fn framed_script(dir: &Path, marker: &Path) -> String {
    let marker = marker.to_string_lossy().into_owned();
    script(
        dir,
        "framed.sh",
        &format!(
            r#"
if [ -e '{marker}' ]; then first=0; else first=1; : > '{marker}'; fi
while IFS= read -r l; do
  id=${{l#*\"id\":}}; id=${{id%%,*}}
  rec=${{l#*\"record\":}}; rec=${{rec%\}}}}
  reply="{{\"id\":$id,\"output\":{{\"pid\":$$,\"r\":$rec}},\"done\":true}}"
  case "$l" in
    *hang*) ;;
    *late*) if [ $first = 1 ]; then (sleep 2; printf '%s\n' "$reply") & else printf '%s\n' "$reply"; fi ;;
    *) printf '%s\n' "$reply" ;;
  esac
done
"#
        ),
    )
}

fn framed_pool(dir: &Path, timeout_ms: u64) -> WorkerPool {
    let marker = dir.join("started-once");
    let _ = std::fs::remove_file(&marker);
    let path = framed_script(dir, &marker);
    let mut cfg = pool_cfg(WorkerCommand::argv(["sh", &path]), 1, timeout_ms);
    cfg.protocol = Protocol::Framed;
    WorkerPool::start(cfg).unwrap()
}

fn output(o: &Outcome) -> serde_json::Value {
    serde_json::from_slice(&success(o)[0]).unwrap()
}

#[test]
fn framed_record_without_answer_times_out_and_others_are_answered() {
    let dir = tempdir("timeout-framed");
    let mut p = framed_pool(&dir, 400);
    let items: Vec<_> = (0..5u64)
        .map(|i| {
            if i == 2 {
                item(i, r#"{"hang":1}"#)
            } else {
                item(i, &format!(r#"{{"i":{i}}}"#))
            }
        })
        .collect();
    let started = Instant::now();
    let r = run_all(&mut p, items, LIMIT).unwrap();
    assert!(started.elapsed() >= Duration::from_millis(400));
    for i in 0..5u64 {
        if i == 2 {
            let f = failure(&r[&i]);
            assert_eq!(f.kind, FailureKind::Timeout);
            assert!(f.retryable);
            assert_eq!(
                f.message,
                "no answer within 400ms (the per-record timeout); worker 0 was killed and restarted"
            );
        } else {
            assert_eq!(output(&r[&i])["r"], serde_json::json!({ "i": i }));
        }
    }
    // The restarted worker takes new records.
    let r = run_all(&mut p, vec![item(9, r#"{"i":9}"#)], LIMIT).unwrap();
    assert_eq!(output(&r[&0])["r"], serde_json::json!({ "i": 9 }));
    p.shutdown();
}

#[test]
fn framed_timeout_resends_the_other_records_in_flight_uncharged() {
    let dir = tempdir("timeout-framed-resend");
    let mut p = framed_pool(&dir, 400);
    let deadline = Instant::now() + LIMIT;
    let mut out = Vec::new();
    p.submit(id(0), item(0, r#"{"ping":1}"#)).unwrap();
    while out.is_empty() {
        assert!(Instant::now() < deadline);
        p.poll(Duration::from_millis(100), &mut out).unwrap();
    }
    let first_pid = output(&out[0].1)["pid"].clone();
    out.clear();
    p.submit(id(1), item(1, r#"{"hang":1}"#)).unwrap();
    // Written well after the hung record, so it is still in time when that one expires.
    let wait = Instant::now() + Duration::from_millis(200);
    while Instant::now() < wait {
        p.poll(Duration::from_millis(20), &mut out).unwrap();
    }
    assert!(out.is_empty());
    p.submit(id(2), item(2, r#"{"late":1}"#)).unwrap();
    while out.len() < 2 {
        assert!(Instant::now() < deadline);
        p.poll(Duration::from_millis(100), &mut out).unwrap();
    }
    out.sort_by_key(|(aid, _)| aid.index);
    assert_eq!(out.len(), 2);
    assert_eq!(out[0].0, id(1));
    assert_eq!(failure(&out[0].1).kind, FailureKind::Timeout);
    assert_eq!(out[1].0, id(2));
    assert_ne!(
        output(&out[1].1)["pid"],
        first_pid,
        "answered by the restarted worker"
    );
    out.clear();
    p.poll(Duration::from_millis(100), &mut out).unwrap();
    assert!(out.is_empty(), "reported twice: {out:?}");
    p.shutdown();
}

#[test]
fn worker_that_never_answers_becomes_fatal_after_repeated_timeouts() {
    let mut cfg = pool_cfg(WorkerCommand::argv(["sleep", "300"]), 1, 300);
    cfg.restart_limit = 2;
    let mut p = WorkerPool::start(cfg).unwrap();
    let items: Vec<_> = (0..3).map(|i| item(i, "{}")).collect();
    let err = run_all(&mut p, items, LIMIT).unwrap_err();
    assert!(
        err.message
            .starts_with("worker `sleep 300` was killed 2 times in a row for not answering within 300ms (the per-record timeout)"),
        "{}",
        err.message
    );
    assert!(
        err.message.contains("raise the per-record timeout"),
        "{}",
        err.message
    );
    assert_eq!(err.setting, Some(herdsman_workers::Setting::Timeout));
    p.shutdown();
}

#[test]
fn poll_wakes_up_for_a_deadline_inside_a_long_wait() {
    let mut p = WorkerPool::start(pool_cfg(WorkerCommand::argv(["sleep", "300"]), 1, 300)).unwrap();
    p.submit(id(0), item(0, "{}")).unwrap();
    let start = Instant::now();
    let mut out = Vec::new();
    p.poll(Duration::from_secs(30), &mut out).unwrap();
    // Returned because the record ran out of time, long before the 30 s wait was over.
    assert!(start.elapsed() < Duration::from_secs(15));
    assert_eq!(out.len(), 1);
    assert_eq!(failure(&out[0].1).kind, FailureKind::Timeout);
    p.shutdown();
}

fn exec_cfg(argv: &[&str], jobs: usize, timeout_ms: u64) -> ExecConfig {
    let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
    let mut cfg = ExecConfig::new(Template::parse(&argv).unwrap());
    cfg.jobs = jobs;
    cfg.kill_grace = Duration::from_millis(300);
    cfg.timeout = Some(Duration::from_millis(timeout_ms));
    cfg
}

#[test]
fn exec_command_times_out_from_its_spawn_and_its_grandchild_dies() {
    let dir = tempdir("timeout-exec");
    let pidfile = dir.join("grandchild.pid");
    let pidfile_s = pidfile.to_string_lossy().into_owned();
    let path = script(
        &dir,
        "cmd.sh",
        r#"
if [ "$1" = hang ]; then
  sleep 300 &
  echo $! > "$2.tmp"
  mv "$2.tmp" "$2"
  echo stuck >&2
  wait
fi
printf '{"n":"%s"}\n' "$1"
"#,
    );
    // One job slot: the records after the hung one wait for it (longer than the timeout)
    // before they start, and still succeed.
    let mut p = ExecPool::start(exec_cfg(&["sh", &path, "{n}", &pidfile_s], 1, 400)).unwrap();
    let items = vec![
        item(0, r#"{"n":"hang"}"#),
        item(1, r#"{"n":"a"}"#),
        item(2, r#"{"n":"b"}"#),
    ];
    let r = run_all(&mut p, items, LIMIT).unwrap();
    let f = failure(&r[&0]);
    assert_eq!(f.kind, FailureKind::Timeout);
    assert!(f.retryable);
    assert_eq!(
        f.message,
        "command `sh` did not finish within 400ms (the per-record timeout); its process group was killed"
    );
    assert!(
        f.stderr_tail.iter().any(|l| l == "stuck"),
        "{:?}",
        f.stderr_tail
    );
    assert_eq!(text(success(&r[&1])), vec![r#"{"n":"a"}"#]);
    assert_eq!(text(success(&r[&2])), vec![r#"{"n":"b"}"#]);
    assert!(
        wait_gone(grandchild(&pidfile), Duration::from_secs(10)),
        "the command's grandchild survived"
    );
    p.shutdown();
}

#[test]
fn exec_poll_wakes_up_for_a_deadline_inside_a_long_wait() {
    let mut p = ExecPool::start(exec_cfg(&["sleep", "300"], 1, 300)).unwrap();
    p.submit(id(0), item(0, "{}")).unwrap();
    let start = Instant::now();
    let mut out = Vec::new();
    while out.is_empty() && start.elapsed() < LIMIT {
        p.poll(Duration::from_secs(30), &mut out).unwrap();
    }
    assert!(start.elapsed() < Duration::from_secs(15));
    assert_eq!(failure(&out[0].1).kind, FailureKind::Timeout);
    p.shutdown();
}

fn canonical(dir: &Path) -> String {
    std::fs::canonicalize(dir)
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

#[test]
fn pool_workers_start_in_cwd() {
    let dir = tempdir("cwd-pool");
    std::fs::write(dir.join("marker.txt"), "here").unwrap();
    for protocol in [Protocol::Lines, Protocol::Framed] {
        let line = match protocol {
            Protocol::Lines => {
                r#"printf '{"cwd":"%s","m":"%s"}\n' "$(pwd -P)" "$(cat marker.txt)""#
            }
            Protocol::Framed => {
                r#"printf '{"id":%s,"output":{"cwd":"%s","m":"%s"},"done":true}\n' "$(echo "$l" | sed 's/^{"id":\([0-9]*\).*/\1/')" "$(pwd -P)" "$(cat marker.txt)""#
            }
        };
        let mut cfg = PoolConfig::new(WorkerCommand::shell(format!(
            "while read -r l; do {line}; done"
        )));
        cfg.workers = 1;
        cfg.protocol = protocol;
        cfg.cwd = Some(dir.clone());
        let mut p = WorkerPool::start(cfg).unwrap();
        let r = run_all(&mut p, vec![item(0, "{}")], LIMIT).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&success(&r[&0])[0]).unwrap();
        assert_eq!(v["cwd"].as_str().unwrap(), canonical(&dir), "{protocol:?}");
        assert_eq!(v["m"], "here");
        p.shutdown();
    }
}

#[test]
fn exec_commands_start_in_cwd_and_relative_programs_resolve_there() {
    let dir = tempdir("cwd-exec");
    let prog = dir.join("where.sh");
    std::fs::write(&prog, "#!/bin/sh\npwd -P\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o755)).unwrap();
    for argv in [vec!["pwd", "-P"], vec!["./where.sh"]] {
        let mut cfg = exec_cfg(&argv, 1, 10_000);
        cfg.timeout = None;
        cfg.output = ExecOutputMode::Text;
        cfg.cwd = Some(dir.clone());
        let mut p = ExecPool::start(cfg).unwrap();
        let r = run_all(&mut p, vec![item(0, "{}")], LIMIT).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&success(&r[&0])[0]).unwrap();
        assert_eq!(v["stdout"].as_str().unwrap(), canonical(&dir), "{argv:?}");
        p.shutdown();
    }
}

#[test]
fn missing_cwd_is_fatal_at_start() {
    let missing: PathBuf = tempdir("cwd-missing").join("no-such-dir");
    let mut cfg = PoolConfig::new(WorkerCommand::argv(["cat"]));
    cfg.workers = 1;
    cfg.cwd = Some(missing.clone());
    let err = WorkerPool::start(cfg).err().expect("start must fail");
    assert_eq!(
        err.message,
        format!(
            "cannot start worker `cat` in directory `{}`: No such file or directory; check the working directory",
            missing.display()
        )
    );

    let mut cfg = exec_cfg(&["cat"], 1, 1000);
    cfg.cwd = Some(missing.clone());
    let err = ExecPool::start(cfg).err().expect("start must fail");
    assert_eq!(
        err.message,
        format!(
            "cannot run command `cat` in directory `{}`: No such file or directory; check the working directory",
            missing.display()
        )
    );
}

#[test]
fn framed_clock_starts_when_the_record_becomes_the_oldest_unanswered() {
    // Six records written at once to one framed worker that works on one at a time, 200 ms
    // each: the last one is answered about 1.2 s after it was written, more than twice the
    // timeout, but each took only 200 ms of work.
    let line = r#"while IFS= read -r l; do sleep 0.2; id=${l#*\"id\":}; id=${id%%,*}; printf '{"id":%s,"done":true}\n' "$id"; done"#;
    let mut cfg = pool_cfg(WorkerCommand::shell(line), 1, 500);
    cfg.protocol = Protocol::Framed;
    let mut p = WorkerPool::start(cfg).unwrap();
    assert!(p.capacity() >= 6);
    let start = Instant::now();
    let items: Vec<_> = (0..6)
        .map(|i| item(i, &format!(r#"{{"i":{i}}}"#)))
        .collect();
    let r = run_all(&mut p, items, LIMIT).unwrap();
    for i in 0..6u64 {
        assert!(success(&r[&i]).is_empty(), "record {i}: {:?}", r[&i]);
    }
    assert!(start.elapsed() >= Duration::from_millis(1200));
    p.shutdown();
}

#[test]
fn a_fresh_workers_first_record_gets_a_start_up_allowance() {
    // The worker takes 1.3 s to start, longer than the 1 s timeout; its first record may take
    // the timeout twice (start-up allowance), and the records after it the timeout once.
    let line = "sleep 1.3; exec cat";
    let mut p = WorkerPool::start(pool_cfg(WorkerCommand::shell(line), 1, 1000)).unwrap();
    let items: Vec<_> = (0..3)
        .map(|i| item(i, &format!(r#"{{"i":{i}}}"#)))
        .collect();
    let r = run_all(&mut p, items, LIMIT).unwrap();
    for i in 0..3u64 {
        assert_eq!(text(success(&r[&i])), vec![format!(r#"{{"i":{i}}}"#)]);
    }
    p.shutdown();
}

fn pids_per_process(protocol: Protocol) {
    // Each answer names the worker process; a worker retired gracefully leaves a file behind.
    let dir = tempdir(&format!("lifespan-{protocol:?}"));
    let answer = match protocol {
        Protocol::Lines => r#"printf '{"pid":%s}\n' $$"#,
        Protocol::Framed => {
            r#"id=${l#*\"id\":}; id=${id%%,*}; printf '{"id":%s,"output":{"pid":%s},"done":true}\n' "$id" $$"#
        }
    };
    let body = format!(
        "while IFS= read -r l; do {answer}; done; : > '{}/exited-'$$\n",
        dir.display()
    );
    let path = script(&dir, "pid.sh", &body);
    let mut cfg = pool_cfg(WorkerCommand::argv(["sh", &path]), 2, 30_000);
    cfg.protocol = protocol;
    cfg.max_tasks_per_worker = Some(2);
    let mut p = WorkerPool::start(cfg).unwrap();
    let items: Vec<_> = (0..11).map(|i| item(i, "{}")).collect();
    let r = run_all(&mut p, items, LIMIT).unwrap();
    let mut per_pid = std::collections::BTreeMap::<u64, usize>::new();
    for i in 0..11u64 {
        let v: serde_json::Value = serde_json::from_slice(&success(&r[&i])[0]).unwrap();
        *per_pid.entry(v["pid"].as_u64().unwrap()).or_default() += 1;
    }
    assert!(per_pid.values().all(|&n| n <= 2), "{per_pid:?}");
    assert!(per_pid.len() >= 6, "{per_pid:?}");
    p.shutdown();
    for pid in per_pid.keys() {
        assert!(
            dir.join(format!("exited-{pid}")).exists(),
            "worker {pid} was not retired through its stdin: {per_pid:?}"
        );
    }
}

#[test]
fn max_tasks_per_worker_retires_lines_workers_after_n_records() {
    pids_per_process(Protocol::Lines);
}

#[test]
fn max_tasks_per_worker_retires_framed_workers_after_n_records() {
    pids_per_process(Protocol::Framed);
}
