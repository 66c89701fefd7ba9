"""End-to-end scoring as a user runs it: predictions equal the model's own, in every format."""

from __future__ import annotations

import datetime

import joblib
import numpy as np
import pandas as pd
import pytest

from tests.conftest import FEATURES, float_rows, score, write_input

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("ext", ["parquet", "csv", "jsonl"])
def test_predictions_equal_the_models_own(tmp_path, models_dir, ext):
    model_path = models_dir / "binary.joblib"
    df1, df2 = float_rows(700, seed=3), float_rows(500, seed=4, start_id=700)
    write_input(df1, tmp_path / "in" / f"a.{ext}")
    write_input(df2, tmp_path / "in" / f"b.{ext}")
    cli = score(tmp_path / "in" / f"*.{ext}", model_path, tmp_path / "out")
    assert cli.code == 0, cli.stderr

    expected = pd.concat([df1, df2])
    model = joblib.load(model_path)
    got = cli.predictions().set_index("id").loc[expected.id]
    np.testing.assert_array_equal(got.prediction.to_numpy(), model.predict(expected[FEATURES]))
    np.testing.assert_allclose(
        got.proba_1.to_numpy(), model.predict_proba(expected[FEATURES])[:, 1]
    )
    assert list(cli.predictions().columns) == [
        "id",
        "prediction",
        "proba_0",
        "proba_1",
        "model_uri",
        "model_version",
        "run_id",
        "scored_at",
        "run_date",
    ]

    m = cli.manifest
    assert m["status"] == "succeeded"
    assert m["counts"] == {
        "rows_read": 1200,
        "rows_predicted": 1200,
        "rows_failed": 0,
        "rows_failed_by_stage": {"read": 0, "validate": 0, "predict": 0},
    }
    assert [(i["rows_read"], i["rows_failed"]) for i in m["inputs"]] == [(700, 0), (500, 0)]
    assert m["model_loads"] == 1
    assert m["files_failed"] == []
    assert "SUCCEEDED: 1,200 rows read" in cli.result.stdout


def test_lineage_on_every_row(tmp_path, models_dir):
    import hashlib

    model_path = models_dir / "binary.joblib"
    write_input(float_rows(300), tmp_path / "in.parquet")
    before = datetime.datetime.now(datetime.UTC)
    cli = score(tmp_path / "in.parquet", model_path, tmp_path / "out")
    assert cli.code == 0, cli.stderr
    sha = hashlib.sha256(model_path.read_bytes()).hexdigest()
    from sklearn import __version__ as sklearn_version

    preds = cli.predictions()
    m = cli.manifest
    assert set(preds.model_uri) == {str(model_path)}
    assert set(preds.model_version) == {sha[:12]}
    assert set(preds.run_id) == {m["run_id"]}
    assert preds.scored_at.min() >= pd.Timestamp(before)
    assert m["model"] == {
        "uri": str(model_path),
        "version": sha[:12],
        "sha256": sha,
        "run_id": None,
        "library_versions": {
            "scikit-learn": {"saved": sklearn_version, "running": sklearn_version}
        },
    }
    assert m["started_at"] <= m["finished_at"]
    assert m["runner"] == "DirectRunner"


def test_multiclass_string_labels(tmp_path, models_dir):
    model = joblib.load(models_dir / "multiclass.pkl")
    df = float_rows(400, seed=5)
    write_input(df, tmp_path / "in.csv")
    cli = score(tmp_path / "in.csv", models_dir / "multiclass.pkl", tmp_path / "out")
    assert cli.code == 0, cli.stderr
    got = cli.predictions().set_index("id").loc[df.id]
    assert list(model.classes_) == ["high", "low", "mid"]
    np.testing.assert_array_equal(got.prediction, model.predict(df[FEATURES]))
    proba = model.predict_proba(df[FEATURES])
    for i, label in enumerate(model.classes_):
        np.testing.assert_allclose(got[f"proba_{label}"], proba[:, i])


def test_regressor_has_float_prediction_and_no_proba(tmp_path, models_dir):
    model = joblib.load(models_dir / "regressor.joblib")
    df = float_rows(300, seed=6)
    write_input(df, tmp_path / "in.jsonl")
    cli = score(tmp_path / "in.jsonl", models_dir / "regressor.joblib", tmp_path / "out")
    assert cli.code == 0, cli.stderr
    got = cli.predictions().set_index("id").loc[df.id]
    assert got.prediction.dtype == np.float64
    assert not [c for c in got.columns if c.startswith("proba_")]
    np.testing.assert_allclose(got.prediction, model.predict(df[FEATURES]))


def test_pipeline_with_text_categories(tmp_path, models_dir):
    from models import demo

    model = joblib.load(models_dir / "categorical.joblib")
    df = demo.make_rows(500, seed=9).drop(columns="churned")
    write_input(df, tmp_path / "in.csv")
    cli = score(tmp_path / "in.csv", models_dir / "categorical.joblib", tmp_path / "out")
    assert cli.code == 0, cli.stderr
    got = cli.predictions().set_index("customer_id").loc[df.customer_id]
    features = demo.NUMERIC + demo.CATEGORICAL
    np.testing.assert_array_equal(got.prediction, model.predict(df[features]))
    np.testing.assert_allclose(got.proba_yes, model.predict_proba(df[features])[:, 1])
    assert cli.manifest["key_columns"] == ["customer_id"]


def test_key_columns_and_features_flags(tmp_path, models_dir):
    df = float_rows(200)
    df["region"] = "north"
    df["extra"] = 1.5
    write_input(df, tmp_path / "in.parquet")
    cli = score(
        tmp_path / "in.parquet",
        models_dir / "binary.joblib",
        tmp_path / "out",
        "--key_columns",
        "id,region",
        "--features",
        ",".join(FEATURES),
    )
    assert cli.code == 0, cli.stderr
    preds = cli.predictions()
    assert list(preds.columns[:3]) == ["id", "region", "prediction"]
    assert "extra" not in preds.columns
    assert set(preds.region) == {"north"}


def test_run_date_fills_input_and_output(tmp_path, models_dir):
    write_input(float_rows(100), tmp_path / "in" / "2026-11-24" / "part.parquet")
    write_input(float_rows(50), tmp_path / "in" / "2026-11-23" / "part.parquet")
    cli = score(
        f"{tmp_path}/in/{{run_date}}/*.parquet",
        models_dir / "binary.joblib",
        f"{tmp_path}/out/{{run_date}}",
        "--run_date",
        "2026-11-24",
    )
    cli.output = tmp_path / "out" / "2026-11-24"
    assert cli.code == 0, cli.stderr
    assert cli.manifest["run_date"] == "2026-11-24"
    assert cli.manifest["counts"]["rows_read"] == 100


def test_run_date_defaults_to_today_utc(tmp_path, models_dir):
    today = datetime.datetime.now(datetime.UTC).date().isoformat()
    write_input(float_rows(10), tmp_path / "in.parquet")
    cli = score(
        tmp_path / "in.parquet", models_dir / "binary.joblib", f"{tmp_path}/out/{{run_date}}"
    )
    cli.output = tmp_path / "out" / today
    assert cli.code == 0, cli.stderr
    assert cli.manifest["run_date"] == today


def test_two_worker_processes_load_the_model_once_each(tmp_path, models_dir):
    for i in range(6):
        write_input(float_rows(2000, seed=i, start_id=i * 2000), tmp_path / "in" / f"p{i}.parquet")
    cli = score(
        tmp_path / "in" / "*.parquet",
        models_dir / "hgb.joblib",
        tmp_path / "out",
        "--direct_num_workers",
        "2",
        "--direct_running_mode",
        "multi_processing",
    )
    assert cli.code == 0, cli.stderr
    m = cli.manifest
    assert m["counts"]["rows_predicted"] == 12000
    # One load per worker process that ran the scoring stage, never one per bundle or batch.
    assert 1 <= m["model_loads"] <= 2
    assert len(cli.predictions()) == 12000


def test_a_local_run_never_tries_prism_which_beam_downloads(tmp_path, models_dir, monkeypatch):
    """Beam's DirectRunner first tries its Prism runner, a binary it downloads from GitHub into
    ~/.apache_beam at run time; a local night runs on the FnApiRunner without that try."""
    from apache_beam.runners.portability import prism_runner

    tried = []

    def prism(self, *args, **kwargs):
        tried.append(args)
        raise RuntimeError("Prism was tried")

    monkeypatch.setattr(prism_runner.PrismRunner, "run_pipeline", prism)
    write_input(float_rows(50), tmp_path / "in" / "a.parquet")
    cli = score(tmp_path / "in" / "*.parquet", models_dir / "binary.joblib", tmp_path / "out")
    assert cli.code == 0, cli.stderr
    assert cli.manifest["counts"]["rows_predicted"] == 50
    assert tried == []
