//! What herdsman writes for other programs to read keeps its shape: dead-letter entries with
//! their keys in the documented order and the record's own key order, and `herdsman status
//! --json` with its keys in a fixed order, whatever features serde_json is built with.

use crate::common;

use common::*;

/// The positions of `keys` (as `"key":` in compact JSON or `"key": ` pretty) in `text`, which
/// must be increasing.
fn assert_in_order(text: &str, keys: &[&str]) {
    let mut last = 0;
    for k in keys {
        let at = text[last..]
            .find(&format!("\"{k}\":"))
            .unwrap_or_else(|| panic!("`{k}` missing or out of order in {text}"));
        last += at + k.len() + 3;
    }
}

#[test]
fn dead_letter_entries_keep_the_documented_key_order_and_the_records_own() {
    let s = Scratch::new();
    s.write(
        "in.jsonl",
        "{\"z\":1,\"a\":\"ok\"}\n{\"z\":2,\"a\":\"bad\"}\n{\"z\":\n",
    );
    let out = s
        .herdsman()
        .args(["run", "-i", "in.jsonl", "-o", "out.jsonl", "-j", "1"])
        .args(["-x", "test {a} = ok"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let dead = s.read("out.failures.jsonl");
    let entries = lines(&dead);
    assert_eq!(entries.len(), 2, "{dead}");
    assert!(
        entries[0].starts_with(
            r#"{"record":{"z":2,"a":"bad"},"source":{"file":"in.jsonl","line":2,"record":2},"error":{"kind":"command_failed","message":""#
        ),
        "{dead}"
    );
    assert!(entries[0].ends_with(r#","attempts":1}"#), "{dead}");
    assert!(
        entries[1].starts_with(
            r#"{"record":null,"raw":"{\"z\":","source":{"file":"in.jsonl","line":3,"record":3},"error":{"kind":"input_json","message":""#
        ),
        "{dead}"
    );
    assert!(entries[1].ends_with(r#","attempts":1}"#), "{dead}");
    s.herdsman()
        .args(["failures", "out.jsonl"])
        .assert()
        .success()
        .stdout(predicates::str::contains(
            "in.jsonl:2 record 2: [command_failed]",
        ))
        .stdout(predicates::str::contains(
            "in.jsonl:3 record 3: [input_json]",
        ));
}

#[test]
fn status_json_keeps_its_key_order_and_names_options_by_their_flag_values() {
    let s = Scratch::new();
    s.write("in.csv", id_csv(3));
    s.job("cat", &["--protocol", "lines"]).assert().success();
    let out = s
        .herdsman()
        .args(["status", "out.jsonl", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    assert_in_order(
        &text,
        &[
            "state",
            "identity",
            "finished",
            "chunks",
            "records",
            "succeeded",
            "failed",
            "filtered",
            "outputs",
            "retries",
            "recovered_by_retry_failed",
            "summary",
            // The job's summary, in the order it was written.
            "ending",
            "exit_code",
            "total",
            "earlier",
            "this_run",
            "duration_s",
        ],
    );
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["identity"]["protocol"], "lines", "{text}");
    assert_eq!(v["identity"]["output_format"], "jsonl", "{text}");
}
