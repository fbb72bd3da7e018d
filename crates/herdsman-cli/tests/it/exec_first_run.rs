//! What a GNU parallel or xargs user types first with `--exec`: raw lines in `{}`, the
//! record's JSON in `{:json}`, silent commands that succeed, output modes, exit codes that
//! are not worth a retry, and the worker's slot number (`{%}`, `HERDSMAN_WORKER`).
//!
//! Every command template is given as one quoted string after all other flags, the form
//! that is split like a shell would split it.

use crate::common;

use std::collections::BTreeSet;

use common::*;
use predicates::prelude::*;
use serde_json::{json, Value};

/// Runs `herdsman run FLAGS... -x TEMPLATE` in `s` with `stdin`, progress off and a summary
/// in `sum.json`.
fn exec_run(
    s: &Scratch,
    flags: &[&str],
    template: &str,
    stdin: Option<&str>,
) -> assert_cmd::assert::Assert {
    let mut cmd = s.herdsman();
    cmd.args(["run", "--progress", "none", "--summary-json", "sum.json"])
        .args(flags)
        .args(["-x", template]);
    if let Some(input) = stdin {
        cmd.write_stdin(input.to_string());
    }
    cmd.assert()
}

fn total(s: &Scratch, key: &str) -> u64 {
    let sum: Value = serde_json::from_str(&s.read("sum.json")).expect("summary JSON");
    sum["total"][key]
        .as_u64()
        .unwrap_or_else(|| panic!("summary lacks {key}: {sum}"))
}

#[test]
fn braces_on_lines_input_are_the_raw_line() {
    let s = Scratch::new();
    let out = exec_run(
        &s,
        &["-i", "-", "--format", "lines", "--exec-output", "text"],
        "printf %s {}",
        Some("1\nhello world\nit's \"quoted\"\n"),
    )
    .success()
    .get_output()
    .stdout
    .clone();
    assert_eq!(
        json_lines(&String::from_utf8(out).unwrap()),
        vec![
            json!({"stdout": "1"}),
            json!({"stdout": "hello world"}),
            json!({"stdout": "it's \"quoted\""}),
        ]
    );
}

#[test]
fn seq_through_echo_prints_the_numbers() {
    let s = Scratch::new();
    let out = exec_run(
        &s,
        &["-i", "-", "--format", "lines", "-j", "2"],
        "echo {}",
        Some("1\n2\n3\n"),
    )
    .success()
    .get_output()
    .stdout
    .clone();
    assert_eq!(String::from_utf8(out).unwrap(), "1\n2\n3\n");
}

#[test]
fn colon_json_is_the_record_as_json_on_every_format() {
    let s = Scratch::new();
    // Lines: the line as a JSON string.
    let out = exec_run(
        &s,
        &["-i", "-", "--format", "lines", "--output-format", "jsonl"],
        "printf %s {:json}",
        Some("a b\n"),
    )
    .success()
    .get_output()
    .stdout
    .clone();
    assert_eq!(
        json_lines(&String::from_utf8(out).unwrap()),
        vec![json!("a b")]
    );
    // CSV: the row as an object, for `{}` and `{:json}` alike.
    s.write("in.csv", "id,name\n1,ann\n");
    for template in ["printf %s {:json}", "printf %s {}"] {
        exec_run(&s, &["-i", "in.csv", "-o", "out.jsonl"], template, None).success();
        assert_eq!(
            json_lines(&s.read("out.jsonl")),
            vec![json!({"id": "1", "name": "ann"})],
            "{template}"
        );
        std::fs::remove_dir_all(s.path(".out.jsonl.herdsman")).unwrap();
    }
}

#[test]
fn unknown_colon_placeholder_is_a_usage_error() {
    let s = Scratch::new();
    s.write("in.csv", "id\n1\n");
    exec_run(&s, &["-i", "in.csv"], "echo {:yaml}", None)
        .code(2)
        .stderr(predicate::str::contains("{:yaml}").and(predicate::str::contains("{:json}")));
}

#[test]
fn a_command_that_prints_nothing_succeeds() {
    let s = Scratch::new();
    s.write("in.csv", id_csv(5));
    exec_run(&s, &["-i", "in.csv", "-o", "out.jsonl"], "true {id}", None)
        .success()
        .stderr(predicate::str::contains(
            "5 = 5 succeeded + 0 failed + 0 filtered",
        ));
    assert_eq!(s.read("out.jsonl"), "");
    assert_eq!(total(&s, "succeeded"), 5);
    assert_eq!(total(&s, "filtered"), 0);
    assert_eq!(total(&s, "outputs"), 0);
    check_accounting(&s, "sum.json", Some("out.jsonl"), "out.failures.jsonl");
}

#[test]
fn record_output_carries_the_input_stdout_and_exit_status() {
    let s = Scratch::new();
    s.write("in.csv", "id,name\n1,ann\n2,bob\n");
    exec_run(
        &s,
        &["-i", "in.csv", "-o", "out.jsonl", "--exec-output", "record"],
        "sh -c 'test {id} = 1 && echo hi {name}; true'",
        None,
    )
    .success();
    assert_eq!(
        json_lines(&s.read("out.jsonl")),
        vec![
            json!({"input": {"id": "1", "name": "ann"}, "stdout": "hi ann", "exit": 0}),
            json!({"input": {"id": "2", "name": "bob"}, "stdout": "", "exit": 0}),
        ]
    );
    assert_eq!(total(&s, "succeeded"), 2);
    check_accounting(&s, "sum.json", Some("out.jsonl"), "out.failures.jsonl");
}

#[test]
fn text_output_mode_is_a_flag() {
    let s = Scratch::new();
    s.write("in.csv", "id\n7\n");
    let template = r#"printf '{{"n":%s}}' {id}"#;
    exec_run(&s, &["-i", "in.csv", "-o", "auto.jsonl"], template, None).success();
    assert_eq!(json_lines(&s.read("auto.jsonl")), vec![json!({"n": 7})]);
    exec_run(
        &s,
        &["-i", "in.csv", "-o", "text.jsonl", "--exec-output", "text"],
        template,
        None,
    )
    .success();
    assert_eq!(
        json_lines(&s.read("text.jsonl")),
        vec![json!({"stdout": "{\"n\":7}"})]
    );
}

#[test]
fn no_retry_exit_codes_fail_for_good() {
    let s = Scratch::new();
    s.write("in.csv", "id,code\n1,22\n2,5\n3,0\n");
    exec_run(
        &s,
        &[
            "-i",
            "in.csv",
            "-o",
            "out.jsonl",
            "--retries",
            "3",
            "--backoff",
            "1ms",
            "--no-retry-exit",
            "22,6",
        ],
        "sh -c 'echo {id} >> tries.txt; exit {code}'",
        None,
    )
    .code(1);
    let mut tries: Vec<String> = lines(&s.read("tries.txt"))
        .into_iter()
        .map(String::from)
        .collect();
    tries.sort();
    // Record 1 (exit 22) ran once, record 2 (exit 5) once and 3 retries, record 3 once.
    assert_eq!(tries, ["1", "2", "2", "2", "2", "3"]);
    let dead = json_lines(&s.read("out.failures.jsonl"));
    assert_eq!(dead.len(), 2);
    assert_eq!(dead[0]["record"]["id"], json!("1"));
    assert_eq!(dead[0]["attempts"], json!(1));
    let message = dead[0]["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("exited with status 22") && message.contains("--no-retry-exit"),
        "{message}"
    );
    assert_eq!(dead[1]["record"]["id"], json!("2"));
    assert_eq!(dead[1]["attempts"], json!(4));
    check_accounting(&s, "sum.json", Some("out.jsonl"), "out.failures.jsonl");
}

#[test]
fn exec_only_flags_are_refused_with_a_worker_and_bad_codes_are_usage_errors() {
    let s = Scratch::new();
    s.write("in.csv", "id\n1\n");
    for flags in [
        &["--no-retry-exit", "22"][..],
        &["--exec-output", "record"][..],
    ] {
        s.herdsman()
            .args(["run", "-i", "in.csv", "--progress", "none"])
            .args(flags)
            .args(["-w", "cat"])
            .assert()
            .code(2)
            .stderr(predicate::str::contains("--exec"));
    }
    for codes in ["0", "256", "x"] {
        exec_run(
            &s,
            &["-i", "in.csv", "--no-retry-exit", codes],
            "true",
            None,
        )
        .code(2);
    }
}

#[test]
fn exec_slots_know_their_number() {
    let s = Scratch::new();
    s.write("in.csv", id_csv(40));
    exec_run(
        &s,
        &["-i", "in.csv", "-o", "out.jsonl", "-j", "3"],
        r#"sh -c 'printf "%s %s" "$HERDSMAN_WORKER" {%}'"#,
        None,
    )
    .success();
    let mut seen = BTreeSet::new();
    for rec in json_lines(&s.read("out.jsonl")) {
        let text = rec["stdout"].as_str().unwrap().to_string();
        let (env, placeholder) = text.split_once(' ').unwrap();
        assert_eq!(env, placeholder, "HERDSMAN_WORKER and {{%}} differ");
        seen.insert(env.to_string());
    }
    assert!(!seen.is_empty());
    assert!(
        seen.iter().all(|w| ["1", "2", "3"].contains(&w.as_str())),
        "{seen:?}"
    );
    // One job slot: always slot 1.
    exec_run(
        &s,
        &["-i", "in.csv", "-o", "one.jsonl", "-j", "1"],
        r#"sh -c 'printf "%s %s" "$HERDSMAN_WORKER" {%}'"#,
        None,
    )
    .success();
    for rec in json_lines(&s.read("one.jsonl")) {
        assert_eq!(rec["stdout"], json!("1 1"));
    }
}

#[test]
fn pool_workers_know_their_number() {
    let s = Scratch::new();
    s.write("in.csv", id_csv(60));
    s.write(
        "worker.sh",
        "echo \"started as $HERDSMAN_WORKER\" >&2\n\
         while IFS= read -r line; do printf '{\"w\":\"%s\"}\\n' \"$HERDSMAN_WORKER\"; done\n",
    );
    for (jobs, allowed) in [("1", &["1"][..]), ("3", &["1", "2", "3"][..])] {
        let out = format!("out{jobs}.jsonl");
        let assert = s
            .herdsman()
            .args(["run", "-i", "in.csv", "--progress", "none", "-o", &out])
            .args(["-j", jobs, "-w", "sh worker.sh"])
            .assert()
            .success();
        let outs = json_lines(&s.read(&out));
        assert_eq!(outs.len(), 60);
        for rec in outs {
            let w = rec["w"].as_str().unwrap();
            assert!(allowed.contains(&w), "HERDSMAN_WORKER={w:?} with -j {jobs}");
        }
        // Stderr lines carry the same number.
        let stderr = String::from_utf8_lossy(&assert.get_output().stderr).to_string();
        assert!(
            stderr.contains("[worker 1] started as 1"),
            "stderr: {stderr}"
        );
    }
}

#[test]
fn job_file_sets_exec_output_and_no_retry_exit() {
    let s = Scratch::new();
    s.write("in.csv", "id,code\n1,22\n2,0\n");
    s.write(
        "job.toml",
        "input = 'in.csv'\noutput = 'out.jsonl'\nexec = \"sh -c 'echo {id}; exit {code}'\"\n\
         exec_output = 'record'\nno-retry-exit = [22]\nretries = 5\nbackoff = '1ms'\n",
    );
    s.herdsman()
        .args(["run", "job.toml", "--progress", "none"])
        .assert()
        .code(1);
    assert_eq!(
        json_lines(&s.read("out.jsonl")),
        vec![json!({"input": {"id": "2", "code": "0"}, "stdout": "2", "exit": 0})]
    );
    let dead = json_lines(&s.read("out.failures.jsonl"));
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0]["attempts"], json!(1));
}

#[test]
fn a_silent_command_succeeds_with_csv_output_and_on_retry_failed() {
    let s = Scratch::new();
    s.write("in.csv", id_csv(4));
    // CSV output: nothing to write is not a record the CSV output refuses.
    exec_run(&s, &["-i", "in.csv", "-o", "out.csv"], "true {id}", None).success();
    assert_eq!(total(&s, "succeeded"), 4);
    assert_eq!(s.read("out.csv"), "");
    // --retry-failed: records that failed now succeed silently.
    let template = "sh -c 'test -e ok || test {id} = 0'";
    exec_run(&s, &["-i", "in.csv", "-o", "out.jsonl"], template, None).code(1);
    assert_eq!(lines(&s.read("out.failures.jsonl")).len(), 3);
    s.write("ok", "");
    exec_run(
        &s,
        &["-i", "in.csv", "-o", "out.jsonl", "--retry-failed"],
        template,
        None,
    )
    .success()
    .stderr(predicate::str::contains("3 now succeed"));
    assert_eq!(s.read("out.jsonl"), "");
    assert_eq!(total(&s, "succeeded"), 4);
    assert_eq!(total(&s, "filtered"), 0);
}
