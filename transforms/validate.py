"""The validate step: the scoring core's Validator (scoring.validate) over the Chunks of a run.

The DoFn keeps what is Beam's: the counts, the error records with where each row came from,
and the tagged outputs.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa

from scoring.spec import KEY_COPY
from scoring.validate import Validator
from transforms.errors import CountingDoFn, error_record
from transforms.spec import ERRORS, Chunk, ScoringSpec


@beam.typehints.with_output_types(Chunk)
class ValidateBatches(CountingDoFn):
    """Casts Chunks to the launch-time schema and rejects rows the model cannot take.

    What is rejected, and why, is the Validator's (scoring.validate). Outputs clean, typed
    Chunks, and error records (one per row, every reason named, the values as the input held
    them) on `errors`.
    """

    def __init__(self, spec: ScoringSpec):
        self._spec = spec
        self._validator: Validator | None = None

    def setup(self) -> None:
        self._validator = Validator(self._spec)

    def process(self, chunk: Chunk) -> Iterator[Any]:
        batch = chunk.batch
        checked = self._validator.check(batch)
        for name, n in checked.unknown.items():
            self.count_unknown(name, n, scored=False)
        if checked.bad is None:
            yield chunk._replace(batch=checked.typed)
            return
        bad = checked.bad
        self.count_failed("validate", int(bad.sum()), chunk.source)
        indexes = np.flatnonzero(bad)
        shown = [c for c in batch.schema.names if not c.startswith(KEY_COPY)]
        originals = batch.select(shown).take(pa.array(indexes))
        row_indexes, lines = chunk.locate(indexes)
        for row, index, row_index, line in zip(originals.to_pylist(), indexes, row_indexes, lines):
            yield beam.pvalue.TaggedOutput(
                ERRORS,
                error_record(
                    "validate",
                    checked.reasons[int(index)],
                    row,
                    chunk.source,
                    self._spec.run_id,
                    line=line,
                    row_index=row_index,
                    _unit=chunk.unit,
                ),
            )
        if not bad.all():
            yield chunk.without(bad, checked.good)
