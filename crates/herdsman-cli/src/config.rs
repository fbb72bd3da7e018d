//! Turns raw flags and an optional job file into one validated run configuration.
//!
//! Parsing happens in two steps (raw values, then this validated form) so that a job file and
//! flags go through the same checks. This module must never start work: every usage error is
//! found here, before any record runs.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use anyhow::Result;
use herdsman_io::OutputTarget;
use serde::Deserialize;

use crate::cli::{
    CodeList, ExecOutputArg, FormatArg, JobFile, OutputFormatArg, ProgressArg, ProtocolArg,
    RunArgs, StringOrList, StringOrNumber,
};

/// A usage or configuration error: exit code 2.
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// An environment error: a file or directory could not be read or written (a missing or
/// unwritable directory, an unreadable input, a full disk). Exit code 4.
#[derive(Debug)]
pub struct EnvError(pub String);

impl std::fmt::Display for EnvError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for EnvError {}

/// A usage error with this message.
pub fn usage(msg: String) -> anyhow::Error {
    anyhow::Error::new(UsageError(msg))
}

/// `e`'s message followed by those of its causes ("outer: inner"), for the places that turn
/// a library error into a [`UsageError`] or [`EnvError`] message: library errors keep their
/// cause in `source()`, not in their own message.
pub fn with_causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    // The library said what to do in its terms; name the flag for it.
    out.push_str(crate::fault::cli_hint(e).unwrap_or(""));
    out
}

macro_rules! usage {
    ($($arg:tt)*) => {
        return Err(anyhow::Error::new(UsageError(format!($($arg)*))))
    };
}

/// What runs each record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transform {
    /// Persistent worker processes.
    Worker {
        argv: Vec<String>,
        protocol: ProtocolArg,
        shell: bool,
    },
    /// No worker (`--copy`): every record is its own output, as it was read.
    Copy,
    /// One process per record.
    Exec {
        template: Vec<String>,
        shell: bool,
        /// How stdout becomes output (`--exec-output`).
        output: ExecOutputArg,
        /// Exit statuses that are not retried (`--no-retry-exit`).
        no_retry_exit: Vec<i32>,
    },
}

/// When to stop because too many records failed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MaxErrors {
    Count(u64),
    /// A share of the records resolved so far, in percent; checked once at least 100 records
    /// have resolved so that the first failure of a run does not stop it.
    Percent(f64),
}

/// The validated configuration of one `herdsman run`.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub inputs: Vec<String>,
    pub format: Option<FormatArg>,
    pub transform: Transform,
    /// Where workers start; `None` is the current directory.
    pub workdir: Option<PathBuf>,
    pub jobs: usize,
    /// `None` is stdout. A symbolic link is resolved to its target here.
    pub output: Option<PathBuf>,
    /// The output is not a regular file (a device such as `/dev/null`, a FIFO,
    /// `/dev/stdout`): it is written in place and cannot be resumed.
    pub output_in_place: bool,
    pub output_format: OutputFormatArg,
    /// Whether the output format was chosen by the user (flag, job file or extension); if
    /// not, lines input written to stdout is written as lines.
    pub output_format_chosen: bool,
    pub columns: Option<Vec<String>>,
    /// Database input: the query to read (`--query`) and the key columns (`--key`).
    pub query: Option<String>,
    pub key: Option<Vec<String>>,
    /// Schema, compression and row-group size of a Parquet output.
    pub parquet: herdsman_io::ParquetOptions,
    pub failures: PathBuf,
    /// Whether the user named the dead-letter file (else it is derived from the output).
    pub failures_given: bool,
    pub retries: u32,
    pub backoff: Duration,
    pub max_backoff: Duration,
    /// Attempts per period.
    pub rate: Option<(std::num::NonZeroU32, Duration)>,
    pub timeout: Option<Duration>,
    /// Records per worker process before it is replaced (`--max-tasks-per-worker`).
    pub max_tasks_per_worker: Option<usize>,
    pub max_errors: Option<MaxErrors>,
    pub ordered: bool,
    pub infer_types: bool,
    pub delimiter: u8,
    /// Longest input record, in bytes.
    pub max_record_size: usize,
    pub chunk_size: usize,
    pub window: usize,
    pub summary_json: Option<PathBuf>,
    /// `--joblog`: one line per attempt, TSV or JSONL by extension.
    pub joblog: Option<PathBuf>,
    /// `--metrics-addr`: where `/metrics` is served while the run goes.
    pub metrics_addr: Option<String>,
    /// `--metrics-file`: where the metrics are written every few seconds and at the end.
    pub metrics_file: Option<PathBuf>,
    pub progress: ProgressArg,
    /// `None`: checkpointing is off.
    pub state: Option<PathBuf>,
    pub restart: bool,
    pub retry_failed: bool,
    /// `--limit`: a try-out on the first N records (never checkpointed).
    pub limit: Option<u64>,
    /// `--dry-run`: print what would run, run nothing.
    pub dry_run: bool,
    /// `-0`: stdin holds NUL-separated text records.
    pub null_separated: bool,
    pub quiet: bool,
    /// `--no-history`: take no samples of the run into the checkpoint.
    pub no_history: bool,
    /// `--shard I/N`: this run reads one static shard of the inputs.
    pub shard: Option<crate::shard::Shard>,
    /// `-o postgres://…?table=T` or `-o sqlite://…?table=T`: the output is a database table
    /// (then `output` is `None`).
    pub db_output: Option<herdsman_db_sink::DbUrl>,
    /// `--if-exists`: what a new job does with a table that already exists.
    pub if_exists: herdsman_db_sink::IfExists,
    /// The object-storage URLs the output and dead-letter file are published to, if any.
    pub remote: crate::remote_stage::Remote,
    /// `--ledger postgres://…`: this node shares the job with others.
    pub distributed: Option<SharedLedger>,
}

/// Parses the exit statuses of `--no-retry-exit`: each from 1 to 255.
pub fn parse_exit_codes(codes: &[String]) -> Result<Vec<i32>> {
    codes
        .iter()
        .map(|c| match c.trim().parse::<i32>() {
            Ok(n) if (1..=255).contains(&n) => Ok(n),
            _ => usage!(
                "--no-retry-exit `{}` is not an exit status that fails a command; give numbers from 1 to 255, comma separated, e.g. --no-retry-exit 22,6",
                c.trim()
            ),
        })
        .collect()
}

/// Default records per checkpoint chunk.
pub const DEFAULT_CHUNK_SIZE: usize = 1000;

/// Default longest input record: 16 MiB.
pub const DEFAULT_MAX_RECORD_SIZE: usize = 16 << 20;

/// Largest accepted `--max-record-size`: 1 TiB (a record is held whole in memory).
const MAX_RECORD_SIZE_CEILING: u64 = 1 << 40;

fn load_job_file(path: &Path) -> Result<JobFile> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        UsageError(format!(
            "cannot read job file {}: {e}; check the path",
            path.display()
        ))
    })?;
    // Accept snake_case keys too: normalise every top-level key to kebab-case.
    let table: toml::Table = toml::from_str(&text).map_err(|e| {
        UsageError(format!(
            "job file {} is not valid TOML: {e}",
            path.display()
        ))
    })?;
    let table: toml::Table = table
        .into_iter()
        .map(|(k, v)| (k.replace('_', "-"), v))
        .collect();
    JobFile::deserialize(table).map_err(|e| {
        anyhow::Error::new(UsageError(format!(
            "job file {}: {e}; the keys are the long flag names of `herdsman run --help`",
            path.display()
        )))
    })
}

/// Resolves `p` (from a job file) against the job file's directory.
fn relative_to(base: Option<&Path>, p: String) -> String {
    match base {
        // A database or object-storage URL is not a path.
        Some(dir)
            if p != "-"
                && !herdsman_io::is_object_url(&p)
                && herdsman_io::database_format(&p).is_none()
                && Path::new(&p).is_relative() =>
        {
            dir.join(&p).to_string_lossy().into_owned()
        }
        _ => p,
    }
}

/// Most workers (`--jobs`) a run may start: far beyond what one machine's cores can use, and
/// low enough that a typo (`-j 100000`) cannot exhaust the process table.
pub const MAX_JOBS: usize = 1024;

/// Most retries per record (`--retries`).
pub const MAX_RETRIES: u32 = 1000;

/// Longest `--timeout`, `--backoff` and `--max-backoff`: 365 days.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// The default `--window` of a run with `--copy`.
const COPY_WINDOW: usize = 4096;

/// Largest `--window`: records admitted but not yet written, at most.
pub const MAX_WINDOW: usize = 1 << 20;

/// Parses a duration such as `200ms`, `2s`, `1m30s` or a bare number of seconds, between 0
/// and [`MAX_DURATION`].
pub fn parse_duration(what: &str, s: &str) -> Result<Duration> {
    let s = s.trim();
    let too_long = || {
        anyhow::Error::new(UsageError(format!(
            "{what} `{s}` is too long; give at most 365 days, written like 500ms, 30s or 2h"
        )))
    };
    if let Ok(secs) = s.parse::<f64>() {
        if secs.is_nan() || secs.is_infinite() {
            usage!("{what} `{s}` is not a duration; write it like 500ms, 2s or 1m30s");
        }
        if secs < 0.0 {
            usage!("{what} `{s}` is negative; give a duration like 500ms, 2s or 1m30s");
        }
        return match Duration::try_from_secs_f64(secs) {
            Ok(d) if d <= MAX_DURATION => Ok(d),
            _ => Err(too_long()),
        };
    }
    if s.starts_with('-') {
        usage!("{what} `{s}` is negative; give a duration like 500ms, 2s or 1m30s");
    }
    match humantime::parse_duration(s) {
        Ok(d) if d <= MAX_DURATION => Ok(d),
        Ok(_) => Err(too_long()),
        Err(e) => usage!("{what} `{s}` is not a duration ({e}); write it like 500ms, 2s or 1m30s"),
    }
}

/// Parses `N/second`, `N/s`, `N/minute`, `N/min`, `N/hour`, `N/h`.
pub fn parse_rate(s: &str) -> Result<(std::num::NonZeroU32, Duration)> {
    let bad = || {
        anyhow::Error::new(UsageError(format!(
            "--rate `{s}` is not a rate; write it like 20/second, 600/minute or 1000/hour"
        )))
    };
    let (n, unit) = s.split_once('/').ok_or_else(bad)?;
    let n: u32 = n.trim().parse().map_err(|_| bad())?;
    let Some(n) = std::num::NonZeroU32::new(n) else {
        usage!("--rate must allow at least 1 attempt per period, got `{s}`");
    };
    let period = match unit.trim() {
        "s" | "sec" | "second" | "seconds" => Duration::from_secs(1),
        "m" | "min" | "minute" | "minutes" => Duration::from_secs(60),
        "h" | "hour" | "hours" => Duration::from_secs(3600),
        _ => return Err(bad()),
    };
    Ok((n, period))
}

/// Parses `N` or `N%`.
pub fn parse_max_errors(s: &str) -> Result<MaxErrors> {
    let s = s.trim();
    if let Some(p) = s.strip_suffix('%') {
        match p.trim().parse::<f64>() {
            Ok(v) if (0.0..=100.0).contains(&v) => return Ok(MaxErrors::Percent(v)),
            _ => usage!("--max-errors `{s}` is not a percentage between 0% and 100%"),
        }
    }
    match s.parse::<u64>() {
        Ok(n) => Ok(MaxErrors::Count(n)),
        Err(_) => usage!("--max-errors `{s}` is neither a count (10) nor a percentage (1%)"),
    }
}

/// Parses a size in bytes: a number with an optional unit, case-insensitive. `KiB`, `MiB`,
/// `GiB`, `TiB` (and `K`, `M`, `G`, `T`) are powers of 1024; `kB`, `MB`, `GB`, `TB` are powers
/// of 1000; `B` or no unit is bytes. A fraction is allowed: `1.5GiB`.
pub fn parse_size(what: &str, s: &str) -> Result<u64> {
    let bad = || {
        anyhow::Error::new(UsageError(format!(
            "{what} `{s}` is not a size; write it like 16MiB, 1GiB, 512KiB or a number of bytes"
        )))
    };
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let unit_bytes: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "ki" | "kib" => 1 << 10,
        "m" | "mi" | "mib" => 1 << 20,
        "g" | "gi" | "gib" => 1 << 30,
        "t" | "ti" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        _ => return Err(bad()),
    };
    if num.is_empty() {
        return Err(bad());
    }
    let bytes = if num.contains('.') {
        let v: f64 = num.parse().map_err(|_| bad())?;
        let b = (v * unit_bytes as f64).round();
        if !b.is_finite() || b >= u64::MAX as f64 {
            return Err(bad());
        }
        b as u64
    } else {
        let n: u64 = num.parse().map_err(|_| bad())?;
        n.checked_mul(unit_bytes).ok_or_else(bad)?
    };
    Ok(bytes)
}

/// The default dead-letter path for an output path: `out.jsonl` → `out.failures.jsonl`.
pub fn default_failures_path(output: Option<&Path>) -> PathBuf {
    match output {
        Some(out) => {
            let stem = out
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "output".into());
            out.with_file_name(format!("{stem}.failures.jsonl"))
        }
        None => PathBuf::from("herdsman.failures.jsonl"),
    }
}

/// The default checkpoint directory for an output path: `dir/out.jsonl` → `dir/.out.jsonl.herdsman`.
pub fn default_state_dir(output: &Path) -> PathBuf {
    let name = output
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "output".into());
    output.with_file_name(format!(".{name}.herdsman"))
}

/// Refuses `-x echo {id}`: a word after the -x template that clap took for the job file
/// (it is neither an existing file nor a `.toml` name) was meant as part of the command.
fn check_not_swallowed(template: &str, job: &Path) -> Result<()> {
    let is_toml = job
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("toml"));
    if is_toml || job.is_file() {
        return Ok(());
    }
    let word = job.display().to_string();
    let quote = crate::cli::shell_quote;
    let whole = quote(&format!("{template} {word}"));
    let words = format!("{} {}", quote(template), quote(&word));
    usage!(
        "`{word}` after -x {} looks like part of the command, but -x takes one template; quote it whole, -x {whole}, or give the command as words after --: herdsman run ... -- {words}",
        quote(template)
    )
}

/// Refuses `herdsman run data.csv`: a data file given where a job file is expected, with the
/// right form (`-i data.csv`).
fn check_job_not_data(job: &Path) -> Result<()> {
    let name = job
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    let name = name
        .strip_suffix(".gz")
        .or_else(|| name.strip_suffix(".zst"))
        .unwrap_or(&name);
    let data = [
        ".csv", ".tsv", ".jsonl", ".ndjson", ".json", ".txt", ".parquet",
    ];
    if data.iter().any(|ext| name.ends_with(ext)) {
        let path = crate::cli::shell_quote(&job.display().to_string());
        usage!(
            "{path} looks like a data file, but the word after `run` is a TOML job file; give data with -i: herdsman run -i {path} -w 'python3 worker.py'"
        );
    }
    Ok(())
}

/// Maps GNU parallel's `--halt soon,fail=N` (or `N%`, or `1` as a shorthand of
/// `soon,fail=1`) onto [`MaxErrors`]. herdsman always lets records in flight finish, so the
/// `now` variants, which kill running jobs, are refused rather than quietly softened.
pub fn parse_halt(spec: &str) -> Result<MaxErrors> {
    let spec = spec.trim();
    let hint = "give --halt soon,fail=N (or soon,fail=N%), or herdsman's own --max-errors N";
    let (when, rest) = spec.split_once(',').unwrap_or(("soon", spec));
    let rest = if when == "soon" && spec == "1" {
        "fail=1"
    } else {
        rest
    };
    match when {
        "now" => usage!(
            "--halt {spec} would kill the records in flight, but herdsman always lets them finish and checkpoints them; {hint}, which stops admitting records and drains"
        ),
        "soon" => {}
        _ => usage!("--halt {spec} is not understood; {hint}"),
    }
    let Some(n) = rest.strip_prefix("fail=") else {
        usage!("--halt {spec}: herdsman only halts on failures (fail=N), not on successes or done jobs; {hint}")
    };
    parse_max_errors(n).map_err(|_| {
        anyhow::Error::new(UsageError(format!(
            "--halt {spec}: `{n}` is not a number of failures; {hint}"
        )))
    })
}

/// Splits a worker command like a POSIX shell would, without running one.
pub fn split_command(cmd: &str) -> Result<Vec<String>> {
    match shlex::split(cmd) {
        Some(argv) if !argv.is_empty() => Ok(argv),
        Some(_) => {
            usage!("the worker command is empty; give a program, e.g. -w 'python3 worker.py'")
        }
        None => usage!(
            "cannot split the command `{cmd}`: unbalanced quotes; fix the quoting or use --shell"
        ),
    }
}

/// The directory workers start in, as one absolute, symlink-free path (the current directory
/// when `--workdir` is not given), so that `--workdir .`, `--workdir ./` and no flag at all are
/// the same job.
fn effective_workdir(workdir: Option<&Path>) -> String {
    let dir = workdir.unwrap_or(Path::new("."));
    std::fs::canonicalize(dir)
        .or_else(|_| std::path::absolute(dir))
        .unwrap_or_else(|_| dir.to_path_buf())
        .display()
        .to_string()
}

/// The protocol of a worker given without `--protocol`: `framed` for the worker libraries
/// that speak it (`python -m herdsman_worker …`, in argv or in a `--shell` line), else
/// `lines`, which any program that answers one line per line speaks.
fn detect_protocol(argv: &[String]) -> ProtocolArg {
    let words: Vec<&str> = argv.iter().flat_map(|a| a.split_whitespace()).collect();
    let serves = words
        .windows(2)
        .any(|w| w[0] == "-m" && w[1] == "herdsman_worker")
        || words.contains(&"-mherdsman_worker");
    if serves {
        ProtocolArg::Framed
    } else {
        ProtocolArg::Lines
    }
}

impl RunConfig {
    /// Merges the job file (if any) and the flags, flags winning, and validates the result.
    pub fn from_args(mut args: RunArgs) -> Result<RunConfig> {
        let distributed = SharedLedger::from_args(&mut args)?;
        if let (Some(template), Some(job_path)) = (&args.exec, &args.job) {
            check_not_swallowed(template, job_path)?;
        }
        if let Some(job_path) = &args.job {
            check_job_not_data(job_path)?;
        }
        let (job, base) = match &args.job {
            Some(path) => (
                load_job_file(path)?,
                Some(path.parent().unwrap_or(Path::new(".")).to_path_buf()),
            ),
            None => (JobFile::default(), None),
        };
        let base = base.as_deref();
        let rel = |p: String| relative_to(base, p);

        if args.null
            && (!args.input.is_empty()
                || job.input.is_some()
                || !args.arguments.is_empty()
                || matches!(args.format.or(job.format), Some(f) if f != FormatArg::Lines))
        {
            usage!("-0 reads NUL-separated text records from stdin; drop -i, ::: and --format and pipe the records in: find . -print0 | herdsman run -0 -x 'wc -c {{}}'");
        }
        let from_arguments = !args.arguments.is_empty();
        if from_arguments && (!args.input.is_empty() || job.input.is_some()) {
            usage!("the arguments after ::: are the input; drop -i (or the job file's input), or drop ::: and its arguments");
        }
        if let Some(arg) = args.arguments.iter().find(|a| a.contains('\n')) {
            usage!("the argument {arg:?} after ::: holds a newline, but each argument is one line record; put such records in a JSONL file and pass it with -i");
        }
        if from_arguments && matches!(args.format.or(job.format), Some(f) if f != FormatArg::Lines)
        {
            usage!("the arguments after ::: are lines records; drop --format");
        }
        let inputs: Vec<String> = if from_arguments {
            vec!["-".to_string()]
        } else if !args.input.is_empty() {
            args.input
        } else {
            job.input
                .map(|i| i.into_vec().into_iter().map(rel).collect())
                .unwrap_or_default()
        };
        // No input means stdin, as for cat or xargs; but a terminal is never read by
        // accident (a run would sit waiting for typing).
        let inputs = if inputs.is_empty() {
            use std::io::IsTerminal;
            if std::io::stdin().is_terminal() {
                usage!("no input given and stdin is a terminal; pass files with -i data.csv, or pipe records in: seq 3 | herdsman run -w cat");
            }
            vec!["-".to_string()]
        } else {
            inputs
        };

        let (query, key) = database_options(
            &inputs,
            args.query.or(job.query),
            if args.key.is_empty() {
                job.key.map(StringOrList::into_vec)
            } else {
                Some(args.key)
            },
            args.shard.is_some() || job.shard.is_some(),
        )?;

        let shell = args.shell || job.shell.unwrap_or(false);
        // `-x 'echo {id}'` is one template string; `-- echo {id}` is the command as words.
        let as_words = !args.command.is_empty() && args.exec.is_none();
        let exec: Vec<String> = if let Some(template) = args.exec {
            vec![template]
        } else if as_words {
            if args.worker.is_some() {
                usage!("give either --worker or a command after --, not both");
            }
            args.command
        } else if args.worker.is_none() {
            job.exec.map(StringOrList::into_vec).unwrap_or_default()
        } else {
            Vec::new()
        };
        let worker = args
            .worker
            .or(if exec.is_empty() { job.worker } else { None });
        let exec_output_given = args.exec_output.is_some() || job.exec_output.is_some();
        let no_retry_exit_given = !args.no_retry_exit.is_empty() || job.no_retry_exit.is_some();
        let copy = args.copy || job.copy.unwrap_or(false);
        if copy && (worker.is_some() || !exec.is_empty()) {
            usage!("--copy runs no worker; give either --copy or a --worker or --exec, not both");
        }
        let transform = match (worker, exec.is_empty()) {
            _ if copy => Transform::Copy,
            (Some(_), false) => usage!("give either --worker or --exec, not both"),
            (Some(w), true) => {
                let argv = if shell { vec![w] } else { split_command(&w)? };
                let protocol = args
                    .protocol
                    .or(job.protocol)
                    .unwrap_or_else(|| detect_protocol(&argv));
                Transform::Worker {
                    argv,
                    protocol,
                    shell,
                }
            }
            (None, false) => {
                // `-x 'echo {id}'` (one string) is split like a shell would; several
                // arguments are taken as they are.
                let template = if exec.len() == 1 && !shell && !as_words {
                    split_command(&exec[0])?
                } else {
                    exec
                };
                // A bad template is refused here, before a checkpoint is created.
                if let Err(e) = herdsman_workers::Template::new(&template, shell) {
                    usage!("{}", with_causes(&e));
                }
                let codes = if !args.no_retry_exit.is_empty() {
                    args.no_retry_exit.clone()
                } else {
                    job.no_retry_exit
                        .map(CodeList::into_strings)
                        .unwrap_or_default()
                };
                Transform::Exec {
                    template,
                    shell,
                    output: args
                        .exec_output
                        .or(job.exec_output)
                        .unwrap_or(ExecOutputArg::Auto),
                    no_retry_exit: parse_exit_codes(&codes)?,
                }
            }
            (None, true) => usage!(
                "nothing to run; give a worker (-w 'python3 worker.py'), a command per record (-x 'echo {{}}'), or --copy to write the records as they are read (a load or a conversion)"
            ),
        };
        if matches!(transform, Transform::Copy) {
            if args.protocol.is_some() || job.protocol.is_some() {
                usage!("--protocol applies to --worker only; --copy runs no worker");
            }
            if exec_output_given || no_retry_exit_given {
                usage!("--exec-output and --no-retry-exit apply to --exec only; --copy runs no command");
            }
            if shell {
                usage!("--shell applies to a --worker or --exec command; --copy runs none");
            }
        }
        if matches!(transform, Transform::Exec { .. }) && (args.protocol.is_some()) {
            usage!("--protocol applies to --worker only, not to --exec");
        }
        if matches!(transform, Transform::Worker { .. }) {
            if exec_output_given {
                usage!("--exec-output applies to --exec only; a --worker writes its output records itself");
            }
            if no_retry_exit_given {
                usage!("--no-retry-exit applies to --exec only; a framed --worker marks a failure not worth a retry with \"retryable\": false");
            }
        }

        let jobs = args.jobs.or(job.jobs).unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(2, |n| n.get().min(MAX_JOBS))
        });
        if jobs == 0 {
            usage!("--jobs must be at least 1");
        }
        if jobs > MAX_JOBS {
            usage!(
                "--jobs {jobs} is more than the limit of {MAX_JOBS} workers; give a number between 1 and {MAX_JOBS} (the default is the number of cores)"
            );
        }

        let output = args.output.or(job.output.map(|o| {
            if herdsman_db_sink::DbUrl::is_db_url(&o) {
                o
            } else {
                rel(o)
            }
        }));
        // A database URL: the records become rows of a table, not lines of a file.
        let db_output = match output.as_deref() {
            Some(o) if herdsman_db_sink::DbUrl::is_db_url(o) => Some(
                herdsman_db_sink::DbUrl::parse(o)
                    .map_err(|e| anyhow::Error::new(UsageError(format!("-o {e}"))))?,
            ),
            _ => None,
        };
        let output = if db_output.is_some() { None } else { output };
        // An object-storage output is written to a local file, then uploaded.
        let (output, remote) = crate::remote_stage::stage_output(output);
        let if_exists_arg = args.if_exists.or(job.if_exists);
        if if_exists_arg.is_some() && db_output.is_none() {
            usage!("--if-exists applies to database output only (-o postgres://…?table=T or -o sqlite://…?table=T)");
        }
        let if_exists = match if_exists_arg {
            None | Some(crate::cli::IfExistsArg::Fail) => herdsman_db_sink::IfExists::Fail,
            Some(crate::cli::IfExistsArg::Append) => herdsman_db_sink::IfExists::Append,
            Some(crate::cli::IfExistsArg::Replace) => herdsman_db_sink::IfExists::Replace,
        };
        if db_output.is_some() {
            if let Some(f) = args
                .output_format
                .or(job.output_format)
                .filter(|f| *f != OutputFormatArg::Jsonl)
            {
                usage!("--output-format {} does not apply to a database output: every output record must be a JSON object, one row of the table; drop --output-format", f.name());
            }
        }
        // The output as the user spelled it: the default dead-letter file and state directory
        // sit beside it (beside a symbolic link, not its target, so `herdsman status` finds
        // them from the same path).
        let spelled: Option<PathBuf> = output.as_deref().filter(|p| *p != "-").map(PathBuf::from);
        let (output, output_in_place): (Option<PathBuf>, bool) = match output.as_deref() {
            None | Some("-") => (None, false),
            Some(p) => match resolve_target(Path::new(p))? {
                OutputTarget::File(p) => (Some(p), false),
                OutputTarget::Direct(p) => (Some(p), true),
                OutputTarget::Stdout => (None, false),
            },
        };
        // -0 records are text records, written as text to stdout like lines input.
        let null_to_stdout = args.null
            && args.output_format.is_none()
            && job.output_format.is_none()
            && output.is_none();
        let output_format_chosen = args.output_format.is_some()
            || job.output_format.is_some()
            || db_output.is_some()
            || output.as_ref().is_some_and(|p| p.extension().is_some());
        let output_format = match args.output_format.or(job.output_format) {
            Some(f) => f,
            None if null_to_stdout => OutputFormatArg::Lines,
            // An output written in place (/dev/null, a FIFO) keeps the JSONL default.
            None if output_in_place => OutputFormatArg::Jsonl,
            None => match output.as_ref().and_then(|p| p.extension()) {
                None => OutputFormatArg::Jsonl,
                Some(ext) => match herdsman_io::OutputFormat::from_path(Path::new("x").with_extension(ext).as_path()) {
                    Some(herdsman_io::OutputFormat::Csv { .. }) => OutputFormatArg::Csv,
                    Some(herdsman_io::OutputFormat::Lines) => OutputFormatArg::Lines,
                    Some(herdsman_io::OutputFormat::Parquet(_)) => OutputFormatArg::Parquet,
                    Some(_) => OutputFormatArg::Jsonl,
                    // Never a silent JSONL file named .parquet, .xlsx or .tsv.
                    None => usage!(
                        "cannot tell the output format from the extension .{} of {}; name the output .jsonl, .csv, .txt or .parquet, or pass --output-format jsonl|csv|lines|parquet",
                        ext.to_string_lossy(),
                        output.as_deref().map(Path::display).expect("an extension has a path")
                    ),
                },
            },
        };
        let columns = if !args.columns.is_empty() {
            Some(args.columns)
        } else {
            job.columns.map(StringOrList::into_vec)
        };
        // --columns picks the columns of a Parquet input, or the header of a CSV output.
        let parquet_input = args.format.or(job.format) == Some(FormatArg::Parquet)
            || (args.format.or(job.format).is_none()
                && inputs.iter().any(|i| {
                    matches!(
                        herdsman_io::Format::from_path(Path::new(i)),
                        Some(herdsman_io::Format::Parquet)
                    )
                }));
        if columns.is_some() && output_format != OutputFormatArg::Csv && !parquet_input {
            usage!("--columns applies to Parquet input and CSV output only; name the output .csv or pass --output-format csv");
        }
        let parquet = parquet_options(
            args.schema.or(job.schema.map(|s| PathBuf::from(rel(s)))),
            args.compression.or(job.compression),
            args.row_group_size.or(job.row_group_size),
            output_format,
        )?;
        let failures_arg = args.failures.or(job.failures.map(rel));
        let (failures_arg, remote) = remote.stage_failures(failures_arg);
        let failures_given = failures_arg.is_some();
        let failures = match failures_arg {
            Some(f) if f == "-" => usage!("--failures cannot be stdout; give a file path"),
            Some(f) => match resolve_target(Path::new(&f))? {
                OutputTarget::File(p) | OutputTarget::Direct(p) => p,
                OutputTarget::Stdout => PathBuf::from(f),
            },
            // Never `/dev/null.failures.jsonl`: an output written in place gets the same
            // default as stdout.
            None if output_in_place => default_failures_path(None),
            // `-o sqlite://r.db?table=results` → results.failures.jsonl
            None if db_output.is_some() => default_failures_path(
                db_output
                    .as_ref()
                    .map(|d| PathBuf::from(d.table.replace('.', "_")))
                    .as_deref(),
            ),
            None => default_failures_path(spelled.as_deref()),
        };

        let retries = args.retries.or(job.retries).unwrap_or(0);
        if retries > MAX_RETRIES {
            usage!(
                "--retries {retries} is more than the limit of {MAX_RETRIES} retries per record; give a number between 0 and {MAX_RETRIES}"
            );
        }
        let backoff = match args.backoff.or(job.backoff) {
            Some(s) => parse_duration("--backoff", &s)?,
            None => Duration::from_millis(100),
        };
        let max_backoff = match args.max_backoff.or(job.max_backoff) {
            Some(s) => parse_duration("--max-backoff", &s)?,
            None => Duration::from_secs(30),
        };
        let rate = args.rate.or(job.rate).map(|r| parse_rate(&r)).transpose()?;
        let timeout = args
            .timeout
            .or(job.timeout)
            .map(|t| parse_duration("--timeout", &t))
            .transpose()?;
        if timeout == Some(Duration::ZERO) {
            usage!("--timeout must be longer than 0s");
        }
        let max_tasks_per_worker = args.max_tasks_per_worker.or(job.max_tasks_per_worker);
        if max_tasks_per_worker == Some(0) {
            usage!("--max-tasks-per-worker must be at least 1 (records per worker process before it is replaced)");
        }
        if max_tasks_per_worker.is_some() && matches!(transform, Transform::Exec { .. }) {
            usage!("--max-tasks-per-worker applies to --worker only; --exec already starts one command per record");
        }
        let max_errors = match (args.max_errors, job.max_errors) {
            (Some(s), _) => Some(parse_max_errors(&s)?),
            (None, _) if args.halt.is_some() => args.halt.as_deref().map(parse_halt).transpose()?,
            (None, Some(StringOrNumber::Number(n))) => Some(MaxErrors::Count(n)),
            (None, Some(StringOrNumber::Text(s))) => Some(parse_max_errors(&s)?),
            (None, None) => None,
        };
        let delimiter = match args.delimiter.or(job.delimiter).unwrap_or(',') {
            c if c.is_ascii() && c != '"' && c != '\n' && c != '\r' => c as u8,
            c => usage!(
                "--delimiter `{c}` must be a single ASCII character other than a quote or newline"
            ),
        };
        let max_record_size = match (args.max_record_size, job.max_record_size) {
            (Some(s), _) | (None, Some(StringOrNumber::Text(s))) => {
                parse_size("--max-record-size", &s)?
            }
            (None, Some(StringOrNumber::Number(n))) => n,
            (None, None) => DEFAULT_MAX_RECORD_SIZE as u64,
        };
        if max_record_size == 0 || max_record_size > MAX_RECORD_SIZE_CEILING {
            usage!(
                "--max-record-size must be between 1 byte and 1TiB, got {max_record_size} bytes; write it like 64MiB"
            );
        }
        let Ok(max_record_size) = usize::try_from(max_record_size) else {
            usage!("--max-record-size {max_record_size} bytes does not fit this machine's memory; give a smaller size");
        };
        let chunk_size = args
            .chunk_size
            .or(job.chunk_size)
            .unwrap_or(DEFAULT_CHUNK_SIZE);
        if chunk_size == 0 {
            usage!("--chunk-size must be at least 1");
        }
        let window = args
            .window
            .or(job.window)
            .unwrap_or_else(|| match transform {
                // No worker: records are answered at once, and a larger window lets the
                // engine hand them over in fewer, larger batches.
                Transform::Copy => COPY_WINDOW,
                _ => (jobs * 256).clamp(1024, 16384),
            });
        if window == 0 {
            usage!("--window must be at least 1");
        }
        if window > MAX_WINDOW {
            usage!(
                "--window {window} is more than the limit of {MAX_WINDOW} records in flight; give a smaller number (the default fits most runs)"
            );
        }
        if args.limit == Some(0) {
            usage!("--limit must be at least 1 record");
        }
        if args.limit.is_some() && (args.restart || args.retry_failed || args.state.is_some()) {
            usage!("--limit is a try-out that never checkpoints; drop --restart, --retry-failed and --state, or drop --limit");
        }
        // A try-out never checkpoints, and never overwrites the output of a checkpointed job.
        if args.limit.is_some() && !args.dry_run {
            if let Some(state) = spelled.as_deref().map(default_state_dir) {
                if state.exists() {
                    usage!(
                        "{} belongs to a checkpointed job ({} exists) and a --limit try-out would replace it; write the try-out elsewhere, e.g. -o try.jsonl",
                        spelled.as_deref().unwrap_or(Path::new("")).display(),
                        state.display()
                    );
                }
            }
        }
        let no_checkpoint =
            args.no_checkpoint || job.no_checkpoint.unwrap_or(false) || args.limit.is_some();
        let stdin_input = inputs.iter().any(|i| i == "-");
        let streamed = (output.is_none() && db_output.is_none()) || output_in_place;
        let state = if no_checkpoint {
            None
        } else if let Some(dir) = args.state.or(job.state.map(|s| PathBuf::from(rel(s)))) {
            if streamed || stdin_input {
                usage!("--state needs a regular file output and file inputs: a run that reads stdin or writes stdout, a device or a FIFO cannot be resumed");
            }
            Some(dir)
        } else if streamed || stdin_input {
            None
        } else if let Some(db) = &db_output {
            // A table has no directory beside it: ./herdsman-state/<table>.
            Some(Path::new("herdsman-state").join(&db.table))
        } else {
            spelled.as_deref().map(default_state_dir)
        };
        if args.retry_failed && db_output.is_some() {
            usage!("--retry-failed cannot fold records back into a database table yet; run the failed records as a new job: herdsman run -i {} ... -o '<url>' --if-exists append", failures.display());
        }
        if args.retry_failed && state.is_none() {
            usage!("--retry-failed needs a checkpointed job with a file output; drop --no-checkpoint and give -o");
        }

        // `--shard`: standard input cannot be split (every shard reads the same files), and
        // CSV output needs its columns up front (only shard 0 writes the header, and every
        // shard must write the same columns).
        let shard_arg = args.shard.or(job.shard);
        let shard = shard_arg
            .as_deref()
            .map(|s| crate::shard::Shard::parse(s, |name| std::env::var(name).ok()))
            .transpose()
            .map_err(|m| anyhow::Error::new(UsageError(m)))?;
        if let (Some(spec), Some(_)) = (&shard_arg, shard) {
            if stdin_input {
                usage!("--shard {spec}: standard input cannot be split into shards (each shard reads its own part of the same files); give the input as files with -i");
            }
            if output_format == OutputFormatArg::Parquet {
                usage!("--shard {spec} with Parquet output: Parquet files cannot be joined by concatenation, so the shards' outputs would not add up to one file; write JSONL, CSV or lines per shard (-o part-{{i}}.jsonl), or run the job unsharded");
            }
            if output_format == OutputFormatArg::Csv && columns.is_none() {
                usage!("--shard {spec} with CSV output needs --columns: every shard must write the same columns, and only shard 0 writes the header; add --columns a,b,c");
            }
        }

        let workdir = args.workdir.or(job.workdir.map(|w| PathBuf::from(rel(w))));
        if let Some(dir) = &workdir {
            if !dir.is_dir() {
                usage!(
                    "--workdir {} is not a directory; give an existing directory for the workers to start in",
                    dir.display()
                );
            }
        }
        Ok(RunConfig {
            inputs,
            // -0: stdin is turned into JSON strings, one per line, before it is read.
            format: if args.null {
                Some(FormatArg::Jsonl)
            } else if from_arguments {
                Some(FormatArg::Lines)
            } else {
                args.format.or(job.format)
            },
            transform,
            workdir,
            jobs,
            output,
            output_in_place,
            output_format,
            output_format_chosen,
            columns,
            query,
            key,
            parquet,
            failures,
            failures_given,
            retries,
            backoff,
            max_backoff,
            rate,
            timeout,
            max_tasks_per_worker,
            max_errors,
            ordered: !(args.unordered || job.unordered.unwrap_or(false)),
            infer_types: args.infer_types || job.infer_types.unwrap_or(false),
            delimiter,
            max_record_size,
            chunk_size,
            window,
            summary_json: args
                .summary_json
                .or(job.summary_json.map(|s| PathBuf::from(rel(s)))),
            joblog: args
                .joblog
                .map(PathBuf::from)
                .or(job.joblog.map(|s| PathBuf::from(rel(s)))),
            metrics_addr: args.metrics_addr.or(job.metrics_addr),
            metrics_file: args
                .metrics_file
                .or(job.metrics_file.map(|s| PathBuf::from(rel(s)))),
            progress: args
                .progress
                .or(args.bar.then_some(ProgressArg::Bar))
                .or(args.eta.then_some(ProgressArg::Auto))
                .or(job.progress)
                .unwrap_or(ProgressArg::Auto),
            state,
            restart: args.restart,
            retry_failed: args.retry_failed,
            no_history: args.no_history || job.no_history.unwrap_or(false),
            limit: args.limit,
            dry_run: args.dry_run,
            null_separated: args.null,
            quiet: args.quiet,
            shard,
            db_output,
            if_exists,
            remote,
            distributed,
        })
    }

    /// The options that change what a run writes, or which records fail. A checkpoint is
    /// only resumed when these are unchanged. Every `RunArgs` field is accounted for:
    ///
    /// - here: the worker or `--exec` command, `--protocol`, `--shell`, `--workdir` (the
    ///   directory the command starts in: a relative script path finds another script
    ///   elsewhere), `--retries` (a flaky record fails or not; its dead-letter entry counts
    ///   the attempts), `--timeout` (a slow record fails or not), `--unordered`,
    ///   `--infer-types`, `--delimiter`, `--chunk-size`, `--format`, `--output-format`,
    ///   `--columns`;
    /// - in the run's identity beside these (`run::job_identity`): the inputs (canonical
    ///   path, format, size, modification time, content fingerprint), the script the worker
    ///   or `--exec` command runs (by content), `--output` and `--failures` (canonical);
    /// - not part of it, because they change only how fast or how verbosely the same result is
    ///   reached: `--jobs`, `--max-tasks-per-worker`, `--window`, `--rate`, `--backoff`, `--max-backoff`,
    ///   `--max-errors` and `--halt` (where a run stops, not what a finished job holds),
    ///   `--progress`, `--bar`, `--eta`, `--keep-order` (no effect), `--quiet`,
    ///   `--summary-json`, `--joblog`, `--metrics-addr`, `--metrics-file`, `--verbose`, `--log-format`, `--log-file`; and the ones that choose what to do with
    ///   the checkpoint itself: the job file (its values are the fields above), `--state`,
    ///   `--no-checkpoint`, `--no-history`, `--restart`, `--retry-failed`, `--limit` and `--dry-run` (never
    ///   checkpointed), `:::` arguments (stdin input, never checkpointed). `--shard` is in
    ///   the run's identity beside these (`checkpoint::job_identity`), as the resolved `I/N`.
    pub fn result_identity(&self) -> BTreeMap<String, String> {
        let mut m = BTreeMap::new();
        m.insert("workdir".into(), effective_workdir(self.workdir.as_deref()));
        m.insert("retries".into(), self.retries.to_string());
        m.insert(
            "timeout".into(),
            match self.timeout {
                Some(t) => humantime::format_duration(t).to_string(),
                None => "none".into(),
            },
        );
        match &self.transform {
            Transform::Worker {
                argv,
                protocol,
                shell,
            } => {
                m.insert(
                    "worker".into(),
                    serde_json::to_string(argv).unwrap_or_default(),
                );
                m.insert("protocol".into(), protocol.name().to_string());
                m.insert("shell".into(), shell.to_string());
            }
            Transform::Copy => {
                m.insert("copy".into(), "true".into());
            }
            Transform::Exec {
                template,
                shell,
                output,
                no_retry_exit: _,
            } => {
                m.insert(
                    "exec".into(),
                    serde_json::to_string(template).unwrap_or_default(),
                );
                m.insert("shell".into(), shell.to_string());
                if *output != ExecOutputArg::Auto {
                    m.insert("exec_output".into(), output.name().to_string());
                }
            }
        }
        m.insert("ordered".into(), self.ordered.to_string());
        m.insert("infer_types".into(), self.infer_types.to_string());
        m.insert("delimiter".into(), (self.delimiter as char).to_string());
        m.insert("chunk_size".into(), self.chunk_size.to_string());
        // Only when set: jobs checkpointed before the flag existed keep their identity.
        if self.max_record_size != DEFAULT_MAX_RECORD_SIZE {
            m.insert("max_record_size".into(), self.max_record_size.to_string());
        }
        m.insert(
            "output_format".into(),
            self.output_format.name().to_string(),
        );
        if let Some(c) = &self.columns {
            m.insert("columns".into(), c.join(","));
        }
        if self.output_format == OutputFormatArg::Parquet {
            let p = &self.parquet;
            if let Some(s) = &p.schema {
                m.insert("schema".into(), s.to_text());
            }
            m.insert("compression".into(), p.compression.name().to_string());
            m.insert("row_group_size".into(), p.row_group_size.to_string());
        }
        if let Some(f) = self.format {
            m.insert("format".into(), f.name().to_string());
        }
        // A database input's rows: another query or key is another job.
        if let Some(q) = &self.query {
            m.insert("query".into(), q.clone());
        }
        if let Some(k) = &self.key {
            m.insert("key".into(), k.join(","));
        }
        m
    }
}

/// Checks `--query` and `--key` against the inputs: they apply to a database input only,
/// which is read alone and not split into shards, and a query needs a key.
fn database_options(
    inputs: &[String],
    query: Option<String>,
    key: Option<Vec<String>>,
    shard: bool,
) -> Result<(Option<String>, Option<Vec<String>>)> {
    let Some(db) = inputs
        .iter()
        .find(|i| herdsman_io::database_format(i).is_some())
    else {
        if query.is_some() || key.is_some() {
            usage!("--query and --key apply to a database input; read one with -i 'postgres://user@host/db?table=NAME' or -i 'sqlite:///path/db.sqlite?table=NAME'");
        }
        return Ok((query, key));
    };
    let db = herdsman_io::redact_url(db);
    if inputs.len() > 1 {
        usage!("the database input {db} is read alone; give it as the only -i");
    }
    if shard {
        usage!("--shard splits files by bytes and cannot split the database input {db}; run it without --shard");
    }
    let names_table = db
        .split_once('?')
        .is_some_and(|(_, q)| q.split('&').any(|p| p.starts_with("table=")));
    if query.is_some() {
        if names_table {
            usage!("{db} names a table and --query is given too; drop ?table= from the URL, or drop --query");
        }
        if key.is_none() {
            usage!("--query needs --key: name the unique, non-null column(s) of its result that order its rows and let a run resume exactly, e.g. --key id");
        }
    } else if !names_table {
        usage!("{db} names no table; add ?table=NAME to the URL, or give --query 'SELECT …' with --key");
    }
    Ok((query, key))
}

/// The Parquet options of `--schema`, `--compression` and `--row-group-size`, which apply to
/// Parquet output only.
fn parquet_options(
    schema: Option<PathBuf>,
    compression: Option<String>,
    row_group_size: Option<usize>,
    output_format: OutputFormatArg,
) -> Result<herdsman_io::ParquetOptions> {
    let mut opts = herdsman_io::ParquetOptions::default();
    if output_format != OutputFormatArg::Parquet {
        for (given, flag) in [
            (schema.is_some(), "--schema"),
            (compression.is_some(), "--compression"),
            (row_group_size.is_some(), "--row-group-size"),
        ] {
            if given {
                usage!("{flag} applies to Parquet output only; name the output .parquet or pass --output-format parquet");
            }
        }
        return Ok(opts);
    }
    if let Some(path) = schema {
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => usage!(
                "cannot read the schema file {}: {e}; check the --schema path",
                path.display()
            ),
        };
        opts.schema = match herdsman_io::ParquetSchema::parse(&text) {
            Ok(s) => Some(s),
            Err(e) => usage!("the schema file {} is not usable: {e}", path.display()),
        };
    }
    if let Some(c) = compression {
        opts.compression = match herdsman_io::ParquetCompression::parse(&c) {
            Some(c) => c,
            None => usage!("--compression {c} is not known; use zstd, snappy or none"),
        };
    }
    if let Some(n) = row_group_size {
        if n == 0 {
            usage!("--row-group-size must be at least 1 row");
        }
        opts.row_group_size = n;
    }
    Ok(opts)
}

/// What an output path (`-o`, `--failures`) leads to; a directory or a path that cannot be
/// inspected is an environment error.
fn resolve_target(path: &Path) -> Result<OutputTarget> {
    herdsman_io::output_target(path).map_err(|e| anyhow::Error::new(EnvError(with_causes(&e))))
}

/// The canonical form of `p`: absolute, symbolic links and `.`/`..` resolved. For the part
/// of a path that does not exist yet, the nearest existing ancestor is canonicalised and the
/// rest appended, so a file about to be created compares equal to itself under any spelling.
pub fn canonical(p: &Path) -> PathBuf {
    let abs = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let mut out = PathBuf::new();
    let mut real = true;
    for c in abs.components() {
        match c {
            Component::Prefix(_) | Component::RootDir => out.push(c.as_os_str()),
            Component::CurDir => {}
            // While `out` exists it is canonical, so its lexical parent is its real parent.
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(name) => {
                out.push(name);
                if real {
                    match std::fs::canonicalize(&out) {
                        Ok(c) => out = c,
                        Err(_) => real = false,
                    }
                }
            }
        }
    }
    out
}

/// Checks that the run's inputs and the files it writes (output, dead-letter file, their
/// partial files, summary, state directory) are all different files once canonicalised,
/// and that nothing is written inside the state directory. A collision is a usage error,
/// found before anything is written. Character devices (`/dev/null`) may be shared.
pub fn check_paths(cfg: &RunConfig, inputs: &[PathBuf]) -> Result<()> {
    let is_device = |p: &Path| {
        use std::os::unix::fs::FileTypeExt;
        std::fs::metadata(p).is_ok_and(|m| m.file_type().is_char_device())
    };
    let mut written: Vec<(String, PathBuf)> = Vec::new();
    if let Some(out) = &cfg.output {
        written.push((format!("the output {}", out.display()), canonical(out)));
        if !cfg.output_in_place {
            let partial = herdsman_io::partial_path(out);
            written.push((
                format!("the output's partial file {}", partial.display()),
                canonical(&partial),
            ));
        }
    }
    let failures = &cfg.failures;
    written.push((
        format!("the dead-letter file {}", failures.display()),
        canonical(failures),
    ));
    let partial = herdsman_io::partial_path(failures);
    written.push((
        format!("the dead-letter file's partial file {}", partial.display()),
        canonical(&partial),
    ));
    if let Some(s) = &cfg.summary_json {
        written.push((format!("the summary file {}", s.display()), canonical(s)));
    }
    if let Some(j) = &cfg.joblog {
        written.push((format!("the job log {}", j.display()), canonical(j)));
    }
    if let Some(m) = &cfg.metrics_file {
        written.push((format!("the metrics file {}", m.display()), canonical(m)));
    }
    let state = cfg
        .state
        .as_ref()
        .map(|d| (format!("the state directory {}", d.display()), canonical(d)));
    let written: Vec<(String, PathBuf)> =
        written.into_iter().filter(|(_, p)| !is_device(p)).collect();
    let inputs: Vec<(String, PathBuf)> = inputs
        .iter()
        .map(|i| (format!("the input {}", i.display()), canonical(i)))
        .filter(|(_, p)| !is_device(p))
        .collect();
    let mut seen: Vec<&(String, PathBuf)> = Vec::new();
    for entry in inputs.iter().chain(&written).chain(&state) {
        if let Some(other) = seen.iter().find(|o| o.1 == entry.1) {
            if !(other.0.starts_with("the input") && entry.0.starts_with("the input")) {
                usage!(
                    "{} and {} are the same file ({}); give them different paths",
                    other.0,
                    entry.0,
                    entry.1.display()
                );
            }
        }
        seen.push(entry);
    }
    if let Some((name, dir)) = &state {
        if let Some((what, p)) = written.iter().find(|(_, p)| p.starts_with(dir)) {
            usage!(
                "{what} is inside {name} ({}), which herdsman owns; write it elsewhere",
                p.display()
            );
        }
    }
    Ok(())
}

/// Checks, before any work, that the directories of the files a run writes exist (creating
/// the output's and dead-letter file's) and accept new files, and that the summary's
/// directory exists: environment errors, exit code 4.
pub fn check_writable(cfg: &RunConfig) -> Result<()> {
    let dir_of = |p: &Path| match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let env = |e: herdsman_io::SinkError| anyhow::Error::new(EnvError(with_causes(&e)));
    let mut files: Vec<&Path> = Vec::new();
    if let Some(out) = cfg.output.as_deref().filter(|_| !cfg.output_in_place) {
        files.push(out);
    }
    // A dead-letter file opened only on the first failure (a streamed output without
    // --failures) must not make a clean run depend on the current directory.
    let failures_up_front = cfg.failures_given || (cfg.output.is_some() && !cfg.output_in_place);
    if failures_up_front
        && !herdsman_io::output_target(&cfg.failures)
            .map_err(env)?
            .is_stream()
    {
        files.push(&cfg.failures);
    }
    for f in files {
        ensure_parent_dir(f)?;
        herdsman_io::check_writable_dir(&dir_of(f)).map_err(env)?;
    }
    if let Some(summary) = &cfg.summary_json {
        if !herdsman_io::output_target(summary)
            .map_err(env)?
            .is_stream()
        {
            let dir = dir_of(summary);
            if !dir.is_dir() {
                return Err(anyhow::Error::new(EnvError(format!(
                    "cannot write the summary to {}: the directory {} does not exist; create it or choose another --summary-json path",
                    summary.display(),
                    dir.display()
                ))));
            }
            herdsman_io::check_writable_dir(&dir).map_err(env)?;
        }
    }
    Ok(())
}

/// Checks that a directory for `path` exists, with a message saying what to do.
pub fn ensure_parent_dir(path: &Path) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| {
            anyhow::Error::new(EnvError(format!(
                "cannot create directory {}: {e}; check the path and its permissions",
                dir.display()
            )))
        })?;
    }
    Ok(())
}

/// The default lease of a claimed chunk.
pub(crate) const DEFAULT_LEASE: Duration = Duration::from_secs(30);

/// How a node takes part in a job shared through a PostgreSQL ledger.
#[derive(Debug, Clone)]
pub struct SharedLedger {
    /// The ledger's URL (`postgres://user@host:port/db`).
    pub url: String,
    /// How long a claim lasts without a heartbeat.
    pub lease: Duration,
    /// This node's name in the ledger.
    pub node: String,
    /// The shared parts directory (`None`: `<output>.parts`).
    pub parts: Option<PathBuf>,
}

impl SharedLedger {
    /// Reads `--ledger`, `--lease`, `--node` and `--parts` (taking them out of `args`).
    pub fn from_args(args: &mut RunArgs) -> Result<Option<SharedLedger>> {
        let (ledger, lease, node, parts) = (
            args.ledger.take().filter(|l| !l.is_empty()),
            args.lease.take(),
            args.node.take(),
            args.parts.take(),
        );
        let Some(url) = ledger else {
            for (flag, given) in [
                ("--lease", lease.is_some()),
                ("--node", node.is_some()),
                ("--parts", parts.is_some()),
            ] {
                if given {
                    return Err(usage(format!(
                        "{flag} belongs to a run shared by many machines; add --ledger postgres://user@host/db, or drop {flag}"
                    )));
                }
            }
            return Ok(None);
        };
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(usage(format!(
                "--ledger `{}` is not a PostgreSQL URL; write it as postgres://user@host:5432/database (one machine needs no --ledger: its checkpoint is in --state)",
                herdsman_io::redact_url(&url)
            )));
        }
        let lease = match lease {
            None => DEFAULT_LEASE,
            Some(text) => match humantime::parse_duration(text.trim()) {
                Ok(d) if d >= Duration::from_secs(1) => d,
                Ok(_) => {
                    return Err(usage(format!(
                        "--lease {text} is too short: heartbeats come every third of it; give at least 1s, e.g. --lease 30s"
                    )))
                }
                Err(_) => {
                    return Err(usage(format!(
                        "--lease `{text}` is not a duration; write it like 30s or 2m"
                    )))
                }
            },
        };
        let node = match node {
            Some(n) if n.trim().is_empty() => {
                return Err(usage("--node needs a name, e.g. --node worker-3".into()))
            }
            Some(n) => n,
            None => format!("{}:{}", hostname(), std::process::id()),
        };
        Ok(Some(SharedLedger {
            url,
            lease,
            node,
            parts,
        }))
    }
}

/// This machine's name, for the default node name.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into())
}

/// The state directory named by the user: the directory itself, or an output file whose
/// default state directory is next to it.
pub fn job_state_dir(arg: &Path) -> Result<PathBuf> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn args(input: &[&str]) -> RunArgs {
        RunArgs {
            input: input.iter().map(|s| s.to_string()).collect(),
            worker: Some("cat".into()),
            ..RunArgs::default()
        }
    }

    #[test]
    fn halt_maps_soon_onto_max_errors_and_refuses_now() {
        assert_eq!(parse_halt("soon,fail=3").unwrap(), MaxErrors::Count(3));
        assert_eq!(parse_halt("1").unwrap(), MaxErrors::Count(1));
        assert_eq!(parse_halt("soon,fail=5%").unwrap(), MaxErrors::Percent(5.0));
        for bad in [
            "now,fail=1",
            "soon,success=1",
            "soon,fail=x",
            "later,fail=1",
        ] {
            let e = parse_halt(bad).unwrap_err();
            assert!(e.downcast_ref::<UsageError>().is_some(), "{bad}: {e}");
            assert!(e.to_string().contains("--max-errors"), "{bad}: {e}");
        }
    }

    #[test]
    fn durations_rates_and_max_errors_parse() {
        assert_eq!(
            parse_duration("x", "200ms").unwrap(),
            Duration::from_millis(200)
        );
        assert_eq!(
            parse_duration("x", "1.5").unwrap(),
            Duration::from_millis(1500)
        );
        assert!(parse_duration("x", "soon").is_err());
        assert_eq!(
            parse_rate("20/second").unwrap(),
            (20.try_into().unwrap(), Duration::from_secs(1))
        );
        assert_eq!(
            parse_rate("5/min").unwrap(),
            (5.try_into().unwrap(), Duration::from_secs(60))
        );
        assert!(parse_rate("0/s").is_err());
        assert!(parse_rate("ten/s").is_err());
        assert_eq!(parse_max_errors("10").unwrap(), MaxErrors::Count(10));
        assert_eq!(parse_max_errors("2.5%").unwrap(), MaxErrors::Percent(2.5));
        assert!(parse_max_errors("lots").is_err());
    }

    #[test]
    fn sizes_parse_with_binary_and_decimal_units() {
        for (s, want) in [
            ("16MiB", 16 << 20),
            ("1GiB", 1 << 30),
            ("512 KiB", 512 << 10),
            ("64k", 64 << 10),
            ("2MB", 2_000_000),
            ("1.5GiB", 3 << 29),
            ("4096", 4096),
            ("100b", 100),
        ] {
            assert_eq!(parse_size("x", s).unwrap(), want, "{s}");
        }
        for bad in [
            "",
            "MiB",
            "lots",
            "1.2.3MiB",
            "-1MiB",
            "16 MiBs",
            "99999999999999999999",
        ] {
            let err = parse_size("--max-record-size", bad).unwrap_err();
            assert!(err.downcast_ref::<UsageError>().is_some(), "{bad}");
            assert!(err.to_string().contains("16MiB"), "{err}");
        }
    }

    #[test]
    fn max_record_size_is_checked_and_part_of_the_identity_when_set() {
        let c = RunConfig::from_args(args(&["in.csv"])).unwrap();
        assert_eq!(c.max_record_size, DEFAULT_MAX_RECORD_SIZE);
        assert!(!c.result_identity().contains_key("max_record_size"));
        let mut a = args(&["in.csv"]);
        a.max_record_size = Some("1GiB".into());
        let c = RunConfig::from_args(a).unwrap();
        assert_eq!(c.max_record_size, 1 << 30);
        assert_eq!(
            c.result_identity()
                .get("max_record_size")
                .map(String::as_str),
            Some("1073741824")
        );
        for bad in ["0", "2TiB"] {
            let mut a = args(&["in.csv"]);
            a.max_record_size = Some(bad.into());
            let err = RunConfig::from_args(a).unwrap_err();
            assert!(err.to_string().contains("--max-record-size"), "{err}");
        }
    }

    #[test]
    fn defaults_put_failures_and_state_beside_the_output() {
        let mut a = args(&["in.csv"]);
        a.output = Some("out/res.jsonl".into());
        let c = RunConfig::from_args(a).unwrap();
        assert_eq!(c.failures, PathBuf::from("out/res.failures.jsonl"));
        assert_eq!(c.state, Some(PathBuf::from("out/.res.jsonl.herdsman")));
        assert!(c.ordered);
    }

    #[test]
    fn stdout_output_disables_checkpointing() {
        let c = RunConfig::from_args(args(&["in.csv"])).unwrap();
        assert_eq!(c.output, None);
        assert_eq!(c.state, None);
    }

    #[test]
    fn worker_and_exec_are_exclusive_and_one_is_required() {
        let mut a = args(&["in.csv"]);
        a.exec = Some("echo".into());
        assert!(RunConfig::from_args(a).is_err());
        let mut a = args(&["in.csv"]);
        a.command = vec!["echo".into(), "{}".into()];
        assert!(RunConfig::from_args(a).is_err());
        let mut a = args(&["in.csv"]);
        a.worker = None;
        let err = RunConfig::from_args(a).unwrap_err().to_string();
        assert!(err.contains("nothing to run"), "{err}");
    }

    #[test]
    fn job_file_values_are_relative_to_it_and_flags_win() {
        let dir = tempfile::tempdir().unwrap();
        let job = dir.path().join("job.toml");
        std::fs::write(
            &job,
            "input = ['data.csv']\nworker = \"python3 w.py\"\nprotocol = 'framed'\njobs = 3\noutput = 'out/x.jsonl'\nmax_errors = 5\n",
        )
        .unwrap();
        let a = RunArgs {
            job: Some(job),
            jobs: Some(1),
            ..RunArgs::default()
        };
        let c = RunConfig::from_args(a).unwrap();
        assert_eq!(c.jobs, 1);
        assert_eq!(c.inputs, [dir.path().join("data.csv").to_string_lossy()]);
        assert_eq!(c.output, Some(dir.path().join("out/x.jsonl")));
        assert_eq!(c.max_errors, Some(MaxErrors::Count(5)));
        assert_eq!(
            c.transform,
            Transform::Worker {
                argv: vec!["python3".into(), "w.py".into()],
                protocol: ProtocolArg::Framed,
                shell: false
            }
        );
    }

    #[test]
    fn a_python_herdsman_worker_is_detected_as_framed() {
        let proto = |w: &str, given: Option<ProtocolArg>| {
            let mut a = args(&["in.csv"]);
            a.worker = Some(w.into());
            a.protocol = given;
            match RunConfig::from_args(a).unwrap().transform {
                Transform::Worker { protocol, .. } => protocol,
                Transform::Exec { .. } | Transform::Copy => unreachable!(),
            }
        };
        let py = "python3 -m herdsman_worker m:f";
        assert_eq!(proto(py, None), ProtocolArg::Framed);
        assert_eq!(proto("python3 w.py", None), ProtocolArg::Lines);
        assert_eq!(proto("cat", None), ProtocolArg::Lines);
        assert_eq!(proto(py, Some(ProtocolArg::Lines)), ProtocolArg::Lines);
    }

    #[test]
    fn unknown_job_file_keys_are_usage_errors() {
        let dir = tempfile::tempdir().unwrap();
        let job = dir.path().join("job.toml");
        std::fs::write(&job, "inputs = ['a.csv']\n").unwrap();
        let err = RunConfig::from_args(RunArgs {
            job: Some(job),
            ..RunArgs::default()
        })
        .unwrap_err();
        assert!(err.downcast_ref::<UsageError>().is_some());
        assert!(err.to_string().contains("inputs"), "{err}");
    }
}
