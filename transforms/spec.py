"""The scoring job as decided on the launcher, and the elements that travel between its steps.

How each row is scored is the scoring core's (scoring.spec.RowSpec), which ScoringSpec extends.
"""

from __future__ import annotations

import dataclasses
import pickle
from typing import Any, NamedTuple

import apache_beam as beam
import numpy as np
import pyarrow as pa

from scoring.spec import Lineage, RowSpec

# Tags of the tagged outputs: error records; (features, predictions) profiles; per-file counts;
# per-unit sizes (for numbering errors within split files).
ERRORS = "errors"
PROFILE = "profile"
STATS = "stats"
UNITS = "units"


@dataclasses.dataclass(frozen=True)
class TextFormat:
    """How CSV and JSON Lines bytes are read.

    Attributes:
        encoding: a Python codec name that writes ASCII as ASCII (utf-8, latin-1, cp1252...).
        delimiter: the CSV field separator (one ASCII character).
    """

    encoding: str = "utf-8"
    delimiter: str = ","


class Unit(NamedTuple):
    """A work unit: a part of one input file, read by one DoFn call.

    Attributes:
        path: the input file.
        index: the unit's position in the file (0 for the first).
        start: first row group (Parquet) or byte offset (text) of the unit.
        stop: one past the last row group or byte offset; None: to the end of the file.
        in_quotes: (CSV) whether byte `start` lies inside a quoted value.
        columns: (CSV) the file's header names.
        stream: (BigQuery) the read session's stream this unit reads; `path` is the table.
    """

    path: str
    index: int
    start: int
    stop: int | None
    in_quotes: bool = False
    columns: tuple[str, ...] = ()
    stream: str = ""


class Chunk(NamedTuple):
    """The element that travels: a record batch of one work unit, and where it came from.

    Attributes:
        source: the input file.
        unit: the index of the work unit within the file.
        offset: index of the batch's first record among the unit's parsed records.
        batch: the rows.
        lines: maps the chunk's original rows to their physical lines within the unit (text
            formats), or None (Parquet).
        kept: after rows were taken out, the original positions of the batch's rows (None: all
            rows are there).
    """

    source: str
    unit: int
    offset: int
    batch: pa.RecordBatch
    lines: Any = None
    kept: Any = None

    def locate(self, indexes) -> tuple[list[int], list[int | None]]:
        """The unit-local row indexes and lines of the batch's rows at these indexes."""
        positions = np.asarray(indexes, dtype=np.int64)
        if self.kept is not None:
            positions = self.kept[positions]
        lines = self.lines.of(positions) if self.lines is not None else [None] * len(positions)
        return [self.offset + int(p) for p in positions], lines

    def without(self, bad: np.ndarray, batch: pa.RecordBatch) -> Chunk:
        """This chunk with the rows where `bad` is True taken out (`batch`: the rest)."""
        kept = np.flatnonzero(~bad)
        if self.kept is not None:
            kept = self.kept[kept]
        return self._replace(batch=batch, kept=kept)


class ChunkCoder(beam.coders.Coder):
    """How a Chunk crosses a stage boundary (pickled), and what Beam takes its size to be.

    Between fused steps a Chunk is handed over as it is; Beam still estimates the size of a
    sample of elements by encoding them, which for a Chunk would pickle its batch and work out
    its line numbers: its size is the batch's own instead.
    """

    def encode(self, value: Chunk) -> bytes:
        return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)

    def decode(self, encoded: bytes) -> Chunk:
        return pickle.loads(encoded)

    def is_deterministic(self) -> bool:
        return False

    def estimate_size(self, value: Chunk) -> int:
        return value.batch.nbytes

    def to_type_hint(self):
        return Chunk


class TableCoder(beam.coders.Coder):
    """How a table of predictions crosses a stage boundary (Arrow IPC), and its size for Beam's
    element sampling (the table's own, without encoding it)."""

    def encode(self, value: pa.Table) -> bytes:
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, value.schema) as writer:
            writer.write_table(value)
        return sink.getvalue().to_pybytes()

    def decode(self, encoded: bytes) -> pa.Table:
        return pa.ipc.open_stream(encoded).read_all()

    def is_deterministic(self) -> bool:
        return False

    def estimate_size(self, value: pa.Table) -> int:
        return value.nbytes

    def to_type_hint(self):
        return pa.Table


beam.coders.registry.register_coder(Chunk, ChunkCoder)
beam.coders.registry.register_coder(pa.Table, TableCoder)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ScoringSpec(RowSpec):
    """Everything the workers need, decided once at launch: how a row is scored (RowSpec), and
    where the rows come from.

    Attributes:
        run_id: this run's id (lineage, errors).
        input_format: parquet, csv, jsonl, or bigquery (a table).
        input_pattern: the input file pattern (the workers match it again).
        output: the output directory (never read as input).
        text: how text input is decoded and split.
        batch_size: rows per record batch.
        baseline: the model's drift baseline (see transforms.profile), if it has one.
        split_bytes: the size of a text file's work units (a Parquet unit is whole row groups
            of at least batch_size rows).
        table: a BigQuery table input's read session (transforms.bqread.TableInput), or None
            for files (input_format is then "bigquery").
        run_date: the run date (YYYY-MM-DD) written on every prediction row.
        partitions: the wanted columns that come from Hive-style name=value folders of each
            file's path, not from inside the files (text; null where a path has none).
    """

    run_id: str
    input_format: str
    input_pattern: str
    output: str
    text: TextFormat = TextFormat()
    batch_size: int = 65536
    baseline: dict | None = None
    split_bytes: int = 64 << 20
    table: Any = None
    run_date: str | None = None
    partitions: tuple[str, ...] = ()

    @classmethod
    def of(cls, row: RowSpec, **job: Any) -> ScoringSpec:
        """The job's spec: how its rows are scored (`row`), and its input and run (`job`)."""
        scoring = {f.name: getattr(row, f.name) for f in dataclasses.fields(RowSpec)}
        return cls(**scoring, **job)

    @property
    def in_files(self) -> tuple[str, ...]:
        """The wanted columns read from inside the files (the others are partitions)."""
        return tuple(c for c in self.wanted if c not in self.partitions)

    @property
    def lineage(self) -> Lineage:
        """The lineage values of this run's prediction rows."""
        return Lineage(self.model.uri, self.model.version, self.run_id, self.run_date)
