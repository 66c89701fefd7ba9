"""Scoring record batches with a model loaded once per worker process."""

from __future__ import annotations

import datetime
import logging
import threading
import time
import warnings
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.transforms.window import GlobalWindows
from apache_beam.utils import shared

from models import loading
from transforms.emulators import anonymous_if_emulated
from transforms.errors import count, count_failed, error_record
from transforms.spec import ERRORS, PROFILE, Chunk, ScoringSpec

_LOG = logging.getLogger(__name__)
PROGRESS_EVERY_S = 5.0


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


class PredictBatches(beam.DoFn):
    """Predicts each Chunk in one call; adds proba_<class> columns, keys and lineage.

    When the model raises on a batch, the batch is split in halves until the rows that fail on
    their own are found: they go to the errors output with the model's message, the rest is scored.
    Outputs Arrow tables in the predictions schema, and error records on the `errors` tag.
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
        self._lineage: list[pa.Array] | None = None  # model_uri, model_version, run_id columns
        self._classes = np.asarray(spec.facts.classes) if spec.facts.classes else None

    def setup(self) -> None:
        anonymous_if_emulated()
        ref = self._spec.model

        def load() -> _LoadedModel:
            start = time.monotonic()
            model = loading.load(ref)
            return _LoadedModel(model, time.monotonic() - start)

        self._loaded = self._handle.acquire(load, tag=ref.sha256)
        # The launcher checked that a float matrix scores exactly like a DataFrame; scikit-learn
        # still warns on every call that the matrix has no column names.
        warnings.filterwarnings("ignore", message="X does not have valid feature names")

    def start_bundle(self) -> None:
        self._profile = None

    def finish_bundle(self) -> Iterator[Any]:
        if self._profile is not None:
            profile, self._profile = self._profile, None
            yield beam.pvalue.TaggedOutput(PROFILE, GlobalWindows.windowed_value(profile))

    def process(self, chunk: Chunk) -> Iterator[Any]:
        loaded = self._loaded
        # Metrics count only inside a bundle, so the load is counted at first use, once per load.
        with loaded.lock:
            if not loaded.counted:
                loaded.counted = True
                count("model_loads", 1)
                count("model_load_ms", int(loaded.load_seconds * 1000))
        spec = self._spec
        batch = chunk.batch
        ok = np.ones(batch.num_rows, dtype=bool)
        outputs: list[tuple[np.ndarray, np.ndarray, np.ndarray | None]] = []
        failures: list[tuple[int, str]] = []
        self._predict_range(loaded.model, batch, 0, batch.num_rows, outputs, failures)
        if failures:
            count_failed("predict", len(failures), chunk.source)
            rows = batch.take(pa.array([i for i, _ in failures])).to_pylist()
            for (index, message), row in zip(failures, rows):
                ok[index] = False
                yield beam.pvalue.TaggedOutput(
                    ERRORS,
                    error_record(
                        "predict",
                        message,
                        row,
                        chunk.source,
                        spec.run_id,
                        row_index=chunk.offset + index,
                    ),
                )
        if not outputs:
            return
        outputs.sort(key=lambda o: o[0][0])
        kept = batch.filter(pa.array(ok)) if failures else batch
        pred = np.concatenate([o[1] for o in outputs])
        proba = np.concatenate([o[2] for o in outputs]) if spec.facts.classes else None
        count("rows_predicted", kept.num_rows, chunk.source)
        _PROGRESS.add(kept.num_rows)
        table = self._to_table(kept, pred, proba)
        if self._profiler is not None:
            if self._profile is None:
                self._profile = self._profiler.create_accumulator()
            self._profile = self._profiler.add_input(self._profile, (kept, table))
        yield table

    def _predict_range(self, model, batch, start, stop, outputs, failures) -> None:
        """Predicts rows [start, stop), bisecting around rows the model rejects."""
        part = batch.slice(start, stop - start)
        try:
            pred, proba = self._predict(model, part)
        except Exception as e:  # noqa: BLE001 - whatever the model raises is a row error
            if stop - start == 1:
                failures.append((start, _message(e)))
                return
            middle = (start + stop) // 2
            self._predict_range(model, batch, start, middle, outputs, failures)
            self._predict_range(model, batch, middle, stop, outputs, failures)
            return
        outputs.append((np.arange(start, stop), pred, proba))

    def _predict(self, model, part: pa.RecordBatch) -> tuple[np.ndarray, np.ndarray | None]:
        facts = self._spec.facts
        if facts.numpy_ok:
            # Stacking columns as rows then transposing copies contiguously (column_stack
            # writes strided and costs several times more); models take the Fortran order.
            features = np.vstack(
                [part.column(f).to_numpy(zero_copy_only=False) for f in self._spec.features]
            ).T
        else:
            features = part.select(list(self._spec.features)).to_pandas()
        if not facts.classes:
            pred = np.asarray(model.predict(features))
            _check_length(pred, part.num_rows)
            return pred, None
        proba = np.asarray(model.predict_proba(features), dtype=np.float64)
        _check_length(proba, part.num_rows)
        if facts.proba_argmax:
            pred = self._classes[np.argmax(proba, axis=1)]
        else:
            pred = np.asarray(model.predict(features))
        return pred, proba

    def _to_table(self, kept: pa.RecordBatch, pred: np.ndarray, proba) -> pa.Table:
        spec = self._spec
        schema = self._schema
        n = kept.num_rows
        arrays = [kept.column(k) for k in spec.keys]
        arrays.append(pa.array(_as_list(pred), type=spec.facts.prediction_type))
        if proba is not None:
            arrays.extend(pa.array(column) for column in np.ascontiguousarray(proba.T))
        if self._lineage is None or len(self._lineage[0]) < n:
            values = (spec.model.uri, spec.model.version, spec.run_id)
            self._lineage = [
                pa.repeat(pa.scalar(v, pa.string()), max(n, spec.batch_size)) for v in values
            ]
        arrays.extend(column.slice(0, n) for column in self._lineage)
        scored_at = pa.scalar(datetime.datetime.now(datetime.UTC), schema.field("scored_at").type)
        arrays.append(pa.repeat(scored_at, n))
        return pa.Table.from_arrays(arrays, schema=schema)


def _as_list(pred: np.ndarray):
    return pred.tolist() if pred.dtype == object else pred


def _check_length(values: np.ndarray, n: int) -> None:
    if len(values) != n:
        raise ValueError(f"the model returned {len(values)} predictions for {n} rows")


def _message(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text[:2000]}" if text else type(e).__name__
