//! One command per record (`--exec`): N job slots, each running one child process at a time.
//!
//! Each command runs directly (no shell unless the template asks for one), in its own
//! process group, with stdin closed and `HERDSMAN_WORKER` set to its job slot's number
//! (1-based, the value of `{%}`). Its stdout becomes the record's output and its exit
//! status decides success; stdout that is not UTF-8 fails the record (`BadOutput`), so no
//! invalid byte ever reaches the output. This module must never report an abandoned attempt, never signal
//! a process group after its leader was reaped, and never let a command's stderr grow
//! memory without bound.

use std::collections::HashMap;
use std::io::Read;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use nix::sys::signal::Signal;

use crate::duration::{format_duration, DurationStyle};
use crate::options::ProcessOptions;
use crate::ordered::Ordered;
use crate::process::{
    check_dir, check_program, describe_status, group_command, kill_after_grace, reap, signal_group,
    spawn_registered, wait_exit_unreaped,
};
use crate::tail::StderrReader;
use crate::template::Template;
use crate::text::{io_phrase, quote_start};
use crate::{
    AttemptId, AttemptOutcome, Executor, FailureKind, FatalExecutorError, ProcessExecutor, Setting,
    Started, WorkItem, WorkOutput, WorkerFailure, NOT_RETRIED_WORDS, TIMEOUT_WORDS,
};

/// The environment variable that tells a worker process or a per-record command the
/// number of its worker or job slot, starting at 1 (the value of the `{%}` placeholder).
pub(crate) const WORKER_ENV: &str = "HERDSMAN_WORKER";

/// How a command's stdout becomes output records (see `docs/protocol.md`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ExecOutputMode {
    /// Empty stdout: the record succeeds without an output record (like a command run by
    /// xargs that prints nothing). Every non-empty line is JSON: one output record per
    /// line. The whole stdout is one JSON value (e.g. pretty printed): that value,
    /// compacted. Anything else: one record `{"stdout": "<text>"}`.
    #[default]
    Auto,
    /// Always exactly one record `{"stdout": "<text>"}`, with one trailing newline removed.
    Text,
    /// Always exactly one record `{"input": <record>, "stdout": "<text>", "exit": 0}`: the
    /// record the command ran for, its stdout as text (one trailing newline removed) and
    /// its exit status (always 0, since any other status fails the record).
    Record,
    /// The command's stdout as it is, for raw text output (`--output-format lines`): one
    /// JSON string record holding the text with one trailing newline removed; empty stdout
    /// is a success without an output record. `echo {}` prints what it would in a shell.
    Raw,
}

/// How long to wait for the end of a finished command's stderr. Its process group is dead
/// by then, so the end comes as soon as the reader thread drains the pipe; only a process
/// that left the group keeps it open. The wait is generous because the stderr tail goes
/// into the record's dead-letter entry, which must not depend on how busy the machine was.
const STDERR_EOF_WAIT: Duration = Duration::from_secs(2);

/// Settings for an [`ExecPool`].
///
/// The settings shared with the worker pool (environment, directory, kill grace, stderr,
/// timeout) are in [`ExecConfig::process`] and read as fields of this struct
/// (`cfg.timeout`). Here the timeout is measured from a command's spawn (time spent waiting
/// for a free job slot does not count); a command that runs longer has its process group
/// killed (SIGTERM, then SIGKILL after the kill grace) and its record fails with
/// [`FailureKind::Timeout`]. The kill grace applies to abandoned commands too.
#[derive(Clone)]
pub struct ExecConfig {
    /// The command to run for each record.
    pub template: Template,
    /// How many commands run at once.
    pub jobs: usize,
    /// How the commands are started, timed and stopped (shared with the worker pool).
    pub process: ProcessOptions,
    /// How stdout becomes output records.
    pub output: ExecOutputMode,
    /// Largest stdout accepted from one command, in bytes.
    pub max_output_bytes: usize,
    /// Exit statuses that fail a record for good: a command that exits with one of them is
    /// not retried (e.g. 22, curl's status for an HTTP error such as 404 with `--fail`).
    pub no_retry_exit: Vec<i32>,
}

impl ExecConfig {
    /// Defaults: one job per available CPU, [`ExecOutputMode::Auto`], the default
    /// [`ProcessOptions`] (a 2 s kill grace, no timeout).
    pub fn new(template: Template) -> Self {
        ExecConfig {
            template,
            jobs: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            process: ProcessOptions::default(),
            output: ExecOutputMode::Auto,
            max_output_bytes: 64 << 20,
            no_retry_exit: Vec::new(),
        }
    }
}

impl std::ops::Deref for ExecConfig {
    type Target = ProcessOptions;
    fn deref(&self) -> &ProcessOptions {
        &self.process
    }
}

impl std::ops::DerefMut for ExecConfig {
    fn deref_mut(&mut self) -> &mut ProcessOptions {
        &mut self.process
    }
}

impl std::fmt::Debug for ExecConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecConfig")
            .field("template", &self.template.display())
            .field("jobs", &self.jobs)
            .field("process", &self.process)
            .field("output", &self.output)
            .field("max_output_bytes", &self.max_output_bytes)
            .field("no_retry_exit", &self.no_retry_exit)
            .finish()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum JobState {
    Queued,
    /// The command's pid and when it was spawned.
    Running(u32, Instant),
    Reaped,
}

/// Shared between the scheduler thread (abandon, timeout) and the job thread running the
/// command.
struct JobCtl {
    state: Mutex<JobState>,
    abandoned: AtomicBool,
    /// The command ran out of time and is being killed; its job thread reports a timeout.
    timed_out: AtomicBool,
}

struct Job {
    id: AttemptId,
    item: WorkItem,
    ctl: Arc<JobCtl>,
}

type Outcome = (AttemptId, AttemptOutcome<WorkOutput, WorkerFailure>);

enum Done {
    /// An attempt's outcome, and its job slot and when its command was spawned (`None` if
    /// it never was).
    Finished(Outcome, Started),
    Fatal(FatalExecutorError),
}

struct Shared {
    cfg: ExecConfig,
    /// `Some` when the program does not depend on the record.
    program: Option<String>,
}

/// Runs one command per record, `jobs` at a time.
///
/// ```
/// use herdsman_workers::{Executor, ExecConfig, ExecPool, Template, WorkItem, AttemptId};
/// use std::time::Duration;
///
/// // `{{` and `}}` are literal braces; `{n}` is the record's field `n`.
/// let t = Template::parse(&["echo".into(), r#"{{"n":{n}}}"#.into()]).unwrap();
/// let mut pool = ExecPool::start(ExecConfig::new(t)).unwrap();
/// let id = AttemptId { index: 0, attempt: 1 };
/// pool.submit(id, WorkItem::new(0, r#"{"n":41}"#)).unwrap();
/// let mut out = Vec::new();
/// while out.is_empty() {
///     pool.poll(Duration::from_secs(1), &mut out).unwrap();
/// }
/// match &out[0].1 {
///     herdsman_workers::AttemptOutcome::Success(v) => assert_eq!(v, &vec![br#"{"n":41}"#.to_vec()]),
///     other => panic!("{other:?}"),
/// }
/// ```
pub struct ExecPool {
    shared: Arc<Shared>,
    jobs_tx: Option<Sender<Job>>,
    done_rx: Receiver<Done>,
    active: HashMap<AttemptId, Arc<JobCtl>>,
    fatal: Option<FatalExecutorError>,
    threads: Vec<JoinHandle<()>>,
    killers: Vec<JoinHandle<()>>,
    stopped: bool,
    /// Room for the starts `poll` is not asked for.
    starts: Vec<Started>,
}

impl ExecPool {
    /// Starts the job threads. Fails at once if the program cannot be run.
    pub fn start(mut cfg: ExecConfig) -> Result<ExecPool, FatalExecutorError> {
        cfg.jobs = cfg.jobs.max(1);
        let program = cfg.template.program();
        if let Some(dir) = &cfg.cwd {
            check_dir(dir).map_err(|e| cwd_fatal(&cfg, &e))?;
        }
        if let Some(p) = &program {
            check_program(p, cfg.cwd.as_deref()).map_err(|e| spawn_fatal(p, &e))?;
        }
        let jobs = cfg.jobs;
        let shared = Arc::new(Shared { cfg, program });
        let (jobs_tx, jobs_rx) = crossbeam_channel::unbounded::<Job>();
        let (done_tx, done_rx) = crossbeam_channel::unbounded::<Done>();
        let mut threads = Vec::with_capacity(jobs);
        for slot in 0..jobs {
            let shared = shared.clone();
            let jobs_rx = jobs_rx.clone();
            let done_tx = done_tx.clone();
            let h = std::thread::Builder::new()
                .name(format!("herdsman-exec-{slot}"))
                .spawn(move || {
                    for job in jobs_rx {
                        if let Some(done) = run_job(&shared, slot, job) {
                            if done_tx.send(done).is_err() {
                                return;
                            }
                        }
                    }
                })
                .map_err(|e| {
                    FatalExecutorError::runtime(format!(
                        "cannot start a thread for a job: {}; lower the number of jobs or raise the thread limit",
                        io_phrase(&e)
                    ))
                    .about(Setting::Concurrency)
                })?;
            threads.push(h);
        }
        Ok(ExecPool {
            shared,
            jobs_tx: Some(jobs_tx),
            done_rx,
            active: HashMap::new(),
            fatal: None,
            threads,
            killers: Vec::new(),
            stopped: false,
            starts: Vec::new(),
        })
    }

    fn take(
        &mut self,
        done: Done,
        out: &mut Vec<Outcome>,
        starts: &mut Vec<Started>,
    ) -> Result<(), FatalExecutorError> {
        match done {
            Done::Finished((id, outcome), started) => {
                // Absent: abandoned after the command finished; never report it.
                if self.active.remove(&id).is_some() {
                    out.push((id, outcome));
                    starts.push(started);
                }
                Ok(())
            }
            Done::Fatal(f) => {
                self.fatal = Some(f.clone());
                Err(f)
            }
        }
    }

    /// Stops a running command's process group with the kill-after-grace routine, on a
    /// killer thread: SIGTERM, SIGKILL after the grace period if the command is still
    /// running by then. The job thread reaps only under the state lock, so the group is
    /// signalled only while it is still this command's.
    fn kill(&mut self, ctl: Arc<JobCtl>) {
        let pid = match *ctl.state.lock().unwrap_or_else(|p| p.into_inner()) {
            JobState::Running(pid, _) => pid,
            _ => return,
        };
        let grace = self.shared.cfg.kill_grace;
        self.killers.retain(|h| !h.is_finished());
        let killer = move || {
            kill_after_grace(&[pid], grace, |pid| {
                let state = ctl.state.lock().unwrap_or_else(|p| p.into_inner());
                matches!(*state, JobState::Running(p, _) if p == pid).then_some(state)
            });
        };
        match std::thread::Builder::new()
            .name("herdsman-exec-kill".into())
            .spawn(killer)
        {
            Ok(h) => self.killers.push(h),
            Err(_) => signal_group(pid, Signal::SIGKILL),
        }
    }

    /// Starts killing every command that ran out of time. Returns when the next running
    /// command runs out of time, if one is running and a timeout is set.
    fn expire(&mut self) -> Option<Instant> {
        let timeout = self.shared.cfg.timeout?;
        let now = Instant::now();
        let mut late = Vec::new();
        let mut next: Option<Instant> = None;
        for ctl in self.active.values() {
            if ctl.timed_out.load(Ordering::SeqCst) {
                continue;
            }
            let JobState::Running(_, started) =
                *ctl.state.lock().unwrap_or_else(|p| p.into_inner())
            else {
                continue;
            };
            let expiry = started + timeout;
            if expiry <= now {
                late.push(ctl.clone());
            } else {
                next = Some(next.map_or(expiry, |n| n.min(expiry)));
            }
        }
        for ctl in late {
            ctl.timed_out.store(true, Ordering::SeqCst);
            tracing::info!(
                timeout_ms = timeout.as_millis() as u64,
                "command timed out; killing its process group"
            );
            self.kill(ctl);
        }
        next
    }
}

fn cwd_fatal(cfg: &ExecConfig, e: &std::io::Error) -> FatalExecutorError {
    FatalExecutorError::configuration(format!(
        "cannot run command `{}` in directory `{}`: {}; check the working directory",
        cfg.template.display(),
        cfg.cwd
            .as_deref()
            .unwrap_or(std::path::Path::new("."))
            .display(),
        io_phrase(e)
    ))
    .about(Setting::WorkingDirectory)
}

fn spawn_fatal(program: &str, e: &std::io::Error) -> FatalExecutorError {
    FatalExecutorError::configuration(format!(
        "cannot run command `{program}`: {}; check the command",
        io_phrase(e)
    ))
    .about(Setting::Command)
}

fn failure(slot: usize, kind: FailureKind, message: String, retryable: bool) -> WorkerFailure {
    WorkerFailure {
        kind,
        message,
        retryable,
        retry_after: None,
        worker: slot,
        stderr_tail: Vec::new(),
    }
}

/// Runs one job on a job thread (`slot` is 0-based). Returns `None` if the job was
/// abandoned.
fn run_job(shared: &Shared, slot: usize, job: Job) -> Option<Done> {
    let Job { id, item, ctl } = job;
    let cfg = &shared.cfg;
    let not_spawned = Started {
        worker: slot,
        at: None,
    };
    // Rendered here, where the job slot that `{%}` stands for is known.
    let (argv, env) = match cfg
        .template
        .render_json_in_slot(&item.json, item.seq, slot + 1)
    {
        Ok(cmd) => {
            let mut env = cfg.env.clone();
            env.extend(cmd.env);
            env.push((WORKER_ENV.into(), (slot + 1).to_string()));
            (cmd.argv, env)
        }
        Err(e) => {
            if ctl.abandoned.load(Ordering::SeqCst) {
                return None;
            }
            let f = failure(slot, FailureKind::BadRecord, e.to_string(), false);
            return Some(Done::Finished(
                (id, AttemptOutcome::Failure(f)),
                not_spawned,
            ));
        }
    };
    let started;
    let mut child: Child = {
        let mut state = ctl.state.lock().unwrap_or_else(|p| p.into_inner());
        if ctl.abandoned.load(Ordering::SeqCst) {
            return None;
        }
        let mut cmd = group_command(&argv, &env, cfg.cwd.as_deref());
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let spawned = spawn_registered(cmd);
        match spawned {
            Ok(c) => {
                let now = Instant::now();
                started = Started {
                    worker: slot,
                    at: Some(now),
                };
                *state = JobState::Running(c.id(), now);
                if let Some(told) = &cfg.on_start {
                    told(id, slot, now);
                }
                c
            }
            Err(e) => {
                *state = JobState::Reaped;
                // A directory removed since start also makes the spawn fail with ENOENT.
                if let Some(Err(dir_err)) = cfg.cwd.as_deref().map(check_dir) {
                    return Some(Done::Fatal(cwd_fatal(cfg, &dir_err)));
                }
                let unrunnable = matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied
                );
                if unrunnable && shared.program.is_some() {
                    return Some(Done::Fatal(spawn_fatal(&argv[0], &e)));
                }
                let msg = format!("cannot run command `{}`: {}", argv[0], io_phrase(&e));
                let f = failure(slot, FailureKind::CommandFailed, msg, false);
                return Some(Done::Finished(
                    (id, AttemptOutcome::Failure(f)),
                    not_spawned,
                ));
            }
        }
    };
    let pid = child.id();
    let stderr = StderrReader::spawn(
        child.stderr.take().expect("stderr is piped"),
        slot,
        cfg.stderr.clone(),
    );
    let mut stdout_pipe = child.stdout.take().expect("stdout is piped");
    let mut stdout = Vec::new();
    let mut too_long = false;
    let mut buf = [0u8; 16 * 1024];
    loop {
        match stdout_pipe.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if stdout.len() + n > cfg.max_output_bytes {
                    too_long = true;
                } else {
                    stdout.extend_from_slice(&buf[..n]);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    drop(stdout_pipe);
    wait_exit_unreaped(pid);
    let status = {
        let mut state = ctl.state.lock().unwrap_or_else(|p| p.into_inner());
        // The leader is a zombie: its group id is still its own. Kill whatever the command
        // left running in its group, then reap it.
        signal_group(pid, Signal::SIGKILL);
        let status = reap(&mut child);
        *state = JobState::Reaped;
        status
    };
    if ctl.abandoned.load(Ordering::SeqCst) {
        return None;
    }
    let tail = stderr.finish(STDERR_EOF_WAIT);
    let program = &argv[0];
    if ctl.timed_out.load(Ordering::SeqCst) {
        let limit = cfg
            .timeout
            .map(|t| format_duration(t, DurationStyle::Flag))
            .unwrap_or_default();
        let msg = format!(
            "command `{program}` did not finish within {limit} ({TIMEOUT_WORDS}); its process group was killed"
        );
        let f = WorkerFailure {
            stderr_tail: tail,
            ..failure(slot, FailureKind::Timeout, msg, true)
        };
        return Some(Done::Finished((id, AttemptOutcome::Failure(f)), started));
    }
    let outcome = match status {
        Some(st) if st.success() => {
            if too_long {
                let msg = format!(
                    "command `{program}` wrote more than {} bytes to stdout",
                    cfg.max_output_bytes
                );
                AttemptOutcome::Failure(WorkerFailure {
                    stderr_tail: tail,
                    ..failure(slot, FailureKind::BadOutput, msg, false)
                })
            } else if let Err(e) = std::str::from_utf8(&stdout) {
                let msg = format!(
                    "command `{program}` wrote output that is not valid UTF-8 (byte {} of its stdout); make it print UTF-8, e.g. through `iconv -t UTF-8`",
                    e.valid_up_to() + 1
                );
                AttemptOutcome::Failure(WorkerFailure {
                    stderr_tail: tail,
                    ..failure(slot, FailureKind::BadOutput, msg, false)
                })
            } else {
                AttemptOutcome::Success(parse_stdout(&stdout, cfg.output, &item.json))
            }
        }
        other => {
            let final_code = other
                .and_then(|st| st.code())
                .filter(|c| cfg.no_retry_exit.contains(c));
            let mut msg = format!("command `{program}` {}", describe_status(other));
            if final_code.is_some() {
                msg.push_str(&format!(" ({NOT_RETRIED_WORDS})"));
            }
            if let Some(last) = tail.last() {
                msg.push_str(&format!(" (stderr: {})", quote_start(last.as_bytes())));
            }
            AttemptOutcome::Failure(WorkerFailure {
                stderr_tail: tail,
                ..failure(slot, FailureKind::CommandFailed, msg, final_code.is_none())
            })
        }
    };
    Some(Done::Finished((id, outcome), started))
}

/// Turns a command's stdout, known to be UTF-8, into output records (see
/// [`ExecOutputMode`]); `input` is the record the command ran for, as JSON text.
///
/// A success without an output record is `vec![Vec::new()]` (one empty entry), which the
/// caller counts as succeeded and writes nothing for; `vec![]` would be a filtered record.
pub(crate) fn parse_stdout(stdout: &[u8], mode: ExecOutputMode, input: &[u8]) -> WorkOutput {
    let text = || {
        let text = String::from_utf8_lossy(stdout);
        let text = text.strip_suffix('\n').unwrap_or(&text);
        let text = text.strip_suffix('\r').unwrap_or(text);
        serde_json::to_string(text).expect("a string serializes")
    };
    match mode {
        ExecOutputMode::Text => return vec![format!("{{\"stdout\":{}}}", text()).into_bytes()],
        ExecOutputMode::Record => {
            // The record as it came (keeping its key order), if it is JSON as it should be.
            let input = if serde_json::from_slice::<serde::de::IgnoredAny>(input).is_ok() {
                String::from_utf8_lossy(input).into_owned()
            } else {
                serde_json::to_string(&String::from_utf8_lossy(input)).expect("a string serializes")
            };
            let out = format!("{{\"input\":{input},\"stdout\":{},\"exit\":0}}", text());
            return vec![out.into_bytes()];
        }
        ExecOutputMode::Raw if stdout.is_empty() => return vec![Vec::new()],
        ExecOutputMode::Raw => return vec![text().into_bytes()],
        ExecOutputMode::Auto => {}
    }
    let lines: Vec<&[u8]> = stdout
        .split(|&b| b == b'\n')
        .map(<[u8]>::trim_ascii)
        .filter(|l| !l.is_empty())
        .collect();
    if lines.is_empty() {
        return vec![Vec::new()];
    }
    if lines
        .iter()
        .all(|l| serde_json::from_slice::<serde::de::IgnoredAny>(l).is_ok())
    {
        return lines.into_iter().map(<[u8]>::to_vec).collect();
    }
    // Pretty-printed JSON on several lines: one compact record, keys in the command's order.
    if let Ok(v) = Ordered::from_slice(stdout) {
        return vec![v.to_json().into_bytes()];
    }
    vec![format!("{{\"stdout\":{}}}", text()).into_bytes()]
}

impl Executor<WorkItem> for ExecPool {
    type Output = WorkOutput;
    type Error = WorkerFailure;

    /// Twice the number of jobs: one running and one waiting per job slot, so a slot never
    /// idles while the engine's thread is busy.
    fn capacity(&self) -> usize {
        self.shared.cfg.jobs * 2
    }

    fn concurrency(&self) -> usize {
        self.shared.cfg.jobs
    }

    fn submit(&mut self, id: AttemptId, item: WorkItem) -> Result<(), FatalExecutorError> {
        if let Some(f) = &self.fatal {
            return Err(f.clone());
        }
        let ctl = Arc::new(JobCtl {
            state: Mutex::new(JobState::Queued),
            abandoned: AtomicBool::new(false),
            timed_out: AtomicBool::new(false),
        });
        self.active.insert(id, ctl.clone());
        if let Some(tx) = &self.jobs_tx {
            let _ = tx.send(Job { id, item, ctl });
        }
        Ok(())
    }

    fn poll(
        &mut self,
        timeout: Duration,
        out: &mut Vec<Outcome>,
    ) -> Result<(), FatalExecutorError> {
        let mut starts = std::mem::take(&mut self.starts);
        let polled = self.poll_with_starts(timeout, out, &mut starts);
        starts.clear();
        self.starts = starts;
        polled
    }

    fn abandon(&mut self, id: AttemptId) {
        if let Some(ctl) = self.active.remove(&id) {
            ctl.abandoned.store(true, Ordering::SeqCst);
            self.kill(ctl);
        }
    }

    fn shutdown(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        self.jobs_tx = None;
        let ids: Vec<AttemptId> = self.active.keys().copied().collect();
        for id in ids {
            self.abandon(id);
        }
        for h in self.killers.drain(..) {
            let _ = h.join();
        }
        // Job threads end once their commands are dead; one whose command left a process
        // outside its group holding stdout is left to finish on its own.
        let deadline = Instant::now() + Duration::from_secs(2);
        for h in self.threads.drain(..) {
            while !h.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if h.is_finished() {
                let _ = h.join();
            }
        }
    }
}

impl ProcessExecutor for ExecPool {
    fn poll_with_starts(
        &mut self,
        timeout: Duration,
        out: &mut Vec<Outcome>,
        starts: &mut Vec<Started>,
    ) -> Result<(), FatalExecutorError> {
        if let Some(f) = &self.fatal {
            return Err(f.clone());
        }
        let start_len = out.len();
        self.expire();
        while let Ok(done) = self.done_rx.try_recv() {
            self.take(done, out, starts)?;
        }
        if out.len() > start_len {
            return Ok(());
        }
        let deadline = Instant::now() + timeout;
        loop {
            let now = Instant::now();
            let mut left = deadline.saturating_duration_since(now);
            if let Some(limit) = self.shared.cfg.timeout {
                // A command that starts while this call waits runs out of time no sooner
                // than `limit` from now; one already running, at its own expiry.
                left = left.min(limit);
                if let Some(next) = self.expire() {
                    left = left.min(next.saturating_duration_since(now));
                }
            }
            match self.done_rx.recv_timeout(left) {
                Ok(done) => {
                    self.take(done, out, starts)?;
                    while let Ok(done) = self.done_rx.try_recv() {
                        self.take(done, out, starts)?;
                    }
                    if out.len() > start_len {
                        return Ok(());
                    }
                }
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                    if Instant::now() >= deadline {
                        return Ok(());
                    }
                }
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return Ok(()),
            }
        }
    }
}

impl Drop for ExecPool {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(v: WorkOutput) -> Vec<String> {
        v.into_iter()
            .map(|r| String::from_utf8(r).unwrap())
            .collect()
    }

    const IN: &[u8] = br#"{"b":1,"a":"x"}"#;

    #[test]
    fn auto_mode_rules() {
        // Nothing printed: a success with nothing to write (one empty entry), not a filter.
        assert_eq!(
            parse_stdout(b"", ExecOutputMode::Auto, IN),
            vec![Vec::<u8>::new()]
        );
        assert_eq!(
            parse_stdout(b" \n\n", ExecOutputMode::Auto, IN),
            vec![Vec::<u8>::new()]
        );
        assert_eq!(
            texts(parse_stdout(
                b"{\"a\":1}\n\n[2]\n",
                ExecOutputMode::Auto,
                IN
            )),
            vec![r#"{"a":1}"#, "[2]"]
        );
        assert_eq!(
            texts(parse_stdout(
                b"{\n  \"a\": 1\n}\n",
                ExecOutputMode::Auto,
                IN
            )),
            vec![r#"{"a":1}"#]
        );
        assert_eq!(
            texts(parse_stdout(b"hello world\n", ExecOutputMode::Auto, IN)),
            vec![r#"{"stdout":"hello world"}"#]
        );
        assert_eq!(
            texts(parse_stdout(b"1\nnot json\n", ExecOutputMode::Auto, IN)),
            vec![r#"{"stdout":"1\nnot json"}"#]
        );
    }

    #[test]
    fn raw_mode_keeps_stdout_as_one_string() {
        let raw = |s: &str| texts(parse_stdout(s.as_bytes(), ExecOutputMode::Raw, b"{}"));
        assert_eq!(raw("a\n"), vec![r#""a""#]);
        assert_eq!(raw("a\nb\n"), vec![r#""a\nb""#]);
        assert_eq!(raw("{\"x\":1}\n"), vec![r#""{\"x\":1}""#]);
        assert_eq!(
            parse_stdout(b"", ExecOutputMode::Raw, b"{}"),
            vec![Vec::<u8>::new()]
        );
    }

    #[test]
    fn text_mode_always_one_record() {
        assert_eq!(
            texts(parse_stdout(b"", ExecOutputMode::Text, IN)),
            vec![r#"{"stdout":""}"#]
        );
        assert_eq!(
            texts(parse_stdout(b"{\"a\":1}\n", ExecOutputMode::Text, IN)),
            vec![r#"{"stdout":"{\"a\":1}"}"#]
        );
        assert_eq!(
            texts(parse_stdout(b"a\r\n", ExecOutputMode::Text, IN)),
            vec![r#"{"stdout":"a"}"#]
        );
    }

    #[test]
    fn record_mode_keeps_the_input_as_it_came() {
        assert_eq!(
            texts(parse_stdout(b"hi\n", ExecOutputMode::Record, IN)),
            vec![r#"{"input":{"b":1,"a":"x"},"stdout":"hi","exit":0}"#]
        );
        assert_eq!(
            texts(parse_stdout(b"", ExecOutputMode::Record, br#""a line""#)),
            vec![r#"{"input":"a line","stdout":"","exit":0}"#]
        );
        // Not JSON (never from herdsman's sources): kept as a string, so the output is JSON.
        assert_eq!(
            texts(parse_stdout(b"{}", ExecOutputMode::Record, b"raw")),
            vec![r#"{"input":"raw","stdout":"{}","exit":0}"#]
        );
    }
}
