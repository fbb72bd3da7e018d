//! Per-record command tests that run real commands.

use crate::common;

use std::time::{Duration, Instant};

use common::*;
use herdsman_workers::{
    AttemptOutcome, ExecConfig, ExecOutputMode, ExecPool, Executor, FailureKind, Template,
};

const LIMIT: Duration = Duration::from_secs(60);

fn argv(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn exec(template: Template, jobs: usize) -> ExecPool {
    let mut cfg = ExecConfig::new(template);
    cfg.jobs = jobs;
    cfg.kill_grace = Duration::from_millis(500);
    ExecPool::start(cfg).unwrap()
}

#[test]
fn shell_metacharacters_in_fields_are_just_text() {
    let dir = tempdir("meta");
    let canary = dir.join("pwned");
    let canary_s = canary.to_string_lossy().into_owned();
    let nasty = [
        format!("; touch {canary_s}"),
        format!("$(touch {canary_s})"),
        format!("`touch {canary_s}`"),
        format!("a && touch {canary_s} || true"),
        "' \" \\ * ? ~ | > < \n new line".to_string(),
        "; rm -rf ~".to_string(),
    ];
    let items: Vec<_> = nasty
        .iter()
        .enumerate()
        .map(|(i, s)| item(i as u64, &serde_json::json!({ "v": s }).to_string()))
        .collect();
    for shell in [false, true] {
        let t = if shell {
            Template::parse_shell("printf '%s' {v} | od -An -c > /dev/null; printf '%s' {v}")
                .unwrap()
        } else {
            Template::parse(&argv(&["printf", "%s", "{v}"])).unwrap()
        };
        let mut cfg = ExecConfig::new(t);
        cfg.jobs = 2;
        cfg.output = ExecOutputMode::Text;
        let mut p = ExecPool::start(cfg).unwrap();
        let r = run_all(&mut p, items.clone(), LIMIT).unwrap();
        for (i, s) in nasty.iter().enumerate() {
            let out = success(&r[&(i as u64)]);
            let v: serde_json::Value = serde_json::from_slice(&out[0]).unwrap();
            assert_eq!(v["stdout"].as_str().unwrap(), s.as_str(), "shell={shell}");
        }
        assert!(
            !canary.exists(),
            "a field was run as a command (shell={shell})"
        );
    }
}

#[test]
fn outputs_follow_the_auto_rule() {
    let t = Template::parse(&argv(&["sh", "-c", "{script}"])).unwrap();
    let mut p = exec(t, 2);
    let scripts = [
        r#"echo '{"a":1}'; echo '{"a":2}'"#,
        "true",
        "echo plain text",
        r#"printf '{\n  "x": [1, 2]\n}\n'"#,
    ];
    let items: Vec<_> = scripts
        .iter()
        .enumerate()
        .map(|(i, s)| item(i as u64, &serde_json::json!({ "script": s }).to_string()))
        .collect();
    let r = run_all(&mut p, items, LIMIT).unwrap();
    assert_eq!(text(success(&r[&0])), vec![r#"{"a":1}"#, r#"{"a":2}"#]);
    assert_eq!(
        text(success(&r[&1])),
        vec![""],
        "nothing printed: success, nothing to write"
    );
    assert_eq!(text(success(&r[&2])), vec![r#"{"stdout":"plain text"}"#]);
    assert_eq!(text(success(&r[&3])), vec![r#"{"x":[1,2]}"#]);
}

#[test]
fn placeholders_whole_record_and_number() {
    let t = Template::parse(&argv(&["echo", "{#}", "{}"])).unwrap();
    let mut p = exec(t, 2);
    let r = run_all(
        &mut p,
        vec![item(0, r#"{"k":"v"}"#), item(9, r#"[1]"#)],
        LIMIT,
    )
    .unwrap();
    assert_eq!(
        text(success(&r[&0])),
        vec![r#"{"stdout":"1 {\"k\":\"v\"}"}"#]
    );
    assert_eq!(text(success(&r[&1])), vec![r#"{"stdout":"10 [1]"}"#]);
}

#[test]
fn nonzero_exit_is_a_retryable_failure_with_stderr() {
    let t = Template::parse(&argv(&["sh", "-c", "echo oops {n} >&2; exit {n}"])).unwrap();
    let mut p = exec(t, 2);
    let r = run_all(
        &mut p,
        vec![item(0, r#"{"n":0}"#), item(1, r#"{"n":4}"#)],
        LIMIT,
    )
    .unwrap();
    assert_eq!(
        text(success(&r[&0])),
        vec![""],
        "nothing printed: success, nothing to write"
    );
    let f = failure(&r[&1]);
    assert_eq!(f.kind, FailureKind::CommandFailed);
    assert!(f.retryable);
    assert!(
        f.message.starts_with("command `sh` exited with status 4"),
        "{}",
        f.message
    );
    assert_eq!(f.stderr_tail, vec!["oops 4".to_string()]);
}

#[test]
fn missing_field_fails_only_that_record() {
    let t = Template::parse(&argv(&["echo", "{name}"])).unwrap();
    assert_eq!(t.fields(), vec!["name".to_string()]);
    let mut p = exec(t, 1);
    let r = run_all(
        &mut p,
        vec![item(0, r#"{"name":"x"}"#), item(1, r#"{"other":1}"#)],
        LIMIT,
    )
    .unwrap();
    assert_eq!(text(success(&r[&0])), vec![r#"{"stdout":"x"}"#]);
    let f = failure(&r[&1]);
    assert_eq!(f.kind, FailureKind::BadRecord);
    assert!(!f.retryable);
    assert_eq!(
        f.message,
        "the record has no field `name` used by the command template"
    );
}

#[test]
fn missing_program_is_fatal_at_start() {
    let t = Template::parse(&argv(&["herdsman-no-such-program-xyz", "{}"])).unwrap();
    let err = ExecPool::start(ExecConfig::new(t))
        .err()
        .expect("must fail");
    assert_eq!(
        err.message,
        "cannot run command `herdsman-no-such-program-xyz`: No such file or directory; check the command"
    );
    assert_eq!(err.setting, Some(herdsman_workers::Setting::Command));
}

#[test]
fn templated_program_that_does_not_exist_fails_the_record() {
    let t = Template::parse(&argv(&["{tool}"])).unwrap();
    let mut p = exec(t, 1);
    let r = run_all(
        &mut p,
        vec![
            item(0, r#"{"tool":"true"}"#),
            item(1, r#"{"tool":"herdsman-nope-xyz"}"#),
        ],
        LIMIT,
    )
    .unwrap();
    assert_eq!(
        text(success(&r[&0])),
        vec![""],
        "nothing printed: success, nothing to write"
    );
    let f = failure(&r[&1]);
    assert_eq!(f.kind, FailureKind::CommandFailed);
    assert!(
        f.message.contains("No such file or directory"),
        "{}",
        f.message
    );
}

#[test]
fn abandon_kills_command_and_grandchild_and_never_reports_it() {
    let dir = tempdir("exechang");
    let pidfile = dir.join("gc.pid");
    let script = format!(
        "sleep 1000 & echo $! > {p}.tmp; mv {p}.tmp {p}; wait",
        p = pidfile.to_string_lossy()
    );
    let t = Template::parse(&argv(&["sh", "-c", "{s}"])).unwrap();
    let mut p = exec(t, 2);
    p.submit(
        id(0),
        item(0, &serde_json::json!({ "s": script }).to_string()),
    )
    .unwrap();
    p.submit(id(1), item(1, r#"{"s":"echo 1"}"#)).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + LIMIT;
    while out.is_empty() || !pidfile.exists() {
        assert!(Instant::now() < deadline);
        p.poll(Duration::from_millis(20), &mut out).unwrap();
    }
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, id(1));
    let gc: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(!pid_gone(gc));
    p.abandon(id(0));
    assert!(
        wait_gone(gc, Duration::from_secs(10)),
        "grandchild survived"
    );
    out.clear();
    p.poll(Duration::from_millis(300), &mut out).unwrap();
    assert!(out.is_empty(), "abandoned attempt was reported");
    // The slot is free again.
    p.submit(id(2), item(2, r#"{"s":"echo 2"}"#)).unwrap();
    while out.is_empty() {
        assert!(Instant::now() < deadline);
        p.poll(Duration::from_millis(20), &mut out).unwrap();
    }
    assert_eq!(out[0].0, id(2));
    assert!(matches!(out[0].1, AttemptOutcome::Success(_)));
    p.shutdown();
}

#[test]
fn command_ignoring_sigterm_is_killed_after_grace() {
    let t = Template::parse(&argv(&[
        "sh",
        "-c",
        "trap '' TERM; echo $$ >&2; while :; do sleep 1; done",
    ]))
    .unwrap();
    let mut cfg = ExecConfig::new(t);
    cfg.jobs = 1;
    cfg.kill_grace = Duration::from_millis(100);
    let pid = std::sync::Arc::new(std::sync::Mutex::new(None::<i32>));
    let sink_pid = pid.clone();
    cfg.stderr = Some(std::sync::Arc::new(move |_, line| {
        *sink_pid.lock().unwrap() = line.trim().parse().ok();
    }));
    let mut p = ExecPool::start(cfg).unwrap();
    p.submit(id(0), item(0, "{}")).unwrap();
    let deadline = Instant::now() + LIMIT;
    let pid = loop {
        if let Some(pid) = *pid.lock().unwrap() {
            break pid;
        }
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(5));
    };
    p.abandon(id(0));
    assert!(
        wait_gone(pid, Duration::from_secs(10)),
        "command survived SIGKILL"
    );
    let mut out = Vec::new();
    p.poll(Duration::from_millis(100), &mut out).unwrap();
    assert!(out.is_empty());
    p.shutdown();
}

#[test]
fn each_job_slot_sees_its_number_in_env_and_template() {
    let t = Template::parse(&argv(&[
        "sh",
        "-c",
        r#"printf '%s/%s' "$HERDSMAN_WORKER" {%}"#,
    ]))
    .unwrap();
    let mut cfg = ExecConfig::new(t);
    cfg.jobs = 3;
    cfg.output = ExecOutputMode::Text;
    // A value configured by the caller does not hide the slot's own.
    cfg.env = vec![("HERDSMAN_WORKER".into(), "caller".into())];
    let mut p = ExecPool::start(cfg).unwrap();
    let items = (0..30).map(|i| item(i, "{}")).collect();
    let r = run_all(&mut p, items, LIMIT).unwrap();
    for o in r.values() {
        let got: serde_json::Value = serde_json::from_str(&text(success(o))[0]).unwrap();
        let got = got["stdout"].as_str().unwrap();
        assert!(["1/1", "2/2", "3/3"].contains(&got), "{got}");
    }
}

#[test]
fn no_retry_exit_codes_are_not_retryable() {
    let t = Template::parse(&argv(&["sh", "-c", "exit {code}"])).unwrap();
    let mut cfg = ExecConfig::new(t);
    cfg.jobs = 2;
    cfg.no_retry_exit = vec![22];
    let mut p = ExecPool::start(cfg).unwrap();
    let r = run_all(
        &mut p,
        vec![item(0, r#"{"code":22}"#), item(1, r#"{"code":7}"#)],
        LIMIT,
    )
    .unwrap();
    let final_failure = failure(&r[&0]);
    assert!(!final_failure.retryable);
    assert_eq!(
        final_failure.message,
        "command `sh` exited with status 22 (not retried: its exit status is listed as final)"
    );
    assert!(failure(&r[&1]).retryable);
}

#[test]
fn record_mode_carries_the_input() {
    let t = Template::parse(&argv(&["echo", "{}"])).unwrap();
    let mut cfg = ExecConfig::new(t);
    cfg.output = ExecOutputMode::Record;
    let mut p = ExecPool::start(cfg).unwrap();
    let r = run_all(
        &mut p,
        vec![item(0, r#""a line""#), item(1, r#"{"z":1,"a":2}"#)],
        LIMIT,
    )
    .unwrap();
    assert_eq!(
        text(success(&r[&0])),
        vec![r#"{"input":"a line","stdout":"a line","exit":0}"#]
    );
    assert_eq!(
        text(success(&r[&1])),
        vec![r#"{"input":{"z":1,"a":2},"stdout":"{\"z\":1,\"a\":2}","exit":0}"#]
    );
}
