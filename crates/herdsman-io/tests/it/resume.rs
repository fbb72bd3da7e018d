//! Property: resuming at any position from an earlier read yields exactly the records and
//! positions an uninterrupted read yields from there, for random inputs with quoted newlines,
//! blank lines, CRLF, malformed rows and tiny read buffers.

use crate::common;

use common::*;
use herdsman_io::{Format, InputSpec, Position, Record, Source, SourceOptions};
use proptest::prelude::*;

/// One piece of a CSV field.
fn field() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            Just("a".to_string()),
            Just("bc".to_string()),
            Just(",".to_string()),
            Just("\"".to_string()),
            Just("\n".to_string()),
            Just("\r\n".to_string()),
            Just("é".to_string()),
            Just(" ".to_string()),
        ],
        0..4,
    )
    .prop_map(|v| v.concat())
}

fn csv_cell(s: &str, force_quote: bool) -> String {
    if force_quote || s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// A CSV file: header, rows (some with the wrong field count), blank lines, random line ends,
/// sometimes garbage and an unclosed quote at the end.
fn csv_file() -> impl Strategy<Value = Vec<u8>> {
    (
        1usize..4,
        proptest::collection::vec(
            (
                proptest::collection::vec((field(), any::<bool>()), 1..5),
                0u8..10,
            ),
            0..12,
        ),
        any::<bool>(),
        any::<bool>(),
        0u8..4,
    )
        .prop_map(|(ncols, rows, crlf, bom, tail)| {
            let eol = if crlf { "\r\n" } else { "\n" };
            let mut out = String::new();
            if bom {
                out.push('\u{feff}');
            }
            let header: Vec<String> = (0..ncols).map(|i| format!("c{i}")).collect();
            out.push_str(&header.join(","));
            out.push_str(eol);
            for (cells, kind) in rows {
                let line = match kind {
                    0 => String::new(),
                    1 => "x\"y,\"z".to_string(),
                    _ => {
                        let mut cells = cells;
                        if kind > 3 {
                            cells.resize(ncols, (String::new(), false));
                        }
                        cells
                            .iter()
                            .map(|(s, q)| csv_cell(s, *q))
                            .collect::<Vec<_>>()
                            .join(",")
                    }
                };
                out.push_str(&line);
                out.push_str(eol);
            }
            match tail {
                1 => out.push_str("last,row"),
                2 => out.push_str("\"never closed\n,"),
                _ => {}
            }
            out.into_bytes()
        })
}

fn text_file() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(
        prop_oneof![
            Just(&b"{\"a\": 1}"[..]),
            Just(&b"[1,2]"[..]),
            Just(&b""[..]),
            Just(&b"  "[..]),
            Just(&b"{bad"[..]),
            Just(&b"\"\xff\""[..]),
            Just(&b"7\r"[..]),
        ],
        0..10,
    )
    .prop_map(|lines| {
        let mut out = Vec::new();
        for l in lines {
            out.extend_from_slice(l);
            out.push(b'\n');
        }
        out
    })
}

fn read_with_positions(
    specs: &[InputSpec],
    opts: &SourceOptions,
    at: Option<Position>,
) -> (Vec<Record>, Vec<Position>) {
    let mut src = Source::open(specs.to_vec(), opts.clone(), at).unwrap();
    let mut recs = Vec::new();
    let mut nexts = vec![src.next_position()];
    while let Some(r) = src.next() {
        recs.push(r.unwrap());
        nexts.push(src.next_position());
    }
    (recs, nexts)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn resume_is_identical(
        csvs in proptest::collection::vec(csv_file(), 1..3),
        jsonl in text_file(),
        lines in text_file(),
        buf in 4usize..64,
        pick in any::<prop::sample::Index>(),
        use_next in any::<bool>(),
        zstd_first in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut specs = Vec::new();
        for (i, c) in csvs.iter().enumerate() {
            let p = if i == 0 && zstd_first {
                let p = dir.path().join(format!("f{i}.csv.zst"));
                std::fs::write(&p, zstd::encode_all(&c[..], 1).unwrap()).unwrap();
                p
            } else {
                let p = dir.path().join(format!("f{i}.csv"));
                std::fs::write(&p, c).unwrap();
                p
            };
            specs.push(spec(&p, Format::Csv));
        }
        let j = dir.path().join("j.jsonl");
        std::fs::write(&j, &jsonl).unwrap();
        specs.push(spec(&j, Format::Jsonl));
        let l = dir.path().join("l.txt");
        std::fs::write(&l, &lines).unwrap();
        specs.push(spec(&l, Format::Lines));

        let small = SourceOptions { read_buffer_bytes: buf, ..Default::default() };
        let (all, nexts) = read_with_positions(&specs, &small, None);
        // The buffer size changes nothing.
        let big = read_all(specs.clone(), SourceOptions::default(), None);
        prop_assert_eq!(&big, &all);
        // Positions are strictly increasing and seq is dense.
        for (k, r) in all.iter().enumerate() {
            prop_assert_eq!(r.pos.seq, k as u64);
        }
        for w in all.windows(2) {
            prop_assert!((w[0].pos.file_index, w[0].pos.byte_offset) < (w[1].pos.file_index, w[1].pos.byte_offset));
        }
        let k = pick.index(all.len() + 1);
        let at = if use_next || k == all.len() { nexts[k] } else { all[k].pos };
        let (rest, rest_nexts) = read_with_positions(&specs, &small, Some(at));
        prop_assert_eq!(&rest[..], &all[k..]);
        prop_assert_eq!(&rest_nexts[1..], &nexts[k + 1..]);
    }
}

#[test]
fn resume_at_every_record_of_a_fixed_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.csv");
    std::fs::write(
        &p,
        b"a,b\r\n1,\"x\r\ny\"\r\n\r\n2,3\r\nbad\r\n\"q\"\"\",4\r\n5,\"open",
    )
    .unwrap();
    let specs = vec![spec(&p, Format::Csv)];
    let (all, nexts) = read_with_positions(&specs, &SourceOptions::default(), None);
    assert_eq!(all.len(), 5);
    for k in 0..=all.len() {
        for at in [nexts[k]].into_iter().chain(all.get(k).map(|r| r.pos)) {
            let (rest, _) = read_with_positions(&specs, &SourceOptions::default(), Some(at));
            assert_eq!(rest[..], all[k..], "resume at {at:?}");
        }
    }
}
