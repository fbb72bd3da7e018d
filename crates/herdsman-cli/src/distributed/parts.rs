//! A node's chunk parts: the output and dead letters of each chunk it claimed, in the shared
//! parts store (a directory or an object-storage prefix, [`super::store`]), then committed
//! through the claim ([`Committer`]). In a directory a node appends its chunks to segment
//! files of its own (`seg-<id>-<n>` and `seg-<id>-<n>.failures`, created new, never
//! rewritten) and a chunk's part is a byte range of one, named `<file>@<start>-<end>`
//! ([`range_name`]): a file per chunk would cost a creation, a rename and an fsync per chunk.
//! On object storage each chunk's part is an object of its own, `part-<chunk>-<attempt>`
//! (and `part-<chunk>-<attempt>.failures`), uploaded whole.
//!
//! The writer never waits for a commit: at a chunk's end [`PartSinks`] hands the unfinished
//! part to the node's committer thread, and [`Committer::commit_chunks`] hands it the commit;
//! both return at once. The thread, in order, finishes each part (written to its end and
//! renamed into place), puts it in the store, makes the parts of every chunk due durable
//! together ([`PartStore::sync_parts`]: the files fsynced, then their directory once; for
//! object storage the upload already was), then commits all of them in one PostgreSQL
//! transaction ([`PostgresLedger::commit_batch`]), which also claims the next chunks. Chunks
//! pile up while a transaction runs, so batches form by themselves. An error on the thread
//! is returned by the next commit and by [`Committer::drain`], which the run's end calls.
//!
//! This module must never commit a chunk whose part is not durable, never name a byte range
//! before it is flushed to its segment, and never let a refused commit's part be read: a
//! part file whose claim was lost is deleted, a range of a segment is left unnamed (the
//! segment goes with the job's parts), and no commit ever names either. A part renamed or
//! appended but not yet synced when the node dies is never named either: its chunk was not
//! committed.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::Result;
use herdsman_io::{OutputFormat, Sink, SinkError, SinkOptions};
use herdsman_ledger::{
    ChunkCommit, ChunkPlan, Claim, JobIdentity, Ledger, LedgerError, LedgerStatus, Opened, Totals,
};
use herdsman_ledger_postgres::PostgresLedger;

use crate::distributed::store::PartStore;
use crate::progress::Log;

/// The claims this node holds and has not committed yet, by chunk: filled by the claimer,
/// kept alive by the heartbeat, emptied by the committer.
pub(crate) type Claims = Arc<Mutex<BTreeMap<u64, Claim>>>;

/// What the writer hands the committer thread, in the order it happened.
enum Work {
    /// A chunk's part files, written to their ends but not finished.
    Part(Box<Written>),
    /// A chunk's parts as ranges of segment files, flushed to them.
    Ranges { chunk: u64, names: Vec<String> },
    /// The writer created the segment file of this name.
    Segment(String),
    /// Chunks due for commit (their parts came before).
    Commit(Vec<ChunkCommit>),
    /// Answer once everything handed over before is done.
    Drain(mpsc::Sender<()>),
    /// Finish what was handed over, then end.
    Close,
}

/// The name of the output part of `chunk`'s claim `attempt`.
pub(crate) fn part_name(chunk: u64, attempt: u64) -> String {
    format!("part-{chunk}-{attempt}")
}

/// The suffix of a dead-letter part's (or segment file's) name.
pub(crate) const FAILURES_SUFFIX: &str = ".failures";

/// The name of the bytes `start..end` of the segment file `file`: `<file>@<start>-<end>`.
pub(crate) fn range_name(file: &str, start: u64, end: u64) -> String {
    format!("{file}@{start}-{end}")
}

/// A part's file, and for a range of a segment file its bytes (`start`, `end`).
pub(crate) fn split_part(name: &str) -> (&str, Option<(u64, u64)>) {
    let range = name.rsplit_once('@').and_then(|(file, range)| {
        let (start, end) = range.split_once('-')?;
        let (start, end) = (start.parse::<u64>().ok()?, end.parse::<u64>().ok()?);
        (start <= end).then_some((file, (start, end)))
    });
    match range {
        Some((file, bytes)) => (file, Some(bytes)),
        None => (name, None),
    }
}

/// Whether the part `name` holds dead letters (a `.failures` file or a range of one).
pub(crate) fn is_failures(name: &str) -> bool {
    split_part(name).0.ends_with(FAILURES_SUFFIX)
}

/// `parts` in the same order, with each run of ranges that follow one another in one file
/// (`f@0-10`, `f@10-25`) as one range (`f@0-25`): the assembler then reads a node's
/// consecutive chunks in one go instead of opening the file once per chunk.
pub(crate) fn coalesce(parts: &[&str]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(parts.len());
    let mut run: Option<(&str, u64, u64)> = None;
    for name in parts {
        match (split_part(name), &mut run) {
            ((file, Some((start, end))), Some((f, _, e))) if file == *f && start == *e => {
                *e = end;
            }
            ((file, Some((start, end))), _) => {
                if let Some((f, s, e)) = run.take() {
                    out.push(range_name(f, s, e));
                }
                run = Some((file, start, end));
            }
            ((_, None), _) => {
                if let Some((f, s, e)) = run.take() {
                    out.push(range_name(f, s, e));
                }
                out.push(name.to_string());
            }
        }
    }
    if let Some((f, s, e)) = run {
        out.push(range_name(f, s, e));
    }
    out
}

/// The size at which a node starts a new segment file (at a chunk's start).
const SEGMENT_MAX: u64 = 1 << 30;

/// How long the committer thread lets chunks due for commit gather before it commits them
/// (unless the node waits for its commits): chunks that take a few milliseconds each then
/// share a transaction, and its WAL flush, by the dozen. A crash redoes at most what the node
/// wrote in this time.
const COMMIT_GATHER: Duration = Duration::from_millis(100);

/// Completes `sink`'s file, hands it to the operating system and renames it into place,
/// without fsync: [`PartStore::sync_parts`] makes it durable before its commit.
fn publish_unsynced(mut sink: Sink) -> Result<(), SinkError> {
    sink.complete()?;
    sink.flush()?;
    let path = sink.path().to_path_buf();
    drop(sink);
    let partial = herdsman_io::partial_path(&path);
    std::fs::rename(&partial, &path).map_err(|source| SinkError::Io {
        action: "rename into",
        path,
        source,
    })
}

/// Fsyncs the files `names` in `dir` from a few threads at once (their flushes overlap in
/// the disk's queue), then, when `with_dir`, `dir` once, so each file and its name are
/// durable.
pub(crate) fn sync_files(
    dir: &std::path::Path,
    names: &[&str],
    with_dir: bool,
) -> std::io::Result<()> {
    if names.is_empty() {
        return Ok(());
    }
    let sync_dir = || match with_dir {
        true => std::fs::File::open(dir)?.sync_all(),
        false => Ok(()),
    };
    if names.len() <= 2 {
        // One chunk's parts, or a segment or two: a thread of their own would cost more
        // system calls than the overlap saves.
        for name in names {
            std::fs::File::open(dir.join(name))?.sync_data()?;
        }
        return sync_dir();
    }
    let threads = names.len().min(8);
    let per = names.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = names
            .chunks(per)
            .map(|group| {
                scope.spawn(move || {
                    for name in group {
                        std::fs::File::open(dir.join(name))?.sync_data()?;
                    }
                    Ok::<(), std::io::Error>(())
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))?;
        }
        Ok::<(), std::io::Error>(())
    })?;
    sync_dir()
}

/// A chunk's parts, written to their ends, for the committer thread to finish.
struct Written {
    chunk: u64,
    attempt: u64,
    output: Sink,
    failures: Option<Sink>,
}

/// Where the chunk being written goes.
enum Target {
    /// Part files of its own (object storage).
    Files(Box<PartFiles>),
    /// Byte ranges of the node's segment files (a directory): where its output began, and
    /// where its dead letters began once it has one.
    Ranges {
        output_start: u64,
        failures_start: Option<u64>,
    },
}

/// A chunk's part files: its output, and its dead letters once it has one.
struct PartFiles {
    output: Sink,
    failures: Option<Sink>,
}

/// The chunk being written.
struct Current {
    chunk: u64,
    attempt: u64,
    target: Target,
}

/// A segment file being appended to: its name in the staging directory and its writer.
struct Segment {
    name: String,
    sink: Sink,
}

/// The segment files of a node that writes its parts as byte ranges ([`range_name`]).
struct Segments {
    /// This node's prefix of segment names, `seg-<pid>-<time>`.
    id: String,
    /// The number of the next segment file.
    next: u64,
    output: Option<Segment>,
    failures: Option<Segment>,
    /// Where the names of new segment files go (the committer thread).
    work: mpsc::Sender<Work>,
}

impl Segments {
    fn new(work: mpsc::Sender<Work>) -> Segments {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Segments {
            id: format!("seg-{:x}-{nanos:x}", std::process::id()),
            next: 0,
            output: None,
            failures: None,
            work,
        }
    }

    /// The open segment of the output (`failures`: of the dead letters, JSON lines), or a
    /// new one: a new file in `dir`, never one that exists (another node's or an earlier
    /// run's, should a name ever repeat).
    fn get(
        &mut self,
        failures: bool,
        dir: &std::path::Path,
        format: &OutputFormat,
        options: &SinkOptions,
    ) -> Result<&mut Segment, SinkError> {
        let Segments {
            id,
            next,
            output,
            failures: failures_segment,
            work,
        } = self;
        let (slot, suffix, format) = match failures {
            true => (failures_segment, FAILURES_SUFFIX, &OutputFormat::Jsonl),
            false => (output, "", format),
        };
        while slot.is_none() {
            let name = format!("{id}-{next}{suffix}");
            *next += 1;
            match Sink::open_segment(&dir.join(&name), format.clone(), options) {
                Ok(sink) => {
                    // The committer removes it at the end if no commit names a range of it.
                    let _ = work.send(Work::Segment(name.clone()));
                    *slot = Some(Segment { name, sink });
                }
                Err(SinkError::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
        }
        Ok(slot.as_mut().expect("opened above"))
    }

    /// At a chunk's start (a range never spans two files): closes the segments that are
    /// full, so that the chunk's bytes go to new ones.
    fn rotate(&mut self) {
        for slot in [&mut self.output, &mut self.failures] {
            if slot
                .as_ref()
                .is_some_and(|s| s.sink.offset() >= SEGMENT_MAX)
            {
                *slot = None;
            }
        }
    }
}

/// [`crate::assemble::Sinks`] that write each chunk into parts of its own: byte ranges of
/// segment files in a directory, part files for object storage.
pub(crate) struct PartSinks {
    store: Arc<dyn PartStore>,
    format: OutputFormat,
    options: SinkOptions,
    claims: Claims,
    /// To the committer thread.
    work: mpsc::Sender<Work>,
    current: Option<Current>,
    /// The node's segment files, when the store takes ranges.
    segments: Option<Segments>,
    /// The staging directory was created since the last [`PartSinks::new_pass`].
    dir_made: bool,
}

impl PartSinks {
    /// What the names of this node's segment files start with (`seg-<pid>-<time>-`), when
    /// it writes segments.
    pub(crate) fn own_segments(&self) -> Option<String> {
        self.segments.as_ref().map(|s| format!("{}-", s.id))
    }

    /// A new pass over the claimable chunks begins: the staging directory is made again if
    /// it is gone, and chunks go to new segment files.
    pub(crate) fn new_pass(&mut self) {
        self.dir_made = false;
        if let Some(s) = &mut self.segments {
            s.output = None;
            s.failures = None;
        }
    }
}

impl PartSinks {
    fn sink_error(&self, message: &str) -> SinkError {
        SinkError::Io {
            action: "write",
            path: PathBuf::from(self.store.location()),
            source: std::io::Error::other(message.to_string()),
        }
    }

    fn current(&mut self) -> Result<&mut Current, SinkError> {
        if self.current.is_none() {
            return Err(self.sink_error("internal error: a record written outside of a chunk"));
        }
        Ok(self.current.as_mut().expect("checked"))
    }

    /// The segment the current chunk's output (`failures`: its dead letters) goes to,
    /// opened if there is none.
    fn segment(&mut self, failures: bool) -> Result<&mut Segment, SinkError> {
        if self.segments.is_none() {
            return Err(self.sink_error("internal error: a range written without segments"));
        }
        let dir = self.store.staging_dir();
        let s = self.segments.as_mut().expect("checked");
        s.get(failures, dir, &self.format, &self.options)
    }
}

impl crate::assemble::Sinks for PartSinks {
    fn begin_chunk(&mut self, chunk: u64) -> Result<(), SinkError> {
        // A claim the heartbeat found lost is gone from the map: its part gets attempt 0,
        // which no commit names, and is deleted (a range: left unnamed) by the committer.
        let attempt = self
            .claims
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&chunk)
            .map_or(0, |c| c.attempt);
        let dir = self.store.staging_dir();
        if !self.dir_made {
            // Once per pass, not once per chunk.
            std::fs::create_dir_all(dir).map_err(|source| SinkError::Io {
                action: "create",
                path: dir.to_path_buf(),
                source,
            })?;
            self.dir_made = true;
        }
        let target = if let Some(s) = &mut self.segments {
            s.rotate();
            Target::Ranges {
                output_start: self.segment(false)?.sink.offset(),
                failures_start: None,
            }
        } else {
            let path = dir.join(part_name(chunk, attempt));
            Target::Files(Box::new(PartFiles {
                output: Sink::open_continuation(&path, self.format.clone(), None, &self.options)?,
                failures: None,
            }))
        };
        self.current = Some(Current {
            chunk,
            attempt,
            target,
        });
        Ok(())
    }
    fn check_outputs(&self, outputs: &[Vec<u8>]) -> Result<(), SinkError> {
        let records = outputs.iter().map(Vec::as_slice);
        match &self.current {
            Some(Current {
                target: Target::Files(files),
                ..
            }) => files.output.check_records(records),
            Some(Current {
                target: Target::Ranges { .. },
                ..
            }) => match self.segments.as_ref().and_then(|s| s.output.as_ref()) {
                Some(segment) => segment.sink.check_records(records),
                None => Ok(()),
            },
            None => Ok(()),
        }
    }
    fn write_output(&mut self, json: &[u8]) -> Result<(), SinkError> {
        if let Target::Files(files) = &mut self.current()?.target {
            return files.output.write_record(json);
        }
        // A range: begin_chunk opened the segment.
        self.segment(false)?.sink.write_record(json)
    }
    fn write_failure(&mut self, json: &[u8]) -> Result<(), SinkError> {
        let store = self.store.clone();
        let c = self.current()?;
        match &mut c.target {
            Target::Files(files) => {
                let failures = &mut files.failures;
                if failures.is_none() {
                    let path = store.staging_dir().join(format!(
                        "{}{FAILURES_SUFFIX}",
                        part_name(c.chunk, c.attempt)
                    ));
                    *failures = Some(Sink::open(&path, OutputFormat::Jsonl, None)?);
                }
                failures.as_mut().expect("opened above").write_record(json)
            }
            Target::Ranges { failures_start, .. } => {
                let started = failures_start.is_some();
                let segment = self.segment(true)?;
                let start = segment.sink.offset();
                segment.sink.write_record(json)?;
                if !started {
                    if let Some(Current {
                        target: Target::Ranges { failures_start, .. },
                        ..
                    }) = &mut self.current
                    {
                        *failures_start = Some(start);
                    }
                }
                Ok(())
            }
        }
    }
    fn end_chunk(&mut self) -> Result<(), SinkError> {
        let Some(Current {
            chunk,
            attempt,
            target,
        }) = self.current.take()
        else {
            return Ok(());
        };
        let work = match target {
            Target::Files(files) => {
                let PartFiles {
                    mut output,
                    failures,
                } = *files;
                output.end_chunk()?;
                // The committer thread finishes the parts, makes them durable and commits
                // them.
                Work::Part(Box::new(Written {
                    chunk,
                    attempt,
                    output,
                    failures,
                }))
            }
            Target::Ranges {
                output_start,
                failures_start,
            } => {
                // The chunk's bytes go to the file before its range is handed on: the
                // committer fsyncs the file, then commits the range.
                let mut names = Vec::with_capacity(2);
                let segment = self.segment(false)?;
                segment.sink.end_chunk()?;
                segment.sink.flush()?;
                names.push(range_name(
                    &segment.name,
                    output_start,
                    segment.sink.offset(),
                ));
                if let Some(start) = failures_start {
                    let segment = self.segment(true)?;
                    segment.sink.flush()?;
                    names.push(range_name(&segment.name, start, segment.sink.offset()));
                }
                Work::Ranges { chunk, names }
            }
        };
        self.work
            .send(work)
            .map_err(|_| self.sink_error("the committer thread stopped; see the error above"))
    }
    fn offsets(&self) -> (u64, u64) {
        // Nodes share no partial file: their commits carry no offsets.
        (0, 0)
    }
    fn sync(&mut self) -> Result<()> {
        Ok(())
    }
    fn flush_stream(&mut self) -> Result<()> {
        Ok(())
    }
}

/// What the committer thread and the rest of the node share.
struct Shared {
    /// The connection commits go through (the thread's while it commits a batch, the
    /// assembler's and the run's for totals and the rest).
    ledger: Mutex<PostgresLedger>,
    /// The thread's first error, until a call returns it, and its message for later calls.
    failure: Mutex<Failure>,
}

#[derive(Default)]
struct Failure {
    first: Option<LedgerError>,
    message: Option<String>,
}

impl Shared {
    fn ledger(&self) -> MutexGuard<'_, PostgresLedger> {
        self.ledger.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The ledger as the assembler sees it: each chunk it commits goes through this node's claim
/// of it, with its parts, fenced by the claim's attempt, on the node's committer thread
/// ([`CommitThread`]) so that the writer never waits for it.
pub(crate) struct Committer {
    shared: Arc<Shared>,
    work: mpsc::Sender<Work>,
    /// The thread's state and queue until the thread starts (at the first commit).
    waiting: Option<(CommitThread, mpsc::Receiver<Work>)>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Where the ledger lives, for messages.
    location: String,
    /// Set when a commit of this node left no chunk uncommitted: it assembles the output.
    pub(crate) completed_job: Arc<AtomicBool>,
    /// Chunks whose commit was refused because another node took them over.
    pub(crate) lost: Arc<Mutex<Vec<u64>>>,
}

/// The node's committer thread: finishes the parts the writer handed over, makes them
/// durable, and commits the chunks due in one transaction per batch.
struct CommitThread {
    shared: Arc<Shared>,
    store: Arc<dyn PartStore>,
    claims: Claims,
    /// The part files finished for each chunk, waiting for its commit.
    written: HashMap<u64, Vec<String>>,
    completed_job: Arc<AtomicBool>,
    lost: Arc<Mutex<Vec<u64>>>,
    log: Log,
    /// The segment files the writer created, and whether a commit names a range of each.
    segments: HashMap<String, bool>,
    /// Where a commit's claim of the next chunk goes ([`Committer::claim_ahead`]).
    ahead: Option<crate::distributed::node::Ahead>,
    /// Batches committed so far (for the injected failure of the tests).
    batches: u64,
}

/// The part sinks and committer of one node, sharing the claims and the committer thread.
pub(crate) fn pair(
    ledger: PostgresLedger,
    store: Arc<dyn PartStore>,
    format: OutputFormat,
    options: SinkOptions,
    claims: Claims,
    log: Log,
) -> (PartSinks, Committer) {
    let (work, queue) = mpsc::channel();
    let location = ledger.location().to_string();
    let shared = Arc::new(Shared {
        ledger: Mutex::new(ledger),
        failure: Mutex::default(),
    });
    let completed_job = Arc::new(AtomicBool::new(false));
    let lost: Arc<Mutex<Vec<u64>>> = Arc::default();
    let segments = store.writes_segments().then(|| Segments::new(work.clone()));
    let thread = CommitThread {
        shared: shared.clone(),
        store: store.clone(),
        claims: claims.clone(),
        written: HashMap::new(),
        segments: HashMap::new(),
        completed_job: completed_job.clone(),
        lost: lost.clone(),
        log,
        ahead: None,
        batches: 0,
    };
    (
        PartSinks {
            store,
            format,
            options,
            claims,
            work: work.clone(),
            current: None,
            segments,
            dir_made: false,
        },
        Committer {
            shared,
            work,
            waiting: Some((thread, queue)),
            thread: None,
            location,
            completed_job,
            lost,
        },
    )
}

/// `HERDSMAN_FAULT=distributed-committer-fails`: the committer thread's first batch is its
/// first chunk alone and commits, its second batch fails as a disk error would, for the
/// tests of a failing committer. Nothing else.
fn injected_failure() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| {
        std::env::var("HERDSMAN_FAULT").as_deref() == Ok("distributed-committer-fails")
    })
}

impl Committer {
    /// Makes each commit claim the next chunk in its own transaction while `ahead` is empty
    /// (no claim transaction of its own per chunk); the claimer takes it from there.
    pub(crate) fn claim_ahead(&mut self, ahead: crate::distributed::node::Ahead) {
        if let Some((thread, _)) = &mut self.waiting {
            thread.ahead = Some(ahead);
        }
    }

    /// The committer thread's error, if it failed: its first error once, then its message.
    fn failed(&self) -> Result<(), LedgerError> {
        let mut f = self
            .shared
            .failure
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(e) = f.first.take() {
            return Err(e);
        }
        match &f.message {
            Some(m) => Err(self.stopped(m.clone())),
            None => Ok(()),
        }
    }

    fn stopped(&self, why: String) -> LedgerError {
        LedgerError::Database {
            backend: "PostgreSQL",
            location: self.location.clone(),
            action: "commit this node's chunks".into(),
            remedy: "its committer thread stopped earlier (see above); fix the cause and run the same command again: the committed chunks are kept".into(),
            source: why.into(),
        }
    }

    /// Hands `work` to the committer thread, starting it the first time.
    fn send(&mut self, work: Work) -> Result<(), LedgerError> {
        if let Some((mut thread, queue)) = self.waiting.take() {
            let handle = std::thread::Builder::new()
                .name("herdsman-committer".into())
                .spawn(move || thread.run(queue))
                .map_err(|source| LedgerError::Io {
                    path: PathBuf::from("herdsman-committer"),
                    action: "start the committer thread",
                    source,
                })?;
            self.thread = Some(handle);
        }
        self.work
            .send(work)
            .map_err(|_| self.stopped("the committer thread ended unexpectedly".into()))
    }

    /// Waits until every part and commit handed over so far is done, and returns the
    /// committer thread's error if it failed. The run calls it before it decides whether
    /// every chunk is committed.
    pub(crate) fn drain(&mut self) -> Result<(), LedgerError> {
        let (done, wait) = mpsc::channel();
        self.send(Work::Drain(done))?;
        if wait.recv().is_err() {
            self.failed()?;
            return Err(self.stopped("the committer thread ended unexpectedly".into()));
        }
        self.failed()
    }
}

impl Drop for Committer {
    /// Lets the thread finish what it was handed (durable parts are still committed), then
    /// joins it.
    fn drop(&mut self) {
        if self.waiting.is_some() {
            // Started only to close: parts written but never committed are removed.
            let _ = self.send(Work::Close);
        } else {
            let _ = self.work.send(Work::Close);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl CommitThread {
    /// Takes what arrived since the last batch (waiting for the first), does it, and again,
    /// until [`Work::Close`] or the node drops every sender.
    fn run(&mut self, queue: mpsc::Receiver<Work>) {
        let mut parts = Vec::new();
        let mut due: Vec<ChunkCommit> = Vec::new();
        let mut answers = Vec::new();
        while let Ok(first) = queue.recv() {
            let mut close = false;
            let mut next = Some(first);
            let mut gather_until = None;
            loop {
                while let Some(work) = next {
                    match work {
                        Work::Part(part) => parts.push(*part),
                        Work::Ranges { chunk, names } => {
                            self.written.insert(chunk, names);
                        }
                        Work::Segment(name) => {
                            self.segments.entry(name).or_insert(false);
                        }
                        Work::Commit(c) => due.extend(c),
                        Work::Drain(answer) => answers.push(answer),
                        Work::Close => close = true,
                    }
                    next = queue.try_recv().ok();
                }
                // Chunks due gather for a moment, so that fast chunks commit many to a
                // transaction; a node waiting for its commits gets them at once.
                if close || !answers.is_empty() || due.is_empty() {
                    break;
                }
                let until = *gather_until.get_or_insert_with(|| Instant::now() + COMMIT_GATHER);
                let left = until.saturating_duration_since(Instant::now());
                match queue.recv_timeout(left) {
                    Ok(work) => next = Some(work),
                    Err(mpsc::RecvTimeoutError::Timeout) => break,
                    Err(mpsc::RecvTimeoutError::Disconnected) => {
                        close = true;
                        break;
                    }
                }
            }
            let failed = self
                .shared
                .failure
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .message
                .is_some();
            if failed {
                // Nothing more is committed; the parts handed over are never named.
                parts.clear();
                due.clear();
            } else if let Err(e) = self.work(&mut parts, &mut due) {
                tracing::error!(error = %e, "the committer thread failed");
                let mut f = self
                    .shared
                    .failure
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                f.message = Some(crate::config::with_causes(&e));
                f.first = Some(e);
            }
            for a in answers.drain(..) {
                let _ = a.send(());
            }
            if close {
                break;
            }
        }
        self.remove_unnamed_segments();
    }

    /// Deletes this node's segment files of which no commit names a range (every chunk
    /// written to them was refused, or none was committed before the run stopped): nothing
    /// ever reads them. The others go with the job's parts when its output is published.
    fn remove_unnamed_segments(&mut self) {
        for (name, named) in self.segments.drain() {
            if named {
                continue;
            }
            if let Err(e) = self.store.delete(&name) {
                self.log.notice(&format!(
                    "the segment file {name} in {} holds no committed chunk but could not be deleted ({e}); it is never read, remove it by hand",
                    self.store.location()
                ));
            }
        }
    }

    /// Finishes `parts`, then commits `due` as one batch.
    fn work(
        &mut self,
        parts: &mut Vec<Written>,
        due: &mut Vec<ChunkCommit>,
    ) -> Result<(), LedgerError> {
        for part in parts.drain(..) {
            self.finish_part(part)?;
        }
        if due.is_empty() {
            return Ok(());
        }
        let commits = std::mem::take(due);
        self.commit(&commits)
    }

    /// Writes the part's end, renames it into place (no fsync yet) and puts it in the store.
    fn finish_part(&mut self, part: Written) -> Result<(), LedgerError> {
        let Written {
            chunk,
            attempt,
            output,
            failures,
        } = part;
        let staging = self.store.staging_dir().to_path_buf();
        let io = |name: &str, action, source| LedgerError::Io {
            path: staging.join(name),
            action,
            source,
        };
        let mut names = vec![part_name(chunk, attempt)];
        publish_unsynced(output)
            .map_err(|e| io(&names[0], "finish the part", std::io::Error::other(e)))?;
        if let Some(f) = failures {
            names.push(format!("{}{FAILURES_SUFFIX}", part_name(chunk, attempt)));
            publish_unsynced(f)
                .map_err(|e| io(&names[1], "finish the part", std::io::Error::other(e)))?;
        }
        for name in &names {
            self.store
                .put(name)
                .map_err(|source| io(name, "put into the parts store the part", source))?;
        }
        self.written.insert(chunk, names);
        Ok(())
    }

    fn discard(&self, chunk: u64, names: &[String], why: &str) {
        for n in names {
            if let Err(e) = self.store.delete(n) {
                self.log.notice(&format!(
                    "chunk {chunk}: the refused part {n} could not be deleted from {} ({e}); it is never read, remove it by hand",
                    self.store.location()
                ));
            }
        }
        self.lost
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(chunk);
        self.log.notice(&format!(
            "chunk {chunk}: {why}; this node's part of it was discarded (nothing is lost: the chunk is another node's)"
        ));
    }

    /// Commits the written chunks through this node's claims of them, with their part names:
    /// their parts made durable together first, then one transaction for the batch.
    fn commit(&mut self, commits: &[ChunkCommit]) -> Result<(), LedgerError> {
        if injected_failure() && self.batches == 0 && commits.len() > 1 {
            // However fast the job, one chunk commits and a later one fails.
            self.commit(&commits[..1])?;
            return self.commit(&commits[1..]);
        }
        let mut batch = Vec::with_capacity(commits.len());
        for c in commits {
            let names = self.written.remove(&c.chunk).unwrap_or_default();
            let claim = self
                .claims
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&c.chunk)
                .cloned();
            match claim {
                Some(claim) => batch.push((claim, c.clone(), names)),
                None => self.discard(c.chunk, &names, "this node's lease on it ran out"),
            }
        }
        // No commit names a part before it is durable.
        let names: Vec<String> = batch.iter().flat_map(|(_, _, n)| n.clone()).collect();
        let synced = if injected_failure() && self.batches == 1 {
            Err(std::io::Error::other(
                "injected failure (HERDSMAN_FAULT=distributed-committer-fails)",
            ))
        } else {
            self.store.sync_parts(&names)
        };
        synced.map_err(|source| LedgerError::Io {
            path: self.store.staging_dir().to_path_buf(),
            action: "make the parts durable before their commit in",
            source,
        })?;
        self.batches += 1;
        let mut holds_next = false;
        if !batch.is_empty() {
            crate::fault::fault("distributed-before-commit");
        }
        let shared = self.shared.clone();
        let mut ledger = shared.ledger();
        // A commit claims the next chunks only for a node at the slow pace (two at a time):
        // a fast node's input claims dozens at once, and claims of a commit made at the same
        // moment would only put its chunks out of order in its segment file.
        let claiming = self
            .ahead
            .as_ref()
            .filter(|a| a.want() <= crate::distributed::node::CLAIM_AT_ONCE);
        let ahead = claiming.filter(|a| a.is_empty());
        let results: Vec<Result<(), LedgerError>> = if let [(claim, c, names)] = &batch[..] {
            // A batch of one: the single-chunk calls.
            vec![match ahead {
                Some(ahead) => ledger
                    .commit_and_claim(claim, c, names, &ahead.node, ahead.lease)
                    .map(|next| {
                        if let Some(next) = next {
                            // An open chunk (this node's) is left: the job is not complete.
                            holds_next = true;
                            ahead.put(next, &self.claims);
                        }
                    }),
                None => ledger.commit_with_parts(claim, c, names),
            }]
        } else if batch.is_empty() {
            Vec::new()
        } else {
            // As many next chunks as it commits, while the claims waiting stay within what
            // the node's window takes.
            let ahead = claiming;
            let room = ahead.map_or(0, |a| (a.want() as usize).saturating_sub(a.len()));
            let next = ahead
                .filter(|_| room > 0)
                .map(|a| (a.node.as_str(), a.lease));
            let n = room.min(batch.len()) as u32;
            match ledger.commit_batch_claiming(&batch, next, n) {
                Ok((results, next)) => {
                    if let Some(ahead) = ahead {
                        for claim in next {
                            holds_next = true;
                            ahead.put(claim, &self.claims);
                        }
                    }
                    results
                }
                Err(e) => {
                    let mut claims = self.claims.lock().unwrap_or_else(|p| p.into_inner());
                    for (claim, _, _) in &batch {
                        claims.remove(&claim.chunk);
                    }
                    return Err(e);
                }
            }
        };
        if batch.len() > 1 {
            tracing::info!(chunks = batch.len(), "chunks committed in one transaction");
        }
        for ((claim, c, names), result) in batch.iter().zip(results) {
            self.claims
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&c.chunk);
            match result {
                Ok(()) => {
                    for name in names {
                        if let Some(named) = self.segments.get_mut(split_part(name).0) {
                            *named = true;
                        }
                    }
                    tracing::info!(chunk = c.chunk, attempt = claim.attempt, "chunk committed");
                }
                Err(LedgerError::StaleClaim { .. }) => {
                    self.discard(
                        c.chunk,
                        names,
                        "this node's lease on it ran out and another node took it over",
                    );
                }
                Err(LedgerError::AlreadyFinished { .. }) => {
                    self.discard(c.chunk, names, "the job finished without it");
                }
                Err(e) => return Err(e),
            }
        }
        // Claims waiting for the reader are chunks not committed: the job is not complete (a
        // claim another node took over meanwhile is found at the end of the pass instead).
        let holds_open = holds_next || self.ahead.as_ref().is_some_and(|a| !a.is_empty());
        if !commits.is_empty() && !holds_open && ledger.all_committed()? {
            self.completed_job.store(true, Ordering::SeqCst);
        }
        Ok(())
    }
}

impl Ledger for Committer {
    fn open_job(&mut self, id: &JobIdentity) -> Result<Opened, LedgerError> {
        self.shared.ledger().open_job(id)
    }
    fn reset(&mut self) -> Result<(), LedgerError> {
        self.shared.ledger().reset()
    }
    fn plan_chunks(&mut self, chunks: &[ChunkPlan]) -> Result<(), LedgerError> {
        self.shared.ledger().plan_chunks(chunks)
    }
    fn claim(
        &mut self,
        owner: &str,
        lease: std::time::Duration,
    ) -> Result<Option<Claim>, LedgerError> {
        self.shared.ledger().claim(owner, lease)
    }
    fn heartbeat(
        &mut self,
        claim: &Claim,
        lease: std::time::Duration,
    ) -> Result<std::time::SystemTime, LedgerError> {
        self.shared.ledger().heartbeat(claim, lease)
    }
    fn release(&mut self, claim: &Claim) -> Result<(), LedgerError> {
        self.shared.ledger().release(claim)
    }
    fn commit(&mut self, claim: &Claim, c: &ChunkCommit) -> Result<(), LedgerError> {
        self.shared.ledger().commit(claim, c)
    }
    /// Hands the chunks to the committer thread and returns at once, or returns the thread's
    /// error if it failed.
    fn commit_chunks(&mut self, commits: &[ChunkCommit]) -> Result<(), LedgerError> {
        self.failed()?;
        if commits.is_empty() {
            return Ok(());
        }
        self.send(Work::Commit(commits.to_vec()))
    }
    fn mark_finished(&mut self, summary_json: &str) -> Result<(), LedgerError> {
        self.shared.ledger().mark_finished(summary_json)
    }
    fn totals(&self) -> Result<Totals, LedgerError> {
        self.shared.ledger().totals()
    }
    fn status(&self) -> Result<LedgerStatus, LedgerError> {
        self.shared.ledger().status()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_range_name_gives_back_its_file_and_bytes_and_other_names_stay_whole() {
        let name = range_name("seg-1f-2a-0", 17, 4096);
        assert_eq!(name, "seg-1f-2a-0@17-4096");
        assert_eq!(split_part(&name), ("seg-1f-2a-0", Some((17, 4096))));
        let failures = range_name("seg-1f-2a-1.failures", 0, 9);
        assert_eq!(
            split_part(&failures),
            ("seg-1f-2a-1.failures", Some((0, 9)))
        );
        assert!(is_failures(&failures));
        assert!(!is_failures(&name));
        // Part files of their own (object storage), and names that only look like ranges.
        for whole in [
            "part-3-1",
            "part-3-1.failures",
            "a@b",
            "a@1-",
            "a@-2",
            "a@5-4",
            "a@1-2-3",
        ] {
            assert_eq!(split_part(whole), (whole, None), "{whole}");
        }
        assert!(is_failures("part-3-1.failures"));
        assert!(!is_failures("part-3-1"));
    }

    #[test]
    fn ranges_that_follow_one_another_in_a_file_are_read_as_one() {
        let parts = [
            "seg-a-0@0-10",
            "seg-a-0@10-25",
            "seg-a-0@25-25",
            "seg-b-0@0-7",
            "seg-a-0@30-40",
            "part-9-2",
            "seg-a-0@40-41",
            "seg-a-0@41-50",
        ];
        assert_eq!(
            coalesce(&parts),
            [
                "seg-a-0@0-25",
                "seg-b-0@0-7",
                "seg-a-0@30-40",
                "part-9-2",
                "seg-a-0@40-50"
            ]
        );
        assert!(coalesce(&[]).is_empty());
        assert_eq!(coalesce(&["part-1-1"]), ["part-1-1"]);
    }

    #[test]
    fn segment_files_are_created_new_and_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let (work, queue) = mpsc::channel();
        // A file of the first name exists already: the next name is taken.
        std::fs::write(dir.path().join("seg-x-0"), b"another node's").unwrap();
        let mut segments = Segments {
            id: "seg-x".into(),
            next: 0,
            output: None,
            failures: None,
            work,
        };
        let opts = SinkOptions::default();
        let seg = segments
            .get(false, dir.path(), &OutputFormat::Jsonl, &opts)
            .unwrap();
        assert_eq!(seg.name, "seg-x-1");
        seg.sink.write_record(br#"{"a":1}"#).unwrap();
        seg.sink.flush().unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("seg-x-0")).unwrap(),
            b"another node's"
        );
        assert_eq!(
            std::fs::read(dir.path().join("seg-x-1")).unwrap(),
            b"{\"a\":1}\n"
        );
        assert!(matches!(queue.try_recv(), Ok(Work::Segment(n)) if n == "seg-x-1"));
        // A segment far from full stays open at a chunk's start.
        segments.rotate();
        assert!(
            segments.output.is_some(),
            "a segment far from full was closed"
        );
    }
}
