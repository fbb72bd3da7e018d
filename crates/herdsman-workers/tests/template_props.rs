//! Properties of command templates: whatever a field holds, it reaches the command as
//! exactly one argument, with or without a shell.

use herdsman_workers::Template;
use proptest::prelude::*;
use serde_json::json;

fn any_text() -> impl Strategy<Value = String> {
    // Any characters but NUL, weighted towards the ones a shell cares about.
    prop_oneof![
        "[^\u{0}]{0,40}",
        "[ \t\n;&|<>(){}$`'\"\\\\*?~#!=%a-z]{0,40}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn direct_argv_value_is_one_argument(v in any_text()) {
        let t = Template::parse(&["prog".into(), "{v}".into(), "x{v}y".into()]).unwrap();
        let argv = t.render(&json!({ "v": v }), 0).unwrap();
        prop_assert_eq!(argv, vec!["prog".to_string(), v.clone(), format!("x{v}y")]);
    }

    #[test]
    fn shell_value_is_one_word(v in any_text(), w in any_text()) {
        let t = Template::parse_shell("printf '%s' {v} {w} > /dev/null").unwrap();
        let argv = t.render(&json!({ "v": v, "w": w }), 0).unwrap();
        let words = shlex::split(&argv[2]).expect("the rendered line is well quoted");
        prop_assert_eq!(
            words,
            vec!["printf".to_string(), "%s".into(), v.clone(), w.clone(), ">".into(), "/dev/null".into()]
        );
    }

    #[test]
    fn display_reparses_to_the_same_template(parts in proptest::collection::vec(
        prop_oneof![
            "[a-z]{1,5}".prop_map(|f| format!("{{{f}}}")),
            Just("{}".to_string()),
            Just("{#}".to_string()),
            Just("{{".to_string()),
            Just("}}".to_string()),
            "[^{}\u{0}]{0,6}",
        ],
        1..6,
    )) {
        let arg = parts.concat();
        let t = Template::parse(&["p".into(), arg]).unwrap();
        let shown = t.display();
        // `display` joins arguments with a space; the first one is `p`.
        let again = Template::parse(&["p".into(), shown["p ".len()..].to_string()]);
        prop_assert_eq!(again.unwrap(), t);
    }
}

#[test]
fn shell_quoting_survives_a_real_shell() {
    let values = [
        "plain",
        "",
        "a b",
        "it's",
        "$(echo pwned)",
        "`echo pwned`",
        "; echo pwned",
        "\"double\" \\ back",
        "new\nline",
        "glob * ?",
        "~",
        "-n",
    ];
    let t = Template::parse_shell("printf '%s|' {v}").unwrap();
    for v in values {
        let argv = t.render(&json!({ "v": v }), 0).unwrap();
        let out = std::process::Command::new(&argv[0])
            .args(&argv[1..])
            .output()
            .unwrap();
        assert!(out.status.success());
        assert_eq!(String::from_utf8(out.stdout).unwrap(), format!("{v}|"));
    }
}
