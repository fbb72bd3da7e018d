//! Parquet input (feature `parquet`): each row becomes a JSON object keyed by column name,
//! read row group by row group, a batch of rows at a time.
//!
//! A record's [`Location`] is its row group (`byte_offset`) and its 1-based row inside that
//! row group (`line`), so resuming opens the file's footer, skips straight to that row group
//! and row, and reads on. Memory is bounded by one batch of rows and the pages being decoded,
//! never by the file. Types are kept faithfully: integers and floats as JSON numbers (a NaN
//! or an infinity as the string `"NaN"`, `"Infinity"`, `"-Infinity"`), decimals as strings
//! (exact), timestamps as RFC 3339 strings (in UTC with a `Z` when the column has a time
//! zone, without an offset when it is a local date and time), dates as `YYYY-MM-DD`, binary
//! as base64, lists as arrays, structs and maps as objects, nulls as `null`. A column of a
//! type that has no JSON form is refused when the file is opened, naming the column, so that
//! `--columns` can leave it out. Parquet files are read from files only: their index is at
//! the end, which standard input cannot seek to.

use super::{FormatEntry, Location, OpenInput, RecordReader};
use crate::error::SourceError;
use crate::format::Format;

/// Parquet's entry in the format registry.
pub(super) const ENTRY: FormatEntry = FormatEntry {
    format: Format::Parquet,
    names: &["parquet"],
    extensions: &["parquet", "pq"],
    // Opening reads the footer: a file that is not Parquet, or lacks a --columns column, is
    // reported before the first record.
    check_on_open: true,
    open,
};

fn open(input: &OpenInput<'_>, at: Option<Location>) -> Result<Box<dyn RecordReader>, SourceError> {
    #[cfg(feature = "parquet")]
    {
        imp::open(input, at)
    }
    #[cfg(not(feature = "parquet"))]
    {
        let _ = at;
        Err(SourceError::Parquet {
            file: input.name.to_string(),
            message: "this herdsman was built without Parquet support; install a build with the `parquet` feature (the released one has it)".into(),
        })
    }
}

/// The number of rows of a Parquet file, read from its footer, for progress estimates.
pub(crate) fn row_count(path: &std::path::Path) -> Option<u64> {
    #[cfg(feature = "parquet")]
    {
        let file = std::fs::File::open(path).ok()?;
        let meta = parquet::file::metadata::ParquetMetaDataReader::new()
            .parse_and_finish(&file)
            .ok()?;
        u64::try_from(meta.file_metadata().num_rows()).ok()
    }
    #[cfg(not(feature = "parquet"))]
    {
        let _ = path;
        None
    }
}

#[cfg(feature = "parquet")]
mod imp {
    use std::fs::File;
    use std::sync::Arc;

    use arrow_array::cast::AsArray;
    use arrow_array::types::*;
    use arrow_array::{Array, ArrayRef, RecordBatch};
    use arrow_schema::{DataType, Field, IntervalUnit};
    use parquet::arrow::arrow_reader::{
        ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReader,
        ParquetRecordBatchReaderBuilder,
    };
    use parquet::arrow::ProjectionMask;

    use super::super::{Location, OpenInput, ReadRecord, RecordReader};
    use crate::error::SourceError;
    use crate::format::Compression;
    use crate::input::InputPath;

    /// Rows decoded at a time.
    const BATCH_ROWS: usize = 1024;

    pub(super) fn open(
        input: &OpenInput<'_>,
        at: Option<Location>,
    ) -> Result<Box<dyn RecordReader>, SourceError> {
        let name = input.name.to_string();
        let bad = |message: String| SourceError::Parquet {
            file: name.clone(),
            message,
        };
        let check_plain = |p: &std::path::Path| {
            if Compression::from_path(p) != Compression::None {
                return Err(bad(
                    "a Parquet file compresses its own columns and cannot be read through .gz or .zst; decompress it first".into(),
                ));
            }
            Ok(())
        };
        let (src, path, stamp) = match input.path {
            InputPath::Stdin => {
                return Err(bad(
                    "Parquet cannot be read from standard input (its index is at the end of the file); give the file's path".into(),
                ))
            }
            InputPath::File(p) => {
                check_plain(p)?;
                let file = File::open(p).map_err(|source| SourceError::Open {
                    file: name.clone(),
                    source,
                })?;
                let stamp = stamp(&file);
                (Src::File(file), Some(p.clone()), stamp)
            }
            InputPath::Object(o) => {
                check_plain(std::path::Path::new(o.key()))?;
                let src = crate::object::ChunkSource::open(o).map_err(|e| SourceError::Open {
                    file: name.clone(),
                    source: std::io::Error::other(e),
                })?;
                (Src::Object(src), None, None)
            }
        };
        let meta = ArrowReaderMetadata::load(&src, ArrowReaderOptions::new())
            .map_err(|e| bad(format!("it is not a readable Parquet file ({e})")))?;
        let schema = meta.schema().clone();
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        // The columns to read, in the order their keys are written.
        let chosen: Vec<usize> = match &input.opts.columns {
            Some(cols) => cols
                .iter()
                .map(|c| {
                    names.iter().position(|n| n == c).ok_or_else(|| {
                        bad(format!(
                            "it has no column `{c}` (its columns: {}); name only columns the file has",
                            names.join(", ")
                        ))
                    })
                })
                .collect::<Result<_, _>>()?,
            None => (0..names.len()).collect(),
        };
        for &i in &chosen {
            let f = schema.field(i);
            if let Err(ty) = supported(f.data_type(), true) {
                return Err(bad(format!(
                    "column `{}` has the type {ty}, which has no JSON form; leave it out of the columns read",
                    f.name()
                )));
            }
        }
        let md = meta.metadata().clone();
        let rows: Vec<u64> = md
            .row_groups()
            .iter()
            .map(|rg| u64::try_from(rg.num_rows()).unwrap_or(0))
            .collect();
        let at = at.unwrap_or(Location::START);
        let (group, row) = (at.byte_offset, at.line.saturating_sub(1));
        let fits = match usize::try_from(group).ok().and_then(|g| rows.get(g)) {
            Some(&n) => row < n || (row == 0 && n == 0),
            None => group as usize == rows.len() && row == 0,
        };
        if at.line == 0 || !fits {
            return Err(SourceError::Resume {
                file: name.clone(),
                offset: group,
                message: format!(
                    "it has {} row groups and row group {group} has no row {}",
                    rows.len(),
                    at.line
                ),
            });
        }
        let mut sorted = chosen.clone();
        sorted.sort_unstable();
        if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
            return Err(bad(format!(
                "the columns to read name `{}` twice; name each column once",
                names[w[0]]
            )));
        }
        // Columns come out of the reader in file order; `order` lists them in key order.
        let order: Vec<usize> = chosen
            .iter()
            .map(|c| sorted.binary_search(c).expect("chosen"))
            .collect();
        let mask = ProjectionMask::roots(md.file_metadata().schema_descr(), sorted);
        let first = group as usize;
        let file = match &src {
            Src::File(f) => Some(f.try_clone().map_err(|source| SourceError::Open {
                file: name.clone(),
                source,
            })?),
            Src::Object(_) => None,
        };
        let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(src, meta)
            .with_projection(mask)
            .with_row_groups((first..rows.len()).collect())
            .with_offset(row as usize)
            .with_batch_size(BATCH_ROWS)
            .build()
            .map_err(|e| bad(format!("it cannot be read ({e})")))?;
        let mut r = ParquetReader {
            name,
            path,
            file,
            stamp,
            reader,
            batch: None,
            index: 0,
            order,
            keys: Vec::new(),
            rows,
            group,
            row,
            done: false,
        };
        r.settle();
        Ok(Box::new(r))
    }

    /// What a file looked like when it was opened: length and modification time.
    fn stamp(f: &File) -> Option<(u64, std::time::SystemTime)> {
        let m = f.metadata().ok()?;
        Some((m.len(), m.modified().ok()?))
    }

    /// Where a Parquet input's bytes come from: a local file, or an object read by range.
    enum Src {
        File(File),
        Object(crate::object::ChunkSource),
    }

    impl parquet::file::reader::Length for Src {
        fn len(&self) -> u64 {
            match self {
                Src::File(f) => parquet::file::reader::Length::len(f),
                Src::Object(o) => parquet::file::reader::Length::len(o),
            }
        }
    }

    impl parquet::file::reader::ChunkReader for Src {
        type T = Box<dyn std::io::Read + Send>;

        fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
            Ok(match self {
                Src::File(f) => Box::new(f.get_read(start)?),
                Src::Object(o) => Box::new(o.get_read(start)?),
            })
        }

        fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<bytes::Bytes> {
            match self {
                Src::File(f) => f.get_bytes(start, length),
                Src::Object(o) => o.get_bytes(start, length),
            }
        }
    }

    struct ParquetReader {
        name: String,
        /// The local file and its path (`None` for an object, whose reads are pinned to its
        /// ETag instead).
        path: Option<std::path::PathBuf>,
        file: Option<File>,
        stamp: Option<(u64, std::time::SystemTime)>,
        reader: ParquetRecordBatchReader,
        /// The batch being turned into records, with its columns in key order.
        batch: Option<(RecordBatch, Vec<ArrayRef>)>,
        index: usize,
        order: Vec<usize>,
        /// Each key, JSON-quoted, with its colon.
        keys: Vec<Vec<u8>>,
        /// Rows in each row group.
        rows: Vec<u64>,
        /// Row group and 0-based row of the next record.
        group: u64,
        row: u64,
        done: bool,
    }

    impl ParquetReader {
        /// Moves past the end of row groups that are finished (or empty).
        fn settle(&mut self) {
            while let Some(&n) = self.rows.get(self.group as usize) {
                if self.row < n {
                    break;
                }
                self.group += 1;
                self.row = 0;
            }
        }

        fn next_batch(&mut self) -> Result<bool, SourceError> {
            match self.reader.next() {
                None => Ok(false),
                Some(Err(e)) => Err(SourceError::Parquet {
                    file: self.name.clone(),
                    message: format!(
                        "row group {} cannot be read ({e}); the file may be truncated or corrupt",
                        self.group
                    ),
                }),
                Some(Ok(batch)) => {
                    if self.keys.is_empty() {
                        let schema = batch.schema();
                        self.keys = self
                            .order
                            .iter()
                            .map(|&i| {
                                let mut k = serde_json::to_vec(schema.field(i).name())
                                    .expect("a string serializes");
                                k.push(b':');
                                k
                            })
                            .collect();
                    }
                    let cols = self
                        .order
                        .iter()
                        .map(|&i| plain(batch.column(i)))
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(|e| SourceError::Parquet {
                            file: self.name.clone(),
                            message: format!("a dictionary column cannot be decoded ({e})"),
                        })?;
                    self.batch = Some((batch, cols));
                    self.index = 0;
                    Ok(true)
                }
            }
        }

        /// At the end: the file must be the one that was opened.
        fn check_unchanged(&self) -> Result<(), SourceError> {
            let (Some(path), Some(file)) = (&self.path, &self.file) else {
                return Ok(());
            };
            let now = std::fs::metadata(path)
                .ok()
                .and_then(|m| Some((m.len(), m.modified().ok()?)));
            let held = stamp(file);
            if self.stamp.is_some() && (now != self.stamp || held != self.stamp) {
                return Err(SourceError::Changed {
                    file: self.name.clone(),
                    detail: "its size or modification time is not what it was when it was opened"
                        .into(),
                });
            }
            Ok(())
        }
    }

    impl RecordReader for ParquetReader {
        fn next_record(&mut self) -> Result<Option<ReadRecord>, SourceError> {
            if self.done {
                return Ok(None);
            }
            loop {
                if let Some((batch, cols)) = &self.batch {
                    if self.index < batch.num_rows() {
                        let i = self.index;
                        let mut out = Vec::with_capacity(64 * cols.len());
                        out.push(b'{');
                        for (n, (key, col)) in self.keys.iter().zip(cols).enumerate() {
                            if n > 0 {
                                out.push(b',');
                            }
                            out.extend_from_slice(key);
                            write_value(&mut out, col.as_ref(), i);
                        }
                        out.push(b'}');
                        let at = self.next_location();
                        self.index += 1;
                        self.row += 1;
                        self.settle();
                        return Ok(Some(ReadRecord { at, data: Ok(out) }));
                    }
                }
                if !self.next_batch()? {
                    self.done = true;
                    self.check_unchanged()?;
                    return Ok(None);
                }
            }
        }

        fn next_location(&self) -> Location {
            Location {
                byte_offset: self.group,
                line: self.row + 1,
            }
        }
    }

    /// A top-level dictionary column decoded to its values.
    fn plain(col: &ArrayRef) -> Result<ArrayRef, arrow_schema::ArrowError> {
        match col.data_type() {
            DataType::Dictionary(_, value) => arrow_cast::cast(col, value),
            _ => Ok(col.clone()),
        }
    }

    /// Whether a column of this type has a JSON form; else the type's name.
    fn supported(t: &DataType, top: bool) -> Result<(), String> {
        use DataType as D;
        match t {
            D::Null
            | D::Boolean
            | D::Int8
            | D::Int16
            | D::Int32
            | D::Int64
            | D::UInt8
            | D::UInt16
            | D::UInt32
            | D::UInt64
            | D::Float16
            | D::Float32
            | D::Float64
            | D::Decimal32(..)
            | D::Decimal64(..)
            | D::Decimal128(..)
            | D::Decimal256(..)
            | D::Utf8
            | D::LargeUtf8
            | D::Utf8View
            | D::Binary
            | D::LargeBinary
            | D::BinaryView
            | D::FixedSizeBinary(_)
            | D::Date32
            | D::Date64
            | D::Time32(_)
            | D::Time64(_)
            | D::Timestamp(..)
            | D::Duration(_) => Ok(()),
            D::List(f) | D::LargeList(f) | D::FixedSizeList(f, _) | D::Map(f, _) => {
                supported(f.data_type(), false)
            }
            D::Struct(fields) => fields
                .iter()
                .try_for_each(|f: &Arc<Field>| supported(f.data_type(), false)),
            D::Dictionary(_, v) if top => supported(v, false),
            D::Interval(IntervalUnit::YearMonth) => Ok(()),
            other => Err(other.to_string()),
        }
    }

    fn write_str(out: &mut Vec<u8>, s: &str) {
        serde_json::to_writer(&mut *out, s).expect("writing to a Vec cannot fail");
    }

    fn write_float(out: &mut Vec<u8>, v: f64, as32: Option<f32>) {
        if v.is_nan() {
            out.extend_from_slice(b"\"NaN\"");
        } else if v.is_infinite() {
            out.extend_from_slice(if v > 0.0 {
                b"\"Infinity\""
            } else {
                b"\"-Infinity\""
            });
        } else if let Some(f) = as32 {
            // The shortest text that reads back as the same 32-bit float.
            serde_json::to_writer(&mut *out, &f).expect("writing to a Vec cannot fail");
        } else {
            serde_json::to_writer(&mut *out, &v).expect("writing to a Vec cannot fail");
        }
    }

    fn write_int(out: &mut Vec<u8>, v: impl serde::Serialize) {
        serde_json::to_writer(&mut *out, &v).expect("writing to a Vec cannot fail");
    }

    const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

    /// Standard base64 with padding, quoted.
    fn write_base64(out: &mut Vec<u8>, bytes: &[u8]) {
        out.push(b'"');
        for c in bytes.chunks(3) {
            let n = (u32::from(c[0]) << 16)
                | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
                | u32::from(*c.get(2).unwrap_or(&0));
            out.push(B64[(n >> 18) as usize & 63]);
            out.push(B64[(n >> 12) as usize & 63]);
            out.push(if c.len() > 1 {
                B64[(n >> 6) as usize & 63]
            } else {
                b'='
            });
            out.push(if c.len() > 2 {
                B64[n as usize & 63]
            } else {
                b'='
            });
        }
        out.push(b'"');
    }

    fn write_fmt(out: &mut Vec<u8>, v: impl std::fmt::Display, suffix: &str) {
        use std::io::Write;
        out.push(b'"');
        write!(out, "{v}{suffix}").expect("writing to a Vec cannot fail");
        out.push(b'"');
    }

    fn write_timestamp<T: ArrowTimestampType>(
        out: &mut Vec<u8>,
        a: &dyn Array,
        i: usize,
        zoned: bool,
    ) {
        match a.as_primitive::<T>().value_as_datetime(i) {
            Some(dt) => write_fmt(
                out,
                dt.format("%Y-%m-%dT%H:%M:%S%.f"),
                if zoned { "Z" } else { "" },
            ),
            None => out.extend_from_slice(b"null"),
        }
    }

    fn write_time<T: ArrowTemporalType>(out: &mut Vec<u8>, a: &dyn Array, i: usize)
    where
        i64: From<T::Native>,
    {
        match a.as_primitive::<T>().value_as_time(i) {
            Some(t) => write_fmt(out, t.format("%H:%M:%S%.f"), ""),
            None => out.extend_from_slice(b"null"),
        }
    }

    /// The JSON text of row `i` of `a`.
    fn write_value(out: &mut Vec<u8>, a: &dyn Array, i: usize) {
        use arrow_schema::TimeUnit as U;
        use DataType as D;
        if a.is_null(i) {
            out.extend_from_slice(b"null");
            return;
        }
        match a.data_type() {
            D::Null => out.extend_from_slice(b"null"),
            D::Boolean => out.extend_from_slice(if a.as_boolean().value(i) {
                b"true"
            } else {
                b"false"
            }),
            D::Int8 => write_int(out, a.as_primitive::<Int8Type>().value(i)),
            D::Int16 => write_int(out, a.as_primitive::<Int16Type>().value(i)),
            D::Int32 => write_int(out, a.as_primitive::<Int32Type>().value(i)),
            D::Int64 => write_int(out, a.as_primitive::<Int64Type>().value(i)),
            D::UInt8 => write_int(out, a.as_primitive::<UInt8Type>().value(i)),
            D::UInt16 => write_int(out, a.as_primitive::<UInt16Type>().value(i)),
            D::UInt32 => write_int(out, a.as_primitive::<UInt32Type>().value(i)),
            D::UInt64 => write_int(out, a.as_primitive::<UInt64Type>().value(i)),
            D::Float16 => {
                let v = a.as_primitive::<Float16Type>().value(i).to_f32();
                write_float(out, f64::from(v), Some(v));
            }
            D::Float32 => {
                let v = a.as_primitive::<Float32Type>().value(i);
                write_float(out, f64::from(v), Some(v));
            }
            D::Float64 => write_float(out, a.as_primitive::<Float64Type>().value(i), None),
            D::Decimal32(..) => {
                write_str(out, &a.as_primitive::<Decimal32Type>().value_as_string(i))
            }
            D::Decimal64(..) => {
                write_str(out, &a.as_primitive::<Decimal64Type>().value_as_string(i))
            }
            D::Decimal128(..) => {
                write_str(out, &a.as_primitive::<Decimal128Type>().value_as_string(i))
            }
            D::Decimal256(..) => {
                write_str(out, &a.as_primitive::<Decimal256Type>().value_as_string(i))
            }
            D::Utf8 => write_str(out, a.as_string::<i32>().value(i)),
            D::LargeUtf8 => write_str(out, a.as_string::<i64>().value(i)),
            D::Utf8View => write_str(out, a.as_string_view().value(i)),
            D::Binary => write_base64(out, a.as_binary::<i32>().value(i)),
            D::LargeBinary => write_base64(out, a.as_binary::<i64>().value(i)),
            D::BinaryView => write_base64(out, a.as_binary_view().value(i)),
            D::FixedSizeBinary(_) => write_base64(out, a.as_fixed_size_binary().value(i)),
            D::Date32 => match a.as_primitive::<Date32Type>().value_as_date(i) {
                Some(d) => write_fmt(out, d.format("%Y-%m-%d"), ""),
                None => out.extend_from_slice(b"null"),
            },
            D::Date64 => match a.as_primitive::<Date64Type>().value_as_date(i) {
                Some(d) => write_fmt(out, d.format("%Y-%m-%d"), ""),
                None => out.extend_from_slice(b"null"),
            },
            D::Time32(U::Second) => write_time::<Time32SecondType>(out, a, i),
            D::Time32(_) => write_time::<Time32MillisecondType>(out, a, i),
            D::Time64(U::Microsecond) => write_time::<Time64MicrosecondType>(out, a, i),
            D::Time64(_) => write_time::<Time64NanosecondType>(out, a, i),
            D::Timestamp(unit, tz) => {
                let zoned = tz.is_some();
                match unit {
                    U::Second => write_timestamp::<TimestampSecondType>(out, a, i, zoned),
                    U::Millisecond => write_timestamp::<TimestampMillisecondType>(out, a, i, zoned),
                    U::Microsecond => write_timestamp::<TimestampMicrosecondType>(out, a, i, zoned),
                    U::Nanosecond => write_timestamp::<TimestampNanosecondType>(out, a, i, zoned),
                }
            }
            D::Duration(U::Second) => {
                write_int(out, a.as_primitive::<DurationSecondType>().value(i))
            }
            D::Duration(U::Millisecond) => {
                write_int(out, a.as_primitive::<DurationMillisecondType>().value(i))
            }
            D::Duration(U::Microsecond) => {
                write_int(out, a.as_primitive::<DurationMicrosecondType>().value(i))
            }
            D::Duration(U::Nanosecond) => {
                write_int(out, a.as_primitive::<DurationNanosecondType>().value(i))
            }
            D::Interval(IntervalUnit::YearMonth) => {
                write_int(out, a.as_primitive::<IntervalYearMonthType>().value(i))
            }
            D::List(_) => write_list(out, &a.as_list::<i32>().value(i)),
            D::LargeList(_) => write_list(out, &a.as_list::<i64>().value(i)),
            D::FixedSizeList(..) => write_list(out, &a.as_fixed_size_list().value(i)),
            D::Struct(fields) => {
                let s = a.as_struct();
                out.push(b'{');
                for (n, (f, col)) in fields.iter().zip(s.columns()).enumerate() {
                    if n > 0 {
                        out.push(b',');
                    }
                    write_str(out, f.name());
                    out.push(b':');
                    write_value(out, col.as_ref(), i);
                }
                out.push(b'}');
            }
            D::Map(..) => {
                let m = a.as_map();
                let entries = m.value(i);
                let (keys, values) = (entries.column(0), entries.column(1));
                out.push(b'{');
                for j in 0..entries.len() {
                    if j > 0 {
                        out.push(b',');
                    }
                    // A key that is not a string is written as the text of its JSON.
                    match keys.data_type() {
                        D::Utf8 | D::LargeUtf8 | D::Utf8View => write_value(out, keys.as_ref(), j),
                        _ => {
                            let mut k = Vec::new();
                            write_value(&mut k, keys.as_ref(), j);
                            write_str(out, &String::from_utf8_lossy(&k));
                        }
                    }
                    out.push(b':');
                    write_value(out, values.as_ref(), j);
                }
                out.push(b'}');
            }
            // Checked when the file was opened.
            other => unreachable!("unsupported type {other} passed the check"),
        }
    }

    fn write_list(out: &mut Vec<u8>, items: &ArrayRef) {
        out.push(b'[');
        for j in 0..items.len() {
            if j > 0 {
                out.push(b',');
            }
            write_value(out, items.as_ref(), j);
        }
        out.push(b']');
    }
}
