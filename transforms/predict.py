"""The predict step: record batches scored with a model loaded once per worker process."""

from __future__ import annotations

import gc
import logging
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.transforms.window import GlobalWindows
from apache_beam.utils import shared

from models import loading
from scoring.predict import Predictor
from transforms.emulators import anonymous_if_emulated
from transforms.errors import CountingDoFn, error_record
from transforms.spec import ERRORS, PROFILE, Chunk, ScoringSpec

_LOG = logging.getLogger(__name__)
PROGRESS_EVERY_S = 5.0
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


_BLAS_THREADS = ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS")


def one_blas_thread() -> None:
    """One BLAS thread per worker, unless the environment sets their number.

    A worker already runs its parse (a read-ahead thread, Arrow's pool) beside the model; the
    BLAS library's own threads spin between calls and take the cores the parser needs. On 2
    cores, 4M CSV rows took 11.3-12.5 CPU-seconds with one BLAS thread against 12.3-15.3 with
    OpenBLAS's default of one per core (alternated runs; wall time within noise), and 4M
    Parquet rows 3.3-4.5 against 5.4-6.5. The models' OpenMP threads (gradient-boosted trees,
    XGBoost, LightGBM) are not BLAS and keep theirs.
    """
    if any(name in os.environ for name in _BLAS_THREADS):
        return
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")


@beam.typehints.with_output_types(pa.Table)
class PredictBatches(CountingDoFn):
    """The predict step: the scoring core's Predictor (scoring.predict) over validated Chunks.

    The DoFn keeps what is Beam's: the model held once per worker process (Shared), the counts
    and progress, the profile of each bundle, and the error records with where each row came
    from. Outputs Arrow tables in the predictions schema, and error records on the `errors` tag.
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
        self._predictor: Predictor | None = None

    def setup(self) -> None:
        anonymous_if_emulated()
        ref = self._spec.model

        def load() -> _LoadedModel:
            if ref.sha256 in _IN_PROCESS:
                return _LoadedModel(_IN_PROCESS[ref.sha256], 0.0)
            start = time.monotonic()
            model, _ = loading.load(ref)
            return _LoadedModel(model, time.monotonic() - start)

        in_process = ref.sha256 in _IN_PROCESS  # the launcher's process: it froze its own
        self._loaded = self._handle.acquire(load, tag=ref.sha256)
        self._predictor = Predictor(self._spec, self._loaded.model)
        if not in_process:
            # A worker process's modules, model and Beam objects live as long as it does: out
            # of the cyclic collector's reach, its collections scan only what bundles allocate.
            gc.freeze()
        one_blas_thread()

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
        scored = self._predictor.score(chunk.batch, self._spec.lineage)
        if scored.failures:
            yield from self._rejected(chunk, scored.failures)
        if scored.table is None:
            return
        kept, table = scored.kept, scored.table
        self.count("rows_predicted", kept.num_rows, chunk.source)
        for name, n in scored.unknown.items():
            self.count_unknown(name, n, scored=True)
        _PROGRESS.add(kept.num_rows)
        if self._profiler is not None:
            if self._profile is None:
                self._profile = self._profiler.create_accumulator()
            self._profile = self._profiler.add_input(self._profile, (kept, table))
        yield table

    def _rejected(self, chunk: Chunk, failures: list[tuple[int, str]]) -> Iterator[Any]:
        indexes = np.asarray([i for i, _ in failures], dtype=np.int64)
        self.count_failed("predict", len(indexes), chunk.source)
        rows = chunk.batch.take(pa.array(indexes)).to_pylist()
        row_indexes, lines = chunk.locate(indexes)
        for row, (_, message), row_index, line in zip(rows, failures, row_indexes, lines):
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
