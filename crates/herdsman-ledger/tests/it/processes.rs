//! Cross-process behaviour: the lock held by another process, and durability when the writing
//! process is killed with SIGKILL at an arbitrary moment.
//!
//! The child processes are this test binary itself, re-run on the ignored `child_entry` test
//! with an environment variable naming the role to play.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};

use herdsman_ledger::{
    ChunkCommit, Counts, JobIdentity, Ledger, LedgerError, Opened, Position, ResumePoint,
    SqliteLedger, StateDir, Token,
};

/// A position token as a text format might make one: a byte offset and a line.
fn tok(offset: u64, line: u64) -> Token {
    let mut b = offset.to_le_bytes().to_vec();
    b.extend(line.to_le_bytes());
    Token::new(&b).unwrap()
}

const ROLE: &str = "HERDSMAN_LEDGER_TEST_ROLE";
const DIR: &str = "HERDSMAN_LEDGER_TEST_DIR";
const MAX_CHUNKS: u64 = 100_000;

fn identity() -> JobIdentity {
    JobIdentity::new()
        .with("input.0.path", "in.jsonl")
        .with("chunk_records", "3")
}

/// The output lines of chunk `k`: between 1 and 4 lines, deterministic.
fn chunk_output(k: u64) -> String {
    (0..(k % 4 + 1))
        .map(|j| format!("{{\"chunk\":{k},\"line\":{j}}}\n"))
        .collect()
}

/// The commit for chunk `k`, given where the output file ended after appending it.
fn chunk_commit(k: u64, output_end: u64) -> ChunkCommit {
    ChunkCommit {
        chunk: k,
        start: Position {
            file_index: 0,
            seq: k * 3,
            token: tok(k * 30, k * 3),
        },
        end: Position {
            file_index: 0,
            seq: k * 3 + 3,
            token: tok(k * 30 + 30, k * 3 + 3),
        },
        counts: Counts {
            records: 3,
            ok: k % 4 + 1,
            failed: 3 - (k % 4 + 1).min(3),
            filtered: 0,
            outputs: k % 4 + 1,
            retries: k % 2,
        },
        output_end,
        failures_end: 0,
    }
}

/// The run a child performs: resume (truncating the partial output to the committed length),
/// then append-fsync-commit chunks up to `limit`, printing `COMMITTED k` after each commit
/// returns if `report`.
fn run_writer(dir: &Path, limit: u64, report: bool) {
    let state = StateDir::open(dir).unwrap();
    let mut ledger = SqliteLedger::open(&state).unwrap();
    let commits = match ledger.open_job(&identity()).unwrap() {
        Opened::Fresh => vec![],
        Opened::Resumed { commits } => commits,
        Opened::Finished { .. } => panic!("the job never finishes"),
    };
    let resume = ResumePoint::from_commits(&commits);
    assert!(resume.committed_after.is_empty(), "commits are in order");
    let out_path = dir.join("out.partial");
    let mut out = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&out_path)
        .unwrap();
    out.set_len(resume.output_end).unwrap();
    let mut stdout = std::io::stdout().lock();
    let mut start = resume.next_chunk;
    while start < limit {
        // Chunks are committed in batches of 1 to 3, fixed by the batch's first chunk, with
        // one fsync of the output per batch.
        let batch_end = batch_end(start).min(limit);
        let mut batch = Vec::new();
        for k in start..batch_end {
            out.write_all(chunk_output(k).as_bytes()).unwrap();
            batch.push(chunk_commit(k, out.metadata().unwrap().len()));
        }
        out.sync_all().unwrap();
        if batch.len() == 1 {
            ledger.commit_chunk(&batch[0]).unwrap();
        } else {
            ledger.commit_chunks(&batch).unwrap();
        }
        if report {
            writeln!(stdout, "COMMITTED {}", batch_end - 1).unwrap();
            stdout.flush().unwrap();
        }
        start = batch_end;
    }
}

/// The chunk after the batch that starts at `start`.
fn batch_end(start: u64) -> u64 {
    start + start % 3 + 1
}

/// The first batch boundary at or after `n`.
fn boundary_at_least(n: u64) -> u64 {
    let mut b = 0;
    while b < n {
        b = batch_end(b);
    }
    b
}

fn hold_lock(dir: &Path) {
    let _state = StateDir::open(dir).unwrap();
    println!("LOCKED");
    std::io::stdout().flush().unwrap();
    // Hold the lock until the parent closes stdin (or kills this process).
    let mut sink = Vec::new();
    std::io::stdin().read_to_end(&mut sink).unwrap();
}

/// Entry point of the child processes. Run directly (`--include-ignored`), it performs a short
/// uninterrupted writer run and checks it.
#[test]
#[ignore = "entry point of the child processes spawned by the other tests in this file"]
fn child_entry() {
    match (std::env::var(ROLE).ok(), std::env::var_os(DIR)) {
        (Some(role), Some(dir)) if role == "writer" => {
            run_writer(Path::new(&dir), MAX_CHUNKS, true)
        }
        (Some(role), Some(dir)) if role == "hold_lock" => hold_lock(Path::new(&dir)),
        _ => {
            let tmp = tempfile::tempdir().unwrap();
            run_writer(tmp.path(), 6, false);
            let (m, _) = check_consistent(tmp.path());
            assert_eq!(m, 6);
        }
    }
}

fn spawn_child(role: &str, dir: &Path) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "processes::child_entry",
            "--exact",
            "--ignored",
            "--nocapture",
        ])
        .env(ROLE, role)
        .env(DIR, dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

/// Reads the child's stdout until a line starting with `prefix` appears; returns the line.
fn wait_for_line(
    lines: &mut impl Iterator<Item = std::io::Result<String>>,
    prefix: &str,
) -> String {
    for line in lines {
        let line = line.unwrap();
        if line.starts_with(prefix) {
            return line;
        }
    }
    panic!("the child exited before printing {prefix:?}");
}

/// Checks that the ledger holds exactly chunks `0..m` with the expected contents, and that the
/// output file holds at least their bytes, exactly as an uninterrupted run writes them.
/// Returns `m` and the committed output length.
fn check_consistent(dir: &Path) -> (u64, u64) {
    let view = SqliteLedger::open_read_only(dir).unwrap();
    let commits = view.status().unwrap().commits;
    let mut expected_out = String::new();
    for (i, c) in commits.iter().enumerate() {
        let k = i as u64;
        expected_out.push_str(&chunk_output(k));
        assert_eq!(c, &chunk_commit(k, expected_out.len() as u64), "chunk {k}");
    }
    let out = std::fs::read(dir.join("out.partial")).unwrap_or_default();
    assert!(
        out.len() >= expected_out.len(),
        "committed bytes are on disk"
    );
    assert_eq!(&out[..expected_out.len()], expected_out.as_bytes());
    // Batches commit all or nothing: the committed prefix ends at a batch boundary.
    let m = commits.len() as u64;
    assert_eq!(
        boundary_at_least(m),
        m,
        "a batch was committed only in part"
    );
    (m, expected_out.len() as u64)
}

fn lines_of(child: &mut Child) -> std::io::Lines<BufReader<ChildStdout>> {
    BufReader::new(child.stdout.take().unwrap()).lines()
}

#[test]
fn lock_held_by_another_process_is_refused_at_once_and_freed_when_it_dies() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    let mut child = spawn_child("hold_lock", &dir);
    let mut lines = lines_of(&mut child);
    wait_for_line(&mut lines, "LOCKED");

    let err = StateDir::open(&dir).unwrap_err();
    match &err {
        LedgerError::Locked { holder_pid, .. } => assert_eq!(*holder_pid, Some(child.id())),
        other => panic!("expected Locked, got {other:?}"),
    }
    assert!(err.to_string().contains(&format!("(pid {})", child.id())));

    child.kill().unwrap(); // SIGKILL: no destructor runs, the kernel drops the lock.
    child.wait().unwrap();
    let state = StateDir::open(&dir).unwrap();
    // The new holder's pid replaces the dead one's.
    drop(state);
    let pid = std::fs::read_to_string(dir.join(herdsman_ledger::LOCK_FILE_NAME)).unwrap();
    assert_eq!(pid.trim(), std::process::id().to_string());
}

#[test]
fn sigkill_during_commits_leaves_a_consistent_prefix_and_resume_continues_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let dir: PathBuf = tmp.path().join("state");
    let mut committed_before = 0u64;
    // Kill after a different number of acknowledged commits each round.
    for (round, wait_for) in [5u64, 13, 2].into_iter().enumerate() {
        let mut child = spawn_child("writer", &dir);
        let mut lines = lines_of(&mut child);
        let target = committed_before + wait_for;
        let mut acknowledged = None;
        while acknowledged.is_none_or(|k| k + 1 < target) {
            let line = wait_for_line(&mut lines, "COMMITTED ");
            acknowledged = Some(line["COMMITTED ".len()..].parse::<u64>().unwrap());
        }
        // While the child keeps committing, a read-only view sees a consistent prefix.
        check_consistent(&dir);
        child.kill().unwrap();
        child.wait().unwrap();

        let (m, _) = check_consistent(&dir);
        assert!(
            m >= target,
            "round {round}: {target} commits were acknowledged but only {m} survived"
        );
        committed_before = m;
    }
    // A final resume that runs to a fixed end gives exactly an uninterrupted run's output.
    let end = boundary_at_least(committed_before + 3);
    run_writer(&dir, end, false);
    assert_eq!(check_consistent(&dir).0, end);
    let fresh = tmp.path().join("uninterrupted");
    run_writer(&fresh, end, false);
    let read = |d: &Path| {
        let mut out = Vec::new();
        File::open(d.join("out.partial"))
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        out
    };
    assert_eq!(read(&dir), read(&fresh));
    assert_eq!(
        SqliteLedger::open_read_only(&dir)
            .unwrap()
            .status()
            .unwrap()
            .commits,
        SqliteLedger::open_read_only(&fresh)
            .unwrap()
            .status()
            .unwrap()
            .commits
    );
}

/// The descriptor numbers of this process's open files whose path is `path`.
fn fds_open_on(path: &Path) -> Vec<i32> {
    let want = std::fs::canonicalize(path).unwrap();
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| {
            let e = e.ok()?;
            let target = std::fs::read_link(e.path()).ok()?;
            (target == want).then(|| e.file_name().to_str()?.parse().ok())?
        })
        .collect()
}

#[test]
fn a_child_sharing_the_lock_file_does_not_keep_the_directory_locked_after_drop() {
    // A child process started while the lock is held shares the open lock file for a moment
    // (between fork and exec; forever if it inherits it). Dropping the state directory must
    // release the lock anyway, or a run that just finished blocks the next one.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    let state = StateDir::open(&dir).unwrap();
    let ledger = SqliteLedger::open(&state).unwrap();
    let fds = fds_open_on(&dir.join(herdsman_ledger::LOCK_FILE_NAME));
    assert!(!fds.is_empty());
    let mut cmd = Command::new("sleep");
    cmd.arg("60");
    // SAFETY: fcntl is async-signal-safe; only descriptors of this process are touched.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(move || {
            for &fd in &fds {
                if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    drop(ledger);
    drop(state);
    let reopened = StateDir::open(&dir);
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(reopened.is_ok(), "{reopened:?}");
}
