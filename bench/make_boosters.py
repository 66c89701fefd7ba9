"""Trains the benchmark's XGBoost and LightGBM models (skips what already exists).

Usage: python bench/make_boosters.py [--out bench/data]   (after bench/make_data.py)

On the same 50k-row training set as make_data.py's models (so `f00`..`f19` are their feature
names), each with 200 trees like the heavy HistGradientBoosting model:

- xgb.json: a native XGBoost booster (binary:logistic, depth 6), saved by XGBoost itself;
- xgb_sklearn.joblib: the same as an XGBClassifier in a joblib file;
- lgb.txt: a native LightGBM booster (binary, 31 leaves), saved by LightGBM itself;
- lgb_sklearn.joblib: the same as an LGBMClassifier in a joblib file;
- mlflow_boosters.db (+ mlflow_boosters_artifacts/): xgb_sklearn registered with
  models.register as `xgb`, alias champion (the xgboost flavour).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import joblib
import numpy as np
import pandas as pd

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))  # the project's models package, run from anywhere

from make_data import FEATURES, draw_features, draw_labels  # noqa: E402

TREES = 200
SMALL_TREES = 20


def training_set(seed: int = 0, rows: int = 50_000) -> tuple[pd.DataFrame, np.ndarray]:
    """make_data.write_models's training rows and labels (the same seed draws the same rows)."""
    rng = np.random.default_rng(seed)
    x = draw_features(rng, rows)
    return pd.DataFrame(x, columns=FEATURES), draw_labels(rng, x)


def write_boosters(out: Path) -> None:
    """Trains and writes every missing model file."""
    import lightgbm as lgb
    import xgboost as xgb

    frame, y = training_set()
    from sklearn.ensemble import HistGradientBoostingClassifier

    makers = {
        "xgb_sklearn.joblib": lambda: xgb.XGBClassifier(
            n_estimators=TREES, max_depth=6, random_state=0
        ).fit(frame, y),
        "lgb_sklearn.joblib": lambda: lgb.LGBMClassifier(
            n_estimators=TREES, num_leaves=31, random_state=0, verbose=-1
        ).fit(frame, y),
        # Small ensembles for --explain on 1M rows: exact contributions (TreeSHAP) cost about
        # trees x leaves x depth^2 per row, so these explain about 100 times faster than the
        # 200-tree models above.
        "xgb_small.joblib": lambda: xgb.XGBClassifier(
            n_estimators=SMALL_TREES, max_depth=4, random_state=0
        ).fit(frame, y),
        "lgb_small.joblib": lambda: lgb.LGBMClassifier(
            n_estimators=SMALL_TREES, num_leaves=15, random_state=0, verbose=-1
        ).fit(frame, y),
        "hgb_small.joblib": lambda: HistGradientBoostingClassifier(
            max_iter=SMALL_TREES, max_depth=4, random_state=0
        ).fit(frame, y),
    }
    for name, make in makers.items():
        path = out / name
        if path.exists():
            print(f"{path}: exists, skipped")
            continue
        started = time.monotonic()
        model = make()
        joblib.dump(model, path)
        print(f"{path}: trained in {time.monotonic() - started:.1f}s")
    # The native files are the wrappers' own boosters, saved by the libraries.
    native = {
        "xgb.json": lambda: joblib.load(out / "xgb_sklearn.joblib").get_booster(),
        "lgb.txt": lambda: joblib.load(out / "lgb_sklearn.joblib").booster_,
    }
    for name, booster in native.items():
        path = out / name
        if path.exists():
            print(f"{path}: exists, skipped")
            continue
        booster().save_model(str(path))
        print(f"{path}: written")


def write_registry(out: Path) -> None:
    """Registers xgb_sklearn.joblib as `xgb@champion` in a sqlite registry under `out`."""
    import mlflow

    from models.register import register

    db = out / "mlflow_boosters.db"
    if db.exists():
        print(f"{db}: exists, skipped")
        return
    uri = f"sqlite:///{db}"
    mlflow.set_tracking_uri(uri)
    mlflow.create_experiment(
        "bench-boosters", artifact_location=str(out / "mlflow_boosters_artifacts")
    )
    sample = pd.DataFrame(draw_features(np.random.default_rng(9), 10_000), columns=FEATURES)
    model = joblib.load(out / "xgb_sklearn.joblib")
    print(register(model, sample, "xgb", tracking_uri=uri, experiment="bench-boosters")[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=BENCH / "data")
    out = parser.parse_args().out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    write_boosters(out)
    write_registry(out)


if __name__ == "__main__":
    main()
