//! Inputs read exactly: a file that changes while it is read is reported, CSV headers keep
//! their bytes or fail clearly, an unclosed quote names the line where it opened, and the
//! record size limit says how to raise it.

use crate::common;

use std::io::Write;

use common::*;
use herdsman_io::{Format, RecordErrorKind, Source, SourceError, SourceOptions};

fn write(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let p = dir.path().join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// Options with a tiny read buffer, so the source has read only the start of a file when it
/// yields its first record.
fn small_buffer() -> SourceOptions {
    SourceOptions {
        read_buffer_bytes: 16,
        ..SourceOptions::default()
    }
}

fn numbered_lines(n: usize) -> String {
    (0..n).map(|i| format!("line {i:04}\n")).collect()
}

/// Reads every item of a source, records and the final error if any.
fn drain(src: Source) -> (usize, Option<SourceError>) {
    let mut records = 0;
    for item in src {
        match item {
            Ok(_) => records += 1,
            Err(e) => return (records, Some(e)),
        }
    }
    (records, None)
}

#[test]
fn an_input_appended_to_while_it_is_read_is_reported() {
    for format in [Format::Lines, Format::Jsonl, Format::Csv] {
        let dir = tempfile::tempdir().unwrap();
        let body = match format {
            Format::Csv => format!("h\n{}", numbered_lines(100)),
            Format::Jsonl => (0..100).map(|i| format!("{i}\n")).collect(),
            Format::Lines => numbered_lines(100),
            Format::Parquet | Format::Postgres | Format::Sqlite => {
                unreachable!("only the text formats are listed")
            }
        };
        let p = write(&dir, "grow.txt", body.as_bytes());
        let mut src = Source::open(vec![spec(&p, format)], small_buffer(), None).unwrap();
        assert!(src.next().unwrap().unwrap().data.is_ok());
        let mut f = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(b"7\n8\n").unwrap();
        drop(f);
        let (_, err) = drain(src);
        let err = err.unwrap_or_else(|| panic!("{format}: the growth went unnoticed"));
        assert!(matches!(err, SourceError::Changed { .. }), "{err}");
        let msg = err.to_string();
        assert!(
            msg.contains("grow.txt") && msg.contains("changed while it was read"),
            "{msg}"
        );
    }
}

#[test]
fn an_input_truncated_while_it_is_read_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(&dir, "shrink.txt", numbered_lines(100).as_bytes());
    let mut src = Source::open(vec![spec(&p, Format::Lines)], small_buffer(), None).unwrap();
    assert!(src.next().unwrap().unwrap().data.is_ok());
    std::fs::OpenOptions::new()
        .write(true)
        .open(&p)
        .unwrap()
        .set_len(100)
        .unwrap();
    let (records, err) = drain(src);
    assert!(records < 99, "read {records} records of a truncated file");
    let err = err.expect("the truncation went unnoticed");
    assert!(matches!(err, SourceError::Changed { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("shrink.txt") && msg.contains("1000 bytes"),
        "{msg}"
    );
}

#[test]
fn a_compressed_input_rewritten_while_it_is_read_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("z.txt.gz");
    let gz = |n: usize| {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(numbered_lines(n).as_bytes()).unwrap();
        e.finish().unwrap()
    };
    std::fs::write(&p, gz(200)).unwrap();
    let mut src = Source::open(vec![spec(&p, Format::Lines)], small_buffer(), None).unwrap();
    assert!(src.next().unwrap().unwrap().data.is_ok());
    // Another complete member appended: a valid, longer file.
    let mut f = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
    f.write_all(&gz(3)).unwrap();
    drop(f);
    let (_, err) = drain(src);
    let err = err.expect("the change went unnoticed");
    assert!(matches!(err, SourceError::Changed { .. }), "{err}");
}

#[test]
fn an_unchanged_input_and_a_resumed_one_read_without_complaint() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(&dir, "still.txt", numbered_lines(50).as_bytes());
    let (n, err) =
        drain(Source::open(vec![spec(&p, Format::Lines)], small_buffer(), None).unwrap());
    assert_eq!((n, err.map(|e| e.to_string())), (50, None));
    let mut src = Source::open(vec![spec(&p, Format::Lines)], small_buffer(), None).unwrap();
    for _ in 0..10 {
        src.next().unwrap().unwrap();
    }
    let at = src.next_position();
    let (n, err) =
        drain(Source::open(vec![spec(&p, Format::Lines)], small_buffer(), Some(at)).unwrap());
    assert_eq!((n, err.map(|e| e.to_string())), (40, None));
}

#[test]
fn a_fifo_input_is_not_taken_for_a_changed_file() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("pipe.txt");
    let st = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(st.success());
    let writer = {
        let fifo = fifo.clone();
        std::thread::spawn(move || {
            std::fs::write(&fifo, numbered_lines(30)).unwrap();
        })
    };
    let (n, err) =
        drain(Source::open(vec![spec(&fifo, Format::Lines)], small_buffer(), None).unwrap());
    writer.join().unwrap();
    assert_eq!((n, err.map(|e| e.to_string())), (30, None));
}

#[test]
fn csv_header_names_keep_their_bytes() {
    let dir = tempfile::tempdir().unwrap();
    // Spaces kept, odd but valid UTF-8 (a zero-width space, an emoji, a combining accent),
    // a quoted name holding a comma, quote and newline, and repeated names: a name that
    // appears once keeps its bytes even when a repeat of another name would have taken it.
    let header = " id ,\u{200b}x\u{1F600}e\u{301},\"a,\"\"b\"\"\nc\",a,a,a.1,\u{feff}z\n";
    let p = write(
        &dir,
        "odd.csv",
        format!("{header}1,2,3,4,5,6,7\n").as_bytes(),
    );
    let mut src =
        Source::open(vec![spec(&p, Format::Csv)], SourceOptions::default(), None).unwrap();
    let names = [
        " id ",
        "\u{200b}x\u{1F600}e\u{301}",
        "a,\"b\"\nc",
        "a",
        "a.2",
        "a.1",
        "\u{feff}z",
    ];
    assert_eq!(src.csv_header().unwrap(), names);
    let r = src.next().unwrap().unwrap();
    let obj: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(r.data.as_ref().unwrap()).unwrap();
    let keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    let mut sorted = names.to_vec();
    sorted.sort();
    let mut got = keys.clone();
    got.sort();
    assert_eq!(got, sorted);
    assert_eq!(obj["a.1"], "6");
    assert_eq!(obj["a.2"], "5");
}

#[test]
fn a_csv_header_that_is_not_utf8_is_one_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(&dir, "latin1.csv", b"id,caf\xe9\n1,2\n");
    let err = Source::open(vec![spec(&p, Format::Csv)], SourceOptions::default(), None)
        .err()
        .expect("a header that is not UTF-8 is refused");
    assert!(matches!(err, SourceError::HeaderNotUtf8 { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("latin1.csv") && msg.contains("not valid UTF-8") && msg.contains("column 2"),
        "{msg}"
    );
    // The same for a later input, before any record is read.
    let ok = write(&dir, "ok.csv", b"id\n1\n");
    let err = Source::open(
        vec![spec(&ok, Format::Csv), spec(&p, Format::Csv)],
        SourceOptions::default(),
        None,
    )
    .err()
    .expect("the second input's header is checked at open");
    assert!(matches!(err, SourceError::HeaderNotUtf8 { .. }), "{err}");
    assert!(err.to_string().contains("latin1.csv"), "{err}");
}

#[test]
fn an_unclosed_quote_names_the_line_where_it_opened() {
    let dir = tempfile::tempdir().unwrap();
    // The row starts on line 3 with a closed multi-line field; the quote that is never
    // closed opens on line 4.
    let mut body = String::from("a,b\n1,2\n\"x\ny\",\"open\n");
    for i in 0..20 {
        body.push_str(&format!("{i},{i}\n"));
    }
    let p = write(&dir, "q.csv", body.as_bytes());
    let recs = read_all(vec![spec(&p, Format::Csv)], SourceOptions::default(), None);
    assert_eq!(recs.len(), 2);
    let e = recs[1].data.as_ref().unwrap_err();
    assert_eq!(e.kind, RecordErrorKind::Csv);
    assert_eq!(recs[1].pos.line, 3);
    assert!(
        e.message.contains("q.csv:4: ") && e.message.contains("opened on line 4"),
        "{}",
        e.message
    );
    assert!(!e.message.contains(":24"), "{}", e.message);

    // Past the record size limit it is still reported as the unclosed quote it is.
    let opts = SourceOptions {
        max_record_bytes: 32,
        ..SourceOptions::default()
    };
    let recs = read_all(vec![spec(&p, Format::Csv)], opts, None);
    let e = recs[1].data.as_ref().unwrap_err();
    assert_eq!(e.kind, RecordErrorKind::Csv, "{}", e.message);
    assert!(e.message.contains("q.csv:4: "), "{}", e.message);

    // In the header, the same.
    let h = write(&dir, "h.csv", b"a,\"b\n\nc,d\n1,2\n");
    let err = Source::open(vec![spec(&h, Format::Csv)], SourceOptions::default(), None)
        .err()
        .unwrap();
    assert!(err.to_string().contains("line 1"), "{err}");
}

#[test]
fn the_too_long_message_names_the_limit_and_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let long = "x".repeat(3000);
    let p = write(&dir, "l.txt", format!("{long}\n").as_bytes());
    let c = write(&dir, "l.csv", format!("a\n{long}\n").as_bytes());
    let opts = SourceOptions {
        max_record_bytes: 2048,
        ..SourceOptions::default()
    };
    let recs = read_all(
        vec![spec(&p, Format::Lines), spec(&c, Format::Csv)],
        opts.clone(),
        None,
    );
    for r in &recs {
        let e = r.data.as_ref().unwrap_err();
        assert_eq!(e.kind, RecordErrorKind::TooLong);
        assert!(
            e.message.contains("2 KiB") && e.message.contains("raise the limit"),
            "{}",
            e.message
        );
    }
    let h = write(&dir, "lh.csv", format!("{long}\n1\n").as_bytes());
    let err = Source::open(vec![spec(&h, Format::Csv)], opts, None)
        .err()
        .unwrap();
    assert!(
        matches!(err, SourceError::HeaderTooLong { limit: 2048, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("2 KiB"), "{err}");
}
