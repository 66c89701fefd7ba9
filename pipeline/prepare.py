"""Launch-time checks and decisions: what can be wrong is found before any row is scored.

`prepare` reads top to bottom as its phases: the flags, the inputs, the model, the columns and
their types (asking the model what it takes), then the sinks. Each phase raises ConfigError
(exit 2) for what the user must fix and RunFailed (exit 3) for a service that cannot be reached.
"""

from __future__ import annotations

import codecs
import dataclasses
import datetime
import logging
import os
import re
import uuid
from typing import Any

import pyarrow as pa
from apache_beam.io.filesystems import FileSystems

from models.errors import is_unreachable, one_line
from pipeline import fingerprints, gcs, output
from pipeline.bigquery import ERRORS_SCHEMA, BigQuerySink, TableRef, parse_table
from pipeline.errors import ConfigError, RunFailed, refusals
from pipeline.flags import (
    absolute,
    bounded_number,
    filled,
    name_list,
    sha256_hex,
    switch,
    type_overrides,
)
from pipeline.options import ScoringOptions
from scoring import decide
from scoring.decide import UNKNOWN_CATEGORIES
from scoring.spec import LINEAGE_FIELDS
from transforms import bqread
from transforms.bqread import is_table
from transforms.read import hinted
from transforms.samples import sample
from transforms.sources import (
    FORMATS,
    FileUnreadable,
    Outputs,
    fingerprint,
    format_of,
    is_tsv,
    one_name_each,
    partition_values,
    with_partitions,
)
from transforms.spec import ScoringSpec, TextFormat

_LOG = logging.getLogger(__name__)
_RESERVED = {"prediction", *(f.name for f in LINEAGE_FIELDS)}


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


@dataclasses.dataclass(frozen=True)
class _Flags:
    """The flags' values, checked and with their defaults applied."""

    input_pattern: str
    input_format: str | None
    text: TextFormat
    model_uri: str
    model_sha256: str | None
    allow_version_mismatch: bool
    output: str
    keys: tuple[str, ...] | None
    features: tuple[str, ...] | None
    overrides: dict[str, pa.DataType]
    max_error_rate: float
    batch_size: int
    run_date: str
    tracking_uri: str | None
    mlflow_experiment: str | None
    bigquery: TableRef | None
    bigquery_errors: TableRef | None
    openlineage_url: str | None
    unknown_categories: str
    input_filter: str | None = None


@dataclasses.dataclass(frozen=True)
class _Inputs:
    """The matched input files, their format, and the first readable file's sample."""

    files: tuple[str, ...]
    fmt: str
    first: pa.Table | None  # None: every input file is empty
    first_path: str | None
    fingerprints: dict[str, tuple[int, int]] = dataclasses.field(default_factory=dict)
    table: Any = None  # a BigQuery table input's read session (transforms.bqread.TableInput)
    partitions: tuple[str, ...] = ()  # the first file's name=value folders: text columns


def prepare(
    opts: ScoringOptions,
    today: datetime.date | None = None,
    staging_root: str | None = None,
    dry_run: bool = False,
) -> Launch:
    """Checks the configuration and inputs and decides the job.

    Args:
        opts: the parsed flags.
        today: the date {run_date} defaults to (UTC today when None).
        staging_root: where MLflow model artifacts are staged for remote workers (None: they
            stay in a local temp directory, fine for the DirectRunner).
        dry_run: only translating the job: DIR is checked but nothing is written there.

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
        table_types = _table_columns(flags)
        model = load_model(flags, staging_root)
        inputs = open_table(flags, model, table_types, _streams_wanted(opts))
    else:
        inputs = match_inputs(flags)
        model = load_model(flags, staging_root)
    features, keys = decide_columns(flags, inputs, model)
    baseline = decide.drift_baseline(model.ref, features)
    with refusals():
        row = decide.row_spec(
            model,
            features,
            keys,
            first=inputs.first,
            fmt=inputs.fmt,
            source=inputs.first_path,
            # A partition key is text as its folder spells it, in every format (a feature
            # takes the type the model needs); --column_types types it otherwise.
            overrides={
                **{p: pa.string() for p in inputs.partitions if p in keys and p not in features},
                **flags.overrides,
            },
            unknown_categories=flags.unknown_categories,
            explain=opts.explain,
            baseline=baseline,
        )
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
    checksums = fingerprints.contents(inputs.files) if inputs.table is None else {}
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


# ---------------------------------------------------------------------------------------------
# Phase 1: the flags


def read_flags(opts: ScoringOptions, today: datetime.date) -> _Flags:
    """Checks every flag's value; the defaults are applied here."""
    for flag in ("input", "model", "output"):
        if not getattr(opts, flag):
            raise ConfigError(f"--{flag} is required")
    predictions_table = parse_table(opts.bigquery_table) if opts.bigquery_table else None
    errors_table = (
        parse_table(opts.bigquery_errors_table, "--bigquery_errors_table")
        if opts.bigquery_errors_table
        else None
    )
    if predictions_table and errors_table and predictions_table == errors_table:
        raise ConfigError("--bigquery_errors_table must differ from --bigquery_table")
    tracking_uri = opts.mlflow_tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    mlflow_experiment = opts.mlflow_experiment or os.environ.get("MLFLOW_EXPERIMENT_NAME")
    if opts.model.startswith(("models:/", "runs:/")) and not tracking_uri:
        raise ConfigError(
            f"--model {opts.model} is in an MLflow registry: say which with "
            "--mlflow_tracking_uri or MLFLOW_TRACKING_URI"
        )
    if mlflow_experiment and not tracking_uri:
        raise ConfigError(
            f"logging to MLflow experiment {mlflow_experiment!r} needs --mlflow_tracking_uri "
            "or MLFLOW_TRACKING_URI"
        )
    if is_table(opts.input) and opts.input_format is not None:
        raise ConfigError(
            f"--input_format {opts.input_format} is for files; --input {opts.input} is a "
            "BigQuery table, read as the table's own types: leave --input_format out"
        )
    if opts.input_filter is not None and not is_table(opts.input):
        raise ConfigError(
            "--input_filter filters the rows of a BigQuery table input (--input bq://...); "
            f"--input {opts.input} is files"
        )
    if opts.input_format is not None and opts.input_format not in FORMATS:
        raise ConfigError(f"--input_format {opts.input_format!r} is not one of parquet, csv, jsonl")
    if opts.unknown_categories not in UNKNOWN_CATEGORIES:
        raise ConfigError(
            f"--unknown_categories {opts.unknown_categories!r} is not one of "
            f"{', '.join(UNKNOWN_CATEGORIES)}"
        )
    run_date = parse_run_date(opts.run_date, today)
    pattern = absolute(filled("--input", opts.input, run_date))
    return _Flags(
        input_pattern=pattern,
        input_format=opts.input_format,
        text=_text_format(opts, pattern),
        model_uri=absolute(opts.model),
        model_sha256=sha256_hex(opts.model_sha256),
        allow_version_mismatch=switch("--allow_version_mismatch", opts.allow_version_mismatch),
        output=absolute(filled("--output", opts.output, run_date)).rstrip("/"),
        keys=name_list("--key_columns", opts.key_columns),
        features=name_list("--features", opts.features),
        overrides=type_overrides(opts.column_types),
        max_error_rate=bounded_number("--max_error_rate", opts.max_error_rate, float, 0.0, 1.0),
        batch_size=bounded_number("--batch_size", opts.batch_size, int, 1, 10_000_000),
        run_date=run_date,
        tracking_uri=tracking_uri,
        mlflow_experiment=mlflow_experiment,
        bigquery=predictions_table,
        bigquery_errors=errors_table,
        openlineage_url=opts.openlineage_url,
        unknown_categories=opts.unknown_categories,
        input_filter=filled("--input_filter", opts.input_filter, run_date).strip()
        if opts.input_filter
        else None,
    )


def parse_run_date(value: str | None, today: datetime.date) -> str:
    """Checks --run_date (YYYY-MM-DD) and defaults it to today."""
    if value is None:
        return today.isoformat()
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        try:
            return datetime.date.fromisoformat(value).isoformat()
        except ValueError:
            pass
    raise ConfigError(f"--run_date {value!r} is not a date in the form YYYY-MM-DD")


def _text_format(opts: ScoringOptions, pattern: str) -> TextFormat:
    """The encoding and delimiter of text input; the encoding must keep ASCII bytes as they are
    (newlines, quotes and delimiters are found in the raw bytes)."""
    name = opts.input_encoding or "utf-8"
    try:
        info = codecs.lookup(name)
    except LookupError:
        raise ConfigError(f"--input_encoding {name!r} is not an encoding Python knows") from None
    sample_text = '\n\r,;\t|"{}[]:0123456789abcdefghijklmnopqrstuvwxyz'
    try:
        ascii_safe = sample_text.encode(info.name) == sample_text.encode("ascii")
    except UnicodeError:
        ascii_safe = False
    if not ascii_safe:
        raise ConfigError(
            f"--input_encoding {name!r} does not write ASCII as ASCII (e.g. UTF-16); convert "
            "the input to UTF-8 (iconv -f ... -t utf-8)"
        )
    delimiter = opts.csv_delimiter
    if delimiter is None:  # what the name says: .tsv, .tsv.gz, .tsv.zst, ... hold tabs
        delimiter = "\t" if is_tsv(pattern) else ","
    delimiter = {"tab": "\t", "\\t": "\t"}.get(delimiter.lower(), delimiter)
    if len(delimiter) != 1 or delimiter in '\r\n"' or ord(delimiter) > 127:
        raise ConfigError(
            f"--csv_delimiter {opts.csv_delimiter!r} must be one ASCII character other than a "
            "quote or a line end (or 'tab')"
        )
    return TextFormat(encoding=info.name, delimiter=delimiter)


# ---------------------------------------------------------------------------------------------
# Phase 2: the inputs


def match_files(pattern: str, flag: str) -> dict:
    """The files (not directories) a pattern matches: their metadata by path. A pattern that
    cannot be listed is exit 2, or exit 3 when its storage does not answer."""
    try:
        matched = FileSystems.match([pattern])[0].metadata_list
    except Exception as e:  # noqa: BLE001 - a bad pattern or unreachable bucket
        if is_unreachable(e):
            raise RunFailed(f"cannot list {flag} {pattern}: {one_line(e)}") from e
        raise ConfigError(f"cannot list {flag} {pattern}: {one_line(e)}") from e
    return {m.path: m for m in matched if not m.path.endswith("/")}


def match_inputs(flags: _Flags) -> _Inputs:
    """Matches --input (without the output directory's files) and samples the first file."""
    pattern = flags.input_pattern
    if pattern.startswith("gs://"):
        gcs.check_flag(pattern, "--input")
    elif os.path.isdir(pattern):
        raise ConfigError(
            f"--input {pattern} is a directory: give a pattern of its files, e.g. "
            f"'{pattern.rstrip('/')}/*.parquet'"
        )
    metas = match_files(pattern, "--input")
    every = sorted(metas)
    outputs = Outputs(flags.output)
    skipped = {f for f in every if outputs.holds(f)}
    files = one_name_each(f for f in every if f not in skipped)
    if aliases := len(every) - len(skipped) - len(files):
        _LOG.info("%d matched name(s) are another name of a matched file: read once", aliases)
    fingerprints = {f: fingerprint(metas[f]) for f in files}
    if not every:
        raise ConfigError(f"no input file matches {pattern}")
    if not files:
        raise ConfigError(
            f"every file matching {pattern} lies under --output {flags.output} or another "
            "output directory of this tool; a run never reads its own output"
        )
    if skipped:
        _LOG.info(
            "not reading %d file(s) of output directories (this run's %s, or earlier runs')",
            len(skipped),
            flags.output,
        )
    fmt = flags.input_format or format_of(pattern) or format_of(files[0])
    if fmt not in FORMATS:
        raise ConfigError(
            f"cannot tell the input format of {files[0]}; give --input_format parquet|csv|jsonl"
        )
    problem = None
    headed = None  # the first file with columns but no rows: an empty file decides nothing
    for path in files:
        try:
            table = sample(path, fmt, flags.text)
        except FileUnreadable as e:
            problem = problem or e
            continue
        if table.num_columns:
            _check_unique_names(table.column_names, path)
            names = _partitions(table, path)
            table = with_partitions(table, path, names)
            if table.num_rows:
                return _Inputs(files, fmt, table, path, fingerprints, partitions=names)
            headed = headed or (table, path, names)
    if headed is not None:
        return _Inputs(files, fmt, headed[0], headed[1], fingerprints, partitions=headed[2])
    if problem is not None:
        raise ConfigError(str(problem))
    _LOG.warning("every input file is empty (%d file(s)): the run reads 0 rows", len(files))
    return _Inputs(files, fmt, None, None, fingerprints)


def _partitions(table: pa.Table, path: str) -> tuple[str, ...]:
    """The name=value folders of the file's path that are columns (not inside the file); a
    name the file holds too is read from the file, and refused when its values differ."""
    folders = partition_values(path)
    for name, value in folders.items():
        if name not in table.column_names:
            continue
        held = table.column(name).drop_null()
        try:
            spelled = set(held.cast(pa.string()).to_pylist()) if len(held) else set()
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            spelled = {f"a {held.type} value"}
        if spelled - {value}:
            shown = ", ".join(repr(v) for v in sorted(spelled - {value})[:3])
            raise ConfigError(
                f"column {name} is both the folder {name}={value} of {path} and a column of "
                f"the file holding {shown}: rename one of them"
            )
    return tuple(n for n in folders if n not in table.column_names)


# The BigQuery types a feature may have: what the model takes (numbers, booleans, text).
_FEATURE_TYPES = {
    "INTEGER",
    "INT64",
    "FLOAT",
    "FLOAT64",
    "NUMERIC",
    "BIGNUMERIC",
    "BOOLEAN",
    "BOOL",
    "STRING",
}


def _table_columns(flags: _Flags) -> dict[str, str]:
    """A BigQuery table input's columns and their BigQuery types (exit 2: no such table, or
    one the Storage Read API cannot read; exit 3: BigQuery unreachable)."""
    try:
        names, types = bqread.table_columns(flags.input_pattern)
    except bqread.TableRefused as e:
        raise ConfigError(str(e)) from e
    except bqread.TableUnreachable as e:
        raise RunFailed(str(e)) from e
    return {name: types[name] for name in names}


def _streams_wanted(opts: ScoringOptions) -> int:
    """How many streams to ask a read session for: a few per worker the runner was asked for
    (0 on Dataflow without a worker count: BigQuery decides from the table's size)."""
    flags = opts.get_all_options()
    workers = flags.get("max_num_workers") or flags.get("num_workers")
    if workers:
        return min(4 * int(workers), 1000)
    from pipeline.runners import named

    return named(str(flags.get("runner") or "")).default_streams(flags)


def open_table(flags: _Flags, model: decide.Model, types: dict[str, str], streams: int) -> _Inputs:
    """A BigQuery table input: the columns the run needs are checked against the table, then
    the run's read session is created (only those columns, --input_filter as its row
    restriction) and its first rows sampled, as a file's are."""
    uri = flags.input_pattern
    names = list(types)
    with refusals():
        features = decide.choose_features(model, flags.features)
    missing = [f for f in features if f not in types]
    if missing:
        raise ConfigError(
            f"BigQuery table {uri} lacks model feature column(s): {hinted(missing, names)}"
        )
    keys = flags.keys if flags.keys is not None else tuple(c for c in names if c not in features)
    absent = [k for k in keys if k not in types]
    if absent:
        raise ConfigError(f"BigQuery table {uri} lacks key column(s): {hinted(absent, names)}")
    bad = {
        f: types[f]
        for f in features
        if types[f].upper() not in _FEATURE_TYPES and f not in flags.overrides
    }
    if bad:
        listed = ", ".join(f"{f} ({t})" for f, t in bad.items())
        raise ConfigError(
            f"BigQuery table {uri}: feature column(s) {listed} are of a type the model cannot "
            "take (numbers, booleans or text); convert them in a table the run reads"
        )
    wanted = list(dict.fromkeys(keys + features))
    try:
        table, first = bqread.create_session(uri, wanted, flags.input_filter or "", streams)
        if 0 < len(table.streams) < streams:  # more work units than the service handed out
            split = bqread.split_streams(bqread.read_client(), table.streams, streams)
            table = dataclasses.replace(table, streams=split)
    except bqread.TableRefused as e:
        raise ConfigError(str(e)) from e
    except bqread.TableUnreachable as e:
        raise RunFailed(str(e)) from e
    except Exception as e:  # noqa: BLE001 - SplitReadStream: sorted like the rest
        if is_unreachable(e):
            raise RunFailed(f"BigQuery is unreachable: {one_line(e)}") from e
        raise ConfigError(f"BigQuery table {uri}: {one_line(e)}") from e
    if not first.num_rows:
        where = (
            f"--input_filter {flags.input_filter!r} selects no rows of"
            if flags.input_filter
            else "no rows in"
        )
        _LOG.warning("%s BigQuery table %s: the run reads 0 rows", where, uri)
    _LOG.info(
        "BigQuery table %s: read session %s, %d stream(s), snapshot %s",
        uri,
        table.session,
        len(table.streams),
        table.snapshot_time,
    )
    return _Inputs((uri,), "bigquery", first, uri, {uri: (0, 0)}, table)


def _check_unique_names(names: list[str], path: str) -> None:
    seen = set()
    for name in names:
        if name in seen:
            raise ConfigError(f"input {path} has the column name {name!r} more than once")
        seen.add(name)


# ---------------------------------------------------------------------------------------------
# Phase 3: the model


def load_model(flags: _Flags, staging_root: str | None) -> decide.Model:
    """Resolves, loads and inspects the model; checks the library versions it was saved with."""
    if flags.model_uri.startswith("gs://"):
        gcs.check_flag(flags.model_uri, "--model")
    if (
        staging_root
        and staging_root.startswith("gs://")
        and flags.model_uri.startswith(("runs:/", "models:/"))
    ):  # the launcher stages an MLflow model there for the workers
        gcs.check_flag(staging_root, "--temp_location")
    with refusals():
        return decide.load_model(
            flags.model_uri,
            flags.model_sha256,
            flags.tracking_uri,
            staging_root,
            flags.allow_version_mismatch,
        )


# ---------------------------------------------------------------------------------------------
# Phase 4: the columns, their types, and what the model takes


def decide_columns(
    flags: _Flags, inputs: _Inputs, model: decide.Model
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The features (in the model's order) and the keys, once the input holds them and no key
    is named like an output column (their types are the scoring core's: scoring.decide)."""
    with refusals():
        features = decide.choose_features(model, flags.features)
    first = inputs.first
    names = first.column_names if first is not None else []
    if first is not None:
        missing = [f for f in features if f not in names]
        if missing:
            raise ConfigError(
                f"input {inputs.first_path} lacks model feature column(s): "
                f"{hinted(missing, names)}{_delimiter_hint(names, inputs.fmt, flags.text)}"
            )
    keys = flags.keys
    if keys is None:
        # A partition folder named like an output column (run_date=...) is no key by default.
        keys = tuple(
            c
            for c in names
            if c not in features and not (c in inputs.partitions and _is_output_name(c))
        )
    elif first is not None:
        absent = [k for k in keys if k not in names]
        if absent:
            raise ConfigError(
                f"input {inputs.first_path} lacks key column(s): {hinted(absent, names)}"
            )
    clash = [k for k in keys if _is_output_name(k)]
    if clash:
        others = [c for c in names if c not in features + keys and not _is_output_name(c)]
        raise ConfigError(_key_clash(clash, keys, flags.keys is not None, others))
    unknown = sorted(set(flags.overrides) - set(keys) - set(features))
    if unknown:
        raise ConfigError(f"--column_types names columns that are not read: {', '.join(unknown)}")
    return features, keys


def _is_output_name(name: str) -> bool:
    return name in _RESERVED or name.startswith("proba_")


def _key_clash(clash: list[str], keys: tuple[str, ...], given: bool, others: list[str]) -> str:
    """Why key columns named like an output column are refused, and how to leave them out
    (`others`: the input's columns that could be keys instead)."""
    named, them = ", ".join(clash), "it" if len(clash) == 1 else "them"
    what = (
        f"--key_columns names {named}"
        if given
        else f"input column(s) {named} would be key columns (by default every input column that "
        "is not a model feature is one)"
    )
    kept = [k for k in keys if k not in clash] or others
    fix = (
        f"leave {them} out with --key_columns listing the keys to keep: "
        f"--key_columns {','.join(kept)}"
        if kept
        else f"no other input column is left to keep as a key: rename {them} upstream"
    )
    return (
        f"{what}, but the output writes its own column(s) of that name (prediction, "
        f"proba_<class>, model_uri, model_version, run_id, scored_at); {fix}"
    )


def _delimiter_hint(names: list[str], fmt: str, text: TextFormat) -> str:
    """A hint when a CSV header read as one column holds another likely delimiter."""
    if fmt != "csv" or len(names) != 1:
        return ""
    for candidate, flag in ((";", ";"), ("\t", "tab"), ("|", "|")):
        if candidate != text.delimiter and candidate in names[0]:
            return (
                f" (its header is one column {names[0][:60]!r}: is the file separated by "
                f"{flag!r}? set --csv_delimiter '{flag}')"
            )
    return ""


# ---------------------------------------------------------------------------------------------
# Phase 5: the sinks


def check_sinks(flags: _Flags, spec: ScoringSpec) -> tuple[BigQuerySink | None, ...]:
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
