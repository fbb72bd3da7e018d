//! The process executor: pools of persistent worker processes and one-command-per-record
//! execution, behind herdsman's `Executor` trait.
//!
//! It must never pass record data through a shell unless asked, never deadlock on a worker
//! that floods or ignores its pipes, and never leave a killed worker's children running.
//!
//! Two executors live here:
//!
//! * [`WorkerPool`] keeps N persistent worker processes and streams records to them over
//!   stdin/stdout, either one JSON line per record ([`Protocol::Lines`]) or with an envelope
//!   that carries a record id ([`Protocol::Framed`]). The wire formats are specified in
//!   `docs/protocol.md`.
//! * [`ExecPool`] runs one command per record, built from a [`Template`].
//!
//! Both implement [`herdsman::executor::Executor`]`<`[`WorkItem`]`>` with
//! [`WorkOutput`] as the output and [`WorkerFailure`] as the error.
//!
//! Both enforce the per-record timeout themselves ([`ProcessOptions::timeout`], measured as
//! [`PoolConfig`] and [`ExecConfig`] say), because only they know when a record actually started: a
//! record waiting behind others on a worker, or for a free job slot, is not using its time.

use std::sync::Arc;
use std::time::Duration;

mod bounded_lines;
pub mod duration;
mod exec;
pub use exec::{ExecConfig, ExecOutputMode, ExecPool};
mod options;
pub use options::ProcessOptions;
mod process;
pub mod serve;
mod tail;
mod template;
mod text;
mod worker_pool;
pub use template::{RenderError, RenderedCommand, Template, TemplateError};

pub use process::{kill_all_process_groups, WorkerCommand};
pub use worker_pool::{PoolConfig, Protocol, WorkerPool, PROTOCOL_ENV};

pub use herdsman::executor::{AttemptId, AttemptOutcome, Executor, FatalExecutorError};

/// The longest wait a worker can ask for before a record is tried again (a framed error
/// reply's `retry_after`): one hour. Longer values are cut to it, so a mistaken value (a
/// timestamp sent as seconds, say) cannot stall a run for days.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// A callback that receives every line a worker writes to stderr, with the worker's index.
pub type StderrSink = Arc<dyn Fn(usize, &str) + Send + Sync>;

/// A callback told of each attempt as it is handed to a worker (or its command starts), with
/// the worker's (or job slot's) 0-based index and the moment: an attempt sent again to
/// another worker after a restart is told again. Called on the executor's threads; keep it
/// short.
pub type StartSink = Arc<dyn Fn(herdsman::AttemptId, usize, std::time::Instant) + Send + Sync>;

/// A callback that receives the pool's notices, one sentence each (for example a record
/// that has had no answer for a long time).
pub type NoticeSink = Arc<dyn Fn(&str) + Send + Sync>;

/// One record handed to a process executor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkItem {
    /// 0-based position of the record in the input.
    pub seq: u64,
    /// The record as compact JSON, without a trailing newline.
    pub json: Arc<[u8]>,
}

impl WorkItem {
    /// Builds an item from a sequence number and compact JSON text.
    ///
    /// ```
    /// let item = herdsman_workers::WorkItem::new(0, r#"{"id":1}"#);
    /// assert_eq!(&*item.json, br#"{"id":1}"#);
    /// ```
    pub fn new(seq: u64, json: impl AsRef<[u8]>) -> Self {
        WorkItem {
            seq,
            json: Arc::from(json.as_ref()),
        }
    }
}

/// What one successful attempt produced: zero (filtered), one, or many output records, each
/// compact JSON text without a trailing newline. An empty entry (no bytes) is no record: a
/// success with nothing to write, such as an `--exec` command that printed nothing
/// (`vec![Vec::new()]`); writers skip it and count the record as succeeded.
pub type WorkOutput = Vec<Vec<u8>>;

/// Why an attempt failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FailureKind {
    /// The worker process exited (or closed its stdout) while the record was in flight.
    WorkerExited,
    /// The worker answered with something that is not valid output (not JSON, too long, or
    /// a malformed envelope).
    BadOutput,
    /// The worker reported a failure for this record (framed protocol `error` reply).
    Reported,
    /// A per-record command exited with a non-zero status or was killed by a signal.
    CommandFailed,
    /// The command template could not be filled from this record (missing field, NUL byte).
    BadRecord,
    /// The record did not finish in time.
    Timeout,
}

impl std::fmt::Display for FailureKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FailureKind::WorkerExited => "worker exited",
            FailureKind::BadOutput => "bad output",
            FailureKind::Reported => "reported by worker",
            FailureKind::CommandFailed => "command failed",
            FailureKind::BadRecord => "bad record",
            FailureKind::Timeout => "timeout",
        })
    }
}

/// How one attempt of one record failed, with enough context to act on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerFailure {
    /// The class of failure.
    pub kind: FailureKind,
    /// One sentence saying what happened.
    pub message: String,
    /// Whether trying the same record again could succeed.
    pub retryable: bool,
    /// How long to wait before trying again, when the worker passed one on (a framed error
    /// reply's `retry_after`, for example from an HTTP 429 `Retry-After` header). Only set on
    /// retryable failures, and never longer than [`MAX_RETRY_AFTER`].
    pub retry_after: Option<Duration>,
    /// Index of the worker (or job slot) that ran the attempt.
    pub worker: usize,
    /// The last lines that worker wrote to stderr (at most about 20).
    pub stderr_tail: Vec<String>,
}

impl std::fmt::Display for WorkerFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

impl std::error::Error for WorkerFailure {}
