//! The run's history: about once a second, one sample of what the run is doing (counts,
//! throughput, latency quantiles, in-flight attempts, busy time per worker, restarts, retries,
//! server-requested waits) appended to the job's ledger, plus the run's slowest records. A
//! resumed run continues the series with the next run number. `herdsman report` draws it.
//!
//! Two halves: a [`Probe`] the executor feeds from its own threads (which worker runs which
//! attempt, and how attempts end), and a [`History`] on the thread that commits chunks, which
//! takes a sample when a record finishes at least a second after the previous sample and
//! writes it between two commits. This module must never fail a run: a sample that cannot be
//! written is reported once and history stops for the rest of the run.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use hdrhistogram::Histogram;
use herdsman::executor::AttemptId;
use herdsman_ledger::{
    HistorySample, Ledger, LedgerError, SlowRecord, WorkerSample, LATENCY_BUCKETS_MS,
    SLOWEST_PER_RUN,
};

use crate::summary::Counts;

/// How often a sample is taken while records finish.
pub(crate) const SAMPLE_EVERY: Duration = Duration::from_secs(1);

use crate::id_map::IdMap;

/// What the executor tells the history: attempts starting on workers and ending.
#[derive(Clone)]
pub(crate) struct Probe {
    state: Arc<Mutex<ProbeState>>,
    /// Starts reported by the workers' threads, not yet moved into `running`: a lock of its
    /// own, held only for a push or a swap, so a worker never waits for the engine's thread
    /// (nor for a sample) to report a start, and a start costs no channel message.
    starts: Arc<Mutex<Vec<(AttemptId, usize, Instant)>>>,
}

#[derive(Default)]
struct WorkerAcc {
    busy: Duration,
    attempts: u64,
    restarts: u64,
}

struct ProbeState {
    /// The starts swapped out of [`Probe::starts`], being moved into `running` (kept to
    /// reuse its allocation).
    pulled: Vec<(AttemptId, usize, Instant)>,
    /// Attempts running on a worker: which (0-based) and since when.
    running: IdMap<(usize, Instant)>,
    workers: Vec<WorkerAcc>,
    /// Start of the interval the per-worker numbers describe.
    since: Instant,
    restarts: u64,
    rate_limit_wait: Duration,
    /// Whether a worker that exits or is killed is replaced (a worker pool; per-record
    /// commands are one process each, so nothing is restarted).
    pool: bool,
}

/// The executor side's numbers at one moment.
struct Taken {
    in_flight: u64,
    workers: Vec<WorkerSample>,
    restarts: u64,
    rate_limit_wait: Duration,
}

impl Probe {
    /// A probe for a worker pool (`pool`) or per-record commands.
    pub(crate) fn new(pool: bool) -> Probe {
        let state = Arc::new(Mutex::new(ProbeState {
            pulled: Vec::new(),
            running: IdMap::default(),
            workers: Vec::new(),
            since: Instant::now(),
            restarts: 0,
            rate_limit_wait: Duration::ZERO,
            pool,
        }));
        Probe {
            state,
            starts: Arc::default(),
        }
    }

    /// The state, with the starts reported so far moved in.
    fn lock(&self) -> std::sync::MutexGuard<'_, ProbeState> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let st_ref = &mut *st;
        std::mem::swap(
            &mut *self.starts.lock().unwrap_or_else(|p| p.into_inner()),
            &mut st_ref.pulled,
        );
        for (id, worker, at) in st_ref.pulled.drain(..) {
            st_ref.running.insert(id, (worker, at));
        }
        st
    }

    /// Worker `worker` (0-based) started attempt `id` at `at` (called on the executor's
    /// threads).
    pub(crate) fn started(&self, id: AttemptId, worker: usize, at: Instant) {
        self.starts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((id, worker, at));
    }

    /// Attempts ended at `now`: for each its id, and for a failure whether the worker was
    /// replaced because of it (it exited or was killed) and the wait the server asked for.
    pub(crate) fn ended(
        &self,
        now: Instant,
        ended: impl Iterator<Item = (AttemptId, bool, Option<Duration>)>,
    ) {
        let mut st = self.lock();
        let since = st.since;
        let pool = st.pool;
        for (id, replaced, wait) in ended {
            if let Some(w) = wait {
                st.rate_limit_wait += w;
            }
            let Some((worker, start)) = st.running.remove(&id) else {
                continue;
            };
            let acc = st.worker(worker);
            acc.busy += now.saturating_duration_since(start.max(since));
            acc.attempts += 1;
            if replaced && pool {
                acc.restarts += 1;
                st.restarts += 1;
            }
        }
    }

    /// Attempt `id` was given up without an outcome.
    pub(crate) fn abandoned(&self, id: AttemptId) {
        self.lock().running.remove(&id);
    }

    /// The numbers since the previous call, which starts a new interval at `now`.
    fn take(&self, now: Instant) -> Taken {
        let mut st = self.lock();
        let since = st.since;
        let running: Vec<(usize, Instant)> = st.running.values().copied().collect();
        for (worker, start) in running {
            st.worker(worker).busy += now.saturating_duration_since(start.max(since));
        }
        let interval = now.saturating_duration_since(since);
        let workers = st
            .workers
            .iter_mut()
            .enumerate()
            .map(|(i, acc)| {
                let w = WorkerSample {
                    worker: i as u32 + 1,
                    // Pipelined attempts overlap on one worker: it is busy at most all along.
                    busy_ms: acc.busy.min(interval).as_millis() as u64,
                    attempts: acc.attempts,
                    restarts: acc.restarts,
                };
                *acc = WorkerAcc::default();
                w
            })
            .collect();
        st.since = now;
        Taken {
            in_flight: st.running.len() as u64,
            workers,
            restarts: st.restarts,
            rate_limit_wait: st.rate_limit_wait,
        }
    }
}

impl ProbeState {
    fn worker(&mut self, i: usize) -> &mut WorkerAcc {
        if self.workers.len() <= i {
            self.workers.resize_with(i + 1, WorkerAcc::default);
        }
        &mut self.workers[i]
    }
}

/// The sampler, on the thread that commits chunks.
pub(crate) struct History {
    run: u32,
    started: Instant,
    last: Instant,
    probe: Probe,
    latency: Histogram<u64>,
    buckets: Vec<u64>,
    finished: u64,
    retries: u64,
    /// The run's slowest records so far, slowest first.
    slowest: Vec<SlowRecord>,
    slowest_changed: bool,
}

impl History {
    /// Starts the history of a new run of the job in `ledger`: run number one higher than
    /// the last one recorded. `None` (and a debug log line) when the ledger keeps no history;
    /// a warning when it cannot be read.
    pub(crate) fn start(ledger: &dyn Ledger, probe: Probe) -> Option<History> {
        let last = match ledger.last_history_run() {
            Ok(n) => n,
            Err(LedgerError::Unsupported { .. }) => {
                tracing::debug!("this ledger keeps no run history");
                return None;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the run's history; this run records none");
                return None;
            }
        };
        let now = Instant::now();
        Some(History {
            run: last + 1,
            started: now,
            // The first record to finish writes a sample at once, so every run is numbered.
            last: now.checked_sub(SAMPLE_EVERY).unwrap_or(now),
            probe,
            latency: new_histogram(),
            buckets: vec![0; LATENCY_BUCKETS_MS.len() + 1],
            finished: 0,
            retries: 0,
            slowest: Vec::new(),
            slowest_changed: false,
        })
    }

    /// This run's number.
    #[cfg(test)]
    pub(crate) fn run(&self) -> u32 {
        self.run
    }

    /// Whether a record that took `d` is among the run's slowest so far (the caller then
    /// looks up its position for [`History::finished`]).
    pub(crate) fn is_slow(&self, d: Duration) -> bool {
        self.slowest.len() < SLOWEST_PER_RUN
            || self.slowest.last().is_some_and(|s| ms(d) > s.duration_ms)
    }

    /// A record finished after `d` (all its attempts), in `attempts` attempts, as `outcome`;
    /// `at` is its file and position when [`History::is_slow`] said to look them up.
    pub(crate) fn finished(
        &mut self,
        d: Duration,
        attempts: u32,
        outcome: &'static str,
        at: Option<(String, herdsman_io::Position)>,
    ) {
        let us = (d.as_micros() as u64).clamp(1, 3_600_000_000);
        let _ = self.latency.record(us);
        let ms = ms(d);
        let b = LATENCY_BUCKETS_MS
            .iter()
            .position(|&bound| ms <= bound)
            .unwrap_or(LATENCY_BUCKETS_MS.len());
        self.buckets[b] += 1;
        self.finished += 1;
        self.retries += u64::from(attempts.saturating_sub(1));
        if let Some((file, pos)) = at {
            let slow = SlowRecord {
                run: self.run,
                record: pos.seq + 1,
                file,
                line: pos.line,
                duration_ms: ms,
                attempts,
                outcome: outcome.to_string(),
            };
            let i = self.slowest.partition_point(|s| s.duration_ms >= ms);
            self.slowest.insert(i, slow);
            self.slowest.truncate(SLOWEST_PER_RUN);
            self.slowest_changed = true;
        }
    }

    /// Whether a sample is due at `now`.
    pub(crate) fn due(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.last) >= SAMPLE_EVERY
    }

    /// The sample of the interval that ends at `now`; starts the next interval.
    pub(crate) fn sample(&mut self, counts: &Counts, now: Instant) -> HistorySample {
        let interval = now.saturating_duration_since(self.last.max(self.started));
        let taken = self.probe.take(now);
        let q = |q: f64| {
            (!self.latency.is_empty()).then(|| self.latency.value_at_quantile(q) as f64 / 1000.0)
        };
        let secs = interval.as_secs_f64();
        let sample = HistorySample {
            run: self.run,
            at_ms: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64),
            elapsed_ms: now.saturating_duration_since(self.started).as_millis() as u64,
            interval_ms: interval.as_millis() as u64,
            ok: counts.ok,
            failed: counts.failed,
            filtered: counts.filtered,
            records_per_sec: if secs > 0.0 {
                self.finished as f64 / secs
            } else {
                0.0
            },
            finished: self.finished,
            p50_ms: q(0.5),
            p90_ms: q(0.9),
            p99_ms: q(0.99),
            max_ms: (!self.latency.is_empty()).then(|| self.latency.max() as f64 / 1000.0),
            latency_buckets: std::mem::replace(
                &mut self.buckets,
                vec![0; LATENCY_BUCKETS_MS.len() + 1],
            ),
            in_flight: taken.in_flight,
            workers: taken.workers,
            restarts: taken.restarts,
            retries: self.retries,
            rate_limit_wait_ms: taken.rate_limit_wait.as_millis() as u64,
        };
        self.latency.reset();
        self.finished = 0;
        self.last = now;
        sample
    }

    /// Takes a sample and writes it (and the slowest records when they changed) to `ledger`.
    /// A failure is reported once; the caller then drops the history (`false`).
    pub(crate) fn write(&mut self, ledger: &mut dyn Ledger, counts: &Counts, now: Instant) -> bool {
        let sample = self.sample(counts, now);
        let mut result = ledger.append_history(std::slice::from_ref(&sample));
        if result.is_ok() && self.slowest_changed {
            result = ledger.replace_slowest(self.run, &self.slowest);
            self.slowest_changed = false;
        }
        match result {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "cannot record the run's history; the run goes on without it");
                false
            }
        }
    }
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 2).expect("valid histogram bounds")
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use herdsman_ledger::JobIdentity;

    fn id(index: u64) -> AttemptId {
        AttemptId { index, attempt: 1 }
    }

    #[test]
    fn busy_time_restarts_and_waits_are_counted_per_worker() {
        let probe = Probe::new(true);
        let t0 = probe.lock().since;
        probe.started(id(0), 0, t0);
        probe.started(id(1), 1, t0);
        probe.ended(
            t0 + Duration::from_millis(400),
            [
                (id(0), false, None),
                (id(1), true, Some(Duration::from_secs(2))),
            ]
            .into_iter(),
        );
        probe.started(id(2), 0, t0 + Duration::from_millis(500));
        let taken = probe.take(t0 + Duration::from_millis(1000));
        assert_eq!(taken.in_flight, 1);
        assert_eq!(taken.restarts, 1);
        assert_eq!(taken.rate_limit_wait, Duration::from_secs(2));
        let busy: Vec<(u32, u64, u64)> = taken
            .workers
            .iter()
            .map(|w| (w.worker, w.busy_ms, w.restarts))
            .collect();
        // Worker 1: 400 ms, then 500 ms of the attempt still running; worker 2: 400 ms.
        assert_eq!(busy, vec![(1, 900, 0), (2, 400, 1)]);
        // The next interval starts where the last one ended.
        let next = probe.take(t0 + Duration::from_millis(1500));
        assert_eq!(next.workers[0].busy_ms, 500);
        assert_eq!(next.workers[1].busy_ms, 0);
    }

    #[test]
    fn commands_are_not_restarted() {
        let probe = Probe::new(false);
        let t0 = probe.lock().since;
        probe.started(id(0), 0, t0);
        probe.ended(t0, [(id(0), true, None)].into_iter());
        assert_eq!(probe.take(t0).restarts, 0);
    }

    #[test]
    fn samples_hold_quantiles_buckets_and_the_slowest_records() {
        let tmp = tempfile::tempdir().unwrap();
        let ledger = herdsman_ledger::open(tmp.path()).unwrap();
        let mut h = History::start(&*ledger, Probe::new(true)).unwrap();
        assert_eq!(h.run(), 1);
        assert!(
            h.due(Instant::now()),
            "the first record writes a sample at once"
        );
        for i in 0..30u64 {
            let d = Duration::from_millis(i + 1);
            let at = h.is_slow(d).then(|| {
                let pos = herdsman_io::Position {
                    seq: i,
                    line: i + 2,
                    ..herdsman_io::Position::START
                };
                ("in.csv".to_string(), pos)
            });
            h.finished(d, if i == 29 { 3 } else { 1 }, "succeeded", at);
        }
        let mut counts = Counts::default();
        counts.counts.ok = 30;
        let s = h.sample(&counts, Instant::now() + Duration::from_millis(10));
        assert_eq!((s.run, s.finished, s.ok, s.retries), (1, 30, 30, 2));
        assert!(
            s.p50_ms.unwrap() >= 14.0 && s.p50_ms.unwrap() <= 16.0,
            "{s:?}"
        );
        assert!(s.max_ms.unwrap() >= 29.0);
        assert_eq!(s.latency_buckets.iter().sum::<u64>(), 30);
        assert_eq!(h.slowest.len(), SLOWEST_PER_RUN);
        assert_eq!(h.slowest[0].record, 30);
        assert_eq!(h.slowest[SLOWEST_PER_RUN - 1].record, 11);
        // The next interval starts empty.
        let empty = h.sample(&counts, Instant::now() + Duration::from_millis(20));
        assert_eq!((empty.finished, empty.p50_ms), (0, None));
        assert_eq!(empty.retries, 2, "retries count the whole run");
    }

    #[test]
    fn a_resumed_run_continues_the_series() {
        let tmp = tempfile::tempdir().unwrap();
        let identity = JobIdentity::new().with("input.0.path", "in.csv");
        for expected in 1..=3u32 {
            let mut ledger = herdsman_ledger::open(tmp.path()).unwrap();
            ledger.open_job(&identity).unwrap();
            let mut h = History::start(&*ledger, Probe::new(true)).unwrap();
            assert_eq!(h.run(), expected);
            assert!(h.write(&mut *ledger, &Counts::default(), Instant::now()));
        }
        let view = herdsman_ledger::open_read_only(tmp.path()).unwrap();
        let runs: Vec<u32> = view.history().unwrap().iter().map(|s| s.run).collect();
        assert_eq!(runs, vec![1, 2, 3]);
    }
}
