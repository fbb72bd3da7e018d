//! Command templates: turn one record into the argv of one command.
//!
//! Placeholders: `{field}` (a field of the record; `{a.b}` reaches into nested objects),
//! `{}` (the whole record as JSON), `{#}` (the 1-based record number), and `{{` / `}}` for
//! literal braces. Values are substituted into argv entries and never pass through a shell;
//! in shell mode every value is shell-quoted first. This module must never let a record's
//! content change the structure of the command it runs.

use std::borrow::Cow;

use serde_json::Value;

/// An error in the template itself (found before any record is read).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// No command was given.
    #[error("the command template is empty; give a program to run, e.g. `--exec 'echo {{}}'`")]
    Empty,
    /// A `{` without its `}`.
    #[error(
        "unclosed `{{` in command template argument `{arg}`; write `{{{{` for a literal brace"
    )]
    Unclosed {
        /// The argument that holds it.
        arg: String,
    },
    /// A `}` without a `{` before it.
    #[error(
        "unmatched `}}` in command template argument `{arg}`; write `}}}}` for a literal brace"
    )]
    Unmatched {
        /// The argument that holds it.
        arg: String,
    },
    /// A placeholder such as `{a{b}`.
    #[error("`{{` inside a placeholder in command template argument `{arg}`; write `{{{{` for a literal brace")]
    Nested {
        /// The argument that holds it.
        arg: String,
    },
}

/// Why a template could not be filled from one record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    /// The record has no such field.
    #[error("the record has no field `{field}` used by the command template")]
    MissingField {
        /// The field name as written in the template.
        field: String,
    },
    /// A substituted value contains a NUL byte, which no command argument can hold.
    #[error("the value substituted for `{placeholder}` contains a NUL byte, which a command argument cannot hold")]
    NulByte {
        /// The placeholder, e.g. `{name}`.
        placeholder: String,
    },
    /// The record is not valid JSON.
    #[error("the record is not valid JSON ({0})")]
    BadRecord(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    Lit(String),
    Field(String),
    Whole,
    Number,
}

/// A parsed command template.
///
/// ```
/// use herdsman_workers::Template;
/// let t = Template::parse(&["convert".into(), "{path}".into(), "out/{#}.png".into()]).unwrap();
/// assert_eq!(t.fields(), vec!["path".to_string()]);
/// let rec = serde_json::json!({"path": "a b; rm -rf ~"});
/// assert_eq!(t.render(&rec, 6).unwrap(), vec!["convert", "a b; rm -rf ~", "out/7.png"]);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    args: Vec<Vec<Piece>>,
    shell: bool,
}

impl Template {
    /// Parses a template given as argv entries; the command runs without a shell.
    pub fn parse(argv: &[String]) -> Result<Template, TemplateError> {
        if argv.is_empty() || argv[0].is_empty() {
            return Err(TemplateError::Empty);
        }
        let args = argv
            .iter()
            .map(|a| parse_arg(a))
            .collect::<Result<_, _>>()?;
        Ok(Template { args, shell: false })
    }

    /// Parses a template that is one command line, run by `sh -c`. Every substituted value
    /// is shell-quoted, so it stays a single word whatever it contains.
    ///
    /// ```
    /// use herdsman_workers::Template;
    /// let t = Template::parse_shell("echo {name} | tr a-z A-Z").unwrap();
    /// let argv = t.render(&serde_json::json!({"name": "x; rm -rf ~"}), 0).unwrap();
    /// assert_eq!(argv, vec!["sh", "-c", "echo 'x; rm -rf ~' | tr a-z A-Z"]);
    /// ```
    pub fn parse_shell(command: &str) -> Result<Template, TemplateError> {
        if command.trim().is_empty() {
            return Err(TemplateError::Empty);
        }
        Ok(Template {
            args: vec![parse_arg(command)?],
            shell: true,
        })
    }

    /// Parses `argv` as [`Template::parse`] does, or, when `shell` is set, joins it with
    /// spaces and parses it as [`Template::parse_shell`] does.
    pub fn new(argv: &[String], shell: bool) -> Result<Template, TemplateError> {
        if shell {
            Template::parse_shell(&argv.join(" "))
        } else {
            Template::parse(argv)
        }
    }

    /// Whether the command runs through `sh -c`.
    pub fn is_shell(&self) -> bool {
        self.shell
    }

    /// The distinct field names the template uses, in order of first use, as written
    /// (`a.b` for a nested field). A caller can check them against a CSV header before
    /// running anything.
    pub fn fields(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for piece in self.args.iter().flatten() {
            if let Piece::Field(f) = piece {
                if !out.contains(f) {
                    out.push(f.clone());
                }
            }
        }
        out
    }

    /// Whether rendering needs the record's fields parsed (`{field}` placeholders).
    pub fn needs_fields(&self) -> bool {
        self.args
            .iter()
            .flatten()
            .any(|p| matches!(p, Piece::Field(_)))
    }

    /// The program to run if it does not depend on the record (`sh` in shell mode).
    pub fn program(&self) -> Option<String> {
        if self.shell {
            return Some("sh".into());
        }
        match self.args[0].as_slice() {
            [Piece::Lit(p)] => Some(p.clone()),
            _ => None,
        }
    }

    /// The template as written, for messages.
    pub fn display(&self) -> String {
        self.args
            .iter()
            .map(|pieces| {
                pieces
                    .iter()
                    .map(|p| match p {
                        Piece::Lit(s) => s.replace('{', "{{").replace('}', "}}"),
                        Piece::Field(f) => format!("{{{f}}}"),
                        Piece::Whole => "{}".into(),
                        Piece::Number => "{#}".into(),
                    })
                    .collect::<String>()
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Fills the template from `record` (record number `seq + 1`) and returns the argv to
    /// run. String values are substituted as they are; other values as compact JSON.
    pub fn render(&self, record: &Value, seq: u64) -> Result<Vec<String>, RenderError> {
        self.render_with(Some(record), None, seq)
    }

    /// Like [`Template::render`], with the record as JSON text. The text is parsed only if
    /// the template uses fields; `{}` substitutes the text as given.
    pub fn render_json(&self, json: &[u8], seq: u64) -> Result<Vec<String>, RenderError> {
        let parsed;
        let record = if self.needs_fields() {
            parsed = serde_json::from_slice::<Value>(json)
                .map_err(|e| RenderError::BadRecord(e.to_string()))?;
            Some(&parsed)
        } else {
            None
        };
        let text = String::from_utf8_lossy(json);
        self.render_with(record, Some(&text), seq)
    }

    fn render_with(
        &self,
        record: Option<&Value>,
        text: Option<&str>,
        seq: u64,
    ) -> Result<Vec<String>, RenderError> {
        let mut argv = Vec::with_capacity(self.args.len() + 2);
        for pieces in &self.args {
            let mut arg = String::new();
            for piece in pieces {
                let (value, name): (Cow<str>, Cow<str>) = match piece {
                    Piece::Lit(s) => {
                        arg.push_str(s);
                        continue;
                    }
                    Piece::Number => ((seq + 1).to_string().into(), "{#}".into()),
                    Piece::Whole => {
                        let v: Cow<str> = match (text, record) {
                            (Some(t), _) => t.into(),
                            (None, Some(r)) => r.to_string().into(),
                            (None, None) => "null".into(),
                        };
                        (v, "{}".into())
                    }
                    Piece::Field(f) => {
                        let v = record
                            .and_then(|r| lookup(r, f))
                            .ok_or_else(|| RenderError::MissingField { field: f.clone() })?;
                        let v: Cow<str> = match v {
                            Value::String(s) => s.as_str().into(),
                            other => other.to_string().into(),
                        };
                        (v, format!("{{{f}}}").into())
                    }
                };
                if value.contains('\0') {
                    return Err(RenderError::NulByte {
                        placeholder: name.into_owned(),
                    });
                }
                if self.shell {
                    let quoted = shlex::try_quote(&value).map_err(|_| RenderError::NulByte {
                        placeholder: name.into_owned(),
                    })?;
                    arg.push_str(&quoted);
                } else {
                    arg.push_str(&value);
                }
            }
            argv.push(arg);
        }
        if self.shell {
            let line = argv.pop().unwrap_or_default();
            return Ok(vec!["sh".into(), "-c".into(), line]);
        }
        Ok(argv)
    }
}

/// Finds `name` in `record`: first as a key of its own, then as a dotted path.
fn lookup<'a>(record: &'a Value, name: &str) -> Option<&'a Value> {
    let obj = record.as_object()?;
    if let Some(v) = obj.get(name) {
        return Some(v);
    }
    if !name.contains('.') {
        return None;
    }
    let mut cur = record;
    for part in name.split('.') {
        cur = match cur {
            Value::Object(m) => m.get(part)?,
            Value::Array(a) => a.get(part.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(cur)
}

fn parse_arg(arg: &str) -> Result<Vec<Piece>, TemplateError> {
    let mut pieces = Vec::new();
    let mut lit = String::new();
    let mut chars = arg.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                lit.push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                lit.push('}');
            }
            '}' => return Err(TemplateError::Unmatched { arg: arg.into() }),
            '{' => {
                let mut name = String::new();
                loop {
                    match chars.next() {
                        None => return Err(TemplateError::Unclosed { arg: arg.into() }),
                        Some('}') => break,
                        Some('{') => return Err(TemplateError::Nested { arg: arg.into() }),
                        Some(ch) => name.push(ch),
                    }
                }
                if !lit.is_empty() {
                    pieces.push(Piece::Lit(std::mem::take(&mut lit)));
                }
                pieces.push(match name.as_str() {
                    "" => Piece::Whole,
                    "#" => Piece::Number,
                    _ => Piece::Field(name),
                });
            }
            _ => lit.push(c),
        }
    }
    if !lit.is_empty() || pieces.is_empty() {
        pieces.push(Piece::Lit(lit));
    }
    Ok(pieces)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn argv(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_all_placeholder_kinds() {
        let t = Template::parse(&argv(&[
            "prog",
            "--id={id}",
            "{}",
            "{#}",
            "{{x}}",
            "{a.b}{id}",
        ]))
        .unwrap();
        assert_eq!(t.fields(), vec!["id".to_string(), "a.b".into()]);
        assert!(!t.is_shell());
        assert_eq!(t.program().as_deref(), Some("prog"));
        let rec = json!({"id": 7, "a": {"b": "deep"}});
        let mut got = t.render(&rec, 41).unwrap();
        // `{}` is the record as compact JSON; its key order depends on serde_json's
        // `preserve_order` feature, so compare it as a value.
        let whole: serde_json::Value = serde_json::from_str(&got.remove(2)).unwrap();
        assert_eq!(whole, rec);
        assert_eq!(got, argv(&["prog", "--id=7", "42", "{x}", "deep7"]));
        assert_eq!(t.display(), "prog --id={id} {} {#} {{x}} {a.b}{id}");
    }

    #[test]
    fn values_are_raw_strings_or_json() {
        let t = Template::parse(&argv(&["p", "{s}", "{n}", "{b}", "{z}", "{o}"])).unwrap();
        let rec = json!({"s": "it's \"q\"", "n": 1.5, "b": true, "z": null, "o": [1, "x"]});
        assert_eq!(
            t.render(&rec, 0).unwrap(),
            argv(&["p", "it's \"q\"", "1.5", "true", "null", r#"[1,"x"]"#])
        );
    }

    #[test]
    fn empty_argument_is_kept() {
        let t = Template::parse(&argv(&["p", ""])).unwrap();
        assert_eq!(t.render(&json!({}), 0).unwrap(), argv(&["p", ""]));
    }

    #[test]
    fn literal_key_with_dot_wins_over_path() {
        let t = Template::parse(&argv(&["p", "{a.b}"])).unwrap();
        let rec = json!({"a.b": "flat", "a": {"b": "nested"}});
        assert_eq!(t.render(&rec, 0).unwrap()[1], "flat");
        let rec = json!({"a": {"b": [10, 20]}});
        let t = Template::parse(&argv(&["p", "{a.b.1}"])).unwrap();
        assert_eq!(t.render(&rec, 0).unwrap()[1], "20");
    }

    #[test]
    fn missing_field_is_a_render_error() {
        let t = Template::parse(&argv(&["p", "{nope}"])).unwrap();
        assert_eq!(
            t.render(&json!({"id": 1}), 0),
            Err(RenderError::MissingField {
                field: "nope".into()
            })
        );
        assert!(t.render(&json!([1, 2]), 0).is_err());
    }

    #[test]
    fn nul_byte_is_a_render_error() {
        let t = Template::parse(&argv(&["p", "{s}"])).unwrap();
        let err = t.render(&json!({"s": "a\u{0}b"}), 0).unwrap_err();
        assert_eq!(
            err,
            RenderError::NulByte {
                placeholder: "{s}".into()
            }
        );
    }

    #[test]
    fn bad_templates_are_rejected_with_clear_messages() {
        assert_eq!(Template::parse(&[]), Err(TemplateError::Empty));
        assert_eq!(Template::parse_shell("  "), Err(TemplateError::Empty));
        let e = Template::parse(&argv(&["p", "{open"])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "unclosed `{` in command template argument `{open`; write `{{` for a literal brace"
        );
        let e = Template::parse(&argv(&["p", "a}b"])).unwrap_err();
        assert!(matches!(e, TemplateError::Unmatched { .. }));
        let e = Template::parse(&argv(&["p", "{a{b}"])).unwrap_err();
        assert!(matches!(e, TemplateError::Nested { .. }));
    }

    #[test]
    fn shell_mode_quotes_every_value() {
        let t = Template::parse_shell("printf '%s\\n' {v} {#} > /dev/null").unwrap();
        assert!(t.is_shell());
        assert_eq!(t.program().as_deref(), Some("sh"));
        let rec = json!({"v": "$(touch pwned); `id` && rm -rf ~ 'x'"});
        let out = t.render(&rec, 2).unwrap();
        assert_eq!(out[0], "sh");
        assert_eq!(out[1], "-c");
        let words = shlex::split(&out[2]).unwrap();
        assert_eq!(
            words,
            vec![
                "printf",
                "%s\\n",
                "$(touch pwned); `id` && rm -rf ~ 'x'",
                "3",
                ">",
                "/dev/null"
            ]
        );
    }

    #[test]
    fn new_joins_argv_in_shell_mode() {
        let t = Template::new(&argv(&["echo", "{x}", "|", "cat"]), true).unwrap();
        assert_eq!(
            t.render(&json!({"x": "a b"}), 0).unwrap()[2],
            "echo 'a b' | cat"
        );
    }

    #[test]
    fn render_json_parses_only_when_needed() {
        let t = Template::parse(&argv(&["p", "{}", "{#}"])).unwrap();
        assert!(!t.needs_fields());
        assert_eq!(
            t.render_json(b"not json", 0).unwrap(),
            argv(&["p", "not json", "1"])
        );
        let t = Template::parse(&argv(&["p", "{a}"])).unwrap();
        assert!(matches!(
            t.render_json(b"not json", 0),
            Err(RenderError::BadRecord(_))
        ));
        assert_eq!(
            t.render_json(br#"{"a":"x"}"#, 0).unwrap(),
            argv(&["p", "x"])
        );
    }

    #[test]
    fn program_is_none_when_templated() {
        let t = Template::parse(&argv(&["{tool}", "x"])).unwrap();
        assert_eq!(t.program(), None);
    }
}
