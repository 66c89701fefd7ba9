"""Issue 17: one rule for a category the model was not trained on, whatever the model kind.

It is scored only where the model declares how it takes one (a scikit-learn encoder with
handle_unknown other than "error"), or where the run says --unknown_categories score and the
model's library has a treatment for one (XGBoost, LightGBM: a missing value); otherwise it is
rejected at validate naming the column and the value. Either way the manifest, the report and
MLflow count the rows that held one, per column.

Runs are in-process (pipeline.run.run), but one, which goes through the CLI.
"""

from __future__ import annotations

import json
import re

import joblib
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.errors import ConfigError
from tests.conftest import FEATURES, run_cli, write_input
from tests.helpers import COLORS, as_category, colored_rows, training_frame

pytestmark = pytest.mark.slow

EXACT = {"rtol": 0, "atol": 1e-9}
PURPLE = [3, 17, 40]  # rows holding a color no model was trained on
TEAL = 55  # another unknown color
BOTH = 61  # an unknown color and an infinite f0: rejected at validate whatever the rule
MISSING = [8, 29]  # no color at all: a missing value, never an unknown category


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Models with a categorical feature `color` (blue, green, red), trained in about a second."""
    import lightgbm as lgb
    import xgboost as xgb
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    out = tmp_path_factory.mktemp("unknown_categories")
    X, y = training_frame()
    lgb.train(
        {"objective": "binary", "verbose": -1, "num_threads": 1, "min_data_per_group": 5},
        lgb.Dataset(X, y),
        15,
    ).save_model(out / "lgb.txt")
    joblib.dump(
        lgb.LGBMClassifier(n_estimators=10, verbose=-1, n_jobs=1, min_data_per_group=5).fit(X, y),
        out / "lgb_classifier.joblib",
    )
    xgb.train(
        {"max_depth": 3, "nthread": 1, "objective": "binary:logistic"},
        xgb.DMatrix(X, y, enable_categorical=True),
        15,
    ).save_model(out / "xgb.json")
    text = X.assign(color=X.color.astype(str)).fillna({"f1": 0.0})
    for handle_unknown in ("ignore", "error"):
        joblib.dump(
            make_pipeline(
                ColumnTransformer(
                    [("color", OneHotEncoder(handle_unknown=handle_unknown), ["color"])],
                    remainder="passthrough",
                ),
                LogisticRegression(),
            ).fit(text, y),
            out / f"sklearn_{handle_unknown}.joblib",
        )
    return out


def night(missing: bool = True) -> pd.DataFrame:
    """Tonight's rows: mostly known colors, a few unknown ones, one of them in a row with an
    infinite f0, and (for the boosters, which take missing values) two without a color."""
    df = colored_rows(80, seed=11)
    df.loc[PURPLE, "color"] = "purple"
    df.loc[TEAL, "color"] = "teal"
    df.loc[BOTH, ["color", "f0"]] = ["purple", np.inf]
    if missing:
        df.loc[MISSING, "color"] = None
    return df


def score(tmp_path, model, df: pd.DataFrame, *flags: str):
    """Scores the rows in-process; returns the result and the output directory."""
    from pipeline.run import run

    write_input(df, tmp_path / "in" / "night.parquet")
    out = tmp_path / "out"
    argv = ["--input", str(tmp_path / "in" / "*.parquet"), "--model", str(model)]
    res = run([*argv, "--output", str(out), *flags])
    return res, out


def predictions(out) -> pd.DataFrame:
    files = sorted((out / "predictions").glob("*.parquet"))
    return pa.concat_tables([pq.read_table(f) for f in files]).to_pandas().set_index("id")


def errors(out) -> dict[int, dict]:
    """The error records, by the id of the rejected row."""
    records = [
        json.loads(line)
        for f in sorted((out / "errors").glob("*.jsonl"))
        for line in f.read_text().splitlines()
    ]
    return {r["record"]["id"]: r for r in records}


def report_rows(out) -> dict[tuple[str, str], str]:
    """The report's unknown-categories table: (column, treatment) -> rows."""
    page = (out / "report.html").read_text()
    section = re.search(r'<section id="unknown-categories".*?</section>', page, re.S)[0]
    found = re.findall(
        r'<tr [^>]*data-column="([^"]*)" data-treatment="([^"]*)" data-rows="([^"]*)"', section
    )
    return {(column, treatment): rows for column, treatment, rows in found}


def unknown_ids(df: pd.DataFrame) -> list[int]:
    return sorted(df.id[df.color.notna() & ~df.color.isin(COLORS)])


def assert_rejected_naming_column_and_value(out, df: pd.DataFrame) -> None:
    rejected = errors(out)
    assert sorted(rejected) == unknown_ids(df)
    for row_id, record in rejected.items():
        value = df.set_index("id").color[row_id]
        assert record["stage"] == "validate"
        assert (
            f"color: unknown category {value!r} (the model knows 'blue', 'green', 'red')"
            in (record["error"])
        )
    assert "f0: inf is not a finite number" in rejected[BOTH]["error"]


# --- LightGBM ----------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["lgb.txt", "lgb_classifier.joblib"])
def test_lightgbm_rejects_an_unknown_category_by_default(tmp_path, models, model):
    df = night()
    res, out = score(tmp_path, models / model, df)
    assert res.exit_code == 1  # --max_error_rate 0
    assert_rejected_naming_column_and_value(out, df)
    m = res.manifest
    assert m["counts"]["rows_failed_by_stage"]["validate"] == 5
    assert m["unknown_categories"] == {"rule": "reject", "rejected": {"color": 5}, "scored": {}}
    assert report_rows(out) == {("color", "rejected"): "5"}
    # The other rows, missing colors included, are scored as LightGBM scores them.
    kept = df[~df.id.isin(unknown_ids(df))]
    got = predictions(out).loc[kept.id]
    np.testing.assert_allclose(got.proba_1, _lightgbm_proba(models / model, kept), **EXACT)


@pytest.mark.parametrize("model", ["lgb.txt", "lgb_classifier.joblib"])
def test_lightgbm_scores_an_unknown_category_as_lightgbm_does_when_told(tmp_path, models, model):
    df = night()
    res, out = score(tmp_path, models / model, df, "--unknown_categories", "score")
    assert res.exit_code == 1  # the row with an infinite f0 is still rejected
    [(row_id, record)] = errors(out).items()
    assert row_id == BOTH and record["error"] == "f0: inf is not a finite number"
    # LightGBM's own predict on the same rows, unknown colors as the user's code hands them.
    scored = df[df.id != BOTH]
    got = predictions(out).loc[scored.id]
    expected = _lightgbm_proba(models / model, scored)
    np.testing.assert_allclose(got.proba_1, expected, **EXACT)
    np.testing.assert_array_equal(got.prediction, (expected > 0.5).astype(int))
    # An unknown color is a missing one to LightGBM.
    as_missing = scored.assign(color=scored.color.where(scored.color.isin(COLORS)))
    np.testing.assert_allclose(expected, _lightgbm_proba(models / model, as_missing), **EXACT)
    # The rows scored with one: PURPLE and TEAL, not BOTH (rejected), nor the missing colors.
    m = res.manifest
    assert m["unknown_categories"] == {"rule": "score", "rejected": {}, "scored": {"color": 4}}
    assert report_rows(out) == {("color", "scored"): "4"}
    page = (out / "report.html").read_text()
    assert "Rows scored with an unknown category: color (4)" in page


def _lightgbm_proba(path, df: pd.DataFrame) -> np.ndarray:
    import lightgbm as lgb

    rows = as_category(df)
    if path.suffix == ".txt":
        return lgb.Booster(model_file=str(path)).predict(rows)
    return joblib.load(path).predict_proba(rows)[:, 1]


# --- XGBoost -----------------------------------------------------------------------------------


def test_xgboost_rejects_an_unknown_category_by_default(tmp_path, models):
    df = night()
    res, out = score(tmp_path, models / "xgb.json", df)
    assert res.exit_code == 1
    assert_rejected_naming_column_and_value(out, df)
    assert res.manifest["unknown_categories"] == {
        "rule": "reject",
        "rejected": {"color": 5},
        "scored": {},
    }
    assert report_rows(out) == {("color", "rejected"): "5"}


def test_xgboost_scores_an_unknown_category_as_a_missing_value_when_told(tmp_path, models):
    import xgboost as xgb

    df = night()
    res, out = score(tmp_path, models / "xgb.json", df, "--unknown_categories", "score")
    assert res.exit_code == 1 and list(errors(out)) == [BOTH]
    scored = df[df.id != BOTH]
    got = predictions(out).loc[scored.id]
    # XGBoost's own predict with the unknown colors missing (its DataFrame path would score
    # them as a neighbouring color, or raise): never a guess.
    as_missing = scored.assign(
        color=pd.Categorical(scored.color.where(scored.color.isin(COLORS)), COLORS)
    )
    booster = xgb.Booster(model_file=str(models / "xgb.json"))
    p = booster.predict(xgb.DMatrix(as_missing[FEATURES + ["color"]], enable_categorical=True))
    np.testing.assert_allclose(got.proba_1, p, **EXACT)
    assert res.manifest["unknown_categories"] == {
        "rule": "score",
        "rejected": {},
        "scored": {"color": 4},
    }
    assert report_rows(out) == {("color", "scored"): "4"}


# --- scikit-learn ------------------------------------------------------------------------------


def test_sklearn_encoder_that_ignores_unknown_categories_scores_them_by_default(tmp_path, models):
    model = joblib.load(models / "sklearn_ignore.joblib")
    df = night(missing=False)
    res, out = score(tmp_path, models / "sklearn_ignore.joblib", df)
    assert res.exit_code == 1 and list(errors(out)) == [BOTH]
    scored = df[df.id != BOTH]
    got = predictions(out).loc[scored.id]
    np.testing.assert_allclose(
        got[["proba_0", "proba_1"]], model.predict_proba(scored[FEATURES + ["color"]]), **EXACT
    )
    assert res.manifest["unknown_categories"] == {
        "rule": "reject",
        "rejected": {},
        "scored": {"color": 4},
    }
    assert report_rows(out) == {("color", "scored"): "4"}


def test_sklearn_encoder_that_raises_on_unknown_categories_rejects_them_even_when_told_to_score(
    tmp_path, models
):
    """Its only treatment of an unknown category is to raise: rejected at validate, where the
    column and the value are named, not at predict."""
    df = night(missing=False)
    res, out = score(tmp_path, models / "sklearn_error.joblib", df, "--unknown_categories", "score")
    assert res.exit_code == 1
    assert_rejected_naming_column_and_value(out, df)
    assert res.manifest["counts"]["rows_failed_by_stage"]["predict"] == 0
    assert res.manifest["unknown_categories"] == {
        "rule": "score",
        "rejected": {"color": 5},
        "scored": {},
    }


def test_a_clean_night_counts_zero_for_every_categorical_feature(tmp_path, models):
    df = colored_rows(30, seed=12)
    res, out = score(tmp_path, models / "lgb.txt", df)
    assert res.exit_code == 0
    assert res.manifest["unknown_categories"] == {
        "rule": "reject",
        "rejected": {"color": 0},
        "scored": {},
    }
    assert report_rows(out) == {("color", "rejected"): "0"}


# --- the flag, the CLI, MLflow -----------------------------------------------------------------


def test_the_flag_takes_reject_or_score_only(tmp_path, models):
    with pytest.raises(
        ConfigError, match="--unknown_categories 'ignore' is not one of reject, score"
    ):
        score(tmp_path, models / "lgb.txt", night(), "--unknown_categories", "ignore")
    assert not (tmp_path / "out").exists()


def test_cli_says_which_rows_were_scored_with_an_unknown_category(tmp_path, models):
    df = night()
    write_input(df, tmp_path / "night.csv")
    cli = run_cli(
        "--input",
        tmp_path / "night.csv",
        "--model",
        models / "lgb.txt",
        "--output",
        tmp_path / "out",
        "--unknown_categories",
        "score",
        "--max_error_rate",
        "0.05",
    )
    assert cli.code == 0, cli.stderr
    assert "rows scored with an unknown category (as the model takes one): color 4" in (
        cli.result.stdout
    )
    assert cli.manifest["unknown_categories"]["scored"] == {"color": 4}
    assert [e["record"]["id"] for e in cli.errors()] == [str(BOTH)]  # as the CSV spells it


def test_mlflow_gets_one_metric_per_column():
    from pipeline.tracking import RunLog

    class Client:
        def __init__(self):
            self.metrics = {}

        def log_batch(self, run_id, metrics, tags=()):
            self.metrics.update({m.key: m.value for m in metrics})

        def log_artifacts(self, run_id, path):
            pass

        def set_terminated(self, run_id, status):
            pass

    log = RunLog.__new__(RunLog)
    log._client, log.run_id = Client(), "run"
    manifest = {
        "status": "succeeded",
        "counts": {
            "rows_read": 10,
            "rows_predicted": 7,
            "rows_failed": 3,
            "rows_failed_by_stage": {"read": 0, "validate": 3, "predict": 0},
        },
        "files_failed": [],
        "error_rate": 0.3,
        "model_loads": 1,
        "unknown_categories": {"rule": "score", "rejected": {"plan": 3}, "scored": {"color": 2}},
    }
    assert log.finish(manifest, None, None, 1.0, None)
    assert log._client.metrics["unknown_category_rejected_plan"] == 3
    assert log._client.metrics["unknown_category_scored_color"] == 2
