//! The per-record timeout of a worker pool: when the oldest record in flight on each worker
//! runs out of time, and what happens then (the record fails as a timeout, the worker's
//! process group is killed, the worker restarted, and the records queued behind are sent
//! again, uncharged).
//!
//! Only the oldest record's clock runs, from when the worker could start on it: this module
//! must never count the time a record waits behind others against its timeout, never charge
//! a timeout to a record whose worker already exited, and never charge more than the record
//! the worker was stuck on.

use std::time::{Duration, Instant};

use crate::duration::{format_duration, DurationStyle};
use crate::{AttemptOutcome, FailureKind, FatalExecutorError};

use super::{Outcome, PoolConfig, Protocol, WorkerPool};

impl WorkerPool {
    /// When the oldest record in flight on the worker of slot `s` runs out of `timeout`.
    ///
    /// Only the oldest record's clock runs, from when the worker could start on it: when the
    /// record before it was answered, or when it was written to an idle worker. A record
    /// queued behind others (in the worker's stdin, or held back by a framed worker that
    /// works on one record at a time) does not use up its time while it waits; a framed
    /// worker that works on several records at once still gets each of them killed once it
    /// is the oldest and runs out of time. The first record of a fresh process also gets a
    /// start-up allowance: the timeout again, at most [`PoolConfig::MAX_STARTUP_ALLOWANCE`].
    pub(super) fn slot_deadline(&self, s: usize, timeout: Duration) -> Option<Instant> {
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
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        let timeout = self.cfg.timeout?;
        (0..self.slots.len())
            .filter_map(|s| self.slot_deadline(s, timeout))
            .min()
    }

    /// Fails every record that ran out of time with [`FailureKind::Timeout`], kills its
    /// worker's process group, restarts the worker and re-sends the other records that were
    /// in flight on it (they are not charged).
    pub(super) fn expire(&mut self, out: &mut Vec<Outcome>) -> Result<(), FatalExecutorError> {
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
                "no answer within {} ({}); worker {s} was killed and restarted",
                format_duration(timeout, DurationStyle::Flag),
                crate::TIMEOUT_WORDS
            );
            let failure = self.failure(s, FailureKind::Timeout, message, true);
            tracing::info!(
                worker = s + 1,
                timeout_ms = timeout.as_millis() as u64,
                "record timed out; killing the worker's process group and restarting it"
            );
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
                self.report(out, s, &inf, AttemptOutcome::Failure(failure.clone()));
            }
            if !answered {
                self.barren_exits += 1;
                if self.barren_exits >= self.cfg.restart_limit {
                    let fatal = FatalExecutorError {
                        kind: self.storm_kind(),
                        setting: Some(crate::Setting::Timeout),
                        message: format!(
                            "worker `{}` was killed {} times in a row for not answering within {} ({words}) without answering any record; raise {words}, or check that the worker flushes its stdout after each answer",
                            self.cfg.command.display(),
                            self.barren_exits,
                            format_duration(timeout, DurationStyle::Flag),
                            words = crate::TIMEOUT_WORDS
                        ),
                    };
                    self.fatal = Some(fatal.clone());
                    return Err(fatal);
                }
            }
        }
        self.dispatch()
    }
}
