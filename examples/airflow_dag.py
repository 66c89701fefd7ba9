"""Nightly beamscore run for Airflow 3: at 03:00 UTC, score the day before on Dataflow.

The task runs the beamscore launcher, `python -m pipeline.run ... --run_date {{ ds }}`, in a
subprocess. With the DataflowRunner the launcher submits the job, waits for it and commits the
output, so the task lasts as long as the job. Everything the launcher prints goes to the task log,
and its exit code decides the task's outcome:

- 0: success.
- 3 (the run could not complete: a worker crashed, a service was unreachable; the previous output
  is intact): an ordinary task failure, so the task's retries (2, 10 minutes apart) apply.
- 1 (too many rows rejected), 2 (bad configuration or input), or any other code (130 or a
  signal: interrupted): the task fails at once, without retry, since the same command would end
  the same way. A person must look: the log says why (the launcher's `error:` line, or its
  FAILED summary), and for exit 1 DIR/errors/ holds the rejected rows. A Variable missing fails
  the same way.

Deploy:

1. On every Airflow worker, a beamscore checkout with its virtualenv (running `./run_local.sh`
   once in it builds `.venv`), and credentials that can launch Dataflow jobs and read the model
   (application-default credentials).
2. In the Airflow environment, `pip install -r requirements-airflow.txt` (beside this file);
   copy this file into the DAGs folder.
3. Set the Airflow Variables (`airflow variables set NAME VALUE`, or AIRFLOW_VAR_<NAME>):

   - beamscore_home: the beamscore checkout (the launcher's working directory; Dataflow's workers
     install its setup.py).
   - beamscore_input_pattern, beamscore_output_dir: the launcher's --input and --output, e.g.
     `gs://my-bucket/in/{run_date}/*.parquet` and `gs://my-bucket/scores/{run_date}`.
   - beamscore_model and beamscore_mlflow_tracking_uri: e.g. `models:/churn@champion` and the
     MLflow server that resolves it (a model file needs no server).
   - beamscore_project, beamscore_region, beamscore_bucket: the Dataflow project and region, and
     the bucket for Dataflow's temp and staging files (no gs://).
   - Optional: beamscore_python (default: <beamscore_home>/.venv/bin/python);
     beamscore_extra_flags (more launcher flags, e.g. `--max_error_rate 0.001 --max_num_workers
     8`); beamscore_runner (default DataflowRunner; DirectRunner scores on the Airflow worker
     itself, without Google Cloud or the three Dataflow Variables: the test runs the DAG so).

A manual run scores its logical date: trigger one with the date to score (again).

Model quality once the labels arrive: the `evaluate` task runs `python -m pipeline.evaluate` on
the night `evaluate_days_back` days before the one scored (a DAG param, default 30: the night whose
labels are complete), after `score` whatever its outcome (the DAG run still fails with `score`:
its leaf `night_scored` follows it). A night never scored there, or an output directory without
`{run_date}` (no past night kept), is nothing to evaluate. It needs the Variables
beamscore_labels_pattern (the labels' files, `{run_date}` filled with that night's date) and
beamscore_label_column (optional: beamscore_label_key_columns); without them it is skipped. Its exit
codes map as the launcher's: 3 retried, anything else but 0 failed without retry.
"""

from __future__ import annotations

import datetime
import os
import shlex

from airflow.providers.standard.hooks.subprocess import SubprocessHook
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG, BaseOperator, CronDataIntervalTimetable, Param, TriggerRule
from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowSkipException

RETRYABLE = 3  # the launcher's exit code for a run that could not complete


def run_beamscore(hook: SubprocessHook, argv: list[str], cwd: str) -> None:
    """Runs a beamscore command; raises unless it exits 0 (retried only for exit 3)."""
    try:
        result = hook.run_command(argv, cwd=cwd)
    except OSError as e:  # no such interpreter or directory: configuration, not retried
        raise AirflowFailException(f"cannot start the beamscore launcher: {e}") from e
    if result.exit_code == RETRYABLE:
        raise AirflowException(f"beamscore exited 3 (retried): {result.output}")
    if result.exit_code != 0:
        raise AirflowFailException(
            f"beamscore exited {result.exit_code} (not retried): {result.output}"
        )


class BeamscoreOperator(BaseOperator):
    """Runs `python -m pipeline.run` and maps its exit code to the task's outcome.

    Every argument but BaseOperator's is templated; an empty one is unset. A required one unset
    (home, input_pattern, output_dir, model; project, region and bucket for the DataflowRunner)
    fails the task without retry, as the launcher's exit 2 does.

    Args:
        home: the beamscore checkout, the launcher's working directory.
        input_pattern: the launcher's --input.
        output_dir: the launcher's --output.
        model: the launcher's --model.
        run_date: the launcher's --run_date.
        mlflow_tracking_uri: the launcher's --mlflow_tracking_uri.
        python: the interpreter of the beamscore install; default: home's .venv.
        runner: the Beam runner; default DataflowRunner.
        project: the Dataflow project.
        region: the Dataflow region.
        bucket: the bucket for Dataflow's temp and staging files.
        extra_flags: more launcher flags, as one shell-quoted string.
        **kwargs: BaseOperator's arguments.
    """

    template_fields = (
        "home",
        "input_pattern",
        "output_dir",
        "model",
        "run_date",
        "mlflow_tracking_uri",
        "python",
        "runner",
        "project",
        "region",
        "bucket",
        "extra_flags",
    )

    def __init__(
        self,
        *,
        home: str,
        input_pattern: str,
        output_dir: str,
        model: str,
        run_date: str,
        mlflow_tracking_uri: str = "",
        python: str = "",
        runner: str = "",
        project: str = "",
        region: str = "",
        bucket: str = "",
        extra_flags: str = "",
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.home = home
        self.input_pattern = input_pattern
        self.output_dir = output_dir
        self.model = model
        self.run_date = run_date
        self.mlflow_tracking_uri = mlflow_tracking_uri
        self.python = python
        self.runner = runner
        self.project = project
        self.region = region
        self.bucket = bucket
        self.extra_flags = extra_flags
        self._hook = SubprocessHook()

    def execute(self, context) -> None:
        """Runs the launcher to its end; raises unless it exits 0."""
        runner = self.runner or "DataflowRunner"
        required = ["home", "input_pattern", "output_dir", "model"]
        if runner == "DataflowRunner":
            required += ["project", "region", "bucket"]
        missing = [name for name in required if not getattr(self, name)]
        if missing:
            raise AirflowFailException(f"not set (Variables beamscore_*): {', '.join(missing)}")
        python = self.python or os.path.join(self.home, ".venv", "bin", "python")
        argv = [python, "-m", "pipeline.run", "--input", self.input_pattern]
        argv += ["--output", self.output_dir, "--model", self.model]
        argv += ["--run_date", self.run_date, "--runner", runner]
        if self.mlflow_tracking_uri:
            argv += ["--mlflow_tracking_uri", self.mlflow_tracking_uri]
        if runner == "DataflowRunner":
            argv += self._dataflow_flags()
        argv += shlex.split(self.extra_flags)
        run_beamscore(self._hook, argv, self.home)

    def _dataflow_flags(self) -> list[str]:
        launched = datetime.datetime.now(datetime.UTC).strftime("%Y%m%d-%H%M%S")
        return [
            "--project",
            self.project,
            "--region",
            self.region,
            "--temp_location",
            f"gs://{self.bucket}/dataflow/tmp",
            "--staging_location",
            f"gs://{self.bucket}/dataflow/staging",
            "--setup_file",
            "./setup.py",
            # Unique per try: a retry must not collide with a job of the same name.
            "--job_name",
            f"beamscore-{self.run_date}-{launched}",
        ]

    def on_kill(self) -> None:
        """Stops the launcher and its local processes when Airflow stops the task.

        A Dataflow job it already submitted runs on: cancel it with `gcloud dataflow jobs cancel`.
        """
        self._hook.send_sigterm()


class BeamscoreEvaluateOperator(BaseOperator):
    """Runs `python -m pipeline.evaluate` on a past night; skipped when no labels are configured.

    Every argument but BaseOperator's is templated; an empty one is unset.

    Args:
        home: the beamscore checkout, the working directory.
        output_dir: the night's output directory (`{run_date}` is filled with run_date).
        run_date: the night to evaluate, YYYY-MM-DD.
        labels_pattern: the labels' files (`{run_date}` filled likewise).
        label_column: the column of the labels that holds the true value.
        key_columns: the columns joining labels to predictions; default: the night's keys.
        mlflow_tracking_uri: the MLflow server of the night's run, if it was logged.
        python: the interpreter of the beamscore install; default: home's .venv.
        **kwargs: BaseOperator's arguments.
    """

    template_fields = (
        "home",
        "output_dir",
        "run_date",
        "labels_pattern",
        "label_column",
        "key_columns",
        "mlflow_tracking_uri",
        "python",
    )

    def __init__(
        self,
        *,
        home: str,
        output_dir: str,
        run_date: str,
        labels_pattern: str = "",
        label_column: str = "",
        key_columns: str = "",
        mlflow_tracking_uri: str = "",
        python: str = "",
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.home = home
        self.output_dir = output_dir
        self.run_date = run_date
        self.labels_pattern = labels_pattern
        self.label_column = label_column
        self.key_columns = key_columns
        self.mlflow_tracking_uri = mlflow_tracking_uri
        self.python = python
        self._hook = SubprocessHook()

    def execute(self, context) -> None:
        """Evaluates the night; raises unless pipeline.evaluate exits 0."""
        if not self.labels_pattern or not self.label_column:
            raise AirflowSkipException(
                "no labels configured (Variables beamscore_labels_pattern, beamscore_label_column)"
            )
        if not self.home or not self.output_dir:
            raise AirflowFailException("not set (Variables beamscore_*): home, output_dir")
        if "{run_date}" not in self.output_dir:
            raise AirflowSkipException(
                "the output directory has no {run_date}: each night replaces the last, so no "
                "past night is kept to evaluate"
            )
        python = self.python or os.path.join(self.home, ".venv", "bin", "python")
        argv = [python, "-m", "pipeline.evaluate", "--predictions", self.output_dir]
        argv += ["--run_date", self.run_date, "--labels", self.labels_pattern]
        argv += ["--skip_missing"]  # a night never scored (the schedule's first weeks): exit 0
        argv += ["--label_column", self.label_column]
        if self.key_columns:
            argv += ["--key_columns", self.key_columns]
        if self.mlflow_tracking_uri:
            argv += ["--mlflow_tracking_uri", self.mlflow_tracking_uri]
        run_beamscore(self._hook, argv, self.home)

    def on_kill(self) -> None:
        """Stops pipeline.evaluate when Airflow stops the task."""
        self._hook.send_sigterm()


with DAG(
    dag_id="beamscore_nightly",
    # Data intervals, so that {{ ds }}, the start of the night's interval, is yesterday's date.
    schedule=CronDataIntervalTimetable("0 3 * * *", timezone="UTC"),
    start_date=datetime.datetime(2026, 11, 1, tzinfo=datetime.UTC),
    catchup=False,
    default_args={"retries": 2, "retry_delay": datetime.timedelta(minutes=10)},
    tags=["beamscore"],
    doc_md=__doc__,
    params={"evaluate_days_back": Param(30, type="integer", minimum=0)},
) as dag:
    # .get(name, ''): a Variable not set fails the task at once, where a template error is retried.
    score = BeamscoreOperator(
        task_id="score",
        home="{{ var.value.get('beamscore_home', '') }}",
        input_pattern="{{ var.value.get('beamscore_input_pattern', '') }}",
        output_dir="{{ var.value.get('beamscore_output_dir', '') }}",
        model="{{ var.value.get('beamscore_model', '') }}",
        run_date="{{ ds }}",
        mlflow_tracking_uri="{{ var.value.get('beamscore_mlflow_tracking_uri', '') }}",
        python="{{ var.value.get('beamscore_python', '') }}",
        runner="{{ var.value.get('beamscore_runner', '') }}",
        project="{{ var.value.get('beamscore_project', '') }}",
        region="{{ var.value.get('beamscore_region', '') }}",
        bucket="{{ var.value.get('beamscore_bucket', '') }}",
        extra_flags="{{ var.value.get('beamscore_extra_flags', '') }}",
    )
    evaluate = BeamscoreEvaluateOperator(
        task_id="evaluate",
        home="{{ var.value.get('beamscore_home', '') }}",
        output_dir="{{ var.value.get('beamscore_output_dir', '') }}",
        run_date="{{ macros.ds_add(ds, -params.evaluate_days_back) }}",
        labels_pattern="{{ var.value.get('beamscore_labels_pattern', '') }}",
        label_column="{{ var.value.get('beamscore_label_column', '') }}",
        key_columns="{{ var.value.get('beamscore_label_key_columns', '') }}",
        mlflow_tracking_uri="{{ var.value.get('beamscore_mlflow_tracking_uri', '') }}",
        python="{{ var.value.get('beamscore_python', '') }}",
        trigger_rule=TriggerRule.ALL_DONE,  # a past night is evaluated whatever tonight's outcome
    )
    # The DAG run's state is its leaves': this one fails when the night failed, whatever the
    # evaluation of a past night did.
    night_scored = EmptyOperator(task_id="night_scored")
    score >> [evaluate, night_scored]
