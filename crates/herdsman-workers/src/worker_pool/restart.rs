//! The life of a worker process: starting it (lazily, when there is a record for it), noticing
//! that it ended (its stdout closed, or the process exited while a child it left behind holds
//! the pipe), restarting it, giving up after `restart_limit` exits in a row without an answer,
//! retiring it after `max_tasks_per_worker` records, and killing it without blocking the
//! pool.
//!
//! This module must never charge a worker's end to more than the oldest record in flight on
//! it (the others are sent again, uncharged), never count a worker killed from outside with
//! SIGKILL towards the restart limit, never retire a worker that has a record in flight, and
//! never signal a process group after its leader was reaped.

use std::os::unix::process::ExitStatusExt;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::process::{
    check_dir, describe_status, has_exited, reap, signal_group, spawn_piped, terminate_group,
    wait_exited,
};
use crate::tail::StderrReader;
use crate::text::{io_phrase, quote_start};
use crate::{AttemptOutcome, FailureKind, FatalExecutorError, WorkerFailure};

use super::io::{linger_cap, read_loop, StdinPipe, PARTIAL_QUOTE};
use super::{InflightSet, Outcome, PoolConfig, Protocol, Running, WorkerPool, PROTOCOL_ENV};

/// How long to wait for a worker whose stdout closed to actually exit.
const EXIT_WAIT: Duration = Duration::from_millis(500);
/// How often `poll` checks whether a worker process has exited (its stdout may stay open
/// when a child it left behind holds it).
const EXIT_CHECK: Duration = Duration::from_millis(10);
/// How long to wait, after a worker exited and its process group was killed, for the rest
/// of its stdout, before it is handled as ended anyway (something outside its process group
/// still holds the pipe).
const EXIT_DRAIN: Duration = Duration::from_secs(2);
/// How long to wait for the rest of a dead worker's stderr.
const STDERR_WAIT: Duration = Duration::from_millis(200);

impl WorkerPool {
    /// Starts (or restarts) the process of slot `s` with a new generation.
    pub(super) fn launch(&mut self, s: usize) -> Result<(), FatalExecutorError> {
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
                _ => FatalExecutorError::configuration(format!(
                    "cannot start worker `{}`: {}; check the worker command",
                    self.cfg.command.display(),
                    io_phrase(&e)
                ))
                .about(crate::Setting::Command),
            }
        })?;
        let slot = &mut self.slots[s];
        slot.gen += 1;
        let gen = slot.gen;
        if gen > 1 {
            if let Some(told) = &self.cfg.on_restart {
                told(s);
            }
        }
        let stdin = child.stdin.take().expect("stdin is piped");
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        let stdin = StdinPipe::start(stdin, format!("herdsman-stdin-{s}")).map_err(thread_error)?;
        let tx = self.events_tx.clone().expect("pool is running");
        let max_line = self.cfg.max_line_bytes;
        let in_flight = Arc::new(AtomicUsize::new(0));
        let reader_in_flight = Arc::clone(&in_flight);
        let max_linger = linger_cap(self.cfg.timeout);
        std::thread::Builder::new()
            .name(format!("herdsman-stdout-{s}"))
            .spawn(move || read_loop(stdout, s, gen, tx, max_line, reader_in_flight, max_linger))
            .map_err(thread_error)?;
        let stderr = StderrReader::spawn(stderr, s, self.cfg.stderr.clone());
        tracing::info!(
            worker = s + 1,
            pid = child.id(),
            generation = gen,
            "worker started"
        );
        slot.running = Some(Running {
            child,
            stdin,
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

    /// Starts the worker of slot `s` if it has none (first use, or after an exit or an
    /// abandon; whatever the old process had in flight was requeued then).
    pub(super) fn ensure_running(&mut self, s: usize) -> Result<(), FatalExecutorError> {
        if self.slots[s].running.is_some() {
            return Ok(());
        }
        debug_assert_eq!(self.slots[s].inflight.len(), 0);
        self.launch(s)
            .inspect_err(|e| self.fatal = Some(e.clone()))?;
        Ok(())
    }

    /// The worker of slot `s` ended (its stdout closed, or its process exited): collect it,
    /// charge the oldest record in flight, and send the rest again (to any worker, the
    /// replacement starting when there is a record for it). `partial`: the start of an
    /// incomplete last line it wrote, which answers nothing.
    pub(super) fn worker_ended(
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
        let last_stderr = tail.last().map(String::as_str).unwrap_or("");
        tracing::info!(worker = s + 1, pid, status = %how, last_stderr, "worker exited; a new one takes its place");
        // An abandoned record at the head was what the worker was busy with: nobody to charge.
        if let Some(inf) = self.slots[s].inflight.pop_oldest().filter(|i| !i.abandoned) {
            let failure = WorkerFailure {
                kind: FailureKind::WorkerExited,
                message: format!(
                    "worker {s} (`{}`) {how} while processing this record{incomplete}",
                    self.cfg.command.display()
                ),
                retryable: true,
                retry_after: None,
                worker: s,
                stderr_tail: tail.clone(),
            };
            self.report(out, s, &inf, AttemptOutcome::Failure(failure));
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
                    kind: self.storm_kind(),
                    message: format!(
                        "worker `{}` {how} {} times in a row without answering any record{last}; check the worker command",
                        self.cfg.command.display(),
                        self.barren_exits
                    ),
                    setting: Some(crate::Setting::Command),
                };
                self.fatal = Some(fatal.clone());
                return Err(fatal);
            }
        }
        self.dispatch()
    }

    /// Looks for workers whose process exited while their stdout stays open (a child they
    /// left behind holds it), and for records that have had no answer for long.
    pub(super) fn check_workers(
        &mut self,
        out: &mut Vec<Outcome>,
    ) -> Result<(), FatalExecutorError> {
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

    /// Retires the process of slot `s` once it was given `max_tasks_per_worker` records and
    /// has answered them all: its stdin is closed and it is waited for on a thread of its own
    /// (after the kill grace, its process group is stopped as usual); the slot takes no
    /// record until then, and then starts a new process when it gets one.
    pub(super) fn retire_spent(&mut self, s: usize) {
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
            stdin,
            stderr,
            ..
        } = running;
        tracing::info!(
            worker = s + 1,
            pid = child.id(),
            tasks = max,
            "worker retired after its limit of records per worker"
        );
        let spawned = std::thread::Builder::new()
            .name(format!("herdsman-retire-{s}"))
            .spawn(move || {
                // Closing stdin asks the worker to exit; wait for it like at the end of a run.
                drop(stdin);
                wait_exited(child.id(), grace);
                terminate_group(&mut child, grace);
                drop(stderr);
            });
        // Without a thread to wait on, the worker still reads end of file and exits; it is
        // then killed with the others when the pool shuts down.
        slot.retiring = spawned.ok();
    }

    /// Frees the slots whose retired process is gone, and gives them records.
    pub(super) fn finish_retirements(&mut self) -> Result<(), FatalExecutorError> {
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

    /// While stopping: kills the workers that have nothing left to answer but placeholders,
    /// instead of letting them work through records nobody waits for.
    pub(super) fn retire_idle(&mut self) {
        for s in 0..self.slots.len() {
            let slot = &mut self.slots[s];
            if slot.running.is_none() {
                continue;
            }
            let idle = match &slot.inflight {
                InflightSet::Lines(q) => q.iter().all(|i| i.abandoned),
                InflightSet::Framed(q) => q.is_empty(),
            };
            if idle && slot.inflight.len() > 0 {
                if let Some(running) = slot.running.take() {
                    self.kill_async(running);
                }
                self.requeue(s);
            }
        }
    }

    /// Kills a worker's process group without blocking the caller: the kill-after-grace
    /// routine (SIGTERM, SIGKILL after the grace period) on a reaper thread, which then reaps
    /// the worker.
    pub(super) fn kill_async(&mut self, running: Running) {
        let grace = self.cfg.kill_grace;
        let Running {
            mut child, stdin, ..
        } = running;
        drop(stdin);
        let pid = child.id();
        tracing::debug!(
            pid,
            "killing a worker's process group (SIGTERM, then SIGKILL after the grace period)"
        );
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

pub(super) fn cwd_fatal(cfg: &PoolConfig, e: &std::io::Error) -> FatalExecutorError {
    FatalExecutorError {
        kind: herdsman::FatalKind::Configuration,
        setting: Some(crate::Setting::WorkingDirectory),
        message: format!(
            "cannot start worker `{}` in directory `{}`: {}; check the working directory",
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
        kind: herdsman::FatalKind::Runtime,
        setting: Some(crate::Setting::Concurrency),
        message: format!(
            "cannot start a thread for a worker: {}; lower the number of workers or raise the thread limit",
            io_phrase(&e)
        ),
    }
}
