//! The start and the end of a shared run (`herdsman run --ledger postgres://…`): a node
//! starts its workers before it opens the job (and stops them when the job is refused), its
//! connections do not queue behind a migration of the ledger's schema once the schema is
//! made, and the node that publishes the output announces the job's end to the others.
//! Without PostgreSQL installed the tests skip with a printed reason; with `CI` set they fail.

use crate::common;
use crate::distributed::{input, job_args_for, server};

use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use herdsman_ledger_postgres::{PostgresLedger, PostgresOptions};

/// One node's run of the job over `in.csv` that writes `out.jsonl`, with `extra` arguments.
fn run_node(s: &Scratch, url: &str, extra: &[&str]) -> std::process::Output {
    let mut args = job_args_for("in.csv");
    args.extend(["-o", "out.jsonl", "--ledger", url].map(String::from));
    args.extend(extra.iter().map(|a| a.to_string()));
    s.herdsman().args(&args).output().unwrap()
}

/// The canonical path of the job's output: its name in the ledger.
fn job_name(s: &Scratch) -> String {
    std::fs::canonicalize(s.dir.path())
        .unwrap()
        .join("out.jsonl")
        .display()
        .to_string()
}

/// Whether process `pid` still runs (a zombie, or no process, does not).
fn running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name in parentheses.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

#[test]
fn a_node_refused_as_changed_started_its_workers_first_and_leaves_none_running() {
    let Some(pg) = server("startup-refused") else {
        return;
    };
    let s = Scratch::new();
    let url = pg.url();
    s.write("in.csv", input(30));
    let first = run_node(&s, &url, &[]);
    assert_eq!(first.status.code(), Some(1), "{}", stderr(&first));
    s.write("in.csv", input(31));
    let out = run_node(&s, &url, &["-v", "--log-format", "json"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("input.0.size"), "names what changed: {err}");
    // The workers were started before the job was opened (so their start-up overlaps the
    // ledger's): both of them, with their process ids in the log.
    let pids: Vec<u32> = err
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["message"] == "worker started")
        .filter_map(|v| v["pid"].as_u64())
        .map(|p| p as u32)
        .collect();
    assert_eq!(
        pids.len(),
        2,
        "both workers start before the job is opened: {err}"
    );
    // ... and the refusal stopped them.
    let deadline = Instant::now() + Duration::from_secs(30);
    while pids.iter().any(|&p| running(p)) {
        assert!(
            Instant::now() < deadline,
            "a worker of the refused node still runs: {pids:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_node_that_publishes_the_output_announces_the_end_of_the_job() {
    use postgres::fallible_iterator::FallibleIterator;
    let Some(pg) = server("startup-announce") else {
        return;
    };
    let s = Scratch::new();
    let url = pg.url();
    s.write("in.csv", input(30));
    let mut listener = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    listener
        .batch_execute("LISTEN herdsman_job_finished")
        .unwrap();
    let out = run_node(&s, &url, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let job = job_name(&s);
    // The announcement names the job (its output's path); it arrived while the node ran.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut heard: Vec<String> = Vec::new();
    while !heard.contains(&job) {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "no announcement of the job's end within 30 s; heard {heard:?}"
        );
        if let Some(n) = listener.notifications().timeout_iter(left).next().unwrap() {
            heard.push(n.payload().to_string());
        }
    }
}

#[test]
fn a_nodes_connection_does_not_wait_for_a_schema_migration_once_the_schema_is_made() {
    let Some(pg) = server("startup-schema") else {
        return;
    };
    let url = pg.url();
    let options = || PostgresOptions {
        job: "startup-schema".into(),
        ..PostgresOptions::default()
    };
    // The first connection makes the schema.
    drop(PostgresLedger::connect(&url, options()).unwrap());
    // Another node's migration transaction holds the schema's lock...
    let mut other = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let mut tx = other.transaction().unwrap();
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext('herdsman-ledger:' || $1::text))",
        &[&"\"herdsman\""],
    )
    .unwrap();
    // ... and a node connecting meanwhile does not wait for it.
    let (done, connected) = mpsc::channel();
    let url2 = url.clone();
    std::thread::spawn(move || {
        let _ = done.send(PostgresLedger::connect(&url2, options()).map(drop));
    });
    let result = connected.recv_timeout(Duration::from_secs(30));
    tx.rollback().unwrap();
    match result {
        Ok(r) => r.expect("the second connection is made"),
        Err(_) => panic!("connecting waited 30 s for another connection's schema lock"),
    }
}
