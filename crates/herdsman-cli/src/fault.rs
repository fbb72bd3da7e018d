//! Fault-injection points for the crash tests (`HERDSMAN_FAULT=<point>` kills the process
//! with SIGKILL when the run reaches that point), and the flag hints added to the libraries'
//! errors when they are presented.
//!
//! The lowest layer of the CLI: every module may call [`fault`] and the hint functions, and
//! this one depends on no other module. `fault` must never do anything when the variable is
//! unset or names another point. The libraries' messages say what to do in library terms;
//! every error, dead-letter message and notice that names a flag gets it here: `main` and
//! `config::with_causes` append [`cli_hint`], executor errors are presented with
//! [`executor_message`], and dead-letter messages and notices go through
//! [`failure_message`], [`record_error_message`], [`output_refusal_message`] and
//! [`notice_message`].

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

// Hints. The libraries' messages say what to do in their own terms ("reset the checkpoint",
// "the per-record timeout"); the functions below are the one place that names the
// `herdsman` flag for it, by matching the error's type and variant (or kind).

/// What to pass to `herdsman` for the remedy that `e` (or one of its causes) states in library
/// terms, as a suffix for the end of its message (it starts with its own separator), or
/// `None` when its message needs no flag.
pub fn cli_hint(e: &(dyn std::error::Error + 'static)) -> Option<&'static str> {
    use herdsman_io::SourceError;
    use herdsman_ledger::LedgerError;
    use herdsman_workers::TemplateError;
    let restart = "; run with --restart to start over";
    let mut cause = Some(e);
    while let Some(c) = cause {
        if let Some(l) = c.downcast_ref::<LedgerError>() {
            return match l {
                LedgerError::Locked { .. } | LedgerError::NotFound { .. } => Some(" (--state)"),
                LedgerError::Corrupt { .. } => {
                    Some("; run with --restart to start over, or pass another --state")
                }
                LedgerError::IdentityChanged { .. }
                | LedgerError::NewerSchema { .. }
                | LedgerError::AlreadyCommitted { .. }
                | LedgerError::AlreadyFinished { .. }
                | LedgerError::OffsetsWentBackwards { .. }
                | LedgerError::OlderSchema { .. } => Some(restart),
                LedgerError::TokenTooLong { .. } => Some(" (leave out --state)"),
                _ => None,
            };
        }
        if let Some(s) = c.downcast_ref::<SourceError>() {
            return match s {
                SourceError::HeaderTooLong { .. } => Some(" with --max-record-size"),
                SourceError::Changed { .. } => Some(" (--restart)"),
                _ => None,
            };
        }
        if let Some(t) = c.downcast_ref::<TemplateError>() {
            return match t {
                TemplateError::Empty => Some(" (--exec)"),
                TemplateError::UnsafeShellPlaceholder { .. } => Some(" (--shell)"),
                _ => None,
            };
        }
        cause = c.source();
    }
    None
}

/// Which program the run's executor runs, for the flags that set it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Runs {
    /// A pool of `--worker` processes.
    Workers,
    /// One `--exec` command per record.
    Commands,
}

/// The message of an error that stopped the executor, with the flag of the setting it is
/// about.
pub fn executor_message(e: &herdsman::FatalExecutorError, runs: Runs) -> String {
    use herdsman::Setting;
    let flag = match e.setting {
        Some(Setting::Timeout) => {
            return e
                .message
                .replace(herdsman_workers::TIMEOUT_WORDS, "--timeout");
        }
        Some(Setting::Command) if runs == Runs::Workers => "--worker",
        Some(Setting::Command) => "--exec",
        Some(Setting::WorkingDirectory) => "--workdir",
        Some(Setting::Concurrency) => "--jobs",
        _ => return e.message.clone(),
    };
    format!("{} ({flag})", e.message)
}

/// The message of a record's failure in a worker or command, with the flags it is about.
pub fn failure_message(kind: herdsman_workers::FailureKind, message: &str) -> String {
    use herdsman_workers::{FailureKind, NOT_RETRIED_WORDS, TIMEOUT_WORDS};
    match kind {
        FailureKind::Timeout => message.replacen(TIMEOUT_WORDS, "--timeout", 1),
        FailureKind::CommandFailed => {
            message.replacen(NOT_RETRIED_WORDS, "not retried: --no-retry-exit", 1)
        }
        _ => message.to_string(),
    }
}

/// The message of a record that could not be read, with the flag it is about.
pub fn record_error_message(kind: herdsman_io::RecordErrorKind, message: &str) -> String {
    match kind {
        herdsman_io::RecordErrorKind::TooLong => format!("{message} with --max-record-size"),
        _ => message.to_string(),
    }
}

/// The message of a record the output refused, with the flag it is about.
pub fn output_refusal_message(message: &str) -> String {
    message.replacen(
        herdsman_io::SinkError::CHOOSE_COLUMNS_WORDS,
        "choose the columns with --columns",
        1,
    )
}

/// A worker pool's notice, with the flag it is about.
pub fn notice_message(notice: &str) -> String {
    notice.replacen(herdsman_workers::TIMEOUT_WORDS, "--timeout", 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use herdsman_ledger::LedgerError;

    /// `e` as the command prints it: its chain, then its hint.
    fn presented(e: anyhow::Error) -> String {
        let mut out = format!("{e:#}");
        out.push_str(cli_hint(e.as_ref()).unwrap_or(""));
        out
    }

    #[test]
    fn ledger_errors_get_the_flag_their_remedy_needs() {
        let restart = [
            LedgerError::IdentityChanged { changes: vec![] },
            LedgerError::NewerSchema {
                path: "st/l".into(),
                found: 9,
                supported: 2,
            },
            LedgerError::AlreadyCommitted { chunk: 1 },
            LedgerError::AlreadyFinished { chunk: 1 },
            LedgerError::OffsetsWentBackwards {
                chunk: 1,
                file: "output",
                got: 1,
                committed: 2,
            },
            LedgerError::OlderSchema {
                path: "st/l".into(),
                found: 1,
            },
            LedgerError::Corrupt {
                path: "st/l".into(),
                detail: "not a database".into(),
            },
        ];
        for e in restart {
            let text = presented(anyhow::Error::new(e).context("cannot open the checkpoint"));
            assert!(text.contains("reset the checkpoint"), "{text}");
            assert!(
                text.ends_with("run with --restart to start over")
                    || text.ends_with("or pass another --state"),
                "{text}"
            );
            assert!(text.contains("--restart"), "{text}");
        }
        let state = [
            LedgerError::Locked {
                dir: "st".into(),
                holder_pid: Some(7),
            },
            LedgerError::NotFound { dir: "st".into() },
            LedgerError::TokenTooLong { len: 40 },
        ];
        for e in state {
            let text = presented(anyhow::Error::new(e));
            assert!(text.contains("--state"), "{text}");
        }
        // Nothing to add where the message needs no flag.
        assert_eq!(cli_hint(&LedgerError::NoJob), None);
    }

    /// A cause-free error's message with its hint, as `config::with_causes` gives it.
    fn with_hint(e: &(dyn std::error::Error + 'static)) -> String {
        format!("{e}{}", cli_hint(e).unwrap_or(""))
    }

    #[test]
    fn input_and_template_errors_get_their_flags() {
        let e = herdsman_io::SourceError::HeaderTooLong {
            file: "in.csv".into(),
            limit: 2048,
        };
        assert_eq!(
            with_hint(&e),
            "the CSV header of `in.csv` is longer than the record size limit (2 KiB); raise the limit with --max-record-size"
        );
        let e = herdsman_io::SourceError::Changed {
            file: "in.csv".into(),
            detail: "it grew".into(),
        };
        assert!(with_hint(&e).ends_with("has one (--restart)"));
        let e = herdsman_workers::TemplateError::Empty;
        assert!(with_hint(&e).ends_with(" (--exec)"));
    }

    #[test]
    fn executor_errors_name_the_flag_of_their_setting() {
        use herdsman::{FatalExecutorError, Setting};
        let e = FatalExecutorError::configuration(
            "cannot start worker `w`: not found; check the worker command",
        )
        .about(Setting::Command);
        assert!(
            executor_message(&e, Runs::Workers).ends_with("check the worker command (--worker)")
        );
        assert!(executor_message(&e, Runs::Commands).ends_with(" (--exec)"));
        let e = FatalExecutorError::runtime("x; check the working directory")
            .about(Setting::WorkingDirectory);
        assert!(executor_message(&e, Runs::Workers).ends_with(" (--workdir)"));
        let e = FatalExecutorError::runtime("x; lower the number of workers")
            .about(Setting::Concurrency);
        assert!(executor_message(&e, Runs::Workers).ends_with(" (--jobs)"));
        let words = herdsman_workers::TIMEOUT_WORDS;
        let e = FatalExecutorError::configuration(format!(
            "killed for not answering within 1s ({words}); raise {words}, or check the worker"
        ))
        .about(Setting::Timeout);
        assert_eq!(
            executor_message(&e, Runs::Workers),
            "killed for not answering within 1s (--timeout); raise --timeout, or check the worker"
        );
        let e = FatalExecutorError::runtime("every worker exited");
        assert_eq!(executor_message(&e, Runs::Workers), "every worker exited");
    }

    #[test]
    fn record_messages_and_notices_get_their_flags() {
        use herdsman_workers::{FailureKind, NOT_RETRIED_WORDS, TIMEOUT_WORDS};
        assert_eq!(
            failure_message(
                FailureKind::Timeout,
                &format!("no answer within 12s ({TIMEOUT_WORDS}); the worker was killed")
            ),
            "no answer within 12s (--timeout); the worker was killed"
        );
        assert_eq!(
            failure_message(
                FailureKind::CommandFailed,
                &format!("command `sh` exited with status 22 ({NOT_RETRIED_WORDS})")
            ),
            "command `sh` exited with status 22 (not retried: --no-retry-exit)"
        );
        // Another kind's message is left alone, even if a worker wrote the same words.
        let reported = format!("the worker said: {TIMEOUT_WORDS}");
        assert_eq!(failure_message(FailureKind::Reported, &reported), reported);
        assert_eq!(
            record_error_message(
                herdsman_io::RecordErrorKind::TooLong,
                "in.txt:3: the line is longer than the record size limit (2 KiB); split it, or raise the limit"
            ),
            "in.txt:3: the line is longer than the record size limit (2 KiB); split it, or raise the limit with --max-record-size"
        );
        let refusal = format!(
            "its key `k` is not a column of the CSV header; {} (other keys are then left out)",
            herdsman_io::SinkError::CHOOSE_COLUMNS_WORDS
        );
        assert!(output_refusal_message(&refusal).contains("choose the columns with --columns"));
        assert_eq!(
            notice_message(&format!(
                "no answer for 60 s; still waiting; set {TIMEOUT_WORDS} to give up"
            )),
            "no answer for 60 s; still waiting; set --timeout to give up"
        );
    }
}
