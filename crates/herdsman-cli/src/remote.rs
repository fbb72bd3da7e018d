//! Outputs on object storage (`-o s3://bucket/key`, `--failures s3://...`): the run writes a
//! local staged file exactly as it writes any output (partial file, checkpoint, resume), and
//! once every chunk is committed and the local file is complete, uploads it. The object
//! appears at its key only when the upload completes (one PUT, or a multipart upload), so a
//! half-written output is never visible there.
//!
//! The staged file of `s3://b/dir/out.jsonl` is `.herdsman-remote/<hash of the URL>/out.jsonl`
//! in the current directory, and the job's checkpoint sits beside it as for any output. This
//! module must never upload a file before the run that wrote it is complete, and must upload
//! before the job is marked finished, so a crash in between publishes on the next run.

use std::path::{Path, PathBuf};

use anyhow::Result;
use herdsman_io::{is_object_url, ObjectError, ObjectErrorKind};

use crate::config::{usage, EnvError};

/// The object-storage URLs a run publishes to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Remote {
    /// Where the output is uploaded once complete.
    pub output: Option<String>,
    /// Where the dead-letter file is uploaded once complete (`None`: it stays local).
    pub failures: Option<String>,
}

/// The directory, relative to the current one, that holds staged copies of remote files.
pub(crate) const STAGE_DIR: &str = ".herdsman-remote";

/// The local file a remote URL is written to before it is uploaded: stable for a URL, so the
/// same command run again finds its checkpoint.
pub(crate) fn stage_path(url: &str) -> PathBuf {
    // FNV-1a: stable across builds and versions (a std hasher is not promised to be).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in url.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    Path::new(STAGE_DIR)
        .join(format!("{h:016x}"))
        .join(herdsman_io::object_file_name(url))
}

/// `s3://b/dir/out.jsonl` → `s3://b/dir/out.failures.jsonl`, as a local output's default.
fn default_failures_url(url: &str) -> String {
    let name = herdsman_io::object_file_name(url);
    let stem = Path::new(name)
        .file_stem()
        .map_or_else(|| "output".into(), |s| s.to_string_lossy().into_owned());
    let dir = url.strip_suffix(name).unwrap_or(url);
    format!("{dir}{stem}.failures.jsonl")
}

/// Replaces an object-storage output (`-o s3://...`) by the local file it is staged in; the
/// URL is kept in the returned [`Remote`].
pub(crate) fn stage_output(output: Option<String>) -> (Option<String>, Remote) {
    match output {
        Some(url) if is_object_url(&url) => {
            let staged = stage_path(&url).display().to_string();
            (
                Some(staged),
                Remote {
                    output: Some(url),
                    failures: None,
                },
            )
        }
        other => (other, Remote::default()),
    }
}

impl Remote {
    /// Stages an object-storage dead-letter file (`--failures s3://...`) the same way; with
    /// no `--failures` and a remote output, the dead letters are published beside it
    /// (`out.failures.jsonl`). A local `--failures` stays local.
    pub(crate) fn stage_failures(mut self, failures: Option<String>) -> (Option<String>, Remote) {
        match failures {
            Some(url) if is_object_url(&url) => {
                let staged = stage_path(&url).display().to_string();
                self.failures = Some(url);
                (Some(staged), self)
            }
            None => {
                self.failures = self.output.as_deref().map(default_failures_url);
                (None, self)
            }
            local => (local, self),
        }
    }

    /// The name to show for the output in a summary: its URL when it is remote.
    pub(crate) fn output_name(&self) -> Option<String> {
        self.output.clone()
    }
}

/// An object-storage error as the command reports it: a missing bucket or key, or a URL
/// this build cannot use, is a usage error (exit 2); refused credentials and network
/// trouble are environment errors (exit 4).
pub(crate) fn object_error(e: &ObjectError) -> anyhow::Error {
    match e.kind {
        ObjectErrorKind::NotFound | ObjectErrorKind::Unsupported => usage(e.to_string()),
        _ => anyhow::Error::new(EnvError(e.to_string())),
    }
}

/// Before any work: every remote destination's bucket exists and may be listed.
pub(crate) fn check(remote: &Remote) -> Result<()> {
    for url in remote.output.iter().chain(&remote.failures) {
        herdsman_io::check_object_output(url).map_err(|e| object_error(&e))?;
    }
    Ok(())
}

/// Uploads the completed local output (and the dead-letter file, when it is remote and was
/// written) to their URLs. Called after the local files are complete and before the job is
/// marked finished.
pub(crate) fn publish(remote: &Remote, output: Option<&Path>, failures: &Path) -> Result<()> {
    if let (Some(url), Some(local)) = (&remote.output, output) {
        crate::fault::fault("before-upload");
        herdsman_io::upload_file(local, url).map_err(|e| object_error(&e))?;
        tracing::info!(url = url.as_str(), "output published");
    }
    if let Some(url) = &remote.failures {
        if failures.exists() {
            herdsman_io::upload_file(failures, url).map_err(|e| object_error(&e))?;
            tracing::info!(url = url.as_str(), "dead-letter file published");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_outputs_are_staged_stably_and_dead_letters_go_beside_them() {
        let (out, remote) = stage_output(Some("s3://b/dir/out.jsonl".into()));
        let out = out.unwrap();
        assert!(out.starts_with(".herdsman-remote/"), "{out}");
        assert!(out.ends_with("/out.jsonl"), "{out}");
        assert_eq!(
            stage_path("s3://b/dir/out.jsonl").display().to_string(),
            out
        );
        assert_ne!(
            stage_path("s3://b/dir/out.jsonl"),
            stage_path("s3://c/dir/out.jsonl")
        );
        let (failures, remote) = remote.stage_failures(None);
        assert_eq!(failures, None);
        assert_eq!(
            remote.failures.as_deref(),
            Some("s3://b/dir/out.failures.jsonl")
        );
        let (local, _) = stage_output(Some("out.jsonl".into()));
        assert_eq!(local.as_deref(), Some("out.jsonl"));
        let (f, r) = Remote::default().stage_failures(Some("bad.jsonl".into()));
        assert_eq!((f.as_deref(), r.failures), (Some("bad.jsonl"), None));
    }
}
