//! Command-line definitions: the raw flags exactly as the user typed them, and the raw keys
//! of a job file, both defined once by `run_options!`.
//!
//! This module only describes the surface (names, help, examples). It must never validate
//! combinations or touch the file system: that is `config`'s job, so that flags and job files
//! share one validation path.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Run one program over every record of a CSV or JSONL dataset, in parallel, and account for
/// every record.
#[derive(Debug, Parser)]
#[command(
    name = "herdsman",
    version,
    about,
    long_about = None,
    propagate_version = true,
    after_long_help = EXIT_CODES
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Stream a dataset through workers (resumes an interrupted run of the same job).
    #[command(after_long_help = RUN_EXAMPLES)]
    Run(Box<RunArgs>),
    /// Show a job: whether it runs (percent done, rate, ETA, workers), was interrupted or
    /// finished; its checkpoint; its failures by kind.
    Status(StatusArgs),
    /// List the records of a job that ended in its dead-letter file.
    Failures(FailuresArgs),
    /// Write one self-contained HTML page about a job: throughput, latency, workers,
    /// retries and waits over time, failures by kind, slowest records and settings.
    Report(ReportArgs),
    /// Print a shell completion script for herdsman.
    Completions {
        /// The shell to generate completions for.
        shell: clap_complete::Shell,
    },
    /// Print herdsman's man page (roff) on stdout.
    #[command(hide = true)]
    Man,
}

/// Every exit code of herdsman, shown by `--help` and in the man page.
macro_rules! exit_codes {
    () => {
        "\
Exit codes: 0 every record succeeded; 1 some records failed; 2 usage or configuration
error; 3 stopped by --max-errors (or --halt); 4 environment error (a file or directory
could not be read or written); 141 stdout's reader went away (herdsman run | head); 130
interrupted by Ctrl-C, 143 by SIGTERM, 129 by SIGHUP (the run drains: records in flight
finish and are checkpointed; repeated SIGTERM or SIGHUP change nothing; a second Ctrl-C, a
second or more after the first, quits at once)."
    };
}

const RUN_EXAMPLES: &str = concat!(
    "\
Examples:
  # count primes with a Python worker, 2 workers, ordered JSONL output
  herdsman run -i data.csv -w 'python3 worker.py' --protocol framed -j 2 -o out.jsonl

  # the same from a job file, overriding the number of workers
  herdsman run job.toml -j 4

  # one command per record; {path} is a CSV column, passed as one argv entry (no shell)
  herdsman run -i files.csv -x 'gzip -k {path}' -o done.jsonl

  # the same with the command as words after --
  herdsman run -i files.csv -o done.jsonl -- gzip -k {path}

  # stdin to stdout: lines in, lines out, printed as they complete, in input order
  seq 3 | herdsman run -w cat

  # a rate-limited HTTP job that retries throttled calls
  herdsman run -i ids.csv -w 'python3 fetch.py' --rate 20/second --retries 5 --backoff 200ms -o out.jsonl

  # GNU parallel style: arguments after ::: are the input, one record each
  herdsman run -x 'echo {}' ::: a b c

",
    exit_codes!()
);

/// Every exit code of herdsman, shown by `herdsman --help`.
pub const EXIT_CODES: &str = exit_codes!();

/// Defines the flags of `herdsman run` and the keys of a job file from one list, so that an
/// option is added in one place. Each entry is a field of [`RunArgs`] (with its clap
/// attributes and help); an entry with `job file: TYPE` is also a job-file key of that name
/// (kebab-case), read as `TYPE` into [`JobFile`]. Entries without one are command-line only.
macro_rules! run_options {
    (
        $(#[$struct_meta:meta])*
        pub struct RunArgs {
            $(
                $(#[$meta:meta])*
                $name:ident : $ty:ty $(, job file: $job_ty:ty)? ;
            )*
        }
    ) => {
        $(#[$struct_meta])*
        #[derive(Debug, Args, Default)]
        pub struct RunArgs {
            $(
                $(#[$meta])*
                pub $name: $ty,
            )*
        }

        /// The job file: the options of [`RunArgs`] that have a job-file key, under their long
        /// names, as written in TOML.
        #[derive(Debug, Default, serde::Deserialize)]
        #[serde(deny_unknown_fields, rename_all = "kebab-case")]
        pub struct JobFile {
            $($(
                pub $name: Option<$job_ty>,
            )?)*
        }
    };
}

run_options! {
/// Flags of `herdsman run`. Every option can also be set in a job file under the same long
/// name (dashes or underscores); flags override the job file.
pub struct RunArgs {
    /// A TOML job file holding any of the options below (paths in it are relative to it).
    #[arg(value_name = "JOB.toml")]
    job: Option<PathBuf>;

    /// Input files or globs, read in order; '-' is stdin (the default when no input is
    /// given). .gz and .zst are decompressed. Example: -i 'data/part-*.csv.gz'
    #[arg(short, long = "input", value_name = "PATH", num_args = 1.., help_heading = "Input")]
    input: Vec<String>, job file: StringOrList;

    /// Input format (default: from the input's extension, .parquet is Parquet; stdin is
    /// jsonl when its first line starts with { or [, else lines; CSV on stdin needs --format
    /// csv).
    #[arg(long, value_enum, value_name = "FORMAT", help_heading = "Input")]
    format: Option<FormatArg>, job file: FormatArg;

    /// Database input: read the rows of this SQL query (read in --key order, the query
    /// wrapped as a subquery) rather than the table the URL names. Example: -i
    /// postgres://me@db/shop --query 'SELECT id, url FROM items WHERE active' --key id
    #[arg(long, value_name = "SQL", help_heading = "Input")]
    query: Option<String>, job file: String;

    /// Database input: the unique, non-null column(s) the rows are read in the order of, and
    /// resumed after, comma separated (default: the table's primary key; needed with --query).
    #[arg(long, value_name = "COL,...", value_delimiter = ',', help_heading = "Input")]
    key: Vec<String>, job file: StringOrList;

    /// A pool of persistent worker processes, e.g. -w 'python3 worker.py'. The command is
    /// split like a shell would (quotes respected) but run without a shell.
    #[arg(
        short,
        long,
        value_name = "CMD",
        conflicts_with = "exec",
        help_heading = "Work"
    )]
    worker: Option<String>, job file: String;

    /// How herdsman talks to --worker processes: one line in, one line out (lines), or an
    /// envelope with ids that allows filtering, many outputs and failures (framed).
    /// Default: lines.
    #[arg(long, value_enum, value_name = "PROTOCOL", help_heading = "Work")]
    protocol: Option<ProtocolArg>, job file: ProtocolArg;

    /// One process per record, GNU-parallel style: {field} is a column, {} the whole record
    /// (a text line as it is, other records as JSON), {:json} the record as JSON, {#} the
    /// record number, {%} the job slot (1-based, also in $HERDSMAN_WORKER). One quoted
    /// template, split like a shell would (quotes respected) but run without a shell, e.g.
    /// -x 'convert {src} {dst}'. A command given as several words goes after `--` instead:
    /// herdsman run -i in.csv -- convert {src} {dst}
    #[arg(short = 'x', long, value_name = "TEMPLATE", help_heading = "Work")]
    exec: Option<String>, job file: StringOrList;

    /// The command to run per record, as separate words after `--` (the same as --exec, but
    /// no quoting needed): herdsman run -i in.csv -o out.jsonl -- convert {src} {dst}
    #[arg(last = true, value_name = "COMMAND", conflicts_with_all = ["exec", "worker"], help_heading = "Work")]
    command: Vec<String>;

    /// No worker: every record goes to the output as it was read (a load into a database
    /// table or a format conversion), with the checkpoint, exact resume and dead-letter
    /// file of any run. Example: herdsman run -i rows.csv --copy -o
    /// 'postgres://me@db/shop?table=rows'
    #[arg(
        long,
        conflicts_with_all = ["exec", "worker", "command"],
        help_heading = "Work"
    )]
    copy: bool, job file: bool;

    /// How an --exec command's stdout becomes output: JSON lines or text, nothing for
    /// empty stdout (auto); one {"stdout":…} record (text); one {"input":…, "stdout":…,
    /// "exit":0} record that also carries the input record (record). Default: auto.
    #[arg(long, value_enum, value_name = "MODE", help_heading = "Work")]
    exec_output: Option<ExecOutputArg>, job file: ExecOutputArg;

    /// --exec exit statuses that fail a record for good, without retries, comma separated.
    /// Example: --no-retry-exit 22 (curl --fail on an HTTP 404). Default: none.
    #[arg(
        long,
        value_name = "CODES",
        value_delimiter = ',',
        help_heading = "Policies"
    )]
    no_retry_exit: Vec<String>, job file: CodeList;

    /// Run the worker or --exec command through `sh -c` (record values reach it in
    /// environment variables, never parsed by the shell).
    #[arg(long, help_heading = "Work")]
    shell: bool, job file: bool;

    /// Directory the workers and commands start in (default: the current directory; in a
    /// job file, relative to the job file). Example: --workdir scripts/
    #[arg(long, value_name = "DIR", help_heading = "Work")]
    workdir: Option<PathBuf>, job file: String;

    /// Number of parallel workers, 1 to 1024 (default: number of cores). -P is accepted too,
    /// as xargs and GNU parallel spell it.
    #[arg(
        short,
        long,
        short_alias = 'P',
        value_name = "N",
        allow_negative_numbers = true,
        help_heading = "Work"
    )]
    jobs: Option<usize>, job file: usize;

    /// Output file: .jsonl, .csv, .txt (lines) or .parquet by extension (another extension
    /// needs --output-format); '-' is stdout (the default). A device or FIFO (-o /dev/null)
    /// is written in place; a symbolic link is written through.
    #[arg(short, long, value_name = "PATH", help_heading = "Output")]
    output: Option<String>, job file: String;

    /// Output format (default: from the output's extension, .csv, .jsonl, .txt (lines) or
    /// .parquet; lines when lines input goes to stdout; else jsonl). `lines` writes each output record
    /// as its raw text, one per line: a JSON string unquoted, anything else as compact JSON.
    #[arg(long, value_enum, value_name = "FORMAT", help_heading = "Output")]
    output_format: Option<OutputFormatArg>, job file: OutputFormatArg;

    /// Database output (-o postgres://…?table=T or sqlite://…?table=T) when the table
    /// already exists and the job is new: fail (the default), append rows to it, or replace
    /// it (drop it, then create it from the first records). A resumed job always appends to
    /// its own table.
    #[arg(long, value_enum, value_name = "MODE", help_heading = "Output")]
    if_exists: Option<IfExistsArg>, job file: IfExistsArg;

    /// Columns, comma separated. Parquet input: read only these columns, their keys in this
    /// order. CSV output: every record is projected onto them, in this order (other keys are
    /// left out, missing ones are empty; default: the keys of the first record, and a record
    /// with another key fails). Example: --columns id,score
    #[arg(
        long,
        value_name = "A,B,...",
        value_delimiter = ',',
        help_heading = "Output"
    )]
    columns: Vec<String>, job file: StringOrList;

    /// Parquet output: the schema, from a file holding JSON ({"fields": [{"name": "id",
    /// "type": "int64", "nullable": false}, ...]}) or Arrow-style lines (`id: int64 not null`,
    /// `price: decimal128(10, 2)`, `at: timestamp[us, tz=UTC]`, `tags: list<string>`). A record
    /// that does not fit is a dead letter. Default: inferred from the first records, then
    /// enforced.
    #[arg(long, value_name = "FILE", help_heading = "Output")]
    schema: Option<PathBuf>, job file: String;

    /// Parquet output: compression of the column data, zstd (the default), snappy or none.
    #[arg(long, value_name = "CODEC", help_heading = "Output")]
    compression: Option<String>, job file: String;

    /// Parquet output: at most N rows per row group (default 100000). A row group also ends
    /// with every chunk (--chunk-size), so a resumed run writes the same row groups.
    #[arg(long, value_name = "N", help_heading = "Output")]
    row_group_size: Option<usize>, job file: usize;

    /// Dead-letter file for records that failed (default: beside the output, out.jsonl →
    /// out.failures.jsonl; with stdout output, herdsman.failures.jsonl, only kept if a record
    /// failed).
    #[arg(long, value_name = "PATH", help_heading = "Output")]
    failures: Option<String>, job file: String;

    /// Retry a failed record up to N more times (at most 1000; default: 0).
    #[arg(
        long,
        value_name = "N",
        allow_negative_numbers = true,
        help_heading = "Policies"
    )]
    retries: Option<u32>, job file: u32;

    /// First retry delay, doubled each retry, with jitter. Example: 200ms, 2s (default: 100ms).
    #[arg(
        long,
        value_name = "DURATION",
        allow_hyphen_values = true,
        help_heading = "Policies"
    )]
    backoff: Option<String>, job file: String;

    /// Longest retry delay (at most 365 days; default: 30s). Example: 1m.
    #[arg(
        long,
        value_name = "DURATION",
        allow_hyphen_values = true,
        help_heading = "Policies"
    )]
    max_backoff: Option<String>, job file: String;

    /// Rate limit on attempts, retries included. Example: 20/second, 600/minute, 1000/hour
    /// (default: no limit).
    #[arg(
        long,
        value_name = "N/UNIT",
        allow_hyphen_values = true,
        help_heading = "Policies"
    )]
    rate: Option<String>, job file: String;

    /// Per-record timeout, counted from when the worker could start the record (never time
    /// queued behind other records; a new worker's first record gets as much again for
    /// start-up): the worker's whole process group is killed and restarted, and the record
    /// is charged an attempt. At most 365 days. Example: 30s (default: no timeout).
    #[arg(
        long,
        value_name = "DURATION",
        allow_hyphen_values = true,
        help_heading = "Policies"
    )]
    timeout: Option<String>, job file: String;

    /// Replace a worker process after it was given N records (memory leaks): once it has
    /// answered them, its stdin is closed, it exits, and a new one takes its place. Nothing
    /// is lost or charged. Like Python's maxtasksperchild (default: no limit).
    #[arg(
        long,
        value_name = "N",
        allow_negative_numbers = true,
        help_heading = "Work"
    )]
    max_tasks_per_worker: Option<usize>, job file: usize;

    /// Stop after that many failed records, or that share of the records seen: records in
    /// flight finish and are written first. Example: 10, 1% (default: never stop).
    #[arg(
        long,
        value_name = "N|N%",
        allow_hyphen_values = true,
        help_heading = "Policies"
    )]
    max_errors: Option<String>, job file: StringOrNumber;

    /// Write results in completion order instead of input order (default: input order).
    #[arg(long, help_heading = "Output")]
    unordered: bool, job file: bool;

    /// Infer CSV value types (integers, floats, booleans, empty as null) instead of strings
    /// (default: every CSV value is a string).
    #[arg(long, help_heading = "Input")]
    infer_types: bool, job file: bool;

    /// Records on stdin are separated by NUL bytes, not newlines (xargs -0, find -print0):
    /// each one is a text record, newlines included, as a lines record is.
    #[arg(short = '0', long = "null", help_heading = "Input")]
    null: bool;

    /// Field delimiter for CSV input and output (default: ,).
    #[arg(long, value_name = "CHAR", help_heading = "Input")]
    delimiter: Option<char>, job file: char;

    /// Longest input record (a line, or a CSV row as written in the file); a longer one
    /// becomes a failed record. Example: 64MiB, 1GiB, 512KiB (default 16MiB).
    #[arg(long, value_name = "SIZE", help_heading = "Input")]
    max_record_size: Option<String>, job file: StringOrNumber;

    /// Records per checkpoint chunk (default: 1000).
    #[arg(
        long,
        value_name = "N",
        allow_negative_numbers = true,
        help_heading = "Checkpoint"
    )]
    chunk_size: Option<usize>, job file: usize;

    /// Records admitted but not yet written, at most (bounds memory; 1 to 1048576; default:
    /// 256 per worker, from 1024 to 16384; 4096 with --copy).
    #[arg(
        long,
        value_name = "N",
        allow_negative_numbers = true,
        help_heading = "Policies"
    )]
    window: Option<usize>, job file: usize;

    /// Write a machine-readable summary here when the run ends (default: none).
    #[arg(long, value_name = "PATH", help_heading = "Output")]
    summary_json: Option<PathBuf>, job file: String;

    /// Progress display: a bar on a terminal (auto), always a bar, plain lines (rate and ETA
    /// every 5 seconds), or nothing. Default: auto.
    #[arg(long, value_enum, value_name = "MODE", help_heading = "Output")]
    progress: Option<ProgressArg>, job file: ProgressArg;

    /// Checkpoint directory (default: beside the output, .<output name>.herdsman).
    #[arg(long, value_name = "DIR", help_heading = "Checkpoint")]
    state: Option<PathBuf>, job file: String;

    /// Do not checkpoint: a throwaway run that cannot be resumed.
    #[arg(long, help_heading = "Checkpoint")]
    no_checkpoint: bool, job file: bool;

    /// Keep no history of the run in the checkpoint (the samples `herdsman report` draws).
    #[arg(long, help_heading = "Checkpoint")]
    no_history: bool, job file: bool;

    /// Forget the checkpoint of this job and start over.
    #[arg(long, help_heading = "Checkpoint")]
    restart: bool;

    /// Re-run only the records in the dead-letter file of a finished job and fold the
    /// successes back into the output.
    #[arg(long, help_heading = "Checkpoint")]
    retry_failed: bool;

    /// A try-out: run only the first N records, write where told, and never checkpoint (an
    /// output that belongs to a checkpointed job is refused). Example: --limit 10
    #[arg(long, value_name = "N", help_heading = "Checkpoint")]
    limit: Option<u64>;

    /// Run one static shard of the input, for N machines or processes started by a launcher:
    /// I/N (I from 0 to N-1) takes the I-th of N contiguous parts of the inputs, with its own
    /// checkpoint; the N outputs (and dead-letter files) concatenated in shard order are
    /// those of one run over everything. auto/N takes I from JOB_COMPLETION_INDEX,
    /// SLURM_ARRAY_TASK_ID or AWS_BATCH_JOB_ARRAY_INDEX; auto alone, I and N from a Slurm
    /// array. Example: --shard 2/8 -o out.2.jsonl (see docs/shards.md)
    #[arg(
        long,
        value_name = "I/N",
        allow_hyphen_values = true,
        help_heading = "Input"
    )]
    shard: Option<String>, job file: String;

    /// Share the job with other machines through a PostgreSQL ledger: every node runs the
    /// same command with the same URL, claims chunks, writes them as parts in --parts and
    /// the node that commits the last chunk assembles the output. Also HERDSMAN_LEDGER.
    /// Example: --ledger postgres://herdsman@db:5432/jobs (see docs/distributed.md)
    #[arg(long, value_name = "URL", env = "HERDSMAN_LEDGER", help_heading = "Many machines")]
    ledger: Option<String>;

    /// With --ledger: how long a claimed chunk stays this node's without a heartbeat
    /// (heartbeats every third of it); a node silent longer loses its chunk to another node.
    /// Example: --lease 30s (the default)
    #[arg(long, value_name = "DURATION", help_heading = "Many machines")]
    lease: Option<String>;

    /// With --ledger: this node's name in the ledger and in status (default: hostname:pid).
    #[arg(long, value_name = "NAME", help_heading = "Many machines")]
    node: Option<String>;

    /// With --ledger: the directory every node writes its chunk parts to, reachable by all
    /// of them, or an object-storage prefix such as s3://bucket/prefix/ (default:
    /// <output>.parts beside the output, in the same bucket for an s3:// output).
    #[arg(long, value_name = "DIR", help_heading = "Many machines")]
    parts: Option<PathBuf>;

    /// Print what would run, without running anything or creating any file: the command of
    /// each of the first records (--limit N of them, default 10) for --exec, or the worker
    /// command for --worker.
    #[arg(long, help_heading = "Work")]
    dry_run: bool;

    /// Accepted for GNU parallel users: output is in input order unless --unordered.
    #[arg(short = 'k', long = "keep-order", help_heading = "Output")]
    keep_order: bool;

    /// The same as --progress bar (GNU parallel's --bar).
    #[arg(long, conflicts_with = "progress", help_heading = "Output")]
    bar: bool;

    /// GNU parallel's --eta: progress with rate and ETA, a bar on a terminal and a plain line
    /// every 5 seconds elsewhere (the same as --progress auto).
    #[arg(long, conflicts_with_all = ["progress", "bar"], help_heading = "Output")]
    eta: bool;

    /// GNU parallel's --halt, mapped to --max-errors: soon,fail=N (or soon,fail=N%) stops
    /// admitting records after N failures and lets records in flight finish. now,… (kill
    /// running jobs at once) is refused: herdsman always drains.
    #[arg(
        long,
        value_name = "soon,fail=N",
        conflicts_with = "max_errors",
        help_heading = "Policies"
    )]
    halt: Option<String>;

    /// Job log, GNU parallel style: one line per attempt (record, file and line, worker,
    /// start time, duration, outcome, error kind, attempt number), tab-separated with a
    /// header, or JSON lines when PATH ends in .jsonl or .json. Resumed with the job: it
    /// holds exactly the attempts of the work that is checkpointed. Example: --joblog jobs.tsv
    #[arg(long, value_name = "PATH", help_heading = "Output")]
    joblog: Option<String>, job file: String;

    /// Serve Prometheus / OpenMetrics metrics at http://HOST:PORT/metrics while the run goes
    /// (records by outcome, attempts, retries, in flight, worker restarts, record durations,
    /// input bytes, rate-limit waits, estimated seconds left). Port 0 picks a free port; -v
    /// logs the address. Example: --metrics-addr 127.0.0.1:9464
    #[arg(long, value_name = "HOST:PORT", help_heading = "Logs")]
    metrics_addr: Option<String>, job file: String;

    /// Write the same metrics to this file every few seconds and when the run ends
    /// (atomically: a temporary file renamed), for node_exporter's textfile collector.
    /// Example: --metrics-file /var/lib/node_exporter/herdsman.prom
    #[arg(long, value_name = "PATH", help_heading = "Logs")]
    metrics_file: Option<PathBuf>, job file: String;

    /// More log events on stderr: -v adds info (workers started and restarted, retries and
    /// their waits, rate-limit pauses, checkpoint commits, resume decisions), -vv debug,
    /// -vvv trace. The HERDSMAN_LOG environment variable (an EnvFilter, e.g.
    /// HERDSMAN_LOG=herdsman_workers=debug) overrides it. Default: warnings and errors.
    #[arg(short, long = "verbose", action = clap::ArgAction::Count, help_heading = "Logs")]
    verbose: u8;

    /// How herdsman writes on stderr: text, or json (one JSON object per line for log
    /// events, worker stderr lines, progress, errors and the final summary). Default: text.
    #[arg(long, value_enum, value_name = "FORMAT", help_heading = "Logs")]
    log_format: Option<LogFormatArg>;

    /// Write log events to this file (appended) instead of stderr; notices, worker stderr
    /// and the summary stay on stderr. Example: --log-file herdsman.log
    #[arg(long, value_name = "PATH", help_heading = "Logs")]
    log_file: Option<PathBuf>;

    /// Arguments given after `:::` (GNU parallel style): each one is a lines record, read
    /// instead of an input file.
    #[arg(skip)]
    arguments: Vec<String>;

    /// Less output on stderr (no worker stderr forwarding, summary only).
    #[arg(short, long, help_heading = "Output")]
    quiet: bool;
}
}

/// Text in a job file that may be one string or a list of strings.
#[derive(Debug, serde::Deserialize)]
#[serde(untagged)]
pub enum StringOrList {
    One(String),
    Many(Vec<String>),
}

impl StringOrList {
    /// The strings, one for a single string.
    pub fn into_vec(self) -> Vec<String> {
        match self {
            StringOrList::One(s) => vec![s],
            StringOrList::Many(v) => v,
        }
    }
}

/// A job-file value that may be a number or a string (`10`, `"1%"`, `"16MiB"`).
#[derive(Debug, serde::Deserialize)]
#[serde(untagged)]
pub enum StringOrNumber {
    Number(u64),
    Text(String),
}

/// Exit codes in a job file: `22`, `[22, 6]` or `"22,6"`.
#[derive(Debug, serde::Deserialize)]
#[serde(untagged)]
pub enum CodeList {
    One(i64),
    Many(Vec<i64>),
    Text(String),
}

impl CodeList {
    /// The codes as the flag would give them, one string each.
    pub fn into_strings(self) -> Vec<String> {
        match self {
            CodeList::One(n) => vec![n.to_string()],
            CodeList::Many(v) => v.iter().map(i64::to_string).collect(),
            CodeList::Text(s) => s.split(',').map(str::to_string).collect(),
        }
    }
}

/// Arguments of commands that inspect a job's checkpoint.
#[derive(Debug, Args)]
pub struct StateArgs {
    /// The state directory, or the job's output file (its default state directory is used).
    #[arg(value_name = "STATE|OUTPUT")]
    pub state: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// `herdsman status` of a job shared by many machines: the PostgreSQL ledger its nodes
    /// run with (then give the job's OUTPUT). Also HERDSMAN_LEDGER.
    #[arg(long, value_name = "URL", env = "HERDSMAN_LEDGER")]
    pub ledger: Option<String>,
}

/// Arguments of `herdsman report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The state directory, or the job's output file (its default state directory is used).
    #[arg(value_name = "STATE|OUTPUT")]
    pub state: PathBuf,
    /// Where to write the HTML page [default: report.html next to the job's output].
    #[arg(long, short = 'o', value_name = "PATH")]
    pub output: Option<PathBuf>,
}

/// Arguments of `herdsman status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The state directory, or the job's output file (its default state directory is used).
    #[arg(value_name = "STATE|OUTPUT", required_unless_present = "watch")]
    pub state: Option<PathBuf>,
    /// Print JSON instead of text (with --watch, one JSON object per line and refresh).
    #[arg(long)]
    pub json: bool,
    /// Refresh every SECS seconds (default 2) until the job is no longer running, then show
    /// its final state. Ctrl-C stops watching.
    #[arg(
        long,
        value_name = "SECS",
        num_args = 0..=1,
        default_missing_value = "2"
    )]
    pub watch: Option<String>,
    /// `herdsman status` of a job shared by many machines: the PostgreSQL ledger its nodes
    /// run with (then give the job's OUTPUT). Also HERDSMAN_LEDGER.
    #[arg(long, value_name = "URL", env = "HERDSMAN_LEDGER")]
    pub ledger: Option<String>,
}

impl StatusArgs {
    /// The job to show and how often to refresh it. `status --watch OUTPUT` reads OUTPUT as
    /// the job, not as the seconds.
    pub fn resolve(&self) -> Result<(StateArgs, Option<std::time::Duration>), String> {
        let (state, watch) = match (&self.state, &self.watch) {
            (_, None) => (self.state.clone(), None),
            (state, Some(w)) => match w.parse::<f64>() {
                Ok(secs) if secs.is_finite() && secs > 0.0 && secs <= 86_400.0 => {
                    (state.clone(), Some(secs))
                }
                Ok(_) => {
                    return Err(format!(
                        "--watch {w}: give the seconds between refreshes, more than 0 (for example --watch 5)"
                    ))
                }
                Err(_) if state.is_none() => (Some(PathBuf::from(w)), Some(2.0)),
                Err(_) => {
                    return Err(format!(
                        "--watch {w}: give the seconds between refreshes as a number (for example --watch 5)"
                    ))
                }
            },
        };
        let state = state.ok_or_else(|| {
            "status needs the job's state directory or output file: herdsman status out.jsonl --watch"
                .to_string()
        })?;
        Ok((
            StateArgs {
                state,
                json: self.json,
                ledger: self.ledger.clone(),
            },
            watch.map(std::time::Duration::from_secs_f64),
        ))
    }
}

/// Arguments of `herdsman failures`.
#[derive(Debug, Args)]
pub struct FailuresArgs {
    #[command(flatten)]
    pub state: StateArgs,
    /// Show at most N failures.
    #[arg(long, short = 'n', value_name = "N")]
    pub limit: Option<usize>,
    /// Show only the failures of this kind (the dead-letter entries' `error.kind`, such as
    /// `reported`, `timeout` or `worker_exited`).
    #[arg(long, value_name = "KIND")]
    pub kind: Option<String>,
    /// Count the failures of each kind and show one example of each.
    #[arg(long)]
    pub group: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FormatArg {
    Csv,
    Jsonl,
    Lines,
    Parquet,
}

impl FormatArg {
    /// The value's name in flags, job files and checkpoints: fixed, never a `Debug` string.
    pub fn name(self) -> &'static str {
        match self {
            FormatArg::Csv => "csv",
            FormatArg::Jsonl => "jsonl",
            FormatArg::Lines => "lines",
            FormatArg::Parquet => "parquet",
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormatArg {
    Jsonl,
    Csv,
    Lines,
    Parquet,
}

impl OutputFormatArg {
    /// The value's name in flags, job files and checkpoints: fixed, never a `Debug` string.
    pub fn name(self) -> &'static str {
        match self {
            OutputFormatArg::Jsonl => "jsonl",
            OutputFormatArg::Csv => "csv",
            OutputFormatArg::Lines => "lines",
            OutputFormatArg::Parquet => "parquet",
        }
    }
}

/// What a database output does with a table that already exists (`--if-exists`).
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IfExistsArg {
    Fail,
    Append,
    Replace,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProtocolArg {
    Lines,
    Framed,
}

impl ProtocolArg {
    /// The value's name in flags, job files and checkpoints: fixed, never a `Debug` string.
    pub fn name(self) -> &'static str {
        match self {
            ProtocolArg::Lines => "lines",
            ProtocolArg::Framed => "framed",
        }
    }
}

/// How an --exec command's stdout becomes output records.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecOutputArg {
    Auto,
    Text,
    Record,
}

impl ExecOutputArg {
    /// The value's name in flags, job files and checkpoints: fixed, never a `Debug` string.
    pub fn name(self) -> &'static str {
        match self {
            ExecOutputArg::Auto => "auto",
            ExecOutputArg::Text => "text",
            ExecOutputArg::Record => "record",
        }
    }
}

/// How herdsman writes on stderr (`--log-format`).
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq, Default)]
pub enum LogFormatArg {
    /// Lines for people.
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProgressArg {
    Auto,
    Bar,
    Plain,
    None,
}

/// When `herdsman run` could not be parsed because words after `-x TEMPLATE` were taken for
/// flags or arguments of herdsman (`-x echo -n {id}`), the right forms of that command.
///
/// `argv` is the whole command line, program name included.
pub fn exec_hint(argv: &[String]) -> Option<String> {
    use clap::CommandFactory;
    let cli = Cli::command();
    let run = cli.find_subcommand("run")?;
    let is_flag = |w: &str| {
        if let Some(long) = w.strip_prefix("--") {
            let name = long.split('=').next().unwrap_or(long);
            run.get_arguments().any(|a| a.get_long() == Some(name))
                || matches!(name, "help" | "version")
        } else if let Some(short) = w.strip_prefix('-') {
            let c = short.chars().next();
            run.get_arguments()
                .any(|a| a.get_short().is_some() && a.get_short() == c)
                || c == Some('h')
        } else {
            false
        }
    };
    let end = argv.iter().position(|w| w == "--").unwrap_or(argv.len());
    let at = argv[..end]
        .iter()
        .position(|w| w == "-x" || w == "--exec")?;
    let template = argv.get(at + 1).filter(|_| at + 1 < end)?;
    let words: Vec<&str> = argv[at + 2..end]
        .iter()
        .map(String::as_str)
        .take_while(|w| !is_flag(w))
        .collect();
    if words.is_empty() {
        return None;
    }
    let mut command = vec![template.as_str()];
    command.extend(&words);
    let joined: Vec<String> = command.iter().map(|w| shell_quote(w)).collect();
    let joined = joined.join(" ");
    let quoted = shell_quote(&joined);
    Some(format!(
        "-x takes one template, so `{}` was not part of the command; quote the template whole, -x {quoted}, or give the command as words after --: herdsman run ... -- {joined}",
        words.join(" ")
    ))
}

/// Removes GNU parallel's `::: ARG...` from `argv` and returns the arguments: each becomes one
/// lines record. They run to the end of the line, or to a `--` that starts the command.
pub fn take_arguments(argv: &mut Vec<std::ffi::OsString>) -> Vec<String> {
    let end = argv.iter().position(|w| w == "--").unwrap_or(argv.len());
    let Some(at) = argv[..end].iter().position(|w| w == ":::") else {
        return Vec::new();
    };
    let taken: Vec<std::ffi::OsString> = argv.drain(at..end).skip(1).collect();
    taken
        .into_iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect()
}

/// Flags that throw away a job's progress: clap must never suggest them for a typo or for
/// another tool's flag (`--resume` → `--restart` would do the opposite of what was asked).
const DESTRUCTIVE: &[&str] = &["--restart", "--no-checkpoint"];

/// What a flag of GNU parallel or xargs that herdsman does not have is called here.
fn parallel_equivalent(flag: &str) -> Option<&'static str> {
    Some(match flag {
        "--results" | "--res" | "--files" | "--output-as-files" => {
            "herdsman writes every result to one file: -o results.jsonl (failed records go to a dead-letter file beside it)"
        }
        "--resume" => {
            "herdsman resumes by default: run the same command again (a checkpoint is kept beside the -o output)"
        }
        "--resume-failed" | "--retry-failed-jobs" => {
            "--retry-failed re-runs only the records of a finished job that failed"
        }
        "--tag" | "--tagstring" => {
            "--exec-output record writes each command's output together with its input record"
        }
        "--colsep" | "-C" => "--delimiter CHAR splits CSV input into columns, used as {column}",
        "--arg-file" | "-a" => "give input files with -i FILE",
        "--pipe" | "--pipepart" => {
            "--worker 'CMD' starts persistent workers that read one record per line on stdin"
        }
        "--max-args" | "-n" | "-N" | "-L" | "--max-lines" | "--xargs" | "-X" => {
            "each record is one command (or one worker request); herdsman does not batch arguments"
        }
        "-I" | "--replace" => {
            "records are lines, CSV rows or JSONL objects: {} is the whole record, {column} a field"
        }
        "--delay" => "--rate N/second spaces out the attempts",
        "--group" | "--line-buffer" | "--ungroup" | "-u" => {
            "each record's output is written whole, in input order (--unordered for completion order)"
        }
        "--sshlogin" | "-S" => "herdsman runs its workers on this machine only",
        "--max-procs" => "-j N (or -P N) sets the number of parallel workers",
        "--dryrun" => "use --dry-run",
        _ => return None,
    })
}

/// The message for an unknown flag when clap's own would mislead: a flag of GNU parallel or
/// xargs (named with herdsman's equivalent), or a suggestion that points at a flag that throws
/// work away. `None` when clap's message is fine.
pub fn unknown_flag_hint(e: &clap::Error) -> Option<String> {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if e.kind() != ErrorKind::UnknownArgument {
        return None;
    }
    let Some(ContextValue::String(arg)) = e.get(ContextKind::InvalidArg) else {
        return None;
    };
    let flag = arg.split('=').next().unwrap_or(arg);
    let suggested: Vec<String> = match e.get(ContextKind::SuggestedArg) {
        Some(ContextValue::String(s)) => vec![s.clone()],
        Some(ContextValue::Strings(v)) => v.clone(),
        _ => Vec::new(),
    };
    let harmful = suggested
        .iter()
        .any(|s| DESTRUCTIVE.contains(&s.split_whitespace().next().unwrap_or(s)));
    let tip = match parallel_equivalent(flag) {
        Some(tip) => format!("{flag} is not a herdsman flag; {tip}"),
        None if harmful => "herdsman run --help lists every flag".to_string(),
        None => return None,
    };
    Some(format!(
        "error: unexpected argument '{arg}' found\n\n  tip: {tip}\n\nFor more information, try 'herdsman run --help'.\n"
    ))
}

/// `word` as a POSIX shell would need it typed: as it is when it holds only characters a
/// shell leaves alone (placeholders such as `{id}` included), else in single quotes.
pub(crate) fn shell_quote(word: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_./,:=@%+{}#^".contains(c);
    if !word.is_empty() && word.chars().all(plain) {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Long flags of `herdsman run` that a job file does not take, and why: each one is about
    /// one invocation, not about the job.
    const CLI_ONLY: &[&str] = &[
        // Act on the job's checkpoint once: clear it, re-run its failures.
        "restart",
        "retry-failed",
        // A try-out or a preview, never checkpointed.
        "limit",
        "dry-run",
        // GNU parallel spellings of options a job file names directly (--progress,
        // --max-errors; output is always in input order unless `unordered`).
        "keep-order",
        "bar",
        "eta",
        "halt",
        // How this invocation talks to the terminal and reads stdin, and where it logs.
        "quiet",
        "verbose",
        "log-format",
        "log-file",
        "null",
        // Where this node shares the job and what it is called: the same job file serves
        // every node, each given its own name, lease or ledger.
        "ledger",
        "lease",
        "node",
        "parts",
        // clap's own.
        "help",
        "version",
    ];

    /// Whether a job file accepts `key` (any value type: only an unknown key is refused as
    /// such).
    fn job_file_takes(key: &str) -> bool {
        use serde::Deserialize;
        let table: toml::Table = toml::from_str(&format!("{key} = 1")).unwrap();
        match JobFile::deserialize(table) {
            Ok(_) => true,
            Err(e) => !e.to_string().contains("unknown field"),
        }
    }

    #[test]
    fn every_long_flag_of_run_is_a_job_file_key_unless_listed_as_cli_only() {
        let cli = Cli::command();
        let run = cli.find_subcommand("run").unwrap();
        let longs: Vec<&str> = run.get_arguments().filter_map(|a| a.get_long()).collect();
        assert!(longs.len() > 30, "{longs:?}");
        for long in &longs {
            if CLI_ONLY.contains(long) {
                assert!(
                    !job_file_takes(long),
                    "--{long} is listed as CLI-only but a job file takes it"
                );
            } else {
                assert!(
                    job_file_takes(long),
                    "--{long} is not a job-file key: give it `job file: TYPE` in run_options!, or list it in CLI_ONLY with the reason"
                );
            }
        }
        // And no job-file key without its flag.
        assert!(!job_file_takes("inputs"));
        for key in [
            "input",
            "worker",
            "exec",
            "no-retry-exit",
            "max-record-size",
        ] {
            assert!(longs.contains(&key) && job_file_takes(key), "{key}");
        }
    }

    #[test]
    fn value_names_are_the_flag_values() {
        // Checkpoints store these names: each must be the value the flag accepts.
        fn check<T: ValueEnum>(name: impl Fn(&T) -> &'static str) {
            for v in T::value_variants() {
                let flag = v.to_possible_value().unwrap();
                assert_eq!(name(v), flag.get_name());
            }
        }
        check::<FormatArg>(|v| v.name());
        check::<OutputFormatArg>(|v| v.name());
        check::<ProtocolArg>(|v| v.name());
        check::<ExecOutputArg>(|v| v.name());
    }

    #[test]
    fn definitions_are_consistent() {
        Cli::command().debug_assert();
    }

    fn run_args(argv: &[&str]) -> RunArgs {
        let cli = Cli::try_parse_from(argv).unwrap();
        let Command::Run(args) = cli.command else {
            panic!("expected run")
        };
        *args
    }

    #[test]
    fn exec_takes_one_template_and_never_the_flags_after_it() {
        let args = run_args(&["herdsman", "run", "-x", "echo {v}", "-o", "out.jsonl"]);
        assert_eq!(args.exec.as_deref(), Some("echo {v}"));
        assert_eq!(args.output.as_deref(), Some("out.jsonl"));
    }

    #[test]
    fn words_after_the_template_get_a_hint_with_the_right_forms() {
        let argv = |s: &str| -> Vec<String> { s.split(' ').map(String::from).collect() };
        let hint = exec_hint(&argv("herdsman run -i a.csv -x echo -n {id} -o out.jsonl")).unwrap();
        assert!(hint.contains("-x 'echo -n {id}'"), "{hint}");
        assert!(hint.contains("-- echo -n {id}"), "{hint}");
        assert_eq!(exec_hint(&argv("herdsman run -x echo -o out.jsonl")), None);
        assert_eq!(exec_hint(&argv("herdsman run -i a.csv -- echo -n")), None);
    }

    #[test]
    fn a_command_of_several_words_goes_after_double_dash() {
        let args = run_args(&[
            "herdsman",
            "run",
            "-i",
            "a.csv",
            "-o",
            "out.jsonl",
            "--",
            "echo",
            "-n",
            "{id}",
        ]);
        assert_eq!(args.command, ["echo", "-n", "{id}"]);
        assert_eq!(args.exec, None);
        assert_eq!(args.output.as_deref(), Some("out.jsonl"));
    }
}
