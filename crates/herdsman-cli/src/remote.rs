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

use std::path::Path;

use anyhow::Result;
use herdsman_io::{ObjectError, ObjectErrorKind};

use crate::config::{usage, EnvError};
use crate::remote_stage::Remote;

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
