//! Measures the worker pool's per-record overhead by pushing small records through `cat`.
//!
//! ```text
//! cargo run --release -p herdsman-workers --example pool_throughput -- [records] [workers] [depth]
//! ```

use std::time::{Duration, Instant};

use herdsman_workers::{
    AttemptId, AttemptOutcome, Executor, PoolConfig, WorkItem, WorkerCommand, WorkerPool,
};

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("arguments are numbers"))
        .collect();
    let records = args.first().copied().unwrap_or(1_000_000);
    let workers = args.get(1).copied().unwrap_or(2);
    let depth = args
        .get(2)
        .copied()
        .unwrap_or(PoolConfig::DEFAULT_PIPELINE_DEPTH);
    let mut cfg = PoolConfig::new(WorkerCommand::argv(["cat"]));
    cfg.workers = workers;
    cfg.pipeline_depth = depth;
    let mut pool = WorkerPool::start(cfg).expect("cat starts");
    let items: Vec<WorkItem> = (0..records as u64)
        .map(|i| WorkItem::new(i, format!(r#"{{"id":{i},"value":{}}}"#, i * 7 % 1000)))
        .collect();
    let start = Instant::now();
    let cpu0 = cpu_time();
    let mut next = 0usize;
    let mut in_flight = 0usize;
    let mut done = 0usize;
    let mut bytes = 0usize;
    let mut out = Vec::new();
    while done < records {
        while in_flight < pool.capacity() && next < records {
            let id = AttemptId {
                index: next as u64,
                attempt: 1,
            };
            pool.submit(id, items[next].clone()).expect("submit");
            next += 1;
            in_flight += 1;
        }
        pool.poll(Duration::from_millis(100), &mut out)
            .expect("poll");
        for (_, outcome) in out.drain(..) {
            match outcome {
                AttemptOutcome::Success(v) => bytes += v[0].len(),
                other => panic!("unexpected outcome {other:?}"),
            }
            in_flight -= 1;
            done += 1;
        }
    }
    let elapsed = start.elapsed();
    let cpu = cpu_time() - cpu0;
    pool.shutdown();
    println!(
        "{records} records through `cat` x{workers} (pipeline depth {depth}): {:.3} s, {:.0} records/s, {:.0} ns/record wall, {:.0} ns/record CPU in this process, all threads ({} output bytes)",
        elapsed.as_secs_f64(),
        records as f64 / elapsed.as_secs_f64(),
        elapsed.as_nanos() as f64 / records as f64,
        cpu.as_nanos() as f64 / records as f64,
        bytes
    );
}

/// User plus system CPU time of this process (all threads).
fn cpu_time() -> Duration {
    // SAFETY: getrusage writes into the zeroed struct we own.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}
