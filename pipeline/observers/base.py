"""The observers' interface: what an observer is told (Started, Finished) and the Observer
base class; pipeline.observers re-exports them and knows the kinds."""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass
class Started:
    """What an observer is told when the run starts (in the launcher).

    Attributes:
        launch: the launch decisions (pipeline.launch.Launch).
        runner: the Beam runner's name.
        workers: how many workers were asked for, as the runner's own flag says it.
        lock: the output directory's lock, held (pipeline.lock.RunLock): an observer may add
            fields to its record.
    """

    launch: Any
    runner: str
    workers: str
    lock: Any


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
