//! PostgreSQL input (feature `database`): `postgres://user@host:port/db?table=items`, or the
//! rows of a query, read in key order a page at a time (see `database.rs`).
//!
//! The server turns each row into JSON itself (`row_to_json`), so types are its own and
//! faithful: integers and floats as JSON numbers (`NaN` and infinities as the strings
//! `"NaN"`, `"Infinity"`, `"-Infinity"`), `numeric` as a string (exact, never a float), text
//! as strings, booleans, `null`, `bytea` as a base64 string, `json`/`jsonb` nested, arrays as
//! JSON arrays, dates as `YYYY-MM-DD`, timestamps as RFC 3339 (`timestamptz` in UTC with a
//! `+00:00` offset, since the session's time zone is set to UTC; `timestamp` without an
//! offset), anything else as the text PostgreSQL prints for it. A password may be in the URL
//! or in the `PGPASSWORD` environment variable; it is never shown in a message.

use super::{FormatEntry, Location, OpenInput, RecordReader};
use crate::error::SourceError;
use crate::format::Format;

/// PostgreSQL's entry in the format registry.
pub(super) const ENTRY: FormatEntry = FormatEntry {
    format: Format::Postgres,
    names: &["postgres", "postgresql"],
    extensions: &[],
    check_on_open: false,
    open,
};

fn open(input: &OpenInput<'_>, at: Option<Location>) -> Result<Box<dyn RecordReader>, SourceError> {
    #[cfg(feature = "database")]
    {
        imp::open(input, at)
    }
    #[cfg(not(feature = "database"))]
    {
        let _ = at;
        Err(super::database_off(input))
    }
}

#[cfg(feature = "database")]
mod imp {
    use postgres::types::Type;
    use postgres::{Client, NoTls};

    use super::super::database::{
        canon_part, key_columns, key_positions, key_tuple, null_test, order_by, parse_url,
        quote_ident, source_sql, usage, Found, KeysetReader, Pages, Row,
    };
    use super::super::{Location, OpenInput, RecordReader};
    use crate::error::SourceError;
    use crate::input::InputPath;

    pub(super) fn open(
        input: &OpenInput<'_>,
        at: Option<Location>,
    ) -> Result<Box<dyn RecordReader>, SourceError> {
        let InputPath::File(p) = input.path else {
            return Err(usage(input, "a PostgreSQL input is a postgres:// URL"));
        };
        let parsed = parse_url(&p.to_string_lossy());
        let mut config: postgres::Config = parsed.connection.parse().map_err(|e| {
            usage(
                input,
                &format!("its URL cannot be read ({e}); write postgres://user@host:port/database?table=NAME"),
            )
        })?;
        if config.get_password().is_none() {
            if let Ok(pw) = std::env::var("PGPASSWORD") {
                config.password(pw);
            }
        }
        let mut client = config.connect(NoTls).map_err(|e| SourceError::Open {
            file: input.name.to_string(),
            source: std::io::Error::other(e.to_string()),
        })?;
        let fail = |e: postgres::Error| {
            let text = match e.as_db_error() {
                Some(db) => db.message().to_string(),
                None => e.to_string(),
            };
            usage(input, &format!("its query cannot be run ({text})"))
        };
        client
            .batch_execute("SET TIME ZONE 'UTC'; SET extra_float_digits = 1")
            .map_err(fail)?;
        let table = parsed.table.as_deref();
        let sql = source_sql(input, table)?;
        let keys = key_columns(input, table, |t| primary_key(&mut client, t).map_err(fail))?;
        let stmt = client
            .prepare(&format!("SELECT * FROM ({sql}) AS t LIMIT 0"))
            .map_err(fail)?;
        let columns: Vec<(String, Type)> = stmt
            .columns()
            .iter()
            .map(|c| (c.name().to_string(), c.type_().clone()))
            .collect();
        let names: Vec<String> = columns.iter().map(|(n, _)| n.clone()).collect();
        let positions = key_positions(input, &names, &keys)?;
        // What each column becomes in the row's JSON object.
        let fields: Vec<String> = columns
            .iter()
            .map(|(n, ty)| {
                let col = format!("t.{}", quote_ident(n));
                let expr = match *ty {
                    Type::NUMERIC => format!("{col}::text"),
                    Type::NUMERIC_ARRAY => format!("{col}::text[]"),
                    Type::BYTEA => format!("translate(encode({col}, 'base64'), E'\\n', '')"),
                    _ => col,
                };
                format!("{expr} AS {}", quote_ident(n))
            })
            .collect();
        let key_text: Vec<String> = keys
            .iter()
            .map(|k| format!("t.{}::text", quote_ident(k)))
            .collect();
        let params: Vec<String> = positions
            .iter()
            .enumerate()
            .map(|(i, &p)| format!("${}::text::{}", i + 1, type_name(&columns[p].1)))
            .collect();
        let params = if params.len() == 1 {
            params[0].clone()
        } else {
            format!("({})", params.join(", "))
        };
        let order = order_by(&keys);
        let (null, not_null) = (null_test(&keys, true), null_test(&keys, false));
        let select = format!(
            "SELECT row_to_json(r)::text, {} FROM ({sql}) AS t CROSS JOIN LATERAL (SELECT {}) AS r",
            key_text.join(", "),
            fields.join(", ")
        );
        let n = keys.len();
        let pages = PgPages {
            first: client
                .prepare_typed(
                    &format!("{select} ORDER BY {order} LIMIT $1"),
                    &[Type::INT8],
                )
                .map_err(fail)?,
            next: client
                .prepare_typed(
                    &format!(
                        "{select} WHERE {} >= {params} ORDER BY {order} LIMIT ${}",
                        key_tuple(&keys),
                        n + 1
                    ),
                    &[vec![Type::TEXT; n], vec![Type::INT8]].concat(),
                )
                .map_err(fail)?,
            null_check: client
                .prepare(&format!("SELECT 1 FROM ({sql}) AS t WHERE {null} LIMIT 1"))
                .map_err(fail)?,
            key_at: client
                .prepare_typed(
                    &format!(
                        "SELECT {} FROM ({sql}) AS t WHERE {not_null} ORDER BY {order} LIMIT 1 OFFSET $1",
                        key_text.join(", ")
                    ),
                    &[Type::INT8],
                )
                .map_err(fail)?,
            client,
            keys: n,
        };
        Ok(Box::new(KeysetReader::open(input, &keys, pages, at)?))
    }

    /// A type's name as a cast spells it: schema-qualified and quoted.
    fn type_name(ty: &Type) -> String {
        format!("{}.{}", quote_ident(ty.schema()), quote_ident(ty.name()))
    }

    /// The primary key columns of `table`, in key order.
    fn primary_key(client: &mut Client, table: &str) -> Result<Vec<String>, postgres::Error> {
        let quoted = super::super::database::quote_table(table);
        let rows = client.query(
            "SELECT a.attname::text FROM pg_index i \
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) \
             WHERE i.indrelid = $1::text::regclass AND i.indisprimary \
             ORDER BY array_position(i.indkey::int2[], a.attnum)",
            &[&quoted],
        )?;
        Ok(rows.iter().map(|r| r.get::<_, String>(0)).collect())
    }

    struct PgPages {
        client: Client,
        first: postgres::Statement,
        next: postgres::Statement,
        null_check: postgres::Statement,
        key_at: postgres::Statement,
        keys: usize,
    }

    /// The key's text values and canonical bytes (`None` when a part is null).
    fn key_of(r: &postgres::Row, from: usize, n: usize) -> (Vec<Option<String>>, Option<Vec<u8>>) {
        let key: Vec<Option<String>> = (from..from + n).map(|i| r.get(i)).collect();
        let mut c = Vec::new();
        for part in &key {
            match part {
                Some(s) => canon_part(&mut c, b't', s.as_bytes()),
                None => return (key, None),
            }
        }
        (key, Some(c))
    }

    fn message(e: postgres::Error) -> String {
        match e.as_db_error() {
            Some(db) => db.message().to_string(),
            None => e.to_string(),
        }
    }

    impl Pages for PgPages {
        type Key = Vec<Option<String>>;

        fn page(
            &mut self,
            from: Option<&Self::Key>,
            limit: usize,
        ) -> Result<Vec<Row<Self::Key>>, String> {
            let limit = limit as i64;
            let rows = match from {
                None => self.client.query(&self.first, &[&limit]),
                Some(k) => {
                    let mut p: Vec<&(dyn postgres::types::ToSql + Sync)> =
                        k.iter().map(|v| v as _).collect();
                    p.push(&limit);
                    self.client.query(&self.next, &p)
                }
            }
            .map_err(message)?;
            Ok(rows
                .iter()
                .map(|r| {
                    let text: &str = r.get(0);
                    // jsonb values come with spaces; records are compact.
                    let mut json = Vec::with_capacity(text.len());
                    crate::json::write_compact(&mut json, text.as_bytes());
                    let (key, canon) = key_of(r, 1, self.keys);
                    Row { json, key, canon }
                })
                .collect())
        }

        fn has_null_key(&mut self) -> Result<bool, String> {
            let rows = self.client.query(&self.null_check, &[]).map_err(message)?;
            Ok(!rows.is_empty())
        }

        fn key_at(&mut self, ordinal: u64) -> Result<Found<Self::Key>, String> {
            let rows = self
                .client
                .query(&self.key_at, &[&(ordinal as i64)])
                .map_err(message)?;
            Ok(rows.first().map(|r| key_of(r, 0, self.keys)))
        }
    }
}
