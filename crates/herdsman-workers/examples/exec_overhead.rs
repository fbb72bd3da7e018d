//! Measures the per-record overhead of running one command per record.
//!
//! ```text
//! cargo run --release -p herdsman-workers --example exec_overhead -- [records] [jobs] [program]
//! ```
//! Compare with `seq 2000 | xargs -P2 -n1 true`.

use std::time::{Duration, Instant};

use herdsman_workers::{
    AttemptId, AttemptOutcome, ExecConfig, ExecPool, Executor, Template, WorkItem,
};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let records: usize = args.first().map_or(2000, |a| a.parse().expect("a number"));
    let jobs: usize = args.get(1).map_or(2, |a| a.parse().expect("a number"));
    let program = args.get(2).cloned().unwrap_or_else(|| "true".into());
    let template = Template::parse(&[program.clone(), "{n}".into()]).expect("valid template");
    let mut cfg = ExecConfig::new(template);
    cfg.jobs = jobs;
    let mut pool = ExecPool::start(cfg).expect("program runs");
    let start = Instant::now();
    let (mut next, mut in_flight, mut done) = (0usize, 0usize, 0usize);
    let mut out = Vec::new();
    while done < records {
        while in_flight < pool.capacity() && next < records {
            let id = AttemptId {
                index: next as u64,
                attempt: 1,
            };
            let item = WorkItem::new(next as u64, format!(r#"{{"n":{next}}}"#));
            pool.submit(id, item).expect("submit");
            next += 1;
            in_flight += 1;
        }
        pool.poll(Duration::from_millis(100), &mut out)
            .expect("poll");
        for (_, outcome) in out.drain(..) {
            if let AttemptOutcome::Failure(f) = outcome {
                panic!("{f}");
            }
            in_flight -= 1;
            done += 1;
        }
    }
    let elapsed = start.elapsed();
    pool.shutdown();
    println!(
        "{records} x `{program} {{n}}` with {jobs} jobs: {:.3} s, {:.0} us/record, {:.0} records/s",
        elapsed.as_secs_f64(),
        elapsed.as_micros() as f64 / records as f64,
        records as f64 / elapsed.as_secs_f64()
    );
}
