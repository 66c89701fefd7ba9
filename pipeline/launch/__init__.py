"""Launch-time checks and decisions: what can be wrong is found before any row is scored.

`decide(options, runner)` is the launch, for a run and a dry run alike. It reads top to bottom as
its phases, each a module of this package: the flags (`flags`), the inputs (`inputs`), the
model (`model`), the columns and the probe (`columns`), the sinks (`sinks`), the night
decisions (`nights`), the worker installs (`installs`, through the runner seam). Each phase
raises ConfigError (exit 2) for what the user must fix and RunFailed (exit 3) for a service that
cannot be reached.
"""

from __future__ import annotations

import dataclasses
import datetime
import uuid
from typing import TYPE_CHECKING, Any

from apache_beam.options.pipeline_options import PipelineOptions

from pipeline import fingerprints, output
from pipeline.bigquery import BigQuerySink
from pipeline.launch import nights as night_decisions
from pipeline.launch.columns import decide_columns, probe
from pipeline.launch.flags import Flags, read_flags
from pipeline.launch.inputs import (
    Inputs,
    match_inputs,
    open_table,
    streams_wanted,
    table_columns,
)
from pipeline.launch.model import load_model
from pipeline.launch.sinks import check_sinks
from pipeline.nights import Nights
from pipeline.options import ScoringOptions
from scoring import decide as core
from transforms.bqread import is_table
from transforms.spec import ScoringSpec

if TYPE_CHECKING:
    from pipeline.runners import Runner


@dataclasses.dataclass(frozen=True)
class Launch:
    """What the launcher decided: the spec for the workers and the run's coordinates.

    Attributes:
        spec: what every worker needs.
        files: the input files the launcher matched (the workers match again).
        fingerprints: per input file, its (size, mtime in ms) as the launcher matched it; the
            workers' must be the same (pipeline.manifest.input_changes).
        input_pattern: the pattern, {run_date} filled and made absolute.
        output: the output directory, {run_date} filled and made absolute.
        run_date: the run date (YYYY-MM-DD).
        max_error_rate: the failure threshold.
        model_load_s: how long the launcher took to load the model.
        model: the model the launcher loaded (handed to in-process workers).
        library_versions: per library, the version the model was saved with and the running one.
        tracking_uri: the MLflow server, if any.
        mlflow_experiment: the MLflow experiment to log to, if any.
        bigquery: the predictions table, if any.
        bigquery_errors: the errors table, if any.
        openlineage_url: where OpenLineage events go (None: OPENLINEAGE_URL, or nowhere).
        unknown_categories: --unknown_categories (reject or score); what it decided for each
            categorical feature is in spec.facts.categorical (unknown_ok).
        input_checksums: per input file, its content's checksum (pipeline.fingerprints).
        input_fingerprint: the night's input content, over every file (None: not known).
    """

    spec: ScoringSpec
    files: tuple[str, ...]
    input_pattern: str
    output: str
    run_date: str
    max_error_rate: float
    model_load_s: float
    fingerprints: dict[str, tuple[int, int]] = dataclasses.field(default_factory=dict)
    model: Any = dataclasses.field(default=None, repr=False, compare=False)
    library_versions: dict = dataclasses.field(default_factory=dict)
    tracking_uri: str | None = None
    mlflow_experiment: str | None = None
    bigquery: BigQuerySink | None = None
    bigquery_errors: BigQuerySink | None = None
    openlineage_url: str | None = None
    unknown_categories: str = "reject"
    input_checksums: dict[str, str] = dataclasses.field(default_factory=dict)
    input_fingerprint: str | None = None


def decide(
    options: PipelineOptions, runner: Runner, dry_run: bool = False
) -> tuple[Launch, Nights]:
    """The whole launch, shared by a run and a dry run: every check and decision, the night's
    checks and history, and what remote workers must install (set on `options`).

    Args:
        options: the command line's options (ours and Beam's).
        runner: the runner seam of the runner Beam is asked for (pipeline.runners).
        dry_run: only translating the job: DIR is checked but nothing is written there.

    Returns:
        (the launch decisions, the night checks and history); raises ConfigError (exit 2) or
        RunFailed (exit 3).
    """
    opts = options.view_as(ScoringOptions)
    decided = prepare(opts, runner, staging_root=runner.staging_root(options), dry_run=dry_run)
    decided, nights = night_decisions.decide(opts, decided)
    runner.worker_installs(options, decided)
    return decided, nights


def prepare(
    opts: ScoringOptions,
    runner: Runner,
    today: datetime.date | None = None,
    staging_root: str | None = None,
    dry_run: bool = False,
) -> Launch:
    """Checks the configuration and inputs and decides the job (the night decisions aside).

    Args:
        opts: the parsed flags.
        today: the date {run_date} defaults to (UTC today when None).
        staging_root: where MLflow model artifacts are staged for remote workers (None: they
            stay in a local temp directory, fine for the DirectRunner).
        dry_run: only translating the job: DIR is checked but nothing is written there.
        runner: the runner seam (a BigQuery input asks it how many streams to read).

    Returns:
        The launch decisions; raises ConfigError (exit 2) or RunFailed (exit 3).
    """
    now = datetime.datetime.now(datetime.UTC)
    flags = read_flags(opts, today or now.date())
    if dry_run:
        output.check_reachable(flags.output)
        output.check_owned(flags.output)
    else:
        output.check_usable(flags.output)
    if is_table(flags.input_pattern):  # the table's columns, then the model, then the session
        table_types = table_columns(flags)
        model = load_model(flags, staging_root)
        inputs = open_table(flags, model, table_types, streams_wanted(opts, runner))
    else:
        inputs = match_inputs(flags)
        sums = fingerprints.Background(inputs.files)
        try:
            return _decided(opts, flags, now, inputs, load_model(flags, staging_root), sums)
        finally:
            sums.cancel()  # a no-op once they are in; a launch that refused wants them no more
    return _decided(opts, flags, now, inputs, model, None)


def _decided(
    opts: ScoringOptions,
    flags: Flags,
    now: datetime.datetime,
    inputs: Inputs,
    model: core.Model,
    sums: fingerprints.Background | None,
) -> Launch:
    """The rest of prepare(), once the inputs are matched and the model loaded; `sums`: the
    input checksums being worked out meanwhile (None: a table, which has none)."""
    features, keys = decide_columns(flags, inputs, model)
    baseline = core.drift_baseline(model.ref, features)
    row = probe(flags, inputs, model, features, keys, opts.explain, baseline)
    spec = ScoringSpec.of(
        row,
        run_id=new_run_id(now),
        input_format=inputs.fmt,
        input_pattern=flags.input_pattern,
        output=flags.output,
        text=flags.text,
        batch_size=flags.batch_size,
        baseline=baseline,
        table=inputs.table,
        run_date=flags.run_date,
        partitions=tuple(p for p in inputs.partitions if p in row.wanted),
    )
    predictions_sink, errors_sink = check_sinks(flags, spec)
    checksums = sums.result() if sums is not None else {}
    return Launch(
        spec=spec,
        files=inputs.files,
        fingerprints=inputs.fingerprints,
        input_pattern=flags.input_pattern,
        output=flags.output,
        run_date=flags.run_date,
        max_error_rate=flags.max_error_rate,
        model_load_s=model.load_s,
        model=model.model,
        library_versions=model.versions,
        tracking_uri=flags.tracking_uri,
        mlflow_experiment=flags.mlflow_experiment,
        bigquery=predictions_sink,
        bigquery_errors=errors_sink,
        openlineage_url=flags.openlineage_url,
        unknown_categories=flags.unknown_categories,
        input_checksums=checksums,
        input_fingerprint=fingerprints.night(checksums, inputs.files),
    )


def new_run_id(now: datetime.datetime) -> str:
    """A sortable, unique run id: UTC time plus 8 random hex digits."""
    return f"{now:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"
