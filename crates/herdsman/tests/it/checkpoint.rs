//! Resumable collected maps: a run that stopped part way is started again and only the
//! items without a recorded success run.
#![cfg(feature = "checkpoint")]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use herdsman::checkpoint::{Checkpoint, CheckpointError};
use herdsman::StopToken;

fn square_or_fail(fail_from: u64) -> impl Fn(u64) -> Result<u64, String> + Send + Sync {
    move |x| {
        if x >= fail_from {
            Err(format!("{x} failed"))
        } else {
            Ok(x * x)
        }
    }
}

#[test]
fn a_second_run_only_runs_what_the_first_did_not_finish() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.ckpt");
    // First run: items 0..60 succeed, the rest fail (say, the service went down).
    let ckpt = Checkpoint::<u64, u64>::open(&path).unwrap();
    let first = ckpt.map(0..100u64, square_or_fail(60)).workers(3).collect();
    ckpt.sync().unwrap();
    assert_eq!(first.success_count(), 60);
    assert_eq!(ckpt.recorded(), 60);

    // Second run: f runs only for the 40 items that failed.
    let calls = Arc::new(AtomicUsize::new(0));
    let c = Arc::clone(&calls);
    let ckpt = Checkpoint::<u64, u64>::open(&path).unwrap();
    assert_eq!(ckpt.done(), 60);
    let second = ckpt
        .map(0..100u64, move |x| {
            c.fetch_add(1, Ordering::SeqCst);
            Ok::<_, String>(x * x)
        })
        .workers(3)
        .collect();
    ckpt.sync().unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 40);
    let want: Vec<u64> = (0..100u64).map(|x| x * x).collect();
    assert_eq!(second.into_values().unwrap(), want);
}

#[test]
fn a_stopped_run_resumes_with_identical_results() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stop.ckpt");
    let stop = StopToken::new();
    let s = stop.clone();
    let ckpt = Checkpoint::<u64, String>::open(&path).unwrap();
    let first = ckpt
        .map(0..500u64, move |x| {
            if x == 200 {
                s.stop();
            }
            Ok::<_, String>(format!("item-{x}"))
        })
        .workers(2)
        .chunk_size(1)
        .stop_token(stop)
        .collect();
    assert!(!first.is_ok());
    let done_first = ckpt.recorded();
    assert!((200..500).contains(&done_first), "{done_first}");

    let ckpt = Checkpoint::<u64, String>::open(&path).unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let c = Arc::clone(&calls);
    let second = ckpt
        .map(0..500u64, move |x| {
            c.fetch_add(1, Ordering::SeqCst);
            Ok::<_, String>(format!("item-{x}"))
        })
        .collect();
    assert_eq!(calls.load(Ordering::SeqCst) as u64, 500 - done_first);
    let want: Vec<String> = (0..500u64).map(|x| format!("item-{x}")).collect();
    assert_eq!(second.into_values().unwrap(), want);
}

#[test]
fn keys_from_the_items_survive_a_reordered_input() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.ckpt");
    let names: Vec<String> = (0..20).map(|i| format!("user-{i}")).collect();
    let ckpt = Checkpoint::<String, usize>::open(&path).unwrap();
    let first = ckpt
        .map_by_key(
            names.clone(),
            |n: &String| n.clone(),
            |n: String| {
                if n.ends_with('7') {
                    Err("flaky".to_string())
                } else {
                    Ok(n.len())
                }
            },
        )
        .collect();
    ckpt.sync().unwrap();
    assert_eq!(first.failures().len(), 2); // user-7, user-17

    let mut reversed = names.clone();
    reversed.reverse();
    let calls = Arc::new(AtomicUsize::new(0));
    let c = Arc::clone(&calls);
    let ckpt = Checkpoint::<String, usize>::open(&path).unwrap();
    let second = ckpt
        .map_by_key(
            reversed.clone(),
            |n: &String| n.clone(),
            move |n: String| {
                c.fetch_add(1, Ordering::SeqCst);
                Ok::<_, String>(n.len())
            },
        )
        .collect();
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    let want: Vec<usize> = reversed.iter().map(String::len).collect();
    assert_eq!(second.into_values().unwrap(), want);
}

#[test]
fn a_torn_last_line_is_dropped_and_a_corrupt_one_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("torn.ckpt");
    std::fs::write(&path, "{\"k\":0,\"v\":10}\n{\"k\":1,\"v\":1").unwrap();
    let ckpt = Checkpoint::<u64, u64>::open(&path).unwrap();
    assert_eq!(ckpt.done(), 1);
    let run = ckpt.map(0..3u64, |x| Ok::<_, String>(x + 100)).collect();
    ckpt.sync().unwrap();
    // Index 0 comes from the file; 1 and 2 ran. The file holds whole lines only.
    assert_eq!(run.into_values().unwrap(), vec![10, 101, 102]);
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.lines().count(), 3, "{text}");
    assert!(text.ends_with('\n'));

    let bad = dir.path().join("bad.ckpt");
    std::fs::write(&bad, "{\"k\":0,\"v\":\"text\"}\n").unwrap();
    match Checkpoint::<u64, u64>::open(&bad) {
        Err(CheckpointError::Corrupt { line: 1, .. }) => {}
        Err(other) => panic!("expected a corrupt-line error, got {other}"),
        Ok(_) => panic!("expected a corrupt-line error"),
    }
}

/// The child side of the crash test: a slow checkpointed map that is killed part way.
fn slow_child(path: &str) {
    let ckpt = Checkpoint::<u64, u64>::open(path).unwrap();
    let _ = ckpt
        .map(0..2000u64, |x| {
            std::thread::sleep(std::time::Duration::from_millis(1));
            Ok::<_, String>(x * 3)
        })
        .workers(2)
        .collect();
}

#[test]
fn a_process_killed_with_sigkill_resumes_without_redoing_recorded_items() {
    const CHILD: &str = "HERDSMAN_CHECKPOINT_TEST_CHILD";
    if let Ok(path) = std::env::var(CHILD) {
        slow_child(&path);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("killed.ckpt");
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "checkpoint::a_process_killed_with_sigkill_resumes_without_redoing_recorded_items",
        ])
        .env(CHILD, &path)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    loop {
        let lines = std::fs::read_to_string(&path)
            .map(|t| t.lines().count())
            .unwrap_or(0);
        if lines >= 100 || started.elapsed() > std::time::Duration::from_secs(30) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    let ckpt = Checkpoint::<u64, u64>::open(&path).unwrap();
    let recorded = ckpt.done();
    assert!(recorded >= 100, "{recorded}");
    let calls = Arc::new(AtomicUsize::new(0));
    let c = Arc::clone(&calls);
    let run = ckpt
        .map(0..2000u64, move |x| {
            c.fetch_add(1, Ordering::SeqCst);
            Ok::<_, String>(x * 3)
        })
        .collect();
    assert_eq!(calls.load(Ordering::SeqCst), 2000 - recorded);
    let want: Vec<u64> = (0..2000u64).map(|x| x * 3).collect();
    assert_eq!(run.into_values().unwrap(), want);
}
