"""Baseline with no framework for a booster: score the files of a pattern one after another,
handing each file's features to the booster as one NumPy matrix.

Usage: python bench/plain_booster.py --input 'DIR/*.parquet' --model MODEL --output DIR
MODEL: an XGBoost .json/.ubj file (scored with Booster.inplace_predict) or a LightGBM .txt file
(Booster.predict on the matrix); a binary classifier on the features f00..f19.
"""

from __future__ import annotations

import argparse
import glob
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


def load(path: str):
    """A function from a float64 feature matrix to the probability of class 1."""
    if path.endswith(".txt"):
        import lightgbm

        return lightgbm.Booster(model_file=path).predict
    import xgboost

    booster = xgboost.Booster(model_file=path)
    return booster.inplace_predict


def score(table: pa.Table, predict, features: list[str]) -> pa.Table:
    """id, prediction (0 or 1), proba_0 and proba_1."""
    matrix = np.column_stack([table.column(f).to_numpy() for f in features])
    p = np.asarray(predict(matrix), dtype=np.float64)
    return pa.table(
        {
            "id": table["id"],
            "prediction": pa.array((p > 0.5).astype(np.int64)),
            "proba_0": pa.array(1.0 - p),
            "proba_1": pa.array(p),
        }
    )


def main() -> None:
    """Scores every file matching --input into --output, one Parquet file per input file."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", required=True, help="glob of Parquet files")
    parser.add_argument("--model", required=True, help="an XGBoost .json/.ubj or LightGBM .txt")
    parser.add_argument("--output", required=True, type=Path, help="output directory")
    args = parser.parse_args()

    started = time.monotonic()
    files = sorted(glob.glob(args.input))
    if not files:
        parser.error(f"no file matches {args.input}")
    predict = load(args.model)
    features = [f"f{i:02d}" for i in range(20)]
    args.output.mkdir(parents=True, exist_ok=True)
    rows = 0
    for path in files:
        result = score(pq.read_table(path), predict, features)
        pq.write_table(result, args.output / f"{Path(path).stem}.parquet")
        rows += result.num_rows
    seconds = time.monotonic() - started
    print(
        f"{rows:,} rows from {len(files)} file(s) in {seconds:.2f}s ({rows / seconds:,.0f} rows/s)"
    )


if __name__ == "__main__":
    main()
