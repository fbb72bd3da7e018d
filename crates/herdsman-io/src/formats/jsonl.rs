//! JSONL input: one JSON value per line, blank lines skipped.
//!
//! Each line must be exactly one JSON value; it is passed on compacted (whitespace outside
//! strings removed) and otherwise as written. A line that is not one value, not UTF-8 or too
//! long is a record error that names the file and line.

use crate::error::{RecordError, RecordErrorKind, SourceError};
use crate::format::Format;
use crate::json;

use super::text::{check_line, raw_text, TextStream};
use super::{FormatEntry, Location, OpenInput, ReadRecord, RecordReader};

/// JSONL's registry entry.
pub(super) const ENTRY: FormatEntry = FormatEntry {
    format: Format::Jsonl,
    names: &["jsonl", "ndjson", "jsonlines", "json-lines"],
    extensions: &["jsonl", "ndjson"],
    check_on_open: false,
    open,
};

/// Reads one JSONL input.
struct JsonlReader {
    cur: TextStream,
    cap: usize,
    line_buf: Vec<u8>,
}

fn open(input: &OpenInput<'_>, at: Option<Location>) -> Result<Box<dyn RecordReader>, SourceError> {
    let at = at.unwrap_or(Location::START);
    let mut cur = TextStream::open(input, at.byte_offset)?;
    if at.byte_offset > 0 {
        cur.set_line(at.line);
    }
    Ok(Box::new(JsonlReader {
        cur,
        cap: input.opts.max_record_bytes,
        line_buf: Vec::new(),
    }))
}

impl RecordReader for JsonlReader {
    fn next_record(&mut self) -> Result<Option<ReadRecord>, SourceError> {
        loop {
            let Some((at, too_long)) = self
                .cur
                .read_line(&mut self.line_buf, self.cap)
                .map_err(|e| self.cur.read_error(e))?
            else {
                self.cur.check_unchanged()?;
                return Ok(None);
            };
            let buf = &self.line_buf;
            if !too_long && buf.iter().all(|&b| b == b' ' || b == b'\t') {
                continue;
            }
            let name = self.cur.name();
            if let Err(e) = check_line(name, at.line, self.cap, too_long, buf) {
                return Ok(Some(ReadRecord { at, data: Err(e) }));
            }
            if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(buf) {
                let line = at.line;
                return Ok(Some(ReadRecord {
                    at,
                    data: Err(RecordError {
                        kind: RecordErrorKind::Json,
                        message: format!(
                            "{name}:{line}: the line is not one JSON value ({e}); fix the line"
                        ),
                        raw: raw_text(buf),
                    }),
                }));
            }
            let mut out = Vec::with_capacity(buf.len());
            if memchr::memchr3(b' ', b'\t', b'\r', buf).is_some() {
                json::write_compact(&mut out, buf);
            } else {
                out.extend_from_slice(buf);
            }
            return Ok(Some(ReadRecord { at, data: Ok(out) }));
        }
    }

    fn next_location(&self) -> Location {
        self.cur.location()
    }

    fn skip_buffered(&mut self, max: usize) -> Result<usize, SourceError> {
        // A line that starts with anything but a space, a tab or `\r` is not blank, so it
        // is a record (a malformed one is a record too); any other line is left to
        // `skip_record`, which knows blank lines.
        self.cur
            .skip_buffered_lines(max, |line| {
                line.first()
                    .is_some_and(|b| !matches!(b, b' ' | b'\t' | b'\r'))
            })
            .map_err(|e| self.cur.read_error(e))
    }

    fn skip_record(&mut self) -> Result<Option<Location>, SourceError> {
        loop {
            match self
                .cur
                .skip_line(self.cap)
                .map_err(|e| self.cur.read_error(e))?
            {
                Some((_, true)) => continue,
                Some((at, false)) => return Ok(Some(at)),
                None => {
                    self.cur.check_unchanged()?;
                    return Ok(None);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{InputPath, SourceOptions};

    #[test]
    fn values_are_compacted_blank_lines_skipped_and_bad_lines_are_records() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.jsonl");
        std::fs::write(&p, b"{ \"a\" : [1, 2] }\n\n  \n{oops\n\"x y\"\r\n").unwrap();
        let path = InputPath::File(p);
        let opts = SourceOptions::default();
        let input = OpenInput {
            path: &path,
            name: "t.jsonl",
            opts: &opts,
        };
        let mut r = open(&input, None).unwrap();
        let all: Vec<ReadRecord> = std::iter::from_fn(|| r.next_record().unwrap()).collect();
        assert_eq!(all.len(), 3);
        assert_eq!(all[0].data.as_deref().unwrap(), br#"{"a":[1,2]}"#);
        let e = all[1].data.as_ref().unwrap_err();
        assert_eq!((e.kind, all[1].at.line), (RecordErrorKind::Json, 4));
        assert!(e.message.starts_with("t.jsonl:4: "), "{}", e.message);
        assert_eq!(all[2].data.as_deref().unwrap(), br#""x y""#);
        assert_eq!(r.next_location().byte_offset, 34);
        let mut again = open(&input, Some(all[1].at)).unwrap();
        let rest: Vec<ReadRecord> = std::iter::from_fn(|| again.next_record().unwrap()).collect();
        assert_eq!(rest, all[1..]);
    }
}
