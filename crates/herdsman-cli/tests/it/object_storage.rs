//! Inputs and outputs on object storage (`s3://`), against a local S3-compatible server that
//! each test starts: moto in server mode (`pip install 'moto[server]'`). The tests fail when
//! `CI` is set and moto is missing, and skip with a note otherwise.
//!
//! Every object is created and read back with boto3 (`tests/workers/s3_tool.py`), so the
//! server is held against a second client, not only against herdsman.

use crate::common;

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// A moto server on a free port, stopped when dropped (shared with `distributed_s3`).
pub(crate) struct Moto {
    child: Child,
    port: u16,
}

impl Moto {
    /// Starts moto, or says why not: `None` (after a note) when it is not installed and
    /// `CI` is not set; a panic when `CI` is set.
    pub(crate) fn start(extra_env: &[(&str, &str)]) -> Option<Moto> {
        let probe = Command::new("python3")
            .args(["-c", "import moto.server, boto3"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if !probe.is_ok_and(|s| s.success()) {
            assert!(
                std::env::var_os("CI").is_none(),
                "moto is needed for the object-storage tests: pip install 'moto[server]'"
            );
            eprintln!("note: moto is not installed (pip install 'moto[server]'); skipping");
            return None;
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut cmd = Command::new("python3");
        cmd.args([
            "-m",
            "moto.server",
            "-H",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("start moto");
        let moto = Moto { child, port };
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "moto did not answer within 60 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(moto)
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The environment that points a client at this server.
    pub(crate) fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_ALLOW_HTTP", "true".into()),
            ("AWS_ACCESS_KEY_ID", "testing".into()),
            ("AWS_SECRET_ACCESS_KEY", "testing".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_DEFAULT_REGION", "us-east-1".into()),
        ]
    }

    /// Runs `s3_tool.py ARGS` in `dir`; its output.
    fn tool(&self, dir: &Path, args: &[&str]) -> std::process::Output {
        let mut cmd = Command::new("python3");
        cmd.arg(worker("s3_tool.py")).args(args).current_dir(dir);
        for (k, v) in self.env() {
            cmd.env(k, v);
        }
        cmd.output().expect("run s3_tool.py")
    }

    pub(crate) fn ok(&self, dir: &Path, args: &[&str]) -> String {
        let out = self.tool(dir, args);
        assert!(
            out.status.success(),
            "s3_tool.py {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("UTF-8")
    }

    /// The keys under `prefix`.
    pub(crate) fn keys(&self, dir: &Path, bucket: &str, prefix: &str) -> Vec<String> {
        self.ok(dir, &["ls", bucket, prefix])
            .lines()
            .map(String::from)
            .collect()
    }

    /// The bytes of an object, downloaded with boto3.
    pub(crate) fn get(&self, dir: &Path, bucket: &str, key: &str) -> Vec<u8> {
        self.ok(dir, &["get", bucket, key, "downloaded.tmp"]);
        let bytes = std::fs::read(dir.join("downloaded.tmp")).expect("downloaded");
        std::fs::remove_file(dir.join("downloaded.tmp")).expect("remove the download");
        bytes
    }

    /// Points `cmd` at this server, and at nothing else.
    pub(crate) fn point(&self, cmd: &mut Command) {
        for (k, _) in std::env::vars() {
            if k.starts_with("AWS_") {
                cmd.env_remove(k);
            }
        }
        for (k, v) in self.env() {
            cmd.env(k, v);
        }
    }

    /// `herdsman` in the scratch directory, pointed at this server.
    fn herdsman(&self, s: &Scratch) -> assert_cmd::Command {
        let mut cmd = s.herdsman();
        for (k, _) in std::env::vars() {
            if k.starts_with("AWS_") {
                cmd.env_remove(k);
            }
        }
        for (k, v) in self.env() {
            cmd.env(k, v);
        }
        cmd
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A JSONL input of `n` records with ids from `from`.
fn jsonl(from: usize, n: usize) -> String {
    (from..from + n)
        .map(|i| format!("{{\"id\": {i}, \"name\": \"n{i}\"}}\n"))
        .collect()
}

#[test]
fn csv_and_jsonl_inputs_from_s3_with_output_to_s3_equal_the_local_run_byte_for_byte() {
    let Some(moto) = Moto::start(&[]) else { return };
    let s = Scratch::new();
    let d = s.dir.path();
    moto.ok(d, &["mkbucket", "bkt"]);
    // CSV, with a malformed row that becomes a dead letter.
    let mut csv = id_csv(300);
    csv.push_str("7,8,9\n");
    s.write("in.csv", &csv);
    moto.ok(d, &["put", "bkt", "data/in.csv", "in.csv"]);
    moto.herdsman(&s)
        .args(["run", "-i", "in.csv", "-w", "cat", "-o", "local.jsonl"])
        .args(["--chunk-size", "16", "-q"])
        .assert()
        .code(1);
    moto.herdsman(&s)
        .args(["run", "-i", "s3://bkt/data/in.csv", "-w", "cat"])
        .args([
            "-o",
            "s3://bkt/results/out.jsonl",
            "--chunk-size",
            "16",
            "-q",
        ])
        .args(["--summary-json", "s.json"])
        .assert()
        .code(1);
    let remote = moto.get(d, "bkt", "results/out.jsonl");
    assert_eq!(remote, std::fs::read(s.path("local.jsonl")).unwrap());
    assert_eq!(lines(std::str::from_utf8(&remote).unwrap()).len(), 300);
    // The dead letters are published beside the output, and name the object they came from.
    let dead = String::from_utf8(moto.get(d, "bkt", "results/out.failures.jsonl")).unwrap();
    let dead = json_lines(&dead);
    assert_eq!(dead.len(), 1);
    assert!(
        dead[0].to_string().contains("s3://bkt/data/in.csv"),
        "{}",
        dead[0]
    );
    let summary: serde_json::Value = serde_json::from_str(&s.read("s.json")).unwrap();
    assert_eq!(summary["output"], "s3://bkt/results/out.jsonl");

    // JSONL in three objects, read through a glob (in key order, `readme.txt` left out)
    // and through a prefix that ends with `/` (everything under it).
    for (i, from) in [(0, 0), (1, 100), (2, 250)] {
        let name = format!("part-{i}.jsonl");
        s.write(&name, jsonl(from, 100 + i * 10));
        moto.ok(d, &["put", "bkt", &format!("parts/{name}"), &name]);
        moto.ok(d, &["put", "bkt", &format!("only/{name}"), &name]);
    }
    moto.ok(d, &["put", "bkt", "parts/readme.txt", "in.csv"]);
    moto.herdsman(&s)
        .args([
            "run",
            "-i",
            "part-*.jsonl",
            "-w",
            "cat",
            "-o",
            "local2.jsonl",
            "-q",
        ])
        .assert()
        .success();
    let want = std::fs::read(s.path("local2.jsonl")).unwrap();
    for (input, out) in [
        ("s3://bkt/parts/*.jsonl", "glob.jsonl"),
        ("s3://bkt/only/", "prefix.jsonl"),
    ] {
        moto.herdsman(&s)
            .args(["run", "-i", input, "-w", "cat", "-q"])
            .args(["-o", &format!("s3://bkt/results/{out}")])
            .assert()
            .success();
        assert_eq!(
            moto.get(d, "bkt", &format!("results/{out}")),
            want,
            "{input}"
        );
    }
}

#[test]
fn parquet_input_from_s3_equals_the_local_read() {
    let Some(moto) = Moto::start(&[]) else { return };
    let s = Scratch::new();
    let d = s.dir.path();
    moto.ok(d, &["mkbucket", "bkt"]);
    let made = Command::new("python3")
        .arg(worker("parquet_tool.py"))
        .args(["typed", "in.parquet", "40", "7"])
        .current_dir(d)
        .status()
        .expect("run parquet_tool.py (pyarrow is needed)");
    assert!(made.success());
    moto.ok(d, &["put", "bkt", "t/in.parquet", "in.parquet"]);
    for columns in [&[][..], &["--columns", "name,id"][..]] {
        moto.herdsman(&s)
            .args([
                "run",
                "-i",
                "in.parquet",
                "-w",
                "cat",
                "-o",
                "local.jsonl",
                "-q",
            ])
            .args(["--chunk-size", "10"])
            .args(columns)
            .assert()
            .success();
        moto.herdsman(&s)
            .args([
                "run",
                "-i",
                "s3://bkt/t/in.parquet",
                "-w",
                "cat",
                "-o",
                "out.jsonl",
            ])
            .args(["-q", "--chunk-size", "10"])
            .args(columns)
            .assert()
            .success();
        assert_eq!(s.read("out.jsonl"), s.read("local.jsonl"), "{columns:?}");
        assert_eq!(lines(&s.read("out.jsonl")).len(), 40);
        std::fs::remove_file(s.path("out.jsonl")).unwrap();
        std::fs::remove_file(s.path("local.jsonl")).unwrap();
        let _ = std::fs::remove_dir_all(s.path(".out.jsonl.herdsman"));
        let _ = std::fs::remove_dir_all(s.path(".local.jsonl.herdsman"));
    }
}

/// The staged local copy of an s3 output (`.herdsman-remote/<hash>/<name>`), once the run
/// has created it or its partial file.
fn staged(dir: &Path, name: &str) -> Option<PathBuf> {
    std::fs::read_dir(dir.join(".herdsman-remote"))
        .ok()?
        .filter_map(|e| Some(e.ok()?.path().join(name)))
        .find(|p| p.exists() || herdsman_io_partial(p).exists())
}

fn herdsman_io_partial(p: &Path) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(".partial");
    PathBuf::from(s)
}

/// Chunks committed by the job writing the staged output `out`, read with `herdsman status`.
fn committed(dir: &Path, out: &Path) -> u64 {
    let o = Command::new(assert_cmd::cargo::cargo_bin("herdsman"))
        .args(["status", &out.display().to_string(), "--json"])
        .current_dir(dir)
        .stderr(Stdio::null())
        .output()
        .expect("run herdsman status");
    serde_json::from_slice::<serde_json::Value>(&o.stdout)
        .ok()
        .and_then(|v| v["chunks"].as_u64())
        .unwrap_or(0)
}

#[test]
fn sigkill_mid_run_with_s3_input_resumes_to_identical_output_and_nothing_is_visible_before_the_end()
{
    let Some(moto) = Moto::start(&[]) else { return };
    let s = Scratch::new();
    let d = s.dir.path();
    moto.ok(d, &["mkbucket", "bkt"]);
    s.write("in.jsonl", jsonl(0, 400));
    moto.ok(d, &["put", "bkt", "in/in.jsonl", "in.jsonl"]);
    // The reference: a local run with the gate open.
    std::fs::write(s.path("open"), "").unwrap();
    let gate = py_worker("gate.py", &["300", &d.display().to_string()]);
    moto.herdsman(&s)
        .args([
            "run",
            "-i",
            "in.jsonl",
            "-w",
            &gate,
            "-o",
            "local.jsonl",
            "-q",
        ])
        .args(["--chunk-size", "10", "-j", "2"])
        .assert()
        .success();
    std::fs::remove_file(s.path("open")).unwrap();
    let _ = std::fs::remove_file(s.path("reached"));

    // The s3 run holds every record from id 300 on until `open` exists.
    let args = [
        "run",
        "-i",
        "s3://bkt/in/in.jsonl",
        "-w",
        &gate,
        "-o",
        "s3://bkt/out/res.jsonl",
        "-q",
        "--chunk-size",
        "10",
        "-j",
        "2",
    ];
    let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("herdsman"));
    cmd.args(args)
        .current_dir(d)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (k, v) in moto.env() {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn herdsman");
    let deadline = Instant::now() + Duration::from_secs(120);
    let out = loop {
        assert!(
            Instant::now() < deadline,
            "the run did not reach the gate with a commit within 120 s"
        );
        assert!(child.try_wait().unwrap().is_none(), "the run ended early");
        if let Some(out) = staged(d, "res.jsonl") {
            if s.path("reached").exists() && committed(d, &out) > 0 {
                break out;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // Mid-run: nothing at the output's key, nor beside it.
    assert_eq!(moto.keys(d, "bkt", "out/"), Vec::<String>::new());
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert_eq!(moto.keys(d, "bkt", "out/"), Vec::<String>::new());
    assert!(committed(d, &out) > 0);

    std::fs::write(s.path("open"), "").unwrap();
    moto.herdsman(&s).args(args).assert().success();
    assert_eq!(
        moto.get(d, "bkt", "out/res.jsonl"),
        std::fs::read(s.path("local.jsonl")).unwrap()
    );
    // A changed input object is a changed job.
    s.write("in.jsonl", jsonl(0, 401));
    moto.ok(d, &["put", "bkt", "in/in.jsonl", "in.jsonl"]);
    let run = moto.herdsman(&s).args(args).assert().code(2);
    let err = stderr(run.get_output());
    assert!(err.contains("input.0"), "{err}");
}

#[test]
fn a_missing_bucket_or_key_is_exit_2_and_refused_credentials_exit_4_before_any_work() {
    let Some(moto) = Moto::start(&[]) else { return };
    let s = Scratch::new();
    let d = s.dir.path();
    moto.ok(d, &["mkbucket", "bkt"]);
    s.write("in.csv", id_csv(5));
    moto.ok(d, &["put", "bkt", "in.csv", "in.csv"]);
    let cases: [(&[&str], &str); 4] = [
        (
            &["-i", "s3://nobucket/in.csv", "-o", "out.jsonl"],
            "nobucket",
        ),
        (
            &["-i", "s3://bkt/missing.csv", "-o", "out.jsonl"],
            "missing.csv",
        ),
        (
            &["-i", "s3://bkt/*.jsonl", "-o", "out.jsonl"],
            "no object matches",
        ),
        (
            &["-i", "in.csv", "-o", "s3://nobucket/out.jsonl"],
            "nobucket",
        ),
    ];
    for (args, says) in cases {
        let run = moto
            .herdsman(&s)
            .arg("run")
            .args(args)
            .args(["-w", "cat"])
            .assert()
            .code(2);
        let err = stderr(run.get_output());
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(err.contains("check the bucket and key"), "{args:?}: {err}");
    }
    assert!(!s.path("out.jsonl").exists());

    // A server that checks credentials refuses unknown ones: an environment error.
    let Some(strict) = Moto::start(&[("INITIAL_NO_AUTH_ACTION_COUNT", "0")]) else {
        return;
    };
    let mut cmd = strict.herdsman(&s);
    cmd.env("AWS_ACCESS_KEY_ID", "AKIANOTAREALKEY00000").args([
        "run",
        "-i",
        "s3://bkt/in.csv",
        "-w",
        "cat",
        "-o",
        "out.jsonl",
    ]);
    let run = cmd.assert().code(4);
    let err = stderr(run.get_output());
    assert!(err.contains("AWS_ACCESS_KEY_ID"), "{err}");
    assert!(!s.path("out.jsonl").exists());
}
