"""Reason codes (--explain K): per row, each input feature's exact contribution to the score.

The launcher decides a plan (`plan`): which exact method explains the model, in which units,
and the expected value that the contributions of every feature add up to the raw output from
(SHAP's local accuracy). Each worker builds an `Explainer` from its loaded model and the plan,
and `top_k` reduces a batch's contributions to the K largest at once, so memory follows the
batch, never the run.

Methods:
- XGBoost: the booster's own `predict(pred_contribs=True)`; LightGBM: `predict(pred_contrib=True)`
  (units: the margin, log-odds for a binary classifier).
- scikit-learn trees (RandomForest, ExtraTrees, GradientBoosting, HistGradientBoosting,
  DecisionTree): shap's TreeExplainer (the `beamscore[explain]` extra); units: the model's raw
  output, as shap's TreeExplainer defines it (log-odds for gradient boosting classifiers, the
  probability for forests and single trees, the prediction for regressors).
- linear models (coef_ and intercept_): coef x (value - reference mean); the reference means
  come from the model's drift baseline (`mean` of each numeric feature, category shares of a
  text feature) when it has every feature, else from the launcher's sample of the night (the
  mean of each column the linear step takes, over the sampled rows); with neither, refused.
A multi-class model is explained in its predicted class's raw output. A scikit-learn Pipeline
whose last step is one of these is explained on its last step's inputs, and the contributions
of the columns a ColumnTransformer made from one input column (one-hot columns) are summed back
to that input column.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from models.boosters import BoosterModel, library_of


class CannotExplain(Exception):
    """The model (or this setup) has no exact explanation: --explain is refused at launch."""


SUPPORTED = (
    "--explain supports XGBoost and LightGBM models, scikit-learn tree models (RandomForest, "
    "ExtraTrees, GradientBoosting, HistGradientBoosting, DecisionTree) and linear models "
    "(LogisticRegression, LinearRegression, Ridge, ...), alone or as the last step of a Pipeline"
)

_TREES = (
    "RandomForestClassifier",
    "RandomForestRegressor",
    "ExtraTreesClassifier",
    "ExtraTreesRegressor",
    "GradientBoostingClassifier",
    "GradientBoostingRegressor",
    "HistGradientBoostingClassifier",
    "HistGradientBoostingRegressor",
    "DecisionTreeClassifier",
    "DecisionTreeRegressor",
)
# Column transformers whose every output column comes from one input column.
_PER_COLUMN = (
    "OneHotEncoder",
    "OrdinalEncoder",
    "StandardScaler",
    "MinMaxScaler",
    "MaxAbsScaler",
    "RobustScaler",
    "SimpleImputer",
)


@dataclasses.dataclass(frozen=True)
class ExplainPlan:
    """What the launcher decided for --explain.

    Attributes:
        k: how many reasons each row gets.
        method: xgboost, lightgbm, shap_tree or linear.
        units: what a contribution is measured in.
        expected_value: the raw output contributions add up from (one per class for a
            multi-class model: the predicted class's applies).
        reference: linear models: where the reference means came from (drift_baseline, or
            night_sample: the launcher's sample of the night).
        means: linear models: the reference mean of each column the last step takes.
        reference_rows: with night_sample, how many sampled rows the means are over.
        groups: for each column the last step takes, the index of the input feature it was made
            from (None: the last step takes the features themselves).
    """

    k: int
    method: str
    units: str
    expected_value: float | tuple[float, ...]
    reference: str | None = None
    means: tuple[float, ...] | None = None
    groups: tuple[int, ...] | None = None
    reference_rows: int | None = None

    def manifest(self) -> dict[str, Any]:
        ev = self.expected_value
        out = {
            "k": self.k,
            "method": self.method,
            "units": self.units,
            "expected_value": list(ev) if isinstance(ev, tuple) else ev,
        }
        if self.reference:
            out["reference"] = self.reference
        if self.reference_rows is not None:
            out["reference_rows"] = self.reference_rows
        return out


def _split(model: Any) -> tuple[Any, Any]:
    """(the preprocessing Pipeline or None, the last step)."""
    steps = getattr(model, "steps", None)
    if steps and type(model).__name__ == "Pipeline":
        if len(steps) == 1:
            return None, steps[-1][1]
        return model[:-1], steps[-1][1]
    return None, model


def kind_of(model: Any) -> str:
    """xgboost, lightgbm, shap_tree, linear, or "" (nothing exact)."""
    _, last = _split(model)
    if isinstance(last, BoosterModel):
        return last.library
    library = library_of(last)
    if library:
        return library
    name = type(last).__name__
    if name in _TREES and type(last).__module__.startswith("sklearn."):
        return "shap_tree"
    if (
        type(last).__module__.startswith("sklearn.linear_model")
        and hasattr(last, "coef_")
        and hasattr(last, "intercept_")
    ):
        return "linear"
    return ""


def describe(model: Any) -> str:
    _, last = _split(model)
    if isinstance(last, BoosterModel):
        return repr(last)
    inner = type(last).__name__
    return inner if last is model else f"a Pipeline ending in {inner}"


def plan(
    model: Any,
    features: tuple[str, ...],
    k: int,
    baseline: dict | None,
    probe_rows: Any,
    sample_rows: Any = None,
) -> ExplainPlan:
    """Decides how to explain the model, and checks it on the probe rows (raises CannotExplain).

    Args:
        model: the loaded model.
        features: the input features, in the model's order.
        k: --explain.
        baseline: the model's drift baseline (linear models take their reference means there).
        probe_rows: a DataFrame of rows the model scores (the launch probe).
        sample_rows: a DataFrame of the night's sampled rows the model takes (None: none);
            a linear model's reference means where the baseline lacks a feature.
    """
    method = kind_of(model)
    if not method:
        raise CannotExplain(f"--explain cannot explain {describe(model)} exactly: {SUPPORTED}")
    if not 1 <= k <= len(features):
        raise CannotExplain(
            f"--explain {k} is not a number from 1 to {len(features)} (the model's features)"
        )
    if method == "shap_tree":
        try:
            import shap  # noqa: F401
        except ImportError as e:
            raise CannotExplain(
                f"--explain for {describe(model)} needs shap, which cannot be imported here "
                f"({e}): install the extra beamscore[explain] (pip install 'beamscore[explain]')"
            ) from None
    pre, last = _split(model)
    groups = _groups(pre, features) if pre is not None else None
    means = reference = rows = None
    if method == "linear":
        if _baseline_covers(baseline, features) or sample_rows is None or not len(sample_rows):
            means = _linear_means(pre, last, features, baseline, groups)
            reference = "drift_baseline"
        else:
            means = _sample_means(pre, features, sample_rows)
            reference, rows = "night_sample", len(sample_rows)
    draft = ExplainPlan(k, method, _units(method, last), 0.0, reference, means, groups, rows)
    explainer = Explainer(model, draft, len(features))
    expected = explainer.expected_value(probe_rows)
    final = dataclasses.replace(draft, expected_value=expected)
    _check_accuracy(model, Explainer(model, final, len(features)), probe_rows, describe(model))
    return final


def _units(method: str, last: Any) -> str:
    """What a contribution is measured in: the raw output the method explains."""
    classes = getattr(last, "classes_", None)
    if classes is None:
        return "prediction"
    gradient = method in ("xgboost", "lightgbm") or "GradientBoosting" in type(last).__name__
    if method == "linear":
        raw = "decision function (log-odds for logistic regression)"
    elif gradient:
        raw = "margin (log-odds)"
    else:  # forests and single trees average probabilities
        raw = "probability"
    if len(classes) > 2:
        return f"the predicted class's {raw.replace(' (log-odds)', '')}"
    return f"{raw}, of the positive class"


def _groups(pre: Any, features: tuple[str, ...]) -> tuple[int, ...]:
    """For each column the preprocessing makes, the input feature it was made from."""
    steps = pre.steps if hasattr(pre, "steps") else [("pre", pre)]
    mapping: list[int] | None = None
    for _, step in steps:
        if step is None or step == "passthrough":
            continue
        if type(step).__name__ == "ColumnTransformer":
            if mapping is not None:
                raise CannotExplain("--explain takes at most one ColumnTransformer in a Pipeline")
            mapping = _column_transformer_groups(step, features)
        elif type(step).__name__ in _PER_COLUMN and not getattr(step, "add_indicator", False):
            if mapping is None:
                mapping = list(range(len(features)))
            if type(step).__name__ == "OneHotEncoder":
                mapping = _one_hot_groups(step, mapping)
        else:
            raise CannotExplain(
                f"--explain cannot tell which input column each column of {type(step).__name__} "
                f"comes from: {SUPPORTED}, preprocessed by ColumnTransformer and per-column "
                f"transformers ({', '.join(_PER_COLUMN)})"
            )
    return tuple(mapping if mapping is not None else range(len(features)))


def _one_hot_groups(encoder: Any, sources: list[int]) -> list[int]:
    out = []
    drop = getattr(encoder, "drop_idx_", None)
    for i, cats in enumerate(encoder.categories_):
        n = len(cats)
        if drop is not None and drop[i] is not None:
            n -= 1
        infrequent = getattr(encoder, "_infrequent_indices", None)
        if infrequent is not None and infrequent[i] is not None:
            n -= len(infrequent[i]) - 1
        out.extend([sources[i]] * n)
    return out


def _column_transformer_groups(ct: Any, features: tuple[str, ...]) -> list[int]:
    index = {f: i for i, f in enumerate(features)}
    out: list[int] = []
    for name, transformer, columns in ct.transformers_:
        if transformer == "drop" or (hasattr(columns, "__len__") and len(columns) == 0):
            continue
        given = getattr(ct, "_transformer_to_input_indices", {}).get(name)
        names_in = getattr(ct, "feature_names_in_", None)
        if given is not None:  # the input columns as the fitted transformer resolved them
            sources = [index[str(names_in[i])] if names_in is not None else int(i) for i in given]
        else:
            cols = list(columns) if not isinstance(columns, (str, int)) else [columns]
            if isinstance(cols[0], (bool, np.bool_)):
                sources = [i for i, keep in enumerate(cols) if keep]
            else:
                sources = [index[c] if isinstance(c, str) else int(c) for c in cols]
        if transformer == "passthrough":
            out.extend(sources)
            continue
        inner = transformer.steps if hasattr(transformer, "steps") else [(name, transformer)]
        mapping = list(sources)
        for _, step in inner:
            kind = type(step).__name__
            if step == "passthrough" or step is None:
                continue
            if kind == "FunctionTransformer" and getattr(step, "func", 0) is None:
                continue  # the identity (what a fitted "passthrough" becomes)
            if kind not in _PER_COLUMN or getattr(step, "add_indicator", False):
                if len(set(mapping)) == 1:  # whatever it makes, it makes from one column
                    width = (
                        len(step.get_feature_names_out())
                        if hasattr(step, "get_feature_names_out")
                        else None
                    )
                    if width is not None:
                        mapping = [mapping[0]] * width
                        continue
                raise CannotExplain(
                    f"--explain cannot tell which input column each column of {kind} (in "
                    f"transformer {name!r}) comes from; {SUPPORTED}"
                )
            if kind == "OneHotEncoder":
                mapping = _one_hot_groups(step, mapping)
        out.extend(mapping)
    remainder = getattr(ct, "remainder", "drop")
    if remainder not in ("drop",) and not any(n == "remainder" for n, _, _ in ct.transformers_):
        raise CannotExplain("--explain: the ColumnTransformer's remainder is not understood")
    return out


def _baseline_covers(baseline: dict | None, features) -> bool:
    return bool(baseline) and all(
        f in baseline and ("mean" in baseline[f] or "categories" in baseline[f]) for f in features
    )


def _sample_means(pre, features, rows) -> tuple[float, ...]:
    """The mean of each column the linear step takes, over the night's sampled rows."""
    frame = rows[list(features)]
    if pre is None:
        z = frame.to_numpy(dtype=np.float64)
    else:
        z = pre.transform(frame)
        z = z.toarray() if hasattr(z, "toarray") else np.asarray(z, dtype=np.float64)
    means = z.mean(axis=0)
    if not np.isfinite(means).all():
        raise CannotExplain("--explain: the night's sample gives no finite reference means")
    return tuple(float(v) for v in means)


def _linear_means(pre, last, features, baseline, groups) -> tuple[float, ...]:
    """The reference mean of each column the linear step takes, from the drift baseline."""
    missing = [
        f
        for f in features
        if not baseline
        or f not in baseline
        or ("mean" not in baseline[f] and "categories" not in baseline[f])
    ]
    if missing:
        raise CannotExplain(
            "--explain for a linear model needs reference means of its features: the model's "
            f"drift baseline has none for {', '.join(missing[:5])}, and there is no sample of "
            "the night to take them from (save the baseline with "
            "models.baseline.baseline_from_frame, or serve --like a night scored with --explain, "
            "whose manifest records them)"
        )
    if pre is None:
        numeric = [f for f in features if "mean" not in baseline[f]]
        if numeric:
            raise CannotExplain(f"--explain: the baseline has no mean for {', '.join(numeric)}")
        return tuple(float(baseline[f]["mean"]) for f in features)
    import pandas as pd

    # Each column the preprocessing makes comes from one input column (groups): its mean is
    # that column's transformed values weighted by the baseline (the category shares; the
    # mean of a numeric column, transformed).
    width = len(groups)
    sums = np.zeros(width)
    for j, f in enumerate(features):
        if "mean" in baseline[f]:
            values, weights = [float(baseline[f]["mean"])], [1.0]
        else:
            shares = baseline[f]["categories"]
            values, weights = list(shares), [float(w) for w in shares.values()]
        frame = pd.DataFrame({g: [_typical(baseline[g])] * len(values) for g in features})
        frame[f] = values
        z = pre.transform(frame)
        z = z.toarray() if hasattr(z, "toarray") else np.asarray(z, dtype=np.float64)
        mine = [c for c in range(width) if groups[c] == j]
        total = sum(weights)
        sums[mine] = (np.asarray(weights)[:, None] * z[:, mine]).sum(axis=0) / total
    return tuple(float(v) for v in sums)


def _typical(base: dict) -> Any:
    if "mean" in base:
        return float(base["mean"])
    return max(base["categories"].items(), key=lambda kv: kv[1])[0]


class Explainer:
    """Contributions of every input feature, for a batch, in the plan's units."""

    def __init__(self, model: Any, plan_: ExplainPlan, n_features: int):
        self._plan = plan_
        self._n = n_features
        self._pre, self._last = _split(model)
        self._shap = None
        if plan_.method == "shap_tree":
            import shap

            self._shap = shap.TreeExplainer(self._last, model_output="raw")

    def expected_value(self, rows: Any = None) -> float | tuple[float, ...]:
        """The raw output the contributions add up from (per class when there are several);
        a booster's is its bias column, read from scoring `rows`."""
        method, last = self._plan.method, self._last
        if method == "shap_tree":
            ev = np.atleast_1d(np.asarray(self._shap.expected_value, dtype=np.float64))
            return float(ev[-1]) if len(ev) <= 2 and self._binary_column() else _one_or_many(ev)
        if method == "linear":
            coef = np.atleast_2d(np.asarray(last.coef_, dtype=np.float64))
            intercept = np.atleast_1d(np.asarray(last.intercept_, dtype=np.float64))
            means = np.asarray(self._plan.means)
            return _one_or_many(intercept + coef @ means)
        raw = self._booster(self._inputs(rows.iloc[:1] if hasattr(rows, "iloc") else rows[:1]))
        return _one_or_many(np.asarray(raw[0], dtype=np.float64)[..., -1])

    def _binary_column(self) -> bool:
        classes = getattr(self._last, "classes_", None)
        return classes is not None and len(classes) == 2

    def _inputs(self, X) -> np.ndarray:
        """What the last step takes, as a float matrix."""
        if self._pre is not None:
            Z = self._pre.transform(X)
        elif isinstance(self._last, BoosterModel):
            return self._last.matrix(X)
        else:
            Z = X
        if hasattr(Z, "toarray"):
            Z = Z.toarray()
        return np.asarray(Z, dtype=np.float64)

    def __call__(self, X) -> tuple[np.ndarray, np.ndarray]:
        """(contributions: rows x input features, expected value of each row's class)."""
        method = self._plan.method
        Z = self._inputs(X)
        if method in ("xgboost", "lightgbm"):
            raw = self._booster(Z)  # rows x (columns + 1), or rows x classes x (columns + 1)
        elif method == "shap_tree":
            values = np.asarray(self._shap.shap_values(Z, check_additivity=False))
            ev = np.atleast_1d(np.asarray(self._shap.expected_value, dtype=np.float64))
            if values.ndim == 3:  # rows x columns x outputs
                values = np.transpose(values, (0, 2, 1))
                bias = np.broadcast_to(ev[None, :, None], (len(Z), len(ev), 1))
                raw = np.concatenate([values, bias], axis=2)
            else:
                raw = np.column_stack([values, np.full(len(Z), ev[-1])])
        else:
            coef = np.atleast_2d(np.asarray(self._last.coef_, dtype=np.float64))
            means = np.asarray(self._plan.means)
            contrib = (Z - means)[:, None, :] * coef[None, :, :]  # rows x outputs x columns
            ev = np.atleast_1d(np.asarray(self.expected_value(), dtype=np.float64))
            bias = np.broadcast_to(ev[None, :, None], (len(Z), len(ev), 1))
            raw = np.concatenate([contrib, bias], axis=2)
            if raw.shape[1] == 1:
                raw = raw[:, 0, :]
        if raw.ndim == 3:
            if raw.shape[1] == 2 and self._binary_column():
                raw = raw[:, 1, :]  # the positive class (forests give one output per class)
            else:
                chosen = np.argmax(raw.sum(axis=2), axis=1)  # the predicted class
                raw = raw[np.arange(len(raw)), chosen, :]
        contrib, bias = raw[:, :-1].astype(np.float64), raw[:, -1].astype(np.float64)
        if self._plan.groups is not None:
            grouped = np.zeros((len(contrib), self._n))
            np.add.at(grouped.T, np.asarray(self._plan.groups), contrib.T)
            contrib = grouped
        return contrib, bias

    def _booster(self, Z: np.ndarray) -> np.ndarray:
        last = self._last
        estimator = last.estimator if isinstance(last, BoosterModel) else last
        if self._plan.method == "xgboost":
            import xgboost

            wrapper = estimator if isinstance(estimator, xgboost.XGBModel) else None
            booster = wrapper.get_booster() if wrapper is not None else estimator
            kwargs = {}
            best = getattr(booster, "best_iteration", None) if wrapper is not None else None
            if best is not None:
                kwargs["iteration_range"] = (0, best + 1)
            matrix = xgboost.DMatrix(
                Z,
                feature_names=booster.feature_names,
                feature_types=booster.feature_types,
                enable_categorical=True,
            )
            return np.asarray(booster.predict(matrix, pred_contribs=True, **kwargs))
        import lightgbm

        booster = estimator.booster_ if isinstance(estimator, lightgbm.LGBMModel) else estimator
        kwargs = {}
        if isinstance(estimator, lightgbm.LGBMModel) and getattr(estimator, "best_iteration_", 0):
            kwargs["num_iteration"] = estimator.best_iteration_
        out = np.asarray(booster.predict(Z, pred_contrib=True, **kwargs))
        width = Z.shape[1] + 1
        if out.shape[1] > width:  # classes side by side
            out = out.reshape(len(Z), out.shape[1] // width, width)
        return out


def _one_or_many(values: np.ndarray) -> float | tuple[float, ...]:
    values = np.atleast_1d(values)
    return float(values[0]) if len(values) == 1 else tuple(float(v) for v in values)


def raw_output(model: Any, X) -> np.ndarray:
    """The model's own raw output, per row, in the units contributions add up to."""
    pre, last = _split(model)
    explainer_input = X if pre is None else pre.transform(X)
    method = kind_of(model)
    if method in ("xgboost", "lightgbm"):
        estimator = last.estimator if isinstance(last, BoosterModel) else last
        Z = last.matrix(X) if isinstance(last, BoosterModel) else explainer_input
        if method == "xgboost":
            if hasattr(estimator, "get_booster"):  # the wrapper's trees (best_iteration)
                out = estimator.predict(np.asarray(Z, np.float64), output_margin=True)
            else:
                out = estimator.inplace_predict(np.asarray(Z, np.float64), predict_type="margin")
        else:
            booster = getattr(estimator, "booster_", estimator)
            out = booster.predict(np.asarray(Z, np.float64), raw_score=True)
        out = np.asarray(out, dtype=np.float64)
        return out if out.ndim == 1 else out.max(axis=1)
    if method == "linear" or "GradientBoosting" in type(last).__name__:
        if hasattr(last, "decision_function"):
            out = np.asarray(last.decision_function(explainer_input), dtype=np.float64)
        else:
            out = np.asarray(last.predict(explainer_input), dtype=np.float64)
        return out if out.ndim == 1 else out.max(axis=1)
    if hasattr(last, "predict_proba"):
        proba = np.asarray(last.predict_proba(explainer_input), dtype=np.float64)
        return proba[:, 1] if proba.shape[1] == 2 else proba.max(axis=1)
    return np.asarray(last.predict(explainer_input), dtype=np.float64)


def _check_accuracy(model: Any, explainer: Explainer, rows: Any, what: str) -> None:
    """The contributions and the expected value add up to the model's own raw output (the
    launch check that the method explains this model exactly)."""
    if rows is None or not len(rows):
        return
    try:
        contrib, bias = explainer(rows)
        own = raw_output(model, rows)
    except Exception as e:  # noqa: BLE001 - the library cannot explain this model
        raise CannotExplain(
            f"--explain cannot explain {what}: {type(e).__name__}: {str(e)[:300]}"
        ) from None
    total = contrib.sum(axis=1) + bias
    if not np.allclose(total, own, rtol=1e-5, atol=1e-5):
        worst = float(np.max(np.abs(total - own)))
        raise CannotExplain(
            f"--explain: the contributions of {what} do not add up to its raw output (off by "
            f"{worst:.3g}): {SUPPORTED}"
        )


def top_k(contrib: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The K largest absolute contributions of each row, largest first, ties in feature order.

    Returns (feature indexes, -1 where a row has fewer than K non-zero contributions;
    contributions, NaN there).
    """
    order = np.argsort(-np.abs(contrib), axis=1, kind="stable")[:, :k]
    values = np.take_along_axis(contrib, order, axis=1)
    zero = values == 0
    order = np.where(zero, -1, order)
    values = np.where(zero, np.nan, values)
    return order.astype(np.int32), values
