"""Small fitted estimators that misbehave on purpose, pickled by the tests with joblib.

They live in an importable module (not in a test function) so that the pipeline's own process can
unpickle them, as it would a user's custom estimator.
"""

from __future__ import annotations

import os
import time

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin


class _Fitted(BaseEstimator):
    """Records the training columns like a scikit-learn estimator fitted on a DataFrame."""

    def fit(self, X, y=None):
        self.feature_names_in_ = np.asarray(list(X.columns), dtype=object)
        self.n_features_in_ = len(self.feature_names_in_)
        return self

    def _matrix(self, X) -> np.ndarray:
        return np.asarray(X, dtype=float)


class AlwaysRaises(_Fitted, RegressorMixin):
    """Raises on every prediction."""

    def predict(self, X):
        raise ValueError("this model is broken for every row")


class Sentinel(_Fitted, RegressorMixin):
    """Predicts the sum of the features, but raises for a batch holding a row whose f0 is 999;
    appends each call's row count to `calls_file`."""

    def __init__(self, calls_file: str = ""):
        self.calls_file = calls_file

    def predict(self, X):
        if self.calls_file:
            with open(self.calls_file, "a") as f:
                f.write(f"{len(X)}\n")
        m = self._matrix(X)
        if (m[:, 0] == 999).any():
            raise ValueError("f0 = 999 is a sentinel this model refuses")
        return m.sum(axis=1)


class OddRefuser(_Fitted, RegressorMixin):
    """Predicts the sum of the features, but raises for a batch holding a row whose f0 is an odd
    integer (naming the first such value when `say_value`, else with the same message for every
    row), and for a batch of more than `max_rows` rows (0: no limit); counts its calls in `calls_`
    (in-process only)."""

    def __init__(self, max_rows: int = 0, say_value: bool = True):
        self.max_rows = max_rows
        self.say_value = say_value

    def predict(self, X):
        self.calls_ = getattr(self, "calls_", 0) + 1
        if self.max_rows and len(X) > self.max_rows:
            raise MemoryError(f"{len(X)} rows is more than this model takes at once")
        m = self._matrix(X)
        odd = np.flatnonzero(np.mod(m[:, 0], 2) == 1)
        if len(odd):
            value = f"f0 = {m[odd[0], 0]:g}" if self.say_value else "f0"
            raise ValueError(f"{value} is odd; this model refuses odd f0")
        return m.sum(axis=1)


class NanRegressor(_Fitted, RegressorMixin):
    """Predicts the sum of the features, NaN where f0 < 0 and inf where f0 > 2."""

    def predict(self, X):
        m = self._matrix(X)
        out = m.sum(axis=1)
        out[m[:, 0] < 0] = np.nan
        out[m[:, 0] > 2] = np.inf
        return out


class NanProbaClassifier(_Fitted, ClassifierMixin):
    """Two classes; probabilities NaN where f0 < 0."""

    def fit(self, X, y=None):
        super().fit(X)
        self.classes_ = np.array(["no", "yes"])
        return self

    def predict_proba(self, X):
        m = self._matrix(X)
        p = 1 / (1 + np.exp(-m[:, 0]))
        proba = np.column_stack([1 - p, p])
        proba[m[:, 0] < 0] = np.nan
        return proba

    def predict(self, X):
        return self.classes_[np.nan_to_num(self.predict_proba(X)).argmax(axis=1)]


class Labeller(_Fitted):
    """No classes_, no predict_proba: predict returns text labels."""

    def predict(self, X):
        return np.where(self._matrix(X)[:, 0] > 0, "high", "low")


class Slow(_Fitted, RegressorMixin):
    """Sleeps in every prediction (for interrupting a run mid-way)."""

    def __init__(self, seconds: float = 0.5):
        self.seconds = seconds

    def predict(self, X):
        if len(X) > 1:  # the launcher's one-row probes stay fast
            time.sleep(self.seconds)
        return self._matrix(X).sum(axis=1)


def calls(path: str) -> list[int]:
    """The batch sizes Sentinel was called with, in order."""
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [int(line) for line in f]


class RefuseValue(BaseEstimator):
    """A Pipeline's first step: passes its DataFrame on, but raises for a batch holding a row
    whose `column` is `value` (a model that fails on some rows: predict-stage errors)."""

    def __init__(self, column: str = "x", value: float = 13.0):
        self.column = column
        self.value = value

    def fit(self, X, y=None):
        self.feature_names_in_ = np.asarray(list(X.columns), dtype=object)
        self.n_features_in_ = len(self.feature_names_in_)
        return self

    def transform(self, X):
        if (np.asarray(X[self.column], dtype=float) == self.value).any():
            raise ValueError(f"{self.column} = {self.value:g} is refused by this model")
        return X
