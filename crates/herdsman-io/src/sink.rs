//! Output sinks: append records to `<path>.partial`, make them durable on request, and
//! publish the file with an atomic rename at the end; plus a small atomic file writer. The
//! bytes of each record come from the output format's writer (`writers/`).
//!
//! A sink must never write part of a record it rejects, never publish a file before
//! everything is flushed and synced, and never keep more than one record plus its write
//! buffer in memory. It must never replace what is not a regular file: a device, a FIFO or
//! `/dev/stdout` is written in place, and a symbolic link is followed so that the partial
//! file and the rename happen beside its target.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::error::SinkError;
use crate::format::OutputFormat;
use crate::writers::{writer_for, RecordWriter, SinkOptions};

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

/// The length of what publication appended to an output after its last commit: Parquet's
/// footer (read from the file's last eight bytes), nothing for other formats (0). A crash
/// between publication and the end of the job leaves the published file; it holds the
/// committed bytes plus this many.
///
/// ```
/// use herdsman_io::{published_extra_len, OutputFormat};
/// let dir = tempfile::tempdir().unwrap();
/// let p = dir.path().join("out.jsonl");
/// std::fs::write(&p, "1\n").unwrap();
/// assert_eq!(published_extra_len(&p, &OutputFormat::Jsonl), 0);
/// ```
pub fn published_extra_len(path: &Path, format: &OutputFormat) -> u64 {
    if !matches!(format, OutputFormat::Parquet(_)) {
        return 0;
    }
    let tail = || -> io::Result<[u8; 8]> {
        let mut f = File::open(path)?;
        f.seek(SeekFrom::End(-8))?;
        let mut t = [0u8; 8];
        f.read_exact(&mut t)?;
        Ok(t)
    };
    tail().map_or(0, |t| crate::writers::footer_len(&t))
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

/// One output file (results or dead letters), written as JSONL, CSV or raw lines.
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
    /// Turns records into the format's bytes.
    writer: Box<dyn RecordWriter>,
    row: Vec<u8>,
    /// [`Sink::complete`] ran.
    completed: bool,
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
        Sink::open_with(path, format, resume_offset, &SinkOptions::default())
    }

    /// [`Sink::open`] with options (the CSV delimiter).
    pub fn open_with(
        path: &Path,
        format: OutputFormat,
        resume_offset: Option<u64>,
        opts: &SinkOptions,
    ) -> Result<Sink, SinkError> {
        Sink::open_inner(path, format, resume_offset, opts, false)
    }

    /// [`Sink::open_with`] for an output that continues another one: a later shard's output,
    /// appended to the earlier shards' outputs by concatenation. It starts with no header
    /// (a CSV header is written only by the first shard), and resuming it reads no header
    /// back: a CSV output needs its columns given up front in `format`.
    ///
    /// ```
    /// use herdsman_io::{OutputFormat, Sink, SinkOptions};
    /// let dir = tempfile::tempdir().unwrap();
    /// let p = dir.path().join("part-1.csv");
    /// let csv = OutputFormat::Csv { columns: Some(vec!["id".into()]) };
    /// let mut sink = Sink::open_continuation(&p, csv, None, &SinkOptions::default()).unwrap();
    /// sink.write_record(br#"{"id":7}"#).unwrap();
    /// sink.finish().unwrap();
    /// assert_eq!(std::fs::read_to_string(&p).unwrap(), "7\n");
    /// ```
    pub fn open_continuation(
        path: &Path,
        format: OutputFormat,
        resume_offset: Option<u64>,
        opts: &SinkOptions,
    ) -> Result<Sink, SinkError> {
        Sink::open_inner(path, format, resume_offset, opts, true)
    }

    /// A continuation (as [`Sink::open_continuation`]: no header) written in place at `path`,
    /// a new file: no partial file, no rename, no resume. For a caller that makes byte ranges
    /// of the file visible itself, once they are flushed and fsynced (the parts of a job
    /// shared by several machines, several chunks to a file): take [`Sink::offset`] around
    /// the records of each range and [`Sink::flush`] before handing a range on. A file
    /// already at `path` is an error ([`std::io::ErrorKind::AlreadyExists`] in
    /// [`SinkError::Io`]), never replaced.
    ///
    /// ```
    /// use herdsman_io::{OutputFormat, Sink, SinkOptions};
    /// let dir = tempfile::tempdir().unwrap();
    /// let p = dir.path().join("segment");
    /// let mut sink = Sink::open_segment(&p, OutputFormat::Jsonl, &SinkOptions::default()).unwrap();
    /// sink.write_record(br#"{"id":1}"#).unwrap();
    /// let start = sink.offset();
    /// sink.write_record(br#"{"id":2}"#).unwrap();
    /// sink.flush().unwrap();
    /// let bytes = std::fs::read(&p).unwrap();
    /// assert_eq!(&bytes[start as usize..sink.offset() as usize], b"{\"id\":2}\n");
    /// assert!(Sink::open_segment(&p, OutputFormat::Jsonl, &SinkOptions::default()).is_err());
    /// ```
    pub fn open_segment(
        path: &Path,
        format: OutputFormat,
        opts: &SinkOptions,
    ) -> Result<Sink, SinkError> {
        let io_err = |source| SinkError::Io {
            action: "create",
            path: path.to_path_buf(),
            source,
        };
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(io_err)?;
        let mut writer = writer_for(&format, opts);
        writer.resume(None).map_err(|message| SinkError::Resume {
            path: path.to_path_buf(),
            message,
        })?;
        Ok(Sink {
            path: path.to_path_buf(),
            partial: path.to_path_buf(),
            out: Out::File(BufWriter::with_capacity(WRITE_BUF, file)),
            offset: 0,
            writer,
            row: Vec::with_capacity(256),
            completed: false,
        })
    }

    fn open_inner(
        path: &Path,
        format: OutputFormat,
        resume_offset: Option<u64>,
        opts: &SinkOptions,
        continuation: bool,
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
        let mut writer = writer_for(&format, opts);
        let resume = resume_offset.filter(|&n| n > 0);
        let (out, offset) = if target == OutputTarget::Stdout {
            if resume.is_some() {
                return Err(resume_err("standard output cannot be resumed".into()));
            }
            (
                Out::Stdout(BufWriter::with_capacity(WRITE_BUF, io::stdout())),
                0,
            )
        } else if target.is_stream() {
            // Bytes already sent to a device or FIFO cannot be taken back: a resumed sink
            // only carries its logical offset on (records after the checkpoint are sent
            // again).
            let file = open_direct(path).map_err(|e| io_err("open", e))?;
            if resume.is_some() {
                writer.resume(None).map_err(resume_err)?;
            }
            (
                Out::Direct(BufWriter::with_capacity(WRITE_BUF, file)),
                resume.unwrap_or(0),
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
            if continuation {
                // Its header, if any, is the first shard's: there is none to read back.
                writer.resume(None).map_err(resume_err)?;
            } else {
                file.seek(SeekFrom::Start(0))
                    .map_err(|e| io_err("read the header of", e))?;
                writer
                    .resume(Some(&mut Read::take(&mut file, n)))
                    .map_err(resume_err)?;
            }
            file.set_len(n).map_err(|e| io_err("truncate", e))?;
            file.seek(SeekFrom::Start(n))
                .map_err(|e| io_err("seek in", e))?;
            (Out::File(BufWriter::with_capacity(WRITE_BUF, file)), n)
        } else {
            let file = File::create(&partial).map_err(|e| io_err("create", e))?;
            (Out::File(BufWriter::with_capacity(WRITE_BUF, file)), 0)
        };
        if resume.is_none() && continuation {
            // A fresh continuation holds no header, and must never write one.
            writer.resume(None).map_err(resume_err)?;
        }
        let mut sink = Sink {
            path: path.to_path_buf(),
            partial,
            out,
            offset,
            writer,
            row: Vec::with_capacity(256),
            completed: false,
        };
        if resume.is_none() && !continuation {
            let mut row = std::mem::take(&mut sink.row);
            sink.writer.start(&mut row);
            let r = sink.write_raw(&row);
            row.clear();
            sink.row = row;
            r?;
        }
        Ok(sink)
    }

    /// The final path of this output.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The CSV header, once fixed.
    pub fn columns(&self) -> Option<&[String]> {
        self.writer.columns()
    }

    fn write_raw(&mut self, bytes: &[u8]) -> Result<(), SinkError> {
        if bytes.is_empty() {
            return Ok(());
        }
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

    /// Writes one record given as compact JSON text.
    ///
    /// JSONL writes it as one line (a record holding a raw line break is refused). Lines
    /// writes a JSON string as its text followed by a line break (a string holding line
    /// breaks spans several lines, as a command's output would), and any other value as
    /// JSONL does. CSV: the record must be a JSON object. The `columns` given at open
    /// project every record onto them, in their order (other keys are left out, missing
    /// ones are empty cells); without them, the first record's keys fix the header and a
    /// record with another key is refused. String values are written as their text, `null`
    /// as an empty cell, other values as JSON text; cells are separated by the delimiter of
    /// [`SinkOptions`] and quoted where needed. A refused record gets [`SinkError::Record`]
    /// and nothing is written.
    pub fn write_record(&mut self, json: &[u8]) -> Result<(), SinkError> {
        let mut row = std::mem::take(&mut self.row);
        row.clear();
        let r = match self.writer.encode(json, &mut row) {
            Ok(()) => self.write_raw(&row),
            Err(message) => Err(SinkError::Record {
                path: self.path.clone(),
                message,
            }),
        };
        // Keep the buffer unless one huge record grew it.
        if row.capacity() <= WRITE_BUF {
            self.row = row;
        }
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
        self.writer
            .check(&mut records.into_iter())
            .map_err(|message| SinkError::Record {
                path: self.path.clone(),
                message,
            })
    }

    /// The logical end offset of the output: every byte written so far, buffered or not.
    /// After [`Sink::sync`] this many bytes are durable.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Ends a chunk: writes what the records written since the last chunk end still need to
    /// be complete (a Parquet row group; nothing for other formats). Call it after the last
    /// record of every chunk and before taking [`Sink::offset`] for a commit. An error means
    /// the output cannot go on.
    pub fn end_chunk(&mut self) -> Result<(), SinkError> {
        let mut row = std::mem::take(&mut self.row);
        row.clear();
        let r = match self.writer.end_chunk(&mut row) {
            Ok(()) => self.write_raw(&row),
            Err(message) => Err(self.encode_err(message)),
        };
        row.clear();
        if row.capacity() <= WRITE_BUF {
            self.row = row;
        }
        r
    }

    fn encode_err(&self, message: String) -> SinkError {
        SinkError::Io {
            action: "encode",
            path: self.partial.clone(),
            source: io::Error::other(message),
        }
    }

    /// Writes what completes the file (Parquet's footer, after the records not yet in a row
    /// group) without publishing it, for a caller that moves the partial file into place
    /// itself; nothing for other formats. Write no record after it. [`Sink::finish`] and
    /// [`Sink::finish_incomplete`] call it (once: a second call does nothing).
    pub fn complete(&mut self) -> Result<(), SinkError> {
        if self.completed {
            return Ok(());
        }
        self.end_chunk()?;
        let mut tail = Vec::new();
        self.writer
            .finish(&mut tail)
            .map_err(|m| self.encode_err(m))?;
        self.write_raw(&tail)?;
        self.completed = true;
        Ok(())
    }

    /// Hands what is buffered to the operating system, without fsync: on standard output, a
    /// device or a FIFO the reader sees every record written so far.
    pub fn flush(&mut self) -> Result<(), SinkError> {
        self.out.writer().flush().map_err(|source| SinkError::Io {
            action: "write",
            path: self.partial.clone(),
            source,
        })
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

    /// Writes what completes the file (Parquet's footer), flushes, fsyncs, renames
    /// `<path>.partial` to `<path>` and fsyncs the directory. Succeeds if the partial file is
    /// already gone and the final file exists.
    pub fn finish(mut self) -> Result<(), SinkError> {
        self.complete()?;
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
        self.complete()?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_csv_output_follows_its_delimiter_and_resumes_without_a_second_header() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("o.csv");
        let opts = SinkOptions {
            csv_delimiter: b';',
        };
        let fmt = OutputFormat::Csv { columns: None };
        let mut s = Sink::open_with(&out, fmt.clone(), None, &opts).unwrap();
        s.write_record(br#"{"a":"x;y","b":1}"#).unwrap();
        s.sync().unwrap();
        let cp = s.offset();
        s.write_record(br#"{"a":"lost"}"#).unwrap();
        drop(s);
        let mut s = Sink::open_with(&out, fmt, Some(cp), &opts).unwrap();
        assert_eq!(s.columns().unwrap(), ["a", "b"]);
        s.write_record(br#"{"b":2}"#).unwrap();
        s.finish().unwrap();
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "a;b\n\"x;y\";1\n;2\n"
        );
    }
}
