//! CSV input: a header row, then one JSON object per row keyed by the header.
//!
//! Parsing is csv-core's, over a [`TextStream`]. Header names are keys as written (only
//! repeats renamed), never lossily decoded; a row that is malformed, too long, not UTF-8 or
//! of the wrong width is a record error that names the file and line. Resuming reads the
//! header from the start of the file again, then moves to the resume location.

use std::collections::HashSet;
use std::io;

use crate::error::{RecordError, RecordErrorKind, SourceError};
use crate::format::Format;
use crate::json;

use super::text::{size_text, TextStream};
use super::{FormatEntry, Location, OpenInput, ReadRecord, RecordReader, RAW_CAP};

/// CSV's registry entry.
pub(super) const ENTRY: FormatEntry = FormatEntry {
    format: Format::Csv,
    names: &["csv"],
    extensions: &["csv"],
    check_on_open: true,
    open,
};

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
    fn read(&mut self, cur: &mut TextStream, cap: usize) -> io::Result<Option<RawCsv>> {
        use csv_core::ReadRecordResult as R;
        // Skip blank lines between records so the position is the record's first byte.
        loop {
            let avail = cur.fill_buf()?;
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
            let input = cur.fill_buf()?;
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

/// Reads one CSV input.
struct CsvReader {
    cur: TextStream,
    st: CsvState,
    cap: usize,
    infer_types: bool,
    out_hint: usize,
}

/// Opens a CSV input: reads and checks its header, then moves to `at` if given.
fn open(input: &OpenInput<'_>, at: Option<Location>) -> Result<Box<dyn RecordReader>, SourceError> {
    let mut cur = TextStream::open(input, 0)?;
    let mut st = CsvState::new(input.opts.csv_delimiter);
    let cap = input.opts.max_record_bytes;
    let file = input.name;
    if let Some(h) = st.read(&mut cur, cap).map_err(|e| cur.read_error(e))? {
        if let Some(opened) = h.open_quote {
            return Err(SourceError::Header {
                file: file.to_string(),
                message: format!(
                    "a quoted column name opened on line {opened} is never closed (the file ends inside quotes)"
                ),
            });
        }
        if h.too_long {
            return Err(SourceError::HeaderTooLong {
                file: file.to_string(),
                limit: cap,
            });
        }
        let mut names = Vec::with_capacity(h.nfields);
        for i in 0..h.nfields {
            match std::str::from_utf8(st.field(i)) {
                Ok(name) => names.push(name.to_string()),
                Err(e) => {
                    return Err(SourceError::HeaderNotUtf8 {
                        file: file.to_string(),
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
    if let Some(at) = at.filter(|a| a.byte_offset > 0) {
        cur.advance_to(at)?;
        st.core = csv_core::ReaderBuilder::new()
            .delimiter(input.opts.csv_delimiter)
            .build();
    }
    Ok(Box::new(CsvReader {
        cur,
        st,
        cap,
        infer_types: input.opts.infer_types,
        out_hint: 64,
    }))
}

impl RecordReader for CsvReader {
    fn next_record(&mut self) -> Result<Option<ReadRecord>, SourceError> {
        let cap = self.cap;
        let st = &mut self.st;
        let Some(r) = st
            .read(&mut self.cur, cap)
            .map_err(|e| self.cur.read_error(e))?
        else {
            self.cur.check_unchanged()?;
            return Ok(None);
        };
        let name = self.cur.name();
        let at = Location {
            byte_offset: r.start,
            line: r.line,
        };
        let err = |kind, message: String| -> Result<Option<ReadRecord>, SourceError> {
            Ok(Some(ReadRecord {
                at,
                data: Err(RecordError {
                    kind,
                    message,
                    raw: st.raw_text(),
                }),
            }))
        };
        if let Some(opened) = r.open_quote {
            return err(
                RecordErrorKind::Csv,
                format!(
                    "{name}:{opened}: a quoted field opened on line {opened} is never closed (the file ends inside quotes, so the row that starts on line {} runs to the end of the file); fix the quoting",
                    r.line
                ),
            );
        }
        if r.too_long {
            return err(
                RecordErrorKind::TooLong,
                format!(
                    "{name}:{}: the CSV row is longer than the record size limit ({}); split it, or raise the limit",
                    r.line,
                    size_text(cap)
                ),
            );
        }
        if r.nfields != st.keys.len() {
            return err(
                RecordErrorKind::FieldCount,
                format!(
                    "{name}:{}: the CSV row has {} fields but the header has {}; fix the row or its quoting",
                    r.line,
                    r.nfields,
                    st.keys.len()
                ),
            );
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
            return err(
                RecordErrorKind::Utf8,
                format!(
                    "{name}:{}: column `{}` is not valid UTF-8; convert the file to UTF-8",
                    r.line, st.names[bad]
                ),
            );
        }
        let mut out = Vec::with_capacity(self.out_hint);
        out.push(b'{');
        for i in 0..r.nfields {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(&st.keys[i]);
            if self.infer_types {
                json::write_inferred(&mut out, st.field(i));
            } else {
                json::write_str(&mut out, st.field(i));
            }
        }
        out.push(b'}');
        self.out_hint = out.len() + 16;
        Ok(Some(ReadRecord { at, data: Ok(out) }))
    }

    fn next_location(&self) -> Location {
        self.cur.location()
    }

    fn skip_record(&mut self) -> Result<Option<Location>, SourceError> {
        match self
            .st
            .read(&mut self.cur, self.cap)
            .map_err(|e| self.cur.read_error(e))?
        {
            Some(r) => Ok(Some(Location {
                byte_offset: r.start,
                line: r.line,
            })),
            None => {
                self.cur.check_unchanged()?;
                Ok(None)
            }
        }
    }

    fn header(&self) -> Option<&[String]> {
        Some(&self.st.names)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{InputPath, SourceOptions};

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

    fn read(body: &[u8], opts: &SourceOptions, at: Option<Location>) -> Vec<ReadRecord> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.csv");
        std::fs::write(&p, body).unwrap();
        let path = InputPath::File(p);
        let input = OpenInput {
            path: &path,
            name: "t.csv",
            opts,
        };
        let mut r = open(&input, at).unwrap();
        std::iter::from_fn(|| r.next_record().unwrap()).collect()
    }

    #[test]
    fn rows_become_objects_and_resume_at_their_locations() {
        let opts = SourceOptions {
            csv_delimiter: b';',
            ..SourceOptions::default()
        };
        let body = b"id;name\n1;\"a;\nb\"\n\n2;c\nbad\n";
        let all = read(body, &opts, None);
        let data: Vec<String> = all
            .iter()
            .map(|r| match &r.data {
                Ok(j) => String::from_utf8(j.clone()).unwrap(),
                Err(e) => format!("{:?}", e.kind),
            })
            .collect();
        assert_eq!(
            data,
            [
                r#"{"id":"1","name":"a;\nb"}"#,
                r#"{"id":"2","name":"c"}"#,
                "FieldCount"
            ]
        );
        assert_eq!(
            all.iter()
                .map(|r| (r.at.byte_offset, r.at.line))
                .collect::<Vec<_>>(),
            [(8, 2), (18, 5), (22, 6)]
        );
        for k in 0..all.len() {
            assert_eq!(read(body, &opts, Some(all[k].at)), all[k..]);
        }
    }
}
