//! The checkpoint of a job: its identity (options, inputs and worker script by content),
//! opening it in the ledger (accepting an earlier version's form of the same job), the counts
//! it committed, and putting files renamed by a crash back where a resume expects them.
//!
//! This module must never accept a checkpoint of another job as this one.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use herdsman_io::{Format, InputPath};
use herdsman_ledger::{JobIdentity, Ledger, LedgerError, Opened};

use crate::config::{canonical, usage, EnvError, RunConfig, Transform};
use crate::inputs::Inputs;
use crate::summary::Counts;

/// What identifies this job: the options that change results, the files the worker or
/// command names (their contents), and the inputs by canonical path and content. Every path
/// is canonical, so the same job started from another directory, through a symbolic link or
/// as `./job.toml` has the same identity.
pub(crate) fn job_identity(cfg: &RunConfig, inputs: &Inputs) -> Result<JobIdentity> {
    let mut id = JobIdentity::new();
    for (k, v) in cfg.result_identity() {
        id.insert(k, v);
    }
    if let Some(out) = &cfg.output {
        id.insert("output", canonical(out).display().to_string());
    }
    if let Some(db) = &cfg.db_output {
        id.insert("output", db.to_string());
    }
    id.insert("failures", canonical(&cfg.failures).display().to_string());
    // Only for a shard: other jobs keep the identity they always had.
    if let Some(shard) = cfg.shard {
        id.insert("shard", shard.to_string());
    }
    for (path, value) in script_files(cfg) {
        id.insert(format!("{SCRIPT_KEY}{}", path.display()), value);
    }
    if let Some(url) = &cfg.remote.output {
        id.insert("output.url", url.clone());
    }
    if let Some(url) = &cfg.remote.failures {
        id.insert("failures.url", url.clone());
    }
    for (i, spec) in inputs.specs.iter().enumerate() {
        if let InputPath::Object(o) = &spec.path {
            // An object is identified as it was listed: a new ETag, size or modification
            // time is a changed input.
            id.insert(format!("input.{i}.path"), o.url.clone());
            id.insert(format!("input.{i}.format"), spec.format.name());
            id.insert(format!("input.{i}.size"), o.size.to_string());
            id.insert(
                format!("input.{i}.etag"),
                o.etag.clone().unwrap_or_default(),
            );
            id.insert(format!("input.{i}.mtime"), o.last_modified.clone());
            continue;
        }
        let InputPath::File(path) = &spec.path else {
            continue;
        };
        if matches!(spec.format, Format::Postgres | Format::Sqlite) {
            // A database has no content fingerprint: its rows are named by URL (without a
            // password), query and key (the last two in the options above).
            id.insert(format!("input.{i}.url"), spec.path.display_name());
            id.insert(format!("input.{i}.format"), spec.format.name());
            continue;
        }
        let fp = herdsman_io::fingerprint(path).map_err(|e| {
            anyhow::Error::new(EnvError(format!(
                "cannot read input {}: {e}; check that it is a readable file",
                path.display()
            )))
        })?;
        id.insert(
            format!("input.{i}.path"),
            canonical(path).display().to_string(),
        );
        id.insert(format!("input.{i}.format"), spec.format.name());
        id.insert(format!("input.{i}.size"), fp.size.to_string());
        id.insert(format!("input.{i}.mtime"), fp.mtime_ns.to_string());
        id.insert(
            format!("input.{i}.fingerprint"),
            format!("{:032x}", fp.hash),
        );
    }
    Ok(id)
}

/// The prefix of the identity keys that hold the fingerprint of a file the worker names.
pub(crate) const SCRIPT_KEY: &str = "script ";

/// The script of the worker or `--exec` command: the program itself when it is a file of
/// the job (`./worker.sh`), or else the first word after the program that is not an option
/// (`python3 worker.py`, `python3 -u worker.py`, `node worker.js`), resolved against the
/// worker's directory, when it exists as a regular file. It is identified by canonical path,
/// size and content fingerprint: a script edited between two runs changes what the records
/// turn into, so it changes the job. Later arguments are not part of it (they may name data
/// or marker files that change as the job runs), nor are words with placeholders or programs
/// found on `PATH`.
pub(crate) fn script_files(cfg: &RunConfig) -> Vec<(PathBuf, String)> {
    let (words, shell): (&[String], bool) = match &cfg.transform {
        Transform::Worker { argv, shell, .. } => (argv, *shell),
        Transform::Exec {
            template, shell, ..
        } => (template, *shell),
        Transform::Copy => return Vec::new(),
    };
    let dir = cfg.workdir.clone().unwrap_or_else(|| PathBuf::from("."));
    let split: Vec<String> = if shell {
        // A shell command line: its words, roughly; quotes are not part of file names.
        words
            .iter()
            .flat_map(|w| w.split_whitespace())
            .map(|w| w.trim_matches(|c| c == '\'' || c == '"').to_string())
            .collect()
    } else {
        words.to_vec()
    };
    let file = |word: &str| -> Option<PathBuf> {
        if word.is_empty() || word.contains('{') {
            return None;
        }
        let path = dir.join(word);
        std::fs::metadata(&path)
            .is_ok_and(|m| m.is_file())
            .then_some(path)
    };
    let script = split.first().and_then(|w| file(w)).or_else(|| {
        split
            .iter()
            .skip(1)
            .find(|w| !w.starts_with('-'))
            .and_then(|w| file(w))
    });
    script
        .and_then(|path| {
            let fp = herdsman_io::fingerprint(&path).ok()?;
            Some((
                canonical(&path),
                format!("size {} content {:032x}", fp.size, fp.hash),
            ))
        })
        .into_iter()
        .collect()
}

/// Whether a checkpoint written by an earlier version of herdsman describes the same job:
/// it stored input paths as typed and output paths without resolving `..` or links, and no
/// worker files. The differences allowed are exactly those: an input path whose canonical
/// form (from the current directory) is the current one, or whose contents (size, mtime and
/// fingerprint, all still compared) are unchanged; an output path that resolves to the
/// current one; and worker files the old checkpoint did not record.
pub(crate) fn same_job_older_form(stored: &JobIdentity, now: &JobIdentity) -> bool {
    let stored_has_scripts = stored.entries.keys().any(|k| k.starts_with(SCRIPT_KEY));
    stored.diff(now).iter().all(|c| {
        let (Some(was), Some(is)) = (c.was.as_deref(), c.now.as_deref()) else {
            return c.was.is_none() && c.key.starts_with(SCRIPT_KEY) && !stored_has_scripts;
        };
        match c.key.as_str() {
            "output" | "failures" => canonical(Path::new(was)) == Path::new(is),
            k if k.starts_with("input.") && k.ends_with(".path") => {
                canonical(Path::new(was)) == Path::new(is) || !Path::new(was).is_absolute()
            }
            _ => false,
        }
    })
}

/// Opens the job in the ledger. Besides the exact identity, it accepts a checkpoint of the
/// same job in an earlier version's form, and a changed job whose checkpoint committed
/// nothing (a configuration mistake fixed before any work was kept): that job is replaced by
/// this one, with the notice returned.
pub(crate) fn open_job(
    cp: &mut Checkpoint,
    identity: &JobIdentity,
) -> Result<(Opened, Option<String>)> {
    match cp.ledger.open_job(identity) {
        Err(LedgerError::IdentityChanged { changes }) => {
            let status = cp.ledger.status().map_err(ledger_usage)?;
            if let Some(stored) = status.identity.as_ref() {
                if same_job_older_form(stored, identity) {
                    let opened = cp.ledger.open_job(stored).map_err(ledger_usage)?;
                    return Ok((opened, None));
                }
            }
            if status.commits.is_empty() && !status.finished() {
                cp.ledger.reset().map_err(ledger_usage)?;
                let opened = cp.ledger.open_job(identity).map_err(ledger_usage)?;
                let list: Vec<String> = changes.iter().map(ToString::to_string).collect();
                let notice = format!(
                    "the job changed since the last run, which kept no records ({}); starting it anew with the new settings",
                    list.join("; ")
                );
                return Ok((opened, Some(notice)));
            }
            Err(ledger_usage(LedgerError::IdentityChanged { changes }))
        }
        other => Ok((other.map_err(ledger_usage)?, None)),
    }
}

/// The ledger of a checkpointed run, with its lock.
pub(crate) struct Checkpoint {
    pub(crate) dir: PathBuf,
    pub(crate) ledger: Box<dyn Ledger>,
}

pub(crate) fn counts_of(commits: &[herdsman_ledger::ChunkCommit]) -> Counts {
    Counts::from(herdsman_ledger::Totals::of(commits).counts)
}

/// Ledger errors that the user can fix (a second run, a changed job) are usage errors.
pub(crate) fn ledger_usage(e: LedgerError) -> anyhow::Error {
    match e {
        LedgerError::Locked { .. }
        | LedgerError::OutputLocked { .. }
        | LedgerError::IdentityChanged { .. } => usage(crate::config::with_causes(&e)),
        other => anyhow::Error::new(other),
    }
}

/// A crash between the final renames and the ledger's "finished" mark leaves a final file
/// where the partial one should be. If its length is exactly the committed length, move it
/// back so the resumed run finishes the job the normal way.
pub(crate) fn reclaim_renamed(path: &Path, committed: u64) -> Result<()> {
    let partial = herdsman_io::partial_path(path);
    if partial.exists() {
        return Ok(());
    }
    match std::fs::metadata(path) {
        Ok(m) if m.len() == committed => std::fs::rename(path, &partial).with_context(|| {
            format!(
                "cannot move {} back to {} to resume",
                path.display(),
                partial.display()
            )
        }),
        Ok(m) => Err(usage(format!(
            "cannot resume: {} is missing and {} holds {} bytes where the checkpoint committed {committed}; run with --restart to start over",
            partial.display(),
            path.display(),
            m.len()
        ))),
        Err(_) if committed == 0 => Ok(()),
        Err(_) => Err(usage(format!(
            "cannot resume: {} is missing although the checkpoint committed {committed} bytes to it; run with --restart to start over",
            partial.display()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now_form(dir: &Path) -> JobIdentity {
        JobIdentity::new()
            .with(
                "output",
                canonical(&dir.join("out.jsonl")).display().to_string(),
            )
            .with(
                "input.0.path",
                canonical(&dir.join("in.csv")).display().to_string(),
            )
            .with("input.0.size", "10")
            .with(
                format!("{SCRIPT_KEY}{}", dir.join("w.py").display()),
                "size 1 content 0",
            )
    }

    #[test]
    fn an_older_checkpoint_of_the_same_job_is_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("in.csv"), "x\n").unwrap();
        // Paths as typed, an output path with `..`, no worker files.
        let old = JobIdentity::new()
            .with("output", d.join("sub/../out.jsonl").display().to_string())
            .with("input.0.path", "in.csv")
            .with("input.0.size", "10");
        std::fs::create_dir(d.join("sub")).unwrap();
        assert!(same_job_older_form(&old, &now_form(d)));
    }

    #[test]
    fn an_older_checkpoint_of_another_job_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let old = JobIdentity::new()
            .with("output", d.join("other.jsonl").display().to_string())
            .with("input.0.path", "in.csv")
            .with("input.0.size", "10");
        assert!(!same_job_older_form(&old, &now_form(d)));
        let old = JobIdentity::new()
            .with("output", d.join("out.jsonl").display().to_string())
            .with("input.0.path", "in.csv")
            .with("input.0.size", "11");
        assert!(!same_job_older_form(&old, &now_form(d)));
        // A current checkpoint that recorded worker files must match them exactly.
        let mut changed = now_form(d);
        changed.insert(
            format!("{SCRIPT_KEY}{}", d.join("w.py").display()),
            "size 2 content 1",
        );
        assert!(!same_job_older_form(&changed, &now_form(d)));
    }
}
