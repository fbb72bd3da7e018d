//! The settings every process executor shares: how its processes are started (environment,
//! directory), how long one record may take, how a process is stopped (the kill grace) and
//! where its stderr goes.
//!
//! One [`ProcessOptions`] is built once (by the CLI, from its flags) and given to whichever
//! executor runs the job, the worker pool ([`crate::PoolConfig`]) or per-record commands
//! ([`crate::ExecConfig`]). This module only holds settings: it must never start, signal or
//! wait for a process.

use std::path::PathBuf;
use std::time::Duration;

use crate::StderrSink;

/// How a process executor starts, times and stops its processes. See the module docs.
///
/// ```
/// use herdsman_workers::{ExecConfig, PoolConfig, ProcessOptions, Template, WorkerCommand};
/// use std::time::Duration;
///
/// let process = ProcessOptions {
///     timeout: Some(Duration::from_secs(30)),
///     ..ProcessOptions::default()
/// };
/// let mut pool = PoolConfig::new(WorkerCommand::argv(["cat"]));
/// pool.process = process.clone();
/// let mut exec = ExecConfig::new(Template::parse(&["echo".into(), "{}".into()]).unwrap());
/// exec.process = process;
/// // Both configurations read the shared settings as their own fields.
/// assert_eq!(pool.timeout, exec.timeout);
/// ```
#[derive(Clone)]
pub struct ProcessOptions {
    /// Extra environment variables for every process.
    pub env: Vec<(String, String)>,
    /// The directory the processes start in; `None`: the caller's current directory.
    pub cwd: Option<PathBuf>,
    /// How long a process gets between SIGTERM and SIGKILL to its process group.
    pub kill_grace: Duration,
    /// Receives every stderr line of every process, with the worker's (or job slot's) index.
    pub stderr: Option<StderrSink>,
    /// How long one record may take; a record that takes longer fails with
    /// [`crate::FailureKind::Timeout`] and its process group is killed. When the clock
    /// starts depends on the executor: see [`crate::PoolConfig`] and [`crate::ExecConfig`].
    /// `None`: no limit.
    pub timeout: Option<Duration>,
    /// Told of every attempt as a worker (or command) starts on it, with the worker's index
    /// (for a job log). `None`: nobody is told, and nothing is spent on it.
    pub on_start: Option<crate::StartSink>,
}

impl ProcessOptions {
    /// The default kill grace.
    pub const DEFAULT_KILL_GRACE: Duration = Duration::from_secs(2);
}

impl Default for ProcessOptions {
    /// No extra environment, the caller's directory, a 2 s kill grace, stderr dropped, no
    /// timeout.
    fn default() -> Self {
        ProcessOptions {
            env: Vec::new(),
            cwd: None,
            kill_grace: Self::DEFAULT_KILL_GRACE,
            stderr: None,
            timeout: None,
            on_start: None,
        }
    }
}

impl std::fmt::Debug for ProcessOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessOptions")
            .field("env", &self.env)
            .field("cwd", &self.cwd)
            .field("kill_grace", &self.kill_grace)
            .field("stderr", &self.stderr.is_some())
            .field("timeout", &self.timeout)
            .field("on_start", &self.on_start.is_some())
            .finish()
    }
}
