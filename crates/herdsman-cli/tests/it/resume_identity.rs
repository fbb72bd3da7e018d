//! What makes a checkpoint "the same job": inputs by canonical path and content, the files
//! the worker names by content, and a checkpoint that kept nothing gives way to a corrected
//! configuration.

use crate::common;

use common::*;
use predicates::prelude::*;

/// A job directory with a CSV, an echo worker script and a job file that names both
/// relative to itself, plus an unrelated sibling directory to start runs from.
fn job_dir(s: &Scratch) {
    std::fs::create_dir_all(s.path("job")).unwrap();
    std::fs::create_dir_all(s.path("elsewhere")).unwrap();
    s.write("job/data.csv", id_csv(40));
    s.write(
        "job/echo.py",
        "import sys\nfor line in sys.stdin:\n    sys.stdout.write(line)\n    sys.stdout.flush()\n",
    );
    s.write(
        "job/job.toml",
        "input = \"data.csv\"\nworker = \"python3 echo.py\"\nworkdir = \".\"\noutput = \"out.jsonl\"\nchunk-size = 10\nprogress = \"none\"\n",
    );
}

#[test]
fn the_same_job_from_another_directory_or_spelling_is_recognised() {
    let s = Scratch::new();
    job_dir(&s);
    s.herdsman()
        .current_dir(s.path("job"))
        .args(["run", "job.toml"])
        .assert()
        .success();
    assert_eq!(lines(&s.read("job/out.jsonl")).len(), 40);
    let abs = s.path("job/job.toml").display().to_string();
    for (dir, job) in [
        ("job", "./job.toml"),
        ("elsewhere", "../job/job.toml"),
        ("elsewhere", abs.as_str()),
        ("job", "../elsewhere/../job/job.toml"),
    ] {
        s.herdsman()
            .current_dir(s.path(dir))
            .args(["run", job])
            .assert()
            .success()
            .stderr(predicate::str::contains("already finished"))
            .stderr(predicate::str::contains("changed").not());
    }
}

#[test]
fn the_same_flags_with_other_spellings_of_the_paths_resume() {
    let s = Scratch::new();
    job_dir(&s);
    let worker = format!("python3 {}", s.path("job/echo.py").display());
    s.herdsman()
        .current_dir(s.path("job"))
        .args(["run", "-i", "data.csv", "-o", "out.jsonl", "-w", &worker])
        .assert()
        .success();
    s.herdsman()
        .current_dir(s.path("elsewhere"))
        .args([
            "run",
            "-i",
            "../job/./data.csv",
            "-o",
            "../job/out.jsonl",
            "-w",
            &worker,
            "--workdir",
            "../job",
        ])
        .assert()
        .success()
        .stderr(predicate::str::contains("already finished"));
}

#[test]
fn an_edited_worker_script_is_reported_as_a_change() {
    let s = Scratch::new();
    job_dir(&s);
    s.herdsman()
        .current_dir(s.path("job"))
        .args(["run", "job.toml"])
        .assert()
        .success();
    s.write(
        "job/echo.py",
        "import sys\nfor line in sys.stdin:\n    print(line, end='', flush=True)\n",
    );
    let script = s.path("job/echo.py").canonicalize().unwrap();
    s.herdsman()
        .current_dir(s.path("elsewhere"))
        .args(["run", "../job/job.toml"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("the job changed"))
        .stderr(predicate::str::contains(format!(
            "script {} changed",
            script.display()
        )))
        .stderr(predicate::str::contains("--restart"));
}

#[test]
fn a_mistake_that_kept_no_records_is_fixed_without_restart() {
    let s = Scratch::new();
    job_dir(&s);
    // A typo in the worker: every record fails, and the run stops before any chunk of the
    // 40 records (one chunk of 100) is committed.
    s.herdsman()
        .current_dir(s.path("job"))
        .args([
            "run",
            "-i",
            "data.csv",
            "-o",
            "out.jsonl",
            "-w",
            "python3 ehco.py",
            "--chunk-size",
            "100",
            "--max-errors",
            "1",
            "--progress",
            "none",
        ])
        .assert()
        .failure();
    let out = s
        .herdsman()
        .current_dir(s.path("job"))
        .args([
            "run",
            "-i",
            "data.csv",
            "-o",
            "out.jsonl",
            "-w",
            "python3 echo.py",
            "--chunk-size",
            "100",
            "--progress",
            "none",
        ])
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("the job changed since the last run, which kept no records"));
    assert!(err.contains("worker changed from"), "{err}");
    assert_eq!(lines(&s.read("job/out.jsonl")).len(), 40);
    assert!(
        !s.path("job/out.failures.jsonl").exists() || s.read("job/out.failures.jsonl").is_empty()
    );
}

#[test]
fn a_changed_job_with_committed_records_still_needs_restart() {
    let s = Scratch::new();
    job_dir(&s);
    s.herdsman()
        .current_dir(s.path("job"))
        .args(["run", "job.toml"])
        .assert()
        .success();
    s.herdsman()
        .current_dir(s.path("job"))
        .args(["run", "job.toml", "--retries", "7"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("retries changed from"));
}

#[test]
fn files_named_after_the_script_are_not_part_of_the_job() {
    let s = Scratch::new();
    job_dir(&s);
    s.write("job/notes.txt", "one");
    let run = |s: &Scratch| {
        s.herdsman()
            .current_dir(s.path("job"))
            .args(["run", "job.toml", "-w", "python3 -u echo.py notes.txt"])
            .assert()
            .success()
    };
    run(&s);
    // A data or marker file the worker reads may change as the job runs.
    s.write("job/notes.txt", "two, longer");
    run(&s).stderr(predicate::str::contains("already finished"));
}
