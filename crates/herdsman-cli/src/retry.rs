//! `herdsman run --retry-failed`: re-runs the records of a finished job's dead-letter file
//! and folds the ones that now succeed into the output.
//!
//! Recovered outputs are appended to the output (in dead-letter order); the dead-letter file
//! is rewritten with the records that still fail. Both new files are prepared beside the old
//! ones and swapped in under a journal, so a crash at any point leaves either the old pair
//! or the new pair, never a record in both or in neither. A dead-letter file with a line that
//! is not an entry as herdsman wrote it stops the pass before anything is run or written,
//! naming the file and line. This module must never change a job that has not finished.

use std::fs::File;
use std::io::{BufRead, BufReader, Lines};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{Context, Result};
use herdsman::StopToken;
use herdsman_io::{
    DeadLetter, DeadLetterError, DeadLetterKind, OutputFormat, RecordError, RecordErrorKind, Sink,
    SinkError,
};
use herdsman_ledger::Ledger;
use serde::{Deserialize, Serialize};

use crate::assemble::{FailureNote, Resolved};
use crate::chunks::CliItem;
use crate::config::{RunConfig, UsageError};
use crate::fault::fault;
use crate::pipeline::{engine, tally};
use crate::summary::{Counts, Latency, Summary};
use crate::transform::CliExecutor;

/// The journal that makes the swap of the two files atomic as a pair.
const JOURNAL: &str = "retry-journal.json";

#[derive(Serialize, Deserialize)]
struct Journal {
    output: PathBuf,
    failures: PathBuf,
    summary_json: String,
}

/// Finishes a retry pass that a crash interrupted after its journal was written; true if
/// there was one.
pub fn recover(state_dir: &Path, ledger: &mut dyn Ledger) -> Result<bool> {
    let path = state_dir.join(JOURNAL);
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(false);
    };
    let j: Journal = serde_json::from_str(&text)
        .with_context(|| format!("the retry journal {} is damaged", path.display()))?;
    swap_in(&j)?;
    ledger
        .mark_finished(&j.summary_json)
        .context("cannot record the retry pass in the checkpoint")?;
    std::fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))?;
    Ok(true)
}

fn swap_in(j: &Journal) -> Result<()> {
    herdsman_io::finish_partial(&j.output).context("cannot move the new output into place")?;
    fault("retry-between-renames");
    herdsman_io::finish_partial(&j.failures)
        .context("cannot move the new dead-letter file into place")?;
    Ok(())
}

/// Why one line of a dead-letter file (without its newline) is not an entry, if it is not:
/// an entry is one JSON object with a `record` key (`null` for input that could not be
/// read), as [`DeadLetter`] describes it.
fn entry_problem(bytes: &[u8]) -> Option<String> {
    DeadLetter::parse(bytes).err().map(|e| e.to_string())
}

fn damaged(path: &Path, line: u64, why: &str) -> anyhow::Error {
    anyhow::Error::new(UsageError(format!(
        "the dead-letter file {} is damaged at line {line}: {why}; --retry-failed needs every line as herdsman wrote it (a JSON object with a `record` key); repair that line, or restore the file, and run again (nothing was changed)",
        path.display()
    )))
}

/// Checks that every line of the dead-letter file is an entry, before anything runs.
fn check_entries(path: &Path) -> Result<()> {
    let f = File::open(path)
        .with_context(|| format!("cannot open the dead-letter file {}", path.display()))?;
    let mut reader = BufReader::new(f);
    let mut line = Vec::new();
    let mut number = 0u64;
    loop {
        line.clear();
        let n = reader
            .read_until(b'\n', &mut line)
            .with_context(|| format!("cannot read the dead-letter file {}", path.display()))?;
        if n == 0 {
            return Ok(());
        }
        number += 1;
        let text = line.strip_suffix(b"\n").unwrap_or(&line);
        if let Some(why) = entry_problem(text) {
            return Err(damaged(path, number, &why));
        }
    }
}

/// One dead-letter entry read back, as an engine item. The file was checked before the
/// pass; should it change under the pass, the first line that is not an entry ends the
/// items and is kept in `damaged`, and the pass fails instead of publishing anything.
struct EntryReader {
    lines: Lines<BufReader<File>>,
    next_seq: u64,
    damaged: Arc<Mutex<Option<(u64, String)>>>,
}

impl Iterator for EntryReader {
    type Item = CliItem;

    fn next(&mut self) -> Option<CliItem> {
        let seq = self.next_seq;
        let entry = match self.lines.next()? {
            Ok(line) => match DeadLetter::parse(line.as_bytes()) {
                Ok(entry) => entry,
                Err(why) => {
                    *self.damaged.lock().unwrap_or_else(|p| p.into_inner()) =
                        Some((seq + 1, why.to_string()));
                    return None;
                }
            },
            Err(e) => {
                *self.damaged.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some((seq + 1, format!("it cannot be read ({e})")));
                return None;
            }
        };
        self.next_seq += 1;
        let data = match &entry.record {
            Some(rec) => Ok(Arc::from(
                DeadLetter::record_of(rec.get().as_bytes())
                    .get()
                    .as_bytes()
                    .to_vec()
                    .into_boxed_slice(),
            )),
            // Input that could not be read stays failed: there is nothing to send.
            _ => Err(Arc::new(RecordError {
                kind: RecordErrorKind::Json,
                message: if entry.error.message.is_empty() {
                    "unreadable input record".to_string()
                } else {
                    entry.error.message
                },
                raw: String::new(),
            })),
        };
        Some(CliItem { seq, data })
    }
}

fn open_lines(path: &Path) -> Result<Lines<BufReader<File>>> {
    let f = File::open(path)
        .with_context(|| format!("cannot open the dead-letter file {}", path.display()))?;
    Ok(BufReader::new(f).lines())
}

/// Runs the retry pass of a finished job and returns the new summary.
pub fn retry_failed(
    cfg: &RunConfig,
    state_dir: &Path,
    ledger: &mut dyn Ledger,
    previous: Summary,
    executor: CliExecutor,
    output_format: OutputFormat,
    stop: StopToken,
) -> Result<Summary> {
    let started = Instant::now();
    let output = cfg
        .output
        .clone()
        .ok_or_else(|| UsageError("--retry-failed needs -o".into()))?;
    check_entries(&cfg.failures)?;
    let output_partial = herdsman_io::partial_path(&output);
    // The new output starts as a copy of the old one; recovered records are appended.
    let len = std::fs::copy(&output, &output_partial).with_context(|| {
        format!(
            "cannot copy {} to {}",
            output.display(),
            output_partial.display()
        )
    })?;
    // A Parquet file's footer is rewritten when the new output is published.
    let len = len - herdsman_io::published_extra_len(&output, &output_format);
    let mut out = crate::shard_io::open_output(
        cfg,
        &output,
        output_format,
        Some(len),
        &herdsman_io::SinkOptions {
            csv_delimiter: cfg.delimiter,
        },
    )
    .with_context(|| format!("cannot open {}", output_partial.display()))?;
    let mut fails = Sink::open(&cfg.failures, OutputFormat::Jsonl, None).with_context(|| {
        format!(
            "cannot open {}",
            herdsman_io::partial_path(&cfg.failures).display()
        )
    })?;

    let damaged_entry = Arc::new(Mutex::new(None));
    let items = EntryReader {
        lines: open_lines(&cfg.failures)?,
        next_seq: 0,
        damaged: damaged_entry.clone(),
    };
    let mut originals = open_lines(&cfg.failures)?;
    let mut retry_cfg = cfg.clone();
    retry_cfg.ordered = true;
    retry_cfg.max_errors = None;
    let metrics = executor.metrics();
    let stream = engine(&retry_cfg, items, executor, &stop, 0);
    let mut live = Counts::default();
    let mut latency = Latency::default();
    let mut recovered = Counts::default();
    for outcome in stream {
        let original = originals.next().transpose()?.unwrap_or_default();
        let attempts = outcome.attempts;
        let state = match tally(
            outcome,
            &mut live,
            &mut latency,
            cfg.timeout,
            metrics.as_deref(),
        ) {
            // Outputs the output refuses (CSV output and an answer that is not an object)
            // leave the record failed, as in a normal run; nothing of it is written.
            Resolved::Outputs(outputs) => {
                let written = outputs.iter().filter(|o| !o.is_empty());
                match out.check_records(written.map(Vec::as_slice)) {
                    Ok(()) => Resolved::Outputs(outputs),
                    Err(SinkError::Record { message, .. }) => Resolved::Failed(FailureNote {
                        kind: DeadLetterKind::OutputRejected,
                        message,
                        stderr_tail: Vec::new(),
                    }),
                    Err(e) => return Err(e).context("cannot write the output"),
                }
            }
            other => other,
        };
        match state {
            Resolved::Outputs(outputs) => {
                if outputs.is_empty() {
                    recovered.filtered += 1;
                } else {
                    recovered.ok += 1;
                }
                // An empty entry is a success with nothing to write.
                for o in outputs.iter().filter(|o| !o.is_empty()) {
                    out.write_record(o).context("cannot write the output")?;
                    recovered.outputs += 1;
                }
            }
            Resolved::Failed(note) => {
                // A record that could not be read is kept as it was; any other gets this
                // pass's error and attempts.
                let line = match DeadLetter::parse(original.as_bytes()) {
                    Ok(mut entry) if entry.record.is_some() => {
                        entry.error = DeadLetterError {
                            kind: note.kind,
                            message: note.message,
                        };
                        entry.attempts = attempts;
                        entry.stderr_tail = note.stderr_tail;
                        entry.to_line()
                    }
                    _ => original.into_bytes(),
                };
                fails
                    .write_record(&line)
                    .context("cannot write the dead-letter file")?;
            }
            Resolved::NotRun => {
                // Stopped early: keep the entry as it was.
                fails
                    .write_record(original.as_bytes())
                    .context("cannot write the dead-letter file")?;
            }
        }
    }
    if let Some((line, why)) = damaged_entry
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take()
    {
        return Err(damaged(&cfg.failures, line, &why));
    }
    recovered.retries = live.retries;
    // A Parquet output gets its footer; the rename below publishes it.
    out.complete().context("cannot write the output")?;
    out.sync()?;
    fails.sync()?;

    let mut total = previous.total.clone();
    let back = recovered.ok + recovered.filtered;
    total.ok += recovered.ok;
    total.filtered += recovered.filtered;
    total.failed -= back.min(total.failed);
    total.outputs += recovered.outputs;
    total.retries += recovered.retries;
    let mut this_run = live.clone();
    this_run.outputs = recovered.outputs;
    let earlier = Counts::default();
    let mut summary = Summary::new(
        crate::summary::Ending::Completed,
        earlier,
        this_run,
        started.elapsed(),
        &latency,
        Some(output.display().to_string()),
        cfg.failures.display().to_string(),
    );
    summary.exit_code = if total.failed > 0 { 1 } else { 0 };
    summary.retry_pass = true;
    summary.earlier = previous.total.clone();
    summary.total = total;
    let journal = Journal {
        output: output.clone(),
        failures: cfg.failures.clone(),
        summary_json: serde_json::to_string_pretty(&summary)?,
    };
    drop(out);
    drop(fails);
    herdsman_io::write_atomic(
        &state_dir.join(JOURNAL),
        serde_json::to_string(&journal)?.as_bytes(),
    )?;
    fault("retry-after-journal");
    recover(state_dir, ledger)?;
    Ok(summary)
}
