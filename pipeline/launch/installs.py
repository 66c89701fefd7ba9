"""The launch's worker installs: what remote workers need beyond beamscore's own sdist."""

from __future__ import annotations

from typing import Any


def worker_packages(decided: Any) -> list[str]:
    """The pinned packages the model needs on a worker (`decided`: the launch's Launch): its
    library (XGBoost, LightGBM) at the running version, and shap for --explain on a tree model
    (beamscore[explain]); the sdist installs beamscore without extras."""
    from models.boosters import pins, worker_requirements

    needed = worker_requirements(decided.model)
    if decided.spec.explain is not None and decided.spec.explain.method == "shap_tree":
        needed.extend(pins(["shap"]))
    return needed
