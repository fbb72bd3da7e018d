//! A checkpoint written by a herdsman whose ledger stored byte offsets and lines (schema
//! version 1): the run is refused with one clear sentence and exit code 1, like a checkpoint
//! from a newer herdsman, and --restart starts the job over.

use crate::common;

use std::process::Command;

use common::*;

/// Writes a version 1 ledger with one committed chunk into `state`, through Python's sqlite3.
fn write_v1_ledger(s: &Scratch, state: &str) {
    std::fs::create_dir_all(s.path(state)).unwrap();
    let script = r#"
import sqlite3, sys
c = sqlite3.connect(sys.argv[1])
c.executescript('''
CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, description TEXT NOT NULL, applied_at INTEGER NOT NULL);
CREATE TABLE jobs (id INTEGER PRIMARY KEY, identity TEXT NOT NULL, created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL, finished_at INTEGER, summary TEXT);
CREATE TABLE chunks (job_id INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    chunk INTEGER NOT NULL, state TEXT NOT NULL, claim_owner TEXT, lease_expires_at INTEGER,
    attempt INTEGER NOT NULL DEFAULT 0, start_file INTEGER, start_offset INTEGER,
    start_line INTEGER, start_seq INTEGER, end_file INTEGER, end_offset INTEGER, end_line INTEGER,
    end_seq INTEGER, records INTEGER, ok INTEGER, failed INTEGER, filtered INTEGER,
    outputs INTEGER, retries INTEGER, output_end INTEGER, failures_end INTEGER,
    committed_at INTEGER, PRIMARY KEY (job_id, chunk)) WITHOUT ROWID;
CREATE INDEX chunks_by_state ON chunks (job_id, state, chunk);
INSERT INTO schema_migrations VALUES (1, 'jobs and chunks', 0);
INSERT INTO jobs (identity, created_at, updated_at) VALUES ('{}', 0, 0);
INSERT INTO chunks VALUES (1, 0, 'committed', NULL, NULL, 1, 0, 9, 2, 0, 0, 40, 6, 5,
    5, 5, 0, 0, 5, 0, 100, 0, 0);
PRAGMA user_version = 1;
''')
c.commit()
"#;
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(s.path(state).join("ledger.sqlite"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn an_older_checkpoint_is_refused_clearly_and_restart_starts_over() {
    let s = Scratch::new();
    s.write("in.csv", id_csv(20));
    let run = |extra: &[&str]| {
        s.herdsman()
            .args(["run", "-i", "in.csv", "-w", "cat", "-o", "out.jsonl"])
            .args(["--progress", "none", "-q"])
            .args(extra)
            .output()
            .unwrap()
    };
    write_v1_ledger(&s, ".out.jsonl.herdsman");
    s.write("out.jsonl.partial", "{\"id\":\"0\"}\n");

    let out = run(&[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("older herdsman"), "{err}");
    assert!(err.contains("cannot resume"), "{err}");
    assert!(err.contains("--restart"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(!s.path("out.jsonl").exists(), "nothing may be published");

    // `status` says the same, without a crash.
    let status = s.herdsman().args(["status", "out.jsonl"]).output().unwrap();
    assert_ne!(status.status.code(), Some(0));
    assert!(
        stderr(&status).contains("older herdsman"),
        "{}",
        stderr(&status)
    );

    let out = run(&["--restart"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let got: Vec<String> = json_lines(&s.read("out.jsonl"))
        .iter()
        .map(|v| v["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(got, (0..20).map(|i| i.to_string()).collect::<Vec<_>>());
}
