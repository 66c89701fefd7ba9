"""What the pipeline needs to know about a fitted scikit-learn model, read once on the launcher."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pyarrow as pa

# Classifiers whose predict() may disagree with argmax(predict_proba()): call both for them.
_PREDICT_NOT_ARGMAX = ("SVC", "NuSVC")


class UnsupportedModel(Exception):
    """The model is not something this pipeline can score."""


@dataclasses.dataclass(frozen=True)
class ModelFacts:
    """The scoring-relevant facts of a model.

    Attributes:
        features: the model's own feature names (feature_names_in_), or None.
        classes: class labels for a classifier with predict_proba, else None.
        prediction_type: Arrow type of the prediction column.
        allow_nan: whether the model accepts missing values (scikit-learn's input tags); the
            launcher refines this per feature by probing the model (see `missing_ok`).
        proba_argmax: whether prediction == classes[argmax(proba)], so predict() need not run.
        categorical: features the model encodes as categories, with their categories' type.
        missing_ok: features the model was seen to accept as missing (None: unknown).
        numpy_ok: the model was seen to give the same output for a float matrix as for a
            DataFrame, so batches skip the pandas conversion.
    """

    features: tuple[str, ...] | None
    classes: tuple[Any, ...] | None
    prediction_type: pa.DataType
    allow_nan: bool
    proba_argmax: bool
    categorical: dict[str, pa.DataType]
    missing_ok: frozenset[str] | None = None
    numpy_ok: bool = False

    def accepts_missing(self, feature: str) -> bool:
        """Whether a null/NaN in this feature is for the model to handle, not an error."""
        if self.missing_ok is None:
            return self.allow_nan
        return feature in self.missing_ok

    @property
    def proba_columns(self) -> tuple[str, ...]:
        """Output column names, one per class: proba_<label>."""
        return tuple(f"proba_{c}" for c in self.classes or ())


def inspect(model: Any) -> ModelFacts:
    """Reads the facts the pipeline needs from a fitted model.

    Args:
        model: a fitted scikit-learn estimator or Pipeline (or anything with predict()).

    Returns:
        The model's facts.
    """
    if not hasattr(model, "predict"):
        raise UnsupportedModel(f"the model ({type(model).__name__}) has no predict() method")
    features = getattr(model, "feature_names_in_", None)
    features = tuple(str(f) for f in features) if features is not None else None
    final = _final_estimator(model)
    classes = getattr(model, "classes_", None)
    has_proba = hasattr(model, "predict_proba") and classes is not None
    if has_proba and np.ndim(classes) != 1:
        raise UnsupportedModel("multi-output classifiers are not supported")
    if has_proba:
        classes_arr = np.asarray(classes)
        prediction_type = _arrow_type_of(classes_arr)
        class_tuple = tuple(c.item() if hasattr(c, "item") else c for c in classes_arr)
    else:
        class_tuple = None
        prediction_type = (
            _arrow_type_of(np.asarray(classes)) if classes is not None else pa.float64()
        )
    return ModelFacts(
        features=features,
        classes=class_tuple,
        prediction_type=prediction_type,
        allow_nan=_allow_nan(model),
        proba_argmax=type(final).__name__ not in _PREDICT_NOT_ARGMAX,
        categorical=_categorical_features(model),
    )


def _final_estimator(model: Any) -> Any:
    steps = getattr(model, "steps", None)
    return _final_estimator(steps[-1][1]) if steps else model


def _allow_nan(model: Any) -> bool:
    try:
        from sklearn.utils import get_tags

        return bool(get_tags(model).input_tags.allow_nan)
    except Exception:  # noqa: BLE001 - not a scikit-learn estimator: assume it cannot take NaN
        return False


def _arrow_type_of(values: np.ndarray) -> pa.DataType:
    if values.dtype.kind in "US" or values.dtype == object:
        return pa.string()
    if values.dtype.kind == "b":
        return pa.bool_()
    if values.dtype.kind in "iu":
        return pa.int64()
    return pa.float64()


def _categorical_features(model: Any) -> dict[str, pa.DataType]:
    """Features a ColumnTransformer feeds to a category encoder, with their categories' type."""
    found: dict[str, pa.DataType] = {}
    for transformer in _walk(model):
        for _, trans, columns in getattr(transformer, "transformers_", ()):
            encoder = next((t for t in _walk(trans) if hasattr(t, "categories_")), None)
            if encoder is None or isinstance(columns, slice):
                continue
            names = [columns] if isinstance(columns, str) else list(columns)
            for name, cats in zip(names, encoder.categories_):
                if isinstance(name, str):
                    found[name] = _arrow_type_of(np.asarray(cats))
    return found


def _walk(obj: Any):
    """Yields obj and every estimator nested in it through Pipeline steps or ColumnTransformers."""
    yield obj
    for _, step in getattr(obj, "steps", ()):
        yield from _walk(step)
    for _, trans, _ in getattr(obj, "transformers_", ()):
        if not isinstance(trans, str):
            yield from _walk(trans)
