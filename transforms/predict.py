"""Scoring record batches with a model loaded once per worker process."""

from __future__ import annotations

import datetime
import logging
import re
import threading
import time
import warnings
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.transforms.window import GlobalWindows
from apache_beam.utils import shared

from models import loading
from models.errors import one_line
from transforms.emulators import anonymous_if_emulated
from transforms.errors import CountingDoFn, error_record
from transforms.spec import ERRORS, PROFILE, Chunk, ScoringSpec

_LOG = logging.getLogger(__name__)
PROGRESS_EVERY_S = 5.0
# A failing range of at most this many rows whose sibling range failed too is tried row by row.
ROW_BY_ROW = 16
# Models the launcher loaded, by SHA-256: a worker in the launcher's own process (DirectRunner)
# takes it instead of loading the same model a second time.
_IN_PROCESS: dict[str, Any] = {}


def share_with_workers(sha256: str, model: Any) -> None:
    """Offers the launcher's model to workers running in this same process."""
    _IN_PROCESS[sha256] = model


class _LoadedModel:
    """A model held by a worker process (a class, so Shared can keep a weak reference to it)."""

    def __init__(self, model: Any, load_seconds: float):
        self.model = model
        self.load_seconds = load_seconds
        self.counted = False
        self.lock = threading.Lock()


class _Progress:
    """Process-wide progress lines: rows scored so far and the rate."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.rows = 0
        self.start: float | None = None  # the first batch scored, not the import
        self.last = 0.0

    def add(self, rows: int) -> None:
        with self.lock:
            now = time.monotonic()
            if self.start is None:
                self.start = self.last = now
            self.rows += rows
            if now - self.last >= PROGRESS_EVERY_S:
                self.last = now
                rate = self.rows / max(now - self.start, 1e-9)
                _LOG.info("progress: %s rows scored (%s rows/s)", f"{self.rows:,}", f"{rate:,.0f}")


_PROGRESS = _Progress()


class _Failed(Exception):
    """A range of rows the model raised on, with its one-line message."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


@beam.typehints.with_output_types(pa.Table)
class PredictBatches(CountingDoFn):
    """Predicts each Chunk in one call; adds proba_<class> columns, keys and lineage.

    When the model raises on a batch, the batch is split in halves until the rows that fail on
    their own are found. A row is rejected only when the model raised on that row alone: it goes
    to the errors output with the model's message for that row, and every other row is scored.
    Where failures are dense (a range of at most ROW_BY_ROW rows that failed, next to a sibling
    range that failed too), the range's rows are tried one by one, once each, instead of halving
    further. A batch of n rows costs at most 2n - 1 model calls (1.09n to 1.24n for a batch of
    more than 16 rows when every row, or every other row, fails), and about 2 log2(n) calls per
    failing row when failures are rare. A prediction that is not a finite number (NaN, inf) is
    rejected too. Outputs Arrow tables in the predictions schema, and error records on the
    `errors` tag.
    """

    def __init__(
        self, spec: ScoringSpec, model_handle: shared.Shared, profiler: beam.CombineFn | None = None
    ):
        """
        Args:
            spec: the launch decisions.
            model_handle: the process-wide holder of the model.
            profiler: when profiling, the CombineFn whose accumulator each bundle fills with its
                batches (the batches never leave the DoFn); one accumulator per bundle goes out
                on the `profile` tag.
        """
        self._spec = spec
        self._handle = model_handle
        self._profiler = profiler
        self._profile: Any = None
        self._loaded: _LoadedModel | None = None
        self._schema = spec.output_schema
        self._lineage: list[pa.Array] = []  # model_uri, model_version, run_id columns
        self._classes = pa.array(spec.facts.classes) if spec.facts.classes else None
        self._scored_unknown: dict[str, pa.Array] = {}  # feature -> its known categories
        self._explainer: Any = None
        self._feature_names = pa.array(list(spec.features), pa.string())

    def setup(self) -> None:
        for name, cats in self._spec.facts.categorical.items():
            if cats.unknown_ok and name in self._spec.features:
                self._scored_unknown[name] = cats.known()
        anonymous_if_emulated()
        ref = self._spec.model

        def load() -> _LoadedModel:
            if ref.sha256 in _IN_PROCESS:
                return _LoadedModel(_IN_PROCESS[ref.sha256], 0.0)
            start = time.monotonic()
            model, _ = loading.load(ref)
            return _LoadedModel(model, time.monotonic() - start)

        self._loaded = self._handle.acquire(load, tag=ref.sha256)
        if self._spec.explain is not None:
            from models.explain import Explainer

            self._explainer = Explainer(
                self._loaded.model, self._spec.explain, len(self._spec.features)
            )
        # The launcher checked that a float matrix scores exactly like a DataFrame; scikit-learn
        # still warns on every call that the matrix has no column names.
        warnings.filterwarnings("ignore", message="X does not have valid feature names")

    def start_bundle(self) -> None:
        super().start_bundle()
        self._profile = None

    def finish_bundle(self) -> Iterator[Any]:
        yield from super().finish_bundle()
        if self._profile is not None:
            profile, self._profile = self._profile, None
            yield beam.pvalue.TaggedOutput(
                PROFILE, GlobalWindows.windowed_value(("profile", profile))
            )

    def process(self, chunk: Chunk) -> Iterator[Any]:
        loaded = self._loaded
        # Metrics count only inside a bundle, so the load is counted at first use, once per load.
        with loaded.lock:
            if not loaded.counted:
                loaded.counted = True
                self.count("model_loads", 1)
                self.count("model_load_ms", int(loaded.load_seconds * 1000))
        spec = self._spec
        batch = chunk.batch
        n = batch.num_rows
        outputs: list[tuple[int, np.ndarray, np.ndarray | None, Any]] = []
        failures: list[tuple[int, int, str]] = []  # (start, stop, message)
        self._solve(loaded.model, batch, 0, n, None, outputs, failures)
        ok = np.zeros(n, dtype=bool)
        pred = proba = reasons = None
        if outputs:
            outputs.sort(key=lambda o: o[0])
            starts = np.concatenate([np.arange(s, s + len(p)) for s, p, _, _ in outputs])
            pred = np.concatenate([p for _, p, _, _ in outputs])
            proba = np.concatenate([q for _, _, q, _ in outputs]) if spec.facts.classes else None
            if spec.explain is not None:
                reasons = tuple(np.concatenate([r[i] for *_, r in outputs]) for i in (0, 1))
            finite = _finite(pred, proba)
            ok[starts[finite]] = True
            for position in np.flatnonzero(~finite):
                index = int(starts[position])
                failures.append((index, index + 1, _not_finite(pred, proba, position)))
            if not finite.all():
                pred, proba = pred[finite], (proba[finite] if proba is not None else None)
                if reasons is not None:
                    reasons = (reasons[0][finite], reasons[1][finite])
        if failures:
            yield from self._rejected(chunk, failures)
        if not ok.any():
            return
        kept = batch if ok.all() else batch.filter(pa.array(ok))
        self.count("rows_predicted", kept.num_rows, chunk.source)
        self._count_unknown(kept)
        _PROGRESS.add(kept.num_rows)
        table = self._to_table(kept, pred, proba, reasons)
        if self._profiler is not None:
            if self._profile is None:
                self._profile = self._profiler.create_accumulator()
            self._profile = self._profiler.add_input(self._profile, (kept, table))
        yield table

    def _count_unknown(self, kept: pa.RecordBatch) -> None:
        """Counts, per categorical feature whose unknown categories the model takes, the rows
        scored with one (those of the other categorical features are rejected at validate)."""
        for name, known in self._scored_unknown.items():
            values = kept.column(name)
            unknown = pc.and_(pc.invert(pc.is_in(values, value_set=known)), values.is_valid())
            self.count_unknown(name, pc.sum(unknown.cast(pa.int64())).as_py() or 0, scored=True)

    def _rejected(self, chunk: Chunk, failures: list[tuple[int, int, str]]) -> Iterator[Any]:
        indexes = np.concatenate([np.arange(a, b) for a, b, _ in failures])
        messages = [m for a, b, m in failures for _ in range(b - a)]
        self.count_failed("predict", len(indexes), chunk.source)
        rows = chunk.batch.take(pa.array(indexes)).to_pylist()
        row_indexes, lines = chunk.locate(indexes)
        for row, message, row_index, line in zip(rows, messages, row_indexes, lines):
            yield beam.pvalue.TaggedOutput(
                ERRORS,
                error_record(
                    "predict",
                    message,
                    row,
                    chunk.source,
                    self._spec.run_id,
                    line=line,
                    row_index=row_index,
                    _unit=chunk.unit,
                ),
            )

    def _try(self, model, batch: pa.RecordBatch, start: int, stop: int, features: Any = None):
        """The prediction of rows [start, stop), or the _Failed the model raised.

        `features`: these rows' features when already built (None: built from the batch).
        """
        try:
            if features is None:
                features = self._features(batch.slice(start, stop - start))
            return self._predict(model, features, stop - start)
        except Exception as e:  # noqa: BLE001 - whatever the model raises is a row error
            return _Failed(self._message(e))

    def _solve(self, model, batch, start, stop, result, outputs, failures, dense=False) -> None:
        """Predicts rows [start, stop), rejecting only the rows the model fails on alone.

        `result` is the range's prediction when already tried (None: not yet); `dense` says that
        the sibling range failed too.
        """
        if result is None:
            result = self._try(model, batch, start, stop)
        if not isinstance(result, _Failed):
            outputs.append((start, *result))
            return
        if stop - start == 1:
            failures.append((start, stop, result.message))
            return
        if dense and stop - start <= ROW_BY_ROW:
            # Halving a range full of failures costs up to two calls per row; one per row is less.
            self._row_by_row(model, batch, start, stop, outputs, failures)
            return
        middle = (start + stop) // 2
        left = self._try(model, batch, start, middle)
        right = self._try(model, batch, middle, stop)
        both = isinstance(left, _Failed) and isinstance(right, _Failed)
        self._solve(model, batch, start, middle, left, outputs, failures, both)
        self._solve(model, batch, middle, stop, right, outputs, failures, both)

    def _row_by_row(self, model, batch, start, stop, outputs, failures) -> None:
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
            result = self._try(model, batch, i, i + 1, row)
            if isinstance(result, _Failed):
                failures.append((i, i + 1, result.message))
            else:
                outputs.append((i, *result))

    def _features(self, part: pa.RecordBatch) -> Any:
        """The model's input for these rows: a float matrix when the launcher found the model
        scores one alike, else a DataFrame."""
        if self._spec.facts.numpy_ok:
            # Stacking columns as rows then transposing copies contiguously (column_stack
            # writes strided and costs several times more); models take the Fortran order.
            return np.vstack(
                [part.column(f).to_numpy(zero_copy_only=False) for f in self._spec.features]
            ).T
        return part.select(list(self._spec.features)).to_pandas()

    def _predict(self, model, features: Any, n: int) -> tuple[np.ndarray, np.ndarray | None, Any]:
        """The predictions (and probabilities, and with --explain the top-K reasons) of n rows'
        features."""
        facts = self._spec.facts
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

    def _to_table(self, kept: pa.RecordBatch, pred: np.ndarray, proba, reasons=None) -> pa.Table:
        spec = self._spec
        schema = self._schema
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
        if not self._lineage or len(self._lineage[0]) < n:
            # Sized to the largest batch seen, not to --batch_size: memory follows the data.
            values = (spec.model.uri, spec.model.version, spec.run_id)
            self._lineage = [pa.repeat(pa.scalar(v, pa.string()), n) for v in values]
            run_date = datetime.date.fromisoformat(spec.run_date) if spec.run_date else None
            self._lineage.append(pa.repeat(pa.scalar(run_date, pa.date32()), n))
        lineage = [column.slice(0, n) for column in self._lineage]
        arrays.extend(lineage[:3])
        scored_at = pa.scalar(datetime.datetime.now(datetime.UTC), schema.field("scored_at").type)
        arrays.append(pa.repeat(scored_at, n))
        arrays.append(lineage[3])
        return pa.Table.from_arrays(arrays, schema=schema)


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
