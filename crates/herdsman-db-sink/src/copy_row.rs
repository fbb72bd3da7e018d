//! The fast path of a PostgreSQL row: an output record parsed straight into COPY's text
//! format, with no JSON tree built and no allocation for a flat record of scalars.
//!
//! It handles the common record (a JSON object whose every key is a column, once, and whose
//! values are scalars that fit their columns) and gives up on anything else, leaving the row
//! to the general path in `lib.rs` (`DbSink::row_of` and `copy_text_row`), which also writes
//! the message of a record that does not fit. This module must never accept a record the
//! general path refuses, nor write a row differently from it (a property test holds it to
//! that).

use std::borrow::Cow;
use std::fmt;
use std::io::Write as _;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, Visitor};

use crate::{escape_copy, escape_copy_bytes, Column, CopyEscape, Kind};

/// Reusable buffers of the fast path.
#[derive(Debug, Default)]
pub(crate) struct RowEncoder {
    /// The encoded values of the row being parsed, in the order their keys came.
    scratch: Vec<u8>,
    /// Where each column's encoded value is in `scratch`; `None` for a missing key (null).
    slots: Vec<Option<(usize, usize)>>,
}

impl RowEncoder {
    /// Appends the COPY text row of `json` to `out` and returns true, or returns false with
    /// `out` untouched when the record is not one the fast path takes.
    pub(crate) fn encode(&mut self, json: &[u8], columns: &[Column], out: &mut Vec<u8>) -> bool {
        if !self.scan(json, columns) {
            self.reset(columns.len());
            let mut de = serde_json::Deserializer::from_slice(json);
            let fits = de.deserialize_map(RowVisitor {
                columns,
                scratch: &mut self.scratch,
                slots: &mut self.slots,
            });
            if !matches!(fits, Ok(true)) || de.end().is_err() {
                return false;
            }
        }
        for (i, slot) in self.slots.iter().enumerate() {
            if i > 0 {
                out.push(b'\t');
            }
            match slot {
                Some((a, b)) => out.extend_from_slice(&self.scratch[*a..*b]),
                None => out.extend_from_slice(b"\\N"),
            }
        }
        out.push(b'\n');
        true
    }
}

impl RowEncoder {
    fn reset(&mut self, columns: usize) {
        self.scratch.clear();
        self.slots.clear();
        self.slots.resize(columns, None);
    }

    /// The quickest way, for the commonest record: an object of ASCII keys and values
    /// without escapes, whose numbers are short integers, written without a parser.
    /// Anything else (an escape, a non-ASCII byte, a float, a long integer, a nested value,
    /// whitespace inside, a key that is no column, a value that does not fit) returns false,
    /// and serde_json's parser decides (and refuses what is not JSON).
    fn scan(&mut self, json: &[u8], columns: &[Column]) -> bool {
        self.reset(columns.len());
        let mut at = 0;
        let end = json.len();
        if json.first() != Some(&b'{') {
            return false;
        }
        at += 1;
        if json.get(at) == Some(&b'}') {
            return end == at + 1;
        }
        loop {
            // "key":
            let Some(key) = ascii_string(json, &mut at) else {
                return false;
            };
            if json.get(at) != Some(&b':') {
                return false;
            }
            at += 1;
            let Some(i) = columns.iter().position(|c| c.name.as_bytes() == key) else {
                return false;
            };
            if self.slots[i].is_some() {
                return false;
            }
            let kind = columns[i].kind;
            let start = self.scratch.len();
            match json.get(at) {
                Some(b'"') => {
                    let Some(text) = ascii_string(json, &mut at) else {
                        return false;
                    };
                    match kind {
                        // No escapes and ASCII: COPY needs only its own escapes.
                        Kind::Text => escape_copy_bytes(&mut self.scratch, text),
                        Kind::Json => {
                            self.scratch.push(b'"');
                            escape_copy_bytes(&mut self.scratch, text);
                            self.scratch.push(b'"');
                        }
                        Kind::Int | Kind::Float | Kind::Bool => return false,
                    }
                }
                Some(b'-' | b'0'..=b'9') => {
                    let from = at;
                    if json[at] == b'-' {
                        at += 1;
                    }
                    let digits = at;
                    while json.get(at).is_some_and(u8::is_ascii_digit) {
                        at += 1;
                    }
                    let n = at - digits;
                    // 1 to 18 digits, no leading zero, not "-0": an integer that fits 64
                    // bits, written as serde_json would write it (its own digits).
                    if n == 0 || n > 18 || (json[digits] == b'0' && (n > 1 || from != digits)) {
                        return false;
                    }
                    if matches!(json.get(at), Some(b'.' | b'e' | b'E')) {
                        return false;
                    }
                    if !matches!(kind, Kind::Int | Kind::Float | Kind::Json) {
                        return false;
                    }
                    self.scratch.extend_from_slice(&json[from..at]);
                }
                Some(b't') if json[at..].starts_with(b"true") => {
                    at += 4;
                    match kind {
                        Kind::Bool => self.scratch.push(b't'),
                        Kind::Json => self.scratch.extend_from_slice(b"true"),
                        _ => return false,
                    }
                }
                Some(b'f') if json[at..].starts_with(b"false") => {
                    at += 5;
                    match kind {
                        Kind::Bool => self.scratch.push(b'f'),
                        Kind::Json => self.scratch.extend_from_slice(b"false"),
                        _ => return false,
                    }
                }
                Some(b'n') if json[at..].starts_with(b"null") => {
                    at += 4;
                    self.scratch.extend_from_slice(b"\\N");
                }
                _ => return false,
            }
            self.slots[i] = Some((start, self.scratch.len()));
            match json.get(at) {
                Some(b',') => at += 1,
                Some(b'}') => return at + 1 == end,
                _ => return false,
            }
        }
    }
}

/// The string starting at `json[*at]` (a quote), when it is ASCII with no escape and no
/// control character; moves `at` past its closing quote.
fn ascii_string<'a>(json: &'a [u8], at: &mut usize) -> Option<&'a [u8]> {
    if json.get(*at) != Some(&b'"') {
        return None;
    }
    let from = *at + 1;
    let len = json[from..].iter().position(|&b| b == b'"')?;
    let text = &json[from..from + len];
    if text
        .iter()
        .any(|&b| b == b'\\' || !(0x20..0x80).contains(&b))
    {
        return None;
    }
    *at = from + len + 1;
    Some(text)
}

/// Visits the record's object: each key to its column, each value encoded into `scratch`.
struct RowVisitor<'a> {
    columns: &'a [Column],
    scratch: &'a mut Vec<u8>,
    slots: &'a mut [Option<(usize, usize)>],
}

impl<'de> Visitor<'de> for RowVisitor<'_> {
    /// Whether every key is a column (once) and every value fits.
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        while let Some(key) = map.next_key_seed(KeySeed)? {
            let Some(i) = self.columns.iter().position(|c| c.name == key) else {
                return Ok(false);
            };
            if self.slots[i].is_some() {
                // A key given twice: the general path keeps the last one.
                return Ok(false);
            }
            let start = self.scratch.len();
            let fits = map.next_value_seed(ValueSeed {
                kind: self.columns[i].kind,
                out: self.scratch,
            })?;
            if !fits {
                return Ok(false);
            }
            self.slots[i] = Some((start, self.scratch.len()));
        }
        Ok(true)
    }
}

/// A key, borrowed from the record when it has no escapes.
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(KeySeed)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(s))
    }

    fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(s.to_owned()))
    }
}

/// One value, encoded for a column of `kind` if it fits (false if not, or not a scalar).
struct ValueSeed<'a> {
    kind: Kind,
    out: &'a mut Vec<u8>,
}

impl<'de> DeserializeSeed<'de> for ValueSeed<'_> {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_any(self)
    }
}

impl ValueSeed<'_> {
    /// A number: integers fit integer columns when they fit 64 signed bits; every number
    /// fits float and JSON columns. Written as serde_json writes the number.
    fn number(self, n: serde_json::Number) -> bool {
        let fits = match self.kind {
            Kind::Int => n.is_i64(),
            Kind::Float | Kind::Json => true,
            Kind::Bool | Kind::Text => false,
        };
        if fits {
            let _ = write!(self.out, "{n}");
        }
        fits
    }

    /// An integer that fits 64 signed bits: it fits every number column and JSON. Written
    /// as serde_json writes it (with itoa), without core::fmt.
    fn integer(self, n: i64) -> bool {
        let fits = matches!(self.kind, Kind::Int | Kind::Float | Kind::Json);
        if fits {
            self.out
                .extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
        }
        fits
    }

    fn string(self, s: &str) -> bool {
        match self.kind {
            Kind::Text => escape_copy(self.out, s),
            Kind::Json => {
                let _ = serde_json::to_writer(CopyEscape(self.out), s);
            }
            Kind::Int | Kind::Float | Kind::Bool => return false,
        }
        true
    }
}

impl<'de> Visitor<'de> for ValueSeed<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a scalar")
    }

    fn visit_unit<E>(self) -> Result<bool, E> {
        self.out.extend_from_slice(b"\\N");
        Ok(true)
    }

    fn visit_bool<E>(self, b: bool) -> Result<bool, E> {
        Ok(match self.kind {
            Kind::Bool => {
                self.out.push(if b { b't' } else { b'f' });
                true
            }
            Kind::Json => {
                self.out
                    .extend_from_slice(if b { b"true" } else { b"false" });
                true
            }
            Kind::Int | Kind::Float | Kind::Text => false,
        })
    }

    fn visit_i64<E>(self, n: i64) -> Result<bool, E> {
        Ok(self.integer(n))
    }

    fn visit_u64<E>(self, n: u64) -> Result<bool, E> {
        Ok(match i64::try_from(n) {
            Ok(n) => self.integer(n),
            Err(_) => self.number(n.into()),
        })
    }

    fn visit_f64<E>(self, f: f64) -> Result<bool, E> {
        Ok(serde_json::Number::from_f64(f).is_some_and(|n| self.number(n)))
    }

    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<bool, E> {
        Ok(self.string(s))
    }

    fn visit_str<E>(self, s: &str) -> Result<bool, E> {
        Ok(self.string(s))
    }

    // Objects and arrays are not taken here: the general path writes them. Returning
    // without reading them ends the parse with an error, which is that refusal.
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn col(name: &str, kind: Kind) -> Column {
        Column {
            name: name.to_string(),
            kind,
        }
    }

    /// The general path's row of `json`, if it fits.
    fn general(json: &[u8], columns: &[Column]) -> Option<Vec<u8>> {
        let (row, _) = crate::row_values(json, Some(columns), "t").ok()?;
        let mut out = Vec::new();
        crate::copy_text_row(&mut out, &row, columns);
        Some(out)
    }

    fn fast(json: &[u8], columns: &[Column]) -> Option<Vec<u8>> {
        let mut out = b"before|".to_vec();
        let taken = RowEncoder::default().encode(json, columns, &mut out);
        if !taken {
            assert_eq!(out, b"before|", "a refused row leaves the buffer as it was");
            return None;
        }
        Some(out.split_off(7))
    }

    #[test]
    fn a_flat_record_is_taken_in_any_key_order_with_missing_keys_as_null() {
        let columns = [
            col("id", Kind::Int),
            col("name", Kind::Text),
            col("ok", Kind::Bool),
            col("score", Kind::Float),
            col("extra", Kind::Json),
        ];
        let json = br#"{"score":1.5,"id":7,"name":"a\tb\\c","ok":true}"#;
        let got = fast(json, &columns).expect("taken");
        assert_eq!(got, b"7\ta\\tb\\\\c\tt\t1.5\t\\N\n");
        assert_eq!(Some(got), general(json, &columns));
        // A boolean in a JSON column is JSON (`t` is no JSON to PostgreSQL), both ways.
        let json = br#"{"id":1,"extra":false}"#;
        let got = fast(json, &columns).expect("taken");
        assert_eq!(got, b"1\t\\N\t\\N\t\\N\tfalse\n");
        assert_eq!(Some(got), general(json, &columns));
    }

    #[test]
    fn the_scanner_takes_a_plain_record_and_leaves_the_rest_to_the_parser() {
        let columns = [
            col("id", Kind::Int),
            col("name", Kind::Text),
            col("ok", Kind::Bool),
            col("extra", Kind::Json),
        ];
        let mut e = RowEncoder::default();
        for plain in [
            &br#"{"name":"x y","id":-7,"ok":false,"extra":"s"}"#[..],
            br#"{"id":0,"extra":null}"#,
            br#"{}"#,
        ] {
            assert!(
                e.scan(plain, &columns),
                "{}",
                String::from_utf8_lossy(plain)
            );
        }
        for other in [
            &br#"{"id": 7}"#[..],
            br#"{"id":-0}"#,
            br#"{"id":07}"#,
            br#"{"id":1.0}"#,
            br#"{"id":1e3}"#,
            br#"{"id":1234567890123456789}"#,
            br#"{"name":"caf\u00e9"}"#,
            "{\"name\":\"café\"}".as_bytes(),
            br#"{"name":"a\tb"}"#,
            br#"{"extra":[1]}"#,
            br#"{"id":1,}"#,
            br#"{"id":1}x"#,
            br#"{"id":truex}"#,
        ] {
            assert!(
                !e.scan(other, &columns),
                "{}",
                String::from_utf8_lossy(other)
            );
        }
    }

    #[test]
    fn what_the_general_path_must_decide_is_left_to_it() {
        let columns = [col("id", Kind::Int), col("name", Kind::Text)];
        for json in [
            &br#"{"id":1,"id":2}"#[..],
            br#"{"id":1,"other":2}"#,
            br#"{"id":"1"}"#,
            br#"{"id":1.5}"#,
            br#"{"id":18446744073709551615}"#,
            br#"{"name":["a"]}"#,
            br#"[1,2]"#,
            br#"{"id":1} {"id":2}"#,
            b"not json",
        ] {
            assert_eq!(
                fast(json, &columns),
                None,
                "{}",
                String::from_utf8_lossy(json)
            );
        }
    }

    fn kind() -> impl Strategy<Value = Kind> {
        prop_oneof![
            Just(Kind::Int),
            Just(Kind::Float),
            Just(Kind::Bool),
            Just(Kind::Text),
            Just(Kind::Json),
        ]
    }

    /// A JSON value as text, scalars mostly, written in the ways a worker may write them.
    fn value() -> impl Strategy<Value = String> {
        let scalar = prop_oneof![
            Just("null".to_string()),
            any::<bool>().prop_map(|b| b.to_string()),
            any::<i64>().prop_map(|n| n.to_string()),
            any::<u64>().prop_map(|n| n.to_string()),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| format!("{f:e}")),
            prop_oneof![
                Just("-0"),
                Just("1.0"),
                Just("1e2"),
                Just("-0.0"),
                Just("2E-3")
            ]
            .prop_map(str::to_string),
            "[a-z\\\\\t\n\r\"é]{0,6}".prop_map(|s| serde_json::to_string(&s).unwrap()),
            Just(r#""\u0041\t""#.to_string()),
        ];
        prop_oneof![
            8 => scalar,
            1 => Just(r#"{"a":[1,{"b":null}]}"#.to_string()),
            1 => Just("[true, 2 ,\"x\"]".to_string()),
        ]
    }

    proptest! {
        /// Whatever the fast path takes, the general path takes too and writes the same row.
        #[test]
        fn the_fast_path_writes_what_the_general_path_writes(
            kinds in proptest::collection::vec(kind(), 1..5),
            entries in proptest::collection::vec((0usize..6, value()), 0..6),
            spaces in any::<bool>(),
        ) {
            let columns: Vec<Column> = kinds
                .iter()
                .enumerate()
                .map(|(i, k)| col(&format!("c{i}"), *k))
                .collect();
            // Keys c0..c5: some are no column; some may repeat.
            let sep = if spaces { " , " } else { "," };
            let body: Vec<String> = entries
                .iter()
                .map(|(k, v)| format!("\"c{k}\":{v}"))
                .collect();
            let json = format!("{{{}}}", body.join(sep));
            if let Some(got) = fast(json.as_bytes(), &columns) {
                prop_assert_eq!(Some(got), general(json.as_bytes(), &columns), "{}", json);
            }
        }

        /// A record of scalars that fit, each column at most once in any order, is taken.
        #[test]
        fn a_record_that_fits_is_taken(
            cells in proptest::collection::vec((kind(), value(), any::<bool>()), 1..6),
            order in any::<u64>(),
        ) {
            let mut columns = Vec::new();
            let mut body = Vec::new();
            for (i, (k, v, present)) in cells.iter().enumerate() {
                let name = format!("c{i}");
                let parsed: serde_json::Value = serde_json::from_str(v).unwrap();
                // The value decides the column's kind where it fits no other.
                let kind = if crate::Kind::fits(*k, &parsed) { *k } else { Kind::Json };
                columns.push(col(&name, kind));
                if *present && (parsed.is_null() || !(parsed.is_object() || parsed.is_array())) {
                    body.push(format!("\"{name}\":{v}"));
                }
            }
            let mut rng = order;
            for i in (1..body.len()).rev() {
                rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                body.swap(i, (rng >> 33) as usize % (i + 1));
            }
            let json = format!("{{{}}}", body.join(","));
            let got = fast(json.as_bytes(), &columns);
            prop_assert!(got.is_some(), "not taken: {} into {:?}", json, columns);
            prop_assert_eq!(got, general(json.as_bytes(), &columns), "{}", json);
        }
    }
}
