//! Shared helpers for the CLI integration tests: run the real binary in a temporary
//! directory and check the accounting identity on every run.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Output;

use assert_cmd::Command;
use serde_json::Value;

/// A scratch directory with the test workers at hand.
pub struct Scratch {
    pub dir: tempfile::TempDir,
}

impl Scratch {
    pub fn new() -> Scratch {
        Scratch {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn write(&self, name: &str, content: impl AsRef<[u8]>) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, content).expect("write fixture");
        p
    }

    pub fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name))
            .unwrap_or_else(|e| panic!("cannot read {name}: {e}"))
    }

    /// `herdsman` with the scratch directory as working directory and plain progress off.
    pub fn herdsman(&self) -> Command {
        let mut cmd = Command::cargo_bin("herdsman").expect("binary built");
        cmd.current_dir(self.dir.path());
        cmd.timeout(std::time::Duration::from_secs(120));
        cmd
    }
}

/// The path of a test worker script.
pub fn worker(name: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/workers")
        .join(name);
    p.display().to_string()
}

/// `python3 <worker> args...` as one --worker string.
pub fn py_worker(name: &str, args: &[&str]) -> String {
    let mut s = format!("python3 {}", worker(name));
    for a in args {
        s.push(' ');
        s.push_str(a);
    }
    s
}

/// A CSV of `id,value` rows with values `id * 3`.
pub fn id_csv(rows: usize) -> String {
    let mut s = String::from("id,value\n");
    for i in 0..rows {
        s.push_str(&format!("{i},{}\n", i * 3));
    }
    s
}

pub fn lines(s: &str) -> Vec<&str> {
    s.lines().filter(|l| !l.is_empty()).collect()
}

pub fn json_lines(s: &str) -> Vec<Value> {
    lines(s)
        .into_iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect()
}

/// Checks that the summary's counts add up and match the files.
pub fn check_accounting(
    scratch: &Scratch,
    summary: &str,
    output: Option<&str>,
    failures: &str,
) -> Value {
    let s: Value = serde_json::from_str(&scratch.read(summary)).expect("summary JSON");
    let t = &s["total"];
    let n = |k: &str| {
        t[k].as_u64()
            .unwrap_or_else(|| panic!("summary lacks {k}: {s}"))
    };
    assert_eq!(
        n("records"),
        n("succeeded") + n("failed") + n("filtered") + n("not_run"),
        "accounting identity broken: {s}"
    );
    if let Some(out) = output {
        assert_eq!(
            lines(&scratch.read(out)).len() as u64,
            n("outputs"),
            "output lines vs summary"
        );
    }
    if scratch.path(failures).exists() {
        assert_eq!(
            lines(&scratch.read(failures)).len() as u64,
            n("failed"),
            "dead letters vs summary"
        );
    } else {
        assert_eq!(n("failed"), 0);
    }
    s
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

impl Scratch {
    /// `herdsman run -i in.csv -w WORKER -o out.jsonl --summary-json s.json EXTRA...`: the
    /// shape of most runs in the tests.
    pub fn job(&self, worker: &str, extra: &[&str]) -> Command {
        let mut cmd = self.herdsman();
        cmd.args(["run", "-i", "in.csv", "-w", worker, "-o", "out.jsonl"])
            .args(["--summary-json", "s.json"])
            .args(extra);
        cmd
    }

    /// The accounting check of a [`Scratch::job`] run.
    pub fn accounting(&self) -> Value {
        check_accounting(self, "s.json", Some("out.jsonl"), "out.failures.jsonl")
    }
}
