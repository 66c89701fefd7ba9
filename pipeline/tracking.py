"""Logging a scoring run to MLflow: one MLflow run per pipeline run, found from either side
(the manifest's `mlflow_run_id`, the MLflow run's `beamscore.run_id` tag)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import tempfile
import time
from typing import Any

from pipeline.errors import RunFailed, one_line

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
    """An MLflow run for one pipeline run. `start` fails fast (exit 3) when the server cannot be
    reached; everything after it only warns, so scoring results are never lost to MLflow."""

    def __init__(self, tracking_uri: str, experiment: str):
        from models.mlflow_models import _client

        self._client = _client(tracking_uri)
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
                    "beamscore.code_version": code_version(),
                    "beamscore.model_uri": spec.model.uri,
                },
            )
        except Exception as e:  # noqa: BLE001 - any failure here means MLflow is not usable
            raise RunFailed(f"MLflow tracking server unusable: {one_line(e)}") from e
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
        from mlflow.data.http_dataset_source import HTTPDatasetSource
        from mlflow.data.meta_dataset import MetaDataset
        from mlflow.entities import DatasetInput, InputTag, LoggedModelInput

        source = HTTPDatasetSource(url=launch.input_pattern)
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
        seconds: float,
        model_load_s: float,
    ) -> bool:
        """Logs metrics and artifacts and ends the run (FAILED when the pipeline run failed).

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
            "error_rate": manifest["error_rate"],
            "duration_s": seconds,
            "rows_per_s": c["rows_read"] / seconds if seconds else 0.0,
            "model_load_s": model_load_s,
            "model_loads": manifest["model_loads"],
        }
        for feature, value in (manifest.get("drift") or {}).items():
            metrics[f"psi_{feature}"] = value
        ok = self._safely(
            "log metrics",
            self._client.log_batch,
            self.run_id,
            metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()],
        )
        with tempfile.TemporaryDirectory() as tmp:
            files = {"manifest.json": manifest}
            if manifest.get("drift"):
                files["drift.json"] = manifest["drift"]
            for name, data in files.items():
                with open(os.path.join(tmp, name), "w") as f:
                    json.dump(data, f, indent=2)
            if profile is not None:
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

    def abort(self) -> None:
        """Ends the run as FAILED when the pipeline could not complete."""
        self._safely("end the run", self._client.set_terminated, self.run_id, "FAILED")

    def _safely(self, what: str, fn, *args, **kwargs) -> bool:
        try:
            fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - MLflow trouble is reported, never fatal
            _LOG.warning("could not %s in MLflow run %s: %s", what, self.run_id, one_line(e))
            return False
        return True


def _plot(profile: dict[str, Any], path: str) -> None:
    """Class counts and the positive-class probability histogram (or what of them exists)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hist = profile.get("proba_histogram")
    classes = profile.get("class_counts") or {}
    panels = [p for p in (classes and "classes", hist and "proba") if p]
    fig, axes = plt.subplots(1, max(len(panels), 1), figsize=(5 * max(len(panels), 1), 3.5))
    axes = list(axes) if len(panels) > 1 else [axes]
    for ax, panel in zip(axes, panels):
        if panel == "classes":
            ax.bar(list(classes), list(classes.values()))
            ax.set_title("predicted class counts")
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
