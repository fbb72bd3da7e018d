//! One entry of a dead-letter file: the record that failed, where it came from, why it
//! failed and how many attempts it was given.
//!
//! A dead-letter file holds one entry per line, as compact JSON with its keys in this order:
//!
//! ```text
//! {"record":{"id":"3","value":"x"},"source":{"file":"in.csv","line":4,"record":3},
//!  "error":{"kind":"reported","message":"..."},"attempts":1,"stderr_tail":["..."]}
//! ```
//!
//! `record` is the input record as JSON (`null`, with the record's text in `raw`, when the
//! input could not be read); `stderr_tail` is left out when the worker wrote nothing to
//! stderr. Every error kind has a fixed name on disk ([`DeadLetterKind::name`]); renaming one
//! is a format change. Writers and readers share [`DeadLetter`], so a file written by one
//! version of herdsman is read by the next, and other front ends can read it too.
//!
//! This module must never put a `Debug` rendering on disk, and never change the key order of
//! a record it writes.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;

use serde::de::{IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

use crate::RecordErrorKind;

/// One line of a dead-letter file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The input record as compact JSON, or `None` (`null` on disk) when the input could not
    /// be read. The key must be present in every entry.
    #[serde(deserialize_with = "required_record")]
    pub record: Option<Box<RawValue>>,
    /// The text of a record that could not be read (only when `record` is `null`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw: Option<String>,
    /// Where the record came from.
    #[serde(default)]
    pub source: DeadLetterSource,
    /// Why it failed.
    #[serde(default)]
    pub error: DeadLetterError,
    /// Attempts spent on it, the first included.
    #[serde(default)]
    pub attempts: u32,
    /// The last lines the worker wrote to stderr; left out when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stderr_tail: Vec<String>,
}

/// Where a dead-lettered record came from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DeadLetterSource {
    /// The input's name as the user gave it (`-` for stdin).
    pub file: String,
    /// 1-based line on which the record starts.
    pub line: u64,
    /// 1-based record number across all inputs.
    pub record: u64,
}

/// Why a record failed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DeadLetterError {
    /// The class of failure, by its stable name.
    pub kind: DeadLetterKind,
    /// One sentence saying what happened.
    pub message: String,
}

/// The class of a failure, as named in a dead-letter file. The names are part of the file
/// format: [`DeadLetterKind::name`] lists them, and a unit test pins every one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DeadLetterKind {
    /// Malformed CSV (a quote that is never closed).
    #[serde(rename = "input_csv")]
    InputCsv,
    /// Input bytes that are not valid UTF-8.
    #[serde(rename = "input_utf8")]
    InputUtf8,
    /// A JSONL line that is not exactly one JSON value.
    #[serde(rename = "input_json")]
    InputJson,
    /// A CSV row whose number of fields differs from the header.
    #[serde(rename = "input_field_count")]
    InputFieldCount,
    /// An input record longer than `--max-record-size`.
    #[serde(rename = "input_too_long")]
    InputTooLong,
    /// The worker exited (or closed its stdout) while the record was in flight.
    #[serde(rename = "worker_exited")]
    WorkerExited,
    /// The worker or command answered with something that is not valid output.
    #[serde(rename = "bad_output")]
    BadOutput,
    /// The worker reported a failure for this record.
    #[serde(rename = "reported")]
    Reported,
    /// A per-record command exited with a non-zero status or was killed by a signal.
    #[serde(rename = "command_failed")]
    CommandFailed,
    /// The command template could not be filled from this record.
    #[serde(rename = "bad_record")]
    BadRecord,
    /// The record did not finish within the per-record timeout.
    #[serde(rename = "timeout")]
    Timeout,
    /// The code running the record panicked.
    #[serde(rename = "worker_crashed")]
    WorkerCrashed,
    /// The executor itself failed while the record was in flight.
    #[serde(rename = "executor")]
    Executor,
    /// The output refused the record's answer (CSV output and an answer that is not an
    /// object, or whose keys do not fit the header).
    #[serde(rename = "output_rejected")]
    OutputRejected,
    /// A kind this version does not know (written by a newer version, or missing).
    #[default]
    #[serde(rename = "unknown", other)]
    Unknown,
}

impl DeadLetterKind {
    /// Every kind, in declaration order.
    pub const ALL: [DeadLetterKind; 15] = [
        DeadLetterKind::InputCsv,
        DeadLetterKind::InputUtf8,
        DeadLetterKind::InputJson,
        DeadLetterKind::InputFieldCount,
        DeadLetterKind::InputTooLong,
        DeadLetterKind::WorkerExited,
        DeadLetterKind::BadOutput,
        DeadLetterKind::Reported,
        DeadLetterKind::CommandFailed,
        DeadLetterKind::BadRecord,
        DeadLetterKind::Timeout,
        DeadLetterKind::WorkerCrashed,
        DeadLetterKind::Executor,
        DeadLetterKind::OutputRejected,
        DeadLetterKind::Unknown,
    ];

    /// The kind's name in a dead-letter file.
    pub fn name(self) -> &'static str {
        match self {
            DeadLetterKind::InputCsv => "input_csv",
            DeadLetterKind::InputUtf8 => "input_utf8",
            DeadLetterKind::InputJson => "input_json",
            DeadLetterKind::InputFieldCount => "input_field_count",
            DeadLetterKind::InputTooLong => "input_too_long",
            DeadLetterKind::WorkerExited => "worker_exited",
            DeadLetterKind::BadOutput => "bad_output",
            DeadLetterKind::Reported => "reported",
            DeadLetterKind::CommandFailed => "command_failed",
            DeadLetterKind::BadRecord => "bad_record",
            DeadLetterKind::Timeout => "timeout",
            DeadLetterKind::WorkerCrashed => "worker_crashed",
            DeadLetterKind::Executor => "executor",
            DeadLetterKind::OutputRejected => "output_rejected",
            DeadLetterKind::Unknown => "unknown",
        }
    }
}

impl fmt::Display for DeadLetterKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl From<RecordErrorKind> for DeadLetterKind {
    fn from(kind: RecordErrorKind) -> Self {
        match kind {
            RecordErrorKind::Csv => DeadLetterKind::InputCsv,
            RecordErrorKind::Utf8 => DeadLetterKind::InputUtf8,
            RecordErrorKind::Json => DeadLetterKind::InputJson,
            RecordErrorKind::FieldCount => DeadLetterKind::InputFieldCount,
            RecordErrorKind::TooLong => DeadLetterKind::InputTooLong,
        }
    }
}

/// Why a line of a dead-letter file is not an entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeadLetterParseError {
    /// The line is not UTF-8.
    #[error("it is not valid UTF-8")]
    NotUtf8,
    /// The line is not one JSON value.
    #[error("it is not valid JSON ({0})")]
    NotJson(String),
    /// The line is JSON, but not an object.
    #[error("it is not a JSON object")]
    NotObject,
    /// The object has no `record` key.
    #[error("it has no `record` key")]
    NoRecord,
    /// A key holds a value of the wrong type.
    #[error("a key holds a value of the wrong type ({0})")]
    BadField(String),
}

impl DeadLetter {
    /// Reads one line of a dead-letter file (without its newline).
    pub fn parse(line: &[u8]) -> Result<DeadLetter, DeadLetterParseError> {
        let text = std::str::from_utf8(line).map_err(|_| DeadLetterParseError::NotUtf8)?;
        match serde_json::from_str::<DeadLetter>(text) {
            Ok(entry) => Ok(entry),
            Err(e) if e.is_syntax() || e.is_eof() => {
                Err(DeadLetterParseError::NotJson(e.to_string()))
            }
            Err(e) => {
                if !text.trim_start().starts_with('{') {
                    return Err(DeadLetterParseError::NotObject);
                }
                match serde_json::from_str::<std::collections::HashMap<String, IgnoredAny>>(text) {
                    Ok(keys) if !keys.contains_key("record") => Err(DeadLetterParseError::NoRecord),
                    _ => Err(DeadLetterParseError::BadField(e.to_string())),
                }
            }
        }
    }

    /// The entry as one line of compact JSON, without its newline.
    pub fn to_line(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a dead-letter entry always serializes")
    }

    /// The `record` of an entry for an input record given as JSON text: the record as
    /// compact JSON, keys in their order (a key given twice keeps its first place and its
    /// last value); text that is not JSON becomes a JSON string of it.
    pub fn record_of(json: &[u8]) -> Box<RawValue> {
        let text = match serde_json::from_slice::<OrderedJson>(json) {
            Ok(v) => serde_json::to_string(&v),
            Err(_) => serde_json::to_string(&String::from_utf8_lossy(json)),
        }
        .expect("JSON always serializes");
        RawValue::from_string(text).expect("serde_json wrote valid JSON")
    }
}

/// `record` must be present, even when it is `null`.
fn required_record<'de, D>(d: D) -> Result<Option<Box<RawValue>>, D::Error>
where
    D: Deserializer<'de>,
{
    Option::<Box<RawValue>>::deserialize(d)
}

/// A JSON value that keeps the order of its objects' keys, whatever features `serde_json`
/// is built with. Numbers and strings are read and written as [`serde_json::Value`] would
/// (so `1.0E2` is written `100.0` and `"\u00e9"` is written `"é"`).
#[derive(Debug, Clone, PartialEq)]
pub enum OrderedJson {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A number.
    Number(serde_json::Number),
    /// A string.
    String(String),
    /// An array.
    Array(Vec<OrderedJson>),
    /// An object, keys in the order they were read; a key given twice keeps its first place
    /// and its last value.
    Object(Vec<(String, OrderedJson)>),
}

impl Serialize for OrderedJson {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            OrderedJson::Null => s.serialize_unit(),
            OrderedJson::Bool(b) => s.serialize_bool(*b),
            OrderedJson::Number(n) => n.serialize(s),
            OrderedJson::String(t) => s.serialize_str(t),
            OrderedJson::Array(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            OrderedJson::Object(pairs) => {
                let mut map = s.serialize_map(Some(pairs.len()))?;
                for (k, v) in pairs {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for OrderedJson {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OrderedJson;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_unit<E>(self) -> Result<OrderedJson, E> {
                Ok(OrderedJson::Null)
            }
            fn visit_none<E>(self) -> Result<OrderedJson, E> {
                Ok(OrderedJson::Null)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<OrderedJson, D::Error> {
                OrderedJson::deserialize(d)
            }
            fn visit_bool<E>(self, b: bool) -> Result<OrderedJson, E> {
                Ok(OrderedJson::Bool(b))
            }
            fn visit_i64<E>(self, n: i64) -> Result<OrderedJson, E> {
                Ok(OrderedJson::Number(n.into()))
            }
            fn visit_u64<E>(self, n: u64) -> Result<OrderedJson, E> {
                Ok(OrderedJson::Number(n.into()))
            }
            fn visit_f64<E>(self, n: f64) -> Result<OrderedJson, E> {
                Ok(serde_json::Number::from_f64(n).map_or(OrderedJson::Null, OrderedJson::Number))
            }
            fn visit_str<E>(self, s: &str) -> Result<OrderedJson, E> {
                Ok(OrderedJson::String(s.to_owned()))
            }
            fn visit_string<E>(self, s: String) -> Result<OrderedJson, E> {
                Ok(OrderedJson::String(s))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<OrderedJson, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(OrderedJson::Array(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<OrderedJson, A::Error> {
                let mut pairs: Vec<(String, OrderedJson)> = Vec::new();
                let mut seen: HashSet<String> = HashSet::new();
                while let Some((k, v)) = map.next_entry::<Cow<'de, str>, OrderedJson>()? {
                    if seen.contains(k.as_ref()) {
                        if let Some(slot) = pairs.iter_mut().find(|(key, _)| *key == k) {
                            slot.1 = v;
                        }
                    } else {
                        seen.insert(k.clone().into_owned());
                        pairs.push((k.into_owned(), v));
                    }
                }
                Ok(OrderedJson::Object(pairs))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_a_pinned_name_on_disk() {
        // These names are part of the dead-letter file format: changing one is a breaking
        // change for every reader of old files.
        let pinned = [
            (DeadLetterKind::InputCsv, "input_csv"),
            (DeadLetterKind::InputUtf8, "input_utf8"),
            (DeadLetterKind::InputJson, "input_json"),
            (DeadLetterKind::InputFieldCount, "input_field_count"),
            (DeadLetterKind::InputTooLong, "input_too_long"),
            (DeadLetterKind::WorkerExited, "worker_exited"),
            (DeadLetterKind::BadOutput, "bad_output"),
            (DeadLetterKind::Reported, "reported"),
            (DeadLetterKind::CommandFailed, "command_failed"),
            (DeadLetterKind::BadRecord, "bad_record"),
            (DeadLetterKind::Timeout, "timeout"),
            (DeadLetterKind::WorkerCrashed, "worker_crashed"),
            (DeadLetterKind::Executor, "executor"),
            (DeadLetterKind::OutputRejected, "output_rejected"),
            (DeadLetterKind::Unknown, "unknown"),
        ];
        assert_eq!(pinned.len(), DeadLetterKind::ALL.len());
        for ((kind, name), listed) in pinned.iter().zip(DeadLetterKind::ALL) {
            assert_eq!(*kind, listed, "ALL lists every kind in order");
            assert_eq!(kind.name(), *name);
            assert_eq!(kind.to_string(), *name);
            let json = serde_json::to_string(kind).unwrap();
            assert_eq!(json, format!("\"{name}\""), "{kind:?} on disk");
            let back: DeadLetterKind = serde_json::from_str(&json).unwrap();
            assert_eq!(back, *kind);
        }
        // A kind written by a newer version is read, as unknown.
        let later: DeadLetterKind = serde_json::from_str("\"cosmic_ray\"").unwrap();
        assert_eq!(later, DeadLetterKind::Unknown);
    }

    #[test]
    fn input_error_kinds_map_to_their_input_names() {
        for (kind, name) in [
            (RecordErrorKind::Csv, "input_csv"),
            (RecordErrorKind::Utf8, "input_utf8"),
            (RecordErrorKind::Json, "input_json"),
            (RecordErrorKind::FieldCount, "input_field_count"),
            (RecordErrorKind::TooLong, "input_too_long"),
        ] {
            assert_eq!(DeadLetterKind::from(kind).name(), name);
        }
    }

    fn entry() -> DeadLetter {
        DeadLetter {
            record: Some(DeadLetter::record_of(br#"{"z":"3","a":"x"}"#)),
            raw: None,
            source: DeadLetterSource {
                file: "in.csv".into(),
                line: 4,
                record: 3,
            },
            error: DeadLetterError {
                kind: DeadLetterKind::Reported,
                message: "value 'x' is not an integer".into(),
            },
            attempts: 2,
            stderr_tail: vec!["Traceback".into()],
        }
    }

    #[test]
    fn an_entry_is_written_with_its_keys_in_the_documented_order() {
        let line = String::from_utf8(entry().to_line()).unwrap();
        assert_eq!(
            line,
            r#"{"record":{"z":"3","a":"x"},"source":{"file":"in.csv","line":4,"record":3},"error":{"kind":"reported","message":"value 'x' is not an integer"},"attempts":2,"stderr_tail":["Traceback"]}"#
        );
        let mut unreadable = entry();
        unreadable.record = None;
        unreadable.raw = Some("a,\"b".into());
        unreadable.stderr_tail.clear();
        unreadable.error.kind = DeadLetterKind::InputCsv;
        let line = String::from_utf8(unreadable.to_line()).unwrap();
        assert!(
            line.starts_with(r#"{"record":null,"raw":"a,\"b","source":"#),
            "{line}"
        );
        assert!(!line.contains("stderr_tail"), "{line}");
    }

    #[test]
    fn an_entry_reads_back_as_written() {
        let line = entry().to_line();
        let back = DeadLetter::parse(&line).unwrap();
        assert_eq!(
            back.record.as_deref().map(RawValue::get),
            Some(r#"{"z":"3","a":"x"}"#)
        );
        assert_eq!(back.source, entry().source);
        assert_eq!(back.error, entry().error);
        assert_eq!(back.attempts, 2);
        assert_eq!(back.stderr_tail, ["Traceback"]);
        assert_eq!(back.to_line(), line);
    }

    #[test]
    fn files_written_by_earlier_versions_are_read() {
        // A line as herdsman wrote it before this type existed.
        let old = br#"{"record":null,"raw":"{oops","source":{"file":"in.jsonl","line":2,"record":2},"error":{"kind":"input_json","message":"in.jsonl line 2: not JSON"},"attempts":1}"#;
        let e = DeadLetter::parse(old).unwrap();
        assert!(e.record.is_none());
        assert_eq!(e.raw.as_deref(), Some("{oops"));
        assert_eq!(e.error.kind, DeadLetterKind::InputJson);
        assert_eq!(e.to_line(), old);
    }

    #[test]
    fn lines_that_are_not_entries_say_why() {
        for (line, want) in [
            (&b"{\"record\":\"\xff\"}"[..], "it is not valid UTF-8"),
            (b"{\"record\":{\"id\":\"5\"", "it is not valid JSON"),
            (b"[1,2,3]", "it is not a JSON object"),
            (
                b"{\"error\":{\"kind\":\"reported\"}}",
                "it has no `record` key",
            ),
            (b"{\"record\":1,\"attempts\":\"x\"}", "wrong type"),
        ] {
            let why = DeadLetter::parse(line).unwrap_err().to_string();
            assert!(why.contains(want), "{why}");
        }
    }

    #[test]
    fn records_keep_their_key_order_and_are_normalised_like_serde_json() {
        let get = |s: &str| DeadLetter::record_of(s.as_bytes()).get().to_string();
        assert_eq!(
            get(r#"{"z":1,"a":{"y":2,"b":3}}"#),
            r#"{"z":1,"a":{"y":2,"b":3}}"#
        );
        assert_eq!(get(r#"{"k":1,"j":2,"k":3}"#), r#"{"k":3,"j":2}"#);
        assert_eq!(
            get(r#"[1.0E2,"\u00e9",null,true]"#),
            r#"[100.0,"é",null,true]"#
        );
        assert_eq!(get("not json"), r#""not json""#);
        assert_eq!(get("\"a line\""), r#""a line""#);
    }
}
