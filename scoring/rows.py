"""Rows as JSON: parsed JSON objects into Arrow with every value keeping its JSON kind (as a JSON
Lines night reads them), and output rows back into JSON values.
"""

from __future__ import annotations

import base64
import datetime
import decimal
import json
from typing import Any

import numpy as np
import pyarrow as pa

_KINDS = {bool: "bool", int: "int", float: "float", str: "str"}
_KIND_TYPES = {
    "bool": pa.bool_(),
    "int": pa.int64(),
    "bigint": pa.decimal128(38, 0),
    "float": pa.float64(),
    "str": pa.string(),
    "json": pa.string(),
}


def _kind_of(value: Any) -> str:
    kind = _KINDS.get(type(value), "json")
    if kind == "int" and not -(2**63) <= value < 2**63:
        return "bigint" if abs(value) < 10**38 else "json"
    return kind


def json_table(rows: list[dict]) -> pa.Table:
    """A table of parsed JSON objects in which every value keeps its JSON kind: a column of one
    kind takes that kind's type (whole numbers beyond int64 as decimal128(38, 0)), a column of
    several kinds a dense union with one child per kind (objects and arrays as JSON text, in a
    child named `json`), so that the cast treats each value as it would alone. A record that
    lacks a field holds null there."""
    names = list(dict.fromkeys(k for r in rows for k in r))
    columns = {}
    for name in names:
        values = [r.get(name) for r in rows]
        kinds = [None if v is None else _kind_of(v) for v in values]
        present = set(kinds) - {None}
        if len(present) <= 1 and present != {"json"}:
            kind = present.pop() if present else None
            columns[name] = pa.array(values, _KIND_TYPES[kind]) if kind else pa.nulls(len(values))
            continue
        columns[name] = _union(values, kinds, sorted(present))
    return pa.table(columns)


def _union(values: list, kinds: list, present: list[str]) -> pa.Array:
    children: dict[str, list] = {k: [] for k in present}
    codes = np.zeros(len(values), dtype=np.int8)
    offsets = np.zeros(len(values), dtype=np.int32)
    nulls = "null" if None in kinds else None
    if nulls:
        children["null"] = []
    order = list(children)
    for i, (v, k) in enumerate(zip(values, kinds)):
        k = k or "null"
        if k == "json":
            v = json.dumps(v, ensure_ascii=False)
        codes[i] = order.index(k)
        offsets[i] = len(children[k])
        children[k].append(v)
    arrays = [
        pa.nulls(len(children[k])) if k == "null" else pa.array(children[k], _KIND_TYPES[k])
        for k in order
    ]
    return pa.UnionArray.from_dense(pa.array(codes), pa.array(offsets), arrays, order)


def instances_table(instances: list[dict], wanted: tuple[str, ...]) -> pa.Table:
    """Parsed JSON objects as a table of the wanted columns, each value of its JSON kind (see
    json_table); a field an object lacks, or that no object holds, is null there."""
    table = json_table(instances)
    n = len(instances)
    return pa.table(
        {c: table.column(c) if c in table.column_names else pa.nulls(n) for c in wanted}
    )


def json_value(value: Any) -> Any:
    """An Arrow value (as to_pylist gives it) as a JSON value: dates and times in ISO 8601
    (UTC as Z), a whole decimal as the integer it is (exact, however large), any other
    decimal as its text (its spelling, 1.10 stays 1.10), bytes in base64."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, datetime.datetime):
        text = value.isoformat()
        return text[:-6] + "Z" if text.endswith("+00:00") else text
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        if value == value.to_integral_value() and value.as_tuple().exponent >= 0:
            return int(value)
        return str(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, dict):
        return {str(k): json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_value(v) for v in value]
    return str(value)


def json_rows(table: pa.Table) -> list[dict[str, Any]]:
    """A table's rows as JSON objects, in the table's column order (see json_value)."""
    rows = table.to_pylist()
    plain = {bool, int, float, str, type(None)}
    for field in table.schema:
        if _plain_type(field.type):
            continue
        name = field.name
        for row in rows:
            value = row[name]
            if type(value) not in plain:
                row[name] = json_value(value)
    return rows


def _plain_type(t: pa.DataType) -> bool:
    """Whether to_pylist gives a JSON value for every value of this type."""
    return (
        pa.types.is_integer(t)
        or pa.types.is_floating(t)
        or pa.types.is_boolean(t)
        or pa.types.is_string(t)
        or pa.types.is_large_string(t)
        or pa.types.is_null(t)
    )


def dumps(value: Any) -> bytes:
    """A JSON document as compact UTF-8 bytes (NaN and infinities as JSON Lines readers
    spell them: NaN, Infinity)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
