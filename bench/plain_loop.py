"""Baseline with no framework: score the files of a pattern one after another with pyarrow.

Usage: python bench/plain_loop.py --input 'DIR/*.parquet' --model MODEL --output DIR
(.csv inputs are read with pyarrow.csv.read_csv, .jsonl inputs with pyarrow.json.read_json).
"""

from __future__ import annotations

import argparse
import glob
import time
from pathlib import Path

import joblib
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq


def read(path: str) -> pa.Table:
    """The file as an Arrow table: CSV for .csv, JSON Lines for .jsonl, Parquet otherwise."""
    if path.endswith(".csv"):
        return pacsv.read_csv(path)
    if path.endswith(".jsonl"):
        return pajson.read_json(path)
    return pq.read_table(path)


def score(table: pa.Table, model, features: list[str]) -> pa.Table:
    """id, prediction and one proba_<class> column per class of the model."""
    proba = model.predict_proba(table.select(features).to_pandas())
    columns = {"id": table["id"], "prediction": pa.array(model.classes_[proba.argmax(axis=1)])}
    columns.update({f"proba_{c}": pa.array(proba[:, i]) for i, c in enumerate(model.classes_)})
    return pa.table(columns)


def main() -> None:
    """Scores every file matching --input into --output, one Parquet file per input file."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", required=True, help="glob of .parquet or .csv files")
    parser.add_argument("--model", required=True, help="a joblib file with predict_proba")
    parser.add_argument("--output", required=True, type=Path, help="output directory")
    args = parser.parse_args()

    started = time.monotonic()
    files = sorted(glob.glob(args.input))
    if not files:
        parser.error(f"no file matches {args.input}")
    model = joblib.load(args.model)
    features = list(model.feature_names_in_)
    args.output.mkdir(parents=True, exist_ok=True)
    rows = 0
    for path in files:
        result = score(read(path), model, features)
        pq.write_table(result, args.output / f"{Path(path).stem}.parquet")
        rows += result.num_rows
    seconds = time.monotonic() - started
    rate = rows / seconds
    print(f"{rows:,} rows from {len(files)} file(s) in {seconds:.2f}s ({rate:,.0f} rows/s)")


if __name__ == "__main__":
    main()
