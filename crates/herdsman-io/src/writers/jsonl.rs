//! JSONL output: each record's compact JSON on a line of its own.

use super::RecordWriter;

/// Why a JSONL record is refused.
pub(super) const JSONL_LINE_BREAK: &str =
    "the record holds a raw line break, which would split its JSONL line; emit compact JSON";

/// Refuses a record whose JSON text holds a raw line break.
pub(super) fn check_one_line(json: &[u8]) -> Result<(), String> {
    match memchr::memchr2(b'\n', b'\r', json) {
        Some(_) => Err(JSONL_LINE_BREAK.into()),
        None => Ok(()),
    }
}

/// Writes JSONL.
pub(super) struct JsonlWriter;

impl RecordWriter for JsonlWriter {
    fn encode(&mut self, json: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
        check_one_line(json)?;
        out.extend_from_slice(json);
        out.push(b'\n');
        Ok(())
    }

    fn check(&self, records: &mut dyn Iterator<Item = &[u8]>) -> Result<(), String> {
        for r in records {
            check_one_line(r)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_record_and_raw_line_breaks_refused() {
        let mut w = JsonlWriter;
        let mut out = Vec::new();
        w.encode(br#"{"a":"x\ny"}"#, &mut out).unwrap();
        assert_eq!(
            w.encode(b"{\"a\":\r1}", &mut out).unwrap_err(),
            JSONL_LINE_BREAK
        );
        assert_eq!(out, b"{\"a\":\"x\\ny\"}\n");
        assert!(w.check(&mut [&b"1"[..], b"[\n]"].into_iter()).is_err());
    }
}
