//! A node's chunk parts: the output and dead letters of each chunk it claimed, written as
//! `part-<chunk>-<attempt>` (and `part-<chunk>-<attempt>.failures`) in the shared parts
//! store (a directory or an object-storage prefix, [`super::store`]), then committed through
//! the claim ([`Committer`]).
//!
//! A part is written to its end and renamed into place at the chunk's end without an fsync
//! of its own; the chunks due together are committed as one batch ([`Committer`]): every
//! part of the batch is made durable first ([`PartStore::sync_parts`]: the files fsynced from
//! a few threads at once, then their directory once; for object storage the upload already
//! was), then one PostgreSQL transaction commits them all
//! ([`PostgresLedger::commit_batch`]).
//!
//! This module must never commit a chunk whose part is not durable, and never let a refused
//! commit's part stay behind: a part whose claim was lost is deleted, and no commit ever
//! names it. A part renamed but not yet synced when the node dies is never named either: its
//! chunk was not committed.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

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

/// The part files written for each chunk, waiting for its commit.
type Written = Arc<Mutex<HashMap<u64, Vec<String>>>>;

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
    written: Written,
    current: Option<Current>,
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
        std::fs::create_dir_all(&dir).map_err(|source| SinkError::Io {
            action: "create",
            path: dir.clone(),
            source,
        })?;
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
        // Each part is written to its end and renamed into place, then put in the store;
        // the committer makes the parts of a batch durable together before the commit that
        // names them.
        let mut names = vec![part_name(chunk, attempt)];
        publish_unsynced(output)?;
        if let Some(f) = failures {
            publish_unsynced(f)?;
            names.push(format!("{}{FAILURES_SUFFIX}", part_name(chunk, attempt)));
        }
        for name in &names {
            self.store.put(name).map_err(|source| SinkError::Io {
                action: "store",
                path: PathBuf::from(self.store.location()).join(name),
                source,
            })?;
        }
        self.written
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(chunk, names);
        Ok(())
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

/// The ledger as the assembler sees it: each chunk it commits goes through this node's claim
/// of it, with its parts, fenced by the claim's attempt.
pub(crate) struct Committer {
    ledger: PostgresLedger,
    store: Arc<dyn PartStore>,
    claims: Claims,
    written: Written,
    /// Chunks in the job.
    total: u64,
    /// Set when a commit of this node left no chunk uncommitted: it assembles the output.
    pub(crate) completed_job: Arc<AtomicBool>,
    /// Chunks whose commit was refused because another node took them over.
    pub(crate) lost: Arc<Mutex<Vec<u64>>>,
    log: Log,
    /// Where a commit's claim of the next chunk goes ([`Committer::claim_ahead`]).
    ahead: Option<crate::distributed::node::Ahead>,
}

/// The part sinks and committer of one node, sharing the claims and the written parts.
pub(crate) fn pair(
    ledger: PostgresLedger,
    store: Arc<dyn PartStore>,
    format: OutputFormat,
    options: SinkOptions,
    claims: Claims,
    total: u64,
    log: Log,
) -> (PartSinks, Committer) {
    let written = Written::default();
    (
        PartSinks {
            store: store.clone(),
            format,
            options,
            claims: claims.clone(),
            written: written.clone(),
            current: None,
        },
        Committer {
            ledger,
            store,
            claims,
            written,
            total,
            completed_job: Arc::new(AtomicBool::new(false)),
            lost: Arc::default(),
            log,
            ahead: None,
        },
    )
}

impl Committer {
    /// Makes each commit claim the next chunk in its own transaction while `ahead` is empty
    /// (one round trip and one WAL flush per chunk instead of two); the claimer takes it from
    /// there.
    pub(crate) fn claim_ahead(&mut self, ahead: crate::distributed::node::Ahead) {
        self.ahead = Some(ahead);
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
}

impl Ledger for Committer {
    fn open_job(&mut self, id: &JobIdentity) -> Result<Opened, LedgerError> {
        self.ledger.open_job(id)
    }
    fn reset(&mut self) -> Result<(), LedgerError> {
        self.ledger.reset()
    }
    fn plan_chunks(&mut self, chunks: &[ChunkPlan]) -> Result<(), LedgerError> {
        self.ledger.plan_chunks(chunks)
    }
    fn claim(
        &mut self,
        owner: &str,
        lease: std::time::Duration,
    ) -> Result<Option<Claim>, LedgerError> {
        self.ledger.claim(owner, lease)
    }
    fn heartbeat(
        &mut self,
        claim: &Claim,
        lease: std::time::Duration,
    ) -> Result<std::time::SystemTime, LedgerError> {
        self.ledger.heartbeat(claim, lease)
    }
    fn release(&mut self, claim: &Claim) -> Result<(), LedgerError> {
        self.ledger.release(claim)
    }
    fn commit(&mut self, claim: &Claim, c: &ChunkCommit) -> Result<(), LedgerError> {
        self.ledger.commit(claim, c)
    }
    /// Commits the written chunks through this node's claims of them, with their part names:
    /// their parts made durable together first, then one transaction for the batch.
    fn commit_chunks(&mut self, commits: &[ChunkCommit]) -> Result<(), LedgerError> {
        let mut batch = Vec::with_capacity(commits.len());
        for c in commits {
            let names = self
                .written
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&c.chunk)
                .unwrap_or_default();
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
        self.store
            .sync_parts(&names)
            .map_err(|source| LedgerError::Io {
                path: self.store.staging_dir().to_path_buf(),
                action: "make the parts durable before their commit in",
                source,
            })?;
        let mut holds_next = false;
        if !batch.is_empty() {
            crate::fault::fault("distributed-before-commit");
        }
        let ahead = self.ahead.as_ref().filter(|a| a.is_empty());
        let results: Vec<Result<(), LedgerError>> = if let [(claim, c, names)] = &batch[..] {
            // A batch of one: the single-chunk calls.
            vec![match ahead {
                Some(ahead) => self
                    .ledger
                    .commit_and_claim(claim, c, names, &ahead.node, ahead.lease)
                    .map(|next| {
                        if let Some(next) = next {
                            // An open chunk (this node's) is left: the job is not complete.
                            holds_next = true;
                            ahead.put(next, &self.claims);
                        }
                    }),
                None => self.ledger.commit_with_parts(claim, c, names),
            }]
        } else if batch.is_empty() {
            Vec::new()
        } else {
            let next = ahead.map(|a| (a.node.as_str(), a.lease));
            match self.ledger.commit_batch(&batch, next) {
                Ok((results, next)) => {
                    if let (Some(next), Some(ahead)) = (next, ahead) {
                        holds_next = true;
                        ahead.put(next, &self.claims);
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
        if !commits.is_empty() && !holds_next && self.ledger.totals()?.chunks >= self.total {
            self.completed_job.store(true, Ordering::SeqCst);
        }
        Ok(())
    }
    fn mark_finished(&mut self, summary_json: &str) -> Result<(), LedgerError> {
        self.ledger.mark_finished(summary_json)
    }
    fn totals(&self) -> Result<Totals, LedgerError> {
        self.ledger.totals()
    }
    fn status(&self) -> Result<LedgerStatus, LedgerError> {
        self.ledger.status()
    }
}
