//! SQLite input (feature `database`): `sqlite:///path/db.sqlite?table=items` (an absolute
//! path after the third slash; `sqlite://rel.db` is relative), or the rows of a query, read in
//! key order a page at a time (see `database.rs`).
//!
//! The file is opened read-only: a missing file is an error, never a new empty database.
//! Each row becomes a JSON object keyed by column name, in column order, with SQLite's own
//! storage classes: integers and reals as JSON numbers (an infinity as the string
//! `"Infinity"` or `"-Infinity"`), text as strings, blobs as base64 strings, `NULL` as `null`.
//! SQLite has no boolean, date or JSON type: such columns come as the integers or text they
//! are stored as.

use super::{FormatEntry, Location, OpenInput, RecordReader};
use crate::error::SourceError;
use crate::format::Format;

/// SQLite's entry in the format registry.
pub(super) const ENTRY: FormatEntry = FormatEntry {
    format: Format::Sqlite,
    names: &["sqlite"],
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
    use rusqlite::types::{Value, ValueRef};
    use rusqlite::{params_from_iter, Connection, OpenFlags};

    use super::super::database::{
        canon_part, key_columns, key_positions, key_tuple, null_test, order_by, parse_url,
        quote_ident, source_sql, usage, write_base64, Found, KeysetReader, Pages, Row,
    };
    use super::super::{Location, OpenInput, RecordReader};
    use crate::error::SourceError;
    use crate::input::InputPath;

    pub(super) fn open(
        input: &OpenInput<'_>,
        at: Option<Location>,
    ) -> Result<Box<dyn RecordReader>, SourceError> {
        let InputPath::File(p) = input.path else {
            return Err(usage(input, "an SQLite input is a sqlite:// URL"));
        };
        let url = p.to_string_lossy();
        let rest = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("SQLITE://"))
            .ok_or_else(|| usage(input, "an SQLite input is a sqlite:// URL"))?;
        let parsed = parse_url(rest);
        let path = super::super::database::percent_decode(&parsed.connection);
        if path.is_empty() {
            return Err(usage(
                input,
                "it names no database file; write sqlite:///absolute/path.db or sqlite://relative.db",
            ));
        }
        let conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| SourceError::Open {
            file: input.name.to_string(),
            source: std::io::Error::other(e.to_string()),
        })?;
        conn.busy_timeout(std::time::Duration::from_secs(30))
            .map_err(|e| usage(input, &e.to_string()))?;
        let table = parsed.table.as_deref();
        let sql = source_sql(input, table)?;
        let keys = key_columns(input, table, |t| {
            primary_key(&conn, t).map_err(|m| usage(input, &m))
        })?;
        let columns: Vec<String> = {
            let stmt = conn
                .prepare(&format!("SELECT * FROM ({sql}) AS t LIMIT 0"))
                .map_err(|e| usage(input, &format!("its query cannot be run ({e})")))?;
            stmt.column_names().into_iter().map(String::from).collect()
        };
        let positions = key_positions(input, &columns, &keys)?;
        let mut names = Vec::with_capacity(columns.len());
        for c in &columns {
            let mut k = Vec::new();
            crate::json::write_str(&mut k, c.as_bytes());
            k.push(b':');
            names.push(k);
        }
        let order = order_by(&keys);
        let (null, not_null) = (null_test(&keys, true), null_test(&keys, false));
        let tuple = key_tuple(&keys);
        let params: Vec<String> = (1..=keys.len()).map(|i| format!("?{i}")).collect();
        let params = if keys.len() == 1 {
            params[0].clone()
        } else {
            format!("({})", params.join(", "))
        };
        let n = keys.len();
        let pages = SqlitePages {
            first: format!("SELECT * FROM ({sql}) AS t ORDER BY {order} LIMIT ?1"),
            next: format!(
                "SELECT * FROM ({sql}) AS t WHERE {tuple} >= {params} ORDER BY {order} LIMIT ?{}",
                n + 1
            ),
            null_check: format!("SELECT 1 FROM ({sql}) AS t WHERE {null} LIMIT 1"),
            key_at: format!(
                "SELECT {} FROM ({sql}) AS t WHERE {not_null} ORDER BY {order} LIMIT 1 OFFSET ?1",
                keys.iter()
                    .map(|k| format!("t.{}", quote_ident(k)))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            conn,
            names,
            positions,
        };
        Ok(Box::new(KeysetReader::open(input, &keys, pages, at)?))
    }

    /// The primary key columns of `table`, in key order.
    fn primary_key(conn: &Connection, table: &str) -> Result<Vec<String>, String> {
        let (schema, name) = match table.split_once('.') {
            Some((s, n)) => (Some(s), n),
            None => (None, table),
        };
        let sql = match schema {
            Some(s) => format!(
                "PRAGMA {}.table_info({})",
                quote_ident(s),
                quote_ident(name)
            ),
            None => format!("PRAGMA table_info({})", quote_ident(name)),
        };
        let mut stmt = conn.prepare(&sql).map_err(|e| e.to_string())?;
        let mut cols: Vec<(i64, String)> = stmt
            .query_map([], |r| Ok((r.get::<_, i64>(5)?, r.get::<_, String>(1)?)))
            .map_err(|e| e.to_string())?
            .collect::<Result<_, _>>()
            .map_err(|e| e.to_string())?;
        if cols.is_empty() {
            return Err(format!("it has no table `{table}`; name a table it has"));
        }
        cols.retain(|(pk, _)| *pk > 0);
        cols.sort();
        Ok(cols.into_iter().map(|(_, c)| c).collect())
    }

    struct SqlitePages {
        conn: Connection,
        first: String,
        next: String,
        null_check: String,
        key_at: String,
        /// Each column's name, JSON-quoted, with its colon.
        names: Vec<Vec<u8>>,
        positions: Vec<usize>,
    }

    /// The canonical bytes of a key value (`None` for null).
    fn canon(out: &mut Vec<u8>, v: ValueRef<'_>) -> bool {
        match v {
            ValueRef::Null => return false,
            ValueRef::Integer(i) => canon_part(out, b'i', &i.to_le_bytes()),
            ValueRef::Real(f) => canon_part(out, b'r', &f.to_le_bytes()),
            ValueRef::Text(t) => canon_part(out, b't', t),
            ValueRef::Blob(b) => canon_part(out, b'b', b),
        }
        true
    }

    fn write_value(out: &mut Vec<u8>, v: ValueRef<'_>) {
        match v {
            ValueRef::Null => out.extend_from_slice(b"null"),
            ValueRef::Integer(i) => out.extend_from_slice(i.to_string().as_bytes()),
            ValueRef::Real(f) if f.is_finite() => {
                let s = serde_json::to_string(&f).expect("a finite float serializes");
                out.extend_from_slice(s.as_bytes());
            }
            ValueRef::Real(f) if f.is_nan() => out.extend_from_slice(b"\"NaN\""),
            ValueRef::Real(f) if f > 0.0 => out.extend_from_slice(b"\"Infinity\""),
            ValueRef::Real(_) => out.extend_from_slice(b"\"-Infinity\""),
            ValueRef::Text(t) => crate::json::write_str(out, String::from_utf8_lossy(t).as_bytes()),
            ValueRef::Blob(b) => write_base64(out, b),
        }
    }

    impl SqlitePages {
        fn rows(&self, sql: &str, params: Vec<Value>) -> rusqlite::Result<Vec<Row<Vec<Value>>>> {
            let mut stmt = self.conn.prepare_cached(sql)?;
            let mut rows = stmt.query(params_from_iter(params))?;
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                let mut json = Vec::with_capacity(64 * self.names.len());
                json.push(b'{');
                for (i, name) in self.names.iter().enumerate() {
                    if i > 0 {
                        json.push(b',');
                    }
                    json.extend_from_slice(name);
                    write_value(&mut json, r.get_ref(i)?);
                }
                json.push(b'}');
                let mut c = Vec::new();
                let mut key = Vec::with_capacity(self.positions.len());
                let mut null = false;
                for &p in &self.positions {
                    let v = r.get_ref(p)?;
                    null |= !canon(&mut c, v);
                    key.push(Value::from(v));
                }
                out.push(Row {
                    json,
                    key,
                    canon: (!null).then_some(c),
                });
            }
            Ok(out)
        }
    }

    impl Pages for SqlitePages {
        type Key = Vec<Value>;

        fn page(
            &mut self,
            from: Option<&Vec<Value>>,
            limit: usize,
        ) -> Result<Vec<Row<Vec<Value>>>, String> {
            let limit = Value::Integer(limit as i64);
            let r = match from {
                None => self.rows(&self.first, vec![limit]),
                Some(k) => {
                    let mut p = k.clone();
                    p.push(limit);
                    self.rows(&self.next, p)
                }
            };
            r.map_err(|e| e.to_string())
        }

        fn has_null_key(&mut self) -> Result<bool, String> {
            let run = || -> rusqlite::Result<bool> {
                let mut stmt = self.conn.prepare(&self.null_check)?;
                stmt.exists([])
            };
            run().map_err(|e| e.to_string())
        }

        fn key_at(&mut self, ordinal: u64) -> Result<Found<Vec<Value>>, String> {
            let run = || -> rusqlite::Result<Found<Vec<Value>>> {
                let mut stmt = self.conn.prepare(&self.key_at)?;
                let mut rows = stmt.query([ordinal as i64])?;
                let Some(r) = rows.next()? else {
                    return Ok(None);
                };
                let mut c = Vec::new();
                let mut key = Vec::new();
                let mut null = false;
                for i in 0..self.positions.len() {
                    let v = r.get_ref(i)?;
                    null |= !canon(&mut c, v);
                    key.push(Value::from(v));
                }
                Ok(Some((key, (!null).then_some(c))))
            };
            run().map_err(|e| e.to_string())
        }
    }
}
