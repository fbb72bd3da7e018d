//! `herdsman status` and `herdsman failures`: read-only views of a job's checkpoint.
//!
//! These commands must never modify a checkpoint or wait for a running job's lock: they open
//! the ledger read-only and may run while the job runs. Whether the job runs, and what its
//! run is doing, comes from the state directory's lock and the run's live snapshot (`live`).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result};
use herdsman_ledger::{LedgerStatus, Totals};

use crate::cli::{FailuresArgs, StatusArgs};
use crate::config::UsageError;
use crate::live::Snapshot;
use crate::summary::Summary;

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
    /// Whether the job's run is running, was interrupted, or finished.
    run: RunJson,
    /// The committed failures by kind, most frequent first, with one example each.
    failures_by_kind: Vec<KindGroup>,
}

/// `run` in `herdsman status --json`.
#[derive(serde::Serialize)]
struct RunJson {
    /// `running`, `interrupted` or `finished`.
    state: &'static str,
    /// The run's process (the running one, or the last one).
    pid: Option<u32>,
    /// When the run was last seen alive (Unix seconds).
    last_seen: Option<f64>,
    /// The last run ended by itself (a stop or an error) rather than dying.
    stopped: bool,
    /// Percent of the input read, when its size is known.
    percent_done: Option<f64>,
    /// Seconds left at the current rate, when the input's size is known.
    eta_s: Option<f64>,
    /// The running process's live snapshot (`live.json`).
    live: Option<Snapshot>,
}

/// Whether a job's run is running, was interrupted, or finished.
enum RunState {
    /// Its process holds the state directory's lock and is alive; its snapshot, if it wrote
    /// one yet.
    Running { pid: u32, live: Option<Snapshot> },
    /// It finished (its checkpoint says so).
    Finished,
    /// Its last run is gone before the job finished.
    Interrupted {
        pid: Option<u32>,
        last_seen: Option<SystemTime>,
        /// It stopped by itself (a stop signal or an error) and wrote its last snapshot.
        stopped: bool,
    },
}

impl RunState {
    /// Looks at the state directory's lock and the run's snapshot: running only if the lock
    /// is held and its holder is alive (and is the process that wrote the snapshot).
    fn of(dir: &Path, st: &LedgerStatus) -> RunState {
        let lock = dir.join(herdsman_ledger::LOCK_FILE_NAME);
        let holder: Option<u32> = std::fs::read_to_string(&lock)
            .ok()
            .and_then(|t| t.trim().parse().ok());
        let snapshot = Snapshot::read(dir);
        if let Some(pid) = holder.filter(|_| crate::live::lock_held(&lock)) {
            let live = snapshot.clone().filter(|s| s.pid == pid && !s.is_final);
            let start = live.as_ref().and_then(|s| s.process_start);
            if crate::live::pid_alive(pid, start) {
                return RunState::Running { pid, live };
            }
        }
        if st.finished() {
            return RunState::Finished;
        }
        match snapshot {
            Some(s) => RunState::Interrupted {
                pid: Some(s.pid),
                last_seen: Some(unix(s.updated_at)),
                stopped: s.is_final,
            },
            None => RunState::Interrupted {
                pid: holder,
                last_seen: st.updated_at,
                stopped: false,
            },
        }
    }

    fn running(&self) -> bool {
        matches!(self, RunState::Running { .. })
    }

    fn json(&self) -> RunJson {
        match self {
            RunState::Running { pid, live } => RunJson {
                state: "running",
                pid: Some(*pid),
                last_seen: live.as_ref().map(|s| s.updated_at),
                stopped: false,
                percent_done: live.as_ref().and_then(Snapshot::percent),
                eta_s: live.as_ref().and_then(Snapshot::eta_secs),
                live: live.clone(),
            },
            RunState::Finished => RunJson {
                state: "finished",
                pid: None,
                last_seen: None,
                stopped: false,
                percent_done: Some(100.0),
                eta_s: None,
                live: None,
            },
            RunState::Interrupted {
                pid,
                last_seen,
                stopped,
            } => RunJson {
                state: "interrupted",
                pid: *pid,
                last_seen: last_seen.map(crate::live::unix_secs),
                stopped: *stopped,
                percent_done: None,
                eta_s: None,
                live: None,
            },
        }
    }

    /// The `state` line of an unfinished job that does not run.
    fn interrupted_line(&self) -> Option<String> {
        let RunState::Interrupted {
            pid,
            last_seen,
            stopped,
        } = self
        else {
            return None;
        };
        let who = match pid {
            Some(pid) => format!("its last run (pid {pid})"),
            None => "its last run".to_string(),
        };
        let seen = last_seen.map(when).unwrap_or_else(|| "-".into());
        let what = if *stopped {
            format!("{who} stopped before the end at {seen}")
        } else {
            format!("{who} died; last seen {seen}")
        };
        Some(format!(
            "interrupted: {what}; run the same command again to resume"
        ))
    }
}

/// The failures of one kind: how many, and the first one.
#[derive(serde::Serialize)]
struct KindGroup {
    kind: String,
    count: u64,
    example: Example,
}

/// One failed record, as `status` and `failures --group` show it.
#[derive(serde::Serialize)]
struct Example {
    file: String,
    line: u64,
    /// 1-based record number.
    record: u64,
    /// The error message, cut at [`MESSAGE_CHARS`] characters.
    message: String,
}

/// The longest error message `status` shows in full.
const MESSAGE_CHARS: usize = 120;

/// The first line of `message`, cut at [`MESSAGE_CHARS`] characters (`...` says it was cut).
fn truncated(message: &str) -> String {
    let line = message.lines().next().unwrap_or("");
    if line.chars().count() <= MESSAGE_CHARS && line.len() == message.trim_end().len() {
        return line.to_string();
    }
    let cut: String = line.chars().take(MESSAGE_CHARS).collect();
    format!("{cut}...")
}

/// The job's dead-letter file as far as it counts: the final file of a finished job, the
/// committed prefix (in bytes) of the partial file of an unfinished one.
fn dead_letters(st: &LedgerStatus) -> Result<(PathBuf, u64)> {
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
    Ok(if st.finished() {
        (path, u64::MAX)
    } else {
        (herdsman_io::partial_path(&path), committed)
    })
}

/// Calls `each` with every line of `file` (newline included) within its first `limit_bytes`
/// bytes, until `each` returns false.
fn each_dead_letter(
    file: &Path,
    limit_bytes: u64,
    mut each: impl FnMut(&[u8]) -> Result<bool>,
) -> Result<()> {
    let f = std::fs::File::open(file)
        .with_context(|| format!("cannot open the dead-letter file {}", file.display()))?;
    let mut reader = BufReader::new(f);
    let mut read = 0u64;
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line)?;
        if n == 0 || read + n as u64 > limit_bytes {
            return Ok(());
        }
        read += n as u64;
        if !each(&line)? {
            return Ok(());
        }
    }
}

/// The committed failures by kind, most frequent first (then by name), each with its first
/// entry as the example; only the entries of kind `only` when given.
fn failure_groups(file: &Path, limit: u64, only: Option<&str>) -> Result<Vec<KindGroup>> {
    let mut groups: BTreeMap<String, KindGroup> = BTreeMap::new();
    each_dead_letter(file, limit, |line| {
        let text = line.strip_suffix(b"\n").unwrap_or(line);
        if let Ok(e) = herdsman_io::DeadLetter::parse(text) {
            let kind = e.error.kind.name();
            if only.is_none_or(|k| k == kind) {
                groups
                    .entry(kind.to_string())
                    .or_insert_with(|| KindGroup {
                        kind: kind.to_string(),
                        count: 0,
                        example: Example {
                            file: e.source.file.clone(),
                            line: e.source.line,
                            record: e.source.record,
                            message: truncated(&e.error.message),
                        },
                    })
                    .count += 1;
            }
        }
        Ok(true)
    })?;
    let mut groups: Vec<KindGroup> = groups.into_values().collect();
    groups.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.kind.cmp(&b.kind)));
    Ok(groups)
}

/// The failures by kind of the job, for `status` (none when nothing failed yet).
fn status_groups(st: &LedgerStatus) -> Vec<KindGroup> {
    match dead_letters(st) {
        Ok((file, limit)) if limit > 0 && file.exists() => {
            failure_groups(&file, limit, None).unwrap_or_default()
        }
        _ => Vec::new(),
    }
}

/// One line per kind: `reported  12  e.g. in.csv:3 record 2: value 'x' is not an integer`.
fn write_groups(out: &mut dyn Write, groups: &[KindGroup], indent: &str) -> std::io::Result<()> {
    let width = groups.iter().map(|g| g.kind.len()).max().unwrap_or(0);
    let count_width = groups
        .iter()
        .map(|g| g.count.to_string().len())
        .max()
        .unwrap_or(0);
    for g in groups {
        let e = &g.example;
        writeln!(
            out,
            "{indent}{:<width$}  {:>count_width$}  e.g. {}:{} record {}: {}",
            g.kind, g.count, e.file, e.line, e.record, e.message
        )?;
    }
    Ok(())
}

/// A moment for people: `2026-11-30T12:03:04Z (15s ago)`.
fn when(t: SystemTime) -> String {
    let whole = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format!(
        "{} ({})",
        humantime::format_rfc3339_seconds(SystemTime::UNIX_EPOCH + Duration::from_secs(whole)),
        ago(Some(t))
    )
}

fn unix(secs: f64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs_f64(secs.max(0.0))
}

/// The lines about a running job's run, from its snapshot.
fn write_live(out: &mut dyn Write, pid: u32, live: Option<&Snapshot>) -> std::io::Result<()> {
    let Some(s) = live else {
        writeln!(
            out,
            "state       running (pid {pid}); its live status is not written yet"
        )?;
        return Ok(());
    };
    writeln!(
        out,
        "state       running (pid {pid}, started {})",
        when(unix(s.started_at))
    )?;
    let done = s.done();
    let progress = match (s.percent(), s.records_total(), s.input.bytes_total) {
        (Some(p), Some(records), Some(total)) => format!(
            "{p:.1}% done: {done} of {}{records} records; {} of {total} input bytes read",
            if s.input.bytes_read < total { "about " } else { "" },
            s.input.bytes_read,
        ),
        _ => format!(
            "share of the input unknown (its size is not known: standard input, compressed or Parquet input, --shard or --limit); {} done",
            crate::progress::plural(done, "record")
        ),
    };
    writeln!(out, "progress    {progress}")?;
    let rate = if s.rate.window_s > 0.0 {
        format!(
            "{} over the last {:.0}s",
            crate::text::rate(s.rate.records_per_s),
            s.rate.window_s
        )
    } else {
        "not measured yet".to_string()
    };
    let eta = match s.eta_secs() {
        Some(secs) => crate::progress::short_duration(Duration::from_secs_f64(secs.ceil())),
        None => "unknown".into(),
    };
    writeln!(out, "rate        {rate}; ETA {eta}")?;
    writeln!(
        out,
        "in flight   {}; {} failed and {} retries so far",
        s.in_flight, s.failed, s.retries
    )?;
    for w in &s.workers {
        let state = match (w.record, w.since) {
            (Some(r), Some(since)) => format!("busy on record {r} since {}", when(unix(since))),
            (None, Some(since)) => format!("busy since {}", when(unix(since))),
            _ if w.state == "busy" => "busy".to_string(),
            _ => "idle".to_string(),
        };
        writeln!(
            out,
            "worker {:<4} {state}; {} in flight, {}, {}",
            w.worker,
            w.in_flight,
            crate::progress::plural(w.attempts, "attempt"),
            crate::progress::plural(w.restarts, "restart")
        )?;
    }
    Ok(())
}

/// Prints the job, its progress and its chunks; with `--watch`, again and again until the job
/// no longer runs.
pub fn status(args: &StatusArgs) -> Result<()> {
    let (state, watch) = args
        .resolve()
        .map_err(|m| anyhow::Error::new(UsageError(m)))?;
    let dir = crate::config::job_state_dir(&state.state)?;
    let Some(every) = watch else {
        let (text, _) = status_text(&dir, state.json, false)?;
        let mut out = std::io::stdout().lock();
        out.write_all(&text)?;
        return Ok(());
    };
    watch_status(&dir, state.json, every)
}

/// `status --watch`: redraws in place on a terminal, prints one block per refresh elsewhere,
/// and ends (exit 0) when the job no longer runs, after showing its final state, or quietly
/// on Ctrl-C.
fn watch_status(dir: &Path, json: bool, every: Duration) -> Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .context("cannot install the Ctrl-C handler")?;
    }
    let terminal = std::io::stdout().is_terminal();
    let mut drawn = 0usize;
    let mut first = true;
    loop {
        let (text, running) = status_text(dir, json, true)?;
        if stop.load(Ordering::SeqCst) {
            return Ok(());
        }
        let mut out = std::io::stdout().lock();
        if terminal && !json && drawn > 0 {
            // Back to the first line of the last block, and clear from there.
            write!(out, "\x1b[{drawn}F\x1b[J")?;
        } else if !first && !json {
            writeln!(out)?;
        }
        out.write_all(&text)?;
        out.flush()?;
        drop(out);
        drawn = text.iter().filter(|&&b| b == b'\n').count();
        first = false;
        if !running {
            return Ok(());
        }
        let until = Instant::now() + every;
        while Instant::now() < until {
            if stop.load(Ordering::SeqCst) {
                return Ok(());
            }
            std::thread::sleep((until - Instant::now()).min(Duration::from_millis(50)));
        }
    }
}

/// The status of the job in `dir` as text (or JSON, one line when `compact`), and whether its
/// run is running.
fn status_text(dir: &Path, json: bool, compact: bool) -> Result<(Vec<u8>, bool)> {
    let ledger = herdsman_ledger::open_read_only(dir)
        .with_context(|| format!("cannot read the checkpoint in {}", dir.display()))?;
    let st = ledger.status()?;
    drop(ledger);
    let run = RunState::of(dir, &st);
    let groups = status_groups(&st);
    let (totals, recovered) = current_counts(&st);
    let (chunks, t) = (totals.chunks, totals.counts);
    let mut out: Vec<u8> = Vec::new();
    if json {
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
            run: run.json(),
            failures_by_kind: groups,
        };
        if compact {
            serde_json::to_writer(&mut out, &v)?;
        } else {
            serde_json::to_writer_pretty(&mut out, &v)?;
        }
        writeln!(out)?;
        return Ok((out, run.running()));
    }
    writeln!(out, "checkpoint  {}", dir.display())?;
    let Some(identity) = &st.identity else {
        writeln!(out, "job         none (empty checkpoint)")?;
        if let RunState::Running { pid, live } = &run {
            write_live(&mut out, *pid, live.as_ref())?;
        }
        return Ok((out, run.running()));
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
    match &run {
        RunState::Running { pid, live } => write_live(&mut out, *pid, live.as_ref())?,
        RunState::Finished => writeln!(out, "state       finished")?,
        RunState::Interrupted { .. } => writeln!(
            out,
            "state       {}",
            run.interrupted_line().unwrap_or_default()
        )?,
    }
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
    if !groups.is_empty() {
        writeln!(
            out,
            "failures    by kind (`herdsman failures --kind KIND` lists them):"
        )?;
        write_groups(&mut out, &groups, "  ")?;
    }
    Ok((out, run.running()))
}

/// The names of every failure kind, as dead-letter entries spell them.
fn kind_names() -> Vec<&'static str> {
    herdsman_io::DeadLetterKind::ALL
        .iter()
        .map(|k| k.name())
        .collect()
}

/// Prints the dead-lettered records of a job, one line each (or the raw JSON lines); with
/// `--kind`, those of one kind; with `--group`, the count of each kind and an example.
pub fn failures(args: &FailuresArgs) -> Result<()> {
    let dir = crate::config::job_state_dir(&args.state.state)?;
    let ledger = herdsman_ledger::open_read_only(&dir)
        .with_context(|| format!("cannot read the checkpoint in {}", dir.display()))?;
    let st = ledger.status()?;
    let (file, limit_bytes) = dead_letters(&st)?;
    let kind = args.kind.as_deref();
    if let Some(k) = kind.filter(|k| !kind_names().contains(k)) {
        let present: Vec<String> = if file.exists() {
            failure_groups(&file, limit_bytes, None)
                .unwrap_or_default()
                .into_iter()
                .map(|g| g.kind)
                .collect()
        } else {
            Vec::new()
        };
        let present = if present.is_empty() {
            "this job has no failures yet".to_string()
        } else {
            format!("this job's failures are of kind {}", present.join(", "))
        };
        return Err(anyhow::Error::new(UsageError(format!(
            "--kind {k}: no such failure kind; give one of {} ({present})",
            kind_names().join(", ")
        ))));
    }
    let mut out = std::io::stdout().lock();
    if args.group {
        let groups = failure_groups(&file, limit_bytes, kind)?;
        if args.state.json {
            for g in &groups {
                serde_json::to_writer(&mut out, g)?;
                writeln!(out)?;
            }
        } else if groups.is_empty() {
            writeln!(out, "no failed records")?;
        } else {
            write_groups(&mut out, &groups, "")?;
        }
        return Ok(());
    }
    let mut shown = 0usize;
    each_dead_letter(&file, limit_bytes, |line| {
        if args.limit.is_some_and(|l| shown >= l) {
            return Ok(false);
        }
        let text = line.strip_suffix(b"\n").unwrap_or(line);
        let entry = herdsman_io::DeadLetter::parse(text);
        if let Some(k) = kind {
            if !matches!(&entry, Ok(e) if e.error.kind.name() == k) {
                return Ok(true);
            }
        }
        shown += 1;
        if args.state.json {
            out.write_all(line)?;
            return Ok(true);
        }
        match entry {
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
        Ok(true)
    })?;
    if shown == 0 && !args.state.json {
        writeln!(out, "no failed records")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_messages_are_cut_and_say_so() {
        assert_eq!(truncated("short"), "short");
        let long = "x".repeat(300);
        let cut = truncated(&long);
        assert_eq!(cut.chars().count(), MESSAGE_CHARS + 3);
        assert!(cut.ends_with("..."));
        assert_eq!(truncated("first\nsecond"), "first...");
    }
}
