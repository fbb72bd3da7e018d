//! Crash-equivalence: kill the runner with SIGKILL at seeded random moments, run the same
//! command again until it finishes, and compare with an uninterrupted run. Also: the
//! refusals that protect a checkpoint (changed input, changed command, a second run).

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use predicates::prelude::*;

/// A small deterministic generator (xorshift) so the kill schedule is reproducible.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn primes_worker() -> String {
    format!(
        "python3 {}",
        repo_root().join("examples/primes/worker.py").display()
    )
}

/// The reference workload's CSV with some bad rows, and optionally quoted newlines in an
/// extra column.
pub(crate) fn workload(rows: usize, quoted_newlines: bool) -> String {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut s = String::from(if quoted_newlines {
        "id,value,note\n"
    } else {
        "id,value\n"
    });
    for i in 0..rows {
        let value = if i % 97 == 13 {
            format!("bad-{i}")
        } else {
            rng.below(3000).to_string()
        };
        if quoted_newlines {
            s.push_str(&format!("{i},{value},\"line one\nline, two {i}\"\n"));
        } else {
            s.push_str(&format!("{i},{value}\n"));
        }
    }
    s
}

pub(crate) fn run_args(extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = [
        "run",
        "-i",
        "in.csv",
        "-w",
        &primes_worker(),
        "--protocol",
        "framed",
        "-j",
        "2",
        "-o",
        "out.jsonl",
        "--chunk-size",
        "50",
        "--progress",
        "none",
        "-q",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

/// Starts the runner in `dir`, its stderr going to `log` (kept out of the job's directory) so
/// that a run that ends unexpectedly can say why.
pub(crate) fn spawn(dir: &Path, args: &[String], fault: Option<&str>, log: &Path) -> Child {
    let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("herdsman"));
    cmd.args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("create the runner's log"));
    if let Some(f) = fault {
        cmd.env("HERDSMAN_FAULT", f);
    }
    cmd.spawn().expect("spawn herdsman")
}

/// Chunks committed in the checkpoint of the job writing `output` (0 before there is one),
/// read the way a user would, with `herdsman status`, which never waits for the running job.
fn committed_chunks(dir: &Path, output: &str) -> u64 {
    let out = Command::new(assert_cmd::cargo::cargo_bin("herdsman"))
        .args(["status", output, "--json"])
        .current_dir(dir)
        .stderr(Stdio::null())
        .output()
        .expect("run herdsman status");
    serde_json::from_slice::<serde_json::Value>(&out.stdout)
        .ok()
        .and_then(|v| v["chunks"].as_u64())
        .unwrap_or(0)
}

/// When one run of the job is killed.
#[derive(Debug, Clone, Copy)]
enum Kill {
    /// This long after it started, progress or not: start-up, resume and the first second
    /// (before any commit) are covered.
    After(Duration),
    /// This long after its first commit was seen: every such run moves the job forward, and
    /// the kill lands anywhere in the cycle of writing, syncing and committing chunks.
    AfterCommit(Duration),
    /// At an injected crash point of the commit protocol or the final renames.
    Fault(&'static str),
}

/// Runs the job to completion, killing the runner at seeded random moments and at the
/// injected crash points; returns how many times it was killed.
///
/// No kill depends on how fast the machine is: every fourth run is killed at a crash point,
/// every other one only after it committed something, so the job finishes within a bounded
/// number of runs however loaded the machine is; the delays only spread the kills. The job's
/// output is its `-o` argument.
pub(crate) fn run_with_kills(dir: &Path, args: &[String], rng: &mut Rng, log: &Path) -> usize {
    let output = args
        .iter()
        .position(|a| a == "-o")
        .map_or("out.jsonl", |i| args[i + 1].as_str());
    // Fault points that land exactly inside the commit protocol and the final renames.
    let faults = [
        "after-sync",
        "after-commit",
        "before-rename",
        "between-renames",
        "before-mark-finished",
    ];
    let mut kills = 0;
    for round in 0..400usize {
        let kill = match round % 4 {
            3 => Kill::Fault(faults[(round / 4) % faults.len()]),
            0 => Kill::After(Duration::from_millis(rng.below(400))),
            _ => Kill::AfterCommit(Duration::from_millis(rng.below(1000))),
        };
        let fault = match kill {
            Kill::Fault(f) => Some(f),
            _ => None,
        };
        let committed_before = committed_chunks(dir, output);
        let started = Instant::now();
        let mut child = spawn(dir, args, fault, log);
        let mut kill_at = match kill {
            Kill::After(d) => Some(started + d),
            _ => None,
        };
        let mut last_look = started;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                if status.code().is_none() {
                    kills += 1; // killed by its injected fault
                    break;
                }
                assert!(
                    matches!(status.code(), Some(0) | Some(1)),
                    "run {round} ({kill:?}) ended with {status:?}: {}",
                    std::fs::read_to_string(log).unwrap_or_default()
                );
                return kills;
            }
            let now = Instant::now();
            if let (Kill::AfterCommit(d), None) = (kill, kill_at) {
                if now - last_look >= Duration::from_millis(50) {
                    last_look = now;
                    if committed_chunks(dir, output) > committed_before {
                        kill_at = Some(Instant::now() + d);
                    }
                }
            }
            if kill_at.is_some_and(|t| now >= t) {
                child.kill().unwrap(); // SIGKILL
                child.wait().unwrap();
                kills += 1;
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(300),
                "run {round} ({kill:?}) neither ended nor committed in 5 minutes"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    panic!("the job never finished");
}

fn sorted_lines(s: &str) -> Vec<String> {
    let mut v: Vec<String> = s.lines().map(str::to_string).collect();
    v.sort();
    v
}

fn crash_case(rows: usize, quoted: bool, extra: &[&str], seed: u64, ordered: bool) {
    let data = workload(rows, quoted);
    let logs = Scratch::new();
    let log = logs.path("runner.log");
    let clean = Scratch::new();
    clean.write("in.csv", &data);
    let args = run_args(extra);
    let status = spawn(clean.dir.path(), &args, None, &log).wait().unwrap();
    assert_eq!(
        status.code(),
        Some(1),
        "the workload has bad rows: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let want_out = clean.read("out.jsonl");
    let want_fail = clean.read("out.failures.jsonl");
    assert!(!want_fail.is_empty());

    let crashed = Scratch::new();
    crashed.write("in.csv", &data);
    // Repeat the whole job (from scratch) until it has been killed at least 20 times,
    // comparing the result of every repetition.
    let mut rng = Rng(seed);
    let mut kills = 0;
    while kills < 20 {
        for f in ["out.jsonl", "out.failures.jsonl"] {
            let _ = std::fs::remove_file(crashed.path(f));
        }
        let _ = std::fs::remove_dir_all(crashed.path(".out.jsonl.herdsman"));
        kills += run_with_kills(crashed.dir.path(), &args, &mut rng, &log);
        compare(&crashed, &want_out, &want_fail, ordered);
    }
}

fn compare(crashed: &Scratch, want_out: &str, want_fail: &str, ordered: bool) {
    let got_out = crashed.read("out.jsonl");
    let got_fail = crashed.read("out.failures.jsonl");
    if ordered {
        assert!(
            got_out == want_out,
            "output differs from the uninterrupted run"
        );
        assert!(
            got_fail == want_fail,
            "dead letters differ from the uninterrupted run"
        );
    } else {
        assert_eq!(sorted_lines(&got_out), sorted_lines(want_out));
        assert_eq!(sorted_lines(&got_fail), sorted_lines(want_fail));
    }
    assert!(!crashed.path("out.jsonl.partial").exists());
}

#[test]
fn sigkill_at_random_moments_gives_byte_identical_output() {
    crash_case(2000, false, &[], 1, true);
}

#[test]
fn sigkill_with_unordered_output_gives_the_same_records() {
    crash_case(2000, false, &["--unordered"], 2, false);
}

#[test]
fn sigkill_with_quoted_newlines_in_csv_gives_byte_identical_output() {
    crash_case(1500, true, &[], 3, true);
}

/// A runner that is killed if the test fails half way, so that it does not outlive the test.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Worker processes are killed (SIGKILL) in the middle of records chosen at random, and the
/// output is the same as without kills. Each kill happens at a record, not at a moment: the
/// worker announces that it reached a chosen record and waits there, so the kills happen
/// however slow or loaded the machine is, exactly five of them, each under a record in
/// progress, and each restarted worker has answered records before the next one.
#[test]
fn workers_killed_at_random_do_not_change_the_output() {
    let data = workload(3000, false);
    let logs = Scratch::new();
    let log = logs.path("runner.log");
    let clean = Scratch::new();
    clean.write("in.csv", &data);
    // Five kills against six attempts per record: even a record charged by every kill
    // succeeds in the end.
    let args = run_args(&["--retries", "5", "--backoff", "1ms"]);
    spawn(clean.dir.path(), &args, None, &log).wait().unwrap();

    // Five good records (not the bad rows), at least 100 apart, chosen by a seeded draw.
    let mut rng = Rng(42);
    let mut stops: Vec<u64> = Vec::new();
    while stops.len() < 5 {
        let id = 100 + rng.below(2800);
        if id % 97 != 13 && stops.iter().all(|s| s.abs_diff(id) >= 100) {
            stops.push(id);
        }
    }
    let marks = Scratch::new();
    let list: Vec<String> = stops.iter().map(u64::to_string).collect();
    let worker = format!(
        "python3 {} {} {}",
        common::worker("primes_killable.py"),
        marks.dir.path().display(),
        list.join(",")
    );
    let mut args = args;
    let w = args.iter().position(|a| a == "-w").unwrap() + 1;
    args[w] = worker;

    let s = Scratch::new();
    s.write("in.csv", &data);
    let mut run = KillOnDrop(spawn(s.dir.path(), &args, None, &log));
    let child = &mut run.0;
    let mut pending = list.clone();
    let deadline = Instant::now() + Duration::from_secs(300);
    while !pending.is_empty() {
        // The stops are reached in any order (two workers); kill whichever is waiting.
        if let Some(i) = pending
            .iter()
            .position(|id| marks.path(&format!("kill-{id}")).exists())
        {
            let id = pending.remove(i);
            let pid = marks.read(&format!("kill-{id}"));
            marks.write(&format!("killed-{id}"), "");
            let killed = Command::new("kill")
                .args(["-9", pid.trim()])
                .status()
                .unwrap();
            assert!(killed.success(), "cannot kill worker {pid} at record {id}");
            continue;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "the run ended ({status:?}) before reaching records {pending:?}: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        assert!(
            Instant::now() < deadline,
            "records {pending:?} were not reached in 5 minutes"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let status = child.wait().unwrap();
    assert_eq!(
        status.code(),
        Some(1),
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert!(
        s.read("out.jsonl") == clean.read("out.jsonl"),
        "output differs"
    );
    // The same records fail for the same reasons. How many attempts a record took can
    // differ: a record whose worker was killed under it was charged an extra attempt.
    let strip = |text: String| -> Vec<serde_json::Value> {
        json_lines(&text)
            .into_iter()
            .map(|mut v| {
                let o = v.as_object_mut().unwrap();
                o.remove("attempts");
                o.remove("stderr_tail");
                v
            })
            .collect()
    };
    assert_eq!(
        strip(s.read("out.failures.jsonl")),
        strip(clean.read("out.failures.jsonl")),
        "dead letters differ"
    );
    // Every record a worker was killed under succeeded on its retry.
    let recovered = json_lines(&s.read("out.jsonl"))
        .iter()
        .filter(|v| list.contains(&v["id"].to_string()))
        .count();
    assert_eq!(recovered, 5);
}

#[test]
fn a_changed_input_or_command_is_refused_and_restart_starts_over() {
    let s = Scratch::new();
    s.write("in.csv", id_csv(30));
    // Leave an unfinished checkpoint behind.
    let out = s
        .herdsman()
        .env("HERDSMAN_FAULT", "before-rename")
        .args(["run", "-i", "in.csv", "-w", "cat", "-o", "out.jsonl"])
        .output()
        .unwrap();
    assert!(out.status.code().is_none(), "expected the injected crash");
    s.write("in.csv", id_csv(31));
    s.herdsman()
        .args(["run", "-i", "in.csv", "-w", "cat", "-o", "out.jsonl"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("input.0.size changed"))
        .stderr(predicate::str::contains("--restart"));
    s.write("in.csv", id_csv(30));
    s.herdsman()
        .args(["run", "-i", "in.csv", "-w", "cat -u", "-o", "out.jsonl"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("worker"));
    s.herdsman()
        .args([
            "run",
            "-i",
            "in.csv",
            "-w",
            "cat -u",
            "-o",
            "out.jsonl",
            "--restart",
        ])
        .assert()
        .success();
    assert_eq!(json_lines(&s.read("out.jsonl")).len(), 30);
}

#[test]
fn a_second_run_on_the_same_state_is_refused_at_once() {
    let s = Scratch::new();
    s.write("in.csv", id_csv(5));
    let worker = py_worker("no_read.py", &[]);
    let args = [
        "run",
        "-i",
        "in.csv",
        "-w",
        worker.as_str(),
        "-o",
        "out.jsonl",
        "-j",
        "1",
    ];
    let mut first = Command::new(assert_cmd::cargo::cargo_bin("herdsman"))
        .args(args)
        .current_dir(s.dir.path())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let state = s.path(".out.jsonl.herdsman/ledger.sqlite");
    let t = Instant::now();
    while !state.exists() && t.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    s.herdsman()
        .args(args)
        .timeout(Duration::from_secs(20))
        .assert()
        .code(2)
        .stderr(predicate::str::contains("another herdsman run"));
    first.kill().unwrap();
    first.wait().unwrap();
}

#[test]
fn a_finished_job_run_again_changes_nothing() {
    let s = Scratch::new();
    s.write("in.csv", id_csv(10));
    let args = ["run", "-i", "in.csv", "-w", "cat", "-o", "out.jsonl"];
    s.herdsman().args(args).assert().success();
    let before = s.read("out.jsonl");
    s.herdsman()
        .args(args)
        .assert()
        .success()
        .stderr(predicate::str::contains("already finished"));
    assert_eq!(s.read("out.jsonl"), before);
    // The output was deleted: say so instead of claiming there is nothing to do.
    std::fs::remove_file(s.path("out.jsonl")).unwrap();
    s.herdsman()
        .args(args)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("is gone"))
        .stderr(predicate::str::contains("--restart"));
}

fn flaky_args(marker: &Path, extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = vec![
        "run".into(),
        "-i".into(),
        "in.csv".into(),
        "-w".into(),
        py_worker("flaky.py", &[marker.to_str().unwrap()]),
        "--protocol".into(),
        "framed".into(),
        "-o".into(),
        "out.jsonl".into(),
        "--summary-json".into(),
        "s.json".into(),
        "--chunk-size".into(),
        "7".into(),
    ];
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

#[test]
fn retry_failed_folds_recovered_records_into_the_output() {
    let s = Scratch::new();
    s.write("in.csv", id_csv(40));
    let marker = s.write("broken", "");
    let out = s
        .herdsman()
        .args(flaky_args(&marker, &[]))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(json_lines(&s.read("out.failures.jsonl")).len(), 8);
    assert_eq!(json_lines(&s.read("out.jsonl")).len(), 32);
    // Still broken: nothing changes but the attempts.
    s.herdsman()
        .args(flaky_args(&marker, &["--retry-failed"]))
        .assert()
        .code(1);
    assert_eq!(json_lines(&s.read("out.failures.jsonl")).len(), 8);
    std::fs::remove_file(&marker).unwrap();
    s.herdsman()
        .args(flaky_args(&marker, &["--retry-failed"]))
        .assert()
        .success()
        .stderr(predicate::str::contains(
            "8 dead-lettered records: 8 now succeed",
        ));
    assert_eq!(s.read("out.failures.jsonl"), "");
    let mut ids: Vec<u64> = json_lines(&s.read("out.jsonl"))
        .iter()
        .map(|v| v["id"].as_str().unwrap().parse().unwrap())
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, (0..40).collect::<Vec<u64>>());
    let sum = s.accounting();
    assert_eq!(sum["total"]["records"], serde_json::json!(40));
    assert_eq!(sum["total"]["succeeded"], serde_json::json!(40));
}

#[test]
fn a_crash_inside_a_retry_pass_neither_loses_nor_duplicates() {
    for point in ["retry-after-journal", "retry-between-renames"] {
        let s = Scratch::new();
        s.write("in.csv", id_csv(30));
        let marker = s.write("broken", "");
        s.herdsman().args(flaky_args(&marker, &[])).assert().code(1);
        std::fs::remove_file(&marker).unwrap();
        let out = s
            .herdsman()
            .env("HERDSMAN_FAULT", point)
            .args(flaky_args(&marker, &["--retry-failed"]))
            .output()
            .unwrap();
        assert!(
            out.status.code().is_none(),
            "{point}: expected the injected crash"
        );
        // Any later run completes the swap first.
        s.herdsman()
            .args(flaky_args(&marker, &[]))
            .assert()
            .success()
            .stderr(predicate::str::contains("already finished"));
        assert_eq!(s.read("out.failures.jsonl"), "", "{point}");
        assert_eq!(json_lines(&s.read("out.jsonl")).len(), 30, "{point}");
    }
}

/// Unmounts the small file system of the disk-full test, whatever happens.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_is_a_clear_error_and_the_job_resumes_once_there_is_space() {
    let s = Scratch::new();
    let disk = s.path("disk");
    std::fs::create_dir(&disk).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&disk)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|st| st.success());
    if !mounted {
        eprintln!("note: cannot mount a tmpfs here (needs root); disk-full test skipped");
        return;
    }
    let _mount = Mount(disk.clone());
    s.write("in.csv", id_csv(20_000));
    // Leave about 300 KiB free: the output needs about 600 KiB.
    std::fs::write(disk.join("ballast"), vec![0u8; 724 * 1024]).unwrap();
    let args = [
        "run",
        "-i",
        "in.csv",
        "-w",
        "cat",
        "-o",
        "disk/out.jsonl",
        "--state",
        "state",
        "--chunk-size",
        "100",
        "--progress",
        "none",
    ];
    let out = s.herdsman().args(args).output().unwrap();
    // Exit code 4: an environment error.
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("No space left on device") || err.contains("space"),
        "{err}"
    );
    assert!(err.contains("out.jsonl"), "{err}");
    // The checkpoint is consistent and shows the committed progress.
    s.herdsman().args(["status", "state"]).assert().success();
    // Space is back: the same command resumes and finishes with the right output.
    std::fs::remove_file(disk.join("ballast")).unwrap();
    s.herdsman().args(args).assert().success();
    let clean = Scratch::new();
    clean.write("in.csv", id_csv(20_000));
    clean
        .herdsman()
        .args([
            "run",
            "-i",
            "in.csv",
            "-w",
            "cat",
            "-o",
            "out.jsonl",
            "--chunk-size",
            "100",
        ])
        .assert()
        .success();
    assert!(
        std::fs::read(disk.join("out.jsonl")).unwrap()
            == std::fs::read(clean.path("out.jsonl")).unwrap(),
        "output after a full disk differs from an uninterrupted run"
    );
}

/// Options that change which records fail or what the files hold are part of the job's
/// identity: resuming with a different `--workdir`, `--retries` or `--timeout` is refused
/// with a message naming the option; operational knobs may change.
#[test]
fn resuming_with_a_changed_workdir_retries_or_timeout_is_refused() {
    let s = Scratch::new();
    s.write("in.csv", id_csv(30));
    std::fs::create_dir(s.path("elsewhere")).unwrap();
    let base = ["run", "-i", "in.csv", "-w", "cat", "-o", "out.jsonl"];
    // Leave an unfinished checkpoint behind.
    let out = s
        .herdsman()
        .env("HERDSMAN_FAULT", "before-rename")
        .args(base)
        .args(["--workdir", "."])
        .output()
        .unwrap();
    assert!(out.status.code().is_none(), "expected the injected crash");
    for (changed, key) in [
        (&["--workdir", "elsewhere"][..], "workdir changed"),
        (&["--retries", "3"][..], "retries changed"),
        (&["--timeout", "5s"][..], "timeout changed"),
    ] {
        s.herdsman()
            .args(base)
            .args(changed)
            .assert()
            .code(2)
            .stderr(predicate::str::contains(key))
            .stderr(predicate::str::contains("--restart"));
    }
    // The same directory written another way, and knobs that do not change results, resume.
    s.herdsman()
        .args(base)
        .args([
            "--workdir",
            "./",
            "-j",
            "3",
            "--rate",
            "1000/second",
            "--window",
            "7",
        ])
        .assert()
        .success();
    assert_eq!(json_lines(&s.read("out.jsonl")).len(), 30);
}
