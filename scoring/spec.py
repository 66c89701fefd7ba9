"""How a row is scored, decided once: the columns, their types, the model and its facts.

A `RowSpec` is what the batch job's workers and the online service both score by; the batch job's
`transforms.spec.ScoringSpec` extends it with where the rows come from and go to.
"""

from __future__ import annotations

import dataclasses
import datetime
from typing import Any, NamedTuple

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


def reason_fields(k: int) -> list[pa.Field]:
    """--explain's columns: reason_1..K (input column names), then contribution_1..K."""
    names = [pa.field(f"reason_{i}", pa.string()) for i in range(1, k + 1)]
    return names + [pa.field(f"contribution_{i}", pa.float64()) for i in range(1, k + 1)]


class Lineage(NamedTuple):
    """The lineage values written on every prediction row (scored_at is the batch's own time).

    Attributes:
        model_uri: the model path or URI.
        model_version: the registry version, run id, or the file's SHA-256 prefix.
        run_id: the run (or the service process) that scored the row.
        run_date: the night the row was scored for (YYYY-MM-DD), or None.
    """

    model_uri: str
    model_version: str
    run_id: str
    run_date: str | None

    @property
    def date(self) -> datetime.date | None:
        return datetime.date.fromisoformat(self.run_date) if self.run_date else None


@dataclasses.dataclass(frozen=True, kw_only=True)
class RowSpec:
    """How every row is scored: decided once (at launch, or when the service starts).

    Attributes:
        features: model feature columns, in the model's order.
        keys: input columns copied to every prediction row.
        columns: the target Arrow type of every feature and key column (a column that is both
            has its feature type here); batches are cast to it.
        model: where the model is loaded from.
        facts: what the model predicts (classes, prediction type, missing values, categories and
            the unknown-category rule applied to them).
        key_types: the type each key is written with, where it differs from `columns` (a key
            that is also a feature keeps the input's type).
        explain: --explain's plan (models.explain.ExplainPlan), or None when off.
    """

    features: tuple[str, ...]
    keys: tuple[str, ...]
    columns: pa.Schema
    model: ModelRef
    facts: ModelFacts
    key_types: dict[str, pa.DataType] = dataclasses.field(default_factory=dict)
    explain: Any = None

    @property
    def wanted(self) -> tuple[str, ...]:
        """Every input column a row is read with: keys then features, each once."""
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
