//! Logs: the `tracing` subscriber behind `-v`, `--log-format`, `--log-file` and
//! `HERDSMAN_LOG`, and the JSON form of everything else herdsman writes on stderr.
//!
//! The libraries emit `tracing` events where something worth knowing happens (a worker starts,
//! exits or is killed, a retry waits, the rate limit pauses, a checkpoint commits, a run
//! resumes). This module installs the one subscriber that filters and writes them: by default
//! only warnings and errors, `-v` adds info, `-vv` debug, `-vvv` trace, and `HERDSMAN_LOG`
//! (an `EnvFilter` such as `herdsman_workers=debug`) replaces that choice.
//!
//! With `--log-format json` every line herdsman writes on stderr is one JSON object: log
//! events, and also its own notices, forwarded worker stderr lines, progress lines, errors and
//! the end summary, written by [`console`] in the same shape (`timestamp`, `level`, `message`,
//! the event's fields, `target`). This module must never write free text on stderr in that
//! mode, and must cost nothing per record when logging is off.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;
use tracing_subscriber::EnvFilter;

/// The environment variable that holds an `EnvFilter` for the logs.
pub const LOG_ENV: &str = "HERDSMAN_LOG";

/// Whether stderr speaks JSON (`--log-format json`); set once, before anything is written.
static JSON: AtomicBool = AtomicBool::new(false);

/// Whether everything on stderr is written as JSON lines.
pub fn json() -> bool {
    JSON.load(Ordering::Relaxed)
}

/// What the user asked of the logs.
#[derive(Debug, Clone, Default)]
pub struct LogSettings {
    /// How many times `-v` was given.
    pub verbose: u8,
    /// `--log-format json`.
    pub json: bool,
    /// Where log events go instead of stderr (`--log-file`).
    pub file: Option<PathBuf>,
}

/// Why the logs could not be set up.
#[derive(Debug)]
pub enum LogError {
    /// `HERDSMAN_LOG` is not a filter (a usage error).
    Filter(String),
    /// The log file cannot be opened (an environment error).
    File(String),
}

impl std::fmt::Display for LogError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LogError::Filter(m) | LogError::File(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for LogError {}

/// The progress bar on screen, if any: every write to stderr hides it for that moment.
static ACTIVE_BAR: std::sync::Mutex<Option<indicatif::ProgressBar>> = std::sync::Mutex::new(None);

/// Sets (or, with `None`, clears) the progress bar that writes to stderr lift out of the way.
pub fn set_bar(bar: Option<indicatif::ProgressBar>) {
    *ACTIVE_BAR.lock().unwrap_or_else(|p| p.into_inner()) = bar;
}

/// Writes `bytes` to stderr as they are, ignoring errors: unlike `eprint!`, never panics when
/// stderr is gone (a closed pipe, or a terminal hung up with SIGHUP), so a stop still ends
/// with a checkpoint and the documented exit code. A progress bar on screen is lifted out of
/// the way first.
pub fn stderr_raw(bytes: &[u8]) {
    let write = || {
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(bytes);
        let _ = err.flush();
    };
    let bar = ACTIVE_BAR.lock().unwrap_or_else(|p| p.into_inner()).clone();
    match bar {
        Some(bar) if !bar.is_hidden() && !bar.is_finished() => bar.suspend(write),
        _ => write(),
    }
}

/// Whether the command line asks for JSON on stderr, read from the raw words: used for
/// messages written before the flags could be parsed (a usage error).
pub fn json_requested(argv: &[std::ffi::OsString]) -> bool {
    let end = argv.iter().position(|w| w == "--").unwrap_or(argv.len());
    argv[..end].iter().enumerate().any(|(i, w)| {
        w == "--log-format=json"
            || (w == "--log-format" && argv.get(i + 1).is_some_and(|v| v == "json"))
    })
}

/// Switches stderr to JSON lines, before the subscriber exists (usage errors).
pub fn use_json(on: bool) {
    JSON.store(on, Ordering::Relaxed);
}

/// The filter: `HERDSMAN_LOG` when set, else the level `-v` chose.
fn filter(verbose: u8) -> Result<EnvFilter, LogError> {
    if let Some(spec) = std::env::var(LOG_ENV).ok().filter(|s| !s.trim().is_empty()) {
        return EnvFilter::try_new(&spec).map_err(|e| {
            LogError::Filter(format!(
                "{LOG_ENV}={spec} is not a log filter ({e}); give a level or target=level list, e.g. {LOG_ENV}=info or {LOG_ENV}=herdsman_workers=debug"
            ))
        });
    }
    let level = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    Ok(EnvFilter::new(level))
}

/// RFC 3339 timestamps in UTC with microseconds, the same in log events and console lines.
struct Rfc3339;

impl FormatTime for Rfc3339 {
    fn format_time(&self, w: &mut Writer<'_>) -> std::fmt::Result {
        write!(w, "{}", timestamp())
    }
}

fn timestamp() -> String {
    humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string()
}

/// Where log events are written: stderr (above the progress bar), or the log file.
#[derive(Clone)]
enum Target {
    Stderr,
    File(Arc<std::sync::Mutex<File>>),
}

/// One event's bytes, written whole when dropped.
struct EventWriter {
    target: Target,
    buf: Vec<u8>,
}

impl Write for EventWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for EventWriter {
    fn drop(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        match &self.target {
            Target::Stderr => stderr_raw(&self.buf),
            Target::File(f) => {
                let mut f = f.lock().unwrap_or_else(|p| p.into_inner());
                let _ = f.write_all(&self.buf);
            }
        }
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Target {
    type Writer = EventWriter;
    fn make_writer(&'a self) -> EventWriter {
        EventWriter {
            target: self.clone(),
            buf: Vec::with_capacity(256),
        }
    }
}

/// Installs the subscriber. A bad `HERDSMAN_LOG` is a usage error; a log file that cannot be
/// opened an environment error.
pub fn init(settings: &LogSettings) -> Result<(), LogError> {
    use std::io::IsTerminal;
    let json = settings.json;
    use_json(json);
    let filter = filter(settings.verbose)?;
    let (target, ansi) = match &settings.file {
        Some(path) => (
            Target::File(Arc::new(std::sync::Mutex::new(open_log(path)?))),
            false,
        ),
        None => (Target::Stderr, std::io::stderr().is_terminal()),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(target)
        .with_timer(Rfc3339)
        .with_ansi(ansi);
    // A second subscriber (never, in the binary) would be refused: keep the first.
    let _ = if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .try_init()
    } else {
        builder.try_init()
    };
    Ok(())
}

/// The log file, appended to (a resumed run adds to the log of the runs before it).
fn open_log(path: &Path) -> Result<File, LogError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| {
            LogError::File(format!(
                "cannot create the directory of the log file {}: {e}; check the --log-file path",
                path.display()
            ))
        })?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| {
            LogError::File(format!(
                "cannot open the log file {}: {e}; check the --log-file path and its permissions",
                path.display()
            ))
        })
}

/// Levels of console lines, spelled as the log events spell them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Info,
    Warn,
    Error,
}

impl Level {
    fn name(self) -> &'static str {
        match self {
            Level::Info => "INFO",
            Level::Warn => "WARN",
            Level::Error => "ERROR",
        }
    }
}

/// One console line as a JSON event: `{"timestamp":…,"level":…,"message":…,<fields>,
/// "target":…}`, the shape of the log events, with a trailing newline.
pub fn console(
    level: Level,
    target: &str,
    message: &str,
    fields: serde_json::Map<String, serde_json::Value>,
) -> String {
    let mut event = serde_json::Map::with_capacity(fields.len() + 4);
    event.insert("timestamp".into(), timestamp().into());
    event.insert("level".into(), level.name().into());
    event.insert("message".into(), message.into());
    for (k, v) in fields {
        event.insert(k, v);
    }
    event.insert("target".into(), target.into());
    let mut line = serde_json::Value::Object(event).to_string();
    line.push('\n');
    line
}

/// A line herdsman would print as text (`herdsman: …`), as a JSON event: its level read from
/// the text (`error:` lines are errors), the `herdsman: ` prefix dropped.
pub fn console_text(text: &str) -> String {
    let text = text.trim_matches('\n');
    let message = text.strip_prefix("herdsman: ").unwrap_or(text);
    let level = if message.starts_with("error") {
        Level::Error
    } else if message.starts_with("warning") {
        Level::Warn
    } else {
        Level::Info
    };
    console(level, "herdsman", message, serde_json::Map::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_lines_are_one_json_object_each() {
        let line = console_text("herdsman: error: cannot read in.csv\nsecond line\n");
        assert!(line.ends_with('\n'));
        assert_eq!(line.matches('\n').count(), 1, "{line}");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["level"], "ERROR");
        assert_eq!(v["message"], "error: cannot read in.csv\nsecond line");
        assert_eq!(v["target"], "herdsman");
        assert!(v["timestamp"].as_str().unwrap().ends_with('Z'));
    }

    #[test]
    fn json_is_read_from_the_raw_words() {
        let argv = |s: &str| -> Vec<std::ffi::OsString> { s.split(' ').map(Into::into).collect() };
        assert!(json_requested(&argv(
            "herdsman run --log-format json -w cat"
        )));
        assert!(json_requested(&argv("herdsman run --log-format=json")));
        assert!(!json_requested(&argv("herdsman run --log-format text")));
        assert!(!json_requested(&argv("herdsman run -- --log-format json")));
    }
}
