//! The CLI's modules depend downward only (docs/architecture.md, "The CLI"): a module may use
//! a module of a lower layer, never one of its own layer or above, so there is no import
//! cycle such as `run` ↔ `retry`.

use std::path::Path;

/// The layers, top first; the same list as in docs/architecture.md.
const LAYERS: &[&[&str]] = &[
    &["main"],
    &["run", "inspect", "report", "distributed"],
    &["job", "retry"],
    &["pipeline"],
    &["db_output"],
    &["checkpoint", "assemble", "shard_io"],
    &["inputs", "transform", "progress"],
    &["joblog", "history", "remote"],
    &["chunks", "summary", "config"],
    &[
        "cli",
        "text",
        "fault",
        "logging",
        "shard",
        "metrics",
        "remote_stage",
        "id_map",
    ],
    &["live"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

/// The modules `text` names as `crate::<module>`.
fn uses(text: &str) -> Vec<String> {
    let mut out: Vec<String> = text
        .match_indices("crate::")
        .map(|(i, m)| {
            text[i + m.len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect::<String>()
        })
        .filter(|m| !m.is_empty())
        .collect();
    out.sort();
    out.dedup();
    out
}

#[test]
fn every_module_uses_only_modules_below_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut modules = Vec::new();
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "rs") {
            modules.push(path);
        }
    }
    assert!(modules.len() > 10, "{modules:?}");
    let mut wrong = Vec::new();
    for path in modules {
        let module = path.file_stem().unwrap().to_str().unwrap().to_string();
        let Some(layer) = layer_of(&module) else {
            wrong.push(format!(
                "{module}.rs is in no layer: add it to LAYERS here and in docs/architecture.md"
            ));
            continue;
        };
        let text = std::fs::read_to_string(&path).unwrap();
        for used in uses(&text) {
            match layer_of(&used) {
                Some(l) if l > layer => {}
                Some(_) => wrong.push(format!(
                    "{module} (layer {layer}) uses crate::{used}, which is not below it"
                )),
                None => wrong.push(format!("{module} uses crate::{used}, which is in no layer")),
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
