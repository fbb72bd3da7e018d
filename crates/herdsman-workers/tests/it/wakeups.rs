//! A worker that answers many records per millisecond must not cost herdsman one wake-up
//! (of the pool's reader, of the engine's thread and of the writer) per answer: answers
//! that arrive close together are taken and reported a few at a time.

use crate::common;

use std::time::{Duration, Instant};

use common::*;
use herdsman_workers::{Executor, PoolConfig, Protocol, WorkerCommand, WorkerPool};

/// A framed worker that spends about 0.3 ms of CPU on each record and writes (and flushes)
/// every answer on its own, as `herdsman_worker` does.
const BUSY_FRAMED: &str = r#"
import json, os, sys, time
out = sys.stdout.fileno()
for line in sys.stdin.buffer:
    req = json.loads(line)
    end = time.perf_counter() + 0.0003
    while time.perf_counter() < end:
        pass
    os.write(out, b'{"id":%d,"output":%d,"done":true}\n' % (req["id"], req["record"]["i"]))
"#;

/// Runs `n` records through one framed Python `worker` with `depth` records in flight and
/// returns how many polls reported at least one answer (one per wake-up of the engine's
/// thread), checking that every record is answered exactly once with its own answer.
fn deliveries(name: &str, worker: &str, n: u64, depth: usize) -> u64 {
    let dir = tempdir(name);
    let path = script(&dir, "worker.py", worker);
    let mut cfg = PoolConfig::new(WorkerCommand::argv(["python3", &path]));
    cfg.workers = 1;
    cfg.pipeline_depth = depth;
    cfg.protocol = Protocol::Framed;
    cfg.kill_grace = Duration::from_millis(500);
    let mut p = WorkerPool::start(cfg).unwrap();

    let deadline = Instant::now() + Duration::from_secs(60);
    let mut next = 0u64;
    let mut in_flight = 0usize;
    let mut seen = vec![false; n as usize];
    let mut done = 0u64;
    let mut deliveries = 0u64;
    let mut out = Vec::new();
    while done < n {
        while in_flight < p.capacity() && next < n {
            p.submit(id(next), item(next, &format!(r#"{{"i":{next}}}"#)))
                .unwrap();
            next += 1;
            in_flight += 1;
        }
        assert!(
            Instant::now() < deadline,
            "the worker did not finish in 60 s"
        );
        p.poll(Duration::from_millis(100), &mut out).unwrap();
        if !out.is_empty() {
            deliveries += 1;
        }
        for (aid, outcome) in out.drain(..) {
            let got = text(success(&outcome));
            assert_eq!(
                got,
                vec![aid.index.to_string()],
                "answer of record {}",
                aid.index
            );
            assert!(
                !seen[aid.index as usize],
                "record {} reported twice",
                aid.index
            );
            seen[aid.index as usize] = true;
            in_flight -= 1;
            done += 1;
        }
    }
    p.shutdown();
    deliveries
}

#[test]
fn answers_close_together_are_reported_several_per_poll() {
    const N: u64 = 600;
    let deliveries = deliveries("wakeups", BUSY_FRAMED, N, 64);
    // One answer every 0.3 ms (or slower, on a loaded machine) arrives as several per
    // read of the pipe; reported one at a time it would take a poll per answer.
    assert!(
        deliveries * 3 <= N,
        "{N} answers took {deliveries} polls that reported something: fewer than 3 answers per wake-up"
    );
}
