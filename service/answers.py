"""Rows scored in one call, split back into each request's answer.

`/predict` answers row by row: `predictions[i]` is row i's output row with the batch
predictions' columns and values (JSON-spelled, scoring.rows.json_value), or null where the row
was rejected; `errors` lists each rejected row's index, stage and the batch job's message.
`/invocations` answers as `mlflow models serve` does: `{"predictions": [label, ...]}`, or a 400
with MLflow's error body naming the rejected rows.
"""

from __future__ import annotations

import datetime
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa

from scoring.rows import dumps, instances_table, json_rows
from scoring.scorer import Rejection
from service.bodies import BadRequest
from service.served import Served


class Part(NamedTuple):
    """One request's share of a batch's outcome.

    Attributes:
        scored: the request-local index of each scored row, ascending.
        rows: the output row of each, as JSON values.
        rejected: the rejected rows, with request-local indexes.
    """

    scored: np.ndarray
    rows: list[dict]
    rejected: list[Rejection]


EMPTY = Part(np.zeros(0, dtype=np.int64), [], [])  # a request of no rows


class Scoring:
    """Scores several requests' rows in one call of the scoring core, and splits the outcome."""

    def __init__(self, served: Served, metrics=None, log=None):
        self._served = served
        self._metrics = metrics
        self._log = log
        spec = served.spec
        self._wanted = spec.wanted

    def __call__(self, requests: list[list[dict]]) -> list[Part]:
        instances = [row for rows in requests for row in rows]
        table = instances_table(instances, self._wanted)
        batch = pa.RecordBatch.from_arrays(
            [c.combine_chunks() for c in table.columns], names=table.column_names
        )
        now = datetime.datetime.now(datetime.UTC)
        outcome = self._served.scorer.score(batch, self._served.lineage(now), now)
        rows = json_rows(outcome.table) if outcome.table is not None else []
        if self._metrics is not None:
            self._metrics.batch_rows.observe(len(instances))
            self._metrics.rows_scored.inc(len(outcome.scored))
            for r in outcome.rejected:
                self._metrics.rows_rejected.labels(r.stage).inc()
        if self._log is not None:
            self._log.add(outcome, instances)
        parts = []
        start = 0
        bounds = np.cumsum([len(r) for r in requests]).tolist()
        rejected = outcome.rejected
        r = 0
        for stop in bounds:
            lo, hi = np.searchsorted(outcome.scored, [start, stop])
            mine = []
            while r < len(rejected) and rejected[r].index < stop:
                mine.append(rejected[r]._replace(index=rejected[r].index - start))
                r += 1
            parts.append(Part(outcome.scored[lo:hi] - start, rows[lo:hi], mine))
            start = stop
        return parts


def output_names(served: Served) -> frozenset[str]:
    """The columns an answer writes itself: a field of that name is no key."""
    return frozenset(served.spec.output_schema.names)


def check_keys(instances: list[dict], served: Served, names: frozenset[str]) -> None:
    """Every field that is not a feature is a key: with --like the night's keys are typed as
    the night typed them, and any other field is echoed as sent. A field named like a column
    the answer writes (prediction, proba_<class>, model_uri, ...) is refused (400), as the batch
    job refuses such a key at launch."""
    features = served.spec.features
    known = set(features) | set(served.spec.keys)
    for i, row in enumerate(instances):
        if len(row) <= len(known) and all(k in known for k in row):
            continue
        for name in row:
            if name not in known and (name in names or name.startswith("proba_")):
                raise BadRequest(
                    400,
                    f"instances[{i}] has a field {name!r}, which is not a feature and is named "
                    "like a column the answer writes itself (prediction, proba_<class>, reason_k, "
                    "contribution_k, model_uri, model_version, run_id, scored_at, run_date); "
                    "rename it",
                )


def predict_answer(instances: list[dict], served: Served):
    """The /predict answer of these rows, once scored: (status, body)."""
    features = served.spec.features
    ref = served.spec.model
    model = {"uri": ref.uri, "version": ref.version, "sha256": ref.sha256}

    def render(part: Part) -> tuple[int, bytes]:
        predictions: list[Any] = [None] * len(instances)
        for index, row in zip(part.scored.tolist(), part.rows):
            # The fields that are not features, as sent; the output row's own columns (and with
            # --like the night's keys, typed) over them.
            keys = {k: v for k, v in instances[index].items() if k not in features}
            if keys:
                keys.update(row)
                row = keys
            predictions[index] = row
        errors = [{"index": r.index, "stage": r.stage, "error": r.error} for r in part.rejected]
        return 200, dumps({"predictions": predictions, "errors": errors, "model": model})

    return render


def mlflow_answer(instances: list[dict]):
    """The /invocations answer, as `mlflow models serve` gives it: the predictions of every
    row, or a 400 with MLflow's error body when a row is rejected."""

    def render(part: Part) -> tuple[int, bytes]:
        if part.rejected:
            shown = "; ".join(f"row {r.index} ({r.stage}): {r.error}" for r in part.rejected[:5])
            more = f"; and {len(part.rejected) - 5} more" if len(part.rejected) > 5 else ""
            message = f"{len(part.rejected)} of {len(instances)} row(s) rejected: {shown}{more}"
            return 400, dumps({"error_code": "BAD_REQUEST", "message": message})
        return 200, dumps({"predictions": [row["prediction"] for row in part.rows]})

    return render
