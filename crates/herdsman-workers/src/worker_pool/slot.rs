//! What the pool knows about each worker slot: the process running in it, the attempts in
//! flight on it (in send order), and the clocks that the timeout, the stall check and the
//! notices read.
//!
//! These are plain data with small, local operations; this module must never start, signal
//! or reap a process, and never report an attempt (that is the pool's job).

use std::collections::VecDeque;
use std::process::Child;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::tail::StderrReader;
use crate::{AttemptId, WorkItem, WorkOutput};

use super::io::StdinPipe;

pub(super) struct Inflight {
    pub(super) id: AttemptId,
    pub(super) item: WorkItem,
    pub(super) wire: u64,
    pub(super) outputs: WorkOutput,
    /// When it was written to this worker's outbox (reported with its outcome).
    pub(super) started: Instant,
    /// Abandoned while queued behind other records on a `lines` worker: its answer will
    /// still come (and is dropped), but the attempt is never reported.
    pub(super) abandoned: bool,
}

/// Attempts sent to one worker and not answered yet.
pub(super) enum InflightSet {
    /// Answered strictly in order.
    Lines(VecDeque<Inflight>),
    /// Answered by id, in any order; in send order, so sorted by wire id (which grows with
    /// send order) and searched by it. A queue, not a map: replies nearly always come in
    /// order, so the usual answer takes the front, without a map's per-record node upkeep.
    Framed(VecDeque<Inflight>),
}

impl InflightSet {
    pub(super) fn len(&self) -> usize {
        match self {
            InflightSet::Lines(q) | InflightSet::Framed(q) => q.len(),
        }
    }

    pub(super) fn push(&mut self, inf: Inflight) {
        match self {
            InflightSet::Lines(q) => q.push_back(inf),
            InflightSet::Framed(q) => {
                debug_assert!(q.back().is_none_or(|last| last.wire < inf.wire));
                q.push_back(inf);
            }
        }
    }

    /// The wire id of the oldest record in flight.
    pub(super) fn oldest_wire(&self) -> Option<u64> {
        match self {
            InflightSet::Lines(q) | InflightSet::Framed(q) => q.front().map(|i| i.wire),
        }
    }

    pub(super) fn pop_oldest(&mut self) -> Option<Inflight> {
        match self {
            InflightSet::Lines(q) | InflightSet::Framed(q) => q.pop_front(),
        }
    }

    /// Forgets an abandoned attempt. Returns `None` if it is not here, else whether the
    /// worker may be busy with it right now (then it must be killed): the oldest record in
    /// flight is; a `lines` record queued behind others is not yet, so it only becomes a
    /// placeholder whose answer will be dropped.
    pub(super) fn abandon(&mut self, id: AttemptId) -> Option<bool> {
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
            InflightSet::Framed(q) => {
                let pos = q.iter().position(|i| i.id == id)?;
                q.remove(pos);
                Some(pos == 0)
            }
        }
    }
}

/// Where the record with wire id `wire` is in a framed worker's queue (sorted by wire id).
/// The usual reply is for the oldest record, which is checked first.
pub(super) fn framed_position(q: &VecDeque<Inflight>, wire: u64) -> Option<usize> {
    match q.front() {
        Some(first) if first.wire == wire => Some(0),
        _ => q.binary_search_by_key(&wire, |i| i.wire).ok(),
    }
}

/// A live worker process and its threads.
pub(super) struct Running {
    pub(super) child: Child,
    pub(super) stdin: StdinPipe,
    pub(super) stderr: StderrReader,
    /// The records in flight on this process, as last seen by the engine's thread: its
    /// stdout reader waits for more answers only when more are on their way.
    pub(super) in_flight: Arc<AtomicUsize>,
}

pub(super) struct Slot {
    pub(super) gen: u64,
    pub(super) running: Option<Running>,
    pub(super) inflight: InflightSet,
    pub(super) outbox: Vec<u8>,
    /// Whether the current process has answered anything.
    pub(super) answered: bool,
    /// Since when the worker has had work without answering (for the service-time estimate).
    pub(super) busy_since: Option<Instant>,
    /// The worker has been stuck on one record for a while; its queue was moved elsewhere
    /// and it gets no new records until it answers.
    pub(super) stalled: bool,
    /// When the worker process was seen to have exited while its stdout was still open.
    pub(super) exited_at: Option<Instant>,
    /// The record the next no-answer notice is about, and after how long it is due.
    pub(super) notice: Option<(AttemptId, Duration)>,
    /// The oldest record in flight (its wire id) and since when the worker could start on
    /// it: when it was written to an idle worker, or when the record before it was
    /// answered. Its per-record timeout counts from there.
    pub(super) head: Option<(u64, Instant)>,
    /// Records given to the current process (for `max_tasks_per_worker`).
    pub(super) tasks: usize,
    /// A retired process being waited for; the slot starts no new one until it is gone.
    pub(super) retiring: Option<JoinHandle<()>>,
}

impl Slot {
    /// Starts the clock of a new oldest record: called after every change of what is in
    /// flight, so `now` is when the record before it was answered (or it was written).
    pub(super) fn sync_head(&mut self, now: Instant) {
        match self.inflight.oldest_wire() {
            None => self.head = None,
            Some(w) if self.head.map(|(h, _)| h) != Some(w) => self.head = Some((w, now)),
            Some(_) => {}
        }
    }
}
