//! Input and output formats and compression, detected from file names, and the format of
//! standard input sniffed from its first bytes.
//!
//! Detection only looks at names, or at bytes the caller already has in hand; it must never
//! open or read a file itself. Input names and extensions come from the format registry
//! (`formats/mod.rs`); sniffing and compression are the same for every format.

use std::path::Path;

/// The format of an input file. Each has one reader in `src/formats/` and one entry in the
/// [`REGISTRY`](crate::REGISTRY), which gives its names and extensions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    /// CSV with a header row: each row becomes a JSON object keyed by the header.
    Csv,
    /// One JSON value per line (blank lines are skipped).
    Jsonl,
    /// Each line becomes a JSON string.
    Lines,
    /// Apache Parquet: each row becomes a JSON object keyed by column name (read when the
    /// `parquet` feature is enabled).
    Parquet,
    /// A PostgreSQL table or query (`postgres://…`), read in key order: each row becomes a
    /// JSON object keyed by column name (read when the `database` feature is enabled).
    Postgres,
    /// An SQLite table or query (`sqlite://…`), read in key order: each row becomes a JSON
    /// object keyed by column name (read when the `database` feature is enabled).
    Sqlite,
}

impl Format {
    /// Detects the format from a file name, seeing through `.gz` and `.zst` suffixes.
    ///
    /// `.csv` is CSV, `.jsonl` / `.ndjson` are JSONL, `.txt` / `.log` are lines, `.parquet` /
    /// `.pq` are Parquet. A `.json`
    /// file is usually one document rather than one value per line, so it gives `None` and the
    /// caller asks for an explicit format.
    ///
    /// ```
    /// use herdsman_io::Format;
    /// use std::path::Path;
    /// assert_eq!(Format::from_path(Path::new("a/b.csv.gz")), Some(Format::Csv));
    /// assert_eq!(Format::from_path(Path::new("x.ndjson")), Some(Format::Jsonl));
    /// assert_eq!(Format::from_path(Path::new("x.bin")), None);
    /// ```
    pub fn from_path(p: &Path) -> Option<Format> {
        let ext = inner_extension(p)?;
        crate::formats::REGISTRY
            .iter()
            .find(|e| e.extensions.contains(&ext.as_str()))
            .map(|e| e.format)
    }

    /// Parses a format name as given on a command line: `csv`, `jsonl` (or `ndjson`,
    /// `jsonlines`), `lines` (or `text`, `txt`), `parquet`. Case-insensitive.
    pub fn parse(s: &str) -> Option<Format> {
        let s = s.to_ascii_lowercase();
        crate::formats::REGISTRY
            .iter()
            .find(|e| e.names.contains(&s.as_str()))
            .map(|e| e.format)
    }

    /// Sniffs the format of an input without a name (standard input) from its first bytes:
    /// JSONL when the first non-blank byte opens a JSON object or array (`{` or `[`), else
    /// lines. CSV is never guessed (a header row looks like any line of text): ask for it.
    ///
    /// ```
    /// use herdsman_io::Format;
    /// assert_eq!(Format::sniff(b"{\"id\": 1}\n"), Format::Jsonl);
    /// assert_eq!(Format::sniff(b"\n  [1, 2]\n"), Format::Jsonl);
    /// assert_eq!(Format::sniff(b"1\n2\n"), Format::Lines);
    /// assert_eq!(Format::sniff(b"id,value\n1,2\n"), Format::Lines);
    /// assert_eq!(Format::sniff(b""), Format::Lines);
    /// ```
    pub fn sniff(first_bytes: &[u8]) -> Format {
        match first_bytes.iter().find(|b| !b.is_ascii_whitespace()) {
            Some(b'{' | b'[') => Format::Jsonl,
            _ => Format::Lines,
        }
    }

    /// The canonical name, as accepted by [`Format::parse`].
    pub fn name(self) -> &'static str {
        crate::formats::entry(self).names[0]
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Compression of an input file, from its last extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Compression {
    /// Plain bytes.
    None,
    /// gzip (`.gz`), possibly several concatenated members.
    Gzip,
    /// Zstandard (`.zst`).
    Zstd,
}

impl Compression {
    /// Detects compression from the last extension of a file name.
    pub fn from_path(p: &Path) -> Compression {
        match p
            .extension()
            .and_then(|e| e.to_str())
            .map(|e| e.to_ascii_lowercase())
        {
            Some(e) if e == "gz" => Compression::Gzip,
            Some(e) if e == "zst" => Compression::Zstd,
            _ => Compression::None,
        }
    }
}

/// The extension that tells the format, below any compression suffix, lower-cased.
fn inner_extension(p: &Path) -> Option<String> {
    let p = match Compression::from_path(p) {
        Compression::None => p.to_path_buf(),
        _ => p.with_extension(""),
    };
    p.extension()
        .and_then(|e| e.to_str())
        .map(|e| e.to_ascii_lowercase())
}

/// The format of an output file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OutputFormat {
    /// One compact JSON value per line.
    Jsonl,
    /// CSV with a header row; `columns` fixes the header, otherwise the first record does.
    Csv {
        /// Header columns, in order, if given up front.
        columns: Option<Vec<String>>,
    },
    /// Raw text, one record per line: a JSON string is written as its text (unquoted,
    /// unescaped), any other value as compact JSON.
    Lines,
    /// Apache Parquet: records are JSON objects whose keys are the columns; see
    /// [`ParquetOptions`].
    Parquet(ParquetOptions),
}

/// Compression of the column data in a Parquet output.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ParquetCompression {
    /// Zstandard (the default): small files, fast to read.
    #[default]
    Zstd,
    /// Snappy: the codec most readers expect, faster to write, larger files.
    Snappy,
    /// No compression.
    None,
}

impl ParquetCompression {
    /// Parses `zstd`, `snappy` or `none` (case-insensitive).
    ///
    /// ```
    /// use herdsman_io::ParquetCompression;
    /// assert_eq!(ParquetCompression::parse("SNAPPY"), Some(ParquetCompression::Snappy));
    /// assert_eq!(ParquetCompression::parse("lzo"), None);
    /// ```
    pub fn parse(s: &str) -> Option<ParquetCompression> {
        match s.to_ascii_lowercase().as_str() {
            "zstd" => Some(ParquetCompression::Zstd),
            "snappy" => Some(ParquetCompression::Snappy),
            "none" | "uncompressed" => Some(ParquetCompression::None),
            _ => None,
        }
    }

    /// The name accepted by [`ParquetCompression::parse`].
    pub fn name(self) -> &'static str {
        match self {
            ParquetCompression::Zstd => "zstd",
            ParquetCompression::Snappy => "snappy",
            ParquetCompression::None => "none",
        }
    }
}

/// How a Parquet output is written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParquetOptions {
    /// The columns and their types. `None` infers them from the records of the first chunk
    /// that has any (see [`RecordWriter::end_chunk`](crate::RecordWriter::end_chunk)), then
    /// enforces them.
    pub schema: Option<crate::ParquetSchema>,
    /// Codec of the column data.
    pub compression: ParquetCompression,
    /// At most this many rows per row group. A row group also ends at the end of every chunk,
    /// so a resumed run writes the same row groups as an uninterrupted one.
    pub row_group_size: usize,
}

impl Default for ParquetOptions {
    fn default() -> Self {
        ParquetOptions {
            schema: None,
            compression: ParquetCompression::Zstd,
            row_group_size: 100_000,
        }
    }
}

impl OutputFormat {
    /// Detects the output format from a file name: `.csv` is CSV, `.jsonl` / `.ndjson` /
    /// `.json` are JSONL, `.txt` is lines, `.parquet` / `.pq` are Parquet (with default
    /// [`ParquetOptions`]). Compression suffixes are not supported for outputs; any other
    /// extension gives `None`.
    ///
    /// ```
    /// use herdsman_io::OutputFormat;
    /// use std::path::Path;
    /// assert_eq!(OutputFormat::from_path(Path::new("out.csv")), Some(OutputFormat::Csv { columns: None }));
    /// assert_eq!(OutputFormat::from_path(Path::new("out.jsonl")), Some(OutputFormat::Jsonl));
    /// ```
    pub fn from_path(p: &Path) -> Option<OutputFormat> {
        match p.extension()?.to_str()?.to_ascii_lowercase().as_str() {
            "csv" => Some(OutputFormat::Csv { columns: None }),
            "jsonl" | "ndjson" | "json" => Some(OutputFormat::Jsonl),
            "txt" => Some(OutputFormat::Lines),
            "parquet" | "pq" => Some(OutputFormat::Parquet(ParquetOptions::default())),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_through_compression() {
        assert_eq!(
            Format::from_path(Path::new("a.jsonl.zst")),
            Some(Format::Jsonl)
        );
        assert_eq!(
            Format::from_path(Path::new("a.TXT.GZ")),
            Some(Format::Lines)
        );
        assert_eq!(Format::from_path(Path::new("a.gz")), None);
        assert_eq!(Format::from_path(Path::new("a.json")), None);
        assert_eq!(
            Compression::from_path(Path::new("a.csv.gz")),
            Compression::Gzip
        );
        assert_eq!(
            Compression::from_path(Path::new("a.csv.zst")),
            Compression::Zstd
        );
        assert_eq!(
            Compression::from_path(Path::new("a.csv")),
            Compression::None
        );
    }

    #[test]
    fn parses_names() {
        for f in [Format::Csv, Format::Jsonl, Format::Lines, Format::Parquet] {
            assert_eq!(Format::parse(f.name()), Some(f));
        }
        assert_eq!(Format::parse("NDJSON"), Some(Format::Jsonl));
        assert_eq!(Format::parse("avro"), None);
    }
}
