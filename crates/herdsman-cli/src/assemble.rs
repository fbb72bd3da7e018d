//! Collects per-record outcomes into chunks, writes finished chunks to the output and
//! dead-letter files, and commits them to the ledger.
//!
//! With a checkpoint, a chunk's lines are written contiguously only once every record of it
//! has resolved, so the files always hold whole chunks; they are fsynced before the ledger
//! commit that records their lengths. Without one (stdout, a device, --no-checkpoint) each
//! record is written, and a streamed output flushed, as soon as it and every record before
//! it have resolved, so results appear as they complete, in input order. This module must
//! never write part of a chunk of a checkpointed run, and never commit a chunk before its
//! bytes are durable.

use std::collections::BTreeMap;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use herdsman::reorder::Reorder;
use herdsman_io::{DeadLetter, DeadLetterError, DeadLetterKind, DeadLetterSource};
use herdsman_io::{Position, SinkError};
use herdsman_ledger::{ChunkCommit, Ledger};

use crate::chunks::{ChunkInfo, Payload};
use crate::summary::Counts;
use crate::transform::CliFailure;

/// The final state of one record.
#[derive(Debug)]
pub enum Resolved {
    /// Zero (filtered), one or many output records.
    Outputs(Vec<Vec<u8>>),
    Failed(FailureNote),
    /// Admitted but never run because the run stopped.
    NotRun,
}

/// Why a record failed, for its dead-letter entry.
///
/// Everything in it must depend only on the record and the transform, never on how the run
/// went (which worker or job slot ran the record, process ids), so that the dead-letter file
/// of a job is the same bytes every time it runs.
#[derive(Debug)]
pub struct FailureNote {
    pub kind: DeadLetterKind,
    pub message: String,
    pub stderr_tail: Vec<String>,
}

impl FailureNote {
    pub fn from_failure(f: &CliFailure) -> FailureNote {
        match f {
            CliFailure::Input(e) => FailureNote {
                kind: f.kind(),
                message: crate::fault::record_error_message(e.kind, &e.message),
                stderr_tail: Vec::new(),
            },
            CliFailure::Worker(w) => FailureNote {
                kind: f.kind(),
                message: crate::fault::failure_message(
                    w.kind,
                    &without_worker_number(&w.message, w.worker),
                ),
                stderr_tail: w.stderr_tail.clone(),
            },
        }
    }
}

/// `message` with its first mention of `worker <n>` (the worker that ran the attempt) said
/// as `the worker`: which worker runs a record depends on timing, and a dead-letter entry
/// must not. Only a whole `worker <n>` counts (not `worker 12` for worker 1, nor
/// `myworker 1`); text the worker itself wrote comes after herdsman's words, so the first
/// mention is herdsman's.
fn without_worker_number(message: &str, worker: usize) -> String {
    let needle = format!("worker {worker}");
    let mut from = 0;
    while let Some(pos) = message[from..].find(&needle).map(|p| p + from) {
        let end = pos + needle.len();
        let starts_word = message[..pos]
            .chars()
            .next_back()
            .is_none_or(|c| !c.is_alphanumeric() && c != '_');
        let ends_word = message[end..]
            .chars()
            .next()
            .is_none_or(|c| !c.is_ascii_digit());
        if starts_word && ends_word {
            return format!("{}the worker{}", &message[..pos], &message[end..]);
        }
        from = end;
    }
    message.to_string()
}

/// A chunk whose records are not all written yet.
struct Pending {
    info: ChunkInfo,
    /// The chunk's resolved records (final state and attempts) by engine index, handed out
    /// in input order: the records before `order.next_index()` are written.
    order: Reorder<(Resolved, u32)>,
    resolved: usize,
    /// Whether a record of it was not run because the run stopped.
    cut_short: bool,
    /// Counts of the records written so far.
    counts: Counts,
}

impl Pending {
    fn new(info: ChunkInfo) -> Pending {
        let len = info.records.len();
        Pending {
            order: Reorder::starting_at(info.first_index),
            resolved: 0,
            cut_short: false,
            counts: Counts::of_records(len as u64),
            info,
        }
    }

    /// How many records the chunk has.
    fn len(&self) -> usize {
        self.info.records.len()
    }

    /// The engine index after the chunk's last record.
    fn end(&self) -> u64 {
        self.info.first_index + self.len() as u64
    }

    /// Whether every record of the chunk is written.
    fn all_written(&self) -> bool {
        self.order.next_index() == self.end()
    }
}

/// The source position and payload of the record of `chunk` at engine index `index`.
fn record_at(chunk: &ChunkInfo, index: u64) -> &(Position, Payload) {
    &chunk.records[(index - chunk.first_index) as usize]
}

/// Output and dead-letter files of a run.
pub trait Sinks {
    /// Whether the output would accept all of `outputs`, in order, writing nothing.
    fn check_outputs(&self, _outputs: &[Vec<u8>]) -> Result<(), SinkError> {
        Ok(())
    }
    fn write_output(&mut self, json: &[u8]) -> Result<(), SinkError>;
    fn write_failure(&mut self, json: &[u8]) -> Result<(), SinkError>;
    /// Starts writing chunk `chunk`, whose records follow (checkpointed runs only: a chunk
    /// is then written whole, after its records all resolved); nothing for most sinks.
    fn begin_chunk(&mut self, _chunk: u64) -> Result<(), SinkError> {
        Ok(())
    }
    /// Completes the output records of the chunk just written (a Parquet row group) before
    /// its offsets are taken; nothing for most formats.
    fn end_chunk(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
    /// Byte lengths of (output, failures) after everything written so far (for a database
    /// output: the job's rows, and the dead-letter file's length).
    fn offsets(&self) -> (u64, u64);
    /// Called once a chunk is wholly written, with what the ledger will commit for it: a
    /// database output commits the chunk's rows and its marker here; nothing for files.
    fn chunk_written(&mut self, _commit: &ChunkCommit) -> Result<()> {
        Ok(())
    }
    /// Flush and fsync both files.
    fn sync(&mut self) -> Result<()>;
    /// Hand the output written so far to its reader when it is streamed (stdout, a device, a
    /// FIFO); a regular file is left to its buffer.
    fn flush_stream(&mut self) -> Result<()>;
    /// Writes the job-log lines of the `attempts` attempts of the record at engine index
    /// `index`, read from input `file` at `pos` (`--joblog`); nothing without a job log.
    fn log_attempts(
        &mut self,
        _index: u64,
        _attempts: u32,
        _file: &str,
        _pos: &Position,
    ) -> Result<()> {
        Ok(())
    }
}

/// Everything the assembler needs besides the outcomes.
pub struct Assembler<'a, S: Sinks> {
    chunks: Receiver<ChunkInfo>,
    pending: BTreeMap<u64, Pending>,
    sinks: S,
    ledger: Option<&'a mut dyn Ledger>,
    uncommitted: Vec<ChunkCommit>,
    last_checkpoint: Instant,
    checkpoint_every: Duration,
    file_names: Vec<String>,
    /// Counts of records in chunks written by this run.
    pub written: Counts,
    /// Dead-letter entries written by this run, by kind.
    failure_kinds: FailureKinds,
}

/// Failed records by the name of their kind, shared with whoever reads them after the run.
pub type FailureKinds = std::rc::Rc<std::cell::RefCell<BTreeMap<String, u64>>>;

impl<'a, S: Sinks> Assembler<'a, S> {
    pub fn new(
        chunks: Receiver<ChunkInfo>,
        sinks: S,
        ledger: Option<&'a mut dyn Ledger>,
        file_names: Vec<String>,
    ) -> Self {
        Assembler {
            chunks,
            pending: BTreeMap::new(),
            sinks,
            ledger,
            uncommitted: Vec::new(),
            last_checkpoint: Instant::now(),
            checkpoint_every: Duration::from_secs(1),
            file_names,
            written: Counts::default(),
            failure_kinds: FailureKinds::default(),
        }
    }

    /// Commits written chunks at most this often (default 1 s; zero commits every chunk as
    /// soon as it is written).
    pub fn checkpoint_every(mut self, every: Duration) -> Self {
        self.checkpoint_every = every;
        self
    }

    /// The kinds of the dead-letter entries this assembler writes, counted as it writes them
    /// (read it after [`Assembler::finish`]).
    pub fn failure_kinds(&self) -> FailureKinds {
        self.failure_kinds.clone()
    }

    /// Takes the announced chunks up to the one holding engine index `index`.
    fn receive_through(&mut self, index: u64) -> Result<()> {
        // A chunk is announced before any of its items reaches the engine, so it is here.
        while self
            .pending
            .range(..=index)
            .next_back()
            .is_none_or(|(_, p)| index >= p.end())
        {
            let info = self
                .chunks
                .recv()
                .context("internal error: an outcome arrived for a record of no chunk")?;
            self.pending.insert(info.first_index, Pending::new(info));
        }
        Ok(())
    }

    /// The input file name and position of the not yet resolved record at engine index
    /// `index` (for the run's history of slowest records).
    pub fn locate(&mut self, index: u64) -> Result<Option<(String, Position)>> {
        self.receive_through(index)?;
        Ok(self
            .pending
            .range(..=index)
            .next_back()
            .filter(|(_, p)| index < p.end())
            .map(|(_, p)| {
                let (pos, _) = record_at(&p.info, index);
                let file = self
                    .file_names
                    .get(pos.file_index as usize)
                    .cloned()
                    .unwrap_or_default();
                (file, *pos)
            }))
    }

    /// The ledger commits go to, for the run's history (written from this same thread,
    /// between commits, so a sample never waits for a commit nor a commit for a sample).
    pub fn ledger_mut(&mut self) -> Option<&mut dyn Ledger> {
        match &mut self.ledger {
            Some(l) => Some(&mut **l),
            None => None,
        }
    }

    /// Records the final state of the record at engine index `index`.
    pub fn resolve(&mut self, index: u64, state: Resolved, attempts: u32) -> Result<()> {
        self.receive_through(index)?;
        let (&first, p) = self
            .pending
            .range_mut(..=index)
            .next_back()
            .expect("chunk found above");
        let again = p.order.holds(index);
        debug_assert!(!again, "record {index} resolved twice");
        if again {
            return Ok(());
        }
        p.resolved += 1;
        p.cut_short |= matches!(state, Resolved::NotRun);
        p.order.push(index, 1, (state, attempts));
        if self.ledger.is_some() {
            // A chunk cut short by a stop (a record not run) stays pending, never written:
            // see `keep_failures_of_cut_short_chunks` and `finish`.
            if p.resolved == p.len() && !p.cut_short {
                let p = self.pending.remove(&first).expect("present");
                self.finish_chunk(p)?;
            }
            return Ok(());
        }
        // No checkpoint: write every record whose predecessors have all resolved, from the
        // earliest unfinished chunk on (earlier chunks are all written).
        let mut wrote = false;
        while let Some((first, mut p)) = self.pending.pop_first() {
            wrote |= self.emit_ready(&mut p)?;
            if !p.all_written() {
                self.pending.insert(first, p);
                break;
            }
            self.finish_chunk(p)?;
        }
        if wrote {
            self.sinks
                .flush_stream()
                .context("cannot write the output")?;
        }
        Ok(())
    }

    /// Writes the resolved records of `p` that follow the ones already written, up to the
    /// first unresolved one; says whether it wrote any.
    fn emit_ready(&mut self, p: &mut Pending) -> Result<bool> {
        let mut wrote = false;
        while let Some((index, resolved)) = p.order.pop() {
            let (pos, payload) = record_at(&p.info, index);
            self.emit(index, pos, payload, resolved, &mut p.counts)?;
            wrote = true;
        }
        Ok(wrote)
    }

    /// Writes the rest of a chunk (a record that never resolved counts as not run) and queues
    /// its commit.
    fn finish_chunk(&mut self, mut p: Pending) -> Result<()> {
        if self.ledger.is_some() && p.cut_short {
            // A chunk cut short by a stop is not written; a resumed run redoes it whole.
            // (Without a ledger nothing is redone: its finished records are written.)
            let c = Counts::none_run(p.len() as u64);
            self.written.add(&c);
            return Ok(());
        }
        if self.ledger.is_some() {
            self.sinks
                .begin_chunk(p.info.id)
                .context("cannot write the output")?;
        }
        while !p.all_written() {
            let (index, resolved) = p.order.pop_or_else(|| (Resolved::NotRun, 0));
            let (pos, payload) = record_at(&p.info, index);
            self.emit(index, pos, payload, resolved, &mut p.counts)?;
        }
        let c = p.counts;
        self.sinks.end_chunk().context("cannot write the output")?;
        let (output_end, failures_end) = self.sinks.offsets();
        tracing::debug!(
            chunk = p.info.id,
            records = p.info.records.len(),
            "chunk written"
        );
        let commit = ChunkCommit {
            chunk: p.info.id,
            start: to_ledger(p.info.start),
            end: to_ledger(p.info.end),
            counts: c.counts,
            output_end,
            failures_end,
        };
        self.sinks.chunk_written(&commit)?;
        self.uncommitted.push(commit);
        self.written.add(&c);
        if self.last_checkpoint.elapsed() >= self.checkpoint_every {
            self.checkpoint()?;
        }
        Ok(())
    }

    /// Writes one resolved record (its outputs, or its dead-letter entry) and counts it.
    fn emit(
        &mut self,
        index: u64,
        pos: &Position,
        payload: &Payload,
        (state, attempts): (Resolved, u32),
        c: &mut Counts,
    ) -> Result<()> {
        let file = self
            .file_names
            .get(pos.file_index as usize)
            .map_or("", String::as_str);
        self.sinks.log_attempts(index, attempts, file, pos)?;
        c.retries += u64::from(attempts.saturating_sub(1));
        match state {
            Resolved::Outputs(outs) if outs.is_empty() => c.filtered += 1,
            Resolved::Outputs(outs) => {
                let mut written = 0u64;
                // An empty entry is a success with nothing to write (an --exec command
                // that printed nothing).
                let outs: Vec<Vec<u8>> = outs.into_iter().filter(|o| !o.is_empty()).collect();
                // A record's outputs are written all or none: check them first.
                let mut refused = match self.sinks.check_outputs(&outs) {
                    Ok(()) => None,
                    Err(SinkError::Record { message, .. }) => Some(message),
                    Err(e) => return Err(e).context("cannot write the output"),
                };
                if refused.is_none() {
                    for o in &outs {
                        match self.sinks.write_output(o) {
                            Ok(()) => written += 1,
                            Err(SinkError::Record { message, .. }) => {
                                refused = Some(message);
                                break;
                            }
                            Err(e) => return Err(e).context("cannot write the output"),
                        }
                    }
                }
                match refused {
                    // Found by the check above, before anything of the record was
                    // written (a CSV output refusing a record that is not an object,
                    // or whose keys do not fit the header).
                    Some(message) if written == 0 => {
                        c.failed += 1;
                        let note = FailureNote {
                            kind: DeadLetterKind::OutputRejected,
                            message: crate::fault::output_refusal_message(&message),
                            stderr_tail: Vec::new(),
                        };
                        self.write_dead_letter(pos, payload, &note, attempts)?;
                    }
                    _ => {
                        c.ok += 1;
                        c.outputs += written;
                    }
                }
            }
            Resolved::Failed(note) => {
                c.failed += 1;
                self.write_dead_letter(pos, payload, &note, attempts)?;
            }
            Resolved::NotRun => c.not_run += 1,
        }
        Ok(())
    }

    fn write_dead_letter(
        &mut self,
        pos: &Position,
        payload: &Payload,
        note: &FailureNote,
        attempts: u32,
    ) -> Result<()> {
        let file = self
            .file_names
            .get(pos.file_index as usize)
            .cloned()
            .unwrap_or_default();
        *self
            .failure_kinds
            .borrow_mut()
            .entry(note.kind.name().to_string())
            .or_default() += 1;
        let entry = dead_letter(file, pos, payload, note, attempts);
        let line = entry.to_line();
        self.sinks
            .write_failure(&line)
            .context("cannot write the dead-letter file")
    }

    /// Commits the chunks written so far when the last checkpoint is at least
    /// `checkpoint_every` old, also while no record resolves (every record in flight is
    /// slow), so finished chunks never wait for the next outcome to become durable.
    pub fn checkpoint_if_due(&mut self) -> Result<()> {
        if !self.uncommitted.is_empty() && self.last_checkpoint.elapsed() >= self.checkpoint_every {
            self.checkpoint()?;
        }
        Ok(())
    }

    /// Makes every written chunk durable and commits it.
    pub fn checkpoint(&mut self) -> Result<()> {
        self.last_checkpoint = Instant::now();
        let Some(ledger) = self.ledger.as_deref_mut() else {
            self.uncommitted.clear();
            return Ok(());
        };
        if self.uncommitted.is_empty() {
            return Ok(());
        }
        self.sinks.sync()?;
        crate::fault::fault("after-sync");
        ledger
            .commit_chunks(&self.uncommitted)
            .context("cannot commit the checkpoint")?;
        tracing::info!(
            chunks = self.uncommitted.len(),
            last_chunk = self.uncommitted.last().map(|c| c.chunk),
            output_end = self.uncommitted.last().map(|c| c.output_end),
            "checkpoint committed"
        );
        crate::fault::fault("after-commit");
        self.uncommitted.clear();
        Ok(())
    }

    /// After a stop by `--max-errors` of a checkpointed run: writes the dead-letter entries of
    /// the records that failed in chunks the stop cut short, so that the failures that stopped
    /// the run can be read and are counted as failed, not as not run. They go after everything
    /// committed and are never committed themselves: a resumed run truncates them away with the
    /// rest of the uncommitted bytes and redoes those chunks whole, so crash equivalence holds.
    /// (Without a ledger, [`Assembler::finish`] decides what a cut-short chunk keeps.)
    pub fn keep_failures_of_cut_short_chunks(&mut self) -> Result<()> {
        if self.ledger.is_none() {
            return Ok(());
        }
        for mut p in std::mem::take(&mut self.pending).into_values() {
            let mut c = Counts::none_run(p.len() as u64);
            while !p.all_written() {
                let (index, resolved) = p.order.pop_or_else(|| (Resolved::NotRun, 0));
                if let (Resolved::Failed(note), attempts) = resolved {
                    let (pos, payload) = record_at(&p.info, index);
                    let file = self
                        .file_names
                        .get(pos.file_index as usize)
                        .map_or("", String::as_str);
                    self.sinks.log_attempts(index, attempts, file, pos)?;
                    self.write_dead_letter(pos, payload, &note, attempts)?;
                    c.failed += 1;
                    c.not_run -= 1;
                    c.retries += u64::from(attempts.saturating_sub(1));
                }
            }
            self.written.add(&c);
        }
        Ok(())
    }

    /// Ends the run: drops chunks that never completed (counting their records as not run),
    /// commits the rest, and hands back the sinks.
    pub fn finish(mut self) -> Result<(S, Counts)> {
        // Chunks announced but never fully resolved (the run stopped, or the engine never
        // pulled them): their records are not run.
        while let Ok(info) = self.chunks.try_recv() {
            self.written.records += info.records.len() as u64;
            self.written.not_run += info.records.len() as u64;
        }
        for p in std::mem::take(&mut self.pending).into_values() {
            if self.ledger.is_some() {
                self.written.records += p.len() as u64;
                self.written.not_run += p.len() as u64;
            } else {
                // Nothing will resume this run: keep the records it finished, in order (the
                // ones that never resolved count as not run).
                self.finish_chunk(p)?;
            }
        }
        self.checkpoint()?;
        Ok((self.sinks, self.written))
    }
}

/// The dead-letter entry of the record at `pos`, read from input `file`.
pub fn dead_letter(
    file: String,
    pos: &Position,
    payload: &Payload,
    note: &FailureNote,
    attempts: u32,
) -> DeadLetter {
    let (record, raw) = match payload {
        Ok(json) => (Some(DeadLetter::record_of(json)), None),
        Err(e) => (None, Some(e.raw.clone())),
    };
    DeadLetter {
        record,
        raw,
        source: DeadLetterSource {
            file,
            line: pos.line,
            record: pos.seq + 1,
        },
        error: DeadLetterError {
            kind: note.kind,
            message: note.message.clone(),
        },
        attempts,
        stderr_tail: note.stderr_tail.clone(),
    }
}

pub(crate) fn to_ledger(p: Position) -> herdsman_ledger::Position {
    herdsman_ledger::Position {
        file_index: p.file_index,
        seq: p.seq,
        // A format's token is at most 21 bytes, well within a ledger token.
        token: herdsman_ledger::Token::new(&p.token()).expect("a position token fits"),
    }
}

/// Converts a ledger position back to a source position; says what is wrong with a token
/// the input formats cannot read.
pub fn from_ledger(p: herdsman_ledger::Position) -> Result<Position, herdsman_io::TokenError> {
    Position::from_token(p.file_index, p.seq, p.token.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::without_worker_number;
    use super::*;
    use herdsman_io::{RecordError, RecordErrorKind};
    use herdsman_ledger::{JobIdentity, LedgerError, LedgerStatus, Opened};
    use std::sync::mpsc;
    use std::sync::{Arc, Mutex};

    /// What the fake sinks and the fake ledger saw, in order.
    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Event {
        Output(String),
        Failure(String),
        Sync,
        Flush,
        /// Chunks committed in one transaction, with the offsets they committed.
        Commit(Vec<(u64, u64, u64)>),
    }

    type Events = Arc<Mutex<Vec<Event>>>;

    struct FakeSinks {
        events: Events,
        output: u64,
        failures: u64,
        /// Refuse outputs that are not objects, as a CSV output does.
        objects_only: bool,
    }

    impl Sinks for FakeSinks {
        fn check_outputs(&self, outputs: &[Vec<u8>]) -> Result<(), SinkError> {
            match outputs
                .iter()
                .find(|o| self.objects_only && !o.starts_with(b"{"))
            {
                Some(_) => Err(SinkError::Record {
                    path: "out.csv".into(),
                    message: "not an object".into(),
                }),
                None => Ok(()),
            }
        }
        fn write_output(&mut self, json: &[u8]) -> Result<(), SinkError> {
            self.output += json.len() as u64 + 1;
            let line = String::from_utf8(json.to_vec()).unwrap();
            self.events.lock().unwrap().push(Event::Output(line));
            Ok(())
        }
        fn write_failure(&mut self, json: &[u8]) -> Result<(), SinkError> {
            self.failures += json.len() as u64 + 1;
            let line = String::from_utf8(json.to_vec()).unwrap();
            self.events.lock().unwrap().push(Event::Failure(line));
            Ok(())
        }
        fn offsets(&self) -> (u64, u64) {
            (self.output, self.failures)
        }
        fn sync(&mut self) -> Result<()> {
            self.events.lock().unwrap().push(Event::Sync);
            Ok(())
        }
        fn flush_stream(&mut self) -> Result<()> {
            self.events.lock().unwrap().push(Event::Flush);
            Ok(())
        }
    }

    struct FakeLedger {
        events: Events,
        commits: Vec<ChunkCommit>,
        /// Refuse every commit, as a full disk would.
        refuse: bool,
    }

    impl Ledger for FakeLedger {
        fn open_job(&mut self, _: &JobIdentity) -> Result<Opened, LedgerError> {
            Ok(Opened::Fresh)
        }
        fn reset(&mut self) -> Result<(), LedgerError> {
            self.commits.clear();
            Ok(())
        }
        fn commit_chunk(&mut self, c: &ChunkCommit) -> Result<(), LedgerError> {
            self.commit_chunks(std::slice::from_ref(c))
        }
        fn commit_chunks(&mut self, commits: &[ChunkCommit]) -> Result<(), LedgerError> {
            if self.refuse {
                return Err(LedgerError::NoJob);
            }
            self.commits.extend_from_slice(commits);
            let seen = commits
                .iter()
                .map(|c| (c.chunk, c.output_end, c.failures_end))
                .collect();
            self.events.lock().unwrap().push(Event::Commit(seen));
            Ok(())
        }
        fn mark_finished(&mut self, _: &str) -> Result<(), LedgerError> {
            Ok(())
        }
        // The assembler holds the job alone and commits directly: claims never reach it.
        fn plan_chunks(&mut self, _: &[herdsman_ledger::ChunkPlan]) -> Result<(), LedgerError> {
            unreachable!("the assembler does not plan chunks")
        }
        fn claim(
            &mut self,
            _: &str,
            _: std::time::Duration,
        ) -> Result<Option<herdsman_ledger::Claim>, LedgerError> {
            unreachable!("the assembler does not claim chunks")
        }
        fn heartbeat(
            &mut self,
            _: &herdsman_ledger::Claim,
            _: std::time::Duration,
        ) -> Result<std::time::SystemTime, LedgerError> {
            unreachable!("the assembler does not claim chunks")
        }
        fn release(&mut self, _: &herdsman_ledger::Claim) -> Result<(), LedgerError> {
            unreachable!("the assembler does not claim chunks")
        }
        fn commit(
            &mut self,
            _: &herdsman_ledger::Claim,
            _: &ChunkCommit,
        ) -> Result<(), LedgerError> {
            unreachable!("the assembler commits directly")
        }
        fn totals(&self) -> Result<herdsman_ledger::Totals, LedgerError> {
            Ok(herdsman_ledger::Totals::of(&self.commits))
        }
        fn status(&self) -> Result<LedgerStatus, LedgerError> {
            Ok(LedgerStatus::default())
        }
    }

    fn pos(seq: u64) -> Position {
        Position {
            file_index: 0,
            byte_offset: seq * 10,
            line: seq + 2,
            seq,
        }
    }

    /// Chunks of `size` records each over `records` records `{"n":<seq>}`, announced up front.
    fn chunks(records: u64, size: u64) -> mpsc::Receiver<ChunkInfo> {
        let (tx, rx) = mpsc::channel();
        for id in 0..records.div_ceil(size) {
            let first = id * size;
            let last = (first + size).min(records);
            tx.send(ChunkInfo {
                id,
                first_index: first,
                start: pos(first),
                end: pos(last),
                records: (first..last)
                    .map(|n| {
                        let json: Arc<[u8]> = Arc::from(format!("{{\"n\":{n}}}").into_bytes());
                        (pos(n), Ok(json))
                    })
                    .collect(),
            })
            .unwrap();
        }
        rx
    }

    fn sinks(events: &Events) -> FakeSinks {
        FakeSinks {
            events: events.clone(),
            output: 0,
            failures: 0,
            objects_only: false,
        }
    }

    fn ledger(events: &Events) -> FakeLedger {
        FakeLedger {
            events: events.clone(),
            commits: Vec::new(),
            refuse: false,
        }
    }

    fn ok(n: u64) -> Resolved {
        Resolved::Outputs(vec![format!("{{\"out\":{n}}}").into_bytes()])
    }

    fn out(n: u64) -> Event {
        Event::Output(format!("{{\"out\":{n}}}"))
    }

    fn names() -> Vec<String> {
        vec!["in.csv".into()]
    }

    fn taken(events: &Events) -> Vec<Event> {
        std::mem::take(&mut *events.lock().unwrap())
    }

    /// How long between checkpoints so that none is due while a test runs.
    const NEVER: Duration = Duration::from_secs(24 * 3600);

    #[test]
    fn a_chunk_is_written_whole_once_its_records_resolve_out_of_order_and_committed_later() {
        let events = Events::default();
        let mut led = ledger(&events);
        let mut asm = Assembler::new(chunks(6, 3), sinks(&events), Some(&mut led), names());
        asm.checkpoint_every = NEVER;
        // Chunk 0's records finish 2, 0, 1: nothing is written until the last of them.
        asm.resolve(2, ok(2), 1).unwrap();
        asm.resolve(0, ok(0), 1).unwrap();
        assert_eq!(taken(&events), []);
        asm.resolve(1, ok(1), 1).unwrap();
        assert_eq!(taken(&events), [out(0), out(1), out(2)]);
        // Chunk 1 completes; neither chunk is committed before the checkpoint is due.
        for i in [5, 3, 4] {
            asm.resolve(i, ok(i), 1).unwrap();
        }
        assert_eq!(taken(&events), [out(3), out(4), out(5)]);
        let (_, counts) = asm.finish().unwrap();
        // One durable batch for both chunks, after the files were synced.
        let line = |n: u64| format!("{{\"out\":{n}}}").len() as u64 + 1;
        let end0 = (0..3).map(line).sum::<u64>();
        let end1 = end0 + (3..6).map(line).sum::<u64>();
        assert_eq!(
            taken(&events),
            [Event::Sync, Event::Commit(vec![(0, end0, 0), (1, end1, 0)])]
        );
        assert_eq!((counts.records, counts.ok, counts.outputs), (6, 6, 6));
        assert_eq!(led.commits[1].start, to_ledger(pos(3)));
        assert_eq!(led.commits[1].end, to_ledger(pos(6)));
    }

    #[test]
    fn chunks_that_complete_out_of_order_are_written_and_committed_in_completion_order() {
        // Unordered mode: the engine hands outcomes over as they complete, so a later chunk
        // can finish first; each chunk is still written whole, in input order inside it.
        let events = Events::default();
        let mut led = ledger(&events);
        let mut asm = Assembler::new(chunks(4, 2), sinks(&events), Some(&mut led), names());
        asm.checkpoint_every = Duration::ZERO;
        asm.resolve(3, ok(3), 1).unwrap();
        asm.resolve(2, ok(2), 1).unwrap();
        asm.resolve(1, ok(1), 1).unwrap();
        asm.resolve(0, ok(0), 1).unwrap();
        asm.finish().unwrap();
        let got = taken(&events);
        assert_eq!(
            got[..4],
            [out(2), out(3), Event::Sync, Event::Commit(vec![(1, 20, 0)])]
        );
        assert_eq!(
            got[4..],
            [out(0), out(1), Event::Sync, Event::Commit(vec![(0, 40, 0)])]
        );
    }

    #[test]
    fn the_commit_cadence_follows_checkpoint_every() {
        // Due at once: every complete chunk is synced and committed on its own.
        let events = Events::default();
        let mut led = ledger(&events);
        let mut asm = Assembler::new(chunks(3, 1), sinks(&events), Some(&mut led), names());
        asm.checkpoint_every = Duration::ZERO;
        for i in 0..3 {
            asm.resolve(i, ok(i), 1).unwrap();
        }
        asm.finish().unwrap();
        let commits: Vec<Event> = taken(&events)
            .into_iter()
            .filter(|e| matches!(e, Event::Commit(_)))
            .collect();
        assert_eq!(commits.len(), 3, "{commits:?}");
        // Never due while running: one batch at the end.
        let events = Events::default();
        let mut led = ledger(&events);
        let mut asm = Assembler::new(chunks(3, 1), sinks(&events), Some(&mut led), names());
        asm.checkpoint_every = NEVER;
        for i in 0..3 {
            asm.resolve(i, ok(i), 1).unwrap();
        }
        asm.finish().unwrap();
        let commits: Vec<Event> = taken(&events)
            .into_iter()
            .filter(|e| matches!(e, Event::Commit(_)))
            .collect();
        assert_eq!(commits.len(), 1, "{commits:?}");
        assert_eq!(led.commits.len(), 3);
    }

    #[test]
    fn a_failed_record_goes_to_the_dead_letter_file_and_its_chunk_counts_it() {
        let events = Events::default();
        let mut led = ledger(&events);
        let (tx, rx) = mpsc::channel();
        let bad = Arc::new(RecordError {
            kind: RecordErrorKind::FieldCount,
            message: "in.csv line 3: 1 field, the header has 2".into(),
            raw: "x".into(),
        });
        tx.send(ChunkInfo {
            id: 0,
            first_index: 0,
            start: pos(0),
            end: pos(3),
            records: vec![
                (pos(0), Ok(Arc::from(&b"{\"v\":\"1\"}"[..]))),
                (pos(1), Err(bad)),
                (pos(2), Ok(Arc::from(&b"{\"v\":\"x\"}"[..]))),
            ],
        })
        .unwrap();
        let mut asm = Assembler::new(rx, sinks(&events), Some(&mut led), names());
        asm.checkpoint_every = NEVER;
        asm.resolve(0, ok(0), 1).unwrap();
        let input_failure = FailureNote {
            kind: DeadLetterKind::InputFieldCount,
            message: "in.csv line 3: 1 field, the header has 2".into(),
            stderr_tail: Vec::new(),
        };
        asm.resolve(1, Resolved::Failed(input_failure), 1).unwrap();
        let reported = FailureNote {
            kind: DeadLetterKind::Reported,
            message: "value 'x' is not an integer".into(),
            stderr_tail: vec!["Traceback".into()],
        };
        asm.resolve(2, Resolved::Failed(reported), 3).unwrap();
        let (_, counts) = asm.finish().unwrap();
        let got = taken(&events);
        let first = r#"{"record":null,"raw":"x","source":{"file":"in.csv","line":3,"record":2},"error":{"kind":"input_field_count","message":"in.csv line 3: 1 field, the header has 2"},"attempts":1}"#;
        let second = r#"{"record":{"v":"x"},"source":{"file":"in.csv","line":4,"record":3},"error":{"kind":"reported","message":"value 'x' is not an integer"},"attempts":3,"stderr_tail":["Traceback"]}"#;
        assert_eq!(
            got[..3],
            [
                out(0),
                Event::Failure(first.into()),
                Event::Failure(second.into())
            ]
        );
        let failures_end = (first.len() + second.len() + 2) as u64;
        assert_eq!(got[4], Event::Commit(vec![(0, 10, failures_end)]));
        let c = &led.commits[0];
        assert_eq!(
            (
                c.counts.records,
                c.counts.ok,
                c.counts.failed,
                c.counts.retries
            ),
            (3, 1, 2, 2)
        );
        assert_eq!((counts.ok, counts.failed, counts.retries), (1, 2, 2));
    }

    #[test]
    fn an_answer_the_output_refuses_becomes_a_dead_letter() {
        let events = Events::default();
        let mut led = ledger(&events);
        let mut s = sinks(&events);
        s.objects_only = true;
        let mut asm = Assembler::new(chunks(2, 2), s, Some(&mut led), names());
        asm.checkpoint_every = NEVER;
        asm.resolve(0, ok(0), 1).unwrap();
        asm.resolve(1, Resolved::Outputs(vec![b"[1]".to_vec()]), 1)
            .unwrap();
        let (_, counts) = asm.finish().unwrap();
        let got = taken(&events);
        assert_eq!(got[0], out(0));
        let Event::Failure(line) = &got[1] else {
            panic!("{got:?}")
        };
        assert!(line.contains(r#""kind":"output_rejected""#), "{line}");
        assert_eq!((counts.ok, counts.failed), (1, 1));
    }

    #[test]
    fn a_crash_between_write_and_commit_leaves_the_written_chunk_uncommitted() {
        // The chunk's bytes reached the files, but the process dies before the checkpoint:
        // the ledger holds nothing, so a resumed run truncates the bytes and redoes the chunk.
        let events = Events::default();
        let mut led = ledger(&events);
        {
            let mut asm = Assembler::new(chunks(2, 2), sinks(&events), Some(&mut led), names());
            asm.checkpoint_every = NEVER;
            asm.resolve(0, ok(0), 1).unwrap();
            asm.resolve(1, ok(1), 1).unwrap();
            // Dropped without `finish`: no destructor commits anything.
        }
        assert_eq!(taken(&events), [out(0), out(1)]);
        assert!(led.commits.is_empty());

        // A commit the ledger refuses fails the run, after the files were synced.
        let events = Events::default();
        let mut led = ledger(&events);
        led.refuse = true;
        let mut asm = Assembler::new(chunks(1, 1), sinks(&events), Some(&mut led), names());
        asm.checkpoint_every = NEVER;
        asm.resolve(0, ok(0), 1).unwrap();
        let err = asm.finish().err().expect("the commit fails");
        assert!(
            format!("{err:#}").contains("cannot commit the checkpoint"),
            "{err:#}"
        );
        assert_eq!(taken(&events), [out(0), Event::Sync]);
        assert!(led.commits.is_empty());
    }

    #[test]
    fn a_chunk_cut_short_by_a_stop_is_not_written_with_a_checkpoint() {
        let events = Events::default();
        let mut led = ledger(&events);
        let mut asm = Assembler::new(chunks(4, 2), sinks(&events), Some(&mut led), names());
        asm.checkpoint_every = NEVER;
        asm.resolve(0, ok(0), 1).unwrap();
        asm.resolve(1, ok(1), 1).unwrap();
        asm.resolve(2, ok(2), 1).unwrap();
        asm.resolve(3, Resolved::NotRun, 0).unwrap();
        let (_, counts) = asm.finish().unwrap();
        let got = taken(&events);
        assert_eq!(got[..2], [out(0), out(1)]);
        assert_eq!(got[2..], [Event::Sync, Event::Commit(vec![(0, 20, 0)])]);
        assert_eq!((counts.records, counts.ok, counts.not_run), (4, 2, 2));
    }

    #[test]
    fn without_a_checkpoint_records_stream_out_in_input_order_as_soon_as_they_can() {
        let events = Events::default();
        let mut asm = Assembler::new(chunks(4, 2), sinks(&events), None, names());
        asm.resolve(1, ok(1), 1).unwrap();
        assert_eq!(taken(&events), []);
        asm.resolve(0, ok(0), 1).unwrap();
        assert_eq!(taken(&events), [out(0), out(1), Event::Flush]);
        asm.resolve(3, ok(3), 1).unwrap();
        assert_eq!(taken(&events), []);
        asm.resolve(2, ok(2), 1).unwrap();
        assert_eq!(taken(&events), [out(2), out(3), Event::Flush]);
        let (_, counts) = asm.finish().unwrap();
        assert_eq!(taken(&events), []);
        assert_eq!((counts.records, counts.ok), (4, 4));
    }

    fn reported(n: u64) -> Resolved {
        Resolved::Failed(FailureNote {
            kind: DeadLetterKind::Reported,
            message: format!("bad {n}"),
            stderr_tail: Vec::new(),
        })
    }

    /// The record numbers of the dead-letter lines among `events`.
    fn failed_records(events: &[Event]) -> Vec<u64> {
        events
            .iter()
            .filter_map(|e| match e {
                Event::Failure(line) => {
                    let v: serde_json::Value = serde_json::from_str(line).unwrap();
                    Some(v["source"]["record"].as_u64().unwrap() - 1)
                }
                _ => None,
            })
            .collect()
    }

    #[test]
    fn the_failures_of_a_chunk_cut_short_are_kept_in_input_order_and_never_committed() {
        // Chunk 0 (records 0..4) is cut short by a stop: 3 and 1 failed, 2 never ran, 0 was
        // not resolved at all. Chunk 1 (4..6) completes and is committed.
        let events = Events::default();
        let mut led = ledger(&events);
        let mut asm = Assembler::new(chunks(6, 4), sinks(&events), Some(&mut led), names());
        asm.checkpoint_every = NEVER;
        asm.resolve(3, reported(3), 2).unwrap();
        asm.resolve(2, Resolved::NotRun, 0).unwrap();
        asm.resolve(1, reported(1), 1).unwrap();
        asm.resolve(5, ok(5), 1).unwrap();
        asm.resolve(4, ok(4), 1).unwrap();
        assert_eq!(taken(&events), [out(4), out(5)]);
        asm.keep_failures_of_cut_short_chunks().unwrap();
        let kept = taken(&events);
        assert_eq!(failed_records(&kept), [1, 3]);
        assert_eq!(kept.len(), 2, "{kept:?}");
        let (_, counts) = asm.finish().unwrap();
        let got = taken(&events);
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[0], Event::Sync);
        assert!(matches!(&got[1], Event::Commit(c) if c.len() == 1 && c[0].0 == 1));
        assert_eq!(
            (
                counts.records,
                counts.ok,
                counts.failed,
                counts.not_run,
                counts.retries
            ),
            (6, 2, 2, 2, 1)
        );
    }

    #[test]
    fn without_a_checkpoint_a_stopped_run_keeps_what_finished_in_input_order() {
        let events = Events::default();
        let mut asm = Assembler::new(chunks(5, 3), sinks(&events), None, names());
        asm.resolve(4, ok(4), 1).unwrap();
        asm.resolve(2, reported(2), 1).unwrap();
        asm.resolve(1, ok(1), 1).unwrap();
        // Record 0 never resolves (the run stopped): nothing can be written yet.
        assert_eq!(taken(&events), []);
        let (_, counts) = asm.finish().unwrap();
        let got = taken(&events);
        assert_eq!(got[0], out(1));
        assert_eq!(failed_records(&got[1..2]), [2]);
        assert_eq!(got[2..], [out(4)]);
        assert_eq!(
            (counts.records, counts.ok, counts.failed, counts.not_run),
            (5, 2, 1, 2)
        );
    }

    /// A seeded shuffle of `0..n` (no dependency for one test).
    fn shuffled(n: u64, seed: u64) -> Vec<u64> {
        let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
        let mut v: Vec<u64> = (0..n).collect();
        for i in (1..v.len()).rev() {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let j = ((state >> 33) % (i as u64 + 1)) as usize;
            v.swap(i, j);
        }
        v
    }

    #[test]
    fn any_resolution_order_writes_every_record_once_in_order_within_its_chunk() {
        for seed in 0..60 {
            let n = 1 + seed % 23;
            let size = 1 + seed % 5;
            let order = shuffled(n, seed);
            // Without a checkpoint: the whole output is in input order.
            let events = Events::default();
            let mut asm = Assembler::new(chunks(n, size), sinks(&events), None, names());
            for &i in &order {
                asm.resolve(i, ok(i), 1).unwrap();
            }
            asm.finish().unwrap();
            let outs: Vec<Event> = taken(&events)
                .into_iter()
                .filter(|e| matches!(e, Event::Output(_)))
                .collect();
            assert_eq!(outs, (0..n).map(out).collect::<Vec<_>>(), "seed {seed}");
            // With one: chunks in completion order, each whole and in input order.
            let events = Events::default();
            let mut led = ledger(&events);
            let mut asm = Assembler::new(chunks(n, size), sinks(&events), Some(&mut led), names());
            asm.checkpoint_every = NEVER;
            for &i in &order {
                asm.resolve(i, ok(i), 1).unwrap();
            }
            asm.finish().unwrap();
            let written: Vec<u64> = taken(&events)
                .into_iter()
                .filter_map(|e| match e {
                    Event::Output(line) => {
                        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
                        v["out"].as_u64()
                    }
                    _ => None,
                })
                .collect();
            let mut chunk_order: Vec<u64> = Vec::new();
            for &i in &order {
                let complete = |c: u64| {
                    (c * size..((c + 1) * size).min(n)).all(|r| {
                        order.iter().position(|&x| x == r) <= order.iter().position(|&x| x == i)
                    })
                };
                if complete(i / size) && !chunk_order.contains(&(i / size)) {
                    chunk_order.push(i / size);
                }
            }
            let want: Vec<u64> = chunk_order
                .iter()
                .flat_map(|c| c * size..((c + 1) * size).min(n))
                .collect();
            assert_eq!(written, want, "seed {seed}");
            assert_eq!(led.commits.len() as u64, n.div_ceil(size), "seed {seed}");
        }
    }

    #[test]
    fn worker_numbers_leave_dead_letter_messages() {
        for (message, worker, want) in [
            (
                "worker 3 (`python3 w.py`) exited with status 3 while processing this record",
                3,
                "the worker (`python3 w.py`) exited with status 3 while processing this record",
            ),
            (
                "no answer within 1s (--timeout); worker 12 was killed and restarted",
                12,
                "no answer within 1s (--timeout); the worker was killed and restarted",
            ),
            (
                "worker 1 answered with a line that is not valid JSON: `worker 1`",
                1,
                "the worker answered with a line that is not valid JSON: `worker 1`",
            ),
            // Not this worker's number, or not a whole word: unchanged.
            ("worker 12 wrote garbage", 1, "worker 12 wrote garbage"),
            ("myworker 1 wrote garbage", 1, "myworker 1 wrote garbage"),
            (
                "command `x` exited with status 1",
                0,
                "command `x` exited with status 1",
            ),
        ] {
            assert_eq!(without_worker_number(message, worker), want);
        }
    }
}
