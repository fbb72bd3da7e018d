//! A framed worker's replies mean the same whatever form they are written in: the compact
//! forms the pool reads by their shape and any other form it reads with the full JSON
//! parser give the same outputs, also when the replies come out of order.

use crate::common;

use std::time::Duration;

use common::*;
use herdsman_workers::{PoolConfig, Protocol, WorkerCommand, WorkerPool};

/// Reads every request first, then writes each record's `reply` (with `ID` replaced by the
/// request's id), last record first.
const REPLAY: &str = r#"
import json, sys
n = int(sys.argv[1])
held = []
for line in sys.stdin:
    msg = json.loads(line)
    held.append(msg["record"]["reply"].replace("ID", str(msg["id"])))
    if len(held) == n:
        for reply in reversed(held):
            sys.stdout.write(reply + "\n")
        sys.stdout.flush()
        held = []
"#;

#[test]
fn compact_and_spaced_replies_out_of_order_give_the_same_outputs() {
    let cases: &[(&str, &[&str])] = &[
        (r#"{"id":ID,"output":{"a":1},"done":true}"#, &[r#"{"a":1}"#]),
        (r#"{"id":ID, "output": {"a":1}, "done": true}"#, &[r#"{"a":1}"#]),
        (
            r#"{"id":ID,"output":"x,\"done\":true}","done":true}"#,
            &[r#""x,\"done\":true}""#],
        ),
        (
            "{\"id\":ID,\"output\":{\"x\":1,\"done\":true}}\n{\"id\":ID,\"done\":true}",
            &[r#"{"x":1,"done":true}"#],
        ),
        (
            "{\"id\":ID,\"output\":{\"a\":1},\"done\":false}\n{\"id\":ID,\"output\":2}\n{\"id\":ID,\"done\":true}",
            &[r#"{"a":1}"#, "2"],
        ),
        (r#"{"id":ID,"done":true}"#, &[]),
        (r#"{"done":true,"id":ID}"#, &[]),
        (r#"{"id":ID,"output":[1, 2],"done":true}"#, &["[1, 2]"]),
        (r#"{"id":ID,"output":null,"done":true}"#, &["null"]),
    ];
    let dir = tempdir("framed-replies");
    let path = script(&dir, "replay.py", REPLAY);
    let n = cases.len().to_string();
    let mut cfg = PoolConfig::new(WorkerCommand::argv(["python3", &path, &n]));
    cfg.workers = 1;
    cfg.pipeline_depth = cases.len();
    cfg.protocol = Protocol::Framed;
    let mut pool = WorkerPool::start(cfg).unwrap();
    let items = cases
        .iter()
        .enumerate()
        .map(|(i, (reply, _))| {
            let record = serde_json::json!({ "reply": reply }).to_string();
            item(i as u64, &record)
        })
        .collect();
    let results = run_all(&mut pool, items, Duration::from_secs(60)).unwrap();
    assert_eq!(results.len(), cases.len());
    for (i, (reply, want)) in cases.iter().enumerate() {
        assert_eq!(
            text(success(&results[&(i as u64)])),
            want.to_vec(),
            "reply {reply}"
        );
    }
}
