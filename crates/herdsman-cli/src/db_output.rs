//! Database output (`-o postgres://…?table=T`, `-o sqlite://…?table=T`): the run's output is
//! either a file [`Sink`] or a table ([`herdsman_db_sink::DbSink`]), and a resumed run first
//! makes its checkpoint agree with the table.
//!
//! The exactly-once protocol, in order, for each chunk: its dead-letter entries are written
//! and fsynced (when it has any); one database transaction inserts its rows and its marker
//! (the chunk's ledger commit, encoded as JSON); later the ledger commits it as for a file.
//! A PostgreSQL transaction runs on the sink's background connection while the next chunks
//! are assembled: [`Output::sync`], which the checkpoint calls before the ledger commits,
//! waits for every chunk handed over, so the ledger never records a chunk whose transaction
//! has not committed, and a chunk the database refused fails the run with its error there
//! (or at the next chunk), with nothing after it committed. A crash between the
//! database commit and the ledger commit leaves a marker the ledger does not know:
//! [`reconcile`] commits it to the ledger before the run decides where to resume, so the
//! chunk is never inserted again and its dead letters (already durable) are kept. A chunk
//! without a marker is wholly absent from the table and is run again.
//!
//! This module must never let a chunk's rows reach the table before its dead letters are
//! durable, and never resume past a chunk that has no marker.

use std::path::Path;

use anyhow::{Context, Result};
use herdsman_db_sink::{CommitPoint, DbSink, DbUrl};
use herdsman_io::{Kept, Sink, SinkError};
use herdsman_ledger::{ChunkCommit, Opened};

use crate::checkpoint::{ledger_usage, Checkpoint};
use crate::config::{canonical, usage, RunConfig};

/// The run's output: a file (or stdout, a device) or a database table.
pub(crate) enum Output {
    File(Sink),
    Db(Box<DbOut>),
}

/// A table output, and how far its dead-letter file was last fsynced for it.
pub(crate) struct DbOut {
    sink: DbSink,
    /// The dead-letter file's length at its last fsync before a chunk's transaction.
    failures_synced: Option<u64>,
}

impl Output {
    /// Opens the table of a database output: `fresh` for a new job, `rows` committed before.
    pub(crate) fn open_db(cfg: &RunConfig, db: &DbUrl, fresh: bool, rows: u64) -> Result<Output> {
        let mut sink = DbSink::open(db, &job_key(cfg), cfg.if_exists, fresh, rows).map_err(|e| {
            match e {
                herdsman_db_sink::DbError::TableExists { .. } => usage(e.to_string()),
                e => anyhow::Error::new(e)
                    .context(format!("cannot open the output table {db}; check the URL and that the database accepts connections")),
            }
        })?;
        sink.on_commit(|point| {
            crate::fault::fault(match point {
                CommitPoint::Before => "before-db-commit",
                CommitPoint::After => "after-db-commit",
            })
        });
        Ok(Output::Db(Box::new(DbOut {
            sink,
            failures_synced: None,
        })))
    }

    /// Whether the dead-letter file, now `failures_end` bytes long, grew since it was last
    /// fsynced for a chunk's transaction (then it must be fsynced again first); always false
    /// for a file output.
    pub(crate) fn dead_letters_grew(&mut self, failures_end: u64) -> bool {
        match self {
            Output::File(_) => false,
            Output::Db(db) => {
                let grew = db.failures_synced != Some(failures_end);
                db.failures_synced = Some(failures_end);
                grew
            }
        }
    }

    pub(crate) fn check_records(&self, outputs: &[Vec<u8>]) -> Result<(), SinkError> {
        match self {
            Output::File(s) => s.check_records(outputs.iter().map(Vec::as_slice)),
            // One output: `write_record` checks it before it buffers anything, and a refusal
            // there is a dead letter too; parsing it once is half the cost of a row.
            Output::Db(_) if outputs.len() <= 1 => Ok(()),
            Output::Db(db) => outputs.iter().try_for_each(|o| {
                db.sink.check(o).map_err(|message| SinkError::Record {
                    path: db.sink.url().to_string().into(),
                    message,
                })
            }),
        }
    }

    pub(crate) fn write_record(&mut self, json: &[u8]) -> Result<(), SinkError> {
        match self {
            Output::File(s) => s.write_record(json),
            Output::Db(db) => db.sink.write(json).map_err(|message| SinkError::Record {
                path: db.sink.url().to_string().into(),
                message,
            }),
        }
    }

    pub(crate) fn end_chunk(&mut self) -> Result<(), SinkError> {
        match self {
            Output::File(s) => s.end_chunk(),
            Output::Db(_) => Ok(()),
        }
    }

    /// A file's length, or a table's rows of this job (what the checkpoint records).
    pub(crate) fn offset(&self) -> u64 {
        match self {
            Output::File(s) => s.offset(),
            Output::Db(db) => db.sink.rows(),
        }
    }

    pub(crate) fn is_stream(&self) -> bool {
        match self {
            Output::File(s) => s.is_stream(),
            Output::Db(_) => false,
        }
    }

    pub(crate) fn flush(&mut self) -> Result<(), SinkError> {
        match self {
            Output::File(s) => s.flush(),
            Output::Db(_) => Ok(()),
        }
    }

    /// Makes the output durable: a file is fsynced; a table's chunks are durable once their
    /// transactions commit, so this waits for the ones still on the background connection and
    /// fails with the error of a chunk the database refused.
    pub(crate) fn sync(&mut self) -> Result<()> {
        match self {
            Output::File(s) => s.sync().context("cannot sync the output"),
            Output::Db(db) => db.sync(),
        }
    }

    /// Commits the chunk just written to the table with its marker (a file has nothing to do
    /// here: its bytes are committed by the ledger).
    pub(crate) fn commit_chunk(&mut self, commit: &ChunkCommit) -> Result<()> {
        match self {
            Output::File(_) => Ok(()),
            Output::Db(db) => {
                let r = db.sink.commit_chunk(commit.chunk, &encode(commit));
                db.failed(r, commit.chunk)
            }
        }
    }

    /// Publishes a finished output.
    pub(crate) fn finish(self) -> Result<(), SinkError> {
        match self {
            Output::File(s) => s.finish(),
            Output::Db(_) => Ok(()),
        }
    }

    /// Keeps what an unresumable run wrote: a table keeps its committed chunks.
    pub(crate) fn finish_incomplete(self) -> Result<Kept, SinkError> {
        match self {
            Output::File(s) => s.finish_incomplete(),
            Output::Db(_) => Ok(Kept::Streamed),
        }
    }
}

impl DbOut {
    /// Waits until every chunk handed to the table is committed.
    fn sync(&mut self) -> Result<()> {
        let r = self.sink.sync();
        self.failed(r, 0)
    }

    /// The error of a chunk's transaction, naming the chunk that failed (`chunk` when it is
    /// not known yet).
    fn failed(&self, r: Result<(), herdsman_db_sink::DbError>, chunk: u64) -> Result<()> {
        r.with_context(|| {
            format!(
                "cannot write chunk {} to {}; the run can be resumed once the database is back",
                self.sink.failed_chunk().unwrap_or(chunk),
                self.sink.url()
            )
        })
    }
}

/// The name a job's markers are kept under: its state directory (canonical), which is unique
/// to the job on this machine and stable across resumes. A run without a checkpoint is never
/// resumed: it gets a name of its own, so that two such runs into one table never collide.
pub(crate) fn job_key(cfg: &RunConfig) -> String {
    match &cfg.state {
        Some(dir) => canonical(dir).display().to_string(),
        None => {
            static KEY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
            KEY.get_or_init(|| {
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or_default();
                format!("no-checkpoint {} {nanos}", std::process::id())
            })
            .clone()
        }
    }
}

/// Makes the checkpoint of a resumed job with a database output agree with the table:
/// every chunk whose marker is in the table but that the ledger did not commit (the run was
/// killed between the two commits) is committed to the ledger now, without touching the
/// table. Returns what the ledger holds then.
pub(crate) fn reconcile(cfg: &RunConfig, cp: &mut Checkpoint, found: Opened) -> Result<Opened> {
    let (Some(db), Opened::Resumed { commits }) = (&cfg.db_output, &found) else {
        return Ok(found);
    };
    let markers = herdsman_db_sink::markers(db, &job_key(cfg))
        .with_context(|| format!("cannot read which chunks are already in {db}"))?;
    let known: std::collections::HashSet<u64> = commits.iter().map(|c| c.chunk).collect();
    let missing: Vec<ChunkCommit> = markers
        .iter()
        .filter(|m| !known.contains(&m.chunk))
        .map(|m| {
            decode(&m.meta).with_context(|| {
                format!(
                    "the marker of chunk {} in {db} cannot be read; run with --restart --if-exists replace to start over",
                    m.chunk
                )
            })
        })
        .collect::<Result<_>>()?;
    if missing.is_empty() {
        return Ok(found);
    }
    tracing::info!(
        chunks = missing.len(),
        "chunks found in the output table but not in the checkpoint: committing them"
    );
    cp.ledger
        .commit_chunks(&missing)
        .map_err(ledger_usage)
        .context("cannot commit the chunks found in the output table to the checkpoint")?;
    let mut all = commits.clone();
    all.extend(missing);
    all.sort_by_key(|c| c.chunk);
    Ok(Opened::Resumed { commits: all })
}

/// A chunk's ledger commit as the JSON stored in its marker.
fn encode(c: &ChunkCommit) -> String {
    let pos = |p: &herdsman_ledger::Position| {
        serde_json::json!({
            "file_index": p.file_index,
            "seq": p.seq,
            "token": p.token.as_bytes().iter().map(|b| format!("{b:02x}")).collect::<String>(),
        })
    };
    serde_json::json!({
        "chunk": c.chunk,
        "start": pos(&c.start),
        "end": pos(&c.end),
        "counts": c.counts,
        "output_end": c.output_end,
        "failures_end": c.failures_end,
    })
    .to_string()
}

/// The inverse of [`encode`].
fn decode(s: &str) -> Result<ChunkCommit> {
    let v: serde_json::Value = serde_json::from_str(s).context("not JSON")?;
    let u = |v: &serde_json::Value, k: &str| -> Result<u64> {
        v.get(k)
            .and_then(serde_json::Value::as_u64)
            .with_context(|| format!("no {k}"))
    };
    let pos = |p: &serde_json::Value| -> Result<herdsman_ledger::Position> {
        let hex = p
            .get("token")
            .and_then(|t| t.as_str())
            .context("no token")?;
        let bytes = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(hex.get(i..i + 2).unwrap_or("zz"), 16))
            .collect::<Result<Vec<u8>, _>>()
            .context("a bad token")?;
        Ok(herdsman_ledger::Position {
            file_index: u32::try_from(u(p, "file_index")?).context("a bad file index")?,
            seq: u(p, "seq")?,
            token: herdsman_ledger::Token::new(&bytes).context("a bad token")?,
        })
    };
    Ok(ChunkCommit {
        chunk: u(&v, "chunk")?,
        start: pos(v.get("start").context("no start")?)?,
        end: pos(v.get("end").context("no end")?)?,
        counts: serde_json::from_value(v.get("counts").cloned().context("no counts")?)
            .context("bad counts")?,
        output_end: u(&v, "output_end")?,
        failures_end: u(&v, "failures_end")?,
    })
}

/// Where a database output's state lives, for messages.
pub(crate) fn describe(cfg: &RunConfig) -> Option<String> {
    cfg.db_output.as_ref().map(|db| {
        format!(
            "table {} ({db}); its checkpoint is in {}",
            db.table,
            cfg.state
                .as_deref()
                .unwrap_or(Path::new("(none)"))
                .display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_marker_holds_the_whole_commit() {
        let c = ChunkCommit {
            chunk: 7,
            start: herdsman_ledger::Position {
                file_index: 1,
                seq: 70,
                token: herdsman_ledger::Token::new(&[0, 0xff, 3]).unwrap(),
            },
            end: herdsman_ledger::Position {
                file_index: 1,
                seq: 80,
                token: herdsman_ledger::Token::default(),
            },
            counts: herdsman_ledger::Counts {
                records: 10,
                ok: 8,
                failed: 2,
                outputs: 8,
                ..Default::default()
            },
            output_end: 78,
            failures_end: 1234,
        };
        assert_eq!(decode(&encode(&c)).unwrap(), c);
    }
}
