"""Generates the benchmark's deterministic data sets and models (skips what already exists).

Usage: python bench/make_data.py [--out bench/data]
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

FEATURES = [f"f{i:02d}" for i in range(20)]
N_FILES = 8
DIRTY_FRACTION = 0.01
_CSV_OPTIONS = pacsv.WriteOptions(quoting_style="none", quoting_header="none")
# Per-feature location and scale, fixed so the training set and the data sets match.
_LOC = np.linspace(-2.0, 2.0, len(FEATURES))
_SCALE = np.linspace(0.5, 3.0, len(FEATURES))
# The label's rule: a noisy linear function of the standardized features.
_WEIGHTS = np.random.default_rng(12345).normal(size=len(FEATURES))


def draw_features(rng: np.random.Generator, n: int) -> np.ndarray:
    """n rows of the 20 features, float64."""
    return _LOC + _SCALE * rng.standard_normal((n, len(FEATURES)))


def draw_labels(rng: np.random.Generator, x: np.ndarray) -> np.ndarray:
    """Binary labels: 1 where a noisy linear rule on the standardized features is positive."""
    logit = ((x - _LOC) / _SCALE) @ _WEIGHTS
    return (logit + rng.normal(scale=1.5, size=len(x)) > 0).astype(np.int64)


def _part_paths(directory: Path, ext: str) -> list[Path]:
    return [directory / f"part-{i:05d}.{ext}" for i in range(N_FILES)]


def _tables(seed: int, rows: int, files: int) -> list[pa.Table]:
    """The rows of one data set, split evenly into `files` tables with unique int64 ids."""
    rng = np.random.default_rng(seed)
    per_file = rows // files
    tables = []
    for i in range(files):
        x = draw_features(rng, per_file)
        columns = {"id": pa.array(np.arange(i * per_file, (i + 1) * per_file, dtype=np.int64))}
        columns.update({name: pa.array(x[:, j]) for j, name in enumerate(FEATURES)})
        tables.append(pa.table(columns))
    return tables


def write_parquet_set(directory: Path, seed: int, rows: int) -> None:
    """`rows` rows in N_FILES Parquet files."""
    directory.mkdir(parents=True, exist_ok=True)
    for path, table in zip(_part_paths(directory, "parquet"), _tables(seed, rows, N_FILES)):
        pq.write_table(table, path)


def write_colored_set(source: Path, directory: Path, poison: bool) -> None:
    """The 1M Parquet rows plus a text `color` column (red/blue); with `poison`, one row is
    "green", a category the strict model's encoder has never seen, so the model raises on it."""
    directory.mkdir(parents=True, exist_ok=True)
    for i, (src, dst) in enumerate(
        zip(_part_paths(source, "parquet"), _part_paths(directory, "parquet"))
    ):
        table = pq.read_table(src)
        color = np.where(table.column("f00").to_numpy() > _LOC[0], "red", "blue").astype(object)
        if poison and i == N_FILES // 2:
            color[len(color) // 2] = "green"
        pq.write_table(table.append_column("color", pa.array(color, pa.string())), dst)


def write_csv_set(source: Path, directory: Path) -> None:
    """The Parquet files of `source` as CSV files with a header."""
    directory.mkdir(parents=True, exist_ok=True)
    for src, dst in zip(_part_paths(source, "parquet"), _part_paths(directory, "csv")):
        pacsv.write_csv(pq.read_table(src), dst, _CSV_OPTIONS)


def write_jsonl_set(source: Path, directory: Path) -> None:
    """The Parquet files of `source` as JSON Lines files (one object per line)."""
    directory.mkdir(parents=True, exist_ok=True)
    for src, dst in zip(_part_paths(source, "parquet"), _part_paths(directory, "jsonl")):
        pq.read_table(src).to_pandas().to_json(dst, orient="records", lines=True)


def write_one_file(source: Path, path: Path, row_group: int) -> None:
    """Every row of `source`'s Parquet files in one file of row groups of `row_group` rows."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tables = [pq.read_table(p) for p in _part_paths(source, "parquet")]
    pq.write_table(pa.concat_tables(tables), path, row_group_size=row_group)


def write_one_row(path: Path) -> None:
    """A single-row Parquet file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(_tables(11, 1, 1)[0], path)


def _corrupt(line: str, kind: int, column: int) -> str:
    """A bad version of a CSV data line: 0 wrong field count, 1 'abc', 2 'inf' in a feature."""
    fields = line.split(",")
    if kind == 0:
        return ",".join(fields[:-1])
    fields[column] = "abc" if kind == 1 else "inf"
    return ",".join(fields)


def write_dirty_csv_set(source: Path, directory: Path, seed: int) -> int:
    """Copies the CSV files of `source`, making DIRTY_FRACTION of the data lines bad.

    Returns the number of bad lines written.
    """
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    bad = 0
    for src, dst in zip(_part_paths(source, "csv"), _part_paths(directory, "csv")):
        header, *lines = src.read_text().splitlines()
        rows = rng.choice(len(lines), size=round(len(lines) * DIRTY_FRACTION), replace=False)
        kinds = rng.permutation(np.arange(len(rows)) % 3)
        columns = rng.integers(1, len(FEATURES) + 1, size=len(rows))
        for row, kind, column in zip(rows, kinds, columns):
            lines[row] = _corrupt(lines[row], int(kind), int(column))
        dst.write_text("\n".join([header, *lines]) + "\n")
        bad += len(rows)
    return bad


def write_models(out: Path, seed: int, rows: int = 50_000) -> None:
    """Trains light.joblib and heavy.joblib on a DataFrame of `rows` rows drawn like the data."""
    rng = np.random.default_rng(seed)
    x = draw_features(rng, rows)
    y = draw_labels(rng, x)
    frame = pd.DataFrame(x, columns=FEATURES)
    models = {
        "light": Pipeline(
            [("scale", StandardScaler()), ("logreg", LogisticRegression(max_iter=1000))]
        ),
        "heavy": HistGradientBoostingClassifier(max_iter=200, random_state=0),
    }
    models["strict"] = Pipeline(
        [
            (
                "encode",
                ColumnTransformer(
                    [("color", OneHotEncoder(handle_unknown="error"), ["color"])],
                    remainder="passthrough",
                ),
            ),
            ("logreg", LogisticRegression(max_iter=1000)),
        ]
    )
    baseline_path = out / "light_drift.joblib.drift.json"
    if not baseline_path.exists():  # light_drift = light + a drift baseline beside it
        from models.baseline import baseline_from_frame

        baseline_path.write_text(json.dumps(baseline_from_frame(frame, FEATURES)))
    for name, model in models.items():
        path = out / f"{name}.joblib"
        if path.exists():
            print(f"{path}: exists, skipped")
            continue
        started = time.monotonic()
        train = frame
        if name == "strict":  # the same features plus the text column it one-hot encodes
            train = frame.assign(color=np.where(frame["f00"] > _LOC[0], "red", "blue"))
        model.fit(train, y)
        joblib.dump(model, path)
        if name == "light":
            shutil.copy(path, out / "light_drift.joblib")
        print(
            f"{path}: trained in {time.monotonic() - started:.1f}s, "
            f"training accuracy {model.score(train, y):.3f}"
        )


def write_registry(out: Path) -> None:
    """Registers light.joblib in a sqlite MLflow registry twice: sklearn flavour and pyfunc-only."""
    import mlflow
    import mlflow.pyfunc
    import mlflow.sklearn
    from mlflow.models import infer_signature

    class Wrapped(mlflow.pyfunc.PythonModel):
        def load_context(self, context):
            self.model = joblib.load(context.artifacts["model"])

        def predict(self, context, model_input, params=None):
            return self.model.predict(model_input)

    model = joblib.load(out / "light.joblib")
    frame = pd.DataFrame(draw_features(np.random.default_rng(9), 1000), columns=FEATURES)
    signature = infer_signature(frame, model.predict(frame))
    mlflow.set_tracking_uri(f"sqlite:///{out / 'mlflow.db'}")
    # Artifacts beside the registry, not in ./mlruns of whatever directory this runs in.
    mlflow.create_experiment("bench", artifact_location=str(out / "mlartifacts"))
    mlflow.set_experiment("bench")
    with mlflow.start_run():
        mlflow.sklearn.log_model(
            model, name="model", signature=signature, registered_model_name="light_sklearn"
        )
    with mlflow.start_run():
        mlflow.pyfunc.log_model(
            name="model",
            python_model=Wrapped(),
            artifacts={"model": str(out / "light.joblib")},
            signature=signature,
            registered_model_name="light_pyfunc",
        )


def _step(paths: list[Path], make: Callable[[], object]) -> None:
    """Runs `make` unless every path exists, printing what happened."""
    where = paths[0].parent
    if all(p.exists() for p in paths):
        print(f"{where}: exists, skipped")
        return
    started = time.monotonic()
    result = make()
    extra = f" ({result} bad lines)" if result is not None else ""
    print(f"{where}: written in {time.monotonic() - started:.1f}s{extra}")


def main() -> None:
    """Writes every data set and model missing from --out."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "data")
    out: Path = parser.parse_args().out
    out.mkdir(parents=True, exist_ok=True)

    rows1m, rows4m = out / "rows1m", out / "rows4m"
    csv1m, dirty, jsonl1m = out / "csv1m", out / "csv1m_dirty", out / "jsonl1m"
    one_row = out / "one_row" / "part-00000.parquet"
    one_file = out / "rows4m_one" / "rows.parquet"
    _step(_part_paths(rows1m, "parquet"), lambda: write_parquet_set(rows1m, 1, 1_000_000))
    _step(_part_paths(rows4m, "parquet"), lambda: write_parquet_set(rows4m, 4, 4_000_000))
    rows20k = out / "rows20k"  # --explain on tree models (exact contributions are slow)
    _step(_part_paths(rows20k, "parquet"), lambda: write_parquet_set(rows20k, 20, 20_000))
    _step(_part_paths(csv1m, "csv"), lambda: write_csv_set(rows1m, csv1m))
    _step(_part_paths(dirty, "csv"), lambda: write_dirty_csv_set(csv1m, dirty, 7))
    _step(_part_paths(jsonl1m, "jsonl"), lambda: write_jsonl_set(rows1m, jsonl1m))
    # The same 4M rows as text: the per-extra-row cost of CSV and JSON Lines (4M - 1M).
    csv4m, jsonl4m = out / "csv4m", out / "jsonl4m"
    _step(_part_paths(csv4m, "csv"), lambda: write_csv_set(rows4m, csv4m))
    _step(_part_paths(jsonl4m, "jsonl"), lambda: write_jsonl_set(rows4m, jsonl4m))
    # rows4m's rows in one file of 32 row groups: a night that arrives as one big export.
    _step([one_file], lambda: write_one_file(rows4m, one_file, 125_000))
    _step([one_row], lambda: write_one_row(one_row))
    for name, poison in (("rows1m_color", False), ("rows1m_poison", True)):
        target = out / name
        _step(
            _part_paths(target, "parquet"),
            lambda t=target, p=poison: write_colored_set(rows1m, t, p),
        )
    write_models(out, 0)
    _step([out / "mlflow.db"], lambda: write_registry(out))


if __name__ == "__main__":
    main()
