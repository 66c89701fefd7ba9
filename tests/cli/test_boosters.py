"""XGBoost and LightGBM model files scored as a user runs them: native .json/.ubj/.txt files and
scikit-learn wrappers in joblib files, made by the libraries themselves; predictions equal the
library's own predict/predict_proba on the same rows (labels exactly, scores within 1e-9)."""

from __future__ import annotations

import hashlib
import json

import joblib
import numpy as np
import pandas as pd
import pytest

from tests.conftest import FEATURES, assert_one_line_error, float_rows, run_cli, write_input
from tests.helpers import EXACT, as_category, colored_rows

pytestmark = pytest.mark.slow


def dirty(df: pd.DataFrame) -> pd.DataFrame:
    """Missing values in a numeric feature and in `color`, and a color no model was trained on."""
    out = df.copy()
    out.loc[out.index[::11], "f1"] = np.nan
    out.loc[out.index[5::29], "color"] = None
    out.loc[out.index[7], "color"] = "purple"
    return out


def score(
    tmp_path, model, df: pd.DataFrame, ext: str = "parquet", *extra: str, env=None, process=False
):
    write_input(df, tmp_path / f"in.{ext}")
    return run_cli(
        "--input",
        tmp_path / f"in.{ext}",
        "--model",
        model,
        "--output",
        tmp_path / "out",
        *extra,
        env=env,
        process=process,
    )


def test_xgboost_json_with_a_category_feature_and_missing_values(tmp_path, booster_files):
    import xgboost as xgb

    path = booster_files / "cat.json"
    df = dirty(colored_rows(400, seed=2))
    cli = score(tmp_path, path, df)
    assert cli.code == 1, cli.stderr  # the one unknown color is rejected (--max_error_rate 0)
    [error] = cli.errors()
    assert error["stage"] == "validate" and error["record"]["id"] == df.id.iloc[7]
    assert "color: unknown category 'purple'" in error["error"]
    assert "'blue', 'green', 'red'" in error["error"]

    scored = df.drop(index=df.index[7])
    got = cli.predictions().set_index("id").loc[scored.id]
    booster = xgb.Booster(model_file=str(path))
    p = booster.predict(xgb.DMatrix(as_category(scored), enable_categorical=True))
    np.testing.assert_allclose(got.proba_1, p, **EXACT)
    np.testing.assert_allclose(got.proba_0, 1.0 - p, **EXACT)  # as XGBClassifier: in float32
    np.testing.assert_array_equal(got.prediction, (p > 0.5).astype(int))
    m = cli.manifest
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    assert set(cli.predictions().model_version) == {sha[:12]}
    assert m["model"]["library_versions"] == {
        "xgboost": {"saved": xgb.__version__, "running": xgb.__version__}
    }


def test_xgboost_ubj_multiclass_from_csv(tmp_path, booster_files):
    import xgboost as xgb

    path = booster_files / "multi.ubj"
    df = float_rows(300, seed=3)
    cli = score(tmp_path, path, df, "csv")
    assert cli.code == 0, cli.stderr
    got = cli.predictions().set_index("id").loc[df.id]
    proba = xgb.Booster(model_file=str(path)).predict(xgb.DMatrix(df[FEATURES]))
    for k in range(3):
        np.testing.assert_allclose(got[f"proba_{k}"], proba[:, k], **EXACT)
    np.testing.assert_array_equal(got.prediction, proba.argmax(axis=1))
    assert cli.manifest["model"]["library_versions"]["xgboost"]["saved"] == xgb.__version__


def test_xgboost_classifier_in_joblib(tmp_path, booster_files):
    model = joblib.load(booster_files / "xgb_classifier.joblib")
    df = float_rows(300, seed=4)
    df.loc[df.index[::7], "f2"] = np.nan
    cli = score(tmp_path, booster_files / "xgb_classifier.joblib", df, "jsonl")
    assert cli.code == 0, cli.stderr
    got = cli.predictions().set_index("id").loc[df.id]
    np.testing.assert_array_equal(got.prediction, model.predict(df[FEATURES]))
    proba = model.predict_proba(df[FEATURES])
    np.testing.assert_allclose(got[["proba_0", "proba_1"]], proba, **EXACT)
    assert set(cli.manifest["model"]["library_versions"]) == {"scikit-learn", "xgboost"}


def test_lightgbm_txt_with_a_category_feature(tmp_path, booster_files):
    """An unknown color is a missing value to LightGBM's own predict, and so here when the run
    says --unknown_categories score (by default it is rejected:
    tests/cli/test_unknown_categories)."""
    import lightgbm as lgb

    path = booster_files / "cat.txt"
    df = dirty(colored_rows(400, seed=5))
    cli = score(tmp_path, path, df, "parquet", "--unknown_categories", "score")
    assert cli.code == 0, cli.stderr
    got = cli.predictions().set_index("id").loc[df.id]
    p = lgb.Booster(model_file=str(path)).predict(as_category(df))
    np.testing.assert_allclose(got.proba_1, p, **EXACT)
    np.testing.assert_allclose(got.proba_0, 1.0 - p, **EXACT)
    np.testing.assert_array_equal(got.prediction, (p > 0.5).astype(int))
    assert got.loc[df.id.iloc[7]].proba_1 == pytest.approx(p[7], abs=1e-12)
    # A LightGBM text model records its format ("version=v4"), not the library's version.
    assert cli.manifest["model"]["library_versions"] == {}


def test_lightgbm_classifier_with_text_labels_in_joblib(tmp_path, booster_files):
    model = joblib.load(booster_files / "lgb_classifier.joblib")
    df = float_rows(300, seed=6)
    cli = score(tmp_path, booster_files / "lgb_classifier.joblib", df)
    assert cli.code == 0, cli.stderr
    got = cli.predictions().set_index("id").loc[df.id]
    np.testing.assert_array_equal(got.prediction, model.predict(df[FEATURES]))
    proba = model.predict_proba(df[FEATURES])
    for k, label in enumerate(model.classes_):
        np.testing.assert_allclose(got[f"proba_{label}"], proba[:, k], **EXACT)
    assert sorted(model.classes_) == ["high", "low", "mid"]


@pytest.mark.subprocess
@pytest.mark.parametrize("model, library", [("cat.json", "xgboost"), ("cat.txt", "lightgbm")])
def test_library_that_cannot_be_imported_names_the_extra(tmp_path, booster_files, model, library):
    # The interpreter starts with the library blocked, as if it were not installed.
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(f"import sys\nsys.modules[{library!r}] = None\n")
    cli = score(
        tmp_path,
        booster_files / model,
        colored_rows(10, seed=7),
        env={"PYTHONPATH": str(shim)},
        process=True,  # a fresh interpreter: the library is hidden from its imports
    )
    assert_one_line_error(cli, f"needs {library}", f"beamscore[{library}]")
    assert not (tmp_path / "out").exists()


def test_xgboost_model_saved_by_another_version_is_refused(tmp_path, booster_files):
    import xgboost as xgb

    saved = json.loads((booster_files / "cat.json").read_text())
    saved["version"] = [2, 1, 0]  # what XGBoost 2.1 writes there
    (tmp_path / "old.json").write_text(json.dumps(saved))
    cli = score(tmp_path, tmp_path / "old.json", colored_rows(10, seed=8))
    assert_one_line_error(
        cli, f"saved with xgboost 2.1.0, this run has {xgb.__version__}", "--allow_version_mismatch"
    )


def test_workers_are_told_the_library_a_model_needs(booster_files):
    import lightgbm as lgb
    import xgboost as xgb
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from models import loading
    from models.boosters import worker_requirements

    def loaded(name):
        return loading.load(loading.resolve(str(booster_files / name)))[0]

    assert worker_requirements(loaded("cat.json")) == [f"xgboost-cpu=={xgb.__version__}"]
    assert worker_requirements(loaded("lgb_classifier.joblib")) == [f"lightgbm=={lgb.__version__}"]
    nested = make_pipeline(StandardScaler(), joblib.load(booster_files / "xgb_classifier.joblib"))
    assert worker_requirements(nested) == [f"xgboost-cpu=={xgb.__version__}"]
    assert worker_requirements(StandardScaler()) == []


def test_saved_xgboost_version_is_read_from_every_format(booster_files):
    import xgboost as xgb

    from models.boosters import xgboost_version

    for name in ("cat.json", "multi.ubj", "xgb_classifier.joblib"):
        assert xgboost_version((booster_files / name).read_bytes()) == xgb.__version__, name
