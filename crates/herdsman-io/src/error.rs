//! Error types for sources and sinks.
//!
//! Every message names the file (and line where one applies) and says what to do; these types
//! must never hide the underlying `io::Error`.

use std::io;
use std::path::PathBuf;

/// A problem with the list of input paths (bad glob, missing file), found before any reading.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IoError {
    /// A glob pattern is not valid syntax.
    #[error(
        "input pattern `{pattern}` is not a valid glob ({message}); quote it or fix the pattern"
    )]
    BadPattern {
        /// The pattern as given.
        pattern: String,
        /// What the glob parser said.
        message: String,
    },
    /// A glob pattern matched no file.
    #[error("input pattern `{pattern}` matched no file; check the path and the current directory")]
    NoMatch {
        /// The pattern as given.
        pattern: String,
    },
    /// A plain path does not exist or cannot be inspected.
    #[error("input file `{}` cannot be read (check that it exists and is readable)", path.display())]
    Missing {
        /// The path as given.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A matched path is a directory.
    #[error("input `{}` is a directory; give a file or a glob such as `dir/*.csv`", path.display())]
    IsDir {
        /// The path.
        path: PathBuf,
    },
    /// An object-storage input (`s3://...`) could not be listed or inspected.
    #[error(transparent)]
    Object(#[from] crate::ObjectError),
}

impl SinkError {
    /// How the message of a [`SinkError::Record`] from a CSV output says to choose the
    /// output's columns (the `columns` of [`OutputFormat::Csv`](crate::OutputFormat)) for a record with a
    /// key the header lacks; a front end may put its own name for that setting in place of
    /// these words.
    pub const CHOOSE_COLUMNS_WORDS: &'static str = "choose the output's columns up front";
}

/// A fatal problem reading an input: the source cannot go on with this file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// The file could not be opened.
    #[error("cannot open input `{file}` (check that it exists and is readable)")]
    Open {
        /// File name for messages.
        file: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Reading (or decompressing) failed part way.
    #[error(
        "cannot read input `{file}` near byte {offset} (the file may be truncated or corrupt)"
    )]
    Read {
        /// File name for messages.
        file: String,
        /// Offset (in decompressed bytes) reached before the failure.
        offset: u64,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A resume position does not fit the inputs (file index or offset beyond the data).
    #[error("cannot resume input `{file}` at byte {offset}: {message}; the input changed since the checkpoint, start the run afresh")]
    Resume {
        /// File name for messages.
        file: String,
        /// The requested offset.
        offset: u64,
        /// What is wrong.
        message: String,
    },
    /// The CSV header row is unusable.
    #[error("the CSV header of `{file}` is unusable: {message}; fix the first row of the file")]
    Header {
        /// File name for messages.
        file: String,
        /// What is wrong.
        message: String,
    },
    /// The CSV header row is longer than the record size limit
    /// ([`SourceOptions::max_record_bytes`](crate::SourceOptions::max_record_bytes)).
    #[error(
        "the CSV header of `{file}` is longer than the record size limit ({limit}); raise the limit",
        limit = crate::formats::text::size_text(*.limit)
    )]
    HeaderTooLong {
        /// File name for messages.
        file: String,
        /// The record size limit, in bytes.
        limit: usize,
    },
    /// The CSV header row is not valid UTF-8, so its names cannot become JSON keys.
    #[error("the CSV header of `{file}` is not valid UTF-8 (column {column}, byte {byte} of the name); convert the file to UTF-8, for example with `iconv -f latin1 -t utf-8`")]
    HeaderNotUtf8 {
        /// File name for messages.
        file: String,
        /// 1-based column of the first name that is not UTF-8.
        column: usize,
        /// 1-based byte, within that name, where the invalid bytes start.
        byte: usize,
    },
    /// A Parquet input cannot be read: it is not Parquet, lacks a `--columns` column, has a
    /// column with no JSON form, or is damaged.
    #[error("cannot read the Parquet input `{file}`: {message}")]
    Parquet {
        /// File name for messages.
        file: String,
        /// What is wrong, and what to do.
        message: String,
    },
    /// A database input cannot be read as asked: no table or query, a key that is missing,
    /// null or repeated, or a query the database refuses.
    #[error("cannot read the database input `{input}`: {message}")]
    Database {
        /// The input's URL, without its password.
        input: String,
        /// What is wrong, and what to do.
        message: String,
    },
    /// The file changed (grew, shrank or was rewritten) while it was read, so the records
    /// read from it do not come from one version of it.
    #[error("input `{file}` changed while it was read: {detail}; the records read from it mix two versions of the file. Let whatever writes it finish, then run the job again from the start, resetting its checkpoint if it has one")]
    Changed {
        /// File name for messages.
        file: String,
        /// What was seen: sizes, bytes read, modification time.
        detail: String,
    },
}

/// The kind of a per-record problem.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordErrorKind {
    /// Malformed CSV (for example a quote that is never closed).
    Csv,
    /// Bytes that are not valid UTF-8.
    Utf8,
    /// A JSONL line that is not exactly one JSON value.
    Json,
    /// A CSV row whose number of fields differs from the header.
    FieldCount,
    /// A record longer than the configured maximum.
    TooLong,
}

/// A record that could not be turned into JSON. It is data, not a crash: the caller sends it to
/// the dead-letter file and goes on.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct RecordError {
    /// What went wrong.
    pub kind: RecordErrorKind,
    /// A sentence naming the file and line.
    pub message: String,
    /// The raw text of the record, lossy UTF-8, capped at [`RAW_CAP`](crate::RAW_CAP) bytes.
    pub raw: String,
}

/// A problem writing an output.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SinkError {
    /// An I/O operation on the output failed.
    #[error("cannot {action} output `{}` (check free space and permissions)", path.display())]
    Io {
        /// What was being done ("write", "sync", "rename", ...).
        action: &'static str,
        /// The file concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Resuming an output is impossible because its partial file does not match the checkpoint.
    #[error("cannot resume output `{}`: {message}; the output was changed since the checkpoint, start the run afresh", path.display())]
    Resume {
        /// The partial file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The output path is a directory.
    #[error("output `{}` is a directory; give a file path inside it, such as `{}`", path.display(), path.join("out.jsonl").display())]
    IsDir {
        /// The directory.
        path: PathBuf,
    },
    /// This record cannot be written in this format; nothing was written, so it can be
    /// dead-lettered instead.
    #[error("record cannot be written to `{}`: {message}", path.display())]
    Record {
        /// The output file.
        path: PathBuf,
        /// Why.
        message: String,
    },
}

/// Why bytes are not a position token (see [`Location::token`](crate::Location::token)): a
/// checkpoint that holds them cannot be resumed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// No bytes at all.
    #[error("the position token is empty")]
    Empty,
    /// A kind of token this version does not know.
    #[error("the position token has the unknown kind {0} (this version reads kind 1)")]
    UnknownKind(u8),
    /// The bytes end inside a number.
    #[error("the position token is cut short")]
    Truncated,
    /// A number does not fit 64 bits.
    #[error("the position token holds a number too large for 64 bits")]
    Overflow,
    /// Bytes after the last number.
    #[error("the position token has trailing bytes")]
    Trailing,
}

#[cfg(test)]
mod chain_tests {
    use std::error::Error;

    use super::*;

    fn cause() -> io::Error {
        io::Error::new(io::ErrorKind::StorageFull, "No space left on device")
    }

    /// One value of every error variant of this crate; the matches make a new variant fail
    /// to compile here until it is added.
    fn every_error() -> Vec<Box<dyn Error>> {
        let io_errors = vec![
            IoError::BadPattern {
                pattern: "[".into(),
                message: "unclosed".into(),
            },
            IoError::NoMatch {
                pattern: "*.csv".into(),
            },
            IoError::Missing {
                path: "in.csv".into(),
                source: cause(),
            },
            IoError::IsDir { path: "dir".into() },
            IoError::Object(crate::ObjectError {
                kind: crate::ObjectErrorKind::NotFound,
                action: "read",
                url: "s3://bucket/in.csv".into(),
                message: "not found".into(),
                hint: "check the bucket and key",
            }),
        ];
        let source_errors = vec![
            SourceError::Open {
                file: "in.csv".into(),
                source: cause(),
            },
            SourceError::Read {
                file: "in.csv".into(),
                offset: 10,
                source: cause(),
            },
            SourceError::Resume {
                file: "in.csv".into(),
                offset: 10,
                message: "past the end".into(),
            },
            SourceError::Header {
                file: "in.csv".into(),
                message: "empty".into(),
            },
            SourceError::HeaderTooLong {
                file: "in.csv".into(),
                limit: 2048,
            },
            SourceError::HeaderNotUtf8 {
                file: "in.csv".into(),
                column: 1,
                byte: 2,
            },
            SourceError::Changed {
                file: "in.csv".into(),
                detail: "grew".into(),
            },
            SourceError::Parquet {
                file: "in.parquet".into(),
                message: "it has no column `x`".into(),
            },
            SourceError::Database {
                input: "sqlite:///a.db?table=t".into(),
                message: "two rows have the same key".into(),
            },
        ];
        let sink_errors = vec![
            SinkError::Io {
                action: "write",
                path: "out".into(),
                source: cause(),
            },
            SinkError::Resume {
                path: "out".into(),
                message: "shorter".into(),
            },
            SinkError::IsDir { path: "out".into() },
            SinkError::Record {
                path: "out".into(),
                message: "not an object".into(),
            },
        ];
        let mut all: Vec<Box<dyn Error>> = Vec::new();
        for e in io_errors {
            match e {
                IoError::BadPattern { .. }
                | IoError::NoMatch { .. }
                | IoError::Missing { .. }
                | IoError::IsDir { .. }
                | IoError::Object(_) => all.push(Box::new(e)),
            }
        }
        for e in source_errors {
            match e {
                SourceError::Open { .. }
                | SourceError::Read { .. }
                | SourceError::Resume { .. }
                | SourceError::Header { .. }
                | SourceError::HeaderTooLong { .. }
                | SourceError::HeaderNotUtf8 { .. }
                | SourceError::Changed { .. }
                | SourceError::Parquet { .. }
                | SourceError::Database { .. } => all.push(Box::new(e)),
            }
        }
        for e in sink_errors {
            match e {
                SinkError::Io { .. }
                | SinkError::Resume { .. }
                | SinkError::IsDir { .. }
                | SinkError::Record { .. } => all.push(Box::new(e)),
            }
        }
        all.push(Box::new(RecordError {
            kind: RecordErrorKind::Json,
            message: "line 3 of `in.jsonl` is not JSON".into(),
            raw: "{".into(),
        }));
        all.push(Box::new(
            "x".parse::<crate::Fingerprint>()
                .expect_err("not a fingerprint"),
        ));
        for e in [
            TokenError::Empty,
            TokenError::UnknownKind(9),
            TokenError::Truncated,
            TokenError::Overflow,
            TokenError::Trailing,
        ] {
            match e {
                TokenError::Empty
                | TokenError::UnknownKind(_)
                | TokenError::Truncated
                | TokenError::Overflow
                | TokenError::Trailing => all.push(Box::new(e)),
            }
        }
        use crate::DeadLetterParseError as P;
        for e in [
            P::NotUtf8,
            P::NotJson("expected value".into()),
            P::NotObject,
            P::NoRecord,
            P::BadField("attempts".into()),
        ] {
            match e {
                P::NotUtf8 | P::NotJson(_) | P::NotObject | P::NoRecord | P::BadField(_) => {
                    all.push(Box::new(e))
                }
            }
        }
        all
    }

    #[test]
    fn no_message_repeats_its_cause() {
        let mut with_source = 0;
        for e in every_error() {
            let mut outer: &dyn Error = e.as_ref();
            while let Some(inner) = outer.source() {
                with_source += 1;
                let (o, i) = (outer.to_string(), inner.to_string());
                assert!(!o.contains(&i), "`{o}` repeats its cause `{i}`");
                outer = inner;
            }
        }
        assert_eq!(with_source, 4, "every wrapped io::Error stays reachable");
    }

    /// The per-record messages of the readers that name a limit of the caller's (where a
    /// command-line flag would be tempting); the CSV writer tests its own.
    fn record_messages() -> Vec<String> {
        use crate::formats::text::check_line;
        let mut out = Vec::new();
        if let Err(e) = check_line("in.txt", 3, 2048, true, b"xxxx") {
            out.push(e.to_string());
        }
        out
    }

    #[test]
    fn no_message_names_a_command_line_flag() {
        let mut texts: Vec<String> = every_error().iter().map(|e| e.to_string()).collect();
        let records = record_messages();
        assert_eq!(records.len(), 1, "{records:?}");
        texts.extend(records);
        for text in texts {
            let flag = text
                .split(|c: char| c.is_whitespace() || c == '(' || c == '`')
                .find(|w| w.starts_with("--"));
            assert!(flag.is_none(), "`{text}` names the flag {flag:?}");
        }
    }
}
