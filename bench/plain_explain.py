"""Baseline with no framework for --explain: score the files of a pattern one after another and
call the model library's own contribution function on each file's rows, keeping the top 3.

Usage: python bench/plain_explain.py --input 'DIR/*.parquet' --model MODEL --output DIR [--k 3]
MODEL: a joblib file holding an XGBClassifier (pred_contribs), an LGBMClassifier (pred_contrib),
a HistGradientBoostingClassifier (shap's TreeExplainer) or a Pipeline(StandardScaler,
LogisticRegression) (coefficient x (value - training mean), the means from MODEL.drift.json).
"""

from __future__ import annotations

import argparse
import glob
import json
import time
from pathlib import Path

import joblib
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


def explainer(model, path: str):
    """A function from a float64 feature matrix to its rows' contributions (rows x features)."""
    kind = type(model).__name__
    if kind == "XGBClassifier":
        import xgboost

        booster = model.get_booster()
        return lambda x: booster.predict(
            xgboost.DMatrix(x, feature_names=booster.feature_names), pred_contribs=True
        )[:, :-1]
    if kind == "LGBMClassifier":
        return lambda x: model.booster_.predict(x, pred_contrib=True)[:, :-1]
    if kind == "HistGradientBoostingClassifier":
        import shap

        tree = shap.TreeExplainer(model)
        return lambda x: tree.shap_values(x, check_additivity=False)
    scaler, linear = model[:-1], model[-1]
    base = json.loads(Path(path + ".drift.json").read_text())
    means = np.array([base[f]["mean"] for f in model.feature_names_in_])
    zmean = scaler.transform(means[None, :])[0]
    return lambda x: linear.coef_[0] * (scaler.transform(x) - zmean)


def score(table: pa.Table, model, explain, features: list[str], k: int) -> pa.Table:
    """id, prediction, proba_0/1, reason_1..k and contribution_1..k."""
    x = np.column_stack([table.column(f).to_numpy() for f in features])
    proba = model.predict_proba(x)
    contrib = np.asarray(explain(x), dtype=np.float64)
    order = np.argsort(-np.abs(contrib), axis=1, kind="stable")[:, :k]
    values = np.take_along_axis(contrib, order, axis=1)
    names = pa.array(features)
    columns = {"id": table["id"], "prediction": pa.array(model.classes_[proba.argmax(axis=1)])}
    columns.update({f"proba_{c}": pa.array(proba[:, i]) for i, c in enumerate(model.classes_)})
    columns.update({f"reason_{i + 1}": names.take(pa.array(order[:, i])) for i in range(k)})
    columns.update({f"contribution_{i + 1}": pa.array(values[:, i]) for i in range(k)})
    return pa.table(columns)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--output", required=True, type=Path)
    parser.add_argument("--k", type=int, default=3)
    args = parser.parse_args()

    started = time.monotonic()
    files = sorted(glob.glob(args.input))
    if not files:
        parser.error(f"no file matches {args.input}")
    model = joblib.load(args.model)
    features = [str(f) for f in model.feature_names_in_]
    explain = explainer(model, args.model)
    args.output.mkdir(parents=True, exist_ok=True)
    rows = 0
    for path in files:
        result = score(pq.read_table(path), model, explain, features, args.k)
        pq.write_table(result, args.output / f"{Path(path).stem}.parquet")
        rows += result.num_rows
    seconds = time.monotonic() - started
    rate = rows / seconds
    print(f"{rows:,} rows from {len(files)} file(s) in {seconds:.2f}s ({rate:,.0f} rows/s)")


if __name__ == "__main__":
    main()
