//! Nothing the user owns is destroyed: outputs that are not regular files, symbolic links,
//! existing files under a stopped run, paths that name the same file, a second run on the
//! same output, and environment errors (exit code 4).
//!
//! Device nodes are made with `mknod` inside the test's own temporary directory (this needs
//! root; without it those tests say so and return), never taken from the real `/dev`, except
//! `-o /dev/null`, whose promise is checked once the scratch-node tests pass.

use crate::common;

use std::io::Read;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;
use std::process::{Command as StdCommand, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;

/// Makes a character device node `major:minor` at `path`; false when not permitted.
pub(crate) fn mknod(path: &Path, major: u32, minor: u32) -> bool {
    let ok = StdCommand::new("mknod")
        .arg(path)
        .args(["c", &major.to_string(), &minor.to_string()])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("skipped: mknod is not permitted here (the device tests need root)");
    }
    ok
}

fn is_char_device(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_char_device())
}

/// Names in the scratch directory, to show that nothing was left beside an output.
fn listing(s: &Scratch) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(s.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn ids_of(text: &str) -> Vec<u64> {
    json_lines(text)
        .iter()
        .map(|v| v["id"].as_str().unwrap().parse().unwrap())
        .collect()
}

#[test]
fn a_device_output_is_written_in_place_and_never_replaced() {
    let s = Scratch::new();
    if !mknod(&s.path("null"), 1, 3) {
        return;
    }
    s.write("in.csv", id_csv(50));
    let out = s
        .herdsman()
        .args([
            "run",
            "-i",
            "in.csv",
            "-o",
            "null",
            "--summary-json",
            "s.json",
        ])
        .args(["-w", &py_worker("garbage_on.py", &["7"])])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        is_char_device(&s.path("null")),
        "the device node was replaced"
    );
    // No partial file, no checkpoint, no dead-letter file named after the device: the
    // failure goes where it goes for stdout output.
    assert_eq!(
        listing(&s),
        ["herdsman.failures.jsonl", "in.csv", "null", "s.json"],
        "{}",
        stderr(&out)
    );
    let sum = check_accounting(&s, "s.json", None, "herdsman.failures.jsonl");
    assert_eq!(sum["total"]["failed"], 1);
    assert_eq!(sum["total"]["succeeded"], 49);
}

#[test]
fn a_full_device_is_an_environment_error_not_a_panic() {
    let s = Scratch::new();
    if !mknod(&s.path("full"), 1, 7) {
        return;
    }
    s.write("in.csv", id_csv(2000));
    let out = s
        .herdsman()
        .args(["run", "-i", "in.csv", "-w", "cat", "-o", "full"])
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(err.contains("No space left on device"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        is_char_device(&s.path("full")),
        "the device node was replaced"
    );
    assert_eq!(listing(&s), ["full", "in.csv"]);
}

#[test]
fn a_fifo_output_is_written_in_place() {
    let s = Scratch::new();
    let fifo = s.path("fifo");
    assert!(StdCommand::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    s.write("in.csv", id_csv(300));
    let (tx, rx) = mpsc::channel();
    let reader_path = fifo.clone();
    // Opening a FIFO for reading blocks until a writer opens it; a leaked thread is fine if
    // the writer never comes (the assertion below then fails).
    std::thread::spawn(move || {
        let mut text = String::new();
        let r = std::fs::File::open(&reader_path).and_then(|mut f| f.read_to_string(&mut text));
        let _ = tx.send(r.map(|_| text));
    });
    let out = s
        .herdsman()
        .args(["run", "-i", "in.csv", "-w", "cat", "-o", "fifo", "-j", "3"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("nothing was written into the FIFO")
        .unwrap();
    assert_eq!(ids_of(&text), (0..300).collect::<Vec<u64>>());
    assert!(std::fs::symlink_metadata(&fifo)
        .unwrap()
        .file_type()
        .is_fifo());
    assert_eq!(listing(&s), ["fifo", "in.csv"]);
}

#[test]
fn a_symlinked_output_is_written_through_to_its_target() {
    let s = Scratch::new();
    s.write("in.csv", id_csv(20));
    std::fs::create_dir(s.path("data")).unwrap();
    s.write("data/real.jsonl", "old content\n");
    std::os::unix::fs::symlink("data/real.jsonl", s.path("link.jsonl")).unwrap();
    s.herdsman()
        .args(["run", "-i", "in.csv", "-w", "cat", "-o", "link.jsonl"])
        .assert()
        .code(0);
    assert!(std::fs::symlink_metadata(s.path("link.jsonl"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(
        ids_of(&s.read("data/real.jsonl")),
        (0..20).collect::<Vec<u64>>()
    );
    assert!(!s.path("link.jsonl.partial").exists());
    assert!(!s.path("data/real.jsonl.partial").exists());
}

#[test]
fn a_link_to_a_descriptor_like_dev_stdout_writes_to_it() {
    let s = Scratch::new();
    s.write("in.csv", id_csv(30));
    // What /dev/stdout is: a link to /proc/self/fd/1.
    std::os::unix::fs::symlink("/proc/self/fd/1", s.path("stdout")).unwrap();
    let out = s
        .herdsman()
        .args(["run", "-i", "in.csv", "-w", "cat", "-o", "stdout"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        ids_of(&String::from_utf8_lossy(&out.stdout)),
        (0..30).collect::<Vec<u64>>()
    );
    assert!(std::fs::symlink_metadata(s.path("stdout"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(listing(&s), ["in.csv", "stdout"]);
}

/// Checked after the scratch-node tests above: the common idiom for side-effect jobs.
#[test]
fn dev_null_output_works_and_leaves_dev_alone() {
    let s = Scratch::new();
    s.write("in.csv", id_csv(40));
    let out = s
        .herdsman()
        .args(["run", "-i", "in.csv", "-o", "/dev/null"])
        .args(["-w", &py_worker("garbage_on.py", &["3"])])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(is_char_device(Path::new("/dev/null")));
    assert!(!Path::new("/dev/null.failures.jsonl").exists());
    assert!(!Path::new("/dev/null.partial").exists());
    assert!(!Path::new("/dev/.null.herdsman").exists());
    assert_eq!(lines(&s.read("herdsman.failures.jsonl")).len(), 1);
}

/// A worker (lines protocol) that fails record `id` = 5 and echoes the others.
fn fails_on_5() -> String {
    py_worker("garbage_on.py", &["5"])
}

#[test]
fn a_stopped_run_that_cannot_resume_never_replaces_an_existing_output() {
    // --no-checkpoint, and stdin input (which cannot be resumed either).
    for stdin in [false, true] {
        let s = Scratch::new();
        s.write("in.csv", id_csv(200));
        s.write("out.jsonl", "precious\n");
        s.write("out.failures.jsonl", "precious failures\n");
        let mut cmd = s.herdsman();
        cmd.args(["run", "-w", &fails_on_5(), "-o", "out.jsonl", "-j", "1"])
            .args(["--max-errors", "1", "--summary-json", "s.json"]);
        if stdin {
            cmd.args(["-i", "-", "--format", "csv"])
                .write_stdin(id_csv(200));
        } else {
            cmd.args(["-i", "in.csv", "--no-checkpoint"]);
        }
        let out = cmd.output().unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(3), "{err}");
        assert_eq!(s.read("out.jsonl"), "precious\n", "stdin: {stdin}");
        assert_eq!(s.read("out.failures.jsonl"), "precious failures\n");
        // The finished records are kept, flushed and in order, and stderr says where.
        let kept = ids_of(&s.read("out.jsonl.partial"));
        assert_eq!(&kept[..5], [0, 1, 2, 3, 4], "{kept:?}");
        assert!(kept.windows(2).all(|w| w[0] < w[1]), "{kept:?}");
        assert!(!kept.contains(&5));
        assert_eq!(lines(&s.read("out.failures.jsonl.partial")).len(), 1);
        assert!(err.contains("out.jsonl.partial"), "{err}");
        assert!(err.contains("out.failures.jsonl.partial"), "{err}");
        let sum: serde_json::Value = serde_json::from_str(&s.read("s.json")).unwrap();
        assert_eq!(sum["total"]["outputs"].as_u64().unwrap(), kept.len() as u64);
    }
}

#[test]
fn a_stopped_run_that_cannot_resume_puts_its_records_in_a_missing_output_and_says_so() {
    let s = Scratch::new();
    s.write("in.csv", id_csv(200));
    let out = s
        .job(
            &fails_on_5(),
            &["-j", "1", "--max-errors", "1", "--no-checkpoint"],
        )
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    let kept = ids_of(&s.read("out.jsonl"));
    assert_eq!(&kept[..5], [0, 1, 2, 3, 4], "{kept:?}");
    assert!(!s.path("out.jsonl.partial").exists());
    let told: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("stopped early"))
        .collect();
    assert_eq!(told.len(), 2, "{err}");
    assert!(told[0].contains("out.jsonl"), "{err}");
    assert!(told[1].contains("out.failures.jsonl"), "{err}");
    s.accounting();
}

#[test]
fn paths_naming_the_same_file_are_refused_before_anything_is_written() {
    let s = Scratch::new();
    let input = id_csv(10);
    s.write("in.csv", &input);
    s.write("in.jsonl", "{\"id\":1}\n");
    std::os::unix::fs::symlink("in.csv", s.path("alias.csv")).unwrap();
    std::fs::create_dir(s.path("sub")).unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["-i", "in.jsonl", "-o", "in.jsonl"],
            "the input in.jsonl",
        ),
        (
            vec!["-i", "in.jsonl", "-o", "./sub/../in.jsonl"],
            "the input in.jsonl",
        ),
        (
            vec!["-i", "in.csv", "-o", "x.jsonl", "--failures", "./x.jsonl"],
            "the dead-letter file",
        ),
        (
            vec!["-i", "in.csv", "-o", "x.jsonl", "--summary-json", "in.csv"],
            "the summary file",
        ),
        (
            vec![
                "-i",
                "in.csv",
                "-o",
                "alias.csv",
                "--output-format",
                "jsonl",
            ],
            "the output",
        ),
        (
            vec!["-i", "in.csv", "-o", "st/out.jsonl", "--state", "st"],
            "inside the state directory",
        ),
        (
            vec![
                "-i",
                "in.csv",
                "-o",
                "x.jsonl",
                "--failures",
                "st/f.jsonl",
                "--state",
                "./st",
            ],
            "inside the state directory",
        ),
        (
            vec!["-i", "in.csv", "-o", "x.jsonl", "--state", "alias.csv"],
            "the state directory",
        ),
        (
            vec![
                "-i",
                "in.csv",
                "-o",
                "x.jsonl",
                "--summary-json",
                "x.jsonl.partial",
            ],
            "the summary file",
        ),
    ];
    for (args, says) in cases {
        let before = listing(&s);
        let out = s
            .herdsman()
            .arg("run")
            .args(["-w", "cat"])
            .args(&args)
            .output()
            .unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(
            err.contains("same file") || err.contains("inside"),
            "{args:?}: {err}"
        );
        assert_eq!(listing(&s), before, "{args:?} wrote something");
        assert_eq!(s.read("in.csv"), input);
        assert_eq!(s.read("in.jsonl"), "{\"id\":1}\n");
    }
}

#[test]
fn two_runs_on_one_output_with_different_state_cannot_both_run() {
    let s = Scratch::new();
    s.write("in.csv", id_csv(20));
    // Holds its first record until `go` exists, after saying it started.
    s.write(
        "hold.py",
        "import os, sys, time\n\
         first = True\n\
         for line in sys.stdin:\n\
         \x20   if first:\n\
         \x20       open('started', 'w').close()\n\
         \x20       while not os.path.exists('go'):\n\
         \x20           time.sleep(0.02)\n\
         \x20       first = False\n\
         \x20   sys.stdout.write(line)\n\
         \x20   sys.stdout.flush()\n",
    );
    let bin = assert_cmd::cargo::cargo_bin("herdsman");
    let mut first = StdCommand::new(&bin)
        .current_dir(s.dir.path())
        .args(["run", "-i", "in.csv", "-w", "python3 hold.py", "-j", "1"])
        .args(["-o", "out.jsonl", "--state", "state-a"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !s.path("started").exists() {
        if Instant::now() > deadline || first.try_wait().unwrap().is_some() {
            std::fs::write(s.path("go"), "").unwrap();
            let _ = first.kill();
            let mut err = String::new();
            let _ = first.stderr.take().unwrap().read_to_string(&mut err);
            panic!("the first run did not start its worker: {err}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // The same output under another spelling, with another state directory.
    let out = s
        .herdsman()
        .args(["run", "-i", "in.csv", "-w", "cat", "-o", "./out.jsonl"])
        .args(["--state", "state-b"])
        .output()
        .unwrap();
    std::fs::write(s.path("go"), "").unwrap();
    let mut first_err = String::new();
    first
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut first_err)
        .unwrap();
    let first_ok = first.wait().unwrap().success();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains(&format!("pid {}", first.id())), "{err}");
    assert!(err.contains("out.jsonl"), "{err}");
    assert!(first_ok, "{first_err}");
    assert_eq!(ids_of(&s.read("out.jsonl")), (0..20).collect::<Vec<u64>>());
    assert!(!s.path(".out.jsonl.herdsman-lock").exists());
    // The lock is the output's and ends with its run: now another run may write it.
    s.herdsman()
        .args(["run", "-i", "in.csv", "-w", "cat", "-o", "out.jsonl"])
        .args(["--state", "state-b"])
        .assert()
        .code(0);
}

#[test]
fn environment_errors_exit_4_before_any_work() {
    let s = Scratch::new();
    s.write("in.csv", id_csv(10));
    std::fs::create_dir(s.path("adir")).unwrap();
    let check = |args: &[&str], says: &str| {
        let out = s.herdsman().arg("run").args(args).output().unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(4), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: one sentence: {err}");
    };
    // -o is a directory.
    check(
        &["-i", "in.csv", "-w", "cat", "-o", "adir"],
        "is a directory",
    );
    assert!(s.path("adir").is_dir());
    assert_eq!(listing(&s), ["adir", "in.csv"]);
    // The summary's directory does not exist: refused before the output is touched.
    check(
        &[
            "-i",
            "in.csv",
            "-w",
            "cat",
            "-o",
            "out.jsonl",
            "--summary-json",
            "nodir/s.json",
        ],
        "does not exist",
    );
    assert_eq!(listing(&s), ["adir", "in.csv"]);
    // The output's directory cannot be created (a file is in the way).
    s.write("afile", "");
    check(
        &["-i", "in.csv", "-w", "cat", "-o", "afile/out.jsonl"],
        "Not a directory",
    );
}

#[test]
fn a_truncated_gzip_input_exits_4_and_names_the_file() {
    let s = Scratch::new();
    let gz = StdCommand::new("python3")
        .args([
            "-c",
            "import gzip,sys; sys.stdout.buffer.write(gzip.compress(('id,value\\n' + ''.join(f'{i},{i}\\n' for i in range(100000))).encode()))",
        ])
        .output()
        .unwrap()
        .stdout;
    assert!(gz.len() > 1000);
    s.write("cut.csv.gz", &gz[..gz.len() / 2]);
    let out = s
        .herdsman()
        .args(["run", "-i", "cut.csv.gz", "-w", "cat", "-o", "cut.jsonl"])
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(err.contains("cut.csv.gz"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    // Without a checkpoint nothing will resume: the records read before the damage are kept.
    let out = s
        .herdsman()
        .args(["run", "-i", "cut.csv.gz", "-w", "cat", "-o", "kept.jsonl"])
        .args(["--no-checkpoint", "--chunk-size", "100"])
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(4), "{err}");
    let kept = ids_of(&s.read("kept.jsonl"));
    assert!(!kept.is_empty(), "{err}");
    assert_eq!(kept, (0..kept.len() as u64).collect::<Vec<u64>>());
    assert!(err.contains("kept.jsonl"), "{err}");
}

#[test]
fn an_input_that_cannot_be_opened_exits_4_before_any_work() {
    let s = Scratch::new();
    // A device node with no driver behind it: open(2) fails with ENXIO, even for root.
    if !mknod(&s.path("bad.csv"), 0, 0) {
        return;
    }
    let out = s
        .herdsman()
        .args(["run", "-i", "bad.csv", "-w", "cat", "-o", "out.jsonl"])
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(err.contains("bad.csv"), "{err}");
    assert_eq!(listing(&s), ["bad.csv"]);
}

/// Root writes anywhere: when the tests run as root, herdsman runs as `nobody`.
fn herdsman_unprivileged(dir: &Path) -> StdCommand {
    let bin = assert_cmd::cargo::cargo_bin("herdsman");
    let root = std::fs::metadata("/proc/self").is_ok_and(|m| {
        use std::os::unix::fs::MetadataExt;
        m.uid() == 0
    });
    let mut cmd = if root {
        let mut c = StdCommand::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(bin);
        c
    } else {
        StdCommand::new(bin)
    };
    cmd.current_dir(dir);
    cmd
}

#[test]
fn an_unwritable_directory_exits_4_before_any_work() {
    use std::os::unix::fs::PermissionsExt;
    let s = Scratch::new();
    s.write("in.csv", id_csv(10));
    std::fs::create_dir(s.path("ro")).unwrap();
    let chmod = |p: &Path, mode: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    chmod(s.dir.path(), 0o777);
    chmod(&s.path("ro"), 0o555);
    for args in [
        &["-o", "ro/out.jsonl"][..],
        &["-o", "out.jsonl", "--summary-json", "ro/s.json"][..],
    ] {
        let out = herdsman_unprivileged(s.dir.path())
            .args(["run", "-i", "in.csv", "-w", "cat"])
            .args(args)
            .output()
            .unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(4), "{args:?}: {err}");
        assert!(err.contains("ro"), "{err}");
        assert_eq!(std::fs::read_dir(s.path("ro")).unwrap().count(), 0);
        assert_eq!(
            listing(&s),
            ["in.csv", "ro"],
            "{args:?}: work started: {err}"
        );
    }
    // An input without read permission.
    s.write("secret.csv", id_csv(3));
    chmod(&s.path("secret.csv"), 0o000);
    let out = herdsman_unprivileged(s.dir.path())
        .args(["run", "-i", "secret.csv", "-w", "cat", "-o", "out.jsonl"])
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(err.contains("secret.csv"), "{err}");
    assert_eq!(
        listing(&s),
        ["in.csv", "ro", "secret.csv"],
        "work started: {err}"
    );
}

#[test]
fn sigterm_on_a_run_without_checkpoint_keeps_an_existing_output() {
    let s = Scratch::new();
    s.write("in.csv", id_csv(200));
    s.write("out.jsonl", "precious\n");
    // Echoes records; holds record 10 until `go` exists, after saying it got there.
    s.write(
        "hold.py",
        "import json, os, sys, time\n\
         for line in sys.stdin:\n\
         \x20   if json.loads(line)['id'] == '10':\n\
         \x20       open('started', 'w').close()\n\
         \x20       while not os.path.exists('go'):\n\
         \x20           time.sleep(0.02)\n\
         \x20   sys.stdout.write(line)\n\
         \x20   sys.stdout.flush()\n",
    );
    let mut run = StdCommand::new(assert_cmd::cargo::cargo_bin("herdsman"))
        .current_dir(s.dir.path())
        .args(["run", "-i", "in.csv", "-w", "python3 hold.py", "-j", "1"])
        .args(["-o", "out.jsonl", "--no-checkpoint", "--window", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !s.path("started").exists() {
        if Instant::now() > deadline || run.try_wait().unwrap().is_some() {
            let _ = run.kill();
            panic!("the run never reached record 10");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(StdCommand::new("kill")
        .args(["-TERM", &run.id().to_string()])
        .status()
        .unwrap()
        .success());
    // Let the signal land before the record in flight is released.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut err = String::new();
    let mut pipe = run.stderr.take().unwrap();
    let mut buf = [0u8; 4096];
    while !err.contains("stopping") {
        assert!(Instant::now() < deadline, "no stop notice: {err}");
        let n = pipe.read(&mut buf).unwrap();
        assert!(n > 0, "stderr closed early: {err}");
        err.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    std::fs::write(s.path("go"), "").unwrap();
    pipe.read_to_string(&mut err).unwrap();
    let status = run.wait().unwrap();
    // 128 + SIGTERM.
    assert_eq!(status.code(), Some(143), "{err}");
    assert_eq!(s.read("out.jsonl"), "precious\n", "{err}");
    let kept = ids_of(&s.read("out.jsonl.partial"));
    assert_eq!(kept, (0..kept.len() as u64).collect::<Vec<u64>>(), "{err}");
    assert!(kept.len() >= 11, "the record in flight was lost: {kept:?}");
    assert!(err.contains("out.jsonl.partial"), "{err}");
}

#[test]
fn a_checkpointed_job_with_dead_letters_to_a_device_resumes() {
    let s = Scratch::new();
    if !mknod(&s.path("null"), 1, 3) {
        return;
    }
    s.write("in.csv", id_csv(50));
    let args = [
        "run",
        "-i",
        "in.csv",
        "-o",
        "out.jsonl",
        "--failures",
        "null",
        "--chunk-size",
        "10",
        "-j",
        "1",
    ];
    let worker = py_worker("garbage_on.py", &["3"]);
    // Killed right after the first checkpoint, which holds a dead letter.
    let out = s
        .herdsman()
        .args(args)
        .args(["-w", &worker])
        .env("HERDSMAN_FAULT", "after-commit")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), None, "{}", stderr(&out));
    let out = s
        .herdsman()
        .args(args)
        .args(["-w", &worker])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(is_char_device(&s.path("null")));
    let ids = ids_of(&s.read("out.jsonl"));
    assert_eq!(ids, (0..50).filter(|&i| i != 3).collect::<Vec<u64>>());
    assert!(!s.path("null.partial").exists());
}
