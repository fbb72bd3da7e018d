//! The run's inputs: files and globs expanded, each with its format (from a flag, its
//! extension, or stdin's first bytes), and the errors of opening them sorted into usage and
//! environment errors.
//!
//! This module must never consume a byte of stdin while finding its format.

use anyhow::Result;
use herdsman_io::{expand_inputs, Format, InputPath, InputSpec};

use crate::cli::FormatArg;
use crate::config::{usage, EnvError, RunConfig};

/// The inputs, resolved and typed.
pub(crate) struct Inputs {
    pub(crate) specs: Vec<InputSpec>,
    pub(crate) names: Vec<String>,
}

/// A missing input is a usage error (a typo, exit 2); one that exists but cannot be read is
/// an environment error (exit 4).
pub(crate) fn input_error(e: herdsman_io::IoError) -> anyhow::Error {
    match &e {
        herdsman_io::IoError::Object(o) => crate::remote::object_error(o),
        herdsman_io::IoError::Missing { source, .. }
            if source.kind() != std::io::ErrorKind::NotFound =>
        {
            anyhow::Error::new(EnvError(crate::config::with_causes(&e)))
        }
        _ => usage(crate::config::with_causes(&e)),
    }
}

/// An input that cannot be opened or read is an environment error; the rest (a bad CSV
/// header, a resume position that does not fit) are usage errors.
pub(crate) fn source_error(e: herdsman_io::SourceError) -> anyhow::Error {
    match e {
        herdsman_io::SourceError::Open { .. } | herdsman_io::SourceError::Read { .. } => {
            anyhow::Error::new(EnvError(crate::config::with_causes(&e)))
        }
        other => usage(crate::config::with_causes(&other)),
    }
}

pub(crate) fn resolve_inputs(cfg: &RunConfig) -> Result<Inputs> {
    // A database input is read alone (see `config`): a URL, not a file.
    if let Some(format) = cfg
        .inputs
        .first()
        .and_then(|i| herdsman_io::database_format(i))
    {
        let spec = InputSpec {
            path: InputPath::File(cfg.inputs[0].clone().into()),
            format,
        };
        let names = vec![spec.path.display_name()];
        return Ok(Inputs {
            specs: vec![spec],
            names,
        });
    }
    let paths = expand_inputs(&cfg.inputs).map_err(input_error)?;
    let mut specs = Vec::with_capacity(paths.len());
    for p in paths {
        let format = match cfg.format {
            Some(FormatArg::Csv) => Format::Csv,
            Some(FormatArg::Jsonl) => Format::Jsonl,
            Some(FormatArg::Lines) => Format::Lines,
            Some(FormatArg::Parquet) => Format::Parquet,
            None => match &p {
                InputPath::File(f) => Format::from_path(f).ok_or_else(|| {
                    usage(format!(
                        "cannot tell the format of {} from its extension; pass --format csv|jsonl|lines|parquet",
                        f.display()
                    ))
                })?,
                InputPath::Object(o) => Format::from_path(std::path::Path::new(o.key()))
                    .ok_or_else(|| {
                        usage(format!(
                            "cannot tell the format of {} from its extension; pass --format csv|jsonl|lines|parquet",
                            o.url
                        ))
                    })?,
                InputPath::Stdin => sniff_stdin()?,
            },
        };
        specs.push(InputSpec { path: p, format });
    }
    let names = specs.iter().map(|s| s.path.display_name()).collect();
    Ok(Inputs { specs, names })
}

/// The format of standard input from its first bytes, peeked without consuming them (they
/// stay in stdin's buffer for the source): see [`Format::sniff`].
pub(crate) fn sniff_stdin() -> Result<Format> {
    use std::io::BufRead;
    let mut stdin = std::io::stdin().lock();
    let first = stdin.fill_buf().map_err(|e| {
        anyhow::Error::new(EnvError(format!(
            "cannot read stdin: {e}; pipe records in, or pass files with -i"
        )))
    })?;
    Ok(Format::sniff(first))
}
