"""Error records (one per rejected input record) and the run's counters."""

from __future__ import annotations

import json
import math
from typing import Any

from apache_beam.metrics import Metrics

MAX_RECORD_BYTES = 64 * 1024
NAMESPACE = "scoring"
FILE_NAMESPACE_PREFIX = "file:"
STAGES = ("read", "validate", "predict")


def count(name: str, n: int, source: str | None = None) -> None:
    """Adds n to a run-wide counter and, given a source file, to that file's own counter."""
    if not n:
        return
    Metrics.counter(NAMESPACE, name).inc(n)
    if source is not None:
        Metrics.counter(FILE_NAMESPACE_PREFIX + source, name).inc(n)


def count_failed(stage: str, n: int, source: str) -> None:
    """Counts n rows rejected at a stage, run-wide and for their file."""
    count(f"rows_failed_{stage}", n)
    count("rows_failed", n, source)


def error_record(
    stage: str, error: str, record: Any, source: str, run_id: str, **extra: Any
) -> dict[str, Any]:
    """Builds one errors-output record, as the contract lays it out."""
    rec = {"stage": stage, "error": error, "record": record, "source": source, "run_id": run_id}
    rec.update(extra)
    return rec


def to_json_line(rec: dict[str, Any]) -> str:
    """Serialises an error record as one JSON line of at most 64 KiB.

    Non-ASCII is escaped, so no reader splits a line at U+0085 or U+2028 inside a record.

    A longer record is cut: its `record` becomes a prefix of its JSON text and
    `"truncated": true` is set.
    """
    line = json.dumps(_jsonable(rec), ensure_ascii=True, allow_nan=False)
    if len(line.encode()) <= MAX_RECORD_BYTES:
        return line
    rec = dict(rec)
    raw = rec["record"] if isinstance(rec["record"], str) else json.dumps(_jsonable(rec["record"]))
    rec["record"] = None
    rec["error"] = str(rec["error"])[:4096]
    rec["truncated"] = True
    keep = MAX_RECORD_BYTES - len(json.dumps(_jsonable(rec)).encode()) - 64
    while True:  # escaping can grow the text, so shrink until the line fits
        rec["record"] = raw.encode()[: max(keep, 0)].decode(errors="ignore")
        line = json.dumps(_jsonable(rec), ensure_ascii=True, allow_nan=False)
        if len(line.encode()) <= MAX_RECORD_BYTES:
            return line
        keep //= 2


def _jsonable(value: Any) -> Any:
    """Makes a value JSON-safe: non-finite floats and unknown types become strings."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return str(value)
