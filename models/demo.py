"""The demo: a small churn-style model (a Pipeline with text categories) and input to score.

`python -m models.demo --out demo` writes demo/model.joblib and demo/input/*.parquet unless
they exist. Deterministic: the same seed gives the same model and rows.
"""

from __future__ import annotations

import argparse
import json
import logging
import os

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

_LOG = logging.getLogger(__name__)

NUMERIC = ["tenure_months", "monthly_spend", "support_calls"]
CATEGORICAL = ["plan", "region"]
PLANS = ["basic", "plus", "pro"]
REGIONS = ["north", "south", "east", "west"]


def make_rows(n: int, seed: int, start_id: int = 0) -> pd.DataFrame:
    """Customer rows drawn like the training data, with a `churned` label."""
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(
        {
            "customer_id": np.arange(start_id, start_id + n, dtype=np.int64),
            "tenure_months": rng.integers(1, 72, n).astype(np.float64),
            "monthly_spend": rng.gamma(2.0, 30.0, n).round(2),
            "support_calls": rng.poisson(1.5, n).astype(np.float64),
            "plan": rng.choice(PLANS, n, p=[0.5, 0.3, 0.2]),
            "region": rng.choice(REGIONS, n),
        }
    )
    logit = (
        -0.05 * df.tenure_months
        + 0.6 * df.support_calls
        + 0.01 * df.monthly_spend
        - 0.8 * (df.plan == "pro")
        + rng.normal(0, 1, n)
    )
    df["churned"] = np.where(logit > 0, "yes", "no")
    return df


def baseline(seed: int = 0) -> dict:
    """The drift baseline of the training data (quantile bins per feature)."""
    from models.baseline import baseline_from_frame

    return baseline_from_frame(make_rows(5000, seed), NUMERIC + CATEGORICAL)


def train(seed: int = 0):
    """A Pipeline(ColumnTransformer(scaler, one-hot), LogisticRegression) on 5,000 rows."""
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    df = make_rows(5000, seed)
    model = Pipeline(
        [
            (
                "prep",
                ColumnTransformer(
                    [
                        ("num", StandardScaler(), NUMERIC),
                        ("cat", OneHotEncoder(handle_unknown="ignore"), CATEGORICAL),
                    ]
                ),
            ),
            ("clf", LogisticRegression(max_iter=1000)),
        ]
    )
    return model.fit(df[NUMERIC + CATEGORICAL], df["churned"])


def write_demo(out: str, rows: int = 100_000, files: int = 4) -> tuple[str, str]:
    """Writes the demo model and input under `out` unless present.

    Returns:
        The model path and the input pattern.
    """
    import joblib

    model_path = os.path.join(out, "model.joblib")
    input_dir = os.path.join(out, "input")
    if not os.path.exists(model_path):
        os.makedirs(out, exist_ok=True)
        joblib.dump(train(), model_path)
        with open(model_path + ".drift.json", "w") as f:
            json.dump(baseline(), f)
        _LOG.info("trained the demo model: %s (drift baseline beside it)", model_path)
    if not os.path.isdir(input_dir):
        os.makedirs(input_dir)
        per_file = rows // files
        for i in range(files):
            df = make_rows(per_file, seed=100 + i, start_id=i * per_file).drop(columns="churned")
            pq.write_table(
                pa.Table.from_pandas(df, preserve_index=False),
                os.path.join(input_dir, f"customers-{i:02d}.parquet"),
            )
        _LOG.info("wrote the demo input: %s", input_dir)
    return model_path, os.path.join(input_dir, "*.parquet")


def register(name: str, alias: str = "champion") -> str:
    """Logs the demo model to MLflow (MLFLOW_TRACKING_URI) with models.register, as a user
    registers their own: signature and drift baseline from the training rows.

    Returns:
        The registry URI to score with: models:/<name>@<alias>.
    """
    from models.register import register as register_model

    uri, _ = register_model(train(), make_rows(5000, seed=0), name, alias)
    return uri


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="demo", help="directory for the demo model and input")
    parser.add_argument("--rows", type=int, default=100_000, help="rows of demo input")
    parser.add_argument(
        "--register",
        metavar="NAME",
        help="also log the model to MLflow (MLFLOW_TRACKING_URI), register it as NAME and set "
        "the alias champion on the new version",
    )
    args = parser.parse_args()
    if args.register and not os.environ.get("MLFLOW_TRACKING_URI"):
        parser.error("--register needs MLFLOW_TRACKING_URI (e.g. sqlite:///$PWD/mlflow.db)")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    model, pattern = write_demo(args.out, args.rows)
    print(f"model={model}\ninput={pattern}")
    if args.register:
        print(f"registered={register(args.register)}")


if __name__ == "__main__":
    main()
