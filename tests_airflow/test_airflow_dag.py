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
import subprocess
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


def run_dag(dags_folder: Path, variables: dict, monkeypatch, task_id="score", conf=None):
    """Runs the DAG once with these Variables (beamscore_<name>); returns the task instance."""
    for name, value in variables.items():
        monkeypatch.setenv(f"AIRFLOW_VAR_BEAMSCORE_{name.upper()}", value)
    dag = load_dag(dags_folder)
    task = dag.get_task(task_id)
    task.retry_delay = datetime.timedelta(0)  # the retries themselves, without the wait
    run = dag.test(logical_date=LOGICAL_DATE, run_conf=conf)
    return run.get_task_instance(task_id), task


def test_dagbag_imports_the_dag(dags_folder):
    dag = load_dag(dags_folder)
    assert sorted(dag.task_ids) == ["evaluate", "night_scored", "score"]
    assert dag.get_task("score").retries == 2
    assert dag.get_task("score").downstream_task_ids == {"evaluate", "night_scored"}
    assert dag.get_task("evaluate").trigger_rule == "all_done"
    assert dag.params["evaluate_days_back"] == 30


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
    assert run_dag_state(ti, "evaluate") == "skipped"  # no labels configured
    assert ti.get_dagrun().state == "success"


def run_dag_state(ti, task_id: str) -> str:
    return ti.get_dagrun().get_task_instance(task_id).state


_LABELS = """
import sys
from models.demo import make_rows
rows, files = int(sys.argv[2]), 4  # models.demo.write_demo's split of the input
per_file = rows // files
frames = [make_rows(per_file, seed=100 + i, start_id=i * per_file) for i in range(files)]
import pandas as pd
pd.concat(frames)[["customer_id", "churned"]].to_csv(sys.argv[1], index=False)
"""


def test_the_evaluate_task_joins_a_past_night_with_its_labels(
    dags_folder, variables, beamscore_home, tmp_path, monkeypatch
):
    """The night is scored, then evaluated (evaluate_days_back 0: the same night)."""
    import pandas as pd
    import pyarrow.parquet as pq
    from sklearn.metrics import accuracy_score, roc_auc_score

    labels = tmp_path / "labels" / RUN_DATE / "labels.csv"
    labels.parent.mkdir(parents=True)
    subprocess.run(
        [BEAMSCORE_PYTHON, "-c", _LABELS, str(labels), str(ROWS)],
        check=True,
        env={**os.environ, "PYTHONPATH": str(beamscore_home)},
    )
    variables["labels_pattern"] = str(tmp_path / "labels" / "{run_date}" / "*.csv")
    variables["label_column"] = "churned"
    ti, _ = run_dag(dags_folder, variables, monkeypatch, "evaluate", conf={"evaluate_days_back": 0})
    assert (ti.state, ti.try_number) == ("success", 1)
    assert ti.get_dagrun().state == "success"
    night = Path(variables["output_dir"].format(run_date=RUN_DATE))
    quality = json.loads((night / "quality.json").read_text())
    assert (quality["rows_scored"], quality["rows_labelled"]) == (ROWS, ROWS)
    assert quality["rows_unmatched"] == {"predictions": 0, "labels": 0}
    predictions = pd.concat(
        pq.read_table(f).to_pandas() for f in sorted((night / "predictions").glob("*.parquet"))
    )
    joined = predictions.merge(pd.read_csv(labels), on="customer_id")
    assert len(joined) == ROWS
    metrics = quality["metrics"]
    assert metrics["accuracy"] == pytest.approx(
        accuracy_score(joined["churned"], joined["prediction"])
    )
    assert metrics["roc_auc"] == pytest.approx(
        roc_auc_score(joined["churned"] == "yes", joined["proba_yes"])
    )


def test_bad_configuration_exit_2_fails_without_retry(
    dags_folder, variables, tmp_path, monkeypatch, capfd
):
    variables["model"] = str(tmp_path / "missing.joblib")
    ti, _ = run_dag(dags_folder, variables, monkeypatch)
    assert (ti.state, ti.try_number) == ("failed", 1)
    assert ti.get_dagrun().state == "failed"  # the night's failure is the DAG run's
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


def test_the_evaluate_task_of_a_night_never_scored_is_nothing_to_do(
    dags_folder, variables, tmp_path, monkeypatch, capfd
):
    """The schedule's first weeks: the night 30 days back does not exist."""
    variables["labels_pattern"] = str(tmp_path / "labels" / "{run_date}" / "*.csv")
    variables["label_column"] = "churned"
    ti, _ = run_dag(dags_folder, variables, monkeypatch, "evaluate")
    assert (ti.state, ti.try_number) == ("success", 1)
    assert "nothing to evaluate" in capfd.readouterr().out
