//! The `herdsman` command: parses flags, runs the chosen subcommand, prints errors as one
//! clear sentence and exits with a documented code.
//!
//! Exit codes: 0 every record succeeded; 1 some records failed; 2 usage or configuration
//! error; 3 stopped by --max-errors; 4 environment error (a file or directory could not be
//! read or written: an unreadable input, an unwritable directory, a full disk); 128 + the
//! signal when a signal stopped the run (130 SIGINT, 143 SIGTERM, 129 SIGHUP); 141 stdout's
//! reader went away. This module must never print a backtrace or a debug dump to a user.

#![forbid(unsafe_code)]

mod assemble;
mod checkpoint;
mod chunks;
mod cli;
mod config;
mod db_output;
mod distributed;
mod fault;
mod history;
mod id_map;
mod inputs;
mod inspect;
mod job;
mod joblog;
mod live;
mod logging;
mod metrics;
mod pipeline;
mod progress;
mod remote;
mod remote_stage;
mod report;
mod retry;
mod run;
mod shard;
mod shard_io;
mod summary;
mod text;
mod transform;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;

use clap::{CommandFactory, Parser};
use herdsman::StopToken;

use crate::cli::{Cli, Command};
use crate::config::{EnvError, RunConfig, UsageError};

/// Exit code for usage and configuration errors.
const EXIT_USAGE: u8 = 2;
/// Exit code when a run fails for another reason (a corrupt checkpoint, an internal error).
const EXIT_FAILURE: u8 = 1;
/// Exit code for environment errors: a file or directory could not be read or written.
const EXIT_ENVIRONMENT: u8 = 4;
/// Exit code when stdout was closed under us (128 + SIGPIPE, as shells report it).
const EXIT_BROKEN_PIPE: u8 = 141;

fn broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Whether `e` comes from the environment (a file or directory that could not be read or
/// written) rather than from the job or from herdsman.
fn environment_error(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.is::<EnvError>()
            || c.is::<std::io::Error>()
            || matches!(
                c.downcast_ref::<herdsman_io::SinkError>(),
                Some(herdsman_io::SinkError::Io { .. } | herdsman_io::SinkError::IsDir { .. })
            )
            || matches!(
                c.downcast_ref::<herdsman_io::SourceError>(),
                Some(
                    herdsman_io::SourceError::Open { .. }
                        | herdsman_io::SourceError::Read { .. }
                        | herdsman_io::SourceError::Changed { .. }
                )
            )
    })
}

fn main() -> ExitCode {
    let mut argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    // GNU parallel's `::: a b c`: the words after it are the input, not flags.
    let arguments = cli::take_arguments(&mut argv);
    // JSON on stderr from the first word on, so that even a usage error is an event.
    logging::use_json(logging::json_requested(&argv));
    let cli = match Cli::try_parse_from(&argv) {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { 0 };
            let argv: Vec<String> = argv
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect();
            match cli::unknown_flag_hint(&e) {
                Some(text) => progress::stderr_write(&text),
                None if e.use_stderr() && logging::json() => {
                    progress::stderr_write(&e.to_string());
                }
                None => {
                    let _ = e.print();
                }
            }
            if e.use_stderr() {
                if let Some(hint) = cli::exec_hint(&argv) {
                    progress::stderr_line(&format!("herdsman: {hint}"));
                }
            }
            return ExitCode::from(code);
        }
    };
    let result = match cli.command {
        Command::Run(mut args) => {
            args.arguments = arguments;
            run_command(*args)
        }
        _ if !arguments.is_empty() => Err(anyhow::Error::new(UsageError(
            "::: and its arguments belong to herdsman run: herdsman run -x 'echo {}' ::: a b c"
                .into(),
        ))),
        Command::Status(args) if args.ledger.is_some() => {
            if args.watch.is_some() {
                Err(anyhow::Error::new(UsageError(
                    "status --watch reads one machine's checkpoint; for a job shared through --ledger, run herdsman status --ledger URL OUTPUT again (for example under watch(1))".into(),
                )))
            } else {
                args.resolve()
                    .map_err(|m| anyhow::Error::new(UsageError(m)))
                    .and_then(|(state, _)| distributed::status::status(&state))
                    .map(|()| 0)
            }
        }
        Command::Status(args) => inspect::status(&args).map(|()| 0),
        Command::Failures(args) if args.state.ledger.is_some() => Err(anyhow::Error::new(UsageError(
            "herdsman failures reads one machine's checkpoint; the dead letters of a job shared through --ledger are in its dead-letter file once it finished"
                .into(),
        ))),
        Command::Failures(args) => inspect::failures(&args).map(|()| 0),
        Command::Report(args) => report::report(&args).map(|()| 0),
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "herdsman",
                &mut std::io::stdout(),
            );
            Ok(0)
        }
        Command::Man => man_page(&mut std::io::stdout().lock())
            .map(|()| 0)
            .map_err(anyhow::Error::from),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) if broken_pipe(&e) => {
            // The reader of our stdout went away (`herdsman man | head`): stop quietly, as
            // a program killed by SIGPIPE would.
            ExitCode::from(EXIT_BROKEN_PIPE)
        }
        Err(e) => {
            let code = if e.downcast_ref::<UsageError>().is_some() {
                EXIT_USAGE
            } else if environment_error(&e) {
                EXIT_ENVIRONMENT
            } else {
                EXIT_FAILURE
            };
            progress::stderr_line(&format!("herdsman: error: {}", chain(&e)));
            ExitCode::from(code)
        }
    }
}

/// "outer: inner: innermost", without repeating a message already contained in its parent.
fn chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let s = cause.to_string();
        if out.contains(&s) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&s);
    }
    // The library said what to do in its terms; name the flag for it.
    out.push_str(fault::cli_hint(e.as_ref()).unwrap_or(""));
    out
}

/// The full man page: herdsman's own page, then the options of `run` and its examples.
fn man_page(out: &mut dyn std::io::Write) -> std::io::Result<()> {
    let cli = Cli::command();
    clap_mangen::Man::new(cli.clone()).render(out)?;
    if let Some(run) = cli.find_subcommand("run") {
        // `herdsman-run` as the page's name, so the sections below read as that command's.
        let run = run.clone().name("herdsman run");
        writeln!(out, ".SH \"HERDSMAN RUN\"")?;
        if let Some(about) = run.get_about() {
            writeln!(out, "{}", roff_text(&about.to_string()))?;
        }
        let page = clap_mangen::Man::new(run);
        page.render_synopsis_section(out)?;
        page.render_options_section(out)?;
        page.render_extra_section(out)?;
    }
    Ok(())
}

/// `text` safe as a roff text line: a leading `.` or `'` would be read as a request.
fn roff_text(text: &str) -> String {
    let text = text.replace('\\', "\\e");
    if text.starts_with('.') || text.starts_with('\'') {
        format!("\\&{text}")
    } else {
        text
    }
}

fn run_command(args: cli::RunArgs) -> anyhow::Result<u8> {
    logging::init(&logging::LogSettings {
        verbose: args.verbose,
        json: args.log_format == Some(cli::LogFormatArg::Json),
        file: args.log_file.clone(),
    })
    .map_err(|e| match e {
        logging::LogError::Filter(m) => anyhow::Error::new(UsageError(m)),
        logging::LogError::File(m) => anyhow::Error::new(EnvError(m)),
    })?;
    let arguments = args.arguments.clone();
    let cfg = RunConfig::from_args(args)?;
    if !arguments.is_empty() {
        feed_stdin(arguments).context("cannot pass the arguments after ::: to the input")?;
    }
    if cfg.null_separated {
        null_separated_stdin().context("cannot read the NUL-separated records on stdin")?;
    }
    if cfg.dry_run {
        return run::dry_run(&cfg);
    }
    let stop = StopToken::new();
    install_signal_handlers(stop.clone())?;
    let summary = if cfg.distributed.is_some() {
        distributed::run(cfg, stop)?
    } else {
        run::run(cfg, stop)?
    };
    // Not eprint!: after a SIGHUP the terminal may be gone, and a failed write must not
    // turn a clean stop into a panic. With --log-format json, the last event.
    if logging::json() {
        progress::stderr_raw(summary.event().as_bytes());
    } else {
        progress::stderr_write(&summary.render());
    }
    Ok(u8::try_from(summary.exit_code).unwrap_or(EXIT_FAILURE))
}

/// Makes the arguments given after `:::` this process's stdin, one per line, written by a
/// thread so that any number of them fits through the pipe.
fn feed_stdin(arguments: Vec<String>) -> std::io::Result<()> {
    use std::io::Write;
    let (reader, mut writer) = std::io::pipe()?;
    // fd 0 is replaced atomically; `reader` is closed when dropped, leaving the copy on fd 0.
    nix::unistd::dup2_stdin(&reader)?;
    drop(reader);
    std::thread::Builder::new()
        .name("herdsman-arguments".into())
        .spawn(move || {
            for a in arguments {
                if writeln!(writer, "{a}").is_err() {
                    return;
                }
            }
        })?;
    Ok(())
}

/// `-0`: replaces stdin with a pipe that carries its NUL-separated records as JSON strings,
/// one per line, so that a record may hold newlines. A record that is not UTF-8 is passed
/// on as its raw bytes (newlines escaped as `\n`), which the JSONL reader reports as a bad
/// record rather than altering it silently.
fn null_separated_stdin() -> std::io::Result<()> {
    use std::io::{BufRead, Write};
    use std::os::fd::AsFd;
    let original = std::fs::File::from(std::io::stdin().as_fd().try_clone_to_owned()?);
    let (reader, writer) = std::io::pipe()?;
    nix::unistd::dup2_stdin(&reader)?;
    drop(reader);
    std::thread::Builder::new()
        .name("herdsman-null-input".into())
        .spawn(move || {
            let mut input = std::io::BufReader::new(original);
            let mut out = std::io::BufWriter::new(writer);
            let mut item = Vec::new();
            loop {
                item.clear();
                match input.read_until(0, &mut item) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                if item.last() == Some(&0) {
                    item.pop();
                }
                let line = match std::str::from_utf8(&item) {
                    Ok(text) => serde_json::to_vec(text).unwrap_or_default(),
                    Err(_) => item
                        .iter()
                        .flat_map(|&b| {
                            if b == b'\n' {
                                vec![b'\\', b'n']
                            } else {
                                vec![b]
                            }
                        })
                        .collect(),
                };
                if out
                    .write_all(&line)
                    .and_then(|()| out.write_all(b"\n"))
                    .is_err()
                {
                    return;
                }
            }
            let _ = out.flush();
        })?;
    Ok(())
}

/// How long after the stop began a Ctrl-C must come to count as a second, deliberate one.
/// Supervisors and `timeout -s INT` deliver the same signal twice within microseconds (to the
/// process and to its process group); a person pressing Ctrl-C again takes longer.
const SECOND_CTRL_C_AFTER: Duration = Duration::from_secs(1);

/// The stop rule. The first SIGINT, SIGTERM or SIGHUP stops admitting records, lets the
/// records in flight finish, writes and checkpoints what is done, prints the summary and exits
/// with 128 + that signal's number (130 SIGINT, 143 SIGTERM, 129 SIGHUP). Later SIGTERM and
/// SIGHUP change nothing (supervisors such as `timeout` send TERM to the process and to its
/// group, or repeat it). Only a SIGINT that
/// comes at least [`SECOND_CTRL_C_AFTER`] after the stop began (a second, deliberate Ctrl-C)
/// kills the workers' process groups and exits at once with 130.
fn install_signal_handlers(stop: StopToken) -> anyhow::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])
        .context("cannot install the signal handlers")?;
    std::thread::Builder::new()
        .name("herdsman-signals".into())
        .spawn(move || {
            let mut began: Option<Instant> = None;
            for sig in signals.forever() {
                match began {
                    None => {
                        began = Some(Instant::now());
                        summary::note_stop_signal(sig);
                        let why = match sig {
                            SIGINT => "stopping",
                            SIGHUP => "SIGHUP received, stopping",
                            _ => "SIGTERM received, stopping",
                        };
                        progress::stderr_line(&format!(
                            "\nherdsman: {why}: finishing records in flight (press Ctrl-C again to quit at once)"
                        ));
                        stop.stop();
                    }
                    Some(at) if sig == SIGINT && at.elapsed() >= SECOND_CTRL_C_AFTER => {
                        progress::stderr_line(
                            "\nherdsman: quitting at once; run the same command again to resume",
                        );
                        // Workers lead process groups of their own (the terminal's Ctrl-C does
                        // not reach them): take them down with us.
                        herdsman_workers::kill_all_process_groups();
                        std::process::exit(130);
                    }
                    Some(_) => {
                        progress::stderr_line(&format!(
                            "herdsman: {} received while stopping; still finishing records in flight (press Ctrl-C again to quit at once)",
                            signal_name(sig)
                        ));
                    }
                }
            }
        })
        .context("cannot start the signal thread")?;
    Ok(())
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        signal_hook::consts::SIGINT => "SIGINT",
        signal_hook::consts::SIGHUP => "SIGHUP",
        signal_hook::consts::SIGTERM => "SIGTERM",
        _ => "a signal",
    }
}
