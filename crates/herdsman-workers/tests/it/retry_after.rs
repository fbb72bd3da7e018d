//! A framed error reply's `retry_after` reaches the caller as `WorkerFailure::retry_after`:
//! seconds (fractions allowed), on retryable errors only, capped at `MAX_RETRY_AFTER`; a
//! value that is not a number of seconds fails the record as bad output.

use crate::common;

use std::time::Duration;

use common::*;
use herdsman_workers::{
    FailureKind, PoolConfig, Protocol, WorkerCommand, WorkerPool, MAX_RETRY_AFTER,
};

#[test]
fn framed_error_replies_carry_the_workers_retry_after() {
    let dir = tempdir("retry-after");
    // Each record is the raw JSON text of the reply's tail after the id.
    let path = script(
        &dir,
        "retry_after.py",
        r#"
import json, sys
for line in sys.stdin:
    msg = json.loads(line)
    sys.stdout.write('{"id":%d,%s}\n' % (msg["id"], msg["record"]["tail"]))
    sys.stdout.flush()
"#,
    );
    let mut cfg = PoolConfig::new(WorkerCommand::argv(["python3", &path]));
    cfg.workers = 1;
    cfg.protocol = Protocol::Framed;
    let mut p = WorkerPool::start(cfg).unwrap();
    let tails = [
        r#""error":"HTTP 429","retryable":true,"retry_after":1.5"#,
        r#""error":"HTTP 429","retryable":true,"retry_after":0"#,
        r#""error":"HTTP 503","retryable":true"#,
        r#""error":"HTTP 429","retryable":true,"retry_after":1764474000"#,
        r#""error":"HTTP 404","retryable":false,"retry_after":30"#,
        r#""error":"HTTP 429","retryable":true,"retry_after":"1""#,
        r#""error":"HTTP 429","retryable":true,"retry_after":-2"#,
        r#""output":{"ok":1},"done":true,"retry_after":5"#,
    ];
    let items = tails
        .iter()
        .enumerate()
        .map(|(i, t)| item(i as u64, &serde_json::json!({ "tail": t }).to_string()))
        .collect();
    let r = run_all(&mut p, items, Duration::from_secs(60)).unwrap();

    let f = failure(&r[&0]);
    assert_eq!(
        (f.kind, f.retryable, f.retry_after),
        (
            FailureKind::Reported,
            true,
            Some(Duration::from_millis(1500))
        )
    );
    assert_eq!(f.message, "HTTP 429");
    assert_eq!(failure(&r[&1]).retry_after, Some(Duration::ZERO));
    assert_eq!(failure(&r[&2]).retry_after, None);
    assert_eq!(failure(&r[&3]).retry_after, Some(MAX_RETRY_AFTER));
    assert_eq!(MAX_RETRY_AFTER, Duration::from_secs(3600));
    // Not retryable: the wait means nothing and is dropped.
    let f = failure(&r[&4]);
    assert_eq!(
        (f.kind, f.retryable, f.retry_after),
        (FailureKind::Reported, false, None)
    );
    for i in [5, 6] {
        let f = failure(&r[&i]);
        assert_eq!(
            (f.kind, f.retryable, f.retry_after),
            (FailureKind::BadOutput, false, None)
        );
        assert!(
            f.message.contains("\"retry_after\" is `")
                && f.message.contains("not a number of seconds")
                && f.message.contains("HTTP 429"),
            "{}",
            f.message
        );
    }
    assert_eq!(text(success(&r[&7])), vec![r#"{"ok":1}"#]);
}
