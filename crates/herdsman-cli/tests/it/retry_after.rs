//! A framed worker can pass on a server's wait: an error reply with `"retry_after": SECONDS`
//! retries the record after that wait and pauses the rate limit for every record.

use crate::common;

use std::time::{Duration, Instant};

use common::*;

/// `retry_after.py STATE MODE VALUE` as a --worker string, with its state directory made.
fn worker_in(s: &Scratch, mode: &str, value: &str) -> String {
    let state = s.path("state");
    std::fs::create_dir_all(&state).unwrap();
    py_worker(
        "retry_after.py",
        &[state.to_str().unwrap(), mode, &format!("'{value}'")],
    )
}

/// `(record id, monotonic seconds)` for every attempt the workers saw, in arrival order.
fn arrivals(s: &Scratch) -> Vec<(String, f64)> {
    let mut v: Vec<(String, f64)> = lines(&s.read("state/arrivals"))
        .into_iter()
        .map(|l| {
            let (id, t) = l.split_once(' ').unwrap();
            (id.to_string(), t.parse().unwrap())
        })
        .collect();
    v.sort_by(|a, b| a.1.total_cmp(&b.1));
    v
}

#[test]
fn a_retry_after_reply_is_retried_after_the_wait_and_is_not_an_error() {
    let s = Scratch::new();
    s.write("in.csv", id_csv(6));
    let started = Instant::now();
    let out = s
        .job(
            &worker_in(&s, "each", "0.5"),
            &["--protocol", "framed", "-j", "2", "--retries", "2"],
        )
        // A backoff this short shows that the wait is the worker's, and --max-errors 1
        // that a retried record is not an error.
        .args(["--backoff", "1ms", "--max-errors", "1"])
        .output()
        .unwrap();
    let wall = started.elapsed();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let summary = s.accounting();
    assert_eq!(summary["total"]["succeeded"], 6, "{summary}");
    assert_eq!(summary["total"]["failed"], 0, "{summary}");
    assert_eq!(summary["total"]["retries"], 6, "{summary}");
    assert!(stderr(&out).contains("retries   6"), "{}", stderr(&out));
    let outputs = json_lines(&s.read("out.jsonl"));
    assert_eq!(outputs.len(), 6);
    for (i, o) in outputs.iter().enumerate() {
        assert_eq!(o["id"], i as u64);
        let waited = o["waited"].as_f64().unwrap();
        assert!(
            waited >= 0.5,
            "record {i} was tried again after {waited}s, before its retry_after of 0.5s"
        );
    }
    assert!(wall >= Duration::from_millis(500), "the run took {wall:?}");
}

#[test]
fn a_retry_after_pauses_the_rate_limit_for_every_record() {
    let s = Scratch::new();
    s.write("in.csv", id_csv(40));
    // Only record 0 asks for a 2 s wait; at 20 records a second the 40 records would
    // otherwise arrive about 50 ms apart.
    let out = s
        .job(
            &worker_in(&s, "first", "2"),
            &["--protocol", "framed", "-j", "2", "--retries", "1"],
        )
        .args(["--rate", "20/second", "--backoff", "1ms"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let summary = s.accounting();
    assert_eq!(summary["total"]["succeeded"], 40, "{summary}");
    assert_eq!(summary["total"]["retries"], 1, "{summary}");
    let seen = arrivals(&s);
    assert_eq!(seen.len(), 41, "{seen:?}");
    // Records admitted before the pause may still arrive just after record 0 failed; after
    // them, nothing arrives for about 2 s.
    let gap = longest_pause_after_record_0(&seen);
    assert!(
        gap >= 1.5,
        "the longest pause between attempts after record 0 asked for 2 s was {gap}s: {seen:?}"
    );
    let record_0 = &json_lines(&s.read("out.jsonl"))[0];
    assert!(record_0["waited"].as_f64().unwrap() >= 2.0, "{record_0}");
}

/// The longest time between two attempts (of any records) from the first attempt of
/// record 0 on.
fn longest_pause_after_record_0(seen: &[(String, f64)]) -> f64 {
    let (first_0, _) = seen.iter().enumerate().find(|(_, a)| a.0 == "0").unwrap();
    seen[first_0..]
        .windows(2)
        .map(|w| w[1].1 - w[0].1)
        .fold(0.0, f64::max)
}

#[test]
fn with_a_rate_a_retry_after_pauses_everyone_even_without_retries() {
    let s = Scratch::new();
    s.write("in.csv", id_csv(40));
    let out = s
        .job(
            &worker_in(&s, "first", "2"),
            &["--protocol", "framed", "-j", "2", "--rate", "20/second"],
        )
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let summary = s.accounting();
    assert_eq!(summary["total"]["succeeded"], 39, "{summary}");
    assert_eq!(summary["total"]["retries"], 0, "{summary}");
    let seen = arrivals(&s);
    assert_eq!(seen.len(), 40, "{seen:?}");
    let gap = longest_pause_after_record_0(&seen);
    assert!(
        gap >= 1.5,
        "the longest pause between attempts after record 0 asked for 2 s was {gap}s: {seen:?}"
    );
}

#[test]
fn a_retry_after_on_an_error_that_is_not_retryable_is_ignored() {
    let s = Scratch::new();
    s.write("in.csv", id_csv(3));
    let out = s
        .job(
            &worker_in(&s, "fatal", "30"),
            &[
                "--protocol",
                "framed",
                "--retries",
                "3",
                "--rate",
                "50/second",
            ],
        )
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let summary = s.accounting();
    assert_eq!(summary["total"]["failed"], 3, "{summary}");
    assert_eq!(summary["total"]["retries"], 0, "{summary}");
    for f in json_lines(&s.read("out.failures.jsonl")) {
        assert_eq!(f["error"]["kind"], "reported", "{f}");
    }
}

#[test]
fn a_retry_after_that_is_not_a_number_fails_the_record_and_says_why() {
    let s = Scratch::new();
    s.write("in.csv", id_csv(2));
    let out = s
        .job(
            &worker_in(&s, "each", r#""soon""#),
            &["--protocol", "framed", "--retries", "3"],
        )
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let summary = s.accounting();
    assert_eq!(summary["total"]["failed"], 2, "{summary}");
    assert_eq!(summary["total"]["retries"], 0, "{summary}");
    for f in json_lines(&s.read("out.failures.jsonl")) {
        let msg = f["error"]["message"].as_str().unwrap();
        assert_eq!(f["error"]["kind"], "bad_output", "{f}");
        assert!(
            msg.contains(r#""retry_after" is `"soon"`, not a number of seconds"#)
                && msg.contains("HTTP 429"),
            "{msg}"
        );
    }
}
