"""File-wide numbers for errors found in the later units of a split file.

Readers, validators and the model number a record within its work unit (its row among the unit's
parsed rows, its physical line); each unit reports how many rows and lines it held. Once every
unit is read, the errors of a file's later units are shifted by the sizes of the units before
them, so `row_index` and `line` are the same as if the file had been read whole.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import apache_beam as beam


def unit_offsets(sizes: Iterable[tuple[str, tuple[int, int, int, bool]]]) -> dict:
    """(file, (unit, rows, lines, failed)) pairs -> {file: {unit: (row offset, line offset)}}.

    A unit after a unit that failed part-way has no known offsets (None).
    """
    by_file: dict[str, list[tuple[int, int, int, bool]]] = {}
    for path, size in sizes:
        by_file.setdefault(path, []).append(size)
    offsets: dict[str, dict[int, tuple[int, int] | None]] = {}
    for path, units in by_file.items():
        rows = lines = 0
        known = True
        table: dict[int, tuple[int, int] | None] = {}
        for index, unit_rows, unit_lines, failed in sorted(units):
            table[index] = (rows, lines) if known else None
            rows += unit_rows
            lines += unit_lines
            known = known and not failed
        offsets[path] = table
    return offsets


class NumberErrors(beam.DoFn):
    """Adds the unit's offsets to an error record's `row_index` and `line` (side input: the
    offsets of every unit), and drops the record's internal unit index."""

    def process(self, record: dict[str, Any], offsets: dict) -> Iterable[dict[str, Any]]:
        unit = record.pop("_unit", None)
        if not unit:
            yield record
            return
        shift = offsets.get(record["source"], {}).get(unit)
        if shift is None:  # a unit before this one failed part-way: the numbers are unknown
            record.pop("row_index", None)
            record.pop("line", None)
            yield record
            return
        rows, lines = shift
        if record.get("row_index") is not None:
            record["row_index"] += rows
        if record.get("line") is not None:
            record["line"] += lines
        yield record


class NumberedErrors(beam.PTransform):
    """Error records from every step, numbered file-wide (see the module docstring)."""

    def __init__(self, sizes):
        super().__init__()
        self._sizes = sizes

    def expand(self, errors):
        offsets = (
            self._sizes | "ToList" >> beam.combiners.ToList() | "Offsets" >> beam.Map(unit_offsets)
        )
        return errors | "Number" >> beam.ParDo(NumberErrors(), beam.pvalue.AsSingleton(offsets))
