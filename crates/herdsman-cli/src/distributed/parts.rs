//! A node's chunk parts: the output and dead letters of each chunk it claimed, written as
//! `part-<chunk>-<attempt>` (and `part-<chunk>-<attempt>.failures`) in the shared parts
//! store (a directory or an object-storage prefix, [`super::store`]), then committed through
//! the claim ([`Committer`]).
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
//! This module must never commit a chunk whose part is not durable, and never let a refused
//! commit's part stay behind: a part whose claim was lost is deleted, and no commit ever
//! names it. A part renamed but not yet synced when the node dies is never named either: its
//! chunk was not committed.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};

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
    /// A chunk's parts, written to their ends but not finished.
    Part(Box<Written>),
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

/// The suffix of a dead-letter part's name.
pub(crate) const FAILURES_SUFFIX: &str = ".failures";

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
/// the disk's queue), then `dir` once, so each file and its name are durable.
pub(crate) fn sync_files(dir: &std::path::Path, names: &[String]) -> std::io::Result<()> {
    if names.is_empty() {
        return Ok(());
    }
    if names.len() <= 2 {
        // One chunk's parts: a thread of their own would cost more system calls than the
        // overlap saves.
        for name in names {
            std::fs::File::open(dir.join(name))?.sync_data()?;
        }
        return std::fs::File::open(dir)?.sync_all();
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
    std::fs::File::open(dir)?.sync_all()
}

/// A chunk's parts, written to their ends, for the committer thread to finish.
struct Written {
    chunk: u64,
    attempt: u64,
    output: Sink,
    failures: Option<Sink>,
}

/// The chunk being written.
struct Current {
    chunk: u64,
    attempt: u64,
    output: Sink,
    failures: Option<Sink>,
}

/// [`crate::assemble::Sinks`] that write each chunk into part files of its own.
pub(crate) struct PartSinks {
    store: Arc<dyn PartStore>,
    format: OutputFormat,
    options: SinkOptions,
    claims: Claims,
    /// To the committer thread.
    work: mpsc::Sender<Work>,
    current: Option<Current>,
    /// The staging directory was created since the last [`PartSinks::new_pass`].
    dir_made: bool,
}

impl PartSinks {
    /// A new pass over the claimable chunks begins: the staging directory is made again if
    /// it is gone.
    pub(crate) fn new_pass(&mut self) {
        self.dir_made = false;
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
        let err = self.sink_error("internal error: a record written outside of a chunk");
        self.current.as_mut().ok_or(err)
    }
}

impl crate::assemble::Sinks for PartSinks {
    fn begin_chunk(&mut self, chunk: u64) -> Result<(), SinkError> {
        // A claim the heartbeat found lost is gone from the map: its part gets attempt 0,
        // which no commit names, and is deleted by the committer.
        let attempt = self
            .claims
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&chunk)
            .map_or(0, |c| c.attempt);
        let dir = self.store.staging_dir().to_path_buf();
        if !self.dir_made {
            // Once per pass, not once per chunk.
            std::fs::create_dir_all(&dir).map_err(|source| SinkError::Io {
                action: "create",
                path: dir.clone(),
                source,
            })?;
            self.dir_made = true;
        }
        let path = dir.join(part_name(chunk, attempt));
        let output = Sink::open_continuation(&path, self.format.clone(), None, &self.options)?;
        self.current = Some(Current {
            chunk,
            attempt,
            output,
            failures: None,
        });
        Ok(())
    }
    fn check_outputs(&self, outputs: &[Vec<u8>]) -> Result<(), SinkError> {
        match &self.current {
            Some(c) => c.output.check_records(outputs.iter().map(Vec::as_slice)),
            None => Ok(()),
        }
    }
    fn write_output(&mut self, json: &[u8]) -> Result<(), SinkError> {
        self.current()?.output.write_record(json)
    }
    fn write_failure(&mut self, json: &[u8]) -> Result<(), SinkError> {
        let dir = self.store.staging_dir().to_path_buf();
        let c = self.current()?;
        if c.failures.is_none() {
            let path = dir.join(format!(
                "{}{FAILURES_SUFFIX}",
                part_name(c.chunk, c.attempt)
            ));
            c.failures = Some(Sink::open(&path, OutputFormat::Jsonl, None)?);
        }
        c.failures
            .as_mut()
            .expect("opened above")
            .write_record(json)
    }
    fn end_chunk(&mut self) -> Result<(), SinkError> {
        let Some(Current {
            chunk,
            attempt,
            mut output,
            failures,
        }) = self.current.take()
        else {
            return Ok(());
        };
        output.end_chunk()?;
        // The committer thread finishes the parts, makes them durable and commits them.
        self.work
            .send(Work::Part(Box::new(Written {
                chunk,
                attempt,
                output,
                failures,
            })))
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
    /// Chunks in the job.
    total: u64,
    completed_job: Arc<AtomicBool>,
    lost: Arc<Mutex<Vec<u64>>>,
    log: Log,
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
    total: u64,
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
    let thread = CommitThread {
        shared: shared.clone(),
        store: store.clone(),
        claims: claims.clone(),
        written: HashMap::new(),
        total,
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

/// `HERDSMAN_FAULT=distributed-committer-fails`: the committer thread's second batch fails
/// as a disk error would (the first commits), for the tests of a failing committer. Nothing
/// else.
fn injected_failure(batch: u64) -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| {
        std::env::var("HERDSMAN_FAULT").as_deref() == Ok("distributed-committer-fails")
    }) && batch == 1
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
        if let Some(t) = self.thread.take() {
            let _ = self.work.send(Work::Close);
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
            while let Some(work) = next {
                match work {
                    Work::Part(part) => parts.push(*part),
                    Work::Commit(c) => due.extend(c),
                    Work::Drain(answer) => answers.push(answer),
                    Work::Close => close = true,
                }
                next = queue.try_recv().ok();
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
                return;
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
        let synced = if injected_failure(self.batches) {
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
        let ahead = self.ahead.as_ref().filter(|a| a.is_empty());
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
            let ahead = self.ahead.as_ref();
            let room = ahead.map_or(0, |a| {
                (crate::distributed::node::CLAIM_AT_ONCE as usize).saturating_sub(a.len())
            });
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
        if !commits.is_empty() && !holds_next && ledger.totals()?.chunks >= self.total {
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
