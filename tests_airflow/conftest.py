"""Fixtures of the Airflow tests (tests_airflow/): a fresh Airflow home whose DAGs folder holds
the examples, a copy of this checkout as the beamscore install, the demo model registered in a
sqlite MLflow, and the Cloud Storage emulator on 127.0.0.1."""

from __future__ import annotations

import datetime
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
    """A fresh AIRFLOW_HOME (metadata database migrated) whose DAGs folder holds the examples."""
    home = tmp_path_factory.mktemp("airflow_home")
    dags = home / "dags"
    dags.mkdir()
    for dag_file in ("airflow_dag.py", "composer_dag.py"):
        shutil.copy(ROOT / "examples" / dag_file, dags)
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


def load_dag(dags_folder: Path, dag_id: str = "beamscore_nightly"):
    """The DAG as Airflow's DagBag imports it; fails on any import error."""
    from airflow.models import DagBag

    bag = DagBag(dag_folder=str(dags_folder))
    assert bag.import_errors == {}
    return bag.dags[dag_id]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_UPLOAD = """
import sys
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage
bucket = storage.Client(project="emulator", credentials=AnonymousCredentials()).bucket("scoring")
for local, name in zip(sys.argv[1::2], sys.argv[2::2]):
    bucket.blob(name).upload_from_filename(local)
"""


def upload(host: str, pairs: list[tuple[str, str]]) -> None:
    """Uploads (local file, object name) pairs into the emulator's bucket `scoring`."""
    subprocess.run(
        [BEAMSCORE_PYTHON, "-c", _UPLOAD, *(x for pair in pairs for x in pair)],
        check=True,
        env={**os.environ, "STORAGE_EMULATOR_HOST": host},
    )


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
    upload(host, pairs)
    yield host
    proc.terminate()
    proc.wait(timeout=10)
