//! Standard input and output as the defaults: no `-i` reads stdin (its format sniffed from
//! the first bytes), no `-o` writes stdout, lines input printed to stdout is printed as text,
//! and results reach stdout as they complete, in input order, not when the run ends.

use crate::common;

use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use common::*;
use predicates::prelude::*;

#[test]
fn seq_piped_into_cat_prints_the_lines_like_cat() {
    let s = Scratch::new();
    s.herdsman()
        .args(["run", "-w", "cat", "--progress", "none"])
        .write_stdin("1\n2\n3\n")
        .assert()
        .success()
        .stdout("1\n2\n3\n");
    // A clean streamed run leaves no file behind.
    assert_eq!(std::fs::read_dir(s.dir.path()).unwrap().count(), 0);
}

#[test]
fn json_lines_on_stdin_are_sniffed_as_jsonl_and_written_as_jsonl() {
    let s = Scratch::new();
    s.herdsman()
        .args(["run", "-w", "cat", "-j", "2", "--progress", "none"])
        .write_stdin("\n{\"id\": 1}\n{\"id\":2}\n[3]\n")
        .assert()
        .success()
        .stdout("{\"id\":1}\n{\"id\":2}\n[3]\n");
}

#[test]
fn stdin_named_with_a_dash_is_sniffed_too_and_csv_needs_format() {
    let s = Scratch::new();
    // Text that happens to contain commas is lines, not CSV, unless asked.
    s.herdsman()
        .args(["run", "-i", "-", "-w", "cat", "--progress", "none"])
        .write_stdin("id,value\n1,2\n")
        .assert()
        .success()
        .stdout("id,value\n1,2\n");
    s.herdsman()
        .args(["run", "--format", "csv", "-w", "cat", "--progress", "none"])
        .write_stdin("id,value\n1,2\n")
        .assert()
        .success()
        .stdout("{\"id\":\"1\",\"value\":\"2\"}\n");
}

#[test]
fn lines_input_keeps_jsonl_output_when_asked() {
    let s = Scratch::new();
    s.herdsman()
        .args(["run", "-w", "cat", "--output-format", "jsonl"])
        .args(["--progress", "none"])
        .write_stdin("a b\n\"q\"\n")
        .assert()
        .success()
        .stdout("\"a b\"\n\"\\\"q\\\"\"\n");
    // A file output keeps its extension's format.
    s.herdsman()
        .args(["run", "-w", "cat", "-o", "out.jsonl", "--progress", "none"])
        .write_stdin("x\n")
        .assert()
        .success()
        .stdout("");
    assert_eq!(s.read("out.jsonl"), "\"x\"\n");
}

#[test]
fn output_format_lines_writes_strings_raw_and_other_values_as_compact_json() {
    let s = Scratch::new();
    s.write(
        "in.jsonl",
        "\"caf\\u00e9 \\\"au\\\" lait\"\n{\"a\": [1, 2]}\n42\nnull\n",
    );
    s.herdsman()
        .args(["run", "-i", "in.jsonl", "-w", "cat", "-o", "out.txt"])
        .args(["--summary-json", "s.json", "--progress", "none"])
        .assert()
        .success();
    assert_eq!(
        s.read("out.txt"),
        "café \"au\" lait\n{\"a\":[1,2]}\n42\nnull\n"
    );
    check_accounting(&s, "s.json", Some("out.txt"), "out.failures.jsonl");
    s.herdsman()
        .args([
            "run",
            "-i",
            "in.jsonl",
            "-w",
            "cat",
            "--output-format",
            "lines",
        ])
        .args(["--progress", "none"])
        .assert()
        .success()
        .stdout("café \"au\" lait\n{\"a\":[1,2]}\n42\nnull\n");
}

#[test]
fn a_failed_record_of_a_streamed_run_goes_to_the_default_dead_letter_file() {
    let s = Scratch::new();
    // The second line is not JSON although the first was: a dead letter, not a crash.
    s.herdsman()
        .args(["run", "-w", "cat", "--progress", "none"])
        .write_stdin("{\"id\":1}\nnot json\n{\"id\":3}\n")
        .assert()
        .code(1)
        .stdout("{\"id\":1}\n{\"id\":3}\n");
    let dead = json_lines(&s.read("herdsman.failures.jsonl"));
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0]["source"]["line"], serde_json::json!(2));
}

/// A lines worker that echoes each record, but holds record 2 until the file named by its
/// argument exists.
const HOLD_SECOND: &str = r#"while IFS= read -r line; do
  if [ "$line" = '"2"' ]; then
    while [ ! -e "$1" ]; do sleep 0.02; done
  fi
  printf '%s\n' "$line"
done
"#;

#[test]
fn results_reach_stdout_as_they_complete_not_when_the_run_ends() {
    let s = Scratch::new();
    s.write("hold.sh", HOLD_SECOND);
    let signal = s.path("release");
    let worker = format!("sh {} {}", s.path("hold.sh").display(), signal.display());
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("herdsman"))
        .current_dir(s.dir.path())
        .args(["run", "-w", &worker, "-j", "2", "--progress", "none"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start herdsman");
    child.stdin.take().unwrap().write_all(b"1\n2\n3\n").unwrap();
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line.expect("stdout is UTF-8")).is_err() {
                break;
            }
        }
    });
    // Record 1 must be printed while record 2 is still held by its worker.
    let first = rx.recv_timeout(Duration::from_secs(60));
    std::fs::write(&signal, "").unwrap();
    let status = child.wait().unwrap();
    reader.join().unwrap();
    let first = first.expect("line 1 did not reach stdout while record 2 was still running");
    assert_eq!(first, "1");
    let rest: Vec<String> = rx.try_iter().collect();
    assert_eq!(rest, ["2", "3"]);
    assert!(status.success(), "{status:?}");
}

#[test]
fn a_stopped_streamed_run_keeps_what_it_printed() {
    let s = Scratch::new();
    // Record 2 fails for good and --max-errors 1 stops the run: record 1 stays printed.
    s.write("fail2.sh", "while IFS= read -r l; do if [ \"$l\" = '\"2\"' ]; then echo boom; else printf '%s\\n' \"$l\"; fi; done\n");
    let worker = format!("sh {}", s.path("fail2.sh").display());
    s.herdsman()
        .args(["run", "-w", &worker, "-j", "1", "--max-errors", "1"])
        .args(["--progress", "none"])
        .write_stdin("1\n2\n")
        .assert()
        .code(3)
        .stdout(predicate::str::starts_with("1\n"));
}
