#!/usr/bin/env python3
"""Parquet fixtures and checks for the CLI tests, with pyarrow (an independent reader and
writer to hold herdsman's Parquet input and output against).

    parquet_tool.py typed OUT ROWS ROW_GROUP    a file with nested, null, decimal and
                                                timestamp columns, in row groups of ROW_GROUP
    parquet_tool.py workload OUT ROWS ROW_GROUP the reference workload (id, value), some
                                                values not integers
    parquet_tool.py expect IN [COL,...]         the JSON lines herdsman should read from IN
                                                (only COLs, in that order, when given)
    parquet_tool.py schema IN                   IN's schema as pyarrow prints it
    parquet_tool.py same A B                    exit 0 when A and B hold equal tables
                                                (schema and rows), else say how they differ
    parquet_tool.py dump IN                     IN's rows as JSON lines, then one line
                                                {"row_groups": [rows, ...], "schema": "..."}
"""
import datetime as dt
import decimal
import json
import sys

import pyarrow as pa
import pyarrow.parquet as pq


def typed(out, rows, row_group):
    rows, row_group = int(rows), int(row_group)
    utc = dt.timezone.utc
    base = dt.datetime(2024, 1, 31, 12, 0, 0, tzinfo=utc)
    data = {
        "id": list(range(rows)),
        "name": [None if i % 7 == 3 else f"name \"{i}\" é\n" for i in range(rows)],
        "price": [
            None if i % 5 == 4 else decimal.Decimal(i * 137 - 2000).scaleb(-2)
            for i in range(rows)
        ],
        "at": [base + dt.timedelta(seconds=i * 3601, microseconds=(i % 3) * 250_000)
               if i % 6 != 5 else None for i in range(rows)],
        "local": [dt.datetime(2023, 12, 31, 23, 59, 59) + dt.timedelta(milliseconds=i * 7)
                  for i in range(rows)],
        "day": [dt.date(2020, 2, 28) + dt.timedelta(days=i) for i in range(rows)],
        "score": [None if i % 4 == 0 else i / 8 for i in range(rows)],
        "flag": [i % 3 == 0 for i in range(rows)],
        "tags": [None if i % 9 == 8 else [f"t{j}" if j != 1 else None for j in range(i % 4)]
                 for i in range(rows)],
        "point": [None if i % 11 == 10 else {"x": i * 0.5, "y": None if i % 2 else i}
                  for i in range(rows)],
        "small": [i % 100 - 50 for i in range(rows)],
    }
    schema = pa.schema([
        pa.field("id", pa.int64(), nullable=False),
        ("name", pa.string()),
        ("price", pa.decimal128(10, 2)),
        ("at", pa.timestamp("us", tz="UTC")),
        ("local", pa.timestamp("ms")),
        ("day", pa.date32()),
        ("score", pa.float64()),
        ("flag", pa.bool_()),
        ("tags", pa.list_(pa.string())),
        ("point", pa.struct([("x", pa.float64()), ("y", pa.int32())])),
        ("small", pa.int8()),
    ])
    table = pa.table(data, schema=schema)
    pq.write_table(table, out, row_group_size=row_group)


def workload(out, rows, row_group):
    rows, row_group = int(rows), int(row_group)
    state = 0x9E3779B97F4A7C15
    values = []
    for i in range(rows):
        state ^= (state << 13) & 0xFFFFFFFFFFFFFFFF
        state ^= state >> 7
        state ^= (state << 17) & 0xFFFFFFFFFFFFFFFF
        values.append(f"bad-{i}" if i % 97 == 13 else str(state % 3000))
    table = pa.table({"id": pa.array(range(rows), pa.int64()), "value": values})
    pq.write_table(table, out, row_group_size=row_group)


def frac(t):
    """herdsman's fractional seconds: none, or 3, 6 digits as needed."""
    if t.microsecond == 0:
        return ""
    if t.microsecond % 1000 == 0:
        return f".{t.microsecond // 1000:03d}"
    return f".{t.microsecond:06d}"


def as_json(v):
    if isinstance(v, decimal.Decimal):
        return str(v)
    if isinstance(v, dt.datetime):
        zone = ""
        if v.tzinfo is not None:
            v = v.astimezone(dt.timezone.utc).replace(tzinfo=None)
            zone = "Z"
        return v.strftime("%Y-%m-%dT%H:%M:%S") + frac(v) + zone
    if isinstance(v, dt.date):
        return v.isoformat()
    if isinstance(v, dict):
        return {k: as_json(x) for k, x in v.items()}
    if isinstance(v, list):
        return [as_json(x) for x in v]
    return v


def expect(path, cols=None):
    table = pq.read_table(path)
    names = cols.split(",") if cols else table.column_names
    table = table.select(names)
    for row in table.to_pylist():
        print(json.dumps({k: as_json(row[k]) for k in names}, ensure_ascii=False))


def same(a, b):
    ta, tb = pq.read_table(a), pq.read_table(b)
    if not ta.schema.equals(tb.schema, check_metadata=False):
        print(f"schemas differ:\n{ta.schema}\n---\n{tb.schema}")
        sys.exit(1)
    if ta.num_rows != tb.num_rows:
        print(f"{ta.num_rows} rows against {tb.num_rows}")
        sys.exit(1)
    for i, (x, y) in enumerate(zip(ta.to_pylist(), tb.to_pylist())):
        if x != y:
            print(f"row {i} differs: {x!r} against {y!r}")
            sys.exit(1)


def dump(path):
    f = pq.ParquetFile(path)
    for row in f.read().to_pylist():
        print(json.dumps(as_json(row), ensure_ascii=False))
    groups = [f.metadata.row_group(i).num_rows for i in range(f.metadata.num_row_groups)]
    print(json.dumps({"row_groups": groups, "schema": str(f.schema_arrow)}))


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "typed":
        typed(*args)
    elif cmd == "workload":
        workload(*args)
    elif cmd == "expect":
        expect(*args)
    elif cmd == "schema":
        print(pq.read_schema(args[0]))
    elif cmd == "same":
        same(*args)
    elif cmd == "dump":
        dump(*args)
    else:
        sys.exit(f"unknown command {cmd}")
