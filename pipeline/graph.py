"""Builds the scoring graph from the launch decisions; runs nothing.

    pattern -> match -> plan units -> (spread) -> read -> validate -> predict -> write
                                                   \\--------\\----------\\--> errors -> write

Besides the output files, the graph writes small JSON files next to them in the staging
directory for the launcher: the per-file counts, the profile (drift, prediction distribution)
and a summary of the errors.
"""

from __future__ import annotations

import json

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.utils import shared

from transforms.errors import MergeCounts, SummarizeErrors
from transforms.numbering import NumberedErrors
from transforms.predict import PredictBatches
from transforms.profile import MergedProfiles, ProfileFn
from transforms.read import ReadUnits
from transforms.spec import ERRORS, PROFILE, STATS, UNITS, ScoringSpec
from transforms.units import PlanInput
from transforms.validate import ValidateBatches
from transforms.write import ERRORS_DIR, PREDICTIONS, WriteOutputs

COUNTS_FILE = "COUNTS.json"
PROFILE_FILE = "PROFILE.json"
ERRORS_SUMMARY_FILE = "ERRORS_SUMMARY.json"


def build(p: beam.Pipeline, spec: ScoringSpec, staging_dir: str) -> dict:
    """Adds plan -> read -> validate -> predict -> write to a pipeline.

    Args:
        p: the pipeline to add to.
        spec: the launch decisions (the input pattern is matched again by the workers).
        staging_dir: where this run's files go until the launcher commits them.

    Returns:
        The written file list's PCollection.
    """
    read_label = (
        f"Read{ {'parquet': 'Parquet', 'csv': 'Csv', 'jsonl': 'JsonLines'}[spec.input_format] }"
    )
    planned = p | "PlanInput" >> PlanInput(spec)
    read = planned["units"] | read_label >> beam.ParDo(ReadUnits(spec)).with_outputs(
        ERRORS, UNITS, STATS, main="batches"
    )
    valid = read.batches | "Validate" >> beam.ParDo(ValidateBatches(spec)).with_outputs(
        ERRORS, STATS, main="batches"
    )
    positive = spec.facts.proba_columns[-1] if spec.facts.classes else None
    profiler = ProfileFn(spec.baseline, spec.facts.classes, positive)
    scored = valid.batches | "Predict" >> beam.ParDo(
        PredictBatches(spec, shared.Shared(), profiler)
    ).with_outputs(ERRORS, PROFILE, STATS, main="predictions")
    _ = (
        scored[PROFILE]
        | "Profile" >> beam.CombineGlobally(MergedProfiles(profiler))
        | "WriteProfile" >> beam.Map(write_json, staging_dir, PROFILE_FILE)
    )
    _ = (
        (planned[STATS], read[STATS], valid[STATS], scored[STATS])
        | "AllCounts" >> beam.Flatten()
        | "CountsPerFile" >> beam.CombineGlobally(MergeCounts())
        | "WriteCounts" >> beam.Map(write_json, staging_dir, COUNTS_FILE)
    )
    errors = (
        (planned[ERRORS], read[ERRORS], valid[ERRORS], scored[ERRORS])
        | "AllErrors" >> beam.Flatten()
        | "NumberErrors" >> NumberedErrors(read[UNITS])
    )
    _ = (
        errors
        | "SummarizeErrors" >> beam.CombineGlobally(SummarizeErrors())
        | "WriteErrorsSummary" >> beam.Map(write_json, staging_dir, ERRORS_SUMMARY_FILE)
    )
    return {PREDICTIONS: scored.predictions, ERRORS_DIR: errors} | "Write" >> WriteOutputs(
        staging_dir, spec.output_schema
    )


def write_json(data: dict, staging_dir: str, name: str) -> str:
    """Writes one of the run's JSON files into the staging directory, for the launcher."""
    path = FileSystems.join(staging_dir, name)
    with FileSystems.create(path, mime_type="application/json") as f:
        f.write(json.dumps(data).encode())
    return path
