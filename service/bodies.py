"""Request bodies as rows: Vertex AI's `{"instances": [...]}` and MLflow's scoring formats.

A body that is not what a route takes is a `BadRequest` (a 4xx with a one-line message), never
a 500: nothing a client sends reaches the model before it is a list of JSON objects. JSON is
read as a JSON Lines night reads it (Python's json: integers of any size stay exact; NaN and
Infinity are numbers).
"""

from __future__ import annotations

import json
from typing import Any


class BadRequest(Exception):
    """What the client sent cannot be scored as a request: its HTTP status and why."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def parse_json(body: bytes) -> Any:
    """The request's JSON document."""
    if not body.strip():
        raise BadRequest(400, "the request has no body: send a JSON object")
    try:
        return json.loads(body.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise BadRequest(400, f"the body is not UTF-8 text (byte {e.start})") from None
    except ValueError as e:
        raise BadRequest(400, f"the body is not valid JSON: {e}") from None


def vertex_instances(document: Any, max_rows: int) -> list[dict]:
    """POST /predict: `{"instances": [{column: value, ...}, ...]}` (other fields, such as
    Vertex AI's `parameters`, are allowed and ignored)."""
    if not isinstance(document, dict):
        raise BadRequest(
            400, f'the body is a JSON {_kind(document)}, not an object {{"instances": [...]}}'
        )
    if "instances" not in document:
        raise BadRequest(400, 'the body has no "instances" field: send {"instances": [{...}]}')
    return checked_rows(document["instances"], "instances", max_rows)


def checked_rows(rows: Any, field: str, max_rows: int) -> list[dict]:
    """A list of JSON objects, each a row, at most max_rows of them."""
    if not isinstance(rows, list):
        raise BadRequest(400, f'"{field}" is a JSON {_kind(rows)}, not a list of objects')
    if len(rows) > max_rows:
        raise BadRequest(
            413, f'"{field}" holds {len(rows):,} rows, more than --max_rows {max_rows:,}'
        )
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise BadRequest(
                400, f'"{field}"[{i}] is a JSON {_kind(row)}, not an object of column: value'
            )
    return rows


def mlflow_instances(document: Any, max_rows: int) -> list[dict]:
    """POST /invocations: MLflow's scoring formats, as `mlflow models serve` reads them:
    `dataframe_split` ({"columns", "data"}), `dataframe_records` (a list of objects),
    `instances` or `inputs` (a list of objects, or an object of columns)."""
    if not isinstance(document, dict):
        raise BadRequest(400, f"the body is a JSON {_kind(document)}, not an object")
    formats = [
        k for k in ("dataframe_split", "dataframe_records", "instances", "inputs") if k in document
    ]
    if len(formats) != 1:
        raise BadRequest(
            400,
            "the body must hold exactly one of dataframe_split, dataframe_records, instances, "
            f"inputs (it holds {', '.join(formats) or 'none of them'})",
        )
    field = formats[0]
    value = document[field]
    if field == "dataframe_split":
        return _split(value, max_rows)
    if isinstance(value, dict) and field in ("instances", "inputs"):
        return _columns(value, field, max_rows)
    return checked_rows(value, field, max_rows)


def _split(value: Any, max_rows: int) -> list[dict]:
    """pandas' split orientation: {"columns": [...], "data": [[...], ...]} ("index" ignored)."""
    if not isinstance(value, dict) or "data" not in value or "columns" not in value:
        raise BadRequest(400, 'dataframe_split must be an object with "columns" and "data"')
    columns, data = value["columns"], value["data"]
    if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
        raise BadRequest(400, 'dataframe_split "columns" must be a list of column names')
    if len(set(columns)) != len(columns):
        raise BadRequest(400, 'dataframe_split "columns" names a column more than once')
    if not isinstance(data, list):
        raise BadRequest(400, f'dataframe_split "data" is a JSON {_kind(data)}, not a list')
    if len(data) > max_rows:
        raise BadRequest(413, f"dataframe_split holds {len(data):,} rows, more than --max_rows")
    rows = []
    for i, values in enumerate(data):
        if not isinstance(values, list) or len(values) != len(columns):
            raise BadRequest(
                400, f'dataframe_split "data"[{i}] is not a list of {len(columns)} values'
            )
        rows.append(dict(zip(columns, values)))
    return rows


def _columns(value: dict, field: str, max_rows: int) -> list[dict]:
    """An object of columns, {"a": [1, 2], "b": [3, 4]}: one row per position."""
    lengths = {len(v) if isinstance(v, list) else -1 for v in value.values()}
    if -1 in lengths or len(lengths) > 1:
        raise BadRequest(
            400, f'"{field}" as an object must map each column to a list, all of one length'
        )
    n = lengths.pop() if lengths else 0
    if n > max_rows:
        raise BadRequest(413, f'"{field}" holds {n:,} rows, more than --max_rows {max_rows:,}')
    names = list(value)
    return [{name: value[name][i] for name in names} for i in range(n)]


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if value is None:
        return "null"
    return {dict: "object", list: "array", str: "string", int: "number", float: "number"}.get(
        type(value), type(value).__name__
    )
