"""The launch's columns: the features and keys the input holds, then the probe (the scoring
core asks the model what each feature takes, on the first file's sample)."""

from __future__ import annotations

import pyarrow as pa

from pipeline.errors import ConfigError, refusals
from pipeline.launch.flags import Flags
from pipeline.launch.inputs import Inputs
from scoring import decide
from scoring.spec import LINEAGE_FIELDS, RowSpec
from transforms.read import hinted
from transforms.spec import TextFormat

_RESERVED = {"prediction", *(f.name for f in LINEAGE_FIELDS)}


def decide_columns(
    flags: Flags, inputs: Inputs, model: decide.Model
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


def probe(
    flags: Flags,
    inputs: Inputs,
    model: decide.Model,
    features: tuple[str, ...],
    keys: tuple[str, ...],
    explain: str | None,
    baseline: dict | None,
) -> RowSpec:
    """The scoring core's row spec: what each feature's column takes (asked of the model on the
    first file's sample), how keys are typed, what --explain does."""
    with refusals():
        return decide.row_spec(
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
            explain=explain,
            baseline=baseline,
        )
