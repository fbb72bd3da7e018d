//! The job log (`--joblog PATH`), GNU parallel style: one line per attempt of a record, with
//! the record's number, its input file and line, the worker that ran the attempt, when it
//! started, how long it took, how it ended, the kind of its failure and its attempt number.
//! Tab-separated with a header line, or JSON lines when PATH ends in `.jsonl` or `.json`.
//!
//! The executor reports each attempt's outcome with its worker and start
//! ([`herdsman_workers::Started`]); the executor's wrapper notes each attempt's end with its
//! start as plain values and hands them over once per poll ([`Tracker`]); the assembler hands each record it writes ([`Writer::write_record`],
//! a few integers pushed on a vector) in batches over a bounded channel to the job log's own
//! thread, which joins the records with their attempts ([`Finished`]), formats the lines and
//! writes them ([`JobLog`]). So the job log is written chunk by chunk with the output, off the
//! thread that resolves records; before each checkpoint commit [`Writer::sync`] waits until the
//! thread has written and fsynced every line handed to it so far. On resume it is cut back to
//! the lines of the committed chunks, as the output is, so that after a crash it holds exactly
//! one line per attempt of the committed work. This module must never write a line for a
//! record outside the chunk being written, never let a commit go ahead before the lines of
//! its chunks are durable, and never keep a line of uncommitted work on resume.

use crate::id_map::IdSlots;
use std::fs::File;
use std::io::{BufRead, BufReader, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result};
use herdsman::executor::AttemptId;
use herdsman_io::DeadLetterKind;
use herdsman_ledger::ChunkCommit;

use crate::config::EnvError;

/// How one attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Ending {
    /// It produced output records.
    #[default]
    Succeeded,
    /// It succeeded with no output record.
    Filtered,
    /// It failed (and may be retried: a later line of the same record says).
    Failed,
}

impl Ending {
    /// Every ending, in the order of [`Ending::slot`].
    const ALL: [Ending; 3] = [Ending::Succeeded, Ending::Filtered, Ending::Failed];

    /// Its name in the job log.
    fn name(self) -> &'static str {
        match self {
            Ending::Succeeded => "succeeded",
            Ending::Filtered => "filtered",
            Ending::Failed => "failed",
        }
    }

    /// Its place in [`Ending::ALL`] (and in the tables of pieces built from it).
    #[inline(always)]
    fn slot(self) -> usize {
        match self {
            Ending::Succeeded => 0,
            Ending::Filtered => 1,
            Ending::Failed => 2,
        }
    }
}

/// One finished attempt of one record, as the tests spell it (the job log's thread keeps
/// attempts as an [`Entry`]).
#[cfg(test)]
#[derive(Debug, Clone, PartialEq)]
pub struct Attempt {
    /// 1-based attempt number.
    pub attempt: u32,
    /// 1-based worker (or job slot) that ran it; `None` when no worker did (a record that
    /// could not be read fails without one).
    pub worker: Option<usize>,
    /// When it was handed to its worker.
    pub start: Instant,
    pub duration: Duration,
    pub ending: Ending,
    /// The failure's kind, as the dead-letter file names it.
    pub kind: Option<DeadLetterKind>,
}

/// The end of one attempt, as the executor saw it, with its start.
#[derive(Debug, Clone, Copy)]
struct End {
    id: AttemptId,
    /// When the executor reported it.
    at: Instant,
    /// When it was handed to its worker; `None` if no worker took it (then its line says it
    /// started when it ended).
    start: Option<Instant>,
    /// 1-based worker, 0 for none.
    worker: u64,
    ending: Ending,
    kind: Option<DeadLetterKind>,
}

/// What the executor hands to the job log once per poll: the attempts that ended, with
/// their starts.
#[derive(Default)]
struct Notes {
    ends: Vec<End>,
}

/// Notes each attempt as it ends, on the engine's thread, and hands the notes to the job log
/// once per poll of the executor: pushing a few plain values is all it costs per attempt
/// (its start and worker come with its outcome).
pub struct Tracker {
    notes: Notes,
    tx: mpsc::Sender<Notes>,
    /// Emptied notes the job log gives back, reused instead of allocating per poll.
    spare: mpsc::Receiver<Notes>,
}

impl Tracker {
    /// Attempt `id` ended (it was reported at `now`); `started`: where and when it started,
    /// when a worker (or job slot) took it.
    #[inline]
    pub fn finished(
        &mut self,
        id: AttemptId,
        now: Instant,
        ending: Ending,
        kind: Option<DeadLetterKind>,
        started: Option<herdsman_workers::Started>,
    ) {
        let (start, worker) = match started {
            Some(s) => (s.at, s.worker as u64 + 1),
            None => (None, 0),
        };
        self.notes.ends.push(End {
            id,
            at: now,
            start,
            worker,
            ending,
            kind,
        });
    }

    /// Hands the attempts noted since the last call to the job log.
    pub fn send(&mut self) {
        if self.notes.ends.is_empty() {
            return;
        }
        // Without emptied notes back yet, new ones with room for as many as these, so that
        // the ends are not pushed into a growing vector.
        let next = self.spare.try_recv().unwrap_or_else(|_| Notes {
            ends: Vec::with_capacity(self.notes.ends.len().max(64)),
        });
        let _ = self.tx.send(std::mem::replace(&mut self.notes, next));
    }
}

/// One finished attempt as the job log's thread keeps it until its line: its times as
/// nanoseconds since the notes' anchor (a moment before any attempt started), so that an
/// attempt costs one clock subtraction, not one per column.
#[derive(Debug, Clone, Copy, Default)]
struct Entry {
    /// When it was handed to its worker (or when it ended, if no worker took it).
    start: u64,
    /// When the executor reported its end.
    end: u64,
    /// 1-based worker, 0 for none.
    worker: u64,
    ending: Ending,
    kind: Option<DeadLetterKind>,
}

/// The job log's side of the notes: the attempts joined with their starts, taken record by
/// record as records are written.
pub struct Finished {
    rx: mpsc::Receiver<Notes>,
    /// Finished attempts by id: put in at their end and taken out when their record is
    /// written, each a mask and a compare.
    started: IdSlots<Entry>,
    /// The moment the attempts' times are counted from.
    anchor: Instant,
    clock: Clock,
    /// The last end time converted and its nanoseconds since `anchor` (the ends of one
    /// poll share their time).
    last_end: (Instant, u64),
    /// Where emptied notes go back to the executor's side.
    spare: mpsc::Sender<Notes>,
}

impl Finished {
    /// The attempts `1..=attempts` of the record at engine index `index`, appended to `out`.
    /// Every attempt the engine counted was sent before its outcome reached the caller.
    #[cfg(test)]
    pub fn take(&mut self, index: u64, attempts: u32, out: &mut Vec<Attempt>) {
        for attempt in 1..=attempts {
            if let Some(e) = self.take_one(AttemptId { index, attempt }) {
                out.push(Attempt {
                    attempt,
                    worker: (e.worker != 0).then_some(e.worker as usize),
                    start: self.anchor + Duration::from_nanos(e.start),
                    duration: Duration::from_nanos(e.end.saturating_sub(e.start)),
                    ending: e.ending,
                    kind: e.kind,
                });
            }
        }
    }

    /// Attempt `id`, if the executor noted its end (and it was not taken before).
    #[inline]
    fn take_one(&mut self, id: AttemptId) -> Option<Entry> {
        self.started.take_if(&id, |_| true).or_else(|| {
            while let Ok(mut notes) = self.rx.try_recv() {
                self.absorb(&mut notes);
                let _ = self.spare.send(notes);
            }
            self.started.take_if(&id, |_| true)
        })
    }

    /// `at` as nanoseconds since the anchor.
    #[inline]
    fn since_anchor(&self, at: Instant) -> u64 {
        self.clock.since_anchor(at)
    }

    /// Keeps the attempts in `notes` until their records are written (leaving `notes`
    /// empty).
    fn absorb(&mut self, notes: &mut Notes) {
        for end in notes.ends.drain(..) {
            if end.at != self.last_end.0 {
                self.last_end = (end.at, self.since_anchor(end.at));
            }
            let at = self.last_end.1;
            // Never handed to a worker (a record that could not be read, a command that
            // could not be run): it started when it ended.
            let start = end.start.map_or(at, |s| self.since_anchor(s));
            self.started.insert(
                end.id,
                Entry {
                    start,
                    end: at,
                    worker: end.worker,
                    ending: end.ending,
                    kind: end.kind,
                },
            );
        }
    }
}

/// Times in nanoseconds since an anchor (`Instant::saturating_duration_since`), so that a
/// start, an end and a duration are plain integers from then on.
#[derive(Clone, Copy)]
struct Clock {
    anchor: Instant,
}

impl Clock {
    fn new(anchor: Instant) -> Clock {
        Clock { anchor }
    }

    /// `at` as nanoseconds since the anchor (0 before it).
    #[inline]
    fn since_anchor(&self, at: Instant) -> u64 {
        nanos(at.saturating_duration_since(self.anchor))
    }
}

/// `d` in nanoseconds (saturating after 584 years).
#[inline]
fn nanos(d: Duration) -> u64 {
    d.as_secs()
        .saturating_mul(1_000_000_000)
        .saturating_add(u64::from(d.subsec_nanos()))
}

/// The two ends of the attempt notes: for the executor and the job log; `window` is the
/// most records admitted but not yet written (the finished attempts are kept in slots by
/// record, so that noting and taking one needs no hashing; the job log's thread is usually a
/// few batches of records behind the assembler, so it has slots for those too, and a map
/// beside them when it is further behind).
pub fn attempts(window: usize) -> (Tracker, Finished) {
    // Every attempt starts after this moment: the workers are started after the notes.
    let anchor = Instant::now();
    let (tx, rx) = mpsc::channel();
    let (spare_tx, spare_rx) = mpsc::channel();
    let tracker = Tracker {
        notes: Notes::default(),
        tx,
        spare: spare_rx,
    };
    let finished = Finished {
        rx,
        started: IdSlots::new(window.saturating_add(BATCH * 4)),
        anchor,
        clock: Clock::new(anchor),
        last_end: (anchor, 0),
        spare: spare_tx,
    };
    (tracker, finished)
}

/// The job log's two spellings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Tab-separated, with a header line.
    Tsv,
    /// One JSON object per line.
    Jsonl,
}

/// The header of a tab-separated job log.
pub const TSV_HEADER: &str =
    "record\tfile\tline\tworker\tstart\tduration\toutcome\tkind\tattempt\n";

impl Format {
    /// JSON lines for `.jsonl` and `.json`, else tab-separated.
    pub fn of(path: &Path) -> Format {
        match path.extension().and_then(|e| e.to_str()) {
            Some(e) if e.eq_ignore_ascii_case("jsonl") || e.eq_ignore_ascii_case("json") => {
                Format::Jsonl
            }
            _ => Format::Tsv,
        }
    }
}

/// Which records the committed chunks hold: half-open ranges of 0-based record numbers.
#[derive(Debug, Clone, Default)]
pub struct Committed(Vec<(u64, u64)>);

impl Committed {
    /// The records of `commits`.
    pub fn of(commits: &[ChunkCommit]) -> Committed {
        let mut ranges: Vec<(u64, u64)> =
            commits.iter().map(|c| (c.start.seq, c.end.seq)).collect();
        ranges.sort_unstable();
        Committed(ranges)
    }

    fn contains(&self, seq: u64) -> bool {
        let i = self.0.partition_point(|&(start, _)| start <= seq);
        i > 0 && seq < self.0[i - 1].1
    }
}

/// How many bytes of lines the job log holds before it writes them to its file: lines are
/// formatted straight into this buffer (no second copy into a `BufWriter`), and written in
/// large blocks, and at every sync (before each checkpoint commit).
const BUFFER: usize = 256 << 10;

/// How many records the assembler hands to the job log's thread at a time (64 KiB of
/// records: the thread is woken about 500 times in a million-record run).
const BATCH: usize = 2048;

/// How many batches of records may wait for the job log's thread before the assembler waits
/// for it (2 MiB of records: enough that a busy machine's scheduling delays of the thread do
/// not make the assembler wait, and memory stays bounded when the job log's file is slow).
const QUEUE: usize = 32;

/// An open job log: its file, and the state of formatting its lines. A run hands it to its
/// own thread with [`JobLog::start`].
pub struct JobLog {
    path: PathBuf,
    format: Format,
    out: File,
    /// The job log is a device or a FIFO (`/dev/stderr`): written in place, never cut back
    /// and never fsynced.
    direct: bool,
    /// Lines not yet written to `out` are `buf[..used]`, at most about [`BUFFER`] bytes; `buf`
    /// is longer by room for the longest line ([`ROOM`] and the file name), so that a line is
    /// written in place, piece by piece, with no check for growth.
    buf: Vec<u8>,
    used: usize,
    /// The last input file name, and its spelling in this format with the next column's
    /// separator (also as a block when it fits one).
    file: (String, Vec<u8>, Option<Block<48>>),
    /// The index (among the run's inputs) of the file spelled in `file`, if it is one of them.
    file_index: Option<u32>,
    /// What lines are put together from: the format's separators joined to the values that
    /// repeat, and the numbers of the last line, kept to be counted up.
    pieces: Pieces,
    /// The last line, to be written over where the next one differs.
    template: Template,
    /// A moment on both clocks, to turn an attempt's `Instant` into wall-clock time.
    base: (Instant, SystemTime),
}

impl JobLog {
    /// Opens the job log at `path`: new (and emptied) for a fresh run, or, resuming, cut back
    /// to its lines of the `committed` records (a crash may have left lines of chunks that
    /// were written but not committed; they are redone and logged again). A device or a FIFO
    /// is written in place, as it is.
    pub fn open(path: &Path, resume: Option<&Committed>) -> Result<JobLog> {
        let format = Format::of(path);
        let env = |e: std::io::Error| {
            anyhow::Error::new(EnvError(format!(
                "cannot write the job log {}: {e}; check the --joblog path and its permissions",
                path.display()
            )))
        };
        let direct = matches!(
            herdsman_io::output_target(path),
            Ok(herdsman_io::OutputTarget::Direct(_))
        );
        let (file, keep) = if direct {
            let file = std::fs::OpenOptions::new()
                .append(true)
                .open(path)
                .map_err(env)?;
            (file, 0)
        } else {
            crate::config::ensure_parent_dir(path)?;
            let mut file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(path)
                .map_err(env)?;
            let keep = match resume {
                Some(committed) => committed_length(&mut file, format, committed).map_err(env)?,
                None => 0,
            };
            file.set_len(keep).map_err(env)?;
            file.seek(std::io::SeekFrom::Start(keep)).map_err(env)?;
            (file, keep)
        };
        let mut buf = vec![0; BUFFER + ROOM];
        let mut used = 0;
        if keep == 0 && format == Format::Tsv {
            put_slice(&mut buf, &mut used, TSV_HEADER.as_bytes());
        }
        let base = (Instant::now(), SystemTime::now());
        Ok(JobLog {
            path: path.to_path_buf(),
            format,
            out: file,
            direct,
            buf,
            used,
            file: (String::new(), Vec::new(), None),
            file_index: None,
            pieces: Pieces::new(format),
            template: Template::default(),
            base,
        })
    }

    /// Starts the job log's thread, which takes each record's attempts from `finished` (the
    /// executor's notes; no lines without them) and writes their lines; `names` are the
    /// run's input file names, by index.
    pub fn start(self, finished: Option<Finished>, names: Vec<String>) -> Result<Writer> {
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        let (spare_tx, spare_rx) = mpsc::channel();
        let (synced_tx, synced_rx) = mpsc::sync_channel(1);
        let failure = Arc::new(Failure::default());
        let path = self.path.clone();
        let thread = {
            let failure = Arc::clone(&failure);
            std::thread::Builder::new()
                .name("herdsman-joblog".into())
                .spawn(move || self.serve(finished, &names, rx, &spare_tx, &synced_tx, &failure))
                .context("cannot start the job log's thread")?
        };
        Ok(Writer {
            path,
            batch: Vec::with_capacity(BATCH),
            tx: Some(tx),
            spare: spare_rx,
            synced: synced_rx,
            failure,
            thread: Some(thread),
        })
    }

    /// The job log's thread: writes the lines of the records it is handed, and syncs when
    /// asked, until the [`Writer`] is dropped. After a failed write it writes nothing more
    /// (the run stops with the error) but still answers, so the assembler never waits on it.
    fn serve(
        mut self,
        mut finished: Option<Finished>,
        names: &[String],
        rx: mpsc::Receiver<Message>,
        spare: &mpsc::Sender<Vec<RecordNote>>,
        synced: &mpsc::SyncSender<std::io::Result<()>>,
        failure: &Failure,
    ) {
        let mut error: Option<std::io::Error> = None;
        for message in rx {
            match message {
                Message::Records(mut batch) => {
                    if let (None, Some(f)) = (&error, finished.as_mut()) {
                        if let Err(e) = self.write_notes(f, names, &batch) {
                            failure.set(&e);
                            error = Some(e);
                        }
                    }
                    batch.clear();
                    let _ = spare.send(batch);
                }
                Message::Sync => {
                    let result = match &error {
                        Some(e) => Err(copy_error(e)),
                        None => self.sync_io(),
                    };
                    if let Err(e) = &result {
                        failure.set(e);
                        error.get_or_insert_with(|| copy_error(e));
                    }
                    let _ = synced.send(result);
                }
            }
        }
        if error.is_some() {
            // Nothing more is written, not even when dropped.
            self.used = 0;
        }
    }

    /// Appends the lines of the attempts of the records in `batch`, taken from `finished`, to
    /// the buffer, writing the buffer to the file whenever it holds [`BUFFER`] bytes.
    fn write_notes(
        &mut self,
        finished: &mut Finished,
        names: &[String],
        batch: &[RecordNote],
    ) -> std::io::Result<()> {
        let wall = self.wall_of(finished.anchor);
        for r in batch {
            if self.file_index != Some(r.file_index) {
                let name = names.get(r.file_index as usize).map_or("", String::as_str);
                self.spell_file(name);
                self.file_index = Some(r.file_index);
            }
            for attempt in 1..=r.attempts {
                let id = AttemptId {
                    index: r.index,
                    attempt,
                };
                let Some(e) = finished.take_one(id) else {
                    continue;
                };
                let start = wall.0.saturating_add(e.start.saturating_sub(wall.1));
                let fields = Fields {
                    attempt,
                    worker: e.worker,
                    start: split_nanos(start),
                    duration: split_nanos(e.end.saturating_sub(e.start)),
                    ending: e.ending,
                    kind: e.kind,
                };
                self.line(r.line, r.seq, &fields);
                if self.used >= BUFFER {
                    self.write_buffer()?;
                }
            }
        }
        Ok(())
    }

    /// The wall-clock time of `anchor` as nanoseconds since the Unix epoch, as a sum and a
    /// deficit: an attempt `t` nanoseconds after `anchor` started at `sum + (t - deficit)`
    /// (saturating; the deficit is not 0 only for an anchor before the epoch). The same
    /// arithmetic as from [`JobLog::base`] directly, done once per batch instead of per line.
    fn wall_of(&self, anchor: Instant) -> (u64, u64) {
        let epoch = nanos(since_epoch(self.base.1));
        match anchor.checked_duration_since(self.base.0) {
            Some(after) => (epoch.saturating_add(nanos(after)), 0),
            None => {
                let before = nanos(self.base.0.duration_since(anchor));
                match epoch.checked_sub(before) {
                    Some(sum) => (sum, 0),
                    None => (0, before - epoch),
                }
            }
        }
    }

    /// Writes the lines of one record's attempts.
    #[cfg(test)]
    pub fn write(&mut self, file: &str, line: u64, seq: u64, attempts: &[Attempt]) -> Result<()> {
        if attempts.is_empty() {
            return Ok(());
        }
        self.spell_file(file);
        let epoch = since_epoch(self.base.1);
        for a in attempts {
            // The wall-clock start: the base's, moved by the attempt's distance from the base
            // on the monotonic clock.
            let start = match a.start.checked_duration_since(self.base.0) {
                Some(after) => epoch + after,
                None => epoch.saturating_sub(self.base.0.duration_since(a.start)),
            };
            let fields = Fields {
                attempt: a.attempt,
                worker: a.worker.map_or(0, |w| w as u64),
                start: (start.as_secs(), start.subsec_nanos()),
                duration: (a.duration.as_secs(), a.duration.subsec_nanos()),
                ending: a.ending,
                kind: a.kind,
            };
            self.line(line, seq, &fields);
            self.spill_io().map_err(|e| write_error(&self.path, &e))?;
        }
        Ok(())
    }

    /// Remembers how `file` is spelled in this format, unless it is the last file's name.
    fn spell_file(&mut self, file: &str) {
        if self.file.0 != file {
            let mut spelled = match self.format {
                Format::Tsv if file.is_empty() => "-".to_string(),
                Format::Tsv => file.replace(['\t', '\n', '\r'], " "),
                Format::Jsonl => serde_json::to_string(file).unwrap_or_else(|_| "\"\"".into()),
            }
            .into_bytes();
            spelled.extend_from_slice(self.pieces.after_file);
            let block = Block::new(&[&spelled]);
            // Room for the longest line with this name after the fullest buffer.
            let room = BUFFER + ROOM + spelled.len();
            if self.buf.len() < room {
                self.buf.resize(room, 0);
            }
            self.file = (file.to_string(), spelled, block);
            self.file_index = None;
            self.template.len = 0;
        }
    }

    /// Appends one attempt's line to the buffer (the file's spelling is `self.file`): the
    /// last line's bytes with the columns that changed written over (the usual line), or
    /// spelled anew piece by piece when a column changed its width.
    #[inline]
    fn line(&mut self, line: u64, seq: u64, f: &Fields) {
        let t = &mut self.template;
        if !t.patch(line, seq + 1, f, self.pieces.micros) {
            if self.file.1.len() > TEMPLATE_FILE {
                // Too long for the template: spelled straight into the buffer.
                t.len = 0;
                let mut marks = Marks::default();
                self.used = spell_line(
                    &mut self.pieces,
                    &self.file,
                    &mut self.buf,
                    self.used,
                    (line, seq),
                    f,
                    &mut marks,
                );
                return;
            }
            t.len = spell_line(
                &mut self.pieces,
                &self.file,
                &mut t.bytes,
                0,
                (line, seq),
                f,
                &mut t.marks,
            );
            t.held = Held {
                record: seq + 1,
                line,
                worker: f.worker,
                second: f.start.0,
                duration: f.duration.0,
                ending: f.ending,
                kind: f.kind,
                attempt: f.attempt,
            };
        }
        let (out, at, len) = (&mut self.buf[..], self.used, t.len);
        // Copied in blocks of 64 bytes (a few moves each, no call), as many as the line needs.
        let mut done = 0;
        while done < len {
            out[at + done..at + done + 64].copy_from_slice(&t.bytes[done..done + 64]);
            done += 64;
        }
        self.used = at + len;
    }

    /// Writes the buffer to the file once it holds [`BUFFER`] bytes or more.
    #[cfg(test)]
    fn spill_io(&mut self) -> std::io::Result<()> {
        if self.used >= BUFFER {
            self.write_buffer()?;
        }
        Ok(())
    }

    /// Writes the whole buffer to the file.
    fn write_buffer(&mut self) -> std::io::Result<()> {
        if self.used == 0 {
            return Ok(());
        }
        let written = self.out.write_all(&self.buf[..self.used]);
        // Cleared also on failure: the run ends with this error, and the bytes are not tried
        // again when the job log is dropped.
        self.used = 0;
        written
    }

    /// Writes what is buffered and fsyncs the file (a device or FIFO is only written).
    fn sync_io(&mut self) -> std::io::Result<()> {
        self.write_buffer()?;
        if self.direct {
            return Ok(());
        }
        self.out.sync_data()
    }

    /// Flushes and fsyncs the job log.
    #[cfg(test)]
    pub fn sync(&mut self) -> Result<()> {
        self.sync_io().map_err(|e| write_error(&self.path, &e))
    }
}

impl Drop for JobLog {
    /// Writes what is buffered, as a `BufWriter` would (errors are for [`Writer::sync`]).
    fn drop(&mut self) {
        let _ = self.write_buffer();
    }
}

/// One record whose attempts the job log writes: what the assembler knows of it.
#[derive(Debug, Clone, Copy)]
struct RecordNote {
    /// The record's engine index (its attempts' ids are `index` and `1..=attempts`).
    index: u64,
    /// 0-based record number in the whole input.
    seq: u64,
    /// The line of the input file it starts on.
    line: u64,
    /// Its input file, by index among the run's inputs.
    file_index: u32,
    attempts: u32,
}

/// What the assembler sends to the job log's thread.
enum Message {
    /// The next records to write, in the order they were written to the output.
    Records(Vec<RecordNote>),
    /// Write and fsync everything sent before, then answer.
    Sync,
}

/// The first error of the job log's thread, for the assembler to stop the run with.
#[derive(Default)]
struct Failure {
    failed: AtomicBool,
    error: Mutex<Option<std::io::Error>>,
}

impl Failure {
    fn set(&self, e: &std::io::Error) {
        let mut error = self.error.lock().unwrap_or_else(|p| p.into_inner());
        if error.is_none() {
            *error = Some(copy_error(e));
            self.failed.store(true, Ordering::Release);
        }
    }

    fn get(&self) -> Option<std::io::Error> {
        if !self.failed.load(Ordering::Acquire) {
            return None;
        }
        self.error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(copy_error)
    }
}

/// The same error again (an `io::Error` is not `Clone`).
fn copy_error(e: &std::io::Error) -> std::io::Error {
    match e.raw_os_error() {
        Some(code) => std::io::Error::from_raw_os_error(code),
        None => std::io::Error::new(e.kind(), e.to_string()),
    }
}

/// The error a failed write of the job log at `path` stops the run with.
fn write_error(path: &Path, e: &std::io::Error) -> anyhow::Error {
    anyhow::Error::new(EnvError(format!(
        "cannot write the job log {}: {e}; make room on its device or give --joblog another \
         path, then run the same command again",
        path.display()
    )))
}

/// The assembler's end of a job log written by its own thread: records are handed over in
/// batches (a few integers each), formatted and written there.
pub struct Writer {
    path: PathBuf,
    /// Records not yet handed over.
    batch: Vec<RecordNote>,
    tx: Option<mpsc::SyncSender<Message>>,
    /// Emptied batches the thread gives back, reused instead of allocating one per batch.
    spare: mpsc::Receiver<Vec<RecordNote>>,
    synced: mpsc::Receiver<std::io::Result<()>>,
    failure: Arc<Failure>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    /// Writes the lines of the attempts of the record at engine index `index`: `attempts`
    /// of them, read from input file `file_index` (among the run's inputs) at `line`, record
    /// number `seq` (0-based). Fails once the job log's thread could not write.
    #[inline]
    pub fn write_record(
        &mut self,
        index: u64,
        attempts: u32,
        file_index: u32,
        line: u64,
        seq: u64,
    ) -> Result<()> {
        self.batch.push(RecordNote {
            index,
            seq,
            line,
            file_index,
            attempts,
        });
        if self.batch.len() >= BATCH {
            self.hand_over()?;
        }
        Ok(())
    }

    /// Sends the records noted so far to the job log's thread (waiting while it is
    /// [`QUEUE`] batches behind).
    fn hand_over(&mut self) -> Result<()> {
        if let Some(e) = self.failure.get() {
            return Err(write_error(&self.path, &e));
        }
        if self.batch.is_empty() {
            return Ok(());
        }
        let next = self
            .spare
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(BATCH));
        let batch = std::mem::replace(&mut self.batch, next);
        self.send(Message::Records(batch))
    }

    fn send(&mut self, message: Message) -> Result<()> {
        let sent = self.tx.as_ref().map(|tx| tx.send(message));
        match sent {
            Some(Ok(())) => Ok(()),
            _ => Err(self.stopped()),
        }
    }

    /// The error for a job log's thread that is gone: its own, or the panic it ended with.
    fn stopped(&mut self) -> anyhow::Error {
        if let Some(e) = self.failure.get() {
            return write_error(&self.path, &e);
        }
        self.tx = None;
        let why = match self.thread.take().map(std::thread::JoinHandle::join) {
            Some(Err(panic)) => panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "it panicked".into()),
            _ => "it ended early".into(),
        };
        anyhow::anyhow!(
            "internal error: the thread writing the job log {} stopped ({why}); run the same \
             command again to resume, and report this",
            self.path.display()
        )
    }

    /// Waits until the job log's thread has written and fsynced the lines of every record
    /// handed to it so far (before a checkpoint commit, and at the end of the run).
    pub fn sync(&mut self) -> Result<()> {
        self.hand_over()?;
        self.send(Message::Sync)?;
        match self.synced.recv() {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(write_error(&self.path, &e)),
            Err(_) => Err(self.stopped()),
        }
    }
}

impl Drop for Writer {
    /// Hands over what is left and waits for the thread to write it (errors are for
    /// [`Writer::sync`]).
    fn drop(&mut self) {
        let _ = self.hand_over();
        self.tx = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// `at` as time since the Unix epoch (zero before it).
fn since_epoch(at: SystemTime) -> Duration {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
}

/// `n` nanoseconds as whole seconds and the nanoseconds left.
#[inline(always)]
fn split_nanos(n: u64) -> (u64, u32) {
    let secs = n / 1_000_000_000;
    (secs, (n - secs * 1_000_000_000) as u32)
}

/// The columns of one line that change from attempt to attempt.
struct Fields {
    /// 1-based attempt number.
    attempt: u32,
    /// 1-based worker, 0 for none.
    worker: u64,
    /// The start as whole seconds and nanoseconds since the Unix epoch.
    start: (u64, u32),
    /// How long it took, as whole seconds and nanoseconds.
    duration: (u64, u32),
    ending: Ending,
    kind: Option<DeadLetterKind>,
}

/// Room for the longest line after the fullest buffer, besides a long file name: every
/// piece is copied as its whole block (at most 48 bytes; 13 pieces), numbers spelled in
/// full take at most 20 bytes and a failure kind's name fewer than 32.
const ROOM: usize = 1024;

/// The workers and attempt numbers whose pieces are spelled ahead of time.
const SPELLED: (usize, usize) = (256, 64);

/// The two digits of 0..100, for writing numbers two digits per step.
const PAIRS: &[u8; 200] = b"\
0001020304050607080910111213141516171819\
2021222324252627282930313233343536373839\
4041424344454647484950515253545556575859\
6061626364656667686970717273747576777879\
8081828384858687888990919293949596979899";

/// The three digits of 0..1000 (and a fourth byte, so that each is copied as one word).
static DIGITS3: [[u8; 4]; 1000] = {
    let mut t = [[0u8; 4]; 1000];
    let mut i = 0;
    while i < 1000 {
        t[i] = [
            b'0' + (i / 100) as u8,
            b'0' + (i / 10 % 10) as u8,
            b'0' + (i % 10) as u8,
            0,
        ];
        i += 1;
    }
    t
};

/// A piece of a line of at most `N` bytes, padded to `N` so that it is copied as one
/// fixed-size block (no call, no length-dependent loop) and the cursor moved by its length.
#[derive(Debug, Clone, Copy)]
struct Block<const N: usize> {
    bytes: [u8; N],
    len: usize,
}

impl<const N: usize> Block<N> {
    /// `parts` one after the other, if they fit.
    fn new(parts: &[&[u8]]) -> Option<Block<N>> {
        let mut b = Block {
            bytes: [0; N],
            len: 0,
        };
        for part in parts {
            let end = b.len + part.len();
            b.bytes.get_mut(b.len..end)?.copy_from_slice(part);
            b.len = end;
        }
        Some(b)
    }

    /// `parts` one after the other; they fit (they are the format's own constants).
    fn of(parts: &[&[u8]]) -> Block<N> {
        Block::new(parts).expect("a job log piece longer than its block")
    }
}

/// Copies block `b` to `out` at `at`, and moves `at` by its length.
#[inline(always)]
fn put<const N: usize>(out: &mut [u8], at: &mut usize, b: &Block<N>) {
    out[*at..*at + N].copy_from_slice(&b.bytes);
    *at += b.len;
}

/// Copies `s` to `out` at `at`, and moves `at` by its length.
#[inline(always)]
fn put_array<const N: usize>(out: &mut [u8], at: &mut usize, s: &[u8; N]) {
    out[*at..*at + N].copy_from_slice(s);
    *at += N;
}

/// Copies `s` (of any length) to `out` at `at`, and moves `at` by its length.
#[inline]
fn put_slice(out: &mut [u8], at: &mut usize, s: &[u8]) {
    out[*at..*at + s.len()].copy_from_slice(s);
    *at += s.len();
}

/// Writes `n` in decimal to `out` at `at`, and moves `at` by its length.
#[inline]
fn put_number(out: &mut [u8], at: &mut usize, n: u64) {
    let digits = decimal_digits(n);
    write_digits(&mut out[*at..*at + digits], n);
    *at += digits;
}

/// How many decimal digits `n` has.
#[inline]
fn decimal_digits(n: u64) -> usize {
    n.checked_ilog10().map_or(1, |l| l as usize + 1)
}

/// A number column and the separator after it, kept from line to line: a number one more
/// than the last is counted up in its last digit (the record and line numbers of a run go
/// up by one from line to line, the start's seconds by one from second to second), any
/// other is spelled anew.
struct Counter {
    /// The number spelled in `block`.
    n: u64,
    /// How many digits it has.
    digits: usize,
    /// The digits and `after`.
    block: Block<40>,
    /// What follows the number.
    after: Block<16>,
}

impl Counter {
    fn new(after: &[u8]) -> Counter {
        let mut c = Counter {
            n: 0,
            digits: 1,
            block: Block::of(&[]),
            after: Block::of(&[after]),
        };
        c.spell(0);
        c
    }

    /// Makes `block` spell `n`.
    #[inline(always)]
    fn set(&mut self, n: u64) {
        if n != self.n {
            self.next(n);
        }
    }

    #[inline]
    fn next(&mut self, n: u64) {
        let last = &mut self.block.bytes[self.digits - 1];
        if n != 0 && n - 1 == self.n && *last != b'9' {
            *last += 1;
            self.n = n;
        } else {
            self.spell(n);
        }
    }

    fn spell(&mut self, n: u64) {
        let digits = decimal_digits(n);
        write_digits(&mut self.block.bytes[..digits], n);
        self.block.bytes[digits..digits + 16].copy_from_slice(&self.after.bytes);
        self.block.len = digits + self.after.len;
        self.digits = digits;
        self.n = n;
    }
}

/// What a format's lines are put together from, each piece with the separator that follows
/// it, so that a line of the usual attempt is about a dozen block copies.
struct Pieces {
    /// Before the record number.
    prefix: Block<16>,
    /// The record number, then the separator before the file name.
    record: Counter,
    /// What follows the file name (part of the file's spelling).
    after_file: &'static [u8],
    /// The line number, then the separator before the worker.
    line: Counter,
    /// Worker `w` (1-based; 0 for none), then the separator before the start.
    workers: Vec<Block<40>>,
    /// The separator after a worker not in `workers`.
    after_worker: Block<16>,
    /// The start's whole seconds and the point.
    second: Counter,
    /// The start's milliseconds, then the separator before the duration.
    start_frac: Box<[Block<16>; 1000]>,
    /// The duration's fraction has six digits (else three).
    micros: bool,
    /// The duration's last three digits, then the separator before the outcome.
    duration_frac: Box<[Block<16>; 1000]>,
    /// By [`Ending::slot`]: the outcome, no kind, and the separator before the attempt.
    endings: [Block<48>; 3],
    /// By [`Ending::slot`]: the outcome and what comes before a kind.
    outcomes: [Block<32>; 3],
    /// What follows a kind, up to the attempt number.
    after_kind: Block<16>,
    /// Attempt `n` (1-based), then the end of the line.
    attempts: Vec<Block<16>>,
    /// The end of the line after an attempt not in `attempts`.
    end: Block<16>,
}

impl Pieces {
    fn new(format: Format) -> Pieces {
        struct Spelling {
            prefix: &'static [u8],
            after_record: &'static [u8],
            after_file: &'static [u8],
            after_line: &'static [u8],
            no_worker: &'static [u8],
            after_worker: &'static [u8],
            after_start: &'static [u8],
            after_duration: &'static [u8],
            no_kind: &'static [u8],
            before_kind: &'static [u8],
            after_kind: &'static [u8],
            end: &'static [u8],
        }
        let s = match format {
            Format::Tsv => Spelling {
                prefix: b"",
                after_record: b"\t",
                after_file: b"\t",
                after_line: b"\t",
                no_worker: b"-",
                after_worker: b"\t",
                after_start: b"\t",
                after_duration: b"\t",
                no_kind: b"\t-\t",
                before_kind: b"\t",
                after_kind: b"\t",
                end: b"\n",
            },
            Format::Jsonl => Spelling {
                prefix: b"{\"record\":",
                after_record: b",\"file\":",
                after_file: b",\"line\":",
                after_line: b",\"worker\":",
                no_worker: b"null",
                after_worker: b",\"start\":",
                after_start: b",\"duration\":",
                after_duration: b",\"outcome\":\"",
                no_kind: b"\",\"kind\":null,\"attempt\":",
                before_kind: b"\",\"kind\":\"",
                after_kind: b"\",\"attempt\":",
                end: b"}\n",
            },
        };
        let workers = (0..=SPELLED.0)
            .map(|w| {
                let digits = if w == 0 {
                    s.no_worker.to_vec()
                } else {
                    w.to_string().into_bytes()
                };
                Block::of(&[&digits, s.after_worker])
            })
            .collect();
        let attempts = (0..=SPELLED.1)
            .map(|n| Block::of(&[n.to_string().as_bytes(), s.end]))
            .collect();
        let table = |after: &[u8]| -> Box<[Block<16>; 1000]> {
            let t: Vec<Block<16>> = DIGITS3
                .iter()
                .map(|d| Block::of(&[&d[..3], after]))
                .collect();
            t.into_boxed_slice()
                .try_into()
                .unwrap_or_else(|_| unreachable!("1000 entries"))
        };
        Pieces {
            prefix: Block::of(&[s.prefix]),
            record: Counter::new(s.after_record),
            after_file: s.after_file,
            line: Counter::new(s.after_line),
            workers,
            after_worker: Block::of(&[s.after_worker]),
            second: Counter::new(b"."),
            start_frac: table(s.after_start),
            micros: format == Format::Jsonl,
            duration_frac: table(s.after_duration),
            endings: Ending::ALL.map(|e| Block::of(&[e.name().as_bytes(), s.no_kind])),
            outcomes: Ending::ALL.map(|e| Block::of(&[e.name().as_bytes(), s.before_kind])),
            after_kind: Block::of(&[s.after_kind]),
            attempts,
            end: Block::of(&[s.end]),
        }
    }
}

/// Spells one attempt's line into `out` at `at`, piece by piece: each piece a fixed-size
/// block copied and the cursor moved by its length; the record and line numbers and the
/// start's seconds counted up in place from the last line's, the milliseconds taken from a
/// table. Notes in `marks` where the columns that a later line may write over are, and
/// returns where the line ends.
#[inline]
fn spell_line(
    p: &mut Pieces,
    file: &(String, Vec<u8>, Option<Block<48>>),
    out: &mut [u8],
    mut at: usize,
    (line, seq): (u64, u64),
    f: &Fields,
    marks: &mut Marks,
) -> usize {
    put(out, &mut at, &p.prefix);
    p.record.set(seq + 1);
    marks.record = (at, at + p.record.digits);
    put(out, &mut at, &p.record.block);
    match &file.2 {
        Some(b) => put(out, &mut at, b),
        None => put_slice(out, &mut at, &file.1),
    }
    p.line.set(line);
    marks.line = (at, at + p.line.digits);
    put(out, &mut at, &p.line.block);
    marks.worker = at;
    match p.workers.get(f.worker as usize) {
        Some(b) => put(out, &mut at, b),
        None => {
            put_number(out, &mut at, f.worker);
            put(out, &mut at, &p.after_worker);
        }
    }
    p.second.set(f.start.0);
    put(out, &mut at, &p.second.block);
    marks.millis = at;
    put(
        out,
        &mut at,
        &p.start_frac[(f.start.1 / 1_000_000) as usize],
    );
    let (secs, nanos) = f.duration;
    marks.duration = at;
    if secs < 10 {
        put_array(out, &mut at, &[b'0' + secs as u8, b'.']);
    } else {
        put_number(out, &mut at, secs);
        put_array(out, &mut at, b".");
    }
    marks.fraction = at;
    if p.micros {
        let micros = nanos / 1_000;
        put_array(out, &mut at, &DIGITS3[(micros / 1_000) as usize]);
        at -= 1;
        put(out, &mut at, &p.duration_frac[(micros % 1_000) as usize]);
    } else {
        put(out, &mut at, &p.duration_frac[(nanos / 1_000_000) as usize]);
    }
    match f.kind {
        None => put(out, &mut at, &p.endings[f.ending.slot()]),
        Some(k) => {
            put(out, &mut at, &p.outcomes[f.ending.slot()]);
            put_slice(out, &mut at, k.name().as_bytes());
            put(out, &mut at, &p.after_kind);
        }
    }
    marks.attempt = at;
    match p.attempts.get(f.attempt as usize) {
        Some(b) if f.attempt != 0 => put(out, &mut at, b),
        _ => {
            put_number(out, &mut at, u64::from(f.attempt));
            put(out, &mut at, &p.end);
        }
    }
    at
}

/// How many bytes a [`Template`] holds: a line whose file name's spelling is at most
/// [`TEMPLATE_FILE`] bytes, with every piece copied as its whole block.
const TEMPLATE: usize = 512;

/// The longest file name spelling a [`Template`] takes (longer ones are spelled straight
/// into the buffer, line by line).
const TEMPLATE_FILE: usize = 64;

/// Where the columns of a spelled line that a later line may write over are.
#[derive(Debug, Default, Clone, Copy)]
struct Marks {
    /// The record number's digits.
    record: (usize, usize),
    /// The line number's digits.
    line: (usize, usize),
    /// The worker's (one digit, when it is one).
    worker: usize,
    /// The start's milliseconds.
    millis: usize,
    /// The duration's whole seconds (one digit, when they are one).
    duration: usize,
    /// The duration's fraction (three or six digits).
    fraction: usize,
    /// The attempt number (one digit, when it is one).
    attempt: usize,
}

/// The values a [`Template`]'s line spells, where a later line may differ.
#[derive(Debug, Clone, Copy)]
struct Held {
    record: u64,
    line: u64,
    worker: u64,
    second: u64,
    duration: u64,
    ending: Ending,
    kind: Option<DeadLetterKind>,
    attempt: u32,
}

/// The last line spelled, kept so that the next one is that line with a few digits written
/// over: the record and line numbers counted up in place, the worker, the milliseconds, the
/// duration and the attempt number written at their marks. A line whose columns would
/// change width (a number gaining a digit, another second, another outcome, a worker or
/// attempt number of two digits) is spelled anew.
struct Template {
    bytes: [u8; TEMPLATE],
    /// The line's length; 0 when there is none to write over.
    len: usize,
    marks: Marks,
    held: Held,
}

impl Default for Template {
    fn default() -> Template {
        Template {
            bytes: [0; TEMPLATE],
            len: 0,
            marks: Marks::default(),
            held: Held {
                record: 0,
                line: 0,
                worker: 0,
                second: 0,
                duration: 0,
                ending: Ending::Failed,
                kind: None,
                attempt: 0,
            },
        }
    }
}

impl Template {
    /// Makes the line spell record `record`'s attempt `f` read at `line`, if only digits
    /// change in place; else says no (and the line is to be spelled anew).
    #[inline]
    fn patch(&mut self, line: u64, record: u64, f: &Fields, micros: bool) -> bool {
        let h = &mut self.held;
        let one_digit = |n: u64| n.wrapping_sub(1) < 9;
        if self.len == 0
            || f.start.0 != h.second
            || f.ending != h.ending
            || f.kind != h.kind
            || (f.worker != h.worker && !(one_digit(f.worker) && one_digit(h.worker)))
            || (f.duration.0 != h.duration && (f.duration.0 >= 10 || h.duration >= 10))
            || (f.attempt != h.attempt
                && !(one_digit(u64::from(f.attempt)) && one_digit(u64::from(h.attempt))))
        {
            return false;
        }
        let m = &self.marks;
        let b = &mut self.bytes;
        if !count_up(b, m.record, &mut h.record, record) || !count_up(b, m.line, &mut h.line, line)
        {
            self.len = 0;
            return false;
        }
        if f.worker != h.worker {
            b[m.worker] = b'0' + f.worker as u8;
            h.worker = f.worker;
        }
        let millis = (f.start.1 / 1_000_000) as usize;
        b[m.millis..m.millis + 3].copy_from_slice(&DIGITS3[millis][..3]);
        if f.duration.0 != h.duration {
            b[m.duration] = b'0' + f.duration.0 as u8;
            h.duration = f.duration.0;
        }
        if micros {
            let micros = (f.duration.1 / 1_000) as usize;
            b[m.fraction..m.fraction + 3].copy_from_slice(&DIGITS3[micros / 1_000][..3]);
            b[m.fraction + 3..m.fraction + 6].copy_from_slice(&DIGITS3[micros % 1_000][..3]);
        } else {
            let millis = (f.duration.1 / 1_000_000) as usize;
            b[m.fraction..m.fraction + 3].copy_from_slice(&DIGITS3[millis][..3]);
        }
        if f.attempt != h.attempt {
            b[m.attempt] = b'0' + f.attempt as u8;
            h.attempt = f.attempt;
        }
        true
    }
}

/// Makes the digits `digits` of `bytes`, which spell `held`, spell `n`, if `n` is `held` or
/// one more with as many digits; else says no (the digits may then be spoilt).
#[inline(always)]
fn count_up(bytes: &mut [u8; TEMPLATE], digits: (usize, usize), held: &mut u64, n: u64) -> bool {
    if n == *held {
        return true;
    }
    if n.wrapping_sub(*held) != 1 || n == 0 {
        return false;
    }
    // The last digit (its place is inside the template: the mask only spares a bounds check).
    let last = &mut bytes[(digits.1 - 1) & (TEMPLATE - 1)];
    if *last != b'9' {
        *last += 1;
        *held = n;
        return true;
    }
    count_up_carrying(bytes, digits, held, n)
}

/// [`count_up`] past a 9.
#[cold]
fn count_up_carrying(bytes: &mut [u8], digits: (usize, usize), held: &mut u64, n: u64) -> bool {
    let mut i = digits.1;
    while i > digits.0 {
        i -= 1;
        if bytes[i] != b'9' {
            bytes[i] += 1;
            *held = n;
            return true;
        }
        bytes[i] = b'0';
    }
    false
}

/// Writes `n`'s decimal digits into `out`, which is exactly as long as they are.
#[inline]
fn write_digits(out: &mut [u8], mut n: u64) {
    let mut i = out.len();
    while n >= 100 {
        let p = (n % 100) as usize * 2;
        n /= 100;
        i -= 2;
        out[i..i + 2].copy_from_slice(&PAIRS[p..p + 2]);
    }
    if n >= 10 {
        let p = n as usize * 2;
        out[i - 2..i].copy_from_slice(&PAIRS[p..p + 2]);
    } else {
        out[i - 1] = b'0' + n as u8;
    }
}

/// The length of the job log's leading lines that belong to committed records (the header
/// included): the lines of a chunk are written together, before its commit, so what follows
/// the first line of an uncommitted record (or a line cut short) is uncommitted too.
fn committed_length(
    file: &mut File,
    format: Format,
    committed: &Committed,
) -> std::io::Result<u64> {
    file.seek(std::io::SeekFrom::Start(0))?;
    let mut reader = BufReader::with_capacity(64 << 10, &*file);
    let mut keep = 0u64;
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let n = reader.read_until(b'\n', &mut buf)?;
        if n == 0 || buf.last() != Some(&b'\n') {
            break;
        }
        let text = String::from_utf8_lossy(&buf);
        let record = match format {
            Format::Tsv if keep == 0 && text.starts_with("record\t") => None,
            Format::Tsv => match text.split('\t').next().and_then(|r| r.parse::<u64>().ok()) {
                Some(r) => Some(r),
                None => break,
            },
            Format::Jsonl => match serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v.get("record").and_then(serde_json::Value::as_u64))
            {
                Some(r) => Some(r),
                None => break,
            },
        };
        if let Some(r) = record {
            if r == 0 || !committed.contains(r - 1) {
                break;
            }
        }
        keep += n as u64;
    }
    Ok(keep)
}

#[cfg(test)]
mod tests {
    use super::*;
    use herdsman_workers::Started;

    fn attempt(at: Instant, n: u32, ending: Ending) -> Attempt {
        Attempt {
            attempt: n,
            worker: Some(2),
            start: at,
            duration: Duration::from_millis(250),
            ending,
            kind: (ending == Ending::Failed).then_some(DeadLetterKind::Reported),
        }
    }

    /// A line as `format!` spells it: what the job log's pieces and template must match.
    fn reference(format: Format, file: &str, line: u64, seq: u64, f: &Fields) -> String {
        let start = format!("{}.{:03}", f.start.0, f.start.1 / 1_000_000);
        let ending = f.ending.name();
        match format {
            Format::Tsv => {
                let file = if file.is_empty() {
                    "-".to_string()
                } else {
                    file.replace(['\t', '\n', '\r'], " ")
                };
                let worker = match f.worker {
                    0 => "-".to_string(),
                    w => w.to_string(),
                };
                let duration = format!("{}.{:03}", f.duration.0, f.duration.1 / 1_000_000);
                let kind = f.kind.map_or("-", |k| k.name());
                format!(
                    "{}\t{file}\t{line}\t{worker}\t{start}\t{duration}\t{ending}\t{kind}\t{}\n",
                    u128::from(seq) + 1,
                    f.attempt
                )
            }
            Format::Jsonl => {
                let file = serde_json::to_string(file).unwrap();
                let worker = match f.worker {
                    0 => "null".to_string(),
                    w => w.to_string(),
                };
                let duration = format!("{}.{:06}", f.duration.0, f.duration.1 / 1_000);
                let kind = f
                    .kind
                    .map_or("null".to_string(), |k| format!("\"{}\"", k.name()));
                format!(
                    "{{\"record\":{},\"file\":{file},\"line\":{line},\"worker\":{worker},\"start\":{start},\"duration\":{duration},\"outcome\":\"{ending}\",\"kind\":{kind},\"attempt\":{}}}\n",
                    u128::from(seq) + 1,
                    f.attempt
                )
            }
        }
    }

    /// A small seeded generator (xorshift64*), so that the test is the same on every run.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
        fn pick<T: Copy>(&mut self, from: &[T]) -> T {
            from[self.below(from.len() as u64) as usize]
        }
    }

    #[test]
    fn lines_match_format_on_random_runs_of_attempts() {
        let long = "d/".repeat(40) + "in.csv";
        let files = [
            "in.csv".to_string(),
            String::new(),
            "a\tb \"q\" \u{e9}.csv".to_string(),
            "x".repeat(46),
            "x".repeat(47),
            "x".repeat(63),
            "x".repeat(64),
            long,
        ];
        let dir = tempfile::tempdir().unwrap();
        for (format, name) in [(Format::Tsv, "jobs.tsv"), (Format::Jsonl, "jobs.jsonl")] {
            let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
            let mut log = JobLog::open(&dir.path().join(name), None).unwrap();
            log.used = 0;
            let (mut seq, mut line, mut second) = (0u64, 2u64, 1_764_000_000u64);
            let mut file = files[0].clone();
            let mut want = String::new();
            for n in 0..200_000u32 {
                // Mostly the next record one line further; now and then a jump (to just
                // below a power of ten, to the largest numbers), a retry, another file.
                match rng.below(100) {
                    0 => {
                        let any = rng.next();
                        seq = rng.pick(&[0, 8, 98, 998, 99_998, u64::MAX - 3, any >> 1]);
                        line = rng.pick(&[0, 9, 99, 9_999, u64::MAX - 2, any]);
                    }
                    1 => file = files[rng.below(files.len() as u64) as usize].clone(),
                    2..=4 => {}
                    _ => {
                        seq = if seq >= u64::MAX - 1 { 0 } else { seq + 1 };
                        line = line.wrapping_add(1 + u64::from(rng.below(50) == 0));
                    }
                }
                match rng.below(1000) {
                    0 => {
                        let shift = rng.below(64);
                        second = rng.next() >> shift;
                    }
                    1..=20 => second += 1,
                    _ => {}
                }
                let f = Fields {
                    attempt: match rng.below(50) {
                        0 => rng.pick(&[0, 9, 10, 64, 65, 99, u32::MAX]),
                        1..=5 => rng.below(9) as u32 + 1,
                        _ => 1,
                    },
                    worker: match rng.below(50) {
                        0 => rng.pick(&[0, 9, 10, 99, 256, 257, u64::MAX]),
                        _ => rng.below(4) + 1,
                    },
                    start: (second, rng.below(1_000_000_000) as u32),
                    duration: (
                        match rng.below(50) {
                            0 => rng.pick(&[9, 10, 99, 12_345, u64::MAX]),
                            _ => rng.below(2),
                        },
                        rng.below(1_000_000_000) as u32,
                    ),
                    ending: match rng.below(20) {
                        0 => Ending::Filtered,
                        1 => Ending::Failed,
                        _ => Ending::Succeeded,
                    },
                    kind: match rng.below(20) {
                        0 => Some(rng.pick(&DeadLetterKind::ALL)),
                        _ => None,
                    },
                };
                log.spell_file(&file);
                log.line(line, seq, &f);
                want.push_str(&reference(format, &file, line, seq, &f));
                if log.used >= BUFFER || n % 997 == 0 {
                    let got = String::from_utf8(log.buf[..log.used].to_vec()).unwrap();
                    assert_eq!(got, want, "{name}, line {n}");
                    log.used = 0;
                    want.clear();
                }
            }
            let got = String::from_utf8(log.buf[..log.used].to_vec()).unwrap();
            assert_eq!(got, want, "{name}");
            log.used = 0;
        }
    }

    #[test]
    fn the_clock_gives_nanoseconds_since_its_anchor_and_zero_before_it() {
        let anchor = Instant::now();
        let clock = Clock::new(anchor);
        let mut rng = Rng(7);
        for _ in 0..1_000 {
            let d = Duration::new(rng.below(1 << 34), rng.below(1_000_000_000) as u32);
            let Some(later) = anchor.checked_add(d) else {
                continue;
            };
            assert_eq!(clock.since_anchor(later), nanos(d), "{d:?}");
            if let Some(earlier) = anchor.checked_sub(d) {
                assert_eq!(clock.since_anchor(earlier), 0, "-{d:?}");
            }
        }
        assert_eq!(clock.since_anchor(anchor), 0);
    }

    #[test]
    fn lines_have_every_column_in_both_formats() {
        let dir = tempfile::tempdir().unwrap();
        for (name, want) in [
            (
                "jobs.tsv",
                format!(
                    "{TSV_HEADER}2\tin.csv\t3\t2\t1.500\t0.250\tfailed\treported\t1\n2\tin.csv\t3\t2\t1.500\t0.250\tsucceeded\t-\t2\n"
                ),
            ),
            (
                "jobs.jsonl",
                concat!(
                    r#"{"record":2,"file":"in.csv","line":3,"worker":2,"start":1.500,"duration":0.250000,"outcome":"failed","kind":"reported","attempt":1}"#,
                    "\n",
                    r#"{"record":2,"file":"in.csv","line":3,"worker":2,"start":1.500,"duration":0.250000,"outcome":"succeeded","kind":null,"attempt":2}"#,
                    "\n"
                )
                .to_string(),
            ),
        ] {
            let path = dir.path().join(name);
            let mut log = JobLog::open(&path, None).unwrap();
            let now = Instant::now();
            log.base = (now, SystemTime::UNIX_EPOCH + Duration::from_millis(1_500));
            log.write(
                "in.csv",
                3,
                1,
                &[attempt(now, 1, Ending::Failed), attempt(now, 2, Ending::Succeeded)],
            )
            .unwrap();
            log.sync().unwrap();
            let text = std::fs::read_to_string(&path).unwrap();
            assert_eq!(text, want);
            if name.ends_with(".jsonl") {
                for l in text.lines() {
                    serde_json::from_str::<serde_json::Value>(l).unwrap();
                }
            }
        }
    }

    #[test]
    fn the_longest_numbers_and_file_names_are_spelled_in_full() {
        let dir = tempfile::tempdir().unwrap();
        let long = "dir/".repeat(30) + "in.csv";
        let (m, w, n) = (u64::MAX, usize::MAX, u32::MAX);
        for (name, want) in [
            (
                "jobs.tsv",
                format!(
                    "{TSV_HEADER}{m}\t{long}\t{m}\t{w}\t1.500\t{m}.999\tfailed\tinput_field_count\t{n}\n\
                     1\tshort.csv\t0\t2\t1.500\t0.250\tfiltered\t-\t1\n"
                ),
            ),
            (
                "jobs.jsonl",
                format!(
                    "{{\"record\":{m},\"file\":\"{long}\",\"line\":{m},\"worker\":{w},\"start\":1.500,\"duration\":{m}.999999,\"outcome\":\"failed\",\"kind\":\"input_field_count\",\"attempt\":{n}}}\n\
                     {{\"record\":1,\"file\":\"short.csv\",\"line\":0,\"worker\":2,\"start\":1.500,\"duration\":0.250000,\"outcome\":\"filtered\",\"kind\":null,\"attempt\":1}}\n"
                ),
            ),
        ] {
            let path = dir.path().join(name);
            let mut log = JobLog::open(&path, None).unwrap();
            let now = Instant::now();
            log.base = (now, SystemTime::UNIX_EPOCH + Duration::from_millis(1_500));
            let mut a = attempt(now, n, Ending::Failed);
            a.worker = Some(w);
            a.duration = Duration::new(m, 999_999_999);
            a.kind = Some(DeadLetterKind::InputFieldCount);
            log.write(&long, m, m - 1, &[a]).unwrap();
            log.write("short.csv", 0, 0, &[attempt(now, 1, Ending::Filtered)])
                .unwrap();
            log.sync().unwrap();
            assert_eq!(std::fs::read_to_string(&path).unwrap(), want, "{name}");
        }
    }

    #[test]
    fn a_log_larger_than_its_buffer_reaches_the_file_in_whole_lines_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jobs.tsv");
        let mut log = JobLog::open(&path, None).unwrap();
        let records = 20_000u64;
        for seq in 0..records {
            log.write(
                "in.csv",
                seq + 2,
                seq,
                &[attempt(Instant::now(), 1, Ending::Succeeded)],
            )
            .unwrap();
        }
        // Past the buffer, lines were written before any sync: whole lines only.
        let early = std::fs::read(&path).unwrap();
        assert!(early.len() >= BUFFER, "{} bytes", early.len());
        assert_eq!(early.last(), Some(&b'\n'));
        // The rest is written when the job log is dropped, as it was synced.
        drop(log);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with(TSV_HEADER));
        let numbers: Vec<u64> = text
            .lines()
            .skip(1)
            .map(|l| l.split('\t').next().unwrap().parse().unwrap())
            .collect();
        assert_eq!(numbers, (1..=records).collect::<Vec<u64>>());
    }

    #[test]
    fn start_times_keep_three_digits_across_seconds() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jobs.tsv");
        let mut log = JobLog::open(&path, None).unwrap();
        let now = Instant::now();
        log.base = (now, SystemTime::UNIX_EPOCH + Duration::from_millis(9_995));
        for (seq, after) in [(0, 0), (1, 4), (2, 5), (3, 1_006)] {
            let mut a = attempt(now + Duration::from_millis(after), 1, Ending::Succeeded);
            a.duration = Duration::from_micros(1_000_500);
            log.write("in.csv", seq + 2, seq, &[a]).unwrap();
        }
        log.sync().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let starts: Vec<&str> = text
            .lines()
            .skip(1)
            .map(|l| l.split('\t').nth(4).unwrap())
            .collect();
        assert_eq!(starts, ["9.995", "9.999", "10.000", "11.001"]);
        assert!(text
            .lines()
            .skip(1)
            .all(|l| l.split('\t').nth(5) == Some("1.000")));
    }

    #[test]
    fn resuming_keeps_the_lines_of_committed_records_only() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["jobs.tsv", "jobs.jsonl"] {
            let path = dir.path().join(name);
            let mut log = JobLog::open(&path, None).unwrap();
            for seq in 0..6 {
                log.write(
                    "in.csv",
                    seq + 2,
                    seq,
                    &[attempt(Instant::now(), 1, Ending::Succeeded)],
                )
                .unwrap();
            }
            log.sync().unwrap();
            drop(log);
            // A line cut short by a crash at the end.
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .unwrap();
            f.write_all(b"7\tin.csv").unwrap();
            drop(f);
            // Records 0..2 and 4..6 committed (unordered mode), 2..4 not: lines of 4..6 come
            // after the first uncommitted one, so they go too (they were not committed first).
            let committed = Committed(vec![(0, 2), (4, 6)]);
            let log = JobLog::open(&path, Some(&committed)).unwrap();
            drop(log);
            let text = std::fs::read_to_string(&path).unwrap();
            let records: Vec<&str> = text
                .lines()
                .filter(|l| !l.starts_with("record\t"))
                .collect();
            assert_eq!(records.len(), 2, "{name}: {text}");
            assert_eq!(
                Format::of(&path) == Format::Tsv,
                text.starts_with(TSV_HEADER)
            );
        }
    }

    #[test]
    fn the_job_log_thread_has_written_every_record_handed_over_when_sync_returns() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jobs.tsv");
        // Fewer slots than records in flight: ids also go beside the slots.
        let (mut tracker, finished) = attempts(64);
        let mut writer = JobLog::open(&path, None)
            .unwrap()
            .start(Some(finished), vec!["a.csv".into(), "b.csv".into()])
            .unwrap();
        let records = 3 * BATCH as u64 + 7;
        let now = Instant::now();
        for index in 0..records {
            let id = AttemptId { index, attempt: 1 };
            let on = |worker| {
                Some(Started {
                    worker,
                    at: Some(now),
                })
            };
            tracker.finished(id, now, Ending::Succeeded, None, on((index % 2) as usize));
            // Records 10 and 20 failed once before.
            if index % 10 == 0 && index > 0 {
                let again = AttemptId { index, attempt: 2 };
                tracker.finished(again, now, Ending::Filtered, None, on(0));
            }
            if index % 100 == 99 {
                tracker.send();
            }
        }
        tracker.send();
        for index in 0..records {
            let attempts = if index % 10 == 0 && index > 0 { 2 } else { 1 };
            let file = u32::from(index >= records / 2);
            writer
                .write_record(index, attempts, file, index + 2, index)
                .unwrap();
        }
        // Not a whole batch, and far less than the buffer: all of it is written by `sync`.
        writer.sync().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<Vec<&str>> = text
            .lines()
            .skip(1)
            .map(|l| l.split('\t').collect())
            .collect();
        assert_eq!(lines.len() as u64, records + (records - 1) / 10);
        let mut at = 0;
        for index in 0..records {
            let first = &lines[at];
            assert_eq!(first[0], (index + 1).to_string());
            assert_eq!(
                first[1],
                if index >= records / 2 {
                    "b.csv"
                } else {
                    "a.csv"
                }
            );
            assert_eq!(first[2], (index + 2).to_string());
            assert_eq!(first[3], (index % 2 + 1).to_string());
            assert_eq!((first[6], first[8]), ("succeeded", "1"));
            at += 1;
            if index % 10 == 0 && index > 0 {
                assert_eq!((lines[at][0], lines[at][6]), (first[0], "filtered"));
                assert_eq!((lines[at][3], lines[at][8]), ("1", "2"));
                at += 1;
            }
        }
        drop(writer);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
    }

    #[test]
    fn ends_carry_their_starts_and_workers_and_leave_nothing_behind() {
        // 64 slots for 4,000 attempts at once: most go beside the slots.
        let (mut tracker, mut finished) = attempts(64);
        let records = 4_000u64;
        let first = Instant::now();
        let starts: Vec<Instant> = (0..records)
            .map(|i| first + Duration::from_micros(i * 3))
            .collect();
        let now = starts[starts.len() - 1] + Duration::from_millis(5);
        for index in 0..records {
            let id = AttemptId { index, attempt: 1 };
            let (worker, at) = (index as usize % 4, starts[index as usize]);
            // Every 11th never reached a worker (a record that could not be read), every
            // 13th reached a job slot whose command was never run.
            let started = match index {
                i if i % 11 == 0 => None,
                i if i % 13 == 0 => Some(Started { worker, at: None }),
                _ => Some(Started {
                    worker,
                    at: Some(at),
                }),
            };
            tracker.finished(id, now, Ending::Succeeded, None, started);
            if index % 500 == 499 {
                tracker.send();
            }
        }
        tracker.send();
        let mut got = Vec::new();
        for index in 0..records {
            got.clear();
            finished.take(index, 1, &mut got);
            assert_eq!(got.len(), 1, "{index}");
            let a = &got[0];
            assert_eq!(a.start + a.duration, now, "{index}");
            if index % 11 == 0 {
                assert_eq!((a.worker, a.duration), (None, Duration::ZERO), "{index}");
            } else if index % 13 == 0 {
                let w = index as usize % 4 + 1;
                assert_eq!((a.worker, a.duration), (Some(w), Duration::ZERO), "{index}");
            } else {
                assert_eq!(a.worker, Some(index as usize % 4 + 1), "{index}");
                assert_eq!(a.start, starts[index as usize], "{index}");
            }
        }
        assert!(finished.started.is_empty());
    }

    #[test]
    fn attempts_carry_their_worker_and_arrive_in_order() {
        let (mut tracker, mut finished) = attempts(1024);
        let id = |attempt| AttemptId { index: 4, attempt };
        let now = Instant::now();
        let on = |worker| {
            Some(Started {
                worker,
                at: Some(now),
            })
        };
        tracker.finished(
            id(1),
            now,
            Ending::Failed,
            Some(DeadLetterKind::Timeout),
            on(0),
        );
        tracker.finished(id(2), now, Ending::Succeeded, None, on(2));
        tracker.send();
        let mut got = Vec::new();
        finished.take(4, 2, &mut got);
        assert_eq!(got.len(), 2);
        assert_eq!((got[0].attempt, got[0].worker), (1, Some(1)));
        assert_eq!(got[0].kind, Some(DeadLetterKind::Timeout));
        assert_eq!((got[1].attempt, got[1].worker), (2, Some(3)));
        let mut again = Vec::new();
        finished.take(4, 2, &mut again);
        finished.take(5, 1, &mut again);
        assert!(again.is_empty());
        assert!(finished.started.is_empty());
    }
}
