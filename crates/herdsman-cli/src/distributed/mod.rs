//! `herdsman run --ledger postgres://…`: one job on many machines ("nodes").
//!
//! Every node runs the same command. The first opens the job in the shared PostgreSQL ledger
//! (its identity as a one-machine run's) and plans its chunks (every node would plan the
//! same ones); then each node claims chunks under a lease (`node`), reads their records (from
//! files or, by ranged GETs, from object storage), runs them through the normal engine and
//! assembler into parts in the shared parts store (a directory or an object-storage prefix,
//! `store`), and commits each through its claim, the attempt as fence (`parts`). A node stays
//! until every chunk is committed; the node whose commit completes the job assembles the
//! output and dead-letter file from the manifest and publishes them (`assemble`), and only
//! then marks the job finished, so an interrupted assembly is done again by the next node or
//! run.
//!
//! This module must never publish an output that is not exactly the committed parts in chunk
//! order, and never mark the job finished before the output and dead-letter file are in place.

mod assemble;
mod node;
mod parts;
pub(crate) mod status;
mod store;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use herdsman::{RunStatus, StopToken};
use herdsman_io::{InputPath, Source};
use herdsman_ledger::{ChunkPlan, Ledger, LedgerError};
use herdsman_ledger_postgres::{PostgresLedger, PostgresOptions};

use crate::assemble::Assembler;
use crate::cli::OutputFormatArg;
use crate::config::{canonical, check_paths, check_writable, usage, EnvError, RunConfig};
use crate::inputs::{resolve_inputs, source_error};
use crate::pipeline::{engine, output_format, sink_options, source_options, start_executor, tally};
use crate::progress::Progress;
use crate::summary::{Counts, Ending, Latency, Summary};

/// `url` without its password, for messages.
pub(crate) fn redact(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(s), Some(at)) if at > s => {
            let user = &url[s + 3..at];
            match user.split_once(':') {
                Some((name, _)) => format!("{}{name}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// The job's name in the ledger: the output's canonical path, which every node and
/// `herdsman status --ledger URL OUTPUT` give; an object-storage output's URL as it is.
pub(crate) fn job_name(output: &Path) -> String {
    let text = output.to_string_lossy();
    if herdsman_io::is_object_url(&text) {
        return text.into_owned();
    }
    canonical(output).display().to_string()
}

/// Connects to the ledger of the job that writes `output`.
pub(crate) fn connect(url: &str, output: &Path) -> Result<PostgresLedger> {
    let options = PostgresOptions {
        job: job_name(output),
        ..PostgresOptions::default()
    };
    PostgresLedger::connect(url, options).map_err(|e| {
        anyhow::Error::new(EnvError(format!(
            "cannot open the shared ledger at {}: {}; check that PostgreSQL runs there and accepts this user",
            redact(url),
            crate::config::with_causes(&e)
        )))
    })
}

/// Another connection to the job, already opened (each of a node's threads has its own).
fn join(
    url: &str,
    output: &Path,
    identity: &herdsman_ledger::JobIdentity,
) -> Result<PostgresLedger> {
    let mut ledger = connect(url, output)?;
    ledger.open_job(identity).map_err(|e| match e {
        LedgerError::IdentityChanged { .. } => changed(&e),
        other => anyhow!(other).context("cannot open the job in the shared ledger"),
    })?;
    Ok(ledger)
}

/// The changed-job refusal of a node: what changed, and what to do on many machines (a
/// shared job is not restarted: `--restart` is one machine's).
fn changed(e: &LedgerError) -> anyhow::Error {
    usage(format!(
        "{e}; every node of a shared job must run the same command on the same files: restore them, or write the changed job to another output (-o)"
    ))
}

/// Refuses what a shared run cannot do, before anything is written.
fn check(cfg: &RunConfig) -> Result<PathBuf> {
    let refuse = |what: &str| -> Result<PathBuf> { Err(usage(format!("--ledger {what}"))) };
    let Some(output) = cfg.output.clone().filter(|_| !cfg.output_in_place) else {
        return refuse("needs a regular file output that every node reaches: give -o, e.g. -o /shared/out.jsonl or -o s3://bucket/out.jsonl");
    };
    if !matches!(
        cfg.output_format,
        OutputFormatArg::Jsonl | OutputFormatArg::Lines
    ) {
        return refuse("writes JSON lines or lines: CSV and Parquet outputs are not assembled from parts yet; write -o out.jsonl and convert it, or run on one machine");
    }
    if cfg.shard.is_some() {
        return refuse("and --shard are two ways to split a job: nodes sharing a ledger take chunks as they go; drop --shard");
    }
    if cfg.limit.is_some() || cfg.retry_failed || cfg.restart {
        return refuse("runs a whole job: --limit, --retry-failed and --restart are for one machine; drop them (to start a shared job over, write to another output)");
    }
    if cfg.metrics_addr.is_some() || cfg.metrics_file.is_some() {
        return refuse(
            "and --metrics-addr/--metrics-file: a shared job's metrics are not collected yet; drop them and watch herdsman status --ledger",
        );
    }
    if cfg.joblog.is_some() {
        return refuse("and --joblog: a job log is one machine's; drop --joblog");
    }
    if cfg.inputs.iter().any(|i| i == "-") {
        return refuse("needs file inputs that every node reads: standard input reaches one machine only; give -i FILE");
    }
    Ok(output)
}

/// Runs this node's share of the job and returns its summary.
pub fn run(cfg: RunConfig, stop: StopToken) -> Result<Summary> {
    let started = Instant::now();
    let settings = cfg
        .distributed
        .clone()
        .context("internal error: a shared run without --ledger")?;
    let output = check(&cfg)?;
    let inputs = resolve_inputs(&cfg)?;
    if inputs
        .specs
        .iter()
        .any(|s| matches!(s.path, InputPath::Stdin))
    {
        return Err(usage("--ledger needs file inputs that every node reads: standard input reaches one machine only; give -i FILE".into()));
    }
    let files: Vec<PathBuf> = inputs
        .specs
        .iter()
        .filter_map(|s| match &s.path {
            InputPath::File(f) => Some(f.clone()),
            InputPath::Stdin | InputPath::Object(_) => None,
        })
        .collect();
    check_paths(&cfg, &files)?;
    check_writable(&cfg)?;
    herdsman_io::check_csv_headers(&inputs.specs, &source_options(&cfg)).map_err(source_error)?;
    let csv_header = match (&cfg.transform, inputs.specs.first()) {
        (crate::config::Transform::Exec { .. }, Some(first))
            if first.format == herdsman_io::Format::Csv =>
        {
            let src = Source::open(vec![first.clone()], source_options(&cfg), None)
                .map_err(source_error)?;
            src.csv_header().map(<[String]>::to_vec)
        }
        _ => None,
    };
    crate::remote::check(&cfg.remote)?;
    let mut identity = crate::checkpoint::job_identity(&cfg, &inputs)?;
    if let Some(url) = &cfg.remote.output {
        // Nodes that share no disk stage the output each in a directory of its own: the job
        // is its URLs, not where a node stages them or runs.
        identity.insert("output", url.clone());
        if let Some(failures) = &cfg.remote.failures {
            identity.insert("failures", failures.clone());
        }
        if cfg.workdir.is_none() {
            identity.entries.remove("workdir");
        }
    }
    // The job's name: an object-storage output's URL (its staged copy's path differs from
    // one machine to the next), or the output's path.
    let job: PathBuf = cfg
        .remote
        .output
        .clone()
        .map_or_else(|| output.clone(), PathBuf::from);
    let parts_at = settings.parts.as_ref().map_or_else(
        || store::default_location(&output, cfg.remote.output.as_deref()),
        |p| p.display().to_string(),
    );
    let store: Arc<dyn store::PartStore> = Arc::from(store::open_store(&parts_at).map_err(|e| {
        anyhow::Error::new(EnvError(format!(
            "cannot prepare the parts store {parts_at}: {e}; check that its directory can be created, or give --parts DIR"
        )))
    })?);

    // The node's connections (the job's, the heartbeat's, the commits', the first pass's
    // claims', and the one that hears the job's end) are made at once, each on a thread,
    // rather than one after the other.
    let mut notice = node::EndNotice::start(&settings.url, &job_name(&job), stop.clone());
    let main_ledger = {
        let (url, job) = (settings.url.clone(), job.clone());
        std::thread::Builder::new()
            .name("herdsman-connect".into())
            .spawn(move || connect(&url, &job))
            .context("cannot start a thread to connect to the shared ledger")?
    };
    let joining = |what: &'static str| {
        let (url, job, identity) = (settings.url.clone(), job.clone(), identity.clone());
        std::thread::Builder::new()
            .name(format!("herdsman-join-{what}"))
            .spawn(move || join(&url, &job, &identity))
            .with_context(|| format!("cannot start a thread to connect the {what}"))
    };
    let planning = Planning::start(&cfg, &inputs.specs)?;
    let heartbeat_ledger = joining("heartbeat")?;
    let committer_ledger = joining("committer")?;
    // The workers start meanwhile, so that their start-up (an interpreter's imports)
    // overlaps the ledger's: connecting, opening the job, planning its chunks. A refused or
    // finished job drops them, which stops and reaps them.
    let log_progress = Progress::new(cfg.progress, None, 0, cfg.quiet);
    let log = log_progress.log();
    let mut progress = log_progress;
    let mut workers = Some(start_executor(&cfg, &log, csv_header.as_deref(), None)?);
    let mut ledger = joined(main_ledger)?;
    let opened = match ledger.open_job(&identity) {
        Ok(o) => o,
        Err(e @ LedgerError::IdentityChanged { .. }) => return Err(changed(&e)),
        Err(e) => return Err(anyhow!(e).context("cannot open the job in the shared ledger")),
    };
    if let herdsman_ledger::Opened::Finished { summary_json, .. } = &opened {
        let published = match &cfg.remote.output {
            Some(url) => match herdsman_io::expand_object(url) {
                Ok(_) => true,
                Err(e) if e.kind == herdsman_io::ObjectErrorKind::NotFound => false,
                Err(e) => return Err(crate::remote::object_error(&e)),
            },
            None => output.exists(),
        };
        if published {
            crate::progress::stderr_line(&format!(
                "herdsman: this job already finished ({}); nothing to do. Its summary:",
                job.display()
            ));
            if let Some(s) = summary_json
                .as_deref()
                .and_then(|j| serde_json::from_str::<Summary>(j).ok())
            {
                return Ok(s);
            }
        }
        return Err(usage(format!(
            "the shared job that writes {} already finished, but its output is gone; write to another output to run it again",
            job.display()
        )));
    }
    // A job this node just created has no chunks and no commits yet: nothing to read back.
    let fresh = matches!(opened, herdsman_ledger::Opened::Fresh);
    let total = plan(planning, &mut ledger, fresh)?;

    // Work: claim, run, write parts, commit, until every chunk is committed. A pass ends
    // when nothing is claimable; another starts when a chunk becomes claimable again (a
    // lease ran out), until every chunk is committed.
    let claims = parts::Claims::default();
    let fatal = node::Fatal::default();
    let claimed = Arc::new(Mutex::new(HashSet::new()));
    let reader_completed: Arc<std::sync::atomic::AtomicBool> = Arc::default();
    let heartbeat =
        node::Heartbeat::start(joined(heartbeat_ledger)?, claims.clone(), settings.lease)
            .context("cannot start the heartbeat thread")?;
    let (mut sinks, mut committer) = parts::pair(
        joined(committer_ledger)?,
        store.clone(),
        output_format(&cfg),
        sink_options(&cfg),
        claims.clone(),
        log.clone(),
    );
    let ahead = node::Ahead::new(settings.node.clone(), settings.lease);
    committer.claim_ahead(ahead.clone());
    let completed_job = committer.completed_job.clone();
    let lost = committer.lost.clone();
    let mut latency = Latency::default();
    let mut status = RunStatus::Completed;
    let before = match fresh {
        true => herdsman_ledger::Totals::default(),
        false => ledger.totals().map_err(anyhow::Error::new)?,
    };
    let mut live = Counts::default();
    let mut idle = node::IdlePoll::new();
    // The engine pulls only what this node's workers run soon: each record it pulls may
    // claim a chunk.
    let engine_cfg = RunConfig {
        window: node::claim_window(cfg.window, cfg.chunk_size, cfg.jobs),
        ..cfg.clone()
    };
    loop {
        if stop.is_stopped() || fatal.lock().unwrap_or_else(|p| p.into_inner()).is_some() {
            break;
        }
        let next = match ahead.take(&claims) {
            Some(c) => Ok(Some(c)),
            None => ledger.claim(&settings.node, settings.lease),
        };
        let first = match next {
            Ok(Some(c)) => {
                idle.reset();
                c
            }
            Ok(None) => {
                if ledger.totals().map_err(anyhow::Error::new)?.chunks >= total {
                    break;
                }
                idle.wait(&mut notice);
                continue;
            }
            Err(e) => return Err(anyhow!(e).context("cannot claim a chunk")),
        };
        let (announce, chunks) = mpsc::channel();
        // The pass claims through the job's connection, which this thread does not use
        // until the pass ends.
        let reader = node::ClaimReader {
            ledger,
            node: settings.node.clone(),
            lease: settings.lease,
            specs: inputs.specs.clone(),
            options: source_options(&cfg),
            claims: claims.clone(),
            announce,
            stop: stop.clone(),
            fatal: fatal.clone(),
            next_index: 0,
            pending: Vec::new(),
            claimed: claimed.clone(),
            completed_job: reader_completed.clone(),
            first: Some(first),
            ahead: ahead.clone(),
            pace: None,
            source: None,
        };
        let executor = match workers.take() {
            Some(w) => w,
            None => start_executor(&cfg, &log, csv_header.as_deref(), None)?,
        };
        let (records, claimer_thread) = reader
            .spawn()
            .context("cannot start the thread that claims and reads chunks")?;
        let mut stream = engine(&engine_cfg, records, executor, &stop, 0);
        let mut asm = Assembler::new(
            chunks,
            sinks,
            Some(&mut committer as &mut dyn Ledger),
            inputs.names.clone(),
        )
        .checkpoint_every(Duration::ZERO);
        for outcome in &mut stream {
            let (index, attempts) = (outcome.index, outcome.attempts);
            let state = tally(outcome, &mut live, &mut latency, cfg.timeout, None);
            asm.resolve(index, state, attempts)?;
            progress.update(&live);
        }
        status = stream.status().cloned().unwrap_or(RunStatus::Completed);
        drop(stream);
        // The pass's claims are all made (or given up) before the node claims again; the
        // thread ends as soon as the engine's puller lets go of the records.
        ledger = claimer_thread
            .join()
            .map_err(|_| anyhow!("the thread that claims and reads chunks panicked"))?;
        let (back, _written) = asm.finish()?;
        sinks = back;
        sinks.new_pass();
        // The chunks handed to the committer thread are committed before the node decides
        // what comes next.
        committer
            .drain()
            .context("cannot commit the chunks this node wrote")?;
        if status != RunStatus::Completed {
            break;
        }
    }
    drop(workers);
    let own_segments = sinks.own_segments();
    progress.finish();
    // A claim a last commit made but no pass read (the run stopped): give it back at once,
    // so that no node waits for its lease to run out.
    if let Some(c) = ahead.take(&claims) {
        claims
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&c.chunk);
        if let Err(e) = ledger.release(&c) {
            tracing::warn!(chunk = c.chunk, error = %e, "could not give back an unread claim; its lease runs out instead");
        }
    }
    drop(heartbeat);
    if let Some(e) = fatal.lock().unwrap_or_else(|p| p.into_inner()).take() {
        return Err(e.context(
            "this node stopped; the chunks it committed are kept, and the others are taken over by the other nodes or the next run",
        ));
    }
    // Chunks another node took over are that node's records, not this one's.
    let lost_chunks = lost.lock().unwrap_or_else(|p| p.into_inner()).len();
    if lost_chunks > 0 {
        log.notice(&format!(
            "{lost_chunks} chunk(s) this node worked on were taken over by other nodes after its lease ran out"
        ));
    }
    let totals = ledger.totals().map_err(anyhow::Error::new)?;
    let complete = totals.chunks >= total;
    let ending = match status {
        _ if !complete => Ending::Interrupted,
        RunStatus::Completed => Ending::Completed,
        RunStatus::Aborted => Ending::Aborted,
        _ => Ending::Interrupted,
    };
    if !complete {
        log.notice("this node stopped before every chunk was committed; run the same command again (here or on any node) to go on");
        let earlier = Counts::from(totals.counts);
        let s = Summary::new(
            ending,
            earlier,
            Counts::default(),
            started.elapsed(),
            &latency,
            Some(job.display().to_string()),
            cfg.remote
                .failures
                .clone()
                .unwrap_or_else(|| cfg.failures.display().to_string()),
        );
        return Ok(s);
    }
    let mine = completed_job.load(Ordering::SeqCst) || reader_completed.load(Ordering::SeqCst);
    assemble::finish(assemble::Finish {
        cfg: &cfg,
        ledger: &mut ledger,
        output: &output,
        store: &*store,
        total,
        assemble_now: mine || before.chunks >= total,
        wait_for_others: settings.lease,
        started,
        latency: &latency,
        log: &log,
        notice: &mut notice,
        own_segments: own_segments.as_deref(),
    })
}

/// The connection a thread made and joined to the job (see [`join`]).
fn joined(handle: std::thread::JoinHandle<Result<PostgresLedger>>) -> Result<PostgresLedger> {
    handle
        .join()
        .map_err(|_| anyhow!("internal error: a thread connecting to the shared ledger panicked"))?
}

/// `<output>.parts`, beside the output.
pub(crate) fn default_parts_dir(output: &Path) -> PathBuf {
    let mut name = output.file_name().unwrap_or_default().to_os_string();
    name.push(".parts");
    output.with_file_name(name)
}

/// Reads the next chunk's records from `source` as the one-machine run cuts them: at most
/// `chunk_size`, and no more once their JSON reaches [`crate::pipeline::CHUNK_BYTES`].
/// Returns how many (0 at the end).
fn plan_decoded(source: &mut Source, chunk_size: usize) -> Result<usize> {
    let mut n = 0usize;
    let mut bytes = 0usize;
    while n < chunk_size && bytes < crate::pipeline::CHUNK_BYTES {
        match source.next() {
            None => break,
            Some(Err(e)) => return Err(source_error(e)),
            Some(Ok(r)) => {
                bytes += match &r.data {
                    Ok(j) => j.len(),
                    Err(e) => e.raw.len(),
                };
                n += 1;
            }
        }
    }
    Ok(n)
}

/// [`plan_decoded`] for text inputs, without decoding: skips up to `chunk_size` records and
/// keeps them when their raw bytes bound their JSON under the byte cap (a character takes
/// at most 6 bytes in JSON, and a CSV record adds its keys); otherwise, or when the chunk
/// crosses into another file, reads the chunk again from its start, decoding. Cuts exactly
/// where [`plan_decoded`] does.
fn plan_skimmed(
    source: &mut Source,
    chunk_size: usize,
    specs: &[herdsman_io::InputSpec],
    opts: &herdsman_io::SourceOptions,
) -> Result<usize> {
    let start = source.next_position();
    let n = source.skip_records(chunk_size).map_err(source_error)?;
    let end = source.next_position();
    let per_record = 2 + source
        .csv_header()
        .map_or(0, |h| h.iter().map(|k| 6 * k.len() + 4).sum::<usize>());
    let bound = (end.byte_offset.saturating_sub(start.byte_offset) as usize)
        .saturating_mul(6)
        .saturating_add(n.saturating_mul(per_record));
    if n == 0 || (start.file_index == end.file_index && bound < crate::pipeline::CHUNK_BYTES) {
        return Ok(n);
    }
    *source = Source::open(specs.to_vec(), opts.clone(), Some(start)).map_err(source_error)?;
    plan_decoded(source, chunk_size)
}

/// The job's chunks as every node would cut them (where the one-machine run cuts), read
/// from the input on a thread of its own as the node starts, so that the reading overlaps
/// the connections and the workers' start-up; a node that finds the job planned already
/// cancels it ([`Planning::discard`]).
struct Planning {
    cancel: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<Result<Option<Cut>>>>,
}

/// Chunks cut from the input, and how long the reading took.
struct Cut {
    plans: Vec<ChunkPlan>,
    read: Duration,
}

impl Planning {
    fn start(cfg: &RunConfig, specs: &[herdsman_io::InputSpec]) -> Result<Planning> {
        let cancel = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (cfg, specs, stop) = (cfg.clone(), specs.to_vec(), cancel.clone());
        let thread = std::thread::Builder::new()
            .name("herdsman-plan".into())
            .spawn(move || cut_chunks(&cfg, &specs, &stop))
            .context("cannot start the thread that plans the job's chunks")?;
        Ok(Planning {
            cancel,
            thread: Some(thread),
        })
    }

    /// The chunks, once read.
    fn finish(mut self) -> Result<Cut> {
        let thread = self.thread.take();
        match thread.map(|t| t.join()) {
            Some(Ok(Ok(Some(cut)))) => Ok(cut),
            Some(Ok(Err(e))) => Err(e),
            Some(Err(_)) => Err(anyhow!("the thread that plans the job's chunks panicked")),
            Some(Ok(Ok(None))) | None => Err(anyhow!("internal error: the plan was cancelled")),
        }
    }

    /// The job was planned by another node: stop reading and forget the chunks.
    fn discard(mut self) {
        self.cancel.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Planning {
    /// A node that ends before it plans (the job finished, or refused) stops the reading.
    fn drop(&mut self) {
        self.cancel.store(true, Ordering::Relaxed);
    }
}

/// Cuts the input into the job's chunks; `None` when cancelled before the end.
fn cut_chunks(
    cfg: &RunConfig,
    specs: &[herdsman_io::InputSpec],
    cancel: &std::sync::atomic::AtomicBool,
) -> Result<Option<Cut>> {
    let started = Instant::now();
    let opts = source_options(cfg);
    let mut source = Source::open(specs.to_vec(), opts.clone(), None).map_err(source_error)?;
    // Text inputs are cut by skipping records (no decoding), where the chunk's raw bytes
    // show that its JSON stays under the byte cap.
    let skim = specs.iter().all(|s| {
        matches!(
            s.format,
            herdsman_io::Format::Lines | herdsman_io::Format::Jsonl | herdsman_io::Format::Csv
        )
    });
    let mut plans = Vec::new();
    loop {
        if cancel.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let start = source.next_position();
        let n = if skim {
            plan_skimmed(&mut source, cfg.chunk_size, specs, &opts)?
        } else {
            plan_decoded(&mut source, cfg.chunk_size)?
        };
        if n == 0 {
            break;
        }
        plans.push(ChunkPlan {
            chunk: plans.len() as u64,
            start: crate::assemble::to_ledger(start),
            end: crate::assemble::to_ledger(source.next_position()),
        });
    }
    if plans.is_empty() {
        // An empty input is one empty chunk, so that the job still completes and publishes.
        let p = crate::assemble::to_ledger(source.next_position());
        plans.push(ChunkPlan {
            chunk: 0,
            start: p,
            end: p,
        });
    }
    Ok(Some(Cut {
        plans,
        read: started.elapsed(),
    }))
}

/// Plans the job's chunks into the ledger unless a node did already (a `fresh` job, just
/// created by this node, has none yet); returns how many chunks the job has. Every node
/// would plan the same ones.
fn plan(planning: Planning, ledger: &mut PostgresLedger, fresh: bool) -> Result<u64> {
    if !fresh {
        let rows = ledger.chunk_rows().map_err(anyhow::Error::new)?;
        if !rows.is_empty() {
            planning.discard();
            return Ok(rows.len() as u64);
        }
    }
    let started = Instant::now();
    let Cut { plans, read } = planning.finish()?;
    let waited = started.elapsed();
    ledger
        .plan_chunks(&plans)
        .map_err(anyhow::Error::new)
        .context("cannot plan the job's chunks in the shared ledger")?;
    // A node that planned at the same moment planned the same chunks (the same job).
    tracing::info!(
        chunks = plans.len(),
        read_ms = read.as_millis() as u64,
        waited_ms = waited.as_millis() as u64,
        total_ms = started.elapsed().as_millis() as u64,
        "job planned"
    );
    Ok(plans.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use herdsman_io::{Format, InputSpec, SourceOptions};

    /// The chunk sizes `plan` cuts `specs` into, skimming or decoding every chunk.
    fn cuts(specs: &[InputSpec], chunk_size: usize, skim: bool) -> Vec<(usize, u64)> {
        let opts = SourceOptions::default();
        let mut source = Source::open(specs.to_vec(), opts.clone(), None).unwrap();
        let mut out = Vec::new();
        loop {
            let n = if skim {
                plan_skimmed(&mut source, chunk_size, specs, &opts).unwrap()
            } else {
                plan_decoded(&mut source, chunk_size).unwrap()
            };
            if n == 0 {
                return out;
            }
            out.push((n, source.next_position().seq));
        }
    }

    #[test]
    fn skimming_cuts_text_inputs_exactly_where_decoding_does() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: String| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        // Short lines; lines of control characters (six bytes each in JSON, so the raw bound
        // is tight); long lines whose JSON reaches the byte cap within a chunk; a CSV whose
        // keys make the JSON longer than the row; and a JSONL file.
        let short = write("short.txt", (0..2500).map(|i| format!("{i}\n")).collect());
        let control = write(
            "control.txt",
            (0..900)
                .map(|i| format!("{}\n", "\u{1}".repeat(i % 5000 + 1500)))
                .collect(),
        );
        let long = write(
            "long.txt",
            (0..2100)
                .map(|i| format!("{}\n", "x".repeat(9000 + i % 7)))
                .collect(),
        );
        let csv = write(
            "wide.csv",
            std::iter::once("a_rather_long_key,another_long_key,\"q\"\"k\"\n".to_string())
                .chain((0..3000).map(|i| format!("{i},\"v,{i}\",\"x\"\"y\"\n")))
                .collect(),
        );
        let jsonl = write(
            "rows.jsonl",
            (0..1500).map(|i| format!("{{\"i\":{i}}}\n\n")).collect(),
        );
        let spec = |p: &std::path::Path, format| InputSpec {
            path: InputPath::File(p.to_path_buf()),
            format,
        };
        let cases = [
            vec![spec(&short, Format::Lines)],
            vec![spec(&control, Format::Lines)],
            vec![spec(&long, Format::Lines)],
            vec![spec(&csv, Format::Csv)],
            vec![spec(&jsonl, Format::Jsonl)],
            // Chunks across the ends of files.
            vec![
                spec(&short, Format::Lines),
                spec(&long, Format::Lines),
                spec(&short, Format::Lines),
            ],
        ];
        for specs in &cases {
            for chunk_size in [1, 7, 1000] {
                let decoded = cuts(specs, chunk_size, false);
                assert_eq!(
                    cuts(specs, chunk_size, true),
                    decoded,
                    "{specs:?} {chunk_size}"
                );
                assert!(!decoded.is_empty());
            }
        }
        // The long lines do reach the cap: chunks shorter than asked.
        assert!(cuts(&cases[2], 1000, true).iter().any(|&(n, _)| n < 1000));
    }
}
