"""examples/composer_dag.py in a real Airflow with the real Google provider, offline.

Cloud Storage is the emulator (the provider's GCSHook reaches it through STORAGE_EMULATOR_HOST and
an anonymous google_cloud_default connection). Dataflow is not reachable here, so the `score`
task (DataflowStartFlexTemplateOperator) is marked successful by dag.test() and its part is played
by the test: the launch request `plan` built (its XCom, exactly what the operator sends) is run
the way the Flex Template launcher runs it (`python pipeline/run.py --name=value ...`, with the
image's BEAMSCORE_WAIT=false), on the DirectRunner against the emulator. The sensor and the
manifest check run for real.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import subprocess
import uuid
from pathlib import Path

import pytest
from conftest import BEAMSCORE_PYTHON, LOGICAL_DATE, ROOT, ROWS, RUN_DATE, load_dag, upload

DAG_ID = "beamscore_composer"
TASKS = ["plan", "wait_for_input", "score", "check_manifest"]


@pytest.fixture
def night(cloud_storage, demo, monkeypatch) -> dict:
    """Variables of a Composer deployment whose buckets are the emulator's, in fresh folders."""
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", cloud_storage)
    monkeypatch.setenv(
        "AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT",
        json.dumps(
            {
                "conn_type": "google_cloud_platform",
                "extra": {"is_anonymous": True, "project": "emulator"},
            }
        ),
    )
    folder = f"t-{uuid.uuid4().hex[:8]}"
    return {
        "template": "gs://scoring/templates/beamscore.json",
        "project": "test-project",
        "region": "europe-west1",
        "input_pattern": f"gs://scoring/{folder}/in/{{run_date}}/*.parquet",
        "output_dir": f"gs://scoring/{folder}/scores/{{run_date}}",
        "model": "gs://scoring/model.joblib",
        "bucket": "test-bucket",
        "parameters": json.dumps({"max_error_rate": "0.01"}),
        "folder": folder,
    }


def run_composer(dags_folder: Path, variables: dict, monkeypatch, mark_success: str, **sensor):
    """dag.test() of the Composer DAG with these Variables; the tasks matching mark_success are
    marked successful instead of run. Returns the DagRun and the DAG."""
    for name, value in variables.items():
        monkeypatch.setenv(f"AIRFLOW_VAR_BEAMSCORE_{name.upper()}", value)
    dag = load_dag(dags_folder, DAG_ID)
    for name, value in sensor.items():
        setattr(dag.get_task("wait_for_input"), name, value)
    return dag.test(logical_date=LOGICAL_DATE, mark_success_pattern=mark_success), dag


def xcom(run, task_id: str, key: str = "return_value"):
    """What a task pushed, as the downstream task receives it."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        row = session.scalars(
            select(XComModel).where(
                XComModel.dag_id == run.dag_id,
                XComModel.run_id == run.run_id,
                XComModel.task_id == task_id,
                XComModel.key == key,
            )
        ).one()
        return XComModel.deserialize_value(row)


def states(run) -> dict:
    return {ti.task_id: (ti.state, ti.try_number) for ti in run.get_task_instances()}


def read_manifest(where: str) -> dict:
    """The manifest through the provider's own hook, as check_manifest reads it."""
    from airflow.providers.google.cloud.hooks.gcs import GCSHook

    bucket, name = where[5:].split("/", 1)
    return json.loads(GCSHook().download(bucket, name))


def test_dagbag_imports_the_composer_dag(dags_folder):
    from airflow.providers.google.cloud.operators.dataflow import (
        DataflowStartFlexTemplateOperator,
    )

    dag = load_dag(dags_folder, DAG_ID)
    assert sorted(dag.task_ids) == sorted(TASKS)
    for upstream, downstream in zip(TASKS, TASKS[1:]):
        assert downstream in dag.get_task(upstream).downstream_task_ids
    score = dag.get_task("score")
    assert isinstance(score, DataflowStartFlexTemplateOperator)
    assert score.deferrable and score.append_job_name  # no worker slot held; unique job names
    assert score.retries == 2  # a failed job committed nothing: rerun it
    sensor = dag.get_task("wait_for_input")
    assert sensor.mode == "reschedule" and sensor.retries == 0
    assert sensor.timeout == datetime.timedelta(hours=6).total_seconds()
    assert dag.get_task("check_manifest").retries == 0 and dag.get_task("plan").retries == 0


def test_a_night_is_launched_as_the_template_expects_and_its_manifest_decides(
    dags_folder, beamscore_home, demo, cloud_storage, night, monkeypatch, capfd
):
    inputs = sorted(Path(demo["input"]).parent.glob("*.parquet"))
    upload(cloud_storage, [(str(f), f"{night['folder']}/in/{RUN_DATE}/{f.name}") for f in inputs])
    run, dag = run_composer(dags_folder, night, monkeypatch, "score|check_manifest")
    assert states(run)["wait_for_input"] == ("success", 1)  # the input was there
    body = xcom(run, "plan", "body")
    launch = body["launchParameter"]
    assert launch["jobName"] == f"beamscore-{RUN_DATE}"  # the operator appends a unique suffix
    assert launch["containerSpecGcsPath"] == night["template"]
    assert launch["environment"] == {
        "tempLocation": "gs://test-bucket/dataflow/tmp",
        "stagingLocation": "gs://test-bucket/dataflow/staging",
    }
    parameters = launch["parameters"]
    assert parameters["run_date"] == RUN_DATE and parameters["wait"] == "false"
    assert parameters["max_error_rate"] == "0.01"  # from beamscore_parameters
    # Every parameter is one the template declares, and passes its regexes, as the launch
    # service checks them.
    declared = {
        p["name"]: p
        for p in json.loads((ROOT / "templates" / "metadata.json").read_text())["parameters"]
    }
    for name, value in parameters.items():
        assert name in declared, name
        for regex in declared[name].get("regexes", []):
            assert re.fullmatch(regex, value), (name, value, regex)
    assert xcom(run, "plan", "project") == "test-project"
    assert xcom(run, "plan", "region") == "europe-west1"

    # The job, as the Flex Template launcher starts it, on the DirectRunner.
    argv = [BEAMSCORE_PYTHON, str(beamscore_home / "pipeline" / "run.py")]
    argv += [f"--{name}={value}" for name, value in parameters.items()]
    env = {**os.environ, "BEAMSCORE_WAIT": "false", "PYTHONPATH": str(beamscore_home)}
    job = subprocess.run(
        [*argv, "--runner=DirectRunner"], env=env, cwd=beamscore_home, capture_output=True
    )
    assert job.returncode == 0, job.stderr.decode()[-3000:]
    where = xcom(run, "plan", "manifest")
    assert where == f"gs://scoring/{night['folder']}/scores/{RUN_DATE}/manifest.json"
    manifest = read_manifest(where)
    assert manifest["status"] == "succeeded" and manifest["run_date"] == RUN_DATE
    assert manifest["counts"]["rows_read"] == manifest["counts"]["rows_predicted"] == ROWS

    # check_manifest's judgement of that manifest, as this night's task makes it.
    judge = dag.get_task("check_manifest").python_callable.__globals__["judge_manifest"]
    planned_at = xcom(run, "plan", "planned_at")
    assert judge(manifest, where, RUN_DATE, planned_at)["counts"]["rows_read"] == ROWS
    from airflow.sdk.exceptions import AirflowFailException

    failed = {**manifest, "status": "failed", "error_rate": 0.2, "max_error_rate": 0.01}
    with pytest.raises(AirflowFailException, match=r"FAILED .*error rate 0.2 above"):
        judge(failed, where, RUN_DATE, planned_at)
    with pytest.raises(AirflowFailException, match="not of 2026-11-25"):
        judge(manifest, where, "2026-11-25", planned_at)

    # A new DAG run whose job did not run (score marked successful) finds only the manifest of
    # the earlier job: the check fails at once, without retry, and says so.
    capfd.readouterr()
    run, _ = run_composer(dags_folder, night, monkeypatch, "score")
    assert states(run)["check_manifest"] == ("failed", 1)
    assert "was written by an earlier run" in capfd.readouterr().out


def test_a_night_without_its_manifest_fails_without_retry(
    dags_folder, demo, cloud_storage, night, monkeypatch, capfd
):
    marker = f"{night['folder']}/in/{RUN_DATE}/_SUCCESS"
    upload(cloud_storage, [(demo["model_file"], marker)])
    night["input_marker"] = f"gs://scoring/{night['folder']}/in/{{run_date}}/_SUCCESS"
    run, _ = run_composer(dags_folder, night, monkeypatch, "score")
    assert states(run)["wait_for_input"] == ("success", 1)
    assert states(run)["check_manifest"] == ("failed", 1)
    out = capfd.readouterr().out
    assert f"no manifest at gs://scoring/{night['folder']}/scores/{RUN_DATE}/manifest.json" in out


def test_late_input_times_out_clearly_without_launching(dags_folder, night, monkeypatch, capfd):
    night["input_marker"] = f"gs://scoring/{night['folder']}/in/{{run_date}}/_SUCCESS"
    run, _ = run_composer(dags_folder, night, monkeypatch, "", timeout=2, poke_interval=1)
    assert states(run)["wait_for_input"] == ("failed", 1)
    assert states(run)["score"][0] == "upstream_failed"  # nothing was launched
    out = capfd.readouterr().out
    assert "Sensor has timed out" in out
    assert f"{night['folder']}/in/{RUN_DATE}/_SUCCESS" in out  # what it waited for


def test_a_variable_missing_fails_the_plan_without_retry(dags_folder, night, monkeypatch, capfd):
    del night["template"]
    run, _ = run_composer(dags_folder, night, monkeypatch, "")
    assert states(run)["plan"] == ("failed", 1)
    assert "not set (Variables beamscore_*): template" in capfd.readouterr().out


def test_a_table_input_without_a_marker_launches_without_waiting(dags_folder, night, monkeypatch):
    night["input_pattern"] = "bq://test-project.sales.orders"
    night["input_filter"] = "order_date = '{run_date}'"
    run, _ = run_composer(dags_folder, night, monkeypatch, "score")
    assert states(run)["wait_for_input"][0] == "skipped"
    assert states(run)["score"][0] == "success"  # launched (here: marked) all the same
    parameters = xcom(run, "plan", "body")["launchParameter"]["parameters"]
    assert parameters["input"] == "bq://test-project.sales.orders"
    assert parameters["input_filter"] == "order_date = '{run_date}'"  # the job fills it
    declared = {
        p["name"]: p
        for p in json.loads((ROOT / "templates" / "metadata.json").read_text())["parameters"]
    }
    for name, value in parameters.items():
        for regex in declared[name].get("regexes", []):
            assert re.fullmatch(regex, value), (name, value, regex)
