//! The worker side of the `framed` and `lines` protocols, for workers written in Rust.
//!
//! A Rust program becomes a herdsman worker by calling [`serve_framed`] (or [`serve_lines`])
//! with a function from a record to its outputs. This module must never write anything but
//! replies to its output, and must flush whenever it has answered everything it has read,
//! so that herdsman never waits on a buffered answer.

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
    pub fn fatal(message: impl Into<String>) -> Self {
        RecordError {
            message: message.into(),
            retryable: false,
        }
    }

    /// A failure that another attempt could fix (timeouts, throttling).
    pub fn retryable(message: impl Into<String>) -> Self {
        RecordError {
            message: message.into(),
            retryable: true,
        }
    }
}

#[derive(Deserialize)]
struct Request<'a> {
    id: u64,
    #[serde(borrow)]
    record: &'a RawValue,
}

/// Answers framed requests from `input` until end of input.
///
/// `f` gets each record and returns its outputs, any serializable values (an empty `Vec`
/// filters the record out), or a [`RecordError`]. A request line that cannot be read is an error: the worker should
/// exit, and herdsman charges the oldest record in flight.
///
/// ```
/// use herdsman_workers::serve::{serve_framed, RecordError};
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
                format!("cannot read a framed request ({e})"),
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
/// stop the worker (herdsman charges that record and restarts the worker).
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
        if memchr::memchr(b'\n', input.buffer()).is_none() {
            out.flush()?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
    }
}
