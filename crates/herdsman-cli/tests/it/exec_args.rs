//! `-x/--exec` takes exactly one template and never swallows herdsman's own flags; a command
//! of several words goes after `--`; words that used to be swallowed are refused (exit 2)
//! with the right forms in the message.

use crate::common;

use common::*;
use predicates::prelude::*;
use serde_json::json;

#[test]
fn flags_after_a_quoted_template_are_herdsmans() {
    let s = Scratch::new();
    s.write("in.csv", "v\na\nb\n");
    s.herdsman()
        .args(["run", "-i", "in.csv", "-x", "echo {v}", "-o", "out.jsonl"])
        .args(["--summary-json", "s.json", "--progress", "none"])
        .assert()
        .success()
        .stdout("");
    let out = json_lines(&s.read("out.jsonl"));
    assert_eq!(out.len(), 2, "{out:?}");
    assert!(out[0].to_string().contains('a'), "{out:?}");
    assert!(out[1].to_string().contains('b'), "{out:?}");
    s.accounting();
}

#[test]
fn a_command_after_double_dash_is_taken_word_for_word() {
    let s = Scratch::new();
    s.write("in.csv", "id,name\n1,two words\n");
    s.herdsman()
        .args([
            "run",
            "-i",
            "in.csv",
            "-o",
            "out.jsonl",
            "--summary-json",
            "s.json",
        ])
        .args(["--progress", "none", "--"])
        .args(["printf", "%s|%s", "{#}", "{name}"])
        .assert()
        .success();
    assert_eq!(
        json_lines(&s.read("out.jsonl")),
        [json!({"stdout": "1|two words"})]
    );
    s.accounting();
}

#[test]
fn words_after_the_template_that_clap_cannot_place_are_refused_with_the_right_forms() {
    let s = Scratch::new();
    s.write("in.csv", "id\n1\n");
    s.herdsman()
        .args([
            "run",
            "-i",
            "in.csv",
            "-x",
            "echo",
            "-n",
            "{id}",
            "-o",
            "out.jsonl",
        ])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("-x 'echo -n {id}'"))
        .stderr(predicate::str::contains("-- echo -n {id}"));
    assert!(!s.path("out.jsonl").exists());
}

#[test]
fn a_word_after_the_template_taken_for_the_job_file_is_refused_with_the_right_forms() {
    let s = Scratch::new();
    s.write("in.csv", "id\n1\n");
    s.herdsman()
        .args([
            "run",
            "-i",
            "in.csv",
            "-o",
            "out.jsonl",
            "-x",
            "echo",
            "{id}",
        ])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("-x 'echo {id}'"))
        .stderr(predicate::str::contains("-- echo {id}"));
    assert!(!s.path("out.jsonl").exists());
}

#[test]
fn a_job_file_after_the_template_is_still_a_job_file() {
    let s = Scratch::new();
    s.write("in.csv", "id\n7\n");
    s.write("job.toml", "input = 'in.csv'\noutput = 'out.jsonl'\n");
    s.herdsman()
        .args(["run", "-x", "echo {id}", "job.toml", "--progress", "none"])
        .assert()
        .success();
    assert_eq!(s.read("out.jsonl"), "7\n");
}

#[test]
fn a_worker_and_a_command_after_double_dash_are_exclusive() {
    let s = Scratch::new();
    s.write("in.csv", "id\n1\n");
    s.herdsman()
        .args(["run", "-i", "in.csv", "-w", "cat", "--", "echo", "{id}"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--worker"));
    s.herdsman()
        .args([
            "run",
            "-i",
            "in.csv",
            "-x",
            "echo {id}",
            "--",
            "echo",
            "{id}",
        ])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--exec"));
}
