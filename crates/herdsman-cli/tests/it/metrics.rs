//! Prometheus / OpenMetrics metrics, driven through the real binary: `/metrics` scraped
//! during a real run and checked for the OpenMetrics text format, the `--metrics-file` of
//! the finished run checked against the summary (records by outcome add up to the input,
//! attempts = records + retries, one duration observation per record, a worker restart, the
//! bytes of the input, a rate-limit wait), a port in use refused before any work, and the
//! metrics file in the path-collision checks.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command as StdCommand, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{self, stderr, Scratch};

/// A framed worker: record ids ending in 1 are filtered (no output), ids ending in 2 fail
/// (not retryable), ids ending in 3 fail their first attempt (retryable; a marker file
/// remembers it), and the worker process exits the first time it gets record 5 (a restart).
const MIXED: &str = r#"import json, os, sys
marks = sys.argv[1]
for line in sys.stdin:
    msg = json.loads(line)
    rid, rec = msg["id"], msg["record"]
    n = int(rec["id"])
    mark = os.path.join(marks, str(n))
    if n == 5 and not os.path.exists(mark):
        open(mark, "w").close()
        sys.exit(3)
    if n % 10 == 1:
        print(json.dumps({"id": rid, "done": True}))
    elif n % 10 == 2:
        print(json.dumps({"id": rid, "error": "no good", "retryable": False}))
    elif n % 10 == 3 and not os.path.exists(mark):
        open(mark, "w").close()
        print(json.dumps({"id": rid, "error": "try again", "retryable": True}))
    else:
        print(json.dumps({"id": rid, "output": rec}))
        print(json.dumps({"id": rid, "done": True}))
    sys.stdout.flush()
"#;

/// How long the test waits for anything the run does.
const LIMIT: Duration = Duration::from_secs(90);

/// `GET path` on `addr`: the response head and body.
fn get(addr: &str, path: &str) -> std::io::Result<(String, String)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("not an HTTP response: {text:?}"));
    Ok((head.to_string(), body.to_string()))
}

fn is_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn number(s: &str) -> f64 {
    match s {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        _ => s
            .parse()
            .unwrap_or_else(|e| panic!("sample value {s:?} is not a number: {e}")),
    }
}

/// Checks `text` is OpenMetrics text (HELP/TYPE/UNIT lines, samples `name{labels} value`
/// of a declared family, `# EOF` at the end) and returns its samples by `name{labels}`.
fn parse_openmetrics(text: &str) -> BTreeMap<String, f64> {
    assert!(text.ends_with("# EOF\n"), "no `# EOF` at the end:\n{text}");
    let mut families: BTreeSet<String> = BTreeSet::new();
    let mut helped: BTreeSet<String> = BTreeSet::new();
    let mut samples = BTreeMap::new();
    let body = text.strip_suffix("# EOF\n").unwrap_or(text);
    for line in body.lines() {
        if let Some(meta) = line.strip_prefix("# ") {
            let mut words = meta.splitn(3, ' ');
            let (kind, name, rest) = (
                words.next().unwrap_or(""),
                words.next().unwrap_or(""),
                words.next().unwrap_or(""),
            );
            assert!(is_name(name), "bad metric name in {line:?}");
            match kind {
                "HELP" => {
                    assert!(!rest.is_empty(), "empty help: {line:?}");
                    helped.insert(name.to_string());
                }
                "TYPE" => {
                    assert!(
                        [
                            "counter",
                            "gauge",
                            "histogram",
                            "info",
                            "summary",
                            "unknown"
                        ]
                        .contains(&rest),
                        "bad type: {line:?}"
                    );
                    families.insert(name.to_string());
                }
                "UNIT" => assert!(name.ends_with(&format!("_{rest}")), "{line:?}"),
                _ => panic!("unknown metadata line {line:?}"),
            }
            continue;
        }
        assert!(!line.starts_with('#'), "stray comment {line:?}");
        let (key, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("a sample is `name{{labels}} value`: {line:?}"));
        let (name, labels) = match key.split_once('{') {
            Some((n, l)) => (
                n,
                Some(
                    l.strip_suffix('}')
                        .unwrap_or_else(|| panic!("unclosed labels: {line:?}")),
                ),
            ),
            None => (key, None),
        };
        assert!(is_name(name), "bad sample name in {line:?}");
        for label in labels.into_iter().flat_map(|l| l.split(',')) {
            let (k, v) = label
                .split_once('=')
                .unwrap_or_else(|| panic!("bad label {label:?} in {line:?}"));
            assert!(is_name(k), "bad label name in {line:?}");
            assert!(
                v.len() >= 2 && v.starts_with('"') && v.ends_with('"'),
                "unquoted label value in {line:?}"
            );
        }
        assert!(
            families.iter().any(|f| name == f
                || name
                    .strip_prefix(f.as_str())
                    .is_some_and(|s| s.starts_with('_'))),
            "sample {line:?} of no declared family ({families:?})"
        );
        samples.insert(key.to_string(), number(value));
    }
    assert_eq!(families, helped, "every family has HELP and TYPE");
    samples
}

fn sample(samples: &BTreeMap<String, f64>, key: &str) -> f64 {
    *samples
        .get(key)
        .unwrap_or_else(|| panic!("no sample {key} in {samples:#?}"))
}

fn records(samples: &BTreeMap<String, f64>) -> f64 {
    ["succeeded", "failed", "filtered"]
        .iter()
        .map(|o| {
            sample(
                samples,
                &format!("herdsman_records_total{{outcome=\"{o}\"}}"),
            )
        })
        .sum()
}

#[test]
fn metrics_are_served_during_the_run_and_add_up_at_the_end() {
    let s = Scratch::new();
    s.write("w.py", MIXED);
    std::fs::create_dir(s.path("marks")).unwrap();
    let rows = 100;
    s.write("in.csv", common::id_csv(rows));
    // --rate makes the run last a few seconds whatever the machine (and makes it wait).
    let mut child = StdCommand::new(assert_cmd::cargo::cargo_bin("herdsman"))
        .current_dir(s.dir.path())
        .args([
            "run",
            "-i",
            "in.csv",
            "-w",
            "python3 w.py marks",
            "-o",
            "out.jsonl",
        ])
        .args(["--protocol", "framed", "-j", "2", "--retries", "2"])
        .args(["--backoff", "1ms", "--rate", "25/second"])
        .args(["--summary-json", "s.json", "--metrics-file", "m.prom"])
        .args([
            "--metrics-addr",
            "127.0.0.1:0",
            "-v",
            "--log-format",
            "json",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start herdsman");
    // The bound address is in an info event; the rest of stderr is kept for messages.
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let err = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(err).lines() {
            let Ok(line) = line else { break };
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                if let Some(addr) = v["addr"].as_str() {
                    let _ = tx.send(addr.to_string());
                }
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let addr = rx
        .recv_timeout(LIMIT)
        .expect("the metrics address is logged at -v");

    // Scrape while the run goes, until some records are counted.
    let deadline = Instant::now() + LIMIT;
    let live = loop {
        assert!(
            Instant::now() < deadline,
            "no record counted at /metrics within {LIMIT:?}"
        );
        let (head, body) = get(&addr, "/metrics").expect("scrape /metrics while the run goes");
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(
            head.to_ascii_lowercase().contains(
                "content-type: application/openmetrics-text; version=1.0.0; charset=utf-8"
            ),
            "{head}"
        );
        let samples = parse_openmetrics(&body);
        if records(&samples) > 0.0 {
            break samples;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        records(&live) < rows as f64,
        "scraped after the run: {live:#?}"
    );
    for name in [
        "herdsman_attempts_total",
        "herdsman_retries_total",
        "herdsman_in_flight",
        "herdsman_worker_restarts_total",
        "herdsman_record_duration_seconds_count",
        "herdsman_input_bytes_total",
        "herdsman_rate_limit_wait_seconds_total",
        "herdsman_estimated_seconds_left",
    ] {
        sample(&live, name);
    }
    assert!(live
        .keys()
        .any(|k| k.starts_with("herdsman_info{job=\"out.jsonl\"")));
    // Another path is not found; the run goes on.
    let (head, _) = get(&addr, "/nothing").unwrap();
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");

    let status = child.wait().unwrap();
    let err = reader.join().unwrap();
    assert_eq!(status.code(), Some(1), "some records fail: {err}");

    // The metrics file of the finished run adds up.
    let summary: Value = serde_json::from_str(&s.read("s.json")).unwrap();
    let total = &summary["total"];
    let n = |k: &str| total[k].as_u64().unwrap() as f64;
    let m = parse_openmetrics(&s.read("m.prom"));
    let by = |o: &str| sample(&m, &format!("herdsman_records_total{{outcome=\"{o}\"}}"));
    assert_eq!(
        records(&m),
        rows as f64,
        "every record counted once: {m:#?}"
    );
    assert_eq!(by("succeeded"), n("succeeded"));
    assert_eq!(by("failed"), n("failed"));
    assert_eq!(by("filtered"), n("filtered"));
    assert_eq!(by("failed"), 10.0, "ids ending in 2 fail");
    assert_eq!(by("filtered"), 10.0, "ids ending in 1 are filtered");
    let retries = sample(&m, "herdsman_retries_total");
    assert_eq!(retries, n("retries"));
    assert!(retries >= 10.0, "ids ending in 3 are retried: {retries}");
    assert_eq!(
        sample(&m, "herdsman_attempts_total"),
        rows as f64 + retries,
        "attempts = records + retries"
    );
    // The histogram has one observation per record (all its attempts together).
    assert_eq!(
        sample(&m, "herdsman_record_duration_seconds_count"),
        rows as f64
    );
    assert_eq!(
        sample(&m, "herdsman_record_duration_seconds_bucket{le=\"+Inf\"}"),
        rows as f64
    );
    assert_eq!(sample(&m, "herdsman_in_flight"), 0.0);
    assert!(
        sample(&m, "herdsman_worker_restarts_total") >= 1.0,
        "the worker exited on record 5 and was replaced"
    );
    let input_len = std::fs::metadata(s.path("in.csv")).unwrap().len();
    assert_eq!(sample(&m, "herdsman_input_bytes_total"), input_len as f64);
    assert!(
        sample(&m, "herdsman_rate_limit_wait_seconds_total") > 0.0,
        "25/second held records back"
    );
    assert_eq!(sample(&m, "herdsman_estimated_seconds_left"), 0.0);
}

#[test]
fn a_metrics_port_in_use_is_a_usage_error_before_any_work() {
    let s = Scratch::new();
    s.write("in.csv", common::id_csv(3));
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = s.job("cat", &["--metrics-addr", &addr]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains(&addr), "names the address: {err}");
    assert!(err.contains("already in use"), "{err}");
    assert!(!s.path("out.jsonl").exists(), "no work was done");
    assert!(
        !s.path(".out.jsonl.herdsman").exists(),
        "no checkpoint was made"
    );
}

#[test]
fn the_metrics_file_takes_part_in_the_path_checks() {
    let s = Scratch::new();
    s.write("in.csv", common::id_csv(3));
    let out = s
        .job("cat", &["--metrics-file", "in.csv"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("the metrics file in.csv"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        s.read("in.csv"),
        common::id_csv(3),
        "the input is untouched"
    );
}

#[test]
fn the_metrics_file_is_written_when_the_run_fails() {
    // A worker that cannot answer anything: the run stops (a failed run), and the metrics
    // file still holds what was counted.
    let s = Scratch::new();
    s.write("in.csv", common::id_csv(5));
    let out = s
        .job(
            "sh -c 'exit 3'",
            &["--metrics-file", "m.prom", "--no-checkpoint"],
        )
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0), "{}", stderr(&out));
    let m = parse_openmetrics(&s.read("m.prom"));
    assert!(
        sample(&m, "herdsman_worker_restarts_total") >= 1.0,
        "the exits were counted: {m:#?}"
    );
    assert_eq!(sample(&m, "herdsman_in_flight"), 0.0);
}
