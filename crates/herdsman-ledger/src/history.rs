//! The run's history: a time series of samples (about one a second while a run goes) and the
//! slowest records of each run, kept with the job so that `herdsman report` can draw a run
//! that finished, died or is still going.
//!
//! History is an observation, not a checkpoint: a sample must never slow the run noticeably,
//! never block a chunk commit, and losing the last few samples in a power cut is acceptable
//! (chunk commits are not lost). The SQLite ledger therefore writes samples without an fsync
//! of their own: the next chunk commit's fsync makes them durable.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

/// Upper bounds, in milliseconds, of the latency histogram's buckets in
/// [`HistorySample::latency_buckets`]; the last bucket counts everything above the last bound.
pub const LATENCY_BUCKETS_MS: [f64; 16] = [
    1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1_000.0, 2_000.0, 5_000.0, 10_000.0,
    30_000.0, 60_000.0, 300_000.0,
];

/// How busy one worker (or `--exec` job slot) was during a sample's interval.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkerSample {
    /// 1-based worker number, as logs and the job log name it.
    pub worker: u32,
    /// Milliseconds of the interval the worker spent running attempts.
    pub busy_ms: u64,
    /// Attempts that ended on this worker in the interval.
    pub attempts: u64,
    /// Times this worker was replaced (it exited, crashed or was killed) in the interval.
    pub restarts: u64,
}

/// One sample of a run's history.
///
/// Cumulative fields (`ok`, `failed`, `filtered`) count the whole job, earlier runs included;
/// `retries`, `restarts` and `rate_limit_wait_ms` count this run so far; the rest describe the
/// interval since the previous sample of the same run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HistorySample {
    /// The run this sample belongs to: 1 for the job's first run, one more for each resume.
    pub run: u32,
    /// When the sample was taken, in Unix milliseconds.
    pub at_ms: i64,
    /// Milliseconds since this run started.
    pub elapsed_ms: u64,
    /// Length of the interval this sample describes, in milliseconds.
    pub interval_ms: u64,
    /// Records that succeeded, whole job.
    pub ok: u64,
    /// Records that failed (written to the dead-letter file), whole job.
    pub failed: u64,
    /// Records the transform filtered out, whole job.
    pub filtered: u64,
    /// Records finished in the interval, per second.
    pub records_per_sec: f64,
    /// Records finished in the interval.
    pub finished: u64,
    /// Median latency (all attempts of a record) of the records finished in the interval, in
    /// milliseconds; `None` when none finished.
    pub p50_ms: Option<f64>,
    /// 90th percentile latency of the interval's records, in milliseconds.
    pub p90_ms: Option<f64>,
    /// 99th percentile latency of the interval's records, in milliseconds.
    pub p99_ms: Option<f64>,
    /// Largest latency of the interval's records, in milliseconds.
    pub max_ms: Option<f64>,
    /// The interval's records counted by latency bucket (see [`LATENCY_BUCKETS_MS`]).
    pub latency_buckets: Vec<u64>,
    /// Attempts running on workers when the sample was taken.
    pub in_flight: u64,
    /// Per-worker busy time in the interval.
    pub workers: Vec<WorkerSample>,
    /// Worker replacements in this run so far.
    pub restarts: u64,
    /// Retry attempts in this run so far.
    pub retries: u64,
    /// Milliseconds of waiting that servers asked for (`retry_after`) in this run so far.
    pub rate_limit_wait_ms: u64,
}

impl HistorySample {
    /// When the sample was taken.
    pub fn at(&self) -> SystemTime {
        if self.at_ms >= 0 {
            SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(self.at_ms as u64)
        } else {
            SystemTime::UNIX_EPOCH
        }
    }
}

/// One of the slowest records of a run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SlowRecord {
    /// The run in which the record was processed.
    pub run: u32,
    /// 1-based record number across all inputs (as dead-letter entries number it).
    pub record: u64,
    /// The input file's name.
    pub file: String,
    /// The record's line in its file (1-based; for columnar inputs the row).
    pub line: u64,
    /// Milliseconds from its first attempt's start to its final outcome.
    pub duration_ms: f64,
    /// Attempts it took.
    pub attempts: u32,
    /// How it ended: `succeeded`, `failed` or `filtered`.
    pub outcome: String,
}

/// How many slowest records a run keeps.
pub const SLOWEST_PER_RUN: usize = 20;
