"""What the pipeline needs to know about a fitted model, read once on the launcher.

Everything here comes from the fitted object itself (scikit-learn's fitted attributes); what only
a prediction can tell (which features may be missing, what predict returns) is asked of the model
by the launcher (pipeline.launch). A model that knows its inputs better than its structure tells
(models.boosters.BoosterModel) declares them: `feature_categories_` ({feature: Categories}),
`numeric_features_` and `allow_nan_`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pyarrow as pa

from models.errors import UnsupportedModel

# Classifiers whose predict() may disagree with argmax(predict_proba()): call both for them.
_PREDICT_NOT_ARGMAX = ("SVC", "NuSVC")
# Transformers that only take numbers: a column routed to one must be numeric in the input.
_NUMERIC_TRANSFORMERS = (
    "StandardScaler",
    "MinMaxScaler",
    "MaxAbsScaler",
    "RobustScaler",
    "Normalizer",
    "PowerTransformer",
    "QuantileTransformer",
    "KBinsDiscretizer",
    "PolynomialFeatures",
    "SplineTransformer",
    "Binarizer",
)


@dataclasses.dataclass(frozen=True)
class Categories:
    """A feature the model encodes as categories.

    A category the model was not trained on is scored only where the model declares how it
    takes one (`unknown_ok`); otherwise it is rejected at validate, unless the run says
    `--unknown_categories score` and the model can score it as a missing value
    (`unknown_as_missing`).

    Attributes:
        type: the Arrow type of the categories (string for text categories).
        values: the categories the encoder was fitted on.
        unknown_ok: whether the model declares that it takes a value it has not seen (a
            scikit-learn encoder's handle_unknown other than "error").
        unknown_as_missing: whether the model can score an unseen value as a missing one
            (XGBoost and LightGBM categories, which models.boosters hands over as NaN); done only
            with `--unknown_categories score`.
    """

    type: pa.DataType
    values: tuple
    unknown_ok: bool
    unknown_as_missing: bool = False

    def known(self) -> pa.Array:
        """The categories as an Arrow array of their type, without a missing value (NaN, None)
        among them: what an input value is looked up in."""
        return pa.array([v for v in self.values if v is not None and v == v], type=self.type)


@dataclasses.dataclass(frozen=True)
class ModelFacts:
    """The scoring-relevant facts of a model.

    Attributes:
        features: the model's own feature names (feature_names_in_), in its order, or None.
        n_features: how many features the model takes (n_features_in_), or None.
        classes: class labels for a classifier with predict_proba, else None.
        prediction_type: Arrow type of the prediction column.
        allow_nan: whether the model accepts missing values (scikit-learn's input tags); the
            launcher refines this per feature by probing the model (see `missing_ok`).
        proba_argmax: whether prediction == classes[argmax(proba)], so predict() need not run.
        categorical: features the model encodes as categories.
        numeric: features the model can only take as numbers (None: not known from the model).
        encoders: the input columns of each category encoder, in its order (to name the feature
            behind scikit-learn's "in column 1").
        missing_ok: features the model was seen to accept as missing (None: unknown).
        numpy_ok: the model was seen to give the same output for a float matrix as for a
            DataFrame, so batches skip the pandas conversion.
    """

    features: tuple[str, ...] | None
    n_features: int | None
    classes: tuple[Any, ...] | None
    prediction_type: pa.DataType
    allow_nan: bool
    proba_argmax: bool
    categorical: dict[str, Categories]
    numeric: frozenset[str] | None = None
    encoders: tuple[tuple[str, ...], ...] = ()
    missing_ok: frozenset[str] | None = None
    numpy_ok: bool = False

    def accepts_missing(self, feature: str) -> bool:
        """Whether a null/NaN in this feature is for the model to handle, not an error."""
        if self.missing_ok is None:
            return self.allow_nan
        return feature in self.missing_ok

    def scoring_unknown_categories(self) -> ModelFacts:
        """These facts for a run with `--unknown_categories score`: every categorical feature
        the model can score an unknown value of (as a missing value) takes one."""
        categorical = {
            name: dataclasses.replace(cats, unknown_ok=True) if cats.unknown_as_missing else cats
            for name, cats in self.categorical.items()
        }
        return dataclasses.replace(self, categorical=categorical)

    @property
    def proba_columns(self) -> tuple[str, ...]:
        """Output column names, one per class: proba_<label>."""
        return tuple(f"proba_{c}" for c in self.classes or ())


def inspect(model: Any) -> ModelFacts:
    """Reads the facts the pipeline needs from a fitted model.

    Args:
        model: a fitted scikit-learn estimator or Pipeline (or anything with predict()).

    Returns:
        The model's facts; raises UnsupportedModel for what cannot be scored.
    """
    if not hasattr(model, "predict"):
        raise UnsupportedModel(f"the model ({type(model).__name__}) has no predict() method")
    features = getattr(model, "feature_names_in_", None)
    features = tuple(str(f) for f in features) if features is not None else None
    n_features = getattr(model, "n_features_in_", None)
    final = _final_estimator(model)
    classes = getattr(model, "classes_", None)
    has_proba = hasattr(model, "predict_proba") and classes is not None
    if has_proba and np.ndim(classes) != 1:
        raise UnsupportedModel(
            "the model is a multi-output classifier (one set of classes per output); only "
            "single-output models are supported"
        )
    if has_proba:
        classes_arr = np.asarray(classes)
        prediction_type = arrow_type_of(classes_arr)
        class_tuple = tuple(c.item() if hasattr(c, "item") else c for c in classes_arr)
    else:
        class_tuple = None
        prediction_type = (
            arrow_type_of(np.asarray(classes)) if classes is not None else pa.float64()
        )
    categorical = {**_categorical_features(model), **getattr(model, "feature_categories_", {})}
    numeric = getattr(model, "numeric_features_", None)
    if numeric is None:
        numeric = _numeric_features(model, features, categorical)
    return ModelFacts(
        features=features,
        n_features=int(n_features) if n_features is not None else None,
        classes=class_tuple,
        prediction_type=prediction_type,
        allow_nan=_allow_nan(model),
        proba_argmax=type(final).__name__ not in _PREDICT_NOT_ARGMAX,
        categorical=categorical,
        numeric=numeric,
        encoders=_encoder_columns(model),
    )


def _final_estimator(model: Any) -> Any:
    steps = getattr(model, "steps", None)
    return _final_estimator(steps[-1][1]) if steps else model


def _allow_nan(model: Any) -> bool:
    declared = getattr(model, "allow_nan_", None)
    if declared is not None:
        return bool(declared)
    try:
        from sklearn.utils import get_tags

        return bool(get_tags(model).input_tags.allow_nan)
    except Exception:  # noqa: BLE001 - not a scikit-learn estimator: assume it cannot take NaN
        return False


def arrow_type_of(values: np.ndarray) -> pa.DataType:
    """The Arrow type a column of these NumPy values is written as."""
    if values.dtype.kind in "US" or values.dtype == object:
        return pa.string()
    if values.dtype.kind == "b":
        return pa.bool_()
    if values.dtype.kind in "iu":
        return pa.int64()
    return pa.float64()


def _categorical_features(model: Any) -> dict[str, Categories]:
    """Features a ColumnTransformer feeds to a category encoder, with their categories."""
    found: dict[str, Categories] = {}
    for transformer in _walk(model):
        for _, trans, columns in getattr(transformer, "transformers_", ()):
            encoder = next((t for t in _walk(trans) if hasattr(t, "categories_")), None)
            if encoder is None or isinstance(columns, slice):
                continue
            names = [columns] if isinstance(columns, str) else list(columns)
            unknown_ok = getattr(encoder, "handle_unknown", "error") != "error"
            for name, cats in zip(names, encoder.categories_):
                if isinstance(name, str):
                    values = np.asarray(cats)
                    found[name] = Categories(
                        arrow_type_of(values),
                        tuple(v.item() if hasattr(v, "item") else v for v in values),
                        unknown_ok,
                    )
    return found


def _encoder_columns(model: Any) -> tuple[tuple[str, ...], ...]:
    found = []
    for transformer in _walk(model):
        for _, trans, columns in getattr(transformer, "transformers_", ()):
            if isinstance(columns, slice) or not any(
                hasattr(t, "categories_") for t in _walk(trans)
            ):
                continue
            names = [columns] if isinstance(columns, str) else list(columns)
            found.append(tuple(str(n) for n in names))
    return tuple(found)


def _numeric_features(
    model: Any, features: tuple[str, ...] | None, categorical: dict[str, Categories]
) -> frozenset[str] | None:
    """The features the model can only take as numbers, as far as its structure tells.

    A scikit-learn model without a ColumnTransformer computes on a float matrix: every feature
    is a number. Through a ColumnTransformer, a column is numeric when it goes to a scaler or
    other numbers-only transformer, or passes through to an estimator. None when the model is
    not a scikit-learn estimator (a pyfunc, say): its signature or the input then decides.
    """
    try:
        from sklearn.base import BaseEstimator
    except ImportError:  # pragma: no cover - scikit-learn is a requirement
        return None
    if not isinstance(model, BaseEstimator) or features is None:
        return None
    column_transformers = [t for t in _walk(model) if hasattr(t, "transformers_")]
    if not column_transformers:
        hgb_categorical = getattr(_final_estimator(model), "is_categorical_", None)
        if hgb_categorical is not None and np.any(hgb_categorical):
            return frozenset(f for f, c in zip(features, hgb_categorical) if not c)
        return frozenset(features) - set(categorical)
    numeric: set[str] = set()
    for ct in column_transformers:
        for _, trans, columns in ct.transformers_:
            if isinstance(columns, slice) or trans == "drop":
                continue
            names = [columns] if isinstance(columns, str) else list(columns)
            names = [n for n in names if isinstance(n, str)]
            if trans == "passthrough" or _takes_numbers(trans):
                numeric.update(n for n in names if n not in categorical)
    return frozenset(numeric)


def _takes_numbers(trans: Any) -> bool:
    """Whether a (pipeline of) transformer(s) starts with one that only takes numbers."""
    steps = getattr(trans, "steps", None)
    first = steps[0][1] if steps else trans
    if type(first).__name__ in _NUMERIC_TRANSFORMERS:
        return True
    statistics = getattr(first, "statistics_", None)  # a SimpleImputer: its fitted values
    return statistics is not None and np.asarray(statistics).dtype.kind in "fiu"


def _walk(obj: Any):
    """Yields obj and every estimator nested in it through Pipeline steps or ColumnTransformers."""
    yield obj
    for _, step in getattr(obj, "steps", ()):
        yield from _walk(step)
    for _, trans, _ in getattr(obj, "transformers_", ()):
        if not isinstance(trans, str):
            yield from _walk(trans)
