//! Output formats behind one trait: each is one file here that implements [`RecordWriter`],
//! and [`writer_for`] maps an [`OutputFormat`] to it (one line per format). A format whose
//! records are not complete as they are encoded (Parquet's row groups and footer) completes
//! them in [`RecordWriter::end_chunk`] and [`RecordWriter::finish`].
//!
//! A writer only turns records into bytes; the [`Sink`](crate::Sink) owns the file: the
//! partial file, offsets, syncing, resuming and the final rename. A writer must never emit
//! part of a record it refuses, and never emit a header twice: a resumed output already
//! holds it.

mod csv;
mod jsonl;
mod lines;
mod parquet;

pub(crate) use parquet::footer_len;

use std::io::Read;

use crate::format::OutputFormat;

/// How outputs are written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SinkOptions {
    /// CSV field delimiter (default `,`).
    pub csv_delimiter: u8,
}

impl Default for SinkOptions {
    fn default() -> Self {
        SinkOptions {
            csv_delimiter: b',',
        }
    }
}

/// Turns records (compact JSON text) into the bytes of one output format.
pub trait RecordWriter: Send {
    /// Appends what a fresh output starts with (a CSV header whose columns are known up
    /// front); nothing for most formats.
    fn start(&mut self, _out: &mut Vec<u8>) {}

    /// Prepares to append to an output that already holds some bytes. `existing` reads the
    /// output from its first byte, or is `None` when it cannot be read back (a stream); the
    /// writer takes what it needs from it (a CSV header). An `Err` says why the output
    /// cannot be resumed.
    fn resume(&mut self, _existing: Option<&mut dyn Read>) -> Result<(), String> {
        Ok(())
    }

    /// Appends one record to `out`, or says why it cannot be written in this format (then
    /// `out` is left as it was).
    fn encode(&mut self, json: &[u8], out: &mut Vec<u8>) -> Result<(), String>;

    /// Checks, changing nothing, that [`RecordWriter::encode`] would accept every record in
    /// this order (the first may fix what the others must fit).
    fn check(&self, records: &mut dyn Iterator<Item = &[u8]>) -> Result<(), String>;

    /// Ends a chunk: appends whatever the records encoded since the last chunk end still
    /// need to be complete in the output (Parquet's row groups), so that the output's length
    /// after it can be committed. Nothing for most formats, whose records are complete as
    /// they are encoded. An `Err` means the output cannot go on.
    fn end_chunk(&mut self, _out: &mut Vec<u8>) -> Result<(), String> {
        Ok(())
    }

    /// Appends what completes the file when it is published (Parquet's footer), after
    /// ending the last chunk. It is never committed: a resumed output is cut back to its
    /// committed length, which drops it. Nothing for most formats.
    fn finish(&mut self, _out: &mut Vec<u8>) -> Result<(), String> {
        Ok(())
    }

    /// The CSV header, once fixed.
    fn columns(&self) -> Option<&[String]> {
        None
    }
}

/// The writer of `format`.
pub fn writer_for(format: &OutputFormat, opts: &SinkOptions) -> Box<dyn RecordWriter> {
    match format {
        OutputFormat::Jsonl => Box::new(jsonl::JsonlWriter),
        OutputFormat::Csv { columns } => {
            Box::new(csv::CsvWriter::new(columns.clone(), opts.csv_delimiter))
        }
        OutputFormat::Lines => Box::new(lines::LinesWriter),
        OutputFormat::Parquet(p) => parquet::writer(p),
    }
}
