"""Writing predictions (Parquet, explicit schema) and error records (JSON Lines) to staging."""

from __future__ import annotations

import apache_beam as beam
import pyarrow as pa
from apache_beam.io import WriteToParquetBatched, WriteToText
from apache_beam.io.filesystems import FileSystems

from transforms.errors import to_json_line

PREDICTIONS = "predictions"
ERRORS_DIR = "errors"


class WriteOutputs(beam.PTransform):
    """Writes a run's predictions and errors as sharded files under a staging directory.

    Takes a dict of PCollections: `predictions` (Arrow tables in `schema`) and `errors`
    (error-record dicts). The launcher commits the staging directory once the run is over.
    """

    def __init__(self, staging_dir: str, schema: pa.Schema, codec: str = "snappy"):
        super().__init__()
        self._staging = staging_dir
        self._schema = schema
        self._codec = codec

    def expand(self, pcolls):
        predictions = pcolls[PREDICTIONS] | "WritePredictions" >> WriteToParquetBatched(
            FileSystems.join(self._staging, PREDICTIONS, "part"),
            schema=self._schema,
            codec=self._codec,
            file_name_suffix=".parquet",
        )
        errors = (
            pcolls[ERRORS_DIR]
            | "ErrorsToJson" >> beam.Map(to_json_line)
            | "WriteErrors"
            >> WriteToText(
                FileSystems.join(self._staging, ERRORS_DIR, "part"),
                file_name_suffix=".jsonl",
                skip_if_empty=True,
            )
        )
        return {PREDICTIONS: predictions, ERRORS_DIR: errors}
