//! Lines input: each line (without its `\n` / `\r\n`) becomes a JSON string.
//!
//! Every line is a record, blank ones too. A line that is not UTF-8 or too long is a record
//! error that names the file and line.

use crate::error::SourceError;
use crate::format::Format;
use crate::json;

use super::text::{check_line, TextStream};
use super::{FormatEntry, Location, OpenInput, ReadRecord, RecordReader};

/// The lines format's registry entry.
pub(super) const ENTRY: FormatEntry = FormatEntry {
    format: Format::Lines,
    names: &["lines", "text", "txt"],
    extensions: &["txt", "log"],
    check_on_open: false,
    open,
};

/// Reads one input as lines.
struct LinesReader {
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
    Ok(Box::new(LinesReader {
        cur,
        cap: input.opts.max_record_bytes,
        line_buf: Vec::new(),
    }))
}

impl RecordReader for LinesReader {
    fn next_record(&mut self) -> Result<Option<ReadRecord>, SourceError> {
        let Some((at, too_long)) = self
            .cur
            .read_line(&mut self.line_buf, self.cap)
            .map_err(|e| self.cur.read_error(e))?
        else {
            self.cur.check_unchanged()?;
            return Ok(None);
        };
        let buf = &self.line_buf;
        if let Err(e) = check_line(self.cur.name(), at.line, self.cap, too_long, buf) {
            return Ok(Some(ReadRecord { at, data: Err(e) }));
        }
        let mut out = Vec::with_capacity(buf.len() + 2);
        json::write_str(&mut out, buf);
        Ok(Some(ReadRecord { at, data: Ok(out) }))
    }

    fn next_location(&self) -> Location {
        self.cur.location()
    }

    fn skip_buffered(&mut self, max: usize) -> Result<usize, SourceError> {
        // Every line is a record.
        self.cur
            .skip_buffered_lines(max, |_| true)
            .map_err(|e| self.cur.read_error(e))
    }

    fn skip_record(&mut self) -> Result<Option<Location>, SourceError> {
        match self
            .cur
            .skip_line(self.cap)
            .map_err(|e| self.cur.read_error(e))?
        {
            Some((at, _)) => Ok(Some(at)),
            None => {
                self.cur.check_unchanged()?;
                Ok(None)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{InputPath, RecordErrorKind, SourceOptions};

    #[test]
    fn every_line_is_a_string_and_long_lines_are_records() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.txt");
        std::fs::write(&p, b"a \"q\"\r\n\n0123456789\nlast").unwrap();
        let path = InputPath::File(p);
        let opts = SourceOptions {
            max_record_bytes: 8,
            ..SourceOptions::default()
        };
        let input = OpenInput {
            path: &path,
            name: "t.txt",
            opts: &opts,
        };
        let mut r = open(&input, None).unwrap();
        let all: Vec<ReadRecord> = std::iter::from_fn(|| r.next_record().unwrap()).collect();
        assert_eq!(all[0].data.as_deref().unwrap(), br#""a \"q\"""#);
        assert_eq!(all[1].data.as_deref().unwrap(), br#""""#);
        let e = all[2].data.as_ref().unwrap_err();
        assert_eq!((e.kind, all[2].at.line), (RecordErrorKind::TooLong, 3));
        assert_eq!(all[3].data.as_deref().unwrap(), br#""last""#);
        let mut again = open(&input, Some(all[2].at)).unwrap();
        let rest: Vec<ReadRecord> = std::iter::from_fn(|| again.next_record().unwrap()).collect();
        assert_eq!(rest, all[2..]);
    }
}
