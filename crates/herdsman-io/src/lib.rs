//! Sources and sinks for herdsman: stream CSV, JSONL and line inputs as JSON records with
//! their file positions, and write outputs atomically.
//!
//! Never load a whole input or output into memory, and never turn bad input into a crash:
//! a malformed record is a record that carries its error.
//!
//! Each input format is one [`RecordReader`] registered in [`REGISTRY`]; each output format
//! is one [`RecordWriter`] chosen by [`writer_for`]. [`Source`] and [`Sink`] hold what every
//! format shares: several inputs in order with resumable [`Position`]s, and the partial file,
//! syncing and atomic rename of an output.
//!
//! ```
//! use herdsman_io::{Format, InputPath, InputSpec, Source, SourceOptions};
//! let dir = tempfile::tempdir().unwrap();
//! let path = dir.path().join("in.csv");
//! std::fs::write(&path, "id,name\n1,\"a, b\"\n2,c\n").unwrap();
//! let spec = InputSpec { path: InputPath::File(path), format: Format::Csv };
//! let src = Source::open(vec![spec], SourceOptions::default(), None).unwrap();
//! let rows: Vec<String> = src
//!     .map(|r| String::from_utf8(r.unwrap().data.unwrap()).unwrap())
//!     .collect();
//! assert_eq!(rows, [r#"{"id":"1","name":"a, b"}"#, r#"{"id":"2","name":"c"}"#]);
//! ```

#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod dead_letter;
mod error;
mod fingerprint;
mod format;
mod formats;
mod input;
mod json;
mod object;
mod parquet_schema;
mod shard;
mod sink;
mod source;
mod writers;

pub use dead_letter::{
    DeadLetter, DeadLetterError, DeadLetterKind, DeadLetterParseError, DeadLetterSource,
    OrderedJson,
};
pub use error::{IoError, RecordError, RecordErrorKind, SinkError, SourceError, TokenError};
pub use fingerprint::{fingerprint, Fingerprint, FingerprintParseError};
pub use format::{Compression, Format, OutputFormat, ParquetCompression, ParquetOptions};
pub use formats::database::{database_format, redact_url};
pub use formats::{
    entry as format_entry, FormatEntry, Location, OpenFn, OpenInput, ReadRecord, RecordReader,
    RAW_CAP, REGISTRY,
};
pub use input::{estimate_records, expand_inputs, InputPath, InputSpec};
pub use object::{
    check_object_output, delete_object, expand_object, is_object_url, object_file_name,
    open_object, upload_file, ObjectError, ObjectErrorKind, ObjectInput, PART as OBJECT_PART,
};
pub use parquet_schema::{Column, ColumnType, ParquetSchema, TimeUnit};
pub use shard::{estimate_shard_records, shard_range, shard_start, Cut, ShardError, ShardRange};
pub use sink::{
    check_writable_dir, finish_partial, output_target, partial_path, published_extra_len,
    write_atomic, Kept, OutputTarget, Sink,
};
pub use source::{check_csv_headers, Position, Record, Source, SourceOptions};
pub use writers::{writer_for, RecordWriter, SinkOptions};
