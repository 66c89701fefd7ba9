"""Beam RunInference baseline, the documented way: rows as dicts, one numpy array per row.

Usage: python bench/runinference.py --input 'DIR/*.parquet' --model MODEL --output DIR
Runs on the DirectRunner with default options.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from typing import Any

import apache_beam as beam
import joblib
import numpy as np
import pyarrow as pa
from apache_beam.ml.inference.base import KeyedModelHandler, PredictionResult, RunInference
from apache_beam.ml.inference.sklearn_inference import ModelFileType, SklearnModelHandlerNumpy
from apache_beam.options.pipeline_options import PipelineOptions

FEATURES = [f"f{i:02d}" for i in range(20)]


def predict_proba(
    model: Any, batch: Sequence[np.ndarray], inference_args: dict[str, Any] | None = None
) -> np.ndarray:
    """inference_fn for SklearnModelHandlerNumpy: class probabilities of a batch of rows."""
    return model.predict_proba(np.stack(batch, axis=0), **(inference_args or {}))


def to_example(row: dict[str, Any]) -> tuple[int, np.ndarray]:
    """(id, the 20 features as a float64 array) of one input row."""
    return row["id"], np.array([row[f] for f in FEATURES], dtype=np.float64)


def to_output(keyed: tuple[int, PredictionResult], classes: np.ndarray) -> dict[str, Any]:
    """An output row: id, predicted class and one probability per class."""
    key, result = keyed
    proba = result.inference
    row: dict[str, Any] = {"id": key, "prediction": classes[int(np.argmax(proba))].item()}
    row.update({f"proba_{c}": float(p) for c, p in zip(classes, proba)})
    return row


def main() -> None:
    """Builds and runs the pipeline, then prints the wall time."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", required=True, help="glob of Parquet files")
    parser.add_argument("--model", required=True, help="a joblib file with predict_proba")
    parser.add_argument("--output", required=True, help="output directory")
    args, beam_args = parser.parse_known_args()

    started = time.monotonic()
    classes = joblib.load(args.model).classes_  # the output schema needs the class labels
    schema = pa.schema(
        [("id", pa.int64()), ("prediction", pa.array(classes).type)]
        + [(f"proba_{c}", pa.float64()) for c in classes]
    )
    handler = KeyedModelHandler(
        SklearnModelHandlerNumpy(
            model_uri=args.model, model_file_type=ModelFileType.JOBLIB, inference_fn=predict_proba
        )
    )
    with beam.Pipeline(options=PipelineOptions(beam_args)) as p:
        _ = (
            p
            | "Read" >> beam.io.ReadFromParquet(args.input)
            | "ToExample" >> beam.Map(to_example)
            | "RunInference" >> RunInference(handler)
            | "ToOutput" >> beam.Map(to_output, classes)
            | "Write"
            >> beam.io.WriteToParquet(
                f"{args.output}/predictions", schema, file_name_suffix=".parquet"
            )
        )
    print(f"done in {time.monotonic() - started:.2f}s")


if __name__ == "__main__":
    main()
