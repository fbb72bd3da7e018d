//! Input paths: glob expansion, opening (with decompression) and cheap record estimates, and
//! the watch that tells whether a file changed while it was read.
//!
//! Never reads a whole file into memory; estimates read in fixed-size blocks.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use crate::error::IoError;
use crate::format::{Compression, Format};

/// Default size of the read buffer for each input.
pub(crate) const READ_BUF: usize = 256 * 1024;

/// One input: standard input or a file.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum InputPath {
    /// Standard input (written `-`).
    Stdin,
    /// A file.
    File(PathBuf),
    /// An object in object storage (`s3://bucket/key`), as it was listed.
    Object(crate::ObjectInput),
}

impl InputPath {
    /// The name used in messages: `<stdin>` or the path.
    pub fn display_name(&self) -> String {
        match self {
            InputPath::Stdin => "<stdin>".to_string(),
            InputPath::File(p) => {
                let name = p.display().to_string();
                // A database URL is shown without its password.
                match crate::database_format(&name) {
                    Some(_) => crate::redact_url(&name),
                    None => name,
                }
            }
            InputPath::Object(o) => o.url.clone(),
        }
    }

    /// The compression of this input (standard input is taken as plain).
    pub fn compression(&self) -> Compression {
        match self {
            InputPath::Stdin => Compression::None,
            InputPath::File(p) => Compression::from_path(p),
            InputPath::Object(o) => Compression::from_path(Path::new(o.key())),
        }
    }
}

/// An input with the format to read it in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InputSpec {
    /// Where to read.
    pub path: InputPath,
    /// How to read it.
    pub format: Format,
}

/// Expands command-line input patterns into paths, in order.
///
/// `-` is standard input. A pattern with glob characters (`*`, `?`, `[`) is expanded and its
/// matches sorted; a pattern that matches nothing is an error. A plain path must exist and not
/// be a directory. An object-storage URL (`s3://bucket/key`, a prefix ending in `/`, or a
/// glob in the key) is listed in key order (see [`expand_object`](crate::expand_object)).
///
/// ```
/// use herdsman_io::{expand_inputs, InputPath};
/// assert_eq!(expand_inputs(&["-".to_string()]).unwrap(), vec![InputPath::Stdin]);
/// assert!(expand_inputs(&["/no/such/file.csv".to_string()]).is_err());
/// ```
pub fn expand_inputs(patterns: &[String]) -> Result<Vec<InputPath>, IoError> {
    let mut out = Vec::new();
    for pattern in patterns {
        if pattern == "-" {
            out.push(InputPath::Stdin);
            continue;
        }
        if crate::is_object_url(pattern) {
            out.extend(
                crate::expand_object(pattern)?
                    .into_iter()
                    .map(InputPath::Object),
            );
            continue;
        }
        let is_glob = pattern.contains(['*', '?', '[']);
        let plain = PathBuf::from(pattern);
        if !is_glob || plain.exists() {
            let meta = std::fs::metadata(&plain).map_err(|source| IoError::Missing {
                path: plain.clone(),
                source,
            })?;
            if meta.is_dir() {
                return Err(IoError::IsDir { path: plain });
            }
            out.push(InputPath::File(plain));
            continue;
        }
        let paths = glob::glob(pattern).map_err(|e| IoError::BadPattern {
            pattern: pattern.clone(),
            message: e.msg.to_string(),
        })?;
        let mut matched = Vec::new();
        for entry in paths {
            let path = entry.map_err(|e| IoError::Missing {
                path: e.path().to_path_buf(),
                source: io::Error::new(e.error().kind(), e.error().to_string()),
            })?;
            if path.is_file() {
                matched.push(path);
            }
        }
        if matched.is_empty() {
            return Err(IoError::NoMatch {
                pattern: pattern.clone(),
            });
        }
        matched.sort();
        out.extend(matched.into_iter().map(InputPath::File));
    }
    Ok(out)
}

/// Opens the decompressed byte stream of an input.
pub(crate) fn open_stream(path: &InputPath, buf: usize) -> io::Result<Box<dyn BufRead + Send>> {
    match path {
        InputPath::Stdin => Ok(Box::new(BufReader::with_capacity(buf.max(4), io::stdin()))),
        InputPath::File(p) => open_file_stream(p, 0, buf),
        InputPath::Object(o) => crate::object::open_object_stream(o, 0, buf),
    }
}

/// What a regular input file looked like when reading began, to tell at its end whether it
/// changed while it was read. Keeps its own handle on the open file, so a file renamed or
/// replaced under the same name is still the one inspected.
#[derive(Debug)]
pub(crate) struct Watch {
    file: File,
    size: u64,
    modified: Option<std::time::SystemTime>,
    /// Plain (not compressed): the bytes read must equal the size.
    plain: bool,
}

impl Watch {
    /// Takes the snapshot; `None` for anything but a regular file (a FIFO or a device has
    /// no size to compare).
    fn of(file: &File, plain: bool) -> io::Result<Option<Watch>> {
        let meta = file.metadata()?;
        if !meta.is_file() {
            return Ok(None);
        }
        Ok(Some(Watch {
            file: file.try_clone()?,
            size: meta.len(),
            modified: meta.modified().ok(),
            plain,
        }))
    }

    /// At the end of the data, having read up to byte `read_to` (decompressed): `None` if
    /// the file is as it was, else a description of the change.
    pub(crate) fn check(&self, read_to: u64) -> Option<String> {
        let meta = match self.file.metadata() {
            Ok(m) => m,
            Err(e) => return Some(format!("it can no longer be inspected ({e})")),
        };
        let size = meta.len();
        let grew_or_shrank = size != self.size;
        let short_or_long = self.plain && read_to != self.size;
        if grew_or_shrank || short_or_long {
            let read = if self.plain {
                format!(", and {read_to} bytes were read")
            } else {
                String::new()
            };
            return Some(format!(
                "it held {} bytes when reading began and holds {size} bytes now{read}",
                self.size
            ));
        }
        if meta.modified().ok() != self.modified {
            return Some(format!(
                "it was written to while it was read (same size, {size} bytes, but a new modification time)"
            ));
        }
        None
    }
}

/// Opens a file's decompressed stream positioned at `offset` decompressed bytes: a real seek
/// for plain files, decompress-and-discard otherwise. Fails with `UnexpectedEof` when the data
/// is shorter than `offset`.
pub(crate) fn open_file_stream(
    p: &Path,
    offset: u64,
    buf: usize,
) -> io::Result<Box<dyn BufRead + Send>> {
    open_watched(p, offset, buf).map(|(rdr, _)| rdr)
}

/// [`open_file_stream`], with a [`Watch`] taken on the file before any byte is read.
pub(crate) fn open_watched(
    p: &Path,
    offset: u64,
    buf: usize,
) -> io::Result<(Box<dyn BufRead + Send>, Option<Watch>)> {
    // At least 4 bytes, so a byte order mark is seen whole by the first fill.
    let buf = buf.max(4);
    let mut file = File::open(p)?;
    let compression = Compression::from_path(p);
    let watch = Watch::of(&file, compression == Compression::None)?;
    let mut rdr: Box<dyn BufRead + Send> = match compression {
        Compression::None => {
            if offset > 0 {
                let len = file.metadata()?.len();
                if offset > len {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("the file has only {len} bytes"),
                    ));
                }
                io::Seek::seek(&mut file, io::SeekFrom::Start(offset))?;
            }
            return Ok((Box::new(BufReader::with_capacity(buf, file)), watch));
        }
        Compression::Gzip => Box::new(BufReader::with_capacity(
            buf,
            flate2::read::MultiGzDecoder::new(BufReader::with_capacity(buf, file)),
        )),
        Compression::Zstd => Box::new(BufReader::with_capacity(
            buf,
            zstd::stream::read::Decoder::new(file)?,
        )),
    };
    if offset > 0 {
        let skipped = io::copy(&mut Read::take(&mut rdr, offset), &mut io::sink())?;
        if skipped < offset {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("the data has only {skipped} bytes"),
            ));
        }
    }
    Ok((rdr, watch))
}

/// A cheap estimate of the number of records, for progress bars: counts newlines in plain
/// files (minus one header row per CSV file). `None` when any input is standard input or
/// compressed, or cannot be read.
pub fn estimate_records(inputs: &[InputSpec]) -> Option<u64> {
    let mut total = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    for spec in inputs {
        let InputPath::File(p) = &spec.path else {
            return None;
        };
        if Compression::from_path(p) != Compression::None {
            return None;
        }
        if spec.format == Format::Parquet {
            total += crate::formats::parquet::row_count(p)?;
            continue;
        }
        let mut f = File::open(p).ok()?;
        let mut lines = 0u64;
        let mut last = b'\n';
        let mut any = false;
        loop {
            let n = match f.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return None,
            };
            any = true;
            lines += memchr::memchr_iter(b'\n', &buf[..n]).count() as u64;
            last = buf[n - 1];
        }
        if any && last != b'\n' {
            lines += 1;
        }
        if spec.format == Format::Csv {
            lines = lines.saturating_sub(1);
        }
        total += lines;
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_are_sorted_and_errors_are_clear() {
        let dir = tempfile::tempdir().unwrap();
        for n in ["b.csv", "a.csv", "c.txt"] {
            std::fs::write(dir.path().join(n), "x\n1\n").unwrap();
        }
        let pat = format!("{}/*.csv", dir.path().display());
        let got = expand_inputs(&[pat, "-".into()]).unwrap();
        assert_eq!(
            got,
            vec![
                InputPath::File(dir.path().join("a.csv")),
                InputPath::File(dir.path().join("b.csv")),
                InputPath::Stdin
            ]
        );
        let none = format!("{}/*.parquet", dir.path().display());
        let err = expand_inputs(&[none]).unwrap_err();
        assert!(err.to_string().contains("matched no file"), "{err}");
        let err = expand_inputs(&[dir.path().display().to_string()]).unwrap_err();
        assert!(matches!(err, IoError::IsDir { .. }));
    }

    #[test]
    fn estimates_count_lines() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.csv");
        std::fs::write(&a, "h\n1\n2\n3").unwrap();
        let b = dir.path().join("b.jsonl");
        std::fs::write(&b, "1\n2\n").unwrap();
        let specs = vec![
            InputSpec {
                path: InputPath::File(a),
                format: Format::Csv,
            },
            InputSpec {
                path: InputPath::File(b),
                format: Format::Jsonl,
            },
        ];
        assert_eq!(estimate_records(&specs), Some(5));
        let stdin = vec![InputSpec {
            path: InputPath::Stdin,
            format: Format::Lines,
        }];
        assert_eq!(estimate_records(&stdin), None);
    }
}
