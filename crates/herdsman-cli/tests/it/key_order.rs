//! The key order of a record written by a transform is kept byte for byte: a command's
//! pretty-printed JSON compacted onto one line (`-x`), an object field substituted into a
//! command, and a worker's JSON lines (`-w`), all with keys out of alphabetical order. And
//! no crate turns on `serde_json`'s `preserve_order` feature, which Cargo unifies across
//! every crate built together and which would change other crates' output.

use crate::common;

use common::*;

#[test]
fn a_commands_pretty_json_is_compacted_in_its_own_key_order() {
    let s = Scratch::new();
    s.write("in.jsonl", "{\"id\":1}\n{\"id\":2}\n");
    s.herdsman()
        .args(["run", "-i", "in.jsonl", "-o", "out.jsonl", "-j", "2"])
        .args(["--summary-json", "s.json", "--progress", "none", "--"])
        .args([
            "printf",
            // Braces doubled: a literal brace in a template.
            "{{\n  \"zeta\": %s,\n  \"alpha\": {{\"y\": [1, {{\"q\": 2, \"b\": 3}}], \"b\": 2.5}},\n  \"mid\": \"x\"\n}}\n",
            "{id}",
        ])
        .assert()
        .success();
    assert_eq!(
        s.read("out.jsonl"),
        "{\"zeta\":1,\"alpha\":{\"y\":[1,{\"q\":2,\"b\":3}],\"b\":2.5},\"mid\":\"x\"}\n\
         {\"zeta\":2,\"alpha\":{\"y\":[1,{\"q\":2,\"b\":3}],\"b\":2.5},\"mid\":\"x\"}\n"
    );
    s.accounting();
}

#[test]
fn an_object_field_is_substituted_in_the_records_key_order() {
    let s = Scratch::new();
    s.write(
        "in.jsonl",
        "{\"id\":1,\"obj\":{\"z\":1,\"a\":{\"y\":true,\"c\":null}}}\n",
    );
    s.herdsman()
        .args(["run", "-i", "in.jsonl", "-o", "out.jsonl"])
        .args(["--summary-json", "s.json", "--progress", "none", "--"])
        .args(["printf", "%s\n", "{obj}"])
        .assert()
        .success();
    assert_eq!(
        s.read("out.jsonl"),
        "{\"z\":1,\"a\":{\"y\":true,\"c\":null}}\n"
    );
    s.accounting();
}

#[test]
fn a_workers_json_lines_keep_their_key_order() {
    let s = Scratch::new();
    let input = "{\"zeta\":1,\"alpha\":{\"y\":2,\"b\":[3,{\"k\":4,\"a\":5}]},\"mid\":\"x\"}\n\
                 {\"zeta\":2,\"beta\":null,\"alpha\":0}\n";
    s.write("in.jsonl", input);
    s.herdsman()
        .args([
            "run",
            "-i",
            "in.jsonl",
            "-o",
            "out.jsonl",
            "-w",
            "cat",
            "-j",
            "2",
        ])
        .args(["--summary-json", "s.json", "--progress", "none"])
        .assert()
        .success();
    assert_eq!(s.read("out.jsonl"), input);
    s.accounting();
}

#[test]
fn no_crate_turns_on_serde_jsons_preserve_order() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut manifests = vec![root.join("Cargo.toml")];
    for entry in std::fs::read_dir(root.join("crates")).expect("crates/") {
        let m = entry.expect("a crate").path().join("Cargo.toml");
        if m.exists() {
            manifests.push(m);
        }
    }
    assert!(manifests.len() > 3, "{manifests:?}");
    for m in manifests {
        let text = std::fs::read_to_string(&m).expect("a manifest");
        let features: Vec<&str> = text
            .lines()
            .map(|l| l.split('#').next().unwrap_or(""))
            .filter(|l| l.contains("preserve_order"))
            .collect();
        assert!(
            features.is_empty(),
            "{} turns on preserve_order: {features:?}",
            m.display()
        );
    }
}
