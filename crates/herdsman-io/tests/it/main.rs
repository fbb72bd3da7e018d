//! The crate's integration tests, one binary: each module is one former test file.

mod common;
mod corpora;
mod csv_output;
mod csv_roundtrip;
mod csv_stream_resume;
#[cfg(feature = "database")]
mod database;
mod inputs;
#[cfg(feature = "parquet")]
mod parquet;
mod resume;
mod sink;
mod source;
