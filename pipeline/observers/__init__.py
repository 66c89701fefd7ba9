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

from pipeline.observers.base import Finished, Observer, Started

__all__ = ["Finished", "Observer", "Started", "find", "for_launch", "kinds"]


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
