//! The job log (`--joblog PATH`), GNU parallel style: one line per attempt of a record, with
//! the record's number, its input file and line, the worker that ran the attempt, when it
//! started, how long it took, how it ended, the kind of its failure and its attempt number.
//! Tab-separated with a header line, or JSON lines when PATH ends in `.jsonl` or `.json`.
//!
//! The executor notes each attempt in an [`Attempts`] table as it starts and ends; the
//! assembler takes a record's attempts when it writes the record, so the job log is written
//! chunk by chunk with the output, and fsynced with it before each checkpoint commit. On
//! resume it is cut back to the lines of the committed chunks, as the output is, so that after
//! a crash it holds exactly one line per attempt of the committed work. This module must
//! never write a line for a record outside the chunk being written, and never keep a line of
//! uncommitted work on resume.

use crate::id_map::IdSlots;
use std::fs::File;
use std::io::{BufRead, BufReader, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result};
use herdsman::executor::AttemptId;
use herdsman_io::DeadLetterKind;
use herdsman_ledger::ChunkCommit;

use crate::config::EnvError;

/// How one attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// It produced output records.
    Succeeded,
    /// It succeeded with no output record.
    Filtered,
    /// It failed (and may be retried: a later line of the same record says).
    Failed,
}

impl Ending {
    /// Its name, padded to a [`Word`] so that it is copied in one fixed-size block.
    fn name(self) -> &'static Word {
        const SUCCEEDED: Word = Word::new(b"succeeded");
        const FILTERED: Word = Word::new(b"filtered");
        const FAILED: Word = Word::new(b"failed");
        match self {
            Ending::Succeeded => &SUCCEEDED,
            Ending::Filtered => &FILTERED,
            Ending::Failed => &FAILED,
        }
    }
}

/// One finished attempt of one record.
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

/// A batch of finished attempts, from the executor to the job log.
type Batch = Vec<(AttemptId, Attempt)>;

/// Where workers report the attempts they start (given to the worker pool or the command
/// runner, which may call it from their own threads).
#[derive(Clone, Default)]
pub struct Starts(Arc<Mutex<Vec<(AttemptId, usize, Instant)>>>);

impl Starts {
    /// Worker `worker` (0-based) started attempt `id` at `at`.
    pub fn on_worker(&self, id: AttemptId, worker: usize, at: Instant) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((id, worker, at));
    }
}

/// Notes each attempt as it ends, on the engine's thread, and hands them to the job log in
/// batches (one channel send per poll of the executor).
pub struct Tracker {
    starts: Starts,
    pulled: Vec<(AttemptId, usize, Instant)>,
    started: IdSlots<(usize, Instant)>,
    batch: Batch,
    tx: mpsc::Sender<Batch>,
    /// Emptied batches the job log gives back, reused instead of allocating one per poll.
    spare: mpsc::Receiver<Batch>,
}

impl Tracker {
    /// Takes the starts the workers reported since the last call.
    fn pull(&mut self) {
        std::mem::swap(
            &mut *self.starts.0.lock().unwrap_or_else(|p| p.into_inner()),
            &mut self.pulled,
        );
        for (id, worker, at) in self.pulled.drain(..) {
            self.started.insert(id, (worker, at));
        }
    }

    /// Attempt `id` ended (it was reported at `now`); `worker` (0-based) when the outcome
    /// names it.
    pub fn finished(
        &mut self,
        id: AttemptId,
        now: Instant,
        ending: Ending,
        kind: Option<DeadLetterKind>,
        worker: Option<usize>,
    ) {
        // One lookup when the start was already pulled; a second after pulling otherwise.
        let started = match self.started.remove(&id) {
            Some(s) => Some(s),
            None => {
                self.pull();
                self.started.remove(&id)
            }
        };
        let (started_on, start) = match started {
            Some((w, at)) => (Some(w), at),
            // Never handed to a worker: a record that could not be read fails at once.
            None => (None, now),
        };
        let attempt = Attempt {
            attempt: id.attempt,
            worker: worker.or(started_on).map(|w| w + 1),
            start,
            duration: now.saturating_duration_since(start),
            ending,
            kind,
        };
        self.batch.push((id, attempt));
    }

    /// Attempt `id` was given up without an outcome (the run stopped): no line for it.
    pub fn abandoned(&mut self, id: AttemptId) {
        self.pull();
        self.started.remove(&id);
    }

    /// Hands the attempts noted since the last call to the job log.
    pub fn send(&mut self) {
        if !self.batch.is_empty() {
            let next = self.spare.try_recv().unwrap_or_default();
            let _ = self.tx.send(std::mem::replace(&mut self.batch, next));
        }
    }
}

/// The job log's side: the finished attempts, taken record by record as records are written.
pub struct Finished {
    rx: mpsc::Receiver<Batch>,
    done: IdSlots<Attempt>,
    /// Where emptied batches go back to the executor's side.
    spare: mpsc::Sender<Batch>,
}

impl Finished {
    /// The attempts `1..=attempts` of the record at engine index `index`, appended to `out`.
    /// Every attempt the engine counted was sent before its outcome reached the caller.
    #[cfg(test)]
    pub fn take(&mut self, index: u64, attempts: u32, out: &mut Vec<Attempt>) {
        for attempt in 1..=attempts {
            out.extend(self.take_one(AttemptId { index, attempt }));
        }
    }

    /// Attempt `id`, if the executor noted it (and it was not taken before).
    fn take_one(&mut self, id: AttemptId) -> Option<Attempt> {
        self.done.remove(&id).or_else(|| {
            while let Ok(mut batch) = self.rx.try_recv() {
                self.done.extend(batch.drain(..));
                let _ = self.spare.send(batch);
            }
            self.done.remove(&id)
        })
    }
}

/// The three ends of the attempt notes: for the workers, the executor and the job log;
/// `window` is the most records admitted but not yet written (the attempts are kept in
/// slots by record, so that noting and taking one needs no hashing).
pub fn attempts(window: usize) -> (Starts, Tracker, Finished) {
    let starts = Starts::default();
    let (tx, rx) = mpsc::channel();
    let (spare_tx, spare_rx) = mpsc::channel();
    let tracker = Tracker {
        starts: starts.clone(),
        pulled: Vec::new(),
        started: IdSlots::new(window),
        batch: Vec::new(),
        tx,
        spare: spare_rx,
    };
    let finished = Finished {
        rx,
        done: IdSlots::new(window),
        spare: spare_tx,
    };
    (starts, tracker, finished)
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

/// An open job log.
pub struct JobLog {
    path: PathBuf,
    format: Format,
    out: File,
    /// Lines not yet written to `out`: at most about [`BUFFER`] bytes.
    buf: Vec<u8>,
    /// The attempts, as the executor hands them over.
    finished: Option<Finished>,
    /// The last input file name and its spelling in this format (padded to a [`Word`] too
    /// when it fits one).
    file: (String, String, Option<Word>),
    /// The line being put together (kept, so that its bytes need no clearing per line).
    line: Line,
    /// A moment on both clocks, to turn an attempt's `Instant` into wall-clock time.
    base: (Instant, SystemTime),
    /// `base`'s wall-clock time as time since the Unix epoch, worked out once (and again
    /// only if `base` changes).
    epoch: (SystemTime, Duration),
    /// The last start's whole seconds since the epoch, and their digits with the point (and
    /// how many bytes those are): the attempts of one second share them, so only the
    /// milliseconds are formatted.
    second: (u64, [u8; WORD], usize),
}

impl JobLog {
    /// Opens the job log at `path`: new (and emptied) for a fresh run, or, resuming, cut back
    /// to its lines of the `committed` records (a crash may have left lines of chunks that
    /// were written but not committed; they are redone and logged again).
    pub fn open(path: &Path, resume: Option<&Committed>) -> Result<JobLog> {
        let format = Format::of(path);
        let env = |e: std::io::Error| {
            anyhow::Error::new(EnvError(format!(
                "cannot write the job log {}: {e}; check the --joblog path and its permissions",
                path.display()
            )))
        };
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
        let mut buf = Vec::with_capacity(BUFFER + (4 << 10));
        if keep == 0 && format == Format::Tsv {
            buf.extend_from_slice(TSV_HEADER.as_bytes());
        }
        let base = (Instant::now(), SystemTime::now());
        Ok(JobLog {
            path: path.to_path_buf(),
            format,
            out: file,
            buf,
            finished: None,
            file: (String::new(), String::new(), None),
            line: Line::new(),
            base,
            epoch: (base.1, since_epoch(base.1)),
            second: (u64::MAX, [0; WORD], 0),
        })
    }

    /// Takes the attempts to log from `finished` (the executor's notes).
    pub fn attach(&mut self, finished: Finished) {
        self.finished = Some(finished);
    }

    /// Writes the lines of the attempts of the record at engine index `index`: `attempts`
    /// of them, read from input `file` at `line`, record number `seq` (0-based).
    pub fn write_record(
        &mut self,
        index: u64,
        attempts: u32,
        file: &str,
        line: u64,
        seq: u64,
    ) -> Result<()> {
        if self.finished.is_none() {
            return Ok(());
        }
        self.spell_file(file);
        // Each attempt's line goes straight into the buffer, as it is taken from the notes.
        for attempt in 1..=attempts {
            let id = AttemptId { index, attempt };
            if let Some(a) = self.finished.as_mut().and_then(|f| f.take_one(id)) {
                self.line(line, seq, &a);
            }
        }
        self.spill()
    }

    /// Writes the lines of one record's attempts.
    #[cfg(test)]
    pub fn write(&mut self, file: &str, line: u64, seq: u64, attempts: &[Attempt]) -> Result<()> {
        if attempts.is_empty() {
            return Ok(());
        }
        self.spell_file(file);
        for a in attempts {
            self.line(line, seq, a);
        }
        self.spill()
    }

    /// Remembers how `file` is spelled in this format, unless it is the last file's name.
    fn spell_file(&mut self, file: &str) {
        if self.file.0 != file {
            let spelled = match self.format {
                Format::Tsv if file.is_empty() => "-".to_string(),
                Format::Tsv => file.replace(['\t', '\n', '\r'], " "),
                Format::Jsonl => serde_json::to_string(file).unwrap_or_else(|_| "\"\"".into()),
            };
            let padded = (spelled.len() <= WORD).then(|| Word::new(spelled.as_bytes()));
            self.file = (file.to_string(), spelled, padded);
        }
    }

    /// Appends attempt `a`'s line to the buffer (the file's spelling is `self.file.1`).
    fn line(&mut self, line: u64, seq: u64, a: &Attempt) {
        if self.epoch.0 != self.base.1 {
            self.epoch = (self.base.1, since_epoch(self.base.1));
        }
        // The wall-clock start: the base's, moved by the attempt's distance from the base on
        // the monotonic clock (one subtraction, no clock reading).
        let since_epoch = match a.start.checked_duration_since(self.base.0) {
            Some(after) => self.epoch.1 + after,
            None => self
                .epoch
                .1
                .saturating_sub(self.base.0.duration_since(a.start)),
        };
        let kind = a.kind.map(|k| k.name().as_bytes());
        let outcome = a.ending.name();
        // Put together in the line block, field by field at a cursor (fixed-size copies,
        // digits written in place), and copied to the buffer once: a line per attempt of a
        // million-record run must not cost a call per field.
        let l = &mut self.line;
        l.len = 0;
        let b = &mut self.buf;
        let file = (self.file.1.as_bytes(), self.file.2.as_ref());
        match self.format {
            Format::Tsv => {
                l.number(seq + 1);
                l.put(b"\t");
                l.text(b, file.0, file.1);
                l.put(b"\t");
                l.number(line);
                l.put(b"\t");
                match a.worker {
                    Some(w) => l.number(w as u64),
                    None => l.put(b"-"),
                }
                l.put(b"\t");
                l.start(&mut self.second, since_epoch);
                l.put(b"\t");
                l.decimal(a.duration.as_secs(), a.duration.subsec_millis(), 3);
                l.put(b"\t");
                l.word(outcome);
                l.put(b"\t");
                match kind {
                    Some(k) => l.text(b, k, None),
                    None => l.put(b"-"),
                }
                l.put(b"\t");
                l.number(u64::from(a.attempt));
                l.put(b"\n");
            }
            Format::Jsonl => {
                l.put(b"{\"record\":");
                l.number(seq + 1);
                l.put(b",\"file\":");
                l.text(b, file.0, file.1);
                l.put(b",\"line\":");
                l.number(line);
                l.put(b",\"worker\":");
                match a.worker {
                    Some(w) => l.number(w as u64),
                    None => l.put(b"null"),
                }
                l.put(b",\"start\":");
                l.start(&mut self.second, since_epoch);
                l.put(b",\"duration\":");
                l.decimal(a.duration.as_secs(), a.duration.subsec_micros(), 6);
                l.put(b",\"outcome\":\"");
                l.word(outcome);
                l.put(b"\",\"kind\":");
                match kind {
                    Some(k) => {
                        l.put(b"\"");
                        l.text(b, k, None);
                        l.put(b"\"");
                    }
                    None => l.put(b"null"),
                }
                l.put(b",\"attempt\":");
                l.number(u64::from(a.attempt));
                l.put(b"}\n");
            }
        }
        b.extend_from_slice(l.bytes());
    }

    /// Writes the buffer to the file once it holds [`BUFFER`] bytes or more.
    fn spill(&mut self) -> Result<()> {
        if self.buf.len() >= BUFFER {
            self.write_buffer()?;
        }
        Ok(())
    }

    /// Writes the whole buffer to the file.
    fn write_buffer(&mut self) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let written = self.out.write_all(&self.buf);
        // Cleared also on failure: the run ends with this error, and the bytes are not tried
        // again when the job log is dropped.
        self.buf.clear();
        written.with_context(|| format!("cannot write the job log {}", self.path.display()))
    }

    /// Flushes and fsyncs the job log (before a checkpoint commit).
    pub fn sync(&mut self) -> Result<()> {
        self.write_buffer()?;
        self.out
            .sync_data()
            .with_context(|| format!("cannot write the job log {}", self.path.display()))
    }
}

impl Drop for JobLog {
    /// Writes what is buffered, as a `BufWriter` would (errors are for [`JobLog::sync`]).
    fn drop(&mut self) {
        let _ = self.write_buffer();
    }
}

/// `at` as time since the Unix epoch (zero before it).
fn since_epoch(at: SystemTime) -> Duration {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
}

/// The longest line [`Line`] holds: the JSON spelling with every number at its longest (20
/// digits) needs about 290 bytes, plus a file name and a failure kind of at most [`WORD`]
/// bytes each (longer ones go to the buffer directly).
const LINE: usize = 384;

/// The longest word [`Line::word`] copies as one block: outcome names, a short file name,
/// and the whole seconds of a start with its point (21 bytes at most).
const WORD: usize = 24;

/// The two digits of 0..100, for writing numbers two digits per step.
const PAIRS: &[u8; 200] = b"\
0001020304050607080910111213141516171819\
2021222324252627282930313233343536373839\
4041424344454647484950515253545556575859\
6061626364656667686970717273747576777879\
8081828384858687888990919293949596979899";

/// A short byte string (at most [`WORD`] bytes) padded to a fixed-size block, so that it is
/// copied without a call.
struct Word {
    bytes: [u8; WORD],
    len: usize,
}

impl Word {
    /// `s` padded (`s` is at most [`WORD`] bytes long).
    const fn new(s: &[u8]) -> Word {
        let mut bytes = [0u8; WORD];
        let mut i = 0;
        while i < s.len() {
            bytes[i] = s[i];
            i += 1;
        }
        Word {
            bytes,
            len: s.len(),
        }
    }
}

/// One job log line being put together: every field is written at a cursor
/// with fixed-size copies and digits written in place, so that no field costs a call, and
/// the line reaches the job log's buffer in one copy.
struct Line {
    bytes: [u8; LINE + WORD],
    len: usize,
}

impl Line {
    fn new() -> Line {
        Line {
            bytes: [0; LINE + WORD],
            len: 0,
        }
    }

    /// What was written so far.
    fn bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    /// Appends `s`, a constant of the format (its length is known where this is inlined).
    #[inline(always)]
    fn put<const N: usize>(&mut self, s: &[u8; N]) {
        self.bytes[self.len..self.len + N].copy_from_slice(s);
        self.len += N;
    }

    /// Appends `w`: its fixed-size block is copied and the cursor moved by its length.
    #[inline(always)]
    fn word(&mut self, w: &Word) {
        self.bytes[self.len..self.len + WORD].copy_from_slice(&w.bytes);
        self.len += w.len;
    }

    /// Appends `text` (a file name's spelling, or a failure kind): as the fixed-size block
    /// `padded` when there is one, else copied when it fits [`WORD`] bytes, else written to
    /// `out` directly, after what the line holds so far.
    #[inline]
    fn text(&mut self, out: &mut Vec<u8>, text: &[u8], padded: Option<&Word>) {
        if let Some(w) = padded {
            self.word(w);
        } else if text.len() <= WORD {
            self.bytes[self.len..self.len + text.len()].copy_from_slice(text);
            self.len += text.len();
        } else {
            out.extend_from_slice(self.bytes());
            out.extend_from_slice(text);
            self.len = 0;
        }
    }

    /// Appends `n` in decimal, two digits per step, written in place (one digit, the
    /// usual worker, attempt and whole seconds of a duration, without counting digits).
    #[inline(always)]
    fn number(&mut self, n: u64) {
        if n < 10 {
            self.bytes[self.len] = b'0' + n as u8;
            self.len += 1;
        } else {
            self.long_number(n);
        }
    }

    /// Appends `n` (10 or more) in decimal.
    #[inline]
    fn long_number(&mut self, n: u64) {
        let digits = n.checked_ilog10().map_or(1, |l| l as usize + 1);
        let out = &mut self.bytes[self.len..self.len + digits];
        write_digits(out, n);
        self.len += digits;
    }

    /// Appends a start time (`since_epoch`) with milliseconds, the whole seconds and the
    /// point copied from `second` when they are its seconds (else formatted and kept there).
    #[inline]
    fn start(&mut self, second: &mut (u64, [u8; WORD], usize), since_epoch: Duration) {
        let secs = since_epoch.as_secs();
        if second.0 != secs {
            let digits = secs.checked_ilog10().map_or(1, |l| l as usize + 1);
            write_digits(&mut second.1[..digits], secs);
            second.1[digits] = b'.';
            second.2 = digits + 1;
            second.0 = secs;
        }
        self.bytes[self.len..self.len + WORD].copy_from_slice(&second.1);
        self.len += second.2;
        let ms = since_epoch.subsec_millis();
        self.put(&[
            b'0' + (ms / 100) as u8,
            b'0' + (ms / 10 % 10) as u8,
            b'0' + (ms % 10) as u8,
        ]);
    }

    /// Appends `whole.fraction` with `places` digits after the point (`fraction` <
    /// 10^places; `places` is 3 or 6).
    #[inline]
    fn decimal(&mut self, whole: u64, fraction: u32, places: usize) {
        self.number(whole);
        let mut digits = [b'.', 0, 0, 0, 0, 0, 0];
        let mut f = fraction;
        for d in digits[1..=places].iter_mut().rev() {
            *d = b'0' + (f % 10) as u8;
            f /= 10;
        }
        self.put(&digits);
        // Only `places` digits were meant: the rest of the block is written over next.
        self.len -= 6 - places;
    }
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
    fn attempts_carry_their_worker_and_arrive_in_order() {
        let (starts, mut tracker, mut finished) = attempts(1024);
        let id = |attempt| AttemptId { index: 4, attempt };
        let now = Instant::now();
        starts.on_worker(id(1), 0, now);
        tracker.finished(
            id(1),
            now,
            Ending::Failed,
            Some(DeadLetterKind::Timeout),
            None,
        );
        tracker.finished(id(2), now, Ending::Succeeded, None, Some(2));
        // Another record's attempt, abandoned: nothing for it.
        starts.on_worker(
            AttemptId {
                index: 5,
                attempt: 1,
            },
            1,
            now,
        );
        tracker.abandoned(AttemptId {
            index: 5,
            attempt: 1,
        });
        tracker.send();
        let mut got = Vec::new();
        finished.take(4, 2, &mut got);
        assert_eq!(got.len(), 2);
        assert_eq!((got[0].attempt, got[0].worker), (1, Some(1)));
        assert_eq!((got[1].attempt, got[1].worker), (2, Some(3)));
        let mut again = Vec::new();
        finished.take(4, 2, &mut again);
        finished.take(5, 1, &mut again);
        assert!(again.is_empty());
        assert!(tracker.started.is_empty());
    }
}
