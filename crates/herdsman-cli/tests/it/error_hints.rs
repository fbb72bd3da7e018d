//! The libraries' messages say what to do in library terms; the command names its flag for
//! it (`crates/herdsman-cli/src/fault.rs`). Each test drives the real binary into one such
//! message and checks that the flag is there, once.

use crate::common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn run(s: &Scratch, args: &[&str]) -> (Option<i32>, String) {
    let out = s
        .herdsman()
        .args(["run", "--progress", "none"])
        .args(args)
        .output()
        .unwrap();
    (out.status.code(), stderr(&out))
}

/// `herdsman run --progress none ARGS...` in the background, its stderr to `stderr.txt`.
fn spawn(s: &Scratch, args: &[&str], env: &[(&str, &str)]) -> Child {
    let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("herdsman"));
    cmd.args(["run", "--progress", "none"])
        .args(args)
        .current_dir(s.dir.path())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(s.path("stderr.txt")).unwrap());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().expect("spawn herdsman")
}

fn stderr_file(s: &Scratch) -> String {
    std::fs::read_to_string(s.path("stderr.txt")).unwrap_or_default()
}

/// Waits up to a minute for `cond`.
fn wait_for(mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}

/// The `error.message` of each dead-letter entry in `out.failures.jsonl`.
fn dead_messages(s: &Scratch) -> Vec<String> {
    json_lines(&s.read("out.failures.jsonl"))
        .iter()
        .map(|v| v["error"]["message"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_worker_or_command_that_cannot_start_names_its_flag() {
    let s = Scratch::new();
    s.write("in.csv", "id\n1\n");
    let missing = "herdsman-no-such-program-xyz";
    let (code, err) = run(&s, &["-i", "in.csv", "-w", missing, "-o", "out.jsonl"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("check the worker command (--worker)"), "{err}");
    let template = format!("{missing} {{id}}");
    let (code, err) = run(&s, &["-i", "in.csv", "-x", &template, "-o", "out.jsonl"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("check the command (--exec)"), "{err}");
}

#[test]
fn a_command_over_its_timeout_names_the_flag_in_its_dead_letter() {
    let s = Scratch::new();
    s.write("in.csv", "id\n1\n");
    let (code, err) = run(
        &s,
        &[
            "-i",
            "in.csv",
            "-x",
            "sleep 30",
            "-o",
            "out.jsonl",
            "--timeout",
            "300ms",
        ],
    );
    assert_eq!(code, Some(1), "{err}");
    let messages = dead_messages(&s);
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert!(
        messages[0].contains("did not finish within 300ms (--timeout)"),
        "{messages:?}"
    );
    assert_eq!(messages[0].matches("--timeout").count(), 1, "{messages:?}");
}

#[test]
fn a_csv_header_over_the_record_size_limit_names_the_flag() {
    let s = Scratch::new();
    s.write("in.csv", format!("{}\n1\n", "h".repeat(3000)));
    let (code, err) = run(
        &s,
        &[
            "-i",
            "in.csv",
            "-w",
            "cat",
            "-o",
            "out.jsonl",
            "--max-record-size",
            "2KiB",
        ],
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains(
            "longer than the record size limit (2 KiB); raise the limit with --max-record-size"
        ),
        "{err}"
    );
}

#[test]
fn a_record_the_csv_output_cannot_hold_names_the_columns_flag() {
    let s = Scratch::new();
    s.write("in.jsonl", "{\"a\":1}\n{\"a\":2,\"b\":3}\n");
    let (code, err) = run(&s, &["-i", "in.jsonl", "-w", "cat", "-o", "out.csv"]);
    assert_eq!(code, Some(1), "{err}");
    let dead = json_lines(&s.read("out.failures.jsonl"));
    assert_eq!(dead.len(), 1, "{dead:?}");
    let message = dead[0]["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("is not a column of the CSV header")
            && message.contains("choose the columns with --columns"),
        "{message}"
    );
}

#[test]
fn a_record_with_no_answer_for_long_suggests_the_timeout_flag() {
    let s = Scratch::new();
    s.write("in.jsonl", "{\"id\":1}\n");
    // The worker answers only once the test has seen the notice.
    let worker = "sh -c 'while [ ! -e go ]; do sleep 0.02; done; exec cat'";
    let mut child = spawn(
        &s,
        &["-i", "in.jsonl", "-w", worker, "-o", "out.jsonl"],
        &[("HERDSMAN_NO_ANSWER_NOTICE_MS", "200")],
    );
    // Waits for the whole line (or, if its words are wrong, for a minute).
    let noticed = wait_for(|| stderr_file(&s).contains("records that hang"));
    let noticed_text = stderr_file(&s);
    s.write("go", "");
    let status = child.wait().unwrap();
    assert!(noticed, "no notice: {noticed_text}");
    assert!(
        noticed_text.contains("still waiting; set --timeout to give up on records that hang"),
        "{noticed_text}"
    );
    assert_eq!(status.code(), Some(0), "{}", s.read("stderr.txt"));
}

#[test]
fn a_state_directory_held_by_another_run_names_the_state_flag() {
    let s = Scratch::new();
    s.write("in.jsonl", "{\"id\":1}\n");
    // The first run holds the state directory until the test lets its worker answer.
    let worker = "sh -c 'touch started; while [ ! -e go ]; do sleep 0.02; done; exec cat'";
    let mut first = spawn(
        &s,
        &[
            "-i", "in.jsonl", "-w", worker, "-o", "a.jsonl", "--state", "st",
        ],
        &[],
    );
    let started = wait_for(|| s.path("started").exists());
    let (code, err) = run(
        &s,
        &[
            "-i", "in.jsonl", "-w", "cat", "-o", "b.jsonl", "--state", "st",
        ],
    );
    s.write("go", "");
    let status = first.wait().unwrap();
    assert!(started, "the first run never started its worker");
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("another herdsman run holds")
            && err.contains("use a different state directory (--state)"),
        "{err}"
    );
    assert_eq!(status.code(), Some(0), "{}", s.read("stderr.txt"));
}
