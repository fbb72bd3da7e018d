//! Output sinks: append records to `<path>.partial`, make them durable on request, and
//! publish the file with an atomic rename at the end; plus a small atomic file writer.
//!
//! A sink must never write part of a record it rejects, never publish a file before
//! everything is flushed and synced, and never keep more than one record plus its write
//! buffer in memory. It must never replace what is not a regular file: a device, a FIFO or
//! `/dev/stdout` is written in place, and a symbolic link is followed so that the partial
//! file and the rename happen beside its target.

use std::borrow::Cow;
use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use crate::error::SinkError;
use crate::format::OutputFormat;

const WRITE_BUF: usize = 256 * 1024;

/// The file a sink writes before [`Sink::finish`] renames it: `<path>.partial`.
///
/// ```
/// use std::path::Path;
/// assert_eq!(herdsman_io::partial_path(Path::new("out/a.csv")), Path::new("out/a.csv.partial"));
/// ```
pub fn partial_path(path: &Path) -> PathBuf {
    let mut s: OsString = path.as_os_str().to_owned();
    s.push(".partial");
    PathBuf::from(s)
}

/// Fsyncs the directory holding `path`, so a rename or creation in it is durable.
fn sync_dir(path: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        File::open(dir)?.sync_all()?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// Where an output path leads once symbolic links are followed; see [`output_target`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputTarget {
    /// `-`: standard output.
    Stdout,
    /// Something that is not a regular file (a character or block device such as
    /// `/dev/null`, a FIFO, a socket, or an open file named through `/proc/self/fd` or
    /// `/dev/fd`, as `/dev/stdout` is): written in place, with no partial file, no rename and
    /// no resume.
    Direct(PathBuf),
    /// A regular file, existing or not: written as `<file>.partial` and renamed into place.
    /// The path is the symlink-resolved one, so the partial file lives beside the target.
    File(PathBuf),
}

impl OutputTarget {
    /// Whether the output is written in place (standard output or [`OutputTarget::Direct`]),
    /// so it can be neither resumed nor published by a rename.
    pub fn is_stream(&self) -> bool {
        !matches!(self, OutputTarget::File(_))
    }
}

/// Follows the symbolic links of an output path's last component and tells what it leads
/// to. Fails with [`SinkError::IsDir`] when it leads to a directory, and with
/// [`SinkError::Io`] when the path cannot be inspected.
///
/// ```
/// use herdsman_io::{output_target, OutputTarget};
/// let dir = tempfile::tempdir().unwrap();
/// let out = dir.path().join("out.jsonl");
/// assert_eq!(output_target(&out).unwrap(), OutputTarget::File(out.clone()));
/// assert!(output_target(dir.path()).is_err());
/// ```
pub fn output_target(path: &Path) -> Result<OutputTarget, SinkError> {
    if path == Path::new("-") {
        return Ok(OutputTarget::Stdout);
    }
    let io_err = |source| SinkError::Io {
        action: "inspect",
        path: path.to_path_buf(),
        source,
    };
    let mut p = path.to_path_buf();
    // The kernel's own limit on a chain of links (ELOOP) is 40.
    for _ in 0..40 {
        let meta = match std::fs::symlink_metadata(&p) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(OutputTarget::File(p)),
            Err(e) => return Err(io_err(e)),
        };
        let ft = meta.file_type();
        if ft.is_symlink() {
            let link = std::fs::read_link(&p).map_err(io_err)?;
            let next = match p.parent() {
                Some(dir) if link.is_relative() => dir.join(&link),
                _ => link,
            };
            // `/dev/stdout` -> `/proc/self/fd/1` -> whatever the shell opened: writing to
            // the descriptor is what the user means; replacing the file behind it is not.
            if next.starts_with("/proc") || next.starts_with("/dev/fd") {
                return Ok(OutputTarget::Direct(path.to_path_buf()));
            }
            p = next;
        } else if ft.is_dir() {
            return Err(SinkError::IsDir { path: p });
        } else if ft.is_file() {
            return Ok(OutputTarget::File(p));
        } else {
            return Ok(OutputTarget::Direct(p));
        }
    }
    Err(io_err(io::Error::other(
        "too many levels of symbolic links",
    )))
}

/// Checks that files can be created in `dir` by creating (and removing) an empty temporary
/// file there: the honest test, which also catches read-only file systems and root squash.
pub fn check_writable_dir(dir: &Path) -> Result<(), SinkError> {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    tempfile::Builder::new()
        .prefix(".herdsman-check-")
        .tempfile_in(dir)
        .map(drop)
        .map_err(|source| SinkError::Io {
            action: "create a file in the directory of",
            path: dir.to_path_buf(),
            source,
        })
}

/// Opens a device, FIFO or descriptor path for writing, without creating or truncating it.
fn open_direct(path: &Path) -> io::Result<File> {
    OpenOptions::new().append(true).open(path)
}

/// Writes a small file atomically: a temporary file beside it, fsync, rename over `path`,
/// fsync of the directory. Readers see the old content or the new, never a mix.
///
/// ```
/// let dir = tempfile::tempdir().unwrap();
/// let p = dir.path().join("summary.json");
/// herdsman_io::write_atomic(&p, b"{\"ok\":1}").unwrap();
/// assert_eq!(std::fs::read(&p).unwrap(), b"{\"ok\":1}");
/// ```
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), SinkError> {
    let err = |action, source| SinkError::Io {
        action,
        path: path.to_path_buf(),
        source,
    };
    let path = match output_target(path)? {
        OutputTarget::Stdout => {
            let mut out = io::stdout().lock();
            return out
                .write_all(bytes)
                .and_then(|()| out.flush())
                .map_err(|e| err("write", e));
        }
        OutputTarget::Direct(p) => {
            let mut f = open_direct(&p).map_err(|e| err("open", e))?;
            return f.write_all(bytes).map_err(|e| err("write", e));
        }
        OutputTarget::File(p) => p,
    };
    let path = path.as_path();
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".herdsman-")
        .tempfile_in(dir)
        .map_err(|e| err("create a temporary file for", e))?;
    tmp.write_all(bytes).map_err(|e| err("write", e))?;
    tmp.as_file().sync_all().map_err(|e| err("sync", e))?;
    tmp.persist(path).map_err(|e| err("rename into", e.error))?;
    sync_dir(path).map_err(|e| err("sync the directory of", e))
}

/// Publishes an output whose sink is gone (for example after a crash between the last sync
/// and the rename): renames `<path>.partial` to `path` and syncs the directory. Succeeds when
/// the partial file is already gone and `path` exists.
pub fn finish_partial(path: &Path) -> Result<(), SinkError> {
    let partial = partial_path(path);
    match std::fs::rename(&partial, path) {
        Ok(()) => sync_dir(path).map_err(|source| SinkError::Io {
            action: "sync the directory of",
            path: path.to_path_buf(),
            source,
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound && path.exists() => Ok(()),
        Err(source) => Err(SinkError::Io {
            action: "rename into",
            path: path.to_path_buf(),
            source,
        }),
    }
}

enum Out {
    File(BufWriter<File>),
    /// A device, FIFO or descriptor, written in place.
    Direct(BufWriter<File>),
    Stdout(BufWriter<io::Stdout>),
}

impl Out {
    fn writer(&mut self) -> &mut dyn Write {
        match self {
            Out::File(w) | Out::Direct(w) => w,
            Out::Stdout(w) => w,
        }
    }
}

/// Where the records of an output that did not complete were left; see
/// [`Sink::finish_incomplete`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kept {
    /// They were streamed to standard output, a device or a FIFO as they were written.
    Streamed,
    /// The final path did not exist: the partial file was moved there.
    Published(PathBuf),
    /// The final path already existed and was left untouched: the records are in this
    /// partial file.
    Partial(PathBuf),
}

/// CSV state: the header once fixed, and a row buffer.
struct CsvOut {
    columns: Option<Vec<String>>,
    /// Where each column's value comes from (boxed: a sink stays small).
    lookup: Box<Lookup>,
    cells: Vec<Option<Vec<u8>>>,
    /// The columns were chosen up front: each record is projected onto them (other keys are
    /// left out). Otherwise the first record fixed them and a record with another key is
    /// refused.
    project: bool,
}

/// The header's lookup tables.
#[derive(Default)]
struct Lookup {
    /// Each name's first column.
    index: HashMap<String, usize>,
    /// For each column, the first column of the same name (itself unless named twice).
    first: Vec<usize>,
}

impl CsvOut {
    fn set_columns(&mut self, columns: Vec<String>) {
        let mut index = HashMap::with_capacity(columns.len());
        let first = columns
            .iter()
            .enumerate()
            .map(|(i, c)| *index.entry(c.clone()).or_insert(i))
            .collect();
        *self.lookup = Lookup { index, first };
        self.cells = vec![None; columns.len()];
        self.columns = Some(columns);
    }

    /// Why a record with key `k` does not fit a header fixed by the first record.
    fn unknown_key(k: &str, columns: &[String]) -> String {
        let mut shown = columns
            .iter()
            .take(8)
            .map(|c| format!("`{c}`"))
            .collect::<Vec<_>>()
            .join(", ");
        if columns.len() > 8 {
            shown.push_str(", ...");
        }
        format!(
            "its key `{k}` is not a column of the CSV header ({shown}, fixed by the first record); choose the columns with --columns (other keys are then left out) or write JSONL"
        )
    }
}

/// Why a JSONL record is refused.
const JSONL_LINE_BREAK: &str =
    "the record holds a raw line break, which would split its JSONL line; emit compact JSON";

/// The entries of a record written as a CSV row, or why it cannot be one: it must be a JSON
/// object.
fn record_pairs(json: &[u8]) -> Result<Pairs<'_>, String> {
    let text =
        std::str::from_utf8(json).map_err(|_| "the record is not valid UTF-8".to_string())?;
    let first = text.trim_start().as_bytes().first().copied();
    if first == Some(b'{') {
        return serde_json::from_str(text)
            .map_err(|e| format!("the record is not valid JSON ({e})"));
    }
    if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(text) {
        return Err(format!("the record is not valid JSON ({e})"));
    }
    let kind = match first {
        Some(b'"') => "a string",
        Some(b'[') => "an array",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        _ => "a number",
    };
    let mut preview: String = text.trim().chars().take(60).collect();
    if preview.len() < text.trim().len() {
        preview.push_str("...");
    }
    Err(format!(
        "the record is {kind} (`{preview}`), not a JSON object; a CSV row needs an object whose keys are the columns: make the worker answer objects, or write JSONL"
    ))
}

/// One output file (results or dead letters), written as JSONL or CSV.
///
/// ```
/// use herdsman_io::{OutputFormat, Sink};
/// let dir = tempfile::tempdir().unwrap();
/// let out = dir.path().join("out.csv");
/// let mut sink = Sink::open(&out, OutputFormat::Csv { columns: None }, None).unwrap();
/// sink.write_record(br#"{"id":1,"name":"a, b"}"#).unwrap();
/// assert!(sink.write_record(br#"{"other":1}"#).is_err()); // unknown key: nothing written
/// sink.sync().unwrap();
/// let checkpoint = sink.offset();
/// sink.write_record(br#"{"id":2}"#).unwrap();
/// drop(sink); // a crash: resume from the checkpoint drops the unsynced row
/// let sink = Sink::open(&out, OutputFormat::Csv { columns: None }, Some(checkpoint)).unwrap();
/// sink.finish().unwrap();
/// assert_eq!(std::fs::read_to_string(&out).unwrap(), "id,name\n1,\"a, b\"\n");
/// ```
pub struct Sink {
    path: PathBuf,
    partial: PathBuf,
    out: Out,
    offset: u64,
    csv: Option<CsvOut>,
    row: Vec<u8>,
}

impl Sink {
    /// Opens an output. Writes to `<path>.partial` beside the final path, or to standard
    /// output when `path` is `-` (no atomicity, no resume). A `path` that is a symbolic link
    /// is followed: the partial file and the final rename happen beside its target. A path
    /// that is not a regular file (`/dev/null`, a FIFO, `/dev/stdout`; see [`OutputTarget`])
    /// is written in place, with no partial file and no rename; resuming it only carries the
    /// offset on, since what was sent cannot be cut back. A directory is refused with
    /// [`SinkError::IsDir`].
    ///
    /// With `resume_offset = Some(n)`, the partial file must exist and hold at least `n`
    /// bytes; it is cut to `n` bytes and appended to. A CSV output reads its header back from
    /// the partial file.
    pub fn open(
        path: &Path,
        format: OutputFormat,
        resume_offset: Option<u64>,
    ) -> Result<Sink, SinkError> {
        let target = output_target(path)?;
        let path = match &target {
            OutputTarget::Stdout => path,
            OutputTarget::Direct(p) | OutputTarget::File(p) => p.as_path(),
        };
        let partial = match target {
            OutputTarget::File(_) => partial_path(path),
            _ => path.to_path_buf(),
        };
        let io_err = |action, source| SinkError::Io {
            action,
            path: partial.clone(),
            source,
        };
        let resume_err = |message: String| SinkError::Resume {
            path: partial.clone(),
            message,
        };
        let mut csv = match format {
            OutputFormat::Jsonl => None,
            OutputFormat::Csv { columns } => {
                let mut c = CsvOut {
                    columns: None,
                    lookup: Box::default(),
                    cells: Vec::new(),
                    project: columns.is_some(),
                };
                if let Some(cols) = columns {
                    c.set_columns(cols);
                }
                Some(c)
            }
        };
        let resume = resume_offset.filter(|&n| n > 0);
        let (out, offset, write_header) = if target == OutputTarget::Stdout {
            if resume.is_some() {
                return Err(resume_err("standard output cannot be resumed".into()));
            }
            (
                Out::Stdout(BufWriter::with_capacity(WRITE_BUF, io::stdout())),
                0,
                true,
            )
        } else if target.is_stream() {
            // Bytes already sent to a device or FIFO cannot be taken back: a resumed sink
            // only carries its logical offset on (records after the checkpoint are sent
            // again).
            let file = open_direct(path).map_err(|e| io_err("open", e))?;
            (
                Out::Direct(BufWriter::with_capacity(WRITE_BUF, file)),
                resume.unwrap_or(0),
                resume.is_none(),
            )
        } else if let Some(n) = resume {
            let mut file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&partial)
                .map_err(|e| {
                    if e.kind() == io::ErrorKind::NotFound {
                        resume_err(format!(
                            "the partial file is missing but the checkpoint says it held {n} bytes"
                        ))
                    } else {
                        io_err("open", e)
                    }
                })?;
            let len = file.metadata().map_err(|e| io_err("inspect", e))?.len();
            if len < n {
                return Err(resume_err(format!(
                    "the partial file holds {len} bytes but the checkpoint says {n}"
                )));
            }
            if let Some(c) = csv.as_mut() {
                let found =
                    read_csv_header(&mut file).map_err(|e| io_err("read the header of", e))?;
                match (&c.columns, found) {
                    (_, None) => return Err(resume_err("its CSV header cannot be read".into())),
                    (Some(want), Some(got)) if *want != got => {
                        return Err(resume_err(format!(
                            "its CSV header {got:?} differs from the requested columns {want:?}"
                        )))
                    }
                    (_, Some(got)) => c.set_columns(got),
                }
            }
            file.set_len(n).map_err(|e| io_err("truncate", e))?;
            file.seek(SeekFrom::Start(n))
                .map_err(|e| io_err("seek in", e))?;
            (
                Out::File(BufWriter::with_capacity(WRITE_BUF, file)),
                n,
                false,
            )
        } else {
            let file = File::create(&partial).map_err(|e| io_err("create", e))?;
            (
                Out::File(BufWriter::with_capacity(WRITE_BUF, file)),
                0,
                true,
            )
        };
        let mut sink = Sink {
            path: path.to_path_buf(),
            partial,
            out,
            offset,
            csv: csv.take(),
            row: Vec::with_capacity(256),
        };
        if write_header {
            if let Some(cols) = sink.csv.as_ref().and_then(|c| c.columns.clone()) {
                sink.write_header(&cols)?;
            }
        }
        Ok(sink)
    }

    /// The final path of this output.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The CSV header, once fixed.
    pub fn columns(&self) -> Option<&[String]> {
        self.csv.as_ref()?.columns.as_deref()
    }

    fn write_raw(&mut self, bytes: &[u8]) -> Result<(), SinkError> {
        self.out
            .writer()
            .write_all(bytes)
            .map_err(|source| SinkError::Io {
                action: "write",
                path: self.partial.clone(),
                source,
            })?;
        self.offset += bytes.len() as u64;
        Ok(())
    }

    fn write_header(&mut self, cols: &[String]) -> Result<(), SinkError> {
        let mut row = std::mem::take(&mut self.row);
        row.clear();
        for (i, c) in cols.iter().enumerate() {
            if i > 0 {
                row.push(b',');
            }
            push_csv_cell(&mut row, c.as_bytes(), cols.len() == 1);
        }
        row.push(b'\n');
        let r = self.write_raw(&row);
        self.row = row;
        r
    }

    /// Writes one record given as compact JSON text.
    ///
    /// JSONL writes it as one line (a record holding a raw line break is refused). CSV: the
    /// record must be a JSON object. The `columns` given at open project every record onto
    /// them, in their order (other keys are left out, missing ones are empty cells);
    /// without them, the first record's keys fix the header and a record with another key is
    /// refused. String values are written as their text, `null` as an empty cell, other
    /// values as JSON text. A refused record gets [`SinkError::Record`] and nothing is
    /// written.
    pub fn write_record(&mut self, json: &[u8]) -> Result<(), SinkError> {
        let Some(csv) = self.csv.as_mut() else {
            if memchr::memchr2(b'\n', b'\r', json).is_some() {
                return Err(SinkError::Record {
                    path: self.path.clone(),
                    message: JSONL_LINE_BREAK.into(),
                });
            }
            let w = self.out.writer();
            let r = w.write_all(json).and_then(|_| w.write_all(b"\n"));
            r.map_err(|source| SinkError::Io {
                action: "write",
                path: self.partial.clone(),
                source,
            })?;
            self.offset += json.len() as u64 + 1;
            return Ok(());
        };
        let record_err = |message: String| SinkError::Record {
            path: self.path.clone(),
            message,
        };
        let pairs = record_pairs(json).map_err(record_err)?;
        let mut new_header = None;
        if csv.columns.is_none() {
            let cols: Vec<String> = pairs.0.iter().map(|(k, _)| k.to_string()).collect();
            csv.set_columns(cols.clone());
            new_header = Some(cols);
        }
        for c in csv.cells.iter_mut() {
            *c = None;
        }
        for (k, v) in &pairs.0 {
            match csv.lookup.index.get(k.as_ref()) {
                Some(&i) => csv.cells[i] = Some(cell_text(v).map_err(record_err)?),
                None if csv.project => {}
                None => {
                    let cols = csv.columns.as_deref().unwrap_or_default();
                    return Err(record_err(CsvOut::unknown_key(k, cols)));
                }
            }
        }
        for i in 0..csv.cells.len() {
            let f = csv.lookup.first[i];
            if f != i {
                csv.cells[i] = csv.cells[f].clone();
            }
        }
        let mut row = std::mem::take(&mut self.row);
        row.clear();
        let single = csv.cells.len() == 1;
        for (i, c) in csv.cells.iter().enumerate() {
            if i > 0 {
                row.push(b',');
            }
            push_csv_cell(&mut row, c.as_deref().unwrap_or(b""), single);
        }
        row.push(b'\n');
        if let Some(cols) = new_header {
            self.write_header(&cols)?;
        }
        let r = self.write_raw(&row);
        self.row = row;
        r
    }

    /// Checks, writing nothing, that [`Sink::write_record`] would accept every record of
    /// `records` written in this order (the first may fix a CSV header the others must fit).
    /// Use it before writing the outputs of one input record, so that they are written all
    /// or none.
    pub fn check_records<'a>(
        &self,
        records: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<(), SinkError> {
        let record_err = |message: String| SinkError::Record {
            path: self.path.clone(),
            message,
        };
        let Some(csv) = self.csv.as_ref() else {
            for r in records {
                if memchr::memchr2(b'\n', b'\r', r).is_some() {
                    return Err(record_err(JSONL_LINE_BREAK.into()));
                }
            }
            return Ok(());
        };
        // The header the first record would fix, when none is yet.
        let mut fixed: Option<Vec<String>> = None;
        for r in records {
            let pairs = record_pairs(r).map_err(record_err)?;
            if csv.project {
                continue;
            }
            let cols = match (&csv.columns, &fixed) {
                (Some(c), _) | (None, Some(c)) => c,
                (None, None) => {
                    fixed = Some(pairs.0.iter().map(|(k, _)| k.to_string()).collect());
                    continue;
                }
            };
            if let Some((k, _)) = pairs.0.iter().find(|(k, _)| !cols.iter().any(|c| c == k)) {
                return Err(record_err(CsvOut::unknown_key(k, cols)));
            }
        }
        Ok(())
    }

    /// The logical end offset of the output: every byte written so far, buffered or not.
    /// After [`Sink::sync`] this many bytes are durable.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Whether this output is written in place (standard output, a device, a FIFO): it has
    /// no partial file and cannot be resumed.
    pub fn is_stream(&self) -> bool {
        !matches!(self.out, Out::File(_))
    }

    /// Flushes buffers and fsyncs the partial file (standard output, devices and FIFOs are
    /// only flushed).
    pub fn sync(&mut self) -> Result<(), SinkError> {
        let err = |action, source| SinkError::Io {
            action,
            path: self.partial.clone(),
            source,
        };
        match &mut self.out {
            Out::File(w) => {
                w.flush().map_err(|e| err("flush", e))?;
                w.get_ref().sync_data().map_err(|e| err("sync", e))
            }
            Out::Direct(w) => w.flush().map_err(|e| err("write", e)),
            Out::Stdout(w) => w.flush().map_err(|e| err("flush", e)),
        }
    }

    /// Flushes, fsyncs, renames `<path>.partial` to `<path>` and fsyncs the directory.
    /// Succeeds if the partial file is already gone and the final file exists.
    pub fn finish(mut self) -> Result<(), SinkError> {
        self.sync()?;
        if self.is_stream() {
            return Ok(());
        }
        finish_partial(&self.path)
    }

    /// Ends an output that did not complete (a stopped run that cannot be resumed): flushes
    /// and fsyncs what was written, then never replaces an existing file. When the final
    /// path does not exist the partial file takes its place (with a hard link, which fails
    /// rather than replace a file created meanwhile); when it exists it is left as it was and
    /// the records stay in the partial file. Says which in the returned [`Kept`].
    pub fn finish_incomplete(mut self) -> Result<Kept, SinkError> {
        self.sync()?;
        if self.is_stream() {
            return Ok(Kept::Streamed);
        }
        let io_err = |action, path: &Path, source| SinkError::Io {
            action,
            path: path.to_path_buf(),
            source,
        };
        match std::fs::hard_link(&self.partial, &self.path) {
            Ok(()) => {
                std::fs::remove_file(&self.partial)
                    .map_err(|e| io_err("remove", &self.partial, e))?;
                sync_dir(&self.path).map_err(|e| io_err("sync the directory of", &self.path, e))?;
                Ok(Kept::Published(self.path.clone()))
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                Ok(Kept::Partial(self.partial.clone()))
            }
            // A file system without hard links: check, then rename.
            Err(_) if std::fs::symlink_metadata(&self.path).is_ok() => {
                Ok(Kept::Partial(self.partial.clone()))
            }
            Err(_) => {
                std::fs::rename(&self.partial, &self.path)
                    .map_err(|e| io_err("rename into", &self.path, e))?;
                sync_dir(&self.path).map_err(|e| io_err("sync the directory of", &self.path, e))?;
                Ok(Kept::Published(self.path.clone()))
            }
        }
    }
}

/// Reads the first CSV record of a file as header names (`None` if there is none).
fn read_csv_header(file: &mut File) -> io::Result<Option<Vec<String>>> {
    file.seek(SeekFrom::Start(0))?;
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(io::BufReader::new(&mut *file));
    let mut rec = csv::StringRecord::new();
    let got = match rdr.read_record(&mut rec) {
        Ok(true) => Some(rec.iter().map(str::to_string).collect()),
        Ok(false) | Err(_) => None,
    };
    drop(rdr);
    Ok(got)
}

/// Appends one CSV cell, quoted when needed. A lone empty cell is quoted so the row is not a
/// blank line; a cell that starts with U+FEFF is quoted so that, first in the file, it is not
/// taken for a byte order mark and dropped by readers.
fn push_csv_cell(out: &mut Vec<u8>, s: &[u8], single: bool) {
    let needs = (single && s.is_empty())
        || s.starts_with("\u{feff}".as_bytes())
        || s.iter().any(|&b| matches!(b, b',' | b'"' | b'\n' | b'\r'))
        || s.first().is_some_and(|&b| b == b' ' || b == b'\t')
        || s.last().is_some_and(|&b| b == b' ' || b == b'\t');
    if !needs {
        out.extend_from_slice(s);
        return;
    }
    out.push(b'"');
    for &b in s {
        if b == b'"' {
            out.push(b'"');
        }
        out.push(b);
    }
    out.push(b'"');
}

/// The CSV text of a JSON value: strings unescaped, `null` empty, anything else as JSON text.
fn cell_text(v: &RawValue) -> Result<Vec<u8>, String> {
    let raw = v.get();
    match raw.as_bytes().first() {
        Some(b'"') => serde_json::from_str::<String>(raw)
            .map(String::into_bytes)
            .map_err(|e| format!("a string value is invalid ({e})")),
        Some(b'n') => Ok(Vec::new()),
        _ => Ok(raw.as_bytes().to_vec()),
    }
}

/// An object's entries in document order, borrowing where possible.
struct Pairs<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

struct Key<'a>(Cow<'a, str>);

impl<'de> serde::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string key")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_string())))
            }
            fn visit_string<E>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

impl<'de> serde::Deserialize<'de> for Pairs<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Pairs<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Pairs<'de>, A::Error> {
                let mut out: Vec<(Cow<'de, str>, &'de RawValue)> = Vec::new();
                while let Some((k, v)) = map.next_entry::<Key<'de>, &'de RawValue>()? {
                    // A repeated key keeps its first place and its last value.
                    if let Some(e) = out.iter_mut().find(|(ek, _)| *ek == k.0) {
                        e.1 = v;
                    } else {
                        out.push((k.0, v));
                    }
                }
                Ok(Pairs(out))
            }
        }
        d.deserialize_map(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_are_quoted_only_when_needed() {
        let mut out = Vec::new();
        for (s, single) in [
            ("plain", false),
            ("a,b", false),
            ("q\"", false),
            ("", false),
            ("", true),
            (" x", false),
        ] {
            push_csv_cell(&mut out, s.as_bytes(), single);
            out.push(b'|');
        }
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "plain|\"a,b\"|\"q\"\"\"||\"\"|\" x\"|"
        );
    }

    #[test]
    fn pairs_keep_document_order() {
        let p: Pairs = serde_json::from_str(r#"{"z":1,"a":{"b":[1]},"k\"q":"x","z":2}"#).unwrap();
        let got: Vec<(String, String)> =
            p.0.iter()
                .map(|(k, v)| (k.to_string(), v.get().to_string()))
                .collect();
        assert_eq!(
            got,
            vec![
                ("z".into(), "2".into()),
                ("a".into(), r#"{"b":[1]}"#.into()),
                ("k\"q".into(), r#""x""#.into())
            ]
        );
    }
}
