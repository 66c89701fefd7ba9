"""What is decided once, before any row is scored: the model, the features and their types,
the key types, what the model takes (asked of it), and how its rows are explained.

The batch launcher (pipeline.launch) decides from the model and the first input file's sample;
the online service (service) from the model alone, or from a committed night's manifest. Both
get the same `RowSpec` for the same model and sample. A refusal is `Refused`: exit 2 in both.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import re
import time
import warnings
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute  # noqa: F401 - pa.compute below

from models import loading
from models.errors import one_line
from models.introspect import ModelFacts, inspect
from models.loading import ModelRef
from scoring.spec import RowSpec
from scoring.values import cast, is_text

_LOG = logging.getLogger(__name__)
_MLFLOW_TYPES = {
    "double": pa.float64(),
    "float": pa.float64(),
    "long": pa.int64(),
    "integer": pa.int64(),
    "boolean": pa.bool_(),
    "string": pa.string(),
}
_CANONICAL_INT = re.compile(r"0|-?[1-9][0-9]{0,17}")
PROBE_ROWS = 20
# The values of --unknown_categories, the default first.
UNKNOWN_CATEGORIES = ("reject", "score")


class Refused(Exception):
    """What cannot be scored as asked, found before any row is: exit 2, one line."""


@dataclasses.dataclass(frozen=True)
class Model:
    """A resolved, loaded and inspected model.

    Attributes:
        ref: where it is and what it is (lineage, the workers' copy).
        model: the loaded model.
        facts: what its fitted structure tells (models.introspect).
        signature: an MLflow model's signature inputs as {column: Arrow type}, or None.
        load_s: how long loading took.
        versions: per library, the version the model was saved with and the running one.
    """

    ref: ModelRef
    model: Any
    facts: ModelFacts
    signature: dict[str, pa.DataType] | None
    load_s: float
    versions: dict[str, dict[str, str]]


def load_model(
    uri: str,
    sha256: str | None = None,
    tracking_uri: str | None = None,
    staging_root: str | None = None,
    allow_version_mismatch: bool = False,
) -> Model:
    """Resolves, loads and inspects a model; checks the library versions it was saved with.

    Raises ModelError or Refused (exit 2) and ModelServiceUnreachable (exit 3).
    """
    ref = loading.resolve(uri, sha256, tracking_uri, staging_root)
    start = time.monotonic()
    model, saved = loading.load(ref)
    load_s = time.monotonic() - start
    facts = inspect(model)
    signature = signature_types(ref)
    versions = check_versions(saved, allow_version_mismatch, ref.uri)
    return Model(ref, model, facts, signature, load_s, versions)


def row_spec(
    model: Model,
    features: tuple[str, ...],
    keys: tuple[str, ...],
    *,
    first: pa.Table | None = None,
    fmt: str = "jsonl",
    source: str | None = None,
    overrides: dict[str, pa.DataType] | None = None,
    unknown_categories: str = "reject",
    explain: str | None = None,
    baseline: dict | None = None,
) -> RowSpec:
    """How every row is scored: each column's type, the model's facts refined by asking it,
    the unknown-category rule applied, and the --explain plan.

    Args:
        model: the loaded model.
        features: the feature columns, in the model's order (choose_features).
        keys: the key columns (typed and written as the input spells them).
        first: the first input file's sample (None: decided from the model alone).
        fmt: the input's format (parquet, csv, jsonl, bigquery): how its values are spelled.
        source: what the sample was read from (named in refusals).
        overrides: --column_types.
        unknown_categories: reject or score (--unknown_categories).
        explain: --explain's value (None: off).
        baseline: the model's drift baseline (linear reasons take their reference there).
    """
    overrides = overrides or {}
    columns, key_types = column_types(model, features, keys, overrides, first, fmt, source)
    facts = probe(model.model, model.facts, features, columns, first)
    if unknown_categories == "score":
        facts = facts.scoring_unknown_categories()
    plan = plan_explain(explain, model.model, features, keys, columns, facts, first, baseline)
    return RowSpec(
        features=features,
        keys=keys,
        columns=columns,
        model=model.ref,
        facts=facts,
        key_types=key_types,
        explain=plan,
    )


def column_types(
    model: Model,
    features: tuple[str, ...],
    keys: tuple[str, ...],
    overrides: dict[str, pa.DataType],
    first: pa.Table | None,
    fmt: str,
    source: str | None = None,
) -> tuple[pa.Schema, dict[str, pa.DataType]]:
    """Every column's run type (a key that is a feature has its feature type), and the
    written type of each key that is also a feature (the input's, not the model's)."""
    fields = []
    for name in dict.fromkeys(keys + features):
        type_ = overrides.get(name)
        if type_ is None and name in (model.signature or {}):
            type_ = signature_type(name, model.signature[name], first, fmt)
        if type_ is None and name in features:
            type_ = decide_feature_type(name, first, model.facts, source)
        fields.append(pa.field(name, type_ or decide_key_type(name, first, fmt)))
    key_types = {
        k: overrides.get(k) or decide_key_type(k, first, fmt) for k in keys if k in features
    }
    return pa.schema(fields), key_types


def check_versions(
    saved: dict[str, str], allow_mismatch: bool, uri: str
) -> dict[str, dict[str, str]]:
    """Saved against running library versions; a different major.minor is refused (exit 2)."""
    modules = {"scikit-learn": "sklearn"}  # library name -> module name, where they differ
    versions = {}
    for library, was in saved.items():
        try:
            # The module's own version: xgboost-cpu and xgboost install the same module.
            running = importlib.import_module(modules.get(library, library)).__version__
        except ImportError:
            running = "not installed"
        versions[library] = {"saved": was, "running": running}
        if major_minor(was) != major_minor(running):
            message = (
                f"model {uri} was saved with {library} {was}, this run has {running}: a model "
                "may predict differently, or not load, across versions"
            )
            if not allow_mismatch:
                raise Refused(
                    f"{message}; re-save it with {library} {running}, or pass "
                    "--allow_version_mismatch to score it anyway"
                )
            _LOG.warning("%s (--allow_version_mismatch)", message)
    return versions


def major_minor(text: str) -> tuple[str, ...]:
    return tuple(re.split(r"[.+-]", text)[:2])


def signature_types(ref: ModelRef) -> dict[str, pa.DataType] | None:
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
            raise Refused(f"model signature column {name} has unsupported type {mlflow_type}")
        out[name] = _MLFLOW_TYPES[mlflow_type]
    return out


def drift_baseline(ref: ModelRef, features: tuple[str, ...]) -> dict | None:
    """The model's drift baseline for these features (None: it has none, or it is broken)."""
    try:
        baseline = loading.drift_baseline(ref)
    except Exception as e:  # noqa: BLE001 - a broken baseline must not stop the scoring
        _LOG.warning("ignoring the model's drift baseline: %s", one_line(e))
        return None
    baseline = {k: v for k, v in (baseline or {}).items() if k in features}
    return baseline or None


def choose_features(model: Model, given: tuple[str, ...] | None) -> tuple[str, ...]:
    """The feature columns, in the order the model takes them.

    A model that names its features (feature_names_in_, an MLflow signature) gets exactly
    those, matched by name: --features may list them in any order but not leave one out or add
    one. A model that does not name them takes --features in the order given.
    """
    own = tuple(model.signature) if model.signature else model.facts.features
    if own:
        if given is not None:
            lacking = [f for f in own if f not in given]
            extra = [f for f in given if f not in own]
            if extra:
                raise Refused(
                    f"--features names column(s) the model was not trained on: {', '.join(extra)}"
                )
            if lacking:
                raise Refused(
                    f"--features leaves out column(s) the model needs: {', '.join(lacking)} "
                    f"(the model takes {', '.join(own)})"
                )
        return tuple(own)
    if not given:
        raise Refused(
            "the model does not name its features (no feature_names_in_); give --features a,b,..."
        )
    n = model.facts.n_features
    if n is not None and len(given) != n:
        raise Refused(
            f"--features names {len(given)} column(s) but the model takes {n}, in its training "
            "order"
        )
    return given


def text_values(first: pa.Table, name: str) -> np.ndarray:
    """A sampled column's non-null values as text (empty when there is no sample)."""
    column = first.column(name).drop_null()
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    return np.asarray(column.cast(pa.string()).to_pylist(), dtype=object)


def number_share(values: np.ndarray) -> float:
    """The share of text values that are numbers (NaN/inf spelled out are numbers)."""
    import pandas as pd

    if not len(values):
        return 1.0
    return float(pd.to_numeric(pd.Series(values), errors="coerce").notna().mean())


def decide_feature_type(
    name: str, first: pa.Table | None, facts: ModelFacts, source: str | None = None
) -> pa.DataType:
    """The type a feature is cast to in every batch, decided once.

    Features the model encodes as categories take their categories' type. Features the model
    can only take as numbers are float64 whatever the input holds: a value that is not a number
    is then a `validate` error, never the model's; if the sample holds no number at all, the
    input is not what the model takes (exit 2). Other features: numbers and booleans are
    float64, text is float64 when nine in ten sampled values are numbers, else text.
    """
    if name in facts.categorical:
        return facts.categorical[name].type
    declared = first.schema.field(name).type if first is not None else pa.null()
    if pa.types.is_dictionary(declared):
        declared = declared.value_type
    numeric_required = facts.numeric is not None and name in facts.numeric
    if pa.types.is_union(declared):  # JSON values of several kinds
        texts = any(pa.types.is_string(declared[i].type) for i in range(declared.num_fields))
        return pa.string() if texts and not numeric_required else pa.float64()
    if is_text(declared):
        values = text_values(first, name)
        share = number_share(values)
        if numeric_required and len(values) and share == 0:
            raise Refused(
                f"feature {name} of {source} holds text, not numbers (e.g. "
                f"{', '.join(repr(v) for v in values[:3])}), and the model takes it as a number; "
                "convert it upstream (thousands separators, yes/no, units), or check --features"
            )
        return pa.float64() if numeric_required or share >= 0.9 else pa.string()
    if (
        numeric_required
        or pa.types.is_integer(declared)
        or pa.types.is_floating(declared)
        or pa.types.is_boolean(declared)
        or pa.types.is_decimal(declared)
        or pa.types.is_null(declared)
    ):
        return pa.float64()
    return declared


def decide_key_type(name: str, first: pa.Table | None, fmt: str) -> pa.DataType:
    """The type a key column is written with: exactly what the input spells.

    Parquet declares it; in CSV every value is text, and a key stays text unless every sampled
    value is an integer written the one way int64 writes it back (so zip code 00501 stays
    "00501"). JSON values keep the type JSON gives them.
    """
    if first is None:
        return pa.string()
    declared = first.schema.field(name).type
    if pa.types.is_dictionary(declared):
        declared = declared.value_type
    if pa.types.is_null(declared):
        return pa.string()
    if pa.types.is_union(declared):  # JSON values of several kinds: the widest kind held
        kinds = {declared[i].type for i in range(declared.num_fields) if declared[i].name != "json"}
        for wide in (pa.string(), pa.float64(), pa.int64(), pa.bool_()):
            if wide in kinds:
                return wide
        return pa.string()
    if is_text(declared):
        if fmt == "csv":
            values = text_values(first, name)
            if len(values) and all(_CANONICAL_INT.fullmatch(v) for v in values):
                return pa.int64()
        return pa.string()
    return declared


def signature_type(name: str, wanted: pa.DataType, first: pa.Table | None, fmt: str) -> pa.DataType:
    """The signature's type for a column, once the input is known to cast to it safely."""
    if first is None:
        return wanted
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
            fmt not in ("parquet", "bigquery")
            and is_text(declared)
            and (pa.types.is_floating(wanted) or pa.types.is_integer(wanted))
            and number_share(text_values(first, name)) >= 0.9
        )
    )
    if not safe:
        raise Refused(
            f"input column {name} is {declared}, which does not cast safely to the model "
            f"signature's {wanted}"
        )
    return wanted


def probe(
    model: Any, facts: ModelFacts, features: tuple[str, ...], columns: pa.Schema, first
) -> ModelFacts:
    """Asks the model, on rows it can score, what the pipeline must know before scoring.

    The rows: one of typical values built from the model and the sample (so the answer does
    not depend on how dirty the sample's first rows are), then the sample's rows that are valid.
    Learns which features may be missing, what predict returns (one value per row: a
    multi-output model is refused; text predictions from a model without classes), and whether
    a float matrix scores exactly like a DataFrame.
    """
    frame = probe_frame(features, columns, facts, first)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        good, problem = [], None
        for i in range(len(frame)):
            try:
                model.predict(frame.iloc[[i]])
            except Exception as e:  # noqa: BLE001 - not a row this model scores
                problem = problem or e
                continue
            good.append(i)
        if not good:
            raise Refused(
                "the model cannot score a row of typical input values nor any of the first "
                f"rows of the input: {one_line(problem, with_type=True)}"
            )
        rows = frame.iloc[good]
        facts = _check_output(model, facts, rows)
        facts = dataclasses.replace(
            facts,
            missing_ok=_accepts_missing(model, frame.iloc[[good[0]]], features),
            numpy_ok=_scores_numpy_alike(model, facts, features, columns, rows),
        )
    return facts


def probe_frame(features, columns: pa.Schema, facts: ModelFacts, first):
    """A DataFrame of probe rows, converted as batches are: a typical row, then valid samples."""
    import pandas as pd

    typical: dict[str, list] = {}
    sampled: dict[str, pa.Array] = {}
    valid = None
    for f in features:
        target = columns.field(f).type
        values, ok = _usable(first, f, target, rows=50)
        sampled[f] = values
        valid = ok if valid is None else pa.compute.and_(valid, ok)
        typical[f] = [_typical(f, values, target, facts)]
    table = pa.table({f: pa.array(v, columns.field(f).type) for f, v in typical.items()})
    if valid is not None and len(valid):
        rows = pa.table(sampled).filter(valid).slice(0, PROBE_ROWS)
        table = pa.concat_tables([table, rows.cast(table.schema)])
    return table.to_pandas().reset_index(drop=True) if table.num_rows else pd.DataFrame()


def sample_frame(features, columns: pa.Schema, facts: ModelFacts, first):
    """The launcher's sample of the night as the model takes it: each sampled row whose
    features all convert, are finite and are categories the model knows, converted as batches
    are (None: no sample, or no such row)."""
    if first is None or not first.num_rows or any(f not in first.column_names for f in features):
        return None
    typed: dict[str, pa.Array] = {}
    valid = None
    for f in features:
        values, ok = _usable(first, f, columns.field(f).type)
        cats = facts.categorical.get(f)
        if cats is not None and cats.values and not cats.unknown_ok:
            ok = pa.compute.and_(ok, pa.compute.is_in(values, value_set=cats.known()))
        typed[f] = values
        valid = ok if valid is None else pa.compute.and_(valid, ok)
    table = pa.table(typed).filter(valid)
    return table.to_pandas().reset_index(drop=True) if table.num_rows else None


def _usable(first, name: str, target: pa.DataType, rows: int | None = None):
    """A sampled feature's column converted as batches are (its first `rows`; no values when
    the sample lacks it), and which values are usable: valid and, for a float, finite (NaN and
    infinities are no probe values: a row holding one is rejected or scored by the value rule
    at its turn, it does not refuse the night at launch)."""
    if first is None or name not in first.column_names:
        values = pa.nulls(0, target)
    else:
        raw = first.column(name)
        raw = (raw.slice(0, rows) if rows is not None else raw).combine_chunks()
        if pa.types.is_dictionary(raw.type):
            raw = raw.cast(raw.type.value_type)
        values = cast(raw, target, key=False, name="").values
    ok = values.is_valid()
    if pa.types.is_floating(target):
        ok = pa.compute.and_(ok, pa.compute.is_finite(values).fill_null(False))
    return values, ok


def _typical(name: str, values: pa.Array, target: pa.DataType, facts: ModelFacts):
    """A value the model surely takes for a feature: a known category, or the sample's median."""
    if name in facts.categorical and facts.categorical[name].values:
        return facts.categorical[name].values[0]
    present = values.drop_null()
    if pa.types.is_floating(target) or pa.types.is_integer(target):
        numbers = present.to_numpy(zero_copy_only=False).astype(float)
        numbers = numbers[np.isfinite(numbers)]
        value = float(np.median(numbers)) if len(numbers) else 0.0
        return int(value) if pa.types.is_integer(target) else value
    if pa.types.is_boolean(target):
        return False
    if len(present):
        counts = pa.compute.value_counts(present).to_pylist()
        return max(counts, key=lambda c: c["counts"])["values"]
    return ""


def _check_output(model: Any, facts: ModelFacts, rows) -> ModelFacts:
    """What predict (and predict_proba) return for rows it scores: one value per row."""
    pred = np.asarray(model.predict(rows))
    if pred.ndim == 2 and pred.shape[1] == 1:
        pred = pred[:, 0]
    if pred.ndim != 1 or len(pred) != len(rows):
        raise Refused(
            f"the model returns predictions of shape {pred.shape} for {len(rows)} rows; only "
            "models with one prediction per row (not multi-output) are supported"
        )
    if facts.classes:
        proba = np.asarray(model.predict_proba(rows))
        if proba.shape != (len(rows), len(facts.classes)):
            raise Refused(
                f"the model's predict_proba returns shape {proba.shape} for {len(rows)} rows "
                f"and {len(facts.classes)} classes"
            )
        return facts
    if pred.dtype.kind in "USO" and not all(isinstance(v, (int, float)) for v in pred.tolist()):
        return dataclasses.replace(facts, prediction_type=pa.string())
    if pred.dtype.kind == "b":
        return dataclasses.replace(facts, prediction_type=pa.bool_())
    return facts


def _accepts_missing(model: Any, row, features) -> frozenset[str]:
    """The features the model scores with a missing value (the row with that one blanked)."""
    import pandas as pd

    accepted = set()
    for feature in features:
        blank = row.copy()
        blank[feature] = None if blank[feature].dtype.kind not in "fc" else float("nan")
        try:
            model.predict(pd.DataFrame(blank))
        except Exception:  # noqa: BLE001 - the model refuses a missing value here
            continue
        accepted.add(feature)
    return frozenset(accepted)


def _scores_numpy_alike(model: Any, facts: ModelFacts, features, columns, rows) -> bool:
    """Whether the model scores a float matrix exactly as it scores a DataFrame.

    Only then do batches skip the pandas conversion (measured: about half the prediction time
    of a light model). Needs all-float features.
    """
    if not all(pa.types.is_floating(columns.field(f).type) for f in features):
        return False
    method = model.predict_proba if facts.classes else model.predict
    try:
        return bool(np.array_equal(method(rows), method(rows.to_numpy(dtype=np.float64))))
    except Exception:  # noqa: BLE001 - the model wants a DataFrame
        return False


def plan_explain(
    value: str | None,
    model: Any,
    features: tuple[str, ...],
    keys: tuple[str, ...],
    columns: pa.Schema,
    facts: ModelFacts,
    first: pa.Table | None,
    baseline: dict | None,
):
    """--explain K: how this model's rows are explained (models.explain), or None when off.

    A model without an exact explanation, K out of 1..features, a tree model without shap, or
    a linear model without training means: exit 2, before any row is scored.
    """
    if value is None or str(value).strip().lower() in ("", "none", "false"):
        return None
    from models import explain

    try:
        k = int(str(value).strip())
    except ValueError:
        raise Refused(f"--explain {value!r} is not a whole number of reasons") from None
    clash = [c for c in keys if _explain_column(c, k)]
    if clash:
        kept = [c for c in keys if c not in clash]
        fix = f"--key_columns {','.join(kept)}" if kept else "rename them upstream"
        raise Refused(
            f"key column(s) {', '.join(clash)} clash with the columns --explain {k} writes "
            f"(reason_1..{k}, contribution_1..{k}): {fix}"
        )
    rows = probe_frame(features, columns, facts, first)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return explain.plan(
                model,
                tuple(features),
                k,
                baseline,
                rows,
                sample_frame(features, columns, facts, first),
            )
    except explain.CannotExplain as e:
        raise Refused(str(e)) from None


def _explain_column(name: str, k: int) -> bool:
    """Whether `--explain k` writes a column of this name (reason_1..k, contribution_1..k)."""
    m = re.fullmatch(r"(reason|contribution)_([1-9]\d{0,8})", name)
    return m is not None and int(m[2]) <= k
