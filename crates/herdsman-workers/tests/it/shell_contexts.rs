//! `--shell` commands run by a real `sh`: whatever quoting context the template puts a
//! placeholder in (bare, double quotes, single quotes, `$(...)`, backticks, a here-document,
//! a comment), the value reaches the command as text, and never runs.

use crate::common;

use std::path::Path;
use std::time::Duration;

use common::*;
use herdsman_workers::{ExecConfig, ExecOutputMode, ExecPool, Template, TemplateError};
use proptest::prelude::*;
use proptest::test_runner::RngSeed;

const LIMIT: Duration = Duration::from_secs(120);

/// Templates that print the value followed by `|`, each putting `{v}` in another context.
const CONTEXTS: &[&str] = &[
    "printf '%s|' {v}",
    "printf '%s|' \"{v}\"",
    "printf '%s|' '{v}'",
    "x=a{v}b; x=\"${{x#a}}\"; printf '%s|' \"${{x%b}}\"",
    "x=\"a{v}b\"; x=\"${{x#a}}\"; printf '%s|' \"${{x%b}}\"",
    "x='a{v}b'; x=\"${{x#a}}\"; printf '%s|' \"${{x%b}}\"",
    "x=$(printf '%s.' {v}); printf '%s|' \"${{x%.}}\"",
    "x=\"$(printf '%s.' \"{v}\")\"; printf '%s|' \"${{x%.}}\"",
    "x=\"$(printf '%s.' '{v}')\"; printf '%s|' \"${{x%.}}\"",
    "x=`printf '%s.' {v}`; printf '%s|' \"${{x%.}}\"",
    "x=\"`printf '%s.' \"{v}\"`\"; printf '%s|' \"${{x%.}}\"",
    "cat <<EOF\n{v}|\nEOF",
    "cat <<-EOF\n\t{v}|\n\tEOF",
    "f() {{ printf '%s|' \"$1\"; }}; f {v}",
    "printf '%s|' {v} # {v}",
];

/// Runs `values` through `template` in a fresh pool and checks every output and the marker.
fn check_context(template: &str, values: &[String], marker: &Path) {
    let t = Template::parse_shell(template)
        .unwrap_or_else(|e| panic!("template {template:?} refused: {e}"));
    let mut cfg = ExecConfig::new(t);
    cfg.jobs = 2;
    cfg.output = ExecOutputMode::Text;
    cfg.kill_grace = Duration::from_millis(500);
    let mut pool = ExecPool::start(cfg).unwrap();
    let items = values
        .iter()
        .enumerate()
        .map(|(i, v)| item(i as u64, &serde_json::json!({ "v": v }).to_string()))
        .collect();
    let results = run_all(&mut pool, items, LIMIT).unwrap();
    for (i, v) in values.iter().enumerate() {
        let out = success(&results[&(i as u64)]);
        let rec: serde_json::Value = serde_json::from_slice(&out[0]).unwrap();
        assert_eq!(
            rec["stdout"].as_str().unwrap(),
            format!("{v}|"),
            "template {template:?}, value {v:?}"
        );
    }
    assert!(
        !marker.exists(),
        "a value ran as a command under template {template:?}"
    );
}

fn nasty(marker: &Path) -> Vec<String> {
    let m = marker.display();
    vec![
        "plain".into(),
        String::new(),
        format!("$(touch {m})"),
        format!("`touch {m}`"),
        format!("; touch {m}"),
        format!("| touch {m}"),
        format!("&& touch {m}"),
        format!("' ; touch {m} ; '"),
        format!("\" ; touch {m} ; \""),
        format!("\"$(touch {m})\""),
        format!("'$(touch {m})'"),
        format!("x\nEOF\ntouch {m}\n"),
        format!("\ntouch {m}\n"),
        format!("\\\"; touch {m}; \\\""),
        "$HOME ${HOME} $1 $$ $# $@ $*".into(),
        "back\\slash\\\\ and \\n and \\".into(),
        "new\nline\n".into(),
        "* ? [a-z] ~ ~root".into(),
        "-n".into(),
        "it's \"quoted\"".into(),
        "} ) ]] fi done esac".into(),
        "\t\r tabs".into(),
        "ünïcödé ✓".into(),
    ]
}

#[test]
fn injected_commands_never_run_in_any_quoting_context() {
    let dir = tempdir("shell-contexts");
    let marker = dir.join("pwned");
    let values = nasty(&marker);
    for template in CONTEXTS {
        check_context(template, &values, &marker);
    }
}

fn shell_text() -> impl Strategy<Value = String> {
    // Any characters but NUL, weighted towards the ones a shell cares about.
    prop_oneof![
        "[^\u{0}]{0,30}",
        "[ \t\n;&|<>(){}$`'\"\\\\*?~#!=%a-zEOF]{0,30}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 16,
        rng_seed: RngSeed::Fixed(0x5eed_4e11),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn any_value_prints_as_itself_in_every_context(
        values in proptest::collection::vec(shell_text(), 1..8),
        touch_at in 0usize..4,
    ) {
        let dir = tempdir("shell-props");
        let marker = dir.join("pwned");
        // Splice an injected `touch` into one of the random values.
        let mut values = values;
        let i = touch_at % values.len();
        let mid = values[i].chars().count() / 2;
        let (a, b): (String, String) = {
            let chars: Vec<char> = values[i].chars().collect();
            (chars[..mid].iter().collect(), chars[mid..].iter().collect())
        };
        values[i] = format!("{a}$(touch {m})`touch {m}`;touch {m}\n{b}", m = marker.display());
        for template in CONTEXTS {
            check_context(template, &values, &marker);
        }
    }
}

#[test]
fn placeholders_where_no_quoting_is_safe_are_refused() {
    let refused = [
        // A quoted here-document delimiter: the body is taken literally.
        ("cat <<'EOF'\n{v}\nEOF", "here-document"),
        ("cat <<\"EOF\"\nx {v}\nEOF", "here-document"),
        // The delimiter itself.
        ("cat <<{v}\nx\n", "here-document"),
        // Arithmetic evaluates text.
        ("echo $(( {v} + 1 ))", "arithmetic"),
        // Right after `$`: `${v}` is a placeholder, not the shell variable.
        ("echo ${v}", "${{v}}"),
        ("echo \"$${v}\"", "after `$`"),
        // Right after a backslash.
        ("echo \\{v}", "backslash"),
        ("echo \"\\{v}\"", "backslash"),
        // Inside a parameter expansion.
        ("echo ${{x:-{v}}}", "${...}"),
    ];
    for (template, hint) in refused {
        let err = Template::parse_shell(template)
            .expect_err(&format!("template {template:?} should be refused"));
        assert!(
            matches!(err, TemplateError::UnsafeShellPlaceholder { .. }),
            "{template:?}: {err:?}"
        );
        let msg = err.to_string();
        assert!(msg.contains(hint), "{template:?}: {msg}");
    }
    // The same placeholders are fine without a shell: each is one argv entry.
    assert!(Template::parse(&["echo".into(), "\\{v}".into()]).is_ok());
}

/// The rendered line means the same to every common `sh`: where `/bin/sh` is bash (in
/// POSIX mode, as `sh` starts it) rather than dash, values still print as themselves.
#[test]
fn rendered_lines_hold_in_dash_and_bash() {
    let dir = tempdir("shell-flavours");
    let marker = dir.join("pwned");
    let values = nasty(&marker);
    let shells: Vec<Vec<&str>> = vec![vec!["dash"], vec!["bash", "--posix"], vec!["bash"]]
        .into_iter()
        .filter(|s| {
            std::process::Command::new(s[0])
                .args(["-c", "true"])
                .status()
                .is_ok_and(|st| st.success())
        })
        .collect();
    for shell in &shells {
        for template in CONTEXTS {
            let t = Template::parse_shell(template).unwrap();
            for v in &values {
                let cmd = t.render(&serde_json::json!({ "v": v }), 0).unwrap();
                assert_eq!(&cmd.argv[..2], ["sh", "-c"]);
                let out = std::process::Command::new(shell[0])
                    .args(&shell[1..])
                    .args(&cmd.argv[1..])
                    .envs(cmd.env.iter().map(|(k, v)| (k, v)))
                    .output()
                    .unwrap();
                let mut printed = String::from_utf8(out.stdout).unwrap();
                if printed.ends_with('\n') {
                    printed.pop();
                }
                assert_eq!(printed, format!("{v}|"), "{shell:?} {template:?} {v:?}");
                assert!(
                    !marker.exists(),
                    "{shell:?} ran a value: {template:?} {v:?}"
                );
            }
        }
    }
}
