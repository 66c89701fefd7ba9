"""The scoring job as decided on the launcher, and the elements that travel between its steps."""

from __future__ import annotations

import dataclasses
import pickle
from typing import Any, NamedTuple

import apache_beam as beam
import numpy as np
import pyarrow as pa

from models.introspect import ModelFacts
from models.loading import ModelRef

LINEAGE_FIELDS = (
    pa.field("model_uri", pa.string()),
    pa.field("model_version", pa.string()),
    pa.field("run_id", pa.string()),
    pa.field("scored_at", pa.timestamp("us", tz="UTC")),
    # The night the row was scored for (--run_date): a table of many nights is partitioned and
    # joined on it.
    pa.field("run_date", pa.date32()),
)

# The name, inside a batch, of the key copy of a column that is both a key and a feature: the
# feature is cast as the model takes it, the key keeps the input's type.
KEY_COPY = "\x00key:"

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


def reason_fields(k: int) -> list[pa.Field]:
    """--explain's columns: reason_1..K (input column names), then contribution_1..K."""
    names = [pa.field(f"reason_{i}", pa.string()) for i in range(1, k + 1)]
    return names + [pa.field(f"contribution_{i}", pa.float64()) for i in range(1, k + 1)]


@dataclasses.dataclass(frozen=True)
class ScoringSpec:
    """Everything the workers need, decided once at launch.

    Attributes:
        run_id: this run's id (lineage, errors).
        input_format: parquet, csv, jsonl, or bigquery (a table).
        input_pattern: the input file pattern (the workers match it again).
        output: the output directory (never read as input).
        text: how text input is decoded and split.
        features: model feature columns, in the model's order.
        keys: input columns copied to every prediction row.
        columns: the target Arrow type of every feature and key column (a column that is both
            has its feature type here); batches are cast to it.
        model: where the workers load the model from.
        facts: what the model predicts (classes, prediction type, missing values).
        batch_size: rows per record batch.
        baseline: the model's drift baseline (see transforms.profile), if it has one.
        split_bytes: the size of a text file's work units (a Parquet unit is whole row groups
            of at least batch_size rows).
        key_types: the type each key is written with, where it differs from `columns` (a key
            that is also a feature keeps the input's type).
        explain: --explain's plan (models.explain.ExplainPlan), or None when off.
        table: a BigQuery table input's read session (transforms.bqread.TableInput), or None
            for files (input_format is then "bigquery").
        run_date: the run date (YYYY-MM-DD) written on every prediction row.
    """

    run_id: str
    input_format: str
    input_pattern: str
    output: str
    features: tuple[str, ...]
    keys: tuple[str, ...]
    columns: pa.Schema
    model: ModelRef
    facts: ModelFacts
    text: TextFormat = TextFormat()
    batch_size: int = 65536
    baseline: dict | None = None
    split_bytes: int = 64 << 20
    key_types: dict[str, pa.DataType] = dataclasses.field(default_factory=dict)
    explain: Any = None
    table: Any = None
    run_date: str | None = None

    @property
    def wanted(self) -> tuple[str, ...]:
        """Every input column the job reads: keys then features, each once."""
        return tuple(dict.fromkeys(self.keys + self.features))

    @property
    def key_copies(self) -> tuple[str, ...]:
        """The keys that are features too (their key copy travels as KEY_COPY + name)."""
        return tuple(k for k in self.keys if k in self.features)

    def key_type(self, name: str) -> pa.DataType:
        """The type a key column is written with."""
        return self.key_types.get(name) or self.columns.field(name).type

    def key_source(self, name: str) -> str:
        """The batch column a key is written from."""
        return KEY_COPY + name if name in self.features else name

    @property
    def batch_schema(self) -> pa.Schema:
        """The schema of a validated batch: every column in its run type, then key copies."""
        copies = [pa.field(KEY_COPY + k, self.key_type(k)) for k in self.key_copies]
        return pa.schema(list(self.columns) + copies)

    @property
    def output_schema(self) -> pa.Schema:
        """The explicit schema of the predictions output."""
        fields = [pa.field(k, self.key_type(k)) for k in self.keys]
        fields.append(pa.field("prediction", self.facts.prediction_type))
        fields.extend(pa.field(name, pa.float64()) for name in self.facts.proba_columns)
        fields.extend(reason_fields(self.explain.k if self.explain else 0))
        fields.extend(LINEAGE_FIELDS)
        return pa.schema(fields)
