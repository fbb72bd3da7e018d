//! Property: records written as CSV with any delimiter read back as the same records, with
//! the same header, whatever their cells hold (the delimiter, quotes, CR, LF, edge spaces,
//! a byte order mark, empty cells).

use crate::common;

use common::*;
use herdsman_io::{Format, OutputFormat, Sink, SinkOptions, SourceOptions};
use proptest::prelude::*;
use serde_json::{Map, Value};

/// Cell text drawn from characters that stress CSV quoting.
fn cell() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            Just(","),
            Just(";"),
            Just("\t"),
            Just("|"),
            Just(" "),
            Just("\""),
            Just("\r"),
            Just("\n"),
            Just("\r\n"),
            Just("\u{feff}"),
            Just("a"),
            Just("é"),
            Just("#"),
            Just("x y"),
        ],
        0..6,
    )
    .prop_map(|parts| parts.concat())
}

/// A table: distinct column names, then rows of as many cells.
fn table() -> impl Strategy<Value = (Vec<String>, Vec<Vec<String>>)> {
    proptest::collection::hash_set(cell(), 1..5).prop_flat_map(|names| {
        let names: Vec<String> = names.into_iter().collect();
        let n = names.len();
        (
            Just(names),
            proptest::collection::vec(proptest::collection::vec(cell(), n), 1..6),
        )
    })
}

/// A record's compact JSON, keys in column order.
fn record(names: &[String], cells: &[String]) -> String {
    let fields: Vec<String> = names
        .iter()
        .zip(cells)
        .map(|(k, v)| {
            format!(
                "{}:{}",
                serde_json::to_string(k).unwrap(),
                serde_json::to_string(v).unwrap()
            )
        })
        .collect();
    format!("{{{}}}", fields.join(","))
}

proptest! {
    // A fixed seed: the same cases on every run and machine.
    #![proptest_config(ProptestConfig {
        cases: 256,
        rng_seed: proptest::test_runner::RngSeed::Fixed(0x05ee_dc5f),
        ..ProptestConfig::default()
    })]

    #[test]
    fn csv_written_with_any_delimiter_reads_back_the_same(
        (names, rows) in table(),
        delimiter in prop::sample::select(vec![b',', b';', b'\t', b'|', b' ', b'a', b':', b'#']),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("t.csv");
        let opts = SinkOptions { csv_delimiter: delimiter };
        let mut sink = Sink::open_with(&out, OutputFormat::Csv { columns: None }, None, &opts).unwrap();
        for r in &rows {
            sink.write_record(record(&names, r).as_bytes()).unwrap();
        }
        sink.finish().unwrap();

        let read = SourceOptions { csv_delimiter: delimiter, ..SourceOptions::default() };
        let mut src = herdsman_io::Source::open(vec![spec(&out, Format::Csv)], read.clone(), None).unwrap();
        prop_assert_eq!(src.csv_header().unwrap(), &names[..]);
        let mut back = Vec::new();
        for r in &mut src {
            let r = r.unwrap();
            let data = r.data.map_err(|e| e.message);
            prop_assert!(data.is_ok(), "a written row reads back as an error: {:?}", data);
            let obj: Map<String, Value> = serde_json::from_slice(&data.unwrap()).unwrap();
            back.push(obj);
        }
        let want: Vec<Map<String, Value>> = rows
            .iter()
            .map(|r| serde_json::from_str(&record(&names, r)).unwrap())
            .collect();
        prop_assert_eq!(back, want);
    }
}
