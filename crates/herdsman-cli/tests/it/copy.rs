//! `--copy` (no worker) runs its records through the copier on the assembler's thread, without
//! the engine, unless a rate limit needs the engine: both ways give the same output, dead
//! letters and counts, `--max-errors` stops both, and the run that follows a stop finishes
//! the job with every record once.

use crate::common;

use common::*;
use serde_json::Value;

/// JSONL records `{"id": i}` with a line that is not JSON every 7 lines.
fn input(rows: usize) -> String {
    let mut s = String::new();
    for i in 0..rows {
        if i % 7 == 3 {
            s.push_str(&format!("{{\"id\": {i}, broken\n"));
        } else {
            s.push_str(&format!("{{\"id\":{i},\"name\":\"n{i}\"}}\n"));
        }
    }
    s
}

fn copy(s: &Scratch, out: &str, extra: &[&str]) -> (i32, String) {
    let o = s
        .herdsman()
        .args(["run", "-i", "in.jsonl", "--copy", "-o", out])
        .args(["--chunk-size", "40", "--progress", "none", "-q"])
        .args(["--summary-json", &format!("{out}.summary.json")])
        .args(extra)
        .output()
        .unwrap();
    (o.status.code().unwrap_or(-1), stderr(&o))
}

/// The counts of a run's summary, checked against its files (the `.partial` ones of a run
/// that stopped).
fn totals(s: &Scratch, out: &str) -> Value {
    let failures = out.replace(".jsonl", ".failures.jsonl");
    let (output, failures) = match s.path(out).exists() {
        true => (out.to_string(), failures),
        false => (format!("{out}.partial"), format!("{failures}.partial")),
    };
    check_accounting(s, &format!("{out}.summary.json"), Some(&output), &failures)["total"].clone()
}

#[test]
fn copy_without_the_engine_equals_copy_through_it() {
    let s = Scratch::new();
    s.write("in.jsonl", input(1_000));
    let (code, err) = copy(&s, "direct.jsonl", &[]);
    assert_eq!(code, 1, "unreadable records fail: {err}");
    // A rate limit high enough not to wait, but one the engine must keep.
    let (code, err) = copy(&s, "engine.jsonl", &["--rate", "10000000/second"]);
    assert_eq!(code, 1, "{err}");
    assert_eq!(s.read("direct.jsonl"), s.read("engine.jsonl"));
    let good: Vec<u64> = (0..1_000u64).filter(|i| i % 7 != 3).collect();
    let got: Vec<u64> = json_lines(&s.read("direct.jsonl"))
        .iter()
        .map(|v| v["id"].as_u64().unwrap())
        .collect();
    assert_eq!(got, good, "every readable record once, in input order");
    // The dead letters name the same records, in the same order.
    let dead = |f: &str| -> Vec<(u64, String)> {
        json_lines(&s.read(f))
            .iter()
            .map(|d| {
                (
                    d["line"].as_u64().or(d["seq"].as_u64()).unwrap_or(u64::MAX),
                    d["error"]["kind"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    };
    assert_eq!(dead("direct.failures.jsonl"), dead("engine.failures.jsonl"));
    assert_eq!(
        json_lines(&s.read("direct.failures.jsonl")).len(),
        1_000 - good.len()
    );
    let (d, e) = (totals(&s, "direct.jsonl"), totals(&s, "engine.jsonl"));
    for k in [
        "records",
        "succeeded",
        "failed",
        "filtered",
        "not_run",
        "outputs",
    ] {
        assert_eq!(d[k], e[k], "{k}: {d} against {e}");
    }
}

#[test]
fn copy_stops_at_max_errors_and_the_next_run_finishes_the_job() {
    let s = Scratch::new();
    s.write("in.jsonl", input(2_000));
    let (code, err) = copy(&s, "out.jsonl", &["--max-errors", "20"]);
    assert_ne!(code, 0, "{err}");
    let first = totals(&s, "out.jsonl");
    let failed = first["failed"].as_u64().unwrap();
    assert!(
        (20..2_000 / 7).contains(&failed),
        "stopped after its 20th failure, not at the end: {first}"
    );
    assert!(first["records"].as_u64().unwrap() < 2_000, "{first}");
    // The same command without the limit resumes and finishes: every record once.
    let (code, err) = copy(&s, "out.jsonl", &[]);
    assert_eq!(code, 1, "{err}");
    let ids: Vec<u64> = json_lines(&s.read("out.jsonl"))
        .iter()
        .map(|v| v["id"].as_u64().unwrap())
        .collect();
    assert_eq!(
        ids,
        (0..2_000u64).filter(|i| i % 7 != 3).collect::<Vec<_>>()
    );
    assert_eq!(
        json_lines(&s.read("out.failures.jsonl")).len(),
        (0..2_000).filter(|i| i % 7 == 3).count()
    );
}

/// A stop while the input has nothing more to give (stdin left open) ends the run at once, as
/// interrupted, with what was read accounted for.
#[cfg(unix)]
#[test]
fn copy_stops_on_sigint_while_waiting_for_input() {
    use std::io::Write;
    use std::time::{Duration, Instant};
    let s = Scratch::new();
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("herdsman"))
        .current_dir(s.dir.path())
        .args([
            "run",
            "-i",
            "-",
            "--format",
            "jsonl",
            "--copy",
            "-o",
            "out.jsonl",
        ])
        .args([
            "--chunk-size",
            "10",
            "--progress",
            "none",
            "--no-checkpoint",
        ])
        .args(["--summary-json", "s.json"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input(95).as_bytes()).unwrap();
    stdin.flush().unwrap();
    // The records are read (the run writes its partial output file as chunks complete).
    let until = Instant::now() + Duration::from_secs(60);
    while !s.path("out.jsonl.partial").exists() && !s.path("out.jsonl").exists() {
        assert!(
            Instant::now() < until,
            "the run never wrote its first chunk"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let sent = std::process::Command::new("kill")
        .args(["-s", "INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    // stdin stays open: the run must not wait for its end.
    let until = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < until, "the run did not stop on SIGINT");
        std::thread::sleep(Duration::from_millis(20));
    };
    drop(stdin);
    assert_eq!(status.code(), Some(130));
    let summary: Value = serde_json::from_str(&s.read("s.json")).unwrap();
    let t = &summary["total"];
    assert_eq!(
        t["records"],
        t["succeeded"].as_u64().unwrap()
            + t["failed"].as_u64().unwrap()
            + t["not_run"].as_u64().unwrap(),
        "{summary}"
    );
}
