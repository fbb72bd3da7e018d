//! CSV output: chosen columns project each record, records that are not JSON objects are
//! refused whole, and header names keep their bytes.

use crate::common;

use common::*;
use herdsman_io::{Format, OutputFormat, Sink, SinkError, SourceOptions};

fn columns(c: &[&str]) -> OutputFormat {
    OutputFormat::Csv {
        columns: Some(c.iter().map(|s| s.to_string()).collect()),
    }
}

#[test]
fn given_columns_project_each_record_in_their_order() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("p.csv");
    let fmt = columns(&["v", "id"]);
    let mut s = Sink::open(&out, fmt.clone(), None).unwrap();
    s.write_record(br#"{"id":2,"extra":"dropped","v":"x"}"#)
        .unwrap();
    s.write_record(br#"{"other":1}"#).unwrap();
    s.sync().unwrap();
    let cp = s.offset();
    drop(s);
    // Resumed, the columns still project.
    let mut s = Sink::open(&out, fmt, Some(cp)).unwrap();
    s.write_record(br#"{"id":3,"zzz":[1]}"#).unwrap();
    s.finish().unwrap();
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "v,id\nx,2\n,\n,3\n");

    // A column named twice gets the value in both places.
    let out = dir.path().join("d.csv");
    let mut s = Sink::open(&out, columns(&["a", "b", "a"]), None).unwrap();
    s.write_record(br#"{"b":1,"a":"x"}"#).unwrap();
    s.finish().unwrap();
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "a,b,a\nx,1,x\n");
}

#[test]
fn records_that_are_not_objects_are_refused_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("o.csv");
    let mut s = Sink::open(&out, OutputFormat::Csv { columns: None }, None).unwrap();
    for (bad, kind) in [
        (&b"3"[..], "a number"),
        (b"[1,2]", "an array"),
        (b"\"text\"", "a string"),
        (b"null", "null"),
        (b"true", "a boolean"),
    ] {
        let err = s.write_record(bad).unwrap_err();
        assert!(matches!(err, SinkError::Record { .. }), "{err}");
        let msg = err.to_string();
        assert!(
            msg.contains("not a JSON object") && msg.contains(kind),
            "{msg}"
        );
        assert_eq!(s.offset(), 0, "a refused record wrote something");
    }
    s.write_record(br#"{"a":1}"#).unwrap();
    let before = s.offset();
    assert!(s.write_record(b"[1,2]").is_err());
    assert_eq!(s.offset(), before);
    s.finish().unwrap();
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "a\n1\n");
}

#[test]
fn a_record_is_checked_whole_before_any_of_its_outputs_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("c.csv");
    let s = Sink::open(&out, OutputFormat::Csv { columns: None }, None).unwrap();
    let ok: [&[u8]; 2] = [br#"{"a":1}"#, br#"{"a":2}"#];
    s.check_records(ok).unwrap();
    // The first output would fix the header; the second does not fit it.
    let keys: [&[u8]; 2] = [br#"{"a":1}"#, br#"{"b":2}"#];
    let err = s.check_records(keys).unwrap_err();
    assert!(err.to_string().contains("`b`"), "{err}");
    let shape: [&[u8]; 2] = [br#"{"a":1}"#, b"3"];
    assert!(s.check_records(shape).is_err());
    assert_eq!(s.offset(), 0, "checking writes nothing");
    // With chosen columns, any objects pass.
    let p = Sink::open(&dir.path().join("p.csv"), columns(&["a"]), None).unwrap();
    p.check_records(keys).unwrap();
    assert!(p.check_records(shape).is_err());
    // JSONL refuses raw line breaks only.
    let j = Sink::open(&dir.path().join("j.jsonl"), OutputFormat::Jsonl, None).unwrap();
    j.check_records(shape).unwrap();
    let broken: [&[u8]; 1] = [b"{\"a\":\n1}"];
    assert!(j.check_records(broken).is_err());
}

#[test]
fn header_names_keep_their_bytes_through_output_and_back() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("h.csv");
    let names = [
        "\u{feff}id",
        " sp ace ",
        "caf\u{e9}",
        "q\"uote",
        "a,b",
        "",
        "x\ny",
    ];
    // Written by hand to keep the key order whatever serde_json's features.
    let fields: Vec<String> = names
        .iter()
        .enumerate()
        .map(|(i, n)| format!("{}:\"{i}\"", serde_json::to_string(n).unwrap()))
        .collect();
    let json = format!("{{{}}}", fields.join(","));
    let obj: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&json).unwrap();
    let mut s = Sink::open(&out, OutputFormat::Csv { columns: None }, None).unwrap();
    s.write_record(json.as_bytes()).unwrap();
    s.finish().unwrap();
    let mut src = herdsman_io::Source::open(
        vec![spec(&out, Format::Csv)],
        SourceOptions::default(),
        None,
    )
    .unwrap();
    assert_eq!(src.csv_header().unwrap(), names);
    let back: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(src.next().unwrap().unwrap().data.as_ref().unwrap()).unwrap();
    assert_eq!(back, obj);
}
