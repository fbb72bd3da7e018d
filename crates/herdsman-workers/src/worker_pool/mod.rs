//! A pool of persistent worker processes speaking the `lines` or `framed` protocol.
//!
//! Each worker has a writer thread (stdin), a reader thread (stdout) and a stderr thread, so
//! the engine's thread never blocks on a pipe. The engine's thread keeps all bookkeeping:
//! the records not yet written to any worker (the pending queue; workers start lazily, when
//! it has a record for them), which attempts are in flight on which worker, and in which
//! order they were sent, and when each record's clock started for the per-record timeout.
//! It also watches each worker process, not only its stdout, since a child the worker left
//! behind may hold the pipe open after the worker exited.
//!
//! This module must never report an abandoned or given-back attempt, never report an
//! attempt twice, never charge a worker crash or timeout to more than the record(s) that
//! caused it, never match an answer of a replaced process to a record sent again, never
//! count the time a record waits behind others against its timeout, never retire a worker
//! (`max_tasks_per_worker`) while it has a record in flight, and never let a worker that
//! floods or ignores its pipes block the caller.
//!
//! The pool is split by job: [`config`] (settings), [`slot`] (per-worker bookkeeping),
//! [`io`] (the stdin/stdout threads), one module per protocol ([`lines`], [`framed`]),
//! [`restart`] (starting, restarting, retiring and killing workers), [`deadline`] (the
//! per-record timeout) and [`stall`] (stuck workers and no-answer notices). This module
//! holds the pool itself: dispatching records to workers and the `Executor` interface.

use std::collections::VecDeque;
use std::process::Child;
// std's channels, not crossbeam's, between the engine's thread and the pipe threads: a
// blocking crossbeam `recv` yields the CPU a few times before it sleeps, and with one wait
// per batch of answers those yields preempted the workers thousands of times per run.
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, SyncSender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::process::{check_dir, check_program, kill_after_grace, reap, wait_exited};
use crate::text::io_phrase;
use crate::{
    AttemptId, AttemptOutcome, Executor, FailureKind, FatalExecutorError, ProcessExecutor, Started,
    WorkItem, WorkOutput, WorkerFailure,
};

mod config;
mod deadline;
mod framed;
mod io;
mod lines;
mod restart;
mod slot;
mod stall;

pub use config::{PoolConfig, Protocol, PROTOCOL_ENV};

use io::Event;
use restart::cwd_fatal;
use slot::{Inflight, InflightSet, Running, Slot};

/// Bytes buffered for one worker before they are handed to its writer thread.
const OUTBOX_FLUSH: usize = 32 * 1024;
/// How long a record should wait in a worker's queue behind other records, at most (roughly).
/// A fast worker gets the full pipeline depth; a slow one gets fewer records at once, so
/// records wait little behind a slow one (the pool's own timeout never counts that wait).
const QUEUE_TARGET: Duration = Duration::from_millis(20);
/// How often `poll` looks for stuck workers while it waits.
const STALL_CHECK: Duration = Duration::from_millis(50);
/// Records in flight per worker before the pool has measured how fast the workers are.
const INITIAL_DEPTH: usize = 4;

/// A pool of persistent worker processes. See the crate docs and `docs/protocol.md`.
///
/// ```
/// use herdsman_workers::{
///     AttemptId, AttemptOutcome, Executor, PoolConfig, WorkItem, WorkerCommand, WorkerPool,
/// };
/// use std::time::Duration;
///
/// let mut cfg = PoolConfig::new(WorkerCommand::argv(["cat"]));
/// cfg.workers = 2;
/// let mut pool = WorkerPool::start(cfg).unwrap();
/// let id = AttemptId { index: 0, attempt: 1 };
/// pool.submit(id, WorkItem::new(0, r#"{"x":1}"#)).unwrap();
/// let mut out = Vec::new();
/// while out.is_empty() {
///     pool.poll(Duration::from_secs(1), &mut out).unwrap();
/// }
/// match &out[0] {
///     (got, AttemptOutcome::Success(records)) => {
///         assert_eq!(*got, id);
///         assert_eq!(records, &vec![br#"{"x":1}"#.to_vec()]);
///     }
///     _ => panic!("unexpected outcome"),
/// }
/// pool.shutdown();
/// ```
pub struct WorkerPool {
    cfg: PoolConfig,
    argv: Vec<String>,
    slots: Vec<Slot>,
    events_tx: Option<SyncSender<Event>>,
    events: Receiver<Event>,
    next_wire: u64,
    cursor: usize,
    /// Worker exits in a row in which the worker answered nothing.
    barren_exits: usize,
    /// Whether any worker of this pool has answered a record: if none ever has, a restart
    /// storm means the command does not work at all (a configuration problem), otherwise
    /// that something went wrong while running.
    ever_answered: bool,
    /// Moving average of the time a worker spends per record, in nanoseconds.
    service_ns: Option<f64>,
    fatal: Option<FatalExecutorError>,
    reapers: Vec<JoinHandle<()>>,
    stopped: bool,
    /// Attempts submitted and not yet written to any worker, oldest first (records a worker
    /// had in flight when it was replaced go back to the front).
    pending: VecDeque<(AttemptId, WorkItem)>,
    /// `lines`: one record at a time per worker from now on (set once a record timed out,
    /// see `docs/protocol.md`).
    serial: bool,
    /// The run is stopping: no new records go to workers.
    stopping: bool,
    /// When `poll` last looked for exited workers and overdue answers.
    last_check: Instant,
    /// Where and when the attempt of each outcome the current `poll` reported started, in
    /// the order of the outcomes (the caller's vector while `poll_with_starts` runs).
    starts: Vec<Started>,
    /// Whether the caller asked for the starts (`poll_with_starts` is running).
    keep_starts: bool,
}

impl WorkerPool {
    /// Prepares a pool of up to `cfg.workers` worker processes. Workers start lazily, when
    /// there is a record to give them, so a pool never starts more workers than it has
    /// records.
    ///
    /// Fails at once, with one sentence saying what to do, if the program cannot be found or
    /// run, or the working directory does not exist.
    ///
    /// The pool may be started and driven from any thread, also one that ends before the
    /// pool does: workers are forked by a thread that lives as long as the process, and die
    /// (`SIGKILL`, through the parent-death signal and the guard process) when the process
    /// does.
    pub fn start(mut cfg: PoolConfig) -> Result<WorkerPool, FatalExecutorError> {
        cfg.workers = cfg.workers.max(1);
        cfg.pipeline_depth = cfg.pipeline_depth.max(1);
        cfg.restart_limit = cfg.restart_limit.max(1);
        cfg.max_line_bytes = cfg.max_line_bytes.max(1024);
        let argv = cfg.command.to_argv();
        if let Some(dir) = &cfg.cwd {
            check_dir(dir).map_err(|e| cwd_fatal(&cfg, &e))?;
        }
        let program = argv.first().map(String::as_str).unwrap_or("");
        check_program(program, cfg.cwd.as_deref()).map_err(|e| {
            FatalExecutorError::configuration(format!(
                "cannot start worker `{}`: {}; check the worker command",
                cfg.command.display(),
                io_phrase(&e)
            ))
            .about(crate::Setting::Command)
        })?;
        let (events_tx, events) = std::sync::mpsc::sync_channel(256);
        let protocol = cfg.protocol;
        let slots = (0..cfg.workers)
            .map(|_| Slot {
                gen: 0,
                running: None,
                inflight: match protocol {
                    Protocol::Lines => InflightSet::Lines(VecDeque::new()),
                    Protocol::Framed => InflightSet::Framed(VecDeque::new()),
                },
                outbox: Vec::new(),
                answered: false,
                busy_since: None,
                stalled: false,
                exited_at: None,
                notice: None,
                head: None,
                tasks: 0,
                retiring: None,
            })
            .collect();
        let pool = WorkerPool {
            cfg,
            argv,
            slots,
            events_tx: Some(events_tx),
            events,
            next_wire: 0,
            cursor: 0,
            barren_exits: 0,
            ever_answered: false,
            service_ns: None,
            fatal: None,
            reapers: Vec::new(),
            stopped: false,
            pending: VecDeque::new(),
            serial: false,
            stopping: false,
            last_check: Instant::now(),
            starts: Vec::new(),
            keep_starts: false,
        };
        Ok(pool)
    }

    /// Starts every worker's process now rather than when its first record arrives, so that
    /// their start-up (an interpreter's imports, say) overlaps whatever the caller prepares
    /// before it has records. A worker that cannot be started is the same fatal error the
    /// first record would have met; dropping the pool stops and reaps the started ones.
    pub fn start_all(&mut self) -> Result<(), FatalExecutorError> {
        for s in 0..self.slots.len() {
            self.ensure_running(s)?;
        }
        Ok(())
    }

    /// The configuration the pool runs with.
    pub fn config(&self) -> &PoolConfig {
        &self.cfg
    }

    /// Picks the worker with the fewest records in flight (round robin among equals),
    /// avoiding stalled workers while any other is available.
    ///
    /// Only workers with room under the pipeline depth count; `None` if none has room. A
    /// worker that has no process yet (or whose process exited) is started by `enqueue`.
    fn pick_slot(&mut self) -> Option<usize> {
        let depth = self.effective_depth();
        let max_tasks = self.cfg.max_tasks_per_worker.unwrap_or(usize::MAX);
        let load = |slot: &Slot| -> Option<usize> {
            if slot.exited_at.is_some() || slot.inflight.len() >= depth {
                return None;
            }
            // A worker that was given its share of records, or one being retired, takes
            // no more: the process is replaced once it has answered them.
            if slot.retiring.is_some() || (slot.running.is_some() && slot.tasks >= max_tasks) {
                return None;
            }
            Some(slot.inflight.len() + if slot.stalled { usize::MAX / 2 } else { 0 })
        };
        let n = self.slots.len();
        let mut best: Option<(usize, usize)> = None;
        for k in 0..n {
            let s = (self.cursor + k) % n;
            let Some(l) = load(&self.slots[s]) else {
                continue;
            };
            if best.is_none_or(|(_, bl)| l < bl) {
                best = Some((s, l));
                if l == 0 {
                    break;
                }
            }
        }
        let (s, _) = best?;
        self.cursor = s + 1;
        Some(s)
    }

    /// Hands pending records to workers with room, starting workers as needed.
    fn dispatch(&mut self) -> Result<(), FatalExecutorError> {
        // Also while stopping: anything pending then was in flight on a worker that ended
        // (it must still be run and reported); the engine itself submits nothing new.
        while !self.pending.is_empty() {
            let Some(s) = self.pick_slot() else {
                break;
            };
            let (id, item) = self.pending.pop_front().expect("not empty");
            self.enqueue(s, id, item)?;
        }
        Ok(())
    }

    /// Takes back what slot `s` had in flight (its process is gone): the records go back to
    /// the front of the pending queue, in order, to be sent again (to any worker) and not
    /// charged; placeholders of abandoned records are dropped.
    fn requeue(&mut self, s: usize) {
        let slot = &mut self.slots[s];
        slot.outbox.clear();
        slot.busy_since = None;
        slot.stalled = false;
        slot.notice = None;
        slot.exited_at = None;
        slot.head = None;
        let mut back: Vec<(AttemptId, WorkItem)> = Vec::new();
        while let Some(inf) = slot.inflight.pop_oldest() {
            if !inf.abandoned {
                back.push((inf.id, inf.item));
            }
        }
        for entry in back.into_iter().rev() {
            self.pending.push_front(entry);
        }
    }

    /// Queues one attempt on slot `s`.
    fn enqueue(
        &mut self,
        s: usize,
        id: AttemptId,
        item: WorkItem,
    ) -> Result<(), FatalExecutorError> {
        self.ensure_running(s)?;
        let wire = self.next_wire;
        self.next_wire += 1;
        let protocol = self.cfg.protocol;
        let slot = &mut self.slots[s];
        Self::encode(protocol, &mut slot.outbox, wire, &item.json);
        let now = Instant::now();
        if let Some(told) = &self.cfg.on_start {
            told(id, s, now);
        }
        if slot.inflight.len() == 0 {
            slot.busy_since = Some(now);
        }
        slot.tasks += 1;
        slot.inflight.push(Inflight {
            id,
            item,
            wire,
            outputs: Vec::new(),
            started: now,
            abandoned: false,
        });
        slot.sync_head(now);
        if slot.outbox.len() >= OUTBOX_FLUSH {
            self.flush_slot(s);
        }
        Ok(())
    }

    /// Writes one record as a request of `protocol` into a worker's outbox.
    fn encode(protocol: Protocol, outbox: &mut Vec<u8>, wire: u64, json: &[u8]) {
        match protocol {
            Protocol::Lines => lines::encode(outbox, json),
            Protocol::Framed => framed::encode(outbox, wire, json),
        }
    }

    fn flush_slot(&mut self, s: usize) {
        let slot = &mut self.slots[s];
        if slot.outbox.is_empty() {
            return;
        }
        if let Some(r) = &mut slot.running {
            r.in_flight.store(slot.inflight.len(), Ordering::Relaxed);
            // A broken pipe means the worker is gone; its exit is handled via stdout EOF.
            r.stdin.send(&mut slot.outbox);
        }
        slot.outbox.clear();
    }

    fn flush_all(&mut self) {
        for s in 0..self.slots.len() {
            self.flush_slot(s);
        }
    }

    fn failure(
        &self,
        s: usize,
        kind: FailureKind,
        message: String,
        retryable: bool,
    ) -> WorkerFailure {
        WorkerFailure {
            kind,
            message,
            retryable,
            retry_after: None,
            worker: s,
            stderr_tail: self.slots[s]
                .running
                .as_ref()
                .and_then(|r| r.stderr.tail.lock().ok().map(|t| t.snapshot()))
                .unwrap_or_default(),
        }
    }

    fn handle(&mut self, ev: Event, out: &mut Vec<Outcome>) -> Result<(), FatalExecutorError> {
        let s = match &ev {
            Event::Stdout { slot, .. } | Event::TooLong { slot, .. } | Event::Eof { slot, .. } => {
                *slot
            }
        };
        self.handle_event(ev, out)?;
        if let Some(r) = &self.slots[s].running {
            r.in_flight
                .store(self.slots[s].inflight.len(), Ordering::Relaxed);
        }
        // An answer may have made another record the oldest: its clock starts now.
        self.slots[s].sync_head(Instant::now());
        self.retire_spent(s);
        Ok(())
    }

    fn handle_event(
        &mut self,
        ev: Event,
        out: &mut Vec<Outcome>,
    ) -> Result<(), FatalExecutorError> {
        match ev {
            Event::Stdout { slot, gen, chunk } => {
                if self.slots[slot].gen == gen {
                    match self.cfg.protocol {
                        Protocol::Lines => self.lines_chunk(slot, &chunk, out),
                        Protocol::Framed => self.framed_chunk(slot, &chunk, out),
                    }
                }
            }
            Event::TooLong { slot, gen } => {
                if self.slots[slot].gen == gen {
                    if let Some(inf) = self.slots[slot].inflight.pop_oldest() {
                        self.note_answer(slot, 1);
                        if inf.abandoned {
                            return Ok(());
                        }
                        let msg = format!(
                            "worker {slot} wrote an output line longer than {} bytes; it was discarded",
                            self.cfg.max_line_bytes
                        );
                        let f = self.failure(slot, FailureKind::BadOutput, msg, false);
                        self.report(out, slot, &inf, AttemptOutcome::Failure(f));
                    }
                }
            }
            Event::Eof { slot, gen, partial } => {
                if self.slots[slot].gen == gen {
                    self.worker_ended(slot, &partial, out)?;
                }
            }
        }
        Ok(())
    }

    /// What a restart storm is: a configuration problem while no worker of this pool has
    /// ever answered a record (the command does not work), a runtime one afterwards.
    pub(super) fn storm_kind(&self) -> herdsman::FatalKind {
        if self.ever_answered {
            herdsman::FatalKind::Runtime
        } else {
            herdsman::FatalKind::Configuration
        }
    }

    /// Reports the outcome of attempt `inf` on slot `s`, with its start.
    #[inline]
    fn report(&mut self, out: &mut Vec<Outcome>, s: usize, inf: &Inflight, outcome: Reported) {
        out.push((inf.id, outcome));
        if self.keep_starts {
            self.starts.push(Started {
                worker: s,
                at: Some(inf.started),
            });
        }
    }

    /// Records that the worker of slot `s` just answered `k` records.
    fn note_answer(&mut self, s: usize, k: usize) {
        self.barren_exits = 0;
        self.ever_answered = true;
        let slot = &mut self.slots[s];
        // The first answer of a process also paid for its start-up: do not measure it.
        let measure = std::mem::replace(&mut slot.answered, true);
        slot.stalled = false;
        if k == 0 {
            return;
        }
        let now = Instant::now();
        if let (true, Some(since)) = (measure, slot.busy_since) {
            let sample = now.duration_since(since).as_nanos() as f64 / k as f64;
            self.service_ns = Some(match self.service_ns {
                None => sample,
                Some(old) => old * 0.9 + sample * 0.1,
            });
        }
        slot.busy_since = (slot.inflight.len() > 0).then_some(now);
    }

    /// What `poll` does, reporting each outcome's start in `self.starts`.
    fn poll_outcomes(
        &mut self,
        timeout: Duration,
        out: &mut Vec<Outcome>,
    ) -> Result<(), FatalExecutorError> {
        if let Some(f) = &self.fatal {
            return Err(f.clone());
        }
        self.dispatch()?;
        self.unstick()?;
        self.flush_all();
        let start_len = out.len();
        let deadline = Instant::now() + timeout;
        loop {
            // Take everything already waiting, then block only if nothing finished.
            while let Ok(ev) = self.events.try_recv() {
                self.handle(ev, out)?;
                if out.len() - start_len >= 4096 {
                    break;
                }
            }
            // Answers that already arrived count; only then are exits and late records
            // handled.
            self.finish_retirements()?;
            self.check_workers(out)?;
            self.expire(out)?;
            if self.stopping {
                self.retire_idle();
            }
            // Restarts may have queued re-sends.
            self.flush_all();
            if out.len() > start_len {
                return Ok(());
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(());
            }
            // Never sleep past the moment a record runs out of time.
            let mut wait = (deadline - now).min(STALL_CHECK);
            if let Some(expiry) = self.next_deadline() {
                wait = wait.min(expiry.saturating_duration_since(now));
            }
            match self.events.recv_timeout(wait) {
                Ok(ev) => self.handle(ev, out)?,
                Err(_) => self.unstick()?,
            }
        }
    }

    /// How many records each worker may have in flight now.
    ///
    /// With the lines protocol: enough that a record waits about 20 ms behind
    /// the others, within `1..=pipeline_depth` (a slow worker gets one record at a time).
    /// With the framed protocol, always `pipeline_depth`: a framed worker may hold records
    /// back to answer them in a batch, so the pool never sends it fewer than configured.
    pub fn effective_depth(&self) -> usize {
        let max = self.cfg.pipeline_depth;
        if self.cfg.protocol == Protocol::Framed {
            return max;
        }
        if self.serial {
            return 1;
        }
        match self.service_ns {
            None => INITIAL_DEPTH.min(max),
            Some(ns) => ((QUEUE_TARGET.as_nanos() as f64 / ns.max(1.0)) as usize).clamp(1, max),
        }
    }
}

/// Appends a record's compact JSON to a request, with any raw newline in it replaced by a
/// space (a raw newline can only be insignificant whitespace in valid JSON), so that a
/// request is always exactly one line.
fn push_record(outbox: &mut Vec<u8>, json: &[u8]) {
    if memchr::memchr(b'\n', json).is_some() {
        outbox.extend(json.iter().map(|&b| if b == b'\n' { b' ' } else { b }));
    } else {
        outbox.extend_from_slice(json);
    }
}

/// The lines of a chunk read from a worker, split at each `\n` (the newline not included;
/// what follows the last newline is one more, possibly empty, line), as `split` would, but
/// finding the newlines with memchr instead of testing byte by byte.
fn lines_of(chunk: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut start = 0;
    let mut ends = memchr::memchr_iter(b'\n', chunk);
    let mut done = false;
    std::iter::from_fn(move || {
        if done {
            return None;
        }
        let end = ends.next().unwrap_or_else(|| {
            done = true;
            chunk.len()
        });
        let line = &chunk[start..end];
        start = end + 1;
        Some(line)
    })
}

type Outcome = (AttemptId, Reported);
type Reported = AttemptOutcome<WorkOutput, WorkerFailure>;

impl Executor<WorkItem> for WorkerPool {
    type Output = WorkOutput;
    type Error = WorkerFailure;

    fn capacity(&self) -> usize {
        self.cfg.workers * self.effective_depth()
    }

    fn concurrency(&self) -> usize {
        self.cfg.workers
    }

    fn submit(&mut self, id: AttemptId, item: WorkItem) -> Result<(), FatalExecutorError> {
        if let Some(f) = &self.fatal {
            return Err(f.clone());
        }
        self.pending.push_back((id, item));
        self.dispatch()
    }

    fn poll(
        &mut self,
        timeout: Duration,
        out: &mut Vec<Outcome>,
    ) -> Result<(), FatalExecutorError> {
        self.poll_outcomes(timeout, out)
    }

    fn abandon(&mut self, id: AttemptId) {
        if let Some(pos) = self.pending.iter().position(|(p, _)| *p == id) {
            self.pending.remove(pos);
            return;
        }
        for s in 0..self.slots.len() {
            let Some(busy) = self.slots[s].inflight.abandon(id) else {
                continue;
            };
            // The other records go back to the pending queue; they are sent again when the
            // pool is next polled or given a record, so abandoning every record at the end
            // of a run does not start a worker per record.
            if busy {
                if let Some(running) = self.slots[s].running.take() {
                    self.kill_async(running);
                }
                self.requeue(s);
            }
            return;
        }
    }

    fn stop_queued(&mut self, not_started: &mut Vec<AttemptId>) {
        self.stopping = true;
        let mut not_run: Vec<AttemptId> = self.pending.drain(..).map(|(id, _)| id).collect();
        for s in 0..self.slots.len() {
            match &mut self.slots[s].inflight {
                // Answers come in order: the worker is busy with its oldest record only; the
                // ones queued behind it become placeholders whose answers are dropped.
                InflightSet::Lines(q) => {
                    for inf in q.iter_mut().skip(1).filter(|i| !i.abandoned) {
                        inf.abandoned = true;
                        not_run.push(inf.id);
                    }
                }
                // A framed worker keeps its oldest record; the others are forgotten (a later
                // reply for them is ignored), and its stdin is closed, so that a worker that
                // holds records back for a batch answers what it has.
                InflightSet::Framed(q) => {
                    not_run.extend(q.drain(1.min(q.len())..).map(|inf| inf.id));
                }
            }
            if self.cfg.protocol == Protocol::Framed {
                self.flush_slot(s);
                if let Some(r) = &mut self.slots[s].running {
                    r.stdin.close();
                }
            }
        }
        self.retire_idle();
        not_run.sort();
        not_started.extend(not_run);
    }

    fn shutdown(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        let mut children: Vec<Child> = Vec::new();
        for slot in &mut self.slots {
            slot.outbox.clear();
            if let Some(r) = slot.running.take() {
                // Closes the worker's stdin once what was sent is written.
                drop(r.stdin);
                children.push(r.child);
            }
        }
        // Stop reader threads that may be blocked on a full event channel.
        self.events_tx = None;
        self.events = std::sync::mpsc::sync_channel(0).1;
        let close_wait = self.cfg.kill_grace.min(Duration::from_millis(500));
        let deadline = Instant::now() + close_wait;
        for child in &children {
            let left = deadline.saturating_duration_since(Instant::now());
            wait_exited(child.id(), left);
        }
        let leaders: Vec<u32> = children.iter().map(Child::id).collect();
        kill_after_grace(&leaders, self.cfg.kill_grace, |_| Some(()));
        for child in &mut children {
            let _ = reap(child);
        }
        for h in self.reapers.drain(..) {
            let _ = h.join();
        }
        for slot in &mut self.slots {
            if let Some(h) = slot.retiring.take() {
                let _ = h.join();
            }
        }
    }
}

impl ProcessExecutor for WorkerPool {
    fn poll_with_starts(
        &mut self,
        timeout: Duration,
        out: &mut Vec<Outcome>,
        starts: &mut Vec<Started>,
    ) -> Result<(), FatalExecutorError> {
        // The outcomes' starts go straight to the caller's vector.
        std::mem::swap(&mut self.starts, starts);
        self.keep_starts = true;
        let polled = self.poll_outcomes(timeout, out);
        self.keep_starts = false;
        std::mem::swap(&mut self.starts, starts);
        polled
    }
}

impl Drop for WorkerPool {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_of_splits_as_split_does() {
        for chunk in [&b""[..], b"\n", b"a", b"a\n", b"a\nb", b"a\n\nb\n", b"\n\n"] {
            let ours: Vec<&[u8]> = lines_of(chunk).collect();
            let split: Vec<&[u8]> = chunk.split(|&b| b == b'\n').collect();
            assert_eq!(ours, split, "{chunk:?}");
        }
    }

    #[test]
    fn encode_framed_and_lines() {
        let mut b = Vec::new();
        WorkerPool::encode(Protocol::Framed, &mut b, 7, b"{\"a\":1}");
        WorkerPool::encode(Protocol::Lines, &mut b, 8, b"{\"a\":\n2}");
        assert_eq!(b, b"{\"id\":7,\"record\":{\"a\":1}}\n{\"a\": 2}\n");
    }
}
