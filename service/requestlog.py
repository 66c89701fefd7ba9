"""The request log (`--log_dir DIR`): online traffic written in the batch job's layout.

Every `--log_rotate_s` seconds (and at a new UTC day, and at shutdown) the rows scored and the rows
rejected since the last segment are written as one committed mini-night:

    DIR/<run_date>/<service run_id>-<seq>/
      predictions/part-00000.parquet   the answer's rows, the batch predictions' columns
      errors/part-00000.jsonl          one record per rejected row, as the batch job writes them
      manifest.json                    written last: status, counts that reconcile, outputs

so `python -m pipeline.evaluate --predictions DIR/<date>/<segment>` scores a segment's
predictions against labels as it scores a night's. With `--like`, the keys are the night's typed
columns; served from flags (keys echoed as sent, of any JSON type), the rows carry the echoed
keys as one JSON text column, `request_keys`.

Writing happens on the scoring thread at a rotation, or on a timer thread when the service is
idle; a segment that cannot be written is logged and its rows kept for the next attempt, so
nothing is lost while the service runs; at shutdown the last rows are written before exit.
"""

from __future__ import annotations

import datetime
import io
import logging
import os
import tempfile
import threading
import time
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.errors import ConfigError
from pipeline.manifest import PRODUCER
from scoring.rows import dumps
from service.served import Served

_LOG = logging.getLogger("service")
KEYS_COLUMN = "request_keys"


class RequestLog:
    """Buffers the outcomes of the scoring thread and writes them as segments."""

    def __init__(self, directory: str, served: Served, rotate_s: float):
        self._dir = directory.rstrip("/")
        self._served = served
        self._rotate_s = rotate_s
        self._lock = threading.Lock()
        self._tables: list[pa.Table] = []
        self._errors: list[dict] = []
        self._by_stage = {"validate": 0, "predict": 0}
        self._seq = 0
        self._started = datetime.datetime.now(datetime.UTC)
        self._opened = time.monotonic()
        self._stop = threading.Event()
        self._timer = threading.Thread(target=self._tick, name="beamscore-log", daemon=True)
        self._timer.start()

    def add(self, outcome, instances: list[dict]) -> None:
        """One model call's outcome (scoring.scorer.Outcome) and the instances it scored."""
        table = outcome.table
        if table is not None and table.num_rows and not self._served.typed_keys:
            features = set(self._served.spec.features)
            keys = [
                dumps({k: v for k, v in instances[i].items() if k not in features}).decode()
                for i in outcome.scored.tolist()
            ]
            table = table.add_column(0, KEYS_COLUMN, pa.array(keys, pa.string()))
        errors = [
            {
                "stage": r.stage,
                "error": r.error,
                "record": instances[r.index],
                "source": "online",
                "run_id": self._served.run_id,
            }
            for r in outcome.rejected
        ]
        with self._lock:
            if table is not None and table.num_rows:
                self._tables.append(table)
            self._errors += errors
            for r in outcome.rejected:
                self._by_stage[r.stage] = self._by_stage.get(r.stage, 0) + 1
        if self._due():
            self.flush()

    def _due(self) -> bool:
        today = datetime.datetime.now(datetime.UTC).date()
        return time.monotonic() - self._opened >= self._rotate_s or today != self._started.date()

    def _tick(self) -> None:
        while not self._stop.wait(min(1.0, self._rotate_s)):
            if self._due():
                self.flush()

    def close(self) -> None:
        """Writes what is left (at shutdown, after the scoring thread stopped)."""
        self._stop.set()
        self._timer.join(5)
        self.flush()

    def flush(self) -> None:
        """Writes the rows since the last segment as a new segment (nothing when none)."""
        with self._lock:
            tables, errors, by_stage = self._tables, self._errors, self._by_stage
            started = self._started
            self._tables, self._errors = [], []
            self._by_stage = {"validate": 0, "predict": 0}
            self._started = datetime.datetime.now(datetime.UTC)
            self._opened = time.monotonic()
            if not tables and not errors:
                return
            self._seq += 1
            seq = self._seq
        try:
            self._write(seq, started, tables, errors, by_stage)
        except Exception as e:  # noqa: BLE001 - kept for the next segment, the service goes on
            _LOG.error("request log: cannot write segment %d under %s: %s", seq, self._dir, e)
            with self._lock:
                self._tables[:0] = tables
                self._errors[:0] = errors
                for stage, n in by_stage.items():
                    self._by_stage[stage] = self._by_stage.get(stage, 0) + n
                self._started = min(self._started, started)

    def _write(self, seq, started, tables, errors, by_stage) -> None:
        from apache_beam.io.filesystems import FileSystems

        from pipeline.output import write_json

        run_date = started.date().isoformat()
        run_id = f"{self._served.run_id}-{seq:05d}"
        segment = f"{self._dir}/{run_date}/{run_id}"
        outputs: dict[str, list[str]] = {"predictions": [], "errors": []}
        predicted = 0
        if tables:
            table = pa.concat_tables(tables)
            predicted = table.num_rows
            buffer = io.BytesIO()
            pq.write_table(table, buffer)
            _write_bytes(
                FileSystems, f"{segment}/predictions/part-00000.parquet", buffer.getvalue()
            )
            outputs["predictions"].append("predictions/part-00000.parquet")
        if errors:
            text = "".join(dumps(e).decode() + "\n" for e in errors).encode()
            _write_bytes(FileSystems, f"{segment}/errors/part-00000.jsonl", text)
            outputs["errors"].append("errors/part-00000.jsonl")
        spec = self._served.spec
        failed = len(errors)
        write_json(
            f"{segment}/manifest.json",
            {
                "producer": PRODUCER,
                "status": "succeeded",
                "source": "online",
                "run_id": run_id,
                "service_run_id": self._served.run_id,
                "run_date": run_date,
                "model": {
                    "uri": spec.model.uri,
                    "version": spec.model.version,
                    "sha256": spec.model.sha256,
                },
                "counts": {
                    "rows_read": predicted + failed,
                    "rows_predicted": predicted,
                    "rows_failed": failed,
                    "rows_failed_by_stage": {"read": 0, **by_stage},
                },
                "features": list(spec.features),
                "key_columns": list(spec.keys) if self._served.typed_keys else [],
                "like": self._served.like,
                "outputs": outputs,
                "started_at": started.isoformat(),
                "finished_at": datetime.datetime.now(datetime.UTC).isoformat(),
            },
        )
        _LOG.info("request log: %d rows scored, %d rejected -> %s", predicted, failed, segment)


def _write_bytes(filesystems: Any, path: str, data: bytes) -> None:
    if "://" not in path:
        os.makedirs(os.path.dirname(path), exist_ok=True)
    with filesystems.create(path) as f:
        f.write(data)


def open_log(config, served: Served) -> RequestLog | None:
    """The request log of --log_dir (None when off); a local directory that cannot be written
    is ConfigError (exit 2, before the service listens)."""
    if not config.log_dir:
        return None
    if "://" not in config.log_dir:
        try:
            os.makedirs(config.log_dir, exist_ok=True)
            tempfile.TemporaryFile(dir=config.log_dir).close()
        except OSError as e:
            raise ConfigError(
                f"--log_dir {config.log_dir} cannot be written: {e.strerror or e}"
            ) from None
    return RequestLog(config.log_dir, served, config.log_rotate_s)
