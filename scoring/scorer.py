"""A batch of rows scored end to end without a pipeline: validated, then predicted.

What the batch job does in two steps (transforms.validate, transforms.predict) in one call, with
each rejected row's stage and message exactly as the batch job writes them in its errors output.
"""

from __future__ import annotations

import datetime
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa

from scoring.predict import Predictor
from scoring.spec import Lineage, RowSpec
from scoring.validate import Validator


class Rejection(NamedTuple):
    """A row rejected: its index in the batch, the stage (validate or predict), the message."""

    index: int
    stage: str
    error: str


class Outcome(NamedTuple):
    """A batch's outcome, row by row.

    Attributes:
        table: the output rows of the rows scored (the predictions schema), or None.
        scored: the batch index of each of the table's rows, ascending.
        rejected: the rejected rows, by index.
        unknown_rejected: per categorical feature, the rows rejected for an unknown category.
        unknown_scored: per categorical feature, the rows scored with an unknown category.
    """

    table: pa.Table | None
    scored: np.ndarray
    rejected: list[Rejection]
    unknown_rejected: dict[str, int]
    unknown_scored: dict[str, int]


class Scorer:
    """Scores batches of input rows (the RowSpec's wanted columns, any types) with a model."""

    def __init__(self, spec: RowSpec, model: Any):
        self.spec = spec
        self._validator = Validator(spec)
        self._predictor = Predictor(spec, model)

    def score(
        self, batch: pa.RecordBatch, lineage: Lineage, scored_at: datetime.datetime | None = None
    ) -> Outcome:
        """Every row of the batch scored or rejected, never both, never neither."""
        checked = self._validator.check(batch)
        rejected = [Rejection(i, "validate", reason) for i, reason in checked.reasons.items()]
        valid = np.arange(batch.num_rows)
        if checked.bad is not None:
            valid = np.flatnonzero(~checked.bad)
        table, scored, unknown_scored = None, valid[:0], {}
        if len(valid):
            result = self._predictor.score(checked.good, lineage, scored_at)
            rejected += [Rejection(int(valid[i]), "predict", m) for i, m in result.failures]
            table, scored, unknown_scored = result.table, valid[result.ok], result.unknown
        rejected.sort(key=lambda r: r.index)
        return Outcome(table, scored, rejected, checked.unknown, unknown_scored)
