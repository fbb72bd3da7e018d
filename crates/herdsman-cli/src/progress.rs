//! Progress display and log lines on stderr.
//!
//! On a terminal a bar shows records done, rate, ETA, failures and retries; off a terminal a
//! plain line is printed every few seconds. Log lines (worker stderr, notices) go through the
//! same place so they never garble the bar. With `--log-format json` each of these lines is
//! a JSON event instead (see `logging`). This module must never write to stdout.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use herdsman_workers::duration::{format_duration, DurationStyle};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::cli::ProgressArg;
use crate::summary::Counts;
pub use crate::text::{plural, rate};

pub use crate::logging::stderr_raw;

/// Writes `text` to stderr (see [`stderr_raw`]); with `--log-format json`, as one JSON event.
pub fn stderr_write(text: &str) {
    if crate::logging::json() {
        stderr_raw(crate::logging::console_text(text).as_bytes());
    } else {
        stderr_raw(text.as_bytes());
    }
}

/// [`stderr_write`] of one line.
pub fn stderr_line(line: &str) {
    let mut text = String::with_capacity(line.len() + 1);
    text.push_str(line);
    text.push('\n');
    stderr_write(&text);
}

/// Where log lines go: above the bar when there is one, else plain stderr.
#[derive(Clone, Default)]
pub struct Log {
    bar: Option<ProgressBar>,
    quiet: bool,
}

impl Log {
    /// A notice from herdsman itself (shown even with --quiet when `important`).
    pub fn notice(&self, msg: &str) {
        if crate::logging::json() {
            self.json_line(&crate::logging::console(
                crate::logging::Level::Info,
                "herdsman",
                msg,
                serde_json::Map::new(),
            ));
            return;
        }
        self.line(&format!("herdsman: {msg}"));
    }

    /// A line of worker stderr, prefixed with the worker number (1-based, the value of the
    /// worker's `HERDSMAN_WORKER`); with `--log-format json`, an event with a `worker` field.
    pub fn worker_line(&self, worker: usize, line: &str) {
        if self.quiet {
            return;
        }
        if crate::logging::json() {
            let mut fields = serde_json::Map::new();
            fields.insert("worker".into(), (worker + 1).into());
            self.json_line(&crate::logging::console(
                crate::logging::Level::Info,
                "herdsman::worker",
                line,
                fields,
            ));
            return;
        }
        self.line(&format!("[worker {}] {line}", worker + 1));
    }

    fn json_line(&self, event: &str) {
        stderr_raw(event.as_bytes());
    }

    fn line(&self, s: &str) {
        match &self.bar {
            Some(bar) if !bar.is_hidden() => bar.println(s),
            _ => stderr_line(s),
        }
    }
}

/// Progress reporting for one run.
pub struct Progress {
    bar: Option<ProgressBar>,
    plain: bool,
    started: Instant,
    last_plain: Instant,
    every: Duration,
    total: Option<u64>,
    /// The total, when it is still being counted in the background.
    counting: Option<std::sync::mpsc::Receiver<Option<u64>>>,
    calls: u64,
    last_update: Instant,
    log: Log,
    /// Records done by earlier runs of the job (not part of this run's rate).
    earlier: u64,
}

impl Progress {
    /// Sets up the display. `total` is the expected number of records if known; `done` is what
    /// earlier runs of the job already finished (the bar starts there).
    pub fn new(mode: ProgressArg, total: Option<u64>, done: u64, quiet: bool) -> Progress {
        let terminal = std::io::stderr().is_terminal();
        // JSON on stderr: progress as events, never a bar.
        let mode = match mode {
            ProgressArg::Auto | ProgressArg::Bar if crate::logging::json() => ProgressArg::Plain,
            other => other,
        };
        let (use_bar, plain) = match mode {
            ProgressArg::Auto => (terminal, !terminal),
            ProgressArg::Bar => (true, false),
            ProgressArg::Plain => (false, true),
            ProgressArg::None => (false, false),
        };
        let bar = use_bar.then(|| {
            let bar = match total {
                Some(t) => ProgressBar::with_draw_target(Some(t), ProgressDrawTarget::stderr()),
                None => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()),
            };
            let template = if total.is_some() {
                "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} ({per_sec}, eta {eta}) {msg}"
            } else {
                "{spinner} [{elapsed_precise}] {pos} records ({per_sec}) {msg}"
            };
            bar.set_style(
                ProgressStyle::with_template(template)
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar.set_position(done);
            bar.reset_eta();
            bar
        });
        let log = Log {
            bar: bar.clone(),
            quiet,
        };
        if let Some(bar) = &bar {
            crate::logging::set_bar(Some(bar.clone()));
        }
        let now = Instant::now();
        Progress {
            bar,
            plain: plain && !quiet,
            started: now,
            last_plain: now,
            every: Duration::from_secs(5),
            total,
            counting: None,
            calls: 0,
            last_update: now,
            log,
            earlier: done,
        }
    }

    /// Counts the expected total on a background thread (a full pass over the input's
    /// newlines), so that a large or resumed input starts without waiting for it.
    pub fn count_total_with(&mut self, count: impl FnOnce() -> Option<u64> + Send + 'static) {
        if self.bar.is_none() && !self.plain {
            return;
        }
        self.count_total_with_always(count);
    }

    /// [`Progress::count_total_with`], also when nothing is displayed (the count has another
    /// use, such as the metrics' estimate of seconds left).
    pub fn count_total_with_always(
        &mut self,
        count: impl FnOnce() -> Option<u64> + Send + 'static,
    ) {
        let (tx, rx) = std::sync::mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("herdsman-count".into())
            .spawn(move || {
                let _ = tx.send(count());
            });
        if spawned.is_ok() {
            self.counting = Some(rx);
        }
    }

    fn take_total(&mut self) {
        let Some(rx) = &self.counting else { return };
        if let Ok(total) = rx.try_recv() {
            self.counting = None;
            self.total = total;
            if let (Some(bar), Some(t)) = (&self.bar, total) {
                bar.set_length(t);
                bar.set_style(
                    ProgressStyle::with_template(
                        "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} ({per_sec}, eta {eta}) {msg}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
                );
            }
        }
    }

    /// The log handle to give to anything that prints while the run goes on.
    pub fn log(&self) -> Log {
        self.log.clone()
    }

    /// Shows the current counts (cheap; call it as often as you like: it redraws at most
    /// every few milliseconds).
    pub fn update(&mut self, total: &Counts) {
        if self.bar.is_none() && !self.plain {
            // Nothing is shown: no clock to read per record, only the total to take.
            self.take_total();
            return;
        }
        self.calls = self.calls.wrapping_add(1);
        if !self.calls.is_multiple_of(256) && self.last_update.elapsed() < Duration::from_millis(50)
        {
            return;
        }
        self.last_update = Instant::now();
        self.take_total();
        if let Some(bar) = &self.bar {
            bar.set_position(total.resolved() + total.not_run);
            if total.failed > 0 || total.retries > 0 {
                bar.set_message(format!(
                    "{} failed, {} retries",
                    total.failed, total.retries
                ));
            }
        } else if self.plain && self.last_plain.elapsed() >= self.every {
            self.last_plain = Instant::now();
            self.print_plain(total);
        }
    }

    fn print_plain(&self, c: &Counts) {
        let this_run = c.resolved().saturating_sub(self.earlier);
        let elapsed = self.started.elapsed();
        let line = plain_line(
            c.resolved(),
            self.total,
            c.failed,
            c.retries,
            this_run,
            elapsed,
        );
        if crate::logging::json() {
            let secs = elapsed.as_secs_f64().max(0.001);
            let per_sec = this_run as f64 / secs;
            let mut f = serde_json::Map::new();
            f.insert("done".into(), c.resolved().into());
            f.insert("total".into(), self.total.into());
            f.insert("failed".into(), c.failed.into());
            f.insert("retries".into(), c.retries.into());
            f.insert("records_per_s".into(), per_sec.into());
            let eta = self
                .total
                .filter(|&t| per_sec > 0.0 && t >= c.resolved())
                .map(|t| ((t - c.resolved()) as f64 / per_sec).ceil());
            f.insert("eta_s".into(), eta.into());
            f.insert("elapsed_s".into(), elapsed.as_secs_f64().into());
            let message = line.strip_prefix("herdsman: ").unwrap_or(&line);
            stderr_raw(
                crate::logging::console(
                    crate::logging::Level::Info,
                    "herdsman::progress",
                    message,
                    f,
                )
                .as_bytes(),
            );
            return;
        }
        stderr_line(&line);
    }

    /// Removes the bar before the summary is printed.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
            crate::logging::set_bar(None);
        }
    }
}

/// The plain progress line: `herdsman: 12 of 40 records done (1 failed, 0 retries), 5.4/s,
/// ETA 6s, 2s elapsed`. `this_run` is what this run resolved (the rate and ETA ignore records
/// done by an earlier run of the job).
fn plain_line(
    done: u64,
    total: Option<u64>,
    failed: u64,
    retries: u64,
    this_run: u64,
    elapsed: Duration,
) -> String {
    let secs = elapsed.as_secs_f64().max(0.001);
    let per_sec = this_run as f64 / secs;
    let done_text = match total {
        Some(t) => format!("{done} of {} done", plural(t, "record")),
        None => format!("{} done", plural(done, "record")),
    };
    let eta = match total {
        Some(t) if per_sec > 0.0 && t >= done => {
            let left = Duration::from_secs_f64(((t - done) as f64 / per_sec).ceil());
            format!(", ETA {}", short_duration(left))
        }
        _ => String::new(),
    };
    format!(
        "herdsman: {done_text} ({failed} failed, {}), {}{eta}, {} elapsed",
        if retries == 1 {
            "1 retry".to_string()
        } else {
            format!("{retries} retries")
        },
        rate(per_sec),
        short_duration(Duration::from_secs(elapsed.as_secs()))
    )
}

/// A whole-second duration for people: `7s`, `3m05s`, `2h03m`.
pub fn short_duration(d: Duration) -> String {
    format_duration(d, DurationStyle::Clock)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_like_a_person_wrote_them() {
        assert_eq!(plural(1, "record"), "1 record");
        assert_eq!(plural(2, "record"), "2 records");
        assert_eq!(rate(5.43), "5.4/s");
        assert_eq!(rate(0.25), "0.25/s");
        assert_eq!(rate(1234.4), "1234/s");
        assert_eq!(short_duration(Duration::from_secs(185)), "3m05s");
        let line = plain_line(10, Some(40), 1, 1, 10, Duration::from_secs(2));
        assert_eq!(
            line,
            "herdsman: 10 of 40 records done (1 failed, 1 retry), 5.0/s, ETA 6s, 2s elapsed"
        );
    }
}
