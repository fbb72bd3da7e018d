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

use std::collections::{BTreeMap, VecDeque};
use std::io::{BufWriter, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::value::RawValue;
// std's channels, not crossbeam's, between the engine's thread and the pipe threads: a
// blocking crossbeam `recv` yields the CPU a few times before it sleeps, and with one wait
// per batch of answers those yields preempted the workers thousands of times per run.
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender, SyncSender, TryRecvError};
use std::sync::Arc;

use nix::sys::signal::Signal;

use crate::process::{
    check_dir, check_program, describe_status, has_exited, human_duration, io_phrase, reap,
    signal_group, spawn_piped, terminate_group, wait_exited, WorkerCommand,
};
use crate::tail::StderrReader;
use crate::{
    AttemptId, AttemptOutcome, Executor, FailureKind, FatalExecutorError, NoticeSink, StderrSink,
    WorkItem, WorkOutput, WorkerFailure, MAX_RETRY_AFTER,
};

/// The wire protocol between herdsman and its workers (see `docs/protocol.md`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Protocol {
    /// One JSON record per line on stdin; exactly one JSON line back per record, in order.
    #[default]
    Lines,
    /// Records in an envelope with an id; replies carry the id and may come in any order,
    /// with zero or more outputs per record, or an error.
    Framed,
}

/// The environment variable that tells every worker process which protocol the pool speaks
/// (`lines` or `framed`); `herdsman_worker` (Python) reads it.
pub const PROTOCOL_ENV: &str = "HERDSMAN_PROTOCOL";

/// Settings for a [`WorkerPool`].
#[derive(Clone)]
pub struct PoolConfig {
    /// The program each worker runs.
    pub command: WorkerCommand,
    /// How many worker processes run at once.
    pub workers: usize,
    /// At most how many records may be in flight on one worker (sent but not answered).
    /// The pool uses fewer when workers are slow; see [`WorkerPool::effective_depth`].
    pub pipeline_depth: usize,
    /// The wire protocol.
    pub protocol: Protocol,
    /// Extra environment variables for the workers.
    pub env: Vec<(String, String)>,
    /// How long a worker gets between SIGTERM and SIGKILL.
    pub kill_grace: Duration,
    /// Receives every stderr line of every worker, with the worker's index.
    pub stderr: Option<StderrSink>,
    /// After this many worker exits in a row in which the worker answered nothing, the pool
    /// gives up with a fatal error instead of restarting it again.
    pub restart_limit: usize,
    /// Longest output line accepted from a worker, in bytes.
    pub max_line_bytes: usize,
    /// How long one record may take, measured from when its worker could start on it (see
    /// `docs/protocol.md`): from when it became the oldest unanswered record of its worker
    /// (when the record sent before it was answered), or from when it was written to a
    /// worker that had nothing else in flight; never the time it waited behind other
    /// records. The first record of a freshly started worker process gets a start-up
    /// allowance on top: the timeout again, at most [`PoolConfig::MAX_STARTUP_ALLOWANCE`].
    /// A record that takes longer fails with [`FailureKind::Timeout`]; its worker's process
    /// group is killed and the worker restarted, and the other records in flight on it are
    /// sent again, uncharged. `None`: no limit.
    pub timeout: Option<Duration>,
    /// Retire a worker process after it was given this many records (as Python's
    /// `maxtasksperchild`): once it has answered them all, its stdin is closed, it is waited
    /// for (then its process group is stopped as usual after the kill grace), and a new
    /// process takes its slot when there is a record for it. Nothing is lost or charged.
    /// `None`: a worker lives until the run ends (or it fails).
    pub max_tasks_per_worker: Option<usize>,
    /// The directory the workers start in; `None`: the caller's current directory.
    pub cwd: Option<PathBuf>,
    /// Receives notices about the pool's health, one sentence each, such as a record that
    /// has had no answer for a long time. `None`: notices are dropped.
    pub notices: Option<NoticeSink>,
    /// After how long without an answer a record in flight is reported to
    /// [`PoolConfig::notices`] (`record 812 on worker 1: no answer for 60 s ...`); the notice
    /// repeats at doubling intervals while the record stays unanswered. Default 60 s.
    pub no_answer_notice: Duration,
}

impl PoolConfig {
    /// Defaults: one worker per available CPU, pipeline depth
    /// [`PoolConfig::DEFAULT_PIPELINE_DEPTH`], the lines protocol, a 2 s kill grace.
    pub fn new(command: WorkerCommand) -> Self {
        PoolConfig {
            command,
            workers: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            pipeline_depth: Self::DEFAULT_PIPELINE_DEPTH,
            protocol: Protocol::Lines,
            env: Vec::new(),
            kill_grace: Duration::from_secs(2),
            stderr: None,
            restart_limit: 5,
            max_line_bytes: 64 << 20,
            timeout: None,
            max_tasks_per_worker: None,
            cwd: None,
            notices: None,
            no_answer_notice: Self::DEFAULT_NO_ANSWER_NOTICE,
        }
    }

    /// The default for [`PoolConfig::no_answer_notice`].
    pub const DEFAULT_NO_ANSWER_NOTICE: Duration = Duration::from_secs(60);

    /// The default number of records in flight per worker.
    pub const DEFAULT_PIPELINE_DEPTH: usize = 256;

    /// The longest start-up allowance a fresh worker's first record gets on top of the
    /// timeout (see [`PoolConfig::timeout`]).
    pub const MAX_STARTUP_ALLOWANCE: Duration = Duration::from_secs(10);
}

impl std::fmt::Debug for PoolConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolConfig")
            .field("command", &self.command)
            .field("workers", &self.workers)
            .field("pipeline_depth", &self.pipeline_depth)
            .field("protocol", &self.protocol)
            .field("env", &self.env)
            .field("kill_grace", &self.kill_grace)
            .field("stderr", &self.stderr.is_some())
            .field("restart_limit", &self.restart_limit)
            .field("max_line_bytes", &self.max_line_bytes)
            .field("timeout", &self.timeout)
            .field("max_tasks_per_worker", &self.max_tasks_per_worker)
            .field("cwd", &self.cwd)
            .field("notices", &self.notices.is_some())
            .field("no_answer_notice", &self.no_answer_notice)
            .finish()
    }
}

/// Bytes buffered for one worker before they are handed to its writer thread.
const OUTBOX_FLUSH: usize = 32 * 1024;
/// How long a record should wait in a worker's queue behind other records, at most (roughly).
/// A fast worker gets the full pipeline depth; a slow one gets fewer records at once, so
/// records wait little behind a slow one (the pool's own timeout never counts that wait).
pub(crate) const QUEUE_TARGET: Duration = Duration::from_millis(20);
/// The shortest time a `lines` worker may be stuck on one record before the records queued
/// behind it move to other workers.
const STALL_MIN: Duration = Duration::from_millis(100);
/// How often `poll` looks for stuck workers while it waits.
const STALL_CHECK: Duration = Duration::from_millis(50);
/// Records in flight per worker before the pool has measured how fast the workers are.
const INITIAL_DEPTH: usize = 4;
/// How long to wait for a worker whose stdout closed to actually exit.
const EXIT_WAIT: Duration = Duration::from_millis(500);
/// How often `poll` checks whether a worker process has exited (its stdout may stay open
/// when a child it left behind holds it).
const EXIT_CHECK: Duration = Duration::from_millis(10);
/// How long to wait, after a worker exited and its process group was killed, for the rest
/// of its stdout, before it is handled as ended anyway (something outside its process group
/// still holds the pipe).
const EXIT_DRAIN: Duration = Duration::from_secs(2);
/// Longest part of an incomplete last line quoted in a message.
const PARTIAL_QUOTE: usize = 200;
/// How long to wait for the rest of a dead worker's stderr.
const STDERR_WAIT: Duration = Duration::from_millis(200);
/// After a small read from a worker's stdout, how long its reader waits before reading
/// again, so that the answers of a worker that answers many records per millisecond are
/// taken (and handed to the engine, and answered with new records) a few at a time, not
/// one wake-up each. An answer is never held back longer than this.
const READ_LINGER: Duration = Duration::from_millis(2);
/// A read at least this large means answers arrive faster than lingering could gather
/// them (and the pipe could fill meanwhile): read again at once.
const LINGER_BELOW: usize = 16 * 1024;

enum Event {
    /// Complete lines (each ending with `\n`) from a worker's stdout.
    Stdout {
        slot: usize,
        gen: u64,
        chunk: Vec<u8>,
    },
    /// A line longer than the limit; it was discarded.
    TooLong { slot: usize, gen: u64 },
    /// The worker's stdout reached end of file. `partial`: the start of a last line that
    /// was not ended by a newline (it answers nothing).
    Eof {
        slot: usize,
        gen: u64,
        partial: Vec<u8>,
    },
}

struct Inflight {
    id: AttemptId,
    item: WorkItem,
    wire: u64,
    outputs: WorkOutput,
    /// Abandoned while queued behind other records on a `lines` worker: its answer will
    /// still come (and is dropped), but the attempt is never reported.
    abandoned: bool,
}

/// Attempts sent to one worker and not answered yet.
enum InflightSet {
    /// Answered strictly in order.
    Lines(VecDeque<Inflight>),
    /// Answered by id, in any order; keyed by wire id, which grows with send order.
    Framed(BTreeMap<u64, Inflight>),
}

impl InflightSet {
    fn len(&self) -> usize {
        match self {
            InflightSet::Lines(q) => q.len(),
            InflightSet::Framed(m) => m.len(),
        }
    }

    fn push(&mut self, inf: Inflight) {
        match self {
            InflightSet::Lines(q) => q.push_back(inf),
            InflightSet::Framed(m) => {
                m.insert(inf.wire, inf);
            }
        }
    }

    /// The wire id of the oldest record in flight.
    fn oldest_wire(&self) -> Option<u64> {
        match self {
            InflightSet::Lines(q) => q.front().map(|i| i.wire),
            InflightSet::Framed(m) => m.keys().next().copied(),
        }
    }

    fn pop_oldest(&mut self) -> Option<Inflight> {
        match self {
            InflightSet::Lines(q) => q.pop_front(),
            InflightSet::Framed(m) => m.pop_first().map(|(_, v)| v),
        }
    }

    /// Forgets an abandoned attempt. Returns `None` if it is not here, else whether the
    /// worker may be busy with it right now (then it must be killed): the oldest record in
    /// flight is; a `lines` record queued behind others is not yet, so it only becomes a
    /// placeholder whose answer will be dropped.
    fn abandon(&mut self, id: AttemptId) -> Option<bool> {
        match self {
            InflightSet::Lines(q) => {
                let pos = q.iter().position(|i| i.id == id && !i.abandoned)?;
                if pos == 0 {
                    q.pop_front();
                    Some(true)
                } else {
                    q[pos].abandoned = true;
                    Some(false)
                }
            }
            InflightSet::Framed(m) => {
                let wire = m.values().find(|i| i.id == id)?.wire;
                let oldest = m.keys().next() == Some(&wire);
                m.remove(&wire);
                Some(oldest)
            }
        }
    }
}

/// A live worker process and its threads.
struct Running {
    child: Child,
    writer: Sender<Vec<u8>>,
    stderr: StderrReader,
    /// The records in flight on this process, as last seen by the engine's thread: its
    /// stdout reader waits for more answers only when more are on their way.
    in_flight: Arc<AtomicUsize>,
}

struct Slot {
    gen: u64,
    running: Option<Running>,
    inflight: InflightSet,
    outbox: Vec<u8>,
    /// Whether the current process has answered anything.
    answered: bool,
    /// Since when the worker has had work without answering (for the service-time estimate).
    busy_since: Option<Instant>,
    /// The worker has been stuck on one record for a while; its queue was moved elsewhere
    /// and it gets no new records until it answers.
    stalled: bool,
    /// When the worker process was seen to have exited while its stdout was still open.
    exited_at: Option<Instant>,
    /// The record the next no-answer notice is about, and after how long it is due.
    notice: Option<(AttemptId, Duration)>,
    /// The oldest record in flight (its wire id) and since when the worker could start on
    /// it: when it was written to an idle worker, or when the record before it was
    /// answered. Its per-record timeout counts from there.
    head: Option<(u64, Instant)>,
    /// Records given to the current process (for `max_tasks_per_worker`).
    tasks: usize,
    /// A retired process being waited for; the slot starts no new one until it is gone.
    retiring: Option<JoinHandle<()>>,
}

impl Slot {
    /// Starts the clock of a new oldest record: called after every change of what is in
    /// flight, so `now` is when the record before it was answered (or it was written).
    fn sync_head(&mut self, now: Instant) {
        match self.inflight.oldest_wire() {
            None => self.head = None,
            Some(w) if self.head.map(|(h, _)| h) != Some(w) => self.head = Some((w, now)),
            Some(_) => {}
        }
    }
}

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
}

impl WorkerPool {
    /// Prepares a pool of up to `cfg.workers` worker processes. Workers start lazily, when
    /// there is a record to give them, so a pool never starts more workers than it has
    /// records.
    ///
    /// Fails at once, with one sentence saying what to do, if the program cannot be found or
    /// run, or the working directory does not exist.
    ///
    /// A worker is started by the thread that calls [`Executor::submit`] or
    /// [`Executor::poll`], and it is killed (`SIGKILL`, through the parent-death signal) if
    /// that thread ends: drive the pool from one thread that lives as long as the pool.
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
        check_program(program, cfg.cwd.as_deref()).map_err(|e| FatalExecutorError {
            message: format!(
                "cannot start worker `{}`: {}; check the --worker command",
                cfg.command.display(),
                io_phrase(&e)
            ),
        })?;
        let (events_tx, events) = std::sync::mpsc::sync_channel(256);
        let protocol = cfg.protocol;
        let slots = (0..cfg.workers)
            .map(|_| Slot {
                gen: 0,
                running: None,
                inflight: match protocol {
                    Protocol::Lines => InflightSet::Lines(VecDeque::new()),
                    Protocol::Framed => InflightSet::Framed(BTreeMap::new()),
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
            service_ns: None,
            fatal: None,
            reapers: Vec::new(),
            stopped: false,
            pending: VecDeque::new(),
            serial: false,
            stopping: false,
            last_check: Instant::now(),
        };
        Ok(pool)
    }

    /// The configuration the pool runs with.
    pub fn config(&self) -> &PoolConfig {
        &self.cfg
    }

    /// Starts (or restarts) the process of slot `s` with a new generation.
    fn launch(&mut self, s: usize) -> Result<(), FatalExecutorError> {
        let cwd = self.cfg.cwd.as_deref();
        // The slot's number (1-based, like `{%}` of --exec) for GPU and resource pinning.
        let mut env = self.cfg.env.clone();
        env.push((crate::exec::WORKER_ENV.into(), (s + 1).to_string()));
        // The protocol this pool speaks, so that a worker library can speak it too.
        let protocol = match self.cfg.protocol {
            Protocol::Lines => "lines",
            Protocol::Framed => "framed",
        };
        env.push((PROTOCOL_ENV.into(), protocol.into()));
        let mut child = spawn_piped(&self.argv, &env, cwd).map_err(|e| {
            // A directory removed since start also makes the spawn fail with ENOENT.
            match cwd.map(check_dir) {
                Some(Err(dir_err)) => cwd_fatal(&self.cfg, &dir_err),
                _ => FatalExecutorError {
                    message: format!(
                        "cannot start worker `{}`: {}; check the --worker command",
                        self.cfg.command.display(),
                        io_phrase(&e)
                    ),
                },
            }
        })?;
        let slot = &mut self.slots[s];
        slot.gen += 1;
        let gen = slot.gen;
        let stdin = child.stdin.take().expect("stdin is piped");
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        let (writer, writer_rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name(format!("herdsman-stdin-{s}"))
            .spawn(move || write_loop(stdin, writer_rx))
            .map_err(thread_error)?;
        let tx = self.events_tx.clone().expect("pool is running");
        let max_line = self.cfg.max_line_bytes;
        let in_flight = Arc::new(AtomicUsize::new(0));
        let reader_in_flight = Arc::clone(&in_flight);
        std::thread::Builder::new()
            .name(format!("herdsman-stdout-{s}"))
            .spawn(move || read_loop(stdout, s, gen, tx, max_line, reader_in_flight))
            .map_err(thread_error)?;
        let stderr = StderrReader::spawn(stderr, s, self.cfg.stderr.clone());
        slot.running = Some(Running {
            child,
            writer,
            stderr,
            in_flight,
        });
        slot.answered = false;
        slot.stalled = false;
        slot.exited_at = None;
        slot.notice = None;
        slot.tasks = 0;
        Ok(())
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
        if slot.inflight.len() == 0 {
            slot.busy_since = Some(now);
        }
        slot.tasks += 1;
        slot.inflight.push(Inflight {
            id,
            item,
            wire,
            outputs: Vec::new(),
            abandoned: false,
        });
        slot.sync_head(now);
        if slot.outbox.len() >= OUTBOX_FLUSH {
            self.flush_slot(s);
        }
        Ok(())
    }

    /// How long a `lines` worker may go without answering, with records queued behind the
    /// one it is busy with, before those records are moved to other workers.
    fn stall_limit(&self) -> Duration {
        let by_service = Duration::from_nanos(self.service_ns.map_or(0.0, |ns| ns * 20.0) as u64);
        STALL_MIN.max(by_service)
    }

    /// Moves the records queued behind a stuck record to other workers (`lines` only).
    ///
    /// The stuck worker keeps placeholders for them (their answers, if they ever come, are
    /// dropped), so each attempt is still reported once. Only a worker that has answered
    /// before is judged, so a slow start-up does not shuffle records around.
    fn unstick(&mut self) -> Result<(), FatalExecutorError> {
        let n = self.slots.len();
        if self.cfg.protocol != Protocol::Lines || n < 2 {
            return Ok(());
        }
        let limit = self.stall_limit();
        let now = Instant::now();
        for s in 0..n {
            let slot = &self.slots[s];
            let stuck = !slot.stalled
                && slot.answered
                && slot.running.is_some()
                && slot.inflight.len() >= 2
                && slot
                    .busy_since
                    .is_some_and(|since| now.duration_since(since) >= limit);
            if !stuck || !(0..n).any(|t| t != s && !self.slots[t].stalled) {
                continue;
            }
            let InflightSet::Lines(q) = &mut self.slots[s].inflight else {
                continue;
            };
            let moved: Vec<(AttemptId, WorkItem)> = q
                .iter_mut()
                .skip(1)
                .filter(|i| !i.abandoned)
                .map(|i| {
                    i.abandoned = true;
                    (i.id, i.item.clone())
                })
                .collect();
            self.slots[s].stalled = true;
            for entry in moved.into_iter().rev() {
                self.pending.push_front(entry);
            }
            self.dispatch()?;
        }
        Ok(())
    }

    /// When the oldest record in flight on the worker of slot `s` runs out of `timeout`.
    ///
    /// Only the oldest record's clock runs, from when the worker could start on it: when the
    /// record before it was answered, or when it was written to an idle worker. A record
    /// queued behind others (in the worker's stdin, or held back by a framed worker that
    /// works on one record at a time) does not use up its time while it waits; a framed
    /// worker that works on several records at once still gets each of them killed once it
    /// is the oldest and runs out of time. The first record of a fresh process also gets a
    /// start-up allowance: the timeout again, at most [`PoolConfig::MAX_STARTUP_ALLOWANCE`].
    fn slot_deadline(&self, s: usize, timeout: Duration) -> Option<Instant> {
        let slot = &self.slots[s];
        slot.running.as_ref()?;
        if slot.exited_at.is_some() {
            // The process is gone: its record is charged with the exit, never a timeout.
            return None;
        }
        let (_, started) = slot.head?;
        let allowance = if slot.answered {
            Duration::ZERO
        } else {
            timeout.min(PoolConfig::MAX_STARTUP_ALLOWANCE)
        };
        Some(started + timeout + allowance)
    }

    /// The earliest moment a record in flight runs out of time, if a timeout is set.
    fn next_deadline(&self) -> Option<Instant> {
        let timeout = self.cfg.timeout?;
        (0..self.slots.len())
            .filter_map(|s| self.slot_deadline(s, timeout))
            .min()
    }

    /// Fails every record that ran out of time with [`FailureKind::Timeout`], kills its
    /// worker's process group, restarts the worker and re-sends the other records that were
    /// in flight on it (they are not charged).
    fn expire(&mut self, out: &mut Vec<Outcome>) -> Result<(), FatalExecutorError> {
        let Some(timeout) = self.cfg.timeout else {
            return Ok(());
        };
        let now = Instant::now();
        for s in 0..self.slots.len() {
            if self.slot_deadline(s, timeout).is_none_or(|d| d > now) {
                continue;
            }
            // The oldest record is what the worker is stuck on (even an abandoned `lines`
            // placeholder: the worker is still busy with it and the records behind it wait).
            let expired = self.slots[s].inflight.pop_oldest();
            let message = format!(
                "no answer within {} (--timeout); worker {s} was killed and restarted",
                human_duration(timeout)
            );
            let failure = self.failure(s, FailureKind::Timeout, message, true);
            let answered = self.slots[s].answered;
            if let Some(running) = self.slots[s].running.take() {
                self.kill_async(running);
            }
            // The records that were queued behind go back to be sent again, to a fresh
            // process; a late answer of the killed one can never be matched to them.
            self.requeue(s);
            if self.cfg.protocol == Protocol::Lines {
                // A `lines` worker that gave no answer may have skipped one; from now on it
                // gets one record at a time, so a skipped answer can only ever show up as a
                // timeout of its own record, never as another record's output.
                self.serial = true;
            }
            for inf in expired.into_iter().filter(|i| !i.abandoned) {
                out.push((inf.id, AttemptOutcome::Failure(failure.clone())));
            }
            if !answered {
                self.barren_exits += 1;
                if self.barren_exits >= self.cfg.restart_limit {
                    let fatal = FatalExecutorError {
                        message: format!(
                            "worker `{}` was killed {} times in a row for not answering within {} (--timeout) without answering any record; raise --timeout, or check that the worker flushes its stdout after each answer",
                            self.cfg.command.display(),
                            self.barren_exits,
                            human_duration(timeout)
                        ),
                    };
                    self.fatal = Some(fatal.clone());
                    return Err(fatal);
                }
            }
        }
        self.dispatch()
    }

    fn encode(protocol: Protocol, outbox: &mut Vec<u8>, wire: u64, json: &[u8]) {
        match protocol {
            Protocol::Lines => {}
            Protocol::Framed => {
                outbox.extend_from_slice(b"{\"id\":");
                let _ = write!(outbox, "{wire}");
                outbox.extend_from_slice(b",\"record\":");
            }
        }
        if memchr::memchr(b'\n', json).is_some() {
            // A raw newline can only be insignificant whitespace in valid JSON.
            outbox.extend(json.iter().map(|&b| if b == b'\n' { b' ' } else { b }));
        } else {
            outbox.extend_from_slice(json);
        }
        match protocol {
            Protocol::Lines => outbox.push(b'\n'),
            Protocol::Framed => outbox.extend_from_slice(b"}\n"),
        }
    }

    fn flush_slot(&mut self, s: usize) {
        let slot = &mut self.slots[s];
        if slot.outbox.is_empty() {
            return;
        }
        let bytes = std::mem::take(&mut slot.outbox);
        if let Some(r) = &slot.running {
            r.in_flight.store(slot.inflight.len(), Ordering::Relaxed);
            // A closed channel means the worker is gone; its exit is handled via stdout EOF.
            let _ = r.writer.send(bytes);
        }
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

    /// Retires the process of slot `s` once it was given `max_tasks_per_worker` records and
    /// has answered them all: its stdin is closed and it is waited for on a thread of its own
    /// (after the kill grace, its process group is stopped as usual); the slot takes no
    /// record until then, and then starts a new process when it gets one.
    fn retire_spent(&mut self, s: usize) {
        let Some(max) = self.cfg.max_tasks_per_worker else {
            return;
        };
        let slot = &mut self.slots[s];
        if slot.tasks < max || slot.inflight.len() > 0 || slot.exited_at.is_some() {
            return;
        }
        let Some(running) = slot.running.take() else {
            return;
        };
        slot.outbox.clear();
        slot.busy_since = None;
        slot.head = None;
        slot.notice = None;
        let grace = self.cfg.kill_grace;
        let Running {
            mut child,
            writer,
            stderr,
            ..
        } = running;
        let spawned = std::thread::Builder::new()
            .name(format!("herdsman-retire-{s}"))
            .spawn(move || {
                // Closing stdin asks the worker to exit; wait for it like at the end of a run.
                drop(writer);
                wait_exited(child.id(), grace);
                terminate_group(&mut child, grace);
                drop(stderr);
            });
        // Without a thread to wait on, the worker still reads end of file and exits; it is
        // then killed with the others when the pool shuts down.
        slot.retiring = spawned.ok();
    }

    /// Frees the slots whose retired process is gone, and gives them records.
    fn finish_retirements(&mut self) -> Result<(), FatalExecutorError> {
        let mut freed = false;
        for slot in &mut self.slots {
            if slot.retiring.as_ref().is_some_and(|h| h.is_finished()) {
                if let Some(h) = slot.retiring.take() {
                    let _ = h.join();
                }
                freed = true;
            }
        }
        if freed {
            self.dispatch()?;
        }
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
                        out.push((inf.id, AttemptOutcome::Failure(f)));
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

    /// Records that the worker of slot `s` just answered `k` records.
    fn note_answer(&mut self, s: usize, k: usize) {
        self.barren_exits = 0;
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

    fn lines_chunk(&mut self, s: usize, chunk: &[u8], out: &mut Vec<Outcome>) {
        let mut answered = 0;
        // Every chunk ends with a newline; without it, `split` would yield one more line.
        let body = chunk.strip_suffix(b"\n").unwrap_or(chunk);
        for raw in body.split(|&b| b == b'\n') {
            let InflightSet::Lines(q) = &mut self.slots[s].inflight else {
                unreachable!("lines protocol uses an ordered queue")
            };
            let Some(inf) = q.pop_front() else {
                // A line that answers no record: the worker printed more lines than it was
                // sent. Nothing can be attributed to it.
                continue;
            };
            answered += 1;
            if inf.abandoned {
                continue;
            }
            let line = trim(raw);
            let outcome = match std::str::from_utf8(line)
                .map_err(|e| format!("not valid UTF-8: {e}"))
                .and_then(|_| check_json(line).map_err(|why| format!("not valid JSON ({why})")))
            {
                Ok(()) => AttemptOutcome::Success(vec![line.to_vec()]),
                Err(why) => {
                    let msg = format!(
                        "worker {s} answered with a line that is {why}: {}",
                        quote_start(line)
                    );
                    AttemptOutcome::Failure(self.failure(s, FailureKind::BadOutput, msg, false))
                }
            };
            out.push((inf.id, outcome));
        }
        if answered > 0 {
            self.note_answer(s, answered);
        }
    }

    fn framed_chunk(&mut self, s: usize, chunk: &[u8], out: &mut Vec<Outcome>) {
        for raw in chunk.split(|&b| b == b'\n') {
            let line = trim(raw);
            if line.is_empty() {
                continue;
            }
            let reply = match serde_json::from_slice::<Reply>(line) {
                Ok(r) if r.id.is_some() => r,
                other => {
                    let why = match other {
                        Err(e) => e.to_string(),
                        Ok(_) => "no \"id\" field".to_string(),
                    };
                    // The reply cannot be attributed: charge the oldest unanswered record.
                    if let Some(inf) = self.slots[s].inflight.pop_oldest() {
                        self.note_answer(s, 1);
                        let msg = format!(
                            "worker {s} wrote a line that is not a valid reply ({why}): {}",
                            quote_start(line)
                        );
                        let f = self.failure(s, FailureKind::BadOutput, msg, false);
                        out.push((inf.id, AttemptOutcome::Failure(f)));
                    }
                    continue;
                }
            };
            let wire = reply.id.unwrap_or_default();
            let InflightSet::Framed(map) = &mut self.slots[s].inflight else {
                unreachable!("framed protocol uses a map by id")
            };
            let Some(inf) = map.get_mut(&wire) else {
                // A reply for a record that is no longer in flight here; ignore it.
                continue;
            };
            let mut used = false;
            if let Some(output) = reply.output {
                inf.outputs.push(output.get().as_bytes().to_vec());
                used = true;
            }
            // Err((kind, message, retryable, server-mandated wait))
            let finished = if let Some(err) = reply.error {
                let text = match serde_json::from_str::<String>(err.get()) {
                    Ok(s) => s,
                    Err(_) => err.get().to_string(),
                };
                let retryable = reply.retryable.unwrap_or(false);
                // `retry_after` only means something on a retryable error: a record that
                // fails for good is not tried again, so there is nothing to wait for.
                match reply.retry_after.filter(|_| retryable).map(retry_after) {
                    None => Some(Err((FailureKind::Reported, text, retryable, None))),
                    Some(Ok(wait)) => Some(Err((FailureKind::Reported, text, true, wait))),
                    Some(Err(why)) => Some(Err((
                        FailureKind::BadOutput,
                        format!(
                            "worker {s} sent an error reply whose \"retry_after\" is {why}; \
                             send a number of seconds such as 1.5 (its error was: {text})"
                        ),
                        false,
                        None,
                    ))),
                }
            } else if reply.done == Some(true) {
                Some(Ok(()))
            } else if !used {
                Some(Err((
                    FailureKind::BadOutput,
                    format!(
                        "worker {s} sent a reply with none of \"output\", \"done\" or \"error\": {}",
                        quote_start(line)
                    ),
                    false,
                    None,
                )))
            } else {
                None
            };
            if let Some(result) = finished {
                let inf = map.remove(&wire).expect("present");
                self.note_answer(s, 1);
                let outcome = match result {
                    Ok(()) => AttemptOutcome::Success(inf.outputs),
                    Err((kind, msg, retryable, wait)) => {
                        let mut f = self.failure(s, kind, msg, retryable);
                        f.retry_after = wait;
                        AttemptOutcome::Failure(f)
                    }
                };
                out.push((inf.id, outcome));
            }
        }
    }

    /// The worker of slot `s` ended (its stdout closed, or its process exited): collect it,
    /// charge the oldest record in flight, and send the rest again (to any worker, the
    /// replacement starting when there is a record for it). `partial`: the start of an
    /// incomplete last line it wrote, which answers nothing.
    fn worker_ended(
        &mut self,
        s: usize,
        partial: &[u8],
        out: &mut Vec<Outcome>,
    ) -> Result<(), FatalExecutorError> {
        let Some(mut running) = self.slots[s].running.take() else {
            return Ok(());
        };
        let pid = running.child.id();
        let mut killed_from_outside = false;
        let (how, tail) = if wait_exited(pid, EXIT_WAIT) {
            // Whatever the worker left behind in its group goes with it.
            signal_group(pid, Signal::SIGKILL);
            let status = reap(&mut running.child);
            killed_from_outside = status.and_then(|st| st.signal()) == Some(libc::SIGKILL);
            (describe_status(status), running.stderr.finish(STDERR_WAIT))
        } else {
            let tail = running.stderr.finish(Duration::ZERO);
            self.kill_async(running);
            ("closed its stdout".to_string(), tail)
        };
        let incomplete = if partial.is_empty() {
            String::new()
        } else {
            format!(
                ", leaving an incomplete answer line {}",
                quote_start(&partial[..partial.len().min(PARTIAL_QUOTE)])
            )
        };
        // An abandoned record at the head was what the worker was busy with: nobody to charge.
        if let Some(inf) = self.slots[s].inflight.pop_oldest().filter(|i| !i.abandoned) {
            out.push((
                inf.id,
                AttemptOutcome::Failure(WorkerFailure {
                    kind: FailureKind::WorkerExited,
                    message: format!(
                        "worker {s} (`{}`) {how} while processing this record{incomplete}",
                        self.cfg.command.display()
                    ),
                    retryable: true,
                    retry_after: None,
                    worker: s,
                    stderr_tail: tail.clone(),
                }),
            ));
        }
        self.requeue(s);
        // A worker killed with SIGKILL from outside (an operator, the OOM killer) did not
        // fail to start on its own: that does not count towards the restart limit.
        if !self.slots[s].answered && !killed_from_outside {
            self.barren_exits += 1;
            if self.barren_exits >= self.cfg.restart_limit {
                let last = tail
                    .last()
                    .map(|l| format!("; its last stderr line: {l}"))
                    .unwrap_or_default();
                let fatal = FatalExecutorError {
                    message: format!(
                        "worker `{}` {how} {} times in a row without answering any record{last}; check the --worker command",
                        self.cfg.command.display(),
                        self.barren_exits
                    ),
                };
                self.fatal = Some(fatal.clone());
                return Err(fatal);
            }
        }
        self.dispatch()
    }

    /// Starts the worker of slot `s` if it has none (first use, or after an exit or an
    /// abandon; whatever the old process had in flight was requeued then).
    fn ensure_running(&mut self, s: usize) -> Result<(), FatalExecutorError> {
        if self.slots[s].running.is_some() {
            return Ok(());
        }
        debug_assert_eq!(self.slots[s].inflight.len(), 0);
        self.launch(s)
            .inspect_err(|e| self.fatal = Some(e.clone()))?;
        Ok(())
    }

    /// Looks for workers whose process exited while their stdout stays open (a child they
    /// left behind holds it), and for records that have had no answer for long.
    fn check_workers(&mut self, out: &mut Vec<Outcome>) -> Result<(), FatalExecutorError> {
        let now = Instant::now();
        if now.duration_since(self.last_check) < EXIT_CHECK {
            return Ok(());
        }
        self.last_check = now;
        for s in 0..self.slots.len() {
            let Some(running) = &self.slots[s].running else {
                continue;
            };
            let pid = running.child.id();
            match self.slots[s].exited_at {
                None => {
                    if has_exited(pid) {
                        self.slots[s].exited_at = Some(now);
                        // The leader is a zombie, not reaped: its group id is still its own.
                        // Killing the group closes the pipes its children hold, so the rest
                        // of its stdout arrives, then end of file, and the exit is handled
                        // in order after the answers it wrote.
                        signal_group(pid, Signal::SIGKILL);
                    }
                }
                Some(at) if now.duration_since(at) >= EXIT_DRAIN => {
                    // Something outside its process group still holds its stdout.
                    self.worker_ended(s, &[], out)?;
                }
                Some(_) => {}
            }
        }
        self.notify_overdue(now);
        Ok(())
    }

    /// Reports each record that has had no answer for [`PoolConfig::no_answer_notice`],
    /// again at doubling intervals while it stays unanswered.
    fn notify_overdue(&mut self, now: Instant) {
        let Some(sink) = self.cfg.notices.clone() else {
            return;
        };
        let first = self.cfg.no_answer_notice.max(Duration::from_millis(1));
        for s in 0..self.slots.len() {
            let slot = &mut self.slots[s];
            if slot.running.is_none() || slot.exited_at.is_some() {
                slot.notice = None;
                continue;
            }
            // The record the worker owes an answer for: its oldest, whose clock (as for the
            // timeout) started when the worker could start on it.
            let oldest = match &slot.inflight {
                InflightSet::Lines(q) => q.front().filter(|i| !i.abandoned),
                InflightSet::Framed(m) => m.values().next(),
            };
            let head = oldest.and_then(|i| Some((i.id, i.item.seq, slot.head?.1)));
            let Some((id, seq, since)) = head else {
                slot.notice = None;
                continue;
            };
            let due = match slot.notice {
                Some((noticed, due)) if noticed == id => due,
                _ => first,
            };
            slot.notice = Some((id, due));
            let waited = now.saturating_duration_since(since);
            if waited < due {
                continue;
            }
            slot.notice = Some((id, due.saturating_mul(2)));
            let hint = if self.cfg.timeout.is_some() {
                "still waiting until its --timeout"
            } else {
                "still waiting; set --timeout to give up on records that hang"
            };
            sink(&format!(
                "record {} on worker {s}: no answer for {}; {hint}",
                seq + 1,
                waited_text(waited)
            ));
        }
    }

    /// While stopping: kills the workers that have nothing left to answer but placeholders,
    /// instead of letting them work through records nobody waits for.
    fn retire_idle(&mut self) {
        for s in 0..self.slots.len() {
            let slot = &mut self.slots[s];
            if slot.running.is_none() {
                continue;
            }
            let idle = match &slot.inflight {
                InflightSet::Lines(q) => q.iter().all(|i| i.abandoned),
                InflightSet::Framed(m) => m.is_empty(),
            };
            if idle && slot.inflight.len() > 0 {
                if let Some(running) = slot.running.take() {
                    self.kill_async(running);
                }
                self.requeue(s);
            }
        }
    }

    /// Kills a worker's process group without blocking the caller: SIGTERM now, SIGKILL
    /// after the grace period on a reaper thread, which then reaps the worker.
    fn kill_async(&mut self, running: Running) {
        let grace = self.cfg.kill_grace;
        let Running {
            mut child, writer, ..
        } = running;
        drop(writer);
        let pid = child.id();
        if !has_exited(pid) {
            signal_group(pid, Signal::SIGTERM);
        }
        self.reapers.retain(|h| !h.is_finished());
        let spawned = std::thread::Builder::new()
            .name("herdsman-reaper".into())
            .spawn(move || {
                terminate_group(&mut child, grace);
            });
        match spawned {
            Ok(h) => self.reapers.push(h),
            // No thread left to wait out the grace period: kill the group at once (the
            // leader is not reaped yet, so its group id is still its own).
            Err(_) => signal_group(pid, Signal::SIGKILL),
        }
    }
}

type Outcome = (AttemptId, AttemptOutcome<WorkOutput, WorkerFailure>);

/// A wait as a notice states it: whole seconds (`60 s`), or milliseconds under a second.
fn waited_text(d: Duration) -> String {
    if d >= Duration::from_secs(1) {
        format!("{} s", d.as_secs())
    } else {
        format!("{} ms", d.as_millis())
    }
}

fn cwd_fatal(cfg: &PoolConfig, e: &std::io::Error) -> FatalExecutorError {
    FatalExecutorError {
        message: format!(
            "cannot start worker `{}` in directory `{}`: {}; check --workdir",
            cfg.command.display(),
            cfg.cwd
                .as_deref()
                .unwrap_or(std::path::Path::new("."))
                .display(),
            io_phrase(e)
        ),
    }
}

fn thread_error(e: std::io::Error) -> FatalExecutorError {
    FatalExecutorError {
        message: format!(
            "cannot start a thread for a worker: {}; lower --workers or raise the thread limit",
            io_phrase(&e)
        ),
    }
}

#[derive(Deserialize)]
struct Reply<'a> {
    id: Option<u64>,
    #[serde(default, borrow, deserialize_with = "present")]
    output: Option<&'a RawValue>,
    #[serde(default)]
    done: Option<bool>,
    #[serde(default, borrow, deserialize_with = "present")]
    error: Option<&'a RawValue>,
    #[serde(default)]
    retryable: Option<bool>,
    #[serde(default, borrow, deserialize_with = "present")]
    retry_after: Option<&'a RawValue>,
}

/// Reads the `retry_after` of a framed error reply: a JSON number of seconds, at least 0,
/// fractions allowed, capped at [`MAX_RETRY_AFTER`]; `null` is no wait. `Err` says what is
/// wrong with any other value.
fn retry_after(raw: &RawValue) -> Result<Option<Duration>, String> {
    let text = raw.get();
    if text == "null" {
        return Ok(None);
    }
    let wrong = || format!("`{}`, not a number of seconds of 0 or more", truncate(text));
    // A JSON number too large for f64 (1e400) fails to parse but is still "very long".
    let huge = text.bytes().next().is_some_and(|b| b.is_ascii_digit())
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'));
    let secs = match serde_json::from_str::<f64>(text) {
        Ok(secs) if secs >= 0.0 => secs.abs(),
        Ok(_) => return Err(wrong()),
        Err(_) if huge => return Ok(Some(MAX_RETRY_AFTER)),
        Err(_) => return Err(wrong()),
    };
    Ok(Some(
        Duration::try_from_secs_f64(secs)
            .unwrap_or(MAX_RETRY_AFTER)
            .min(MAX_RETRY_AFTER),
    ))
}

fn truncate(s: &str) -> String {
    match s.char_indices().nth(40) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// A field that is present (even as `null`) becomes `Some`.
fn present<'de, D>(d: D) -> Result<Option<&'de RawValue>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    <&'de RawValue>::deserialize(d).map(Some)
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s {
        if first.is_ascii_whitespace() {
            s = rest;
        } else {
            break;
        }
    }
    while let [rest @ .., last] = s {
        if last.is_ascii_whitespace() {
            s = rest;
        } else {
            break;
        }
    }
    s
}

fn check_json(line: &[u8]) -> Result<(), String> {
    if line.is_empty() {
        return Err("empty line".into());
    }
    serde_json::from_slice::<serde::de::IgnoredAny>(line)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// The start of a line, quoted for a message.
pub(crate) fn quote_start(line: &[u8]) -> String {
    const MAX: usize = 80;
    let text = String::from_utf8_lossy(&line[..line.len().min(MAX * 4)]);
    let mut short: String = text.chars().take(MAX).collect();
    if short.len() < text.len() || line.len() > MAX * 4 {
        short.push('…');
    }
    format!("`{short}`")
}

fn write_loop(stdin: ChildStdin, rx: Receiver<Vec<u8>>) {
    let mut w = BufWriter::with_capacity(64 * 1024, stdin);
    loop {
        let msg = match rx.try_recv() {
            Ok(m) => m,
            Err(TryRecvError::Empty) => {
                if w.flush().is_err() {
                    return;
                }
                match rx.recv() {
                    Ok(m) => m,
                    Err(_) => return,
                }
            }
            Err(TryRecvError::Disconnected) => {
                let _ = w.flush();
                return;
            }
        };
        if w.write_all(&msg).is_err() {
            return;
        }
    }
}

fn read_loop(
    mut stdout: ChildStdout,
    slot: usize,
    gen: u64,
    tx: SyncSender<Event>,
    max_line: usize,
    in_flight: Arc<AtomicUsize>,
) {
    let mut tmp = vec![0u8; 64 * 1024];
    let mut buf: Vec<u8> = Vec::new();
    let mut discarding = false;
    loop {
        let n = match stdout.read(&mut tmp) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        let mut data = &tmp[..n];
        if discarding {
            match memchr::memchr(b'\n', data) {
                Some(pos) => {
                    discarding = false;
                    data = &data[pos + 1..];
                }
                None => continue,
            }
        }
        let old_len = buf.len();
        buf.extend_from_slice(data);
        match memchr::memrchr(b'\n', &buf[old_len..]) {
            Some(rel) => {
                let cut = old_len + rel + 1;
                let rest = buf[cut..].to_vec();
                buf.truncate(cut);
                let chunk = std::mem::replace(&mut buf, rest);
                if tx.send(Event::Stdout { slot, gen, chunk }).is_err() {
                    return;
                }
            }
            None => {
                if buf.len() > max_line {
                    buf.clear();
                    discarding = true;
                    if tx.send(Event::TooLong { slot, gen }).is_err() {
                        return;
                    }
                }
            }
        }
        if buf.len() > max_line {
            buf.clear();
            discarding = true;
            if tx.send(Event::TooLong { slot, gen }).is_err() {
                return;
            }
        }
        // Let the next answers gather in the pipe (one wake-up of this thread, of the
        // engine's and of the writer's for several answers instead of one each), but only
        // when more answers are on their way: a worker given one record at a time must not
        // wait for this thread after each answer. (A framed record may take several lines,
        // so this undercounts what is still to come, and lingers less, never more.)
        if n < LINGER_BELOW
            && in_flight.load(Ordering::Relaxed) > memchr::memchr_iter(b'\n', &tmp[..n]).count()
        {
            std::thread::sleep(READ_LINGER);
        }
    }
    // A last line without its newline answers nothing: the worker died while writing it.
    buf.truncate(PARTIAL_QUOTE);
    let _ = tx.send(Event::Eof {
        slot,
        gen,
        partial: buf,
    });
}

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
                InflightSet::Framed(m) => {
                    let keep = m.keys().next().copied();
                    m.retain(|wire, inf| {
                        let kept = Some(*wire) == keep;
                        if !kept {
                            not_run.push(inf.id);
                        }
                        kept
                    });
                }
            }
            if self.cfg.protocol == Protocol::Framed {
                self.flush_slot(s);
                if let Some(r) = &mut self.slots[s].running {
                    r.writer = std::sync::mpsc::channel().0;
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
                // Dropping the writer's channel closes the worker's stdin once it is written.
                drop(r.writer);
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
        for child in &children {
            if !has_exited(child.id()) {
                signal_group(child.id(), Signal::SIGTERM);
            }
        }
        let deadline = Instant::now() + self.cfg.kill_grace;
        for child in &mut children {
            let left = deadline.saturating_duration_since(Instant::now());
            wait_exited(child.id(), left);
            signal_group(child.id(), Signal::SIGKILL);
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

impl Drop for WorkerPool {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trim_and_quote() {
        assert_eq!(trim(b"  {\"a\":1}\r"), b"{\"a\":1}");
        assert_eq!(trim(b"   "), b"");
        assert_eq!(quote_start(b"abc"), "`abc`");
        let long = vec![b'z'; 500];
        let q = quote_start(&long);
        assert!(q.ends_with("…`"));
        assert_eq!(q.chars().count(), 80 + 3);
    }

    #[test]
    fn check_json_rejects_garbage() {
        assert!(check_json(b"{\"a\":1}").is_ok());
        assert!(check_json(b"null").is_ok());
        assert!(check_json(b"hello").is_err());
        assert!(check_json(b"").is_err());
        assert!(check_json(b"{\"a\":1} x").is_err());
    }

    #[test]
    fn reply_keeps_null_output() {
        let r: Reply = serde_json::from_slice(br#"{"id":3,"output":null}"#).unwrap();
        assert_eq!(r.id, Some(3));
        assert_eq!(r.output.map(|o| o.get()), Some("null"));
        let r: Reply = serde_json::from_slice(br#"{"id":3,"done":true}"#).unwrap();
        assert!(r.output.is_none());
        assert_eq!(r.done, Some(true));
    }

    #[test]
    fn reply_reads_retry_after_seconds() {
        let wait = |line: &str| {
            let r: Reply = serde_json::from_str(line).unwrap();
            r.retry_after.map(retry_after)
        };
        let secs = |s: f64| Ok(Some(Duration::from_secs_f64(s)));
        assert_eq!(
            wait(r#"{"id":1,"error":"busy","retryable":true,"retry_after":1.5}"#),
            Some(secs(1.5))
        );
        assert_eq!(wait(r#"{"id":1,"retry_after":2}"#), Some(secs(2.0)));
        assert_eq!(wait(r#"{"id":1,"retry_after":0}"#), Some(secs(0.0)));
        assert_eq!(wait(r#"{"id":1,"retry_after":-0.0}"#), Some(secs(0.0)));
        assert_eq!(wait(r#"{"id":1,"retry_after":1e-3}"#), Some(secs(0.001)));
        assert_eq!(wait(r#"{"id":1,"retry_after":null}"#), Some(Ok(None)));
        assert_eq!(wait(r#"{"id":1,"error":"x"}"#), None);
        // Absurd waits are cut to an hour.
        let hour = Some(Ok(Some(MAX_RETRY_AFTER)));
        assert_eq!(wait(r#"{"id":1,"retry_after":1764474000}"#), hour);
        assert_eq!(wait(r#"{"id":1,"retry_after":1e300}"#), hour);
        assert_eq!(wait(r#"{"id":1,"retry_after":1e400}"#), hour);
        // Anything else is a malformed reply, said in words.
        for bad in [r#""2""#, "-1", "true", "[1]", r#"{"s":1}"#, "-1e400"] {
            let line = format!(r#"{{"id":1,"retry_after":{bad}}}"#);
            let err = wait(&line).unwrap().unwrap_err();
            assert!(err.contains("not a number of seconds"), "{bad}: {err}");
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
