//! Parquet input and output, held against pyarrow (`tests/workers/parquet_tool.py`): it
//! writes the inputs (nested and null values, decimals, timestamps, several row groups) and
//! reads herdsman's outputs back. Also: `--columns`, schema enforcement, the output formats an
//! extension can name, and crash equivalence of a Parquet output under a SIGKILL storm.

use crate::common;
use crate::crash::{run_with_kills, spawn, Rng};

use std::path::Path;

use common::*;
use serde_json::Value;

/// Runs `python3 parquet_tool.py ARGS` in the scratch directory; its stdout.
fn tool(s: &Scratch, args: &[&str]) -> String {
    let out = std::process::Command::new("python3")
        .arg(worker("parquet_tool.py"))
        .args(args)
        .current_dir(s.dir.path())
        .output()
        .expect("run python3 (pyarrow is needed: pip install pyarrow)");
    assert!(
        out.status.success(),
        "parquet_tool.py {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8")
}

/// The rows and the row-group sizes pyarrow reads from a Parquet file.
fn dump(s: &Scratch, file: &str) -> (Vec<Value>, Value) {
    let mut rows = json_lines(&tool(s, &["dump", file]));
    let meta = rows.pop().expect("the dump ends with the file's metadata");
    (rows, meta)
}

#[test]
fn parquet_input_becomes_json_objects_with_faithful_types() {
    let s = Scratch::new();
    tool(&s, &["typed", "in.parquet", "40", "7"]);
    s.herdsman()
        .args(["run", "-i", "in.parquet", "-w", "cat", "-o", "out.jsonl"])
        .args(["--chunk-size", "10", "--summary-json", "s.json"])
        .assert()
        .success();
    let got = s.read("out.jsonl");
    let want = tool(&s, &["expect", "in.parquet"]);
    assert_eq!(json_lines(&got), json_lines(&want));
    let first = got.lines().next().unwrap();
    // Keys in column order; decimals and timestamps as strings, a local timestamp without
    // an offset, nested values as JSON.
    assert!(
        first.starts_with(r#"{"id":0,"name":"name \"0\" é\n","price":"-20.00","at":"2024-01-31T12:00:00Z","local":"2023-12-31T23:59:59","day":"2020-02-28","score":null,"flag":true,"tags":[],"point":{"x":0.0,"y":0},"small":-50}"#),
        "{first}"
    );
    let sum = s.accounting();
    assert_eq!(sum["total"]["records"], 40);
}

#[test]
fn columns_reads_only_the_named_columns_in_that_order() {
    let s = Scratch::new();
    tool(&s, &["typed", "in.parquet", "20", "6"]);
    s.herdsman()
        .args(["run", "-i", "in.parquet", "-w", "cat", "-o", "out.jsonl"])
        .args(["--columns", "point,id,at"])
        .assert()
        .success();
    let got = s.read("out.jsonl");
    let want = tool(&s, &["expect", "in.parquet", "point,id,at"]);
    assert_eq!(json_lines(&got), json_lines(&want));
    for line in got.lines() {
        assert!(line.starts_with(r#"{"point":"#), "{line}");
        assert_eq!(
            serde_json::from_str::<serde_json::Map<String, Value>>(line)
                .unwrap()
                .len(),
            3
        );
    }
    let out = s
        .herdsman()
        .args(["run", "-i", "in.parquet", "-w", "cat", "-o", "bad.jsonl"])
        .args(["--columns", "id,nope"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let e = stderr(&out);
    assert!(e.contains("no column `nope`") && e.contains("price"), "{e}");
    assert!(!s.path("bad.jsonl").exists());
}

#[test]
fn a_parquet_output_with_a_schema_holds_the_same_table_as_its_input() {
    let s = Scratch::new();
    tool(&s, &["typed", "in.parquet", "45", "7"]);
    // The schema as pyarrow prints it.
    s.write("schema.txt", tool(&s, &["schema", "in.parquet"]));
    s.herdsman()
        .args(["run", "-i", "in.parquet", "-w", "cat", "-o", "out.parquet"])
        .args(["--schema", "schema.txt", "--chunk-size", "10"])
        .args(["--row-group-size", "4", "--compression", "snappy"])
        .args(["--summary-json", "s.json"])
        .assert()
        .success();
    tool(&s, &["same", "in.parquet", "out.parquet"]);
    let (_, meta) = dump(&s, "out.parquet");
    // Row groups never span chunks: 10-row chunks in groups of at most 4.
    let mut groups = Vec::new();
    for chunk in [10, 10, 10, 10, 5] {
        let mut left = chunk;
        while left > 0 {
            groups.push(left.min(4));
            left -= left.min(4);
        }
    }
    assert_eq!(meta["row_groups"], serde_json::json!(groups));
    assert!(!s.path("out.parquet.partial").exists());
    let sum = check_accounting(&s, "s.json", None, "out.failures.jsonl");
    assert_eq!(sum["total"]["outputs"], 45);
}

#[test]
fn an_inferred_schema_is_enforced_and_a_record_that_does_not_fit_is_a_dead_letter() {
    let s = Scratch::new();
    s.write(
        "in.jsonl",
        concat!(
            r#"{"id":1,"name":"a","score":2,"tags":["x"],"p":{"x":1}}"#,
            "\n",
            r#"{"id":2,"name":null,"score":2.5,"tags":[],"p":{"x":2,"y":"b"}}"#,
            "\n",
            r#"{"id":3,"name":"c","score":1,"tags":["y","z"],"p":null}"#,
            "\n",
            r#"{"id":"four","name":"d"}"#,
            "\n",
            r#"{"id":5,"extra":true}"#,
            "\n",
            r#"{"id":6}"#,
            "\n",
        ),
    );
    let out = s
        .herdsman()
        .args(["run", "-i", "in.jsonl", "-w", "cat", "-o", "out.parquet"])
        .args(["--chunk-size", "2", "--summary-json", "s.json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let (rows, meta) = dump(&s, "out.parquet");
    assert_eq!(
        rows,
        [
            serde_json::json!({"id":1,"name":"a","score":2.0,"tags":["x"],"p":{"x":1,"y":null}}),
            serde_json::json!({"id":2,"name":null,"score":2.5,"tags":[],"p":{"x":2,"y":"b"}}),
            serde_json::json!({"id":3,"name":"c","score":1.0,"tags":["y","z"],"p":null}),
            serde_json::json!({"id":6,"name":null,"score":null,"tags":null,"p":null}),
        ]
    );
    let schema = meta["schema"].as_str().unwrap();
    // The columns, in the order of the first record's keys.
    let mut last = 0;
    for col in [
        "id: int64",
        "name: string",
        "score: double",
        "tags: list<item: string>",
        "p: struct<x: int64, y: string>",
    ] {
        let at = schema
            .find(col)
            .unwrap_or_else(|| panic!("{col} not in {schema}"));
        assert!(at >= last, "{col} out of order in {schema}");
        last = at;
    }
    let failures = json_lines(&s.read("out.failures.jsonl"));
    assert_eq!(failures.len(), 2);
    let text = s.read("out.failures.jsonl");
    assert!(text.contains("output_rejected"), "{text}");
    assert!(text.contains("`id` is a string"), "{text}");
    assert!(text.contains("`extra` is not a column"), "{text}");
    check_accounting(&s, "s.json", None, "out.failures.jsonl");
}

#[test]
fn a_bad_schema_file_or_a_parquet_flag_without_parquet_output_is_a_usage_error() {
    let s = Scratch::new();
    s.write("in.jsonl", "{\"a\":1}\n");
    s.write("bad.txt", "a: int65\n");
    for (args, needle) in [
        (
            &["-o", "o.parquet", "--schema", "bad.txt"][..],
            "unknown type `int65`",
        ),
        (
            &["-o", "o.parquet", "--schema", "missing.txt"][..],
            "cannot read the schema file",
        ),
        (
            &["-o", "o.parquet", "--compression", "lzo"][..],
            "--compression lzo",
        ),
        (
            &["-o", "o.jsonl", "--row-group-size", "5"][..],
            "Parquet output only",
        ),
    ] {
        let out = s
            .herdsman()
            .args(["run", "-i", "in.jsonl", "-w", "cat"])
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(needle), "{args:?}: {}", stderr(&out));
    }
}

#[test]
fn an_unknown_output_extension_is_refused_unless_the_format_is_given() {
    let s = Scratch::new();
    s.write("in.jsonl", "{\"a\":1}\n");
    let out = s
        .herdsman()
        .args(["run", "-i", "in.jsonl", "-w", "cat", "-o", "out.xlsx"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let e = stderr(&out);
    assert!(e.contains(".xlsx") && e.contains("--output-format"), "{e}");
    assert!(!s.path("out.xlsx").exists());
    s.herdsman()
        .args(["run", "-i", "in.jsonl", "-w", "cat", "-o", "out.xlsx"])
        .args(["--output-format", "jsonl"])
        .assert()
        .success();
    assert_eq!(s.read("out.xlsx"), "{\"a\":1}\n");
    // `.parquet` and `.txt` name their formats.
    s.herdsman()
        .args(["run", "-i", "in.jsonl", "-w", "cat", "-o", "out.parquet"])
        .assert()
        .success();
    assert_eq!(dump(&s, "out.parquet").0, [serde_json::json!({"a": 1})]);
    s.herdsman()
        .args(["run", "-i", "in.jsonl", "-w", "cat", "-o", "out.txt"])
        .assert()
        .success();
    assert_eq!(s.read("out.txt"), "{\"a\":1}\n");
}

fn storm_args() -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let worker = format!(
        "python3 {}",
        root.join("examples/primes/worker.py").display()
    );
    [
        "run",
        "-i",
        "in.parquet",
        "-w",
        &worker,
        "--protocol",
        "framed",
        "-j",
        "2",
        "-o",
        "out.parquet",
        "--chunk-size",
        "50",
        "--row-group-size",
        "20",
        "--progress",
        "none",
        "-q",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// SIGKILL at seeded random moments and at the injected crash points of the commit protocol
/// and the final renames, with a Parquet input (row groups of 37 rows, so chunks of 50 start
/// inside row groups) and a Parquet output: every resumed job publishes the same bytes as an
/// uninterrupted run, and pyarrow reads the same table from it.
#[test]
fn sigkill_storm_with_parquet_in_and_out_gives_the_same_file() {
    let logs = Scratch::new();
    let log = logs.path("runner.log");
    let clean = Scratch::new();
    tool(&clean, &["workload", "in.parquet", "600", "37"]);
    let data = std::fs::read(clean.path("in.parquet")).unwrap();
    let args = storm_args();
    let status = spawn(clean.dir.path(), &args, None, &log).wait().unwrap();
    assert_eq!(
        status.code(),
        Some(1),
        "the workload has bad rows: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let want_out = std::fs::read(clean.path("out.parquet")).unwrap();
    let want_fail = clean.read("out.failures.jsonl");
    assert_eq!(json_lines(&want_fail).len(), 7);
    let (rows, _) = dump(&clean, "out.parquet");
    assert_eq!(rows.len(), 600 - 7);

    let crashed = Scratch::new();
    crashed.write("in.parquet", &data);
    let mut rng = Rng(0x005E_ED0F_9A4B);
    let mut kills = 0;
    while kills < 20 {
        for f in ["out.parquet", "out.failures.jsonl"] {
            let _ = std::fs::remove_file(crashed.path(f));
        }
        let _ = std::fs::remove_dir_all(crashed.path(".out.parquet.herdsman"));
        kills += run_with_kills(crashed.dir.path(), &args, &mut rng, &log);
        let got = std::fs::read(crashed.path("out.parquet")).unwrap();
        assert!(
            got == want_out,
            "the Parquet output differs from the uninterrupted run"
        );
        assert_eq!(crashed.read("out.failures.jsonl"), want_fail);
        assert!(!crashed.path("out.parquet.partial").exists());
    }
    std::fs::copy(clean.path("out.parquet"), crashed.path("want.parquet")).unwrap();
    tool(&crashed, &["same", "want.parquet", "out.parquet"]);
}
