//! CSV output through the real binary: cells are quoted where a reader needs it, the output
//! uses the --delimiter of the input, reads back to the same records, and a run killed at
//! the commit protocol's crash points resumes to the same bytes with one header.

use crate::common;

use common::*;
use serde_json::{json, Value};

/// The text of each record (`id` 1 to 8): the delimiters, a quote, CR and LF, edge spaces,
/// an empty cell.
const TEXTS: [&str; 8] = [
    "a;b",
    "say \"hi\"",
    "line1\nline2",
    "cr\rx",
    " lead",
    "trail ",
    "",
    "a,b\tc",
];

/// The input: `id` and `text` (always quoted), separated by `delim`.
fn input(delim: char) -> String {
    let mut s = format!("id{delim}text\n");
    for (i, t) in TEXTS.iter().enumerate() {
        s.push_str(&format!("{}{delim}\"{}\"\n", i + 1, t.replace('"', "\"\"")));
    }
    s
}

/// What the output must hold, byte for byte, with `--columns id,text,missing`.
fn expected(delim: char) -> String {
    let mut s = format!("id{delim}text{delim}missing\n");
    for (i, t) in TEXTS.iter().enumerate() {
        let special = t.contains([delim, '"', '\n', '\r'])
            || t.starts_with([' ', '\t'])
            || t.ends_with([' ', '\t']);
        let cell = if special {
            format!("\"{}\"", t.replace('"', "\"\""))
        } else {
            t.to_string()
        };
        s.push_str(&format!("{}{delim}{cell}{delim}\n", i + 1));
    }
    s
}

fn run_cat(s: &Scratch, delim: char, input: &str, output: &str, extra: &[&str]) {
    run_with(s, "cat", delim, input, output, extra);
}

fn run_with(s: &Scratch, worker: &str, delim: char, input: &str, output: &str, extra: &[&str]) {
    let d = delim.to_string();
    let out = s
        .herdsman()
        .args(["run", "-i", input, "-w", worker, "-o", output])
        .args(["--delimiter", &d, "--progress", "none", "-q"])
        .args(extra)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn csv_output_quotes_what_needs_it_uses_the_delimiter_and_reads_back() {
    for delim in [',', ';', '\t'] {
        let s = Scratch::new();
        s.write("in.csv", input(delim));
        run_cat(
            &s,
            delim,
            "in.csv",
            "out.csv",
            &["--columns", "id,text,missing"],
        );
        assert_eq!(
            s.read("out.csv"),
            expected(delim),
            "delimiter {delim:?}: wrong CSV output"
        );
        // Read back with the same delimiter: the same records, the missing column empty.
        run_cat(&s, delim, "out.csv", "back.jsonl", &[]);
        let back = json_lines(&s.read("back.jsonl"));
        let want: Vec<Value> = TEXTS
            .iter()
            .enumerate()
            .map(|(i, t)| json!({"id": (i + 1).to_string(), "text": t, "missing": ""}))
            .collect();
        assert_eq!(
            back, want,
            "delimiter {delim:?}: records changed on the way back"
        );
    }
}

/// A longer input for the crash test: enough rows for many chunks and, with the delaying
/// worker, a run long enough to commit (once a second) before it ends.
fn long_input(delim: char) -> String {
    let mut s = format!("id{delim}text\n");
    for i in 0..1000 {
        let t = TEXTS[i % TEXTS.len()];
        s.push_str(&format!("{i}{delim}\"{}\"\n", t.replace('"', "\"\"")));
    }
    s
}

#[test]
fn a_killed_csv_run_with_a_custom_delimiter_resumes_to_identical_bytes() {
    for delim in [';', '\t'] {
        let clean = Scratch::new();
        clean.write("in.csv", long_input(delim));
        let worker = py_worker("delay.py", &[]);
        let args = ["--chunk-size", "7", "-j", "2"];
        run_with(&clean, &worker, delim, "in.csv", "out.csv", &args);
        let want = clean.read("out.csv");
        assert_eq!(
            want.lines().next(),
            Some(format!("id{delim}text{delim}seen").as_str())
        );
        assert_eq!(want.lines().filter(|l| l.starts_with("id")).count(), 1);

        for fault in ["after-sync", "after-commit", "before-rename"] {
            let s = Scratch::new();
            s.write("in.csv", long_input(delim));
            let d = delim.to_string();
            // Killed (SIGKILL, by itself) at the crash point, then twice more further on.
            let mut kills = 0;
            for _ in 0..3 {
                let out = s
                    .herdsman()
                    .args(["run", "-i", "in.csv", "-w", &worker, "-o", "out.csv"])
                    .args(["--delimiter", &d, "--progress", "none", "-q"])
                    .args(args)
                    .env("HERDSMAN_FAULT", fault)
                    .output()
                    .unwrap();
                if out.status.code().is_some() {
                    break;
                }
                kills += 1;
            }
            assert!(kills > 0, "the run was never killed at {fault}");
            run_with(&s, &worker, delim, "in.csv", "out.csv", &args);
            assert!(
                s.read("out.csv") == want,
                "delimiter {delim:?}, killed at {fault}: the output differs from an uninterrupted run"
            );
        }
    }
}

#[test]
fn retry_failed_appends_csv_rows_with_the_delimiter_and_no_second_header() {
    let s = Scratch::new();
    let mut input = String::from("id;value\n");
    for i in 0..40 {
        input.push_str(&format!("{i};\"v;{i}\"\n"));
    }
    s.write("in.csv", input);
    let marker = s.write("broken", "");
    let run = |extra: &[&str]| {
        s.herdsman()
            .args(["run", "-i", "in.csv", "-o", "out.csv", "--delimiter", ";"])
            .args(["-w", &py_worker("flaky.py", &[marker.to_str().unwrap()])])
            .args([
                "--protocol",
                "framed",
                "--chunk-size",
                "7",
                "--progress",
                "none",
            ])
            .args(extra)
            .output()
            .unwrap()
    };
    let out = run(&[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    std::fs::remove_file(&marker).unwrap();
    let out = run(&["--retry-failed"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let got = s.read("out.csv");
    let mut rows: Vec<&str> = got.lines().collect();
    assert_eq!(rows.remove(0), "id;value");
    rows.sort_unstable_by_key(|r| r.split(';').next().unwrap().parse::<u32>().unwrap());
    let want: Vec<String> = (0..40).map(|i| format!("{i};\"v;{i}\"")).collect();
    assert_eq!(rows, want);
}
