//! `herdsman report OUTPUT [-o report.html]`: one self-contained HTML page about a job — its
//! throughput, latency, workers, retries and waits over time (from the run's history in the
//! ledger), its failures by kind with examples (from the dead-letter file), its slowest
//! records and its settings.
//!
//! Like `status`, it opens the ledger read-only and never takes the job's lock, so it works
//! for a finished, an interrupted or a running job. The page loads nothing from anywhere: the
//! charts are inline SVG drawn in Rust (`svg`), with native tooltips. Every string that comes
//! from data is HTML-escaped.

mod svg;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{Context, Result};
use herdsman_ledger::{HistorySample, LedgerStatus, SlowRecord, LATENCY_BUCKETS_MS};

use crate::cli::ReportArgs;
use crate::config::{canonical, UsageError};
use svg::Series;

/// Examples kept per failure kind.
const EXAMPLES_PER_KIND: usize = 3;
/// Longest record text shown in a failure example.
const EXAMPLE_CHARS: usize = 300;

/// Escapes text for HTML element content and quoted attribute values.
pub(crate) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Failures of one kind in the dead-letter file.
#[derive(Default)]
struct Kind {
    count: u64,
    examples: Vec<Example>,
}

struct Example {
    file: String,
    line: u64,
    record: u64,
    message: String,
    text: String,
}

/// Everything the page shows.
struct Data {
    state: PathBuf,
    status: LedgerStatus,
    history: Vec<HistorySample>,
    slowest: Vec<SlowRecord>,
    failures_file: Option<PathBuf>,
    failures: BTreeMap<String, Kind>,
}

/// Writes the report and says where.
pub fn report(args: &ReportArgs) -> Result<()> {
    let dir = crate::config::job_state_dir(&args.state)?;
    let ledger = herdsman_ledger::open_read_only(&dir)
        .with_context(|| format!("cannot read the checkpoint in {}", dir.display()))?;
    let status = ledger.status()?;
    let history = ledger
        .history()
        .with_context(|| format!("cannot read the run's history in {}", dir.display()))?;
    let slowest = ledger
        .slowest()
        .with_context(|| format!("cannot read the slowest records in {}", dir.display()))?;
    drop(ledger);
    let identity = status.identity.as_ref().map(|i| &i.entries);
    let target = match &args.output {
        Some(p) => p.clone(),
        None => beside_output(&dir, identity),
    };
    refuse_job_file(&target, identity)?;
    let (failures_file, failures) = read_failures(&status);
    let data = Data {
        state: dir,
        status,
        history,
        slowest,
        failures_file,
        failures,
    };
    let html = render(&data);
    write_report(&target, html.as_bytes())?;
    println!(
        "herdsman: wrote the report to {}; open it in a browser",
        target.display()
    );
    Ok(())
}

/// `report.html` next to the job's output (or next to the state directory).
fn beside_output(state: &Path, identity: Option<&BTreeMap<String, String>>) -> PathBuf {
    let dir = identity
        .and_then(|i| i.get("output"))
        .and_then(|o| Path::new(o).parent().map(Path::to_path_buf))
        .or_else(|| state.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("."));
    dir.join("report.html")
}

/// Refuses to write the report over a file of the job (its output, dead-letter file or an
/// input).
fn refuse_job_file(target: &Path, identity: Option<&BTreeMap<String, String>>) -> Result<()> {
    let Some(identity) = identity else {
        return Ok(());
    };
    let target = canonical(target);
    for (key, value) in identity {
        let is_file = key == "output"
            || key == "failures"
            || (key.starts_with("input.") && key.ends_with(".path"));
        if is_file && Path::new(value) == target {
            return Err(anyhow::Error::new(UsageError(format!(
                "{} is a file of the job ({key}); give the report another name with -o",
                target.display()
            ))));
        }
    }
    Ok(())
}

/// Writes `bytes` to `target`: through a temporary file renamed into place for a regular
/// file, or straight into something that is not one (a device or a pipe is never replaced).
fn write_report(target: &Path, bytes: &[u8]) -> Result<()> {
    let what = || format!("cannot write the report to {}", target.display());
    let special = std::fs::metadata(target).is_ok_and(|m| !m.is_file() && !m.is_dir());
    if special {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(target)
            .with_context(what)?;
        return f.write_all(bytes).with_context(what);
    }
    let dir = target
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "report.html".into());
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, target)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.with_context(|| {
        format!(
            "cannot write the report to {}; check that the directory exists and is writable",
            target.display()
        )
    })
}

/// The dead-letter file the job writes (published, or its partial file while unfinished),
/// read by kind with a few examples each; only its committed bytes while unfinished.
fn read_failures(status: &LedgerStatus) -> (Option<PathBuf>, BTreeMap<String, Kind>) {
    let mut kinds: BTreeMap<String, Kind> = BTreeMap::new();
    let Some(path) = status
        .identity
        .as_ref()
        .and_then(|i| i.entries.get("failures"))
        .map(PathBuf::from)
    else {
        return (None, kinds);
    };
    let committed = status.commits.iter().map(|c| c.failures_end).max();
    let partial = herdsman_io::partial_path(&path);
    let (file, limit) = if status.finished() || !partial.exists() {
        (path.clone(), None)
    } else {
        (partial, committed)
    };
    let Ok(f) = std::fs::File::open(&file) else {
        return (Some(path), kinds);
    };
    let reader: Box<dyn BufRead> = match limit {
        Some(n) => Box::new(BufReader::new(std::io::Read::take(f, n))),
        None => Box::new(BufReader::new(f)),
    };
    for line in reader.lines() {
        let Ok(line) = line else { break };
        let Ok(d) = serde_json::from_str::<herdsman_io::DeadLetter>(&line) else {
            continue;
        };
        let k = kinds.entry(d.error.kind.name().to_string()).or_default();
        k.count += 1;
        if k.examples.len() < EXAMPLES_PER_KIND {
            let text = match (&d.record, &d.raw) {
                (Some(r), _) => r.get().to_string(),
                (None, Some(raw)) => raw.clone(),
                (None, None) => String::new(),
            };
            k.examples.push(Example {
                file: d.source.file.clone(),
                line: d.source.line,
                record: d.source.record,
                message: d.error.message.clone(),
                text: truncate(&text, EXAMPLE_CHARS),
            });
        }
    }
    (Some(path), kinds)
}

fn truncate(s: &str, chars: usize) -> String {
    match s.char_indices().nth(chars) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

fn when(t: Option<SystemTime>) -> String {
    match t {
        Some(t) => humantime::format_rfc3339_seconds(t).to_string(),
        None => "-".into(),
    }
}

/// The page.
fn render(d: &Data) -> String {
    let mut h = String::with_capacity(64 * 1024);
    let title = d
        .status
        .identity
        .as_ref()
        .and_then(|i| i.entries.get("output"))
        .map_or_else(|| d.state.display().to_string(), Clone::clone);
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>herdsman report: {}</title><style>{STYLE}</style></head><body>",
        escape(&title)
    );
    let _ = write!(
        h,
        "<h1>herdsman report</h1><p class=\"sub\">{} · checkpoint {} · generated {}</p>",
        escape(&title),
        escape(&d.state.display().to_string()),
        escape(&when(Some(SystemTime::now())))
    );
    overview(&mut h, d);
    throughput(&mut h, d);
    latency(&mut h, d);
    workers(&mut h, d);
    retries(&mut h, d);
    failures(&mut h, d);
    slowest(&mut h, d);
    settings(&mut h, d);
    h.push_str("</body></html>\n");
    h
}

const STYLE: &str = "body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;\
margin:24px auto;max-width:1180px;color:#222;padding:0 16px}h1{margin-bottom:0}\
.sub{color:#666;margin-top:4px}section{margin:28px 0}h2{border-bottom:1px solid #ddd;\
padding-bottom:4px}svg.chart{width:100%;height:auto;max-width:1000px;display:block}\
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ddd;padding:4px 8px;\
text-align:left;vertical-align:top}th{background:#f5f5f5}td.num{text-align:right}\
code,pre{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px;\
white-space:pre-wrap;word-break:break-all}.cards{display:flex;flex-wrap:wrap;gap:12px}\
.card{border:1px solid #ddd;border-radius:6px;padding:8px 14px;min-width:120px}\
.card b{display:block;font-size:20px}.note{color:#666;font-size:13px}";

fn section(h: &mut String, id: &str, title: &str) {
    let _ = write!(h, "<section id=\"{id}\"><h2>{}</h2>", escape(title));
}

fn overview(h: &mut String, d: &Data) {
    section(h, "overview", "Overview");
    let t = d.status.totals.counts;
    let runs = d.history.iter().map(|s| s.run).max().unwrap_or(0);
    let state = if d.status.finished() {
        "finished"
    } else {
        "not finished (running, or interrupted: run the same command again to resume)"
    };
    let last = d.history.last();
    h.push_str("<div class=\"cards\">");
    for (label, value) in [
        ("records", t.records.to_string()),
        ("succeeded", t.ok.to_string()),
        ("failed", t.failed.to_string()),
        ("filtered", t.filtered.to_string()),
        ("retries", t.retries.to_string()),
        ("chunks", d.status.totals.chunks.to_string()),
        ("runs", runs.to_string()),
    ] {
        let _ = write!(
            h,
            "<div class=\"card\">{}<b>{}</b></div>",
            escape(label),
            escape(&value)
        );
    }
    h.push_str("</div>");
    let _ = write!(
        h,
        "<p>State: <b>{}</b>. Started {}, last change {}{}. Counts are the committed chunks'.",
        escape(state),
        escape(&when(d.status.created_at)),
        escape(&when(d.status.updated_at)),
        match d.status.finished_at {
            Some(_) => format!(", finished {}", escape(&when(d.status.finished_at))),
            None => String::new(),
        }
    );
    if let Some(s) = last {
        let _ = write!(
            h,
            " Latest sample: {} (run {}), {} records done.",
            escape(&when(Some(s.at()))),
            s.run,
            s.ok + s.failed + s.filtered
        );
    }
    h.push_str("</p>");
    if d.history.is_empty() {
        h.push_str(
            "<p class=\"note\">This job has no history: it was run by a herdsman that did not \
             record one, or no record has finished yet. Counts, failures and settings are shown.</p>",
        );
    }
    h.push_str("</section>");
}

/// Seconds since the first sample's start, on one axis for all runs.
fn x_of(d: &Data, s: &HistorySample) -> f64 {
    let t0 = d
        .history
        .first()
        .map_or(0, |f| f.at_ms - f.interval_ms as i64);
    (s.at_ms - t0) as f64 / 1000.0
}

/// One series per run of `f` over the samples.
fn per_run(d: &Data, name: &str, mut f: impl FnMut(&HistorySample) -> Option<f64>) -> Vec<Series> {
    let mut by_run: BTreeMap<u32, Vec<(f64, f64)>> = BTreeMap::new();
    for s in &d.history {
        if let Some(y) = f(s) {
            by_run.entry(s.run).or_default().push((x_of(d, s), y));
        }
    }
    let many = by_run.len() > 1;
    by_run
        .into_iter()
        .map(|(run, points)| Series {
            name: if many {
                format!("{name}, run {run}")
            } else {
                name.to_string()
            },
            points,
        })
        .collect()
}

fn throughput(h: &mut String, d: &Data) {
    section(h, "throughput", "Throughput over time");
    let mut series = per_run(d, "records/s", |s| Some(s.records_per_sec));
    series.extend(per_run(d, "in flight", |s| Some(s.in_flight as f64)));
    h.push_str(&svg::line_chart(
        "chart-throughput",
        "seconds since the first run started",
        "records/s · attempts in flight",
        &series,
    ));
    h.push_str(
        "<p class=\"note\">Records finished per second in each sample's interval (about a \
         second), and attempts handed to workers and not yet answered. A gap means no record \
         finished (a stall) or the job was not running.</p></section>",
    );
}

fn latency(h: &mut String, d: &Data) {
    section(h, "latency", "Latency");
    let mut buckets = vec![0u64; LATENCY_BUCKETS_MS.len() + 1];
    for s in &d.history {
        for (i, n) in s.latency_buckets.iter().enumerate().take(buckets.len()) {
            buckets[i] += n;
        }
    }
    let total: u64 = buckets.iter().sum();
    let bars: Vec<(String, f64)> = buckets
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let label = match LATENCY_BUCKETS_MS.get(i) {
                Some(b) => format!("≤{}", ms_label(*b)),
                None => format!(">{}", ms_label(LATENCY_BUCKETS_MS[i - 1])),
            };
            (label, *n as f64)
        })
        .collect();
    h.push_str("<h3>Histogram</h3>");
    if total == 0 {
        h.push_str(&svg::bar_chart("chart-latency-histogram", "records", &[]));
    } else {
        h.push_str(&svg::bar_chart("chart-latency-histogram", "records", &bars));
        let q = |q: f64| -> String {
            let target = (q * total as f64).ceil().max(1.0) as u64;
            let mut seen = 0;
            for (i, n) in buckets.iter().enumerate() {
                seen += n;
                if seen >= target {
                    return match LATENCY_BUCKETS_MS.get(i) {
                        Some(b) => format!("≤ {}", ms_label(*b)),
                        None => format!("> {}", ms_label(LATENCY_BUCKETS_MS[i - 1])),
                    };
                }
            }
            "-".into()
        };
        let max = d
            .history
            .iter()
            .filter_map(|s| s.max_ms)
            .fold(0.0f64, f64::max);
        let _ = write!(
            h,
            "<table><tr><th>records</th><th>p50</th><th>p90</th><th>p99</th><th>max</th></tr>\
             <tr><td class=\"num\">{total}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr></table>",
            escape(&q(0.5)),
            escape(&q(0.9)),
            escape(&q(0.99)),
            escape(&ms_label(max))
        );
    }
    h.push_str("<h3>Percentiles over time</h3>");
    let mut series = per_run(d, "p50", |s| s.p50_ms);
    series.extend(per_run(d, "p90", |s| s.p90_ms));
    series.extend(per_run(d, "p99", |s| s.p99_ms));
    h.push_str(&svg::line_chart(
        "chart-latency",
        "seconds since the first run started",
        "milliseconds",
        &series,
    ));
    h.push_str(
        "<p class=\"note\">A record's latency runs from its hand-off to the workers to its final \
         answer: time queued behind other records on a worker and every attempt included.</p>\
         </section>",
    );
}

fn ms_label(ms: f64) -> String {
    if ms >= 1000.0 {
        format!("{}s", svg::human(ms / 1000.0))
    } else {
        format!("{}ms", svg::human(ms))
    }
}

fn workers(h: &mut String, d: &Data) {
    section(h, "workers", "Workers");
    // Busy share over the samples in which the worker existed.
    let mut acc: BTreeMap<u32, (u64, u64, u64, u64)> = BTreeMap::new();
    for s in &d.history {
        for w in &s.workers {
            let e = acc.entry(w.worker).or_default();
            e.0 += w.busy_ms;
            e.1 += s.interval_ms;
            e.2 += w.restarts;
            e.3 += w.attempts;
        }
    }
    let rows: Vec<(String, f64, u64)> = acc
        .iter()
        .map(|(w, (busy, total, restarts, _))| {
            let share = if *total > 0 {
                *busy as f64 / *total as f64
            } else {
                0.0
            };
            (format!("worker {w}"), share, *restarts)
        })
        .collect();
    h.push_str(&svg::utilisation_chart("chart-workers", &rows));
    if !acc.is_empty() {
        h.push_str(
            "<table><tr><th>worker</th><th>attempts</th><th>busy</th><th>idle</th>\
             <th>restarts</th></tr>",
        );
        for (w, (busy, total, restarts, attempts)) in &acc {
            let _ = write!(
                h,
                "<tr><td>{w}</td><td class=\"num\">{attempts}</td><td class=\"num\">{:.1}s</td>\
                 <td class=\"num\">{:.1}s</td><td class=\"num\">{restarts}</td></tr>",
                *busy as f64 / 1000.0,
                total.saturating_sub(*busy) as f64 / 1000.0
            );
        }
        h.push_str("</table>");
    }
    h.push_str(
        "<p class=\"note\">Busy: the worker had at least one attempt handed to it and not yet \
         answered. A restart is a worker replaced after it exited, crashed or was killed for a \
         timeout.</p></section>",
    );
}

fn retries(h: &mut String, d: &Data) {
    section(h, "retries", "Retries and rate-limit waits over time");
    // The samples hold run totals; the chart shows each interval's share.
    let deltas = |f: fn(&HistorySample) -> u64| {
        let mut prev: Option<(u32, u64)> = None;
        move |s: &HistorySample| {
            let v = f(s);
            let d = match prev {
                Some((run, p)) if run == s.run => v.saturating_sub(p),
                _ => v,
            };
            prev = Some((s.run, v));
            Some(d as f64)
        }
    };
    let mut series = per_run(d, "retries", deltas(|s| s.retries));
    series.extend(per_run(d, "rate-limit wait (s)", {
        let mut f = deltas(|s| s.rate_limit_wait_ms);
        move |s| f(s).map(|ms| ms / 1000.0)
    }));
    h.push_str(&svg::line_chart(
        "chart-retries",
        "seconds since the first run started",
        "retries · seconds of waiting",
        &series,
    ));
    let (retries, wait) = run_totals(d);
    let _ = write!(
        h,
        "<p class=\"note\">Per interval: records retried, and the waits servers asked for \
         (<code>retry_after</code>), which pause the rate limit. All runs: {retries} retries, \
         {:.1}s of requested waits.</p></section>",
        wait as f64 / 1000.0
    );
}

/// Retries and requested waits summed over the runs (each run's last sample holds its total).
fn run_totals(d: &Data) -> (u64, u64) {
    let mut last: BTreeMap<u32, (u64, u64)> = BTreeMap::new();
    for s in &d.history {
        last.insert(s.run, (s.retries, s.rate_limit_wait_ms));
    }
    last.values().fold((0, 0), |(r, w), (a, b)| (r + a, w + b))
}

fn failures(h: &mut String, d: &Data) {
    section(h, "failures", "Failures by kind");
    let total: u64 = d.failures.values().map(|k| k.count).sum();
    match &d.failures_file {
        Some(p) => {
            let _ = write!(
                h,
                "<p>{total} failed record{} in <code>{}</code>.</p>",
                if total == 1 { "" } else { "s" },
                escape(&p.display().to_string())
            );
        }
        None => h.push_str("<p>The job records no dead-letter file.</p>"),
    }
    if !d.failures.is_empty() {
        let bars: Vec<(String, f64)> = d
            .failures
            .iter()
            .map(|(k, v)| (k.clone(), v.count as f64))
            .collect();
        h.push_str(&svg::bar_chart("chart-failures", "records", &bars));
        h.push_str(
            "<table><tr><th>kind</th><th>count</th><th>where</th><th>record</th><th>message</th>\
             <th>the record</th></tr>",
        );
        for (kind, k) in &d.failures {
            for (i, e) in k.examples.iter().enumerate() {
                h.push_str("<tr>");
                if i == 0 {
                    let _ = write!(
                        h,
                        "<td rowspan=\"{}\"><b>{}</b></td><td class=\"num\" rowspan=\"{}\">{}</td>",
                        k.examples.len(),
                        escape(kind),
                        k.examples.len(),
                        k.count
                    );
                }
                let _ = write!(
                    h,
                    "<td>{}:{}</td><td class=\"num\">{}</td><td>{}</td><td><code>{}</code></td></tr>",
                    escape(&e.file),
                    e.line,
                    e.record,
                    escape(&e.message),
                    escape(&e.text)
                );
            }
        }
        h.push_str("</table>");
        h.push_str(
            "<p class=\"note\">Up to three examples per kind; <code>herdsman failures</code> \
             lists them all.</p>",
        );
    }
    h.push_str("</section>");
}

fn slowest(h: &mut String, d: &Data) {
    section(h, "slowest", "Slowest records");
    if d.slowest.is_empty() {
        h.push_str("<p class=\"note\">None recorded yet.</p></section>");
        return;
    }
    let mut all: Vec<&SlowRecord> = d.slowest.iter().collect();
    all.sort_by(|a, b| b.duration_ms.total_cmp(&a.duration_ms));
    all.truncate(herdsman_ledger::SLOWEST_PER_RUN);
    h.push_str(
        "<table><tr><th>record</th><th>where</th><th>run</th><th>latency</th><th>attempts</th>\
         <th>outcome</th></tr>",
    );
    for s in all {
        let _ = write!(
            h,
            "<tr><td class=\"num\">{}</td><td>{}:{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td></tr>",
            s.record,
            escape(&s.file),
            s.line,
            s.run,
            escape(&ms_label(s.duration_ms)),
            s.attempts,
            escape(&s.outcome)
        );
    }
    h.push_str(
        "</table><p class=\"note\">The slowest records of all runs (each run keeps its 20 \
         slowest); latency as above.</p></section>",
    );
}

fn settings(h: &mut String, d: &Data) {
    section(h, "settings", "Settings");
    match &d.status.identity {
        Some(id) => {
            h.push_str(
                "<p class=\"note\">The job's identity as recorded in its checkpoint: the \
                 options that change results, and the inputs and scripts by content.</p>\
                 <table><tr><th>setting</th><th>value</th></tr>",
            );
            for (k, v) in &id.entries {
                let _ = write!(
                    h,
                    "<tr><td>{}</td><td><code>{}</code></td></tr>",
                    escape(k),
                    escape(v)
                );
            }
            h.push_str("</table>");
        }
        None => h.push_str("<p>No job is recorded in this checkpoint.</p>"),
    }
    if let Some(summary) = &d.status.summary_json {
        let pretty = serde_json::from_str::<herdsman_io::OrderedJson>(summary)
            .ok()
            .and_then(|v| serde_json::to_string_pretty(&v).ok())
            .unwrap_or_else(|| summary.clone());
        let _ = write!(h, "<h3>Final summary</h3><pre>{}</pre>", escape(&pretty));
    }
    h.push_str("</section>");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_covers_markup_and_quotes() {
        assert_eq!(
            escape(r#"<script>alert("x" & 'y')</script>"#),
            "&lt;script&gt;alert(&quot;x&quot; &amp; &#39;y&#39;)&lt;/script&gt;"
        );
    }

    #[test]
    fn truncate_keeps_whole_characters() {
        assert_eq!(truncate("ééé", 2), "éé…");
        assert_eq!(truncate("ab", 5), "ab");
    }
}
