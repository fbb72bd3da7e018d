//! Input formats behind one trait: each format is one file here that implements
//! [`RecordReader`] and registers itself with one line in [`REGISTRY`].
//!
//! A reader reads one input, from its start or from a [`Location`] it produced earlier, and
//! yields each record as compact JSON with the location where it starts. It must never read a
//! whole input into memory, never let one record grow a buffer beyond the record size cap, and
//! never turn malformed input into a crash or a silent skip: a bad record is yielded with its
//! [`RecordError`]. Decompression and the changed-file check are not the format's business:
//! text formats read through [`text::TextStream`], which handles both.
//!
//! Locations are the format's own two coordinates (a text format's byte offset and line; a
//! columnar format could use a row group and a row). [`Location::token`] turns one into the
//! opaque bytes a checkpoint stores, and [`Location::from_token`] reads them back.

mod csv;
pub(crate) mod database;
mod jsonl;
mod lines;
pub(crate) mod parquet;
mod postgres;
mod sqlite;
pub(crate) mod text;

use crate::error::{RecordError, SourceError, TokenError};
use crate::format::Format;
use crate::input::InputPath;
use crate::source::SourceOptions;

/// Raw text kept in a [`RecordError`] is cut to this many bytes.
pub const RAW_CAP: usize = 64 * 1024;

/// Where a record starts inside one input, in its format's coordinates: for text formats the
/// offset of its first byte in the decompressed data and the 1-based line it starts on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Location {
    /// Offset of the record's first byte in the decompressed data (text formats).
    pub byte_offset: u64,
    /// 1-based line on which the record starts (text formats).
    pub line: u64,
}

/// The first byte of a [`Location::token`]: the kind and version of its encoding.
const TOKEN_V1: u8 = 1;

impl Location {
    /// The start of an input: offset 0, line 1.
    pub const START: Location = Location {
        byte_offset: 0,
        line: 1,
    };

    /// The opaque bytes a checkpoint stores for this location (at most 21 bytes): a version
    /// byte, then both numbers as LEB128 varints.
    ///
    /// ```
    /// use herdsman_io::Location;
    /// let at = Location { byte_offset: 300, line: 7 };
    /// assert_eq!(at.token(), [1, 0xac, 0x02, 7]);
    /// assert_eq!(Location::from_token(&at.token()), Ok(at));
    /// assert!(Location::from_token(&[9, 0, 1]).is_err());
    /// ```
    pub fn token(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(21);
        out.push(TOKEN_V1);
        for mut v in [self.byte_offset, self.line] {
            loop {
                let b = (v & 0x7f) as u8;
                v >>= 7;
                if v == 0 {
                    out.push(b);
                    break;
                }
                out.push(b | 0x80);
            }
        }
        out
    }

    /// Reads a location back from [`Location::token`]'s bytes; says what is wrong with bytes
    /// it did not produce.
    pub fn from_token(token: &[u8]) -> Result<Location, TokenError> {
        let Some((&version, mut rest)) = token.split_first() else {
            return Err(TokenError::Empty);
        };
        if version != TOKEN_V1 {
            return Err(TokenError::UnknownKind(version));
        }
        let mut next = || -> Result<u64, TokenError> {
            let mut v = 0u64;
            for shift in (0..64).step_by(7) {
                let Some((&b, tail)) = rest.split_first() else {
                    return Err(TokenError::Truncated);
                };
                rest = tail;
                let part = u64::from(b & 0x7f);
                if shift == 63 && part > 1 {
                    break;
                }
                v |= part << shift;
                if b & 0x80 == 0 {
                    return Ok(v);
                }
            }
            Err(TokenError::Overflow)
        };
        let byte_offset = next()?;
        let line = next()?;
        if !rest.is_empty() {
            return Err(TokenError::Trailing);
        }
        Ok(Location { byte_offset, line })
    }
}

/// One record read by a [`RecordReader`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadRecord {
    /// Where it starts.
    pub at: Location,
    /// Compact JSON text of the record (no trailing newline), or why it could not be read.
    pub data: Result<Vec<u8>, RecordError>,
}

/// What a format needs to open one input.
#[derive(Clone, Copy, Debug)]
pub struct OpenInput<'a> {
    /// Where to read.
    pub path: &'a InputPath,
    /// The input's name for messages (`<stdin>` or the path).
    pub name: &'a str,
    /// Delimiter, type inference, size cap, buffer size.
    pub opts: &'a SourceOptions,
}

/// Reads the records of one input in one format.
///
/// A reader is opened (through its [`FormatEntry::open`]) at the start of its input or at a
/// [`Location`] it yielded before, and from there yields exactly the records, with the same
/// locations, that reading on from that location would have yielded.
pub trait RecordReader: Send {
    /// The next record, `Ok(None)` at the end of the input. A malformed record is a record
    /// whose `data` is an error; an `Err` is fatal for this input (it cannot be read on, or
    /// it changed while it was read).
    fn next_record(&mut self) -> Result<Option<ReadRecord>, SourceError>;

    /// Where the next record would start: resuming there continues without loss or repeat.
    fn next_location(&self) -> Location;

    /// Moves past the next record without decoding it, and returns where it starts (`None`
    /// at the end of the input): exactly the records, with the same locations, that
    /// [`RecordReader::next_record`] would yield, malformed ones included. A format may
    /// skip faster than it reads (no JSON is built); the default reads the record.
    fn skip_record(&mut self) -> Result<Option<Location>, SourceError> {
        Ok(self.next_record()?.map(|r| r.at))
    }

    /// Moves past up to `max` records at once where the format can tell them apart without
    /// decoding (whole lines in its buffer), and returns how many: the same records
    /// [`RecordReader::skip_record`] would pass one by one. 0 means "go on with
    /// `skip_record`", which the default always says.
    fn skip_buffered(&mut self, max: usize) -> Result<usize, SourceError> {
        let _ = max;
        Ok(0)
    }

    /// The column names of a format that has a header (repeated names made unique).
    fn header(&self) -> Option<&[String]> {
        None
    }
}

/// Opens one input for reading, at its start or at a location from an earlier read.
pub type OpenFn =
    fn(&OpenInput<'_>, Option<Location>) -> Result<Box<dyn RecordReader>, SourceError>;

/// A format's entry in the [`REGISTRY`].
#[derive(Clone, Copy, Debug)]
pub struct FormatEntry {
    /// The format.
    pub format: Format,
    /// Names accepted on a command line, lower-case; the first is the canonical one.
    pub names: &'static [&'static str],
    /// File extensions (lower-case, without the dot, below any compression suffix).
    pub extensions: &'static [&'static str],
    /// Whether opening an input validates it (a CSV header): every such input still to be
    /// read is opened once before the first record, so a bad one is reported up front.
    pub check_on_open: bool,
    /// Opens a reader.
    pub open: OpenFn,
}

/// Every input format. Adding one is one file in `src/formats/` and one line here (plus its
/// [`Format`] variant).
pub static REGISTRY: &[FormatEntry] = &[
    csv::ENTRY,
    jsonl::ENTRY,
    lines::ENTRY,
    parquet::ENTRY,
    postgres::ENTRY,
    sqlite::ENTRY,
];

/// The error of a database input in a build without the `database` feature.
#[cfg(not(feature = "database"))]
fn database_off(input: &OpenInput<'_>) -> SourceError {
    SourceError::Database {
        input: input.name.to_string(),
        message: "this herdsman was built without database support; install a build with the `database` feature (the released one has it)".into(),
    }
}

/// The registry entry of `format`.
pub fn entry(format: Format) -> &'static FormatEntry {
    REGISTRY
        .iter()
        .find(|e| e.format == format)
        .expect("every format is registered")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_format_is_registered_once_with_distinct_names() {
        for f in [Format::Csv, Format::Jsonl, Format::Lines, Format::Parquet] {
            assert_eq!(REGISTRY.iter().filter(|e| e.format == f).count(), 1);
            assert_eq!(entry(f).names[0], f.name());
        }
        let mut names: Vec<&str> = REGISTRY
            .iter()
            .flat_map(|e| e.names.iter().copied())
            .collect();
        let n = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), n);
    }

    #[test]
    fn tokens_round_trip_and_refuse_garbage() {
        for (o, l) in [(0, 1), (127, 128), (u64::MAX, u64::MAX), (1 << 40, 3)] {
            let at = Location {
                byte_offset: o,
                line: l,
            };
            let t = at.token();
            assert!(t.len() <= 21);
            assert_eq!(Location::from_token(&t), Ok(at));
        }
        assert_eq!(Location::from_token(&[]), Err(TokenError::Empty));
        assert_eq!(
            Location::from_token(&[7, 0, 1]),
            Err(TokenError::UnknownKind(7))
        );
        assert_eq!(Location::from_token(&[1, 0x80]), Err(TokenError::Truncated));
        assert_eq!(
            Location::from_token(&[1, 0, 1, 0]),
            Err(TokenError::Trailing)
        );
        let mut huge = vec![1];
        huge.extend([0xff; 10]);
        huge.push(0);
        assert_eq!(Location::from_token(&huge), Err(TokenError::Overflow));
    }
}
