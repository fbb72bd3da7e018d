//! `herdsman run`: wires a source, the engine with the process executor, the assembler, the
//! sinks and the ledger together, and resumes an interrupted job.
//!
//! Order of events for a crash-safe run: check the configuration, lock the state directory,
//! open the ledger and compare the job's identity, repair the partial files to the last
//! commit, then stream. This module must never start workers before every usage error has
//! been reported, and never rename a partial output into place before every chunk is
//! committed. Before anything is written it checks that no file is both read and written,
//! that the directories written to accept files, and takes the output's own lock. A run that
//! stops early and cannot resume never renames its incomplete output over an existing file.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Instant;

use anyhow::{anyhow, Context, Result};
use herdsman::executor::Executor;
use herdsman::{ItemError, RateLimit, Retry, RunStatus, StopToken};
use herdsman_io::{
    expand_inputs, Format, InputPath, InputSpec, OutputFormat, Sink, SinkError, Source,
    SourceOptions,
};
use herdsman_ledger::{JobIdentity, Ledger, LedgerError, Opened, OutputLock, ResumePoint};
use herdsman_workers::{
    ExecConfig, ExecPool, PoolConfig, Protocol, Template, WorkItem, WorkOutput, WorkerCommand,
    WorkerFailure, WorkerPool,
};

use crate::assemble::{from_ledger, Assembler, FailureNote, Resolved, Sinks};
use crate::chunks::{ChunkLimits, ChunkReader};
use crate::cli::{FormatArg, OutputFormatArg, ProtocolArg};
use crate::config::{
    canonical, check_paths, check_writable, ensure_parent_dir, EnvError, MaxErrors, RunConfig,
    Transform, UsageError,
};
use crate::progress::{Log, Progress};
use crate::summary::{Counts, Ending, Latency, Summary};
use crate::transform::{CliExecutor, CliFailure};

/// Largest chunk, in bytes of record JSON, whatever --chunk-size says.
const CHUNK_BYTES: usize = 8 << 20;

fn usage(msg: String) -> anyhow::Error {
    anyhow::Error::new(UsageError(msg))
}

/// The inputs, resolved and typed.
struct Inputs {
    specs: Vec<InputSpec>,
    names: Vec<String>,
}

/// A missing input is a usage error (a typo, exit 2); one that exists but cannot be read is
/// an environment error (exit 4).
fn input_error(e: herdsman_io::IoError) -> anyhow::Error {
    match &e {
        herdsman_io::IoError::Missing { source, .. }
            if source.kind() != std::io::ErrorKind::NotFound =>
        {
            anyhow::Error::new(EnvError(crate::config::with_causes(&e)))
        }
        _ => usage(crate::config::with_causes(&e)),
    }
}

/// An input that cannot be opened or read is an environment error; the rest (a bad CSV
/// header, a resume position that does not fit) are usage errors.
fn source_error(e: herdsman_io::SourceError) -> anyhow::Error {
    match e {
        herdsman_io::SourceError::Open { .. } | herdsman_io::SourceError::Read { .. } => {
            anyhow::Error::new(EnvError(crate::config::with_causes(&e)))
        }
        other => usage(crate::config::with_causes(&other)),
    }
}

fn resolve_inputs(cfg: &RunConfig) -> Result<Inputs> {
    let paths = expand_inputs(&cfg.inputs).map_err(input_error)?;
    let mut specs = Vec::with_capacity(paths.len());
    for p in paths {
        let format = match cfg.format {
            Some(FormatArg::Csv) => Format::Csv,
            Some(FormatArg::Jsonl) => Format::Jsonl,
            Some(FormatArg::Lines) => Format::Lines,
            None => match &p {
                InputPath::File(f) => Format::from_path(f).ok_or_else(|| {
                    usage(format!(
                        "cannot tell the format of {} from its extension; pass --format csv|jsonl|lines",
                        f.display()
                    ))
                })?,
                InputPath::Stdin => sniff_stdin()?,
            },
        };
        specs.push(InputSpec { path: p, format });
    }
    let names = specs.iter().map(|s| s.path.display_name()).collect();
    Ok(Inputs { specs, names })
}

/// The format of standard input from its first bytes, peeked without consuming them (they
/// stay in stdin's buffer for the source): see [`Format::sniff`].
fn sniff_stdin() -> Result<Format> {
    use std::io::BufRead;
    let mut stdin = std::io::stdin().lock();
    let first = stdin.fill_buf().map_err(|e| {
        anyhow::Error::new(EnvError(format!(
            "cannot read stdin: {e}; pipe records in, or pass files with -i"
        )))
    })?;
    Ok(Format::sniff(first))
}

/// What identifies this job: the options that change results, the files the worker or
/// command names (their contents), and the inputs by canonical path and content. Every path
/// is canonical, so the same job started from another directory, through a symbolic link or
/// as `./job.toml` has the same identity.
fn job_identity(cfg: &RunConfig, inputs: &Inputs) -> Result<JobIdentity> {
    let mut id = JobIdentity::new();
    for (k, v) in cfg.result_identity() {
        id.insert(k, v);
    }
    if let Some(out) = &cfg.output {
        id.insert("output", canonical(out).display().to_string());
    }
    id.insert("failures", canonical(&cfg.failures).display().to_string());
    for (path, value) in script_files(cfg) {
        id.insert(format!("{SCRIPT_KEY}{}", path.display()), value);
    }
    for (i, spec) in inputs.specs.iter().enumerate() {
        let InputPath::File(path) = &spec.path else {
            continue;
        };
        let fp = herdsman_io::fingerprint(path).map_err(|e| {
            anyhow::Error::new(EnvError(format!(
                "cannot read input {}: {e}; check that it is a readable file",
                path.display()
            )))
        })?;
        id.insert(
            format!("input.{i}.path"),
            canonical(path).display().to_string(),
        );
        id.insert(format!("input.{i}.format"), spec.format.name());
        id.insert(format!("input.{i}.size"), fp.size.to_string());
        id.insert(format!("input.{i}.mtime"), fp.mtime_ns.to_string());
        id.insert(
            format!("input.{i}.fingerprint"),
            format!("{:032x}", fp.hash),
        );
    }
    Ok(id)
}

/// The prefix of the identity keys that hold the fingerprint of a file the worker names.
const SCRIPT_KEY: &str = "script ";

/// The script of the worker or `--exec` command: the program itself when it is a file of
/// the job (`./worker.sh`), or else the first word after the program that is not an option
/// (`python3 worker.py`, `python3 -u worker.py`, `node worker.js`), resolved against the
/// worker's directory, when it exists as a regular file. It is identified by canonical path,
/// size and content fingerprint: a script edited between two runs changes what the records
/// turn into, so it changes the job. Later arguments are not part of it (they may name data
/// or marker files that change as the job runs), nor are words with placeholders or programs
/// found on `PATH`.
fn script_files(cfg: &RunConfig) -> Vec<(PathBuf, String)> {
    let (words, shell): (&[String], bool) = match &cfg.transform {
        Transform::Worker { argv, shell, .. } => (argv, *shell),
        Transform::Exec {
            template, shell, ..
        } => (template, *shell),
    };
    let dir = cfg.workdir.clone().unwrap_or_else(|| PathBuf::from("."));
    let split: Vec<String> = if shell {
        // A shell command line: its words, roughly; quotes are not part of file names.
        words
            .iter()
            .flat_map(|w| w.split_whitespace())
            .map(|w| w.trim_matches(|c| c == '\'' || c == '"').to_string())
            .collect()
    } else {
        words.to_vec()
    };
    let file = |word: &str| -> Option<PathBuf> {
        if word.is_empty() || word.contains('{') {
            return None;
        }
        let path = dir.join(word);
        std::fs::metadata(&path)
            .is_ok_and(|m| m.is_file())
            .then_some(path)
    };
    let script = split.first().and_then(|w| file(w)).or_else(|| {
        split
            .iter()
            .skip(1)
            .find(|w| !w.starts_with('-'))
            .and_then(|w| file(w))
    });
    script
        .and_then(|path| {
            let fp = herdsman_io::fingerprint(&path).ok()?;
            Some((
                canonical(&path),
                format!("size {} content {:032x}", fp.size, fp.hash),
            ))
        })
        .into_iter()
        .collect()
}

/// Whether a checkpoint written by an earlier version of herdsman describes the same job:
/// it stored input paths as typed and output paths without resolving `..` or links, and no
/// worker files. The differences allowed are exactly those: an input path whose canonical
/// form (from the current directory) is the current one, or whose contents (size, mtime and
/// fingerprint, all still compared) are unchanged; an output path that resolves to the
/// current one; and worker files the old checkpoint did not record.
fn same_job_older_form(stored: &JobIdentity, now: &JobIdentity) -> bool {
    let stored_has_scripts = stored.entries.keys().any(|k| k.starts_with(SCRIPT_KEY));
    stored.diff(now).iter().all(|c| {
        let (Some(was), Some(is)) = (c.was.as_deref(), c.now.as_deref()) else {
            return c.was.is_none() && c.key.starts_with(SCRIPT_KEY) && !stored_has_scripts;
        };
        match c.key.as_str() {
            "output" | "failures" => canonical(Path::new(was)) == Path::new(is),
            k if k.starts_with("input.") && k.ends_with(".path") => {
                canonical(Path::new(was)) == Path::new(is) || !Path::new(was).is_absolute()
            }
            _ => false,
        }
    })
}

/// Opens the job in the ledger. Besides the exact identity, it accepts a checkpoint of the
/// same job in an earlier version's form, and a changed job whose checkpoint committed
/// nothing (a configuration mistake fixed before any work was kept): that job is replaced by
/// this one, with the notice returned.
fn open_job(cp: &mut Checkpoint, identity: &JobIdentity) -> Result<(Opened, Option<String>)> {
    match cp.ledger.open_job(identity) {
        Err(LedgerError::IdentityChanged { changes }) => {
            let status = cp.ledger.status().map_err(ledger_usage)?;
            if let Some(stored) = status.identity.as_ref() {
                if same_job_older_form(stored, identity) {
                    let opened = cp.ledger.open_job(stored).map_err(ledger_usage)?;
                    return Ok((opened, None));
                }
            }
            if status.commits.is_empty() && !status.finished() {
                cp.ledger.reset().map_err(ledger_usage)?;
                let opened = cp.ledger.open_job(identity).map_err(ledger_usage)?;
                let list: Vec<String> = changes.iter().map(ToString::to_string).collect();
                let notice = format!(
                    "the job changed since the last run, which kept no records ({}); starting it anew with the new settings",
                    list.join("; ")
                );
                return Ok((opened, Some(notice)));
            }
            Err(ledger_usage(LedgerError::IdentityChanged { changes }))
        }
        other => Ok((other.map_err(ledger_usage)?, None)),
    }
}

/// Starts the workers (or the per-record command runner).
fn start_executor(
    cfg: &RunConfig,
    log: &Log,
    csv_header: Option<&[String]>,
) -> Result<CliExecutor> {
    let stderr_log = log.clone();
    let stderr: herdsman_workers::StderrSink =
        Arc::new(move |worker, line: &str| stderr_log.worker_line(worker, line));
    let inner: Box<dyn Executor<WorkItem, Output = WorkOutput, Error = WorkerFailure>> = match &cfg
        .transform
    {
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
            pc.stderr = Some(stderr);
            pc.timeout = cfg.timeout;
            pc.max_tasks_per_worker = cfg.max_tasks_per_worker;
            pc.cwd = cfg.workdir.clone();
            // An answer may be as long as the longest record it was given.
            pc.max_line_bytes = pc
                .max_line_bytes
                .max(cfg.max_record_size.saturating_add(1 << 20));
            let notice_log = log.clone();
            pc.notices = Some(Arc::new(move |msg: &str| notice_log.notice(msg)));
            // For tests only: a short threshold for the no-answer notice.
            if let Some(ms) = std::env::var("HERDSMAN_NO_ANSWER_NOTICE_MS")
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
            {
                pc.no_answer_notice = std::time::Duration::from_millis(ms);
            }
            Box::new(WorkerPool::start(pc).map_err(|e| usage(e.message))?)
        }
        Transform::Exec {
            template,
            shell,
            output,
            no_retry_exit,
        } => {
            let template = Template::new(template, *shell).map_err(|e| usage(e.to_string()))?;
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
            ec.stderr = Some(stderr);
            ec.timeout = cfg.timeout;
            ec.cwd = cfg.workdir.clone();
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
            Box::new(ExecPool::start(ec).map_err(|e| usage(e.message))?)
        }
    };
    Ok(CliExecutor::new(inner))
}

/// The run's output and dead-letter files.
struct FileSinks {
    output: Sink,
    failures: Failures,
}

/// The dead-letter file: open from the start, or (streaming to stdout without a named
/// dead-letter file) only once a record fails, so that a clean run leaves no file behind.
enum Failures {
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
        self.output.check_records(outputs.iter().map(Vec::as_slice))
    }
    fn write_output(&mut self, json: &[u8]) -> Result<(), SinkError> {
        self.output.write_record(json)
    }
    fn write_failure(&mut self, json: &[u8]) -> Result<(), SinkError> {
        self.failures.sink()?.write_record(json)
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
        self.output.sync().context("cannot sync the output")?;
        if let Failures::Open(sink) = &mut self.failures {
            sink.sync().context("cannot sync the dead-letter file")?;
        }
        Ok(())
    }
}

/// The ledger of a checkpointed run (which holds the state directory's lock while it lives),
/// and the state directory.
struct Checkpoint {
    dir: PathBuf,
    ledger: Box<dyn Ledger>,
}

/// Runs the job and returns its summary (the caller prints it and exits with its code).
pub fn run(mut cfg: RunConfig, stop: StopToken) -> Result<Summary> {
    let started = Instant::now();
    let inputs = resolve_inputs(&cfg)?;
    // Lines in, stdout out: text out, as cat or GNU parallel would print it.
    if !cfg.output_format_chosen
        && cfg.output.is_none()
        && inputs.specs.iter().all(|s| s.format == Format::Lines)
    {
        cfg.output_format = OutputFormatArg::Lines;
    }
    // Before anything is written: no file is both read and written (or written twice), and
    // every directory written to accepts files.
    let input_files: Vec<PathBuf> = inputs
        .specs
        .iter()
        .filter_map(|s| match &s.path {
            InputPath::File(f) => Some(f.clone()),
            InputPath::Stdin => None,
        })
        .collect();
    check_paths(&cfg, &input_files)?;
    check_writable(&cfg)?;
    // The output belongs to one run at a time, whatever its state directory; held to the end.
    let _output_lock = match cfg.output.as_deref().filter(|_| !cfg.output_in_place) {
        Some(out) => Some(OutputLock::acquire(&canonical(out)).map_err(ledger_usage)?),
        None => None,
    };

    // The CSV header of the first input, to check --exec templates before any work.
    let csv_header: Option<Vec<String>> = match (&cfg.transform, inputs.specs.first()) {
        (Transform::Exec { .. }, Some(first))
            if first.format == Format::Csv && !matches!(first.path, InputPath::Stdin) =>
        {
            let src = Source::open(vec![first.clone()], source_options(&cfg), None)
                .map_err(source_error)?;
            src.csv_header().map(<[String]>::to_vec)
        }
        _ => None,
    };

    // Every CSV header, before any file or directory is created.
    herdsman_io::check_csv_headers(&inputs.specs, &source_options(&cfg)).map_err(source_error)?;

    let identity = job_identity(&cfg, &inputs)?;
    let mut checkpoint = match &cfg.state {
        Some(dir) => {
            let ledger = herdsman_ledger::open(dir).map_err(ledger_usage)?;
            Some(Checkpoint {
                dir: dir.clone(),
                ledger,
            })
        }
        None => None,
    };
    let mut resume: Option<ResumePoint> = None;
    let mut earlier = Counts::default();
    let mut identity_notice = None;
    if let Some(cp) = checkpoint.as_mut() {
        if cfg.restart {
            cp.ledger.reset().map_err(ledger_usage)?;
        }
        let (mut opened, notice) = open_job(cp, &identity)?;
        identity_notice = notice;
        if crate::retry::recover(&cp.dir, cp.ledger.as_mut())? {
            opened = open_job(cp, &identity)?.0;
        }
        match opened {
            Opened::Fresh | Opened::Resumed { .. } if cfg.retry_failed => {
                return Err(usage(
                    "--retry-failed re-runs the failures of a finished job, and this job has not finished; run it without --retry-failed first".into(),
                ));
            }
            Opened::Fresh => {}
            Opened::Resumed { commits } => {
                earlier = counts_of(&commits);
                resume = Some(ResumePoint::from_commits(&commits));
            }
            Opened::Finished { summary_json, .. } if cfg.retry_failed => {
                let previous: Summary = summary_json
                    .as_deref()
                    .and_then(|s| serde_json::from_str(s).ok())
                    .ok_or_else(|| usage("the checkpoint's summary is unreadable; run with --restart to start over".into()))?;
                let progress =
                    Progress::new(cfg.progress, Some(previous.total.failed), 0, cfg.quiet);
                let executor = start_executor(&cfg, &progress.log(), csv_header.as_deref())?;
                let summary = crate::retry::retry_failed(
                    &cfg,
                    &cp.dir,
                    cp.ledger.as_mut(),
                    previous,
                    executor,
                    output_format(&cfg),
                    stop,
                )?;
                progress.finish();
                write_summary_json(&cfg, &summary)?;
                return Ok(summary);
            }
            Opened::Finished { summary_json, .. } => {
                return already_finished(&cfg, summary_json);
            }
        }
    }

    let out_path: PathBuf = cfg.output.clone().unwrap_or_else(|| PathBuf::from("-"));
    if let Some(o) = &cfg.output {
        ensure_parent_dir(o)?;
    }
    ensure_parent_dir(&cfg.failures)?;
    let (out_offset, fail_offset) = match &resume {
        Some(r) => {
            if let Some(o) = &cfg.output {
                reclaim_renamed(o, r.output_end)?;
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
    let sinks = FileSinks {
        output: Sink::open(&out_path, output_format(&cfg), out_offset)
            .with_context(|| format!("cannot open the output {}", out_path.display()))?,
        failures: if (cfg.output.is_none() || cfg.output_in_place) && !cfg.failures_given {
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
    };

    let resume_at = resume.as_ref().and_then(|r| r.position.map(from_ledger));
    let source = Source::open(inputs.specs.clone(), source_options(&cfg), resume_at)
        .map_err(source_error)?;
    let mut progress = Progress::new(cfg.progress, None, earlier.resolved(), cfg.quiet);
    let specs = inputs.specs.clone();
    let limit = cfg.limit;
    progress.count_total_with(move || {
        herdsman_io::estimate_records(&specs).map(|t| limit.map_or(t, |l| t.min(l)))
    });
    let log = progress.log();
    if let Some(notice) = &identity_notice {
        log.notice(notice);
    }
    if earlier.resolved() > 0 {
        log.notice(&format!(
            "resuming: {} records were done by an earlier run",
            earlier.resolved()
        ));
    }
    let executor = start_executor(&cfg, &log, csv_header.as_deref())?;

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
    )
    .context("cannot start the input reader thread")?;

    let mut stream = engine(&cfg, reader, executor, &stop, earlier.failed);

    let ledger: Option<&mut dyn Ledger> = checkpoint
        .as_mut()
        .map(|c| &mut *c.ledger as &mut dyn Ledger);
    let mut asm = Assembler::new(chunks, sinks, ledger, inputs.names.clone());
    let mut latency = Latency::default();
    let mut live = earlier.clone();
    let mut aborted_by_share = false;
    for outcome in &mut stream {
        let (index, attempts) = (outcome.index, outcome.attempts);
        let state = tally(outcome, &mut live, &mut latency, cfg.timeout);
        asm.resolve(index, state, attempts)?;
        progress.update(&live);
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
    }
    let status = stream.status().cloned().unwrap_or(RunStatus::Completed);
    drop(stream);
    progress.finish();

    if aborted_by_share || status == RunStatus::Aborted {
        asm.keep_failures_of_cut_short_chunks()?;
    }
    let (mut sinks, this_run) = asm.finish()?;
    let done_so_far = if checkpoint.is_some() {
        "the records done so far are checkpointed"
    } else {
        "the records done so far are kept (see above)"
    };
    if let Some(err) = fatal.lock().unwrap_or_else(|p| p.into_inner()).take() {
        if checkpoint.is_none() {
            keep_incomplete(sinks, &log, &out_path, &cfg.failures)?;
        }
        if matches!(err, herdsman_io::SourceError::Changed { .. }) {
            // Its message says what to do; a checkpoint will not resume a changed input.
            return Err(anyhow!(err));
        }
        return Err(anyhow!(err)).context(format!(
            "the input could not be read to the end; {done_so_far}"
        ));
    }
    let ending = if aborted_by_share {
        Ending::Aborted
    } else {
        match status {
            RunStatus::Completed => Ending::Completed,
            RunStatus::Aborted => Ending::Aborted,
            RunStatus::Cancelled | RunStatus::TimedOut => Ending::Interrupted,
            RunStatus::ExecutorFailed(message) => {
                if checkpoint.is_none() {
                    keep_incomplete(sinks, &log, &out_path, &cfg.failures)?;
                }
                return Err(usage(format!("the run stopped: {message}; {done_so_far}")));
            }
            // A status a newer library may add: nothing is lost, the job resumes.
            _ => Ending::Interrupted,
        }
    };
    let mut summary = Summary::new(
        ending,
        earlier,
        this_run,
        started.elapsed(),
        &latency,
        cfg.output.as_ref().map(|p| p.display().to_string()),
        cfg.failures.display().to_string(),
    );
    let summary_json =
        serde_json::to_string_pretty(&summary).context("cannot encode the summary")?;
    let complete = ending == Ending::Completed;
    if complete {
        sinks.sync()?;
        let FileSinks { output, failures } = sinks;
        fault("before-rename");
        output
            .finish()
            .context("cannot move the output into place")?;
        fault("between-renames");
        if let Failures::Open(failures) = failures {
            failures
                .finish()
                .context("cannot move the dead-letter file into place")?;
        }
        if let Some(cp) = checkpoint.as_mut() {
            fault("before-mark-finished");
            cp.ledger
                .mark_finished(&summary_json)
                .context("cannot mark the job finished in its checkpoint")?;
        }
    } else if checkpoint.is_none() {
        keep_incomplete(sinks, &log, &out_path, &cfg.failures)?;
    } else {
        log.notice(&format!(
            "the output so far is in {}; run the same command again to resume",
            herdsman_io::partial_path(&out_path).display()
        ));
        // The summary names the files that hold this run's records: the partial ones.
        summary.point_at_partial_files();
    }
    write_summary_json(&cfg, &summary)?;
    Ok(summary)
}

/// Ends a run that stopped early and cannot resume: keeps what is done, but never over a
/// file that is already there, and says where it is.
fn keep_incomplete(
    mut sinks: FileSinks,
    log: &Log,
    out_path: &Path,
    failures: &Path,
) -> Result<()> {
    sinks.sync()?;
    let FileSinks {
        output,
        failures: failures_sink,
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
fn tell_kept(log: &Log, what: &str, path: &Path, kept: &herdsman_io::Kept) {
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

fn write_summary_json(cfg: &RunConfig, summary: &Summary) -> Result<()> {
    if let Some(path) = &cfg.summary_json {
        let json = serde_json::to_string_pretty(summary).context("cannot encode the summary")?;
        herdsman_io::write_atomic(path, json.as_bytes())
            .with_context(|| format!("cannot write the summary to {}", path.display()))?;
    }
    Ok(())
}

fn output_format(cfg: &RunConfig) -> OutputFormat {
    match cfg.output_format {
        OutputFormatArg::Jsonl => OutputFormat::Jsonl,
        OutputFormatArg::Lines => OutputFormat::Lines,
        OutputFormatArg::Csv => OutputFormat::Csv {
            columns: cfg.columns.clone(),
        },
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
        engine = engine.rate_limit(rate);
    }
    // --timeout is enforced by the process executor, which knows when a record actually
    // started on its worker (a record queued behind a slow one is not charged for the wait).
    if let Some(MaxErrors::Count(n)) = cfg.max_errors {
        engine = engine.max_errors(n.saturating_sub(failed_earlier).max(1));
    }
    engine.stream()
}

/// Counts one outcome and turns it into the record's final state.
pub(crate) fn tally(
    outcome: herdsman::ItemOutcome<WorkOutput, CliFailure>,
    live: &mut Counts,
    latency: &mut Latency,
    timeout: Option<std::time::Duration>,
) -> Resolved {
    let state = match outcome.result {
        Ok(outputs) => {
            live.records += 1;
            if outputs.is_empty() {
                live.filtered += 1;
            } else {
                live.ok += 1;
            }
            Resolved::Outputs(outputs)
        }
        Err(ItemError::NotRun) => {
            live.not_run += 1;
            Resolved::NotRun
        }
        Err(e) => {
            live.records += 1;
            live.failed += 1;
            Resolved::Failed(note_of(e, timeout))
        }
    };
    if !matches!(state, Resolved::NotRun) {
        latency.record(outcome.duration);
        live.retries += u64::from(outcome.attempts.saturating_sub(1));
    }
    state
}

fn note_of(e: ItemError<CliFailure>, timeout: Option<std::time::Duration>) -> FailureNote {
    match e {
        ItemError::Failed(f) => FailureNote::from_failure(&f),
        ItemError::Panicked(msg) => FailureNote {
            kind: "worker_crashed".into(),
            message: msg,
            stderr_tail: Vec::new(),
        },
        ItemError::TimedOut => FailureNote {
            kind: "timeout".into(),
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
            kind: "executor".into(),
            message,
            stderr_tail: Vec::new(),
        },
        ItemError::NotRun => unreachable!("handled by the caller"),
        // An outcome a newer library may add: recorded as a failure, never dropped.
        _ => FailureNote {
            kind: "error".into(),
            message: "the item failed for a reason this version cannot name".into(),
            stderr_tail: Vec::new(),
        },
    }
}

fn counts_of(commits: &[herdsman_ledger::ChunkCommit]) -> Counts {
    Counts::from(herdsman_ledger::Totals::of(commits).counts)
}

fn source_options(cfg: &RunConfig) -> SourceOptions {
    SourceOptions {
        csv_delimiter: cfg.delimiter,
        infer_types: cfg.infer_types,
        max_record_bytes: cfg.max_record_size,
        ..SourceOptions::default()
    }
}

/// Ledger errors that the user can fix (a second run, a changed job) are usage errors.
fn ledger_usage(e: LedgerError) -> anyhow::Error {
    match e {
        LedgerError::Locked { .. }
        | LedgerError::OutputLocked { .. }
        | LedgerError::IdentityChanged { .. } => usage(e.to_string()),
        other => anyhow::Error::new(other),
    }
}

/// The job already finished: say so, and exit as it did.
fn already_finished(cfg: &RunConfig, summary_json: Option<String>) -> Result<Summary> {
    let out = cfg
        .output
        .as_deref()
        .map(Path::display)
        .map(|d| d.to_string())
        .unwrap_or_default();
    if let Some(path) = cfg.output.as_deref().filter(|p| !p.exists()) {
        return Err(usage(format!(
            "this job finished earlier, but its output {} is gone; run with --restart to run it again",
            path.display()
        )));
    }
    let previous: Option<Summary> = summary_json.and_then(|s| serde_json::from_str(&s).ok());
    match previous {
        Some(s) => {
            eprintln!(
                "herdsman: this job already finished ({out}); nothing to do. Run with --restart to run it again. Its summary:"
            );
            Ok(s)
        }
        None => Err(usage(format!(
            "this job already finished ({out}) but its summary is unreadable; run with --restart to run it again"
        ))),
    }
}

/// A crash between the final renames and the ledger's "finished" mark leaves a final file
/// where the partial one should be. If its length is exactly the committed length, move it
/// back so the resumed run finishes the job the normal way.
fn reclaim_renamed(path: &Path, committed: u64) -> Result<()> {
    let partial = herdsman_io::partial_path(path);
    if partial.exists() {
        return Ok(());
    }
    match std::fs::metadata(path) {
        Ok(m) if m.len() == committed => std::fs::rename(path, &partial).with_context(|| {
            format!(
                "cannot move {} back to {} to resume",
                path.display(),
                partial.display()
            )
        }),
        Ok(m) => Err(usage(format!(
            "cannot resume: {} is missing and {} holds {} bytes where the checkpoint committed {committed}; run with --restart to start over",
            partial.display(),
            path.display(),
            m.len()
        ))),
        Err(_) if committed == 0 => Ok(()),
        Err(_) => Err(usage(format!(
            "cannot resume: {} is missing although the checkpoint committed {committed} bytes to it; run with --restart to start over",
            partial.display()
        ))),
    }
}

/// Crash points for the crash-equivalence tests: `HERDSMAN_FAULT=<point>` kills the
/// process there with SIGKILL (no destructors, no flushing).
pub fn fault(point: &str) {
    static FAULT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    if FAULT
        .get_or_init(|| std::env::var("HERDSMAN_FAULT").ok())
        .as_deref()
        == Some(point)
    {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::this(), nix::sys::signal::SIGKILL);
    }
}

/// Records whose commands `--dry-run` shows when `--limit` does not say.
const DRY_RUN_RECORDS: u64 = 10;

/// `--dry-run`: prints on stdout what the run would start, one command per line, shell-quoted
/// so it can be pasted: the worker command once, or the command of each of the first records
/// (`--limit N`, default [`DRY_RUN_RECORDS`]) for `--exec`. Runs nothing and creates no file.
pub fn dry_run(cfg: &RunConfig) -> Result<u8> {
    use std::io::Write;
    let quote = |argv: &[String]| -> String {
        argv.iter()
            .map(|w| crate::cli::shell_quote(w))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut out = std::io::stdout().lock();
    let (template, shell) = match &cfg.transform {
        Transform::Worker { argv, shell, .. } => {
            let line = if *shell {
                format!("sh -c {}", crate::cli::shell_quote(&argv[0]))
            } else {
                quote(argv)
            };
            writeln!(out, "{line}")?;
            crate::progress::stderr_line(&format!(
                "herdsman: dry run: {} of this worker command would serve the records; nothing was run",
                if cfg.jobs == 1 {
                    "1 process".to_string()
                } else {
                    format!("{} processes", cfg.jobs)
                }
            ));
            return Ok(0);
        }
        Transform::Exec {
            template, shell, ..
        } => (template, *shell),
    };
    let template =
        herdsman_workers::Template::new(template, shell).map_err(|e| usage(e.to_string()))?;
    let inputs = resolve_inputs(cfg)?;
    let source =
        Source::open(inputs.specs.clone(), source_options(cfg), None).map_err(source_error)?;
    let limit = cfg.limit.unwrap_or(DRY_RUN_RECORDS);
    let mut shown = 0u64;
    for record in source.take(usize::try_from(limit).unwrap_or(usize::MAX)) {
        let record = record.map_err(source_error)?;
        let seq = record.pos.seq;
        let line = match &record.data {
            Err(e) => format!("# record {} would fail: {e}", seq + 1),
            Ok(json) => match template.render_json(json, seq) {
                Err(e) => format!("# record {} would fail: {e}", seq + 1),
                Ok(cmd) => {
                    let env: String = cmd
                        .env
                        .iter()
                        .map(|(k, v)| format!("{k}={} ", crate::cli::shell_quote(v)))
                        .collect();
                    format!("{env}{}", quote(&cmd.argv))
                }
            },
        };
        writeln!(out, "{line}")?;
        shown += 1;
    }
    out.flush()?;
    crate::progress::stderr_line(&format!(
        "herdsman: dry run: the commands of the first {}; nothing was run and no file was written",
        crate::progress::plural(shown, "record")
    ));
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now_form(dir: &Path) -> JobIdentity {
        JobIdentity::new()
            .with(
                "output",
                canonical(&dir.join("out.jsonl")).display().to_string(),
            )
            .with(
                "input.0.path",
                canonical(&dir.join("in.csv")).display().to_string(),
            )
            .with("input.0.size", "10")
            .with(
                format!("{SCRIPT_KEY}{}", dir.join("w.py").display()),
                "size 1 content 0",
            )
    }

    #[test]
    fn an_older_checkpoint_of_the_same_job_is_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("in.csv"), "x\n").unwrap();
        // Paths as typed, an output path with `..`, no worker files.
        let old = JobIdentity::new()
            .with("output", d.join("sub/../out.jsonl").display().to_string())
            .with("input.0.path", "in.csv")
            .with("input.0.size", "10");
        std::fs::create_dir(d.join("sub")).unwrap();
        assert!(same_job_older_form(&old, &now_form(d)));
    }

    #[test]
    fn an_older_checkpoint_of_another_job_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let old = JobIdentity::new()
            .with("output", d.join("other.jsonl").display().to_string())
            .with("input.0.path", "in.csv")
            .with("input.0.size", "10");
        assert!(!same_job_older_form(&old, &now_form(d)));
        let old = JobIdentity::new()
            .with("output", d.join("out.jsonl").display().to_string())
            .with("input.0.path", "in.csv")
            .with("input.0.size", "11");
        assert!(!same_job_older_form(&old, &now_form(d)));
        // A current checkpoint that recorded worker files must match them exactly.
        let mut changed = now_form(d);
        changed.insert(
            format!("{SCRIPT_KEY}{}", d.join("w.py").display()),
            "size 2 content 1",
        );
        assert!(!same_job_older_form(&changed, &now_form(d)));
    }
}
