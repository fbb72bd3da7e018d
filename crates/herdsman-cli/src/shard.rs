//! `--shard I/N`: one static shard of a job, for launchers that already start N copies of a
//! command (Kubernetes Indexed Jobs, Slurm arrays, AWS Batch arrays, GNU parallel, ssh).
//!
//! Shard `I` of `N` reads the records whose first byte lies in the I-th of N equal byte
//! ranges of the inputs (`herdsman_io::shard_range`), with a checkpoint of its own, so that
//! the N outputs (and the N dead-letter files) concatenated in shard order are byte for byte
//! those of one run over everything. Only shard 0 writes a CSV output's header. The shard is
//! part of the job's identity: a checkpoint of shard 1/4 never resumes as shard 2/4 or 1/3.
//!
//! This module must never let a shard read a record outside its range, nor let a later shard
//! write an output header.

use std::path::Path;

use anyhow::Result;
use herdsman_io::{InputSpec, OutputFormat, Position, Sink, SinkError, SinkOptions, Source};

use crate::config::{usage, with_causes, EnvError, RunConfig};
use crate::inputs::source_error;
use crate::pipeline::source_options;

/// Where `--shard auto/N` looks for the shard's index, in this order: Kubernetes Indexed
/// Jobs, Slurm job arrays, AWS Batch array jobs.
pub const INDEX_VARIABLES: [&str; 3] = [
    "JOB_COMPLETION_INDEX",
    "SLURM_ARRAY_TASK_ID",
    "AWS_BATCH_JOB_ARRAY_INDEX",
];

/// One shard of a job: `index` of `count`, 0-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u64,
    pub count: u64,
    /// The environment variable the index came from (`--shard auto`).
    pub from: Option<&'static str>,
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// The accepted forms, for messages.
const FORMS: &str = "write --shard I/N with shards numbered from 0 (--shard 0/4 to --shard 3/4 for four shards), or --shard auto/N to take I from JOB_COMPLETION_INDEX, SLURM_ARRAY_TASK_ID or AWS_BATCH_JOB_ARRAY_INDEX";

impl Shard {
    /// Parses `I/N`, `auto/N` or `auto` (`env` reads the environment): see [`INDEX_VARIABLES`].
    /// `auto` alone takes N from a Slurm array (`SLURM_ARRAY_TASK_COUNT`); a Slurm index is
    /// counted from the array's first index (`SLURM_ARRAY_TASK_MIN`).
    pub fn parse(spec: &str, env: impl Fn(&str) -> Option<String>) -> Result<Shard> {
        let spec = spec.trim();
        let number = |what: &str, s: &str| -> Result<u64> {
            s.trim().parse::<u64>().map_err(|_| {
                usage(format!(
                    "--shard `{spec}`: {what} `{}` is not a whole number; {FORMS}",
                    s.trim()
                ))
            })
        };
        let (index_text, count_text) = match spec.split_once('/') {
            Some((i, n)) => (i.trim(), Some(n)),
            None if spec == "auto" => ("auto", None),
            None => return Err(usage(format!("--shard `{spec}` is not a shard; {FORMS}"))),
        };
        let slurm_count = || -> Result<Option<u64>> {
            env("SLURM_ARRAY_TASK_COUNT")
                .map(|n| number("SLURM_ARRAY_TASK_COUNT", &n))
                .transpose()
        };
        let count = match count_text {
            Some(n) => number("the number of shards", n)?,
            None => match (env("SLURM_ARRAY_TASK_ID"), slurm_count()?) {
                (Some(_), Some(n)) => n,
                _ => {
                    return Err(usage(
                        "--shard auto finds the number of shards only in a Slurm array (SLURM_ARRAY_TASK_COUNT is not set); give it: --shard auto/N"
                            .to_string(),
                    ))
                }
            },
        };
        let (index, from) = if index_text == "auto" {
            let Some((name, value)) = INDEX_VARIABLES
                .iter()
                .find_map(|&name| env(name).map(|v| (name, v)))
            else {
                return Err(usage(format!(
                    "--shard {spec} takes the shard's index from JOB_COMPLETION_INDEX (Kubernetes), SLURM_ARRAY_TASK_ID (Slurm) or AWS_BATCH_JOB_ARRAY_INDEX (AWS Batch), but none is set; give the index yourself: --shard I/{}",
                    count_text.map_or("N", str::trim)
                )));
            };
            let mut index = number(name, &value)?;
            if name == "SLURM_ARRAY_TASK_ID" {
                let min = env("SLURM_ARRAY_TASK_MIN")
                    .map(|m| number("SLURM_ARRAY_TASK_MIN", &m))
                    .transpose()?
                    .unwrap_or(0);
                index = index.checked_sub(min).ok_or_else(|| {
                    usage(format!(
                        "--shard {spec}: SLURM_ARRAY_TASK_ID {index} is below SLURM_ARRAY_TASK_MIN {min}; give the shard yourself: --shard I/N"
                    ))
                })?;
            }
            (index, Some(name))
        } else {
            (number("the shard's index", index_text)?, None)
        };
        if count == 0 {
            return Err(usage(format!(
                "--shard {spec}: the number of shards must be at least 1; {FORMS}"
            )));
        }
        if index >= count {
            let came = from.map_or(String::new(), |v| format!(" (from {v})"));
            return Err(usage(format!(
                "--shard {spec}: shard {index}{came} does not exist among {count} shards, which are numbered 0 to {}; {FORMS}",
                count - 1
            )));
        }
        Ok(Shard { index, count, from })
    }
}

/// Parses `--shard` (from the flag or the job file) and refuses what a shard cannot do:
/// read standard input (every shard must read the same files), or write CSV without
/// `--columns` (each shard would take its header from its own first record).
pub(crate) fn checked(
    spec: Option<&str>,
    stdin_input: bool,
    csv_without_columns: bool,
) -> Result<Option<Shard>> {
    let Some(spec) = spec else {
        return Ok(None);
    };
    let shard = Shard::parse(spec, |name| std::env::var(name).ok())?;
    if stdin_input {
        return Err(usage(format!(
            "--shard {spec}: standard input cannot be split into shards (each shard reads its own part of the same files); give the input as files with -i"
        )));
    }
    if csv_without_columns {
        return Err(usage(format!(
            "--shard {spec} with CSV output needs --columns: every shard must write the same columns, and only shard 0 writes the header; add --columns a,b,c"
        )));
    }
    Ok(Some(shard))
}

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
    resume_at: Option<Position>,
    notice: &dyn Fn(&str),
) -> Result<Source> {
    let opts = source_options(cfg);
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
        herdsman_io::InputPath::Stdin => false,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(spec: &str, vars: &[(&str, &str)]) -> Result<Shard> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Shard::parse(spec, move |k| {
            vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
        })
    }

    #[test]
    fn shards_parse_from_flags_and_launcher_variables() {
        let s = parse("2/5", &[]).unwrap();
        assert_eq!((s.index, s.count, s.from), (2, 5, None));
        let s = parse("auto/4", &[("JOB_COMPLETION_INDEX", "3")]).unwrap();
        assert_eq!((s.index, s.count), (3, 4));
        assert_eq!(s.from, Some("JOB_COMPLETION_INDEX"));
        let s = parse("auto/4", &[("AWS_BATCH_JOB_ARRAY_INDEX", "0")]).unwrap();
        assert_eq!((s.index, s.count), (0, 4));
        let slurm = [
            ("SLURM_ARRAY_TASK_ID", "3"),
            ("SLURM_ARRAY_TASK_MIN", "1"),
            ("SLURM_ARRAY_TASK_COUNT", "3"),
        ];
        let s = parse("auto", &slurm).unwrap();
        assert_eq!((s.index, s.count), (2, 3));
        assert_eq!(s.to_string(), "2/3");
    }

    #[test]
    fn bad_shards_say_the_right_form() {
        for (spec, vars) in [
            ("3/3", &[][..]),
            ("0/0", &[]),
            ("x/3", &[]),
            ("1/y", &[]),
            ("-1/3", &[]),
            ("1", &[]),
            ("", &[]),
            ("auto/3", &[]),
            ("auto", &[("JOB_COMPLETION_INDEX", "0")]),
            ("auto/2", &[("JOB_COMPLETION_INDEX", "2")]),
        ] {
            let e = parse(spec, vars).unwrap_err();
            assert!(
                e.downcast_ref::<crate::config::UsageError>().is_some(),
                "{spec}: {e}"
            );
            assert!(e.to_string().contains("--shard"), "{spec}: {e}");
        }
    }
}
