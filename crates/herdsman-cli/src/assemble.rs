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
use herdsman_io::{Position, SinkError};
use herdsman_ledger::{ChunkCommit, Ledger};
use serde_json::json;

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
    pub kind: String,
    pub message: String,
    pub stderr_tail: Vec<String>,
}

impl FailureNote {
    pub fn from_failure(f: &CliFailure) -> FailureNote {
        match f {
            CliFailure::Input(e) => FailureNote {
                kind: format!("input_{}", snake(&format!("{:?}", e.kind))),
                message: e.message.clone(),
                stderr_tail: Vec::new(),
            },
            CliFailure::Worker(w) => FailureNote {
                kind: snake(&format!("{:?}", w.kind)),
                message: without_worker_number(&w.message, w.worker),
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

/// `WorkerExited` → `worker_exited`.
fn snake(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 4);
    for (i, c) in s.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

struct Pending {
    info: ChunkInfo,
    slots: Vec<Option<(Resolved, u32)>>,
    resolved: usize,
    /// Leading slots already written (only a run without a ledger writes early).
    emitted: usize,
    /// Counts of the slots written so far.
    counts: Counts,
}

/// Output and dead-letter files of a run.
pub trait Sinks {
    /// Whether the output would accept all of `outputs`, in order, writing nothing.
    fn check_outputs(&self, _outputs: &[Vec<u8>]) -> Result<(), SinkError> {
        Ok(())
    }
    fn write_output(&mut self, json: &[u8]) -> Result<(), SinkError>;
    fn write_failure(&mut self, json: &[u8]) -> Result<(), SinkError>;
    /// Byte lengths of (output, failures) after everything written so far.
    fn offsets(&self) -> (u64, u64);
    /// Flush and fsync both files.
    fn sync(&mut self) -> Result<()>;
    /// Hand the output written so far to its reader when it is streamed (stdout, a device, a
    /// FIFO); a regular file is left to its buffer.
    fn flush_stream(&mut self) -> Result<()>;
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
}

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
        }
    }

    /// Records the final state of the record at engine index `index`.
    pub fn resolve(&mut self, index: u64, state: Resolved, attempts: u32) -> Result<()> {
        // A chunk is announced before any of its items reaches the engine, so it is here.
        while self
            .pending
            .range(..=index)
            .next_back()
            .is_none_or(|(first, p)| index >= first + p.slots.len() as u64)
        {
            let info = self
                .chunks
                .recv()
                .context("internal error: an outcome arrived for a record of no chunk")?;
            let len = info.records.len();
            self.pending.insert(
                info.first_index,
                Pending {
                    info,
                    slots: (0..len).map(|_| None).collect(),
                    resolved: 0,
                    emitted: 0,
                    counts: Counts {
                        records: len as u64,
                        ..Counts::default()
                    },
                },
            );
        }
        let (&first, p) = self
            .pending
            .range_mut(..=index)
            .next_back()
            .expect("chunk found above");
        let slot = &mut p.slots[(index - first) as usize];
        debug_assert!(slot.is_none(), "record {index} resolved twice");
        if slot.is_none() {
            p.resolved += 1;
        }
        *slot = Some((state, attempts));
        if self.ledger.is_some() {
            // A chunk cut short by a stop (a record not run) stays pending, never written:
            // see `keep_failures_of_cut_short_chunks` and `finish`.
            let cut_short = p
                .slots
                .iter()
                .any(|s| matches!(s, Some((Resolved::NotRun, _))));
            if p.resolved == p.slots.len() && !cut_short {
                let p = self.pending.remove(&first).expect("present");
                self.finish_chunk(p)?;
            }
            return Ok(());
        }
        // No checkpoint: write every record whose predecessors have all resolved, from the
        // earliest unfinished chunk on (earlier chunks are all written).
        let mut wrote = false;
        while let Some((first, mut p)) = self.pending.pop_first() {
            let before = p.emitted;
            self.emit_ready(&mut p)?;
            wrote |= p.emitted > before;
            if p.emitted < p.slots.len() {
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

    /// Writes the resolved slots of `p` that follow the ones already written, up to the first
    /// unresolved one.
    fn emit_ready(&mut self, p: &mut Pending) -> Result<()> {
        while p.emitted < p.slots.len() {
            let Some(slot) = p.slots[p.emitted].take() else {
                break;
            };
            let (pos, payload) = &p.info.records[p.emitted];
            self.emit(pos, payload, slot, &mut p.counts)?;
            // The slot stays marked resolved (its content is gone once written).
            p.slots[p.emitted] = Some((Resolved::NotRun, 0));
            p.emitted += 1;
        }
        Ok(())
    }

    fn finish_chunk(&mut self, mut p: Pending) -> Result<()> {
        if self.ledger.is_some()
            && p.slots
                .iter()
                .any(|s| matches!(s, Some((Resolved::NotRun, _))))
        {
            // A chunk cut short by a stop is not written; a resumed run redoes it whole.
            // (Without a ledger nothing is redone: its finished records are written.)
            let c = Counts {
                records: p.slots.len() as u64,
                not_run: p.slots.len() as u64,
                ..Counts::default()
            };
            self.written.add(&c);
            return Ok(());
        }
        for i in p.emitted..p.slots.len() {
            let slot = p.slots[i].take().expect("every slot resolved");
            let (pos, payload) = &p.info.records[i];
            self.emit(pos, payload, slot, &mut p.counts)?;
        }
        let c = p.counts;
        let (output_end, failures_end) = self.sinks.offsets();
        self.uncommitted.push(ChunkCommit {
            chunk: p.info.id,
            start: to_ledger(p.info.start),
            end: to_ledger(p.info.end),
            records: c.records,
            ok: c.succeeded,
            failed: c.failed,
            filtered: c.filtered,
            outputs: c.outputs,
            retries: c.retries,
            output_end,
            failures_end,
        });
        self.written.add(&c);
        if self.last_checkpoint.elapsed() >= self.checkpoint_every {
            self.checkpoint()?;
        }
        Ok(())
    }

    /// Writes one resolved record (its outputs, or its dead-letter entry) and counts it.
    fn emit(
        &mut self,
        pos: &Position,
        payload: &Payload,
        (state, attempts): (Resolved, u32),
        c: &mut Counts,
    ) -> Result<()> {
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
                            kind: "output_rejected".into(),
                            message,
                            stderr_tail: Vec::new(),
                        };
                        self.write_dead_letter(pos, payload, &note, attempts)?;
                    }
                    _ => {
                        c.succeeded += 1;
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
        // Key order (kept by serde_json's preserve_order): the record first, then where it
        // came from and why it failed.
        let mut entry = serde_json::Map::new();
        match payload {
            Ok(json) => {
                let record = serde_json::from_slice(json)
                    .unwrap_or_else(|_| String::from_utf8_lossy(json).into_owned().into());
                entry.insert("record".into(), record);
            }
            Err(e) => {
                entry.insert("record".into(), serde_json::Value::Null);
                entry.insert("raw".into(), e.raw.clone().into());
            }
        }
        entry.insert(
            "source".into(),
            json!({"file": file, "line": pos.line, "record": pos.seq + 1}),
        );
        entry.insert(
            "error".into(),
            json!({"kind": note.kind, "message": note.message}),
        );
        entry.insert("attempts".into(), attempts.into());
        if !note.stderr_tail.is_empty() {
            entry.insert("stderr_tail".into(), note.stderr_tail.clone().into());
        }
        let line = serde_json::to_vec(&entry).context("cannot encode a dead-letter entry")?;
        self.sinks
            .write_failure(&line)
            .context("cannot write the dead-letter file")
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
        crate::run::fault("after-sync");
        ledger
            .commit_chunks(&self.uncommitted)
            .context("cannot commit the checkpoint")?;
        crate::run::fault("after-commit");
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
        for p in std::mem::take(&mut self.pending).into_values() {
            let mut c = Counts {
                records: p.slots.len() as u64,
                not_run: p.slots.len() as u64,
                ..Counts::default()
            };
            for ((pos, payload), slot) in p.info.records.iter().zip(p.slots) {
                if let Some((Resolved::Failed(note), attempts)) = slot {
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
        for mut p in std::mem::take(&mut self.pending).into_values() {
            if self.ledger.is_some() {
                self.written.records += p.slots.len() as u64;
                self.written.not_run += p.slots.len() as u64;
            } else {
                // Nothing will resume this run: keep the records it finished, in order.
                for slot in p.slots.iter_mut().filter(|s| s.is_none()) {
                    *slot = Some((Resolved::NotRun, 0));
                }
                self.finish_chunk(p)?;
            }
        }
        self.checkpoint()?;
        Ok((self.sinks, self.written))
    }
}

fn to_ledger(p: Position) -> herdsman_ledger::Position {
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
