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
from pathlib import Path

import pytest
from conftest import BEAMSCORE_PYTHON, LOGICAL_DATE, ROWS, RUN_DATE, closed_port, load_dag


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


def run_dag(dags_folder: Path, variables: dict, monkeypatch):
    """Runs the DAG once with these Variables (beamscore_<name>); returns the task instance."""
    for name, value in variables.items():
        monkeypatch.setenv(f"AIRFLOW_VAR_BEAMSCORE_{name.upper()}", value)
    dag = load_dag(dags_folder)
    task = dag.get_task("score")
    task.retry_delay = datetime.timedelta(0)  # the retries themselves, without the wait
    run = dag.test(logical_date=LOGICAL_DATE)
    return run.get_task_instance("score"), task


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
