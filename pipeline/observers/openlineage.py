"""OpenLineage: START from the launcher, COMPLETE from the commit stage, FAIL or ABORT from
whoever sees the run end (pipeline.lineage), as an observer."""

from __future__ import annotations

from typing import TYPE_CHECKING

from apache_beam.io.filesystems import FileSystems

from pipeline.lineage import Dataset, Lineage, job_name_for
from pipeline.observers.base import Finished, Observer, Started

if TYPE_CHECKING:
    from pipeline.launch import Launch


class LineageEvents(Observer):
    """Sends the run's events to `--openlineage_url` (or OPENLINEAGE_URL)."""

    def __init__(self, launch, lineage):
        self.launch = launch
        self.lineage = lineage

    @classmethod
    def for_launch(cls, launch) -> LineageEvents | None:
        lineage = lineage_for(launch)
        return None if lineage is None else cls(launch, lineage)

    def __getstate__(self) -> dict:  # the launcher's Launch holds the loaded model
        import dataclasses

        return {**self.__dict__, "launch": dataclasses.replace(self.launch, model=None)}

    def started(self, run: Started) -> None:
        self.lineage.start(lineage_inputs(run.launch), lineage_outputs(run.launch))

    def finished(self, night: Finished) -> dict:
        before = len(self.lineage.not_sent)  # what the launcher did not send, it reports itself
        self.lineage.complete(*lineage_done(night.launch, night.manifest), night.manifest["status"])
        return {"lineage_not_sent": self.lineage.not_sent[before:]}

    def failed(self, message: str, stopped: bool) -> None:
        inputs = lineage_inputs(self.launch)
        if stopped:
            self.lineage.abort(inputs)
        else:
            self.lineage.fail(message, inputs)

    @property
    def not_sent(self) -> list[str]:
        return self.lineage.not_sent


def lineage_for(decided: Launch) -> Lineage | None:
    """The run's OpenLineage events, when --openlineage_url or OPENLINEAGE_URL names a server."""
    spec = decided.spec
    lineage = Lineage(
        decided.openlineage_url,
        job_name_for(decided.output, decided.run_date),
        spec.run_id,
        {
            "uri": spec.model.uri,
            "version": spec.model.version,
            "sha256": spec.model.sha256,
            "run_id": spec.model.run_id or None,
        },
        run_date=decided.run_date,
    )
    return lineage if lineage.enabled else None


# Beyond this many input files, the lineage events name the input pattern, not each file.
_LINEAGE_MAX_FILES = 1000


def lineage_inputs(decided: Launch) -> list[Dataset]:
    """The input datasets as the launcher matched them."""
    if decided.spec.table is not None:  # a BigQuery table, at the session's snapshot
        return [Dataset(decided.input_pattern, version=decided.spec.table.snapshot_time)]
    if len(decided.files) > _LINEAGE_MAX_FILES:
        return [Dataset(decided.input_pattern, files=len(decided.files))]
    return [Dataset(f) for f in decided.files]


def lineage_outputs(decided: Launch, manifest: dict | None = None) -> list[Dataset]:
    """The output datasets: the predictions and errors directories and any BigQuery tables,
    with what was written once the manifest is there."""
    m = manifest or {}
    outputs = m.get("outputs", {})
    counts = m.get("counts", {})
    datasets = [
        Dataset(
            FileSystems.join(decided.output, "predictions"),
            rows=counts.get("rows_predicted"),
            files=len(outputs["predictions"]) if "predictions" in outputs else None,
        ),
        Dataset(
            FileSystems.join(decided.output, "errors"),
            files=len(outputs["errors"]) if "errors" in outputs else None,
        ),
    ]
    for key, sink in (("bigquery", decided.bigquery), ("bigquery_errors", decided.bigquery_errors)):
        if sink is not None and (manifest is None or m.get(key)):
            loaded = m.get(key) or {}
            datasets.append(Dataset(f"bigquery:{sink.table.id}", rows=loaded.get("rows_loaded")))
    return datasets


def lineage_done(decided: Launch, manifest: dict) -> tuple[list[Dataset], list[Dataset]]:
    """The inputs read (with their rows) and the outputs written, for the COMPLETE event."""
    files = manifest["inputs"]
    if decided.spec.table is not None:
        version = decided.spec.table.snapshot_time
        read = manifest["counts"]["rows_read"]
        inputs = [Dataset(decided.input_pattern, rows=read, version=version)]
    elif len(files) > _LINEAGE_MAX_FILES:
        inputs = [
            Dataset(decided.input_pattern, rows=manifest["counts"]["rows_read"], files=len(files))
        ]
    else:
        inputs = [
            Dataset(f["path"], rows=None if f["failed"] else f["rows_read"], files=1) for f in files
        ]
    return inputs, lineage_outputs(decided, manifest)
