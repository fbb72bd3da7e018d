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

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
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
    fn name(self) -> &'static str {
        match self {
            Ending::Succeeded => "succeeded",
            Ending::Filtered => "filtered",
            Ending::Failed => "failed",
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
    pub start: SystemTime,
    pub duration: Duration,
    pub ending: Ending,
    /// The failure's kind, as the dead-letter file names it.
    pub kind: Option<DeadLetterKind>,
}

/// When and where an attempt started.
#[derive(Clone, Copy)]
struct Started {
    wall: SystemTime,
    at: Instant,
    worker: Option<usize>,
}

#[derive(Default)]
struct Table {
    started: HashMap<AttemptId, Started>,
    done: HashMap<u64, Vec<Attempt>>,
}

/// The attempts of the records in flight, from the executor (which sees them start and end)
/// to the assembler (which writes them with their record). Cloned handles share one table.
#[derive(Clone, Default)]
pub struct Attempts(Arc<Mutex<Table>>);

impl Attempts {
    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The engine submitted attempt `id` (its clock starts; a worker may pick it up later).
    pub fn submitted(&self, id: AttemptId) {
        let now = Started {
            wall: SystemTime::now(),
            at: Instant::now(),
            worker: None,
        };
        self.table().started.insert(id, now);
    }

    /// Worker `worker` (0-based) started attempt `id`: its clock starts again there.
    pub fn on_worker(&self, id: AttemptId, worker: usize) {
        let now = Started {
            wall: SystemTime::now(),
            at: Instant::now(),
            worker: Some(worker + 1),
        };
        self.table().started.insert(id, now);
    }

    /// Attempt `id` ended; `worker` (0-based) when the outcome names it.
    pub fn finished(
        &self,
        id: AttemptId,
        ending: Ending,
        kind: Option<DeadLetterKind>,
        worker: Option<usize>,
    ) {
        let mut t = self.table();
        let started = t.started.remove(&id).unwrap_or(Started {
            wall: SystemTime::now(),
            at: Instant::now(),
            worker: None,
        });
        let attempt = Attempt {
            attempt: id.attempt,
            worker: worker.map(|w| w + 1).or(started.worker),
            start: started.wall,
            duration: started.at.elapsed(),
            ending,
            kind,
        };
        t.done.entry(id.index).or_default().push(attempt);
    }

    /// Attempt `id` was given up without an outcome (the run stopped): no line for it.
    pub fn abandoned(&self, id: AttemptId) {
        self.table().started.remove(&id);
    }

    /// The attempts of the record at engine index `index`, in the order they ended.
    pub fn take(&self, index: u64) -> Vec<Attempt> {
        self.table().done.remove(&index).unwrap_or_default()
    }
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

/// An open job log.
pub struct JobLog {
    path: PathBuf,
    format: Format,
    out: BufWriter<File>,
    line: String,
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
        let mut out = BufWriter::with_capacity(64 << 10, file);
        if keep == 0 && format == Format::Tsv {
            out.write_all(TSV_HEADER.as_bytes()).map_err(env)?;
        }
        Ok(JobLog {
            path: path.to_path_buf(),
            format,
            out,
            line: String::with_capacity(256),
        })
    }

    /// Writes the lines of one record's attempts.
    pub fn write(&mut self, file: &str, line: u64, seq: u64, attempts: &[Attempt]) -> Result<()> {
        use std::fmt::Write as _;
        for a in attempts {
            self.line.clear();
            let start = a
                .start
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs_f64();
            let duration = a.duration.as_secs_f64();
            let kind = a.kind.map(|k| k.name());
            match self.format {
                Format::Tsv => {
                    let clean = |s: &str| s.replace(['\t', '\n', '\r'], " ");
                    let _ = writeln!(
                        self.line,
                        "{}\t{}\t{line}\t{}\t{start:.3}\t{duration:.3}\t{}\t{}\t{}",
                        seq + 1,
                        if file.is_empty() {
                            "-".into()
                        } else {
                            clean(file)
                        },
                        a.worker.map_or("-".to_string(), |w| w.to_string()),
                        a.ending.name(),
                        kind.unwrap_or("-"),
                        a.attempt
                    );
                }
                Format::Jsonl => {
                    let v = serde_json::json!({
                        "record": seq + 1,
                        "file": file,
                        "line": line,
                        "worker": a.worker,
                        "start": (start * 1000.0).round() / 1000.0,
                        "duration": (duration * 1_000_000.0).round() / 1_000_000.0,
                        "outcome": a.ending.name(),
                        "kind": kind,
                        "attempt": a.attempt,
                    });
                    let _ = writeln!(self.line, "{v}");
                }
            }
            self.out
                .write_all(self.line.as_bytes())
                .with_context(|| format!("cannot write the job log {}", self.path.display()))?;
        }
        Ok(())
    }

    /// Flushes and fsyncs the job log (before a checkpoint commit).
    pub fn sync(&mut self) -> Result<()> {
        self.out
            .flush()
            .and_then(|()| self.out.get_ref().sync_data())
            .with_context(|| format!("cannot write the job log {}", self.path.display()))
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

    fn attempt(n: u32, ending: Ending) -> Attempt {
        Attempt {
            attempt: n,
            worker: Some(2),
            start: SystemTime::UNIX_EPOCH + Duration::from_millis(1_500),
            duration: Duration::from_millis(250),
            ending,
            kind: (ending == Ending::Failed).then_some(DeadLetterKind::Reported),
        }
    }

    #[test]
    fn tsv_lines_have_a_header_and_one_line_per_attempt() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jobs.tsv");
        let mut log = JobLog::open(&path, None).unwrap();
        log.write(
            "in.csv",
            3,
            1,
            &[attempt(1, Ending::Failed), attempt(2, Ending::Succeeded)],
        )
        .unwrap();
        log.sync().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            format!(
                "{TSV_HEADER}2\tin.csv\t3\t2\t1.500\t0.250\tfailed\treported\t1\n2\tin.csv\t3\t2\t1.500\t0.250\tsucceeded\t-\t2\n"
            )
        );
    }

    #[test]
    fn resuming_keeps_the_lines_of_committed_records_only() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["jobs.tsv", "jobs.jsonl"] {
            let path = dir.path().join(name);
            let mut log = JobLog::open(&path, None).unwrap();
            for seq in 0..6 {
                log.write("in.csv", seq + 2, seq, &[attempt(1, Ending::Succeeded)])
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
    fn attempts_carry_their_worker_and_order() {
        let a = Attempts::default();
        let id = |attempt| AttemptId { index: 4, attempt };
        a.submitted(id(1));
        a.on_worker(id(1), 0);
        a.finished(id(1), Ending::Failed, Some(DeadLetterKind::Timeout), None);
        a.submitted(id(2));
        a.finished(id(2), Ending::Succeeded, None, Some(2));
        let got = a.take(4);
        assert_eq!(got.len(), 2);
        assert_eq!((got[0].attempt, got[0].worker), (1, Some(1)));
        assert_eq!((got[1].attempt, got[1].worker), (2, Some(3)));
        assert!(a.take(4).is_empty());
    }
}
