//! The job log written by its own thread, driven through the real binary: a run killed right
//! after a checkpoint commit and resumed leaves the same lines as a run never interrupted
//! (retries included), and a job log that cannot be written stops the run with a clear error
//! instead of hanging.
//!
//! The full device is made with `mknod` inside the test's own temporary directory (this needs
//! root; without it that test says so and returns), never taken from the real `/dev`.

use crate::common::{self, stderr, Scratch};
use crate::files::mknod;
use crate::observability::run_job;
use std::os::unix::fs::FileTypeExt;

/// A framed worker that sleeps 5 ms per record (so that a few hundred records span more than
/// one checkpoint), always fails the records whose id is 3 more than a multiple of 7
/// (retryable, so each of them has one line per attempt), and echoes the others. Whatever the
/// run, a record gets the same attempts with the same outcomes.
const FAIL_SOME: &str = r#"import json, sys, time
for line in sys.stdin:
    msg = json.loads(line)
    rid, rec = msg["id"], msg["record"]
    time.sleep(0.005)
    if int(rec["id"]) % 7 == 3:
        print(json.dumps({"id": rid, "error": "not this one", "retryable": True}))
    else:
        print(json.dumps({"id": rid, "output": rec}))
        print(json.dumps({"id": rid, "done": True}))
    sys.stdout.flush()
"#;

/// The columns of a job log line that do not depend on timing: record, file, line, worker,
/// outcome, kind and attempt (start and duration left out), one entry per line, in order.
fn timeless(s: &Scratch, name: &str) -> Vec<Vec<String>> {
    let text = s.read(name);
    if name.ends_with(".tsv") {
        let mut lines = text.lines();
        assert_eq!(
            lines.next(),
            Some("record\tfile\tline\tworker\tstart\tduration\toutcome\tkind\tattempt"),
            "{name}"
        );
        lines
            .map(|l| {
                let f: Vec<&str> = l.split('\t').collect();
                assert_eq!(f.len(), 9, "{name}: {l}");
                [0, 1, 2, 3, 6, 7, 8]
                    .iter()
                    .map(|&i| f[i].to_string())
                    .collect()
            })
            .collect()
    } else {
        text.lines()
            .map(|l| {
                let v: serde_json::Value =
                    serde_json::from_str(l).unwrap_or_else(|e| panic!("{name}: {e}: {l}"));
                [
                    "record", "file", "line", "worker", "outcome", "kind", "attempt",
                ]
                .iter()
                .map(|k| v[*k].to_string())
                .collect()
            })
            .collect()
    }
}

#[test]
fn a_joblog_resumed_after_a_kill_right_after_a_commit_equals_an_uninterrupted_runs() {
    for name in ["jobs.tsv", "jobs.jsonl"] {
        let args = [
            "run",
            "-i",
            "in.csv",
            "-w",
            "python3 w.py",
            "--protocol",
            "framed",
            "-o",
            "out.jsonl",
            "-j",
            "1",
            "--chunk-size",
            "10",
            "--retries",
            "2",
            "--backoff",
            "1ms",
            "--joblog",
            name,
        ];
        let scratch = || {
            let s = Scratch::new();
            s.write("w.py", FAIL_SOME);
            s.write("in.csv", common::id_csv(300));
            s
        };
        let whole = scratch();
        assert_eq!(run_job(&whole, &args, None).code(), Some(1), "{name}");
        let want = timeless(&whole, name);
        // 300 records, 43 of them failing on all 3 attempts.
        assert_eq!(want.len(), 300 + 43 * 2, "{name}");

        let resumed = scratch();
        // Killed right after its first commit: only committed lines may be in the job log,
        // and all of them must be (they were written and fsynced before the commit).
        let first = run_job(&resumed, &args, Some("after-commit"));
        assert!(!first.success(), "{name}: the first run was killed");
        let kept = timeless(&resumed, name);
        assert!(
            !kept.is_empty() && kept.len() < want.len(),
            "{name}: {} lines after the kill",
            kept.len()
        );
        assert_eq!(
            kept,
            want[..kept.len()],
            "{name}: the lines before the kill"
        );
        assert_eq!(run_job(&resumed, &args, None).code(), Some(1), "{name}");
        assert_eq!(timeless(&resumed, name), want, "{name}: after the resume");
        assert_eq!(resumed.read("out.jsonl"), whole.read("out.jsonl"), "{name}");
    }
}

#[test]
fn a_joblog_that_cannot_be_written_stops_the_run_with_a_clear_error() {
    for checkpoint in [true, false] {
        let s = Scratch::new();
        // A scratch node of the full device: every write fails with "no space left".
        if !mknod(&s.path("full"), 1, 7) {
            return;
        }
        // Far more lines than the job log buffers before its first write.
        s.write("in.csv", common::id_csv(30_000));
        let mut cmd = s.herdsman();
        cmd.args(["run", "-i", "in.csv", "-w", "cat", "-o", "out.jsonl"])
            .args(["--joblog", "full"]);
        if !checkpoint {
            cmd.arg("--no-checkpoint");
        }
        // `herdsman()` kills the run after a generous deadline: a hang fails below.
        let out = cmd.output().unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(4), "checkpoint {checkpoint}: {err}");
        assert!(
            err.contains("cannot write the job log full: No space left on device"),
            "{err}"
        );
        assert!(err.contains("give --joblog another path"), "{err}");
        assert!(
            !err.contains("panicked") && !err.contains("internal error"),
            "{err}"
        );
        assert!(
            std::fs::symlink_metadata(s.path("full")).is_ok_and(|m| m.file_type().is_char_device()),
            "the device node was replaced"
        );
        // The run did not finish: its output was not published.
        assert!(!s.path("out.jsonl").exists(), "checkpoint {checkpoint}");
    }
}

/// A lines worker that exits (once: a marker file remembers) when it reads the record with id
/// 2, and echoes the others.
const EXIT_ON_2: &str = r#"import json, os, sys
marker = sys.argv[1]
for line in sys.stdin:
    if json.loads(line)["id"] == 2 and not os.path.exists(marker):
        open(marker, "w").close()
        sys.exit(3)
    sys.stdout.write(line)
    sys.stdout.flush()
"#;

/// Seconds with three decimals, as the job log spells a start or a duration, in milliseconds.
fn millis(text: &str) -> u64 {
    let (s, ms) = text.split_once('.').unwrap_or_else(|| panic!("{text}"));
    assert_eq!(ms.len(), 3, "{text}");
    s.parse::<u64>().unwrap() * 1000 + ms.parse::<u64>().unwrap()
}

#[test]
fn each_attempt_line_has_its_own_worker_and_start_and_an_unreadable_record_none() {
    let s = Scratch::new();
    s.write("w.py", EXIT_ON_2);
    // The fifth line is not JSON: it fails without reaching a worker.
    let mut input = String::new();
    for id in 0..12 {
        input.push_str(&if id == 4 {
            "{not json\n".to_string()
        } else {
            format!("{{\"id\":{id}}}\n")
        });
    }
    s.write("in.jsonl", input);
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let out = s
        .herdsman()
        .args(["run", "-i", "in.jsonl", "-o", "out.jsonl", "-j", "2"])
        .args(["--retries", "2", "--backoff", "1ms", "--joblog", "jobs.tsv"])
        .args(["-w", "python3 w.py exited"])
        .output()
        .unwrap();
    let after = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let text = s.read("jobs.tsv");
    let lines: Vec<Vec<&str>> = text
        .lines()
        .skip(1)
        .map(|l| l.split('\t').collect())
        .collect();
    // 12 records; the one with id 2 takes two attempts.
    assert_eq!(lines.len(), 13, "{text}");
    let mut record_3 = Vec::new();
    for l in &lines {
        let (record, worker, start, duration) = (l[0], l[3], millis(l[4]), millis(l[5]));
        // Millisecond starts, cut (not rounded) from the clock.
        assert!(start + 1 >= before && start <= after, "{text}");
        match record {
            "5" => {
                assert_eq!((worker, duration), ("-", 0), "{text}");
                assert_eq!((l[6], l[7], l[8]), ("failed", "input_json", "1"), "{text}");
            }
            "3" => record_3.push(l),
            _ => {
                assert!(["1", "2"].contains(&worker), "{text}");
                assert_eq!((l[6], l[7], l[8]), ("succeeded", "-", "1"), "{text}");
            }
        }
    }
    assert_eq!(record_3.len(), 2, "{text}");
    let (first, second) = (record_3[0], record_3[1]);
    assert_eq!(
        (first[6], first[7], first[8]),
        ("failed", "worker_exited", "1")
    );
    assert_eq!((second[6], second[7], second[8]), ("succeeded", "-", "2"));
    assert!(["1", "2"].contains(&first[3]) && ["1", "2"].contains(&second[3]));
    // The retry's own start: after the first attempt ended (give or take the cut digits).
    assert!(
        millis(second[4]) + 1 >= millis(first[4]) + millis(first[5]),
        "{text}"
    );
}
