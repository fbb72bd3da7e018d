//! Static shards (`--shard I/N`): the N outputs and dead-letter files, concatenated in shard
//! order, are byte-identical to those of one run over the whole input, for every format,
//! several inputs, failing and filtered records, shards killed and resumed, and shards with
//! no records at all.

use crate::common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use common::*;
use predicates::prelude::*;

/// A small deterministic generator (xorshift) for the fixtures.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn shard_worker() -> String {
    py_worker("shard_worker.py", &[])
}

/// A value of varied length: text, a failing one ("bad") or a filtered one ("skip").
fn value(rng: &mut Rng, i: usize) -> String {
    match rng.below(12) {
        0 => format!("bad-{i}"),
        1 => format!("skip-{i}"),
        n => "x".repeat((n * n) as usize + rng.below(30) as usize),
    }
}

/// CSV with quoted newlines and delimiters, blank lines, rows of the wrong width (dead
/// letters without a worker) and failing and filtered values.
fn csv_input(rows: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng(seed);
    let mut s = String::from("id,value,note\n");
    for i in 0..rows {
        let v = value(&mut rng, i);
        match rng.below(10) {
            0 => s.push_str(&format!("{i},\"{v}\nsecond, line\",n\n")),
            1 => s.push_str(&format!("{i},{v}\n")), // wrong width
            2 => s.push_str(&format!("\n{i},{v},\"q\"\"uote\"\n")),
            _ => s.push_str(&format!("{i},{v},n{i}\n")),
        }
    }
    s.into_bytes()
}

/// JSONL with blank lines and lines that are not JSON (dead letters without a worker).
fn jsonl_input(rows: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng(seed);
    let mut s = String::new();
    for i in 0..rows {
        let v = value(&mut rng, i);
        match rng.below(10) {
            0 => s.push_str(&format!("{{\"id\": {i}, \"value\": \"{v}\"\n")), // not JSON
            1 => s.push_str(&format!("\n  \n{{ \"id\" : {i} , \"value\" : \"{v}\" }}\n")),
            _ => s.push_str(&format!("{{\"id\":{i},\"value\":\"{v}\"}}\n")),
        }
    }
    s.into_bytes()
}

/// Text lines, blank ones and one that is not UTF-8 (dead letters without a worker) among
/// them; the last line has no line break.
fn lines_input(rows: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng(seed);
    let mut s: Vec<u8> = Vec::new();
    for i in 0..rows {
        let v = value(&mut rng, i);
        match rng.below(10) {
            0 => s.extend_from_slice(b"caf\xe9 latin-1\n"),
            1 => s.push(b'\n'),
            _ => s.extend_from_slice(format!("{i} {v}\n").as_bytes()),
        }
    }
    s.extend_from_slice(b"last line");
    s
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut child = Command::new("gzip")
        .arg("-c")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("gzip");
    let mut stdin = child.stdin.take().unwrap();
    let data = data.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&data).unwrap());
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(out.status.success());
    out.stdout
}

fn herdsman_in(dir: &Path) -> Command {
    let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("herdsman"));
    cmd.current_dir(dir);
    cmd
}

/// `herdsman run` over `inputs` with the shard worker: the arguments after `run`.
fn run_args(inputs: &[&str], output: &str, summary: &str, extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = vec!["run".into()];
    for i in inputs {
        v.push("-i".into());
        v.push(i.to_string());
    }
    v.extend(
        [
            "-w",
            &shard_worker(),
            "--protocol",
            "framed",
            "-j",
            "1",
            "--chunk-size",
            "7",
            "-o",
            output,
            "--summary-json",
            summary,
            "--progress",
            "none",
            "-q",
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

/// The one-machine run: its output and dead letters.
fn one_machine(s: &Scratch, inputs: &[&str], ext: &str, extra: &[&str]) -> (Vec<u8>, Vec<u8>) {
    let out = format!("one.{ext}");
    let status = herdsman_in(s.dir.path())
        .args(run_args(inputs, &out, "one.json", extra))
        .status()
        .unwrap();
    assert!(matches!(status.code(), Some(0 | 1)), "{status:?}");
    check_accounting(s, "one.json", None, "one.failures.jsonl");
    (
        std::fs::read(s.path(&out)).unwrap(),
        std::fs::read(s.path("one.failures.jsonl")).unwrap_or_default(),
    )
}

/// Runs the `n` shards one after the other (the shell loop test runs them at the same time;
/// one at a time keeps this test light on a loaded machine); each must succeed (exit 1 only
/// when it holds failed records). Returns the outputs and dead-letter files concatenated
/// in shard order, and the records each shard counted.
fn shards(
    s: &Scratch,
    inputs: &[&str],
    n: u64,
    ext: &str,
    extra: &[&str],
) -> (Vec<u8>, Vec<u8>, Vec<u64>) {
    // Each shard count is a job of its own, with its own files.
    let out = |i: u64| format!("out.{n}.{i}.{ext}");
    let failures = |i: u64| format!("out.{n}.{i}.failures.jsonl");
    let summary = |i: u64| format!("s.{n}.{i}.json");
    let run = |i: u64| {
        let mut args = run_args(inputs, &out(i), &summary(i), extra);
        args.extend(["--shard".into(), format!("{i}/{n}")]);
        herdsman_in(s.dir.path()).args(args).output().unwrap()
    };
    let (mut all_out, mut all_failures, mut records) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..n {
        let o = run(i);
        let summary = check_accounting(s, &summary(i), None, &failures(i));
        let failed = summary["total"]["failed"].as_u64().unwrap();
        assert_eq!(
            o.status.code(),
            Some(if failed > 0 { 1 } else { 0 }),
            "shard {i}/{n}: {}",
            stderr(&o)
        );
        records.push(summary["total"]["records"].as_u64().unwrap());
        all_out.extend(std::fs::read(s.path(&out(i))).unwrap());
        all_failures.extend(std::fs::read(s.path(&failures(i))).unwrap_or_default());
    }
    (all_out, all_failures, records)
}

/// For 1 to 5 shards, the shards together are the one-machine run, byte for byte.
fn shards_match_one_machine(s: &Scratch, inputs: &[&str], ext: &str, extra: &[&str]) {
    let (want_out, want_fail) = one_machine(s, inputs, ext, extra);
    let want_records = serde_json::from_str::<serde_json::Value>(&s.read("one.json")).unwrap()
        ["total"]["records"]
        .as_u64()
        .unwrap();
    assert!(!want_fail.is_empty(), "the fixture has failing records");
    for n in 1..=5 {
        let (out, failures, records) = shards(s, inputs, n, ext, extra);
        assert!(
            out == want_out,
            "{n} shards: the outputs concatenated differ from the one-machine output"
        );
        assert!(
            failures == want_fail,
            "{n} shards: the dead letters concatenated differ from the one-machine ones"
        );
        assert_eq!(records.iter().sum::<u64>(), want_records, "{n} shards");
        if n > 1 {
            assert!(
                records.iter().filter(|&&r| r > 0).count() > 1,
                "{n} shards: the records were really split: {records:?}"
            );
        }
    }
}

#[test]
fn csv_shards_concatenate_to_the_one_machine_output() {
    let s = Scratch::new();
    s.write("in.csv", csv_input(90, 11));
    shards_match_one_machine(&s, &["in.csv"], "jsonl", &[]);
}

#[test]
fn jsonl_shards_concatenate_to_the_one_machine_output() {
    let s = Scratch::new();
    s.write("in.jsonl", jsonl_input(90, 12));
    shards_match_one_machine(&s, &["in.jsonl"], "jsonl", &[]);
}

#[test]
fn lines_shards_concatenate_to_the_one_machine_output() {
    let s = Scratch::new();
    s.write("in.txt", lines_input(90, 13));
    shards_match_one_machine(&s, &["in.txt"], "jsonl", &[]);
}

/// Several inputs from a glob, one compressed and one empty: the shards cut across them.
#[test]
fn shards_of_several_inputs_concatenate_to_the_one_machine_output() {
    let s = Scratch::new();
    std::fs::create_dir(s.path("parts")).unwrap();
    s.write("parts/a.jsonl", jsonl_input(30, 21));
    s.write("parts/b.jsonl.gz", gzip(&jsonl_input(30, 22)));
    s.write("parts/c.jsonl", "");
    s.write("parts/d.jsonl", jsonl_input(30, 23));
    s.write("parts/e.csv", csv_input(30, 24));
    shards_match_one_machine(&s, &["parts/*"], "jsonl", &[]);
}

/// CSV output: only shard 0 writes the header, so the concatenation is one CSV file.
#[test]
fn csv_output_shards_write_one_header() {
    let s = Scratch::new();
    s.write("in.jsonl", jsonl_input(60, 31));
    shards_match_one_machine(&s, &["in.jsonl"], "csv", &["--columns", "len,in"]);
    let first = s.read("out.5.0.csv");
    assert!(first.starts_with("len,in\n"), "{first}");
    for i in 1..5 {
        let later = s.read(&format!("out.5.{i}.csv"));
        assert!(
            !later.contains("len,in"),
            "shard {i}/5 wrote a header: {later}"
        );
    }
}

/// Without --columns each shard would take its header from its own first record: refused.
#[test]
fn csv_output_shards_without_columns_are_refused() {
    let s = Scratch::new();
    s.write("in.jsonl", jsonl_input(5, 32));
    s.herdsman()
        .args(["run", "-i", "in.jsonl", "-w", "cat", "-o", "out.csv"])
        .args(["--shard", "1/2"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--columns"));
    assert!(!s.path("out.csv").exists());
}

/// More shards than records: the shards without records succeed with empty files, and the
/// concatenation is still the one-machine output.
#[test]
fn more_shards_than_records_gives_empty_shards_that_succeed() {
    let s = Scratch::new();
    s.write("in.txt", "one\ntwo\nthree\n");
    let args = |out: &str, extra: &[&str]| {
        let mut v: Vec<String> = ["run", "-i", "in.txt", "-w", "cat", "-o", out, "-q"]
            .iter()
            .map(|a| a.to_string())
            .collect();
        v.extend(extra.iter().map(|a| a.to_string()));
        v
    };
    s.herdsman().args(args("one.jsonl", &[])).assert().code(0);
    let n = 20;
    let mut all = String::new();
    let mut empty = 0;
    for i in 0..n {
        let out = format!("out.{i}.jsonl");
        s.herdsman()
            .args(args(&out, &["--shard", &format!("{i}/{n}")]))
            .assert()
            .code(0)
            .stderr(
                predicate::str::contains("records   0").or(predicate::str::contains("records   1")),
            );
        let text = s.read(&out);
        empty += usize::from(text.is_empty());
        all.push_str(&text);
    }
    assert_eq!(empty, n - 3);
    assert_eq!(all, s.read("one.jsonl"));
}

#[test]
fn invalid_shards_are_usage_errors_with_the_right_form() {
    let s = Scratch::new();
    s.write("in.txt", "a\nb\n");
    for bad in ["3/3", "0/0", "x/2", "1/two", "-1/2", "2", "1/2/3", "auto/2"] {
        s.herdsman()
            .env_remove("JOB_COMPLETION_INDEX")
            .env_remove("SLURM_ARRAY_TASK_ID")
            .env_remove("AWS_BATCH_JOB_ARRAY_INDEX")
            .args(["run", "-i", "in.txt", "-w", "cat", "-o", "out.jsonl"])
            .args(["--shard", bad])
            .assert()
            .code(2)
            .stderr(
                predicate::str::contains("--shard I/N").or(predicate::str::contains("--shard I/2")),
            );
        assert!(!s.path("out.jsonl").exists(), "{bad}");
    }
    // Standard input cannot be split: every shard must read the same files.
    s.herdsman()
        .args(["run", "-w", "cat", "--shard", "0/2"])
        .write_stdin("a\nb\n")
        .assert()
        .code(2)
        .stderr(predicate::str::contains("standard input cannot be split"));
    // Parquet files cannot be joined by concatenation: refused before anything is written.
    s.herdsman()
        .args(["run", "-i", "in.txt", "-w", "cat", "-o", "out.parquet"])
        .args(["--shard", "0/2"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("Parquet files cannot be joined"));
    assert!(!s.path("out.parquet").exists());
}

/// The shard is part of the job: a checkpoint of one shard never resumes as another shard,
/// nor as the whole job; `herdsman status` shows the shard.
#[test]
fn the_shard_is_part_of_the_job_and_status_shows_it() {
    let s = Scratch::new();
    s.write("in.txt", "a\nb\nc\nd\n");
    let run = |shard: Option<&str>| {
        let mut cmd = s.herdsman();
        cmd.args(["run", "-i", "in.txt", "-w", "cat", "-o", "out.jsonl", "-q"]);
        if let Some(sh) = shard {
            cmd.args(["--shard", sh]);
        }
        cmd.assert()
    };
    run(Some("0/2")).code(0);
    assert_eq!(s.read("out.jsonl"), "\"a\"\n\"b\"\n");
    run(Some("1/2"))
        .code(2)
        .stderr(predicate::str::contains("shard"));
    run(Some("0/3"))
        .code(2)
        .stderr(predicate::str::contains("shard"));
    run(None).code(2).stderr(predicate::str::contains("shard"));
    assert_eq!(s.read("out.jsonl"), "\"a\"\n\"b\"\n");
    // The same shard again: the job already finished.
    run(Some("0/2"))
        .code(0)
        .stderr(predicate::str::contains("already finished"));
    s.herdsman()
        .args(["status", "out.jsonl"])
        .assert()
        .success()
        .stdout(predicate::str::is_match(r"shard\s+0/2").unwrap());
}

/// `--shard auto/N` takes the index from Kubernetes' JOB_COMPLETION_INDEX (or AWS Batch's
/// AWS_BATCH_JOB_ARRAY_INDEX), and `--shard auto` index and count from a Slurm array
/// counted from its first index.
#[test]
fn auto_shards_read_the_launchers_variables() {
    let s = Scratch::new();
    s.write("in.txt", lines_input(40, 41));
    let args = |out: &str, shard: &str| {
        let o = out.to_string();
        let sh = shard.to_string();
        move |cmd: &mut assert_cmd::Command| {
            cmd.env_remove("JOB_COMPLETION_INDEX")
                .env_remove("SLURM_ARRAY_TASK_ID")
                .env_remove("AWS_BATCH_JOB_ARRAY_INDEX")
                .args(["run", "-i", "in.txt", "-w", "cat", "-o", &o, "-q"])
                .args(["--shard", &sh]);
        }
    };
    let mut one = s.herdsman();
    args("one.jsonl", "0/1")(&mut one);
    one.assert().code(1);
    let (mut k8s, mut slurm, mut aws) = (String::new(), String::new(), String::new());
    for i in 0..3 {
        let mut cmd = s.herdsman();
        args(&format!("k.{i}.jsonl"), "auto/3")(&mut cmd);
        cmd.env("JOB_COMPLETION_INDEX", i.to_string())
            .assert()
            .stderr(predicate::str::contains(format!(
                "shard {i}/3 (index from JOB_COMPLETION_INDEX)"
            )));
        k8s.push_str(&s.read(&format!("k.{i}.jsonl")));

        let mut cmd = s.herdsman();
        args(&format!("s.{i}.jsonl"), "auto")(&mut cmd);
        cmd.env("SLURM_ARRAY_TASK_ID", (i + 1).to_string())
            .env("SLURM_ARRAY_TASK_MIN", "1")
            .env("SLURM_ARRAY_TASK_COUNT", "3")
            .assert()
            .stderr(predicate::str::contains(format!("shard {i}/3")));
        slurm.push_str(&s.read(&format!("s.{i}.jsonl")));

        let mut cmd = s.herdsman();
        args(&format!("a.{i}.jsonl"), "auto/3")(&mut cmd);
        cmd.env("AWS_BATCH_JOB_ARRAY_INDEX", i.to_string())
            .assert()
            .stderr(predicate::str::contains(format!("shard {i}/3")));
        aws.push_str(&s.read(&format!("a.{i}.jsonl")));
    }
    // A stepped Slurm array's task ids are not shard numbers: refused, nothing written.
    let mut cmd = s.herdsman();
    args("stepped.jsonl", "auto")(&mut cmd);
    cmd.env("SLURM_ARRAY_TASK_ID", "2")
        .env("SLURM_ARRAY_TASK_MIN", "0")
        .env("SLURM_ARRAY_TASK_MAX", "6")
        .env("SLURM_ARRAY_TASK_STEP", "2")
        .env("SLURM_ARRAY_TASK_COUNT", "4")
        .assert()
        .code(2)
        .stderr(predicate::str::contains("SLURM_ARRAY_TASK_STEP"));
    assert!(!s.path("stepped.jsonl").exists());
    let want = s.read("one.jsonl");
    assert_eq!(k8s, want);
    assert_eq!(slurm, want);
    assert_eq!(aws, want);
    s.herdsman()
        .args(["status", "s.2.jsonl"])
        .assert()
        .success()
        .stdout(predicate::str::is_match(r"shard\s+2/3").unwrap());
}

/// Shards SIGKILLed at random moments (and at the injected crash points of the commit
/// protocol) and resumed until they finish still concatenate to the one-machine output. Each
/// shard runs in a directory of its own, as on a machine of its own.
#[test]
fn shards_killed_and_resumed_concatenate_to_the_one_machine_output() {
    use crate::crash;
    let data = crash::workload(1200, true);
    let logs = Scratch::new();
    let log = logs.path("runner.log");
    let clean = Scratch::new();
    clean.write("in.csv", &data);
    let status = crash::spawn(clean.dir.path(), &crash::run_args(&[]), None, &log)
        .wait()
        .unwrap();
    assert_eq!(status.code(), Some(1), "the workload has bad rows");
    let want_out = clean.read("out.jsonl");
    let want_fail = clean.read("out.failures.jsonl");

    let mut rng = crash::Rng(7);
    let (mut out, mut fail, mut kills) = (String::new(), String::new(), 0);
    let n = 3;
    for i in 0..n {
        let machine = Scratch::new();
        machine.write("in.csv", &data);
        let args = crash::run_args(&["--shard", &format!("{i}/{n}")]);
        // Killed once for sure, at its first commit, however fast the shard runs; then at
        // random moments and crash points until it finishes.
        let first = crash::spawn(machine.dir.path(), &args, Some("after-commit"), &log)
            .wait()
            .unwrap();
        assert_eq!(
            first.code(),
            None,
            "shard {i} is killed at its first commit"
        );
        kills += 1;
        kills += crash::run_with_kills(machine.dir.path(), &args, &mut rng, &log);
        out.push_str(&machine.read("out.jsonl"));
        fail.push_str(&machine.read("out.failures.jsonl"));
        assert!(!machine.path("out.jsonl.partial").exists());
    }
    assert!(kills >= n, "each shard was killed: {kills} kills");
    assert!(
        out == want_out,
        "the killed shards' outputs differ from the uninterrupted one-machine run"
    );
    assert!(
        fail == want_fail,
        "the killed shards' dead letters differ from the uninterrupted one-machine run"
    );
}

/// The loop recipe of docs/shards.md runs as written: N shards in the background, `wait`,
/// then `cat` in shard order, and gives the one-machine output.
#[test]
fn the_documented_shell_loop_runs_as_written() {
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/shards.md"))
            .unwrap();
    let marker = "<!-- tested: the shell loop -->";
    let block = doc
        .split_once(marker)
        .and_then(|(_, rest)| rest.split_once("```sh\n"))
        .and_then(|(_, rest)| rest.split_once("```"))
        .map(|(code, _)| code)
        .expect("docs/shards.md holds the tested shell loop");
    let s = Scratch::new();
    s.write("data.csv", csv_input(80, 51));
    std::fs::copy(common::worker("shard_worker.py"), s.path("worker.py")).unwrap();
    let bin = assert_cmd::cargo::cargo_bin("herdsman");
    let path = format!(
        "{}:{}",
        bin.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let shell = Command::new("sh")
        .args(["-c", block])
        .current_dir(s.dir.path())
        .env("PATH", &path)
        .output()
        .unwrap();
    assert!(shell.status.success(), "{}", stderr(&shell));
    let one = Command::new(&bin)
        .args([
            "run",
            "-i",
            "data.csv",
            "-w",
            "python3 worker.py",
            "--protocol",
            "framed",
        ])
        .args(["-o", "one.jsonl"])
        .current_dir(s.dir.path())
        .env("PATH", &path)
        .output()
        .unwrap();
    assert_eq!(one.status.code(), Some(1), "{}", stderr(&one));
    assert!(s.read("all.jsonl") == s.read("one.jsonl"));
    assert!(s.read("all.failures.jsonl") == s.read("one.failures.jsonl"));
}

/// A shard numbers its records as the whole input does: `{#}` in an `--exec` command (and
/// the commands `--dry-run` shows) carries the record's number in the whole input.
#[test]
fn exec_record_numbers_are_those_of_the_whole_input() {
    let s = Scratch::new();
    let text: String = (0..24).map(|i| format!("item {i}\n")).collect();
    s.write("in.txt", &text);
    let run = |out: &str, shard: Option<&str>| {
        let mut cmd = s.herdsman();
        cmd.args([
            "run",
            "-i",
            "in.txt",
            "-x",
            "echo {#} {}",
            "-j",
            "2",
            "-o",
            out,
        ]);
        cmd.args(["--output-format", "lines", "-q"]);
        if let Some(sh) = shard {
            cmd.args(["--shard", sh]);
        }
        cmd.assert().code(0);
        s.read(out)
    };
    let one = run("one.txt", None);
    assert!(one.starts_with("1 item 0\n2 item 1\n"), "{one}");
    let all: String = (0..3)
        .map(|i| run(&format!("out.{i}.txt"), Some(&format!("{i}/3"))))
        .collect();
    assert_eq!(all, one);
    let dry = s
        .herdsman()
        .args(["run", "-i", "in.txt", "-x", "echo {#} {}", "--dry-run"])
        .args(["--limit", "2", "--shard", "2/3"])
        .output()
        .unwrap();
    assert!(dry.status.success(), "{}", stderr(&dry));
    let shown = String::from_utf8_lossy(&dry.stdout).into_owned();
    let first_of_shard_2 = all
        .lines()
        .nth(one.lines().count() - s.read("out.2.txt").lines().count())
        .unwrap()
        .split_once(' ')
        .unwrap()
        .0
        .to_string();
    assert!(
        shown.starts_with(&format!("echo {first_of_shard_2} 'item ")),
        "{shown}"
    );
    assert_eq!(shown.lines().count(), 2, "{shown}");
}
