//! The end of a shared job: the output and dead-letter file assembled from the committed
//! parts in chunk order (the manifest), streamed from the parts store, published atomically
//! (a temporary file beside each, fsynced, renamed, the directory fsynced; for an output on
//! object storage that file is the staged copy, then uploaded in one PUT or a multipart
//! upload that appears whole), then the job marked finished and the parts removed.
//!
//! Assembly is idempotent: it reads only committed parts, which never change, so running it
//! again (after a crash, or on two nodes at once) publishes the same bytes. This module must
//! never read a part the manifest does not name, and never mark the job finished before both
//! files are in place.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use herdsman_ledger::Ledger;
use herdsman_ledger_postgres::PostgresLedger;

use crate::config::RunConfig;
use crate::distributed::node::EndNotice;
use crate::distributed::parts::{coalesce, is_failures, split_part};
use crate::distributed::store::PartStore;
use crate::progress::Log;
use crate::summary::{Counts, Ending, Latency, Summary};

/// What [`finish`] needs.
pub(crate) struct Finish<'a> {
    pub(crate) cfg: &'a RunConfig,
    pub(crate) ledger: &'a mut PostgresLedger,
    pub(crate) output: &'a Path,
    pub(crate) store: &'a dyn PartStore,
    pub(crate) total: u64,
    /// This node completed the job (or found it complete): it assembles at once.
    pub(crate) assemble_now: bool,
    /// How long to wait for the node that completed the job to publish before assembling too.
    pub(crate) wait_for_others: Duration,
    pub(crate) started: Instant,
    pub(crate) latency: &'a Latency,
    pub(crate) log: &'a Log,
    /// Where the end of the job is heard (waiting for another node's assembly) and told
    /// (after this node's).
    pub(crate) notice: &'a mut EndNotice,
    /// The names this node's segment files start with, when it wrote any: an output that is
    /// one whole segment file of this node (which it no longer writes) is published by a
    /// hard link to it instead of a copy.
    pub(crate) own_segments: Option<&'a str>,
}

/// Every chunk is committed: publish the output (or wait for the node that does) and return
/// the job's summary.
pub(crate) fn finish(f: Finish<'_>) -> Result<Summary> {
    let Finish {
        cfg,
        ledger,
        output,
        store,
        total,
        assemble_now,
        wait_for_others,
        started,
        latency,
        log,
        notice,
        own_segments,
    } = f;
    let summary_of = |ledger: &PostgresLedger| -> Result<Summary> {
        let totals = ledger.totals().map_err(anyhow::Error::new)?;
        let mut s = Summary::new(
            Ending::Completed,
            Counts::default(),
            Counts::from(totals.counts),
            started.elapsed(),
            latency,
            Some(
                cfg.remote
                    .output_name()
                    .unwrap_or_else(|| output.display().to_string()),
            ),
            cfg.remote
                .failures
                .clone()
                .unwrap_or_else(|| cfg.failures.display().to_string()),
        );
        if totals.counts.failed > 0 {
            s.failures_by_kind = crate::pipeline::failure_kinds_in(&cfg.failures, u64::MAX);
        }
        Ok(s)
    };
    if !assemble_now {
        // The node whose commit completed the job publishes; if it does not within a lease
        // (it died), this node does.
        let until = Instant::now() + wait_for_others;
        while Instant::now() < until {
            if ledger.is_finished().map_err(anyhow::Error::new)? {
                return summary_of(ledger);
            }
            // Woken by the publishing node's announcement, or a look every 100 ms.
            notice.wait_for_end(Duration::from_millis(100));
        }
    }
    if ledger.is_finished().map_err(anyhow::Error::new)? {
        return summary_of(ledger);
    }
    let manifest = ledger.manifest().map_err(anyhow::Error::new)?;
    if manifest.len() as u64 != total
        || manifest
            .iter()
            .enumerate()
            .any(|(i, c)| c.chunk != i as u64)
    {
        return Err(anyhow!(
            "the shared ledger lists {} committed chunks of {total}, not one for each chunk; run the same command again to finish the job",
            manifest.len()
        ));
    }
    let outputs: Vec<&str> = manifest
        .iter()
        .flat_map(|c| c.parts.iter())
        .filter(|n| !is_failures(n))
        .map(String::as_str)
        .collect();
    let failures: Vec<&str> = manifest
        .iter()
        .flat_map(|c| c.parts.iter())
        .filter(|n| is_failures(n))
        .map(String::as_str)
        .collect();
    let (outputs, failures) = (coalesce(&outputs), coalesce(&failures));
    let assembled = |target: &Path, parts: &[String]| -> Result<PathBuf> {
        match own_segments.and_then(|own| link_whole_segment(target, store, parts, own)) {
            Some(linked) => Ok(linked),
            None => concatenate(target, store, parts),
        }
    };
    let both = assembled(output, &outputs)
        .and_then(|out_tmp| Ok((out_tmp, assembled(&cfg.failures, &failures)?)));
    let (out_tmp, fail_tmp) = match both {
        Ok(tmps) => tmps,
        Err(e) => {
            // Another node may have published the job meanwhile and removed its parts.
            let _ = std::fs::remove_file(assembling_path(output));
            let _ = std::fs::remove_file(assembling_path(&cfg.failures));
            if ledger.is_finished().map_err(anyhow::Error::new)? {
                return summary_of(ledger);
            }
            return Err(e);
        }
    };
    crate::fault::fault("assembly-before-rename");
    publish(&out_tmp, output)?;
    crate::fault::fault("assembly-between-renames");
    publish(&fail_tmp, &cfg.failures)?;
    sync_dirs(&[output, &cfg.failures])?;
    // An output on object storage: the assembled files above are its staged copies; each
    // object appears whole when its upload completes, before the job is marked finished.
    crate::remote::publish(&cfg.remote, Some(output), &cfg.failures)?;
    let summary = summary_of(ledger)?;
    let json = serde_json::to_string_pretty(&summary).context("cannot encode the summary")?;
    ledger
        .mark_finished(&json)
        .map_err(anyhow::Error::new)
        .context("cannot mark the shared job finished (its output is in place; run the same command again to record it)")?;
    tracing::info!(output = %output.display(), "output assembled and published");
    if let Err(e) = store.remove_all() {
        log.notice(&format!(
            "the job finished, but its parts at {} could not be removed ({e}); remove them by hand",
            store.location()
        ));
    }
    Ok(summary)
}

/// The temporary file beside `target` that an assembly fills and renames into place.
fn assembling_path(target: &Path) -> PathBuf {
    let name = target.file_name().unwrap_or_default().to_string_lossy();
    target.with_file_name(format!(".{name}.assembling-{}", std::process::id()))
}

/// When `parts` is one range covering the whole of a segment file this node wrote (its
/// name starts with `own`; the node writes it no more), a hard link to that file as the
/// temporary file beside `target`: its bytes are the output, already durable (fsynced
/// before the commits that name them), so nothing is copied or fsynced again. The segment
/// keeps its name, so an assembly done again reads it as before. `None` (then the parts are
/// copied) for anything else, or when the link cannot be made (another file system).
fn link_whole_segment(
    target: &Path,
    store: &dyn PartStore,
    parts: &[String],
    own: &str,
) -> Option<PathBuf> {
    let [only] = parts else { return None };
    let (file, Some((0, end))) = split_part(only) else {
        return None;
    };
    if !store.writes_segments() || !file.starts_with(own) {
        return None;
    }
    let segment = store.staging_dir().join(file);
    if std::fs::metadata(&segment).ok()?.len() != end {
        // Bytes after the range (a chunk refused later): not the output.
        return None;
    }
    let tmp = assembling_path(target);
    if let Some(dir) = target.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).ok()?;
    }
    let _ = std::fs::remove_file(&tmp);
    match std::fs::hard_link(&segment, &tmp) {
        Ok(()) => Some(tmp),
        Err(e) => {
            tracing::debug!(error = %e, "cannot link the output to its segment file; copying it");
            None
        }
    }
}

/// Streams `parts` from the store one after the other into a temporary file beside `target`,
/// fsynced.
fn concatenate(target: &Path, store: &dyn PartStore, parts: &[String]) -> Result<PathBuf> {
    let tmp = assembling_path(target);
    if let Some(dir) = target.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the directory {}", dir.display()))?;
    }
    let mut out = std::io::BufWriter::new(
        File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?,
    );
    for p in parts {
        let mut f = store.open(p).with_context(|| {
            format!(
                "cannot read the committed part {p} in {}; the parts location must be the one every node writes to (--parts)",
                store.location()
            )
        })?;
        std::io::copy(&mut f, &mut out)
            .with_context(|| format!("cannot copy the part {p} from {}", store.location()))?;
    }
    out.flush()
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    out.get_ref()
        .sync_all()
        .with_context(|| format!("cannot sync {}", tmp.display()))?;
    Ok(tmp)
}

/// Renames `tmp` to `target` and fsyncs the directory.
fn publish(tmp: &Path, target: &Path) -> Result<()> {
    std::fs::rename(tmp, target).with_context(|| {
        format!(
            "cannot move the assembled file into place as {}",
            target.display()
        )
    })
}

/// Makes the renames of [`publish`] durable: each directory of `targets` fsynced once (the
/// output and its dead-letter file usually share one).
fn sync_dirs(targets: &[&Path]) -> Result<()> {
    let mut dirs: Vec<PathBuf> = Vec::with_capacity(targets.len());
    for target in targets {
        let dir = match target.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if !dirs.contains(&dir) {
            File::open(&dir)
                .and_then(|d| d.sync_all())
                .with_context(|| format!("cannot sync the directory {}", dir.display()))?;
            dirs.push(dir);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn an_output_that_is_one_whole_segment_of_this_node_is_linked_not_copied() {
        let dir = tempfile::tempdir().unwrap();
        let parts_dir = dir.path().join("out.jsonl.parts");
        std::fs::create_dir(&parts_dir).unwrap();
        let store =
            crate::distributed::store::open_store(&parts_dir.display().to_string()).unwrap();
        std::fs::write(parts_dir.join("seg-1-2-0"), b"{\"a\":1}\n{\"a\":2}\n").unwrap();
        let target = dir.path().join("out.jsonl");
        let whole = ["seg-1-2-0@0-16".to_string()];
        let tmp = link_whole_segment(&target, &*store, &whole, "seg-1-2-").expect("linked");
        assert_eq!(std::fs::read(&tmp).unwrap(), b"{\"a\":1}\n{\"a\":2}\n");
        let (a, b) = (
            std::fs::metadata(&tmp).unwrap(),
            std::fs::metadata(parts_dir.join("seg-1-2-0")).unwrap(),
        );
        assert_eq!((a.dev(), a.ino()), (b.dev(), b.ino()), "not the same file");
        std::fs::remove_file(&tmp).unwrap();
        // Anything else is copied: part of the file, another node's file, several parts, a
        // file with bytes after the range.
        for (parts, own) in [
            (vec!["seg-1-2-0@0-8".to_string()], "seg-1-2-"),
            (vec!["seg-1-2-0@8-16".to_string()], "seg-1-2-"),
            (whole.to_vec(), "seg-9-9-"),
            (
                vec!["seg-1-2-0@0-8".to_string(), "seg-1-2-0@8-16".to_string()],
                "seg-1-2-",
            ),
            (vec!["part-0-1".to_string()], "part-"),
            (Vec::new(), "seg-1-2-"),
        ] {
            assert!(
                link_whole_segment(&target, &*store, &parts, own).is_none(),
                "{parts:?}"
            );
        }
        std::fs::write(parts_dir.join("seg-1-2-1"), b"{\"a\":3}\nrefused\n").unwrap();
        let longer = ["seg-1-2-1@0-8".to_string()];
        assert!(link_whole_segment(&target, &*store, &longer, "seg-1-2-").is_none());
        assert!(!target.exists() && !assembling_path(&target).exists());
    }
}
