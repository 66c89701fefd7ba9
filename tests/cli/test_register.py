"""Registering one's own model with models.register, then scoring it by models:/NAME@ALIAS as a
user would: a ColumnTransformer + HistGradientBoostingRegressor Pipeline (from the command line),
an XGBClassifier with a pandas category feature and a LightGBM booster with one (from Python).
Each scores like the model itself, with its drift baseline and library version."""

from __future__ import annotations

import os
import subprocess
import sys

import joblib
import numpy as np
import pandas as pd
import pytest

from tests.conftest import FEATURES, ROOT, float_rows, run_cli, write_input
from tests.helpers import COLORS, EXACT, as_category, colored_rows, training_frame

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def registry(tmp_path_factory):
    """A sqlite tracking store under a temporary directory, with an experiment whose artifacts
    stay there too; the global MLflow state is left as it was."""
    import mlflow

    root = tmp_path_factory.mktemp("register")
    uri = f"sqlite:///{root}/mlflow.db"
    mlflow.set_tracking_uri(uri)
    mlflow.create_experiment("own-models", artifact_location=str(root / "artifacts"))
    mlflow.set_tracking_uri(None)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    return uri


def score_registered(tmp_path, registry: str, model_uri: str, df: pd.DataFrame):
    write_input(df, tmp_path / "in.parquet")
    return run_cli(
        "--input",
        tmp_path / "in.parquet",
        "--model",
        model_uri,
        "--mlflow_tracking_uri",
        registry,
        "--output",
        tmp_path / "out",
    )


@pytest.mark.subprocess
def test_column_transformer_hist_gradient_boosting_from_the_command_line(tmp_path, registry):
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OrdinalEncoder

    train = colored_rows(1000, seed=11)
    model = Pipeline(
        [
            (
                "prep",
                ColumnTransformer(
                    [("color", OrdinalEncoder(), ["color"])], remainder="passthrough"
                ),
            ),
            ("hgb", HistGradientBoostingRegressor(max_iter=20, categorical_features=[0])),
        ]
    ).fit(train[FEATURES + ["color"]], 3 * train.f0 - train.f2 + (train.color == "red"))
    joblib.dump(model, tmp_path / "pipeline.joblib")
    write_input(train, tmp_path / "sample" / "train.parquet")
    registered = subprocess.run(
        [
            sys.executable,
            "-m",
            "models.register",
            "--model",
            tmp_path / "pipeline.joblib",
            "--sample",
            tmp_path / "sample" / "*.parquet",
            "--name",
            "hgb-pipeline",
            "--mlflow_tracking_uri",
            registry,
            "--experiment",
            "own-models",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert registered.returncode == 0, registered.stderr
    assert "registered=models:/hgb-pipeline@champion" in registered.stdout

    df = colored_rows(300, seed=12)
    cli = score_registered(tmp_path, registry, "models:/hgb-pipeline@champion", df)
    assert cli.code == 0, cli.stderr
    got = cli.predictions().set_index("id").loc[df.id]
    np.testing.assert_allclose(got.prediction, model.predict(df[FEATURES + ["color"]]), **EXACT)
    m = cli.manifest
    assert m["model"]["version"] == "1"
    assert set(m["drift"]) == set(FEATURES + ["color"]) and max(m["drift"].values()) < 0.25
    assert m["model"]["library_versions"]["scikit-learn"]["saved"] == _version("scikit-learn")


def test_xgboost_classifier_with_a_category_feature(tmp_path, registry):
    import xgboost as xgb

    from models.register import register

    X, y = training_frame(seed=13)
    model = xgb.XGBClassifier(n_estimators=15, max_depth=3, enable_categorical=True, n_jobs=1)
    model.fit(X, y)
    uri, version = register(
        model, X, "xgb-colors", "nightly", tracking_uri=registry, experiment="own-models"
    )
    assert (uri, version) == ("models:/xgb-colors@nightly", "1")

    df = colored_rows(300, seed=14)
    df.loc[df.index[::9], "f3"] = np.nan
    cli = score_registered(tmp_path, registry, uri, df)
    assert cli.code == 0, cli.stderr
    got = cli.predictions().set_index("id").loc[df.id]
    own = as_category(df).assign(color=lambda d: pd.Categorical(d.color, COLORS))
    np.testing.assert_array_equal(got.prediction, model.predict(own))
    np.testing.assert_allclose(got[["proba_0", "proba_1"]], model.predict_proba(own), **EXACT)
    m = cli.manifest
    assert set(m["drift"]) == set(FEATURES + ["color"])
    assert m["model"]["library_versions"]["xgboost"]["saved"] == xgb.__version__


def test_lightgbm_booster_with_a_category_feature(tmp_path, registry):
    import lightgbm as lgb

    from models.register import register

    X, _ = training_frame(seed=15)
    target = 2 * X.f0.to_numpy() + (X.color == "green").to_numpy()
    booster = lgb.train(
        {"objective": "regression", "verbose": -1, "num_threads": 1, "min_data_per_group": 5},
        lgb.Dataset(X, target),
        20,
    )
    uri, _ = register(booster, X, "lgb-colors", tracking_uri=registry, experiment="own-models")

    df = colored_rows(300, seed=16)
    cli = score_registered(tmp_path, registry, uri, df)
    assert cli.code == 0, cli.stderr
    got = cli.predictions().set_index("id").loc[df.id]
    np.testing.assert_allclose(got.prediction, booster.predict(as_category(df)), **EXACT)
    m = cli.manifest
    assert "proba_0" not in got.columns
    assert m["model"]["library_versions"]["lightgbm"]["saved"] == lgb.__version__
    assert set(m["drift"]) == set(FEATURES + ["color"])


def test_a_model_that_cannot_score_the_sample_is_refused(tmp_path, registry):
    """A Pipeline that only takes numbers, registered with a sample whose feature is text."""
    from sklearn.linear_model import LinearRegression

    from models.register import RegisterError, register

    train = float_rows(100, seed=17)
    model = LinearRegression().fit(train[FEATURES], train.f0)
    sample = train.assign(f2="n/a")
    with pytest.raises(RegisterError, match="cannot score the sample"):
        register(model, sample, "never", tracking_uri=registry, experiment="own-models")


def _version(distribution: str) -> str:
    from importlib.metadata import version

    return version(distribution)
