"""OpenLineage run events for one scoring run: START, then COMPLETE, FAIL or ABORT.

Events go over HTTP with the `openlineage-python` client's event model and HTTP transport. Lineage
is a side channel: a lineage endpoint that is down, refuses the event or never answers costs at
most `timeout` seconds per event and a warning, never the run; every method says whether its
event was sent, so the run's summary can say so.

The module takes plain values (URIs, counts, a model dict) and imports the client only when an
event is built, so importing it costs nothing when lineage is off.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import threading
import uuid
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urljoin, urlsplit, urlunsplit

from models.errors import one_line

_LOG = logging.getLogger(__name__)

DEFAULT_JOB_NAMESPACE = "beamscore"
# One attempt per event, bounded as a whole (DNS, connect, a server that trickles bytes).
DEFAULT_TIMEOUT_S = 5.0
# The project's public repository (set it to the real one before a release): the events'
# `producer`, and where the custom facets' schemas are published from pipeline/lineage_facets/,
# one directory per schema version, whose files never change once published.
PROJECT_URL = "https://github.com/beamscore/beamscore"
FACET_SCHEMA_BASE = (
    "https://raw.githubusercontent.com/beamscore/beamscore/main/pipeline/lineage_facets"
)
MODEL_FACET = "beamscore_model"
SCORING_FACET = "beamscore_scoring"


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A dataset the run reads or writes.

    Attributes:
        uri: `gs://bucket/path` (a file, a directory or a glob pattern), a local path or
            `file:///path`, or `bigquery:project.dataset.table` (`project:dataset.table` also;
            `bq://project.dataset.table`, the --input spelling, too).
        rows: rows read (an input) or written (an output), where known.
        files: files read or written, where known.
        fields: the schema as (column name, type) pairs, where known.
        version: the version of the dataset read (a BigQuery table input's snapshot time),
            sent as the `version` dataset facet.
    """

    uri: str
    rows: int | None = None
    files: int | None = None
    fields: Sequence[tuple[str, str]] = ()
    version: str | None = None

    def naming(self) -> tuple[str, str]:
        """The OpenLineage (namespace, name) of the dataset, by the naming spec.

        Returns:
            `("gs://bucket", "object/path")` for GCS (`"/"` for a bucket's root),
            `("file", "/absolute/path")` for a local path,
            `("bigquery", "project.dataset.table")` for a BigQuery table.

        Raises:
            ValueError: a URI scheme other than those.
        """
        from openlineage.client.naming.dataset import GCS, BigQuery, LocalFileSystem

        parts = urlsplit(self.uri)
        if parts.scheme == "gs":
            naming = GCS(bucket_name=parts.netloc, object_key=parts.path.lstrip("/") or "/")
        elif parts.scheme in ("bigquery", "bq"):
            names = (parts.netloc + parts.path).replace(":", ".", 1).split(".")
            if len(names) != 3:
                raise ValueError(f"{self.uri!r} is not bigquery:project.dataset.table")
            naming = BigQuery(project_id=names[0], dataset_name=names[1], table_name=names[2])
        elif parts.scheme == "file":
            naming = LocalFileSystem(path=parts.path)
        elif not parts.scheme:
            naming = LocalFileSystem(path=os.path.abspath(self.uri))
        else:
            raise ValueError(f"no OpenLineage naming for {self.uri!r}")
        return naming.get_namespace(), naming.get_name()


def job_name_for(output: str, run_date: str | None = None) -> str:
    """The job name of a scoring job: its output directory, the same for every nightly run.

    The name is the `--output` value with a trailing `/` dropped and the run date written as
    `{run_date}`, so `gs://b/scores/2026-11-24` (run date 2026-11-24) and `gs://b/scores/{run_date}`
    both name the job `gs://b/scores/{run_date}`; each night is a run of that one job.

    Args:
        output: the output directory, as given or with `{run_date}` filled in.
        run_date: the run date (`YYYY-MM-DD`) that may have been filled in.

    Returns:
        The job name.
    """
    name = output.rstrip("/") or output
    return name.replace(run_date, "{run_date}") if run_date else name


def run_uuid(run_id: str) -> str:
    """The OpenLineage runId of a beamscore run: `uuid5(NAMESPACE_URL, "beamscore:run:" + run_id)`.

    Anyone holding a manifest's `run_id` can compute it; the same run id always gives it.
    """
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"beamscore:run:{run_id}"))


class Lineage:
    """OpenLineage events for one scoring run; every event method returns whether it was sent.

    Configuration, beside the arguments: `OPENLINEAGE_URL` (when `url` is None),
    `OPENLINEAGE_NAMESPACE` (when `job_namespace` is None), `OPENLINEAGE_ENDPOINT` (the path
    under the URL, default `api/v1/lineage`), `OPENLINEAGE_API_KEY` (sent as a bearer token) and
    `OPENLINEAGE_DISABLED=true` (no events at all), as the OpenLineage clients read them.
    """

    def __init__(
        self,
        url: str | None,
        job_name: str,
        run_id: str,
        model: Mapping[str, str | None],
        *,
        job_namespace: str | None = None,
        run_date: str | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
    ):
        """
        Args:
            url: the OpenLineage server's base URL (`--openlineage_url`); None reads
                `OPENLINEAGE_URL`, and with neither no event is sent.
            job_name: the job's name (see `job_name_for`).
            run_id: the beamscore run id; the OpenLineage runId is `run_uuid(run_id)`.
            model: the model's `uri`, `version`, `sha256` and, for an MLflow model, the `run_id`
                that produced it (the manifest's `model`).
            job_namespace: None reads `OPENLINEAGE_NAMESPACE`, else `beamscore`.
            run_date: the run date (`YYYY-MM-DD`), sent as the run's nominal time.
            timeout: the most one event may take, in seconds.
        """
        self.url = url or os.environ.get("OPENLINEAGE_URL") or None
        disabled = os.environ.get("OPENLINEAGE_DISABLED", "").strip().lower() == "true"
        if self.url and disabled:
            _LOG.info("OpenLineage events are off: OPENLINEAGE_DISABLED=true")
        self.enabled = bool(self.url) and not disabled
        self.endpoint = os.environ.get("OPENLINEAGE_ENDPOINT") or "api/v1/lineage"
        self.job_namespace = (
            job_namespace or os.environ.get("OPENLINEAGE_NAMESPACE") or DEFAULT_JOB_NAMESPACE
        )
        self.job_name = job_name
        self.run_id = run_id
        self.run_uuid = run_uuid(run_id)
        self.model = dict(model)
        self.run_date = run_date
        self.timeout = timeout
        # The event types that did not reach the server, in order, for the run's summary.
        self.not_sent: list[str] = []

    def start(self, inputs: Sequence[Dataset], outputs: Sequence[Dataset]) -> bool:
        """Sends START: scoring begins (the launch checks passed).

        Args:
            inputs: the datasets to be read.
            outputs: the datasets to be written.

        Returns:
            Whether the server accepted the event.
        """
        return self._emit("START", inputs, outputs)

    def complete(
        self, inputs: Sequence[Dataset], outputs: Sequence[Dataset], status: str | None = None
    ) -> bool:
        """Sends COMPLETE: the outputs are committed.

        Args:
            inputs: the datasets read, with the rows read.
            outputs: the datasets written, with the rows written.
            status: the manifest's `status` (`succeeded` or `failed`), for the run's
                `beamscore_scoring` facet.

        Returns:
            Whether the server accepted the event.
        """
        return self._emit("COMPLETE", inputs, outputs, status=status)

    def fail(
        self,
        message: str,
        inputs: Sequence[Dataset] = (),
        outputs: Sequence[Dataset] = (),
        stack_trace: str | None = None,
    ) -> bool:
        """Sends FAIL: the run could not complete.

        Args:
            message: what went wrong, for the errorMessage facet (the line stderr shows).
            inputs: the datasets the run was reading.
            outputs: the datasets it wrote anyway; none when the previous output stands.
            stack_trace: the traceback, if worth sending.

        Returns:
            Whether the server accepted the event.
        """
        return self._emit("FAIL", inputs, outputs, error=(message, stack_trace))

    def abort(self, inputs: Sequence[Dataset] = (), outputs: Sequence[Dataset] = ()) -> bool:
        """Sends ABORT: the run was stopped from outside (interrupted).

        Args:
            inputs: the datasets the run was reading.
            outputs: the datasets it wrote anyway.

        Returns:
            Whether the server accepted the event.
        """
        return self._emit("ABORT", inputs, outputs)

    def _emit(self, event_type: str, inputs, outputs, **extra) -> bool:
        if not self.enabled:
            return False
        target = self._target()
        try:
            event = self._event(event_type, inputs, outputs, **extra)
        except Exception as e:  # noqa: BLE001 - a bad value must cost the event, not the run
            return self._not_sent(event_type, target, f"could not build the event: {one_line(e)}")
        outcome: list[BaseException | None] = []

        def send() -> None:
            try:
                from openlineage.client.transport.http import (
                    ApiKeyTokenProvider,
                    HttpConfig,
                    HttpTransport,
                    TokenProvider,
                )

                api_key = os.environ.get("OPENLINEAGE_API_KEY")
                config = HttpConfig(
                    url=self.url,
                    endpoint=self.endpoint,
                    timeout=self.timeout,
                    retry={"total": 0},
                    auth=ApiKeyTokenProvider({"apiKey": api_key}) if api_key else TokenProvider({}),
                )
                transport = HttpTransport(config)
                try:
                    transport.emit(event)
                finally:
                    transport.close()
                outcome.append(None)
            except Exception as e:  # noqa: BLE001 - reported by the caller's thread
                outcome.append(e)

        # A thread with a deadline: requests' own timeouts bound each connect and read, not a
        # name lookup nor a server that sends a byte now and then.
        sender = threading.Thread(target=send, name=f"openlineage-{event_type}", daemon=True)
        sender.start()
        sender.join(self.timeout)
        if sender.is_alive() or not outcome:
            return self._not_sent(event_type, target, f"no answer within {self.timeout:g}s")
        if outcome[0] is not None:
            return self._not_sent(event_type, target, one_line(outcome[0]))
        return True

    def _target(self) -> str:
        """Where the events go, without credentials or query, for messages."""
        try:
            if urlsplit(self.url).netloc:
                parts = urlsplit(urljoin(self.url, self.endpoint))
                return urlunsplit(
                    (parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", "")
                )
        except ValueError:
            pass
        return repr(self.url)  # a malformed URL: the transport's message says what is wrong

    def _not_sent(self, event_type: str, target: str, reason: str) -> bool:
        _LOG.warning("OpenLineage %s event NOT sent to %s: %s", event_type, target, reason)
        self.not_sent.append(event_type)
        return False

    def _event(
        self,
        event_type: str,
        inputs: Sequence[Dataset],
        outputs: Sequence[Dataset],
        status: str | None = None,
        error: tuple[str, str | None] | None = None,
    ):
        import datetime

        from openlineage.client.event_v2 import Job, Run, RunEvent, RunState
        from openlineage.client.facet_v2 import error_message_run, job_type_job, nominal_time_run

        producer = _producer()
        facets = _facet_classes()
        run_facets: dict[str, Any] = {
            MODEL_FACET: facets.model(
                uri=self.model["uri"],
                version=self.model.get("version") or None,
                sha256=self.model.get("sha256") or None,
                mlflowRunId=self.model.get("run_id") or None,
                producer=producer,
            ),
            SCORING_FACET: facets.scoring(runId=self.run_id, status=status, producer=producer),
        }
        if self.run_date:
            run_facets["nominalTime"] = nominal_time_run.NominalTimeRunFacet(
                nominalStartTime=f"{self.run_date}T00:00:00Z", producer=producer
            )
        if error is not None:
            run_facets["errorMessage"] = error_message_run.ErrorMessageRunFacet(
                message=error[0],
                programmingLanguage="python",
                stackTrace=error[1],
                producer=producer,
            )
        job_type = job_type_job.JobTypeJobFacet(
            processingType="BATCH", integration="BEAMSCORE", jobType="JOB", producer=producer
        )
        return RunEvent(
            eventType=RunState[event_type],
            eventTime=datetime.datetime.now(datetime.UTC).isoformat(),
            producer=producer,
            run=Run(runId=self.run_uuid, facets=run_facets),
            job=Job(namespace=self.job_namespace, name=self.job_name, facets={"jobType": job_type}),
            inputs=[_input(d, producer) for d in inputs],
            outputs=[_output(d, producer) for d in outputs],
        )


def _input(d: Dataset, producer: str):
    """An input dataset; its row and file counts go into the inputStatistics facet."""
    from openlineage.client.event_v2 import InputDataset
    from openlineage.client.facet_v2 import input_statistics_input_dataset as statistics

    facets = {}
    if d.rows is not None or d.files is not None:
        facets["inputStatistics"] = statistics.InputStatisticsInputDatasetFacet(
            rowCount=d.rows, fileCount=d.files, producer=producer
        )
    return InputDataset(*d.naming(), facets=_schema(d, producer), inputFacets=facets)


def _output(d: Dataset, producer: str):
    """An output dataset; its row and file counts go into the outputStatistics facet."""
    from openlineage.client.event_v2 import OutputDataset
    from openlineage.client.facet_v2 import output_statistics_output_dataset as statistics

    facets = {}
    if d.rows is not None or d.files is not None:
        facets["outputStatistics"] = statistics.OutputStatisticsOutputDatasetFacet(
            rowCount=d.rows, fileCount=d.files, producer=producer
        )
    return OutputDataset(*d.naming(), facets=_schema(d, producer), outputFacets=facets)


def _schema(d: Dataset, producer: str) -> dict[str, Any]:
    """The dataset's version and schema facets, where known."""
    from openlineage.client.facet_v2 import schema_dataset

    facets: dict[str, Any] = {}
    if d.version:
        from openlineage.client.facet_v2 import dataset_version_dataset

        facets["version"] = dataset_version_dataset.DatasetVersionDatasetFacet(
            datasetVersion=d.version, producer=producer
        )
    if not d.fields:
        return facets
    fields = [schema_dataset.SchemaDatasetFacetFields(name, type_) for name, type_ in d.fields]
    facets["schema"] = schema_dataset.SchemaDatasetFacet(fields=fields, producer=producer)
    return facets


def _producer() -> str:
    """The events' `producer`: this project at the installed version."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"{PROJECT_URL}/tree/v{version('beamscore')}"
    except PackageNotFoundError:
        return PROJECT_URL


@functools.cache
def _facet_classes():
    """The custom run facets; defined on first use, as they subclass the client's RunFacet."""
    import types

    import attr
    from openlineage.client.facet_v2 import RunFacet

    @attr.define
    class BeamscoreModelRunFacet(RunFacet):
        """The model that scored the run (pipeline/lineage_facets/1-0-0/)."""

        uri: str
        version: str | None = attr.field(default=None)
        sha256: str | None = attr.field(default=None)
        mlflowRunId: str | None = attr.field(default=None)

        @staticmethod
        def _get_schema() -> str:
            return _schema_url("BeamscoreModelRunFacet")

    @attr.define
    class BeamscoreScoringRunFacet(RunFacet):
        """The beamscore run behind the OpenLineage run, and its outcome."""

        runId: str
        status: str | None = attr.field(default=None)

        @staticmethod
        def _get_schema() -> str:
            return _schema_url("BeamscoreScoringRunFacet")

    return types.SimpleNamespace(model=BeamscoreModelRunFacet, scoring=BeamscoreScoringRunFacet)


def _schema_url(facet: str) -> str:
    return f"{FACET_SCHEMA_BASE}/1-0-0/{facet}.json#/$defs/{facet}"
