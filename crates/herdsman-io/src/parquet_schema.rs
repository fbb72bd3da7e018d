//! The schema of a Parquet output, as given with `--schema FILE`: parsed and checked here,
//! with no Parquet library involved, so that a bad schema is a usage error before any work
//! and the description does not depend on the `parquet` feature.
//!
//! Two spellings are accepted. JSON: `{"fields": [{"name": "id", "type": "int64",
//! "nullable": false}, ...]}` (or the bare list of fields). Arrow-style text, one column per
//! line as `pyarrow` prints a schema: `id: int64 not null`, `tags: list<item: string>`,
//! `price: decimal128(10, 2)`, `at: timestamp[us, tz=UTC]`, `point: struct<x: double, y:
//! double>`. The type of a JSON field is spelled as in the text form.

/// The unit of a timestamp column.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TimeUnit {
    /// Seconds.
    Second,
    /// Milliseconds.
    Millisecond,
    /// Microseconds.
    Microsecond,
    /// Nanoseconds.
    Nanosecond,
}

impl TimeUnit {
    fn name(self) -> &'static str {
        match self {
            TimeUnit::Second => "s",
            TimeUnit::Millisecond => "ms",
            TimeUnit::Microsecond => "us",
            TimeUnit::Nanosecond => "ns",
        }
    }
}

/// The type of a column (or of a list item or struct field) of a Parquet output.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ColumnType {
    /// `bool`: JSON `true` / `false`.
    Bool,
    /// `int8` … `int64`, `uint8` … `uint64`: JSON integers in range. The bits and whether
    /// the integer is signed.
    Int {
        /// 8, 16, 32 or 64.
        bits: u8,
        /// Whether negative numbers are allowed.
        signed: bool,
    },
    /// `float` (32 bits) or `double` (64 bits): JSON numbers.
    Float {
        /// 32 or 64.
        bits: u8,
    },
    /// `string`: JSON strings.
    String,
    /// `date32`: `YYYY-MM-DD` strings.
    Date,
    /// `timestamp[unit]` or `timestamp[unit, tz=ZONE]`: RFC 3339 strings (or integers in the
    /// unit since the epoch).
    Timestamp {
        /// The unit stored.
        unit: TimeUnit,
        /// The time zone (`UTC`, `+02:00`), or none for a local date and time.
        tz: Option<String>,
    },
    /// `decimal128(precision, scale)`: decimal strings (or JSON numbers) that fit.
    Decimal {
        /// Digits in all, 1 to 38.
        precision: u8,
        /// Digits after the point.
        scale: i8,
    },
    /// `list<T>` (or `list<item: T>`): JSON arrays whose items are of type T.
    List(Box<Column>),
    /// `struct<a: T, b: U>`: JSON objects with those keys.
    Struct(Vec<Column>),
}

/// A named, typed column (or struct field, or list item) of a Parquet output.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Column {
    /// The name (the JSON key).
    pub name: String,
    /// The type.
    pub ty: ColumnType,
    /// Whether null (or a missing key) is allowed. Columns are nullable unless spelled
    /// `not null`.
    pub nullable: bool,
}

/// The columns of a Parquet output, in order.
///
/// ```
/// use herdsman_io::{ColumnType, ParquetSchema};
/// let s = ParquetSchema::parse("id: int64 not null\ntags: list<item: string>\n").unwrap();
/// assert_eq!(s.columns[0].ty, ColumnType::Int { bits: 64, signed: true });
/// assert!(!s.columns[0].nullable);
/// let j = ParquetSchema::parse(r#"{"fields": [{"name": "id", "type": "int64", "nullable": false},
///                                             {"name": "tags", "type": "list<string>"}]}"#).unwrap();
/// assert_eq!(s, j);
/// assert!(ParquetSchema::parse("id: int65").is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ParquetSchema {
    /// The top-level columns.
    pub columns: Vec<Column>,
}

impl ParquetSchema {
    /// Parses a schema description (JSON or Arrow-style text; see the module docs). The error
    /// says what is wrong and where.
    pub fn parse(text: &str) -> Result<ParquetSchema, String> {
        let trimmed = text.trim_start();
        let columns = if trimmed.starts_with('{') || trimmed.starts_with('[') {
            parse_json(trimmed)?
        } else {
            parse_text(text)?
        };
        if columns.is_empty() {
            return Err("the schema names no column".into());
        }
        check_unique(&columns, "the schema")?;
        Ok(ParquetSchema { columns })
    }

    /// The schema in the Arrow-style text form, one column per line.
    ///
    /// ```
    /// use herdsman_io::ParquetSchema;
    /// let text = "a: decimal128(10, 2) not null\nb: timestamp[ms, tz=UTC]\n";
    /// assert_eq!(ParquetSchema::parse(text).unwrap().to_text(), text);
    /// ```
    pub fn to_text(&self) -> String {
        self.columns
            .iter()
            .map(|c| format!("{}\n", column_text(c)))
            .collect()
    }
}

fn column_text(c: &Column) -> String {
    let null = if c.nullable { "" } else { " not null" };
    format!("{}: {}{null}", c.name, type_text(&c.ty))
}

fn type_text(t: &ColumnType) -> String {
    match t {
        ColumnType::Bool => "bool".into(),
        ColumnType::Int { bits, signed } => {
            format!("{}int{bits}", if *signed { "" } else { "u" })
        }
        ColumnType::Float { bits: 32 } => "float".into(),
        ColumnType::Float { .. } => "double".into(),
        ColumnType::String => "string".into(),
        ColumnType::Date => "date32".into(),
        ColumnType::Timestamp { unit, tz: None } => format!("timestamp[{}]", unit.name()),
        ColumnType::Timestamp { unit, tz: Some(tz) } => {
            format!("timestamp[{}, tz={tz}]", unit.name())
        }
        ColumnType::Decimal { precision, scale } => format!("decimal128({precision}, {scale})"),
        ColumnType::List(item) => format!("list<{}>", column_text(item)),
        ColumnType::Struct(fields) => format!(
            "struct<{}>",
            fields
                .iter()
                .map(column_text)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn check_unique(columns: &[Column], what: &str) -> Result<(), String> {
    let mut seen = std::collections::HashSet::new();
    for c in columns {
        if !seen.insert(c.name.as_str()) {
            return Err(format!("{what} names the column `{}` twice", c.name));
        }
    }
    Ok(())
}

fn parse_json(text: &str) -> Result<Vec<Column>, String> {
    let v: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("the schema is not valid JSON: {e}"))?;
    let fields = match &v {
        serde_json::Value::Array(a) => a,
        serde_json::Value::Object(o) => match o.get("fields") {
            Some(serde_json::Value::Array(a)) => a,
            _ => {
                return Err("a JSON schema is an object with a `fields` list, or that list".into())
            }
        },
        _ => unreachable!("the caller checked the first character"),
    };
    fields
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let name = f
                .get("name")
                .and_then(|n| n.as_str())
                .ok_or_else(|| format!("field {} of the schema has no `name` string", i + 1))?;
            let ty = f.get("type").and_then(|n| n.as_str()).ok_or_else(|| {
                format!("field `{name}` of the schema has no `type` string such as \"int64\"")
            })?;
            let nullable = match f.get("nullable") {
                None => true,
                Some(serde_json::Value::Bool(b)) => *b,
                Some(_) => {
                    return Err(format!("`nullable` of field `{name}` is not true or false"))
                }
            };
            let mut p = Parser::new(ty);
            let ty = p
                .ty()
                .and_then(|t| p.end().map(|()| t))
                .map_err(|e| format!("field `{name}`: {e}"))?;
            Ok(Column {
                name: name.to_string(),
                ty,
                nullable,
            })
        })
        .collect()
}

fn parse_text(text: &str) -> Result<Vec<Column>, String> {
    let mut columns = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        // pyarrow repeats the fields of nested types on indented `child 0, x: T` lines.
        if raw.starts_with(char::is_whitespace) && line.starts_with("child ") {
            continue;
        }
        // pyarrow prints its metadata after a `-- schema metadata --` line.
        if line.starts_with("--") {
            break;
        }
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut p = Parser::new(line);
        let c = p
            .column()
            .and_then(|c| p.end().map(|()| c))
            .map_err(|e| format!("line {} of the schema: {e}", i + 1))?;
        columns.push(c);
    }
    Ok(columns)
}

/// A small recursive-descent parser of `name: type [not null]`.
struct Parser<'a> {
    s: &'a str,
    at: usize,
}

impl<'a> Parser<'a> {
    fn new(s: &'a str) -> Self {
        Parser { s, at: 0 }
    }

    fn rest(&self) -> &'a str {
        &self.s[self.at..]
    }

    fn skip_ws(&mut self) {
        let r = self.rest();
        self.at += r.len() - r.trim_start().len();
    }

    fn eat(&mut self, token: &str) -> bool {
        self.skip_ws();
        if self.rest().starts_with(token) {
            self.at += token.len();
            true
        } else {
            false
        }
    }

    fn expect(&mut self, token: &str) -> Result<(), String> {
        if self.eat(token) {
            Ok(())
        } else {
            Err(format!("expected `{token}` at `{}`", self.rest()))
        }
    }

    fn end(&mut self) -> Result<(), String> {
        self.skip_ws();
        if self.rest().is_empty() {
            Ok(())
        } else {
            Err(format!("unexpected `{}`", self.rest()))
        }
    }

    /// A word of letters, digits and `_`.
    fn word(&mut self) -> &'a str {
        self.skip_ws();
        let r = self.rest();
        let n = r
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(r.len());
        self.at += n;
        &r[..n]
    }

    fn number(&mut self) -> Result<i64, String> {
        self.skip_ws();
        let r = self.rest();
        let n = r
            .char_indices()
            .find(|&(i, c)| !(c.is_ascii_digit() || (i == 0 && c == '-')))
            .map_or(r.len(), |(i, _)| i);
        let v = r[..n]
            .parse()
            .map_err(|_| format!("expected a number at `{r}`"))?;
        self.at += n;
        Ok(v)
    }

    /// `name: type [not null]`; the name runs to the first `:`.
    fn column(&mut self) -> Result<Column, String> {
        self.skip_ws();
        let r = self.rest();
        let colon = r
            .find(':')
            .ok_or_else(|| format!("expected `name: type` at `{r}`"))?;
        let name = r[..colon].trim().trim_matches('"').to_string();
        if name.is_empty() {
            return Err(format!("a column has no name at `{r}`"));
        }
        self.at += colon + 1;
        let ty = self.ty()?;
        let save = self.at;
        let nullable = if self.eat("not") && self.eat("null") {
            false
        } else {
            self.at = save;
            true
        };
        Ok(Column { name, ty, nullable })
    }

    fn ty(&mut self) -> Result<ColumnType, String> {
        let at = self.rest().trim_start().to_string();
        let w = self.word().to_ascii_lowercase();
        let int = |bits, signed| Ok(ColumnType::Int { bits, signed });
        match w.as_str() {
            "bool" | "boolean" => Ok(ColumnType::Bool),
            "int8" => int(8, true),
            "int16" => int(16, true),
            "int32" => int(32, true),
            "int64" | "int" | "integer" => int(64, true),
            "uint8" => int(8, false),
            "uint16" => int(16, false),
            "uint32" => int(32, false),
            "uint64" => int(64, false),
            "float" | "float32" => Ok(ColumnType::Float { bits: 32 }),
            "double" | "float64" => Ok(ColumnType::Float { bits: 64 }),
            "string" | "utf8" | "large_string" | "large_utf8" => Ok(ColumnType::String),
            "date32" | "date" => {
                // pyarrow prints `date32[day]`.
                if self.eat("[") {
                    self.expect("day")?;
                    self.expect("]")?;
                }
                Ok(ColumnType::Date)
            }
            "timestamp" => {
                self.expect("[")?;
                let unit = match self.word() {
                    "s" => TimeUnit::Second,
                    "ms" => TimeUnit::Millisecond,
                    "us" => TimeUnit::Microsecond,
                    "ns" => TimeUnit::Nanosecond,
                    u => return Err(format!("unknown timestamp unit `{u}`; use s, ms, us or ns")),
                };
                let tz = if self.eat(",") {
                    self.expect("tz")?;
                    self.expect("=")?;
                    self.skip_ws();
                    let r = self.rest();
                    let n = r.find(']').ok_or("expected `]` after the time zone")?;
                    let tz = r[..n].trim().to_string();
                    self.at += n;
                    check_tz(&tz)?;
                    Some(tz)
                } else {
                    None
                };
                self.expect("]")?;
                Ok(ColumnType::Timestamp { unit, tz })
            }
            "decimal" | "decimal128" => {
                self.expect("(")?;
                let precision = self.number()?;
                self.expect(",")?;
                let scale = self.number()?;
                self.expect(")")?;
                if !(1..=38).contains(&precision) {
                    return Err(format!("decimal precision {precision} is not between 1 and 38"));
                }
                if scale < -38 || scale > precision {
                    return Err(format!(
                        "decimal scale {scale} does not fit precision {precision}"
                    ));
                }
                Ok(ColumnType::Decimal {
                    precision: precision as u8,
                    scale: scale as i8,
                })
            }
            "list" | "large_list" => {
                self.expect("<")?;
                self.skip_ws();
                // `list<item: T>` (pyarrow's spelling) or `list<T>`.
                let named = {
                    let r = self.rest();
                    let colon = r.find(':');
                    let open = r.find(['<', '(', '[', '>']);
                    matches!((colon, open), (Some(c), Some(o)) if c < o)
                        || matches!((colon, open), (Some(_), None))
                };
                let item = if named {
                    self.column()?
                } else {
                    let ty = self.ty()?;
                    Column {
                        name: "item".into(),
                        ty,
                        nullable: true,
                    }
                };
                self.expect(">")?;
                Ok(ColumnType::List(Box::new(item)))
            }
            "struct" => {
                self.expect("<")?;
                let mut fields = Vec::new();
                if !self.eat(">") {
                    loop {
                        fields.push(self.struct_field()?);
                        if self.eat(">") {
                            break;
                        }
                        self.expect(",")?;
                    }
                }
                check_unique(&fields, "a struct")?;
                Ok(ColumnType::Struct(fields))
            }
            "" => Err(format!("expected a type at `{at}`")),
            other => Err(format!(
                "unknown type `{other}`; use bool, int8..int64, uint8..uint64, float, double, string, date32, timestamp[us], decimal128(p, s), list<T> or struct<a: T, ...>"
            )),
        }
    }

    /// A struct field: `name: type [not null]`, where the name runs to the first `:`.
    fn struct_field(&mut self) -> Result<Column, String> {
        self.column()
    }
}

/// Time zones the Parquet writer understands without a time-zone database: `UTC`, `Z` or a
/// fixed offset such as `+02:00`.
fn check_tz(tz: &str) -> Result<(), String> {
    let ok = matches!(tz, "UTC" | "utc" | "Z" | "z")
        || (tz.len() == 6
            && matches!(&tz[..1], "+" | "-")
            && tz[1..3].bytes().all(|b| b.is_ascii_digit())
            && &tz[3..4] == ":"
            && tz[4..6].bytes().all(|b| b.is_ascii_digit()));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "time zone `{tz}` is not supported; use UTC or a fixed offset such as +02:00"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_types_parse_and_print_back() {
        let text = "id: int64 not null\n\
                    point: struct<x: double, y: double not null, tags: list<item: string>>\n\
                    at: timestamp[ns]\n\
                    day: date32\n\
                    n: uint8\n\
                    ok: bool\n";
        let s = ParquetSchema::parse(text).unwrap();
        assert_eq!(ParquetSchema::parse(&s.to_text()).unwrap(), s);
        let ColumnType::Struct(f) = &s.columns[1].ty else {
            panic!("{s:?}")
        };
        assert_eq!(f.len(), 3);
        assert!(!f[1].nullable);
        assert!(matches!(&f[2].ty, ColumnType::List(i) if i.ty == ColumnType::String));
        // pyarrow's printed form, with its metadata section.
        let py = "a: date32[day]\nb: list<item: int64>\n  child 0, item: int64\n-- schema metadata --\npandas: '{...'\n";
        assert_eq!(ParquetSchema::parse(py).unwrap().columns.len(), 2);
    }

    #[test]
    fn mistakes_are_named() {
        for (text, needle) in [
            ("a: decimal128(40, 2)", "precision 40"),
            ("a: timestamp[us, tz=Europe/Paris]", "Europe/Paris"),
            ("a: int64\na: string", "twice"),
            ("a int64", "line 1"),
            ("", "no column"),
            ("{\"fields\": [{\"name\": \"a\"}]}", "`type`"),
            ("a: list<int64", "expected `>`"),
        ] {
            let e = ParquetSchema::parse(text).unwrap_err();
            assert!(e.contains(needle), "{text:?}: {e}");
        }
    }
}
