//! Dead-letter files: the same job writes the same bytes however its records were spread
//! over workers; `--retry-failed` keeps `herdsman status` current and refuses a damaged
//! dead-letter file; `--exec` output that is not UTF-8 and `--shell` values through the
//! real binary.

use crate::common;

use std::path::Path;

use common::*;
use predicates::prelude::*;
use serde_json::{json, Value};

/// Every place a message names a worker by number (`worker 3`).
fn worker_numbers(text: &str) -> Vec<String> {
    text.match_indices("worker ")
        .filter_map(|(i, m)| {
            let rest = &text[i + m.len()..];
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            (!digits.is_empty()).then(|| format!("worker {digits}"))
        })
        .collect()
}

#[test]
fn dead_letters_are_byte_identical_whatever_worker_ran_the_record() {
    // Records 7 and 8 make their worker exit, record 13 makes it hang until the timeout
    // kills it (a timeout generous enough for a worker's start on a loaded machine). Each
    // run spreads the records over another number of workers.
    let worker = py_worker("exit_or_hang.py", &["7,8", "13"]);
    let mut files = Vec::new();
    for jobs in ["1", "3"] {
        let s = Scratch::new();
        s.write("in.csv", id_csv(30));
        let out = s
            .job(&worker, &["-j", jobs, "--timeout", "12s", "--retries", "0"])
            .args(["--chunk-size", "4"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "-j {jobs}: {}", stderr(&out));
        s.accounting();
        let dead = s.read("out.failures.jsonl");
        let entries = json_lines(&dead);
        let kinds: Vec<(&str, &str)> = entries
            .iter()
            .map(|e| {
                (
                    e["record"]["id"].as_str().unwrap(),
                    e["error"]["kind"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            kinds,
            vec![
                ("7", "worker_exited"),
                ("8", "worker_exited"),
                ("13", "timeout")
            ],
            "-j {jobs}: {dead}"
        );
        assert!(
            worker_numbers(&dead).is_empty(),
            "-j {jobs}: a dead-letter entry names a worker number: {dead}"
        );
        // The message still says what happened.
        assert!(
            entries[0]["error"]["message"]
                .as_str()
                .unwrap()
                .contains("exited with status 3 while processing this record"),
            "{dead}"
        );
        assert!(
            entries[2]["error"]["message"]
                .as_str()
                .unwrap()
                .contains("no answer within 12s (--timeout)"),
            "{dead}"
        );
        files.push((jobs, dead, s.read("out.jsonl")));
    }
    for (jobs, dead, output) in &files[1..] {
        assert_eq!(
            dead, &files[0].1,
            "the dead-letter file of -j {jobs} differs from that of -j 1"
        );
        assert_eq!(output, &files[0].2, "the output of -j {jobs} differs");
    }
}

fn flaky_job(s: &Scratch, marker: &Path, extra: &[&str]) -> assert_cmd::Command {
    let mut cmd = s.job(
        &py_worker("flaky.py", &[marker.to_str().unwrap()]),
        &["--protocol", "framed", "--chunk-size", "7"],
    );
    cmd.args(extra);
    cmd
}

fn status_json(s: &Scratch) -> Value {
    let out = s
        .herdsman()
        .args(["status", "out.jsonl", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn status_shows_the_records_a_retry_pass_recovered() {
    let s = Scratch::new();
    s.write("in.csv", id_csv(40));
    let marker = s.write("broken", "");
    flaky_job(&s, &marker, &[]).assert().code(1);
    let before = status_json(&s);
    assert_eq!(
        (&before["succeeded"], &before["failed"]),
        (&json!(32), &json!(8))
    );

    std::fs::remove_file(&marker).unwrap();
    flaky_job(&s, &marker, &["--retry-failed"])
        .assert()
        .success();
    let after = status_json(&s);
    assert_eq!(after["records"], json!(40), "{after}");
    assert_eq!(after["succeeded"], json!(40), "{after}");
    assert_eq!(after["failed"], json!(0), "{after}");
    assert_eq!(after["outputs"], json!(40), "{after}");
    s.herdsman()
        .args(["status", "out.jsonl"])
        .assert()
        .success()
        .stdout(predicate::str::contains("40 succeeded, 0 failed"))
        .stdout(predicate::str::contains("--retry-failed"));
    s.herdsman()
        .args(["failures", "out.jsonl"])
        .assert()
        .success()
        .stdout(predicate::str::contains("no failed records"));
}

#[test]
fn status_after_a_retry_pass_that_recovers_nothing() {
    let s = Scratch::new();
    s.write("in.csv", id_csv(40));
    let marker = s.write("broken", "");
    flaky_job(&s, &marker, &[]).assert().code(1);
    // Still broken: the counts stay, the job stays finished with failures.
    flaky_job(&s, &marker, &["--retry-failed"]).assert().code(1);
    let after = status_json(&s);
    assert_eq!(
        (&after["succeeded"], &after["failed"]),
        (&json!(32), &json!(8)),
        "{after}"
    );
    s.herdsman()
        .args(["status", "out.jsonl"])
        .assert()
        .success()
        .stdout(predicate::str::contains("32 succeeded, 8 failed"));
}

#[test]
fn a_damaged_dead_letter_line_stops_retry_failed_with_its_file_and_line() {
    let damaged: [(&str, &[u8]); 4] = [
        ("cut short", b"{\"record\":{\"id\":\"5\""),
        ("not an entry", b"[1,2,3]"),
        ("no record key", b"{\"error\":{\"kind\":\"reported\"}}"),
        ("not UTF-8", b"{\"record\":\"\xff\"}"),
    ];
    for (what, line) in damaged {
        let s = Scratch::new();
        s.write("in.csv", id_csv(40));
        let marker = s.write("broken", "");
        flaky_job(&s, &marker, &[]).assert().code(1);
        std::fs::remove_file(&marker).unwrap();
        let dead = std::fs::read(s.path("out.failures.jsonl")).unwrap();
        let mut lines: Vec<&[u8]> = dead.split(|&b| b == b'\n').collect();
        lines[2] = line;
        let corrupt = lines.join(&b'\n');
        std::fs::write(s.path("out.failures.jsonl"), &corrupt).unwrap();
        let output = s.read("out.jsonl");

        let out = flaky_job(&s, &marker, &["--retry-failed"])
            .output()
            .unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{what}: {err}");
        assert!(
            err.contains("out.failures.jsonl") && err.contains("line 3"),
            "{what}: the error should name the file and line: {err}"
        );
        assert!(err.contains("--retry-failed"), "{what}: {err}");
        // Nothing changed, and nothing was left behind.
        assert_eq!(s.read("out.jsonl"), output, "{what}");
        assert_eq!(
            std::fs::read(s.path("out.failures.jsonl")).unwrap(),
            corrupt,
            "{what}"
        );
        assert!(!s.path("out.jsonl.partial").exists(), "{what}");
        assert!(!s.path("out.failures.jsonl.partial").exists(), "{what}");
        let st = status_json(&s);
        assert_eq!(st["failed"], json!(8), "{what}: {st}");
    }
}

#[test]
fn exec_output_that_is_not_utf8_is_a_dead_letter() {
    let s = Scratch::new();
    // Each record is a printf format: `\377` and `\351` are bytes that are not UTF-8.
    let formats = ["\"\\377\"\\n", "{\"v\":\"ok\"}\\n", "caf\\351\\n"];
    let input: String = formats
        .iter()
        .map(|f| format!("{}\n", json!({ "f": f })))
        .collect();
    s.write("in.jsonl", input);
    let out = s
        .herdsman()
        .args(["run", "-i", "in.jsonl", "-o", "out.jsonl"])
        .args(["--summary-json", "s.json", "--"])
        .args(["sh", "-c", "printf \"$0\"", "{f}"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let output = std::fs::read(s.path("out.jsonl")).unwrap();
    let text = String::from_utf8(output).expect("the output is UTF-8");
    assert_eq!(text, "{\"v\":\"ok\"}\n");
    let dead = json_lines(&s.read("out.failures.jsonl"));
    assert_eq!(dead.len(), 2);
    for e in &dead {
        assert_eq!(e["error"]["kind"], json!("bad_output"), "{e}");
        assert!(
            e["error"]["message"]
                .as_str()
                .unwrap()
                .contains("not valid UTF-8"),
            "{e}"
        );
    }
    check_accounting(&s, "s.json", Some("out.jsonl"), "out.failures.jsonl");
}

#[test]
fn shell_values_never_run_through_the_binary() {
    let s = Scratch::new();
    let marker = s.path("pwned");
    let m = marker.display().to_string();
    let values = [
        format!("$(touch {m})"),
        format!("`touch {m}`"),
        format!("x\"; touch {m}; \""),
        format!("'; touch {m}; '"),
        format!("x\nEOF\ntouch {m}"),
        "$HOME \\ \"q\" 'q' | && ;".to_string(),
    ];
    let input: String = values
        .iter()
        .map(|v| format!("{}\n", json!({ "v": v })))
        .collect();
    s.write("in.jsonl", input);
    for template in [
        "printf '%s' {v}",
        "printf '%s' \"{v}\"",
        "printf '%s' '{v}'",
        "printf '%s' \"$(printf '%s' {v})\"",
        "cat <<EOF\n{v}\nEOF",
    ] {
        let out = s
            .herdsman()
            .args(["run", "-i", "in.jsonl", "-o", "out.jsonl", "--restart"])
            .args(["--shell", "--exec", template])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{template}: {}", stderr(&out));
        assert!(!marker.exists(), "{template}: a value ran as a command");
        let got: Vec<String> = json_lines(&s.read("out.jsonl"))
            .iter()
            .map(|r| r["stdout"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(got, values, "{template}");
    }
}

#[test]
fn shell_placeholders_that_cannot_be_safe_are_refused_before_running() {
    for (template, hint) in [
        ("cat <<'EOF'\n{v}\nEOF", "unquoted delimiter"),
        ("echo $(( {v} + 1 ))", "arithmetic"),
        ("echo ${v}", "${{v}}"),
    ] {
        let s = Scratch::new();
        s.write("in.jsonl", "{\"v\":1}\n");
        s.herdsman()
            .args(["run", "-i", "in.jsonl", "-o", "out.jsonl"])
            .args(["--shell", "--exec", template])
            .assert()
            .code(2)
            .stderr(predicate::str::contains(hint));
        // Refused before anything was created: no checkpoint, no partial files.
        let left: Vec<_> = std::fs::read_dir(s.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != "in.jsonl")
            .collect();
        assert!(left.is_empty(), "{template}: left behind {left:?}");
    }
}
