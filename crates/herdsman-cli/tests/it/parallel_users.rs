//! What a GNU parallel or xargs user types first: their flags are accepted with the same
//! meaning or refused with a message that names herdsman's flag, no suggestion points at a
//! flag that throws work away, and `--help`, `herdsman man` and the plain progress line teach
//! the rest.

use crate::common;

use common::*;
use predicates::prelude::*;

fn entries(s: &Scratch) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(s.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn arguments_after_triple_colon_are_the_input_one_record_each() {
    let s = Scratch::new();
    s.herdsman()
        .args([
            "run",
            "-w",
            "cat",
            "--progress",
            "none",
            ":::",
            "a b",
            "c",
            "-d",
        ])
        .assert()
        .success()
        .stdout("a b\nc\n-d\n");
    s.herdsman()
        .args([
            "run",
            "-x",
            "echo {}",
            "--progress",
            "none",
            ":::",
            "1",
            "2",
            "3",
        ])
        .assert()
        .success()
        .stdout("1\n2\n3\n");
    assert!(entries(&s).is_empty(), "{:?}", entries(&s));
}

#[test]
fn triple_colon_and_an_input_file_together_are_refused() {
    let s = Scratch::new();
    s.write("in.txt", "x\n");
    s.herdsman()
        .args(["run", "-i", "in.txt", "-w", "cat", ":::", "a"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(":::").and(predicate::str::contains("drop -i")));
}

#[test]
fn keep_order_and_dash_p_are_accepted_as_gnu_parallel_means_them() {
    let s = Scratch::new();
    s.herdsman()
        .args(["run", "-k", "-P", "2", "-w", "cat", "--progress", "none"])
        .args([":::", "1", "2", "3"])
        .assert()
        .success()
        .stdout("1\n2\n3\n");
    for flag in ["--bar", "--eta"] {
        s.herdsman()
            .args(["run", flag, "-w", "cat", ":::", "x"])
            .assert()
            .success()
            .stdout("x\n");
    }
}

#[test]
fn joblog_as_gnu_parallel_users_type_it_logs_each_job() {
    let s = Scratch::new();
    s.herdsman()
        .args(["run", "--joblog", "log.txt", "-w", "cat", ":::", "x", "y"])
        .assert()
        .success()
        .stdout("x\ny\n");
    let log = s.read("log.txt");
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 3, "a header and one line per job: {log}");
    assert!(
        lines[0].starts_with("record\tfile\tline\tworker\tstart"),
        "{log}"
    );
    assert!(
        lines[1].starts_with("1\t") && lines[2].starts_with("2\t"),
        "{log}"
    );
}

#[test]
fn dash_zero_reads_nul_separated_records_newlines_included() {
    let s = Scratch::new();
    s.herdsman()
        .args(["run", "-0", "-x", "printf [%s] {}", "--exec-output", "text"])
        .args(["--progress", "none"])
        .write_stdin("a b\0c\nd\0e")
        .assert()
        .success()
        .stdout(
            predicate::str::contains("[a b]")
                .and(predicate::str::contains("[c\\nd]"))
                .and(predicate::str::contains("[e]")),
        );
    s.herdsman()
        .args(["run", "-0", "-w", "cat", "--progress", "none"])
        .write_stdin("x\0y\0")
        .assert()
        .success()
        .stdout("x\ny\n");
    s.herdsman()
        .args(["run", "-0", "-i", "in.txt", "-w", "cat"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("-print0"));
}

#[test]
fn halt_soon_maps_to_max_errors_and_halt_now_is_refused() {
    let s = Scratch::new();
    s.herdsman()
        .args([
            "run",
            "-j",
            "1",
            "--halt",
            "soon,fail=1",
            "--progress",
            "none",
        ])
        .args(["-x", "sh -c 'exit {}'", ":::", "0", "1", "0", "0", "0", "0"])
        .assert()
        .code(3)
        .stderr(predicate::str::contains("--max-errors"));
    s.herdsman()
        .args(["run", "--halt", "now,fail=1", "-w", "cat", ":::", "x"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("always lets them finish"))
        .stderr(predicate::str::contains("--max-errors N"));
}

#[test]
fn other_tools_flags_get_herdsmans_name_and_never_a_destructive_suggestion() {
    let s = Scratch::new();
    s.write("in.txt", "x\n");
    let cases = [
        ("--results", "-o results.jsonl"),
        ("--resume", "resumes by default"),
        ("--restrat", "--help lists every flag"),
        ("--resume-failed", "--retry-failed"),
    ];
    for (flag, tip) in cases {
        s.herdsman()
            .args(["run", "-i", "in.txt", "-w", "cat", flag])
            .assert()
            .code(2)
            .stderr(predicate::str::contains(tip))
            .stderr(predicate::str::contains("--restart").not());
    }
}

#[test]
fn a_data_file_where_the_job_file_goes_suggests_dash_i() {
    let s = Scratch::new();
    s.write("data.csv", "id\n1\n");
    s.herdsman()
        .args(["run", "data.csv", "-w", "cat"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("-i data.csv"));
}

#[test]
fn dry_run_prints_the_commands_and_runs_nothing_creates_nothing() {
    let s = Scratch::new();
    s.write("in.csv", "path\na b.txt\nc.txt\n");
    s.herdsman()
        .args([
            "run",
            "-i",
            "in.csv",
            "-x",
            "touch {path}",
            "-o",
            "out.jsonl",
        ])
        .arg("--dry-run")
        .assert()
        .success()
        .stdout("touch 'a b.txt'\ntouch c.txt\n");
    s.herdsman()
        .args(["run", "-i", "in.csv", "-w", "touch ran", "-o", "out.jsonl"])
        .arg("--dry-run")
        .assert()
        .success()
        .stdout("touch ran\n");
    s.herdsman()
        .args([
            "run",
            "-x",
            "touch {}",
            "--dry-run",
            "--limit",
            "1",
            ":::",
            "x",
            "y",
        ])
        .assert()
        .success()
        .stdout("touch x\n");
    assert_eq!(entries(&s), ["in.csv"]);
}

#[test]
fn limit_runs_the_first_records_as_a_try_out_that_never_checkpoints() {
    let s = Scratch::new();
    let input: String = (1..=50).map(|i| format!("{i}\n")).collect();
    s.write("in.txt", input);
    s.herdsman()
        .args([
            "run", "-i", "in.txt", "-w", "cat", "-o", "try.txt", "--limit", "3",
        ])
        .args(["--progress", "none"])
        .assert()
        .success();
    assert_eq!(s.read("try.txt"), "1\n2\n3\n");
    assert!(
        !s.path(".try.txt.herdsman").exists(),
        "a try-out checkpointed"
    );
    // The output of a checkpointed job is never replaced by a try-out.
    s.herdsman()
        .args([
            "run",
            "-i",
            "in.txt",
            "-w",
            "cat",
            "-o",
            "full.txt",
            "--progress",
            "none",
        ])
        .assert()
        .success();
    s.herdsman()
        .args([
            "run", "-i", "in.txt", "-w", "cat", "-o", "full.txt", "--limit", "3",
        ])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("-o try.jsonl"));
    assert_eq!(s.read("full.txt").lines().count(), 50);
}

#[test]
fn help_groups_options_shows_defaults_and_every_exit_code() {
    let s = Scratch::new();
    let out = s.herdsman().args(["run", "--help"]).output().unwrap();
    assert!(out.status.success());
    // Words only: the help is wrapped to the terminal's width.
    let help = String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    for heading in ["Input:", "Work:", "Policies:", "Output:", "Checkpoint:"] {
        assert!(help.contains(heading), "no {heading} in\n{help}");
    }
    for default in [
        "default: 1000",
        "default: 100ms",
        "default: 30s",
        "Default: lines",
        "default: 0",
        "default: number of cores",
        "Default: auto",
        "default: never stop",
    ] {
        assert!(help.contains(default), "no `{default}` in\n{help}");
    }
    let top = s.herdsman().arg("--help").output().unwrap();
    let top = String::from_utf8(top.stdout)
        .unwrap()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    for text in [&help, &top] {
        for code in ["0 ", "1 ", "2 ", "3 ", "4 ", "129 ", "130 ", "141 ", "143 "] {
            let code = code.trim();
            assert!(
                text.contains(&format!(" {code} ")) || text.contains(&format!("; {code} ")),
                "exit code {code} missing in\n{text}"
            );
        }
    }
}

#[test]
fn man_page_holds_the_options_and_examples_of_run() {
    let s = Scratch::new();
    let out = s.herdsman().arg("man").output().unwrap();
    assert!(out.status.success());
    let page = String::from_utf8(out.stdout).unwrap();
    for text in [
        "HERDSMAN RUN",
        "\\-\\-max\\-errors",
        "\\-\\-halt",
        "Examples:",
        "Exit codes:",
    ] {
        assert!(page.contains(text), "no {text} in the man page");
    }
}

#[test]
fn plain_progress_shows_rate_and_eta_off_a_terminal() {
    let s = Scratch::new();
    s.write("in.txt", "1\n2\n3\n4\n5\n6\n7\n8\n");
    // Eight one-second records on one worker: the first plain line comes after 5 seconds.
    let out = s
        .herdsman()
        .args([
            "run",
            "-i",
            "in.txt",
            "-j",
            "1",
            "-x",
            "sleep 1",
            "-o",
            "out.jsonl",
        ])
        .args(["--progress", "plain"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    let line = err
        .lines()
        .find(|l| l.contains("records done"))
        .unwrap_or_else(|| panic!("no progress line in\n{err}"));
    assert!(
        line.contains(" of 8 records done (0 failed, 0 retries), "),
        "{line}"
    );
    assert!(line.contains("/s, ETA "), "{line}");
}

#[test]
fn the_summary_counts_one_record_in_the_singular() {
    let s = Scratch::new();
    s.herdsman()
        .args(["run", "-w", "cat", "--progress", "none", ":::", "x"])
        .assert()
        .success()
        .stderr(predicate::str::contains("outputs   1 record\n"))
        .stderr(predicate::str::contains(" records/s"));
}

#[test]
fn exec_text_reaches_raw_output_as_the_command_printed_it() {
    // GNU parallel prints what each command printed; so does herdsman with lines output
    // (the default for lines input on stdout): no `{"stdout": …}` wrapper.
    let s = Scratch::new();
    s.herdsman()
        .args([
            "run",
            "-x",
            "echo {}!",
            "--progress",
            "none",
            ":::",
            "a b",
            "c",
        ])
        .assert()
        .success()
        .stdout("a b!\nc!\n");
    // A command printing JSON, or several lines, is passed through as printed too.
    s.herdsman()
        .args([
            "run",
            "-x",
            "printf '%s\\n%s\\n' {} {}",
            "--progress",
            "none",
            ":::",
            "{\"k\":1}",
        ])
        .assert()
        .success()
        .stdout("{\"k\":1}\n{\"k\":1}\n");
    // With JSONL output, text still becomes `{"stdout": …}` records.
    s.herdsman()
        .args([
            "run",
            "-x",
            "echo {}!",
            "--output-format",
            "jsonl",
            "--progress",
            "none",
            ":::",
            "a",
        ])
        .assert()
        .success()
        .stdout("{\"stdout\":\"a!\"}\n");
}
