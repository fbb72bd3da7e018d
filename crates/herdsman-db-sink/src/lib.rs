//! Database output for herdsman: the output records of a job become rows of one table in
//! PostgreSQL or SQLite, written chunk by chunk so that each chunk is wholly in the table or
//! wholly absent, whatever moment the run is killed at.
//!
//! The protocol: the rows of a chunk are buffered in memory (a chunk is bounded), then one
//! transaction inserts them (PostgreSQL: `COPY ... FROM STDIN`; SQLite: a prepared insert
//! per row) *and* a row of the marker table [`MARKER_TABLE`] naming the job and the chunk,
//! with an opaque description of the chunk that the caller gives (`meta`). A resumed run reads
//! the markers of its job ([`markers`]) to learn which chunks are already in the table; the
//! marker's primary key (job, table, chunk) refuses a second copy of a chunk in any case.
//!
//! The table is created from the first output record (one column per key, its type from the
//! value: integer → BIGINT/INTEGER, float → DOUBLE PRECISION/REAL, bool → BOOLEAN, string →
//! TEXT, anything else → JSONB in PostgreSQL, JSON text in SQLite; every column accepts
//! null) in the same transaction as the first chunk, or it already exists and its columns are
//! read. A record that does not fit the table is refused by [`DbSink::check`] before anything
//! of it is buffered.
//!
//! PostgreSQL chunks commit on a background connection: [`DbSink::commit_chunk`] hands the
//! chunk's rows (already encoded for COPY as they were written) to a thread that owns the
//! connection and returns at once, so the database's work overlaps with the caller's; a
//! queue bounded by [`QUEUE_DEPTH`] chunks and [`QUEUE_BYTES`] of rows keeps memory bounded,
//! chunks commit in the order they were handed over (the ones that queued up while a
//! transaction ran, and those that come within a few milliseconds, commit together in the
//! next, each still wholly in or absent, and one by one if that fails), and [`DbSink::sync`] waits until every chunk handed over is
//! committed (the caller records a chunk as done only after that). The first chunk the
//! database refuses stops the thread: no later chunk is committed, and the error is returned
//! by the next [`DbSink::commit_chunk`] or [`DbSink::sync`], then every later call fails
//! too. SQLite chunks commit synchronously, in `commit_chunk` itself.
//!
//! This crate must never commit rows of a chunk without its marker, nor a marker without its
//! rows, nor a chunk after one that failed.

use std::fmt;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};

use serde_json::Value;

mod copy_row;

/// The table that records which chunks of which job are in which table.
pub const MARKER_TABLE: &str = "herdsman_chunks";

/// What went wrong with a database output.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The `-o` URL cannot be used.
    #[error("{url}: {message}")]
    Url {
        /// The URL as given.
        url: String,
        /// What is wrong with it and how to fix it.
        message: String,
    },
    /// The table exists and `--if-exists fail` (the default for a new job) applies.
    #[error("table {table} already exists in {db}; pass --if-exists append to add rows to it, or --if-exists replace to drop it first")]
    TableExists {
        /// The table's name.
        table: String,
        /// The database, for the message.
        db: String,
    },
    /// PostgreSQL refused or failed.
    #[error("PostgreSQL ({db}): {action}: {source}")]
    Postgres {
        /// The database, for the message.
        db: String,
        /// What was being done.
        action: &'static str,
        /// The client's error.
        #[source]
        source: postgres::Error,
    },
    /// SQLite refused or failed.
    #[error("SQLite ({db}): {action}: {source}")]
    Sqlite {
        /// The database file, for the message.
        db: String,
        /// What was being done.
        action: &'static str,
        /// The library's error.
        #[source]
        source: rusqlite::Error,
    },
    /// An earlier chunk of this run could not be committed (that error was returned once);
    /// nothing after it was committed.
    #[error("chunk {chunk} could not be written to {db} earlier in this run, so nothing after it was committed; resume the run once the database is back")]
    Abandoned {
        /// The chunk that failed.
        chunk: u64,
        /// The database, for the message.
        db: String,
    },
    /// A marker of this job could not be read back.
    #[error("the marker of chunk {chunk} in {MARKER_TABLE} is damaged: {message}")]
    Marker {
        /// The chunk.
        chunk: u64,
        /// What is wrong.
        message: String,
    },
}

/// Which database an output URL names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DbKind {
    /// `postgres://…` or `postgresql://…`: the connection URL without the `table` parameter.
    Postgres {
        /// What the client connects with.
        conn: String,
    },
    /// `sqlite:///abs/path.db` or `sqlite://relative.db`.
    Sqlite {
        /// The database file.
        path: PathBuf,
    },
}

/// A database output: the database and the table, from `-o URL?table=NAME`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DbUrl {
    /// The database.
    pub kind: DbKind,
    /// The table, possibly `schema.table` in PostgreSQL.
    pub table: String,
    /// The URL as given, without a password, for messages and the job's identity.
    shown: String,
}

impl fmt::Display for DbUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

impl DbUrl {
    /// Whether `s` is spelled as a database URL (`postgres://`, `postgresql://`,
    /// `sqlite://`).
    ///
    /// ```
    /// assert!(herdsman_db_sink::DbUrl::is_db_url("sqlite://x.db?table=t"));
    /// assert!(!herdsman_db_sink::DbUrl::is_db_url("out.jsonl"));
    /// ```
    pub fn is_db_url(s: &str) -> bool {
        ["postgres://", "postgresql://", "sqlite://"]
            .iter()
            .any(|p| s.starts_with(p))
    }

    /// Parses a database output URL; the `table` query parameter is required.
    ///
    /// ```
    /// use herdsman_db_sink::{DbKind, DbUrl};
    /// let u = DbUrl::parse("sqlite:///tmp/r.db?table=results").unwrap();
    /// assert_eq!(u.kind, DbKind::Sqlite { path: "/tmp/r.db".into() });
    /// assert_eq!(u.table, "results");
    /// let p = DbUrl::parse("postgres://me:secret@db:5432/app?table=out&sslmode=disable").unwrap();
    /// assert_eq!(p.kind, DbKind::Postgres { conn: "postgres://me:secret@db:5432/app?sslmode=disable".into() });
    /// assert_eq!(p.to_string(), "postgres://me@db:5432/app?table=out");
    /// assert!(DbUrl::parse("sqlite://r.db").is_err());
    /// ```
    pub fn parse(url: &str) -> Result<DbUrl, DbError> {
        let bad = |message: String| DbError::Url {
            url: strip_password(url),
            message,
        };
        let (base, query) = match url.split_once('?') {
            Some((b, q)) => (b, q),
            None => (url, ""),
        };
        let mut table = None;
        let mut rest = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("table", t)) => table = Some(t.to_string()),
                _ => rest.push(pair),
            }
        }
        let Some(table) = table.filter(|t| !t.is_empty()) else {
            return Err(bad(
                "no table named; add ?table=NAME to the URL (e.g. sqlite://results.db?table=results)"
                    .into(),
            ));
        };
        let valid = table.split('.').count() <= 2
            && table.split('.').all(|part| {
                let mut chars = part.chars();
                chars
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                    && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
            });
        if !valid {
            return Err(bad(format!(
                "table name {table:?} is not a plain identifier; use letters, digits and _ (optionally schema.table)"
            )));
        }
        let kind = if let Some(path) = base.strip_prefix("sqlite://") {
            if path.is_empty() {
                return Err(bad(
                    "no database file; write sqlite:///absolute/path.db or sqlite://relative.db"
                        .into(),
                ));
            }
            if table.contains('.') {
                return Err(bad(format!(
                    "SQLite has no schemas; name the table without a dot, not {table}"
                )));
            }
            DbKind::Sqlite {
                path: PathBuf::from(path),
            }
        } else {
            let conn = if rest.is_empty() {
                base.to_string()
            } else {
                format!("{base}?{}", rest.join("&"))
            };
            DbKind::Postgres { conn }
        };
        let shown = format!("{}?table={table}", strip_password(base));
        Ok(DbUrl { kind, table, shown })
    }

    /// A short name of the database for messages.
    fn db(&self) -> String {
        self.shown
            .split_once('?')
            .map_or(self.shown.clone(), |(b, _)| b.to_string())
    }
}

/// `scheme://user:password@host` → `scheme://user@host`.
fn strip_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (auth, host) = match rest.split_once('@') {
        Some((a, h)) if !a.contains('/') => (a, h),
        _ => return url.to_string(),
    };
    let user = auth.split_once(':').map_or(auth, |(u, _)| u);
    format!("{scheme}://{user}@{host}")
}

/// What to do when the table exists and the job is new (a resumed job always appends to its
/// own table).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum IfExists {
    /// Refuse to start ([`DbError::TableExists`]).
    #[default]
    Fail,
    /// Add rows to the existing table, whose columns then decide what fits.
    Append,
    /// Drop the table and create it again from the first records.
    Replace,
}

/// The type of a column, as far as deciding what fits it goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A whole number (BIGINT, INTEGER).
    Int,
    /// A number (DOUBLE PRECISION, REAL, NUMERIC); accepts whole numbers too.
    Float,
    /// true or false.
    Bool,
    /// A string (TEXT, and types PostgreSQL parses from text such as dates).
    Text,
    /// Any JSON value (JSONB in PostgreSQL, JSON text in SQLite).
    Json,
}

impl Kind {
    /// The kind a JSON value gives a new column.
    fn of(v: &Value) -> Kind {
        match v {
            Value::Number(n) if n.is_i64() => Kind::Int,
            Value::Number(_) => Kind::Float,
            Value::Bool(_) => Kind::Bool,
            Value::String(_) => Kind::Text,
            _ => Kind::Json,
        }
    }

    /// Whether `v` fits a column of this kind (null fits every column).
    fn fits(self, v: &Value) -> bool {
        match (self, v) {
            (_, Value::Null) | (Kind::Json, _) => true,
            (Kind::Int, Value::Number(n)) => n.is_i64(),
            (Kind::Float, Value::Number(_)) => true,
            (Kind::Bool, Value::Bool(_)) | (Kind::Text, Value::String(_)) => true,
            _ => false,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Int => "integer",
            Kind::Float => "float",
            Kind::Bool => "boolean",
            Kind::Text => "text",
            Kind::Json => "JSON",
        }
    }

    fn sql(self, pg: bool) -> &'static str {
        match (self, pg) {
            (Kind::Int, true) => "BIGINT",
            (Kind::Int, false) => "INTEGER",
            (Kind::Float, true) => "DOUBLE PRECISION",
            (Kind::Float, false) => "REAL",
            (Kind::Bool, _) => "BOOLEAN",
            (Kind::Text, _) => "TEXT",
            (Kind::Json, true) => "JSONB",
            // Contains TEXT: SQLite gives it text affinity and stores the JSON as written.
            (Kind::Json, false) => "JSON_TEXT",
        }
    }

    /// The kind of a declared column type (PostgreSQL's `data_type`, SQLite's declared type).
    fn from_sql(t: &str) -> Kind {
        let t = t.to_ascii_uppercase();
        // PostgreSQL types whose names contain INT but are no integers.
        if t.contains("INTERVAL") || t.contains("POINT") {
            return Kind::Text;
        }
        if t.contains("JSON") {
            Kind::Json
        } else if t.contains("INT") {
            Kind::Int
        } else if t.contains("REAL")
            || t.contains("DOUBLE")
            || t.contains("FLOAT")
            || t.contains("NUMERIC")
            || t.contains("DECIMAL")
        {
            Kind::Float
        } else if t.contains("BOOL") {
            Kind::Bool
        } else {
            Kind::Text
        }
    }
}

/// One column of the output table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Column {
    /// Its name (a key of the output records).
    pub name: String,
    /// What fits in it.
    pub kind: Kind,
}

/// Double-quotes an identifier (each part of `schema.table`).
fn quote(ident: &str) -> String {
    ident
        .split('.')
        .map(|p| format!("\"{}\"", p.replace('"', "\"\"")))
        .collect::<Vec<_>>()
        .join(".")
}

enum Conn {
    Postgres(Box<postgres::Client>),
    Sqlite(rusqlite::Connection),
}

/// How many chunks may wait for the background connection besides the ones it is committing
/// (PostgreSQL); [`DbSink::commit_chunk`] blocks while the queue is full, or while the
/// chunks handed over and not committed hold [`QUEUE_BYTES`] of rows.
pub const QUEUE_DEPTH: usize = 64;

/// How many bytes of rows (COPY text) may be handed to the background connection and not
/// committed yet; a chunk larger than this alone waits until the ones before it committed.
pub const QUEUE_BYTES: usize = 32 << 20;

/// The most chunks one PostgreSQL transaction commits together.
const BATCH_CHUNKS: usize = 64;

/// A transaction takes no more chunks once its rows reach this many bytes of COPY text.
const BATCH_BYTES: usize = 8 << 20;

/// How long the background connection waits for more chunks to commit with the first.
const GATHER: std::time::Duration = std::time::Duration::from_millis(10);

/// How often the gathering looks whether a caller waits for every chunk.
const GATHER_SLICE: std::time::Duration = std::time::Duration::from_millis(1);

/// A moment of a chunk's transaction, for [`DbSink::on_commit`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommitPoint {
    /// Just before the chunk's transaction starts.
    Before,
    /// Just after the chunk's transaction committed.
    After,
}

/// The output table of a job, written one chunk per transaction.
pub struct DbSink {
    /// The connection, until a PostgreSQL sink hands it to its background thread.
    conn: Option<Conn>,
    /// Whether the database is PostgreSQL.
    pg: bool,
    /// The thread that commits PostgreSQL chunks, once started.
    background: Option<Background>,
    url: DbUrl,
    job: String,
    /// The table's columns; `None` until the first record or an existing table says.
    columns: Option<Vec<Column>>,
    /// Whether the table must be created in the next chunk's transaction.
    create: bool,
    /// Rows of the chunk being written, one value per column (SQLite).
    rows: Vec<Vec<Value>>,
    /// Rows of the chunk being written in COPY's text format (PostgreSQL), and how many.
    copy: Vec<u8>,
    copy_rows: u64,
    /// Encodes the common PostgreSQL row without a JSON tree.
    encoder: copy_row::RowEncoder,
    /// Rows committed (or handed to the background connection) before the buffered ones.
    committed_rows: u64,
    /// The first chunk that could not be committed: every later commit fails.
    failed: Option<u64>,
    /// Called at the moments of every chunk's transaction.
    hook: Option<fn(CommitPoint)>,
}

/// Everything a chunk's PostgreSQL transaction needs, handed to the background thread.
struct ChunkTx {
    chunk: u64,
    meta: String,
    now: String,
    create: Option<String>,
    copy_sql: String,
    copy: Vec<u8>,
    rows: u64,
}

/// The background connection of a PostgreSQL sink.
struct Background {
    jobs: Option<mpsc::SyncSender<ChunkTx>>,
    done: mpsc::Receiver<(u64, Result<(), DbError>)>,
    /// Chunks handed over whose outcome has not been received, oldest first, with the
    /// bytes of their rows.
    in_flight: std::collections::VecDeque<(u64, usize)>,
    /// The bytes of the rows of `in_flight`.
    in_flight_bytes: usize,
    /// Set while a caller waits for every chunk: the thread gathers no more.
    flush: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Background {
    /// The oldest chunk handed over has its outcome.
    fn retire(&mut self) {
        if let Some((_, bytes)) = self.in_flight.pop_front() {
            self.in_flight_bytes -= bytes;
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        // The chunks already handed over commit (or fail) before the connection closes.
        self.jobs = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl fmt::Debug for DbSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DbSink")
            .field("url", &self.url.shown)
            .field("job", &self.job)
            .field("columns", &self.columns)
            .finish()
    }
}

/// One chunk of a job recorded in [`MARKER_TABLE`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Marker {
    /// The chunk number.
    pub chunk: u64,
    /// Rows the chunk put in the table.
    pub rows: u64,
    /// What the caller stored with the chunk.
    pub meta: String,
}

fn connect(url: &DbUrl) -> Result<Conn, DbError> {
    match &url.kind {
        DbKind::Postgres { conn } => {
            let client = postgres::Client::connect(conn, postgres::NoTls).map_err(|source| {
                DbError::Postgres {
                    db: url.db(),
                    action: "cannot connect",
                    source,
                }
            })?;
            Ok(Conn::Postgres(Box::new(client)))
        }
        DbKind::Sqlite { path } => {
            let sq = |action, source| DbError::Sqlite {
                db: path.display().to_string(),
                action,
                source,
            };
            let c = rusqlite::Connection::open(path).map_err(|e| sq("cannot open", e))?;
            c.busy_timeout(std::time::Duration::from_secs(60))
                .map_err(|e| sq("cannot set a busy timeout", e))?;
            c.pragma_update(None, "journal_mode", "WAL")
                .map_err(|e| sq("cannot switch to WAL", e))?;
            c.pragma_update(None, "synchronous", "FULL")
                .map_err(|e| sq("cannot set synchronous", e))?;
            Ok(Conn::Sqlite(c))
        }
    }
}

const MARKER_DDL: &str = "CREATE TABLE IF NOT EXISTS herdsman_chunks (
    job_id TEXT NOT NULL,
    table_name TEXT NOT NULL,
    chunk BIGINT NOT NULL,
    attempt BIGINT NOT NULL,
    rows BIGINT NOT NULL,
    meta TEXT NOT NULL,
    committed_at TEXT NOT NULL,
    PRIMARY KEY (job_id, table_name, chunk))";

impl Conn {
    fn pg_err<'a>(
        url: &'a DbUrl,
        action: &'static str,
    ) -> impl Fn(postgres::Error) -> DbError + 'a {
        move |source| DbError::Postgres {
            db: url.db(),
            action,
            source,
        }
    }

    fn sq_err<'a>(
        url: &'a DbUrl,
        action: &'static str,
    ) -> impl Fn(rusqlite::Error) -> DbError + 'a {
        move |source| DbError::Sqlite {
            db: url.db(),
            action,
            source,
        }
    }

    fn ensure_markers(&mut self, url: &DbUrl) -> Result<(), DbError> {
        match self {
            Conn::Postgres(c) => c
                .batch_execute(MARKER_DDL)
                .map_err(Conn::pg_err(url, "cannot create the marker table")),
            Conn::Sqlite(c) => c
                .execute_batch(MARKER_DDL)
                .map_err(Conn::sq_err(url, "cannot create the marker table")),
        }
    }

    fn markers(&mut self, url: &DbUrl, job: &str) -> Result<Vec<Marker>, DbError> {
        let sql = "SELECT chunk, rows, meta FROM herdsman_chunks WHERE job_id = $1 AND table_name = $2 ORDER BY chunk";
        match self {
            Conn::Postgres(c) => {
                let rows = c
                    .query(sql, &[&job, &url.table])
                    .map_err(Conn::pg_err(url, "cannot read the chunk markers"))?;
                Ok(rows
                    .iter()
                    .map(|r| Marker {
                        chunk: r.get::<_, i64>(0) as u64,
                        rows: r.get::<_, i64>(1) as u64,
                        meta: r.get(2),
                    })
                    .collect())
            }
            Conn::Sqlite(c) => {
                let e = Conn::sq_err(url, "cannot read the chunk markers");
                let mut st = c.prepare(&sql.replace('$', "?")).map_err(&e)?;
                let rows = st
                    .query_map(rusqlite::params![job, url.table], |r| {
                        Ok(Marker {
                            chunk: r.get::<_, i64>(0)? as u64,
                            rows: r.get::<_, i64>(1)? as u64,
                            meta: r.get(2)?,
                        })
                    })
                    .map_err(&e)?;
                rows.collect::<Result<Vec<_>, _>>().map_err(&e)
            }
        }
    }

    fn delete_markers(&mut self, url: &DbUrl, job: &str) -> Result<(), DbError> {
        let sql = "DELETE FROM herdsman_chunks WHERE job_id = $1 AND table_name = $2";
        match self {
            Conn::Postgres(c) => c
                .execute(sql, &[&job, &url.table])
                .map(drop)
                .map_err(Conn::pg_err(url, "cannot clear old chunk markers")),
            Conn::Sqlite(c) => c
                .execute(&sql.replace('$', "?"), rusqlite::params![job, url.table])
                .map(drop)
                .map_err(Conn::sq_err(url, "cannot clear old chunk markers")),
        }
    }

    /// The table's columns in order, or `None` when it does not exist.
    fn columns(&mut self, url: &DbUrl) -> Result<Option<Vec<Column>>, DbError> {
        let cols: Vec<(String, String)> = match self {
            Conn::Postgres(c) => {
                let (schema, table) = match url.table.split_once('.') {
                    Some((s, t)) => (Some(s.to_string()), t.to_string()),
                    None => (None, url.table.clone()),
                };
                let rows = c
                    .query(
                        "SELECT column_name::text, data_type::text FROM information_schema.columns
                         WHERE table_name = $1 AND table_schema = COALESCE($2, current_schema())
                         ORDER BY ordinal_position",
                        &[&table, &schema],
                    )
                    .map_err(Conn::pg_err(url, "cannot read the table's columns"))?;
                rows.iter().map(|r| (r.get(0), r.get(1))).collect()
            }
            Conn::Sqlite(c) => {
                let e = Conn::sq_err(url, "cannot read the table's columns");
                let mut st = c
                    .prepare("SELECT name, type FROM pragma_table_info(?1) ORDER BY cid")
                    .map_err(&e)?;
                let rows = st
                    .query_map([&url.table], |r| Ok((r.get(0)?, r.get(1)?)))
                    .map_err(&e)?;
                rows.collect::<Result<Vec<_>, _>>().map_err(&e)?
            }
        };
        if cols.is_empty() {
            return Ok(None);
        }
        Ok(Some(
            cols.into_iter()
                .map(|(name, t)| Column {
                    kind: Kind::from_sql(&t),
                    name,
                })
                .collect(),
        ))
    }

    fn drop_table(&mut self, url: &DbUrl) -> Result<(), DbError> {
        let sql = format!("DROP TABLE IF EXISTS {}", quote(&url.table));
        match self {
            Conn::Postgres(c) => c
                .batch_execute(&sql)
                .map_err(Conn::pg_err(url, "cannot drop the table")),
            Conn::Sqlite(c) => c
                .execute_batch(&sql)
                .map_err(Conn::sq_err(url, "cannot drop the table")),
        }
    }
}

/// The markers of `job` in `url`'s table, by chunk number: the chunks that are wholly in the
/// table. An absent marker table means none.
pub fn markers(url: &DbUrl, job: &str) -> Result<Vec<Marker>, DbError> {
    let mut conn = connect(url)?;
    conn.ensure_markers(url)?;
    conn.markers(url, job)
}

impl DbSink {
    /// Connects to the database and prepares the table of `job` (any stable name of the job;
    /// its markers are kept under it).
    ///
    /// `fresh` says the job is new: markers left under its name by an earlier incarnation
    /// (before `--restart`) are dropped. Then, when the table exists: if the job has markers
    /// in it, it is the job's own table and rows are appended; else `if_exists` decides.
    /// `committed_rows` is how many rows the job committed before (its checkpoint's count).
    pub fn open(
        url: &DbUrl,
        job: &str,
        if_exists: IfExists,
        fresh: bool,
        committed_rows: u64,
    ) -> Result<DbSink, DbError> {
        let mut conn = connect(url)?;
        conn.ensure_markers(url)?;
        if fresh {
            conn.delete_markers(url, job)?;
        }
        let own = !conn.markers(url, job)?.is_empty();
        let mut columns = conn.columns(url)?;
        if columns.is_some() && !own {
            match if_exists {
                IfExists::Fail => {
                    return Err(DbError::TableExists {
                        table: url.table.clone(),
                        db: url.db(),
                    })
                }
                IfExists::Append => {}
                IfExists::Replace => {
                    conn.drop_table(url)?;
                    columns = None;
                }
            }
        }
        Ok(DbSink {
            pg: matches!(conn, Conn::Postgres(_)),
            conn: Some(conn),
            background: None,
            url: url.clone(),
            job: job.to_string(),
            create: columns.is_none(),
            columns,
            rows: Vec::new(),
            copy: Vec::new(),
            copy_rows: 0,
            encoder: copy_row::RowEncoder::default(),
            committed_rows,
            failed: None,
            hook: None,
        })
    }

    /// The table's columns, once known.
    pub fn columns(&self) -> Option<&[Column]> {
        self.columns.as_deref()
    }

    /// The URL written to.
    pub fn url(&self) -> &DbUrl {
        &self.url
    }

    /// Rows of the job so far: committed ones and the ones buffered for the current chunk.
    pub fn rows(&self) -> u64 {
        self.committed_rows + self.rows.len() as u64 + self.copy_rows
    }

    /// Calls `hook` at the moments of every chunk's transaction (on the background thread for
    /// PostgreSQL), e.g. to test what a crash there leaves.
    pub fn on_commit(&mut self, hook: fn(CommitPoint)) {
        self.hook = Some(hook);
    }

    /// The chunk whose commit failed, once one did.
    pub fn failed_chunk(&self) -> Option<u64> {
        self.failed
    }

    /// The columns a new table gets from the record `obj`, in key order.
    fn infer(obj: &serde_json::Map<String, Value>) -> Vec<Column> {
        obj.iter()
            .map(|(k, v)| Column {
                name: k.clone(),
                kind: Kind::of(v),
            })
            .collect()
    }

    /// Checks that the output record `json` fits the table, and returns its row. The error
    /// says why it does not (not an object, an unknown column, a value of the wrong type).
    fn row_of(&self, json: &[u8]) -> Result<(Vec<Value>, Option<Vec<Column>>), String> {
        row_values(json, self.columns.as_deref(), &self.url.table)
    }

    /// Whether the output record `json` fits the table; the error says why not.
    pub fn check(&self, json: &[u8]) -> Result<(), String> {
        self.row_of(json).map(drop)
    }

    /// Buffers the output record `json` as a row of the current chunk (the first record of a
    /// job without a table decides the table's columns).
    pub fn write(&mut self, json: &[u8]) -> Result<(), String> {
        if let (true, Some(columns)) = (self.pg, self.columns.as_deref()) {
            if self.encoder.encode(json, columns, &mut self.copy) {
                self.copy_rows += 1;
                return Ok(());
            }
        }
        let (row, inferred) = self.row_of(json)?;
        if let Some(cols) = inferred {
            self.columns = Some(cols);
        }
        if self.pg {
            let columns = self.columns.as_deref().unwrap_or_default();
            copy_text_row(&mut self.copy, &row, columns);
            self.copy_rows += 1;
        } else {
            self.rows.push(row);
        }
        Ok(())
    }

    /// Commits the buffered rows of chunk `chunk` and its marker (with `meta`) in one
    /// transaction, creating the table first if it does not exist yet.
    ///
    /// SQLite commits before this returns. PostgreSQL hands the chunk to the background
    /// connection and returns at once (blocking only while the queue is full): the
    /// chunk is committed once [`DbSink::sync`] returns `Ok`. The error of an earlier chunk
    /// the database refused is returned here, and no chunk is committed after it.
    pub fn commit_chunk(&mut self, chunk: u64, meta: &str) -> Result<(), DbError> {
        if let Some(failed) = self.failed {
            return Err(self.abandoned(failed));
        }
        let columns = self.columns.clone().unwrap_or_default();
        let table = quote(&self.url.table);
        let create = if self.create && !columns.is_empty() {
            Some(format!(
                "CREATE TABLE {table} ({})",
                columns
                    .iter()
                    .map(|c| format!("{} {}", quote(&c.name), c.kind.sql(self.pg)))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        } else {
            None
        };
        let names = columns
            .iter()
            .map(|c| quote(&c.name))
            .collect::<Vec<_>>()
            .join(", ");
        let now = now_rfc3339();
        let n = if self.pg {
            let rows = std::mem::take(&mut self.copy_rows);
            let cap = self.copy.len();
            let copy = std::mem::replace(&mut self.copy, Vec::with_capacity(cap));
            let tx = ChunkTx {
                chunk,
                meta: meta.to_string(),
                now,
                create: create.clone(),
                copy_sql: format!("COPY {table} ({names}) FROM STDIN"),
                copy,
                rows,
            };
            self.send(tx)?;
            rows
        } else {
            let rows = std::mem::take(&mut self.rows);
            let n = rows.len() as u64;
            let Some(Conn::Sqlite(c)) = &mut self.conn else {
                unreachable!("an SQLite sink keeps its connection")
            };
            let r = sqlite_chunk(
                c, &self.url, &self.job, chunk, meta, &now, &create, &table, &names, &columns,
                &rows, self.hook,
            );
            if let Err(e) = r {
                self.failed = Some(chunk);
                return Err(e);
            }
            n
        };
        if create.is_some() {
            self.create = false;
        }
        self.committed_rows += n;
        Ok(())
    }

    /// Waits until every chunk handed to [`DbSink::commit_chunk`] is committed; returns the
    /// error of the first one the database refused (and fails from then on).
    pub fn sync(&mut self) -> Result<(), DbError> {
        if let Some(failed) = self.failed {
            return Err(self.abandoned(failed));
        }
        if let Some(bg) = &self.background {
            bg.flush.store(true, Ordering::Release);
        }
        let r = (|| {
            while self.wait_one()? {}
            Ok(())
        })();
        if let Some(bg) = &self.background {
            bg.flush.store(false, Ordering::Release);
        }
        r
    }

    /// Waits for the outcome of the oldest chunk handed over; false if there is none.
    fn wait_one(&mut self) -> Result<bool, DbError> {
        let Some(bg) = &mut self.background else {
            return Ok(false);
        };
        let Some(&(oldest, _)) = bg.in_flight.front() else {
            return Ok(false);
        };
        match bg.done.recv() {
            Ok((chunk, r)) => {
                bg.retire();
                if let Err(e) = r {
                    self.failed = Some(chunk);
                    return Err(e);
                }
                Ok(true)
            }
            Err(_) => {
                // The thread ended without a word: it panicked.
                self.failed = Some(oldest);
                Err(self.abandoned(oldest))
            }
        }
    }

    fn abandoned(&self, chunk: u64) -> DbError {
        DbError::Abandoned {
            chunk,
            db: self.url.db(),
        }
    }

    /// Takes the outcomes the background connection reported so far, without waiting.
    fn poll(&mut self) -> Result<(), DbError> {
        let Some(bg) = &mut self.background else {
            return Ok(());
        };
        while let Ok((chunk, r)) = bg.done.try_recv() {
            bg.retire();
            if let Err(e) = r {
                self.failed = Some(chunk);
                return Err(e);
            }
        }
        Ok(())
    }

    /// Hands a chunk to the background connection, starting it first.
    fn send(&mut self, tx: ChunkTx) -> Result<(), DbError> {
        self.poll()?;
        if self.background.is_none() {
            let Some(Conn::Postgres(client)) = self.conn.take() else {
                unreachable!("a PostgreSQL sink keeps its connection until the thread starts")
            };
            self.background = Some(start_background(
                client,
                self.url.clone(),
                self.job.clone(),
                self.hook,
            ));
        }
        // Memory stays bounded by bytes too: wait while the rows handed over are many.
        while self
            .background
            .as_ref()
            .is_some_and(|bg| bg.in_flight_bytes + tx.copy.len() > QUEUE_BYTES)
        {
            if !self.wait_one()? {
                break;
            }
        }
        let bg = self.background.as_mut().expect("started above");
        let (chunk, bytes) = (tx.chunk, tx.copy.len());
        let sent = bg.jobs.as_ref().is_some_and(|j| j.send(tx).is_ok());
        match sent {
            true => {
                bg.in_flight.push_back((chunk, bytes));
                bg.in_flight_bytes += bytes;
                Ok(())
            }
            // The thread stopped at a refused chunk: its error is waiting.
            false => {
                self.sync()?;
                let chunk = self.failed.unwrap_or_default();
                self.failed = Some(chunk);
                Err(self.abandoned(chunk))
            }
        }
    }
}

/// Starts the thread that commits a PostgreSQL sink's chunks in the order they come, and
/// stops at the first that fails.
fn start_background(
    mut client: Box<postgres::Client>,
    url: DbUrl,
    job: String,
    hook: Option<fn(CommitPoint)>,
) -> Background {
    let (jobs, queue) = mpsc::sync_channel::<ChunkTx>(QUEUE_DEPTH);
    let (report, done) = mpsc::channel();
    let flush = Arc::new(AtomicBool::new(false));
    let flushing = Arc::clone(&flush);
    let thread = std::thread::Builder::new()
        .name("herdsman-db-commit".into())
        .spawn(move || {
            let mut stmt: Option<(String, postgres::Statement)> = None;
            // The chunks that queued up while the last transaction ran commit together in
            // one (each still wholly in or absent); should that fail, they are tried one by
            // one, so the chunk the database refuses is named and the ones before it commit.
            while let Ok(first) = queue.recv() {
                // And the ones that come within a short gather time: a transaction costs
                // the server about a millisecond of its own beside its rows, so a load
                // whose chunks come faster than that commits them in fewer transactions.
                // A caller waiting for every chunk (`sync`) ends the gathering at once.
                let mut bytes = first.copy.len();
                let gather_until = std::time::Instant::now() + GATHER;
                let mut batch = vec![first];
                while batch.len() < BATCH_CHUNKS && bytes < BATCH_BYTES {
                    let next = if flush.load(Ordering::Acquire) {
                        queue.try_recv().ok()
                    } else {
                        let left =
                            gather_until.saturating_duration_since(std::time::Instant::now());
                        if left.is_zero() {
                            queue.try_recv().ok()
                        } else {
                            match queue.recv_timeout(left.min(GATHER_SLICE)) {
                                Ok(tx) => Some(tx),
                                Err(mpsc::RecvTimeoutError::Timeout) => continue,
                                Err(mpsc::RecvTimeoutError::Disconnected) => None,
                            }
                        }
                    };
                    match next {
                        Some(tx) => {
                            bytes += tx.copy.len();
                            batch.push(tx);
                        }
                        None => break,
                    }
                }
                let together = batch.len() > 1;
                let r = commit_pg(&mut client, &url, &job, &batch, &mut stmt, hook);
                let outcomes: Vec<(u64, Result<(), DbError>)> = match r {
                    Ok(()) => batch.iter().map(|t| (t.chunk, Ok(()))).collect(),
                    Err(e) if !together => vec![(batch[0].chunk, Err(e))],
                    Err(_) => {
                        let mut one_by_one = Vec::new();
                        for t in batch {
                            let r = commit_pg(
                                &mut client,
                                &url,
                                &job,
                                std::slice::from_ref(&t),
                                &mut stmt,
                                hook,
                            );
                            let ok = r.is_ok();
                            one_by_one.push((t.chunk, r));
                            if !ok {
                                break;
                            }
                        }
                        one_by_one
                    }
                };
                for (chunk, r) in outcomes {
                    let ok = r.is_ok();
                    if report.send((chunk, r)).is_err() || !ok {
                        return;
                    }
                }
            }
        })
        .expect("a thread can be started");
    Background {
        jobs: Some(jobs),
        done,
        in_flight: std::collections::VecDeque::new(),
        in_flight_bytes: 0,
        flush: flushing,
        thread: Some(thread),
    }
}

/// A string as a PostgreSQL literal that means the same whatever
/// `standard_conforming_strings` says.
fn pg_literal(s: &str) -> String {
    format!("E'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
}

/// The transaction of one or more chunks (with the hook's calls around it).
fn commit_pg(
    c: &mut postgres::Client,
    url: &DbUrl,
    job: &str,
    batch: &[ChunkTx],
    stmt: &mut Option<(String, postgres::Statement)>,
    hook: Option<fn(CommitPoint)>,
) -> Result<(), DbError> {
    if let Some(h) = hook {
        h(CommitPoint::Before);
    }
    pg_chunk(c, url, job, batch, stmt)?;
    if let Some(h) = hook {
        h(CommitPoint::After);
    }
    Ok(())
}

/// The PostgreSQL transaction of one or more chunks in four round trips: BEGIN; COPY of
/// their rows (a statement prepared once per connection) and its end; their markers' insert
/// together with COMMIT.
fn pg_chunk(
    c: &mut postgres::Client,
    url: &DbUrl,
    job: &str,
    t: &[ChunkTx],
    stmt: &mut Option<(String, postgres::Statement)>,
) -> Result<(), DbError> {
    let e = |a| Conn::pg_err(url, a);
    c.batch_execute("BEGIN")
        .map_err(e("cannot start the chunk's transaction"))?;
    let r = pg_chunk_body(c, url, job, t, stmt);
    if r.is_err() {
        // Best effort: a broken connection has no transaction left to roll back.
        let _ = c.batch_execute("ROLLBACK");
    }
    r
}

fn pg_chunk_body(
    c: &mut postgres::Client,
    url: &DbUrl,
    job: &str,
    batch: &[ChunkTx],
    stmt: &mut Option<(String, postgres::Statement)>,
) -> Result<(), DbError> {
    let e = |a| Conn::pg_err(url, a);
    for t in batch {
        if let Some(ddl) = &t.create {
            c.batch_execute(ddl).map_err(e("cannot create the table"))?;
        }
    }
    if let Some(last) = batch.iter().rev().find(|t| t.rows > 0) {
        if stmt.as_ref().is_none_or(|(sql, _)| *sql != last.copy_sql) {
            let s = c.prepare(&last.copy_sql).map_err(e("cannot start COPY"))?;
            *stmt = Some((last.copy_sql.clone(), s));
        }
        let (_, s) = stmt.as_ref().expect("prepared above");
        let mut w = c.copy_in(s).map_err(e("cannot start COPY"))?;
        for t in batch {
            w.write_all(&t.copy).map_err(|io| DbError::Url {
                url: url.to_string(),
                message: format!("COPY failed: {io}"),
            })?;
        }
        w.finish().map_err(e("COPY of the chunk's rows failed"))?;
    }
    let values = batch
        .iter()
        .map(|t| {
            format!(
                "({}, {}, {}, 1, {}, {}, {})",
                pg_literal(job),
                pg_literal(&url.table),
                t.chunk as i64,
                t.rows as i64,
                pg_literal(&t.meta),
                pg_literal(&t.now),
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "INSERT INTO herdsman_chunks (job_id, table_name, chunk, attempt, rows, meta, committed_at) VALUES {values}; COMMIT"
    );
    c.batch_execute(&sql).map_err(|source| DbError::Postgres {
        db: url.db(),
        // The server refused the statement (a second marker of the chunk), or the connection
        // failed while it committed.
        action: if source.as_db_error().is_some() {
            "cannot record the chunk in herdsman_chunks"
        } else {
            "cannot commit the chunk's transaction"
        },
        source,
    })
}

/// One chunk's SQLite transaction: its rows, its marker, and the table first if needed.
#[allow(clippy::too_many_arguments)]
fn sqlite_chunk(
    c: &mut rusqlite::Connection,
    url: &DbUrl,
    job: &str,
    chunk: u64,
    meta: &str,
    now: &str,
    create: &Option<String>,
    table: &str,
    names: &str,
    columns: &[Column],
    rows: &[Vec<Value>],
    hook: Option<fn(CommitPoint)>,
) -> Result<(), DbError> {
    let e = |a| Conn::sq_err(url, a);
    let marker = "INSERT INTO herdsman_chunks (job_id, table_name, chunk, attempt, rows, meta, committed_at) VALUES (?, ?, ?, 1, ?, ?, ?)";
    if let Some(h) = hook {
        h(CommitPoint::Before);
    }
    let tx = c
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(e("cannot start the chunk's transaction"))?;
    if let Some(ddl) = create {
        tx.execute_batch(ddl)
            .map_err(e("cannot create the table"))?;
    }
    if !rows.is_empty() {
        let params = vec!["?"; columns.len()].join(", ");
        let mut st = tx
            .prepare(&format!("INSERT INTO {table} ({names}) VALUES ({params})"))
            .map_err(e("cannot prepare the insert"))?;
        for row in rows {
            let vals: Vec<rusqlite::types::Value> = row
                .iter()
                .zip(columns)
                .map(|(v, c)| sqlite_value(v, c.kind))
                .collect();
            st.execute(rusqlite::params_from_iter(vals))
                .map_err(e("cannot insert a row"))?;
        }
    }
    tx.execute(
        marker,
        rusqlite::params![job, url.table, chunk as i64, rows.len() as i64, meta, now],
    )
    .map_err(e("cannot record the chunk in herdsman_chunks"))?;
    tx.commit()
        .map_err(e("cannot commit the chunk's transaction"))?;
    if let Some(h) = hook {
        h(CommitPoint::After);
    }
    Ok(())
}

/// Checks that the output record `json` fits a table of `columns` (a new table's, inferred
/// from this record, when `None`), and returns its row, one value per column, with the
/// inferred columns. The error says why it does not fit (not an object, an unknown column,
/// a value of the wrong type).
fn row_values(
    json: &[u8],
    columns: Option<&[Column]>,
    table: &str,
) -> Result<(Vec<Value>, Option<Vec<Column>>), String> {
    let v: Value =
        serde_json::from_slice(json).map_err(|e| format!("the output is not JSON ({e})"))?;
    let Value::Object(obj) = v else {
        return Err(format!(
            "a table row must be a JSON object, not {}",
            kind_of_value(&v)
        ));
    };
    let inferred = match columns {
        Some(_) => None,
        None => Some(DbSink::infer(&obj)),
    };
    let columns = columns.or(inferred.as_deref()).expect("one is set");
    let mut row = vec![Value::Null; columns.len()];
    for (k, v) in obj {
        let Some(i) = columns.iter().position(|c| c.name == k) else {
            return Err(format!(
                "table {} has no column {k:?} (columns: {})",
                table,
                columns
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        };
        if !columns[i].kind.fits(&v) {
            return Err(format!(
                "column {k:?} of table {} holds {} values, not {} {}",
                table,
                columns[i].kind.name(),
                kind_of_value(&v),
                v
            ));
        }
        row[i] = v;
    }
    Ok((row, inferred))
}

fn kind_of_value(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "the integer",
        Value::Number(_) => "the number",
        Value::String(_) => "the string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Appends one row in COPY's text format: tab-separated, `\N` for null, backslash escapes.
fn copy_text_row(buf: &mut Vec<u8>, row: &[Value], columns: &[Column]) {
    for (i, (v, c)) in row.iter().zip(columns).enumerate() {
        if i > 0 {
            buf.push(b'\t');
        }
        match v {
            Value::Null => buf.extend_from_slice(b"\\N"),
            Value::Bool(b) if c.kind != Kind::Json => {
                buf.extend_from_slice(if *b { b"t" } else { b"f" })
            }
            // Written in place: no string per value.
            Value::Number(n) => {
                let _ = write!(buf, "{n}");
            }
            Value::String(s) if c.kind != Kind::Json => escape_copy(buf, s),
            other => {
                let _ = serde_json::to_writer(CopyEscape(buf), other);
            }
        }
    }
    buf.push(b'\n');
}

/// Writes what it is given escaped for COPY's text format.
struct CopyEscape<'a>(&'a mut Vec<u8>);

impl std::io::Write for CopyEscape<'_> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        escape_copy_bytes(self.0, b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn escape_copy(buf: &mut Vec<u8>, s: &str) {
    escape_copy_bytes(buf, s.as_bytes());
}

fn escape_copy_bytes(buf: &mut Vec<u8>, s: &[u8]) {
    if !s.iter().any(|b| matches!(b, b'\\' | b'\t' | b'\n' | b'\r')) {
        buf.extend_from_slice(s);
        return;
    }
    for &b in s {
        match b {
            b'\\' => buf.extend_from_slice(b"\\\\"),
            b'\t' => buf.extend_from_slice(b"\\t"),
            b'\n' => buf.extend_from_slice(b"\\n"),
            b'\r' => buf.extend_from_slice(b"\\r"),
            _ => buf.push(b),
        }
    }
}

fn sqlite_value(v: &Value, kind: Kind) -> rusqlite::types::Value {
    use rusqlite::types::Value as S;
    match (v, kind) {
        (Value::Null, _) => S::Null,
        (Value::String(s), k) if k != Kind::Json => S::Text(s.clone()),
        (Value::Bool(b), Kind::Bool) => S::Integer(i64::from(*b)),
        (Value::Number(n), Kind::Int) => S::Integer(n.as_i64().unwrap_or_default()),
        (Value::Number(n), Kind::Float) => S::Real(n.as_f64().unwrap_or_default()),
        (other, _) => S::Text(other.to_string()),
    }
}

/// The current UTC time as RFC 3339, to the second.
fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sqlite(dir: &std::path::Path) -> DbUrl {
        DbUrl::parse(&format!("sqlite://{}/r.db?table=t", dir.display())).unwrap()
    }

    #[test]
    fn chunks_and_markers_commit_together_and_types_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let url = sqlite(dir.path());
        let mut s = DbSink::open(&url, "job", IfExists::Fail, true, 0).unwrap();
        s.write(br#"{"id":1,"x":1.5,"ok":true,"name":"a","tags":[1]}"#)
            .unwrap();
        assert!(s.check(br#"{"id":"two"}"#).unwrap_err().contains("\"id\""));
        assert!(s.check(br#"{"nope":1}"#).unwrap_err().contains("no column"));
        assert!(s.check(br#"[1]"#).is_err());
        s.check(br#"{"id":2,"x":3,"tags":{"a":null},"name":null}"#)
            .unwrap();
        s.commit_chunk(0, "m0").unwrap();
        s.write(br#"{"id":2,"x":3}"#).unwrap();
        s.commit_chunk(1, "m1").unwrap();
        assert_eq!(s.rows(), 2);
        let m = markers(&url, "job").unwrap();
        assert_eq!(
            m.iter().map(|m| (m.chunk, m.rows)).collect::<Vec<_>>(),
            [(0, 1), (1, 1)]
        );
        // The same chunk twice is refused, and nothing of it stays.
        s.write(br#"{"id":3}"#).unwrap();
        assert!(s.commit_chunk(1, "again").is_err());
        let c = rusqlite::Connection::open(dir.path().join("r.db")).unwrap();
        let n: i64 = c
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 2);
        // A new job refuses the table by default; its own resumed job appends.
        let e = DbSink::open(&url, "other", IfExists::Fail, true, 0).unwrap_err();
        assert!(matches!(e, DbError::TableExists { .. }), "{e}");
        let s = DbSink::open(&url, "job", IfExists::Fail, false, 2).unwrap();
        assert_eq!(s.columns().unwrap().len(), 5);
        let tags = s.columns().unwrap().iter().find(|c| c.name == "tags");
        assert_eq!(tags.unwrap().kind, Kind::Json);
    }

    #[test]
    fn copy_text_escapes() {
        let cols = [
            Column {
                name: "s".into(),
                kind: Kind::Text,
            },
            Column {
                name: "j".into(),
                kind: Kind::Json,
            },
        ];
        let mut buf = Vec::new();
        copy_text_row(
            &mut buf,
            &[Value::from("a\tb\\c\nd"), serde_json::json!({"k":"v\n"})],
            &cols,
        );
        assert_eq!(buf, b"a\\tb\\\\c\\nd\t{\"k\":\"v\\\\n\"}\n");
    }

    #[test]
    fn declared_types() {
        assert_eq!(Kind::from_sql("bigint"), Kind::Int);
        assert_eq!(Kind::from_sql("double precision"), Kind::Float);
        assert_eq!(Kind::from_sql("jsonb"), Kind::Json);
        assert_eq!(Kind::from_sql("JSON_TEXT"), Kind::Json);
        assert_eq!(Kind::from_sql("interval"), Kind::Text);
        assert_eq!(Kind::from_sql("timestamp with time zone"), Kind::Text);
        assert_eq!(Kind::from_sql("boolean"), Kind::Bool);
    }

    #[test]
    fn rfc3339() {
        assert_eq!(now_rfc3339().len(), 20);
    }
}
