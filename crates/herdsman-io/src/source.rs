//! The record source: reads its inputs in order, each through its format's reader, and yields
//! each record as compact JSON with its exact position, so a run can resume at any record
//! boundary.
//!
//! A source must never read a whole file into memory, never let one record grow a buffer
//! beyond `max_record_bytes`, and never turn malformed input into a crash or a silent skip:
//! a bad record is yielded with its [`RecordError`]. Nor may it finish a file that changed
//! while it was read as if nothing happened: at the end of each regular file its size, its
//! modification time and the bytes read are compared with what they were when it was opened
//! ([`SourceError::Changed`]). The formats themselves live in `formats/`, one file each.

use crate::error::{RecordError, SourceError, TokenError};
use crate::formats::{self, Location, OpenInput, RecordReader};
use crate::input::{InputPath, InputSpec};
use crate::shard::Cut;

/// Where a record starts, and its number. Positions are exact: resuming a source at a
/// position yields the same records and positions as reading on from there.
///
/// `byte_offset` and `line` are the input format's [`Location`]; a checkpoint stores them as
/// the opaque [`Position::token`], beside `file_index` and `seq`.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct Position {
    /// Index of the input in the list given to [`Source::open`].
    pub file_index: u32,
    /// Offset of the record's first byte in the (decompressed) file (text formats; see
    /// [`Location`]).
    pub byte_offset: u64,
    /// 1-based line on which the record starts (text formats; see [`Location`]).
    pub line: u64,
    /// 0-based record number across all inputs.
    pub seq: u64,
}

impl Position {
    /// The start of everything: first file, offset 0, line 1, record 0.
    pub const START: Position = Position {
        file_index: 0,
        byte_offset: 0,
        line: 1,
        seq: 0,
    };

    /// The position of the record `seq` at `at` in input `file_index`.
    pub fn at(file_index: u32, at: Location, seq: u64) -> Position {
        Position {
            file_index,
            byte_offset: at.byte_offset,
            line: at.line,
            seq,
        }
    }

    /// Where in its input the record starts, in its format's coordinates.
    pub fn location(&self) -> Location {
        Location {
            byte_offset: self.byte_offset,
            line: self.line,
        }
    }

    /// The opaque bytes a checkpoint stores for this position beside `file_index` and `seq`
    /// (see [`Location::token`]).
    pub fn token(&self) -> Vec<u8> {
        self.location().token()
    }

    /// The position stored in a checkpoint as `file_index`, `seq` and [`Position::token`].
    ///
    /// ```
    /// use herdsman_io::Position;
    /// let p = Position { file_index: 2, byte_offset: 1234, line: 56, seq: 78 };
    /// assert_eq!(Position::from_token(2, 78, &p.token()), Ok(p));
    /// assert!(Position::from_token(2, 78, b"").is_err());
    /// ```
    pub fn from_token(file_index: u32, seq: u64, token: &[u8]) -> Result<Position, TokenError> {
        Location::from_token(token).map(|at| Position::at(file_index, at, seq))
    }
}

/// One record of the input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Where it starts.
    pub pos: Position,
    /// Compact JSON text of the record (no trailing newline), or why it could not be read.
    pub data: Result<Vec<u8>, RecordError>,
}

/// How to read inputs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceOptions {
    /// CSV field delimiter (default `,`).
    pub csv_delimiter: u8,
    /// CSV only: turn empty fields into `null`, `true`/`false` into booleans and JSON-number
    /// text into numbers (default off: every value is a string).
    pub infer_types: bool,
    /// A record (a line, or a CSV row in its raw form) longer than this becomes a
    /// [`RecordErrorKind::TooLong`](crate::RecordErrorKind::TooLong) error and reading goes on after it (default 16 MiB).
    pub max_record_bytes: usize,
    /// Size of each input's read buffer (default 256 KiB); records may be larger.
    pub read_buffer_bytes: usize,
    /// Parquet only: read just these columns, and write their keys in this order (default:
    /// every column, in file order). A name the file lacks is an error when it is opened.
    pub columns: Option<Vec<String>>,
    /// Database inputs only: read the rows of this SQL query rather than the table the URL
    /// names (default: none).
    pub query: Option<String>,
    /// Database inputs only: the unique, non-null key column(s) the rows are read in the order
    /// of (default: the table's primary key; a query needs one).
    pub key: Option<Vec<String>>,
}

impl Default for SourceOptions {
    fn default() -> Self {
        SourceOptions {
            csv_delimiter: b',',
            infer_types: false,
            max_record_bytes: 16 << 20,
            read_buffer_bytes: crate::input::READ_BUF,
            columns: None,
            query: None,
            key: None,
        }
    }
}

/// Streams the records of several inputs, in order. See the crate docs for an example.
///
/// Each input is read by its format's [`RecordReader`](crate::RecordReader), found in the
/// format [`REGISTRY`](crate::REGISTRY); the source numbers the records across inputs and
/// keeps the position to resume from.
pub struct Source {
    inputs: Vec<InputSpec>,
    names: Vec<String>,
    opts: SourceOptions,
    /// The input being read and its reader.
    current: Option<(u32, Box<dyn RecordReader>)>,
    next_file: usize,
    seq: u64,
    next_pos: Position,
    failed: bool,
    /// No record at or after this cut is yielded ([`Source::stop_at`]).
    end: Option<Cut>,
}

impl Source {
    /// Opens the inputs for reading. With `resume_at`, reading starts at that position
    /// (a position taken from an earlier read of the same inputs: a record's
    /// [`Record::pos`] or [`Source::next_position`]).
    ///
    /// The first input is opened at once so that an unreadable file is reported here, and
    /// every input still to read whose format checks something on opening (the header of a
    /// CSV file) is opened once, so that a header that is not UTF-8 (or otherwise unusable)
    /// in any input is reported before the first record.
    pub fn open(
        inputs: Vec<InputSpec>,
        opts: SourceOptions,
        resume_at: Option<Position>,
    ) -> Result<Source, SourceError> {
        let names = inputs.iter().map(|s| s.path.display_name()).collect();
        let start = resume_at.unwrap_or(Position::START);
        let mut src = Source {
            inputs,
            names,
            opts,
            current: None,
            next_file: start.file_index as usize,
            seq: start.seq,
            next_pos: start,
            failed: false,
            end: None,
        };
        if src.next_file > src.inputs.len()
            || (src.next_file == src.inputs.len() && resume_at.is_some_and(|p| p.byte_offset > 0))
        {
            return Err(SourceError::Resume {
                file: format!("input #{}", start.file_index),
                offset: start.byte_offset,
                message: format!("there are only {} inputs", src.inputs.len()),
            });
        }
        if src.next_file < src.inputs.len() {
            let reader = src.open_file(src.next_file, resume_at.map(|p| p.location()))?;
            src.current = Some((src.next_file as u32, reader));
            src.next_file += 1;
        }
        for index in src.next_file..src.inputs.len() {
            let spec = &src.inputs[index];
            if checked_on_open(spec) {
                src.open_file(index, None)?;
            }
        }
        Ok(src)
    }

    /// Ends the records at `end`: a record that starts at or after it is not yielded, and the
    /// source ends there (its [`Source::next_position`] is that record's position). Inputs
    /// after the cut are not opened. A shard's source stops where the next shard begins.
    pub fn stop_at(&mut self, end: Cut) {
        self.end = Some(end);
    }

    /// The name of an input, for messages (`<stdin>` for standard input).
    pub fn file_name(&self, file_index: u32) -> String {
        self.names
            .get(file_index as usize)
            .cloned()
            .unwrap_or_else(|| format!("input #{file_index}"))
    }

    /// Where the next record would start: just after the last record returned (or the resume
    /// position if none was returned yet). Resuming there continues without loss or repeat.
    pub fn next_position(&self) -> Position {
        self.next_pos
    }

    /// The CSV header of the file being read, if it is a CSV file. Repeated names get a
    /// suffix (`a`, `a.1`, `a.2`, ...) so each column has its own key.
    pub fn csv_header(&self) -> Option<&[String]> {
        self.current.as_ref()?.1.header()
    }

    fn open_file(
        &self,
        index: usize,
        at: Option<Location>,
    ) -> Result<Box<dyn RecordReader>, SourceError> {
        let spec = &self.inputs[index];
        let input = OpenInput {
            path: &spec.path,
            name: &self.names[index],
            opts: &self.opts,
        };
        (formats::entry(spec.format).open)(&input, at)
    }
}

/// Whether `spec` is opened once up front to check it: a file (standard input can be read
/// only once) in a format that validates something on opening.
fn checked_on_open(spec: &InputSpec) -> bool {
    formats::entry(spec.format).check_on_open && matches!(spec.path, InputPath::File(_))
}

impl Source {
    /// Moves past the next record without decoding it (see
    /// [`RecordReader::skip_record`](crate::RecordReader::skip_record)) and returns its
    /// position: what [`Iterator::next`] would return as the record's [`Record::pos`], and
    /// `None` where it would return `None`. Faster than reading the records, for finding
    /// where a shard starts.
    pub fn skip_record(&mut self) -> Option<Result<Position, SourceError>> {
        self.advance(|reader| Ok(reader.skip_record()?.map(|at| (at, ()))))
            .map(|r| r.map(|(pos, ())| pos))
    }

    /// Moves past up to `max` records without decoding them and returns how many it moved
    /// past (fewer only at the end of the inputs or the end cut): the records `max` calls
    /// of [`Source::skip_record`] would pass, with the same [`Source::next_position`]
    /// after them, but whole buffered lines of text inputs at a time.
    pub fn skip_records(&mut self, max: usize) -> Result<usize, SourceError> {
        let mut n = 0usize;
        while n < max {
            // Several at once only where no end cut can fall between them.
            if let (None, false, Some((index, reader))) =
                (self.end, self.failed, self.current.as_mut())
            {
                let k = match reader.skip_buffered(max - n) {
                    Ok(k) => k,
                    Err(e) => {
                        self.failed = true;
                        return Err(e);
                    }
                };
                if k > 0 {
                    self.seq += k as u64;
                    self.next_pos = Position::at(*index, reader.next_location(), self.seq);
                    n += k;
                    continue;
                }
            }
            match self.skip_record() {
                None => break,
                Some(Err(e)) => return Err(e),
                Some(Ok(_)) => n += 1,
            }
        }
        Ok(n)
    }

    /// One step of the source: `read` takes the next record of the open input (its
    /// location and what it carries), the source numbers it, moves to the next input at
    /// the end of one, and stops at the end cut.
    fn advance<T>(
        &mut self,
        mut read: impl FnMut(&mut dyn RecordReader) -> Result<Option<(Location, T)>, SourceError>,
    ) -> Option<Result<(Position, T), SourceError>> {
        loop {
            if self.failed {
                return None;
            }
            if self.current.is_none() {
                if self.next_file >= self.inputs.len()
                    || self
                        .end
                        .is_some_and(|e| e.holds_back(self.next_file as u32, 0))
                {
                    return None;
                }
                match self.open_file(self.next_file, None) {
                    Ok(reader) => self.current = Some((self.next_file as u32, reader)),
                    Err(e) => {
                        self.failed = true;
                        return Some(Err(e));
                    }
                }
                self.next_file += 1;
            }
            let (index, reader) = self.current.as_mut().expect("a file is open");
            let index = *index;
            match read(reader.as_mut()) {
                Ok(Some((at, data))) => {
                    if self
                        .end
                        .is_some_and(|e| e.holds_back(index, at.byte_offset))
                    {
                        self.failed = true;
                        return None;
                    }
                    let pos = Position::at(index, at, self.seq);
                    self.seq += 1;
                    self.next_pos = Position::at(index, reader.next_location(), self.seq);
                    return Some(Ok((pos, data)));
                }
                Ok(None) => self.current = None,
                Err(e) => {
                    self.failed = true;
                    return Some(Err(e));
                }
            }
        }
    }
}

impl Iterator for Source {
    type Item = Result<Record, SourceError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.advance(|reader| Ok(reader.next_record()?.map(|r| (r.at, r.data))))
            .map(|r| r.map(|(pos, data)| Record { pos, data }))
    }
}

/// Reads the header of every CSV file among `inputs` (every file whose format checks
/// something on opening), so that a header that is not UTF-8 or otherwise unusable (or a
/// file that cannot be opened) is reported before anything else is done. Standard input is
/// skipped: it can be read only once.
///
/// ```
/// use herdsman_io::{check_csv_headers, Format, InputPath, InputSpec, SourceOptions};
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("latin1.csv");
/// std::fs::write(&path, b"id,caf\xe9\n1,2\n").unwrap();
/// let spec = InputSpec { path: InputPath::File(path), format: Format::Csv };
/// let err = check_csv_headers(&[spec], &SourceOptions::default()).unwrap_err();
/// assert!(err.to_string().contains("not valid UTF-8"));
/// ```
pub fn check_csv_headers(inputs: &[InputSpec], opts: &SourceOptions) -> Result<(), SourceError> {
    for spec in inputs {
        if checked_on_open(spec) {
            Source::open(vec![spec.clone()], opts.clone(), None)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Format;
    use proptest::prelude::*;

    /// Bytes that make text formats decide things: line breaks, blanks, quotes, bad UTF-8.
    fn text() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(
            prop_oneof![
                Just(b'a'),
                Just(b'1'),
                Just(b' '),
                Just(b'\t'),
                Just(b'\r'),
                Just(b'\n'),
                Just(b'\n'),
                Just(b'"'),
                Just(b','),
                Just(b'{'),
                Just(0xe9u8),
            ],
            0..200,
        )
    }

    proptest! {
        /// `skip_records(k)` passes exactly the records `k` calls of `skip_record` pass, and
        /// ends at the same position, whatever the steps, buffer size, cap and format.
        #[test]
        fn skipping_many_passes_what_skipping_one_by_one_passes(
            first in text(),
            second in text(),
            steps in proptest::collection::vec(0usize..7, 1..40),
            format in prop_oneof![Just(Format::Lines), Just(Format::Jsonl), Just(Format::Csv)],
            buffer in prop_oneof![Just(5usize), Just(64), Just(crate::input::READ_BUF)],
            cap in prop_oneof![Just(4usize), Just(1usize << 20)],
        ) {
            let dir = tempfile::tempdir().unwrap();
            let inputs: Vec<InputSpec> = [first, second]
                .iter()
                .enumerate()
                .map(|(i, data)| {
                    let p = dir.path().join(format!("{i}.in"));
                    std::fs::write(&p, data).unwrap();
                    InputSpec { path: InputPath::File(p), format }
                })
                .collect();
            let opts = SourceOptions {
                max_record_bytes: cap,
                read_buffer_bytes: buffer,
                ..SourceOptions::default()
            };
            // A CSV header that is not UTF-8 is refused when opened, whichever way it is read.
            let (Ok(mut many), Ok(mut one)) = (
                Source::open(inputs.clone(), opts.clone(), None),
                Source::open(inputs, opts, None),
            ) else {
                return Ok(());
            };
            for k in steps.iter().copied().cycle().take(400) {
                let mut passed = Ok(0);
                while passed.as_ref().is_ok_and(|p| *p < k) {
                    match one.skip_record() {
                        None => break,
                        Some(Ok(_)) => passed = passed.map(|p| p + 1),
                        Some(Err(e)) => passed = Err(e.to_string()),
                    }
                }
                let got = many.skip_records(k).map_err(|e| e.to_string());
                prop_assert_eq!(&got, &passed);
                let Ok(got) = got else { break };
                prop_assert_eq!(many.next_position(), one.next_position());
                if k > 0 && got < k {
                    break;
                }
            }
        }
    }
}
