"""Launch-time checks and decisions: what can be wrong is found before any row is scored."""

from __future__ import annotations

import dataclasses
import datetime
import logging
import os
import re
import uuid

import pyarrow as pa
from apache_beam.io.filesystems import FileSystems

from models import loading
from models.introspect import UnsupportedModel, inspect
from models.mlflow_models import MlflowUnreachable
from pipeline.bigquery import ERRORS_SCHEMA, BigQuerySink, parse_table
from pipeline.errors import ConfigError, RunFailed
from pipeline.options import ScoringOptions
from transforms.read import FORMATS, FileUnreadable, format_of, sample
from transforms.spec import LINEAGE_FIELDS, ScoringSpec

_TYPES = {
    "float64": pa.float64(),
    "double": pa.float64(),
    "float": pa.float64(),
    "int64": pa.int64(),
    "int": pa.int64(),
    "bool": pa.bool_(),
    "boolean": pa.bool_(),
    "string": pa.string(),
    "str": pa.string(),
}
_LOG = logging.getLogger(__name__)
_MLFLOW_TYPES = {
    "double": pa.float64(),
    "float": pa.float64(),
    "long": pa.int64(),
    "integer": pa.int64(),
    "boolean": pa.bool_(),
    "string": pa.string(),
}
_RESERVED = {"prediction", *(f.name for f in LINEAGE_FIELDS)}


@dataclasses.dataclass(frozen=True)
class Launch:
    """What the launcher decided: the spec for the workers and the run's coordinates."""

    spec: ScoringSpec
    files: tuple[str, ...]
    input_pattern: str
    output: str
    run_date: str
    max_error_rate: float
    model_load_s: float
    tracking_uri: str | None = None
    mlflow_experiment: str | None = None
    bigquery: BigQuerySink | None = None
    bigquery_errors: BigQuerySink | None = None


def new_run_id(now: datetime.datetime) -> str:
    """A sortable, unique run id: UTC time plus 8 random hex digits."""
    return f"{now:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"


def _absolute(path: str) -> str:
    """Local paths made absolute (workers may run elsewhere); URIs (gs://, runs:/) as given."""
    return path if re.match(r"^[a-z][a-z0-9+.-]*:/", path) else os.path.abspath(path)


def _split(value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    items = tuple(v.strip() for v in value.split(",") if v.strip())
    return items or None


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


def _number(flag: str, value, kind: type, low: float, high: float):
    try:
        number = kind(value)
    except (TypeError, ValueError):
        number = None
    if number is None or not low <= number <= high:
        raise ConfigError(f"{flag} {value!r} is not a number from {low} to {high}")
    return number


def _column_type_overrides(value: str | None) -> dict[str, pa.DataType]:
    out = {}
    for item in _split(value) or ():
        name, sep, type_name = item.rpartition(":")
        if not sep or not name or type_name.lower() not in _TYPES:
            raise ConfigError(
                f"--column_types item {item!r} is not name:type with type one of "
                "float64, int64, bool, string"
            )
        out[name] = _TYPES[type_name.lower()]
    return out


def _mostly_numbers(values: pa.ChunkedArray) -> bool:
    """Whether nine in ten of a sampled text column's values are numbers (the rest are dirt)."""
    import pandas as pd

    present = values.drop_null().to_pandas()
    if present.empty:
        return False
    return pd.to_numeric(present, errors="coerce").notna().mean() >= 0.9


def decide_type(name: str, first: pa.Table, is_feature: bool, facts) -> pa.DataType:
    """The type a column is cast to in every batch, decided once.

    Features the model encodes as categories take their categories' type; other numeric or
    boolean features become float64 (what scikit-learn computes in), and so does a text
    feature whose sampled values are nearly all numbers (one stray word must not make the
    column text); keys keep the input's type.
    """
    declared = first.schema.field(name).type
    if is_feature and pa.types.is_string(declared) and name not in facts.categorical:
        if _mostly_numbers(first.column(name)):
            return pa.float64()
    if pa.types.is_dictionary(declared):
        declared = declared.value_type
    if pa.types.is_large_string(declared):
        declared = pa.string()
    if is_feature:
        if name in facts.categorical:
            return facts.categorical[name]
        if (
            pa.types.is_integer(declared)
            or pa.types.is_floating(declared)
            or pa.types.is_boolean(declared)
            or pa.types.is_decimal(declared)
            or pa.types.is_null(declared)
        ):
            return pa.float64()
        return declared
    return pa.string() if pa.types.is_null(declared) else declared


def probe_missing(model, facts, features, columns: pa.Schema, first: pa.Table):
    """Which features the model takes as missing (null/NaN), found by asking it.

    Estimator tags describe a Pipeline by its first step (a scaler passes NaN on to a model
    that then raises), so the launcher predicts a real sampled row with one feature blanked
    at a time. Returns None (fall back to the tags) when the sample has no row the model
    scores as it is.
    """
    import pandas as pd

    from transforms.validate import cast_column

    rows = first.select(list(features)).slice(0, 20)
    # A value that does not convert is null here, and rows with a null are not probed.
    arrays = [
        cast_column(rows.column(f).combine_chunks(), columns.field(f).type)[0] for f in features
    ]
    frame = pa.table(arrays, names=list(features)).to_pandas()
    for i in range(len(frame)):
        row = frame.iloc[[i]]
        if row.isna().any(axis=None):
            continue
        try:
            model.predict(row)
        except Exception:  # noqa: BLE001 - this row is no good for probing, try the next
            continue
        accepted = set()
        for feature in features:
            blank = row.copy()
            blank[feature] = None if blank[feature].dtype == object else float("nan")
            try:
                model.predict(pd.DataFrame(blank))
            except Exception:  # noqa: BLE001 - the model refuses a missing value here
                continue
            accepted.add(feature)
        return frozenset(accepted)
    return None


def _first_sample(files: tuple[str, ...], fmt: str) -> pa.Table:
    """The sample of the first file that has columns: empty files have none, and an unreadable
    file is left for the run to report (files_failed) unless no file can be read at all."""
    problem = None
    for path in files:
        try:
            table = sample(path, fmt)
        except FileUnreadable as e:
            problem = problem or e
            continue
        if table.num_columns:
            return table
    if problem is not None:
        raise ConfigError(str(problem))
    raise ConfigError(f"every input file is empty ({len(files)} file(s), first {files[0]})")


def _signature(ref) -> dict[str, pa.DataType] | None:
    """An MLflow model's signature inputs as {column: Arrow type}, in order, or None."""
    if ref.kind != "mlflow":
        return None
    from models import mlflow_models

    inputs = mlflow_models.signature_inputs(mlflow_models.fetch(ref.path))
    if inputs is None:
        return None
    out = {}
    for name, mlflow_type in inputs:
        if mlflow_type not in _MLFLOW_TYPES:
            raise ConfigError(f"model signature column {name} has unsupported type {mlflow_type}")
        out[name] = _MLFLOW_TYPES[mlflow_type]
    return out


def _signature_type(name: str, wanted: pa.DataType, first: pa.Table, fmt: str) -> pa.DataType:
    """The signature's type for a column, once the input is known to cast to it safely."""
    declared = first.schema.field(name).type
    numeric = pa.types.is_integer(declared) or pa.types.is_floating(declared)
    safe = (
        declared == wanted
        or pa.types.is_null(declared)
        or pa.types.is_string(wanted)
        or (pa.types.is_floating(wanted) and (numeric or pa.types.is_boolean(declared)))
        or (pa.types.is_integer(wanted) and pa.types.is_integer(declared))
        or (pa.types.is_boolean(wanted) and pa.types.is_boolean(declared))
        # CSV/JSON sample: text that is (nearly) all numbers is a numeric column with dirt.
        or (
            fmt != "parquet"
            and pa.types.is_string(declared)
            and (pa.types.is_floating(wanted) or pa.types.is_integer(wanted))
            and _mostly_numbers(first.column(name))
        )
    )
    if not safe:
        raise ConfigError(
            f"input column {name} is {declared}, which does not cast safely to the model "
            f"signature's {wanted}"
        )
    return wanted


def probe_numpy(model, facts, features, columns: pa.Schema, first: pa.Table) -> bool:
    """Whether the model scores a float matrix exactly as it scores a DataFrame.

    Only then do batches skip the pandas conversion (measured: about half the prediction time
    of a light model). Needs all-float features and sampled rows to compare on.
    """
    import warnings

    import numpy as np

    from transforms.validate import cast_column

    if not all(pa.types.is_floating(columns.field(f).type) for f in features):
        return False
    rows = first.select(list(features)).slice(0, 50)
    arrays = [cast_column(rows.column(f).combine_chunks(), pa.float64())[0] for f in features]
    frame = pa.table(arrays, names=list(features)).to_pandas().dropna()
    if frame.empty:
        return False
    method = model.predict_proba if facts.classes else model.predict
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return bool(np.array_equal(method(frame), method(frame.to_numpy())))
    except Exception:  # noqa: BLE001 - the model wants a DataFrame
        return False


def prepare(
    opts: ScoringOptions, today: datetime.date | None = None, staging_root: str | None = None
) -> Launch:
    """Checks the configuration and inputs and decides the job; raises ConfigError (exit 2).

    Args:
        opts: the parsed flags.
        today: the date {run_date} defaults to (UTC today when None).
        staging_root: where MLflow model artifacts are staged for remote workers (None: they
            stay in a local temp directory, fine for the DirectRunner).

    Returns:
        The launch decisions.
    """
    now = datetime.datetime.now(datetime.UTC)
    for flag in ("input", "model", "output"):
        if not getattr(opts, flag):
            raise ConfigError(f"--{flag} is required")
    bigquery_table = parse_table(opts.bigquery_table) if opts.bigquery_table else None
    errors_table = (
        parse_table(opts.bigquery_errors_table, "--bigquery_errors_table")
        if opts.bigquery_errors_table
        else None
    )
    if bigquery_table and errors_table and bigquery_table == errors_table:
        raise ConfigError("--bigquery_errors_table must differ from --bigquery_table")
    tracking_uri = opts.mlflow_tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    mlflow_experiment = opts.mlflow_experiment or os.environ.get("MLFLOW_EXPERIMENT_NAME")
    if mlflow_experiment and not tracking_uri:
        raise ConfigError(
            f"logging to MLflow experiment {mlflow_experiment!r} needs --mlflow_tracking_uri "
            "or MLFLOW_TRACKING_URI"
        )
    if opts.input_format is not None and opts.input_format not in FORMATS:
        raise ConfigError(f"--input_format {opts.input_format!r} is not one of parquet, csv, jsonl")
    max_error_rate = _number("--max_error_rate", opts.max_error_rate, float, 0.0, 1.0)
    batch_size = _number("--batch_size", opts.batch_size, int, 1, 10_000_000)
    run_date = parse_run_date(opts.run_date, today or now.date())
    pattern = _absolute(opts.input.replace("{run_date}", run_date))
    output = _absolute(opts.output.replace("{run_date}", run_date))
    overrides = _column_type_overrides(opts.column_types)

    try:
        matched = FileSystems.match([pattern])[0].metadata_list
    except Exception as e:  # noqa: BLE001 - a bad pattern or unreachable bucket
        raise ConfigError(f"cannot list --input {pattern}: {str(e).splitlines()[0]}") from e
    files = tuple(sorted(m.path for m in matched if not m.path.endswith("/")))
    if not files:
        raise ConfigError(f"no input file matches {pattern}")
    fmt = opts.input_format or format_of(pattern) or format_of(files[0])
    if fmt not in FORMATS:
        raise ConfigError(
            f"cannot tell the input format of {files[0]}; give --input_format parquet|csv|jsonl"
        )

    try:
        ref = loading.resolve(_absolute(opts.model), opts.model_sha256, tracking_uri, staging_root)
        start = datetime.datetime.now()
        model = loading.load(ref)
        load_s = (datetime.datetime.now() - start).total_seconds()
        facts = inspect(model)
        signature = _signature(ref)
    except (loading.ModelError, UnsupportedModel) as e:
        raise ConfigError(str(e)) from e
    except MlflowUnreachable as e:
        raise RunFailed(str(e)) from e

    features = _split(opts.features) or (tuple(signature) if signature else None) or facts.features
    if not features:
        raise ConfigError(
            "the model does not name its features (no feature_names_in_); give --features a,b,..."
        )
    if facts.features and set(features) - set(facts.features):
        extra = sorted(set(features) - set(facts.features))
        raise ConfigError(
            f"--features names columns the model was not trained on: {', '.join(extra)}"
        )

    first = _first_sample(files, fmt)
    declared = first.schema
    missing = [f for f in features if f not in declared.names]
    if missing:
        raise ConfigError(f"input {files[0]} lacks model feature column(s): {', '.join(missing)}")
    keys = _split(opts.key_columns)
    if keys is None:
        keys = tuple(c for c in declared.names if c not in features and c not in _RESERVED)
    else:
        absent = [k for k in keys if k not in declared.names]
        if absent:
            raise ConfigError(f"input {files[0]} lacks key column(s): {', '.join(absent)}")
    clash = [k for k in keys if k in _RESERVED or k.startswith("proba_")]
    if clash:
        raise ConfigError(
            f"key column(s) {', '.join(clash)} clash with output columns; choose --key_columns"
        )
    unknown = sorted(set(overrides) - set(keys) - set(features))
    if unknown:
        raise ConfigError(f"--column_types names columns that are not read: {', '.join(unknown)}")

    fields = []
    for name in dict.fromkeys(keys + features):
        type_ = overrides.get(name)
        if type_ is None and name in (signature or {}):
            type_ = _signature_type(name, signature[name], first, fmt)
        type_ = type_ or decide_type(name, first, name in features, facts)
        fields.append(pa.field(name, type_))
    columns = pa.schema(fields)
    facts = dataclasses.replace(
        facts,
        missing_ok=probe_missing(model, facts, tuple(features), columns, first),
        numpy_ok=probe_numpy(model, facts, tuple(features), columns, first),
    )
    try:
        drift_baseline = loading.drift_baseline(ref)
    except Exception as e:  # noqa: BLE001 - a broken baseline must not stop the scoring
        _LOG.warning("ignoring the model's drift baseline: %s", e)
        drift_baseline = None
    if drift_baseline:
        drift_baseline = {k: v for k, v in drift_baseline.items() if k in features}
    spec = ScoringSpec(
        run_id=new_run_id(now),
        input_format=fmt,
        features=tuple(features),
        keys=tuple(keys),
        columns=columns,
        model=ref,
        facts=facts,
        batch_size=batch_size,
        baseline=drift_baseline or None,
        profile=bool(drift_baseline) or bool(mlflow_experiment),
    )
    sink = None
    if bigquery_table is not None:
        sink = BigQuerySink(
            bigquery_table,
            spec.output_schema,
            description=f"Predictions of {ref.uri} by beamscore, one partition per run date",
        )
        sink.check()
    errors_sink = None
    if errors_table is not None:
        errors_sink = BigQuerySink(
            errors_table,
            ERRORS_SCHEMA,
            description=f"Records rejected by beamscore runs (model {ref.uri}), by run date",
            what="errors",
        )
        errors_sink.check()
    return Launch(
        spec=spec,
        files=files,
        input_pattern=pattern,
        output=output,
        run_date=run_date,
        max_error_rate=max_error_rate,
        model_load_s=load_s,
        tracking_uri=tracking_uri,
        mlflow_experiment=mlflow_experiment,
        bigquery=sink,
        bigquery_errors=errors_sink,
    )
