//! Command templates: turn one record into the argv of one command.
//!
//! Placeholders: `{field}` (a field of the record; `{a.b}` reaches into nested objects),
//! `{}` (the whole record: a text line as it is, any other record as JSON), `{:json}` (the
//! whole record as JSON, always), `{#}` (the 1-based record number), `{%}` (the 1-based
//! number of the job slot that runs the command), and `{{` / `}}` for literal braces. Names
//! that start with `:` are reserved for herdsman's own placeholders. Values are substituted
//! into argv entries and never pass through a shell.
//!
//! In shell mode (`sh -c LINE`) no value is ever written into the command line: each
//! distinct placeholder becomes an environment variable of the command (`HERDSMAN_ARG_1`,
//! ...) and the line refers to it with an expansion fitted to the placeholder's quoting
//! context (`"${HERDSMAN_ARG_1}"` outside quotes, `${HERDSMAN_ARG_1}` inside double quotes
//! or a here-document, `'"${HERDSMAN_ARG_1}"'` inside single quotes). The shell expands a
//! variable once and never parses its content as code, so a value cannot run whatever
//! quotes surround its placeholder; and should the context be misjudged, the worst outcome
//! is a value split into words, never a command. Contexts where no expansion keeps the value
//! intact or inert (a quoted here-document, arithmetic, right after `$` or a backslash,
//! inside `${...}`) are refused when the template is parsed. This module must never let a
//! record's content change the structure of the command it runs.

use std::borrow::Cow;

use serde_json::Value;

use crate::ordered::Ordered;

/// An error in the template itself (found before any record is read).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TemplateError {
    /// No command was given.
    #[error("the command template is empty; give a program to run, e.g. `echo {{}}`")]
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
    /// A placeholder that starts with `:` but is not one of herdsman's own.
    #[error("`{placeholder}` in command template argument `{arg}` is not a placeholder: names that start with `:` are reserved; use `{{:json}}` for the record as JSON, `{{}}` for the whole record, `{{#}}` for the record number or `{{%}}` for the job slot")]
    UnknownPlaceholder {
        /// The placeholder as written, e.g. `{:yaml}`.
        placeholder: String,
        /// The argument that holds it.
        arg: String,
    },
    /// A placeholder such as `{a{b}`.
    #[error("`{{` inside a placeholder in command template argument `{arg}`; write `{{{{` for a literal brace")]
    Nested {
        /// The argument that holds it.
        arg: String,
    },
    /// In shell mode, a placeholder where no quoting keeps the value intact and inert.
    #[error("the shell command puts `{placeholder}` {context}, where a value cannot be passed safely; {hint}")]
    UnsafeShellPlaceholder {
        /// The placeholder as written, e.g. `{name}`.
        placeholder: String,
        /// Where it is, e.g. "inside `$((...))` arithmetic".
        context: String,
        /// The safe way to write it.
        hint: String,
    },
}

/// Why a template could not be filled from one record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
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

/// A filled template: the argv to run and the environment variables it needs (in shell
/// mode, the values of the placeholders; otherwise none).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RenderedCommand {
    /// The program and its arguments.
    pub argv: Vec<String>,
    /// Variables to set in the command's environment, in addition to the inherited ones.
    pub env: Vec<(String, String)>,
}

/// How a placeholder's variable is expanded in a shell command line, by quoting context.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Form {
    /// Outside quotes: `"${V}"`.
    Bare,
    /// Inside double quotes or an unquoted here-document: `${V}`.
    InDouble,
    /// Inside single quotes: close them, expand in double quotes, reopen: `'"${V}"'`.
    InSingle,
}

/// The environment variable that carries the `n`-th (0-based) distinct placeholder.
fn var_name(n: usize) -> String {
    format!("HERDSMAN_ARG_{}", n + 1)
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    Lit(String),
    Field(String),
    /// `{}`: a string record as it is, any other record as JSON.
    Whole,
    /// `{:json}`: the record as JSON.
    Json,
    /// `{#}`: the 1-based record number.
    Number,
    /// `{%}`: the 1-based job slot number.
    Slot,
}

impl Piece {
    /// The placeholder as written; `None` for literal text.
    fn placeholder(&self) -> Option<String> {
        Some(match self {
            Piece::Lit(_) => return None,
            Piece::Field(f) => format!("{{{f}}}"),
            Piece::Whole => "{}".into(),
            Piece::Json => JSON_PLACEHOLDER.into(),
            Piece::Number => "{#}".into(),
            Piece::Slot => "{%}".into(),
        })
    }
}

/// The placeholder for the whole record as JSON text.
const JSON_PLACEHOLDER: &str = "{:json}";

/// A parsed command template.
///
/// ```
/// use herdsman_workers::Template;
/// let t = Template::parse(&["convert".into(), "{path}".into(), "out/{#}.png".into()]).unwrap();
/// assert_eq!(t.fields(), vec!["path".to_string()]);
/// let rec = serde_json::json!({"path": "a b; rm -rf ~"});
/// assert_eq!(t.render(&rec, 6).unwrap().argv, vec!["convert", "a b; rm -rf ~", "out/7.png"]);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    args: Vec<Vec<Piece>>,
    shell: bool,
    /// In shell mode, the expansion form of each placeholder of the line, in order.
    forms: Vec<Form>,
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
        Ok(Template {
            args,
            shell: false,
            forms: Vec::new(),
        })
    }

    /// Parses a template that is one command line, run by `sh -c`. No value is written into
    /// the line: each distinct placeholder is passed in an environment variable
    /// (`HERDSMAN_ARG_1`, ...) that the line expands in a form fitted to the placeholder's
    /// quoting context, so the shell never parses a value as code. A placeholder in a
    /// context where that cannot work (a here-document with a quoted delimiter, `$((...))`,
    /// `${...}`, right after `$` or a backslash) is an error that shows the safe form.
    ///
    /// ```
    /// use herdsman_workers::Template;
    /// let t = Template::parse_shell("echo {name} \"<{name}>\" '{#}' | tr a-z A-Z").unwrap();
    /// let cmd = t.render(&serde_json::json!({"name": "x; rm -rf ~"}), 0).unwrap();
    /// assert_eq!(
    ///     cmd.argv,
    ///     vec![
    ///         "sh",
    ///         "-c",
    ///         r#"echo "${HERDSMAN_ARG_1}" "<${HERDSMAN_ARG_1}>" ''"${HERDSMAN_ARG_2}"'' | tr a-z A-Z"#,
    ///     ]
    /// );
    /// assert_eq!(
    ///     cmd.env,
    ///     vec![
    ///         ("HERDSMAN_ARG_1".to_string(), "x; rm -rf ~".to_string()),
    ///         ("HERDSMAN_ARG_2".to_string(), "1".to_string()),
    ///     ]
    /// );
    /// assert!(Template::parse_shell("echo $(( {n} + 1 ))").is_err());
    /// ```
    pub fn parse_shell(command: &str) -> Result<Template, TemplateError> {
        if command.trim().is_empty() {
            return Err(TemplateError::Empty);
        }
        let pieces = parse_arg(command)?;
        let forms = shell::forms(&pieces)?;
        Ok(Template {
            args: vec![pieces],
            shell: true,
            forms,
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
                        other => other.placeholder().unwrap_or_default(),
                    })
                    .collect::<String>()
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Whether the template uses `{%}`, the number of the job slot that runs the command.
    pub fn uses_slot(&self) -> bool {
        self.args.iter().flatten().any(|p| matches!(p, Piece::Slot))
    }

    /// Fills the template from `record` (record number `seq + 1`) and returns the command to
    /// run, with `{%}` as job slot 1. String values are substituted as they are; other
    /// values as compact JSON. In shell mode the values are in [`RenderedCommand::env`],
    /// which must be set for the command.
    pub fn render(&self, record: &Value, seq: u64) -> Result<RenderedCommand, RenderError> {
        self.render_in_slot(record, seq, 1)
    }

    /// Like [`Template::render`], for a command run by job slot `slot` (1-based), which
    /// `{%}` expands to.
    ///
    /// ```
    /// use herdsman_workers::Template;
    /// let t = Template::parse(&["echo".into(), "{%}:{#}".into(), "{}".into(), "{:json}".into()]).unwrap();
    /// let cmd = t.render_in_slot(&serde_json::json!("a line"), 4, 2).unwrap();
    /// assert_eq!(cmd.argv, vec!["echo", "2:5", "a line", "\"a line\""]);
    /// ```
    pub fn render_in_slot(
        &self,
        record: &Value,
        seq: u64,
        slot: usize,
    ) -> Result<RenderedCommand, RenderError> {
        self.render_with(Some(&Ordered::from(record)), None, seq, slot)
    }

    /// Like [`Template::render`], with the record as JSON text. The text is parsed only if
    /// the template uses fields; `{:json}` substitutes the text as given, and so does `{}`
    /// unless the record is a JSON string (a line of text), which it substitutes unquoted.
    pub fn render_json(&self, json: &[u8], seq: u64) -> Result<RenderedCommand, RenderError> {
        self.render_json_in_slot(json, seq, 1)
    }

    /// Like [`Template::render_json`], for a command run by job slot `slot` (1-based).
    pub fn render_json_in_slot(
        &self,
        json: &[u8],
        seq: u64,
        slot: usize,
    ) -> Result<RenderedCommand, RenderError> {
        let parsed;
        let record = if self.needs_fields() {
            parsed =
                Ordered::from_slice(json).map_err(|e| RenderError::BadRecord(e.to_string()))?;
            Some(&parsed)
        } else {
            None
        };
        let text = String::from_utf8_lossy(json);
        self.render_with(record, Some(&text), seq, slot)
    }

    fn render_with(
        &self,
        record: Option<&Ordered>,
        text: Option<&str>,
        seq: u64,
        slot: usize,
    ) -> Result<RenderedCommand, RenderError> {
        let json_text = || -> Cow<str> {
            match (text, record) {
                (Some(t), _) => t.into(),
                (None, Some(r)) => r.to_json().into(),
                (None, None) => "null".into(),
            }
        };
        let value_of = |piece: &Piece| -> Result<Option<(String, String)>, RenderError> {
            let value: Cow<str> = match piece {
                Piece::Lit(_) => return Ok(None),
                Piece::Number => (seq + 1).to_string().into(),
                Piece::Slot => slot.to_string().into(),
                Piece::Json => json_text(),
                // A string record (a line of `lines` input) is substituted as it is, like
                // a string field; any other record as JSON.
                Piece::Whole => match (text, record) {
                    (_, Some(Ordered::String(s))) => s.as_str().into(),
                    (Some(t), _) if t.starts_with('"') => match serde_json::from_str::<String>(t) {
                        Ok(s) => s.into(),
                        Err(_) => t.into(),
                    },
                    _ => json_text(),
                },
                Piece::Field(f) => {
                    let v = record
                        .and_then(|r| lookup(r, f))
                        .ok_or_else(|| RenderError::MissingField { field: f.clone() })?;
                    match v {
                        Ordered::String(s) => s.as_str().into(),
                        other => other.to_json().into(),
                    }
                }
            };
            let name = piece.placeholder().unwrap_or_default();
            if value.contains('\0') {
                return Err(RenderError::NulByte { placeholder: name });
            }
            Ok(Some((name, value.into_owned())))
        };
        if self.shell {
            // One variable per distinct placeholder, in order of first use.
            let mut env: Vec<(String, String)> = Vec::new();
            let mut names: Vec<String> = Vec::new();
            let mut line = String::new();
            let mut forms = self.forms.iter();
            for piece in self.args.iter().flatten() {
                let Some((name, value)) = value_of(piece)? else {
                    if let Piece::Lit(s) = piece {
                        line.push_str(s);
                    }
                    continue;
                };
                let n = match names.iter().position(|k| *k == name) {
                    Some(n) => n,
                    None => {
                        names.push(name);
                        env.push((var_name(env.len()), value));
                        env.len() - 1
                    }
                };
                let var = var_name(n);
                match forms.next().copied().unwrap_or(Form::Bare) {
                    Form::Bare => line.push_str(&format!("\"${{{var}}}\"")),
                    Form::InDouble => line.push_str(&format!("${{{var}}}")),
                    Form::InSingle => line.push_str(&format!("'\"${{{var}}}\"'")),
                }
            }
            return Ok(RenderedCommand {
                argv: vec!["sh".into(), "-c".into(), line],
                env,
            });
        }
        let mut argv = Vec::with_capacity(self.args.len());
        for pieces in &self.args {
            let mut arg = String::new();
            for piece in pieces {
                match value_of(piece)? {
                    Some((_, value)) => arg.push_str(&value),
                    None => {
                        if let Piece::Lit(s) = piece {
                            arg.push_str(s);
                        }
                    }
                }
            }
            argv.push(arg);
        }
        Ok(RenderedCommand {
            argv,
            env: Vec::new(),
        })
    }
}

/// Finds `name` in `record`: first as a key of its own, then as a dotted path.
fn lookup<'a>(record: &'a Ordered, name: &str) -> Option<&'a Ordered> {
    if !matches!(record, Ordered::Object(_)) {
        return None;
    }
    if let Some(v) = record.get(name) {
        return Some(v);
    }
    if !name.contains('.') {
        return None;
    }
    let mut cur = record;
    for part in name.split('.') {
        cur = match cur {
            Ordered::Object(_) => cur.get(part)?,
            Ordered::Array(a) => a.get(part.parse::<usize>().ok()?)?,
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
                    ":json" => Piece::Json,
                    "#" => Piece::Number,
                    "%" => Piece::Slot,
                    _ if name.starts_with(':') => {
                        return Err(TemplateError::UnknownPlaceholder {
                            placeholder: format!("{{{name}}}"),
                            arg: arg.into(),
                        })
                    }
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

/// Finds the quoting context of each placeholder of a shell command line.
///
/// A small POSIX `sh` lexer: it follows quotes, backslashes, `$(...)`, backticks, `${...}`,
/// `$((...))`, comments and here-documents over the literal text, and at each placeholder
/// says how its variable must be expanded, or why no expansion is safe there. It does not
/// need to be perfect: a misjudged context can only change how a value is split into words,
/// never make the shell run it (see the module comment), except in the contexts it refuses.
mod shell {
    use super::{Form, Piece, TemplateError};

    #[derive(Clone, Debug)]
    enum Ctx {
        /// Commands: the whole line, the inside of `$(...)` (with its open parentheses), or
        /// of backticks.
        Cmd(CmdKind),
        Single,
        Double,
        /// `${...}`, with its open braces.
        Param(usize),
        /// `$((...))`, with its open parentheses.
        Arith(usize),
        Comment,
        /// The body of a here-document.
        Heredoc(Heredoc),
    }

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum CmdKind {
        Top,
        Paren(usize),
        Backtick,
    }

    #[derive(Clone, Debug)]
    struct Heredoc {
        delimiter: String,
        strip_tabs: bool,
        quoted: bool,
        /// The current line's text, and whether a placeholder is in it (then it cannot be
        /// the delimiter line).
        line: String,
        line_has_value: bool,
    }

    struct Lexer {
        stack: Vec<Ctx>,
        /// The previous character was an unquoted (or double-quoted) backslash.
        escaped: bool,
        /// The previous character was a `$` that starts nothing.
        dollar: bool,
        /// In a command context, the next character starts a word (for `#`).
        word_start: bool,
        /// Here-documents whose bodies start at the next newline.
        pending: Vec<Heredoc>,
        /// A `<<` was read and its delimiter word has not started (with `<<-`: true).
        want_delimiter: Option<bool>,
        /// The literal text ended inside a here-document delimiter word.
        delimiter_open: bool,
    }

    fn unsafe_at(placeholder: &str, context: &str, hint: String) -> TemplateError {
        TemplateError::UnsafeShellPlaceholder {
            placeholder: placeholder.to_string(),
            context: context.to_string(),
            hint,
        }
    }

    fn is_operator(c: char) -> bool {
        matches!(c, ';' | '&' | '|' | '(' | ')' | '<' | '>')
    }

    impl Lexer {
        fn top(&self) -> &Ctx {
            self.stack
                .last()
                .expect("the command context is never popped")
        }

        fn set_top(&mut self, ctx: Ctx) {
            if let Some(top) = self.stack.last_mut() {
                *top = ctx;
            }
        }

        fn pop(&mut self) {
            if self.stack.len() > 1 {
                self.stack.pop();
            }
        }

        /// After `$`: starts `$((`, `$(` or `${`, consuming what it uses, or marks a
        /// plain `$`.
        fn dollar(&mut self, chars: &[char], i: &mut usize) {
            match (chars.get(*i + 1), chars.get(*i + 2)) {
                (Some('('), Some('(')) => {
                    self.stack.push(Ctx::Arith(0));
                    *i += 2;
                }
                (Some('('), _) => {
                    self.stack.push(Ctx::Cmd(CmdKind::Paren(0)));
                    self.word_start = true;
                    *i += 1;
                }
                (Some('{'), _) => {
                    self.stack.push(Ctx::Param(0));
                    *i += 1;
                }
                _ => self.dollar = true,
            }
        }

        /// Reads the delimiter word of a here-document starting at `chars[*i]`.
        fn delimiter(&mut self, chars: &[char], i: &mut usize, strip_tabs: bool) {
            let mut word = String::new();
            let mut quoted = false;
            let mut quote: Option<char> = None;
            while let Some(&c) = chars.get(*i) {
                match quote {
                    Some(q) if c == q => quote = None,
                    Some(_) => word.push(c),
                    None if c == '\'' || c == '"' => {
                        quoted = true;
                        quote = Some(c);
                    }
                    None if c == '\\' => {
                        quoted = true;
                        if let Some(&n) = chars.get(*i + 1) {
                            word.push(n);
                            *i += 1;
                        }
                    }
                    None if c.is_whitespace() || is_operator(c) => break,
                    None => word.push(c),
                }
                *i += 1;
            }
            self.delimiter_open = *i >= chars.len();
            self.pending.push(Heredoc {
                delimiter: word,
                strip_tabs,
                quoted,
                line: String::new(),
                line_has_value: false,
            });
            self.word_start = true;
        }

        /// A newline in a command context starts the pending here-documents, if any.
        fn newline(&mut self) {
            self.word_start = true;
            if !self.pending.is_empty() {
                let first = self.pending.remove(0);
                self.stack.push(Ctx::Heredoc(first));
            }
        }

        fn feed(&mut self, chars: &[char]) {
            self.delimiter_open = false;
            let mut i = 0;
            while i < chars.len() {
                let c = chars[i];
                if let Some(strip_tabs) = self.want_delimiter {
                    if c == ' ' || c == '\t' {
                        i += 1;
                        continue;
                    }
                    self.want_delimiter = None;
                    self.delimiter(chars, &mut i, strip_tabs);
                    continue;
                }
                if self.escaped {
                    self.escaped = false;
                    self.word_start = false;
                    i += 1;
                    continue;
                }
                self.dollar = false;
                match self.top().clone() {
                    Ctx::Cmd(kind) => {
                        let start = self.word_start;
                        self.word_start = c.is_whitespace() || is_operator(c);
                        match c {
                            '\\' => self.escaped = true,
                            '\'' => self.stack.push(Ctx::Single),
                            '"' => self.stack.push(Ctx::Double),
                            '`' if kind == CmdKind::Backtick => self.pop(),
                            '`' => self.stack.push(Ctx::Cmd(CmdKind::Backtick)),
                            '$' => self.dollar(chars, &mut i),
                            '#' if start => self.stack.push(Ctx::Comment),
                            '\n' => self.newline(),
                            '(' => {
                                if let Some(Ctx::Cmd(CmdKind::Paren(n))) = self.stack.last_mut() {
                                    *n += 1;
                                }
                            }
                            ')' => match self.stack.last_mut() {
                                Some(Ctx::Cmd(CmdKind::Paren(0))) => {
                                    self.pop();
                                    self.word_start = false;
                                }
                                Some(Ctx::Cmd(CmdKind::Paren(n))) => *n -= 1,
                                _ => {}
                            },
                            // `<<<` (a bash here-string) is a plain word after it.
                            '<' if chars.get(i + 1) == Some(&'<')
                                && chars.get(i + 2) == Some(&'<') =>
                            {
                                i += 2;
                            }
                            '<' if chars.get(i + 1) == Some(&'<') => {
                                let strip_tabs = chars.get(i + 2) == Some(&'-');
                                i += if strip_tabs { 2 } else { 1 };
                                self.want_delimiter = Some(strip_tabs);
                            }
                            _ => {}
                        }
                    }
                    Ctx::Single => {
                        if c == '\'' {
                            self.pop();
                        }
                    }
                    Ctx::Double => match c {
                        '\\' => self.escaped = true,
                        '"' => self.pop(),
                        '`' => self.stack.push(Ctx::Cmd(CmdKind::Backtick)),
                        '$' => self.dollar(chars, &mut i),
                        _ => {}
                    },
                    Ctx::Param(depth) => match c {
                        '\\' => self.escaped = true,
                        '\'' => self.stack.push(Ctx::Single),
                        '"' => self.stack.push(Ctx::Double),
                        '`' => self.stack.push(Ctx::Cmd(CmdKind::Backtick)),
                        '$' => self.dollar(chars, &mut i),
                        '{' => self.set_top(Ctx::Param(depth + 1)),
                        '}' if depth == 0 => self.pop(),
                        '}' => self.set_top(Ctx::Param(depth - 1)),
                        _ => {}
                    },
                    Ctx::Arith(depth) => match c {
                        '$' => self.dollar(chars, &mut i),
                        '`' => self.stack.push(Ctx::Cmd(CmdKind::Backtick)),
                        '(' => self.set_top(Ctx::Arith(depth + 1)),
                        ')' if depth == 0 => {
                            self.pop();
                            if chars.get(i + 1) == Some(&')') {
                                i += 1;
                            }
                        }
                        ')' => self.set_top(Ctx::Arith(depth - 1)),
                        _ => {}
                    },
                    Ctx::Comment => {
                        if c == '\n' {
                            self.pop();
                            // The newline also ends the command line it commented.
                            continue;
                        }
                    }
                    Ctx::Heredoc(mut doc) => {
                        if c == '\n' {
                            let line = if doc.strip_tabs {
                                doc.line.trim_start_matches('\t')
                            } else {
                                doc.line.as_str()
                            };
                            if !doc.line_has_value && line == doc.delimiter {
                                self.pop();
                                if !self.pending.is_empty() {
                                    let next = self.pending.remove(0);
                                    self.stack.push(Ctx::Heredoc(next));
                                }
                            } else {
                                doc.line.clear();
                                doc.line_has_value = false;
                                self.set_top(Ctx::Heredoc(doc));
                            }
                        } else {
                            doc.line.push(c);
                            let quoted = doc.quoted;
                            self.set_top(Ctx::Heredoc(doc));
                            if !quoted {
                                match c {
                                    '\\' => self.escaped = true,
                                    '`' => self.stack.push(Ctx::Cmd(CmdKind::Backtick)),
                                    '$' => self.dollar(chars, &mut i),
                                    _ => {}
                                }
                            }
                        }
                    }
                }
                i += 1;
            }
        }

        /// The form of a placeholder at the current position, or why there is none.
        fn placeholder(&mut self, name: &str) -> Result<Form, TemplateError> {
            if self.want_delimiter.is_some() || self.delimiter_open {
                return Err(unsafe_at(
                    name,
                    "as a here-document delimiter",
                    "write a fixed delimiter, e.g. `<<EOF`".into(),
                ));
            }
            let inner = name.trim_start_matches('{').trim_end_matches('}');
            if self.dollar {
                return Err(unsafe_at(
                    name,
                    "right after `$`",
                    format!(
                        "`${name}` is the placeholder {name} after a `$`; write `${{{{{inner}}}}}` for the shell variable `{inner}`, or put the placeholder alone for the value"
                    ),
                ));
            }
            if self.escaped {
                return Err(unsafe_at(
                    name,
                    "right after a backslash",
                    format!("remove the backslash: `{name}` is inserted as plain text already"),
                ));
            }
            let form = match self.top() {
                Ctx::Cmd(_) | Ctx::Comment => Form::Bare,
                Ctx::Double => Form::InDouble,
                Ctx::Single => Form::InSingle,
                Ctx::Param(_) => {
                    return Err(unsafe_at(
                        name,
                        "inside `${...}`",
                        format!("assign the value first, e.g. `v={name}; echo \"${{{{x:-$v}}}}\"`"),
                    ))
                }
                Ctx::Arith(_) => {
                    return Err(unsafe_at(
                        name,
                        "inside `$((...))` arithmetic, which evaluates text as an expression",
                        format!("check that the value is a number first, e.g. `n={name}; case $n in ''|*[!0-9]*) exit 1;; esac; echo $((n + 1))`"),
                    ))
                }
                Ctx::Heredoc(doc) if doc.quoted => {
                    return Err(unsafe_at(
                        name,
                        "inside a here-document with a quoted delimiter, whose body is taken literally",
                        "use an unquoted delimiter (`<<EOF`), where the value is expanded as text".into(),
                    ))
                }
                Ctx::Heredoc(_) => Form::InDouble,
            };
            if let Some(Ctx::Heredoc(doc)) = self.stack.last_mut() {
                doc.line_has_value = true;
            }
            self.word_start = false;
            Ok(form)
        }
    }

    /// The expansion form of each placeholder of `pieces`, in order.
    pub(super) fn forms(pieces: &[Piece]) -> Result<Vec<Form>, TemplateError> {
        let mut lx = Lexer {
            stack: vec![Ctx::Cmd(CmdKind::Top)],
            escaped: false,
            dollar: false,
            word_start: true,
            pending: Vec::new(),
            want_delimiter: None,
            delimiter_open: false,
        };
        let mut forms = Vec::new();
        for piece in pieces {
            let name = match piece {
                Piece::Lit(s) => {
                    lx.feed(&s.chars().collect::<Vec<_>>());
                    continue;
                }
                other => other.placeholder().unwrap_or_default(),
            };
            forms.push(lx.placeholder(&name)?);
            lx.dollar = false;
        }
        Ok(forms)
    }
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
        let mut got = t.render(&rec, 41).unwrap().argv;
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
            t.render(&rec, 0).unwrap().argv,
            argv(&["p", "it's \"q\"", "1.5", "true", "null", r#"[1,"x"]"#])
        );
    }

    #[test]
    fn empty_argument_is_kept() {
        let t = Template::parse(&argv(&["p", ""])).unwrap();
        assert_eq!(t.render(&json!({}), 0).unwrap().argv, argv(&["p", ""]));
    }

    #[test]
    fn literal_key_with_dot_wins_over_path() {
        let t = Template::parse(&argv(&["p", "{a.b}"])).unwrap();
        let rec = json!({"a.b": "flat", "a": {"b": "nested"}});
        assert_eq!(t.render(&rec, 0).unwrap().argv[1], "flat");
        let rec = json!({"a": {"b": [10, 20]}});
        let t = Template::parse(&argv(&["p", "{a.b.1}"])).unwrap();
        assert_eq!(t.render(&rec, 0).unwrap().argv[1], "20");
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
    fn shell_mode_passes_values_in_variables() {
        let t = Template::parse_shell("printf '%s\\n' {v} {#} \"{v}\" '{v}' > /dev/null").unwrap();
        assert!(t.is_shell());
        assert_eq!(t.program().as_deref(), Some("sh"));
        let rec = json!({"v": "$(touch pwned); `id` && rm -rf ~ 'x'"});
        let out = t.render(&rec, 2).unwrap();
        assert_eq!(
            out.argv,
            argv(&[
                "sh",
                "-c",
                r#"printf '%s\n' "${HERDSMAN_ARG_1}" "${HERDSMAN_ARG_2}" "${HERDSMAN_ARG_1}" ''"${HERDSMAN_ARG_1}"'' > /dev/null"#
            ])
        );
        assert_eq!(
            out.env,
            vec![
                (
                    "HERDSMAN_ARG_1".to_string(),
                    rec["v"].as_str().unwrap().to_string()
                ),
                ("HERDSMAN_ARG_2".to_string(), "3".to_string()),
            ]
        );
        assert_eq!(
            t.display(),
            "printf '%s\\n' {v} {#} \"{v}\" '{v}' > /dev/null"
        );
    }

    #[test]
    fn shell_forms_follow_the_quoting_context() {
        let form = |line: &str| {
            let t = Template::parse_shell(line).unwrap();
            t.render(&json!({"v": 1}), 0).unwrap().argv[2].clone()
        };
        assert_eq!(
            form("echo $(echo {v})"),
            r#"echo $(echo "${HERDSMAN_ARG_1}")"#
        );
        assert_eq!(
            form("echo \"$(echo {v} \"{v}\")\""),
            r#"echo "$(echo "${HERDSMAN_ARG_1}" "${HERDSMAN_ARG_1}")""#
        );
        assert_eq!(
            form("echo `echo {v}`"),
            r#"echo `echo "${HERDSMAN_ARG_1}"`"#
        );
        assert_eq!(
            form("echo \"`echo {v}`\""),
            r#"echo "`echo "${HERDSMAN_ARG_1}"`""#
        );
        assert_eq!(
            form("cat <<EOF\n{v}\nEOF\necho {v}"),
            "cat <<EOF\n${HERDSMAN_ARG_1}\nEOF\necho \"${HERDSMAN_ARG_1}\""
        );
        assert_eq!(
            form("cat <<-'X'\n\tlit\n\tX\necho '{v}'"),
            "cat <<-'X'\n\tlit\n\tX\necho ''\"${HERDSMAN_ARG_1}\"''"
        );
        assert_eq!(
            form("echo x # it's {v}"),
            r#"echo x # it's "${HERDSMAN_ARG_1}""#
        );
        assert_eq!(form("echo x#'{v}'"), r#"echo x#''"${HERDSMAN_ARG_1}"''"#);
        assert_eq!(form("echo \\\\{v}"), r#"echo \\"${HERDSMAN_ARG_1}""#);
        assert_eq!(form("echo ${{x}}{v}"), r#"echo ${x}"${HERDSMAN_ARG_1}""#);
        assert_eq!(
            form("echo $((1+2)){v}"),
            r#"echo $((1+2))"${HERDSMAN_ARG_1}""#
        );
    }

    #[test]
    fn shell_refuses_unsafe_contexts() {
        for (line, want) in [
            ("cat <<'EOF'\n{v}\nEOF", "quoted delimiter"),
            ("cat <<E\"O\"F\nx{v}\nEOF", "quoted delimiter"),
            ("cat << {v}", "delimiter"),
            ("cat <<EOF{v}\nx\nEOF{v}", "delimiter"),
            ("echo $(( {v} ))", "arithmetic"),
            ("echo ${v}", "`${{v}}`"),
            ("echo \"\\{v}\"", "backslash"),
            ("echo ${{x:-{v}}}", "`${...}`"),
        ] {
            match Template::parse_shell(line) {
                Err(e @ TemplateError::UnsafeShellPlaceholder { .. }) => {
                    assert!(e.to_string().contains(want), "{line:?}: {e}")
                }
                other => panic!("{line:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn new_joins_argv_in_shell_mode() {
        let t = Template::new(&argv(&["echo", "{x}", "|", "cat"]), true).unwrap();
        assert_eq!(
            t.render(&json!({"x": "a b"}), 0).unwrap().argv[2],
            r#"echo "${HERDSMAN_ARG_1}" | cat"#
        );
    }

    #[test]
    fn render_json_parses_only_when_needed() {
        let t = Template::parse(&argv(&["p", "{}", "{#}"])).unwrap();
        assert!(!t.needs_fields());
        assert_eq!(
            t.render_json(b"not json", 0).unwrap().argv,
            argv(&["p", "not json", "1"])
        );
        let t = Template::parse(&argv(&["p", "{a}"])).unwrap();
        assert!(matches!(
            t.render_json(b"not json", 0),
            Err(RenderError::BadRecord(_))
        ));
        assert_eq!(
            t.render_json(br#"{"a":"x"}"#, 0).unwrap().argv,
            argv(&["p", "x"])
        );
    }

    #[test]
    fn whole_record_is_the_raw_line_and_colon_json_the_json() {
        let t = Template::parse(&argv(&["p", "{}", "{:json}", "{%}", "{#}"])).unwrap();
        assert!(!t.needs_fields());
        assert!(t.uses_slot());
        assert_eq!(t.display(), "p {} {:json} {%} {#}");
        // A line of text: `{}` unquoted, `{:json}` as a JSON string.
        let line = r#""it's \"1\"""#;
        assert_eq!(
            t.render_json_in_slot(line.as_bytes(), 0, 3).unwrap().argv,
            argv(&["p", r#"it's "1""#, line, "3", "1"])
        );
        assert_eq!(
            t.render(&json!("x y"), 1).unwrap().argv,
            argv(&["p", "x y", "\"x y\"", "1", "2"])
        );
        // Any other record: JSON for both.
        let obj = r#"{"b":1,"a":2}"#;
        assert_eq!(
            t.render_json(obj.as_bytes(), 0).unwrap().argv,
            argv(&["p", obj, obj, "1", "1"])
        );
        assert_eq!(
            t.render_json(b"17", 0).unwrap().argv,
            argv(&["p", "17", "17", "1", "1"])
        );
        // Parsed because a field is used, a string record still gives its text.
        let t = Template::parse(&argv(&["p", "{}", "{missing}"])).unwrap();
        assert!(matches!(
            t.render_json(b"\"s\"", 0),
            Err(RenderError::MissingField { .. })
        ));
        let t = Template::parse(&argv(&["p", "{}", "{k}"])).unwrap();
        assert_eq!(
            t.render_json(br#"{"k":"v"}"#, 0).unwrap().argv,
            argv(&["p", r#"{"k":"v"}"#, "v"])
        );
    }

    #[test]
    fn colon_names_are_reserved() {
        let e = Template::parse(&argv(&["p", "x{:yaml}"])).unwrap_err();
        assert_eq!(
            e,
            TemplateError::UnknownPlaceholder {
                placeholder: "{:yaml}".into(),
                arg: "x{:yaml}".into()
            }
        );
        let msg = e.to_string();
        assert!(msg.contains("{:json}") && msg.contains("{%}"), "{msg}");
        assert!(Template::parse_shell("echo {:Json}").is_err());
    }

    #[test]
    fn shell_mode_passes_slot_and_json_in_variables() {
        let t = Template::parse_shell("echo {%} {} {:json}").unwrap();
        let out = t.render_in_slot(&json!("a b"), 0, 2).unwrap();
        assert_eq!(
            out.argv[2],
            r#"echo "${HERDSMAN_ARG_1}" "${HERDSMAN_ARG_2}" "${HERDSMAN_ARG_3}""#
        );
        assert_eq!(
            out.env,
            vec![
                ("HERDSMAN_ARG_1".to_string(), "2".to_string()),
                ("HERDSMAN_ARG_2".to_string(), "a b".to_string()),
                ("HERDSMAN_ARG_3".to_string(), "\"a b\"".to_string()),
            ]
        );
    }

    #[test]
    fn program_is_none_when_templated() {
        let t = Template::parse(&argv(&["{tool}", "x"])).unwrap();
        assert_eq!(t.program(), None);
    }
}

#[cfg(test)]
mod chain_tests {
    use std::error::Error;

    use super::*;
    use crate::{FailureKind, WorkerFailure};

    /// One value of every error of this crate; the matches make a new variant fail to compile
    /// here until it is added.
    fn every_error() -> Vec<Box<dyn Error>> {
        let arg = || "x{".to_string();
        let templates = vec![
            TemplateError::Empty,
            TemplateError::Unclosed { arg: arg() },
            TemplateError::Unmatched { arg: arg() },
            TemplateError::UnknownPlaceholder {
                placeholder: "{:x}".into(),
                arg: arg(),
            },
            TemplateError::Nested { arg: arg() },
            TemplateError::UnsafeShellPlaceholder {
                placeholder: "{}".into(),
                context: "inside single quotes".into(),
                hint: "move it out of the quotes".into(),
            },
        ];
        let renders = vec![
            RenderError::MissingField { field: "id".into() },
            RenderError::NulByte {
                placeholder: "{}".into(),
            },
            RenderError::BadRecord("expected value at line 1".into()),
        ];
        let mut all: Vec<Box<dyn Error>> = Vec::new();
        for e in templates {
            match e {
                TemplateError::Empty
                | TemplateError::Unclosed { .. }
                | TemplateError::Unmatched { .. }
                | TemplateError::UnknownPlaceholder { .. }
                | TemplateError::Nested { .. }
                | TemplateError::UnsafeShellPlaceholder { .. } => all.push(Box::new(e)),
            }
        }
        for e in renders {
            match e {
                RenderError::MissingField { .. }
                | RenderError::NulByte { .. }
                | RenderError::BadRecord(_) => all.push(Box::new(e)),
            }
        }
        all.push(Box::new(WorkerFailure {
            kind: FailureKind::WorkerExited,
            message: "the worker exited with status 1".into(),
            retryable: true,
            retry_after: None,
            worker: 0,
            stderr_tail: Vec::new(),
        }));
        all
    }

    #[test]
    fn no_message_repeats_its_cause() {
        for e in every_error() {
            assert!(!e.to_string().is_empty());
            let mut outer: &dyn Error = e.as_ref();
            while let Some(inner) = outer.source() {
                let (o, i) = (outer.to_string(), inner.to_string());
                assert!(!o.contains(&i), "`{o}` repeats its cause `{i}`");
                outer = inner;
            }
        }
    }

    #[test]
    fn no_message_names_a_command_line_flag() {
        for e in every_error() {
            let text = e.to_string();
            assert!(!text.contains("--"), "`{text}` names a command-line flag");
        }
    }
}
