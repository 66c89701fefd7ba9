"""The cost of finding the rows a model fails on: one batch through PredictBatches, in-process.

A scikit-learn Pipeline (a check step, StandardScaler, LogisticRegression) on 20 float features
refuses every batch holding a row whose f19 is -1. The same batch is scored with no such row,
with one, and with every other row refused (the worst case: the model must be tried on every row
alone); the report gives wall seconds for PredictBatches.process, the number of model calls
(predict/predict_proba) and the rows scored and rejected.

Usage: python bench/predict_search.py [--rows 65536] [--cases none,one,every_other,all]
    [--repeats 1] [--pandas]
(run from the repository root; --pandas scores through DataFrames, as for a model the launcher
did not see score a float matrix alike.)
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import joblib  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pyarrow as pa  # noqa: E402
from apache_beam.utils import shared  # noqa: E402
from sklearn.base import BaseEstimator, TransformerMixin  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.pipeline import Pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from models import loading  # noqa: E402
from models.introspect import inspect  # noqa: E402
from transforms.predict import PredictBatches, share_with_workers  # noqa: E402
from transforms.spec import Chunk, ScoringSpec, TextFormat  # noqa: E402

FEATURES = [f"f{i:02d}" for i in range(20)]


class RefuseUnknown(BaseEstimator, TransformerMixin):
    """Passes its input on, but raises when a row's last feature is -1; counts its calls."""

    calls = 0

    def fit(self, X, y=None):
        return self

    def transform(self, X):
        RefuseUnknown.calls += 1
        m = np.asarray(X, dtype=float)
        bad = np.flatnonzero(m[:, -1] == -1)
        if len(bad):
            raise ValueError(f"f19 = -1 (unknown) in {len(bad)} of {len(m)} rows; refused")
        return X


def model_and_spec(workdir: Path, pandas_path: bool) -> ScoringSpec:
    """Fits the pipeline on 50,000 rows, saves it, and lays out the spec the launcher would."""
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(50_000, len(FEATURES))), columns=FEATURES)
    y = (X.f00 + 0.5 * X.f01 - X.f02 + rng.normal(scale=0.5, size=len(X)) > 0).astype(int)
    model = Pipeline(
        [("check", RefuseUnknown()), ("scale", StandardScaler()), ("lr", LogisticRegression())]
    ).fit(X, y)
    path = workdir / "refuse.joblib"
    joblib.dump(model, path)
    ref = loading.resolve(str(path))
    share_with_workers(ref.sha256, model)  # the DoFn takes this very object
    facts = dataclasses.replace(inspect(model), numpy_ok=not pandas_path, missing_ok=frozenset())
    columns = pa.schema([("id", pa.int64())] + [(f, pa.float64()) for f in FEATURES])
    return ScoringSpec(
        run_id="bench",
        input_format="parquet",
        input_pattern=str(workdir / "*.parquet"),
        output=str(workdir / "out"),
        features=tuple(FEATURES),
        keys=("id",),
        columns=columns,
        model=ref,
        facts=facts,
        text=TextFormat(),
        batch_size=65536,
        split_bytes=64 << 20,
    )


def batch(rows: int, case: str) -> pa.RecordBatch:
    rng = np.random.default_rng(1)
    df = pd.DataFrame(rng.normal(size=(rows, len(FEATURES))), columns=FEATURES)
    if case == "one":
        df.loc[rows // 3, "f19"] = -1.0
    elif case == "every_other":
        df.loc[1::2, "f19"] = -1.0
    elif case == "all":
        df["f19"] = -1.0
    elif case != "none":
        raise SystemExit(f"unknown case {case}")
    df.insert(0, "id", np.arange(rows, dtype=np.int64))
    return pa.RecordBatch.from_pandas(df, preserve_index=False)


def run(dofn: PredictBatches, chunk: Chunk) -> tuple[float, int, int, int]:
    """Seconds, model calls, rows scored, rows rejected for one process() of the chunk."""
    RefuseUnknown.calls = 0
    dofn.start_bundle()
    start = time.perf_counter()
    out = list(dofn.process(chunk))
    seconds = time.perf_counter() - start
    scored = sum(o.num_rows for o in out if isinstance(o, pa.Table))
    return (
        seconds,
        RefuseUnknown.calls,
        scored,
        len(out) - sum(isinstance(o, pa.Table) for o in out),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=65536)
    parser.add_argument("--cases", default="none,one,every_other")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--pandas", action="store_true", help="score through DataFrames")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        spec = model_and_spec(Path(tmp), args.pandas)
        dofn = PredictBatches(spec, shared.Shared())
        dofn.setup()
        path = "pandas" if args.pandas else "numpy"
        print(
            f"{args.rows:,} rows, {len(FEATURES)} features, {path} path, "
            f"proba_argmax={spec.facts.proba_argmax}, cpus={os.cpu_count()}, "
            f"load before={os.getloadavg()[0]:.2f}"
        )
        header = ("seconds", "calls", "calls/row", "scored", "rejected")
        print(f"{'case':<12}", *(f"{h:>9}" for h in header))
        for case in args.cases.split(","):
            chunk = Chunk("bench.parquet", 0, 0, batch(args.rows, case))
            results = [run(dofn, chunk) for _ in range(args.repeats)]
            seconds = statistics.median(r[0] for r in results)
            _, calls, scored, rejected = results[0]
            print(
                f"{case:<12} {seconds:>9.3f} {calls:>9,} {calls / args.rows:>9.3f} "
                f"{scored:>9,} {rejected:>9,}"
            )


if __name__ == "__main__":
    main()
