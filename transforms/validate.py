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

from transforms.errors import CountingDoFn, error_record
from transforms.spec import ERRORS, Chunk, ScoringSpec

_PARSERS = {
    pa.float64(): float,
    pa.int64(): int,
    pa.bool_(): lambda v: {"true": True, "false": False, "1": True, "0": False}[v.strip().lower()],
}


def cast_column(values: pa.Array, target: pa.DataType) -> tuple[pa.Array, np.ndarray | None]:
    """Casts a column to its target type without letting one bad value spoil the column.

    Numbers become floats as NumPy makes them (a large integer loses its lowest digits, as it
    does when scikit-learn converts it).

    Args:
        values: the column as read.
        target: the launch-time type.

    Returns:
        The cast column (null where a value did not convert) and a boolean mask of the values
        that did not convert, or None when every value converted.
    """
    if pa.types.is_dictionary(values.type):
        values = values.cast(values.type.value_type)
    if values.type == target:
        return values, None
    if pa.types.is_null(values.type):
        return pa.nulls(len(values), target), None
    if pa.types.is_large_string(values.type) or pa.types.is_string_view(values.type):
        values = values.cast(pa.string())
        if target == pa.string():
            return values, None
    numeric = pa.types.is_integer(values.type) or pa.types.is_decimal(values.type)
    try:
        return pc.cast(values, target, safe=not (numeric and pa.types.is_floating(target))), None
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
            return pc.cast(cleaned, target), (bad if bad.any() else None)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            pass  # a value the pattern takes for a number but Arrow does not: value by value
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
    return pa.array(out, target), (bad if bad.any() else None)


# What Arrow's string-to-number cast accepts, as one RE2 pattern run over the whole column.
_NUMBER = r"^\s*[-+]?(\d+\.?\d*([eE][-+]?\d+)?|\.\d+([eE][-+]?\d+)?|inf|infinity|nan)\s*$"


def _not_numbers(values: pa.Array) -> np.ndarray:
    """Mask of the non-null text values that are not numbers (NaN/inf spelled out are numbers)."""
    numbers = pc.match_substring_regex(values, _NUMBER, ignore_case=True)
    return _mask(pc.invert(numbers))


@beam.typehints.with_output_types(Chunk)
class ValidateBatches(CountingDoFn):
    """Casts Chunks to the launch-time schema and rejects rows the model cannot take.

    A row is rejected when a feature does not convert to its type, is infinite, is a category
    the model does not know (and cannot ignore), or is null/NaN where the model does not accept
    missing values; or when a key does not convert to its type exactly as it is spelled. Outputs
    clean, typed Chunks, and error records (one per row, every reason named) on `errors`.
    """

    def __init__(self, spec: ScoringSpec):
        self._spec = spec
        self._known: dict[str, pa.Array] = {}

    def setup(self) -> None:
        for name, cats in self._spec.facts.categorical.items():
            if not cats.unknown_ok:
                self._known[name] = cats.known()

    def process(self, chunk: Chunk) -> Iterator[Any]:
        spec = self._spec
        batch = chunk.batch
        n = batch.num_rows
        bad = np.zeros(n, dtype=bool)
        reasons: dict[int, list[str]] = {}
        arrays = []
        for field in spec.columns:
            name = field.name
            raw = batch.column(name) if name in batch.schema.names else pa.nulls(n, field.type)
            values, failed = cast_column(raw, field.type)
            if failed is not None:
                self._note(reasons, bad, failed, raw, f"{name}: {{!r}} is not a {_kind(field)}")
            if name in spec.features:
                self._check_feature(name, values, failed, reasons, bad)
            else:
                self._check_spelling(name, raw, values, reasons, bad)
            arrays.append(values)
        typed = pa.RecordBatch.from_arrays(arrays, schema=spec.columns)
        if not bad.any():
            yield chunk._replace(batch=typed)
            return
        self.count_failed("validate", int(bad.sum()), chunk.source)
        indexes = np.flatnonzero(bad)
        originals = batch.take(pa.array(indexes))
        row_indexes, lines = chunk.locate(indexes)
        for row, index, row_index, line in zip(originals.to_pylist(), indexes, row_indexes, lines):
            yield beam.pvalue.TaggedOutput(
                ERRORS,
                error_record(
                    "validate",
                    "; ".join(reasons[int(index)]),
                    row,
                    chunk.source,
                    spec.run_id,
                    line=line,
                    row_index=row_index,
                    _unit=chunk.unit,
                ),
            )
        if not bad.all():
            yield chunk.without(bad, typed.filter(pa.array(~bad)))

    def _check_feature(
        self, name: str, values: pa.Array, failed, reasons: dict, bad: np.ndarray
    ) -> None:
        facts = self._spec.facts
        if (
            pa.types.is_float64(values.type)
            and name not in self._known  # a number can be an unknown category too
            and values.null_count == 0
            and np.isfinite(values.to_numpy(zero_copy_only=False)).all()
        ):
            return  # the common case, decided in one pass: every value a finite number
        missing = values.is_null()
        if failed is not None:  # a value that did not convert is not also "missing"
            missing = pc.and_(missing, pa.array(~failed))
        if pa.types.is_floating(values.type):
            # is_nan/is_inf of a null is null, which would hide the null from or_().
            nan = pc.is_nan(values).fill_null(False)
            inf = pc.is_inf(values).fill_null(False)
            if pc.any(inf).as_py():
                self._note(reasons, bad, _mask(inf), values, f"{name}: {{}} is not a finite number")
            if not facts.accepts_missing(name):
                missing = pc.or_(missing, nan)
        if not facts.accepts_missing(name) and pc.any(missing).as_py():
            self._note(
                reasons,
                bad,
                _mask(missing),
                values,
                f"{name}: missing value ({{}}) and the model does not accept missing values",
            )
        known = self._known.get(name)
        if known is not None:
            unknown = pc.and_(pc.invert(pc.is_in(values, value_set=known)), values.is_valid())
            if pc.any(unknown).as_py():
                shown = ", ".join(repr(v) for v in known.to_pylist()[:10])
                more = ", ..." if len(known) > 10 else ""
                rejected = _mask(unknown)
                self._note(
                    reasons,
                    bad,
                    rejected,
                    values,
                    f"{name}: unknown category {{!r}} (the model knows {shown}{more})",
                )
                self.count_unknown(name, int(rejected.sum()), scored=False)

    def _check_spelling(
        self, name: str, raw: pa.Array, values: pa.Array, reasons: dict, bad: np.ndarray
    ) -> None:
        """A key converted from text must write back exactly as it was spelled; a whole-number
        key read as a float (JSON: another record of its block has 2.5 or 2.0) must be one a
        float holds exactly."""
        if pa.types.is_dictionary(raw.type):
            raw = raw.cast(raw.type.value_type)
        if pa.types.is_floating(raw.type) and pa.types.is_integer(values.type):
            inexact = pc.greater_equal(pc.abs(raw.cast(pa.float64())), 2.0**53).fill_null(False)
            if pc.any(inexact).as_py():
                self._note(
                    reasons,
                    bad,
                    _mask(inexact),
                    raw,
                    f"key {name}: {{!r}} was read as a float (another record near it has a "
                    "decimal point) and is too large to be the exact whole number in the file",
                )
            return
        if not (pa.types.is_string(raw.type) or pa.types.is_large_string(raw.type)):
            return
        if pa.types.is_string(values.type):
            return
        written = pc.cast(values, pa.string())
        # A value that did not convert at all is null here and already rejected.
        altered = pc.invert(pc.equal(written, raw.cast(pa.string()))).fill_null(False)
        if pc.any(altered).as_py():
            self._note(
                reasons,
                bad,
                _mask(altered),
                raw,
                f"key {name}: {{!r}} would not be written as spelled as {values.type}; set "
                f"--column_types {name}:string to keep it as text",
            )

    @staticmethod
    def _note(reasons: dict, bad: np.ndarray, mask: np.ndarray, values: pa.Array, fmt: str):
        indices = np.flatnonzero(mask)
        picked = values.take(pa.array(indices)).to_pylist()
        for index, value in zip(indices, picked):
            reasons.setdefault(int(index), []).append(fmt.format(value))
        bad |= mask


def _kind(field: pa.Field) -> str:
    t = field.type
    if pa.types.is_floating(t) or pa.types.is_integer(t):
        return "number" if pa.types.is_floating(t) else "whole number (int64)"
    return str(t)


def _mask(values: pa.Array) -> np.ndarray:
    return values.fill_null(False).to_numpy(zero_copy_only=False)
