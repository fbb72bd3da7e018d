//! Source behaviour on well-formed and malformed CSV, JSONL and line inputs.

use crate::common;

use common::*;
use herdsman_io::{Format, Position, RecordErrorKind, Source, SourceOptions};
use std::io::Write;

fn write(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let p = dir.path().join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

#[test]
fn csv_objects_positions_and_quoted_newlines() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        &dir,
        "a.csv",
        b"\xef\xbb\xbfid,text\r\n1,\"two\r\nlines\"\r\n\r\n2,\"q \"\"x\"\"\"\r\n3,last",
    );
    let recs = read_all(vec![spec(&p, Format::Csv)], SourceOptions::default(), None);
    let got: Vec<_> = recs
        .iter()
        .map(|r| (text(r), r.pos.line, r.pos.byte_offset, r.pos.seq))
        .collect();
    assert_eq!(
        got,
        vec![
            (r#"{"id":"1","text":"two\r\nlines"}"#.to_string(), 2, 12, 0),
            (r#"{"id":"2","text":"q \"x\""}"#.to_string(), 5, 30, 1),
            (r#"{"id":"3","text":"last"}"#.to_string(), 6, 43, 2),
        ]
    );
}

#[test]
fn csv_type_inference() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(&dir, "a.csv", b"a,b,c,d,e\n1,-2.5,true,,007\n");
    let opts = SourceOptions {
        infer_types: true,
        ..Default::default()
    };
    let recs = read_all(vec![spec(&p, Format::Csv)], opts, None);
    assert_eq!(
        text(&recs[0]),
        r#"{"a":1,"b":-2.5,"c":true,"d":null,"e":"007"}"#
    );
}

#[test]
fn malformed_csv_rows_are_errors_with_lines_and_reading_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        &dir,
        "bad.csv",
        b"a,b\n1,2\n3\n4,\xff\n5,6,7\n8,9\n10,\"open\nnever closed\n",
    );
    let recs = read_all(vec![spec(&p, Format::Csv)], SourceOptions::default(), None);
    let summary: Vec<_> = recs
        .iter()
        .map(|r| {
            (
                r.pos.line,
                r.data
                    .as_ref()
                    .map_err(|e| e.kind)
                    .map(|d| String::from_utf8(d.clone()).unwrap()),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (2, Ok(r#"{"a":"1","b":"2"}"#.to_string())),
            (3, Err(RecordErrorKind::FieldCount)),
            (4, Err(RecordErrorKind::Utf8)),
            (5, Err(RecordErrorKind::FieldCount)),
            (6, Ok(r#"{"a":"8","b":"9"}"#.to_string())),
            (7, Err(RecordErrorKind::Csv)),
        ]
    );
    let e = recs[1].data.as_ref().unwrap_err();
    assert!(e.message.contains("bad.csv:3"), "{}", e.message);
    assert_eq!(e.raw, "3");
    let e = recs[5].data.as_ref().unwrap_err();
    assert!(
        e.message.contains("bad.csv:7") && e.message.contains("never closed"),
        "{}",
        e.message
    );
}

#[test]
fn oversized_records_are_errors_and_reading_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let long = "x".repeat(5000);
    let csv = format!("a,b\n1,2\n{long},\"{long}\"\n3,4\n");
    let p = write(&dir, "big.csv", csv.as_bytes());
    let jl = format!("1\n\"{long}\"\n2\n");
    let j = write(&dir, "big.jsonl", jl.as_bytes());
    let opts = SourceOptions {
        max_record_bytes: 1000,
        ..Default::default()
    };
    let recs = read_all(
        vec![spec(&p, Format::Csv), spec(&j, Format::Jsonl)],
        opts,
        None,
    );
    let kinds: Vec<_> = recs
        .iter()
        .map(|r| r.data.as_ref().err().map(|e| e.kind))
        .collect();
    assert_eq!(
        kinds,
        vec![
            None,
            Some(RecordErrorKind::TooLong),
            None,
            None,
            Some(RecordErrorKind::TooLong),
            None
        ]
    );
    assert_eq!(text(&recs[2]), r#"{"a":"3","b":"4"}"#);
    assert_eq!(recs[2].pos.line, 4);
    assert_eq!(text(&recs[5]), "2");
    assert_eq!(
        (recs[5].pos.line, recs[5].pos.file_index, recs[5].pos.seq),
        (3, 1, 5)
    );
}

#[test]
fn jsonl_validates_compacts_and_skips_blank_lines() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        &dir,
        "a.jsonl",
        b"{\"a\": [1, 2]}\r\n\n  \n{\"b\":\"x y\"}\n{bad}\n\"\xff\"\n[1] [2]\n7",
    );
    let recs = read_all(
        vec![spec(&p, Format::Jsonl)],
        SourceOptions::default(),
        None,
    );
    let got: Vec<_> = recs
        .iter()
        .map(|r| {
            (
                r.pos.line,
                r.data
                    .as_ref()
                    .map(|d| String::from_utf8(d.clone()).unwrap())
                    .map_err(|e| e.kind),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (1, Ok(r#"{"a":[1,2]}"#.to_string())),
            (4, Ok(r#"{"b":"x y"}"#.to_string())),
            (5, Err(RecordErrorKind::Json)),
            (6, Err(RecordErrorKind::Utf8)),
            (7, Err(RecordErrorKind::Json)),
            (8, Ok("7".to_string())),
        ]
    );
    assert!(recs[2]
        .data
        .as_ref()
        .unwrap_err()
        .message
        .starts_with(&format!("{}:5:", p.display())));
}

#[test]
fn lines_become_strings() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(&dir, "a.txt", b"hello \"w\"\r\n\nlast");
    let recs = read_all(
        vec![spec(&p, Format::Lines)],
        SourceOptions::default(),
        None,
    );
    let got: Vec<_> = recs.iter().map(text).collect();
    assert_eq!(got, vec![r#""hello \"w\"""#, r#""""#, r#""last""#]);
}

#[test]
fn multiple_files_continue_numbering_and_each_csv_has_its_header() {
    let dir = tempfile::tempdir().unwrap();
    let a = write(&dir, "a.csv", b"x\n1\n2\n");
    let b = write(&dir, "b.csv", b"y\n3\n");
    let recs = read_all(
        vec![spec(&a, Format::Csv), spec(&b, Format::Csv)],
        SourceOptions::default(),
        None,
    );
    let got: Vec<_> = recs
        .iter()
        .map(|r| (text(r), r.pos.file_index, r.pos.seq))
        .collect();
    assert_eq!(
        got,
        vec![
            (r#"{"x":"1"}"#.to_string(), 0, 0),
            (r#"{"x":"2"}"#.to_string(), 0, 1),
            (r#"{"y":"3"}"#.to_string(), 1, 2),
        ]
    );
}

#[test]
fn compressed_inputs_and_resume_inside_them() {
    let dir = tempfile::tempdir().unwrap();
    let mut data = String::from("id,v\n");
    for i in 0..2000 {
        data.push_str(&format!("{i},\"line\n{i}\"\n"));
    }
    let plain = write(&dir, "p.csv", data.as_bytes());
    let gz = dir.path().join("p.csv.gz");
    let mut enc = flate2::write::GzEncoder::new(
        std::fs::File::create(&gz).unwrap(),
        flate2::Compression::fast(),
    );
    enc.write_all(data.as_bytes()).unwrap();
    enc.finish().unwrap();
    let zst = dir.path().join("p.csv.zst");
    std::fs::write(&zst, zstd::encode_all(data.as_bytes(), 3).unwrap()).unwrap();
    let want = read_all(
        vec![spec(&plain, Format::Csv)],
        SourceOptions::default(),
        None,
    );
    assert_eq!(want.len(), 2000);
    for p in [&gz, &zst] {
        let fmt = Format::from_path(p).unwrap();
        let got = read_all(vec![spec(p, fmt)], SourceOptions::default(), None);
        assert_eq!(got, want);
        let at = want[1234].pos;
        let rest = read_all(vec![spec(p, fmt)], SourceOptions::default(), Some(at));
        assert_eq!(rest[..], want[1234..]);
    }
}

#[test]
fn next_position_resumes_after_the_last_record() {
    let dir = tempfile::tempdir().unwrap();
    let a = write(&dir, "a.jsonl", b"1\n\n2\n");
    let b = write(&dir, "b.jsonl", b"3\n4\n");
    let specs = vec![spec(&a, Format::Jsonl), spec(&b, Format::Jsonl)];
    let mut src = Source::open(specs.clone(), SourceOptions::default(), None).unwrap();
    assert_eq!(src.next_position(), Position::START);
    let mut all = Vec::new();
    let mut nexts = vec![src.next_position()];
    while let Some(r) = src.next() {
        all.push(r.unwrap());
        nexts.push(src.next_position());
    }
    assert_eq!(src.file_name(1), b.display().to_string());
    for (k, at) in nexts.iter().enumerate() {
        let rest = read_all(specs.clone(), SourceOptions::default(), Some(*at));
        assert_eq!(rest[..], all[k..], "resume at {at:?}");
    }
}

#[test]
fn missing_file_and_bad_resume_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.csv");
    let err = Source::open(
        vec![spec(&missing, Format::Csv)],
        SourceOptions::default(),
        None,
    )
    .err()
    .unwrap();
    assert!(err.to_string().contains("nope.csv"), "{err}");
    let a = write(&dir, "a.csv", b"x\n1\n");
    let beyond = Position {
        file_index: 0,
        byte_offset: 99,
        line: 3,
        seq: 1,
    };
    let err = Source::open(
        vec![spec(&a, Format::Csv)],
        SourceOptions::default(),
        Some(beyond),
    )
    .err()
    .unwrap();
    assert!(err.to_string().contains("resume"), "{err}");
}

#[test]
fn repeated_csv_header_names_get_suffixes() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(&dir, "dup.csv", b"a,a,,\n1,2,3,4\n");
    let mut src =
        Source::open(vec![spec(&p, Format::Csv)], SourceOptions::default(), None).unwrap();
    assert_eq!(src.csv_header().unwrap(), ["a", "a.1", "", ".1"]);
    let r = src.next().unwrap().unwrap();
    assert_eq!(text(&r), r#"{"a":"1","a.1":"2","":"3",".1":"4"}"#);
}

#[test]
fn sources_and_sinks_can_move_between_threads() {
    fn send<T: Send>() {}
    send::<Source>();
    send::<herdsman_io::Sink>();
    send::<herdsman_io::Record>();
}
