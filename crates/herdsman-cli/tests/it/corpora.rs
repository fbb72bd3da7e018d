//! The public corpora (csv-spectrum, JSONTestSuite) through the real binary with `cat` as
//! the worker. Skipped with a note when `../shared/corpora` is not beside the checkout.

use crate::common;

use std::path::PathBuf;

use common::*;
use serde_json::Value;

fn corpora() -> Option<PathBuf> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpora");
    if p.is_dir() {
        Some(p)
    } else {
        eprintln!("note: {} is missing; corpus test skipped", p.display());
        None
    }
}

#[test]
fn csv_spectrum_through_cat_gives_the_expected_objects() {
    let Some(root) = corpora() else { return };
    let mut checked = 0;
    for entry in std::fs::read_dir(root.join("csv-spectrum/csvs")).unwrap() {
        let csv = entry.unwrap().path();
        let name = csv.file_stem().unwrap().to_string_lossy().into_owned();
        // Wrong upstream: its expected file describes other data.
        if name == "location_coordinates" {
            continue;
        }
        let expected_path = root.join("csv-spectrum/json").join(format!("{name}.json"));
        let expected: Vec<Value> =
            serde_json::from_str(&std::fs::read_to_string(&expected_path).unwrap()).unwrap();
        let s = Scratch::new();
        let out = s
            .herdsman()
            .args(["run", "-i"])
            .arg(&csv)
            .args(["-w", "cat", "-o", "out.jsonl", "--summary-json", "s.json"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{name}: {}", stderr(&out));
        assert_eq!(json_lines(&s.read("out.jsonl")), expected, "{name}");
        check_accounting(&s, "s.json", Some("out.jsonl"), "out.failures.jsonl");
        checked += 1;
    }
    assert!(checked >= 10, "only {checked} csv-spectrum files found");
}

#[test]
fn json_test_suite_as_jsonl_passes_y_and_dead_letters_n() {
    let Some(root) = corpora() else { return };
    let mut input = Vec::new();
    let mut expect_ok = 0u64;
    let mut expect_fail = 0u64;
    let mut names = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(root.join("JSONTestSuite/test_parsing"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for path in files {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let bytes = std::fs::read(&path).unwrap();
        if bytes.contains(&b'\n') || bytes.contains(&b'\r') || bytes.is_empty() {
            continue;
        }
        // A line of only whitespace is a blank line in JSONL, not a document.
        if bytes.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match &name[..2] {
            "y_" => expect_ok += 1,
            "n_" => expect_fail += 1,
            "i_" => {}
            _ => continue,
        }
        names.push(name);
        input.extend_from_slice(&bytes);
        input.push(b'\n');
    }
    let s = Scratch::new();
    s.write("suite.jsonl", &input);
    let out = s
        .herdsman()
        .args(["run", "-i", "suite.jsonl", "-w", "cat", "-o", "out.jsonl"])
        .args(["--summary-json", "s.json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let sum = check_accounting(&s, "s.json", Some("out.jsonl"), "out.failures.jsonl");
    let dead = json_lines(&s.read("out.failures.jsonl"));
    // Every n_ line is dead-lettered, every y_ line passes; i_ lines may go either way.
    let failed_names: Vec<&str> = dead
        .iter()
        .map(|d| names[d["source"]["line"].as_u64().unwrap() as usize - 1].as_str())
        .collect();
    assert!(
        failed_names.iter().all(|n| !n.starts_with("y_")),
        "{failed_names:?}"
    );
    let n_failed = failed_names.iter().filter(|n| n.starts_with("n_")).count() as u64;
    assert_eq!(n_failed, expect_fail, "some n_ documents were accepted");
    assert!(sum["total"]["succeeded"].as_u64().unwrap() >= expect_ok);
}
