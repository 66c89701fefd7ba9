"""A night in brief: what the history of a job keeps of each night, and what "far outside the
previous nights" means. Only the standard library: the report (pipeline.report) uses it too.

A night's brief is built from its manifest (and its `quality.json`, written later by
`pipeline.evaluate` once labels arrived), so tonight's brief and the previous nights' are the
same numbers, computed the same way.
"""

from __future__ import annotations

import datetime
import math
import statistics
from typing import Any

# The numbers of a night compared with the previous nights (the report's columns, MLflow's
# stepped metrics): name -> what a person reads.
TRENDS = {
    "rows_read": "rows read",
    "error_rate": "error rate",
    "top_psi": "top drift PSI",
    "prediction": "prediction summary",
    "duration_s": "duration",
}
# Tonight's value is "far outside" the previous nights' range when it lies beyond their min or
# max by more than the range's width, or 10% of their median, whichever is larger; with fewer
# previous nights than this, nothing is called far outside.
MIN_PREVIOUS = 3


def _number(value: Any) -> float | None:
    """A finite int or float (not a bool) as a float, or None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        value = float(value)
    except OverflowError:  # an int too large for a float
        return None
    return value if math.isfinite(value) else None


def _dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def prediction_summary(profile: dict | None, classes: tuple | list | None) -> dict | None:
    """The prediction in one number: a classifier's share of rows predicted as its positive class
    (the last class, whose probability column the profile histograms), a regressor's mean.

    Returns:
        {"kind": "positive_share", "class": ..., "value": ...} or {"kind": "mean", "value": ...};
        None when the profile has neither (no rows, a text prediction).
    """
    profile = profile or {}
    rows = profile.get("rows") or 0
    if classes:
        if not rows:
            return None
        positive = str(classes[-1])
        count = (profile.get("class_counts") or {}).get(positive, 0)
        return {"kind": "positive_share", "class": positive, "value": round(count / rows, 6)}
    mean = _number(profile.get("prediction_mean"))
    return None if mean is None else {"kind": "mean", "value": mean}


def night_brief(manifest: dict, quality: dict | None = None) -> dict:
    """What the history keeps of one night (from its manifest, and quality.json when there)."""
    m = manifest if isinstance(manifest, dict) else {}
    drift = m.get("drift") if isinstance(m.get("drift"), dict) else {}
    top = max(
        ((k, v) for k, v in drift.items() if _number(v) is not None),
        key=lambda kv: kv[1],
        default=None,
    )
    prediction = (
        m.get("prediction_summary") if isinstance(m.get("prediction_summary"), dict) else None
    )
    model = m.get("model") if isinstance(m.get("model"), dict) else {}
    counts = m.get("counts") if isinstance(m.get("counts"), dict) else {}
    failed = m.get("failed_checks") if isinstance(m.get("failed_checks"), list) else []
    brief = {
        "run_date": m.get("run_date"),
        "run_id": m.get("run_id"),
        "status": m.get("status"),
        "rows_read": counts.get("rows_read"),
        "error_rate": m.get("error_rate"),
        "top_drift": {"feature": top[0], "psi": top[1]} if top else None,
        "prediction": prediction,
        "duration_s": m.get("duration_s"),
        "model_version": model.get("version"),
        "failed_checks": [str(c.get("check")) for c in failed if isinstance(c, dict)],
        "finished_at": m.get("finished_at"),
        "mlflow_run_id": m.get("mlflow_run_id"),
        "input_fingerprint": m.get("input_fingerprint"),
        "quality": None,
    }
    if isinstance(quality, dict) and isinstance(quality.get("metrics"), dict):
        brief["quality"] = {
            "metrics": {str(k): v for k, v in quality["metrics"].items() if _number(v) is not None},
            "rows_labelled": quality.get("rows_labelled"),
            "label_column": quality.get("label_column"),
        }
    return brief


def trend_value(brief: dict, name: str) -> float | None:
    """One of TRENDS of a night's brief, as a number (None: the night has none)."""
    if name == "top_psi":
        return _number(_dict(brief.get("top_drift")).get("psi"))
    if name == "prediction":
        return _number(_dict(brief.get("prediction")).get("value"))
    return _number(brief.get(name))


def far_outside(previous: list[float], value: float | None) -> bool:
    """Whether tonight's value lies far outside the previous nights' range (see MIN_PREVIOUS)."""
    if value is None or len(previous) < MIN_PREVIOUS:
        return False
    low, high = min(previous), max(previous)
    margin = max(high - low, 0.1 * abs(statistics.median(previous)))
    return value < low - margin or value > high + margin


def outliers(previous: list[dict], tonight: dict) -> dict[str, str]:
    """Tonight's TRENDS far outside the previous nights': name -> a line saying so."""
    out = {}
    for name, label in TRENDS.items():
        values = [v for v in (trend_value(b, name) for b in previous) if v is not None]
        value = trend_value(tonight, name)
        if far_outside(values, value):
            out[name] = (
                f"tonight's {label} {_short(value)} is far outside the previous "
                f"{len(values)} nights' range {_short(min(values))} to {_short(max(values))}"
            )
    return out


def step_of(run_date: Any) -> int | None:
    """A night's step for MLflow's stepped metrics: days since 1970-01-01 (None: no date)."""
    try:
        return (datetime.date.fromisoformat(str(run_date)) - datetime.date(1970, 1, 1)).days
    except ValueError:
        return None


def _short(value: float) -> str:
    if float(value).is_integer() and abs(value) >= 1:
        return f"{value:,.0f}"
    return f"{value:.4g}"
