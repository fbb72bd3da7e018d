//! Prometheus / OpenMetrics metrics of a run: `--metrics-addr HOST:PORT` serves `GET /metrics`
//! while the run goes, `--metrics-file PATH` writes the same text atomically every few seconds
//! and when the run ends, for node_exporter's textfile collector.
//!
//! The numbers are taken where they already exist, through small hooks: the outcome tally
//! (`pipeline::tally`: records by outcome and their durations), the CLI's executor
//! (`transform`: attempts, retries, in flight), the worker pool's restart callback, the input
//! reader (`chunks`: bytes read), the engine's rate limiter (time it held work back), and the
//! expected total counted for progress (the estimate of seconds left). Encoding uses the
//! `prometheus-client` crate; the HTTP side is a small std `TcpListener` thread (HTTP/1.1
//! `GET`, one short-lived thread per connection, `Connection: close`).
//!
//! When neither flag is given no [`Metrics`] exists: the hooks are `None` and the hot path
//! costs one untaken branch. This module must never block the run: a scrape reads counters,
//! and a slow or stuck client only holds its own connection thread. Nor may it write on
//! stdout.

use std::fmt;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use herdsman_io::Position;
use prometheus_client::encoding::{EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

/// The content type of the OpenMetrics text format.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// How often `--metrics-file` is rewritten while the run goes.
const FILE_EVERY: Duration = Duration::from_secs(5);

/// Upper bounds of the record-duration buckets, in seconds: 1 ms to 60 s.
const DURATION_BUCKETS: [f64; 15] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Connections served at the same time; more wait in the listener's backlog.
const MAX_CONNECTIONS: usize = 16;

/// How long a client may take to send its request or read the answer.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest request head read (request line and headers).
const MAX_REQUEST_HEAD: usize = 16 * 1024;

type Outcome = [(&'static str, &'static str); 1];

/// The metrics of one run, shared by the hooks, the HTTP server and the file writer.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    succeeded: Counter,
    failed: Counter,
    filtered: Counter,
    attempts: Counter,
    retries: Counter,
    in_flight: Gauge,
    restarts: Counter,
    durations: Histogram,
    input_bytes: Counter,
    rate_wait: RateLimitWait,
    left: SecondsLeft,
    /// Per input (by file index): whether its positions are byte offsets (text formats).
    text_inputs: Vec<bool>,
}

impl Metrics {
    /// The metrics of a run of `job` (a name for the `herdsman_info` metric). `text_inputs`
    /// says, per input, whether its records' positions are byte offsets (text formats; a
    /// Parquet input's are row groups, so its bytes are not counted).
    pub fn new(job: &str, text_inputs: Vec<bool>) -> Metrics {
        let mut registry = Registry::default();
        let records: Family<Outcome, Counter> = Family::default();
        let succeeded = records.get_or_create(&[("outcome", "succeeded")]).clone();
        let failed = records.get_or_create(&[("outcome", "failed")]).clone();
        let filtered = records.get_or_create(&[("outcome", "filtered")]).clone();
        registry.register(
            "herdsman_records",
            "Records that reached their final outcome in this process (succeeded, failed, or filtered: no output record); records done by an earlier run of the job are not counted again",
            records,
        );
        let attempts = Counter::default();
        registry.register(
            "herdsman_attempts",
            "Attempts that ended (an answer, a failure, or a crash), first tries and retries",
            attempts.clone(),
        );
        let retries = Counter::default();
        registry.register(
            "herdsman_retries",
            "Attempts that ended and were not a record's first (retries)",
            retries.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "herdsman_in_flight",
            "Attempts handed to the workers and not yet answered (running or queued on a worker)",
            in_flight.clone(),
        );
        let restarts = Counter::default();
        registry.register(
            "herdsman_worker_restarts",
            "Worker processes started in the place of one that ended (exited, killed after a timeout, or retired)",
            restarts.clone(),
        );
        let durations = Histogram::new(DURATION_BUCKETS);
        registry.register_with_unit(
            "herdsman_record_duration",
            "Time per record from hand-off to the workers to its final answer, all attempts (queued behind other records included); one observation per record",
            Unit::Seconds,
            durations.clone(),
        );
        let input_bytes = Counter::default();
        registry.register(
            "herdsman_input_bytes",
            "Bytes of input read by this process (decompressed; text formats only)",
            input_bytes.clone(),
        );
        let rate_wait = RateLimitWait::default();
        registry.register_with_unit(
            "herdsman_rate_limit_wait",
            "Time the rate limit (--rate, and pauses a worker asked for) held records back",
            Unit::Seconds,
            rate_wait.clone(),
        );
        let left = SecondsLeft {
            started: Instant::now(),
            total: Arc::new(AtomicU64::new(UNKNOWN)),
            earlier: Arc::new(AtomicU64::new(0)),
            records: [succeeded.clone(), failed.clone(), filtered.clone()],
        };
        registry.register(
            "herdsman_estimated_seconds_left",
            "Estimated seconds until every record is done, at this run's rate so far; NaN while unknown (input not counted yet, or no record done)",
            left.clone(),
        );
        registry.register(
            "herdsman",
            "The job and the herdsman version",
            Info::new(vec![
                ("job".to_string(), job.to_string()),
                ("version".to_string(), env!("CARGO_PKG_VERSION").to_string()),
            ]),
        );
        Metrics {
            registry,
            succeeded,
            failed,
            filtered,
            attempts,
            retries,
            in_flight,
            restarts,
            durations,
            input_bytes,
            rate_wait,
            left,
            text_inputs,
        }
    }

    /// The OpenMetrics text of every metric now, ending with `# EOF`.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// A record reached its final outcome after `duration` (see `pipeline::tally`).
    pub fn record(&self, outcome: RecordOutcome, duration: Duration) {
        match outcome {
            RecordOutcome::Succeeded => self.succeeded.inc(),
            RecordOutcome::Failed => self.failed.inc(),
            RecordOutcome::Filtered => self.filtered.inc(),
        };
        self.durations.observe(duration.as_secs_f64());
    }

    /// `n` attempts were handed to the executor.
    pub fn submitted(&self, n: usize) {
        self.in_flight.inc_by(n as i64);
    }

    /// `ended` attempts ended (`retries` of them not a record's first).
    pub fn ended(&self, ended: usize, retries: usize) {
        self.in_flight.dec_by(ended as i64);
        self.attempts.inc_by(ended as u64);
        if retries > 0 {
            self.retries.inc_by(retries as u64);
        }
    }

    /// `n` attempts were given up without an answer (abandoned, or stopped before they
    /// started): no longer in flight, and not counted as attempts.
    pub fn dropped(&self, n: usize) {
        self.in_flight.dec_by(n as i64);
    }

    /// A worker process was started in the place of one that ended.
    pub fn worker_restarted(&self) {
        self.restarts.inc();
    }

    /// The callback the worker pool calls on each restart.
    pub fn restart_sink(self: &Arc<Self>) -> herdsman_workers::RestartSink {
        let me = Arc::clone(self);
        Arc::new(move |_worker| me.worker_restarted())
    }

    /// Counts the input read from `from` (where the reader stood) to `to` (where it stands
    /// now), for text inputs; a move to another input counts that input from its start.
    pub fn input_read(&self, from: &Position, to: &Position) -> u64 {
        let text = self
            .text_inputs
            .get(to.file_index as usize)
            .copied()
            .unwrap_or(false);
        if !text {
            return 0;
        }
        if from.file_index == to.file_index {
            to.byte_offset.saturating_sub(from.byte_offset)
        } else {
            to.byte_offset
        }
    }

    /// Adds `n` bytes of input read.
    pub fn add_input_bytes(&self, n: u64) {
        if n > 0 {
            self.input_bytes.inc_by(n);
        }
    }

    /// The engine's rate limiter, whose waits `herdsman_rate_limit_wait_seconds_total` reports.
    pub fn watch_limiter(&self, limiter: herdsman::Limiter) {
        let _ = self.rate_wait.limiter.set(limiter);
    }

    /// Records done by earlier runs of the job: part of the estimate of seconds left, not of
    /// the counters.
    pub fn set_earlier(&self, earlier: u64) {
        self.left.earlier.store(earlier, Ordering::Relaxed);
    }

    /// The number of records of the whole input (earlier runs' included), once counted.
    pub fn set_total(&self, total: Option<u64>) {
        if let Some(t) = total {
            self.left.total.store(t, Ordering::Relaxed);
        }
    }
}

/// How a record ended, for `herdsman_records_total{outcome}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordOutcome {
    /// At least one output record.
    Succeeded,
    /// A dead letter.
    Failed,
    /// No output record.
    Filtered,
}

/// `herdsman_rate_limit_wait_seconds_total`: read from the engine's limiter at scrape time.
#[derive(Debug, Default, Clone)]
struct RateLimitWait {
    limiter: Arc<OnceLock<herdsman::Limiter>>,
}

impl EncodeMetric for RateLimitWait {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), fmt::Error> {
        let secs = self.limiter.get().map_or(0.0, |l| l.waited().as_secs_f64());
        encoder.encode_counter::<prometheus_client::encoding::NoLabelSet, f64, f64>(&secs, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Counter
    }
}

/// The total while it is not known.
const UNKNOWN: u64 = u64::MAX;

/// `herdsman_estimated_seconds_left`: computed at scrape time from the counters.
#[derive(Debug, Clone)]
struct SecondsLeft {
    started: Instant,
    total: Arc<AtomicU64>,
    earlier: Arc<AtomicU64>,
    records: [Counter; 3],
}

impl SecondsLeft {
    fn value(&self) -> f64 {
        let done: u64 = self.records.iter().map(Counter::get).sum();
        seconds_left(
            self.total.load(Ordering::Relaxed),
            self.earlier.load(Ordering::Relaxed),
            done,
            self.started.elapsed(),
        )
    }
}

/// Seconds left for `total` records (or [`UNKNOWN`]) of which `earlier` were done by earlier
/// runs and `done` by this one in `elapsed`; NaN when it cannot be told.
fn seconds_left(total: u64, earlier: u64, done: u64, elapsed: Duration) -> f64 {
    if total == UNKNOWN {
        return f64::NAN;
    }
    let left = total.saturating_sub(earlier.saturating_add(done));
    if left == 0 {
        return 0.0;
    }
    let secs = elapsed.as_secs_f64();
    if done == 0 || secs <= 0.0 {
        return f64::NAN;
    }
    (left as f64 / (done as f64 / secs)).ceil()
}

impl EncodeMetric for SecondsLeft {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), fmt::Error> {
        encoder.encode_gauge(&self.value())
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Gauge
    }
}

/// What a run serves and writes: the metrics, the `/metrics` server, the `--metrics-file`
/// writer. Dropping it writes the file a last time, whatever way the run ended.
pub struct Exporter {
    metrics: Arc<Metrics>,
    file: Option<PathBuf>,
    /// Stops the periodic file writer (dropped = stop).
    stop_writer: Option<mpsc::Sender<()>>,
    writer: Option<JoinHandle<()>>,
}

impl Exporter {
    /// Binds `addr` (a usage error, exit 2, when it cannot be bound: in use, or not an
    /// address) and starts serving, and writes `file` once (an environment error, exit 4,
    /// when it cannot be written) and then every few seconds. `None` when neither is given:
    /// nothing is created.
    pub fn start(
        addr: Option<&str>,
        file: Option<&Path>,
        make: impl FnOnce() -> Metrics,
    ) -> Result<Option<Exporter>, SetupError> {
        if addr.is_none() && file.is_none() {
            return Ok(None);
        }
        let listener = addr.map(bind).transpose()?;
        let metrics = Arc::new(make());
        if let Some(listener) = listener {
            let bound = listener.local_addr().map_err(|e| {
                SetupError::Other(format!(
                    "cannot read the address the metrics server listens on: {e}"
                ))
            })?;
            serve(listener, Arc::clone(&metrics)).map_err(|e| {
                SetupError::Other(format!("cannot start the metrics server thread: {e}"))
            })?;
            tracing::info!(addr = %bound, "serving metrics at http://{bound}/metrics");
        }
        let mut exporter = Exporter {
            metrics,
            file: file.map(Path::to_path_buf),
            stop_writer: None,
            writer: None,
        };
        if let Some(path) = exporter.file.clone() {
            write_file(&path, &exporter.metrics).map_err(|e| {
                SetupError::Environment(format!(
                    "{e:#}; choose another --metrics-file or create its directory"
                ))
            })?;
            let (tx, rx) = mpsc::channel::<()>();
            let metrics = Arc::clone(&exporter.metrics);
            let handle = std::thread::Builder::new()
                .name("herdsman-metrics-file".into())
                .spawn(move || loop {
                    match rx.recv_timeout(FILE_EVERY) {
                        Err(RecvTimeoutError::Timeout) => {
                            if let Err(e) = write_file(&path, &metrics) {
                                tracing::warn!("{e:#}");
                            }
                        }
                        Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
                    }
                })
                .map_err(|e| {
                    SetupError::Other(format!(
                        "cannot start the thread that writes --metrics-file: {e}"
                    ))
                })?;
            exporter.stop_writer = Some(tx);
            exporter.writer = Some(handle);
        }
        Ok(Some(exporter))
    }

    /// The metrics, for the hooks.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        drop(self.stop_writer.take());
        if let Some(h) = self.writer.take() {
            let _ = h.join();
        }
        if let Some(path) = &self.file {
            if let Err(e) = write_file(path, &self.metrics) {
                tracing::warn!("{e:#}; the final metrics of this run are not in it");
            }
        }
    }
}

/// Writes the metrics to `path` atomically (a temporary file in the same directory, renamed).
fn write_file(path: &Path, metrics: &Metrics) -> Result<()> {
    herdsman_io::write_atomic(path, metrics.render().as_bytes())
        .with_context(|| format!("cannot write the metrics to {}", path.display()))
}

/// Why the metrics could not be set up, by who has to act.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetupError {
    /// `--metrics-addr` cannot be listened on (in use, or not an address): a usage error.
    Usage(String),
    /// `--metrics-file` cannot be written: an environment error.
    Environment(String),
    /// A thread could not be started.
    Other(String),
}

impl fmt::Display for SetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SetupError::Usage(m) | SetupError::Environment(m) | SetupError::Other(m) => {
                f.write_str(m)
            }
        }
    }
}

impl std::error::Error for SetupError {}

/// Binds the metrics address: `HOST:PORT` (port 0: any free port).
fn bind(addr: &str) -> Result<TcpListener, SetupError> {
    let addrs: Vec<SocketAddr> = addr
        .to_socket_addrs()
        .map_err(|e| {
            SetupError::Usage(format!(
                "--metrics-addr {addr} is not an address to listen on ({e}); give HOST:PORT, e.g. 127.0.0.1:9464 (port 0: any free port)"
            ))
        })?
        .collect();
    TcpListener::bind(&addrs[..]).map_err(|e| {
        let why = if e.kind() == std::io::ErrorKind::AddrInUse {
            "the address is already in use".to_string()
        } else {
            e.to_string()
        };
        SetupError::Usage(format!(
            "cannot serve metrics on {addr}: {why}; choose another --metrics-addr (port 0: any free port)"
        ))
    })
}

/// Accepts scrapes on a thread of its own, each connection on a short-lived thread.
fn serve(listener: TcpListener, metrics: Arc<Metrics>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("herdsman-metrics".into())
        .spawn(move || {
            let open = Arc::new(AtomicUsize::new(0));
            for conn in listener.incoming() {
                let Ok(stream) = conn else {
                    // Out of file descriptors, or the client went away: try the next one.
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                if open.load(Ordering::Relaxed) >= MAX_CONNECTIONS {
                    answer(&stream, "503 Service Unavailable", "text/plain", b"busy\n");
                    continue;
                }
                open.fetch_add(1, Ordering::Relaxed);
                let (metrics, open2) = (Arc::clone(&metrics), Arc::clone(&open));
                let spawned = std::thread::Builder::new()
                    .name("herdsman-metrics-conn".into())
                    .spawn(move || {
                        handle(stream, &metrics);
                        open2.fetch_sub(1, Ordering::Relaxed);
                    });
                if spawned.is_err() {
                    open.fetch_sub(1, Ordering::Relaxed);
                }
            }
        })?;
    Ok(())
}

/// Answers one HTTP request: `GET /metrics` (or `HEAD`), 404 for other paths, 405 for other
/// methods, 400 for what is not HTTP.
fn handle(mut stream: TcpStream, metrics: &Metrics) {
    let _ = stream.set_read_timeout(Some(CLIENT_TIMEOUT));
    let _ = stream.set_write_timeout(Some(CLIENT_TIMEOUT));
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
        if head.len() > MAX_REQUEST_HEAD {
            answer(
                &stream,
                "431 Request Header Fields Too Large",
                "text/plain",
                b"",
            );
            return;
        }
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let line = head.split(|&b| b == b'\n').next().unwrap_or(&[]);
    let line = String::from_utf8_lossy(line);
    let mut words = line.split_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    match (method, path) {
        ("GET", "/metrics") => {
            answer(&stream, "200 OK", CONTENT_TYPE, metrics.render().as_bytes());
        }
        ("HEAD", "/metrics") => {
            // The head a GET would get, without the body.
            let head = response_head("200 OK", CONTENT_TYPE, metrics.render().len());
            let _ = (&stream).write_all(head.as_bytes());
        }
        ("GET" | "HEAD", _) => answer(
            &stream,
            "404 Not Found",
            "text/plain; charset=utf-8",
            b"not found; the metrics are at /metrics\n",
        ),
        (m, _) if !m.is_empty() && words.next().is_some_and(|v| v.starts_with("HTTP/")) => answer(
            &stream,
            "405 Method Not Allowed",
            "text/plain; charset=utf-8",
            b"only GET /metrics is served\n",
        ),
        _ => answer(&stream, "400 Bad Request", "text/plain", b""),
    }
}

fn response_head(status: &str, content_type: &str, len: usize) -> String {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
    )
}

fn answer(mut stream: &TcpStream, status: &str, content_type: &str, body: &[u8]) {
    let head = response_head(status, content_type, body.len());
    let _ = stream
        .write_all(head.as_bytes())
        .and_then(|()| stream.write_all(body))
        .and_then(|()| stream.flush());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_value<'a>(text: &'a str, name: &str) -> Option<&'a str> {
        text.lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .and_then(|l| l.split_whitespace().nth(1))
    }

    #[test]
    fn renders_every_metric_as_openmetrics_text() {
        let m = Metrics::new("out.jsonl", vec![true]);
        m.submitted(4);
        m.ended(3, 1);
        m.dropped(1);
        m.record(RecordOutcome::Succeeded, Duration::from_millis(3));
        m.record(RecordOutcome::Failed, Duration::from_millis(20));
        m.record(RecordOutcome::Filtered, Duration::from_secs(2));
        m.worker_restarted();
        let from = Position::START;
        let to = Position {
            byte_offset: 120,
            ..Position::START
        };
        m.add_input_bytes(m.input_read(&from, &to));
        let text = m.render();
        for family in [
            "herdsman_records",
            "herdsman_attempts",
            "herdsman_retries",
            "herdsman_in_flight",
            "herdsman_worker_restarts",
            "herdsman_record_duration_seconds",
            "herdsman_input_bytes",
            "herdsman_rate_limit_wait_seconds",
            "herdsman_estimated_seconds_left",
            "herdsman",
        ] {
            assert!(
                text.contains(&format!("# TYPE {family} ")),
                "no TYPE line for {family} in\n{text}"
            );
            assert!(
                text.contains(&format!("# HELP {family} ")),
                "no HELP line for {family} in\n{text}"
            );
        }
        assert_eq!(
            sample_value(&text, "herdsman_records_total{outcome=\"succeeded\"}"),
            Some("1")
        );
        assert_eq!(
            sample_value(&text, "herdsman_records_total{outcome=\"failed\"}"),
            Some("1")
        );
        assert_eq!(
            sample_value(&text, "herdsman_records_total{outcome=\"filtered\"}"),
            Some("1")
        );
        assert_eq!(sample_value(&text, "herdsman_attempts_total"), Some("3"));
        assert_eq!(sample_value(&text, "herdsman_retries_total"), Some("1"));
        assert_eq!(sample_value(&text, "herdsman_in_flight"), Some("0"));
        assert_eq!(
            sample_value(&text, "herdsman_worker_restarts_total"),
            Some("1")
        );
        assert_eq!(
            sample_value(&text, "herdsman_input_bytes_total"),
            Some("120")
        );
        assert_eq!(
            sample_value(&text, "herdsman_record_duration_seconds_count"),
            Some("3")
        );
        assert_eq!(
            sample_value(
                &text,
                "herdsman_record_duration_seconds_bucket{le=\"0.005\"}"
            ),
            Some("1")
        );
        assert_eq!(
            sample_value(
                &text,
                "herdsman_record_duration_seconds_bucket{le=\"+Inf\"}"
            ),
            Some("3")
        );
        assert_eq!(
            sample_value(&text, "herdsman_rate_limit_wait_seconds_total"),
            Some("0.0")
        );
        assert_eq!(
            sample_value(&text, "herdsman_estimated_seconds_left"),
            Some("NaN"),
            "unknown before the input is counted"
        );
        assert!(text.contains("herdsman_info{job=\"out.jsonl\",version=\""));
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn estimated_seconds_left() {
        let s = Duration::from_secs;
        assert!(seconds_left(UNKNOWN, 0, 10, s(1)).is_nan());
        assert!(seconds_left(100, 0, 0, s(1)).is_nan(), "no rate yet");
        // 10 records in 2 s: 5/s; 90 left after 10 earlier ones: 16 s.
        assert_eq!(seconds_left(100, 80, 10, s(2)), 2.0);
        assert_eq!(seconds_left(100, 0, 10, s(2)), 18.0);
        assert_eq!(seconds_left(100, 40, 60, s(2)), 0.0, "done");
    }

    #[test]
    fn input_bytes_follow_positions_across_inputs() {
        let m = Metrics::new("j", vec![true, false, true]);
        let at = |file_index, byte_offset| Position {
            file_index,
            byte_offset,
            ..Position::START
        };
        assert_eq!(m.input_read(&at(0, 10), &at(0, 30)), 20);
        // The next text input, from its start.
        assert_eq!(m.input_read(&at(0, 30), &at(2, 7)), 7);
        // A Parquet input's positions are row groups: not bytes.
        assert_eq!(m.input_read(&at(0, 30), &at(1, 3)), 0);
    }
}
