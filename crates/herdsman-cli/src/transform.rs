//! The CLI's executor: the worker pool, per-record commands or `--copy`, plus records that failed to
//! parse, which fail at once without reaching a worker.
//!
//! Routing malformed records through the engine keeps one accounting path: every record,
//! good or bad, comes back as exactly one outcome in input order. This module must never
//! send a malformed record to a worker.

use std::sync::Arc;
use std::time::Duration;

use herdsman::executor::{AttemptId, AttemptOutcome, Executor, FatalExecutorError};
use herdsman_io::RecordError;
use herdsman_workers::{ProcessExecutor, Started, WorkItem, WorkOutput, WorkerFailure};

use crate::chunks::CliItem;
use crate::joblog::{Ending, Finished, Tracker};
use crate::metrics::Metrics;

/// Why one record failed.
#[derive(Debug, Clone)]
pub enum CliFailure {
    /// The record could not be read from the input.
    Input(Arc<RecordError>),
    /// The worker or command failed on it.
    Worker(WorkerFailure),
}

impl CliFailure {
    /// Whether another attempt could succeed.
    pub fn retryable(&self) -> bool {
        match self {
            CliFailure::Input(_) => false,
            CliFailure::Worker(w) => w.retryable,
        }
    }

    /// The kind of this failure, as the dead-letter file names it.
    pub fn kind(&self) -> herdsman_io::DeadLetterKind {
        use herdsman_io::DeadLetterKind as K;
        use herdsman_workers::FailureKind as F;
        match self {
            CliFailure::Input(e) => K::from(e.kind),
            CliFailure::Worker(w) => match w.kind {
                F::WorkerExited => K::WorkerExited,
                F::BadOutput => K::BadOutput,
                F::Reported => K::Reported,
                F::CommandFailed => K::CommandFailed,
                F::BadRecord => K::BadRecord,
                F::Timeout => K::Timeout,
                // A kind added to the worker pool but not yet named in dead-letter files.
                _ => K::Unknown,
            },
        }
    }

    /// The wait the worker asked for before this record is tried again (a framed error
    /// reply's `retry_after`, already capped at an hour), if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            CliFailure::Input(_) => None,
            CliFailure::Worker(w) => w.retry_after.filter(|_| w.retryable),
        }
    }
}

impl std::fmt::Display for CliFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CliFailure::Input(e) => {
                f.write_str(&crate::fault::record_error_message(e.kind, &e.message))
            }
            CliFailure::Worker(w) => write!(
                f,
                "{}: {}",
                w.kind,
                crate::fault::failure_message(w.kind, &w.message)
            ),
        }
    }
}

type Inner = Box<dyn ProcessExecutor>;

/// Wraps the process executor.
pub struct CliExecutor {
    inner: Inner,
    ready: Vec<(AttemptId, AttemptOutcome<WorkOutput, CliFailure>)>,
    scratch: Vec<(AttemptId, AttemptOutcome<WorkOutput, WorkerFailure>)>,
    /// Where and when the attempts in `scratch` started (kept for the job log only).
    starts: Vec<Started>,
    /// Where each attempt's end is noted, for the job log (`--joblog`).
    tracker: Option<Tracker>,
    /// The job log's end of those notes, until the job log takes it.
    finished: Option<Finished>,
    /// Where attempts are told to the run's history.
    probe: Option<crate::history::Probe>,
    /// The live status table (`herdsman status`), when the run keeps one.
    live: Option<&'static crate::live::Live>,
    /// `--metrics-addr`/`--metrics-file`: attempts, retries and what is in flight.
    metrics: Option<Arc<Metrics>>,
}

impl CliExecutor {
    pub fn new(inner: Inner) -> CliExecutor {
        CliExecutor {
            inner,
            ready: Vec::new(),
            scratch: Vec::new(),
            starts: Vec::new(),
            tracker: None,
            finished: None,
            probe: None,
            live: crate::live::current().map(|l| &**l),
            metrics: None,
        }
    }

    /// Tells how every attempt ends to the run's history through `probe`.
    pub fn with_probe(mut self, probe: Option<crate::history::Probe>) -> CliExecutor {
        self.probe = probe;
        self
    }

    /// The run's history's probe, if any.
    pub fn probe(&self) -> Option<crate::history::Probe> {
        self.probe.clone()
    }

    /// Counts attempts, retries and what is in flight in `metrics`.
    pub fn with_metrics(mut self, metrics: Option<Arc<Metrics>>) -> CliExecutor {
        self.metrics = metrics;
        self
    }

    /// The run's metrics, if it has any.
    pub fn metrics(&self) -> Option<Arc<Metrics>> {
        self.metrics.clone()
    }

    /// Notes how every attempt ends with `tracker`, for the job log that reads `finished`.
    pub fn with_attempts(mut self, notes: Option<(Tracker, Finished)>) -> CliExecutor {
        (self.tracker, self.finished) = notes.unzip();
        self
    }

    /// The job log's end of the attempt notes (once).
    pub fn take_finished(&mut self) -> Option<Finished> {
        self.finished.take()
    }
}

/// How an attempt ended, and the kind of its failure, as the job log names them.
#[inline]
fn ending_of(
    o: &AttemptOutcome<WorkOutput, CliFailure>,
) -> (Ending, Option<herdsman_io::DeadLetterKind>) {
    match o {
        AttemptOutcome::Success(v) if v.is_empty() => (Ending::Filtered, None),
        AttemptOutcome::Success(_) => (Ending::Succeeded, None),
        AttemptOutcome::Failure(f) => (Ending::Failed, Some(f.kind())),
        AttemptOutcome::Panicked(_) => (
            Ending::Failed,
            Some(herdsman_io::DeadLetterKind::WorkerCrashed),
        ),
    }
}

/// Notes how each attempt in `done` ended: the first `unstarted` never reached a worker
/// (records that could not be read), the others started as `starts` say, in order.
fn note_finished(
    attempts: &mut Tracker,
    done: &[(AttemptId, AttemptOutcome<WorkOutput, CliFailure>)],
    unstarted: usize,
    starts: &[Started],
) {
    if done.is_empty() {
        return;
    }
    // One clock reading for the batch: they were all reported by this poll.
    let now = std::time::Instant::now();
    let (unread, ran) = done.split_at(unstarted.min(done.len()));
    for (id, o) in unread {
        let (ending, kind) = ending_of(o);
        attempts.finished(*id, now, ending, kind, None);
    }
    for ((id, o), started) in ran.iter().zip(starts) {
        let (ending, kind) = ending_of(o);
        attempts.finished(*id, now, ending, kind, Some(*started));
    }
    attempts.send();
}

/// Tells the live status table which attempts in `done` ended, and which of them cost their
/// worker a restart (it exited, or was killed at the timeout).
fn note_live(
    live: &crate::live::Live,
    done: &[(AttemptId, AttemptOutcome<WorkOutput, CliFailure>)],
) {
    if done.is_empty() {
        return;
    }
    let now = std::time::Instant::now();
    for (id, o) in done {
        let restart = matches!(
            o,
            AttemptOutcome::Failure(CliFailure::Worker(w))
                if matches!(w.kind, herdsman_workers::FailureKind::WorkerExited | herdsman_workers::FailureKind::Timeout)
        );
        live.ended(id.index, now, restart);
    }
}

impl Executor<CliItem> for CliExecutor {
    type Output = WorkOutput;
    type Error = CliFailure;

    fn capacity(&self) -> usize {
        self.inner.capacity()
    }

    fn concurrency(&self) -> usize {
        self.inner.concurrency()
    }

    fn submit(&mut self, id: AttemptId, item: CliItem) -> Result<(), FatalExecutorError> {
        if let Some(live) = self.live {
            live.submitted(id.index, item.seq);
        }
        if let Some(m) = &self.metrics {
            m.submitted(1);
        }
        match item.data {
            Ok(json) => self.inner.submit(
                id,
                WorkItem {
                    seq: item.seq,
                    json,
                },
            ),
            Err(e) => {
                self.ready
                    .push((id, AttemptOutcome::Failure(CliFailure::Input(e))));
                Ok(())
            }
        }
    }

    fn poll(
        &mut self,
        timeout: Duration,
        out: &mut Vec<(AttemptId, AttemptOutcome<WorkOutput, CliFailure>)>,
    ) -> Result<(), FatalExecutorError> {
        let timeout = if self.ready.is_empty() {
            timeout
        } else {
            Duration::ZERO
        };
        let before = out.len();
        let unstarted = self.ready.len();
        out.append(&mut self.ready);
        if self.tracker.is_some() {
            self.starts.clear();
            self.inner
                .poll_with_starts(timeout, &mut self.scratch, &mut self.starts)?;
        } else {
            self.inner.poll(timeout, &mut self.scratch)?;
        }
        out.extend(self.scratch.drain(..).map(|(id, o)| {
            let o = match o {
                AttemptOutcome::Success(v) => AttemptOutcome::Success(v),
                AttemptOutcome::Failure(e) => AttemptOutcome::Failure(CliFailure::Worker(e)),
                AttemptOutcome::Panicked(m) => AttemptOutcome::Panicked(m),
            };
            (id, o)
        }));
        if let Some(t) = &mut self.tracker {
            note_finished(t, &out[before..], unstarted, &self.starts);
        }
        if let Some(p) = &self.probe {
            if out.len() > before {
                p.ended(
                    std::time::Instant::now(),
                    out[before..].iter().map(|(id, o)| match o {
                        AttemptOutcome::Failure(CliFailure::Worker(w)) => (
                            *id,
                            matches!(
                                w.kind,
                                herdsman_workers::FailureKind::WorkerExited
                                    | herdsman_workers::FailureKind::Timeout
                            ),
                            w.retry_after.filter(|_| w.retryable),
                        ),
                        _ => (*id, false, None),
                    }),
                );
            }
        }
        if let Some(live) = self.live {
            note_live(live, &out[before..]);
        }
        if let Some(m) = &self.metrics {
            let ended = &out[before..];
            let retries = ended.iter().filter(|(id, _)| id.attempt > 1).count();
            m.ended(ended.len(), retries);
        }
        Ok(())
    }

    fn abandon(&mut self, id: AttemptId) {
        self.ready.retain(|(r, _)| *r != id);
        self.inner.abandon(id);
        if let Some(live) = self.live {
            live.ended(id.index, std::time::Instant::now(), false);
        }
        if let Some(m) = &self.metrics {
            m.dropped(1);
        }
        if let Some(p) = &self.probe {
            p.abandoned(id);
        }
    }

    fn stop_queued(&mut self, not_started: &mut Vec<AttemptId>) {
        let before = not_started.len();
        self.inner.stop_queued(not_started);
        if let Some(m) = &self.metrics {
            m.dropped(not_started.len() - before);
        }
        if let Some(p) = &self.probe {
            for id in &not_started[before..] {
                p.abandoned(*id);
            }
        }
    }

    fn shutdown(&mut self) {
        self.inner.shutdown();
    }
}

/// `--copy`: no worker; each record's output is the record itself, as it was read. It
/// answers every record at once, on the engine's thread, and never fails one.
pub struct Copier {
    done: Vec<(AttemptId, AttemptOutcome<WorkOutput, WorkerFailure>)>,
}

/// How many records the copier holds between two polls; the engine submits no more.
const COPIER_CAPACITY: usize = 4096;

impl Copier {
    pub fn new() -> Copier {
        Copier {
            done: Vec::with_capacity(COPIER_CAPACITY),
        }
    }
}

impl Executor<WorkItem> for Copier {
    type Output = WorkOutput;
    type Error = WorkerFailure;

    fn capacity(&self) -> usize {
        COPIER_CAPACITY
    }

    fn submit(&mut self, id: AttemptId, item: WorkItem) -> Result<(), FatalExecutorError> {
        self.done
            .push((id, AttemptOutcome::Success(vec![item.json.to_vec()])));
        Ok(())
    }

    fn poll(
        &mut self,
        timeout: Duration,
        out: &mut Vec<(AttemptId, AttemptOutcome<WorkOutput, WorkerFailure>)>,
    ) -> Result<(), FatalExecutorError> {
        if self.done.is_empty() {
            // Nothing can finish before the engine submits more: it is waiting for room in
            // its window or for a retry, so wait as a worker pool with nothing to report
            // would, rather than spin.
            std::thread::sleep(timeout);
        }
        out.append(&mut self.done);
        Ok(())
    }

    fn abandon(&mut self, id: AttemptId) {
        self.done.retain(|(d, _)| *d != id);
    }

    fn shutdown(&mut self) {
        self.done.clear();
    }
}

impl ProcessExecutor for Copier {
    fn poll_with_starts(
        &mut self,
        timeout: Duration,
        out: &mut Vec<(AttemptId, AttemptOutcome<WorkOutput, WorkerFailure>)>,
        starts: &mut Vec<Started>,
    ) -> Result<(), FatalExecutorError> {
        let before = out.len();
        self.poll(timeout, out)?;
        let now = Some(std::time::Instant::now());
        starts.extend((before..out.len()).map(|_| Started { worker: 0, at: now }));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_copier_answers_each_record_with_itself_in_submission_order() {
        let mut c = Copier::new();
        for seq in 0..3u64 {
            let id = AttemptId {
                index: seq,
                attempt: 1,
            };
            c.submit(id, WorkItem::new(seq, format!("{{\"n\":{seq}}}")))
                .unwrap();
        }
        c.abandon(AttemptId {
            index: 1,
            attempt: 1,
        });
        let (mut out, mut starts) = (Vec::new(), Vec::new());
        c.poll_with_starts(Duration::from_secs(5), &mut out, &mut starts)
            .unwrap();
        let got: Vec<(u64, Vec<Vec<u8>>)> = out
            .into_iter()
            .map(|(id, o)| match o {
                AttemptOutcome::Success(v) => (id.index, v),
                _ => panic!("the copier never fails a record"),
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (0, vec![b"{\"n\":0}".to_vec()]),
                (2, vec![b"{\"n\":2}".to_vec()])
            ]
        );
        assert_eq!(starts.len(), 2, "one start per outcome");
        let mut again = Vec::new();
        c.poll(Duration::ZERO, &mut again).unwrap();
        assert!(again.is_empty(), "an outcome is reported once");
    }
}
