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
mod ordered;
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

pub use herdsman::executor::{AttemptId, AttemptOutcome, Executor, FatalExecutorError, Setting};

/// How this crate's messages name the per-record timeout
/// ([`ProcessOptions::timeout`]): in the messages of [`FailureKind::Timeout`] failures
/// (`no answer within 2s (the per-record timeout); ...`), in notices about records with no
/// answer, and in fatal errors about [`Setting::Timeout`]. A front end that calls the setting
/// something else (a command-line flag) may put its own name in place of these words.
pub const TIMEOUT_WORDS: &str = "the per-record timeout";

/// How the message of a [`FailureKind::CommandFailed`] failure says that it is not retried
/// because its exit status is one of [`ExecConfig::no_retry_exit`]; a front end may put its
/// own name for that setting in place of these words.
pub const NOT_RETRIED_WORDS: &str = "not retried: its exit status is listed as final";

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

/// Where and when an attempt ran, reported beside its outcome by
/// [`ProcessExecutor::poll_with_starts`]: the same worker index and moment a [`StartSink`]
/// is told, without a callback (an attempt sent again to another worker after a restart
/// carries its last start).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Started {
    /// The 0-based index of the worker (or job slot) that ran the attempt.
    pub worker: usize,
    /// When the attempt was handed to that worker (or its command was spawned); `None` when
    /// it never got that far (a command template that could not be filled from the record,
    /// a command that could not be spawned).
    pub at: Option<std::time::Instant>,
}

/// A process executor ([`WorkerPool`], [`ExecPool`]) that can tell, for every outcome it
/// reports, where and when its attempt started.
///
/// ```
/// use herdsman_workers::{AttemptId, PoolConfig, ProcessExecutor, WorkItem, WorkerCommand, WorkerPool};
/// use herdsman_workers::Executor;
/// use std::time::{Duration, Instant};
///
/// let before = Instant::now();
/// let mut pool = WorkerPool::start(PoolConfig::new(WorkerCommand::argv(["cat"]))).unwrap();
/// pool.submit(AttemptId { index: 0, attempt: 1 }, WorkItem::new(0, "1")).unwrap();
/// let (mut out, mut starts) = (Vec::new(), Vec::new());
/// while out.is_empty() {
///     pool.poll_with_starts(Duration::from_secs(1), &mut out, &mut starts).unwrap();
/// }
/// assert_eq!(starts.len(), out.len());
/// assert_eq!(starts[0].worker, 0);
/// assert!(starts[0].at.is_some_and(|at| at >= before));
/// pool.shutdown();
/// ```
pub trait ProcessExecutor: Executor<WorkItem, Output = WorkOutput, Error = WorkerFailure> {
    /// Does what [`Executor::poll`] does, and appends to `starts` one [`Started`] for each
    /// outcome it appends to `out`, in the same order.
    fn poll_with_starts(
        &mut self,
        timeout: Duration,
        out: &mut Vec<(AttemptId, AttemptOutcome<WorkOutput, WorkerFailure>)>,
        starts: &mut Vec<Started>,
    ) -> Result<(), FatalExecutorError>;
}

/// A callback told each time a worker process is started to take the place of one that ended
/// (it exited, was killed after a timeout or abandon, or was retired after its limit of
/// records), with the worker's 0-based index. Called on the thread that drives the pool.
pub type RestartSink = Arc<dyn Fn(usize) + Send + Sync>;

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

/// The library crates' messages name no command-line flag (`--name`): a library user (Rust API,
/// Python package) has no such flags, and the command-line tool adds its own where it
/// presents an error. This checks the string literals of the code (not of comments, nor of the
/// test modules that end the files) of this crate and of the other library crates beside it
/// in the workspace (`herdsman`, `herdsman-io`, `herdsman-ledger`).
#[cfg(test)]
mod no_flag_names {
    use std::path::Path;

    /// The string literals of `code`, up to its first `#[cfg(test)]`.
    fn literals(code: &str) -> Vec<String> {
        let code = code.split("#[cfg(test)]").next().unwrap_or("");
        let b = code.as_bytes();
        let (mut out, mut i) = (Vec::new(), 0);
        while i < b.len() {
            match b[i] {
                b'/' if b.get(i + 1) == Some(&b'/') => {
                    while i < b.len() && b[i] != b'\n' {
                        i += 1;
                    }
                }
                b'/' if b.get(i + 1) == Some(&b'*') => {
                    i += 2;
                    while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                        i += 1;
                    }
                    i += 2;
                }
                b'\'' if b.get(i + 1) == Some(&b'\\') => {
                    i += 2;
                    while i < b.len() && b[i] != b'\'' {
                        i += 1;
                    }
                    i += 1;
                }
                b'\'' if b.get(i + 2) == Some(&b'\'') => i += 3,
                b'r' if matches!(b.get(i + 1), Some(b'"' | b'#'))
                    && (i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_')) =>
                {
                    let hashes = b[i + 1..].iter().take_while(|&&c| c == b'#').count();
                    let start = i + 2 + hashes;
                    let close = format!("\"{}", "#".repeat(hashes));
                    let end = code[start..].find(&close).map_or(b.len(), |e| start + e);
                    out.push(code[start..end].to_string());
                    i = end + close.len();
                }
                b'"' => {
                    let start = i + 1;
                    i += 1;
                    while i < b.len() && b[i] != b'"' {
                        i += if b[i] == b'\\' { 2 } else { 1 };
                    }
                    out.push(code[start..i.min(b.len())].to_string());
                    i += 1;
                }
                _ => i += 1,
            }
        }
        out
    }

    fn files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                files(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }

    /// The first `--name` in `text`.
    fn flag(text: &str) -> Option<&str> {
        text.split(|c: char| c.is_whitespace() || "(`'\"".contains(c))
            .find(|w| w.len() > 2 && w.starts_with("--") && w.as_bytes()[2].is_ascii_lowercase())
    }

    #[test]
    fn the_scanner_finds_literals_and_skips_comments() {
        let code =
            "// \"--no\"\nlet a = '\"'; let s = \"say --timeout\"; /* \"--no\" */ r#\"x --y\"#;";
        let found: Vec<String> = literals(code);
        assert_eq!(found, ["say --timeout", "x --y"]);
        assert_eq!(flag(&found[0]), Some("--timeout"));
        assert_eq!(flag("a -- b"), None);
    }

    #[test]
    fn no_message_of_the_libraries_names_a_command_line_flag() {
        let here = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut paths = Vec::new();
        files(&here.join("src"), &mut paths);
        for sibling in ["herdsman", "herdsman-io", "herdsman-ledger"] {
            let src = here.join("..").join(sibling).join("src");
            // Present in the workspace; a packaged copy of this crate checks itself only.
            if src.is_dir() {
                files(&src, &mut paths);
            }
        }
        assert!(paths.len() > 20, "{paths:?}");
        let mut named = Vec::new();
        for path in paths {
            for lit in literals(&std::fs::read_to_string(&path).unwrap()) {
                if let Some(f) = flag(&lit) {
                    named.push(format!("{}: `{lit}` names {f}", path.display()));
                }
            }
        }
        assert!(named.is_empty(), "{}", named.join("\n"));
    }
}
