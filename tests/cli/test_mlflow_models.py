"""Scoring MLflow models: by registry alias and version, by run, with signatures."""

from __future__ import annotations

import os

import joblib
import numpy as np
import pytest

from tests.conftest import (
    FEATURES,
    ROOT,
    assert_one_line_error,
    float_rows,
    run_cli,
    score,
    write_input,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def registry(tmp_path_factory, models_dir):
    """A real sqlite tracking store with `binary` registered as version 1 (alias champion) and a
    pyfunc model logged in a run."""
    import mlflow
    from mlflow import MlflowClient
    from mlflow.models import infer_signature

    from models.register import requirements

    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root}/mlflow.db"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    experiment = mlflow.create_experiment("scoring-tests", artifact_location=str(root / "art"))
    model = joblib.load(models_dir / "binary.joblib")
    X = float_rows(50)[FEATURES]
    with mlflow.start_run(experiment_id=experiment) as run:
        mlflow.sklearn.log_model(
            model,
            name="model",
            signature=infer_signature(X, model.predict(X)),
            registered_model_name="churn",
            serialization_format="cloudpickle",
            pip_requirements=requirements(model, "cloudpickle"),  # not inferred in a subprocess
        )
        sk_run = run.info.run_id

    class Doubler(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            return model_input["f0"] * 2.0

    with mlflow.start_run(experiment_id=experiment) as run:
        mlflow.pyfunc.log_model(
            name="doubler",
            python_model=Doubler(),
            signature=infer_signature(X, X["f0"] * 2.0),
            registered_model_name="doubler",
            pip_requirements=[f"mlflow=={mlflow.__version__}"],
        )
        pyfunc_run = run.info.run_id
    client = MlflowClient(uri, uri)
    client.set_registered_model_alias("churn", "champion", "1")
    mlflow.set_tracking_uri(None)
    mlflow.set_registry_uri(None)
    os.environ.pop("MLFLOW_REGISTRY_URI", None)  # set_registry_uri(None) leaves it set
    return {"uri": uri, "sk_run": sk_run, "pyfunc_run": pyfunc_run, "model": model}


def no_tracking_env() -> dict:
    """Removes every MLflow variable: only the flag may tell where the server is."""
    return {k: None for k in os.environ if k.startswith("MLFLOW_")}


def test_registry_alias_scores_like_the_model(tmp_path, registry):
    (tmp_path / "tmp").mkdir()
    df = float_rows(300, seed=2)
    write_input(df, tmp_path / "in.parquet")
    cli = run_cli(
        "--input",
        tmp_path / "in.parquet",
        "--model",
        "models:/churn@champion",
        "--mlflow_tracking_uri",
        registry["uri"],
        "--output",
        tmp_path / "out",
        env={"TMPDIR": str(tmp_path / "tmp")},
    )
    assert cli.code == 0, cli.stderr
    # The downloaded model is not left behind (Beam and MLflow leave a few empty directories).
    assert not [p for p in (tmp_path / "tmp").rglob("*") if p.is_file()]
    got = cli.predictions().set_index("id").loc[df.id]
    model = registry["model"]
    np.testing.assert_allclose(got.proba_1, model.predict_proba(df[FEATURES])[:, 1])
    assert set(got.model_uri) == {"models:/churn@champion"}
    assert set(got.model_version) == {"1"}
    m = cli.manifest
    assert m["model"]["version"] == "1" and m["model"]["run_id"] == registry["sk_run"]
    assert len(m["model"]["sha256"]) == 64


def test_workers_without_tracking_uri(tmp_path, registry):
    for i in range(4):
        write_input(float_rows(500, seed=i, start_id=i * 500), tmp_path / "in" / f"p{i}.csv")
    env = no_tracking_env()
    cli = run_cli(
        "--input",
        tmp_path / "in" / "*.csv",
        "--model",
        "models:/churn/1",
        "--mlflow_tracking_uri",
        registry["uri"],
        "--output",
        tmp_path / "out",
        "--direct_num_workers",
        "2",
        "--direct_running_mode",
        "multi_processing",
        env=env,
    )
    assert cli.code == 0, cli.stderr
    assert cli.manifest["counts"]["rows_predicted"] == 2000
    assert 1 <= cli.manifest["model_loads"] <= 2


def test_run_uri_version_is_the_run_id(tmp_path, registry):
    write_input(float_rows(100), tmp_path / "in.jsonl")
    cli = score(
        tmp_path / "in.jsonl",
        f"runs:/{registry['sk_run']}/model",
        tmp_path / "out",
        env={"MLFLOW_TRACKING_URI": registry["uri"]},
    )
    assert cli.code == 0, cli.stderr
    assert set(cli.predictions().model_version) == {registry["sk_run"]}


@pytest.mark.parametrize("by", ["version", "run"])
def test_pyfunc_model(tmp_path, registry, by):
    df = float_rows(200)
    write_input(df, tmp_path / "in.parquet")
    uri = "models:/doubler/1" if by == "version" else f"runs:/{registry['pyfunc_run']}/doubler"
    cli = run_cli(
        "--input",
        tmp_path / "in.parquet",
        "--model",
        uri,
        "--mlflow_tracking_uri",
        registry["uri"],
        "--output",
        tmp_path / "out",
    )
    assert cli.code == 0, cli.stderr
    got = cli.predictions().set_index("id").loc[df.id]
    np.testing.assert_allclose(got.prediction, df.f0 * 2.0)
    assert set(got.model_uri) == {uri}


@pytest.mark.parametrize(
    "model_uri, words",
    [
        ("models:/churn@nope", ["models:/churn@nope"]),
        ("models:/churn/7", ["models:/churn/7"]),
        ("models:/ghost/1", ["models:/ghost/1"]),
        ("runs:/0123456789abcdef0123456789abcdef/model", ["runs:/0123456789abcdef"]),
    ],
)
def test_unknown_alias_version_or_run(tmp_path, registry, model_uri, words):
    write_input(float_rows(10), tmp_path / "in.parquet")
    cli = run_cli(
        "--input",
        tmp_path / "in.parquet",
        "--model",
        model_uri,
        "--mlflow_tracking_uri",
        registry["uri"],
        "--output",
        tmp_path / "out",
    )
    assert_one_line_error(cli, *words)


def test_a_registry_uri_without_a_tracking_server_is_refused(tmp_path):
    write_input(float_rows(10), tmp_path / "in.parquet")
    args = ["--input", tmp_path / "in.parquet", "--output", tmp_path / "out"]
    # Not MLflow's fallback: a database file in the current directory (cwd is the checkout).
    cli = run_cli(*args, "--model", "models:/churn@champion", env=no_tracking_env())
    assert_one_line_error(cli, "models:/churn@champion", "--mlflow_tracking_uri")
    assert not (ROOT / "mlflow.db").exists() and not (ROOT / "mlruns").exists()
    assert not (tmp_path / "out").exists()


def test_signature_column_missing_or_not_castable(tmp_path, registry):
    write_input(float_rows(10).drop(columns="f1"), tmp_path / "a.parquet")
    cli = run_cli(
        "--input",
        tmp_path / "a.parquet",
        "--model",
        "models:/churn/1",
        "--mlflow_tracking_uri",
        registry["uri"],
        "--output",
        tmp_path / "o1",
    )
    assert_one_line_error(cli, "f1")
    df = float_rows(10)
    df["f2"] = "text"
    write_input(df, tmp_path / "b.parquet")
    cli = run_cli(
        "--input",
        tmp_path / "b.parquet",
        "--model",
        "models:/churn/1",
        "--mlflow_tracking_uri",
        registry["uri"],
        "--output",
        tmp_path / "o2",
    )
    assert_one_line_error(cli, "f2", "signature")


def test_unreachable_tracking_server_is_exit_3(tmp_path):
    write_input(float_rows(10), tmp_path / "in.parquet")
    cli = run_cli(
        "--input",
        tmp_path / "in.parquet",
        "--model",
        "models:/churn/1",
        "--mlflow_tracking_uri",
        "http://127.0.0.1:9",
        "--output",
        tmp_path / "out",
    )
    assert cli.code == 3, cli.stderr
    assert "Traceback" not in cli.stderr and "unreachable" in cli.stderr


def test_staging_a_model_where_cloud_storage_does_not_answer_is_exit_3(
    tmp_path, registry, monkeypatch
):
    """On Dataflow the launcher stages an MLflow model under --temp_location: a Cloud Storage
    that cannot be reached there is a retryable failure (exit 3), not a traceback.

    Called in-process: through the CLI a Dataflow launch has its --input and --output in Cloud
    Storage too (local paths are refused), and an unreachable Cloud Storage is found there first
    (test_launch_checks.test_unreachable_cloud_storage_is_exit_3)."""
    import time

    from pipeline.errors import RunFailed
    from pipeline.launch import prepare
    from pipeline.options import ScoringOptions
    from pipeline.run import parse_options
    from pipeline.runners import named

    write_input(float_rows(10), tmp_path / "in.parquet")
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "http://127.0.0.1:9")
    options = parse_options(
        [
            "--input",
            str(tmp_path / "in.parquet"),
            "--model",
            "models:/churn@champion",
            "--mlflow_tracking_uri",
            registry["uri"],
            "--output",
            str(tmp_path / "out"),
        ]
    )
    start = time.monotonic()
    with pytest.raises(RunFailed) as failed:
        prepare(
            options.view_as(ScoringOptions),
            named("DataflowRunner"),
            staging_root="gs://staging-bucket/tmp",
        )
    assert time.monotonic() - start < 60
    message = str(failed.value)
    assert "--temp_location gs://staging-bucket/tmp" in message and "unreachable" in message
    assert RunFailed.exit_code == 3
