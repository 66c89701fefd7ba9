"""Flags as the command lines define them, and the checks of their values.

`Flag` describes one flag (its --help line and the docs' generated flag reference); the model
flags are shared by `python -m pipeline.run` and `python -m pipeline.serve`. Each check turns a
bad value into a ConfigError: one line, exit 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re

import pyarrow as pa

from pipeline.errors import ConfigError
from scoring.decide import UNKNOWN_CATEGORIES


@dataclasses.dataclass(frozen=True)
class Flag:
    """One flag of a command line.

    Attributes:
        name: without the leading dashes.
        metavar: what its value looks like in --help ("" for a switch that takes no value).
        help: its meaning.
        default: its default, as --help shows it (None: no default).
        required: whether every run needs it.
    """

    name: str
    metavar: str
    help: str
    default: str | None = None
    required: bool = False

    @property
    def switch(self) -> bool:
        return not self.metavar

    def help_lines(self) -> list[str]:
        """Its two lines of --help: the flag, then its meaning and default."""
        head = f"  --{self.name}" + (f" {self.metavar}" if self.metavar else "")
        text = self.help
        if self.required:
            text += " (required)"
        elif self.default is not None:
            text += f" (default: {self.default})"
        return [head, f"      {text}"]


# The flags that say which model scores and how: the same words for the batch job and the service.
MODEL_FLAGS = {
    flag.name: flag
    for flag in (
        Flag(
            "model",
            "URI",
            "a .joblib/.pkl/.pickle file, an XGBoost .json/.ubj or LightGBM .txt model file, "
            "local or gs://; or an MLflow URI: runs:/<run>/<path>, models:/<name>/<version>, "
            "models:/<name>@<alias>",
            required=True,
        ),
        Flag("model_sha256", "HEX", "refuse a model whose SHA-256 differs"),
        Flag(
            "allow_version_mismatch",
            "",
            "load a model saved with another major.minor version of its library (scikit-learn, "
            "xgboost, lightgbm) instead of refusing it",
        ),
        Flag(
            "features",
            "A,B",
            "the model's feature columns (default: the model's own names; a model that names "
            "its features must get exactly those)",
        ),
        Flag(
            "column_types",
            "A:TYPE,...",
            "override the type decided for input columns (float64, int64, bool, string)",
        ),
        Flag(
            "unknown_categories",
            "|".join(UNKNOWN_CATEGORIES),
            "a category the model was not trained on, where the model does not declare how it "
            "takes one: reject the row at validate, naming the column and the value, or score it "
            "as the model's library does (XGBoost, LightGBM: as a missing value). A scikit-learn "
            "encoder with handle_unknown set to ignore one scores it either way; one set to error "
            "rejects it either way",
            default=UNKNOWN_CATEGORIES[0],
        ),
        Flag(
            "explain",
            "K",
            "reason codes: every prediction row gets reason_1..K (the input columns that moved "
            "its score most) and contribution_1..K (their exact contributions, in the model's "
            "raw output units); XGBoost, LightGBM, scikit-learn tree and linear models "
            "(default: off)",
        ),
        Flag(
            "mlflow_tracking_uri",
            "URI",
            "MLflow tracking/registry server (default: MLFLOW_TRACKING_URI)",
        ),
    )
}


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad value is one `error:` line (exit 2), not a usage dump of every flag."""

    def error(self, message: str):
        raise ConfigError(f"{message} (see --help and the README)")


TYPES = {
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


def absolute(path: str) -> str:
    """Local paths made absolute (workers may run elsewhere); URIs (gs://, runs:/) as given."""
    return path if re.match(r"^[a-z][a-z0-9+.-]*:/", path) else os.path.abspath(path)


def name_list(flag: str, value: str | None) -> tuple[str, ...] | None:
    """A comma-separated list of names (None when not given, or empty); a name given twice is
    refused."""
    if value is None:
        return None
    items = tuple(v.strip() for v in value.split(",") if v.strip())
    twice = sorted({v for v in items if items.count(v) > 1})
    if twice:
        raise ConfigError(f"{flag} names {', '.join(twice)} more than once")
    return items or None


def filled(flag: str, path: str, run_date: str) -> str:
    """A path with {run_date} filled; any other {name} is a misspelt placeholder (exit 2), not
    a directory to create."""
    other = sorted(set(re.findall(r"\{[A-Za-z_][A-Za-z0-9_]*\}", path)) - {"{run_date}"})
    if other:
        raise ConfigError(
            f"{flag} {path}: unknown placeholder {', '.join(other)} (the only one is {{run_date}})"
        )
    return path.replace("{run_date}", run_date)


def switch(flag: str, value: str | None) -> bool:
    """A switch's value: true or false (given alone, argparse makes it "true")."""
    text = str(value).strip().lower()
    if text not in ("true", "false"):
        raise ConfigError(f"{flag} takes no value, or true or false (not {value!r})")
    return text == "true"


def sha256_hex(value: str | None) -> str | None:
    """--model_sha256: 64 hex digits, lower-cased (None when not given)."""
    if value is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", value.strip()):
        raise ConfigError(f"--model_sha256 {value!r} is not 64 hex digits")
    return value.strip().lower() if value else None


def bounded_number(flag: str, value, kind: type, low: float, high: float):
    """A flag's number of this kind (int or float) from low to high."""
    try:
        number = kind(value)
    except (TypeError, ValueError):
        number = None
    if number is None or number != number or not low <= number <= high:
        raise ConfigError(f"{flag} {value!r} is not a number from {low} to {high}")
    return number


def type_overrides(value: str | None) -> dict[str, pa.DataType]:
    """--column_types: {column: Arrow type}."""
    out = {}
    for item in name_list("--column_types", value) or ():
        name, sep, type_name = item.rpartition(":")
        if not sep or not name or type_name.lower() not in TYPES:
            raise ConfigError(
                f"--column_types item {item!r} is not name:type with type one of "
                "float64, int64, bool, string"
            )
        if name in out:
            raise ConfigError(f"--column_types names {name} more than once")
        out[name] = TYPES[type_name.lower()]
    return out
