//! The worker side of herdsman's `framed` and `lines` protocols, for workers written in Rust.
//!
//! A Rust program becomes a herdsman worker by calling [`serve_framed`] (or [`serve_lines`])
//! with a function from a record to its outputs. This crate depends on `serde` and
//! `serde_json` only, so a worker does not compile herdsman's engine or worker pool.
//!
//! It must never write anything but replies to its output, and must flush whenever it has
//! answered everything it has read, so that herdsman never waits on a buffered answer. The
//! wire formats are specified in herdsman's `docs/protocol.md`.
//!
//! # Example
//!
//! A worker that splits each record's `text` into one output per word, filters records
//! with an empty text, and fails records that have none. In a real worker, pass
//! `std::io::stdin().lock()` and `std::io::stdout().lock()` and run it with
//! `herdsman run --protocol framed -w path/to/worker ...`; here the streams are in memory.
//!
//! ```
//! use herdsman_worker::{serve_framed, RecordError};
//! use serde_json::{json, Value};
//!
//! fn words(record: Value) -> Result<Vec<Value>, RecordError> {
//!     let text = record["text"]
//!         .as_str()
//!         .ok_or_else(|| RecordError::fatal("the record has no string field `text`"))?;
//!     // Zero outputs filter the record out; several explode it.
//!     Ok(text.split_whitespace().map(|w| json!({ "word": w })).collect())
//! }
//!
//! let requests = concat!(
//!     r#"{"id":0,"record":{"text":"a b"}}"#, "\n",
//!     r#"{"id":1,"record":{"text":""}}"#, "\n",
//!     r#"{"id":2,"record":{}}"#, "\n",
//! );
//! let mut replies = Vec::new();
//! serve_framed(requests.as_bytes(), &mut replies, words)?;
//! assert_eq!(
//!     String::from_utf8(replies).unwrap(),
//!     concat!(
//!         r#"{"id":0,"output":{"word":"a"}}"#, "\n",
//!         r#"{"id":0,"output":{"word":"b"}}"#, "\n",
//!         r#"{"id":0,"done":true}"#, "\n",
//!         r#"{"id":1,"done":true}"#, "\n",
//!         r#"{"id":2,"error":"the record has no string field `text`","retryable":false}"#, "\n",
//!     )
//! );
//! # Ok::<(), std::io::Error>(())
//! ```

#![warn(missing_docs)]

use std::io::{self, BufRead, BufReader, Read, Write};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;

/// A failure of one record, reported to herdsman as a framed `error` reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordError {
    /// What went wrong, in one sentence.
    pub message: String,
    /// Whether another attempt could succeed.
    pub retryable: bool,
}

impl RecordError {
    /// A failure that retrying will not fix (bad data).
    ///
    /// ```
    /// let e = herdsman_worker::RecordError::fatal("value is not an integer");
    /// assert!(!e.retryable);
    /// ```
    pub fn fatal(message: impl Into<String>) -> Self {
        RecordError {
            message: message.into(),
            retryable: false,
        }
    }

    /// A failure that another attempt could fix (timeouts, throttling).
    ///
    /// ```
    /// let e = herdsman_worker::RecordError::retryable("the service answered 503");
    /// assert!(e.retryable);
    /// ```
    pub fn retryable(message: impl Into<String>) -> Self {
        RecordError {
            message: message.into(),
            retryable: true,
        }
    }
}

impl std::fmt::Display for RecordError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for RecordError {}

#[derive(Deserialize)]
struct Request<'a> {
    id: u64,
    #[serde(borrow)]
    record: &'a RawValue,
}

/// Answers framed requests from `input` until end of input.
///
/// `f` gets each record and returns its outputs, any serializable values (an empty `Vec`
/// filters the record out), or a [`RecordError`]. A request line that cannot be read is an
/// error (kind [`io::ErrorKind::InvalidData`]): the worker should exit, and herdsman charges
/// the oldest record in flight.
///
/// ```
/// use herdsman_worker::{serve_framed, RecordError};
/// use serde_json::{json, Value};
///
/// let input = b"{\"id\":0,\"record\":{\"text\":\"a b\"}}\n{\"id\":1,\"record\":{}}\n";
/// let mut output = Vec::new();
/// serve_framed(&input[..], &mut output, |rec: Value| {
///     let text = rec["text"].as_str().ok_or_else(|| RecordError::fatal("no text"))?;
///     Ok(text.split_whitespace().map(|w| json!({ "word": w })).collect())
/// })
/// .unwrap();
/// assert_eq!(
///     String::from_utf8(output).unwrap(),
///     "{\"id\":0,\"output\":{\"word\":\"a\"}}\n{\"id\":0,\"output\":{\"word\":\"b\"}}\n\
///      {\"id\":0,\"done\":true}\n{\"id\":1,\"error\":\"no text\",\"retryable\":false}\n"
/// );
/// ```
pub fn serve_framed<R, W, O, F>(input: R, output: W, mut f: F) -> io::Result<()>
where
    R: Read,
    W: Write,
    O: Serialize,
    F: FnMut(Value) -> Result<Vec<O>, RecordError>,
{
    serve(input, output, |line, out| {
        let req: Request = serde_json::from_slice(line).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("cannot read a framed request ({e}); run herdsman with --protocol framed"),
            )
        })?;
        let record: Value = serde_json::from_str(req.record.get()).map_err(io::Error::other)?;
        match f(record) {
            Ok(outputs) => {
                for o in outputs {
                    write!(out, "{{\"id\":{},\"output\":", req.id)?;
                    serde_json::to_writer(&mut *out, &o)?;
                    out.write_all(b"}\n")?;
                }
                writeln!(out, "{{\"id\":{},\"done\":true}}", req.id)
            }
            Err(e) => {
                write!(out, "{{\"id\":{},\"error\":", req.id)?;
                serde_json::to_writer(&mut *out, &e.message)?;
                writeln!(out, ",\"retryable\":{}}}", e.retryable)
            }
        }
    })
}

/// Answers `lines` requests from `input` until end of input: one output line per record.
///
/// There is no way to report a failure in the lines protocol: return an error from `f` to
/// stop the worker (herdsman charges that record and restarts the worker). The answers to
/// the records before it are flushed first, and the error is returned with the
/// [`RecordError`]'s message.
///
/// ```
/// use herdsman_worker::serve_lines;
/// use serde_json::{json, Value};
///
/// let mut output = Vec::new();
/// serve_lines(&b"{\"n\":1}\n{\"n\":2}\n"[..], &mut output, |rec: Value| {
///     Ok(json!({ "double": rec["n"].as_i64().unwrap_or(0) * 2 }))
/// })
/// .unwrap();
/// assert_eq!(output, b"{\"double\":2}\n{\"double\":4}\n");
/// ```
pub fn serve_lines<R, W, O, F>(input: R, output: W, mut f: F) -> io::Result<()>
where
    R: Read,
    W: Write,
    O: Serialize,
    F: FnMut(Value) -> Result<O, RecordError>,
{
    serve(input, output, |line, out| {
        let record: Value = serde_json::from_slice(line).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("cannot read a record ({e})"),
            )
        })?;
        let value = f(record).map_err(|e| io::Error::other(e.message))?;
        serde_json::to_writer(&mut *out, &value)?;
        out.write_all(b"\n")
    })
}

fn serve<R, W, H>(input: R, output: W, mut handle: H) -> io::Result<()>
where
    R: Read,
    W: Write,
    H: FnMut(&[u8], &mut io::BufWriter<W>) -> io::Result<()>,
{
    let mut input = BufReader::with_capacity(64 * 1024, input);
    let mut out = io::BufWriter::with_capacity(64 * 1024, output);
    let mut line = Vec::new();
    loop {
        line.clear();
        if input.read_until(b'\n', &mut line)? == 0 {
            return out.flush();
        }
        let trimmed = line.trim_ascii();
        if !trimmed.is_empty() {
            if let Err(e) = handle(trimmed, &mut out) {
                // Answers before the failing record go out first.
                out.flush()?;
                return Err(e);
            }
        }
        // Flush once everything read so far is answered, before reading may block.
        if !input.buffer().contains(&b'\n') {
            out.flush()?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::cell::RefCell;
    use std::rc::Rc;

    #[test]
    fn framed_outputs_filter_and_errors() {
        let input = concat!(
            "{\"id\":5,\"record\":{\"n\":2}}\n",
            "{\"id\":6,\"record\":{\"n\":0}}\n",
            "\n",
            "{\"id\":7,\"record\":{\"n\":-1}}\n",
            "{\"id\":8,\"record\":{\"n\":-2}}"
        );
        let mut out = Vec::new();
        serve_framed(input.as_bytes(), &mut out, |r| {
            let n = r["n"].as_i64().unwrap();
            match n {
                -1 => Err(RecordError::retryable("busy \"now\"")),
                -2 => Err(RecordError::fatal("negative")),
                _ => Ok((0..n).map(|k| json!(k)).collect()),
            }
        })
        .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            concat!(
                "{\"id\":5,\"output\":0}\n{\"id\":5,\"output\":1}\n{\"id\":5,\"done\":true}\n",
                "{\"id\":6,\"done\":true}\n",
                "{\"id\":7,\"error\":\"busy \\\"now\\\"\",\"retryable\":true}\n",
                "{\"id\":8,\"error\":\"negative\",\"retryable\":false}\n"
            )
        );
    }

    #[test]
    fn framed_keeps_unicode_and_crlf_and_ignores_unknown_fields() {
        let input = "{\"id\":1,\"record\":\"h\u{e9}llo \u{1f600}\",\"attempt\":2}\r\n";
        let mut out = Vec::new();
        serve_framed(input.as_bytes(), &mut out, |r| Ok(vec![r])).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"id\":1,\"output\":\"h\u{e9}llo \u{1f600}\"}\n{\"id\":1,\"done\":true}\n"
        );
    }

    #[test]
    fn framed_handles_a_big_record() {
        let text = "x".repeat(3 * 1024 * 1024);
        let input = format!("{{\"id\":3,\"record\":{{\"t\":\"{text}\"}}}}\n");
        let mut out = Vec::new();
        serve_framed(input.as_bytes(), &mut out, |r| {
            Ok(vec![json!(r["t"].as_str().unwrap().len())])
        })
        .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"id\":3,\"output\":3145728}\n{\"id\":3,\"done\":true}\n"
        );
    }

    #[test]
    fn lines_answers_before_a_failure_are_flushed() {
        let input = "1\n2\n3\n";
        let mut out = Vec::new();
        let err = serve_lines(input.as_bytes(), &mut out, |v| {
            if v == json!(2) {
                Err(RecordError::fatal("two"))
            } else {
                Ok(json!({ "v": v }))
            }
        })
        .unwrap_err();
        assert_eq!(err.to_string(), "two");
        assert_eq!(String::from_utf8(out).unwrap(), "{\"v\":1}\n");
    }

    #[test]
    fn bad_request_is_an_error() {
        let mut out = Vec::new();
        let err = serve_framed(&b"{\"record\":1}\n"[..], &mut out, |v| Ok(vec![v])).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("--protocol framed"), "{err}");
    }

    /// An input that hands out one request per `read`, and a writer that records what had
    /// been flushed by the time each read happened: every answer must be out before the
    /// worker asks for the next request.
    #[test]
    fn answers_are_flushed_before_reading_more() {
        struct Trickle {
            chunks: Vec<&'static [u8]>,
            flushed: Rc<RefCell<Vec<u8>>>,
            seen_at_read: Vec<usize>,
        }
        impl Read for Trickle {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                self.seen_at_read.push(self.flushed.borrow().len());
                if self.chunks.is_empty() {
                    return Ok(0);
                }
                let c = self.chunks.remove(0);
                buf[..c.len()].copy_from_slice(c);
                Ok(c.len())
            }
        }
        struct Sink {
            pending: Vec<u8>,
            flushed: Rc<RefCell<Vec<u8>>>,
        }
        impl Write for Sink {
            fn write(&mut self, b: &[u8]) -> io::Result<usize> {
                self.pending.extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                self.flushed.borrow_mut().append(&mut self.pending);
                Ok(())
            }
        }
        let flushed = Rc::new(RefCell::new(Vec::new()));
        let mut input = Trickle {
            chunks: vec![b"{\"id\":0,\"record\":1}\n", b"{\"id\":1,\"record\":2}\n"],
            flushed: flushed.clone(),
            seen_at_read: Vec::new(),
        };
        let sink = Sink {
            pending: Vec::new(),
            flushed: flushed.clone(),
        };
        serve_framed(&mut input, sink, |v| Ok(vec![v])).unwrap();
        let one = "{\"id\":0,\"output\":1}\n{\"id\":0,\"done\":true}\n".len();
        let two = one + "{\"id\":1,\"output\":2}\n{\"id\":1,\"done\":true}\n".len();
        assert_eq!(input.seen_at_read, vec![0, one, two]);
    }
}
