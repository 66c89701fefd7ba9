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
from transforms.spec import ERRORS, KEY_COPY, Chunk, ScoringSpec
from transforms.values import cast
from transforms.values import mask as _mask


def cast_column(values: pa.Array, target: pa.DataType) -> tuple[pa.Array, np.ndarray | None]:
    """A feature column cast to its target type (transforms.values): the cast column, null
    where a value did not convert, and the mask of those values (None when all converted)."""
    done = cast(values, target, key=False, name="")
    return done.values, done.failed


@beam.typehints.with_output_types(Chunk)
class ValidateBatches(CountingDoFn):
    """Casts Chunks to the launch-time schema and rejects rows the model cannot take.

    Every column goes through the one cast (transforms.values: lossless or rejected, value by
    value). A row is rejected when a feature does not convert to its type, is infinite, is a
    category the model does not know (and cannot ignore), or is null/NaN where the model does
    not accept missing values; or when a key cannot be written exactly as the input holds it.
    A key that is also a feature is cast twice: the feature as the model takes it, the key copy
    (spec.key_source) in the key's own type. Outputs clean, typed Chunks, and error records
    (one per row, every reason named, the values as the input held them) on `errors`.
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
        names = batch.schema.names
        for field in spec.batch_schema:
            name = field.name
            source = name if name in names else name.removeprefix(KEY_COPY)
            raw = batch.column(source) if source in names else pa.nulls(n, field.type)
            is_feature = name in spec.features
            done = cast(raw, field.type, key=not is_feature, name=source)
            for failed, reason in done.failures:
                self._note(reasons, bad, failed, raw, reason)
            if is_feature:
                self._check_feature(name, done.values, done.failed, reasons, bad)
            arrays.append(done.values)
        typed = pa.RecordBatch.from_arrays(arrays, schema=spec.batch_schema)
        if not bad.any():
            yield chunk._replace(batch=typed)
            return
        self.count_failed("validate", int(bad.sum()), chunk.source)
        indexes = np.flatnonzero(bad)
        shown = [c for c in batch.schema.names if not c.startswith(KEY_COPY)]
        originals = batch.select(shown).take(pa.array(indexes))
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

    @staticmethod
    def _note(reasons: dict, bad: np.ndarray, mask: np.ndarray, values: pa.Array, fmt: str):
        indices = np.flatnonzero(mask)
        picked = values.take(pa.array(indices)).to_pylist()
        for index, value in zip(indices, picked):
            reasons.setdefault(int(index), []).append(fmt.format(value))
        bad |= mask
