//! The stages every pass over records shares: the executor (worker pool or per-record
//! commands), the engine with the run's policies, the outcome tally, and the output and
//! dead-letter sinks. Used by the normal run (chunks → engine → assembler) and by the
//! `--retry-failed` pass (dead letters → engine → new files).
//!
//! This module must never decide what a job does (that is `job`), nor touch the checkpoint.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};

use anyhow::{Context, Result};
use herdsman::{ItemError, RateLimit, Retry, RunStatus, StopToken};
use herdsman_io::{OutputFormat, Sink, SinkError, Source, SourceError, SourceOptions};
use herdsman_ledger::{Ledger, ResumePoint};
use herdsman_workers::{
    ExecConfig, ExecPool, PoolConfig, Protocol, Template, WorkOutput, WorkerCommand, WorkerPool,
};

use crate::assemble::{Assembler, FailureNote, Resolved, Sinks};
use crate::checkpoint::reclaim_renamed;
use crate::chunks::{ChunkLimits, ChunkReader};
use crate::cli::{OutputFormatArg, ProtocolArg};
use crate::config::{ensure_parent_dir, usage, MaxErrors, RunConfig, Transform};
use crate::metrics::{Metrics, RecordOutcome};
use crate::progress::{Log, Progress};
use crate::summary::{Counts, Latency};
use crate::transform::{CliExecutor, CliFailure};

/// Largest chunk, in bytes of record JSON, whatever --chunk-size says.
pub(crate) const CHUNK_BYTES: usize = 8 << 20;

/// Starts the workers (or the per-record command runner).
pub(crate) fn start_executor(
    cfg: &RunConfig,
    log: &Log,
    csv_header: Option<&[String]>,
    metrics: Option<&Arc<Metrics>>,
) -> Result<CliExecutor> {
    let stderr_log = log.clone();
    let stderr: herdsman_workers::StderrSink =
        Arc::new(move |worker, line: &str| stderr_log.worker_line(worker, line));
    // The job log's notes of attempts (a --retry-failed pass writes no job log); each
    // attempt's worker and start come with its outcome.
    let notes = match &cfg.joblog {
        Some(_) if !cfg.retry_failed => Some(crate::joblog::attempts(cfg.window)),
        _ => None,
    };
    // The run's history notes which worker runs each attempt (a checkpointed run only).
    let probe = (cfg.state.is_some() && !cfg.retry_failed && !cfg.no_history)
        .then(|| crate::history::Probe::new(matches!(cfg.transform, Transform::Worker { .. })));
    let on_start = probe.clone().map(|probe| {
        let sink: herdsman_workers::StartSink =
            Arc::new(move |id, worker, at| probe.started(id, worker, at));
        sink
    });
    // The live status table (`herdsman status`) is told too: it shows what runs now.
    let on_start = match (crate::live::current(), on_start) {
        (Some(live), None) => {
            let live = Arc::clone(live);
            let sink: herdsman_workers::StartSink =
                Arc::new(move |id, worker, at| live.started(id.index, worker, at));
            Some(sink)
        }
        (Some(live), Some(probe)) => {
            let live = Arc::clone(live);
            let sink: herdsman_workers::StartSink = Arc::new(move |id, worker, at| {
                live.started(id.index, worker, at);
                probe(id, worker, at);
            });
            Some(sink)
        }
        (None, on_start) => on_start,
    };
    // How processes are started, timed and stopped: the same for workers and commands.
    let process = herdsman_workers::ProcessOptions {
        cwd: cfg.workdir.clone(),
        stderr: Some(stderr),
        timeout: cfg.timeout,
        on_start,
        ..herdsman_workers::ProcessOptions::default()
    };
    let inner: Box<dyn herdsman_workers::ProcessExecutor> = match &cfg.transform {
        Transform::Worker {
            argv,
            protocol,
            shell,
        } => {
            let command = if *shell {
                WorkerCommand::shell(argv.join(" "))
            } else {
                WorkerCommand::argv(argv.clone())
            };
            let mut pc = PoolConfig::new(command);
            pc.workers = cfg.jobs;
            pc.protocol = match protocol {
                ProtocolArg::Lines => Protocol::Lines,
                ProtocolArg::Framed => Protocol::Framed,
            };
            pc.process = process;
            pc.max_tasks_per_worker = cfg.max_tasks_per_worker;
            pc.on_restart = metrics.map(Metrics::restart_sink);
            // An answer may be as long as the longest record it was given.
            pc.max_line_bytes = pc
                .max_line_bytes
                .max(cfg.max_record_size.saturating_add(1 << 20));
            let notice_log = log.clone();
            pc.notices = Some(Arc::new(move |msg: &str| {
                notice_log.notice(&crate::fault::notice_message(msg))
            }));
            // For tests only: a short threshold for the no-answer notice.
            if let Some(ms) = std::env::var("HERDSMAN_NO_ANSWER_NOTICE_MS")
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
            {
                pc.no_answer_notice = std::time::Duration::from_millis(ms);
            }
            let fatal = |e: herdsman_workers::FatalExecutorError| {
                usage(crate::fault::executor_message(
                    &e,
                    crate::fault::Runs::Workers,
                ))
            };
            let mut pool = WorkerPool::start(pc).map_err(fatal)?;
            // A shared run starts its workers before it opens the job in the ledger, so
            // that their start-up overlaps the ledger's.
            if cfg.distributed.is_some() {
                pool.start_all().map_err(fatal)?;
            }
            Box::new(pool)
        }
        Transform::Copy => Box::new(crate::transform::Copier::new()),
        Transform::Exec {
            template,
            shell,
            output,
            no_retry_exit,
        } => {
            let template = Template::new(template, *shell)
                .map_err(|e| usage(crate::config::with_causes(&e)))?;
            if let Some(header) = csv_header {
                if let Some(missing) = template
                    .fields()
                    .into_iter()
                    .find(|f| !header.iter().any(|h| h == f))
                {
                    return Err(usage(format!(
                            "the --exec template uses {{{missing}}}, but the CSV input has no such column (columns: {}); fix the template",
                            header.join(", ")
                        )));
                }
            }
            let mut ec = ExecConfig::new(template);
            ec.jobs = cfg.jobs;
            ec.process = process;
            ec.output = {
                use crate::cli::ExecOutputArg as A;
                use herdsman_workers::ExecOutputMode as M;
                match output {
                    // Raw text output: a command's stdout is written as it printed it.
                    A::Auto if cfg.output_format == OutputFormatArg::Lines => M::Raw,
                    A::Auto => M::Auto,
                    A::Text => M::Text,
                    A::Record => M::Record,
                }
            };
            ec.no_retry_exit = no_retry_exit.clone();
            Box::new(ExecPool::start(ec).map_err(|e| {
                usage(crate::fault::executor_message(
                    &e,
                    crate::fault::Runs::Commands,
                ))
            })?)
        }
    };
    Ok(CliExecutor::new(inner)
        .with_attempts(notes)
        .with_probe(probe)
        .with_metrics(metrics.cloned()))
}

/// The run's output and dead-letter files, and its job log.
pub(crate) struct FileSinks {
    pub(crate) output: crate::db_output::Output,
    pub(crate) failures: Failures,
    /// `--joblog`, written by its own thread.
    pub(crate) joblog: Option<crate::joblog::Writer>,
}

/// The dead-letter file: open from the start, or (streaming to stdout without a named
/// dead-letter file) only once a record fails, so that a clean run leaves no file behind.
pub(crate) enum Failures {
    Open(Sink),
    OnFirstFailure(PathBuf),
}

impl Failures {
    fn sink(&mut self) -> Result<&mut Sink, SinkError> {
        if let Failures::OnFirstFailure(path) = self {
            *self = Failures::Open(Sink::open(path, OutputFormat::Jsonl, None)?);
        }
        match self {
            Failures::Open(sink) => Ok(sink),
            Failures::OnFirstFailure(_) => unreachable!("opened above"),
        }
    }
}

impl Sinks for FileSinks {
    fn check_outputs(&self, outputs: &[Vec<u8>]) -> Result<(), SinkError> {
        self.output.check_records(outputs)
    }
    fn write_output(&mut self, json: &[u8]) -> Result<(), SinkError> {
        self.output.write_record(json)
    }
    fn end_chunk(&mut self) -> Result<(), SinkError> {
        self.output.end_chunk()
    }
    fn write_failure(&mut self, json: &[u8]) -> Result<(), SinkError> {
        self.failures.sink()?.write_record(json)
    }
    fn chunk_written(&mut self, commit: &herdsman_ledger::ChunkCommit) -> Result<()> {
        if !matches!(self.output, crate::db_output::Output::Db(_)) {
            return Ok(());
        }
        // The chunk's dead letters are durable before its rows reach the table: a resumed run
        // that finds the chunk's marker keeps them (see db_output). A chunk without any has
        // nothing to fsync.
        let (_, failures_end) = self.offsets();
        if let Failures::Open(sink) = &mut self.failures {
            if self.output.dead_letters_grew(failures_end) {
                sink.sync().context("cannot sync the dead-letter file")?;
            }
        }
        if let Some(log) = &mut self.joblog {
            log.sync()?;
        }
        self.output.commit_chunk(commit)
    }
    fn offsets(&self) -> (u64, u64) {
        let failures = match &self.failures {
            Failures::Open(sink) => sink.offset(),
            Failures::OnFirstFailure(_) => 0,
        };
        (self.output.offset(), failures)
    }
    fn flush_stream(&mut self) -> Result<()> {
        if self.output.is_stream() {
            self.output.flush()?;
        }
        Ok(())
    }
    fn sync(&mut self) -> Result<()> {
        self.output.sync()?;
        if let Failures::Open(sink) = &mut self.failures {
            sink.sync().context("cannot sync the dead-letter file")?;
        }
        if let Some(log) = &mut self.joblog {
            log.sync()?;
        }
        Ok(())
    }
    fn log_attempts(
        &mut self,
        index: u64,
        attempts: u32,
        _file: &str,
        pos: &herdsman_io::Position,
    ) -> Result<()> {
        // The file's name is looked up by its index on the job log's thread.
        match &mut self.joblog {
            Some(log) => log.write_record(index, attempts, pos.file_index, pos.line, pos.seq),
            None => Ok(()),
        }
    }
}

/// Ends a run that stopped early and cannot resume: keeps what is done, but never over a
/// file that is already there, and says where it is.
pub(crate) fn keep_incomplete(
    mut sinks: FileSinks,
    log: &Log,
    out_path: &Path,
    failures: &Path,
) -> Result<()> {
    sinks.sync()?;
    let FileSinks {
        output,
        failures: failures_sink,
        joblog: _,
    } = sinks;
    let kept = output
        .finish_incomplete()
        .context("cannot keep the output written so far")?;
    tell_kept(log, "output", out_path, &kept);
    if let Failures::Open(sink) = failures_sink {
        let kept = sink
            .finish_incomplete()
            .context("cannot keep the dead-letter file written so far")?;
        tell_kept(log, "dead-letter file", failures, &kept);
    }
    Ok(())
}

/// One line on stderr saying where the records of a stopped, unresumable run are.
pub(crate) fn tell_kept(log: &Log, what: &str, path: &Path, kept: &herdsman_io::Kept) {
    match kept {
        herdsman_io::Kept::Streamed => {}
        herdsman_io::Kept::Published(p) => log.notice(&format!(
            "the run stopped early; the records finished so far are in {} (the {what} is incomplete)",
            p.display()
        )),
        herdsman_io::Kept::Partial(p) => log.notice(&format!(
            "the run stopped early; {} already existed and was left as it was; the records finished so far are in {}",
            path.display(),
            p.display()
        )),
    }
}

pub(crate) fn output_format(cfg: &RunConfig) -> OutputFormat {
    match cfg.output_format {
        OutputFormatArg::Jsonl => OutputFormat::Jsonl,
        OutputFormatArg::Lines => OutputFormat::Lines,
        OutputFormatArg::Csv => OutputFormat::Csv {
            columns: cfg.columns.clone(),
        },
        OutputFormatArg::Parquet => OutputFormat::Parquet(cfg.parquet.clone()),
    }
}

/// The engine with this run's policies over `items`.
pub(crate) fn engine<I>(
    cfg: &RunConfig,
    items: I,
    executor: CliExecutor,
    stop: &StopToken,
    failed_earlier: u64,
) -> herdsman::Stream<WorkOutput, CliFailure>
where
    I: Iterator<Item = crate::chunks::CliItem> + Send + 'static,
{
    let metrics = executor.metrics();
    let mut engine = herdsman::map_with(items, executor)
        .window(cfg.window)
        .ordered(cfg.ordered)
        .stop_token(stop.clone());
    // A worker's `retry_after` replaces the backoff before that record's next attempt and
    // pauses the rate limiter for every record; with --rate the pause applies even when
    // --retries is 0 (the record then fails, but the others hold back).
    if cfg.retries > 0 || cfg.rate.is_some() {
        engine = engine.retry(
            Retry::attempts(cfg.retries + 1)
                .backoff(cfg.backoff)
                .max_delay(cfg.max_backoff)
                .jitter(true)
                .when(|e: &CliFailure| e.retryable())
                .retry_after(|e: &CliFailure| e.retry_after()),
        );
    }
    if let Some((n, period)) = cfg.rate {
        let rate = match period.as_secs() {
            3600 => RateLimit::per_hour(n),
            60 => RateLimit::per_minute(n),
            _ => RateLimit::per_second(n),
        };
        let limiter = herdsman::Limiter::new(rate);
        if let Some(m) = &metrics {
            m.watch_limiter(limiter.clone());
        }
        engine = engine.limiter(limiter);
    }
    // --timeout is enforced by the process executor, which knows when a record actually
    // started on its worker (a record queued behind a slow one is not charged for the wait).
    if let Some(n) = failures_left(cfg, failed_earlier) {
        engine = engine.max_errors(n);
    }
    engine.stream()
}

/// `--max-errors N`: the failures this run may still have before it stops, after the
/// `failed_earlier` of earlier runs of the job (at least one).
fn failures_left(cfg: &RunConfig, failed_earlier: u64) -> Option<u64> {
    match cfg.max_errors {
        Some(MaxErrors::Count(n)) => Some(n.saturating_sub(failed_earlier).max(1)),
        _ => None,
    }
}

/// What drives a pass: the engine, or (`--copy` without `--rate`) [`run_at_once`] with the
/// reader and the executor.
enum Driver {
    Engine(herdsman::Stream<WorkOutput, CliFailure>),
    AtOnce(ChunkReader, Box<CliExecutor>),
}

/// What [`stream`] does with each final outcome: count it and hand it to the assembler.
type TakeOutcome<'t> = dyn for<'a, 'b> FnMut(
        herdsman::ItemOutcome<WorkOutput, CliFailure>,
        &'b mut Assembler<'a, FileSinks>,
    ) -> Result<()>
    + 't;

/// Runs every record through an executor that answers at once (`--copy`'s), on this
/// thread, without the engine: each chunk's records are submitted (as many at a time as the
/// executor holds), its outcomes taken in input order and handed to `take`. A stop, or
/// `max_failures` failures in this run, ends the run; the rest of the chunk then is not run.
/// Returns how the run ended, as the engine would have said it.
fn run_at_once(
    reader: &mut ChunkReader,
    executor: &mut CliExecutor,
    asm: &mut Assembler<'_, FileSinks>,
    stop: &StopToken,
    max_failures: Option<u64>,
    take: &mut TakeOutcome<'_>,
) -> Result<RunStatus> {
    use herdsman::{AttemptId, AttemptOutcome, Executor};
    let capacity = executor.capacity().max(1);
    let mut next_index = 0u64;
    let mut failures = 0u64;
    let mut done = Vec::with_capacity(capacity);
    let executor_failed = |e: herdsman::FatalExecutorError| anyhow::anyhow!("{}", e.message);
    let status = 'run: loop {
        let items = match reader.next_chunk_within(std::time::Duration::from_millis(250)) {
            crate::chunks::NextChunk::Items(items) => items,
            crate::chunks::NextChunk::Pending => {
                if stop.is_stopped() {
                    break RunStatus::Cancelled;
                }
                asm.checkpoint_if_due()?;
                continue;
            }
            crate::chunks::NextChunk::Ended => break RunStatus::Completed,
        };
        let mut items = items.into_iter();
        while items.len() > 0 {
            let ended = if stop.is_stopped() {
                Some(RunStatus::Cancelled)
            } else if max_failures.is_some_and(|m| failures >= m) {
                Some(RunStatus::Aborted)
            } else {
                None
            };
            if let Some(status) = ended {
                for _ in items {
                    let index = next_index;
                    next_index += 1;
                    take(
                        herdsman::ItemOutcome {
                            index,
                            result: Err(ItemError::NotRun),
                            attempts: 0,
                            duration: std::time::Duration::ZERO,
                        },
                        asm,
                    )?;
                }
                break 'run status;
            }
            for item in items.by_ref().take(capacity) {
                let id = AttemptId {
                    index: next_index,
                    attempt: 1,
                };
                next_index += 1;
                executor.submit(id, item).map_err(executor_failed)?;
            }
            executor
                .poll(std::time::Duration::ZERO, &mut done)
                .map_err(executor_failed)?;
            // A record that could not be read is answered before the copied ones.
            done.sort_by_key(|(id, _)| id.index);
            for (id, outcome) in done.drain(..) {
                let result = match outcome {
                    AttemptOutcome::Success(v) => Ok(v),
                    AttemptOutcome::Failure(e) => Err(ItemError::Failed(e)),
                    AttemptOutcome::Panicked(m) => Err(ItemError::Panicked(m)),
                };
                failures += u64::from(result.is_err());
                take(
                    herdsman::ItemOutcome {
                        index: id.index,
                        result,
                        attempts: id.attempt,
                        duration: std::time::Duration::ZERO,
                    },
                    asm,
                )?;
            }
        }
        if max_failures.is_some_and(|m| failures >= m) {
            break RunStatus::Aborted;
        }
    };
    executor.shutdown();
    Ok(status)
}

/// Counts one outcome (in `live`, `latency`, and the run's `metrics` when there are any) and
/// turns it into the record's final state.
pub(crate) fn tally(
    outcome: herdsman::ItemOutcome<WorkOutput, CliFailure>,
    live: &mut Counts,
    latency: &mut Latency,
    timeout: Option<std::time::Duration>,
    metrics: Option<&Metrics>,
) -> Resolved {
    let (state, kind) = match outcome.result {
        Ok(outputs) => {
            live.records += 1;
            let kind = if outputs.is_empty() {
                live.filtered += 1;
                RecordOutcome::Filtered
            } else {
                live.ok += 1;
                RecordOutcome::Succeeded
            };
            (Resolved::Outputs(outputs), kind)
        }
        Err(ItemError::NotRun) => {
            live.not_run += 1;
            return Resolved::NotRun;
        }
        Err(e) => {
            live.records += 1;
            live.failed += 1;
            (Resolved::Failed(note_of(e, timeout)), RecordOutcome::Failed)
        }
    };
    latency.record(outcome.duration);
    live.retries += u64::from(outcome.attempts.saturating_sub(1));
    if let Some(m) = metrics {
        m.record(kind, outcome.duration);
    }
    state
}

pub(crate) fn note_of(
    e: ItemError<CliFailure>,
    timeout: Option<std::time::Duration>,
) -> FailureNote {
    match e {
        ItemError::Failed(f) => FailureNote::from_failure(&f),
        ItemError::Panicked(msg) => FailureNote {
            kind: herdsman_io::DeadLetterKind::WorkerCrashed,
            message: msg,
            stderr_tail: Vec::new(),
        },
        ItemError::TimedOut => FailureNote {
            kind: herdsman_io::DeadLetterKind::Timeout,
            message: match timeout {
                Some(t) => format!(
                    "no answer within {} (--timeout); the worker was killed and restarted",
                    humantime::format_duration(t)
                ),
                None => "timed out".into(),
            },
            stderr_tail: Vec::new(),
        },
        ItemError::Executor(message) => FailureNote {
            kind: herdsman_io::DeadLetterKind::Executor,
            message,
            stderr_tail: Vec::new(),
        },
        ItemError::NotRun => unreachable!("handled by the caller"),
        // An outcome a newer library may add: recorded as a failure, never dropped.
        _ => FailureNote {
            kind: herdsman_io::DeadLetterKind::Executor,
            message: "the item failed for a reason this version cannot name".into(),
            stderr_tail: Vec::new(),
        },
    }
}

/// How outputs are written: CSV with the --delimiter of the input.
pub(crate) fn sink_options(cfg: &RunConfig) -> herdsman_io::SinkOptions {
    herdsman_io::SinkOptions {
        csv_delimiter: cfg.delimiter,
    }
}

pub(crate) fn source_options(cfg: &RunConfig) -> SourceOptions {
    SourceOptions {
        csv_delimiter: cfg.delimiter,
        infer_types: cfg.infer_types,
        max_record_bytes: cfg.max_record_size,
        // Parquet inputs read only these columns (other formats ignore them).
        columns: cfg.columns.clone(),
        // Database inputs read these rows in this key order.
        query: cfg.query.clone(),
        key: cfg.key.clone(),
        ..SourceOptions::default()
    }
}

/// Opens the run's output and dead-letter files: fresh, or (resuming) cut back to what the
/// checkpoint committed, after moving back a file that a crash renamed into place too early.
pub(crate) fn open_sinks(cfg: &RunConfig, resume: Option<&ResumePoint>) -> Result<FileSinks> {
    let out_path: PathBuf = cfg.output.clone().unwrap_or_else(|| PathBuf::from("-"));
    if let Some(o) = &cfg.output {
        ensure_parent_dir(o)?;
    }
    ensure_parent_dir(&cfg.failures)?;
    let (out_offset, fail_offset) = match &resume {
        Some(r) => {
            if let Some(o) = &cfg.output {
                // A published Parquet file holds its footer after the committed bytes.
                let footer = herdsman_io::published_extra_len(o, &output_format(cfg));
                reclaim_renamed(o, r.output_end + footer)?;
            }
            // A dead-letter file written in place (`--failures /dev/null`) has nothing to
            // reclaim or cut back.
            let failures_in_place = herdsman_io::output_target(&cfg.failures)
                .map(|t| t.is_stream())
                .unwrap_or(false);
            if !failures_in_place {
                reclaim_renamed(&cfg.failures, r.failures_end)?;
            }
            (Some(r.output_end), Some(r.failures_end))
        }
        None => (None, None),
    };
    let output = match &cfg.db_output {
        Some(db) => {
            crate::db_output::Output::open_db(cfg, db, resume.is_none(), out_offset.unwrap_or(0))?
        }
        None => crate::db_output::Output::File(
            crate::shard_io::open_output(
                cfg,
                &out_path,
                output_format(cfg),
                out_offset,
                &sink_options(cfg),
            )
            .with_context(|| format!("cannot open the output {}", out_path.display()))?,
        ),
    };
    let sinks = FileSinks {
        output,
        failures: if (cfg.output.is_none() || cfg.output_in_place)
            && cfg.db_output.is_none()
            && !cfg.failures_given
        {
            Failures::OnFirstFailure(cfg.failures.clone())
        } else {
            Failures::Open(
                Sink::open(&cfg.failures, OutputFormat::Jsonl, fail_offset).with_context(|| {
                    format!(
                        "cannot open the dead-letter file {}",
                        cfg.failures.display()
                    )
                })?,
            )
        },
        joblog: None,
    };
    Ok(sinks)
}

/// One pass over the input: everything [`stream`] needs.
pub(crate) struct Pass<'a> {
    pub(crate) cfg: &'a RunConfig,
    /// The input, positioned where the checkpoint left it.
    pub(crate) source: Source,
    /// The inputs' names, for dead-letter entries.
    pub(crate) names: Vec<String>,
    pub(crate) resume: Option<&'a ResumePoint>,
    /// What earlier runs of the job committed.
    pub(crate) earlier: &'a Counts,
    pub(crate) executor: CliExecutor,
    pub(crate) sinks: FileSinks,
    pub(crate) ledger: Option<&'a mut dyn Ledger>,
    pub(crate) progress: &'a mut Progress,
    pub(crate) stop: &'a StopToken,
    /// `--joblog`, opened (and cut back to the committed work when resuming).
    pub(crate) joblog: Option<crate::joblog::JobLog>,
}

/// What a pass over the input left: its files, its counts and how it ended.
pub(crate) struct Streamed {
    pub(crate) sinks: FileSinks,
    /// Counts of the records in chunks this run wrote.
    pub(crate) this_run: Counts,
    pub(crate) latency: Latency,
    pub(crate) status: RunStatus,
    /// `--max-errors N%` stopped the run.
    pub(crate) aborted_by_share: bool,
    /// The input could not be read to the end.
    pub(crate) fatal: Option<SourceError>,
    /// Failed records by kind: this run's, plus earlier runs' when the caller adds them.
    pub(crate) failure_kinds: std::collections::BTreeMap<String, u64>,
}

/// Streams the input through the engine into the assembler: chunks → engine → assembler
/// (`--copy` without a rate limit: chunks → its executor → assembler, on this thread).
pub(crate) fn stream(pass: Pass<'_>) -> Result<Streamed> {
    let Pass {
        cfg,
        source,
        names,
        resume,
        earlier,
        executor,
        sinks,
        ledger,
        progress,
        stop,
        joblog,
    } = pass;
    let mut sinks = sinks;
    let mut executor = executor;
    let metrics = executor.metrics();
    sinks.joblog = joblog
        .map(|log| log.start(executor.take_finished(), names.clone()))
        .transpose()?;
    let (announce, chunks) = mpsc::channel();
    let fatal = Arc::new(Mutex::new(None));
    let (first_chunk, skip) = match &resume {
        Some(r) => (
            r.next_chunk,
            r.committed_after.iter().copied().collect::<HashSet<u64>>(),
        ),
        None => (0, HashSet::new()),
    };
    let reader = ChunkReader::new(
        source,
        ChunkLimits {
            records: cfg.chunk_size,
            bytes: CHUNK_BYTES,
            total: cfg.limit,
        },
        first_chunk,
        skip,
        announce,
        fatal.clone(),
        metrics.clone(),
    )
    .context("cannot start the input reader thread")?;

    let mut history = match (&ledger, executor.probe()) {
        (Some(l), Some(probe)) => crate::history::History::start(&**l, probe),
        _ => None,
    };
    // A load with no worker needs no scheduler: its executor answers at once, so whole
    // chunks go from the reader through it into the assembler on this thread. Only a rate
    // limit needs the engine.
    let mut driver = if matches!(cfg.transform, Transform::Copy) && cfg.rate.is_none() {
        Driver::AtOnce(reader, Box::new(executor))
    } else {
        Driver::Engine(engine(cfg, reader, executor, stop, earlier.failed))
    };

    let mut asm = Assembler::new(chunks, sinks, ledger, names);
    let kinds = asm.failure_kinds();
    let mut latency = Latency::default();
    let mut live = earlier.clone();
    let mut aborted_by_share = false;
    let live_table = crate::live::current();
    if let Some(table) = live_table {
        table.counts(&live);
    }
    let mut take = |outcome: herdsman::ItemOutcome<WorkOutput, CliFailure>,
                    asm: &mut Assembler<'_, FileSinks>|
     -> Result<()> {
        let (index, attempts, duration) = (outcome.index, outcome.attempts, outcome.duration);
        let state = tally(
            outcome,
            &mut live,
            &mut latency,
            cfg.timeout,
            metrics.as_deref(),
        );
        if let Some(h) = &mut history {
            observe_history(h, asm, index, &state, attempts, duration)?;
        }
        asm.resolve(index, state, attempts)?;
        if let Some(h) = &mut history {
            let now = std::time::Instant::now();
            if h.due(now) && !asm.ledger_mut().is_some_and(|l| h.write(l, &live, now)) {
                history = None;
            }
        }
        progress.update(&live);
        if let Some(table) = live_table {
            table.counts(&live);
        }
        if let Some(MaxErrors::Percent(p)) = cfg.max_errors {
            let resolved = live.resolved();
            if !aborted_by_share
                && resolved >= 100
                && (live.failed as f64) * 100.0 > p * resolved as f64
            {
                aborted_by_share = true;
                stop.stop();
            }
        }
        Ok(())
    };
    let status = match &mut driver {
        Driver::Engine(stream) => {
            loop {
                match stream.next_within(std::time::Duration::from_millis(250)) {
                    herdsman::StreamNext::Item(o) => take(o, &mut asm)?,
                    herdsman::StreamNext::Ended => break,
                    herdsman::StreamNext::Pending => asm.checkpoint_if_due()?,
                }
            }
            stream.status().cloned().unwrap_or(RunStatus::Completed)
        }
        Driver::AtOnce(reader, executor) => {
            let max_failures = failures_left(cfg, earlier.failed);
            let status = run_at_once(reader, executor, &mut asm, stop, max_failures, &mut take)?;
            // No worker answered: there is no latency to report.
            latency = Latency::default();
            status
        }
    };
    drop(driver);
    progress.finish();
    if let (Some(h), Some(l)) = (&mut history, asm.ledger_mut()) {
        // The run's last interval, also when it was shorter than a second.
        h.write(l, &live, std::time::Instant::now());
    }

    if aborted_by_share || status == RunStatus::Aborted {
        asm.keep_failures_of_cut_short_chunks()?;
    }
    let (sinks, this_run) = asm.finish()?;
    let fatal = fatal.lock().unwrap_or_else(|p| p.into_inner()).take();
    Ok(Streamed {
        sinks,
        this_run,
        latency,
        status,
        aborted_by_share,
        fatal,
        failure_kinds: kinds.take(),
    })
}

/// Tells `history` how the record at engine index `index` ended (before `asm` resolves it,
/// while its position can still be looked up for the slowest records).
fn observe_history<S: crate::assemble::Sinks>(
    history: &mut crate::history::History,
    asm: &mut crate::assemble::Assembler<'_, S>,
    index: u64,
    state: &crate::assemble::Resolved,
    attempts: u32,
    duration: std::time::Duration,
) -> anyhow::Result<()> {
    use crate::assemble::Resolved;
    let outcome = match state {
        Resolved::NotRun => return Ok(()),
        Resolved::Outputs(o) if o.is_empty() => "filtered",
        Resolved::Outputs(_) => "succeeded",
        Resolved::Failed(_) => "failed",
    };
    let at = if history.is_slow(duration) {
        asm.locate(index)?
    } else {
        None
    };
    history.finished(duration, attempts, outcome, at);
    Ok(())
}

/// The kinds of the dead-letter entries an earlier run committed: the first `end` bytes of
/// the dead-letter file `path` (its partial file while the job is unfinished).
pub(crate) fn failure_kinds_in(path: &Path, end: u64) -> std::collections::BTreeMap<String, u64> {
    use std::io::{BufRead, Read};
    let mut kinds = std::collections::BTreeMap::new();
    let Ok(file) = std::fs::File::open(path) else {
        return kinds;
    };
    for line in std::io::BufReader::new(file.take(end)).lines() {
        let Ok(line) = line else { break };
        let kind = serde_json::from_str::<herdsman_io::DeadLetter>(&line)
            .map(|d| d.error.kind)
            .unwrap_or_default();
        *kinds.entry(kind.name().to_string()).or_default() += 1;
    }
    kinds
}
