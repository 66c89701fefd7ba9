"""Writing predictions (Parquet, explicit schema) and error records (JSON Lines) to staging.

Each bundle streams its rows into one file of its own under the staging directory, named
uniquely, so a retried bundle never collides with another. A bundle that succeeded names its file
in its `("files", [path])` part of the run summary (transforms.summary); only files named there
are committed by the launcher: a failed attempt's leftovers are never published.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import apache_beam as beam
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import MIN_TIMESTAMP
from apache_beam.utils.windowed_value import WindowedValue

from transforms.emulators import anonymous_if_emulated
from transforms.errors import SummarizeErrors, to_json_line

PREDICTIONS = "predictions"
ERRORS_DIR = "errors"


class _BundleFileWriter(beam.DoFn):
    """Writes a bundle's elements into one new file, opened at the first element."""

    def __init__(self, directory: str, suffix: str):
        self._directory = directory
        self._suffix = suffix
        self._path: str | None = None

    def setup(self) -> None:
        anonymous_if_emulated()

    def start_bundle(self) -> None:
        self._path = None

    def _new_path(self) -> str:
        self._path = FileSystems.join(
            self._directory, f"part-{uuid.uuid4().hex[:16]}{self._suffix}"
        )
        return self._path

    def finish_bundle(self) -> Iterator[WindowedValue]:
        if self._path is not None:
            self._close()
            yield WindowedValue(("files", [self._path]), MIN_TIMESTAMP, [GlobalWindow()])
            self._path = None

    def _close(self) -> None:
        raise NotImplementedError


class WriteParquetFiles(_BundleFileWriter):
    """Streams Arrow tables into a Parquet file per bundle, with an explicit schema.

    A table is encoded and compressed by a thread of its own (Arrow releases the GIL there)
    while the next batch is validated and scored: one write in flight at most, its error raised
    at the next table or at the bundle's end, so a bundle never finishes before its rows are in.
    """

    def __init__(self, directory: str, schema: pa.Schema, compression: str = "snappy"):
        super().__init__(directory, ".parquet")
        self._schema = schema
        self._compression = compression
        # Dictionary encoding pays off for text (lineage, labels), not for probabilities.
        self._dictionary = [f.name for f in schema if pa.types.is_string(f.type)]
        self._file = None
        self._writer = None
        self._pool: ThreadPoolExecutor | None = None
        self._pending: Future | None = None

    def setup(self) -> None:
        super().setup()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="beamscore-write")

    def start_bundle(self) -> None:
        super().start_bundle()
        self._abandon()  # what a failed bundle left open is never named, so never published

    def process(self, table: pa.Table) -> None:
        import pyarrow.parquet as pq

        self._wait()
        if self._writer is None:
            self._file = FileSystems.create(self._new_path(), mime_type="application/x-parquet")
            self._writer = pq.ParquetWriter(
                self._file,
                self._schema,
                compression=self._compression,
                use_dictionary=self._dictionary or False,
            )
        self._pending = self._pool.submit(self._writer.write_table, table)

    def _wait(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()  # the write's own error, raised in the bundle

    def _close(self) -> None:
        self._wait()
        self._writer.close()
        self._file.close()
        self._writer = self._file = None

    def _abandon(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.exception()  # let it end; its error belongs to the failed bundle
        for part in (self._writer, self._file):
            try:
                if part is not None:
                    part.close()
            except Exception:  # noqa: BLE001 - the failed attempt's file, never published
                pass
        self._writer = self._file = None

    def teardown(self) -> None:
        self._abandon()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


class WriteJsonLinesFiles(_BundleFileWriter):
    """Writes error records as JSON Lines, one file per bundle that has any, and sums them up
    (reasons, counts, examples) for the run summary as it goes."""

    def __init__(self, directory: str):
        super().__init__(directory, ".jsonl")
        self._file = None
        self._summary = SummarizeErrors()
        self._brief: Any = None

    def process(self, record: dict[str, Any]) -> None:
        if self._file is None:
            self._file = FileSystems.create(self._new_path(), mime_type="application/x-ndjson")
            self._brief = self._summary.create_accumulator()
        record.pop("_unit", None)  # the unit a record came from, of use only for numbering
        self._file.write(to_json_line(record).encode() + b"\n")
        self._brief = self._summary.add_input(self._brief, record)

    def finish_bundle(self) -> Iterator[WindowedValue]:
        brief, self._brief = self._brief, None
        yield from super().finish_bundle()
        if brief is not None:
            yield WindowedValue(("errors", brief), MIN_TIMESTAMP, [GlobalWindow()])

    def _close(self) -> None:
        self._file.close()
        self._file = None


class WriteOutputs(beam.PTransform):
    """Writes a run's predictions and errors under a staging directory.

    Takes a dict of PCollections: `predictions` (Arrow tables in `schema`) and `errors`
    (error-record dicts). Returns the writers' parts of the run summary: the files they wrote,
    and the errors in brief.
    """

    def __init__(self, staging_dir: str, schema: pa.Schema):
        super().__init__()
        self._staging = staging_dir
        self._schema = schema

    def expand(self, pcolls):
        join = FileSystems.join
        predictions = pcolls[PREDICTIONS] | "WritePredictions" >> beam.ParDo(
            WriteParquetFiles(join(self._staging, PREDICTIONS), self._schema)
        )
        errors = pcolls[ERRORS_DIR] | "WriteErrors" >> beam.ParDo(
            WriteJsonLinesFiles(join(self._staging, ERRORS_DIR))
        )
        return (predictions, errors) | "WrittenParts" >> beam.Flatten()
