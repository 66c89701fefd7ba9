"""Validating record batches against the decided schema, with vectorised checks.

Clean batches pass through a handful of Arrow compute calls; only a column whose cast fails is
looked at value by value, and only in the batch where it fails.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from scoring.spec import KEY_COPY, RowSpec
from scoring.values import cast, mask


class Checked(NamedTuple):
    """A batch cast to the decided schema, and the rows rejected.

    Attributes:
        typed: every row in the batch schema (a value that did not convert is null).
        bad: the mask of rejected rows, or None when every row passed.
        reasons: per rejected row (its index in the batch), every reason, joined by "; ".
        unknown: per categorical feature, the rows rejected for an unknown category there.
    """

    typed: pa.RecordBatch
    bad: np.ndarray | None
    reasons: dict[int, str]
    unknown: dict[str, int]

    @property
    def good(self) -> pa.RecordBatch:
        """The rows that passed, typed."""
        return self.typed if self.bad is None else self.typed.filter(pa.array(~self.bad))


class Validator:
    """Casts batches to the decided schema and rejects the rows the model cannot take.

    Every column goes through the one cast (scoring.values: lossless or rejected, value by
    value). A row is rejected when a feature does not convert to its type, is infinite, is a
    category the model does not know (and cannot ignore), or is null/NaN where the model does
    not accept missing values; or when a key cannot be written exactly as the input holds it.
    A key that is also a feature is cast twice: the feature as the model takes it, the key copy
    (spec.key_source) in the key's own type. A column the batch lacks is all null.
    """

    def __init__(self, spec: RowSpec):
        self._spec = spec
        self._known = {
            name: cats.known()
            for name, cats in spec.facts.categorical.items()
            if not cats.unknown_ok
        }
        self._schema = spec.batch_schema

    def check(self, batch: pa.RecordBatch) -> Checked:
        """The batch cast to the batch schema, with the rows to reject and why."""
        spec = self._spec
        n = batch.num_rows
        bad = np.zeros(n, dtype=bool)
        reasons: dict[int, list[str]] = {}
        unknown: dict[str, int] = {}
        arrays = []
        names = batch.schema.names
        for field in self._schema:
            name = field.name
            source = name if name in names else name.removeprefix(KEY_COPY)
            raw = batch.column(source) if source in names else pa.nulls(n, field.type)
            is_feature = name in spec.features
            done = cast(raw, field.type, key=not is_feature, name=source)
            for failed, reason in done.failures:
                _note(reasons, bad, failed, raw, reason)
            if is_feature:
                self._check_feature(name, done.values, done.failed, reasons, bad, unknown)
            arrays.append(done.values)
        typed = pa.RecordBatch.from_arrays(arrays, schema=self._schema)
        if not bad.any():
            return Checked(typed, None, {}, unknown)
        joined = {i: "; ".join(r) for i, r in reasons.items()}
        return Checked(typed, bad, joined, unknown)

    def _check_feature(
        self, name: str, values: pa.Array, failed, reasons: dict, bad: np.ndarray, unknown: dict
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
                _note(reasons, bad, mask(inf), values, f"{name}: {{}} is not a finite number")
            if not facts.accepts_missing(name):
                missing = pc.or_(missing, nan)
        if not facts.accepts_missing(name) and pc.any(missing).as_py():
            _note(
                reasons,
                bad,
                mask(missing),
                values,
                f"{name}: missing value ({{}}) and the model does not accept missing values",
            )
        known = self._known.get(name)
        if known is not None:
            is_unknown = pc.and_(pc.invert(pc.is_in(values, value_set=known)), values.is_valid())
            if pc.any(is_unknown).as_py():
                shown = ", ".join(repr(v) for v in known.to_pylist()[:10])
                more = ", ..." if len(known) > 10 else ""
                rejected = mask(is_unknown)
                _note(
                    reasons,
                    bad,
                    rejected,
                    values,
                    f"{name}: unknown category {{!r}} (the model knows {shown}{more})",
                )
                unknown[name] = int(rejected.sum())


def _note(reasons: dict, bad: np.ndarray, where: np.ndarray, values: pa.Array, fmt: str) -> None:
    """Adds a reason to each row where `where` holds, with the row's value in it."""
    indices = np.flatnonzero(where)
    picked = values.take(pa.array(indices)).to_pylist()
    for index, value in zip(indices, picked):
        reasons.setdefault(int(index), []).append(fmt.format(value))
    bad |= where
