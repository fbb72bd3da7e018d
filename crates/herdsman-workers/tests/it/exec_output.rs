//! What a per-record command's stdout becomes: bytes that are not UTF-8 never reach the
//! output; the record fails with `BadOutput` instead.

use crate::common;

use std::time::Duration;

use common::*;
use herdsman_workers::{ExecConfig, ExecOutputMode, ExecPool, FailureKind, Template};

const LIMIT: Duration = Duration::from_secs(120);

#[test]
fn stdout_that_is_not_utf8_fails_the_record_in_every_mode() {
    // Each script prints bytes that are not UTF-8 in another shape: inside a JSON string,
    // as a bare JSON line among valid ones, in pretty-printed JSON, and as plain text.
    let scripts = [
        r#"printf '"\377"\n'"#,
        r#"printf '{"a":1}\n{"b":"x\300y"}\n'"#,
        r#"printf '{\n  "a": "\355\240\200"\n}\n'"#,
        r#"printf 'caf\351\n'"#,
    ];
    for mode in [ExecOutputMode::Auto, ExecOutputMode::Text] {
        let t = Template::parse(&["sh".into(), "-c".into(), "{script}".into()]).unwrap();
        let mut cfg = ExecConfig::new(t);
        cfg.jobs = 2;
        cfg.output = mode;
        let mut pool = ExecPool::start(cfg).unwrap();
        let mut items: Vec<_> = scripts
            .iter()
            .enumerate()
            .map(|(i, s)| item(i as u64, &serde_json::json!({ "script": s }).to_string()))
            .collect();
        // A valid record beside them still succeeds.
        let ok = scripts.len() as u64;
        items.push(item(
            ok,
            &serde_json::json!({ "script": "printf '{\"ok\":\"é\"}\\n'" }).to_string(),
        ));
        let results = run_all(&mut pool, items, LIMIT).unwrap();
        for (i, script) in scripts.iter().enumerate() {
            let f = failure(&results[&(i as u64)]);
            assert_eq!(f.kind, FailureKind::BadOutput, "{mode:?} {script}: {f:?}");
            assert!(!f.retryable, "{f:?}");
            assert!(
                f.message.contains("not valid UTF-8") && f.message.contains("command `sh`"),
                "{}",
                f.message
            );
        }
        let out = success(&results[&ok]);
        let expected = match mode {
            ExecOutputMode::Text => r#"{"stdout":"{\"ok\":\"é\"}"}"#.to_string(),
            _ => r#"{"ok":"é"}"#.to_string(),
        };
        assert_eq!(text(out), vec![expected]);
    }
}
