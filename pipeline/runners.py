"""The runner seam: everything that differs between Beam's DirectRunner (workers on this machine)
and a remote runner (Dataflow), behind one small interface with two implementations.

`runner_for(options)` checks the runner Beam is asked for (and, for Dataflow, the options it
cannot run without: exit 2 before any work) and returns its `Runner`. No other module tests a
runner's name.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import (
    GoogleCloudOptions,
    PipelineOptions,
    SetupOptions,
    StandardOptions,
    WorkerOptions,
)

from models.errors import one_line
from pipeline.errors import ConfigError
from pipeline.options import ScoringOptions

_LOG = logging.getLogger("pipeline")


class Runner:
    """What the launcher does differently by runner.

    Attributes:
        name: the runner's name, as Beam knows it (DirectRunner, DataflowRunner, ...).
        in_process: the workers run on this machine, beside the launcher: they may take the
            launcher's loaded model, and the commit stage runs where a stop signal reaches it.
        done_on_return: the job has ended (its commit stage included) when the pipeline's run()
            returns, so even with --wait false the launcher knows the night's outcome.
    """

    in_process = False
    done_on_return = False

    def __init__(self, name: str):
        self.name = name

    def check(self, options: PipelineOptions) -> None:
        """The options this runner cannot run without (ConfigError, exit 2)."""

    def beam_runner(self, options: PipelineOptions) -> Any:
        """The Beam runner object to run the pipeline with (None: the one Beam makes of the
        runner's name)."""
        return None

    def check_dry_run(self) -> None:
        """--dry_run=True translates a Dataflow job only."""
        raise ConfigError(
            "--dry_run=True translates a Dataflow job; it needs --runner DataflowRunner"
        )

    def staging_root(self, options: PipelineOptions) -> str | None:
        """Where remote workers find a staged MLflow model (None: the launcher's disk)."""
        return options.view_as(GoogleCloudOptions).temp_location

    def outcome_path(self, options: PipelineOptions, run_id: str, wait: bool) -> str | None:
        """Where the commit stage leaves what a waiting launcher prints (None: nobody waits)."""
        if not wait:
            return None
        temp = options.view_as(GoogleCloudOptions).temp_location
        return FileSystems.join(temp, "beamscore", run_id, "outcome.json")

    @contextlib.contextmanager
    def staging_turn(self, options: PipelineOptions) -> Iterator[None]:
        """Beam builds --setup_file's sdist inside the project directory (setuptools makes and
        removes its release tree, beamscore-X.Y.Z/, there): two launches from one checkout at
        once would destroy each other's tree. They take turns, on a lock outside the checkout."""
        setup_file = options.view_as(SetupOptions).setup_file
        if not setup_file:
            yield
            return
        import fcntl
        import hashlib

        project = os.path.dirname(os.path.abspath(setup_file))
        name = hashlib.sha256(project.encode()).hexdigest()[:16]
        path = os.path.join(tempfile.gettempdir(), f"beamscore-sdist-{name}.lock")
        with open(path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def worker_installs(self, options: PipelineOptions, decided: Any) -> None:
        """Remote workers install beamscore from its sdist (--setup_file), without extras: what
        the model needs more (pipeline.launch.installs, for the launch's Launch `decided`) is
        installed through a requirements file of the exact running versions, unless the user
        gave one, or a worker image of their own."""
        from pipeline.launch.installs import worker_packages

        needed = worker_packages(decided)
        setup = options.view_as(SetupOptions)
        image = options.view_as(WorkerOptions).sdk_container_image
        if not needed or setup.requirements_file or image:
            return
        scratch = tempfile.mkdtemp(prefix="beamscore-")
        atexit.register(shutil.rmtree, scratch, ignore_errors=True)  # staged by then
        path = os.path.join(scratch, "requirements.txt")
        with open(path, "w") as f:
            f.write("\n".join(needed) + "\n")
        setup.requirements_file = path
        _LOG.info("the workers will also install %s (the model's library)", ", ".join(needed))

    def stop(self, result) -> None:
        """The launcher stops waiting (a signal): a remote job is cancelled, or it would go on."""
        if result is None:
            return
        try:
            result.cancel()
            _LOG.warning("cancelled the job")
        except Exception as e:  # noqa: BLE001 - say so: the user must cancel it by hand
            _LOG.error("could not cancel the job, cancel it by hand: %s", one_line(e))

    def default_streams(self, flags: dict) -> int:
        """A BigQuery read session's streams when no worker count is given: two per local
        worker (Dataflow: 0, BigQuery decides from the table's size)."""
        return 2 * max(int(flags.get("direct_num_workers") or 1), 1)


class DirectRunner(Runner):
    """Beam's DirectRunner (and its variants): workers are threads or processes here."""

    in_process = True
    done_on_return = True

    def staging_root(self, options: PipelineOptions) -> str | None:
        return None

    def beam_runner(self, options: PipelineOptions) -> Any:
        """Beam's DirectRunner (2.77) first tries the Prism runner, a Go binary it downloads from
        GitHub at run time into ~/.apache_beam, and only then falls back to the FnApiRunner it
        runs a batch pipeline on. A night must not depend on a download (nor, offline, wait for
        one and pay a second translation of the pipeline): the DirectRunner gets the FnApiRunner,
        set up as Beam's DirectRunner sets it up. Its variants by name (BundleBasedDirectRunner)
        are left to Beam."""
        if self.name not in ("DirectRunner", "SwitchingDirectRunner"):
            return None
        from apache_beam.portability.api import beam_provision_api_pb2
        from apache_beam.runners.portability.fn_api_runner import fn_runner
        from apache_beam.runners.portability.portable_runner import JobServiceHandle

        encoded = JobServiceHandle.encode_pipeline_options(options.get_all_options())
        info = beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded)
        return fn_runner.FnApiRunner(provision_info=fn_runner.ExtendedProvisionInfo(info))

    def outcome_path(self, options: PipelineOptions, run_id: str, wait: bool) -> str | None:
        scratch = tempfile.mkdtemp(prefix="beamscore-outcome-")
        atexit.register(shutil.rmtree, scratch, ignore_errors=True)
        return os.path.join(scratch, "outcome.json")

    @contextlib.contextmanager
    def staging_turn(self, options: PipelineOptions) -> Iterator[None]:
        yield  # nothing is staged

    def worker_installs(self, options: PipelineOptions, decided: Any) -> None:
        return  # the workers are this process's own environment

    def stop(self, result) -> None:
        return  # the job ends with the launcher


class RemoteRunner(Runner):
    """Dataflow (or another remote runner): workers on other machines."""

    @property
    def dataflow(self) -> bool:
        return "Dataflow" in self.name

    def check(self, options: PipelineOptions) -> None:
        if not self.dataflow:
            return
        cloud = options.view_as(GoogleCloudOptions)
        missing = [
            flag
            for flag, value in (
                ("--project", cloud.project),
                ("--region", cloud.region),
                ("--temp_location", cloud.temp_location),
            )
            if not value
        ]
        if missing:
            raise ConfigError(
                f"{self.name} needs {', '.join(missing)} (run_dataflow.sh passes them)"
            )
        if not cloud.temp_location.startswith("gs://"):
            raise ConfigError(f"--temp_location must be a gs:// path, not {cloud.temp_location}")
        self._remote_paths(options.view_as(ScoringOptions))

    def check_dry_run(self) -> None:
        if not self.dataflow:
            super().check_dry_run()

    def default_streams(self, flags: dict) -> int:
        return 0 if self.dataflow else super().default_streams(flags)

    def _remote_paths(self, opts: ScoringOptions) -> None:
        """Dataflow workers run on other machines: a local --input, --output or model file is
        exit 2 at once, not a job that fails on its workers (or a dry run that looks fine)."""
        local = [
            f"{flag} {value}"
            for flag, value in (
                ("--input", opts.input),
                ("--output", opts.output),
                ("--model", opts.model),
            )
            if value and (value.startswith("file:") or not re.match(r"[a-z][a-z0-9+.-]*:/", value))
        ]
        if local:
            raise ConfigError(
                f"{self.name}: {', '.join(local)}: Dataflow workers cannot read local paths; put "
                f"{'it' if len(local) == 1 else 'them'} in Cloud Storage (gs://...)"
            )


def named(name: str) -> Runner:
    """The Runner of a runner's name (DirectRunner and its variants run in this process)."""
    return DirectRunner(name) if "Direct" in name else RemoteRunner(name)


def runner_for(options: PipelineOptions) -> Runner:
    """The runner Beam is asked for (DirectRunner by default), once Beam knows it and the
    options it cannot run without are there (exit 2 before any work, not a failure once DIR is
    locked)."""
    from apache_beam.runners.runner import create_runner

    standard = options.view_as(StandardOptions)
    standard.runner = standard.runner or "DirectRunner"
    try:
        create_runner(standard.runner)
    except (ValueError, ImportError) as e:
        raise ConfigError(f"--runner {standard.runner}: {one_line(e)}") from e
    runner = named(standard.runner)
    runner.check(options)
    return runner
