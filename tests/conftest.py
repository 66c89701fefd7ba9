"""Fixtures: small real models trained in seconds, input files in every format, the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from models import demo

ROOT = Path(__file__).resolve().parent.parent
FEATURES = [f"f{i}" for i in range(4)]


def float_rows(n: int, seed: int = 0, start_id: int = 0) -> pd.DataFrame:
    """An id column and four float features."""
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(rng.normal(size=(n, len(FEATURES))), columns=FEATURES)
    df.insert(0, "id", np.arange(start_id, start_id + n, dtype=np.int64))
    return df


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory) -> Path:
    """Trains the test models once: binary, multi-class (string labels), regressor, NaN-tolerant."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LinearRegression, LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    out = tmp_path_factory.mktemp("models")
    X = float_rows(2000, seed=1)[FEATURES]
    y_bin = (X.f0 + 0.5 * X.f1 > 0).astype(int)
    y_multi = np.select([X.f0 < -0.5, X.f0 < 0.5], ["low", "mid"], "high")
    joblib.dump(
        make_pipeline(StandardScaler(), LogisticRegression()).fit(X, y_bin), out / "binary.joblib"
    )
    joblib.dump(LogisticRegression(max_iter=500).fit(X, y_multi), out / "multiclass.pkl")
    joblib.dump(LinearRegression().fit(X, 3 * X.f0 - X.f2), out / "regressor.joblib")
    joblib.dump(HistGradientBoostingClassifier(max_iter=20).fit(X, y_bin), out / "hgb.joblib")
    joblib.dump(demo.train(), out / "categorical.joblib")
    return out


def write_input(df: pd.DataFrame, path: Path) -> Path:
    """Writes a frame as Parquet, CSV or JSON Lines, by the path's extension."""
    path.parent.mkdir(parents=True, exist_ok=True)
    name = path.name
    if name.endswith(".parquet"):
        pq.write_table(pa.Table.from_pandas(df, preserve_index=False), path)
    elif name.endswith(".csv"):
        df.to_csv(path, index=False)
    elif name.endswith(".jsonl"):
        df.to_json(path, orient="records", lines=True)
    else:
        raise ValueError(name)
    return path


class Cli:
    """Runs `python -m pipeline.run` as a user would, and reads what it wrote."""

    def __init__(self, result: subprocess.CompletedProcess, output: Path | None):
        self.result = result
        self.output = output

    @property
    def code(self) -> int:
        return self.result.returncode

    @property
    def stderr(self) -> str:
        return self.result.stderr

    @property
    def manifest(self) -> dict:
        return json.loads((self.output / "manifest.json").read_text())

    def predictions(self) -> pd.DataFrame:
        files = sorted((self.output / "predictions").glob("*.parquet"))
        return pa.concat_tables([pq.read_table(f) for f in files]).to_pandas()

    def errors(self) -> list[dict]:
        return [
            json.loads(line)
            for f in sorted((self.output / "errors").glob("*.jsonl"))
            for line in f.read_text().split("\n")[:-1]
        ]


def run_cli(*args: str, env: dict | None = None, timeout: float = 300) -> Cli:
    """Runs the CLI in a subprocess; `--output` is read back from the arguments."""
    argv = [str(a) for a in args]
    output = Path(argv[argv.index("--output") + 1]) if "--output" in argv else None
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.run", *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )
    return Cli(result, output)


def assert_one_line_error(cli: Cli, *words: str) -> None:
    """Exit 2, one line on stderr naming the problem, no traceback."""
    assert cli.code == 2, cli.stderr
    lines = [ln for ln in cli.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, cli.stderr
    assert "Traceback" not in cli.stderr
    for word in words:
        assert word in lines[0], lines[0]
