"""MLflow: one MLflow run per pipeline run (pipeline.tracking.RunLog), as an observer."""

from __future__ import annotations

import logging

from models.errors import one_line
from pipeline.observers.base import Finished, Observer, Started

_LOG = logging.getLogger(__name__)


class MlflowRun(Observer):
    """Logs the run to `--mlflow_experiment` (or MLFLOW_EXPERIMENT_NAME) on its tracking server."""

    def __init__(self, tracking_uri: str, experiment: str):
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.run_id: str | None = None
        self._log = None  # the live RunLog, never pickled into the commit stage's plan

    @classmethod
    def for_launch(cls, launch) -> MlflowRun | None:
        if not launch.mlflow_experiment:
            return None
        return cls(launch.tracking_uri, launch.mlflow_experiment)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_log": None}

    def _run_log(self):
        from pipeline.tracking import RunLog

        if self._log is None:
            self._log = RunLog(self.tracking_uri, self.experiment)
            self._log.run_id = self.run_id
        return self._log

    def started(self, run: Started) -> None:
        from pipeline.tracking import RunLog

        self._log = RunLog(self.tracking_uri, self.experiment)  # exit 3 / 2 before any work
        self.run_id = self._log.start(run.launch, run.runner, run.workers)
        # A run that dies holding DIR's lock has its MLflow run closed by the next run.
        run.lock.update(mlflow_run_id=self.run_id, mlflow_tracking_uri=self.tracking_uri)

    def manifest(self) -> dict:
        return {"mlflow_run_id": self.run_id} if self.run_id else {}

    def finished(self, night: Finished) -> dict:
        try:
            log = self._run_log()
        except Exception as e:  # noqa: BLE001 - the night is committed: MLflow only warns
            _LOG.warning("could not reopen MLflow run %s: %s", self.run_id, one_line(e))
            return {"mlflow_logged": False}
        logged = log.finish(
            night.manifest,
            night.profile,
            night.errors_summary,
            night.manifest["duration_s"],
            night.report,
        )
        return {"mlflow_logged": logged}

    def failed(self, message: str, stopped: bool) -> None:
        if self.run_id is None:  # it never started
            return
        try:
            self._run_log().abort("KILLED" if stopped else "FAILED")
        except Exception as e:  # noqa: BLE001 - the run's own failure is what is reported
            _LOG.warning("could not end MLflow run %s: %s", self.run_id, one_line(e))
