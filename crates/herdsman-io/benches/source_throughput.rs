//! Source throughput on narrow records: `cargo bench -p herdsman-io --bench source_throughput`.
//! Also the speed of [`Source::skip_record`], which a shard uses to find where it starts.
//!
//! Writes a temporary input of N rows (N from `HERDSMAN_BENCH_ROWS`, default 2,000,000) and
//! prints records per second for each format, per wall-clock second and (on Linux) per
//! second of this thread's CPU time, which stays meaningful on a busy machine. It measures; it
//! asserts nothing about speed.

use std::io::Write;
use std::time::Instant;

use herdsman_io::{Format, InputPath, InputSpec, Source, SourceOptions};

/// CPU time of the current thread in nanoseconds (Linux), from the scheduler's statistics.
fn thread_cpu_ns() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    s.split_whitespace().next()?.parse().ok()
}

fn run(name: &str, path: &std::path::Path, format: Format, opts: SourceOptions, rows: u64) {
    let spec = InputSpec {
        path: InputPath::File(path.to_path_buf()),
        format,
    };
    let start = Instant::now();
    let cpu0 = thread_cpu_ns();
    let mut n = 0u64;
    let mut bytes = 0usize;
    for r in Source::open(vec![spec], opts, None).unwrap() {
        let r = r.unwrap();
        bytes += r.data.unwrap().len();
        n += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu = match (cpu0, thread_cpu_ns()) {
        (Some(a), Some(b)) => format!(
            ", CPU {:.3} s = {:.2} M records/CPU-s",
            (b - a) as f64 / 1e9,
            n as f64 / ((b - a) as f64 / 1e9) / 1e6
        ),
        _ => String::new(),
    };
    assert_eq!(n, rows);
    println!(
        "{name:<10} {n} records, wall {secs:.3} s = {:.2} M records/s{cpu} ({bytes} JSON bytes)",
        n as f64 / secs / 1e6
    );
}

/// The same input passed with [`Source::skip_record`], as a shard finding its start does.
fn skip(name: &str, path: &std::path::Path, format: Format, rows: u64) {
    let spec = InputSpec {
        path: InputPath::File(path.to_path_buf()),
        format,
    };
    let start = Instant::now();
    let cpu0 = thread_cpu_ns();
    let mut src = Source::open(vec![spec], SourceOptions::default(), None).unwrap();
    let mut n = 0u64;
    while let Some(pos) = src.skip_record() {
        pos.unwrap();
        n += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu = match (cpu0, thread_cpu_ns()) {
        (Some(a), Some(b)) => format!(
            ", CPU {:.3} s = {:.2} M records/CPU-s",
            (b - a) as f64 / 1e9,
            n as f64 / ((b - a) as f64 / 1e9) / 1e6
        ),
        _ => String::new(),
    };
    assert_eq!(n, rows);
    let mb = std::fs::metadata(path).unwrap().len() as f64 / 1e6;
    println!(
        "{name:<10} {n} records skipped, wall {secs:.3} s = {:.2} M records/s = {:.0} MB/s{cpu}",
        n as f64 / secs / 1e6,
        mb / secs
    );
}

fn main() {
    let rows: u64 = std::env::var("HERDSMAN_BENCH_ROWS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2_000_000);
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("narrow.csv");
    let jsonl = dir.path().join("narrow.jsonl");
    let lines = dir.path().join("narrow.txt");
    {
        let mut c = std::io::BufWriter::new(std::fs::File::create(&csv).unwrap());
        let mut j = std::io::BufWriter::new(std::fs::File::create(&jsonl).unwrap());
        let mut l = std::io::BufWriter::new(std::fs::File::create(&lines).unwrap());
        writeln!(c, "id,value").unwrap();
        for i in 0..rows {
            let v = (i * 7919) % 100_000;
            writeln!(c, "{i},{v}").unwrap();
            writeln!(j, "{{\"id\":{i},\"value\":{v}}}").unwrap();
            writeln!(l, "row {i} value {v}").unwrap();
        }
    }
    run("csv", &csv, Format::Csv, SourceOptions::default(), rows);
    let infer = SourceOptions {
        infer_types: true,
        ..Default::default()
    };
    run("csv infer", &csv, Format::Csv, infer, rows);
    run(
        "jsonl",
        &jsonl,
        Format::Jsonl,
        SourceOptions::default(),
        rows,
    );
    run(
        "lines",
        &lines,
        Format::Lines,
        SourceOptions::default(),
        rows,
    );
    skip("csv", &csv, Format::Csv, rows);
    skip("jsonl", &jsonl, Format::Jsonl, rows);
    skip("lines", &lines, Format::Lines, rows);
}
