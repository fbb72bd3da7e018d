//! `herdsman status --ledger URL OUTPUT`: a shared job across its nodes — chunks done,
//! leased (by which node, until when) and waiting; each node's committed records and
//! throughput; nodes whose leases ran out (dead, or paused).
//!
//! This module only reads the ledger: it must never change the job.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use herdsman_ledger::Ledger;
use herdsman_ledger_postgres::ChunkState;
use serde::Serialize;

use crate::cli::StateArgs;

/// One node as the status shows it.
#[derive(Debug, Default, Serialize)]
struct NodeJson {
    /// Chunks it committed.
    chunks_done: u64,
    /// Records in those chunks.
    records: u64,
    /// Its committed records per second, from the job's start to its last commit.
    records_per_s: f64,
    /// Chunks it holds under a live lease.
    leased: u64,
    /// Chunks it holds under a lease that ran out: it looks dead (or paused).
    expired: u64,
}

/// A leased chunk.
#[derive(Debug, Serialize)]
struct LeaseJson {
    chunk: u64,
    node: String,
    attempt: u64,
    /// Seconds until the lease runs out (negative: it ran out that long ago).
    expires_in_s: f64,
    expired: bool,
}

#[derive(Debug, Serialize)]
struct StatusJson {
    ledger: String,
    job: String,
    finished: bool,
    chunks: u64,
    done: u64,
    leased: u64,
    waiting: u64,
    records: u64,
    succeeded: u64,
    failed: u64,
    filtered: u64,
    leases: Vec<LeaseJson>,
    nodes: BTreeMap<String, NodeJson>,
    dead_nodes: Vec<String>,
}

/// Prints the status of the shared job that writes `args.state` (its output).
pub fn status(args: &StateArgs) -> Result<()> {
    let url = args.ledger.as_deref().unwrap_or_default();
    let ledger = super::connect(url, &args.state)?;
    let job = super::job_name(&args.state);
    let st = ledger
        .status()
        .with_context(|| format!("cannot read the shared job {job}"))?;
    if st.identity.is_none() {
        return Err(crate::config::usage(format!(
            "the ledger at {} holds no job that writes {job}; give the output path the nodes were started with",
            super::redact(url)
        )));
    }
    let rows = ledger
        .chunk_rows()
        .with_context(|| format!("cannot read the chunks of {job}"))?;
    let now = SystemTime::now();
    let started = st.created_at.unwrap_or(now);
    let secs_between = |a: SystemTime, b: SystemTime| -> f64 {
        match b.duration_since(a) {
            Ok(d) => d.as_secs_f64(),
            Err(e) => -e.duration().as_secs_f64(),
        }
    };
    let mut nodes: BTreeMap<String, NodeJson> = BTreeMap::new();
    let mut last_commit: BTreeMap<String, SystemTime> = BTreeMap::new();
    let mut leases = Vec::new();
    let (mut done, mut leased, mut waiting) = (0u64, 0u64, 0u64);
    for r in &rows {
        let owner = r.owner.clone().unwrap_or_default();
        match r.state {
            ChunkState::Committed => {
                done += 1;
                let n = nodes.entry(owner.clone()).or_default();
                n.chunks_done += 1;
                n.records += r.records;
                if let Some(at) = r.committed_at {
                    let e = last_commit.entry(owner).or_insert(at);
                    *e = (*e).max(at);
                }
            }
            ChunkState::Claimed => {
                leased += 1;
                let n = nodes.entry(owner.clone()).or_default();
                if r.lease_expired {
                    n.expired += 1;
                } else {
                    n.leased += 1;
                }
                leases.push(LeaseJson {
                    chunk: r.chunk,
                    node: owner,
                    attempt: r.attempt,
                    expires_in_s: r.lease_expires_at.map_or(0.0, |at| secs_between(now, at)),
                    expired: r.lease_expired,
                });
            }
            ChunkState::Pending => waiting += 1,
        }
    }
    for (name, n) in nodes.iter_mut() {
        if let Some(at) = last_commit.get(name) {
            let secs = secs_between(started, *at).max(0.001);
            n.records_per_s = n.records as f64 / secs;
        }
    }
    let dead_nodes: Vec<String> = nodes
        .iter()
        .filter(|(_, n)| n.expired > 0 && n.leased == 0)
        .map(|(k, _)| k.clone())
        .collect();
    let t = st.totals.counts;
    let mut out = std::io::stdout().lock();
    if args.json {
        let v = StatusJson {
            ledger: super::redact(url),
            job,
            finished: st.finished(),
            chunks: rows.len() as u64,
            done,
            leased,
            waiting,
            records: t.records,
            succeeded: t.ok,
            failed: t.failed,
            filtered: t.filtered,
            leases,
            nodes,
            dead_nodes,
        };
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
        return Ok(());
    }
    writeln!(out, "ledger      {}", super::redact(url))?;
    writeln!(out, "job         {job}")?;
    let state = if st.finished() {
        "finished"
    } else if done as usize == rows.len() && !rows.is_empty() {
        "every chunk done; the output is being assembled (or a run must assemble it)"
    } else {
        "running (or interrupted: run the same command on any node to go on)"
    };
    writeln!(out, "state       {state}")?;
    writeln!(
        out,
        "chunks      {done} done, {leased} leased, {waiting} waiting, of {}",
        rows.len()
    )?;
    writeln!(
        out,
        "records     {} done: {} succeeded, {} failed, {} filtered",
        t.records, t.ok, t.failed, t.filtered
    )?;
    for l in &leases {
        let when = if l.expired {
            format!(
                "lease ran out {} ago: the node looks dead; another node takes the chunk over",
                humantime::format_duration(Duration::from_secs(l.expires_in_s.abs() as u64))
            )
        } else {
            format!(
                "lease runs out in {}",
                humantime::format_duration(Duration::from_secs(l.expires_in_s as u64))
            )
        };
        writeln!(
            out,
            "leased      chunk {} by {} (attempt {}): {when}",
            l.chunk, l.node, l.attempt
        )?;
    }
    for (name, n) in &nodes {
        writeln!(
            out,
            "node        {name}: {} chunks, {} records done, {:.1} records/s{}",
            n.chunks_done,
            n.records,
            n.records_per_s,
            if n.leased + n.expired > 0 {
                format!(", holds {}", n.leased + n.expired)
            } else {
                String::new()
            }
        )?;
    }
    if !dead_nodes.is_empty() {
        writeln!(out, "dead nodes  {}", dead_nodes.join(", "))?;
    }
    Ok(())
}
