//! The layer every text format reads through: one input's decompressed byte stream with its
//! byte offset and line, opened at a resume location by seeking (plain files) or by
//! decompressing and discarding (compressed files, standard input), and the check at the end
//! of the data that the file did not change while it was read.
//!
//! It knows nothing of CSV or JSON: formats pull bytes and lines from it. It must never read
//! more than a buffer ahead, and never let a line grow a buffer beyond the record size cap.

use std::io::{self, BufRead};

use crate::error::{RecordError, RecordErrorKind, SourceError};
use crate::format::Compression;
use crate::input::{open_stream, open_watched, InputPath, Watch};

use super::{Location, OpenInput, RAW_CAP};

/// A decompressed byte stream with its position.
pub(crate) struct TextStream {
    rdr: Box<dyn BufRead + Send>,
    /// Offset of the next byte in the decompressed data.
    pub(crate) offset: u64,
    /// 1-based line of the next byte.
    pub(crate) line: u64,
    /// The file as it was when reading began (regular files only).
    watch: Option<Watch>,
    path: InputPath,
    name: String,
    buf: usize,
}

impl TextStream {
    /// Opens the input with its next byte at decompressed `offset` (line counting starts at
    /// 1; see [`TextStream::set_line`]). At offset 0 a UTF-8 byte order mark is skipped.
    pub(crate) fn open(input: &OpenInput<'_>, offset: u64) -> Result<TextStream, SourceError> {
        let buf = input.opts.read_buffer_bytes;
        let (rdr, watch) = match input.path {
            InputPath::File(p) => {
                open_watched(p, offset, buf).map_err(|e| open_error(input.name, offset, e))?
            }
            InputPath::Object(o) => (
                crate::object::open_object_stream(o, offset, buf)
                    .map_err(|e| open_error(input.name, offset, e))?,
                None,
            ),
            InputPath::Stdin => (
                open_stream(input.path, buf).map_err(|e| open_error(input.name, 0, e))?,
                None,
            ),
        };
        let direct = matches!(input.path, InputPath::File(_) | InputPath::Object(_));
        let mut s = TextStream {
            rdr,
            offset: if direct { offset } else { 0 },
            line: 1,
            watch,
            path: input.path.clone(),
            name: input.name.to_string(),
            buf,
        };
        if !direct && offset > 0 {
            s.discard_to(offset, offset)?;
        }
        if offset == 0 {
            s.skip_bom()?;
        }
        Ok(s)
    }

    /// Moves forward to `at` (a location at or after the current offset, from an earlier
    /// read): a fresh seek on a plain file, decompress-and-discard otherwise. The watch taken
    /// at the first open still covers the file.
    pub(crate) fn advance_to(&mut self, at: Location) -> Result<(), SourceError> {
        if at.byte_offset < self.offset {
            return Err(self.resume_error(
                at.byte_offset,
                format!(
                    "the offset lies inside the header, which ends at byte {}",
                    self.offset
                ),
            ));
        }
        if let InputPath::Object(o) = &self.path {
            // An object opens anew at the offset (a ranged GET, or decompress-and-discard).
            self.rdr = crate::object::open_object_stream(o, at.byte_offset, self.buf)
                .map_err(|e| open_error(&self.name, at.byte_offset, e))?;
            self.offset = at.byte_offset;
            self.line = at.line;
            return Ok(());
        }
        let seekable = matches!(&self.path, InputPath::File(p) if Compression::from_path(p) == Compression::None);
        if seekable {
            let InputPath::File(p) = &self.path else {
                unreachable!("seekable inputs are files")
            };
            self.rdr = open_watched(p, at.byte_offset, self.buf)
                .map_err(|e| open_error(&self.name, at.byte_offset, e))?
                .0;
            self.offset = at.byte_offset;
        } else {
            self.discard_to(at.byte_offset, at.byte_offset)?;
        }
        self.line = at.line;
        Ok(())
    }

    /// Sets the line number of the next byte (after opening at a resume location).
    pub(crate) fn set_line(&mut self, line: u64) {
        self.line = line;
    }

    /// The location of the next byte.
    pub(crate) fn location(&self) -> Location {
        Location {
            byte_offset: self.offset,
            line: self.line,
        }
    }

    /// The input's name, for messages.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    fn discard_to(&mut self, to: u64, resume_offset: u64) -> Result<(), SourceError> {
        let n = to - self.offset;
        let got = io::copy(&mut io::Read::take(&mut self.rdr, n), &mut io::sink())
            .map_err(|e| self.read_error(e))?;
        if got < n {
            return Err(self.resume_error(
                resume_offset,
                format!("the data ends at byte {}", self.offset + got),
            ));
        }
        self.offset = to;
        Ok(())
    }

    fn resume_error(&self, offset: u64, message: String) -> SourceError {
        SourceError::Resume {
            file: self.name.clone(),
            offset,
            message,
        }
    }

    /// A read failure at the current offset.
    pub(crate) fn read_error(&self, source: io::Error) -> SourceError {
        SourceError::Read {
            file: self.name.clone(),
            offset: self.offset,
            source,
        }
    }

    /// At the end of the data: an error if the file changed while it was read.
    pub(crate) fn check_unchanged(&self) -> Result<(), SourceError> {
        match self.watch.as_ref().and_then(|w| w.check(self.offset)) {
            Some(detail) => Err(SourceError::Changed {
                file: self.name.clone(),
                detail,
            }),
            None => Ok(()),
        }
    }

    /// The buffered bytes at the current offset (empty at the end of the data), retrying
    /// interrupted reads.
    pub(crate) fn fill_buf(&mut self) -> io::Result<&[u8]> {
        loop {
            match self.rdr.fill_buf() {
                Ok(_) => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        self.rdr.fill_buf()
    }

    /// Consumes `n` buffered bytes (the caller counts lines it consumes).
    pub(crate) fn consume(&mut self, n: usize) {
        self.rdr.consume(n);
        self.offset += n as u64;
    }

    /// Skips a UTF-8 byte order mark at the current position.
    fn skip_bom(&mut self) -> Result<(), SourceError> {
        let bom = match self.fill_buf() {
            Ok(b) => b.starts_with(b"\xef\xbb\xbf"),
            Err(e) => return Err(self.read_error(e)),
        };
        if bom {
            self.consume(3);
        }
        Ok(())
    }

    /// Moves past one line without keeping it: where it starts, and whether it is blank as
    /// JSONL sees it after [`TextStream::read_line`] (only spaces and tabs once one final `\r`
    /// is dropped, and not longer than `cap`). `None` at end of input.
    pub(crate) fn skip_line(&mut self, cap: usize) -> io::Result<Option<(Location, bool)>> {
        let start = self.location();
        let (mut total, mut any, mut blank, mut cr_last) = (0usize, false, true, false);
        loop {
            let avail = self.fill_buf()?;
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
            if blank {
                for &b in &avail[..content] {
                    if cr_last {
                        // A `\r` that is not the line's last byte is kept, and not blank.
                        blank = false;
                        break;
                    }
                    match b {
                        b' ' | b'\t' => {}
                        b'\r' => cr_last = true,
                        _ => {
                            blank = false;
                            break;
                        }
                    }
                }
            }
            total += content;
            self.consume(take);
            if found {
                self.line += 1;
                break;
            }
        }
        if blank && cr_last && total <= cap + 2 {
            total -= 1;
        }
        Ok(Some((start, blank && total <= cap)))
    }

    /// Moves past up to `max` lines that lie whole in the buffer (reading only when it is
    /// empty), stopping before the first line `is_record` refuses (it sees the line without
    /// its `\n`). Returns how many lines it moved past: 0 when no whole line is buffered or
    /// the first is refused, and the caller then goes on line by line. A fast path for
    /// counting records: it never decides anything [`TextStream::skip_line`] would decide
    /// otherwise, because it only takes lines `is_record` accepts outright.
    pub(crate) fn skip_buffered_lines(
        &mut self,
        max: usize,
        is_record: impl Fn(&[u8]) -> bool,
    ) -> io::Result<usize> {
        let avail = self.fill_buf()?;
        let (mut n, mut used) = (0usize, 0usize);
        for nl in memchr::memchr_iter(b'\n', avail) {
            if n == max || !is_record(&avail[used..nl]) {
                break;
            }
            used = nl + 1;
            n += 1;
        }
        self.consume(used);
        self.line += n as u64;
        Ok(n)
    }

    /// Reads one line (without its `\n` / `\r\n`) into `buf`, keeping at most `cap + 1`
    /// bytes. Returns `None` at end of input, else `(start, too long)`.
    pub(crate) fn read_line(
        &mut self,
        buf: &mut Vec<u8>,
        cap: usize,
    ) -> io::Result<Option<(Location, bool)>> {
        buf.clear();
        let start = self.location();
        let mut total = 0usize;
        let mut any = false;
        loop {
            let avail = self.fill_buf()?;
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
        Ok(Some((start, total > cap)))
    }
}

/// An error opening an input at `offset`: data shorter than the offset is a resume error.
fn open_error(name: &str, offset: u64, e: io::Error) -> SourceError {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        SourceError::Resume {
            file: name.to_string(),
            offset,
            message: e.to_string(),
        }
    } else {
        SourceError::Open {
            file: name.to_string(),
            source: e,
        }
    }
}

/// The raw text kept in a record error: lossy UTF-8, at most [`RAW_CAP`] bytes.
pub(crate) fn raw_text(buf: &[u8]) -> String {
    String::from_utf8_lossy(&buf[..buf.len().min(RAW_CAP)]).into_owned()
}

/// A size for messages: `16 MiB`, `1 GiB`, `2 KiB`, or a number of bytes.
pub(crate) fn size_text(n: usize) -> String {
    for (unit, name) in [(1usize << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")] {
        if n >= unit && n.is_multiple_of(unit) {
            return format!("{} {name}", n / unit);
        }
    }
    format!("{n} bytes")
}

/// The checks every line-based record passes: not over the size limit, valid UTF-8.
pub(crate) fn check_line(
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
                "{name}:{line}: the line is longer than the record size limit ({}); split it, or raise the limit",
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
    use crate::SourceOptions;

    #[test]
    fn sizes_read_naturally() {
        assert_eq!(size_text(16 << 20), "16 MiB");
        assert_eq!(size_text(1 << 30), "1 GiB");
        assert_eq!(size_text(2048), "2 KiB");
        assert_eq!(size_text(1000), "1000 bytes");
    }

    #[test]
    fn lines_keep_offsets_and_a_gzip_stream_resumes_by_discarding() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.txt.gz");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, b"\xef\xbb\xbfab\r\ncd\nef").unwrap();
        std::fs::write(&p, gz.finish().unwrap()).unwrap();
        let path = InputPath::File(p);
        let opts = SourceOptions {
            read_buffer_bytes: 4,
            ..SourceOptions::default()
        };
        let input = OpenInput {
            path: &path,
            name: "a.txt.gz",
            opts: &opts,
        };
        let mut s = TextStream::open(&input, 0).unwrap();
        let mut buf = Vec::new();
        let mut got = Vec::new();
        while let Some((at, long)) = s.read_line(&mut buf, 100).unwrap() {
            got.push((
                String::from_utf8(buf.clone()).unwrap(),
                at.byte_offset,
                at.line,
                long,
            ));
        }
        assert_eq!(
            got,
            [
                ("ab".to_string(), 3, 1, false),
                ("cd".to_string(), 7, 2, false),
                ("ef".to_string(), 10, 3, false)
            ]
        );
        s.check_unchanged().unwrap();
        let mut s = TextStream::open(&input, 7).unwrap();
        s.set_line(2);
        assert_eq!(s.read_line(&mut buf, 100).unwrap().unwrap().0.line, 2);
        assert_eq!(buf, b"cd");
        let err = TextStream::open(&input, 13).err().unwrap();
        assert!(matches!(err, SourceError::Resume { .. }), "{err}");
    }
}
