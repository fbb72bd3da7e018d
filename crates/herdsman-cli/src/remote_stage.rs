//! Where an object-storage output (`-o s3://…`, `--failures s3://…`) is staged: the local
//! file the run writes exactly as any output, at a path stable for the URL, and the URLs it
//! is published to afterwards (`remote`).
//!
//! This module only names paths and URLs: it must never touch the network or the files.

use std::path::{Path, PathBuf};

use herdsman_io::is_object_url;

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
