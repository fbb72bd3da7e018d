//! How a static shard (`--shard I/N`, see `shard`) reads and writes.
//!
//! Shard `I` of `N` reads the records whose first byte lies in the I-th of N equal byte
//! ranges of the inputs (`herdsman_io::shard_range`), with a checkpoint of its own, so that
//! the N outputs (and the N dead-letter files) concatenated in shard order are byte for byte
//! those of one run over everything. Only shard 0 writes a CSV output's header. The shard is
//! part of the job's identity (`checkpoint::job_identity`): a checkpoint of shard 1/4 never
//! resumes as shard 2/4 or 1/3.
//!
//! This module must never let a shard read a record outside its range, nor let a later shard
//! write an output header.

use std::path::Path;

use anyhow::Result;
use herdsman_io::{
    InputSpec, OutputFormat, Position, Sink, SinkError, SinkOptions, Source, SourceOptions,
};

use crate::config::{usage, with_causes, EnvError, RunConfig};
use crate::inputs::source_error;
use crate::shard::Shard;

/// A shard error: a bad shard or stdin input is a usage error, an unreadable input an
/// environment error.
fn shard_error(e: herdsman_io::ShardError) -> anyhow::Error {
    match e {
        herdsman_io::ShardError::Size { .. } => anyhow::Error::new(EnvError(with_causes(&e))),
        other => usage(with_causes(&other)),
    }
}

/// The shard's byte range, when the run is a shard.
pub(crate) fn range(
    cfg: &RunConfig,
    specs: &[InputSpec],
) -> Result<Option<(Shard, herdsman_io::ShardRange)>> {
    let Some(shard) = cfg.shard else {
        return Ok(None);
    };
    let range = herdsman_io::shard_range(specs, shard.index, shard.count).map_err(shard_error)?;
    Ok(Some((shard, range)))
}

/// Opens the records of this run: the inputs from `resume_at` (a checkpoint's position), or
/// for a shard from its first record (found by reading what lies before it) to the next
/// shard's first record. `notice` is told where a fresh shard starts.
pub(crate) fn open_source(
    cfg: &RunConfig,
    specs: &[InputSpec],
    opts: SourceOptions,
    resume_at: Option<Position>,
    notice: &dyn Fn(&str),
) -> Result<Source> {
    let Some((shard, range)) = range(cfg, specs)? else {
        return Source::open(specs.to_vec(), opts, resume_at).map_err(source_error);
    };
    let start = match resume_at {
        Some(at) => at,
        None => {
            let at = herdsman_io::shard_start(specs, &opts, range.start).map_err(source_error)?;
            let from = shard
                .from
                .map_or(String::new(), |v| format!(" (index from {v})"));
            let bound =
                |k: u64| u128::from(k) * u128::from(range.total_bytes) / u128::from(shard.count);
            notice(&format!(
                "shard {shard}{from}: the records that start in bytes {} to {} of the inputs' {}, from record {}",
                bound(shard.index),
                bound(shard.index + 1),
                range.total_bytes,
                at.seq + 1
            ));
            at
        }
    };
    let mut source = Source::open(specs.to_vec(), opts, Some(start)).map_err(source_error)?;
    source.stop_at(range.end);
    Ok(source)
}

/// The estimated records of this run, for the progress bar: the shard's lines when it is a
/// shard, else the whole input's.
pub(crate) fn estimate_records(
    shard: Option<Shard>,
    specs: &[InputSpec],
    limit: Option<u64>,
) -> Option<u64> {
    let plain = |spec: &InputSpec| match &spec.path {
        herdsman_io::InputPath::File(p) => {
            herdsman_io::Compression::from_path(p) == herdsman_io::Compression::None
        }
        herdsman_io::InputPath::Stdin | herdsman_io::InputPath::Object(_) => false,
    };
    let total = match shard {
        None => herdsman_io::estimate_records(specs),
        // No estimate for compressed inputs: measuring them alone means decompressing them.
        Some(_) if !specs.iter().all(plain) => None,
        Some(s) => herdsman_io::shard_range(specs, s.index, s.count)
            .ok()
            .and_then(|r| herdsman_io::estimate_shard_records(specs, &r)),
    }?;
    Some(limit.map_or(total, |l| total.min(l)))
}

/// Opens the output: a shard after the first continues the earlier shards' outputs, so it
/// writes no header.
pub(crate) fn open_output(
    cfg: &RunConfig,
    path: &Path,
    format: OutputFormat,
    resume_offset: Option<u64>,
    opts: &SinkOptions,
) -> Result<Sink, SinkError> {
    if cfg.shard.is_some_and(|s| s.index > 0) {
        Sink::open_continuation(path, format, resume_offset, opts)
    } else {
        Sink::open_with(path, format, resume_offset, opts)
    }
}
