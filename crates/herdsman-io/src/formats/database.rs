//! What the database inputs (`postgres.rs`, `sqlite.rs`) share: their URLs, and one reader
//! that pages through a query's rows in key order (keyset pagination) and resumes exactly.
//!
//! A database input is `postgres://user@host:port/db?table=items` or
//! `sqlite:///path/db.sqlite?table=items`, reading a table (`?table=`) or the rows of a query
//! ([`SourceOptions::query`](crate::SourceOptions::query)), in the order of a unique, non-null
//! key ([`SourceOptions::key`](crate::SourceOptions::key); the table's primary key by
//! default). Rows are read a page at a time, each page the rows whose key is at least the
//! last one read (`WHERE key >= $last ORDER BY key LIMIT n`, the query wrapped as a
//! subquery), so memory holds one page and no row is read twice or skipped, whatever the
//! table's size.
//!
//! A record's [`Location`] is its row number (`line`, 1-based, in key order) and a 64-bit hash
//! of the key of the row before it (`byte_offset`; 0 for the first row). Resuming finds the
//! key of that row by its number (one index scan) and refuses to go on if its hash differs:
//! the rows before the resume point changed, and going on could lose or repeat a record. From
//! there reading is keyset pagination again.
//!
//! The key must be unique and non-null: keyset pagination cannot tell apart two rows with
//! the same key, and never sees a row whose key is null. A fresh read looks for a null key
//! once before the first row (an index lookup when the key is indexed); a repeated key is
//! seen as the rows go by, at no cost, as two equal keys in a row (across pages too, since
//! each page starts again at the last key read). Pages are ordered plainly by the key, the
//! order of an ascending index, so each page is an index range scan.

// Without the `database` feature only the URL helpers are used.
#![cfg_attr(not(feature = "database"), allow(dead_code))]

use std::collections::VecDeque;

use super::{Location, OpenInput, ReadRecord, RecordReader};
use crate::error::SourceError;
use crate::format::Format;

/// Rows fetched by one page query.
pub(crate) const PAGE_ROWS: usize = 4096;

/// Whether `input` names a database (`postgres://`, `postgresql://` or `sqlite://`), and
/// which.
///
/// ```
/// use herdsman_io::{database_format, Format};
/// assert_eq!(database_format("postgres://u@h/db?table=t"), Some(Format::Postgres));
/// assert_eq!(database_format("sqlite:///tmp/a.db?table=t"), Some(Format::Sqlite));
/// assert_eq!(database_format("items.csv"), None);
/// ```
pub fn database_format(input: &str) -> Option<Format> {
    let lower = input.get(..13).unwrap_or(input).to_ascii_lowercase();
    if lower.starts_with("postgres://") || lower.starts_with("postgresql://") {
        Some(Format::Postgres)
    } else if lower.starts_with("sqlite://") {
        Some(Format::Sqlite)
    } else {
        None
    }
}

/// A database URL without its password, for messages and the job's identity.
///
/// ```
/// use herdsman_io::redact_url;
/// assert_eq!(redact_url("postgres://me:secret@db:5432/x?table=t"), "postgres://me@db:5432/x?table=t");
/// assert_eq!(redact_url("sqlite:///tmp/a.db"), "sqlite:///tmp/a.db");
/// ```
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match (authority.rfind('@'), authority.find(':')) {
        (Some(at), Some(colon)) if colon < at => format!(
            "{}{}{}",
            &url[..scheme_end + 3 + colon],
            &authority[at..],
            &rest[authority_end..]
        ),
        _ => url.to_string(),
    }
}

/// A database URL taken apart: the connection part (the URL without the `table` parameter),
/// and the table to read, if it names one.
pub(crate) struct DbUrl {
    pub(crate) connection: String,
    pub(crate) table: Option<String>,
}

/// Splits the `table` parameter off a database URL.
pub(crate) fn parse_url(url: &str) -> DbUrl {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, q),
        None => (url, ""),
    };
    let mut table = None;
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("table", v)) => table = Some(percent_decode(v)),
            _ => kept.push(pair),
        }
    }
    let connection = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    DbUrl { connection, table }
}

/// Decodes `%XX` escapes (and leaves anything else as it is).
pub(crate) fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = |c: u8| (c as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `name` quoted as an SQL identifier (both PostgreSQL and SQLite use double quotes); a
/// table name `schema.table` is quoted part by part.
pub(crate) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A table name quoted part by part (`schema.table`).
pub(crate) fn quote_table(name: &str) -> String {
    name.split('.')
        .map(quote_ident)
        .collect::<Vec<_>>()
        .join(".")
}

/// The SQL whose rows are read: the table's, or the user's query (without a trailing `;`).
pub(crate) fn source_sql(
    input: &OpenInput<'_>,
    table: Option<&str>,
) -> Result<String, SourceError> {
    match (table, input.opts.query.as_deref()) {
        (Some(_), Some(_)) => Err(usage(
            input,
            "it names a table and a query is given too; read either the table or the query",
        )),
        (Some(t), None) => Ok(format!("SELECT * FROM {}", quote_table(t))),
        (None, Some(q)) => Ok(q.trim().trim_end_matches(';').to_string()),
        (None, None) => Err(usage(
            input,
            "it names no table and no query is given; add ?table=NAME to the URL, or give a query",
        )),
    }
}

/// A problem with what was asked of a database input.
pub(crate) fn usage(input: &OpenInput<'_>, message: &str) -> SourceError {
    SourceError::Database {
        input: input.name.to_string(),
        message: message.to_string(),
    }
}

/// The key columns: the ones asked for, else the table's primary key (`primary`).
pub(crate) fn key_columns(
    input: &OpenInput<'_>,
    table: Option<&str>,
    primary: impl FnOnce(&str) -> Result<Vec<String>, SourceError>,
) -> Result<Vec<String>, SourceError> {
    if let Some(k) = input.opts.key.as_ref().filter(|k| !k.is_empty()) {
        return Ok(k.clone());
    }
    match table {
        Some(t) => {
            let pk = primary(t)?;
            if pk.is_empty() {
                return Err(usage(
                    input,
                    &format!("table `{t}` has no primary key; name a unique, non-null key column to read it in order"),
                ));
            }
            Ok(pk)
        }
        None => Err(usage(
            input,
            "a query needs a key: name a unique, non-null column of its result to read it in order",
        )),
    }
}

/// The key columns' positions among the columns, or an error naming the missing one.
pub(crate) fn key_positions(
    input: &OpenInput<'_>,
    columns: &[String],
    keys: &[String],
) -> Result<Vec<usize>, SourceError> {
    keys.iter()
        .map(|k| {
            columns.iter().position(|c| c == k).ok_or_else(|| {
                usage(
                    input,
                    &format!(
                        "the key column `{k}` is not among its columns ({}); name one of them",
                        columns.join(", ")
                    ),
                )
            })
        })
        .collect()
}

/// `ORDER BY` over the key columns of `t`, ascending: the order of an ascending index on
/// them, so that each page is an index range scan.
pub(crate) fn order_by(keys: &[String]) -> String {
    keys.iter()
        .map(|k| format!("t.{}", quote_ident(k)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A condition on the key columns of `t`: some part is null (`null`), or none is.
pub(crate) fn null_test(keys: &[String], null: bool) -> String {
    let (test, join) = if null {
        ("IS NULL", " OR ")
    } else {
        ("IS NOT NULL", " AND ")
    };
    keys.iter()
        .map(|k| format!("t.{} {test}", quote_ident(k)))
        .collect::<Vec<_>>()
        .join(join)
}

/// The key columns of `t` as a row value (or one column).
pub(crate) fn key_tuple(keys: &[String]) -> String {
    let cols: Vec<String> = keys
        .iter()
        .map(|k| format!("t.{}", quote_ident(k)))
        .collect();
    if cols.len() == 1 {
        cols[0].clone()
    } else {
        format!("({})", cols.join(", "))
    }
}

/// One row as a backend fetched it.
pub(crate) struct Row<K> {
    /// The row as a compact JSON object.
    pub(crate) json: Vec<u8>,
    /// The key, as the backend binds it in the next page query.
    pub(crate) key: K,
    /// The key's canonical bytes (equal keys, equal bytes), `None` when a part is null.
    pub(crate) canon: Option<Vec<u8>>,
}

/// A key found by its row number: the key and its canonical bytes (`None` when a part is
/// null), or `None` when there is no such row.
pub(crate) type Found<K> = Option<(K, Option<Vec<u8>>)>;

/// A database that can be paged through in key order.
pub(crate) trait Pages: Send {
    /// A key value as bound in a query.
    type Key: Send;

    /// At most `limit` rows in key order: from the start, or those whose key is at least
    /// `from`.
    fn page(
        &mut self,
        from: Option<&Self::Key>,
        limit: usize,
    ) -> Result<Vec<Row<Self::Key>>, String>;

    /// Whether some row has a null key (a cheap lookup when the key is indexed).
    fn has_null_key(&mut self) -> Result<bool, String>;

    /// The key of the row at 0-based `ordinal` in key order (rows with a null key left out),
    /// with its canonical bytes.
    fn key_at(&mut self, ordinal: u64) -> Result<Found<Self::Key>, String>;
}

/// The hash of a key's canonical bytes, as a [`Location`] holds it.
fn key_hash(canon: &[u8]) -> u64 {
    // Never 0, so a location after the first row is never mistaken for the start.
    xxhash_rust::xxh3::xxh3_64(canon).max(1)
}

/// Reads a database input through its [`Pages`], in key order.
pub(crate) struct KeysetReader<P: Pages> {
    name: String,
    keys: String,
    pages: P,
    buffered: VecDeque<Row<P::Key>>,
    /// The last row read: its key and canonical bytes.
    last: Option<(P::Key, Vec<u8>)>,
    /// Rows read before the next one.
    ordinal: u64,
    /// No page is left to fetch.
    exhausted: bool,
}

impl<P: Pages> KeysetReader<P> {
    /// A reader at the start, or at a location it yielded before.
    pub(crate) fn open(
        input: &OpenInput<'_>,
        keys: &[String],
        mut pages: P,
        at: Option<Location>,
    ) -> Result<KeysetReader<P>, SourceError> {
        let name = input.name.to_string();
        let at = at.unwrap_or(Location::START);
        let mut last = None;
        if at.line == 0 || (at.line == 1 && at.byte_offset != 0) {
            return Err(resume_error(
                &name,
                at,
                "it is not a position this input gives".into(),
            ));
        }
        if at.line == 1 && pages.has_null_key().map_err(|m| read_error(&name, &m))? {
            return Err(SourceError::Database {
                input: name,
                message: format!(
                    "some row has a null key ({}); reading in key order needs a unique, non-null key: name such a column (an id), or filter out the rows whose key is null",
                    keys.join(", ")
                ),
            });
        }
        if at.line > 1 {
            let ordinal = at.line - 2;
            let found = pages.key_at(ordinal).map_err(|m| read_error(&name, &m))?;
            match found {
                None => {
                    return Err(resume_error(
                        &name,
                        at,
                        format!("it holds fewer than {} rows now", at.line - 1),
                    ))
                }
                Some((key, Some(canon))) if key_hash(&canon) == at.byte_offset => {
                    last = Some((key, canon));
                }
                Some(_) => {
                    return Err(resume_error(
                        &name,
                        at,
                        format!(
                            "the key of row {} is not the one read before (rows before the resume point were added, deleted or changed)",
                            at.line - 1
                        ),
                    ))
                }
            }
        }
        Ok(KeysetReader {
            name,
            keys: keys.join(", "),
            pages,
            buffered: VecDeque::new(),
            last,
            ordinal: at.line - 1,
            exhausted: false,
        })
    }

    /// Fetches the next page; false when no row is left.
    fn fill(&mut self) -> Result<bool, SourceError> {
        while self.buffered.is_empty() {
            if self.exhausted {
                return Ok(false);
            }
            // One more than a page: the first row may be the last one read.
            let limit = PAGE_ROWS + 1;
            let rows = self
                .pages
                .page(self.last.as_ref().map(|(k, _)| k), limit)
                .map_err(|m| read_error(&self.name, &m))?;
            self.exhausted = rows.len() < limit;
            let mut seen_last = 0;
            for row in rows {
                let Some(canon) = &row.canon else {
                    return Err(self.bad_key(format!(
                        "row {} has a null key",
                        self.ordinal + self.buffered.len() as u64 + 1
                    )));
                };
                let previous = match self.buffered.back() {
                    Some(r) => r.canon.as_deref(),
                    None => self.last.as_ref().map(|(_, c)| c.as_slice()),
                };
                if previous == Some(canon.as_slice()) {
                    if self.buffered.is_empty() && seen_last == 0 && self.last.is_some() {
                        // The row read last, fetched again as the page's first.
                        seen_last += 1;
                        continue;
                    }
                    return Err(self.bad_key(format!(
                        "two rows have the same key (row {} repeats the key of the row before it)",
                        self.ordinal + self.buffered.len() as u64 + 1
                    )));
                }
                self.buffered.push_back(row);
            }
        }
        Ok(true)
    }

    fn bad_key(&self, what: String) -> SourceError {
        SourceError::Database {
            input: self.name.clone(),
            message: format!(
                "{what} in the key ({}); reading in key order needs a unique, non-null key: name such a column (an id), or filter out the rows whose key is null",
                self.keys
            ),
        }
    }
}

fn resume_error(name: &str, at: Location, why: String) -> SourceError {
    SourceError::Resume {
        file: name.to_string(),
        offset: at.line.saturating_sub(1),
        message: format!(
            "{why}; the checkpoint cannot be resumed on these rows, start the job afresh"
        ),
    }
}

fn read_error(name: &str, message: &str) -> SourceError {
    SourceError::Database {
        input: name.to_string(),
        message: format!("a query failed: {message}"),
    }
}

impl<P: Pages> RecordReader for KeysetReader<P> {
    fn next_record(&mut self) -> Result<Option<ReadRecord>, SourceError> {
        if !self.fill()? {
            return Ok(None);
        }
        let at = self.next_location();
        let row = self.buffered.pop_front().expect("filled");
        self.ordinal += 1;
        let canon = row.canon.expect("checked when fetched");
        self.last = Some((row.key, canon));
        Ok(Some(ReadRecord {
            at,
            data: Ok(row.json),
        }))
    }

    fn next_location(&self) -> Location {
        Location {
            byte_offset: self.last.as_ref().map_or(0, |(_, c)| key_hash(c)),
            line: self.ordinal + 1,
        }
    }
}

/// Appends `bytes` as a quoted standard base64 string, with padding.
pub(crate) fn write_base64(out: &mut Vec<u8>, bytes: &[u8]) {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    out.push(b'"');
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        out.push(A[(n >> 18) as usize & 63]);
        out.push(A[(n >> 12) as usize & 63]);
        out.push(if c.len() > 1 {
            A[(n >> 6) as usize & 63]
        } else {
            b'='
        });
        out.push(if c.len() > 2 {
            A[n as usize & 63]
        } else {
            b'='
        });
    }
    out.push(b'"');
}

/// Appends one part of a canonical key: a tag byte, the length, the bytes.
pub(crate) fn canon_part(out: &mut Vec<u8>, tag: u8, bytes: &[u8]) {
    out.push(tag);
    out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
    out.extend_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_and_redact() {
        let u = parse_url("postgres://u:p@h:5/db?sslmode=disable&table=my%20t");
        assert_eq!(u.connection, "postgres://u:p@h:5/db?sslmode=disable");
        assert_eq!(u.table.as_deref(), Some("my t"));
        let u = parse_url("sqlite:///a/b.db");
        assert_eq!(u.table, None);
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact_url("postgres://u:p@h/db"), "postgres://u@h/db");
        assert_eq!(percent_decode("a%2"), "a%2");
    }

    #[test]
    fn base64_pads() {
        for (i, o) in [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v")] {
            let mut out = Vec::new();
            write_base64(&mut out, i.as_bytes());
            assert_eq!(out, format!("\"{o}\"").into_bytes());
        }
    }
}
