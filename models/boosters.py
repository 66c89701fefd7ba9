"""XGBoost and LightGBM models, native boosters or scikit-learn wrappers, as the pipeline sees a
fitted scikit-learn estimator.

`BoosterModel` has what the launcher and the workers read from a model (`feature_names_in_`,
`n_features_in_`, `classes_`, `predict`, `predict_proba`) plus what a booster knows of its own
inputs: its categorical features with the categories it was trained on (`feature_categories_`),
its numeric features (`numeric_features_`) and that it takes missing values (`allow_nan_`).

Every call builds one float64 matrix for the whole batch (categories become the booster's own
training codes, an unknown or missing one NaN) and hands it to the library in one call:
XGBoost's `inplace_predict`, LightGBM's `Booster.predict` on a NumPy matrix, or the scikit-learn
wrapper's own `predict`/`predict_proba`, which do the same. No step runs per row.

Classes: a scikit-learn wrapper has `classes_`. A native booster's classes are the class indexes
0..k-1 its objective predicts (XGBoost `binary:logistic`, `multi:softprob`, `multi:softmax`,
`binary:hinge`; LightGBM `binary`, `multiclass`, `multiclassova`); any other objective is scored
as a regressor (one number per row).
"""

from __future__ import annotations

import json
import re
import struct
from typing import Any

import numpy as np

from models.errors import UnsupportedModel
from models.introspect import Categories, arrow_type_of

# The suffixes of the native model files, and the library that reads each.
NATIVE_SUFFIXES = {".json": "xgboost", ".ubj": "xgboost", ".txt": "lightgbm"}
# The library a model needs -> the setup.py extra that installs it.
EXTRAS = {"xgboost": "xgboost", "lightgbm": "lightgbm"}

_XGB_PROBA = {"binary:logistic", "multi:softprob"}
_XGB_LABELS = {"multi:softmax", "binary:hinge"}
_LGB_CLASSIFIERS = {"binary", "multiclass", "multiclassova"}
_LGB_UNNAMED = re.compile(r"Column_\d+")


def library_of(model: Any) -> str | None:
    """ "xgboost" or "lightgbm" for a booster or scikit-learn wrapper of that library, else None.

    Reads the class's module, so it imports neither library.
    """
    for cls in type(model).__mro__:
        top = cls.__module__.split(".", 1)[0]
        if top in EXTRAS:
            return top
    return None


def required_extras(model: Any) -> tuple[str, ...]:
    """The beamscore extras a loaded model needs, in order: its own library's, and those of the
    boosters nested in a scikit-learn Pipeline or ColumnTransformer (an XGBClassifier step)."""
    found = set()
    stack = [model]
    while stack:
        obj = stack.pop()
        library = obj.library if isinstance(obj, BoosterModel) else library_of(obj)
        if library:
            found.add(EXTRAS[library])
        stack.extend(step for _, step in getattr(obj, "steps", ()))
        stack.extend(t for _, t, _ in getattr(obj, "transformers_", ()) if not isinstance(t, str))
    return tuple(sorted(found))


def worker_requirements(model: Any) -> list[str]:
    """Requirement lines, pinned to the running versions, for the libraries a loaded model needs
    beyond beamscore's own requirements: what workers that install beamscore from its sdist
    (Dataflow's --setup_file, which installs no extras) must also install, e.g. through Beam's
    --requirements_file."""
    return pins(required_extras(model))


def pins(libraries) -> list[str]:
    """`distribution==version` for each installed library (a module or distribution name), by
    the distribution that installed it: xgboost-cpu (what beamscore[xgboost] takes, without
    CUDA) or xgboost provide the same `xgboost` module."""
    from importlib.metadata import packages_distributions, version

    providers = packages_distributions()
    lines = []
    for library in sorted(libraries):
        distribution = (providers.get(library) or [library])[0]
        lines.append(f"{distribution}=={version(distribution)}")
    return lines


def wrap(model: Any) -> Any:
    """The model as the pipeline scores it: a BoosterModel for an XGBoost or LightGBM booster or
    scikit-learn wrapper; any other model unchanged."""
    library = library_of(model)
    if library == "xgboost":
        return _from_xgboost(model)
    if library == "lightgbm":
        return _from_lightgbm(model)
    return model


def load_native(data: bytes, suffix: str) -> Any:
    """A BoosterModel from the bytes of a native model file (.json/.ubj: XGBoost, .txt: LightGBM).

    Raises ModuleNotFoundError when the library is not installed (the caller names the extra).
    """
    if NATIVE_SUFFIXES[suffix] == "xgboost":
        import xgboost

        booster = xgboost.Booster()
        booster.load_model(bytearray(data))
        return _from_xgboost(booster)
    import lightgbm

    return _from_lightgbm(lightgbm.Booster(model_str=data.decode("utf-8")))


def xgboost_version(data: bytes) -> str | None:
    """The XGBoost version an XGBoost model (JSON or UBJSON, alone or inside a pickle) was saved
    with, as XGBoost records it (`"version": [3, 2, 0]`); None when the bytes do not say."""
    found = re.search(rb'"version"\s*:\s*\[\s*(\d+)\s*,\s*(\d+)\s*,\s*(\d+)\s*\]', data)
    if found:
        return ".".join(v.decode() for v in found.groups())
    return _ubjson_version(data)


# UBJSON integer markers (XGBoost writes big-endian) -> struct formats.
_UBJ_INTS = {b"i": ">b", b"U": ">B", b"I": ">h", b"l": ">i", b"L": ">q"}


def _ubjson_version(data: bytes) -> str | None:
    """The `version` array of an XGBoost UBJSON model: `[#<count>` then one integer per part."""
    at = data.find(b"\x07version[")
    if at < 0:
        return None
    pos = at + len(b"\x07version[")
    typed = None
    try:
        if data[pos : pos + 1] == b"$":  # a typed array: one marker for every element
            typed, pos = data[pos + 1 : pos + 2], pos + 2
        if data[pos : pos + 1] != b"#":
            return None
        count, pos = _ubjson_int(data, pos + 1, None)
        parts = []
        for _ in range(min(count, 4)):
            value, pos = _ubjson_int(data, pos, typed)
            parts.append(str(value))
    except (KeyError, struct.error):
        return None
    return ".".join(parts) if parts else None


def _ubjson_int(data: bytes, pos: int, marker: bytes | None) -> tuple[int, int]:
    if marker is None:
        marker, pos = data[pos : pos + 1], pos + 1
    fmt = _UBJ_INTS[marker]
    size = struct.calcsize(fmt)
    return struct.unpack(fmt, data[pos : pos + size])[0], pos + size


class BoosterModel:
    """A booster scored like a fitted scikit-learn estimator (see the module's docstring).

    Attributes:
        library: "xgboost" or "lightgbm".
        estimator: what was loaded (a native Booster or a scikit-learn wrapper).
        feature_names_in_: the booster's feature names, when it names them.
        n_features_in_: how many features it takes.
        classes_: the class labels of a classifier, else None.
        feature_categories_: the categorical features, with the categories the booster was
            trained on (their position is the code the booster saw).
        numeric_features_: the features taken as numbers (None when the booster names none).
        allow_nan_: True: boosters take missing values (NaN) in every feature.
    """

    allow_nan_ = True

    def __init__(
        self,
        library: str,
        estimator: Any,
        names: list[str] | None,
        n_features: int,
        classes: np.ndarray | None,
        categories: dict[int, Categories],
        predict,
        predict_proba=None,
    ):
        self.library = library
        self.estimator = estimator
        if names is not None:
            self.feature_names_in_ = np.asarray(names, dtype=object)
        self.n_features_in_ = n_features
        self.classes_ = classes
        self._names = names
        self._codes = {i: _code_index(cats.values) for i, cats in categories.items() if cats.values}
        self.feature_categories_ = {
            (names[i] if names else str(i)): cats for i, cats in categories.items()
        }
        # Without names the features are --features, whose types the input decides.
        self.numeric_features_ = (
            frozenset(n for i, n in enumerate(names) if i not in categories) if names else None
        )
        self._predict = predict
        self._predict_proba = predict_proba

    def __repr__(self) -> str:
        return f"BoosterModel({type(self.estimator).__module__}.{type(self.estimator).__name__})"

    def matrix(self, X) -> np.ndarray:
        """The batch as one float64 matrix in the booster's feature order.

        A DataFrame's columns are taken by the booster's feature names (by position when it has
        none); a categorical feature's values become the booster's training codes (an unknown
        value or a missing one: NaN). A float matrix (the pipeline's fast path, taken only for
        all-numeric models) is used as it is: its column-major layout scores as fast as a
        row-major copy (measured, XGBoost and LightGBM).
        """
        if isinstance(X, np.ndarray):
            return np.asarray(X, dtype=np.float64)
        if self._names is not None and all(n in X.columns for n in self._names):
            X = X[self._names]
        out = np.empty((len(X), X.shape[1]), dtype=np.float64)
        for j in range(X.shape[1]):
            column = X.iloc[:, j]
            index = self._codes.get(j)
            if index is None:
                out[:, j] = column.to_numpy(dtype=np.float64, na_value=np.nan)
            else:
                codes = index.get_indexer(column.astype(object)).astype(np.float64)
                codes[codes < 0] = np.nan
                out[:, j] = codes
        return out

    def predict(self, X) -> np.ndarray:
        """The library's prediction: a class label (classifiers) or a number per row."""
        return self._predict(self.matrix(X))

    @property
    def predict_proba(self):
        """The library's class probabilities, one column per class of `classes_`.

        Only classifiers that give probabilities have it, as in scikit-learn (the pipeline asks
        hasattr(model, "predict_proba")).
        """
        if self._predict_proba is None:
            raise AttributeError("predict_proba: this booster gives no class probabilities")
        return self._proba

    def _proba(self, X) -> np.ndarray:
        return self._predict_proba(self.matrix(X))


def _code_index(values: tuple):
    import pandas as pd

    return pd.Index(list(values), dtype=object)


# ---------------------------------------------------------------------------------------------
# XGBoost


def _from_xgboost(model: Any) -> BoosterModel:
    import xgboost

    wrapper = model if isinstance(model, xgboost.XGBModel) else None
    booster = wrapper.get_booster() if wrapper is not None else model
    if not isinstance(booster, xgboost.Booster):
        raise UnsupportedModel(f"the model ({type(model).__name__}) is not an XGBoost booster")
    config = json.loads(booster.save_config())
    objective = config["learner"]["objective"]["name"]
    n_classes = int(config["learner"]["learner_model_param"].get("num_class", "0") or 0)
    names = list(booster.feature_names) if booster.feature_names else None
    if wrapper is not None and hasattr(wrapper, "feature_names_in_"):
        names = [str(n) for n in wrapper.feature_names_in_]
    categories = _xgboost_categories(booster)
    if wrapper is not None:
        proba = None
        if hasattr(wrapper, "classes_") and objective in _XGB_PROBA:
            proba = wrapper.predict_proba
        return BoosterModel(
            "xgboost",
            wrapper,
            names,
            booster.num_features(),
            np.asarray(wrapper.classes_) if hasattr(wrapper, "classes_") else None,
            categories,
            wrapper.predict,
            proba,
        )

    def raw(matrix: np.ndarray) -> np.ndarray:
        return booster.inplace_predict(matrix, validate_features=False)

    if objective in _XGB_PROBA:
        k = max(n_classes, 2)

        def proba(matrix: np.ndarray) -> np.ndarray:
            out = raw(matrix)
            # As XGBClassifier.predict_proba: [1 - p, p] in the booster's float32.
            return np.column_stack([1.0 - out, out]) if out.ndim == 1 else out

        def predict(matrix: np.ndarray) -> np.ndarray:
            return np.argmax(proba(matrix), axis=1)

        return BoosterModel(
            "xgboost",
            booster,
            names,
            booster.num_features(),
            np.arange(k),
            categories,
            predict,
            proba,
        )
    if objective in _XGB_LABELS:
        k = max(n_classes, 2)
        return BoosterModel(
            "xgboost",
            booster,
            names,
            booster.num_features(),
            np.arange(k),
            categories,
            lambda matrix: raw(matrix).astype(np.int64),
        )
    return BoosterModel("xgboost", booster, names, booster.num_features(), None, categories, raw)


def _xgboost_categories(booster) -> dict[int, Categories]:
    """The categorical features (feature type "c") whose categories the model stores (XGBoost
    3.1 and later record them from a pandas category column); a categorical feature without
    them takes its codes as numbers."""
    types = booster.feature_types or []
    if "c" not in types or not hasattr(booster, "get_categories"):
        return {}
    stored = booster.get_categories(export_to_arrow=True)
    if stored.empty():
        return {}
    found = {}
    for i, (_, values) in enumerate(stored.to_arrow()):
        if values is None or types[i] != "c":
            continue
        listed = values.to_pylist()
        # XGBoost 3.2's own predict maps an unknown category to a neighbouring known one (or
        # raises, past the last): an unknown category is rejected at validate, or with
        # --unknown_categories score scored as a missing value (NaN), never guessed.
        found[i] = Categories(
            arrow_type_of(np.asarray(listed)),
            tuple(listed),
            unknown_ok=False,
            unknown_as_missing=True,
        )
    return found


# ---------------------------------------------------------------------------------------------
# LightGBM


def _from_lightgbm(model: Any) -> BoosterModel:
    import lightgbm

    wrapper = model if isinstance(model, lightgbm.LGBMModel) else None
    booster = wrapper.booster_ if wrapper is not None else model
    if not isinstance(booster, lightgbm.Booster):
        raise UnsupportedModel(f"the model ({type(model).__name__}) is not a LightGBM booster")
    dump = booster.dump_model(num_iteration=1)  # the header; one tree at most
    names = list(booster.feature_name())
    if all(_LGB_UNNAMED.fullmatch(n) for n in names):
        names = None  # trained on a matrix: LightGBM made the names up
    if wrapper is not None:
        names = (
            list(map(str, wrapper.feature_names_in_))
            if hasattr(wrapper, "feature_names_in_")
            else None
        )
    categories = _lightgbm_categories(booster, dump)
    n_features = booster.num_feature()
    if wrapper is not None:
        classes = np.asarray(wrapper.classes_) if hasattr(wrapper, "classes_") else None
        proba = wrapper.predict_proba if classes is not None else None
        return BoosterModel(
            "lightgbm", wrapper, names, n_features, classes, categories, wrapper.predict, proba
        )
    objective = str(dump.get("objective", "")).split(" ", 1)[0]
    if objective in _LGB_CLASSIFIERS:
        k = max(int(dump.get("num_class", 1)), 2)

        def proba(matrix: np.ndarray) -> np.ndarray:
            out = booster.predict(matrix)
            # As LGBMClassifier.predict_proba: [1 - p, p] for a binary objective.
            return np.column_stack([1.0 - out, out]) if out.ndim == 1 else out

        def predict(matrix: np.ndarray) -> np.ndarray:
            return np.argmax(proba(matrix), axis=1)

        return BoosterModel(
            "lightgbm", booster, names, n_features, np.arange(k), categories, predict, proba
        )
    return BoosterModel("lightgbm", booster, names, n_features, None, categories, booster.predict)


def _lightgbm_categories(booster, dump: dict) -> dict[int, Categories]:
    """The features LightGBM took from pandas category columns, with those categories.

    The model stores the category lists (`pandas_categorical`) in the order of the category
    columns, not their names; LightGBM's own predict matches them to a DataFrame's category
    columns in order, and so they are matched here to the model's categorical features in order.
    An unknown category is missing to LightGBM's own predict; the pipeline scores it so only
    with --unknown_categories score, and rejects it at validate otherwise.
    """
    lists = booster.pandas_categorical or []
    if not lists:
        return {}
    infos = dump.get("feature_infos", {})
    categorical = [
        i
        for i, name in enumerate(dump.get("feature_names", []))
        if infos.get(name, {}).get("values")
    ]
    if len(categorical) != len(lists):
        raise UnsupportedModel(
            f"the LightGBM model has {len(lists)} pandas category list(s) but "
            f"{len(categorical)} categorical feature(s), so which input column each list belongs "
            "to is unknown; train it with every categorical feature as an unordered pandas "
            "category column, or with integer codes and categorical_feature"
        )
    return {
        i: Categories(
            arrow_type_of(np.asarray(values)),
            tuple(values),
            unknown_ok=False,
            unknown_as_missing=True,
        )
        for i, values in zip(categorical, lists)
    }
