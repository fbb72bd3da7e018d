//! `herdsman status` and `herdsman failures`: read-only views of a job's checkpoint.
//!
//! These commands must never modify a checkpoint or wait for a running job's lock: they open
//! the ledger read-only and may run while the job runs.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{Context, Result};
use herdsman_ledger::{LedgerStatus, Totals};

use crate::cli::{FailuresArgs, StateArgs};
use crate::config::{default_state_dir, UsageError};
use crate::summary::Summary;

/// The state directory named by the user: the directory itself, or an output file whose
/// default state directory is next to it.
fn state_dir(arg: &Path) -> Result<PathBuf> {
    if arg.is_dir() && arg.join(herdsman_ledger::LEDGER_FILE_NAME).exists() {
        return Ok(arg.to_path_buf());
    }
    let beside = default_state_dir(arg);
    if beside.join(herdsman_ledger::LEDGER_FILE_NAME).exists() {
        return Ok(beside);
    }
    Err(anyhow::Error::new(UsageError(format!(
        "no checkpoint at {} (nor at {}); give the state directory or the job's output file",
        arg.display(),
        beside.display()
    ))))
}

fn ago(t: Option<SystemTime>) -> String {
    match t.and_then(|t| t.elapsed().ok()) {
        Some(d) => format!(
            "{} ago",
            humantime::format_duration(std::time::Duration::from_secs(d.as_secs()))
        ),
        None => "-".into(),
    }
}

/// The counts `status` shows.
///
/// They are the committed chunks' counts, except after `--retry-failed`: a retry pass moves
/// records from the dead-letter file to the output without touching the chunks, and records
/// its totals in the job's final summary, so those are the current counts.
fn current_counts(st: &LedgerStatus) -> (Totals, Option<u64>) {
    let t = st.totals;
    let retried = st
        .summary_json
        .as_deref()
        .filter(|_| st.finished())
        .and_then(|s| serde_json::from_str::<Summary>(s).ok())
        .filter(|s| s.retry_pass && s.total.records == t.counts.records);
    match retried {
        Some(s) => {
            let recovered = t.counts.failed.saturating_sub(s.total.failed);
            let now = Totals {
                chunks: t.chunks,
                counts: s.total.counts,
            };
            (now, Some(recovered))
        }
        None => (t, None),
    }
}

/// `herdsman status --json`.
#[derive(serde::Serialize)]
struct StatusJson<'a> {
    state: String,
    identity: Option<&'a std::collections::BTreeMap<String, String>>,
    finished: bool,
    chunks: u64,
    records: u64,
    succeeded: u64,
    failed: u64,
    filtered: u64,
    outputs: u64,
    retries: u64,
    recovered_by_retry_failed: Option<u64>,
    /// The job's final summary, keys in the order it was written.
    summary: Option<herdsman_io::OrderedJson>,
}

/// Prints the job, its progress and its chunks.
pub fn status(args: &StateArgs) -> Result<()> {
    let dir = state_dir(&args.state)?;
    let ledger = herdsman_ledger::open_read_only(&dir)
        .with_context(|| format!("cannot read the checkpoint in {}", dir.display()))?;
    let st = ledger.status()?;
    let (totals, recovered) = current_counts(&st);
    let (chunks, t) = (totals.chunks, totals.counts);
    let mut out = std::io::stdout().lock();
    if args.json {
        // Keys in this order: a struct serializes its fields in declaration order.
        let v = StatusJson {
            state: dir.display().to_string(),
            identity: st.identity.as_ref().map(|i| &i.entries),
            finished: st.finished(),
            chunks,
            records: t.records,
            succeeded: t.ok,
            failed: t.failed,
            filtered: t.filtered,
            outputs: t.outputs,
            retries: t.retries,
            recovered_by_retry_failed: recovered,
            summary: st
                .summary_json
                .as_deref()
                .and_then(|s| serde_json::from_str::<herdsman_io::OrderedJson>(s).ok()),
        };
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
        return Ok(());
    }
    writeln!(out, "checkpoint  {}", dir.display())?;
    let Some(identity) = &st.identity else {
        writeln!(out, "job         none (empty checkpoint)")?;
        return Ok(());
    };
    for (k, v) in &identity.entries {
        if k.starts_with("input.") && (k.ends_with(".path") || k.ends_with(".size"))
            || [
                "worker", "exec", "protocol", "output", "failures", "ordered", "shard",
            ]
            .contains(&k.as_str())
        {
            writeln!(out, "  {k:<22}{v}")?;
        }
    }
    let state = if st.finished() {
        "finished"
    } else {
        "in progress (or interrupted)"
    };
    writeln!(out, "state       {state}")?;
    writeln!(out, "started     {}", ago(st.created_at))?;
    writeln!(out, "updated     {}", ago(st.updated_at))?;
    writeln!(
        out,
        "records     {} committed in {} chunks: {} succeeded, {} failed, {} filtered; {} outputs, {} retries",
        t.records, chunks, t.ok, t.failed, t.filtered, t.outputs, t.retries
    )?;
    if let Some(n) = recovered {
        writeln!(
            out,
            "retried     --retry-failed recovered {n} dead-lettered records; {} still fail (`herdsman failures` lists them)",
            t.failed
        )?;
    }
    if let Some(last) = st.commits.iter().max_by_key(|c| c.end.seq) {
        let end = herdsman_io::Position::from_token(
            last.end.file_index,
            last.end.seq,
            last.end.token.as_bytes(),
        );
        match end {
            Ok(end) => writeln!(
                out,
                "input       read up to record {} (file #{}, line {})",
                end.seq, end.file_index, end.line
            )?,
            Err(_) => writeln!(
                out,
                "input       read up to record {} (file #{})",
                last.end.seq, last.end.file_index
            )?,
        }
    }
    // After a retry pass the chunks' failure counts are those of the first run.
    let failing: Vec<_> = st.commits.iter().filter(|c| c.counts.failed > 0).collect();
    if !failing.is_empty() && recovered.is_none() {
        let list: Vec<String> = failing
            .iter()
            .take(10)
            .map(|c| format!("#{} ({} failed)", c.chunk, c.counts.failed))
            .collect();
        writeln!(
            out,
            "failures    in chunks {}{}",
            list.join(", "),
            if failing.len() > 10 { ", ..." } else { "" }
        )?;
    }
    Ok(())
}

/// Prints the dead-lettered records of a job, one line each (or the raw JSON lines).
pub fn failures(args: &FailuresArgs) -> Result<()> {
    let dir = state_dir(&args.state.state)?;
    let ledger = herdsman_ledger::open_read_only(&dir)
        .with_context(|| format!("cannot read the checkpoint in {}", dir.display()))?;
    let st = ledger.status()?;
    let identity = st
        .identity
        .as_ref()
        .context("the checkpoint holds no job; nothing has failed")?;
    let path = PathBuf::from(
        identity
            .get("failures")
            .context("the checkpoint does not name its dead-letter file")?,
    );
    // A finished job has the final file; an unfinished one its partial file, of which only
    // the committed prefix counts.
    let committed = st.commits.iter().map(|c| c.failures_end).max().unwrap_or(0);
    let (file, limit_bytes) = if st.finished() {
        (path.clone(), u64::MAX)
    } else {
        (herdsman_io::partial_path(&path), committed)
    };
    let f = std::fs::File::open(&file)
        .with_context(|| format!("cannot open the dead-letter file {}", file.display()))?;
    let mut reader = BufReader::new(f);
    let mut out = std::io::stdout().lock();
    let mut read = 0u64;
    let mut shown = 0usize;
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line)?;
        if n == 0 || read + n as u64 > limit_bytes {
            break;
        }
        read += n as u64;
        if args.limit.is_some_and(|l| shown >= l) {
            break;
        }
        shown += 1;
        if args.state.json {
            out.write_all(&line)?;
            continue;
        }
        let text = line.strip_suffix(b"\n").unwrap_or(&line);
        match herdsman_io::DeadLetter::parse(text) {
            Ok(e) => writeln!(
                out,
                "{}:{} record {}: [{}] {} (attempts: {})",
                e.source.file,
                e.source.line,
                e.source.record,
                e.error.kind,
                e.error.message,
                e.attempts,
            )?,
            Err(why) => writeln!(
                out,
                "line {shown} of {}: not an entry: {why}",
                file.display()
            )?,
        }
    }
    if shown == 0 && !args.state.json {
        writeln!(out, "no failed records")?;
    }
    Ok(())
}
