"""The launch's flags: every value checked (exit 2), with its default applied."""

from __future__ import annotations

import codecs
import dataclasses
import datetime
import os
import re

import pyarrow as pa

from pipeline.bigquery import TableRef, parse_table
from pipeline.errors import ConfigError
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
from scoring.decide import UNKNOWN_CATEGORIES
from transforms.bqread import is_table
from transforms.sources import FORMATS, is_tsv
from transforms.spec import TextFormat


@dataclasses.dataclass(frozen=True)
class Flags:
    """The flags' values, checked and with their defaults applied (read_flags)."""

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


def read_flags(opts: ScoringOptions, today: datetime.date) -> Flags:
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
    return Flags(
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
