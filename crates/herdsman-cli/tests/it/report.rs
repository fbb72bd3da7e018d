//! `herdsman report`: one self-contained HTML page per job, drawn from the run's history in
//! the ledger and the dead-letter file, for finished, running and SIGKILLed jobs; checked in
//! a real headless browser (Debian's `chromium`) when one is installed.

use crate::common;

use std::path::Path;
use std::process::{Command as StdCommand, Stdio};
use std::time::{Duration, Instant};

use common::*;

const INJECTION: &str = "<script>alert(1)</script>";

/// 300 records: a few whose value is not an integer (one of them an HTML injection), the
/// rest integers.
fn mixed_csv() -> String {
    let mut s = String::from("id,value\n");
    for i in 0..300 {
        let v = match i {
            11 => INJECTION.to_string(),
            i if i % 50 == 5 => format!("x{i}"),
            i => (i * 3).to_string(),
        };
        s.push_str(&format!("{i},\"{v}\"\n"));
    }
    s
}

/// Runs the mixed job to the end: failures, retries (with server-requested waits), filtered
/// records and one worker restart.
fn run_mixed(s: &Scratch) {
    s.write("in.csv", mixed_csv());
    let marks = s.path("marks");
    std::fs::create_dir_all(&marks).unwrap();
    let worker = py_worker("report_mix.py", &[marks.to_str().unwrap()]);
    let out = s
        .job(
            &worker,
            &["--protocol", "framed", "-j", "3", "--retries", "2"],
        )
        .args(["--backoff", "1ms"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let summary = s.accounting();
    assert_eq!(summary["total"]["failed"], 7, "{summary}");
    assert!(
        summary["total"]["retries"].as_u64().unwrap() >= 30,
        "{summary}"
    );
}

/// `herdsman report ARGS...` in the scratch directory; its output.
fn report(s: &Scratch, args: &[&str]) -> std::process::Output {
    s.herdsman().arg("report").args(args).output().unwrap()
}

fn count(html: &str, what: &str) -> usize {
    html.matches(what).count()
}

#[test]
fn a_report_shows_every_section_and_escapes_data() {
    let s = Scratch::new();
    run_mixed(&s);
    let out = report(&s, &["out.jsonl", "-o", "r.html"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let html = s.read("r.html");
    for id in [
        "chart-throughput",
        "chart-latency-histogram",
        "chart-latency",
        "chart-workers",
        "chart-retries",
        "chart-failures",
    ] {
        assert!(html.contains(&format!("id=\"{id}\"")), "no {id}");
    }
    assert!(count(&html, r#"<path class="series""#) >= 3, "lines drawn");
    assert!(count(&html, r#"class="pt""#) >= 3, "points drawn");
    assert!(count(&html, r#"<rect class="busy""#) >= 3, "three workers");
    // Failures by kind with their source positions, and the injection shown as text.
    assert!(html.contains("<b>reported</b>"), "failure kind");
    assert!(
        html.contains("in.csv:13"),
        "source position of record id 11"
    );
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(!html.contains(INJECTION), "data must never become markup");
    assert!(!html.contains("<script"), "the page needs no script");
    // No network: nothing is loaded from anywhere.
    for remote in ["http://", "https://", "src=", "href="] {
        let hits: Vec<&str> = html
            .match_indices(remote)
            .map(|(i, _)| &html[i.saturating_sub(40)..(i + 40).min(html.len())])
            .filter(|ctx| !ctx.contains("http://www.w3.org/2000/svg"))
            .collect();
        assert!(hits.is_empty(), "{remote} in the page: {hits:?}");
    }
    // The slowest records and the settings.
    assert!(html.contains("Slowest records"));
    assert!(count(&html, "<td>in.csv:") >= 20, "slowest records listed");
    assert!(
        html.contains("input.0.fingerprint"),
        "settings from the ledger"
    );
    assert!(html.contains("Final summary"));
    // One restart (record 25 made its worker exit once), retries over time.
    assert!(html.contains("1 restart<"), "a worker restart is shown");
}

#[test]
fn without_o_the_report_goes_next_to_the_output_and_says_where() {
    let s = Scratch::new();
    run_mixed(&s);
    let out = report(&s, &[".out.jsonl.herdsman"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    let expected = s.path("report.html");
    assert!(expected.is_file());
    let canonical = std::fs::canonicalize(&expected).unwrap();
    assert!(
        said.contains(&canonical.display().to_string()),
        "says where: {said}"
    );
}

#[test]
fn a_report_never_replaces_a_file_of_the_job_or_a_device() {
    let s = Scratch::new();
    run_mixed(&s);
    let before = s.read("out.jsonl");
    let out = report(&s, &["out.jsonl", "-o", "out.jsonl"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("is a file of the job"),
        "{}",
        stderr(&out)
    );
    assert_eq!(s.read("out.jsonl"), before);
    // A device node is written into, never replaced by a regular file.
    let null = s.path("null");
    let made = StdCommand::new("mknod")
        .arg(&null)
        .args(["c", "1", "3"])
        .status();
    if made.is_ok_and(|st| st.success()) {
        let out = report(&s, &["out.jsonl", "-o", "null"]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        use std::os::unix::fs::FileTypeExt;
        assert!(std::fs::metadata(&null)
            .unwrap()
            .file_type()
            .is_char_device());
    }
    // No checkpoint: a usage error that says what to give.
    let out = report(&s, &["nowhere.jsonl"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("no checkpoint"), "{}", stderr(&out));
}

/// Polls `herdsman report` until the page satisfies `ok` (generous deadline).
fn report_until(s: &Scratch, ok: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let out = report(s, &["out.jsonl", "-o", "live.html"]);
        if out.status.success() {
            let html = s.read("live.html");
            if ok(&html) {
                return html;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the report never showed what was expected: {}",
            stderr(&out)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_running_then_killed_then_resumed_job_is_reported_with_runs_in_series() {
    let s = Scratch::new();
    s.write("in.csv", id_csv(200));
    let gate = s.path("gate");
    std::fs::create_dir_all(&gate).unwrap();
    let worker = py_worker("gate.py", &["100", gate.to_str().unwrap()]);
    let args = ["-j", "1", "--chunk-size", "10"];
    let mut child = StdCommand::new(assert_cmd::cargo::cargo_bin("herdsman"))
        .args(["run", "-i", "in.csv", "-w", &worker, "-o", "out.jsonl"])
        .args(args)
        .current_dir(s.dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Running: the report reads the ledger without the job's lock.
    let html = report_until(&s, |h| h.contains(r#"class="pt""#));
    assert!(html.contains("not finished"), "a running job");
    assert!(child.try_wait().unwrap().is_none(), "still running");
    // Killed: the same.
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let html = report_until(&s, |h| h.contains(r#"class="pt""#));
    assert!(html.contains("not finished"));
    assert!(!html.contains("run 2"));
    // Resumed: the second run continues the series.
    std::fs::write(gate.join("open"), "").unwrap();
    let out = s.job(&worker, &args).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let html = report_until(&s, |h| h.contains("<b>finished</b>"));
    assert!(html.contains("records/s, run 1"), "run 1 kept");
    assert!(html.contains("records/s, run 2"), "run 2 after it");
}

/// Where Debian's chromium is, or `None` (then the browser test is skipped, or fails in CI).
fn chromium() -> Option<String> {
    for name in ["chromium", "chromium-browser"] {
        let found = StdCommand::new(name)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if found {
            return Some(name.to_string());
        }
    }
    None
}

/// Runs headless chromium on `page` with `extra` arguments; its stdout and stderr.
fn headless(browser: &str, page: &Path, extra: &[String]) -> (String, String) {
    let out = StdCommand::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .args(extra)
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("chromium runs");
    assert!(out.status.success(), "chromium failed: {}", stderr(&out));
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr(&out),
    )
}

#[test]
fn the_report_loads_in_a_headless_browser_with_its_charts_drawn() {
    let Some(browser) = chromium() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "chromium is missing; .ci/run installs it (apt-get install chromium)"
        );
        eprintln!("note: chromium is not installed; skipping the browser check of the report");
        return;
    };
    let s = Scratch::new();
    run_mixed(&s);
    let out = report(&s, &["out.jsonl", "-o", "report.html"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let page = std::fs::canonicalize(s.path("report.html")).unwrap();
    // A profile of its own, so parallel tests never share one.
    let profile = format!("--user-data-dir={}", s.path("profile").display());

    let (dom, log) = headless(&browser, &page, &[profile.clone(), "--dump-dom".into()]);
    let console_errors: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("Uncaught") || (l.contains("CONSOLE") && l.contains("ERROR")))
        .collect();
    assert!(
        console_errors.is_empty(),
        "console errors: {console_errors:?}"
    );
    // The charts are in the DOM after load, with their data points.
    assert!(dom.contains("id=\"chart-throughput\""), "{dom}");
    let points = dom.matches(r#"class="pt" data-series="#).count();
    let lines = dom.matches(r#"<path class="series" data-series="#).count();
    let bars = dom.matches(r#"<rect class="bar" data-label="#).count();
    let busy = dom.matches(r#"<rect class="busy" data-worker="#).count();
    assert!(points >= 3, "{points} points");
    assert!(lines >= 3, "{lines} lines");
    assert!(
        bars >= 17,
        "{bars} bars: the latency histogram and failure kinds"
    );
    assert_eq!(busy, 3, "one bar per worker");
    assert!(!dom.contains(INJECTION), "the injected record stayed text");
    assert!(dom.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));

    let shot = s.path("report.png");
    let (_, log) = headless(
        &browser,
        &page,
        &[
            profile,
            format!("--screenshot={}", shot.display()),
            "--window-size=1280,2000".into(),
        ],
    );
    assert!(!log.contains("Uncaught"), "{log}");
    let png = std::fs::read(&shot).expect("a screenshot");
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "a PNG");
    assert!(png.len() > 20_000, "a page with content, not a blank one");
}

#[test]
fn no_history_takes_no_samples_and_the_report_says_so() {
    let s = Scratch::new();
    s.write("in.csv", id_csv(50));
    let out = s.job("cat", &["--no-history"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = report(&s, &["out.jsonl", "-o", "r.html"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let html = s.read("r.html");
    assert!(html.contains("This job has no history"), "{html}");
    assert_eq!(count(&html, r#"class="pt""#), 0);
    // The counts and settings are still there.
    assert!(html.contains("<b>50</b>"));
    assert!(html.contains("input.0.fingerprint"));
    // Without the flag, the same job records samples.
    let s = Scratch::new();
    s.write("in.csv", id_csv(50));
    let out = s.job("cat", &[]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = report(&s, &["out.jsonl", "-o", "r.html"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(count(&s.read("r.html"), r#"class="pt""#) >= 1);
}
