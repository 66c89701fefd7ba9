"""examples/airflow_dag.py in a real Airflow: Airflow's DagBag imports it, and dag.test() runs it
with the Variables a deployment sets, on the DirectRunner, against a real MLflow registry (sqlite).

Run by scripts/test_airflow.sh with Python from Airflow's own virtualenv; Airflow's home (its
sqlite metadata database) is a temporary directory. The task runs the launcher with the project's
.venv, or BEAMSCORE_PYTHON, on a copy of this checkout's code (the beamscore install on an Airflow
worker), so nothing is written into the checkout.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BEAMSCORE_PYTHON = os.environ.get("BEAMSCORE_PYTHON", str(ROOT / ".venv" / "bin" / "python"))
LOGICAL_DATE = datetime.datetime(2026, 11, 24, 3, tzinfo=datetime.UTC)
RUN_DATE = "2026-11-24"  # {{ ds }} of that run
ROWS = 200


@pytest.fixture(scope="session")
def dags_folder(tmp_path_factory) -> Path:
    """A fresh AIRFLOW_HOME (metadata database migrated) whose DAGs folder holds the example."""
    home = tmp_path_factory.mktemp("airflow_home")
    dags = home / "dags"
    dags.mkdir()
    shutil.copy(ROOT / "examples" / "airflow_dag.py", dags)
    # Before Airflow is first imported, which reads its configuration once.
    os.environ.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        }
    )
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True
    )
    return dags


@pytest.fixture(scope="session")
def beamscore_home(tmp_path_factory) -> Path:
    """The beamscore install the DAG points at: this checkout's code, copied."""
    home = tmp_path_factory.mktemp("beamscore")
    for name in ("setup.py", "constraints.txt", "MANIFEST.in"):
        shutil.copy(ROOT / name, home)
    skip = shutil.ignore_patterns("__pycache__")
    for package in ("pipeline", "transforms", "models"):
        shutil.copytree(ROOT / package, home / package, ignore=skip)
    return home


@pytest.fixture(scope="session")
def demo(tmp_path_factory, beamscore_home) -> dict:
    """The demo model registered as models:/churn@champion in a sqlite MLflow, and its input."""
    root = tmp_path_factory.mktemp("demo")
    tracking_uri = f"sqlite:///{root}/mlflow.db"
    subprocess.run(
        [BEAMSCORE_PYTHON, "-m", "models.demo", "--out", str(root), "--rows", str(ROWS)]
        + ["--register", "churn"],
        check=True,
        capture_output=True,
        cwd=root,  # MLflow keeps the model's artifacts in ./mlruns
        env={**os.environ, "MLFLOW_TRACKING_URI": tracking_uri, "PYTHONPATH": str(beamscore_home)},
    )
    return {
        "input": str(root / "input" / "*.parquet"),
        "model_file": str(root / "model.joblib"),
        "tracking_uri": tracking_uri,
    }


@pytest.fixture
def variables(tmp_path, beamscore_home, demo) -> dict:
    """A night on the DirectRunner, scoring the demo input with the registered model."""
    return {
        "home": str(beamscore_home),
        "python": BEAMSCORE_PYTHON,
        "input_pattern": demo["input"],
        "output_dir": str(tmp_path / "scores" / "{run_date}"),
        "model": "models:/churn@champion",
        "mlflow_tracking_uri": demo["tracking_uri"],
        "runner": "DirectRunner",
    }


def load_dag(dags_folder: Path):
    """The DAG as Airflow's DagBag imports it; fails on any import error."""
    from airflow.models import DagBag

    bag = DagBag(dag_folder=str(dags_folder))
    assert bag.import_errors == {}
    return bag.dags["beamscore_nightly"]


def run_dag(dags_folder: Path, variables: dict, monkeypatch):
    """Runs the DAG once with these Variables (beamscore_<name>); returns the task instance."""
    for name, value in variables.items():
        monkeypatch.setenv(f"AIRFLOW_VAR_BEAMSCORE_{name.upper()}", value)
    dag = load_dag(dags_folder)
    task = dag.get_task("score")
    task.retry_delay = datetime.timedelta(0)  # the retries themselves, without the wait
    run = dag.test(logical_date=LOGICAL_DATE)
    return run.get_task_instance("score"), task


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_dagbag_imports_the_dag(dags_folder):
    dag = load_dag(dags_folder)
    assert dag.task_ids == ["score"]
    assert dag.get_task("score").retries == 2


def test_a_night_scores_every_row_and_logs_the_launcher(dags_folder, variables, monkeypatch, capfd):
    ti, _ = run_dag(dags_folder, variables, monkeypatch)
    assert (ti.state, ti.try_number) == ("success", 1)
    manifest = json.loads(
        (Path(variables["output_dir"].format(run_date=RUN_DATE)) / "manifest.json").read_text()
    )
    assert manifest["status"] == "succeeded"
    assert manifest["run_date"] == RUN_DATE
    counts = manifest["counts"]
    assert (counts["rows_read"], counts["rows_predicted"], counts["rows_failed"]) == (ROWS, ROWS, 0)
    assert manifest["model"]["uri"] == "models:/churn@champion"
    assert f"SUCCEEDED: {ROWS} rows read" in capfd.readouterr().out


def test_bad_configuration_exit_2_fails_without_retry(
    dags_folder, variables, tmp_path, monkeypatch, capfd
):
    variables["model"] = str(tmp_path / "missing.joblib")
    ti, _ = run_dag(dags_folder, variables, monkeypatch)
    assert (ti.state, ti.try_number) == ("failed", 1)
    log = capfd.readouterr().out
    assert "error: no such model file" in log
    assert "beamscore exited 2 (not retried)" in log


def test_unreachable_mlflow_exit_3_is_retried(dags_folder, variables, monkeypatch, capfd):
    variables["mlflow_tracking_uri"] = f"http://127.0.0.1:{closed_port()}"
    ti, task = run_dag(dags_folder, variables, monkeypatch)
    assert (ti.state, ti.try_number) == ("failed", task.retries + 1)
    log = capfd.readouterr().out
    assert log.count("Command exited with return code 3") == task.retries + 1  # launcher runs
    assert not Path(variables["output_dir"].format(run_date=RUN_DATE)).exists()


@pytest.mark.parametrize(
    "change, reason",
    [
        ({"input_pattern": None}, "not set (Variables beamscore_*): input_pattern"),
        ({"runner": None}, "not set (Variables beamscore_*): project, region, bucket"),
        ({"python": "/nonexistent/bin/python"}, "cannot start the beamscore launcher"),
    ],
    ids=["variable-missing", "dataflow-variables-missing", "no-interpreter"],
)
def test_a_task_that_cannot_launch_fails_without_retry(
    dags_folder, variables, monkeypatch, capfd, change, reason
):
    variables.update(change)
    ti, _ = run_dag(dags_folder, {k: v for k, v in variables.items() if v is not None}, monkeypatch)
    assert (ti.state, ti.try_number) == ("failed", 1)
    assert reason in capfd.readouterr().out


_UPLOAD = """
import sys
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage
bucket = storage.Client(project="emulator", credentials=AnonymousCredentials()).bucket("scoring")
for local, name in zip(sys.argv[1::2], sys.argv[2::2]):
    bucket.blob(name).upload_from_filename(local)
"""


@pytest.fixture(scope="session")
def cloud_storage(demo, tmp_path_factory):
    """The Cloud Storage emulator on 127.0.0.1 (run by the launcher's Python, which has it),
    holding the demo input and model: Dataflow workers read no local path, so a Dataflow
    launch takes only gs:// ones."""
    import time

    port = closed_port()
    proc = subprocess.Popen(
        [BEAMSCORE_PYTHON, "-m", "gcp_storage_emulator", "start", "--host", "127.0.0.1"]
        + ["--port", str(port), "--in-memory", "--default-bucket", "scoring"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=tmp_path_factory.mktemp("gcs"),
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            assert proc.poll() is None and time.monotonic() < deadline, "emulator did not start"
            time.sleep(0.1)
    host = f"http://127.0.0.1:{port}"
    inputs = sorted(Path(demo["input"]).parent.glob("*.parquet"))
    pairs = [(str(f), f"in/{f.name}") for f in inputs] + [(demo["model_file"], "model.joblib")]
    subprocess.run(
        [BEAMSCORE_PYTHON, "-c", _UPLOAD, *(x for pair in pairs for x in pair)],
        check=True,
        env={**os.environ, "STORAGE_EMULATOR_HOST": host},
    )
    yield host
    proc.terminate()
    proc.wait(timeout=10)


def test_the_dataflow_job_is_translated_offline(
    dags_folder, variables, cloud_storage, monkeypatch, capfd
):
    """The production flags (project, region, bucket, setup.py, job name), as a Dataflow dry run."""
    del variables["runner"]  # the DAG's default, DataflowRunner
    variables.update(
        {
            "input_pattern": "gs://scoring/in/*.parquet",
            "output_dir": "gs://scoring/scores/{run_date}",
            "model": "gs://scoring/model.joblib",  # a registry model would be staged to the bucket
            "project": "test-project",
            "region": "europe-west1",
            "bucket": "test-bucket",
            "extra_flags": "--dry_run=True --no_auth",
        }
    )
    monkeypatch.setenv("NO_GCE_CHECK", "True")  # no metadata-server probe for credentials
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", cloud_storage)  # the launcher inherits it
    ti, _ = run_dag(dags_folder, variables, monkeypatch)
    assert (ti.state, ti.try_number) == ("success", 1)
    log = capfd.readouterr().out
    assert f"DRY RUN: Dataflow job beamscore-{RUN_DATE}-" in log
    command = next(line for line in log.splitlines() if "Running command:" in line)
    for value in ("test-project", "europe-west1", "gs://test-bucket/dataflow/tmp", "./setup.py"):
        assert f"'{value}'" in command
