//! The settings of a worker pool: the worker command, how many workers, the wire protocol,
//! pipelining, restart and retirement limits, notices, and the [`ProcessOptions`] it shares
//! with per-record commands.
//!
//! This module only holds settings and their defaults: it must never start, signal or wait
//! for a process.

use std::time::Duration;

use crate::options::ProcessOptions;
use crate::process::WorkerCommand;
use crate::{NoticeSink, RestartSink};

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

/// Settings for a [`WorkerPool`](crate::WorkerPool).
///
/// The settings shared with per-record commands (environment, directory, kill grace,
/// stderr, timeout) are in [`PoolConfig::process`] and read as fields of this struct
/// (`cfg.kill_grace`, `cfg.timeout`).
///
/// In a pool, the timeout (how long one record may take) is measured from when its worker
/// could start on it (see `docs/protocol.md`): from when it became the oldest unanswered
/// record of its worker (when the record sent before it was answered), or from when it was
/// written to a worker that had nothing else in flight; never the time it waited behind
/// other records. The first record of a freshly started worker process gets a start-up
/// allowance on top: the timeout again, at most [`PoolConfig::MAX_STARTUP_ALLOWANCE`]. A
/// record that takes longer fails with [`FailureKind::Timeout`](crate::FailureKind::Timeout);
/// its worker's process group is killed and the worker restarted, and the other records in
/// flight on it are sent again, uncharged.
#[derive(Clone)]
pub struct PoolConfig {
    /// The program each worker runs.
    pub command: WorkerCommand,
    /// How many worker processes run at once.
    pub workers: usize,
    /// At most how many records may be in flight on one worker (sent but not answered).
    /// The pool uses fewer when workers are slow; see
    /// [`WorkerPool::effective_depth`](crate::WorkerPool::effective_depth).
    pub pipeline_depth: usize,
    /// The wire protocol.
    pub protocol: Protocol,
    /// How the workers are started, timed and stopped (shared with per-record commands).
    pub process: ProcessOptions,
    /// After this many worker exits in a row in which the worker answered nothing, the pool
    /// gives up with a fatal error instead of restarting it again.
    pub restart_limit: usize,
    /// Longest output line accepted from a worker, in bytes.
    pub max_line_bytes: usize,
    /// Retire a worker process after it was given this many records (as Python's
    /// `maxtasksperchild`): once it has answered them all, its stdin is closed, it is waited
    /// for (then its process group is stopped as usual after the kill grace), and a new
    /// process takes its slot when there is a record for it. Nothing is lost or charged.
    /// `None`: a worker lives until the run ends (or it fails).
    pub max_tasks_per_worker: Option<usize>,
    /// Receives notices about the pool's health, one sentence each, such as a record that
    /// has had no answer for a long time. `None`: notices are dropped.
    pub notices: Option<NoticeSink>,
    /// After how long without an answer a record in flight is reported to
    /// [`PoolConfig::notices`] (`record 812 on worker 1: no answer for 60 s ...`); the notice
    /// repeats at doubling intervals while the record stays unanswered. Default 60 s.
    pub no_answer_notice: Duration,
    /// Told of every worker process started in the place of one that ended (a restart, for
    /// metrics). `None`: nobody is told.
    pub on_restart: Option<RestartSink>,
}

impl PoolConfig {
    /// Defaults: one worker per available CPU, pipeline depth
    /// [`PoolConfig::DEFAULT_PIPELINE_DEPTH`], the lines protocol, the default
    /// [`ProcessOptions`] (a 2 s kill grace, no timeout).
    pub fn new(command: WorkerCommand) -> Self {
        PoolConfig {
            command,
            workers: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            pipeline_depth: Self::DEFAULT_PIPELINE_DEPTH,
            protocol: Protocol::Lines,
            process: ProcessOptions::default(),
            restart_limit: 5,
            max_line_bytes: 64 << 20,
            max_tasks_per_worker: None,
            notices: None,
            no_answer_notice: Self::DEFAULT_NO_ANSWER_NOTICE,
            on_restart: None,
        }
    }

    /// The default for [`PoolConfig::no_answer_notice`].
    pub const DEFAULT_NO_ANSWER_NOTICE: Duration = Duration::from_secs(60);

    /// The default number of records in flight per worker.
    pub const DEFAULT_PIPELINE_DEPTH: usize = 256;

    /// The longest start-up allowance a fresh worker's first record gets on top of the
    /// timeout (see [`PoolConfig`]).
    pub const MAX_STARTUP_ALLOWANCE: Duration = Duration::from_secs(10);
}

impl std::ops::Deref for PoolConfig {
    type Target = ProcessOptions;
    fn deref(&self) -> &ProcessOptions {
        &self.process
    }
}

impl std::ops::DerefMut for PoolConfig {
    fn deref_mut(&mut self) -> &mut ProcessOptions {
        &mut self.process
    }
}

impl std::fmt::Debug for PoolConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolConfig")
            .field("command", &self.command)
            .field("workers", &self.workers)
            .field("pipeline_depth", &self.pipeline_depth)
            .field("protocol", &self.protocol)
            .field("process", &self.process)
            .field("restart_limit", &self.restart_limit)
            .field("max_line_bytes", &self.max_line_bytes)
            .field("max_tasks_per_worker", &self.max_tasks_per_worker)
            .field("notices", &self.notices.is_some())
            .field("no_answer_notice", &self.no_answer_notice)
            .field("on_restart", &self.on_restart.is_some())
            .finish()
    }
}
