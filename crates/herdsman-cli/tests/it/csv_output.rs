//! CSV output through the real binary: --columns projects records, and records that are
//! not JSON objects become dead letters.

use crate::common;

use common::*;
use serde_json::json;

#[test]
fn columns_project_every_record_in_the_given_order() {
    let s = Scratch::new();
    s.write("in.csv", "id,value,note\n0,10,a\n1,20,b\n5,30,c\n");
    let out = s
        .herdsman()
        .args([
            "run",
            "-i",
            "in.csv",
            "-w",
            &py_worker("shapes.py", &["lines"]),
        ])
        .args(["-o", "out.csv", "--columns", "value,id,missing"])
        .args(["--summary-json", "s.json", "--progress", "none"])
        .output()
        .unwrap();
    // id 1 is answered with `3`: the only failure.
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(s.read("out.csv"), "value,id,missing\n10,0,\n30,5,\n");
    check_accounting(&s, "s.json", None, "out.failures.jsonl");
}

#[test]
fn answers_that_are_not_objects_are_dead_letters_with_csv_output() {
    let s = Scratch::new();
    s.write("in.csv", "id,v\n0,a\n1,b\n2,c\n3,d\n4,e\n5,f\n");
    let out = s
        .herdsman()
        .args([
            "run",
            "-i",
            "in.csv",
            "-w",
            &py_worker("shapes.py", &["lines"]),
        ])
        .args([
            "-o",
            "out.csv",
            "--summary-json",
            "s.json",
            "--progress",
            "none",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(s.read("out.csv"), "id,v,extra\n0,a,x\n5,f,x\n");
    let dead = json_lines(&s.read("out.failures.jsonl"));
    let ids: Vec<&str> = dead
        .iter()
        .map(|d| d["record"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["1", "2", "3", "4"]);
    for d in &dead {
        assert_eq!(d["error"]["kind"], json!("output_rejected"), "{d}");
        let msg = d["error"]["message"].as_str().unwrap();
        assert!(msg.contains("not a JSON object"), "{msg}");
    }
    let sum = check_accounting(&s, "s.json", None, "out.failures.jsonl");
    assert_eq!(sum["total"]["failed"], json!(4));
    assert_eq!(sum["total"]["succeeded"], json!(2));
}

#[test]
fn a_record_whose_outputs_cannot_all_be_written_writes_none_of_them() {
    let s = Scratch::new();
    s.write("in.csv", "id,v\n0,a\n1,b\n2,c\n");
    let out = s
        .herdsman()
        .args([
            "run",
            "-i",
            "in.csv",
            "-w",
            &py_worker("shapes.py", &["framed"]),
        ])
        .args(["--protocol", "framed", "-o", "out.csv"])
        .args(["--summary-json", "s.json", "--progress", "none"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    // Record 1's first output is a fine object, but its second is `3`: neither is written.
    assert_eq!(s.read("out.csv"), "id,v\n0,a\n2,c\n");
    let dead = json_lines(&s.read("out.failures.jsonl"));
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0]["record"], json!({"id": "1", "v": "b"}));
    let sum = check_accounting(&s, "s.json", None, "out.failures.jsonl");
    assert_eq!(sum["total"]["outputs"], json!(2));
}

#[test]
fn retry_failed_keeps_an_answer_that_is_not_an_object_as_a_dead_letter() {
    let s = Scratch::new();
    s.write("in.csv", "id,v\n0,a\n1,b\n5,c\n");
    let run = |extra: &[&str]| {
        s.herdsman()
            .args([
                "run",
                "-i",
                "in.csv",
                "-w",
                &py_worker("shapes.py", &["lines"]),
            ])
            .args([
                "-o",
                "out.csv",
                "--summary-json",
                "s.json",
                "--progress",
                "none",
            ])
            .args(extra)
            .output()
            .unwrap()
    };
    let out = run(&[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let before = s.read("out.csv");
    // The retry pass gets `3` again for record 1: it stays a dead letter, the pass finishes.
    let out = run(&["--retry-failed"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(!err.contains("cannot write the output"), "{err}");
    assert_eq!(s.read("out.csv"), before);
    let dead = json_lines(&s.read("out.failures.jsonl"));
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0]["record"], json!({"id": "1", "v": "b"}));
    assert_eq!(dead[0]["error"]["kind"], json!("output_rejected"));
    let sum = check_accounting(&s, "s.json", None, "out.failures.jsonl");
    assert_eq!(sum["total"]["failed"], json!(1));
}
