//! Lines output: a JSON string is written as its text (unquoted, unescaped) and a line break,
//! any other value as JSONL writes it.

use std::borrow::Cow;

use super::jsonl::check_one_line;
use super::RecordWriter;

/// Writes raw text lines.
pub(super) struct LinesWriter;

impl RecordWriter for LinesWriter {
    fn encode(&mut self, json: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
        if json.first() == Some(&b'"') {
            let text: Cow<'_, str> = serde_json::from_slice(json)
                .map_err(|e| format!("the record is not valid JSON ({e})"))?;
            out.extend_from_slice(text.as_bytes());
        } else {
            check_one_line(json)?;
            out.extend_from_slice(json);
        }
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
    fn strings_are_text_and_other_values_json() {
        let mut w = LinesWriter;
        let mut out = Vec::new();
        w.encode(br#""a \"b\"\nc""#, &mut out).unwrap();
        w.encode(br#"{"n":1}"#, &mut out).unwrap();
        assert!(w.encode(br#""bad"#, &mut out).is_err());
        assert_eq!(out, b"a \"b\"\nc\n{\"n\":1}\n");
    }
}
