"""Builds the scoring graph from the launch decisions; runs nothing.

    pattern -> match -> plan units -> (spread) -> read -> validate -> predict -> write
                                                   \\--------\\----------\\--> errors -> write
    write -> summary -> commit

Besides the output files, the graph writes one JSON file next to them in the staging directory:
the run summary (files written, per-file counts and totals, profile, errors in brief), which its
last stage, the commit (pipeline.commit), reads.
"""

from __future__ import annotations

import json

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.utils import shared

from pipeline.commit import CommitFn, CommitPlan, KeepLock
from transforms.numbering import NumberedErrors
from transforms.predict import PredictBatches
from transforms.profile import ProfileFn
from transforms.read import ReadUnits
from transforms.spec import ERRORS, PROFILE, STATS, UNITS, ScoringSpec
from transforms.summary import SUMMARY_FILE, RunSummary
from transforms.units import PlanInput
from transforms.validate import ValidateBatches
from transforms.write import ERRORS_DIR, PREDICTIONS, WriteOutputs


def build(p: beam.Pipeline, spec: ScoringSpec, staging_dir: str, commit: CommitPlan | None = None):
    """Adds plan -> read -> validate -> predict -> write -> summary -> commit to a pipeline.

    Args:
        p: the pipeline to add to.
        spec: the launch decisions (the input pattern is matched again by the workers).
        staging_dir: where this run's files go until the commit stage moves them.
        commit: the commit stage's plan; None builds the graph up to the summary (tests).

    Returns:
        The PCollection of the committed manifest (of the run summary's path, without commit).
    """
    read_label = (
        "Read"
        + {
            "parquet": "Parquet",
            "csv": "Csv",
            "jsonl": "JsonLines",
            "bigquery": "BigQueryStreams",
        }[spec.input_format]
    )
    planned = p | "PlanInput" >> PlanInput(spec)
    units = planned["units"]
    if commit is not None and not commit.launcher_waits:  # the workers keep the lock fresh
        units = units | "KeepLock" >> beam.ParDo(KeepLock(commit.launch.output, spec.run_id))
    read = units | read_label >> beam.ParDo(ReadUnits(spec)).with_outputs(
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
    errors = (planned[ERRORS], read[ERRORS], valid[ERRORS], scored[ERRORS]) | "AllErrors" >> (
        beam.Flatten()
    )
    if spec.table is not None:  # rows are numbered within their stream, which is named
        errors = errors | "NameStreams" >> beam.Map(with_stream, spec.table.streams)
    elif spec.input_format != "parquet":  # a Parquet reader numbers its rows file-wide itself
        errors = errors | "NumberErrors" >> NumberedErrors(read[UNITS])
    written = {PREDICTIONS: scored.predictions, ERRORS_DIR: errors} | "Write" >> WriteOutputs(
        staging_dir, spec.output_schema
    )
    summary = (
        (planned[STATS], read[STATS], valid[STATS], scored[STATS], scored[PROFILE], written)
        | "SummaryParts" >> beam.Flatten()
        | "Summary" >> beam.CombineGlobally(RunSummary(profiler))
        | "WriteSummary" >> beam.Map(write_json, staging_dir, SUMMARY_FILE)
    )
    if commit is None:
        return summary
    # A Reshuffle between them: a retried commit does not write the summary again.
    return summary | "BeforeCommit" >> beam.Reshuffle() | "Commit" >> beam.ParDo(CommitFn(commit))


def with_stream(record: dict, streams: tuple[str, ...]) -> dict:
    """An error record of a table input with the stream its row came from (`row_index` is
    the row's position within that stream)."""
    unit = record.pop("_unit", None)
    if unit is not None:
        record["stream"] = streams[unit]
    return record


def write_json(data: dict, staging_dir: str, name: str) -> str:
    """Writes one of the run's JSON files into the staging directory, for the commit stage."""
    path = FileSystems.join(staging_dir, name)
    with FileSystems.create(path, mime_type="application/json") as f:
        f.write(json.dumps(data).encode())
    return path
