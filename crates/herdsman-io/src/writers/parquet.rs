//! Parquet output (feature `parquet`): JSON objects become rows; each chunk's rows become
//! one or more row groups; the footer that indexes them is written when the file is
//! published.
//!
//! The partial file is an append-only byte stream like every other output, so the sink's
//! commit protocol (sync, commit the length, truncate back to it on resume) applies
//! unchanged. It holds the magic `PAR1`, then one *block* per flushed set of row groups:
//!
//! ```text
//! "HMRG"  u32 LE meta_len  u64 LE data_len  meta (meta_len bytes)  data (data_len bytes)
//! ```
//!
//! `data` is the column chunks of the row groups exactly as a Parquet writer lays them out,
//! and `meta` is the footer (Thrift `FileMetaData`) of a small Parquet file made of just
//! those row groups. Parquet readers only follow the offsets of the final footer, so the
//! headers and `meta` between the column chunks are never read by them: the published file is
//! plain, valid Parquet. Resuming reads the partial file up to the committed length once,
//! decoding only the block headers and `meta` (the sink hands the writer a reader, not a
//! seekable file), which gives the schema and every committed row group's metadata; the footer at
//! publication lists those row groups with their offsets moved to where the blocks sit.
//!
//! A row group ends at every chunk end ([`RecordWriter::end_chunk`]), after `row_group_size`
//! rows, or after 64 MiB of JSON text, whichever comes first; all three depend only
//! on the records and the chunking, so a resumed run writes the same row groups as an
//! uninterrupted one. Until a row group ends, its records are held as JSON text (at most
//! `row_group_size` of them and 64 MiB).
//!
//! Without `--schema`, the schema is inferred from the records up to the first row group
//! (each key becomes a column: booleans `bool`, integers `int64`, other numbers `double`,
//! strings `string`, arrays `list`, objects `struct`, a key only ever null `string`; an
//! integer column that later sees a fraction becomes `double`) and enforced from then on. A
//! record that does not fit the schema (an unknown key, a value of another type, a null in a
//! `not null` column, a decimal with too many digits) is refused before anything of it is
//! written: the run makes it a dead letter.

use super::RecordWriter;
use crate::format::ParquetOptions;

/// The writer for `opts`.
pub(super) fn writer(opts: &ParquetOptions) -> Box<dyn RecordWriter> {
    #[cfg(feature = "parquet")]
    {
        Box::new(imp::ParquetWriter::new(opts))
    }
    #[cfg(not(feature = "parquet"))]
    {
        let _ = opts;
        Box::new(Disabled)
    }
}

/// Says, for every record, that Parquet is not built in.
#[cfg(not(feature = "parquet"))]
struct Disabled;

#[cfg(not(feature = "parquet"))]
const DISABLED: &str = "this herdsman was built without Parquet support; install a build with the `parquet` feature (the released one has it), or write another format";

#[cfg(not(feature = "parquet"))]
impl RecordWriter for Disabled {
    fn resume(&mut self, _existing: Option<&mut dyn std::io::Read>) -> Result<(), String> {
        Err(DISABLED.into())
    }
    fn encode(&mut self, _json: &[u8], _out: &mut Vec<u8>) -> Result<(), String> {
        Err(DISABLED.into())
    }
    fn check(&self, _records: &mut dyn Iterator<Item = &[u8]>) -> Result<(), String> {
        Err(DISABLED.into())
    }
}

/// The length of the footer that publication appended to a Parquet file (its last eight
/// bytes give it), or 0 when the bytes do not end like a Parquet file.
pub(crate) fn footer_len(tail: &[u8; 8]) -> u64 {
    if &tail[4..] == b"PAR1" {
        u64::from(u32::from_le_bytes(tail[..4].try_into().expect("4 bytes"))) + 8
    } else {
        0
    }
}

#[cfg(feature = "parquet")]
mod imp {
    use std::io::Read;
    use std::sync::Arc;

    use arrow_schema::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
    use parquet::arrow::ArrowWriter;
    use parquet::basic::{Compression, ZstdLevel};
    use parquet::file::metadata::{
        FileMetaData, ParquetMetaData, ParquetMetaDataReader, ParquetMetaDataWriter,
        RowGroupMetaData,
    };
    use parquet::file::properties::{EnabledStatistics, WriterProperties};

    /// A JSON number as the parser gave it.
    #[derive(Clone, Copy, Debug)]
    enum Num {
        Neg(i64),
        Pos(u64),
        Float(f64),
    }

    impl Num {
        fn as_i64(self) -> Option<i64> {
            match self {
                Num::Neg(i) => Some(i),
                Num::Pos(u) => i64::try_from(u).ok(),
                Num::Float(_) => None,
            }
        }
        fn as_u64(self) -> Option<u64> {
            match self {
                Num::Pos(u) => Some(u),
                _ => None,
            }
        }
        fn is_i64(self) -> bool {
            self.as_i64().is_some()
        }
        fn is_u64(self) -> bool {
            self.as_u64().is_some()
        }
    }

    impl std::fmt::Display for Num {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            match self {
                Num::Neg(i) => write!(f, "{i}"),
                Num::Pos(u) => write!(f, "{u}"),
                Num::Float(x) => {
                    f.write_str(&serde_json::to_string(x).map_err(|_| std::fmt::Error)?)
                }
            }
        }
    }

    /// A JSON value whose objects keep their keys in the order written (an inferred schema
    /// takes its columns in that order; `serde_json`'s map would sort them).
    #[derive(Clone, Debug)]
    enum Value {
        Null,
        Bool,
        Number(Num),
        String(String),
        Array(Vec<Value>),
        Object(Vec<(String, Value)>),
    }

    impl<'de> serde::Deserialize<'de> for Value {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Value, D::Error> {
            struct V;
            impl<'de> serde::de::Visitor<'de> for V {
                type Value = Value;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("a JSON value")
                }
                fn visit_unit<E>(self) -> Result<Value, E> {
                    Ok(Value::Null)
                }
                fn visit_none<E>(self) -> Result<Value, E> {
                    Ok(Value::Null)
                }
                fn visit_bool<E>(self, _: bool) -> Result<Value, E> {
                    Ok(Value::Bool)
                }
                fn visit_i64<E>(self, i: i64) -> Result<Value, E> {
                    Ok(Value::Number(match u64::try_from(i) {
                        Ok(u) => Num::Pos(u),
                        Err(_) => Num::Neg(i),
                    }))
                }
                fn visit_u64<E>(self, u: u64) -> Result<Value, E> {
                    Ok(Value::Number(Num::Pos(u)))
                }
                fn visit_f64<E>(self, x: f64) -> Result<Value, E> {
                    Ok(Value::Number(Num::Float(x)))
                }
                fn visit_str<E>(self, s: &str) -> Result<Value, E> {
                    Ok(Value::String(s.to_string()))
                }
                fn visit_string<E>(self, s: String) -> Result<Value, E> {
                    Ok(Value::String(s))
                }
                fn visit_seq<A: serde::de::SeqAccess<'de>>(
                    self,
                    mut seq: A,
                ) -> Result<Value, A::Error> {
                    let mut v = Vec::new();
                    while let Some(x) = seq.next_element()? {
                        v.push(x);
                    }
                    Ok(Value::Array(v))
                }
                fn visit_map<A: serde::de::MapAccess<'de>>(
                    self,
                    mut map: A,
                ) -> Result<Value, A::Error> {
                    let mut v: Vec<(String, Value)> = Vec::new();
                    while let Some((k, x)) = map.next_entry::<String, Value>()? {
                        // A repeated key: the last one counts, as in the JSON decoder.
                        match v.iter_mut().find(|(n, _)| *n == k) {
                            Some(slot) => slot.1 = x,
                            None => v.push((k, x)),
                        }
                    }
                    Ok(Value::Object(v))
                }
            }
            d.deserialize_any(V)
        }
    }

    use super::RecordWriter;

    /// A row group also ends when the JSON text of its records reaches this many bytes.
    const MAX_PENDING_BYTES: usize = 64 << 20;
    use crate::format::{ParquetCompression, ParquetOptions};
    use crate::parquet_schema::{Column, ColumnType, ParquetSchema};

    const BLOCK_MAGIC: &[u8; 4] = b"HMRG";
    const BLOCK_HEADER: usize = 16;

    /// The schema while it is inferred: what the records so far say of each key.
    #[derive(Clone, Debug, PartialEq)]
    enum Shape {
        /// Only nulls so far.
        Unknown,
        Bool,
        Int,
        Float,
        Str,
        List(Box<Shape>),
        Struct(Vec<(String, Shape)>),
    }

    fn kind(v: &Value) -> &'static str {
        match v {
            Value::Null => "null",
            Value::Bool => "a boolean",
            Value::Number(n) if n.is_i64() || n.is_u64() => "an integer",
            Value::Number(_) => "a number",
            Value::String(_) => "a string",
            Value::Array(_) => "an array",
            Value::Object(_) => "an object",
        }
    }

    fn shape_name(s: &Shape) -> &'static str {
        match s {
            Shape::Unknown => "null",
            Shape::Bool => "a boolean",
            Shape::Int => "an integer",
            Shape::Float => "a number",
            Shape::Str => "a string",
            Shape::List(_) => "an array",
            Shape::Struct(_) => "an object",
        }
    }

    /// Widens `s` so that `v` fits, or says why it cannot.
    fn merge(s: &mut Shape, v: &Value, path: &str) -> Result<(), String> {
        let conflict = |s: &Shape| {
            Err(format!(
                "`{path}` is {} here but {} in the records before (the inferred schema); give the column's type in an explicit schema",
                kind(v),
                shape_name(s)
            ))
        };
        match (&mut *s, v) {
            (_, Value::Null) => Ok(()),
            (Shape::Unknown, Value::Bool) => {
                *s = Shape::Bool;
                Ok(())
            }
            (Shape::Bool, Value::Bool) => Ok(()),
            (Shape::Unknown | Shape::Int | Shape::Float, Value::Number(n)) => {
                if n.is_i64() {
                    if *s == Shape::Unknown {
                        *s = Shape::Int;
                    }
                    Ok(())
                } else if n.is_u64() {
                    Err(format!(
                        "`{path}` is {n}, too large for an int64 column; give the column's type (uint64) in an explicit schema"
                    ))
                } else {
                    *s = Shape::Float;
                    Ok(())
                }
            }
            (Shape::Unknown, Value::String(_)) => {
                *s = Shape::Str;
                Ok(())
            }
            (Shape::Str, Value::String(_)) => Ok(()),
            (Shape::Unknown, Value::Array(items)) => {
                let mut item = Shape::Unknown;
                for x in items {
                    merge(&mut item, x, &format!("{path}[]"))?;
                }
                *s = Shape::List(Box::new(item));
                Ok(())
            }
            (Shape::List(item), Value::Array(items)) => {
                for x in items {
                    merge(item, x, &format!("{path}[]"))?;
                }
                Ok(())
            }
            (Shape::Unknown, Value::Object(_)) => {
                *s = Shape::Struct(Vec::new());
                merge(s, v, path)
            }
            (Shape::Struct(fields), Value::Object(o)) => {
                for (k, x) in o {
                    let sub = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    match fields.iter_mut().find(|(n, _)| n == k) {
                        Some((_, f)) => merge(f, x, &sub)?,
                        None => {
                            let mut f = Shape::Unknown;
                            merge(&mut f, x, &sub)?;
                            fields.push((k.clone(), f));
                        }
                    }
                }
                Ok(())
            }
            (s, _) => conflict(s),
        }
    }

    fn shape_type(s: &Shape) -> DataType {
        match s {
            Shape::Unknown | Shape::Str => DataType::Utf8,
            Shape::Bool => DataType::Boolean,
            Shape::Int => DataType::Int64,
            Shape::Float => DataType::Float64,
            Shape::List(item) => {
                DataType::List(Arc::new(Field::new("item", shape_type(item), true)))
            }
            Shape::Struct(fields) => DataType::Struct(
                fields
                    .iter()
                    .map(|(n, f)| Field::new(n, shape_type(f), true))
                    .collect::<Fields>(),
            ),
        }
    }

    fn column_field(c: &Column) -> Field {
        Field::new(&c.name, column_type(&c.ty), c.nullable)
    }

    fn column_type(t: &ColumnType) -> DataType {
        match t {
            ColumnType::Bool => DataType::Boolean,
            ColumnType::Int { bits, signed } => match (bits, signed) {
                (8, true) => DataType::Int8,
                (16, true) => DataType::Int16,
                (32, true) => DataType::Int32,
                (8, false) => DataType::UInt8,
                (16, false) => DataType::UInt16,
                (32, false) => DataType::UInt32,
                (_, false) => DataType::UInt64,
                _ => DataType::Int64,
            },
            ColumnType::Float { bits: 32 } => DataType::Float32,
            ColumnType::Float { .. } => DataType::Float64,
            ColumnType::String => DataType::Utf8,
            ColumnType::Date => DataType::Date32,
            ColumnType::Timestamp { unit, tz } => DataType::Timestamp(
                match unit {
                    crate::parquet_schema::TimeUnit::Second => TimeUnit::Second,
                    crate::parquet_schema::TimeUnit::Millisecond => TimeUnit::Millisecond,
                    crate::parquet_schema::TimeUnit::Microsecond => TimeUnit::Microsecond,
                    crate::parquet_schema::TimeUnit::Nanosecond => TimeUnit::Nanosecond,
                },
                tz.as_ref().map(|z| match z.as_str() {
                    "utc" | "Z" | "z" => "UTC".into(),
                    z => z.into(),
                }),
            ),
            ColumnType::Decimal { precision, scale } => DataType::Decimal128(*precision, *scale),
            ColumnType::List(item) => DataType::List(Arc::new(column_field(item))),
            ColumnType::Struct(fields) => {
                DataType::Struct(fields.iter().map(column_field).collect::<Fields>())
            }
        }
    }

    /// The Arrow schema of a `--schema` description.
    fn arrow_schema(s: &ParquetSchema) -> Schema {
        Schema::new(s.columns.iter().map(column_field).collect::<Fields>())
    }

    /// Whether `v` fits a value of type `t`: exactly what the JSON decoder will accept.
    fn fits(t: &DataType, nullable: bool, v: &Value, path: &str) -> Result<(), String> {
        use arrow_cast::parse::Parser;
        let wrong = |want: &str| Err(format!("`{path}` is {} but the column is {want}", kind(v)));
        let int_in = |lo: i128, hi: i128, name: &str| -> Result<(), String> {
            let n = match v {
                Value::Number(n) => n.as_i64().map(i128::from).or(n.as_u64().map(i128::from)),
                _ => None,
            };
            match n {
                Some(n) if (lo..=hi).contains(&n) => Ok(()),
                Some(n) => Err(format!(
                    "`{path}` is {n}, out of range for the {name} column"
                )),
                None => Err(format!("`{path}` is {} but the column is {name}", kind(v))),
            }
        };
        match (t, v) {
            (_, Value::Null) if nullable => Ok(()),
            (_, Value::Null) => Err(format!("`{path}` is null or missing but the column is not null")),
            (DataType::Boolean, Value::Bool) => Ok(()),
            (DataType::Boolean, _) => wrong("bool"),
            (DataType::Int8, _) => int_in(i8::MIN.into(), i8::MAX.into(), "int8"),
            (DataType::Int16, _) => int_in(i16::MIN.into(), i16::MAX.into(), "int16"),
            (DataType::Int32, _) => int_in(i32::MIN.into(), i32::MAX.into(), "int32"),
            (DataType::Int64, _) => int_in(i64::MIN.into(), i64::MAX.into(), "int64"),
            (DataType::UInt8, _) => int_in(0, u8::MAX.into(), "uint8"),
            (DataType::UInt16, _) => int_in(0, u16::MAX.into(), "uint16"),
            (DataType::UInt32, _) => int_in(0, u32::MAX.into(), "uint32"),
            (DataType::UInt64, _) => int_in(0, u64::MAX.into(), "uint64"),
            (DataType::Float32 | DataType::Float64, Value::Number(_)) => Ok(()),
            (DataType::Float32 | DataType::Float64, _) => wrong("a float"),
            (DataType::Utf8, Value::String(_)) => Ok(()),
            (DataType::Utf8, _) => wrong("a string"),
            (DataType::Date32, Value::String(s)) => match Date32Type::parse(s) {
                Some(_) => Ok(()),
                None => Err(format!("`{path}` is \"{s}\", not a date such as 2024-01-31")),
            },
            (DataType::Date32, _) => wrong("a date (a string such as 2024-01-31)"),
            (DataType::Timestamp(unit, _), Value::String(s)) => {
                match arrow_cast::parse::string_to_datetime(&chrono::Utc, s) {
                    Ok(d) if *unit != TimeUnit::Nanosecond || d.timestamp_nanos_opt().is_some() => {
                        Ok(())
                    }
                    Ok(_) => Err(format!("`{path}` is \"{s}\", out of range for nanoseconds")),
                    Err(_) => Err(format!(
                        "`{path}` is \"{s}\", not an RFC 3339 timestamp such as 2024-01-31T12:00:00Z"
                    )),
                }
            }
            (DataType::Timestamp(..), Value::Number(n)) if n.is_i64() => Ok(()),
            (DataType::Timestamp(..), _) => {
                wrong("a timestamp (an RFC 3339 string such as 2024-01-31T12:00:00Z)")
            }
            (DataType::Decimal128(p, s), Value::String(_) | Value::Number(_)) => {
                let text = match v {
                    Value::Number(n) => n.to_string(),
                    Value::String(s) => s.clone(),
                    _ => unreachable!("matched above"),
                };
                match arrow_cast::parse::parse_decimal::<arrow_array::types::Decimal128Type>(
                    &text, *p, *s,
                ) {
                    Ok(_) => Ok(()),
                    Err(_) => Err(format!(
                        "`{path}` is {text}, which does not fit decimal128({p}, {s})"
                    )),
                }
            }
            (DataType::Decimal128(p, s), _) => wrong(&format!("decimal128({p}, {s})")),
            (DataType::List(item), Value::Array(items)) => items.iter().try_for_each(|x| {
                fits(item.data_type(), item.is_nullable(), x, &format!("{path}[]"))
            }),
            (DataType::List(_), _) => wrong("a list"),
            (DataType::Struct(fields), Value::Object(o)) => fits_object(fields, o, path),
            (DataType::Struct(_), _) => wrong("a struct (an object)"),
            (other, _) => Err(format!("`{path}`: columns of type {other} cannot be written")),
        }
    }

    use arrow_array::types::Date32Type;

    fn fits_object(fields: &Fields, o: &[(String, Value)], path: &str) -> Result<(), String> {
        let sub = |k: &str| {
            if path.is_empty() {
                k.to_string()
            } else {
                format!("{path}.{k}")
            }
        };
        for (k, _) in o {
            if fields.find(k).is_none() {
                let names: Vec<&str> = fields.iter().map(|f| f.name().as_str()).collect();
                return Err(format!(
                    "`{}` is not a column of the schema (columns: {})",
                    sub(k),
                    names.join(", ")
                ));
            }
        }
        for f in fields {
            fits(
                f.data_type(),
                f.is_nullable(),
                o.iter()
                    .find(|(k, _)| k == f.name())
                    .map_or(&Value::Null, |(_, v)| v),
                &sub(f.name()),
            )?;
        }
        Ok(())
    }

    /// The schema state: inferring, or fixed.
    #[derive(Clone, Debug)]
    enum Schema_ {
        Inferring(Shape),
        Fixed(SchemaRef),
    }

    impl Schema_ {
        /// Accepts `json` (widening an inferred schema), or says why it does not fit.
        fn admit(&mut self, json: &[u8]) -> Result<(), String> {
            let v: Value = serde_json::from_slice(json)
                .map_err(|e| format!("the record is not valid JSON ({e})"))?;
            let Value::Object(o) = &v else {
                return Err(format!(
                    "a Parquet output takes JSON objects, one key per column; this record is {}",
                    kind(&v)
                ));
            };
            match self {
                Schema_::Inferring(shape) => {
                    let mut next = shape.clone();
                    merge(&mut next, &v, "")?;
                    *shape = next;
                    Ok(())
                }
                Schema_::Fixed(schema) => fits_object(schema.fields(), o, ""),
            }
        }

        fn fixed(&self) -> SchemaRef {
            match self {
                Schema_::Fixed(s) => s.clone(),
                Schema_::Inferring(Shape::Struct(fields)) => Arc::new(Schema::new(
                    fields
                        .iter()
                        .map(|(n, f)| Field::new(n, shape_type(f), true))
                        .collect::<Fields>(),
                )),
                Schema_::Inferring(_) => Arc::new(Schema::empty()),
            }
        }
    }

    pub(crate) struct ParquetWriter {
        props: WriterProperties,
        row_group_size: usize,
        schema: Schema_,
        given: Option<SchemaRef>,
        /// Records of the row group being gathered, one JSON text per line.
        pending: Vec<u8>,
        pending_rows: usize,
        /// Bytes of the output so far (where the next byte handed out will sit).
        offset: u64,
        /// The file-level metadata of the first block, the template of the footer.
        template: Option<FileMetaData>,
        row_groups: Vec<RowGroupMetaData>,
        /// A row group that could not be encoded: the output cannot go on.
        broken: Option<String>,
    }

    impl ParquetWriter {
        pub(crate) fn new(opts: &ParquetOptions) -> Self {
            let compression = match opts.compression {
                ParquetCompression::Zstd => Compression::ZSTD(ZstdLevel::default()),
                ParquetCompression::Snappy => Compression::SNAPPY,
                ParquetCompression::None => Compression::UNCOMPRESSED,
            };
            let props = WriterProperties::builder()
                .set_compression(compression)
                .set_statistics_enabled(EnabledStatistics::Chunk)
                .set_offset_index_disabled(true)
                .set_max_row_group_row_count(Some(opts.row_group_size.max(1)))
                .set_created_by(format!("herdsman {}", env!("CARGO_PKG_VERSION")))
                .build();
            let given = opts.schema.as_ref().map(|s| Arc::new(arrow_schema(s)));
            ParquetWriter {
                props,
                row_group_size: opts.row_group_size.max(1),
                schema: match &given {
                    Some(s) => Schema_::Fixed(s.clone()),
                    None => Schema_::Inferring(Shape::Struct(Vec::new())),
                },
                given,
                pending: Vec::new(),
                pending_rows: 0,
                offset: 0,
                template: None,
                row_groups: Vec::new(),
                broken: None,
            }
        }

        /// A small Parquet file of `batch`'s rows (or of no rows): its bytes.
        fn mini_file(
            &self,
            schema: &SchemaRef,
            batch: Option<&arrow_array::RecordBatch>,
        ) -> Result<Vec<u8>, String> {
            let mut w = ArrowWriter::try_new(Vec::new(), schema.clone(), Some(self.props.clone()))
                .map_err(|e| format!("cannot start a row group: {e}"))?;
            if let Some(b) = batch {
                w.write(b)
                    .map_err(|e| format!("cannot encode a row group: {e}"))?;
            }
            w.into_inner()
                .map_err(|e| format!("cannot encode a row group: {e}"))
        }

        /// Turns the pending records into row groups appended to `out` as one block.
        fn flush(&mut self, out: &mut Vec<u8>) -> Result<(), String> {
            if let Some(e) = &self.broken {
                return Err(e.clone());
            }
            if self.pending_rows == 0 {
                return Ok(());
            }
            let schema = self.schema.fixed();
            self.schema = Schema_::Fixed(schema.clone());
            let r = self.encode_block(&schema, out);
            self.pending.clear();
            self.pending_rows = 0;
            if let Err(e) = &r {
                self.broken = Some(e.clone());
            }
            r
        }

        fn encode_block(&mut self, schema: &SchemaRef, out: &mut Vec<u8>) -> Result<(), String> {
            // The JSON decoder knows time zones only as offsets: decode `UTC` as `+00:00`
            // (the same instants), then give the columns their real type back.
            let decode_schema = Arc::new(Schema::new(
                schema
                    .fields()
                    .iter()
                    .map(|f| {
                        f.as_ref()
                            .clone()
                            .with_data_type(offset_zones(f.data_type()))
                    })
                    .collect::<Fields>(),
            ));
            let mut decoder = arrow_json::ReaderBuilder::new(decode_schema.clone())
                .with_batch_size(self.pending_rows)
                .with_strict_mode(true)
                .build_decoder()
                .map_err(|e| format!("cannot decode the records: {e}"))?;
            decoder
                .decode(&self.pending)
                .map_err(|e| format!("cannot decode the records: {e}"))?;
            let batch = decoder
                .flush()
                .map_err(|e| format!("cannot decode the records: {e}"))?
                .ok_or("no records to encode")?;
            let batch = if decode_schema == *schema {
                batch
            } else {
                batch
                    .columns()
                    .iter()
                    .zip(schema.fields())
                    .map(|(c, f)| retype(c.to_data(), f.data_type()).map(arrow_array::make_array))
                    .collect::<Result<Vec<_>, _>>()
                    .and_then(|cols| arrow_array::RecordBatch::try_new(schema.clone(), cols))
                    .map_err(|e| format!("cannot decode the records: {e}"))?
            };
            let bytes = self.mini_file(schema, Some(&batch))?;
            let (meta, data) = split_mini(&bytes)?;
            let start = out.len();
            out.extend_from_slice(BLOCK_MAGIC);
            out.extend_from_slice(&(meta.len() as u32).to_le_bytes());
            out.extend_from_slice(&(data.len() as u64).to_le_bytes());
            out.extend_from_slice(meta);
            out.extend_from_slice(data);
            let at = self.offset;
            self.offset += (out.len() - start) as u64;
            self.add_block(at, meta)
        }

        /// Records the row groups of the block written at `at` whose footer is `meta`.
        fn add_block(&mut self, at: u64, meta: &[u8]) -> Result<(), String> {
            let md = ParquetMetaDataReader::decode_metadata(meta)
                .map_err(|e| format!("a row group's metadata cannot be read: {e}"))?;
            // Where the block's data starts, minus where it started in its own small file
            // (after that file's 4-byte magic).
            let delta = (at + (BLOCK_HEADER + meta.len()) as u64) as i64 - 4;
            for rg in md.row_groups() {
                let ordinal = self.row_groups.len() as i32;
                self.row_groups.push(
                    relocate(rg, delta, ordinal)
                        .map_err(|e| format!("a row group cannot be placed: {e}"))?,
                );
            }
            if self.template.is_none() {
                self.template = Some(md.file_metadata().clone());
            }
            Ok(())
        }
    }

    /// `t` with the time zone `UTC` spelled `+00:00`, which the JSON decoder can parse.
    fn offset_zones(t: &DataType) -> DataType {
        match t {
            DataType::Timestamp(u, Some(z)) if z.as_ref() == "UTC" => {
                DataType::Timestamp(*u, Some("+00:00".into()))
            }
            DataType::List(f) => DataType::List(Arc::new(
                f.as_ref()
                    .clone()
                    .with_data_type(offset_zones(f.data_type())),
            )),
            DataType::Struct(fs) => DataType::Struct(
                fs.iter()
                    .map(|f| {
                        f.as_ref()
                            .clone()
                            .with_data_type(offset_zones(f.data_type()))
                    })
                    .collect::<Fields>(),
            ),
            other => other.clone(),
        }
    }

    /// `data` (of the type [`offset_zones`] gives for `t`) as type `t`: the values are the
    /// same, only the spelling of time zones differs.
    fn retype(
        data: arrow_data::ArrayData,
        t: &DataType,
    ) -> Result<arrow_data::ArrayData, arrow_schema::ArrowError> {
        let children = match t {
            DataType::List(f) => vec![retype(data.child_data()[0].clone(), f.data_type())?],
            DataType::Struct(fs) => data
                .child_data()
                .iter()
                .zip(fs.iter())
                .map(|(c, f)| retype(c.clone(), f.data_type()))
                .collect::<Result<Vec<_>, _>>()?,
            _ => data.child_data().to_vec(),
        };
        data.into_builder()
            .data_type(t.clone())
            .child_data(children)
            .build()
    }

    /// The footer and the column data of a small Parquet file.
    fn split_mini(bytes: &[u8]) -> Result<(&[u8], &[u8]), String> {
        let n = bytes.len();
        if n < 12 || &bytes[n - 4..] != b"PAR1" {
            return Err("the encoder produced no Parquet footer".into());
        }
        let flen = u32::from_le_bytes(bytes[n - 8..n - 4].try_into().expect("4 bytes")) as usize;
        let fstart = n
            .checked_sub(8 + flen)
            .filter(|&s| s >= 4)
            .ok_or("the encoder produced a bad Parquet footer")?;
        Ok((&bytes[fstart..n - 8], &bytes[4..fstart]))
    }

    /// `rg` with every offset moved by `delta` and the page-index and bloom-filter
    /// locations dropped (they are not written).
    fn relocate(
        rg: &RowGroupMetaData,
        delta: i64,
        ordinal: i32,
    ) -> parquet::errors::Result<RowGroupMetaData> {
        let cols = rg
            .columns()
            .iter()
            .map(|c| {
                c.clone()
                    .into_builder()
                    .set_data_page_offset(c.data_page_offset() + delta)
                    .set_dictionary_page_offset(c.dictionary_page_offset().map(|o| o + delta))
                    .set_index_page_offset(c.index_page_offset().map(|o| o + delta))
                    .set_bloom_filter_offset(None)
                    .set_bloom_filter_length(None)
                    .set_column_index_offset(None)
                    .set_column_index_length(None)
                    .set_offset_index_offset(None)
                    .set_offset_index_length(None)
                    .build()
            })
            .collect::<parquet::errors::Result<Vec<_>>>()?;
        let first = cols.first().map_or(0, |c| c.byte_range().0 as i64);
        let mut b = rg.clone().into_builder();
        b.take_columns();
        b.set_column_metadata(cols)
            .set_ordinal(ordinal)
            .set_file_offset(first)
            .build()
    }

    fn read_exact_or_end(r: &mut dyn Read, buf: &mut [u8]) -> Result<bool, String> {
        let mut got = 0;
        while got < buf.len() {
            match r.read(&mut buf[got..]) {
                Ok(0) if got == 0 => return Ok(false),
                Ok(0) => return Err("the partial Parquet output ends inside a block".into()),
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("the partial Parquet output cannot be read ({e})")),
            }
        }
        Ok(true)
    }

    impl RecordWriter for ParquetWriter {
        fn start(&mut self, out: &mut Vec<u8>) {
            out.extend_from_slice(b"PAR1");
            self.offset = 4;
        }

        fn resume(&mut self, existing: Option<&mut dyn Read>) -> Result<(), String> {
            let Some(r) = existing else {
                return Err("a Parquet output written to a stream cannot be resumed".into());
            };
            let mut magic = [0u8; 4];
            if !read_exact_or_end(r, &mut magic)? || &magic != b"PAR1" {
                return Err("the partial file does not start like a Parquet file".into());
            }
            self.offset = 4;
            let mut header = [0u8; BLOCK_HEADER];
            while read_exact_or_end(r, &mut header)? {
                if &header[..4] != BLOCK_MAGIC {
                    return Err(format!(
                        "the partial Parquet output holds no row-group block at byte {}",
                        self.offset
                    ));
                }
                let mlen = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes")) as usize;
                let dlen = u64::from_le_bytes(header[8..16].try_into().expect("8 bytes"));
                let mut meta = vec![0u8; mlen];
                if !read_exact_or_end(r, &mut meta)? {
                    return Err("the partial Parquet output ends inside a block".into());
                }
                let skipped =
                    std::io::copy(&mut Read::take(&mut *r, dlen), &mut std::io::sink())
                        .map_err(|e| format!("the partial Parquet output cannot be read ({e})"))?;
                if skipped != dlen {
                    return Err("the partial Parquet output ends inside a block".into());
                }
                let at = self.offset;
                self.add_block(at, &meta)?;
                self.offset += (BLOCK_HEADER + mlen) as u64 + dlen;
            }
            if let Some(t) = &self.template {
                let found = parquet::arrow::parquet_to_arrow_schema(
                    t.schema_descr(),
                    t.key_value_metadata(),
                )
                .map_err(|e| format!("the schema of the partial output cannot be read ({e})"))?;
                if let Some(given) = &self.given {
                    if found.fields() != given.fields() {
                        return Err("the partial output was written with another schema".into());
                    }
                }
                self.schema = Schema_::Fixed(Arc::new(found));
            }
            Ok(())
        }

        fn encode(&mut self, json: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
            if let Some(e) = &self.broken {
                return Err(e.clone());
            }
            self.schema.admit(json)?;
            // The JSON decoder takes one record per line: compact the rare record that spans
            // lines.
            if memchr::memchr2(b'\n', b'\r', json).is_some() {
                let v: serde_json::Value = serde_json::from_slice(json).expect("admitted as JSON");
                serde_json::to_writer(&mut self.pending, &v).expect("writing to a Vec");
            } else {
                self.pending.extend_from_slice(json);
            }
            self.pending.push(b'\n');
            self.pending_rows += 1;
            if self.pending_rows >= self.row_group_size || self.pending.len() >= MAX_PENDING_BYTES {
                // An error here is not this record's fault: it is kept in `broken` and ends
                // the output at the next chunk end.
                let _ = self.flush(out);
            }
            Ok(())
        }

        fn check(&self, records: &mut dyn Iterator<Item = &[u8]>) -> Result<(), String> {
            if let Some(e) = &self.broken {
                return Err(e.clone());
            }
            let mut schema = self.schema.clone();
            for r in records {
                schema.admit(r)?;
            }
            Ok(())
        }

        fn end_chunk(&mut self, out: &mut Vec<u8>) -> Result<(), String> {
            self.flush(out)
        }

        fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), String> {
            self.flush(out)?;
            let template = match &self.template {
                Some(t) => t.clone(),
                None => {
                    // No row at all: the footer of an empty file of the schema.
                    let schema = self.schema.fixed();
                    let bytes = self.mini_file(&schema, None)?;
                    let (meta, _) = split_mini(&bytes)?;
                    ParquetMetaDataReader::decode_metadata(meta)
                        .map_err(|e| format!("cannot make the footer: {e}"))?
                        .file_metadata()
                        .clone()
                }
            };
            let rows: i64 = self.row_groups.iter().map(RowGroupMetaData::num_rows).sum();
            let file = FileMetaData::new(
                template.version(),
                rows,
                template.created_by().map(str::to_string),
                template.key_value_metadata().cloned(),
                template.schema_descr_ptr(),
                template.column_orders().cloned(),
            );
            let md = ParquetMetaData::new(file, self.row_groups.clone());
            ParquetMetaDataWriter::new(&mut *out, &md)
                .with_preserve_page_index_locations(false)
                .finish()
                .map_err(|e| format!("cannot write the footer: {e}"))
        }
    }
}
