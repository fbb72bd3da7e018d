//! Parquet through the public API: a sink cut back to a commit and resumed writes the same
//! bytes as one never interrupted; a source resumed at any record's position (inside a row
//! group) reads on exactly; a schema is enforced record by record.

use crate::common;

use common::*;
use herdsman_io::{
    published_extra_len, Format, OutputFormat, ParquetOptions, ParquetSchema, Sink, SourceOptions,
};

/// Records with nested and null values; every key present, so that they read back as given.
fn records(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let tags = if i % 5 == 4 {
                "null".to_string()
            } else {
                format!("[{}]", (0..i % 3).map(|j| format!("\"t{j}\"")).collect::<Vec<_>>().join(","))
            };
            let score = if i % 4 == 0 {
                "null".to_string()
            } else {
                format!("{}.5", i)
            };
            format!(
                r#"{{"id":{i},"name":"n{i} \"q\"","score":{score},"tags":{tags},"p":{{"x":{i},"ok":{}}}}}"#,
                i % 2 == 0
            )
        })
        .collect()
}

fn opts(row_group_size: usize) -> OutputFormat {
    OutputFormat::Parquet(ParquetOptions {
        row_group_size,
        ..ParquetOptions::default()
    })
}

/// Writes `recs` in chunks of `chunk`, ending each chunk, and publishes the file.
fn write_all(path: &std::path::Path, recs: &[String], chunk: usize, fmt: &OutputFormat) {
    let mut s = Sink::open(path, fmt.clone(), None).unwrap();
    for c in recs.chunks(chunk) {
        for r in c {
            s.write_record(r.as_bytes()).unwrap();
        }
        s.end_chunk().unwrap();
    }
    s.finish().unwrap();
}

#[test]
fn a_resumed_parquet_output_is_byte_identical_to_an_uninterrupted_one() {
    let dir = tempfile::tempdir().unwrap();
    let recs = records(53);
    let fmt = opts(4);
    let whole = dir.path().join("whole.parquet");
    write_all(&whole, &recs, 7, &fmt);

    let cut = dir.path().join("cut.parquet");
    let chunks: Vec<&[String]> = recs.chunks(7).collect();
    let mut s = Sink::open(&cut, fmt.clone(), None).unwrap();
    for c in &chunks[..3] {
        for r in *c {
            s.write_record(r.as_bytes()).unwrap();
        }
        s.end_chunk().unwrap();
    }
    s.sync().unwrap();
    let committed = s.offset();
    // Written after the commit and lost with the crash: a whole chunk and half of another.
    for r in chunks[3].iter().chain(&chunks[4][..3]) {
        s.write_record(r.as_bytes()).unwrap();
    }
    s.end_chunk().unwrap();
    s.sync().unwrap();
    drop(s);
    let mut s = Sink::open(&cut, fmt.clone(), Some(committed)).unwrap();
    for c in &chunks[3..] {
        for r in *c {
            s.write_record(r.as_bytes()).unwrap();
        }
        s.end_chunk().unwrap();
    }
    let before_footer = s.offset();
    s.finish().unwrap();
    let (a, b) = (std::fs::read(&whole).unwrap(), std::fs::read(&cut).unwrap());
    assert!(
        a == b,
        "the resumed file differs from the uninterrupted one"
    );
    assert_eq!(
        before_footer + published_extra_len(&cut, &fmt),
        b.len() as u64
    );

    // It reads back as written.
    let got: Vec<String> = read_all(
        vec![spec(&cut, Format::Parquet)],
        SourceOptions::default(),
        None,
    )
    .iter()
    .map(text)
    .collect();
    assert_eq!(got, recs);
}

#[test]
fn a_parquet_source_resumes_at_any_record_inside_its_row_group() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("in.parquet");
    let recs = records(23);
    // Chunks of 10 in row groups of at most 4: 4, 4, 2, 4, 4, 2, 3.
    write_all(&path, &recs, 10, &opts(4));
    let specs = || vec![spec(&path, Format::Parquet), spec(&path, Format::Parquet)];
    let all = read_all(specs(), SourceOptions::default(), None);
    assert_eq!(all.len(), 46);
    assert_eq!(
        all.iter()
            .take(11)
            .map(|r| (r.pos.byte_offset, r.pos.line))
            .collect::<Vec<_>>(),
        [
            (0, 1),
            (0, 2),
            (0, 3),
            (0, 4),
            (1, 1),
            (1, 2),
            (1, 3),
            (1, 4),
            (2, 1),
            (2, 2),
            (3, 1)
        ]
    );
    for k in 0..all.len() {
        let p = all[k].pos;
        let back = herdsman_io::Position::from_token(p.file_index, p.seq, &p.token()).unwrap();
        let rest = read_all(specs(), SourceOptions::default(), Some(back));
        assert_eq!(rest, all[k..], "resumed at record {k}");
    }
    // --columns: only those keys, in that order.
    let only = SourceOptions {
        columns: Some(vec!["p".into(), "id".into()]),
        ..SourceOptions::default()
    };
    let first = text(&read_all(vec![spec(&path, Format::Parquet)], only, None)[0]);
    assert_eq!(first, r#"{"p":{"x":0,"ok":true},"id":0}"#);
}

#[test]
fn a_schema_is_enforced_record_by_record() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("o.parquet");
    let schema = ParquetSchema::parse(
        "id: int32 not null\nprice: decimal128(5, 2)\nat: timestamp[ms, tz=UTC]\nday: date32\n",
    )
    .unwrap();
    let fmt = OutputFormat::Parquet(ParquetOptions {
        schema: Some(schema),
        ..ParquetOptions::default()
    });
    let mut s = Sink::open(&out, fmt, None).unwrap();
    for (rec, why) in [
        (r#"{"price":"1.00"}"#, "`id` is null or missing"),
        (
            r#"{"id":1,"price":"1234.5"}"#,
            "does not fit decimal128(5, 2)",
        ),
        (r#"{"id":3000000000}"#, "out of range for the int32"),
        (r#"{"id":1,"at":"yesterday"}"#, "not an RFC 3339 timestamp"),
        (r#"{"id":1,"day":"2024-02-30"}"#, "not a date"),
        (r#"{"id":1,"other":2}"#, "`other` is not a column"),
        (r#"[1]"#, "takes JSON objects"),
    ] {
        let e = s.write_record(rec.as_bytes()).unwrap_err().to_string();
        assert!(e.contains(why), "{rec}: {e}");
    }
    s.write_record(
        br#"{"id":1,"price":"-123.45","at":"2024-01-31T12:00:00.5+01:00","day":"2024-02-29"}"#,
    )
    .unwrap();
    s.write_record(br#"{"id":2,"price":7}"#).unwrap();
    s.end_chunk().unwrap();
    s.finish().unwrap();
    let got: Vec<String> = read_all(
        vec![spec(&out, Format::Parquet)],
        SourceOptions::default(),
        None,
    )
    .iter()
    .map(text)
    .collect();
    assert_eq!(
        got,
        [
            r#"{"id":1,"price":"-123.45","at":"2024-01-31T11:00:00.500Z","day":"2024-02-29"}"#,
            r#"{"id":2,"price":"7.00","at":null,"day":null}"#,
        ]
    );
}
