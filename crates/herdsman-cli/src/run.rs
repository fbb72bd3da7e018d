//! `herdsman run`: the sequence that checks a job, opens its checkpoint, lets `job` decide
//! what to do and does it: a `--retry-failed` pass (`retry`), or a pass over the input
//! (`pipeline`: chunks → engine → assembler) whose files are then published.
//!
//! Order of events for a crash-safe run: check the configuration, lock the state directory,
//! open the ledger and compare the job's identity, repair the partial files to the last
//! commit, then stream. This module must never start workers before every usage error has
//! been reported, and never rename a partial output into place before every chunk is
//! committed. Before anything is written it checks that no file is both read and written,
//! that the directories written to accept files, and takes the output's own lock. A run that
//! stops early and cannot resume never renames its incomplete output over an existing file.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{anyhow, Context, Result};
use herdsman::{RunStatus, StopToken};
use herdsman_io::{Format, InputPath, Source};
use herdsman_ledger::{JobIdentity, Ledger, Opened, OutputLock, ResumePoint};

use crate::assemble::{from_ledger, Sinks};
use crate::checkpoint::{counts_of, job_identity, ledger_usage, open_job, Checkpoint};
use crate::cli::OutputFormatArg;
use crate::config::{canonical, check_paths, check_writable, usage, RunConfig, Transform};
use crate::fault::fault;
use crate::inputs::{resolve_inputs, source_error, Inputs};
use crate::job::{self, Decision, JobState};
use crate::pipeline::{
    keep_incomplete, open_sinks, output_format, source_options, start_executor, stream, Failures,
    FileSinks, Pass, Streamed,
};
use crate::progress::{Log, Progress};
use crate::summary::{Counts, Ending, Summary};

/// Runs the job and returns its summary (the caller prints it and exits with its code).
///
/// The sequence: check everything that can be checked before a file is touched, open the
/// checkpoint, decide what to do (`job::decide`), then do it: a retry pass, or a pass over the
/// input from where the checkpoint left it, and publish its files.
pub fn run(mut cfg: RunConfig, stop: StopToken) -> Result<Summary> {
    let started = Instant::now();
    let Preflight {
        inputs,
        output_lock: _output_lock,
        csv_header,
    } = preflight(&mut cfg)?;
    // Metrics: bound (a port in use is a usage error) and written once before any work.
    let exporter = crate::metrics::Exporter::start(
        cfg.metrics_addr.as_deref(),
        cfg.metrics_file.as_deref(),
        || {
            let job = cfg
                .output
                .as_deref()
                .map_or_else(|| "-".to_string(), |p| p.display().to_string());
            let text = inputs
                .specs
                .iter()
                .map(|s| s.format != Format::Parquet)
                .collect();
            crate::metrics::Metrics::new(&job, text)
        },
    )
    .map_err(|e| match e {
        crate::metrics::SetupError::Usage(m) => usage(m),
        crate::metrics::SetupError::Environment(m) => {
            anyhow::Error::new(crate::config::EnvError(m))
        }
        crate::metrics::SetupError::Other(m) => anyhow!(m),
    })?;
    let metrics = exporter.as_ref().map(|e| Arc::clone(e.metrics()));
    let identity = job_identity(&cfg, &inputs)?;
    let (mut checkpoint, opened, identity_notice) = open_checkpoint(&cfg, &identity)?;
    let decision = job::decide(JobState {
        opened,
        retry_failed: cfg.retry_failed,
        output: cfg.output.as_deref(),
        output_exists: cfg.output.as_deref().is_some_and(Path::exists),
    });
    let mut resume: Option<ResumePoint> = None;
    let mut earlier = Counts::default();
    let mut committed = None;
    match decision {
        Decision::Fresh => {
            tracing::info!(
                checkpoint = cfg.state.is_some(),
                "starting the job from the beginning"
            );
        }
        Decision::Resume { commits } => {
            tracing::info!(
                chunks = commits.len(),
                "resuming the job after its committed chunks"
            );
            committed = Some(crate::joblog::Committed::of(&commits));
            earlier = counts_of(&commits);
            resume = Some(ResumePoint::from_commits(&commits));
        }
        Decision::RetryFailed { previous } => {
            tracing::info!(
                failed = previous.total.failed,
                "re-running the failed records of the finished job"
            );
            let cp = checkpoint
                .as_mut()
                .context("internal error: a retry pass without a checkpoint")?;
            let progress = Progress::new(cfg.progress, Some(previous.total.failed), 0, cfg.quiet);
            let executor = start_executor(
                &cfg,
                &progress.log(),
                csv_header.as_deref(),
                metrics.as_ref(),
            )?;
            let summary = crate::retry::retry_failed(
                &cfg,
                &cp.dir,
                cp.ledger.as_mut(),
                *previous,
                executor,
                output_format(&cfg),
                stop,
            )?;
            progress.finish();
            crate::remote::publish(&cfg.remote, cfg.output.as_deref(), &cfg.failures)?;
            write_summary_json(&cfg, &summary)?;
            return Ok(summary);
        }
        Decision::AlreadyFinished { summary } => {
            tracing::info!("the job already finished; nothing to run");
            already_finished(&cfg);
            return Ok(*summary);
        }
        Decision::Refused(refusal) => return Err(usage(refusal.message())),
    }

    // What this run does, for `herdsman status` (kept to the end of the run: its last
    // snapshot is written, marked final, when it is dropped).
    let _live = cfg.state.as_deref().and_then(|dir| {
        let whole = cfg.shard.is_none() && cfg.limit.is_none();
        let sizes = crate::live::input_sizes(&inputs.specs, whole);
        let table = crate::live::Live::new(cfg.jobs, cfg.window, sizes, earlier.resolved());
        crate::live::LiveWriter::start(table, dir)
    });
    let sinks = open_sinks(&cfg, resume.as_ref())?;
    let joblog = cfg
        .joblog
        .as_deref()
        .map(|p| crate::joblog::JobLog::open(p, committed.as_ref()))
        .transpose()?;
    let resume_at = resume
        .as_ref()
        .and_then(|r| r.position)
        .map(from_ledger)
        .transpose()
        .map_err(|e| {
            anyhow::anyhow!("cannot resume this checkpoint: {e}; run with --restart to start over")
        })?;
    let mut progress = Progress::new(cfg.progress, None, earlier.resolved(), cfg.quiet);
    let log = progress.log();
    let source =
        crate::shard_io::open_source(&cfg, &inputs.specs, source_options(&cfg), resume_at, &|n| {
            log.notice(n)
        })?;
    let specs = inputs.specs.clone();
    let (limit, shard) = (cfg.limit, cfg.shard);
    let count = move || crate::shard_io::estimate_records(shard, &specs, limit);
    match &metrics {
        // The estimate of seconds left needs the total, also without a progress display.
        Some(m) => {
            m.set_earlier(earlier.resolved());
            let m = Arc::clone(m);
            progress.count_total_with_always(move || {
                let total = count();
                m.set_total(total);
                total
            });
        }
        None => progress.count_total_with(count),
    }
    if let Some(notice) = &identity_notice {
        log.notice(notice);
    }
    if earlier.resolved() > 0 {
        log.notice(&format!(
            "resuming: {} records were done by an earlier run",
            earlier.resolved()
        ));
    }
    let executor = start_executor(&cfg, &log, csv_header.as_deref(), metrics.as_ref())?;
    let ledger: Option<&mut dyn Ledger> = checkpoint
        .as_mut()
        .map(|c| &mut *c.ledger as &mut dyn Ledger);
    let mut streamed = stream(Pass {
        cfg: &cfg,
        source,
        names: inputs.names.clone(),
        resume: resume.as_ref(),
        earlier: &earlier,
        executor,
        sinks,
        ledger,
        progress: &mut progress,
        stop: &stop,
        joblog,
    })?;
    if let Some(r) = resume.as_ref().filter(|_| earlier.failed > 0) {
        let partial = herdsman_io::partial_path(&cfg.failures);
        for (kind, n) in crate::pipeline::failure_kinds_in(&partial, r.failures_end) {
            *streamed.failure_kinds.entry(kind).or_default() += n;
        }
    }
    conclude(&cfg, checkpoint.as_mut(), streamed, earlier, &log, started)
}

/// What [`preflight`] found and holds for the rest of the run.
struct Preflight {
    inputs: Inputs,
    /// The output's own lock, held to the end of the run.
    output_lock: Option<OutputLock>,
    /// The CSV header of the first input, when an `--exec` template needs it.
    csv_header: Option<Vec<String>>,
}

/// Everything checked before a file is written: the inputs and their formats, that no file is
/// both read and written and every directory written to accepts files, the output's lock,
/// and every CSV header (the first one also against the `--exec` template).
fn preflight(cfg: &mut RunConfig) -> Result<Preflight> {
    let inputs = resolve_inputs(cfg)?;
    // Lines in, stdout out: text out, as cat or GNU parallel would print it.
    if !cfg.output_format_chosen
        && cfg.output.is_none()
        && inputs.specs.iter().all(|s| s.format == Format::Lines)
    {
        cfg.output_format = OutputFormatArg::Lines;
    }
    let cfg = &*cfg;
    // Before anything is written: no file is both read and written (or written twice), and
    // every directory written to accepts files.
    let input_files: Vec<PathBuf> = inputs
        .specs
        .iter()
        .filter_map(|s| match &s.path {
            _ if matches!(s.format, Format::Postgres | Format::Sqlite) => None,
            InputPath::File(f) => Some(f.clone()),
            InputPath::Stdin | InputPath::Object(_) => None,
        })
        .collect();
    check_paths(cfg, &input_files)?;
    check_writable(cfg)?;
    crate::remote::check(&cfg.remote)?;
    // The output belongs to one run at a time, whatever its state directory; held to the end.
    let output_lock = match cfg.output.as_deref().filter(|_| !cfg.output_in_place) {
        Some(out) => Some(OutputLock::acquire(&canonical(out)).map_err(ledger_usage)?),
        None => None,
    };

    // The CSV header of the first input, to check --exec templates before any work.
    let csv_header: Option<Vec<String>> = match (&cfg.transform, inputs.specs.first()) {
        (Transform::Exec { .. }, Some(first))
            if first.format == Format::Csv && !matches!(first.path, InputPath::Stdin) =>
        {
            let src = Source::open(vec![first.clone()], source_options(cfg), None)
                .map_err(source_error)?;
            src.csv_header().map(<[String]>::to_vec)
        }
        _ => None,
    };

    // Every CSV header, before any file or directory is created.
    herdsman_io::check_csv_headers(&inputs.specs, &source_options(cfg)).map_err(source_error)?;
    Ok(Preflight {
        inputs,
        output_lock,
        csv_header,
    })
}

/// Opens the checkpoint (clearing it for `--restart`, finishing a retry pass a crash
/// interrupted) and this job in it: the checkpoint, what it held, and a notice to show.
fn open_checkpoint(
    cfg: &RunConfig,
    identity: &JobIdentity,
) -> Result<(Option<Checkpoint>, Option<Opened>, Option<String>)> {
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
    let mut identity_notice = None;
    let mut opened = None;
    if let Some(cp) = checkpoint.as_mut() {
        if cfg.restart {
            cp.ledger.reset().map_err(ledger_usage)?;
        }
        let (mut found, notice) = open_job(cp, identity)?;
        identity_notice = notice;
        if crate::retry::recover(&cp.dir, cp.ledger.as_mut())? {
            found = open_job(cp, identity)?.0;
        }
        opened = Some(crate::db_output::reconcile(cfg, cp, found)?);
    }
    Ok((checkpoint, opened, identity_notice))
}

/// Ends a pass over the input: reports a read error or a failed executor, publishes the files
/// of a complete run and marks the job finished, or keeps what an interrupted one did.
fn conclude(
    cfg: &RunConfig,
    mut checkpoint: Option<&mut Checkpoint>,
    streamed: Streamed,
    earlier: Counts,
    log: &Log,
    started: Instant,
) -> Result<Summary> {
    let Streamed {
        mut sinks,
        this_run,
        latency,
        status,
        aborted_by_share,
        fatal,
        failure_kinds,
    } = streamed;
    let out_path: PathBuf = cfg.output.clone().unwrap_or_else(|| PathBuf::from("-"));
    let done_so_far = if checkpoint.is_some() {
        "the records done so far are checkpointed"
    } else {
        "the records done so far are kept (see above)"
    };
    if let Some(err) = fatal {
        if checkpoint.is_none() {
            keep_incomplete(sinks, log, &out_path, &cfg.failures)?;
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
            RunStatus::ExecutorFailed(fatal) => {
                if checkpoint.is_none() {
                    keep_incomplete(sinks, log, &out_path, &cfg.failures)?;
                }
                let runs = match cfg.transform {
                    crate::config::Transform::Worker { .. } | crate::config::Transform::Copy => {
                        crate::fault::Runs::Workers
                    }
                    crate::config::Transform::Exec { .. } => crate::fault::Runs::Commands,
                };
                let message = format!(
                    "the run stopped: {}; {done_so_far}",
                    crate::fault::executor_message(&fatal, runs)
                );
                // Only a configuration problem is a usage error (exit 2); trouble that arose
                // while running (workers that keep dying) is a failed run (exit 1).
                return Err(match fatal.kind {
                    herdsman::FatalKind::Configuration => usage(message),
                    herdsman::FatalKind::Runtime => anyhow!(message),
                });
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
        cfg.remote
            .output_name()
            .or_else(|| cfg.output.as_ref().map(|p| p.display().to_string())),
        cfg.remote
            .failures
            .clone()
            .unwrap_or_else(|| cfg.failures.display().to_string()),
    );
    summary.failures_by_kind = failure_kinds;
    let summary_json =
        serde_json::to_string_pretty(&summary).context("cannot encode the summary")?;
    let complete = ending == Ending::Completed;
    if complete {
        sinks.sync()?;
        let FileSinks {
            output, failures, ..
        } = sinks;
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
        crate::remote::publish(&cfg.remote, cfg.output.as_deref(), &cfg.failures)?;
        if let Some(cp) = checkpoint.as_mut() {
            fault("before-mark-finished");
            cp.ledger
                .mark_finished(&summary_json)
                .context("cannot mark the job finished in its checkpoint")?;
        }
    } else if checkpoint.is_none() {
        keep_incomplete(sinks, log, &out_path, &cfg.failures)?;
    } else {
        match crate::db_output::describe(cfg) {
            Some(db) => log.notice(&format!(
                "the rows of the finished chunks are in {db}; run the same command again to resume"
            )),
            None => log.notice(&format!(
                "the output so far is in {}; run the same command again to resume",
                herdsman_io::partial_path(&out_path).display()
            )),
        }
        // The summary names the files that hold this run's records: the partial ones.
        summary.point_at_partial_files();
    }
    write_summary_json(cfg, &summary)?;
    Ok(summary)
}

fn write_summary_json(cfg: &RunConfig, summary: &Summary) -> Result<()> {
    if let Some(path) = &cfg.summary_json {
        let json = serde_json::to_string_pretty(summary).context("cannot encode the summary")?;
        herdsman_io::write_atomic(path, json.as_bytes())
            .with_context(|| format!("cannot write the summary to {}", path.display()))?;
    }
    Ok(())
}

/// The job already finished: say so (the caller prints its summary and exits as it did).
fn already_finished(cfg: &RunConfig) {
    let out = cfg
        .output
        .as_deref()
        .map(Path::display)
        .map(|d| d.to_string())
        .unwrap_or_default();
    crate::progress::stderr_line(&format!(
        "herdsman: this job already finished ({out}); nothing to do. Run with --restart to run it again. Its summary:"
    ));
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
        Transform::Copy => {
            crate::progress::stderr_line(
                "herdsman: dry run: --copy would write every record to the output as it was read; nothing was run",
            );
            return Ok(0);
        }
        Transform::Exec {
            template, shell, ..
        } => (template, *shell),
    };
    let template = herdsman_workers::Template::new(template, shell)
        .map_err(|e| usage(crate::config::with_causes(&e)))?;
    let inputs = resolve_inputs(cfg)?;
    let source =
        crate::shard_io::open_source(cfg, &inputs.specs, source_options(cfg), None, &|n| {
            crate::progress::stderr_line(&format!("herdsman: {n}"))
        })?;
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
