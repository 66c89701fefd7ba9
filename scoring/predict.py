"""Scoring validated record batches with a loaded model: the exact failure search, reasons, and
the output columns.

When the model raises on a batch, the batch is split in halves until the rows that fail on their
own are found. A row is rejected only when the model raised on that row alone, with the model's
message for that row; every other row is scored. Where failures are dense (a range of at most
ROW_BY_ROW rows that failed, next to a sibling range that failed too), the range's rows are tried
one by one, once each, instead of halving further. A batch of n rows costs at most 2n - 1 model
calls (1.09n to 1.24n for a batch of more than 16 rows when every row, or every other row,
fails), and about 2 log2(n) calls per failing row when failures are rare. A prediction that is
not a finite number (NaN, inf) is rejected too.
"""

from __future__ import annotations

import datetime
import re
import warnings
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from models.errors import one_line
from scoring.spec import Lineage, RowSpec

# A failing range of at most this many rows whose sibling range failed too is tried row by row.
ROW_BY_ROW = 16


class Scored(NamedTuple):
    """What a batch's rows scored.

    Attributes:
        table: the output rows of the rows scored (output schema, in batch order), or None
            when no row was.
        ok: the mask of rows scored.
        failures: (row index, the model's message) of each row rejected at predict.
        kept: the scored rows' input (the batch where every row was scored), or None.
        unknown: per categorical feature whose unknown categories the model takes, the rows
            scored with one.
    """

    table: pa.Table | None
    ok: np.ndarray
    failures: list[tuple[int, str]]
    kept: pa.RecordBatch | None
    unknown: dict[str, int]


class _Failed(Exception):
    """A range of rows the model raised on, with its one-line message."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class Predictor:
    """Predicts validated batches (the batch schema of a RowSpec) with a loaded model."""

    def __init__(self, spec: RowSpec, model: Any):
        """
        Args:
            spec: how rows are scored.
            model: the loaded model.
        """
        self._spec = spec
        self._model = model
        self._schema = spec.output_schema
        self._classes = pa.array(spec.facts.classes) if spec.facts.classes else None
        self._feature_names = pa.array(list(spec.features), pa.string())
        self._lineage: tuple[Lineage | None, list[pa.Array]] = (None, [])
        self._scored_unknown = {
            name: cats.known()
            for name, cats in spec.facts.categorical.items()
            if cats.unknown_ok and name in spec.features
        }
        self._columns = None  # the columns Index of the DataFrames given to the model
        self._explainer = None
        if spec.explain is not None:
            from models.explain import Explainer

            self._explainer = Explainer(model, spec.explain, len(spec.features))
        # The launch checked that a float matrix scores exactly like a DataFrame; scikit-learn
        # still warns on every call that the matrix has no column names.
        warnings.filterwarnings("ignore", message="X does not have valid feature names")

    def score(
        self, batch: pa.RecordBatch, lineage: Lineage, scored_at: datetime.datetime | None = None
    ) -> Scored:
        """Predicts a validated batch: every row the model scores alone is scored.

        Args:
            batch: rows in the spec's batch schema.
            lineage: the lineage values written on every row.
            scored_at: the batch's time (now, UTC, when None).
        """
        n = batch.num_rows
        outputs: list[tuple[int, np.ndarray, np.ndarray | None, Any]] = []
        ranges: list[tuple[int, int, str]] = []  # (start, stop, message)
        self._solve(batch, 0, n, None, outputs, ranges)
        failures = [(i, m) for a, b, m in ranges for i in range(a, b)]
        ok = np.zeros(n, dtype=bool)
        pred = proba = reasons = None
        if outputs:
            outputs.sort(key=lambda o: o[0])
            starts = np.concatenate([np.arange(s, s + len(p)) for s, p, _, _ in outputs])
            pred = np.concatenate([p for _, p, _, _ in outputs])
            classes = self._spec.facts.classes
            proba = np.concatenate([q for _, _, q, _ in outputs]) if classes else None
            if self._explainer is not None:
                reasons = tuple(np.concatenate([r[i] for *_, r in outputs]) for i in (0, 1))
            finite = _finite(pred, proba)
            ok[starts[finite]] = True
            for position in np.flatnonzero(~finite):
                failures.append((int(starts[position]), _not_finite(pred, proba, position)))
            if not finite.all():
                pred, proba = pred[finite], (proba[finite] if proba is not None else None)
                if reasons is not None:
                    reasons = (reasons[0][finite], reasons[1][finite])
        if not ok.any():
            return Scored(None, ok, failures, None, {})
        kept = batch if ok.all() else batch.filter(pa.array(ok))
        table = self._to_table(kept, pred, proba, reasons, lineage, scored_at)
        return Scored(table, ok, failures, kept, self._count_unknown(kept))

    def _count_unknown(self, kept: pa.RecordBatch) -> dict[str, int]:
        """Per categorical feature whose unknown categories the model takes, the rows scored
        with one (those of the other categorical features are rejected at validate)."""
        counts = {}
        for name, known in self._scored_unknown.items():
            values = kept.column(name)
            unknown = pc.and_(pc.invert(pc.is_in(values, value_set=known)), values.is_valid())
            counts[name] = pc.sum(unknown.cast(pa.int64())).as_py() or 0
        return counts

    def _try(self, batch: pa.RecordBatch, start: int, stop: int, features: Any = None):
        """The prediction of rows [start, stop), or the _Failed the model raised.

        `features`: these rows' features when already built (None: built from the batch).
        """
        try:
            if features is None:
                features = self._features(batch.slice(start, stop - start))
            return self._predict(features, stop - start)
        except Exception as e:  # noqa: BLE001 - whatever the model raises is a row error
            return _Failed(self._message(e))

    def _solve(self, batch, start, stop, result, outputs, failures, dense=False) -> None:
        """Predicts rows [start, stop), rejecting only the rows the model fails on alone.

        `result` is the range's prediction when already tried (None: not yet); `dense` says that
        the sibling range failed too.
        """
        if stop == start:
            return
        if result is None:
            result = self._try(batch, start, stop)
        if not isinstance(result, _Failed):
            outputs.append((start, *result))
            return
        if stop - start == 1:
            failures.append((start, stop, result.message))
            return
        if dense and stop - start <= ROW_BY_ROW:
            # Halving a range full of failures costs up to two calls per row; one per row is less.
            self._row_by_row(batch, start, stop, outputs, failures)
            return
        middle = (start + stop) // 2
        left = self._try(batch, start, middle)
        right = self._try(batch, middle, stop)
        both = isinstance(left, _Failed) and isinstance(right, _Failed)
        self._solve(batch, start, middle, left, outputs, failures, both)
        self._solve(batch, middle, stop, right, outputs, failures, both)

    def _row_by_row(self, batch, start, stop, outputs, failures) -> None:
        """Tries each row of [start, stop) alone, once.

        The range's features are built once and each call takes one row of them (building a
        one-row DataFrame costs about as much as a light model's call), where that row is what
        the row alone would give: the same values, dtypes, shape and layout.
        """
        part = batch.slice(start, stop - start)
        features = None
        if self._spec.facts.numpy_ok or _typed_alike_alone(part, self._spec.features):
            try:
                features = self._features(part)
            except Exception:  # noqa: BLE001 - then each row builds its own, and fails alone
                features = None
        for i in range(start, stop):
            row = None if features is None else _row(features, i - start)
            result = self._try(batch, i, i + 1, row)
            if isinstance(result, _Failed):
                failures.append((i, i + 1, result.message))
            else:
                outputs.append((i, *result))

    def _features(self, part: pa.RecordBatch) -> Any:
        """The model's input for these rows: a float matrix when the launch found the model
        scores one alike, else a DataFrame."""
        if self._spec.facts.numpy_ok:
            # Stacking columns as rows then transposing copies contiguously (column_stack
            # writes strided and costs several times more); models take the Fortran order.
            return np.vstack(
                [part.column(f).to_numpy(zero_copy_only=False) for f in self._spec.features]
            ).T
        frame = part.select(list(self._spec.features)).to_pandas()
        # One columns Index for every batch: pandas builds an Index's hash table on its first
        # lookup, and the model looks its columns up by name on every call.
        if self._columns is None:
            self._columns = frame.columns
        else:
            frame.columns = self._columns
        return frame

    def _predict(self, features: Any, n: int) -> tuple[np.ndarray, np.ndarray | None, Any]:
        """The predictions (and probabilities, and with --explain the top-K reasons) of n rows'
        features."""
        facts = self._spec.facts
        model = self._model
        if not facts.classes:
            pred = np.asarray(model.predict(features))
            if pred.ndim == 2 and pred.shape[1] == 1:
                pred = pred[:, 0]
            _check_length(pred, n)
            return pred, None, self._reasons(features, n)
        proba = np.asarray(model.predict_proba(features), dtype=np.float64)
        _check_length(proba, n)
        if facts.proba_argmax:
            pred = np.argmax(proba, axis=1)  # an index into the classes, taken when written
        else:
            pred = np.asarray(model.predict(features))
        return pred, proba, self._reasons(features, n)

    def _reasons(self, features: Any, n: int) -> tuple[np.ndarray, np.ndarray] | None:
        """--explain: the K features with the largest absolute contributions of each row (their
        indexes, -1 for none, and contributions), reduced from all contributions at once."""
        if self._explainer is None:
            return None
        from models.explain import top_k

        contrib, _ = self._explainer(features)
        _check_length(contrib, n)
        if not np.isfinite(contrib).all():
            raise ValueError("the model's contributions for this row are not finite numbers")
        return top_k(contrib, self._spec.explain.k)

    def _message(self, e: BaseException) -> str:
        """The model's message, with the feature a scikit-learn column index stands for."""
        text = one_line(e, limit=2000, with_type=True)
        m = re.search(r"in column (\d+)", text)
        if m and self._spec.facts.encoders:
            index = int(m[1])
            names = [cols[index] for cols in self._spec.facts.encoders if index < len(cols)]
            if len(set(names)) == 1:
                text += f" (column {index} is feature {names[0]})"
            elif names:
                text += f" (column {index} is one of the features {', '.join(sorted(set(names)))})"
        return text

    def _lineage_columns(self, lineage: Lineage, n: int) -> list[pa.Array]:
        """model_uri, model_version, run_id and run_date columns of n rows."""
        held, columns = self._lineage
        if held != lineage or not columns or len(columns[0]) < n:
            # Sized to the largest batch seen, not to --batch_size: memory follows the data.
            values = (lineage.model_uri, lineage.model_version, lineage.run_id)
            columns = [pa.repeat(pa.scalar(v, pa.string()), n) for v in values]
            columns.append(pa.repeat(pa.scalar(lineage.date, pa.date32()), n))
            self._lineage = (lineage, columns)
        return [column.slice(0, n) for column in columns]

    def _to_table(self, kept, pred, proba, reasons, lineage, scored_at) -> pa.Table:
        spec = self._spec
        n = kept.num_rows
        arrays = [kept.column(spec.key_source(k)) for k in spec.keys]
        if spec.facts.classes and spec.facts.proba_argmax:
            arrays.append(self._classes.take(pa.array(pred)))
        else:
            arrays.append(pa.array(_as_list(pred), type=spec.facts.prediction_type))
        if proba is not None:
            arrays.extend(pa.array(column) for column in np.ascontiguousarray(proba.T))
        if reasons is not None:
            index, values = reasons
            for i in range(index.shape[1]):
                column = index[:, i]
                arrays.append(self._feature_names.take(pa.array(column, mask=column < 0)))
            for i in range(values.shape[1]):
                arrays.append(pa.array(values[:, i], pa.float64(), from_pandas=True))
        lineage_columns = self._lineage_columns(lineage, n)
        arrays.extend(lineage_columns[:3])
        at = scored_at or datetime.datetime.now(datetime.UTC)
        arrays.append(pa.repeat(pa.scalar(at, self._schema.field("scored_at").type), n))
        arrays.append(lineage_columns[3])
        return pa.Table.from_arrays(arrays, schema=self._schema)


def _typed_alike_alone(part: pa.RecordBatch, features) -> bool:
    """Whether each row of these rows' DataFrame has the dtypes it would have alone: pyarrow
    gives a column of integers or booleans that holds a null float64 or object dtype, and the
    same column of a row without the null int64 or bool."""
    for f in features:
        column = part.column(f)
        if (pa.types.is_integer(column.type) or pa.types.is_boolean(column.type)) and (
            column.null_count
        ):
            return False
    return True


def _row(features: Any, i: int) -> Any:
    """Row i of a float matrix or a DataFrame, as a one-row batch of its own would have it."""
    if isinstance(features, np.ndarray):
        return np.ascontiguousarray(features[i : i + 1])  # C- and Fortran-contiguous
    return features.iloc[i : i + 1].reset_index(drop=True)


def _finite(pred: np.ndarray, proba: np.ndarray | None) -> np.ndarray:
    """Which rows' scores are finite numbers (a label is; a NaN or inf score is not)."""
    if proba is not None:
        return np.isfinite(proba).all(axis=1)
    if pred.dtype.kind in "fc":
        return np.isfinite(pred)
    return np.ones(len(pred), dtype=bool)


def _not_finite(pred: np.ndarray, proba, position: int) -> str:
    if proba is not None:
        return (
            f"the model returned probabilities {proba[position].tolist()} for this row (not "
            "all finite numbers)"
        )
    return f"the model returned {pred[position]} for this row (not a finite number)"


def _as_list(pred: np.ndarray):
    return pred.tolist() if pred.dtype == object else pred


def _check_length(values: np.ndarray, n: int) -> None:
    if len(values) != n:
        raise ValueError(f"the model returned {len(values)} predictions for {n} rows")
