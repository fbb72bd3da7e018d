//! Static shards: the inputs cut into N contiguous byte ranges, so that N processes (on N
//! machines) each read one range and their outputs, concatenated in shard order, are the
//! output of one process reading everything.
//!
//! The inputs are seen as one run of bytes: input 0's (decompressed) bytes, then input 1's,
//! and so on. Shard `i` of `n` owns the bytes from `⌊i·T/n⌋` to `⌊(i+1)·T/n⌋` (`T` the
//! total), and a record belongs to the shard that owns its **first byte**. So every record
//! belongs to exactly one shard, the shards are contiguous and in input order, and the cut
//! depends only on the sizes of the inputs: no shard needs another's answer, and no
//! database. A shard's end is found without reading anything before it ([`Source::stop_at`]);
//! its start is the first record at or after its first byte, with that record's line and
//! record number, which [`shard_start`] finds by reading the inputs up to there with the
//! formats' own readers (a CSV field may hold newlines, so only a real parse knows where a
//! row starts; and a record's number is the count of records before it).
//!
//! This module must never place a record in two shards or in none: a cut is compared with a
//! record's start exactly as the source reports it.

use std::io::{self, Read};

use crate::error::SourceError;
use crate::format::{Compression, Format};
use crate::input::{open_file_stream, InputPath, InputSpec, READ_BUF};
use crate::source::{Position, Source, SourceOptions};

/// A point between bytes of the inputs: byte `byte_offset` (decompressed) of input
/// `file_index`. A record lies before the cut when its first byte does.
///
/// Cuts order like the records they separate: by input, then by offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cut {
    /// Index of the input in the list of inputs.
    pub file_index: u32,
    /// Offset in the input's decompressed bytes.
    pub byte_offset: u64,
}

impl Cut {
    /// The start of the inputs.
    pub const START: Cut = Cut {
        file_index: 0,
        byte_offset: 0,
    };

    /// Whether a record that starts at `byte_offset` of input `file_index` lies at or after
    /// the cut.
    ///
    /// ```
    /// use herdsman_io::Cut;
    /// let cut = Cut { file_index: 1, byte_offset: 10 };
    /// assert!(cut.holds_back(1, 10) && cut.holds_back(2, 0));
    /// assert!(!cut.holds_back(1, 9) && !cut.holds_back(0, 500));
    /// ```
    pub fn holds_back(&self, file_index: u32, byte_offset: u64) -> bool {
        (file_index, byte_offset) >= (self.file_index, self.byte_offset)
    }
}

/// Why the inputs cannot be cut into shards.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ShardError {
    /// The shard is not one of the shards (`index >= count`, or `count` is 0).
    #[error("shard {index}/{count} does not exist: shards are numbered from 0 to N-1, and N is at least 1 (the first of {n} shards is 0/{n})", n = (*count).max(1))]
    NoSuchShard {
        /// The shard asked for.
        index: u64,
        /// The number of shards.
        count: u64,
    },
    /// Standard input cannot be shared among shards.
    #[error("standard input cannot be split into shards (each shard must read its own part of the same files); give the input as files with -i")]
    Stdin,
    /// An input's format has no byte offsets to cut at.
    #[error("input `{file}` is {format}, which cannot be split into shards yet; shards split csv, jsonl and lines inputs")]
    Format {
        /// The input's name.
        file: String,
        /// Its format's name.
        format: &'static str,
    },
    /// An input's size could not be found.
    #[error("cannot measure input `{file}` to cut it into shards (check that it is readable)")]
    Size {
        /// The input's name.
        file: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

/// The part of the inputs one shard reads: the records that start at or after `start` and
/// before `end`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShardRange {
    /// Where the shard's bytes begin.
    pub start: Cut,
    /// Where the next shard's bytes begin (after the last input for the last shard).
    pub end: Cut,
    /// The shard's share of the bytes.
    pub bytes: u64,
    /// The bytes of all the inputs.
    pub total_bytes: u64,
}

/// The (decompressed) size of each input: the file's length for a plain file; compressed
/// files are decompressed once to measure them.
fn input_sizes(inputs: &[InputSpec]) -> Result<Vec<u64>, ShardError> {
    inputs
        .iter()
        .map(|spec| {
            let InputPath::File(p) = &spec.path else {
                return Err(ShardError::Stdin);
            };
            if !matches!(spec.format, Format::Csv | Format::Jsonl | Format::Lines) {
                return Err(ShardError::Format {
                    file: spec.path.display_name(),
                    format: spec.format.name(),
                });
            }
            let size_error = |source| ShardError::Size {
                file: spec.path.display_name(),
                source,
            };
            if Compression::from_path(p) == Compression::None {
                return std::fs::metadata(p).map(|m| m.len()).map_err(size_error);
            }
            let mut stream = open_file_stream(p, 0, READ_BUF).map_err(size_error)?;
            io::copy(&mut stream as &mut dyn Read, &mut io::sink()).map_err(size_error)
        })
        .collect()
}

/// The cut at byte `at` of the inputs seen as one run of bytes.
fn cut_at(sizes: &[u64], at: u64) -> Cut {
    let mut before = 0u64;
    for (i, &len) in sizes.iter().enumerate() {
        if at < before + len {
            return Cut {
                file_index: i as u32,
                byte_offset: at - before,
            };
        }
        before += len;
    }
    Cut {
        file_index: sizes.len() as u32,
        byte_offset: 0,
    }
}

/// The byte range of shard `index` (0-based) of `count`. It depends only on the inputs'
/// sizes, so every shard computes the same cuts on its own.
///
/// ```
/// use herdsman_io::{shard_range, Cut, Format, InputPath, InputSpec};
/// let dir = tempfile::tempdir().unwrap();
/// let p = dir.path().join("in.txt");
/// std::fs::write(&p, "a\nb\nc\nd\n").unwrap(); // 8 bytes
/// let spec = InputSpec { path: InputPath::File(p), format: Format::Lines };
/// let r = shard_range(&[spec.clone()], 1, 2).unwrap();
/// assert_eq!(r.start, Cut { file_index: 0, byte_offset: 4 });
/// assert_eq!(r.end, Cut { file_index: 1, byte_offset: 0 });
/// assert!(shard_range(&[spec], 2, 2).is_err());
/// ```
pub fn shard_range(inputs: &[InputSpec], index: u64, count: u64) -> Result<ShardRange, ShardError> {
    if count == 0 || index >= count {
        return Err(ShardError::NoSuchShard { index, count });
    }
    let sizes = input_sizes(inputs)?;
    let total: u64 = sizes.iter().sum();
    let bound = |k: u64| (u128::from(k) * u128::from(total) / u128::from(count)) as u64;
    let (from, to) = (bound(index), bound(index + 1));
    Ok(ShardRange {
        start: cut_at(&sizes, from),
        end: cut_at(&sizes, to),
        bytes: to - from,
        total_bytes: total,
    })
}

/// The position of the first record at or after `start`, with its line and record number:
/// found by reading the inputs before it with their formats' readers (nothing is read for the
/// first shard). A position after the last record when there is none.
///
/// ```
/// use herdsman_io::{shard_start, Cut, Format, InputPath, InputSpec, Position, SourceOptions};
/// let dir = tempfile::tempdir().unwrap();
/// let p = dir.path().join("in.csv");
/// std::fs::write(&p, "id\n\"a\nb\"\nc\n").unwrap();
/// let spec = InputSpec { path: InputPath::File(p), format: Format::Csv };
/// // Byte 5 lies inside the quoted field of the first row: the next row starts at byte 9.
/// let cut = Cut { file_index: 0, byte_offset: 5 };
/// let at = shard_start(&[spec], &SourceOptions::default(), cut).unwrap();
/// assert_eq!((at.byte_offset, at.line, at.seq), (9, 4, 1));
/// ```
pub fn shard_start(
    inputs: &[InputSpec],
    opts: &SourceOptions,
    start: Cut,
) -> Result<Position, SourceError> {
    if start == Cut::START {
        return Ok(Position::START);
    }
    let mut source = Source::open(inputs.to_vec(), opts.clone(), None)?;
    loop {
        match source.skip_record() {
            None => return Ok(source.next_position()),
            Some(Err(e)) => return Err(e),
            Some(Ok(pos)) => {
                if start.holds_back(pos.file_index, pos.byte_offset) {
                    return Ok(pos);
                }
            }
        }
    }
}

/// A cheap estimate of the records in a shard, for progress bars: the line breaks of plain
/// files inside the shard's bytes (minus a header row for a CSV file whose header lies in
/// them). `None` when the shard holds a compressed input or an input cannot be read.
pub fn estimate_shard_records(inputs: &[InputSpec], range: &ShardRange) -> Option<u64> {
    let mut total = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    for (i, spec) in inputs.iter().enumerate() {
        let i = i as u32;
        if i < range.start.file_index || i > range.end.file_index {
            continue;
        }
        if i == range.end.file_index && range.end.byte_offset == 0 {
            break;
        }
        let InputPath::File(p) = &spec.path else {
            return None;
        };
        if Compression::from_path(p) != Compression::None {
            return None;
        }
        let from = if i == range.start.file_index {
            range.start.byte_offset
        } else {
            0
        };
        let to = if i == range.end.file_index {
            range.end.byte_offset
        } else {
            u64::MAX
        };
        let mut f = std::fs::File::open(p).ok()?;
        io::Seek::seek(&mut f, io::SeekFrom::Start(from)).ok()?;
        let mut left = to - from;
        let (mut lines, mut last, mut any) = (0u64, b'\n', false);
        while left > 0 {
            let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            let n = match f.read(&mut buf[..want]) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return None,
            };
            any = true;
            lines += memchr::memchr_iter(b'\n', &buf[..n]).count() as u64;
            last = buf[n - 1];
            left -= n as u64;
        }
        if any && last != b'\n' && to == u64::MAX {
            lines += 1;
        }
        if spec.format == Format::Csv && from == 0 {
            lines = lines.saturating_sub(1);
        }
        total += lines;
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn specs(dir: &std::path::Path, files: &[(&str, &str)], format: Format) -> Vec<InputSpec> {
        files
            .iter()
            .map(|(name, text)| {
                let p = dir.join(name);
                std::fs::write(&p, text).unwrap();
                InputSpec {
                    path: InputPath::File(p),
                    format,
                }
            })
            .collect()
    }

    /// Every record lands in exactly one shard, in order, for every shard count.
    #[test]
    fn shards_partition_the_records_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let inputs = specs(
            dir.path(),
            &[
                ("a.csv", "id,v\n1,\"x\ny\"\n2,z\n\n3,w\n"),
                ("empty.csv", ""),
                ("b.csv", "id,v\n4,q\n5,\"r\"\"\n\"\n"),
            ],
            Format::Csv,
        );
        let opts = SourceOptions::default();
        let all: Vec<Position> = Source::open(inputs.clone(), opts.clone(), None)
            .unwrap()
            .map(|r| r.unwrap().pos)
            .collect();
        assert_eq!(all.len(), 5);
        for n in 1..=40u64 {
            let mut got = Vec::new();
            for i in 0..n {
                let range = shard_range(&inputs, i, n).unwrap();
                let start = shard_start(&inputs, &opts, range.start).unwrap();
                let mut src = Source::open(inputs.clone(), opts.clone(), Some(start)).unwrap();
                src.stop_at(range.end);
                got.extend(src.map(|r| r.unwrap().pos));
            }
            assert_eq!(got, all, "{n} shards");
        }
    }

    /// Skipping passes exactly the records reading yields, at the same positions, over
    /// blank lines (with `\r`, spaces and tabs), lines longer than the limit, a byte order
    /// mark, bad UTF-8, quoted CSV newlines and a last line without a break, with buffers
    /// small enough that lines straddle them.
    #[test]
    fn skipping_passes_the_records_reading_yields() {
        let dir = tempfile::tempdir().unwrap();
        let text: &[u8] = b"\xef\xbb\xbf{\"a\":1}\r\n\n \t\r\n\r\r\n   \n          \n\
            {bad\n \r \n[1, 2]\r\ncaf\xe9\n          x\n\"last\"";
        let csv: &[u8] = b"\xef\xbb\xbfid,v\r\n1,\"a\nb\"\r\n\r\n\n2,c,extra\n3,\"\"\"q\"\n4,0123456789abcdef\n5,\"open";
        for (name, data, format) in [
            ("t.jsonl", text, Format::Jsonl),
            ("t.txt", text, Format::Lines),
            ("t.csv", csv, Format::Csv),
        ] {
            let p = dir.path().join(name);
            std::fs::write(&p, data).unwrap();
            let inputs = vec![InputSpec {
                path: InputPath::File(p),
                format,
            }];
            for cap in [8, 12, 1 << 20] {
                let opts = SourceOptions {
                    max_record_bytes: cap,
                    read_buffer_bytes: 5,
                    ..SourceOptions::default()
                };
                let mut read = Source::open(inputs.clone(), opts.clone(), None).unwrap();
                let mut skip = Source::open(inputs.clone(), opts, None).unwrap();
                let mut n = 0;
                loop {
                    let a = read.next().map(|r| r.unwrap().pos);
                    let b = skip.skip_record().map(|r| r.unwrap());
                    assert_eq!(a, b, "{name}, cap {cap}, record {n}");
                    assert_eq!(read.next_position(), skip.next_position());
                    if a.is_none() {
                        break;
                    }
                    n += 1;
                }
                assert!(n >= 5, "{name}: {n} records");
            }
        }
    }

    #[test]
    fn bad_shards_and_stdin_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let inputs = specs(dir.path(), &[("a.txt", "a\n")], Format::Lines);
        assert!(matches!(
            shard_range(&inputs, 0, 0),
            Err(ShardError::NoSuchShard { .. })
        ));
        assert!(matches!(
            shard_range(&inputs, 3, 3),
            Err(ShardError::NoSuchShard { .. })
        ));
        let stdin = [InputSpec {
            path: InputPath::Stdin,
            format: Format::Lines,
        }];
        assert!(matches!(shard_range(&stdin, 0, 2), Err(ShardError::Stdin)));
    }

    #[test]
    fn estimates_count_the_lines_of_the_range() {
        let dir = tempfile::tempdir().unwrap();
        let inputs = specs(
            dir.path(),
            &[("a.txt", "aa\nbb\ncc\n"), ("b.txt", "dd\nee")],
            Format::Lines,
        );
        let whole = shard_range(&inputs, 0, 1).unwrap();
        assert_eq!(estimate_shard_records(&inputs, &whole), Some(5));
        let total: u64 = (0..3)
            .map(|i| {
                let r = shard_range(&inputs, i, 3).unwrap();
                estimate_shard_records(&inputs, &r).unwrap()
            })
            .sum();
        assert_eq!(total, 5);
    }
}
