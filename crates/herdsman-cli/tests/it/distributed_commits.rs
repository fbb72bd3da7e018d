//! A shared run commits beside its writer: the node's committer thread groups the chunks
//! that pile up during a transaction into one commit, a node's chunks in a parts directory
//! are byte ranges of a few segment files, and a failing committer stops the node with a
//! clear error and loses nothing on the next run.

use crate::common;
use crate::distributed::{assert_same, input, job_args_for, reference, server};

use std::collections::HashMap;
use std::process::Output;

use common::*;
use herdsman_ledger_postgres::{ChunkState, PostgresLedger, PostgresOptions};

/// The ledger of the job that writes `output` in the scratch directory, as a test reads it.
fn ledger(s: &Scratch, url: &str, output: &str) -> PostgresLedger {
    let out = std::fs::canonicalize(s.dir.path()).unwrap().join(output);
    let options = PostgresOptions {
        job: out.display().to_string(),
        ..PostgresOptions::default()
    };
    PostgresLedger::connect(url, options).expect("connect to the test server")
}

/// A node of the job reading `in.csv`, writing `out.jsonl`, run to its end.
fn node(s: &Scratch, url: &str, env: &[(&str, &str)]) -> Output {
    let mut args = job_args_for("in.csv");
    args.extend(
        [
            "-o",
            "out.jsonl",
            "--failures",
            "out.failures.jsonl",
            "--ledger",
            url,
            "--lease",
            "2s",
            "--node",
            "a",
        ]
        .map(String::from),
    );
    let mut cmd = s.herdsman();
    cmd.args(&args).env("DIST_DELAY_MS", "0");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

#[test]
fn a_failing_committer_stops_the_node_and_the_next_run_loses_nothing() {
    let Some(pg) = server("failing_committer") else {
        return;
    };
    let s = Scratch::new();
    s.write("in.csv", input(300));
    let mut args = job_args_for("in.csv");
    args.extend(["-o", "ref.jsonl", "--failures", "ref.failures.jsonl"].map(String::from));
    let reference = s.herdsman().args(&args).output().unwrap();
    assert_eq!(reference.status.code(), Some(1), "{}", stderr(&reference));
    let url = pg.url();

    // The committer thread's second batch fails as a disk would (the first commits).
    let failed = node(
        &s,
        &url,
        &[("HERDSMAN_FAULT", "distributed-committer-fails")],
    );
    let err = stderr(&failed);
    assert!(
        !matches!(failed.status.code(), Some(0) | Some(1)),
        "the node must stop with an error: {err}"
    );
    assert!(
        err.contains("cannot commit") && err.contains("injected failure"),
        "the error says what failed: {err}"
    );
    assert!(
        !s.path("out.jsonl").exists(),
        "nothing is published by a node that failed"
    );
    let rows = ledger(&s, &url, "out.jsonl").chunk_rows().unwrap();
    let committed = rows
        .iter()
        .filter(|r| r.state == ChunkState::Committed)
        .count();
    assert!(committed < rows.len(), "the failure came before the end");

    // The same command again: every record exactly once, as on one machine.
    let again = node(&s, &url, &[]);
    assert_eq!(again.status.code(), Some(1), "{}", stderr(&again));
    assert!(
        std::fs::read(s.path("out.jsonl")).unwrap() == std::fs::read(s.path("ref.jsonl")).unwrap(),
        "the output differs from the one-machine run's"
    );
    assert!(
        std::fs::read(s.path("out.failures.jsonl")).unwrap()
            == std::fs::read(s.path("ref.failures.jsonl")).unwrap(),
        "the dead-letter file differs from the one-machine run's"
    );
}

#[test]
fn one_commit_transaction_carries_several_chunks() {
    let Some(pg) = server("grouped_commits") else {
        return;
    };
    let s = Scratch::new();
    let rows: String = (1..=2000).map(|i| format!("{i}\n")).collect();
    s.write("rows.txt", &rows);
    let url = pg.url();
    // One-record chunks through a fast worker: chunks are written much faster than a
    // transaction commits, so they pile up and go into one transaction together.
    let out = s
        .herdsman()
        .args(["run", "-i", "rows.txt", "-w", "cat", "-o", "out.txt"])
        .args(["--progress", "none", "--chunk-size", "1", "--ledger", &url])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(s.read("out.txt"), rows);
    // Chunks committed in one transaction carry its one commit time.
    let mut by_time: HashMap<std::time::SystemTime, usize> = HashMap::new();
    let chunks = ledger(&s, &url, "out.txt").chunk_rows().unwrap();
    assert_eq!(chunks.len(), 2000);
    for r in &chunks {
        let at = r.committed_at.expect("every chunk is committed");
        *by_time.entry(at).or_default() += 1;
    }
    let largest = by_time.values().copied().max().unwrap_or(0);
    assert!(
        largest > 1,
        "every chunk was committed in a transaction of its own ({} transactions for {} chunks)",
        by_time.len(),
        chunks.len()
    );
}

#[test]
fn a_nodes_chunks_are_ranges_that_tile_its_segment_files() {
    let Some(pg) = server("segment_ranges") else {
        return;
    };
    let s = Scratch::new();
    s.write("in.csv", input(300));
    let want = reference(&s);
    let url = pg.url();
    let out = node(&s, &url, &[]);
    // 1: some records failed, as in the one-machine run.
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_same(&s, &want);
    // 30 chunks, each with an output range and, where a record failed, a dead-letter range:
    // one node in one pass appends them to one segment file each, one after the other (in
    // the order it wrote them, which is not always chunk order: a claim made by a commit
    // can be overtaken by one the node's input made at the same moment).
    let manifest = ledger(&s, &url, "out.jsonl").manifest().unwrap();
    assert_eq!(manifest.len(), 30);
    let range = |name: &str| -> (String, u64, u64) {
        let (file, bytes) = name
            .rsplit_once('@')
            .unwrap_or_else(|| panic!("{name} is not a range of a segment file"));
        let (start, end) = bytes.split_once('-').unwrap();
        (
            file.to_string(),
            start.parse().unwrap(),
            end.parse().unwrap(),
        )
    };
    let mut files: HashMap<String, Vec<(u64, u64)>> = HashMap::new();
    let mut failure_ranges = 0;
    for c in &manifest {
        assert!(!c.parts.is_empty() && c.parts.len() <= 2, "{:?}", c.parts);
        for p in &c.parts {
            let (file, start, end) = range(p);
            assert!(file.starts_with("seg-"), "{p}");
            assert!(end > start, "{p} is empty");
            failure_ranges += usize::from(file.ends_with(".failures"));
            files.entry(file).or_default().push((start, end));
        }
    }
    assert_eq!(files.len(), 2, "{files:?}");
    // The ranges of each file tile it from its first byte: no gap, no overlap.
    for (file, ranges) in &mut files {
        ranges.sort_unstable();
        let mut at = 0;
        for &(start, end) in ranges.iter() {
            assert_eq!(
                start, at,
                "a range of {file} does not follow the one before it"
            );
            at = end;
        }
    }
    // One record in 7 fails: every chunk of 10 has one.
    assert_eq!(failure_ranges, 30);
    let out_len: u64 = files
        .iter()
        .filter(|(f, _)| !f.ends_with(".failures"))
        .map(|(_, r)| r.last().unwrap().1)
        .sum();
    assert_eq!(out_len, want.0.len() as u64);
}

#[test]
fn chunks_read_on_across_input_files_equal_one_machine() {
    // A node reads its consecutive chunks on from where the last one ended, also across the
    // end of an input file, and from a fresh seek where they are not consecutive (two
    // nodes sharing the job): the outputs equal a one-machine run's either way.
    let Some(pg) = server("read_on") else {
        return;
    };
    let s = Scratch::new();
    for (name, from) in [("a.csv", 0), ("b.csv", 1000), ("c.csv", 2000)] {
        let mut text = String::from("id,value\n");
        for i in from..from + 997 {
            text.push_str(&format!("{i},v{}\n", i % 13));
        }
        s.write(name, &text);
    }
    let run = |out: &str, ledger: Option<&str>, node: &str| {
        let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("herdsman"));
        cmd.current_dir(s.dir.path())
            .args([
                "run", "-i", "a.csv", "-i", "b.csv", "-i", "c.csv", "-w", "cat",
            ])
            .args(["-o", out, "--progress", "none", "--chunk-size", "64"])
            .stdout(std::process::Stdio::null());
        if let Some(url) = ledger {
            cmd.args(["--ledger", url, "--node", node]);
        }
        cmd.spawn().unwrap()
    };
    let mut one = run("one.jsonl", None, "");
    assert!(one.wait().unwrap().success());
    let want = s.read("one.jsonl");
    assert_eq!(want.lines().count(), 3 * 997);
    let url = pg.url();
    let mut single = run("single.jsonl", Some(&url), "a");
    assert!(single.wait().unwrap().success());
    assert_eq!(s.read("single.jsonl"), want);
    let (mut a, mut b) = (
        run("pair.jsonl", Some(&url), "a"),
        run("pair.jsonl", Some(&url), "b"),
    );
    assert!(a.wait().unwrap().success());
    assert!(b.wait().unwrap().success());
    assert_eq!(s.read("pair.jsonl"), want);
}
