//! Workers that stop answering: a `lines` worker stuck on one record has the records queued
//! behind it moved to other workers, and a record without an answer for long is reported as
//! a notice (again at doubling intervals).
//!
//! This module only moves records that a worker has not started and only reports; it must
//! never kill a worker, never charge a record, and never report an attempt twice (a moved
//! record leaves a placeholder whose late answer is dropped).

use std::time::{Duration, Instant};

use crate::duration::{format_duration, DurationStyle};
use crate::{AttemptId, FatalExecutorError, WorkItem};

use super::{InflightSet, Protocol, WorkerPool};

/// The shortest time a `lines` worker may be stuck on one record before the records queued
/// behind it move to other workers.
const STALL_MIN: Duration = Duration::from_millis(100);

impl WorkerPool {
    /// How long a `lines` worker may go without answering, with records queued behind the
    /// one it is busy with, before those records are moved to other workers.
    pub(super) fn stall_limit(&self) -> Duration {
        let by_service = Duration::from_nanos(self.service_ns.map_or(0.0, |ns| ns * 20.0) as u64);
        STALL_MIN.max(by_service)
    }

    /// Moves the records queued behind a stuck record to other workers (`lines` only).
    ///
    /// The stuck worker keeps placeholders for them (their answers, if they ever come, are
    /// dropped), so each attempt is still reported once. Only a worker that has answered
    /// before is judged, so a slow start-up does not shuffle records around.
    pub(super) fn unstick(&mut self) -> Result<(), FatalExecutorError> {
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

    /// Reports each record that has had no answer for [`PoolConfig::no_answer_notice`],
    /// again at doubling intervals while it stays unanswered.
    pub(super) fn notify_overdue(&mut self, now: Instant) {
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
                InflightSet::Framed(q) => q.front(),
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
                format!("still waiting up to {}", crate::TIMEOUT_WORDS)
            } else {
                format!(
                    "still waiting; set {} to give up on records that hang",
                    crate::TIMEOUT_WORDS
                )
            };
            tracing::info!(
                worker = s + 1,
                record = seq + 1,
                waited_ms = waited.as_millis() as u64,
                "no answer yet"
            );
            sink(&format!(
                "record {} on worker {s}: no answer for {}; {hint}",
                seq + 1,
                format_duration(waited, DurationStyle::Wait)
            ));
        }
    }
}
