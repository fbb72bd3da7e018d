//! Live status: what a running job is doing, for `herdsman status` in another shell.
//!
//! A run with a checkpoint keeps a [`Live`] table of plain atomics that the engine's thread and
//! the workers' start callbacks update as records go (a few relaxed stores per record, no lock),
//! and a thread of its own that reads it about once a second and writes a small [`Snapshot`],
//! `live.json` in the state directory, atomically (a temporary file renamed over it). The run
//! never waits for that thread; when the run ends the snapshot is written a last time, marked
//! final.
//!
//! `herdsman status` reads the snapshot and decides whether the run is alive with two checks
//! that do not trust each other: the state directory's lock is held (the kernel releases it
//! when the process dies, whatever the lock file still says) and the process that wrote the
//! snapshot is alive and is the same process (its start time, so a recycled pid is not
//! taken for the run). This module must never block or slow the run: nothing in the record
//! path takes a lock or allocates, and the clock is read once per batch of answers.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{mpsc, Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// The snapshot's file name inside the state directory.
pub const LIVE_FILE_NAME: &str = "live.json";
/// The version of the snapshot's layout; a reader ignores a snapshot of another version.
pub const SNAPSHOT_VERSION: u32 = 1;
/// How often the snapshot is written.
const WRITE_EVERY: Duration = Duration::from_secs(1);
/// The span over which the current rate is measured.
const RATE_WINDOW: Duration = Duration::from_secs(10);
/// "No value" in an atomic that holds an index, a record number or a worker.
const NONE: u64 = u64::MAX;
/// Records a worker may have in flight for `status` to name the oldest one.
const RECENT: usize = 512;

/// One worker (or job slot) as the run sees it.
struct WorkerCell {
    /// Attempts handed to it.
    started: AtomicU64,
    /// Attempts it ended (or that went to another worker after it exited).
    finished: AtomicU64,
    /// 0-based record numbers of the last [`RECENT`] attempts handed to it, by `started`:
    /// a worker answers in order, so its oldest record in flight is at `finished`.
    recent: [AtomicU64; RECENT],
    /// When its current busy spell began (nanoseconds after [`Live::base`]).
    busy_since: AtomicU64,
    /// Times it was replaced after it exited or was killed while it had a record.
    restarts: AtomicU64,
}

impl Default for WorkerCell {
    fn default() -> WorkerCell {
        WorkerCell {
            started: AtomicU64::new(0),
            finished: AtomicU64::new(0),
            recent: std::array::from_fn(|_| AtomicU64::new(NONE)),
            busy_since: AtomicU64::new(0),
            restarts: AtomicU64::new(0),
        }
    }
}

/// Which record and worker an attempt in flight belongs to: a ring indexed by the engine's
/// item index, whose entry also holds the index so that an overwritten entry is recognized.
#[derive(Default)]
struct RingEntry {
    /// Engine index + 1 (0: empty).
    index: AtomicU64,
    seq: AtomicU64,
    worker: AtomicU64,
}

/// The live counters of one run, shared by the engine's thread, the workers' start callbacks
/// and the snapshot thread.
pub struct Live {
    pid: u32,
    started_at: SystemTime,
    base: Instant,
    workers: Vec<WorkerCell>,
    ring: Box<[RingEntry]>,
    mask: u64,
    /// records, succeeded, failed, filtered, retries (earlier runs included).
    counts: [AtomicU64; 5],
    /// Records resolved by earlier runs of the job.
    earlier: u64,
    /// Input bytes handed to the engine (from the start of the first input).
    bytes_read: AtomicU64,
    /// Records handed to the engine, those of earlier runs included.
    records_read: AtomicU64,
    /// Size of every input, when all are regular files whose size means something.
    sizes: Option<Vec<u64>>,
}

static CURRENT: OnceLock<Arc<Live>> = OnceLock::new();

/// The live table of this process's run, if it keeps one.
pub fn current() -> Option<&'static Arc<Live>> {
    CURRENT.get()
}

impl Live {
    /// A table for a run with `workers` workers; `sizes`: the inputs' sizes in bytes when they
    /// are all known; `earlier`: records an earlier run of the job resolved.
    pub fn new(workers: usize, window: usize, sizes: Option<Vec<u64>>, earlier: u64) -> Live {
        // Room for every record in flight, several times over.
        let ring = (window.max(1) * 4).next_power_of_two().max(4096);
        Live {
            pid: std::process::id(),
            started_at: SystemTime::now(),
            base: Instant::now(),
            workers: (0..workers.max(1)).map(|_| WorkerCell::default()).collect(),
            ring: (0..ring).map(|_| RingEntry::default()).collect(),
            mask: ring as u64 - 1,
            counts: Default::default(),
            earlier,
            bytes_read: AtomicU64::new(0),
            records_read: AtomicU64::new(earlier),
            sizes,
        }
    }

    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX)
    }

    /// The engine submitted the attempt of item `index`, record `seq` (0-based).
    #[inline]
    pub fn submitted(&self, index: u64, seq: u64) {
        let e = &self.ring[(index & self.mask) as usize];
        e.seq.store(seq, Relaxed);
        e.worker.store(NONE, Relaxed);
        e.index.store(index + 1, Relaxed);
    }

    /// Worker `worker` (0-based) started the attempt of item `index` at `at`.
    #[inline]
    pub fn started(&self, index: u64, worker: usize, at: Instant) {
        let Some(cell) = self.workers.get(worker) else {
            return;
        };
        let e = &self.ring[(index & self.mask) as usize];
        let mut seq = NONE;
        if e.index.load(Relaxed) == index + 1 {
            seq = e.seq.load(Relaxed);
            // Sent again after its worker exited: that worker no longer has it.
            let before = e.worker.load(Relaxed);
            e.worker.store(worker as u64, Relaxed);
            if let Some(old) = self.workers.get(before as usize) {
                old.finished.fetch_add(1, Relaxed);
            }
        }
        let started = cell.started.load(Relaxed);
        if started <= cell.finished.load(Relaxed) {
            cell.busy_since.store(self.nanos(at), Relaxed);
        }
        cell.recent[started as usize % RECENT].store(seq, Relaxed);
        cell.started.store(started + 1, Relaxed);
    }

    /// The attempt of item `index` ended at `now` (`restart`: its worker was replaced for it).
    #[inline]
    pub fn ended(&self, index: u64, now: Instant, restart: bool) {
        let e = &self.ring[(index & self.mask) as usize];
        if e.index.load(Relaxed) != index + 1 {
            return;
        }
        let w = e.worker.load(Relaxed);
        e.worker.store(NONE, Relaxed);
        let Some(cell) = self.workers.get(w as usize) else {
            return;
        };
        let finished = cell.finished.load(Relaxed) + 1;
        cell.finished.store(finished, Relaxed);
        if restart {
            cell.restarts.fetch_add(1, Relaxed);
        }
        // A worker answers its records in order: the next one is under way from now.
        if cell.started.load(Relaxed) > finished {
            cell.busy_since.store(self.nanos(now), Relaxed);
        }
    }

    /// The run's counts so far (earlier runs included).
    #[inline]
    pub fn counts(&self, c: &herdsman_ledger::Counts) {
        let values = [c.records, c.ok, c.failed, c.filtered, c.retries];
        for (slot, v) in self.counts.iter().zip(values) {
            slot.store(v, Relaxed);
        }
    }

    /// The engine took `records` more records, up to `byte_offset` of input `file_index`
    /// (the position after a chunk).
    pub fn input_at(&self, file_index: u32, byte_offset: u64, records: u64) {
        let before: u64 = match &self.sizes {
            Some(sizes) => sizes.iter().take(file_index as usize).sum(),
            None => 0,
        };
        self.bytes_read.store(before + byte_offset, Relaxed);
        self.records_read.fetch_add(records, Relaxed);
    }

    /// What the table says now. `rate`: the samples of the last seconds, updated here.
    fn snapshot(&self, rate: &mut RateWindow, is_final: bool) -> Snapshot {
        let now = Instant::now();
        let [records, succeeded, failed, filtered, retries] =
            self.counts.each_ref().map(|c| c.load(Relaxed));
        let bytes_read = self.bytes_read.load(Relaxed);
        let resolved = succeeded + failed + filtered;
        rate.push(now, resolved, bytes_read);
        let wall = SystemTime::now();
        let workers: Vec<WorkerSnapshot> = self
            .workers
            .iter()
            .enumerate()
            .map(|(i, w)| {
                let started = w.started.load(Relaxed);
                let finished = w.finished.load(Relaxed);
                let in_flight = started.saturating_sub(finished);
                let record = if (1..=RECENT as u64).contains(&in_flight) {
                    w.recent[finished as usize % RECENT].load(Relaxed)
                } else {
                    NONE
                };
                let since = self.base + Duration::from_nanos(w.busy_since.load(Relaxed));
                let busy = in_flight > 0;
                WorkerSnapshot {
                    worker: i + 1,
                    state: if busy { "busy" } else { "idle" }.into(),
                    record: (busy && record != NONE).then(|| record + 1),
                    since: busy.then(|| unix_secs(wall) - now.duration_since(since).as_secs_f64()),
                    in_flight,
                    attempts: started,
                    restarts: w.restarts.load(Relaxed),
                }
            })
            .collect();
        Snapshot {
            version: SNAPSHOT_VERSION,
            pid: self.pid,
            process_start: process_start(self.pid),
            started_at: unix_secs(self.started_at),
            updated_at: unix_secs(wall),
            is_final,
            records,
            succeeded,
            failed,
            filtered,
            retries,
            earlier: self.earlier,
            in_flight: workers.iter().map(|w| w.in_flight).sum(),
            rate: rate.rate(),
            input: InputSnapshot {
                bytes_read,
                bytes_total: self.sizes.as_ref().map(|s| s.iter().sum()),
                records_read: self.records_read.load(Relaxed),
            },
            workers,
        }
    }
}

/// Samples of (time, records resolved, bytes read) over the last [`RATE_WINDOW`].
#[derive(Default)]
struct RateWindow(VecDeque<(Instant, u64, u64)>);

impl RateWindow {
    fn push(&mut self, at: Instant, resolved: u64, bytes: u64) {
        self.0.push_back((at, resolved, bytes));
        // Keep one sample at least a window old, so the rate spans the whole window.
        while self.0.len() > 2 && at.duration_since(self.0[1].0) >= RATE_WINDOW {
            self.0.pop_front();
        }
    }

    fn rate(&self) -> RateSnapshot {
        let (Some(first), Some(last)) = (self.0.front(), self.0.back()) else {
            return RateSnapshot::default();
        };
        let secs = last.0.duration_since(first.0).as_secs_f64();
        if secs <= 0.0 {
            return RateSnapshot::default();
        }
        RateSnapshot {
            window_s: secs,
            records_per_s: last.1.saturating_sub(first.1) as f64 / secs,
            bytes_per_s: last.2.saturating_sub(first.2) as f64 / secs,
        }
    }
}

/// Seconds since the Unix epoch.
pub fn unix_secs(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// `live.json`: what a run is doing, written about once a second while it runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// [`SNAPSHOT_VERSION`].
    pub version: u32,
    /// The run's process.
    pub pid: u32,
    /// The process's start time in clock ticks after boot (`/proc/PID/stat`), which tells it
    /// from a later process that got the same pid.
    pub process_start: Option<u64>,
    /// When the run started (Unix seconds).
    pub started_at: f64,
    /// When this snapshot was written (Unix seconds).
    pub updated_at: f64,
    /// The run has ended; this is its last snapshot.
    #[serde(rename = "final")]
    pub is_final: bool,
    /// Records resolved, earlier runs of the job included, and their outcomes.
    pub records: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub filtered: u64,
    pub retries: u64,
    /// Of `records`, those resolved by earlier runs of the job.
    pub earlier: u64,
    /// Records handed to workers and not yet answered.
    pub in_flight: u64,
    pub rate: RateSnapshot,
    pub input: InputSnapshot,
    pub workers: Vec<WorkerSnapshot>,
}

/// The current rate, over the last few seconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RateSnapshot {
    /// The span measured, in seconds (0: not yet measured).
    pub window_s: f64,
    pub records_per_s: f64,
    pub bytes_per_s: f64,
}

/// How far the input has been read.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InputSnapshot {
    /// Bytes of input handed to the engine, from the start of the first input.
    pub bytes_read: u64,
    /// The inputs' total size; `None` when it is not known (standard input, compressed or
    /// Parquet input, `--shard`, `--limit`).
    pub bytes_total: Option<u64>,
    /// Records handed to the engine, earlier runs' included.
    pub records_read: u64,
}

/// One worker (or job slot).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerSnapshot {
    /// 1-based, the value of its `HERDSMAN_WORKER`.
    pub worker: usize,
    /// `busy` or `idle`.
    pub state: String,
    /// 1-based number of the record it works on, as dead-letter entries count.
    pub record: Option<u64>,
    /// Since when it has been busy on that record (Unix seconds).
    pub since: Option<f64>,
    /// Records handed to it and not yet answered.
    pub in_flight: u64,
    /// Attempts handed to it in this run.
    pub attempts: u64,
    /// Times it was replaced after it exited or was killed while it had a record.
    pub restarts: u64,
}

impl Snapshot {
    /// Reads `live.json` in `dir`; `None` if there is none or it is not one this version
    /// reads.
    pub fn read(dir: &Path) -> Option<Snapshot> {
        let bytes = std::fs::read(dir.join(LIVE_FILE_NAME)).ok()?;
        serde_json::from_slice::<Snapshot>(&bytes)
            .ok()
            .filter(|s| s.version == SNAPSHOT_VERSION)
    }

    /// The records of the whole input, when its size is known: exact once it is all read,
    /// else the records read so far scaled by the bytes still to read.
    pub fn records_total(&self) -> Option<u64> {
        let total = self.input.bytes_total?;
        let (read, records) = (self.input.bytes_read, self.input.records_read);
        if read >= total {
            return Some(records);
        }
        (read > 0 && records > 0)
            .then(|| (records as f64 * total as f64 / read as f64).round() as u64)
    }

    /// Records resolved: succeeded, failed or filtered.
    pub fn done(&self) -> u64 {
        self.succeeded + self.failed + self.filtered
    }

    /// Percent of the input's records done, when the input's size is known.
    pub fn percent(&self) -> Option<f64> {
        let total = self.records_total().filter(|&t| t > 0)?;
        Some((self.done() as f64 * 100.0 / total as f64).min(100.0))
    }

    /// Seconds left at the current rate, when the input's size is known.
    pub fn eta_secs(&self) -> Option<f64> {
        let left = self.records_total()?.saturating_sub(self.done());
        if left == 0 {
            return Some(0.0);
        }
        (self.rate.records_per_s > 0.0).then(|| left as f64 / self.rate.records_per_s)
    }
}

/// Writes `snapshot` to `dir/live.json` atomically: readers see the old one or the new one.
fn write_snapshot(dir: &Path, snapshot: &Snapshot) -> std::io::Result<()> {
    let tmp = dir.join(format!(".{LIVE_FILE_NAME}.tmp"));
    let bytes = serde_json::to_vec_pretty(snapshot).map_err(std::io::Error::other)?;
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, dir.join(LIVE_FILE_NAME))
}

/// The snapshot thread of a run; dropping it stops the thread and writes the final snapshot.
pub struct LiveWriter {
    live: Arc<Live>,
    dir: PathBuf,
    stop: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<RateWindow>>,
}

impl LiveWriter {
    /// Makes `live` this process's table and writes its snapshot into `dir` about once a
    /// second from a thread of its own. Without a thread (or if the process already has a
    /// table) the run goes on without a snapshot.
    pub fn start(live: Live, dir: &Path) -> Option<LiveWriter> {
        let live = Arc::new(live);
        CURRENT.set(Arc::clone(&live)).ok()?;
        let (tx, rx) = mpsc::channel::<()>();
        let (table, at) = (Arc::clone(&live), dir.to_path_buf());
        let thread = std::thread::Builder::new()
            .name("herdsman-live".into())
            .spawn(move || {
                let mut rate = RateWindow::default();
                loop {
                    let s = table.snapshot(&mut rate, false);
                    if let Err(e) = write_snapshot(&at, &s) {
                        tracing::debug!(error = %e, "cannot write the live status");
                    }
                    match rx.recv_timeout(WRITE_EVERY) {
                        Err(mpsc::RecvTimeoutError::Timeout) => {}
                        _ => return rate,
                    }
                }
            })
            .ok()?;
        Some(LiveWriter {
            live,
            dir: dir.to_path_buf(),
            stop: Some(tx),
            thread: Some(thread),
        })
    }
}

impl Drop for LiveWriter {
    fn drop(&mut self) {
        drop(self.stop.take());
        let mut rate = self
            .thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default();
        let s = self.live.snapshot(&mut rate, true);
        let _ = write_snapshot(&self.dir, &s);
    }
}

/// The sizes of the inputs in bytes, when every one is a regular, uncompressed text file
/// read whole (percent done and ETA come from them).
pub fn input_sizes(specs: &[herdsman_io::InputSpec], whole: bool) -> Option<Vec<u64>> {
    if !whole {
        return None;
    }
    specs
        .iter()
        .map(|s| match &s.path {
            herdsman_io::InputPath::File(f)
                if s.format != herdsman_io::Format::Parquet && !compressed(f) =>
            {
                std::fs::metadata(f)
                    .ok()
                    .filter(|m| m.is_file())
                    .map(|m| m.len())
            }
            _ => None,
        })
        .collect()
}

fn compressed(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("gz" | "zst" | "zstd" | "bz2" | "xz" | "lz4" | "sz")
    )
}

/// The start time of process `pid` (clock ticks after boot), `None` if it is gone or is a
/// zombie (dead, waiting for its parent to collect it).
pub fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) S ppid ...": comm may hold spaces and parentheses; the rest follows the
    // last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is the state (field 3 of the file); starttime is field 22.
    if matches!(fields.first(), Some(&"Z" | &"X" | &"x")) {
        return None;
    }
    fields.get(19)?.parse().ok()
}

/// Whether process `pid` is alive, and (given its start time) the same process.
pub fn pid_alive(pid: u32, start: Option<u64>) -> bool {
    if pid == 0 {
        return false;
    }
    match process_start(pid) {
        Some(now) => start.is_none_or(|s| s == now),
        None => false,
    }
}

/// Whether some process holds the `flock` on `path` now, without taking it: the kernel's
/// table of locks (`/proc/locks`) lists every lock with the file's inode. Where that table
/// cannot be read, a shared lock is tried and let go at once.
pub fn lock_held(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::metadata(path) else {
        return false;
    };
    match std::fs::read_to_string("/proc/locks") {
        Ok(table) => locks_hold_inode(&table, meta.ino()),
        Err(_) => {
            let Ok(f) = std::fs::File::open(path) else {
                return false;
            };
            match f.try_lock_shared() {
                Ok(()) => {
                    let _ = f.unlock();
                    false
                }
                Err(std::fs::TryLockError::WouldBlock) => true,
                Err(_) => false,
            }
        }
    }
}

/// Whether the `/proc/locks` text `table` lists an exclusive `flock` on inode `ino`.
fn locks_hold_inode(table: &str, ino: u64) -> bool {
    table.lines().any(|line| {
        let words: Vec<&str> = line.split_whitespace().collect();
        // "1: FLOCK ADVISORY WRITE 4242 fe:00:5423930 0 EOF"; a waiter's line has "->".
        words.len() >= 6
            && words[1] == "FLOCK"
            && words[3] == "WRITE"
            && words[5]
                .rsplit(':')
                .next()
                .and_then(|i| i.parse::<u64>().ok())
                == Some(ino)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Snapshot {
        Snapshot {
            version: SNAPSHOT_VERSION,
            pid: 4242,
            process_start: Some(777),
            started_at: 1_700_000_000.5,
            updated_at: 1_700_000_010.25,
            is_final: false,
            records: 120,
            succeeded: 100,
            failed: 15,
            filtered: 5,
            retries: 3,
            earlier: 20,
            in_flight: 2,
            rate: RateSnapshot {
                window_s: 10.0,
                records_per_s: 12.5,
                bytes_per_s: 250.0,
            },
            input: InputSnapshot {
                bytes_read: 2500,
                bytes_total: Some(10_000),
                records_read: 130,
            },
            workers: vec![
                WorkerSnapshot {
                    worker: 1,
                    state: "busy".into(),
                    record: Some(121),
                    since: Some(1_700_000_009.0),
                    in_flight: 2,
                    attempts: 60,
                    restarts: 1,
                },
                WorkerSnapshot {
                    worker: 2,
                    state: "idle".into(),
                    record: None,
                    since: None,
                    in_flight: 0,
                    attempts: 60,
                    restarts: 0,
                },
            ],
        }
    }

    #[test]
    fn a_snapshot_reads_back_as_written_with_stable_keys() {
        let dir = tempfile::tempdir().unwrap();
        let s = sample();
        write_snapshot(dir.path(), &s).unwrap();
        assert_eq!(Snapshot::read(dir.path()), Some(s.clone()));
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join(LIVE_FILE_NAME)).unwrap())
                .unwrap();
        assert_eq!(v["final"], serde_json::json!(false));
        assert_eq!(v["input"]["bytes_total"], serde_json::json!(10_000));
        assert_eq!(v["workers"][0]["record"], serde_json::json!(121));
        assert_eq!(v["workers"][1]["since"], serde_json::Value::Null);
        assert!(!dir.path().join(".live.json.tmp").exists());
        // 130 records in a quarter of the input: 520 in all, 120 of them done.
        assert_eq!(s.records_total(), Some(520));
        assert!((s.percent().unwrap() - 120.0 * 100.0 / 520.0).abs() < 1e-9);
        assert_eq!(s.eta_secs(), Some(400.0 / 12.5));
        // Another version's snapshot is not read as this one.
        let mut other = v.clone();
        other["version"] = serde_json::json!(SNAPSHOT_VERSION + 1);
        std::fs::write(dir.path().join(LIVE_FILE_NAME), other.to_string()).unwrap();
        assert_eq!(Snapshot::read(dir.path()), None);
    }

    #[test]
    fn the_table_follows_records_through_workers() {
        let live = Live::new(2, 8, Some(vec![100, 300]), 0);
        let t0 = Instant::now();
        live.submitted(0, 10);
        live.submitted(1, 11);
        live.started(0, 0, t0);
        live.started(1, 1, t0);
        live.ended(0, t0, false);
        // Worker 2 exited with record 12 (index 1): it goes to worker 1 and worker 2 restarts.
        live.started(1, 0, t0);
        live.input_at(1, 50, 2);
        let mut rate = RateWindow::default();
        let s = live.snapshot(&mut rate, false);
        assert_eq!(s.workers[0].state, "busy");
        assert_eq!(s.workers[0].record, Some(12));
        assert_eq!(s.workers[1].state, "idle");
        assert_eq!(s.in_flight, 1);
        assert_eq!(s.input.bytes_read, 150);
        assert_eq!(s.input.bytes_total, Some(400));
        assert_eq!(s.input.records_read, 2);
        live.ended(1, t0, true);
        let s = live.snapshot(&mut rate, true);
        assert!(s.is_final);
        assert_eq!(s.workers[0].restarts, 1);
        assert!(s.workers.iter().all(|w| w.state == "idle"));
    }

    #[test]
    fn the_rate_spans_the_last_seconds() {
        let mut w = RateWindow::default();
        let t = Instant::now();
        for i in 0..30u64 {
            w.push(t + Duration::from_secs(i), i * 5, i * 100);
        }
        let r = w.rate();
        assert!((10.0..=11.0).contains(&r.window_s), "{r:?}");
        assert!((r.records_per_s - 5.0).abs() < 1e-9, "{r:?}");
        assert!((r.bytes_per_s - 100.0).abs() < 1e-9, "{r:?}");
    }

    #[test]
    fn a_process_is_alive_only_while_it_runs_and_is_the_same_one() {
        let me = std::process::id();
        let start = process_start(me);
        assert!(start.is_some());
        assert!(pid_alive(me, start));
        assert!(pid_alive(me, None));
        // The same pid with another start time is a later process, not the run.
        assert!(!pid_alive(me, start.map(|s| s + 1)));
        // A child that exited is not alive, whether or not it has been collected yet.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        let deadline = Instant::now() + Duration::from_secs(60);
        while pid_alive(pid, None) {
            assert!(Instant::now() < deadline, "the zombie still looks alive");
            std::thread::sleep(Duration::from_millis(10));
        }
        child.wait().unwrap();
        assert!(!pid_alive(pid, None));
        assert!(!pid_alive(0, None));
    }

    #[test]
    fn a_held_lock_is_seen_and_a_released_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        std::fs::write(&path, "1\n").unwrap();
        assert!(!lock_held(&path));
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.lock().unwrap();
        assert!(lock_held(&path));
        f.unlock().unwrap();
        assert!(!lock_held(&path));
        assert!(!lock_held(&dir.path().join("missing")));
        let table = "1: FLOCK  ADVISORY  WRITE 21656 fe:00:5423930 0 EOF\n\
                     2: -> FLOCK  ADVISORY  WRITE 3 fe:00:77 0 EOF\n\
                     3: POSIX  ADVISORY  WRITE 9 fe:00:88 0 EOF\n";
        assert!(locks_hold_inode(table, 5423930));
        assert!(!locks_hold_inode(table, 77));
        assert!(!locks_hold_inode(table, 88));
    }
}
