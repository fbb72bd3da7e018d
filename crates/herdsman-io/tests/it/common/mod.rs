//! Shared helpers for the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use herdsman_io::{Format, InputPath, InputSpec, Position, Record, Source, SourceOptions};

/// The public corpora directory, if present.
pub fn corpora() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpora");
    if p.is_dir() {
        Some(p)
    } else {
        eprintln!("note: {} is missing; corpus test skipped", p.display());
        None
    }
}

pub fn spec(path: &Path, format: Format) -> InputSpec {
    InputSpec {
        path: InputPath::File(path.to_path_buf()),
        format,
    }
}

pub fn read_all(
    specs: Vec<InputSpec>,
    opts: SourceOptions,
    resume: Option<Position>,
) -> Vec<Record> {
    Source::open(specs, opts, resume)
        .unwrap()
        .map(|r| r.unwrap())
        .collect()
}

pub fn text(r: &Record) -> String {
    String::from_utf8(r.data.clone().unwrap()).unwrap()
}
