//! The seam between the engine and whatever runs one attempt of one item.
//!
//! The engine owns all scheduling (window, rate limit, retry timers, deadlines, cancel,
//! progress). An executor only runs attempts and reports how each ended. It must never
//! retry, reorder for the caller, or drop an attempt without reporting it (unless the engine
//! abandoned it).

use std::time::Duration;

/// Identifies one attempt of one item: the item's 0-based input index and the 1-based attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AttemptId {
    /// 0-based position of the item in the input.
    pub index: u64,
    /// 1-based attempt number (1 = first try).
    pub attempt: u32,
}

impl AttemptId {
    /// The same attempt of the item `k` places after this one (batches of items share an
    /// attempt number and have consecutive indices).
    ///
    /// ```
    /// use herdsman::AttemptId;
    /// let first = AttemptId { index: 10, attempt: 2 };
    /// assert_eq!(first.nth(3), AttemptId { index: 13, attempt: 2 });
    /// ```
    pub fn nth(self, k: usize) -> AttemptId {
        AttemptId {
            index: self.index + k as u64,
            attempt: self.attempt,
        }
    }
}

/// How one attempt ended, as reported by an executor.
#[derive(Debug)]
pub enum AttemptOutcome<U, E> {
    /// The attempt produced a value.
    Success(U),
    /// The attempt returned an error. The engine's retry policy decides what happens next.
    Failure(E),
    /// The attempt panicked (thread executors) or its process died; the message says how.
    Panicked(String),
}

/// Finished attempts as [`Executor::poll`] appends them (a convenience alias).
pub type Finished<U, E> = Vec<(AttemptId, AttemptOutcome<U, E>)>;

/// What kind of problem a [`FatalExecutorError`] is, so a caller can tell bad usage from
/// trouble that arose while running (a command-line tool maps only
/// [`Configuration`](FatalKind::Configuration) to its usage exit code).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum FatalKind {
    /// The run was set up wrong and no retry can help (a missing worker program, an
    /// unusable working directory): fix the configuration and run again.
    Configuration,
    /// Something failed while running (a thread or process could not be started, every
    /// worker exited): the same configuration may work another time.
    #[default]
    Runtime,
}

/// The setting of an executor that a [`FatalExecutorError`] is about, so that a front end can
/// point at it in its own terms (a command-line flag, a keyword argument) while the message
/// says in words what to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Setting {
    /// The program the executor runs: a worker, or the command run for each item.
    Command,
    /// The directory the program runs in.
    WorkingDirectory,
    /// How many attempts run at once (worker processes, jobs, threads).
    Concurrency,
    /// How long one attempt may take.
    Timeout,
}

/// An error that makes the executor unusable, so the whole run must stop
/// (for example: a worker program that cannot be started at all).
///
/// ```
/// use herdsman::{FatalExecutorError, FatalKind, Setting};
/// let e = FatalExecutorError::configuration("worker program ./w not found; check the path")
///     .about(Setting::Command);
/// assert_eq!(e.kind, FatalKind::Configuration);
/// assert_eq!(e.setting, Some(Setting::Command));
/// assert_eq!(e.to_string(), "worker program ./w not found; check the path");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FatalExecutorError {
    /// One sentence saying what happened and what to do.
    pub message: String,
    /// Bad configuration, or a failure while running.
    pub kind: FatalKind,
    /// The setting to change, when the remedy is one: a front end names it its own way.
    pub setting: Option<Setting>,
}

impl FatalExecutorError {
    /// A fatal error caused by how the run was configured.
    pub fn configuration(message: impl Into<String>) -> Self {
        FatalExecutorError {
            message: message.into(),
            kind: FatalKind::Configuration,
            setting: None,
        }
    }

    /// A fatal error that arose while running.
    pub fn runtime(message: impl Into<String>) -> Self {
        FatalExecutorError {
            message: message.into(),
            kind: FatalKind::Runtime,
            setting: None,
        }
    }

    /// The same error, saying which setting its remedy changes.
    #[must_use]
    pub fn about(mut self, setting: Setting) -> Self {
        self.setting = Some(setting);
        self
    }
}

impl std::fmt::Display for FatalExecutorError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for FatalExecutorError {}

/// Runs attempts handed to it by the engine and reports their outcomes.
///
/// The engine calls these methods from a single scheduler thread. `submit` must not block
/// for long: an executor queues the attempt and returns. `poll` waits at most `timeout` and
/// appends every attempt that finished since the last call.
pub trait Executor<T>: Send {
    /// The value a successful attempt yields.
    type Output: Send;
    /// The error a failed attempt yields.
    type Error: Send;

    /// How many attempts may be submitted and unfinished at once (running plus queued).
    /// The engine never exceeds it.
    fn capacity(&self) -> usize;

    /// How many attempts run at the same time; the rest of [`capacity`](Executor::capacity)
    /// waits in a queue. Rate-limited runs submit no more than this, so that an attempt
    /// starts when its token is taken and a pause (HTTP 429) also holds back what would
    /// otherwise be queued. Defaults to `capacity()` (every submitted attempt starts at once).
    fn concurrency(&self) -> usize {
        self.capacity()
    }

    /// Start (or queue) one attempt of one item.
    fn submit(&mut self, id: AttemptId, item: T) -> Result<(), FatalExecutorError>;

    /// Wait up to `timeout` for finished attempts and append them to `out`.
    #[allow(clippy::type_complexity)]
    fn poll(
        &mut self,
        timeout: Duration,
        out: &mut Vec<(AttemptId, AttemptOutcome<Self::Output, Self::Error>)>,
    ) -> Result<(), FatalExecutorError>;

    /// Give up on an attempt (per-item timeout, or the run stops). The executor must not
    /// report it afterwards. Thread executors discard the late result and replace the busy
    /// thread; process executors kill the worker's process group and restart it.
    fn abandon(&mut self, id: AttemptId);

    /// The run is stopping (stop token, `max_errors`, deadline): append to `not_started`
    /// every attempt that was submitted and has not started, and never report those. The
    /// engine reports them as not run at once instead of waiting for them. Attempts already
    /// running are left to finish. The default gives nothing back: everything submitted runs.
    fn stop_queued(&mut self, not_started: &mut Vec<AttemptId>) {
        let _ = not_started;
    }

    /// Stop everything; called once when the run ends.
    fn shutdown(&mut self);
}

/// Forwards every method, so a boxed executor (`Box<dyn Executor<T, Output = U, Error = E>>`,
/// chosen at run time) can be given wherever an executor is expected.
impl<T, X: Executor<T> + ?Sized> Executor<T> for Box<X> {
    type Output = X::Output;
    type Error = X::Error;

    fn capacity(&self) -> usize {
        (**self).capacity()
    }

    fn concurrency(&self) -> usize {
        (**self).concurrency()
    }

    fn submit(&mut self, id: AttemptId, item: T) -> Result<(), FatalExecutorError> {
        (**self).submit(id, item)
    }

    fn poll(
        &mut self,
        timeout: Duration,
        out: &mut Finished<Self::Output, Self::Error>,
    ) -> Result<(), FatalExecutorError> {
        (**self).poll(timeout, out)
    }

    fn abandon(&mut self, id: AttemptId) {
        (**self).abandon(id);
    }

    fn stop_queued(&mut self, not_started: &mut Vec<AttemptId>) {
        (**self).stop_queued(not_started);
    }

    fn shutdown(&mut self) {
        (**self).shutdown();
    }
}

/// Forwards every method, so a run can borrow an executor and the caller keeps it (to read
/// its statistics, or to use it for another run) afterwards.
impl<T, X: Executor<T> + ?Sized> Executor<T> for &mut X {
    type Output = X::Output;
    type Error = X::Error;

    fn capacity(&self) -> usize {
        (**self).capacity()
    }

    fn concurrency(&self) -> usize {
        (**self).concurrency()
    }

    fn submit(&mut self, id: AttemptId, item: T) -> Result<(), FatalExecutorError> {
        (**self).submit(id, item)
    }

    fn poll(
        &mut self,
        timeout: Duration,
        out: &mut Finished<Self::Output, Self::Error>,
    ) -> Result<(), FatalExecutorError> {
        (**self).poll(timeout, out)
    }

    fn abandon(&mut self, id: AttemptId) {
        (**self).abandon(id);
    }

    fn stop_queued(&mut self, not_started: &mut Vec<AttemptId>) {
        (**self).stop_queued(not_started);
    }

    fn shutdown(&mut self) {
        (**self).shutdown();
    }
}
