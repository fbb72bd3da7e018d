//! CSV output: a header row, then one row per record (a JSON object).
//!
//! csv-core's writer decides which cells need quotes (the delimiter, a quote, CR or LF) with the
//! configured delimiter, and escapes them; cells that start or end with a space or a tab,
//! start with U+FEFF, or are a row's only cell and empty are quoted too, so that no reader
//! trims, drops or skips them. The header is written once: with the columns given up front at
//! the start, else with the first record; a resumed output reads its header back and never
//! writes another.

use std::borrow::Cow;
use std::collections::HashMap;
use std::io::Read;

use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use super::RecordWriter;

/// Writes CSV.
pub(super) struct CsvWriter {
    /// Decides quoting and escapes, with the configured delimiter.
    core: csv_core::Writer,
    delimiter: u8,
    columns: Option<Vec<String>>,
    /// Where each column's value comes from (boxed: a writer stays small).
    lookup: Box<Lookup>,
    cells: Vec<Option<Vec<u8>>>,
    /// The columns were chosen up front: each record is projected onto them (other keys are
    /// left out). Otherwise the first record fixed them and a record with another key is
    /// refused.
    project: bool,
    /// The output already holds a header (written, or found on resume).
    header_written: bool,
}

impl CsvWriter {
    pub(super) fn new(columns: Option<Vec<String>>, delimiter: u8) -> CsvWriter {
        let mut w = CsvWriter {
            core: csv_core::WriterBuilder::new().delimiter(delimiter).build(),
            delimiter,
            columns: None,
            lookup: Box::default(),
            cells: Vec::new(),
            project: columns.is_some(),
            header_written: false,
        };
        if let Some(cols) = columns {
            w.set_columns(cols);
        }
        w
    }

    /// Appends one row of cells and its line break.
    fn push_row<'a>(&self, out: &mut Vec<u8>, cells: impl ExactSizeIterator<Item = &'a [u8]>) {
        let single = cells.len() == 1;
        for (i, c) in cells.enumerate() {
            if i > 0 {
                out.push(self.delimiter);
            }
            self.push_cell(out, c, single);
        }
        out.push(b'\n');
    }

    /// Appends one cell, quoted when needed.
    fn push_cell(&self, out: &mut Vec<u8>, s: &[u8], single: bool) {
        let needs = self.core.should_quote(s)
            || (single && s.is_empty())
            || s.starts_with("\u{feff}".as_bytes())
            || s.first().is_some_and(|&b| b == b' ' || b == b'\t')
            || s.last().is_some_and(|&b| b == b' ' || b == b'\t');
        if !needs {
            out.extend_from_slice(s);
            return;
        }
        out.push(b'"');
        let mut input = s;
        let mut buf = [0u8; 1024];
        loop {
            let (res, nin, nout) = csv_core::quote(input, &mut buf, b'"', b'\\', true);
            out.extend_from_slice(&buf[..nout]);
            input = &input[nin..];
            if res == csv_core::WriteResult::InputEmpty {
                break;
            }
        }
        out.push(b'"');
    }
}

impl RecordWriter for CsvWriter {
    fn start(&mut self, out: &mut Vec<u8>) {
        if let Some(cols) = self.columns.as_deref() {
            self.push_row(out, cols.iter().map(|c| c.as_bytes()));
            self.header_written = true;
        }
    }

    fn resume(&mut self, existing: Option<&mut dyn Read>) -> Result<(), String> {
        // Whatever the output holds starts with its header.
        self.header_written = true;
        let Some(existing) = existing else {
            return Ok(());
        };
        let found = read_header(existing, self.delimiter)
            .map_err(|e| format!("its CSV header cannot be read ({e})"))?;
        match (&self.columns, found) {
            (_, None) => Err("its CSV header cannot be read".into()),
            (Some(want), Some(got)) if *want != got => Err(format!(
                "its CSV header {got:?} differs from the requested columns {want:?}"
            )),
            (_, Some(got)) => {
                self.set_columns(got);
                Ok(())
            }
        }
    }

    fn encode(&mut self, json: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
        let pairs = record_pairs(json)?;
        if self.columns.is_none() {
            let cols: Vec<String> = pairs.0.iter().map(|(k, _)| k.to_string()).collect();
            self.set_columns(cols);
        }
        for c in self.cells.iter_mut() {
            *c = None;
        }
        for (k, v) in &pairs.0 {
            match self.lookup.index.get(k.as_ref()) {
                Some(&i) => self.cells[i] = Some(cell_text(v)?),
                None if self.project => {}
                None => {
                    let cols = self.columns.as_deref().unwrap_or_default();
                    return Err(CsvWriter::unknown_key(k, cols));
                }
            }
        }
        for i in 0..self.cells.len() {
            let f = self.lookup.first[i];
            if f != i {
                self.cells[i] = self.cells[f].clone();
            }
        }
        if !self.header_written {
            let cols = self.columns.as_deref().unwrap_or_default();
            self.push_row(out, cols.iter().map(|c| c.as_bytes()));
            self.header_written = true;
        }
        self.push_row(out, self.cells.iter().map(|c| c.as_deref().unwrap_or(b"")));
        Ok(())
    }

    fn check(&self, records: &mut dyn Iterator<Item = &[u8]>) -> Result<(), String> {
        // The header the first record would fix, when none is yet.
        let mut fixed: Option<Vec<String>> = None;
        for r in records {
            let pairs = record_pairs(r)?;
            if self.project {
                continue;
            }
            let cols = match (&self.columns, &fixed) {
                (Some(c), _) | (None, Some(c)) => c,
                (None, None) => {
                    fixed = Some(pairs.0.iter().map(|(k, _)| k.to_string()).collect());
                    continue;
                }
            };
            if let Some((k, _)) = pairs.0.iter().find(|(k, _)| !cols.iter().any(|c| c == k)) {
                return Err(CsvWriter::unknown_key(k, cols));
            }
        }
        Ok(())
    }

    fn columns(&self) -> Option<&[String]> {
        self.columns.as_deref()
    }
}

/// Reads the first CSV record of an output as header names (`None` if there is none).
fn read_header(existing: &mut dyn Read, delimiter: u8) -> std::io::Result<Option<Vec<String>>> {
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .delimiter(delimiter)
        .from_reader(std::io::BufReader::new(existing));
    let mut rec = csv::StringRecord::new();
    Ok(match rdr.read_record(&mut rec) {
        Ok(true) => Some(rec.iter().map(str::to_string).collect()),
        Ok(false) | Err(_) => None,
    })
}

/// The header's lookup tables.
#[derive(Default)]
struct Lookup {
    /// Each name's first column.
    index: HashMap<String, usize>,
    /// For each column, the first column of the same name (itself unless named twice).
    first: Vec<usize>,
}

impl CsvWriter {
    fn set_columns(&mut self, columns: Vec<String>) {
        let mut index = HashMap::with_capacity(columns.len());
        let first = columns
            .iter()
            .enumerate()
            .map(|(i, c)| *index.entry(c.clone()).or_insert(i))
            .collect();
        *self.lookup = Lookup { index, first };
        self.cells = vec![None; columns.len()];
        self.columns = Some(columns);
    }

    /// Why a record with key `k` does not fit a header fixed by the first record.
    fn unknown_key(k: &str, columns: &[String]) -> String {
        let mut shown = columns
            .iter()
            .take(8)
            .map(|c| format!("`{c}`"))
            .collect::<Vec<_>>()
            .join(", ");
        if columns.len() > 8 {
            shown.push_str(", ...");
        }
        format!(
            "its key `{k}` is not a column of the CSV header ({shown}, fixed by the first record); {} (other keys are then left out) or write JSONL",
            crate::SinkError::CHOOSE_COLUMNS_WORDS
        )
    }
}

/// The entries of a record written as a CSV row, or why it cannot be one: it must be a JSON
/// object.
fn record_pairs(json: &[u8]) -> Result<Pairs<'_>, String> {
    let text =
        std::str::from_utf8(json).map_err(|_| "the record is not valid UTF-8".to_string())?;
    let first = text.trim_start().as_bytes().first().copied();
    if first == Some(b'{') {
        return serde_json::from_str(text)
            .map_err(|e| format!("the record is not valid JSON ({e})"));
    }
    if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(text) {
        return Err(format!("the record is not valid JSON ({e})"));
    }
    let kind = match first {
        Some(b'"') => "a string",
        Some(b'[') => "an array",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        _ => "a number",
    };
    let mut preview: String = text.trim().chars().take(60).collect();
    if preview.len() < text.trim().len() {
        preview.push_str("...");
    }
    Err(format!(
        "the record is {kind} (`{preview}`), not a JSON object; a CSV row needs an object whose keys are the columns: make the worker answer objects, or write JSONL"
    ))
}

/// The CSV text of a JSON value: strings unescaped, `null` empty, anything else as JSON text.
fn cell_text(v: &RawValue) -> Result<Vec<u8>, String> {
    let raw = v.get();
    match raw.as_bytes().first() {
        Some(b'"') => serde_json::from_str::<String>(raw)
            .map(String::into_bytes)
            .map_err(|e| format!("a string value is invalid ({e})")),
        Some(b'n') => Ok(Vec::new()),
        _ => Ok(raw.as_bytes().to_vec()),
    }
}

/// An object's entries in document order, borrowing where possible.
struct Pairs<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

struct Key<'a>(Cow<'a, str>);

impl<'de> serde::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string key")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_string())))
            }
            fn visit_string<E>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

impl<'de> serde::Deserialize<'de> for Pairs<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Pairs<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Pairs<'de>, A::Error> {
                let mut out: Vec<(Cow<'de, str>, &'de RawValue)> = Vec::new();
                while let Some((k, v)) = map.next_entry::<Key<'de>, &'de RawValue>()? {
                    // A repeated key keeps its first place and its last value.
                    if let Some(e) = out.iter_mut().find(|(ek, _)| *ek == k.0) {
                        e.1 = v;
                    } else {
                        out.push((k.0, v));
                    }
                }
                Ok(Pairs(out))
            }
        }
        d.deserialize_map(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unknown_key_message_names_no_command_line_flag() {
        let cols: Vec<String> = (0..10).map(|i| format!("c{i}")).collect();
        let m = CsvWriter::unknown_key("k", &cols);
        assert!(
            m.contains("`k`") && m.contains("`c7`, ...") && m.contains("columns"),
            "{m}"
        );
        assert!(!m.contains("--"), "{m}");
    }

    fn row(w: &CsvWriter, cells: &[&str]) -> String {
        let mut out = Vec::new();
        w.push_row(&mut out, cells.iter().map(|c| c.as_bytes()));
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn cells_are_quoted_only_when_needed() {
        let w = CsvWriter::new(None, b',');
        assert_eq!(
            row(
                &w,
                &[
                    "plain",
                    "a,b",
                    "q\"",
                    "",
                    " x",
                    "y\t",
                    "a;b",
                    "cr\r",
                    "\u{feff}b"
                ]
            ),
            "plain,\"a,b\",\"q\"\"\",,\" x\",\"y\t\",a;b,\"cr\r\",\"\u{feff}b\"\n"
        );
        assert_eq!(row(&w, &[""]), "\"\"\n");
        let semi = CsvWriter::new(None, b';');
        assert_eq!(row(&semi, &["a,b", "a;b", ""]), "a,b;\"a;b\";\n");
        let tab = CsvWriter::new(None, b'\t');
        assert_eq!(row(&tab, &["a b", "a\tb"]), "a b\t\"a\tb\"\n");
    }

    #[test]
    fn the_header_is_written_once_even_after_a_resume() {
        let mut w = CsvWriter::new(None, b';');
        let mut out = Vec::new();
        w.start(&mut out);
        assert!(
            out.is_empty(),
            "no columns yet: the first record fixes them"
        );
        w.encode(br#"{"a":1,"b":"x;y"}"#, &mut out).unwrap();
        w.encode(br#"{"b":2}"#, &mut out).unwrap();
        assert_eq!(out, b"a;b\n1;\"x;y\"\n;2\n");
        let mut again = CsvWriter::new(None, b';');
        again.resume(Some(&mut &out[..])).unwrap();
        assert_eq!(again.columns().unwrap(), ["a", "b"]);
        let mut more = Vec::new();
        again.encode(br#"{"a":3}"#, &mut more).unwrap();
        assert_eq!(more, b"3;\n");
        assert!(again.encode(br#"{"c":3}"#, &mut more).is_err());
        // A stream cannot be read back: no second header all the same.
        let mut stream = CsvWriter::new(None, b',');
        stream.resume(None).unwrap();
        let mut out = Vec::new();
        stream.encode(br#"{"a":1}"#, &mut out).unwrap();
        assert_eq!(out, b"1\n");
    }

    #[test]
    fn pairs_keep_document_order() {
        let p: Pairs = serde_json::from_str(r#"{"z":1,"a":{"b":[1]},"k\"q":"x","z":2}"#).unwrap();
        let got: Vec<(String, String)> =
            p.0.iter()
                .map(|(k, v)| (k.to_string(), v.get().to_string()))
                .collect();
        assert_eq!(
            got,
            vec![
                ("z".into(), "2".into()),
                ("a".into(), r#"{"b":[1]}"#.into()),
                ("k\"q".into(), r#""x""#.into())
            ]
        );
    }
}
