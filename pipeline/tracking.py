"""Logging a scoring run to MLflow: one MLflow run per pipeline run, found from either side
(the manifest's `mlflow_run_id`, the MLflow run's `beamscore.run_id` tag)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import tempfile
import time
import warnings
from typing import Any

from models.errors import is_unreachable, one_line
from pipeline.errors import ConfigError, RunFailed
from pipeline.lineage import job_name_for

_LOG = logging.getLogger(__name__)


def code_version() -> str:
    """The installed package version, and the git commit when run from a checkout."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        text = version("beamscore")
    except PackageNotFoundError:
        text = "unknown"
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=os.path.dirname(os.path.abspath(__file__)),
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"{text}+{commit}" if commit else text


class RunLog:
    """An MLflow run for one pipeline run. Making it fails fast: exit 3 when the server cannot
    be reached (a retry may find it), exit 2 when it refuses (a URI it does not know, a deleted
    experiment); everything after `start` only warns, so scoring results are never lost to
    MLflow."""

    def __init__(self, tracking_uri: str, experiment: str):
        from models.mlflow_models import client

        try:
            self._client = client(tracking_uri)
        except Exception as e:  # noqa: BLE001 - an unusable tracking URI is configuration
            raise ConfigError(f"--mlflow_tracking_uri {tracking_uri}: {one_line(e)}") from e
        self._experiment = experiment
        self.run_id: str | None = None

    def start(self, launch, runner: str, workers: str) -> str:
        spec = launch.spec
        try:
            exp = self._client.get_experiment_by_name(self._experiment)
            exp_id = exp.experiment_id if exp else self._client.create_experiment(self._experiment)
            run = self._client.create_run(
                exp_id,
                run_name=f"score-{launch.run_date}-{spec.run_id}",
                tags={
                    "beamscore.run_id": spec.run_id,
                    # The job, as OpenLineage names it: the nights of one job share it.
                    "beamscore.job": job_name_for(launch.output, launch.run_date),
                    "beamscore.code_version": code_version(),
                    "beamscore.model_uri": spec.model.uri,
                },
            )
        except Exception as e:  # noqa: BLE001 - any failure here means MLflow is not usable
            if is_unreachable(e):
                raise RunFailed(f"MLflow tracking server unreachable: {one_line(e)}") from e
            raise ConfigError(
                f"MLflow refused a run in experiment {self._experiment!r}: {one_line(e)}"
            ) from e
        self.run_id = run.info.run_id
        from mlflow.entities import Param

        params = {
            "input": launch.input_pattern,
            "output": launch.output,
            "model_uri": spec.model.uri,
            "model_version": spec.model.version,
            "runner": runner,
            "run_date": launch.run_date,
            "batch_size": spec.batch_size,
            "workers": workers,
            "max_error_rate": launch.max_error_rate,
            "input_format": spec.input_format,
        }
        if launch.bigquery is not None:
            params["bigquery_table"] = launch.bigquery.table.id
        if launch.bigquery_errors is not None:
            params["bigquery_errors_table"] = launch.bigquery_errors.table.id
        self._safely(
            "log params",
            self._client.log_batch,
            self.run_id,
            params=[Param(k, str(v)) for k, v in params.items()],
        )
        self._safely("log the input dataset", self._log_dataset, launch)
        return self.run_id

    def _log_dataset(self, launch) -> None:
        from mlflow.data.dataset_source_registry import resolve_dataset_source
        from mlflow.data.meta_dataset import MetaDataset
        from mlflow.entities import DatasetInput, InputTag, LoggedModelInput

        # A local path is a "local" source, gs:// a "gs" one (MLflow's own resolution; it warns,
        # UserWarning on stderr, that a local path could be two kinds of the same class); a
        # BigQuery table, which MLflow does not resolve, a "bigquery" one at its snapshot.
        table = launch.spec.table
        if table is not None:
            source = _bigquery_source(table.table_id, table.row_filter, table.snapshot_time)
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                source = resolve_dataset_source(launch.input_pattern)
        dataset = MetaDataset(source=source, name=f"input-{launch.run_date}")
        self._client.log_inputs(
            self.run_id,
            [
                DatasetInput(
                    dataset._to_mlflow_entity(), tags=[InputTag("mlflow.data.context", "scoring")]
                )
            ],
        )
        if launch.spec.model.model_id:  # the run's input linked to the version's logged model
            self._client.log_inputs(
                self.run_id, models=[LoggedModelInput(launch.spec.model.model_id)]
            )

    def finish(
        self,
        manifest: dict[str, Any],
        profile: dict[str, Any] | None,
        errors_summary: dict[str, Any] | None,
        seconds: float,
        report: str | None,
    ) -> bool:
        """Logs metrics and artifacts and ends the run (FAILED when the pipeline run failed).

        Args:
            manifest: the committed manifest.
            profile: the run's profile (the prediction distribution), if any.
            errors_summary: the errors in brief, with a sample of the records, if any.
            seconds: the run's wall time.
            report: the committed report.html's path, if written.

        Returns:
            Whether everything was logged.
        """
        from mlflow.entities import Metric

        c = manifest["counts"]
        now = int(time.time() * 1000)
        metrics = {
            "rows_read": c["rows_read"],
            "rows_predicted": c["rows_predicted"],
            "rows_failed": c["rows_failed"],
            **{f"rows_failed_{stage}": n for stage, n in c["rows_failed_by_stage"].items()},
            "files_failed": len(manifest["files_failed"]),
            "error_rate": manifest["error_rate"],
            "duration_s": seconds,
            "rows_per_s": c["rows_read"] / seconds if seconds else 0.0,
            "model_loads": manifest["model_loads"],
            "model_load_s": manifest.get("model_load_s_launcher", 0.0),
        }
        for feature, value in (manifest.get("drift") or {}).items():
            metrics[f"psi_{feature}"] = value
        unknown = manifest.get("unknown_categories") or {}
        for treatment in ("rejected", "scored"):
            for feature, rows in (unknown.get(treatment) or {}).items():
                metrics[f"unknown_category_{treatment}_{feature}"] = rows
        from mlflow.entities import RunTag

        failed_checks = manifest.get("failed_checks") or []
        metrics["failed_checks"] = len(failed_checks)
        tags = []
        if failed_checks:  # the reasons, as a person reads them on the run's page
            text = "; ".join(c["message"] for c in failed_checks)
            tags.append(RunTag("beamscore.failed_checks", text[:4900]))
        summary = manifest.get("prediction_summary") or {}
        if summary.get("value") is not None:  # the night's brief, read back as history
            metrics[f"prediction_{summary['kind']}"] = summary["value"]
            if summary.get("class") is not None:
                tags.append(RunTag("beamscore.positive_class", str(summary["class"])))
        ok = self._safely(
            "log metrics",
            self._client.log_batch,
            self.run_id,
            metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()]
            + night_metrics(manifest, now),
            tags=tags,
        )
        with tempfile.TemporaryDirectory() as tmp:
            files = {"manifest.json": manifest}
            if manifest.get("drift"):
                files["drift.json"] = manifest["drift"]
            if profile:
                files["profile.json"] = profile
            explain = manifest.get("explain")
            if explain:  # --explain: the top reasons as a table (MLflow's log_table layout)
                files["top_reasons.json"] = {
                    "columns": ["feature", "rows", "share"],
                    "data": [[t["feature"], t["rows"], t["share"]] for t in explain["top_reasons"]],
                }
            for name, data in files.items():
                with open(os.path.join(tmp, name), "w") as f:
                    json.dump(data, f, indent=2)
            sample = (errors_summary or {}).get("sample") or []
            if sample:
                with open(os.path.join(tmp, "errors_sample.jsonl"), "w") as f:
                    f.writelines(json.dumps(record) + "\n" for record in sample)
            if report:
                ok &= self._safely(
                    "copy the report", _copy, report, os.path.join(tmp, "report.html")
                )
            if profile:
                ok &= self._safely(
                    "draw the prediction distribution",
                    _plot,
                    profile,
                    os.path.join(tmp, "prediction_distribution.png"),
                )
            ok &= self._safely("log artifacts", self._client.log_artifacts, self.run_id, tmp)
        status = "FINISHED" if manifest["status"] == "succeeded" else "FAILED"
        ok &= self._safely("end the run", self._client.set_terminated, self.run_id, status)
        return ok

    def abort(self, status: str = "FAILED") -> None:
        """Ends the run when the pipeline could not complete (FAILED) or was stopped (KILLED)."""
        if self.run_id is None:  # it never started
            return
        self._safely("end the run", self._client.set_terminated, self.run_id, status)

    def _safely(self, what: str, fn, *args, **kwargs) -> bool:
        try:
            fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - MLflow trouble is reported, never fatal
            _LOG.warning("could not %s in MLflow run %s: %s", what, self.run_id, one_line(e))
            return False
        return True


def night_metrics(manifest: dict[str, Any], now: int) -> list:
    """The previous nights and tonight as MLflow metrics stepped by night (`night_rows_read`,
    `night_error_rate`, `night_top_psi`, `night_prediction`, `night_duration_s`, and each
    quality metric as `night_quality_<name>`): step = days since 1970-01-01 of the run date, so
    MLflow's chart of one run shows the trend."""
    from mlflow.entities import Metric

    from pipeline.history import TRENDS, night_brief, step_of, trend_value

    nights = list((manifest.get("history") or {}).get("nights") or [])
    out = []
    for brief in [*nights, night_brief(manifest)]:
        step = step_of(brief.get("run_date"))
        if step is None:
            continue
        values = {f"night_{name}": trend_value(brief, name) for name in TRENDS}
        for name, value in ((brief.get("quality") or {}).get("metrics") or {}).items():
            values[f"night_quality_{name}"] = value
        out.extend(Metric(k, float(v), now, step) for k, v in values.items() if v is not None)
    return out


def read_history(tracking_uri: str, experiment: str, job: str, run_date: str, most: int) -> list:
    """The previous nights of a job from MLflow: its runs tagged `beamscore.job` in the
    experiment that ended (FINISHED or FAILED) for a run date before `run_date`, the latest run
    of each date, the latest `most` dates; as briefs (pipeline.history.night_brief), oldest first.
    """
    from models.mlflow_models import client

    mlflow = client(tracking_uri)
    exp = mlflow.get_experiment_by_name(experiment)
    if exp is None or "'" in job:
        return []
    runs = mlflow.search_runs(
        [exp.experiment_id],
        filter_string=f"tags.`beamscore.job` = '{job}'",
        max_results=max(10 * most, 100),
        order_by=["attributes.start_time DESC"],
    )
    nights: dict[str, dict] = {}
    for run in runs:
        date = run.data.params.get("run_date", "")
        if run.info.status not in ("FINISHED", "FAILED") or not date < run_date:
            continue
        if "rows_read" not in run.data.metrics:  # it ended before committing: not a night
            continue
        if date in nights:
            continue  # a rerun's earlier run
        nights[date] = _brief_of(run)
        if len(nights) == most:
            break
    return [nights[d] for d in sorted(nights)]


def _brief_of(run) -> dict:
    """A night's brief from its MLflow run (what RunLog logged), as from its manifest."""
    from pipeline.history import night_brief

    m, p = run.data.metrics, run.data.params
    manifest = {
        "run_date": p.get("run_date"),
        "run_id": run.data.tags.get("beamscore.run_id"),
        "status": "succeeded" if run.info.status == "FINISHED" else "failed",
        "counts": {"rows_read": int(m["rows_read"])} if "rows_read" in m else {},
        "error_rate": m.get("error_rate"),
        "drift": {k.removeprefix("psi_"): v for k, v in m.items() if k.startswith("psi_")},
        "prediction_summary": next(
            (
                {"kind": kind, "class": run.data.tags.get("beamscore.positive_class"), "value": v}
                for kind in ("positive_share", "mean")
                if (v := m.get(f"prediction_{kind}")) is not None
            ),
            None,
        ),
        "duration_s": m.get("duration_s"),
        "model": {"version": p.get("model_version")},
        "mlflow_run_id": run.info.run_id,
    }
    # What pipeline.evaluate logged once the labels arrived: quality_<metric>, and row counts.
    counts = {"rows_labelled", "rows_unmatched_predictions", "rows_unmatched_labels"}
    counts.add("labels_rejected")
    scores = {
        name: value
        for key, value in m.items()
        if key.startswith("quality_") and (name := key.removeprefix("quality_")) not in counts
    }
    quality = None
    if scores:
        labelled = m.get("quality_rows_labelled")
        quality = {"metrics": scores, "rows_labelled": None if labelled is None else int(labelled)}
    return night_brief(manifest, quality)


def close_abandoned(lock: dict, tracking_uri: str | None) -> None:
    """Ends, as KILLED, the MLflow run of a run that died holding the output directory's lock
    (its lock record names the run); best effort, a warning when MLflow cannot be reached."""
    run_id = lock.get("mlflow_run_id")
    uri = lock.get("mlflow_tracking_uri") or tracking_uri
    if not run_id or not uri:
        return
    from models.mlflow_models import client

    try:
        mlflow = client(uri)
        if mlflow.get_run(run_id).info.status == "RUNNING":
            mlflow.set_tag(run_id, "beamscore.ended_by", "the next run, which took over its lock")
            mlflow.set_terminated(run_id, "KILLED")
            _LOG.warning(
                "MLflow run %s of dead run %s ended as KILLED", run_id, lock.get("run_id", "?")
            )
    except Exception as e:  # noqa: BLE001 - the new run goes on either way
        _LOG.warning("could not end the MLflow run %s of a dead run: %s", run_id, one_line(e))


def _copy(source: str, target: str) -> None:
    from apache_beam.io.filesystems import FileSystems

    with FileSystems.open(source) as fin, open(target, "wb") as fout:
        fout.write(fin.read())


def _plot(profile: dict[str, Any], path: str) -> None:
    """Class counts and the positive-class probability histogram (or what of them exists)."""
    import matplotlib
    import numpy as np

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hist = profile.get("proba_histogram")
    classes = profile.get("class_counts") or {}
    values = profile.get("prediction_histogram")
    panels = [p for p in (classes and "classes", hist and "proba", values and "values") if p]
    fig, axes = plt.subplots(1, max(len(panels), 1), figsize=(5 * max(len(panels), 1), 3.5))
    axes = list(axes) if len(panels) > 1 else [axes]
    for ax, panel in zip(axes, panels):
        if panel == "classes":
            # By position, labelled: class names that read as numbers are not an axis of numbers.
            ax.bar(range(len(classes)), list(classes.values()), tick_label=list(classes))
            ax.set_title("predicted class counts")
        elif panel == "values":
            edges = values["edges"]
            ax.bar(edges[:-1], values["counts"], width=np.diff(edges), align="edge")
            ax.set_title("histogram of the predictions")
        else:
            width = 1.0 / hist["bins"]
            ax.bar(
                [i * width for i in range(hist["bins"])], hist["counts"], width=width, align="edge"
            )
            ax.set_title(f"histogram of {hist['column']}")
            ax.set_xlim(0, 1)
    if not panels:
        axes[0].text(0.5, 0.5, f"{profile.get('rows', 0)} rows", ha="center")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _bigquery_source(table: str, row_filter: str, snapshot_time: str):
    """An MLflow dataset source for a BigQuery table input (source type "bigquery")."""
    from mlflow.data.dataset_source import DatasetSource

    class BigQueryDatasetSource(DatasetSource):
        def __init__(self, spec: dict):
            self._spec = spec

        @staticmethod
        def _get_source_type() -> str:
            return "bigquery"

        def load(self, **kwargs):
            raise NotImplementedError("read the table with the BigQuery client")

        @staticmethod
        def _can_resolve(raw_source) -> bool:
            return False

        @classmethod
        def _resolve(cls, raw_source):
            raise NotImplementedError

        def to_dict(self) -> dict:
            return dict(self._spec)

        @classmethod
        def from_dict(cls, source_dict: dict):
            return cls(source_dict)

    spec = {"table": table, "filter": row_filter or None, "snapshot_time": snapshot_time}
    return BigQueryDatasetSource(spec)
