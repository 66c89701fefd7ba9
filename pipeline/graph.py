"""Builds the scoring graph from the launch decisions; runs nothing."""

from __future__ import annotations

from collections.abc import Sequence

import apache_beam as beam
from apache_beam.utils import shared

from transforms.predict import PredictBatches
from transforms.profile import MergedProfiles, ProfileFn, write_profile
from transforms.read import ReadBatches
from transforms.spec import ERRORS, PROFILE, ScoringSpec
from transforms.validate import ValidateBatches
from transforms.write import ERRORS_DIR, PREDICTIONS, WriteOutputs


def build(p: beam.Pipeline, spec: ScoringSpec, files: Sequence[str], staging_dir: str) -> dict:
    """Adds read -> validate -> predict -> write to a pipeline.

    Args:
        p: the pipeline to add to.
        spec: the launch decisions.
        files: the input files, already matched.
        staging_dir: where this run's output files go until the launcher commits them.

    Returns:
        The written PCollections (file names), keyed `predictions` and `errors`.
    """
    read_label = (
        f"Read{ {'parquet': 'Parquet', 'csv': 'Csv', 'jsonl': 'JsonLines'}[spec.input_format] }"
    )
    read = (
        p
        | "InputFiles" >> beam.Create(list(files))
        | "SpreadFiles" >> beam.Reshuffle()
        | read_label >> beam.ParDo(ReadBatches(spec)).with_outputs(ERRORS, main="batches")
    )
    valid = read.batches | "Validate" >> beam.ParDo(ValidateBatches(spec)).with_outputs(
        ERRORS, main="batches"
    )
    profiler = None
    if spec.profile:
        positive = spec.facts.proba_columns[-1] if spec.facts.classes else None
        profiler = ProfileFn(spec.baseline, spec.facts.classes, positive)
    scored = valid.batches | "Predict" >> beam.ParDo(
        PredictBatches(spec, shared.Shared(), profiler)
    ).with_outputs(ERRORS, PROFILE, main="predictions")
    if profiler is not None:  # each bundle's partial profile, merged into one
        _ = (
            scored[PROFILE]
            | "Profile" >> beam.CombineGlobally(MergedProfiles(profiler))
            | "WriteProfile" >> beam.Map(write_profile, staging_dir)
        )
    errors = (read[ERRORS], valid[ERRORS], scored[ERRORS]) | "AllErrors" >> beam.Flatten()
    return {PREDICTIONS: scored.predictions, ERRORS_DIR: errors} | "Write" >> WriteOutputs(
        staging_dir, spec.output_schema
    )
