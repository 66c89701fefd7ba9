"""The launch's sinks: the BigQuery tables exist or can be made, with columns for the output."""

from __future__ import annotations

from pipeline.bigquery import ERRORS_SCHEMA, BigQuerySink
from pipeline.launch.flags import Flags
from transforms.spec import ScoringSpec


def check_sinks(flags: Flags, spec: ScoringSpec) -> tuple[BigQuerySink | None, ...]:
    """The BigQuery tables exist or can be made, with columns that take this run's output."""
    predictions = errors = None
    if flags.bigquery is not None:
        predictions = BigQuerySink(
            flags.bigquery,
            spec.output_schema,
            description=f"Predictions of {spec.model.uri} by beamscore, one partition per run date",
        )
        predictions.check()
    if flags.bigquery_errors is not None:
        errors = BigQuerySink(
            flags.bigquery_errors,
            ERRORS_SCHEMA,
            description=f"Records rejected by beamscore runs (model {spec.model.uri}), by run date",
            what="errors",
        )
        errors.check()
    return predictions, errors
