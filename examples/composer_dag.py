"""Nightly beamscore on Cloud Composer: at 03:00 UTC, score the day before with the Flex Template.

Four tasks, none of which holds a worker slot while the night's data or the job is awaited:

1. `plan` reads the Airflow Variables and builds the Flex Template launch request (the
   template's parameters, `run_date` = `{{ ds }}`, `wait` = `false`). A Variable missing or
   malformed fails the DAG run here, at once and without retry.
2. `wait_for_input` waits for the night's input on Cloud Storage: the marker object
   (`beamscore_input_marker`, e.g. `gs://my-bucket/in/{run_date}/_SUCCESS`) when one is set,
   otherwise any object matching the input pattern. A BigQuery table input (`bq://...`, with
   `beamscore_input_filter` selecting the night's rows) waits only for a marker; without one the
   task is skipped and the launch goes ahead. It pokes every 5 minutes in reschedule mode
   (the slot is freed between pokes) and fails without retry after INPUT_TIMEOUT, with Airflow's
   "Sensor has timed out" naming the object it waited for.
3. `score` launches the Flex Template with the Google provider's
   `DataflowStartFlexTemplateOperator` in deferrable mode: the triggerer, not a worker, follows the
   job to its end. The template's launcher returns at submission (`--wait false`) and the job
   commits its own night (predictions, errors, manifest, report, BigQuery, MLflow, OpenLineage).
   A job that fails is an ordinary task failure, retried twice 10 minutes apart: a failed job
   committed nothing, and a rerun into the same output finishes or replaces what it left. (A
   configuration the launcher refuses, its exit 2, also fails the job at launch: each retry then
   fails within minutes, and the Dataflow job's launcher log holds the `error:` line.)
4. `check_manifest` reads the manifest the job wrote and decides the night: `succeeded` passes;
   `failed` (too many rows rejected: the launcher's exit 1) fails at once without retry, naming
   the reason; a missing manifest, or one from another night or an earlier run, fails likewise.
   The same command would end the same way, so only a person helps: DIR/errors/ holds the rows.

Deploy on Composer (Airflow 3; the Google provider is part of Composer's image):

1. Build the Flex Template (README: Flex Template) and give Composer's service account the right to
   launch Dataflow jobs and read the input, the model and the output bucket.
2. Copy this file into the environment's DAGs folder (`gcloud composer environments storage dags
   import --source composer_dag.py ...`).
3. Set the Airflow Variables:

   - beamscore_template: the template file, e.g. `gs://my-bucket/templates/beamscore.json`.
   - beamscore_project, beamscore_region: where the Dataflow job runs.
   - beamscore_input_pattern, beamscore_output_dir, beamscore_model: the template's `input`,
     `output` and `model`, e.g. `gs://my-bucket/in/{run_date}/*.parquet`,
     `gs://my-bucket/scores/{run_date}` and `models:/churn@champion`.
   - Optional: beamscore_input_marker (an object the upstream export writes last; `{run_date}`
     filled); beamscore_input_filter (with a `bq://` input: the template's `input_filter`, e.g.
     `event_date = '{run_date}'`); beamscore_mlflow_tracking_uri; beamscore_bucket (Dataflow's
     temp and staging files go to gs://<bucket>/dataflow/); beamscore_parameters (more template
     parameters as a JSON object, e.g. `{"max_error_rate": "0.001", "bigquery_table":
     "proj.ds.scores"}`); beamscore_environment (the launch request's environment as a JSON
     object, e.g. `{"maxWorkers": 8}`).

A manual run scores its logical date: trigger one with the date to score (again).
"""

from __future__ import annotations

import datetime
import json

from airflow.providers.google.cloud.hooks.gcs import GCSHook
from airflow.providers.google.cloud.operators.dataflow import DataflowStartFlexTemplateOperator
from airflow.providers.google.cloud.sensors.gcs import GCSObjectExistenceSensor
from airflow.sdk import DAG, CronDataIntervalTimetable, TriggerRule, Variable, task
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

INPUT_TIMEOUT = datetime.timedelta(hours=6)  # how long the night's input may be late
REQUIRED = ["template", "project", "region", "input_pattern", "output_dir", "model"]
GLOB = "*?["


def split_gcs(url: str, what: str) -> tuple[str, str]:
    """gs://bucket/name -> (bucket, name); anything else fails the task without retry."""
    if not url.startswith("gs://") or "/" not in url[5:] or url.endswith("/"):
        raise AirflowFailException(f"{what} must be gs://BUCKET/NAME, got {url!r}")
    bucket, name = url[5:].split("/", 1)
    return bucket, name


def _json_object(name: str) -> dict:
    raw = Variable.get(f"beamscore_{name}", default="") or "{}"
    try:
        value = json.loads(raw)
    except ValueError as e:
        raise AirflowFailException(f"Variable beamscore_{name} is not JSON: {e}") from e
    if not isinstance(value, dict):
        raise AirflowFailException(f"Variable beamscore_{name} must be a JSON object")
    return value


def plan_night(ds: str, dag_run_id: str) -> dict:
    """The launch request and what to wait for, from the Variables; fails without retry on a gap."""
    values = {name: Variable.get(f"beamscore_{name}", default="") for name in REQUIRED}
    missing = [name for name, value in values.items() if not value]
    if missing:
        raise AirflowFailException(f"not set (Variables beamscore_*): {', '.join(missing)}")
    split_gcs(values["template"], "beamscore_template")
    output_dir = values["output_dir"].replace("{run_date}", ds)
    split_gcs(output_dir, "beamscore_output_dir")
    parameters = {
        "input": values["input_pattern"],
        "output": values["output_dir"],
        "model": values["model"],
        "run_date": ds,
        "wait": "false",
    }
    for name in ("mlflow_tracking_uri", "input_filter"):
        value = Variable.get(f"beamscore_{name}", default="")
        if value:
            parameters[name] = value
    extra = _json_object("parameters")
    clash = sorted(set(extra) & set(parameters))
    if clash:
        raise AirflowFailException(f"beamscore_parameters may not set {', '.join(clash)}")
    parameters.update({name: str(value) for name, value in extra.items()})
    environment = _json_object("environment")
    bucket = Variable.get("beamscore_bucket", default="")
    if bucket:
        environment.setdefault("tempLocation", f"gs://{bucket}/dataflow/tmp")
        environment.setdefault("stagingLocation", f"gs://{bucket}/dataflow/staging")
    marker = Variable.get("beamscore_input_marker", default="")
    if not marker and not values["input_pattern"].startswith("bq://"):
        marker = values["input_pattern"]
    wait_bucket, wait_object = None, None  # a table without a marker: nothing to wait for
    if marker:
        marker = marker.replace("{run_date}", ds)
        wait_bucket, wait_object = split_gcs(marker, "the input to wait for")
    launch = {
        # The operator appends a unique suffix: a retry never collides with the job it replaces.
        "jobName": f"beamscore-{ds}",
        "containerSpecGcsPath": values["template"],
        "parameters": parameters,
    }
    if environment:
        launch["environment"] = environment
    return {
        "body": {"launchParameter": launch},
        "project": values["project"],
        "region": values["region"],
        "wait_bucket": wait_bucket,
        "wait_object": wait_object,
        "manifest": f"{output_dir.rstrip('/')}/manifest.json",
        "planned_at": datetime.datetime.now(datetime.UTC).isoformat(),
        "dag_run_id": dag_run_id,
    }


class InputSensor(GCSObjectExistenceSensor):
    """The GCS sensor, skipped when there is nothing to wait for (a table input, no marker)."""

    def execute(self, context):
        if not self.bucket:
            raise AirflowSkipException("a table input and no beamscore_input_marker: no wait")
        return super().execute(context)


def judge_manifest(manifest: dict | None, where: str, ds: str, planned_at: str) -> dict:
    """The night's outcome from its manifest: the counts, or AirflowFailException saying why not."""
    if manifest is None:
        raise AirflowFailException(
            f"no manifest at {where}: the job ended without committing the night "
            "(see the Dataflow job's logs)"
        )
    if manifest.get("run_date") != ds:
        raise AirflowFailException(
            f"{where} is the manifest of {manifest.get('run_date')}, not of {ds}"
        )
    started = datetime.datetime.fromisoformat(manifest.get("started_at") or "1970-01-01T00:00Z")
    if started < datetime.datetime.fromisoformat(planned_at):
        raise AirflowFailException(
            f"{where} was written by an earlier run (started {manifest.get('started_at')}), "
            "not by this night's job"
        )
    counts = manifest.get("counts", {})
    summary = (
        f"{counts.get('rows_read')} rows read, {counts.get('rows_predicted')} predicted, "
        f"{counts.get('rows_failed')} rejected"
    )
    if manifest.get("status") != "succeeded":
        reasons = [c.get("message", c.get("check")) for c in manifest.get("failed_checks") or []]
        if not reasons:
            reasons = [
                f"error rate {manifest.get('error_rate')} above --max_error_rate "
                f"{manifest.get('max_error_rate')}"
            ]
        raise AirflowFailException(
            f"the night {ds} FAILED ({summary}): {'; '.join(reasons)}; rejected rows under "
            f"{where.rsplit('/', 1)[0]}/errors/"
        )
    print(f"SUCCEEDED: {summary}; run {manifest.get('run_id')}")
    return {"run_id": manifest.get("run_id"), "counts": counts}


with DAG(
    dag_id="beamscore_composer",
    # Data intervals, so that {{ ds }}, the start of the night's interval, is yesterday's date.
    schedule=CronDataIntervalTimetable("0 3 * * *", timezone="UTC"),
    start_date=datetime.datetime(2026, 11, 1, tzinfo=datetime.UTC),
    catchup=False,
    default_args={"retries": 0},
    tags=["beamscore"],
    doc_md=__doc__,
) as dag:

    @task(multiple_outputs=True)
    def plan(ds=None, run_id=None) -> dict:
        return plan_night(ds, run_id)

    night = plan()

    wait_for_input = InputSensor(
        task_id="wait_for_input",
        bucket=night["wait_bucket"],
        object=night["wait_object"],
        use_glob=True,  # a marker's name is a glob that matches only itself
        mode="reschedule",
        poke_interval=300,
        timeout=INPUT_TIMEOUT.total_seconds(),
    )

    score = DataflowStartFlexTemplateOperator(
        task_id="score",
        project_id=night["project"],
        location=night["region"],
        body=night["body"],
        deferrable=True,
        append_job_name=True,
        trigger_rule=TriggerRule.NONE_FAILED,  # a skipped wait (nothing to wait for) launches
        retries=2,
        retry_delay=datetime.timedelta(minutes=10),
    )

    @task
    def check_manifest(where: str, planned_at: str, ds=None) -> dict:
        bucket, name = split_gcs(where, "the manifest")
        hook = GCSHook()
        manifest = json.loads(hook.download(bucket, name)) if hook.exists(bucket, name) else None
        return judge_manifest(manifest, where, ds, planned_at)

    checked = check_manifest(night["manifest"], night["planned_at"])
    night >> wait_for_input >> score >> checked
