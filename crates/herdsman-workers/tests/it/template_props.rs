//! Properties of command templates: whatever a field holds, it reaches the command as
//! exactly one argument, with or without a shell, and a shell never reads it as code.

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
        let cmd = t.render(&json!({ "v": v }), 0).unwrap();
        prop_assert_eq!(cmd.argv, vec!["prog".to_string(), v.clone(), format!("x{v}y")]);
        prop_assert!(cmd.env.is_empty());
    }

    #[test]
    fn shell_values_stay_out_of_the_command_line(v in any_text(), w in any_text()) {
        let t = Template::parse_shell("printf '%s' {v} \"{w}\" '{v}' > /dev/null").unwrap();
        let cmd = t.render(&json!({ "v": v, "w": w }), 0).unwrap();
        // The line the shell parses is the same whatever the values are.
        let blank = t.render(&json!({ "v": "", "w": "" }), 0).unwrap();
        prop_assert_eq!(&cmd.argv, &blank.argv);
        prop_assert_eq!(
            cmd.env,
            vec![("HERDSMAN_ARG_1".to_string(), v.clone()), ("HERDSMAN_ARG_2".to_string(), w.clone())]
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
        let cmd = t.render(&json!({ "v": v }), 0).unwrap();
        let out = std::process::Command::new(&cmd.argv[0])
            .args(&cmd.argv[1..])
            .envs(cmd.env.iter().map(|(k, v)| (k, v)))
            .output()
            .unwrap();
        assert!(out.status.success());
        assert_eq!(String::from_utf8(out.stdout).unwrap(), format!("{v}|"));
    }
}
