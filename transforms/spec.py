"""The scoring job as decided on the launcher: what every transform needs, nothing more."""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import pyarrow as pa

from models.introspect import ModelFacts
from models.loading import ModelRef

LINEAGE_FIELDS = (
    pa.field("model_uri", pa.string()),
    pa.field("model_version", pa.string()),
    pa.field("run_id", pa.string()),
    pa.field("scored_at", pa.timestamp("us", tz="UTC")),
)

# Tags of the tagged outputs: error records, and (features, predictions) pairs to profile.
ERRORS = "errors"
PROFILE = "profile"


class Chunk(NamedTuple):
    """The element that travels: a record batch of one input file, and where it came from.

    Attributes:
        source: the input file.
        offset: index of the batch's first record among the file's parsed records.
        batch: the rows.
    """

    source: str
    offset: int
    batch: pa.RecordBatch


@dataclasses.dataclass(frozen=True)
class ScoringSpec:
    """Everything the workers need, decided once at launch.

    Attributes:
        run_id: this run's id (lineage, errors).
        input_format: parquet, csv or jsonl.
        features: model feature columns, in the model's order.
        keys: input columns copied to every prediction row.
        columns: the target Arrow type of every feature and key column; batches are cast to it.
        model: where the workers load the model from.
        facts: what the model predicts (classes, prediction type, missing values).
        batch_size: rows per record batch.
        baseline: the model's drift baseline (see transforms.profile), if it has one.
        profile: whether to compute the feature and prediction distributions in the same pass.
    """

    run_id: str
    input_format: str
    features: tuple[str, ...]
    keys: tuple[str, ...]
    columns: pa.Schema
    model: ModelRef
    facts: ModelFacts
    batch_size: int = 65536
    baseline: dict | None = None
    profile: bool = False

    @property
    def wanted(self) -> tuple[str, ...]:
        """Every input column the job reads: keys then features, each once."""
        return tuple(dict.fromkeys(self.keys + self.features))

    @property
    def output_schema(self) -> pa.Schema:
        """The explicit schema of the predictions output."""
        fields = [self.columns.field(k) for k in self.keys]
        fields.append(pa.field("prediction", self.facts.prediction_type))
        fields.extend(pa.field(name, pa.float64()) for name in self.facts.proba_columns)
        fields.extend(LINEAGE_FIELDS)
        return pa.schema(fields)
