"""Validating record batches against the launch-time schema, with vectorised checks.

Clean batches pass through a handful of Arrow compute calls; only a column whose cast fails is
looked at value by value, and only in the batch where it fails.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.errors import count_failed, error_record
from transforms.spec import ERRORS, Chunk, ScoringSpec

_PARSERS = {
    pa.float64(): float,
    pa.int64(): int,
    pa.bool_(): lambda v: {"true": True, "false": False, "1": True, "0": False}[v.strip().lower()],
}


def cast_column(values: pa.Array, target: pa.DataType) -> tuple[pa.Array, np.ndarray | None]:
    """Casts a column to its target type without letting one bad value spoil the column.

    Args:
        values: the column as read.
        target: the launch-time type.

    Returns:
        The cast column (null where a value did not convert) and a boolean mask of the values
        that did not convert, or None when every value converted.
    """
    if values.type == target:
        return values, None
    if pa.types.is_null(values.type):
        return pa.nulls(len(values), target), None
    try:
        return pc.cast(values, target), None
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    if target == pa.string():
        return pc.cast(values, pa.string(), safe=False), None
    if pa.types.is_string(values.type) and (
        pa.types.is_floating(target) or pa.types.is_integer(target)
    ):
        # Vectorised: find the values that are not numbers, null them, cast the rest.
        bad = _not_numbers(values)
        try:
            cleaned = pc.if_else(pa.array(bad), pa.scalar(None, values.type), values)
            return pc.cast(cleaned, target), bad
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            pass  # a value pandas reads as a number but Arrow does not: go value by value
    parse = _PARSERS.get(target, lambda v: pa.scalar(v).cast(target).as_py())
    out: list[Any] = []
    bad = np.zeros(len(values), dtype=bool)
    for i, v in enumerate(values.to_pylist()):
        if v is None:
            out.append(None)
            continue
        try:
            out.append(parse(v) if isinstance(v, str) else pa.scalar(v).cast(target).as_py())
        except (ValueError, KeyError, TypeError, OverflowError, pa.ArrowInvalid):
            out.append(None)
            bad[i] = True
    return pa.array(out, target), bad


# What Arrow's string-to-number cast accepts, as one RE2 pattern run over the whole column.
_NUMBER = r"^\s*[-+]?(\d+\.?\d*([eE][-+]?\d+)?|\.\d+([eE][-+]?\d+)?|inf|infinity|nan)\s*$"


def _not_numbers(values: pa.Array) -> np.ndarray:
    """Mask of the non-null text values that are not numbers (NaN/inf spelled out are numbers)."""
    numbers = pc.match_substring_regex(values, _NUMBER, ignore_case=True)
    return _mask(pc.invert(numbers))


class ValidateBatches(beam.DoFn):
    """Casts Chunks to the launch-time schema and rejects rows the model cannot take.

    A row is rejected when a feature or key does not convert to its type, or a float
    feature is infinite, or a feature is null/NaN and the model does not accept missing
    values. Outputs clean, typed Chunks, and error records on the `errors` tag.
    """

    def __init__(self, spec: ScoringSpec):
        self._spec = spec

    def process(self, chunk: Chunk) -> Iterator[Any]:
        spec = self._spec
        batch = chunk.batch
        n = batch.num_rows
        bad = np.zeros(n, dtype=bool)
        reasons: dict[int, list[str]] = {}
        arrays = []
        for field in spec.columns:
            name = field.name
            if name in batch.schema.names:
                raw = batch.column(name)
                if isinstance(raw, pa.ChunkedArray):
                    raw = raw.combine_chunks()
            else:
                raw = pa.nulls(n, field.type)
            values, failed = cast_column(raw, field.type)
            if failed is not None:
                self._note(
                    reasons, bad, failed, raw, f"{name}: cannot convert {{!r}} to {field.type}"
                )
            if name in spec.features:
                self._check_feature(name, values, reasons, bad)
            arrays.append(values)
        typed = pa.RecordBatch.from_arrays(arrays, schema=spec.columns)
        if not bad.any():
            yield Chunk(chunk.source, chunk.offset, typed)
            return
        count_failed("validate", int(bad.sum()), chunk.source)
        originals = batch.filter(pa.array(bad))
        for row, index in zip(originals.to_pylist(), np.flatnonzero(bad)):
            yield beam.pvalue.TaggedOutput(
                ERRORS,
                error_record(
                    "validate",
                    "; ".join(reasons[int(index)]),
                    row,
                    chunk.source,
                    spec.run_id,
                    row_index=chunk.offset + int(index),
                ),
            )
        if not bad.all():
            yield Chunk(chunk.source, chunk.offset, typed.filter(pa.array(~bad)))

    def _check_feature(self, name: str, values: pa.Array, reasons: dict, bad: np.ndarray) -> None:
        missing = values.is_null()
        if pa.types.is_floating(values.type):
            # is_nan/is_inf of a null is null, which would hide the null from or_().
            nan = pc.is_nan(values).fill_null(False)
            inf = pc.is_inf(values).fill_null(False)
            if pc.any(inf).as_py():
                self._note(reasons, bad, _mask(inf), values, f"{name}: {{}} is not a finite number")
            if not self._spec.facts.accepts_missing(name):
                missing = pc.or_(missing, nan)
        if not self._spec.facts.accepts_missing(name) and pc.any(missing).as_py():
            self._note(
                reasons,
                bad,
                _mask(missing),
                values,
                f"{name}: missing value ({{}}) and the model does not accept missing values",
            )

    @staticmethod
    def _note(reasons: dict, bad: np.ndarray, mask: np.ndarray, values: pa.Array, fmt: str):
        indices = np.flatnonzero(mask)
        picked = values.take(pa.array(indices)).to_pylist()
        for index, value in zip(indices, picked):
            reasons.setdefault(int(index), []).append(fmt.format(value))
        bad |= mask


def _mask(values: pa.Array) -> np.ndarray:
    return values.fill_null(False).to_numpy(zero_copy_only=False)
