"""The drift baseline a model carries: how its training data was distributed, per feature.

Computed when the model is trained (or registered) and read by the scoring run, which counts the
scored rows into the same bins (transforms.profile) and reports the population stability index.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def baseline_from_frame(frame, features: list[str], bins: int = 10) -> dict[str, Any]:
    """A drift baseline from training data: quantile bin edges and fractions per numeric
    feature, category fractions per text feature.

    Args:
        frame: the training features (pandas DataFrame).
        features: the columns to describe.
        bins: quantile bins per numeric feature.

    Returns:
        {feature: {"edges": [...], "fractions": [...], "mean": m} or {"categories": {value:
        fraction}}}; `mean` (the training mean) is the reference of a linear model's reason codes
        (--explain).
    """
    out: dict[str, Any] = {}
    for name in features:
        column = frame[name]
        if column.dtype.kind in "biuf":
            values = column.to_numpy(dtype=float)
            values = values[np.isfinite(values)]
            inner = np.unique(np.quantile(values, np.linspace(0, 1, bins + 1)[1:-1]))
            counts = np.bincount(
                np.searchsorted(inner, values, side="right"), minlength=len(inner) + 1
            )
            out[name] = {
                "edges": inner.tolist(),
                "fractions": (counts / counts.sum()).tolist(),
                "mean": float(values.mean()) if len(values) else 0.0,
            }
        else:
            shares = column.astype(str).value_counts(normalize=True)
            out[name] = {"categories": {str(k): float(v) for k, v in shares.items()}}
    return out
