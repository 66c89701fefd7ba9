"""Every run logged to MLflow, with drift: read back with MlflowClient as a user would."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

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
from tests.helpers import sqlite_store

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def model_with_baseline(tmp_path_factory, models_dir):
    """The binary model with a drift baseline beside it (<model>.drift.json), from its training
    distribution."""
    from models.baseline import baseline_from_frame

    out = tmp_path_factory.mktemp("baseline")
    path = out / "binary.joblib"
    shutil.copy(models_dir / "binary.joblib", path)
    base = baseline_from_frame(float_rows(5000, seed=1)[FEATURES], FEATURES)
    (out / "binary.joblib.drift.json").write_text(json.dumps(base))
    return path


def read_run(uri: str, run_id: str):
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    return client, client.get_run(run_id)


def test_run_is_logged_with_metrics_artifacts_and_no_drift(tmp_path, model_with_baseline):
    uri = sqlite_store(tmp_path)
    write_input(float_rows(3000, seed=11), tmp_path / "in.parquet")
    cli = score(
        tmp_path / "in.parquet",
        model_with_baseline,
        tmp_path / "out",
        "--mlflow_tracking_uri",
        uri,
        "--mlflow_experiment",
        "nightly",
    )
    assert cli.code == 0, cli.stderr
    m = cli.manifest
    client, run = read_run(uri, m["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.tags["beamscore.run_id"] == m["run_id"]
    assert run.data.tags["beamscore.code_version"]
    metrics = run.data.metrics
    assert metrics["rows_read"] == m["counts"]["rows_read"] == 3000
    assert metrics["rows_predicted"] == m["counts"]["rows_predicted"]
    assert metrics["rows_failed"] == 0 and metrics["model_loads"] == 1
    assert metrics["rows_per_s"] > 0 and metrics["duration_s"] > 0
    assert run.data.params["model_uri"] == str(model_with_baseline)
    assert run.data.params["run_date"] == m["run_date"]
    # Drawn like the training data: no drift.
    assert set(m["drift"]) == set(FEATURES)
    assert all(v < 0.05 for v in m["drift"].values()), m["drift"]
    assert all(metrics[f"psi_{f}"] == pytest.approx(m["drift"][f]) for f in FEATURES)
    assert {metrics[f"rows_failed_{s}"] for s in ("read", "validate", "predict")} == {0}
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"manifest.json", "prediction_distribution.png", "drift.json", "report.html"} <= names
    assert "errors_sample.jsonl" not in names  # no rejected record
    png = client.download_artifacts(run.info.run_id, "prediction_distribution.png", str(tmp_path))
    from PIL import Image

    with Image.open(png) as image:
        assert image.format == "PNG" and image.size[0] > 100
    report = client.download_artifacts(run.info.run_id, "report.html", str(tmp_path / "r"))
    assert open(report).read() == (tmp_path / "out" / "report.html").read_text()
    (dataset,) = run.inputs.dataset_inputs  # the input logged as an MLflow dataset
    assert dataset.dataset.source_type == "local"
    assert json.loads(dataset.dataset.source)["uri"] == str(tmp_path / "in.parquet")


def test_shifted_data_warns_and_a_failed_run_is_failed(tmp_path, model_with_baseline):
    uri = sqlite_store(tmp_path)
    df = float_rows(3000, seed=12)
    df["f0"] = df["f0"] + 2.0  # drifted
    lines = df.to_csv(index=False).splitlines()
    lines[5] = "4,1,2"  # one bad row: with the default --max_error_rate 0 the run fails
    (tmp_path / "in.csv").write_text("\n".join(lines) + "\n")
    cli = score(
        tmp_path / "in.csv",
        model_with_baseline,
        tmp_path / "out",
        "--mlflow_tracking_uri",
        uri,
        "--mlflow_experiment",
        "nightly",
    )
    assert cli.code == 1, cli.stderr
    m = cli.manifest
    assert m["drift"]["f0"] > 0.2 and m["drift"]["f1"] < 0.05
    assert "WARNING drift: f0" in cli.result.stdout
    client, run = read_run(uri, m["mlflow_run_id"])
    assert run.info.status == "FAILED"
    assert run.data.metrics["rows_failed"] == 1
    assert run.data.metrics["rows_failed_read"] == 1
    assert run.data.metrics["rows_failed_validate"] == run.data.metrics["rows_failed_predict"] == 0
    sample = client.download_artifacts(run.info.run_id, "errors_sample.jsonl", str(tmp_path))
    (record,) = [json.loads(line) for line in open(sample)]
    assert record["record"] == "4,1,2" and record["line"] == 6


def test_regressor_distribution_and_a_sample_of_at_most_1000_errors(tmp_path, models_dir):
    uri = sqlite_store(tmp_path)
    df = float_rows(3000, seed=4)
    lines = df.to_csv(index=False).splitlines()
    for i in range(1, 3001, 2):
        lines[i] = f"{i - 1},x,0,0,0"  # 1,500 rejected records, every other one
    (tmp_path / "in.csv").write_text("\n".join(lines) + "\n")
    cli = score(
        tmp_path / "in.csv",
        models_dir / "regressor.joblib",
        tmp_path / "out",
        "--mlflow_tracking_uri",
        uri,
        "--mlflow_experiment",
        "nightly",
        "--max_error_rate",
        "0.6",
    )
    assert cli.code == 0, cli.stderr
    client, run = read_run(uri, cli.manifest["mlflow_run_id"])
    assert run.data.metrics["rows_failed_validate"] == 1500
    sample = client.download_artifacts(run.info.run_id, "errors_sample.jsonl", str(tmp_path))
    records = [json.loads(line) for line in open(sample)]
    assert len(records) == 1000 and all(r["stage"] == "validate" for r in records)
    profile = json.loads(
        open(client.download_artifacts(run.info.run_id, "profile.json", str(tmp_path))).read()
    )
    histogram = profile["prediction_histogram"]
    assert sum(histogram["counts"]) == 1500 and len(histogram["edges"]) == 31
    predictions = cli.predictions().prediction
    assert histogram["min"] == predictions.min() and histogram["max"] == predictions.max()


@pytest.mark.subprocess
def test_a_killed_run_is_closed_as_killed_by_the_next_run(tmp_path, mlflow_server):
    import joblib

    from tests import custom_models

    joblib.dump(custom_models.Slow(0.3).fit(float_rows(50)[FEATURES]), tmp_path / "slow.joblib")
    write_input(float_rows(2000), tmp_path / "in.parquet")
    run_args = [
        "--input",
        tmp_path / "in.parquet",
        "--model",
        tmp_path / "slow.joblib",
        "--output",
        tmp_path / "out",
        "--mlflow_tracking_uri",
        mlflow_server,
        "--mlflow_experiment",
        "killed",
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline.run", *map(str, run_args), "--batch_size", "20"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    lock = tmp_path / "out" / "_lock"
    deadline = time.monotonic() + 120
    while "mlflow_run_id" not in (lock.read_text() if lock.exists() else ""):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.1)
    dead_run = json.loads(lock.read_text())["mlflow_run_id"]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    client, run = read_run(mlflow_server, dead_run)
    assert run.info.status == "RUNNING"  # nobody closed it: the process is gone
    cli = run_cli(*run_args, "--batch_size", "1000")
    assert cli.code == 0, cli.stderr
    _, run = read_run(mlflow_server, dead_run)
    assert run.info.status == "KILLED"
    assert "took over its lock" in run.data.tags["beamscore.ended_by"]
    _, new = read_run(mlflow_server, cli.manifest["mlflow_run_id"])
    assert new.info.status == "FINISHED"


def test_no_baseline_no_drift_section(tmp_path, models_dir):
    write_input(float_rows(100), tmp_path / "in.parquet")
    cli = score(tmp_path / "in.parquet", models_dir / "binary.joblib", tmp_path / "out")
    assert cli.code == 0, cli.stderr
    assert "drift" not in cli.manifest


def test_unreachable_tracking_server_at_launch_is_exit_3(tmp_path, models_dir):
    write_input(float_rows(10), tmp_path / "in.parquet")
    cli = score(
        tmp_path / "in.parquet",
        models_dir / "binary.joblib",
        tmp_path / "out",
        "--mlflow_tracking_uri",
        "http://127.0.0.1:9",
        "--mlflow_experiment",
        "nightly",
    )
    assert cli.code == 3, cli.stderr
    assert "Traceback" not in cli.stderr
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_a_tracking_store_that_refuses_the_run_is_exit_2(tmp_path, models_dir):
    write_input(float_rows(10), tmp_path / "in.parquet")
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    import mlflow

    client = mlflow.MlflowClient(store)
    client.delete_experiment(client.create_experiment("nightly"))
    base = ["--model", models_dir / "binary.joblib", "--input", tmp_path / "in.parquet"]
    for uri, says in ((store, "deleted"), ("bogus://nowhere", "bogus://nowhere")):
        cli = run_cli(
            *base,
            "--output",
            tmp_path / "out",
            "--mlflow_tracking_uri",
            uri,
            "--mlflow_experiment",
            "nightly",
        )
        assert_one_line_error(cli, says)
        assert "could not end the run" not in cli.stderr
        assert not (tmp_path / "out" / "manifest.json").exists()


class Route:
    """A TCP route to a server that can be cut: afterwards every connection on it is reset and
    new ones are refused, as if the server's machine had gone."""

    def __init__(self, uri: str):
        host, port = uri.removeprefix("http://").split(":")
        self.target = (host, int(port))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.uri = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.open: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # cut
            server = socket.create_connection(self.target)
            self.open += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        with contextlib.suppress(OSError):
            b.shutdown(socket.SHUT_WR)

    def cut(self) -> None:
        self.listener.close()
        for s in self.open:
            with contextlib.suppress(OSError):
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                s.close()  # a reset, as from a host that is gone


@pytest.mark.subprocess
def test_server_gone_mid_run_still_commits_the_predictions(
    tmp_path, model_with_baseline, mlflow_server
):
    route = Route(mlflow_server)
    uri = route.uri
    for i in range(4):
        write_input(float_rows(20_000, seed=i, start_id=i * 20_000), tmp_path / "in" / f"{i}.csv")
    cli = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pipeline.run",
            "--input",
            str(tmp_path / "in" / "*.csv"),
            "--model",
            str(model_with_baseline),
            "--output",
            str(tmp_path / "out"),
            "--mlflow_tracking_uri",
            uri,
            "--mlflow_experiment",
            "nightly",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        # A dead server is a refused connection at once: no retries (MLflow's own setting).
        env={**os.environ, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"},
    )
    seen = []
    for line in cli.stderr:  # the launcher logs this line once the MLflow run has started
        seen.append(line)
        if "INFO pipeline: run " in line:
            break
    route.cut()  # the server goes while the pipeline runs
    out, err = cli.communicate(timeout=300)
    err = "".join(seen) + err
    assert cli.returncode == 0, err
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["status"] == "succeeded" and manifest["counts"]["rows_predicted"] == 80_000
    assert manifest["mlflow_run_id"]
    assert "NOT fully logged" in out, out
    assert "could not log metrics in MLflow run" in err and "Traceback" not in err


def test_registry_alias_on_a_real_server_scored_and_logged(tmp_path, mlflow_server, monkeypatch):
    import mlflow

    from models import demo

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    mlflow.set_tracking_uri(mlflow_server)
    mlflow.set_registry_uri(mlflow_server)
    try:
        model_uri = demo.register("churn-server")
    finally:
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)
    assert model_uri == "models:/churn-server@champion"
    df = demo.make_rows(2000, seed=21).drop(columns="churned")
    write_input(df, tmp_path / "in.parquet")
    cli = score(
        tmp_path / "in.parquet",
        model_uri,
        tmp_path / "out",
        "--mlflow_tracking_uri",
        mlflow_server,
        "--mlflow_experiment",
        "nightly-server",
    )
    assert cli.code == 0, cli.stderr
    m = cli.manifest
    assert m["model"]["version"] == "1"
    assert set(cli.predictions().model_version) == {"1"}
    assert set(m["drift"]) == set(demo.NUMERIC + demo.CATEGORICAL)
    assert max(m["drift"].values()) < 0.1
    client, run = read_run(mlflow_server, m["mlflow_run_id"])
    assert run.data.metrics["rows_predicted"] == 2000
    # The scored input is a dataset input of the run, linked to the version's logged model.
    assert [d.dataset.name for d in run.inputs.dataset_inputs] == [f"input-{m['run_date']}"]
    version = client.get_model_version("churn-server", "1")
    logged_model = version.model_id or version.source.removeprefix("models:/")
    assert logged_model.startswith("m-")
    assert [i.model_id for i in run.inputs.model_inputs] == [logged_model]
