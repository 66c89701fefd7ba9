"""Error records (one per rejected input record) and the run's counts.

Counts are kept twice, as double-entry bookkeeping: run-wide (as Beam metrics, and as bundle
totals in the `stats` output), and per input file in the same small `stats` output each DoFn
emits once per bundle (metrics per file would make one counter per file: too many for Dataflow
with thousands of files). The commit stage checks that the two agree.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import GlobalWindows

from transforms.spec import STATS

MAX_RECORD_BYTES = 64 * 1024
NAMESPACE = "scoring"
STAGES = ("read", "validate", "predict")
# Run-wide counters, one per categorical feature (the prefix then the column's name), of the rows
# that held a category the model was not trained on: rejected for it at validate, or scored
# with it (the model takes one: a scikit-learn encoder that ignores it, --unknown_categories
# score).
UNKNOWN_REJECTED = "unknown_category_rejected:"
UNKNOWN_SCORED = "unknown_category_scored:"


class CountingDoFn(beam.DoFn):
    """A DoFn that counts rows run-wide (Beam metrics) and per input file (its `stats` output).

    Subclasses that override start_bundle or finish_bundle call these.
    """

    def start_bundle(self) -> None:
        self._tally: dict[str, dict[str, int]] = {}
        self._totals: dict[str, int] = {}

    def finish_bundle(self) -> Iterator[Any]:
        if self._tally:
            tally, self._tally = self._tally, {}
            yield beam.pvalue.TaggedOutput(STATS, GlobalWindows.windowed_value(("counts", tally)))
        if self._totals:
            totals, self._totals = self._totals, {}
            yield beam.pvalue.TaggedOutput(STATS, GlobalWindows.windowed_value(("totals", totals)))

    def count(self, name: str, n: int, source: str | None = None) -> None:
        """Adds n to a run-wide counter and, given a source file, to that file's own count.

        The run-wide count is kept twice: as a Beam metric (what a launcher that waits reads)
        and in the bundle's `totals` (what the commit stage, inside the pipeline, reads: a
        failed bundle's are dropped with its outputs, as its metrics are not committed)."""
        if not n:
            return
        Metrics.counter(NAMESPACE, name).inc(n)
        self._totals[name] = self._totals.get(name, 0) + n
        if source is not None:
            self.note(source, **{name: n})

    def note(self, source: str, **facts: int) -> None:
        """Adds per-file facts that are no run-wide counters (a file's size, its mtime): summed
        like the counts, so a file planned twice shows twice its size."""
        per_file = self._tally.setdefault(source, {})
        for name, value in facts.items():
            per_file[name] = per_file.get(name, 0) + value

    def count_failed(self, stage: str, n: int, source: str) -> None:
        """Counts n rows rejected at a stage, run-wide and for their file."""
        self.count(f"rows_failed_{stage}", n, source)

    def count_unknown(self, column: str, n: int, scored: bool) -> None:
        """Counts, run-wide, n rows that held a category the model was not trained on in this
        column: scored with it, or rejected for it."""
        self.count((UNKNOWN_SCORED if scored else UNKNOWN_REJECTED) + column, n)


class MergeCounts(beam.CombineFn):
    """Merges the per-bundle {file: {count: n}} tallies into the run's per-file counts."""

    def create_accumulator(self) -> dict[str, dict[str, int]]:
        return {}

    def add_input(self, acc: dict, tally: dict) -> dict:
        for source, counts in tally.items():
            per_file = acc.setdefault(source, {})
            for name, n in counts.items():
                per_file[name] = per_file.get(name, 0) + n
        return acc

    def merge_accumulators(self, accumulators) -> dict:
        merged: dict = {}
        for acc in accumulators:
            self.add_input(merged, acc)
        return merged

    def extract_output(self, acc: dict) -> dict:
        return acc


def error_record(
    stage: str, error: str, record: Any, source: str, run_id: str, **extra: Any
) -> dict[str, Any]:
    """Builds one errors-output record, as the contract lays it out."""
    rec = {"stage": stage, "error": error, "record": record, "source": source, "run_id": run_id}
    rec.update({k: v for k, v in extra.items() if v is not None})
    return rec


def to_json_line(rec: dict[str, Any]) -> str:
    """Serialises an error record as one JSON line of at most 64 KiB.

    Non-ASCII is escaped, so no reader splits a line at U+0085 or U+2028 inside a record.

    A longer record is cut: its `record` becomes a prefix of its JSON text and
    `"truncated": true` is set.
    """
    try:  # most records hold only JSON types: no walk over them first
        line = json.dumps(rec, ensure_ascii=True, allow_nan=False)
    except (TypeError, ValueError):  # NaN/inf, bytes, a timestamp...
        line = json.dumps(_jsonable(rec), ensure_ascii=True, allow_nan=False)
    if len(line) <= MAX_RECORD_BYTES:  # ASCII only: characters are bytes
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
        return value.decode("utf-8", errors="backslashreplace")
    return str(value)


def reason_of(record: dict[str, Any]) -> str:
    """An error's reason with its values blanked out, so errors of one kind group together:
    "carat: '0,65' is not a number" and "carat: 'n/a' is not a number" are one reason."""
    import re

    text = str(record.get("error", ""))
    text = re.sub(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"", "'…'", text)
    text = re.sub(r"\[[^\[\]]*\]", "[…]", text)
    # A number right after "column:" is a value; elsewhere ("expected 5 fields") it is not.
    text = re.sub(r"(: )-?\d[\d.]*(?:e[-+]?\d+)?", r"\1N", text)
    # Where in a record a bad byte sits: "(byte 0xfc at column 17)" is one reason for all.
    text = re.sub(r"\bbyte 0x[0-9a-f]+ at column \d+", "byte 0xN at column N", text)
    return text[:300]


class SummarizeErrors(beam.CombineFn):
    """The errors output in brief: each (stage, reason) with its count and a few example
    records, the most frequent first, and a sample of the records (for the report and MLflow).
    Bounded whatever the number of errors."""

    def __init__(self, examples: int = 3, reasons: int = 200, sample: int = 1000):
        self._examples = examples
        self._reasons = reasons
        self._sample = sample

    def create_accumulator(self) -> dict[str, Any]:
        return {"reasons": {}, "sample": [], "other": 0}

    def add_input(self, acc: dict[str, Any], record: dict[str, Any]) -> dict[str, Any]:
        rows = int(record.get("rows") or 1) if record.get("record") is None else 1
        key = (record.get("stage", ""), reason_of(record))
        entry = acc["reasons"].get(key)
        if entry is None:
            if len(acc["reasons"]) >= self._reasons:
                acc["other"] += rows
                return acc
            entry = acc["reasons"][key] = [0, []]
        entry[0] += rows
        if len(entry[1]) < self._examples:
            entry[1].append(_example(record))
        if len(acc["sample"]) < self._sample:
            acc["sample"].append(_example(record))
        return acc

    def merge_accumulators(self, accumulators) -> dict[str, Any]:
        merged = self.create_accumulator()
        for acc in accumulators:
            merged["other"] += acc["other"]
            for key, (n, examples) in acc["reasons"].items():
                entry = merged["reasons"].get(key)
                if entry is None:
                    if len(merged["reasons"]) >= self._reasons:
                        merged["other"] += n
                        continue
                    entry = merged["reasons"][key] = [0, []]
                entry[0] += n
                entry[1].extend(examples[: self._examples - len(entry[1])])
            merged["sample"].extend(acc["sample"][: self._sample - len(merged["sample"])])
        return merged

    def extract_output(self, acc: dict[str, Any]) -> dict[str, Any]:
        groups = [
            {"stage": stage, "reason": reason, "count": n, "examples": examples}
            for (stage, reason), (n, examples) in acc["reasons"].items()
        ]
        groups.sort(key=lambda g: (-g["count"], g["stage"], g["reason"]))
        return {"groups": groups, "other_rows": acc["other"], "sample": acc["sample"]}


def _example(record: dict[str, Any]) -> dict[str, Any]:
    """An error record as it is written (cut to the errors output's size limit)."""
    return json.loads(to_json_line(record))
