//! Inputs read exactly, through the real binary: an input changed under a run, CSV headers
//! that are not UTF-8, and the record size limit.

use crate::common;

use common::*;
use serde_json::Value;

/// 600 lines of 1,000 bytes: larger than the 256 KiB the reader buffers, so with a window of
/// one record the reader is far from the end when the worker sees the first record.
fn long_lines() -> String {
    (0..600)
        .map(|i| format!("{i:05}{}\n", "x".repeat(994)))
        .collect()
}

#[test]
fn an_input_changed_during_the_run_stops_it_with_an_error_naming_the_file() {
    for mode in ["append", "truncate"] {
        let s = Scratch::new();
        let input = s.write("in.txt", long_lines());
        let worker = py_worker("change_input.py", &[mode, &input.display().to_string()]);
        let run = |s: &Scratch| {
            s.herdsman()
                .args(["run", "-i", "in.txt", "-w", &worker, "-o", "out.jsonl"])
                .args(["-j", "1", "--window", "1", "--chunk-size", "1"])
                .args(["--progress", "none", "--summary-json", "s.json"])
                .output()
                .unwrap()
        };
        let out = run(&s);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(4), "{mode}: {err}");
        assert!(
            err.contains("in.txt") && err.contains("changed while it was read"),
            "{mode}: {err}"
        );
        assert!(!err.contains("checkpointed:"), "{mode}: {err}");
        assert!(
            !s.path("out.jsonl").exists(),
            "{mode}: an output was published from a changed input"
        );
        assert!(!s.path("s.json").exists(), "{mode}: a summary was written");
        // Running again does not quietly resume over the changed file.
        let again = run(&s);
        assert_eq!(again.status.code(), Some(2), "{mode}: {}", stderr(&again));
        assert!(stderr(&again).contains("--restart"), "{}", stderr(&again));
    }
}

#[test]
fn a_csv_header_that_is_not_utf8_is_a_usage_error_before_any_work() {
    let s = Scratch::new();
    s.write("a.csv", "id,name\n1,x\n");
    s.write("b.csv", b"id,caf\xe9\n2,y\n");
    let marker = s.path("ran");
    let worker = format!("sh -c 'touch {}; cat'", marker.display());
    let out = s
        .herdsman()
        .args([
            "run",
            "-i",
            "a.csv",
            "b.csv",
            "-w",
            &worker,
            "-o",
            "out.jsonl",
        ])
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("b.csv") && err.contains("not valid UTF-8"),
        "{err}"
    );
    assert_eq!(err.matches("error").count(), 1, "one error: {err}");
    assert!(!marker.exists(), "a worker started");
    for left in [
        "out.jsonl",
        "out.jsonl.partial",
        "out.failures.jsonl.partial",
        ".out.jsonl.herdsman",
    ] {
        assert!(!s.path(left).exists(), "{left} was created");
    }
}

#[test]
fn csv_header_names_reach_the_output_unchanged() {
    let s = Scratch::new();
    // Names that appear once keep their bytes; the repeated `x` takes a suffix no other
    // name uses.
    let header = " id ,caf\u{e9} \u{1F600},\"a,b\",x,x,x.1";
    s.write("in.csv", format!("{header}\n1,2,3,4,5,6\n"));
    s.herdsman()
        .args(["run", "-i", "in.csv", "-w", "cat", "-o", "out.csv"])
        .args(["--progress", "none"])
        .assert()
        .success();
    let got = s.read("out.csv");
    assert_eq!(
        got,
        format!("\" id \",caf\u{e9} \u{1F600},\"a,b\",x,x.2,x.1\n1,2,3,4,5,6\n")
    );
}

#[test]
fn max_record_size_sets_the_limit_and_the_message_names_it() {
    let s = Scratch::new();
    let long = "y".repeat(3000);
    s.write("in.csv", format!("id,v\n1,a\n2,{long}\n3,c\n"));
    let out = s
        .job("cat", &["--max-record-size", "2KiB", "--progress", "none"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let dead = json_lines(&s.read("out.failures.jsonl"));
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0]["source"]["line"], Value::from(3));
    let msg = dead[0]["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("2 KiB") && msg.contains("--max-record-size"),
        "{msg}"
    );
    s.accounting();

    // The limit is part of the job: a different one does not resume this checkpoint.
    let out = s
        .job("cat", &["--max-record-size", "4KiB", "--progress", "none"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("max_record_size"), "{}", stderr(&out));
    // ... and with --restart, the long row goes through.
    s.job(
        "cat",
        &[
            "--max-record-size",
            "4KiB",
            "--restart",
            "--progress",
            "none",
        ],
    )
    .assert()
    .success();
    assert_eq!(json_lines(&s.read("out.jsonl")).len(), 3);

    // A record above the 16 MiB default passes with a larger limit, from a job file too.
    let s = Scratch::new();
    let big = "z".repeat(17 << 20);
    s.write("in.txt", format!("small\n{big}\nsmall\n"));
    s.write("job.toml", "max-record-size = \"32MiB\"\n");
    s.herdsman()
        .args([
            "run",
            "job.toml",
            "-i",
            "in.txt",
            "-w",
            "cat",
            "-o",
            "out.jsonl",
        ])
        .args(["--progress", "none"])
        .assert()
        .success();
    let outputs = json_lines(&s.read("out.jsonl"));
    assert_eq!(outputs.len(), 3);
    assert_eq!(outputs[1].as_str().map(str::len), Some(17 << 20));

    for bad in ["0", "lots", "16 MiBs", "2TiB"] {
        let out = s
            .herdsman()
            .args(["run", "-i", "in.txt", "-w", "cat", "--max-record-size", bad])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{bad}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("--max-record-size"),
            "{}",
            stderr(&out)
        );
    }
}
