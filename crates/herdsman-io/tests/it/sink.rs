//! Sinks: partial files, resume truncation, CSV headers, refusal of unknown keys, publishing.

use crate::common;

use common::*;
use herdsman_io::{
    finish_partial, partial_path, Format, OutputFormat, Sink, SinkError, SourceOptions,
};
use proptest::prelude::*;

#[test]
fn jsonl_resume_truncates_to_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let mut s = Sink::open(&out, OutputFormat::Jsonl, None).unwrap();
    s.write_record(br#"{"a":1}"#).unwrap();
    s.sync().unwrap();
    let cp = s.offset();
    assert_eq!(cp, 8);
    let err = s.write_record(b"{\"a\":\n1}").unwrap_err();
    assert!(matches!(err, SinkError::Record { .. }), "{err}");
    assert_eq!(s.offset(), cp);
    s.write_record(br#"{"a":2}"#).unwrap();
    s.sync().unwrap();
    drop(s);
    assert!(!out.exists());
    assert_eq!(std::fs::metadata(partial_path(&out)).unwrap().len(), 16);
    let mut s = Sink::open(&out, OutputFormat::Jsonl, Some(cp)).unwrap();
    assert_eq!(s.offset(), cp);
    s.write_record(br#"{"a":3}"#).unwrap();
    s.finish().unwrap();
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        "{\"a\":1}\n{\"a\":3}\n"
    );
    assert!(!partial_path(&out).exists());
    // Publishing again after the rename already happened succeeds.
    finish_partial(&out).unwrap();
}

#[test]
fn resume_refuses_a_missing_or_short_partial() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let err = Sink::open(&out, OutputFormat::Jsonl, Some(10))
        .err()
        .unwrap();
    assert!(matches!(err, SinkError::Resume { .. }), "{err}");
    std::fs::write(partial_path(&out), b"12345").unwrap();
    let err = Sink::open(&out, OutputFormat::Jsonl, Some(10))
        .err()
        .unwrap();
    assert!(err.to_string().contains("holds 5 bytes"), "{err}");
    let err = finish_partial(&dir.path().join("none.jsonl"))
        .err()
        .unwrap();
    assert!(matches!(err, SinkError::Io { .. }));
}

#[test]
fn csv_header_from_first_record_and_on_resume() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.csv");
    let fmt = OutputFormat::Csv { columns: None };
    let mut s = Sink::open(&out, fmt.clone(), None).unwrap();
    s.write_record(br#"{"b":"x","a":1,"c":{"n":[1,2]}}"#)
        .unwrap();
    s.write_record(br#"{"a":null,"b":"two\nlines"}"#).unwrap();
    let before = s.offset();
    let err = s.write_record(br#"{"a":1,"zzz":2}"#).unwrap_err();
    assert!(matches!(err, SinkError::Record { .. }), "{err}");
    assert!(err.to_string().contains("zzz"));
    assert_eq!(s.offset(), before, "a refused record writes nothing");
    s.sync().unwrap();
    let cp = s.offset();
    s.write_record(br#"{"a":9}"#).unwrap();
    drop(s);
    let mut s = Sink::open(&out, fmt, Some(cp)).unwrap();
    assert_eq!(s.columns().unwrap(), ["b", "a", "c"]);
    s.write_record(br#"{"c":[true],"a":2.5}"#).unwrap();
    assert!(s.write_record(br#"{"q":1}"#).is_err());
    assert!(s.write_record(br#""just text""#).is_err(), "not an object");
    s.finish().unwrap();
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        "b,a,c\nx,1,\"{\"\"n\"\":[1,2]}\"\n\"two\nlines\",,\n,2.5,[true]\n"
    );
}

#[test]
fn csv_with_given_columns_writes_the_header_up_front() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.csv");
    let fmt = OutputFormat::Csv {
        columns: Some(vec!["id".into(), "v".into()]),
    };
    let s = Sink::open(&out, fmt.clone(), None).unwrap();
    let cp = s.offset();
    assert_eq!(cp, 5);
    drop(s);
    let mut s = Sink::open(&out, fmt.clone(), Some(cp)).unwrap();
    s.write_record(br#"{"v":"x"}"#).unwrap();
    s.finish().unwrap();
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "id,v\n,x\n");
    // Resuming against a partial with another header is refused.
    std::fs::write(partial_path(&out), "other\n1\n").unwrap();
    let err = Sink::open(&out, fmt, Some(6)).err().unwrap();
    assert!(matches!(err, SinkError::Resume { .. }), "{err}");
}

fn value() -> impl Strategy<Value = String> {
    "[a-c ,\"\n\r\u{e9}]{0,6}"
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Any rows of string values written to a CSV sink read back unchanged through the source.
    #[test]
    fn csv_sink_roundtrips_through_the_source(rows in proptest::collection::vec(proptest::collection::vec(value(), 2), 1..8)) {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("rt.csv");
        let mut s = Sink::open(&out, OutputFormat::Csv { columns: None }, None).unwrap();
        let mut want = Vec::new();
        for r in &rows {
            let obj = serde_json::json!({"k": r[0], "v w": r[1]});
            s.write_record(serde_json::to_string(&obj).unwrap().as_bytes()).unwrap();
            want.push(obj);
        }
        s.finish().unwrap();
        let got: Vec<serde_json::Value> = read_all(vec![spec(&out, Format::Csv)], SourceOptions::default(), None)
            .iter()
            .map(|r| serde_json::from_slice(r.data.as_ref().unwrap()).unwrap())
            .collect();
        prop_assert_eq!(got, want);
    }
}

#[test]
fn write_atomic_replaces_and_leaves_no_temporary_files() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("summary.json");
    herdsman_io::write_atomic(&p, b"old").unwrap();
    herdsman_io::write_atomic(&p, b"new").unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), b"new");
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("summary.json")]);
    let err = herdsman_io::write_atomic(&dir.path().join("no/such/dir/x.json"), b"x").unwrap_err();
    assert!(err.to_string().contains("x.json"), "{err}");
}

#[test]
fn write_atomic_writes_through_a_symlink_and_keeps_it() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("real.json");
    let link = dir.path().join("link.json");
    std::fs::write(&target, b"old").unwrap();
    std::os::unix::fs::symlink("real.json", &link).unwrap();
    herdsman_io::write_atomic(&link, b"new").unwrap();
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(std::fs::read(&target).unwrap(), b"new");
}

#[test]
fn an_incomplete_output_never_replaces_an_existing_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    std::fs::write(&out, b"precious\n").unwrap();
    let mut s = Sink::open(&out, OutputFormat::Jsonl, None).unwrap();
    s.write_record(br#"{"a":1}"#).unwrap();
    assert_eq!(
        s.finish_incomplete().unwrap(),
        herdsman_io::Kept::Partial(partial_path(&out))
    );
    assert_eq!(std::fs::read(&out).unwrap(), b"precious\n");
    assert_eq!(std::fs::read(partial_path(&out)).unwrap(), b"{\"a\":1}\n");

    let missing = dir.path().join("new.jsonl");
    let mut s = Sink::open(&missing, OutputFormat::Jsonl, None).unwrap();
    s.write_record(br#"{"a":2}"#).unwrap();
    assert_eq!(
        s.finish_incomplete().unwrap(),
        herdsman_io::Kept::Published(missing.clone())
    );
    assert_eq!(std::fs::read(&missing).unwrap(), b"{\"a\":2}\n");
    assert!(!partial_path(&missing).exists());
}

#[test]
fn a_directory_is_not_an_output() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        Sink::open(dir.path(), OutputFormat::Jsonl, None).err(),
        Some(SinkError::IsDir { .. })
    ));
    assert!(dir.path().is_dir());
}
