//! The record source: reads CSV, JSONL and line inputs in order and yields each record as
//! compact JSON with its exact position, so a run can resume at any record boundary.
//!
//! A source must never read a whole file into memory, never let one record grow a buffer
//! beyond `max_record_bytes`, and never turn malformed input into a crash or a silent skip:
//! a bad record is yielded with its [`RecordError`]. Nor may it finish a file that changed
//! while it was read as if nothing happened: at the end of each regular file its size, its
//! modification time and the bytes read are compared with what they were when it was opened
//! ([`SourceError::Changed`]). CSV header names are keys as written (only repeats renamed),
//! never lossily decoded.

use std::collections::HashSet;
use std::io::{self, BufRead};

use crate::error::{RecordError, RecordErrorKind, SourceError};
use crate::format::{Compression, Format};
use crate::input::{open_stream, open_watched, InputPath, InputSpec, Watch};
use crate::json;

/// Raw text kept in a [`RecordError`] is cut to this many bytes.
pub const RAW_CAP: usize = 64 * 1024;

/// Where a record starts, and its number. Positions are exact: resuming a source at a
/// position yields the same records and positions as reading on from there.
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
    /// Offset of the record's first byte in the (decompressed) file.
    pub byte_offset: u64,
    /// 1-based line on which the record starts.
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
    /// [`RecordErrorKind::TooLong`] error and reading goes on after it (default 16 MiB).
    pub max_record_bytes: usize,
    /// Size of each input's read buffer (default 256 KiB); records may be larger.
    pub read_buffer_bytes: usize,
}

impl Default for SourceOptions {
    fn default() -> Self {
        SourceOptions {
            csv_delimiter: b',',
            infer_types: false,
            max_record_bytes: 16 << 20,
            read_buffer_bytes: crate::input::READ_BUF,
        }
    }
}

/// A byte stream with its position.
struct Cursor {
    rdr: Box<dyn BufRead + Send>,
    offset: u64,
    line: u64,
}

impl Cursor {
    fn consume(&mut self, n: usize) {
        self.rdr.consume(n);
        self.offset += n as u64;
    }

    /// Skips a UTF-8 byte order mark at the current position.
    fn skip_bom(&mut self) -> io::Result<()> {
        if self.rdr.fill_buf()?.starts_with(b"\xef\xbb\xbf") {
            self.consume(3);
        }
        Ok(())
    }

    /// Reads one line (without its `\n` / `\r\n`) into `buf`, keeping at most `cap + 1`
    /// bytes. Returns `None` at end of input, else `(start offset, start line, too long)`.
    fn read_line(&mut self, buf: &mut Vec<u8>, cap: usize) -> io::Result<Option<(u64, u64, bool)>> {
        buf.clear();
        let start = (self.offset, self.line);
        let mut total = 0usize;
        let mut any = false;
        loop {
            let avail = match self.rdr.fill_buf() {
                Ok(a) => a,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if avail.is_empty() {
                if !any {
                    return Ok(None);
                }
                break;
            }
            any = true;
            let (take, found) = match memchr::memchr(b'\n', avail) {
                Some(i) => (i + 1, true),
                None => (avail.len(), false),
            };
            let content = if found { take - 1 } else { take };
            let room = (cap + 2).saturating_sub(buf.len());
            buf.extend_from_slice(&avail[..content.min(room)]);
            total += content;
            self.consume(take);
            if found {
                self.line += 1;
                break;
            }
        }
        if buf.last() == Some(&b'\r') && total <= cap + 2 {
            buf.pop();
            total -= 1;
        }
        Ok(Some((start.0, start.1, total > cap)))
    }
}

/// CSV parsing state for one file.
struct CsvState {
    core: csv_core::Reader,
    delim: u8,
    /// `"name":` for each header column, pre-escaped.
    keys: Vec<Vec<u8>>,
    names: Vec<String>,
    fields: Vec<u8>,
    ends: Vec<usize>,
    raw: Vec<u8>,
}

/// One raw CSV record in `CsvState`'s buffers.
struct RawCsv {
    start: u64,
    line: u64,
    nfields: usize,
    too_long: bool,
    /// The data ends inside a quoted field that opened on this line.
    open_quote: Option<u64>,
}

impl CsvState {
    fn new(delim: u8) -> CsvState {
        CsvState {
            core: csv_core::ReaderBuilder::new().delimiter(delim).build(),
            delim,
            keys: Vec::new(),
            names: Vec::new(),
            fields: vec![0; 4096],
            ends: vec![0; 64],
            raw: Vec::with_capacity(4096),
        }
    }

    /// Reads the next CSV record's fields into `self.fields` / `self.ends`.
    fn read(&mut self, cur: &mut Cursor, cap: usize) -> io::Result<Option<RawCsv>> {
        use csv_core::ReadRecordResult as R;
        // Skip blank lines between records so the position is the record's first byte.
        loop {
            let avail = match cur.rdr.fill_buf() {
                Ok(a) => a,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if avail.is_empty() {
                return Ok(None);
            }
            if avail[0] != b'\n' && avail[0] != b'\r' {
                break;
            }
            let n = avail
                .iter()
                .take_while(|&&b| b == b'\n' || b == b'\r')
                .count();
            let nl = memchr::memchr_iter(b'\n', &avail[..n]).count() as u64;
            let whole = n == avail.len();
            cur.consume(n);
            cur.line += nl;
            if !whole {
                break;
            }
        }
        let start = cur.offset;
        let line = cur.line;
        self.raw.clear();
        let mut raw_total = 0usize;
        // Quoting followed past the record size limit, where `raw` stops keeping bytes.
        let mut scan: Option<QuoteScan> = None;
        let (mut fl, mut el) = (0usize, 0usize);
        loop {
            let input = match cur.rdr.fill_buf() {
                Ok(a) => a,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            let at_eof = input.is_empty();
            let lines_before = self.core.line();
            let (res, nin, nout, nend) =
                self.core
                    .read_record(input, &mut self.fields[fl..], &mut self.ends[el..]);
            let used = &input[..nin];
            let room = cap.saturating_sub(self.raw.len());
            let keep = nin.min(room);
            self.raw.extend_from_slice(&used[..keep]);
            if keep < nin {
                scan.get_or_insert_with(|| QuoteScan::over(&self.raw, self.delim, line))
                    .feed(&used[keep..]);
            }
            raw_total += nin;
            // csv-core counts every `\n` it consumes, quoted or not.
            cur.line += self.core.line() - lines_before;
            cur.consume(nin);
            fl += nout;
            el += nend;
            let too_long = raw_total > cap;
            match res {
                R::InputEmpty => {}
                R::OutputFull => {
                    if too_long {
                        fl = 0;
                    } else {
                        let n = self.fields.len() * 2;
                        self.fields.resize(n, 0);
                    }
                }
                R::OutputEndsFull => {
                    if too_long {
                        el = 0;
                    } else {
                        let n = self.ends.len() * 2;
                        self.ends.resize(n, 0);
                    }
                }
                R::Record => {
                    // Only a record cut by the end of the data can end inside quotes.
                    let open_quote = if at_eof {
                        scan.unwrap_or_else(|| QuoteScan::over(&self.raw, self.delim, line))
                            .open_since()
                    } else {
                        None
                    };
                    return Ok(Some(RawCsv {
                        start,
                        line,
                        nfields: el,
                        too_long,
                        open_quote,
                    }));
                }
                R::End => return Ok(None),
            }
        }
    }

    fn field(&self, i: usize) -> &[u8] {
        let s = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.fields[s..self.ends[i]]
    }

    fn raw_text(&self) -> String {
        let mut r = &self.raw[..self.raw.len().min(RAW_CAP)];
        while let [rest @ .., b'\n' | b'\r'] = r {
            r = rest;
        }
        String::from_utf8_lossy(r).into_owned()
    }
}

/// JSON keys for CSV header names. Every name keeps its bytes, except a repeat of an
/// earlier name, which takes the first suffix (`a.1`, `a.2`, ..., the convention of pandas)
/// that no name of the header uses, so each column keeps a key of its own.
fn header_keys(names: Vec<String>) -> Vec<String> {
    let mut taken: HashSet<String> = names.iter().cloned().collect();
    let mut seen: HashSet<String> = HashSet::with_capacity(names.len());
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        if seen.insert(name.clone()) {
            out.push(name);
            continue;
        }
        let key = (1..)
            .map(|k| format!("{name}.{k}"))
            .find(|n| !taken.contains(n))
            .expect("some suffix is free");
        taken.insert(key.clone());
        out.push(key);
    }
    out
}

/// Follows CSV quoting over a record's bytes, to tell whether they end inside a quoted
/// field and on which line that field opened.
#[derive(Clone, Copy, Debug)]
struct QuoteScan {
    delim: u8,
    /// 0 = field start, 1 = unquoted, 2 = quoted, 3 = quote seen inside quoted.
    state: u8,
    /// The line of the next byte.
    line: u64,
    /// The line where the last quoted field opened.
    opened: u64,
}

impl QuoteScan {
    /// A scan of `bytes`, a record that starts on `line`.
    fn over(bytes: &[u8], delim: u8, line: u64) -> QuoteScan {
        let mut s = QuoteScan {
            delim,
            state: 0,
            line,
            opened: line,
        };
        s.feed(bytes);
        s
    }

    fn feed(&mut self, bytes: &[u8]) {
        for &b in bytes {
            let sep = b == self.delim || b == b'\n' || b == b'\r';
            self.state = match self.state {
                0 if b == b'"' => {
                    self.opened = self.line;
                    2
                }
                0 | 1 => u8::from(!sep),
                2 => {
                    if b == b'"' {
                        3
                    } else {
                        2
                    }
                }
                _ => {
                    if b == b'"' {
                        2
                    } else if sep {
                        0
                    } else {
                        1
                    }
                }
            };
            if b == b'\n' {
                self.line += 1;
            }
        }
    }

    /// The line where the quoted field the bytes end in opened, if they end in one.
    fn open_since(&self) -> Option<u64> {
        (self.state == 2).then_some(self.opened)
    }
}

/// A size for messages: `16 MiB`, `1 GiB`, `2 KiB`, or a number of bytes.
fn size_text(n: usize) -> String {
    for (unit, name) in [(1usize << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")] {
        if n >= unit && n.is_multiple_of(unit) {
            return format!("{} {name}", n / unit);
        }
    }
    format!("{n} bytes")
}

/// A record read from the current file: start offset, start line, data.
type ReadOne = (u64, u64, Result<Vec<u8>, RecordError>);

enum Kind {
    Csv(Box<CsvState>),
    Jsonl,
    Lines,
}

struct FileState {
    index: u32,
    cur: Cursor,
    kind: Kind,
    /// The file as it was when reading began (regular files only).
    watch: Option<Watch>,
}

/// Streams the records of several inputs, in order. See the crate docs for an example.
pub struct Source {
    inputs: Vec<InputSpec>,
    names: Vec<String>,
    opts: SourceOptions,
    current: Option<FileState>,
    next_file: usize,
    seq: u64,
    next_pos: Position,
    failed: bool,
    line_buf: Vec<u8>,
    out_hint: usize,
}

impl Source {
    /// Opens the inputs for reading. With `resume_at`, reading starts at that position
    /// (a position taken from an earlier read of the same inputs: a record's
    /// [`Record::pos`] or [`Source::next_position`]).
    ///
    /// The first input is opened at once so that an unreadable file is reported here, and
    /// the header of every CSV file still to read is checked, so that a header that is not
    /// UTF-8 (or otherwise unusable) in any input is reported before the first record.
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
            line_buf: Vec::new(),
            out_hint: 64,
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
            let fs = src.open_file(src.next_file, resume_at)?;
            src.current = Some(fs);
            src.next_file += 1;
        }
        for index in src.next_file..src.inputs.len() {
            let spec = &src.inputs[index];
            if spec.format == Format::Csv && matches!(spec.path, InputPath::File(_)) {
                src.open_file(index, None)?;
            }
        }
        Ok(src)
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
        match &self.current.as_ref()?.kind {
            Kind::Csv(c) => Some(&c.names),
            _ => None,
        }
    }

    fn open_file(&self, index: usize, resume: Option<Position>) -> Result<FileState, SourceError> {
        let spec = &self.inputs[index];
        let file = &self.names[index];
        let offset = resume.map_or(0, |p| p.byte_offset);
        let line = resume.map_or(1, |p| p.line);
        let read_err = |offset: u64, source: io::Error| SourceError::Read {
            file: file.clone(),
            offset,
            source,
        };
        let open_err = |source: io::Error| SourceError::Open {
            file: file.clone(),
            source,
        };
        let resume_err = |message: String| SourceError::Resume {
            file: file.clone(),
            offset,
            message,
        };
        // Whether to seek or to discard bytes on the already-open stream.
        let seekable = matches!(&spec.path, InputPath::File(p) if Compression::from_path(p) == Compression::None);
        let open_at = |off: u64| -> Result<(Box<dyn BufRead + Send>, Option<Watch>), SourceError> {
            match &spec.path {
                InputPath::File(p) => {
                    open_watched(p, off, self.opts.read_buffer_bytes).map_err(|e| {
                        if e.kind() == io::ErrorKind::UnexpectedEof {
                            resume_err(e.to_string())
                        } else {
                            open_err(e)
                        }
                    })
                }
                InputPath::Stdin => open_stream(&spec.path, self.opts.read_buffer_bytes)
                    .map(|rdr| (rdr, None))
                    .map_err(open_err),
            }
        };
        let discard = |cur: &mut Cursor, to: u64| -> Result<(), SourceError> {
            let n = to - cur.offset;
            let got = io::copy(&mut io::Read::take(&mut cur.rdr, n), &mut io::sink())
                .map_err(|e| read_err(cur.offset, e))?;
            if got < n {
                return Err(resume_err(format!(
                    "the data ends at byte {}",
                    cur.offset + got
                )));
            }
            cur.offset = to;
            Ok(())
        };
        let is_stdin = matches!(spec.path, InputPath::Stdin);
        // CSV reads its header from the start first; other formats open at the offset
        // directly (standard input discards up to it).
        let direct = spec.format != Format::Csv && !is_stdin;
        let (rdr, watch) = open_at(if direct { offset } else { 0 })?;
        let mut cur = Cursor {
            rdr,
            offset: if direct { offset } else { 0 },
            line: 1,
        };
        if spec.format != Format::Csv && is_stdin && offset > 0 {
            discard(&mut cur, offset)?;
        }
        if offset == 0 {
            cur.skip_bom().map_err(|e| read_err(0, e))?;
        }
        let kind = match spec.format {
            Format::Jsonl => Kind::Jsonl,
            Format::Lines => Kind::Lines,
            Format::Csv => {
                let mut st = Box::new(CsvState::new(self.opts.csv_delimiter));
                if offset > 0 {
                    cur.skip_bom().map_err(|e| read_err(0, e))?;
                }
                let cap = self.opts.max_record_bytes;
                if let Some(h) = st
                    .read(&mut cur, cap)
                    .map_err(|e| read_err(cur.offset, e))?
                {
                    if let Some(opened) = h.open_quote {
                        return Err(SourceError::Header {
                            file: file.clone(),
                            message: format!(
                                "a quoted column name opened on line {opened} is never closed (the file ends inside quotes)"
                            ),
                        });
                    }
                    if h.too_long {
                        return Err(SourceError::Header {
                            file: file.clone(),
                            message: format!(
                                "it is longer than the record size limit ({}); raise the limit with --max-record-size",
                                size_text(cap)
                            ),
                        });
                    }
                    let mut names = Vec::with_capacity(h.nfields);
                    for i in 0..h.nfields {
                        match std::str::from_utf8(st.field(i)) {
                            Ok(name) => names.push(name.to_string()),
                            Err(e) => {
                                return Err(SourceError::HeaderNotUtf8 {
                                    file: file.clone(),
                                    column: i + 1,
                                    byte: e.valid_up_to() + 1,
                                })
                            }
                        }
                    }
                    for name in header_keys(names) {
                        let mut key = Vec::with_capacity(name.len() + 3);
                        json::write_str(&mut key, name.as_bytes());
                        key.push(b':');
                        st.keys.push(key);
                        st.names.push(name);
                    }
                }
                if offset > 0 {
                    if offset < cur.offset {
                        return Err(resume_err(format!(
                            "the offset lies inside the header, which ends at byte {}",
                            cur.offset
                        )));
                    }
                    if seekable {
                        // The watch taken at the first open covers this one too.
                        cur.rdr = open_at(offset)?.0;
                        cur.offset = offset;
                    } else {
                        discard(&mut cur, offset)?;
                    }
                    st.core = csv_core::ReaderBuilder::new()
                        .delimiter(self.opts.csv_delimiter)
                        .build();
                }
                Kind::Csv(st)
            }
        };
        if offset > 0 {
            cur.offset = offset;
            cur.line = line;
        }
        Ok(FileState {
            index: index as u32,
            cur,
            kind,
            watch,
        })
    }

    /// Reads the next record of the current file; `None` at its end.
    fn read_in_file(&mut self) -> io::Result<Option<ReadOne>> {
        let fs = self.current.as_mut().expect("a file is open");
        let cap = self.opts.max_record_bytes;
        let name = &self.names[fs.index as usize];
        match &mut fs.kind {
            Kind::Csv(st) => {
                let Some(r) = st.read(&mut fs.cur, cap)? else {
                    return Ok(None);
                };
                let err = |kind, message: String| RecordError {
                    kind,
                    message,
                    raw: st.raw_text(),
                };
                if let Some(opened) = r.open_quote {
                    return Ok(Some((
                        r.start,
                        r.line,
                        Err(err(
                            RecordErrorKind::Csv,
                            format!(
                                "{name}:{opened}: a quoted field opened on line {opened} is never closed (the file ends inside quotes, so the row that starts on line {} runs to the end of the file); fix the quoting",
                                r.line
                            ),
                        )),
                    )));
                }
                if r.too_long {
                    return Ok(Some((
                        r.start,
                        r.line,
                        Err(err(
                            RecordErrorKind::TooLong,
                            format!(
                                "{name}:{}: the CSV row is longer than the record size limit ({}); split it, or raise the limit with --max-record-size",
                                r.line,
                                size_text(cap)
                            ),
                        )),
                    )));
                }
                if r.nfields != st.keys.len() {
                    return Ok(Some((
                        r.start,
                        r.line,
                        Err(err(
                            RecordErrorKind::FieldCount,
                            format!(
                                "{name}:{}: the CSV row has {} fields but the header has {}; fix the row or its quoting",
                                r.line,
                                r.nfields,
                                st.keys.len()
                            ),
                        )),
                    )));
                }
                let used = if r.nfields == 0 {
                    0
                } else {
                    st.ends[r.nfields - 1]
                };
                if std::str::from_utf8(&st.fields[..used]).is_err() {
                    let bad = (0..r.nfields)
                        .find(|&i| std::str::from_utf8(st.field(i)).is_err())
                        .unwrap_or(0);
                    return Ok(Some((
                        r.start,
                        r.line,
                        Err(err(
                            RecordErrorKind::Utf8,
                            format!(
                                "{name}:{}: column `{}` is not valid UTF-8; convert the file to UTF-8",
                                r.line, st.names[bad]
                            ),
                        )),
                    )));
                }
                let mut out = Vec::with_capacity(self.out_hint);
                out.push(b'{');
                for i in 0..r.nfields {
                    if i > 0 {
                        out.push(b',');
                    }
                    out.extend_from_slice(&st.keys[i]);
                    if self.opts.infer_types {
                        json::write_inferred(&mut out, st.field(i));
                    } else {
                        json::write_str(&mut out, st.field(i));
                    }
                }
                out.push(b'}');
                self.out_hint = out.len() + 16;
                Ok(Some((r.start, r.line, Ok(out))))
            }
            Kind::Jsonl => loop {
                let Some((start, line, too_long)) = fs.cur.read_line(&mut self.line_buf, cap)?
                else {
                    return Ok(None);
                };
                let buf = &self.line_buf;
                if !too_long && buf.iter().all(|&b| b == b' ' || b == b'\t') {
                    continue;
                }
                if let Err(e) = check_line(name, line, cap, too_long, buf) {
                    return Ok(Some((start, line, Err(e))));
                }
                if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(buf) {
                    return Ok(Some((
                        start,
                        line,
                        Err(RecordError {
                            kind: RecordErrorKind::Json,
                            message: format!(
                                "{name}:{line}: the line is not one JSON value ({e}); fix the line"
                            ),
                            raw: raw_text(buf),
                        }),
                    )));
                }
                let mut out = Vec::with_capacity(buf.len());
                if memchr::memchr3(b' ', b'\t', b'\r', buf).is_some() {
                    json::write_compact(&mut out, buf);
                } else {
                    out.extend_from_slice(buf);
                }
                return Ok(Some((start, line, Ok(out))));
            },
            Kind::Lines => {
                let Some((start, line, too_long)) = fs.cur.read_line(&mut self.line_buf, cap)?
                else {
                    return Ok(None);
                };
                let buf = &self.line_buf;
                if let Err(e) = check_line(name, line, cap, too_long, buf) {
                    return Ok(Some((start, line, Err(e))));
                }
                let mut out = Vec::with_capacity(buf.len() + 2);
                json::write_str(&mut out, buf);
                Ok(Some((start, line, Ok(out))))
            }
        }
    }
}

impl Iterator for Source {
    type Item = Result<Record, SourceError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.failed {
                return None;
            }
            if self.current.is_none() {
                if self.next_file >= self.inputs.len() {
                    return None;
                }
                match self.open_file(self.next_file, None) {
                    Ok(fs) => self.current = Some(fs),
                    Err(e) => {
                        self.failed = true;
                        return Some(Err(e));
                    }
                }
                self.next_file += 1;
            }
            match self.read_in_file() {
                Ok(Some((byte_offset, line, data))) => {
                    let fs = self.current.as_ref().expect("a file is open");
                    let pos = Position {
                        file_index: fs.index,
                        byte_offset,
                        line,
                        seq: self.seq,
                    };
                    self.seq += 1;
                    self.next_pos = Position {
                        file_index: fs.index,
                        byte_offset: fs.cur.offset,
                        line: fs.cur.line,
                        seq: self.seq,
                    };
                    return Some(Ok(Record { pos, data }));
                }
                Ok(None) => {
                    let fs = self.current.take().expect("a file is open");
                    if let Some(detail) = fs.watch.as_ref().and_then(|w| w.check(fs.cur.offset)) {
                        self.failed = true;
                        return Some(Err(SourceError::Changed {
                            file: self.names[fs.index as usize].clone(),
                            detail,
                        }));
                    }
                }
                Err(source) => {
                    let fs = self.current.as_ref().expect("a file is open");
                    self.failed = true;
                    return Some(Err(SourceError::Read {
                        file: self.names[fs.index as usize].clone(),
                        offset: fs.cur.offset,
                        source,
                    }));
                }
            }
        }
    }
}

/// Reads the header of every CSV file among `inputs`, so that a header that is not UTF-8 or
/// otherwise unusable (or a file that cannot be opened) is reported before anything else is
/// done. Standard input is skipped: it can be read only once.
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
        if spec.format == Format::Csv && matches!(spec.path, InputPath::File(_)) {
            Source::open(vec![spec.clone()], opts.clone(), None)?;
        }
    }
    Ok(())
}

/// The raw text kept in a record error: lossy UTF-8, at most [`RAW_CAP`] bytes.
fn raw_text(buf: &[u8]) -> String {
    String::from_utf8_lossy(&buf[..buf.len().min(RAW_CAP)]).into_owned()
}

/// The checks every JSONL or lines record passes: not over the size limit, valid UTF-8.
fn check_line(
    name: &str,
    line: u64,
    cap: usize,
    too_long: bool,
    buf: &[u8],
) -> Result<(), RecordError> {
    if too_long {
        return Err(RecordError {
            kind: RecordErrorKind::TooLong,
            message: format!(
                "{name}:{line}: the line is longer than the record size limit ({}); split it, or raise the limit with --max-record-size",
                size_text(cap)
            ),
            raw: raw_text(buf),
        });
    }
    if let Err(e) = std::str::from_utf8(buf) {
        return Err(RecordError {
            kind: RecordErrorKind::Utf8,
            message: format!(
                "{name}:{line}: the line is not valid UTF-8 (at byte {}); convert the file to UTF-8",
                e.valid_up_to() + 1
            ),
            raw: raw_text(buf),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_quote_detection_follows_csv_quoting() {
        for (raw, open) in [
            (&b"a,b"[..], None),
            (b"\"a\",\"b\"", None),
            (b"\"a\"\"", Some(1)),
            (b"\"a\"\"\"", None),
            (b"x,\"multi\nline", Some(1)),
            (b"\"x\ny\",\"open\nz", Some(2)),
            (b"ab\"c", None),
            (b"\"a\"b,\"", Some(1)),
            (b"", None),
        ] {
            assert_eq!(
                QuoteScan::over(raw, b',', 1).open_since(),
                open,
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
        // Fed in pieces, the same answer.
        let mut s = QuoteScan::over(b"1,\"a", b',', 7);
        s.feed(b"\n\"\"\n");
        assert_eq!(s.open_since(), Some(7));
    }

    #[test]
    fn repeated_names_take_a_suffix_no_name_uses() {
        let keys = |h: &[&str]| header_keys(h.iter().map(|s| s.to_string()).collect());
        assert_eq!(keys(&["a", "a", "a.1"]), ["a", "a.2", "a.1"]);
        assert_eq!(keys(&["a", "a", "", ""]), ["a", "a.1", "", ".1"]);
        assert_eq!(keys(&["b", "a.1", "a", "a"]), ["b", "a.1", "a", "a.2"]);
    }

    #[test]
    fn sizes_read_naturally() {
        assert_eq!(size_text(16 << 20), "16 MiB");
        assert_eq!(size_text(1 << 30), "1 GiB");
        assert_eq!(size_text(2048), "2 KiB");
        assert_eq!(size_text(1000), "1000 bytes");
    }
}
