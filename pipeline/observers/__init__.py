"""The run's observers: what is told about a run beside its output directory (MLflow, OpenLineage).

Each observer is told three things, by whoever sees them:

- `started`: by the launcher, once DIR is locked and before any row is scored. It may refuse the
  run (ConfigError, exit 2) or find its service unreachable (RunFailed, exit 3); nothing is
  scored then, and the observers already started are told `failed`.
- `finished`: by the commit stage (pipeline.commit), on whatever machine it runs, once DIR holds
  the run's manifest; the observer is pickled into the commit stage's plan after `started`, so
  it carries what it needs (an MLflow run id), never a live client. It returns what a waiting
  launcher prints (pipeline.run's summary). Failures here only warn: a night's output is never
  lost to an observer.
- `failed`: the run ended without a commit (`stopped`: by a signal, or killed), by the launcher,
  or by the commit stage when no launcher waits.

Adding the next observer: one file here with an `Observer` subclass, and one line in `KINDS`.
The night checks and the history (pipeline.nights) are not observers: they decide the night's
status, which an observer is only told.
"""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass
class Started:
    """What an observer is told when the run starts (in the launcher).

    Attributes:
        launch: the launch decisions (pipeline.prepare.Launch).
        runner: the Beam runner's name.
        workers: how many workers were asked for, as the runner's own flag says it.
        out: the output directory, locked (pipeline.output.OutputDir).
    """

    launch: Any
    runner: str
    workers: str
    out: Any


@dataclasses.dataclass
class Finished:
    """What an observer is told when the night is committed (in the commit stage).

    Attributes:
        launch: the launch decisions.
        manifest: the committed manifest.
        profile: the run's profile (None when the commit was finished from its journal).
        errors_summary: the errors in brief, if any.
        report: the committed report.html's path, if written.
    """

    launch: Any
    manifest: dict
    profile: dict | None
    errors_summary: dict | None
    report: str | None


class Observer:
    """One thing told about a run; see the module's docstring."""

    @classmethod
    def for_launch(cls, launch) -> Observer | None:
        """This kind's observer for a launch, or None when it is off for this run."""
        raise NotImplementedError

    def started(self, run: Started) -> None:
        """The run starts: may refuse it (ConfigError) or find its service gone (RunFailed)."""

    def manifest(self) -> dict:
        """Entries this observer adds to the manifest (e.g. the MLflow run's id)."""
        return {}

    def finished(self, night: Finished) -> dict:
        """The night is committed; returns entries of the outcome a waiting launcher prints."""
        return {}

    def failed(self, message: str, stopped: bool) -> None:
        """The run ended without a commit: it failed (`message`), or was stopped."""


def kinds() -> tuple[type[Observer], ...]:
    """Every kind of observer, in the order they are told (MLflow first: a server that refuses
    the run stops it before any other is told it started)."""
    from pipeline.observers.mlflow_run import MlflowRun
    from pipeline.observers.openlineage import LineageEvents

    return (MlflowRun, LineageEvents)


def for_launch(launch) -> list[Observer]:
    """The observers that are on for a launch."""
    return [o for kind in kinds() if (o := kind.for_launch(launch)) is not None]


def find(observers, kind: type[Observer]) -> Observer | None:
    """The observer of one kind among them, if it is on."""
    return next((o for o in observers if isinstance(o, kind)), None)
