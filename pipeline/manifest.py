"""The run record: counts from Beam metrics, reconciled, and the manifest's fields."""

from __future__ import annotations

import dataclasses
from typing import Any

from apache_beam.metrics.metric import MetricsFilter

from transforms.errors import FILE_NAMESPACE_PREFIX, NAMESPACE, STAGES

PRODUCER = "beamscore"


@dataclasses.dataclass
class Counts:
    """The run's counters as Beam reported them."""

    totals: dict[str, int]
    files: dict[str, dict[str, int]]

    def get(self, name: str) -> int:
        return self.totals.get(name, 0)

    @property
    def rows_read(self) -> int:
        return self.get("rows_read")

    @property
    def rows_failed(self) -> int:
        return sum(self.get(f"rows_failed_{s}") for s in STAGES)

    @property
    def rows_predicted(self) -> int:
        return self.get("rows_predicted")

    @property
    def files_failed(self) -> list[str]:
        return sorted(f for f, c in self.files.items() if c.get("file_failed"))

    @property
    def error_rate(self) -> float:
        return self.rows_failed / self.rows_read if self.rows_read else 0.0


def counts_from(result) -> Counts:
    """Reads the run's counters from a finished PipelineResult."""
    totals: dict[str, int] = {}
    files: dict[str, dict[str, int]] = {}
    for counter in result.metrics().query(MetricsFilter())["counters"]:
        value = counter.committed if counter.committed is not None else counter.attempted
        namespace, name = counter.key.metric.namespace, counter.key.metric.name
        if namespace == NAMESPACE:
            totals[name] = totals.get(name, 0) + int(value or 0)
        elif namespace.startswith(FILE_NAMESPACE_PREFIX):
            per_file = files.setdefault(namespace.removeprefix(FILE_NAMESPACE_PREFIX), {})
            per_file[name] = per_file.get(name, 0) + int(value or 0)
    return Counts(totals, files)


def build_manifest(
    *,
    launch,
    counts: Counts,
    status: str,
    started_at: str,
    finished_at: str,
    runner: str,
    output_files: dict[str, list[str]],
) -> dict[str, Any]:
    """The manifest of the contract, plus what a person debugging a run wants next to it."""
    spec = launch.spec
    inputs = []
    for path in launch.files:
        c = counts.files.get(path, {})
        inputs.append(
            {
                "path": path,
                "rows_read": c.get("rows_read", 0),
                "rows_predicted": c.get("rows_predicted", 0),
                "rows_failed": c.get("rows_failed", 0),
                "failed": bool(c.get("file_failed")),
            }
        )
    return {
        "producer": PRODUCER,
        "status": status,
        "run_id": spec.run_id,
        "run_date": launch.run_date,
        "model": {
            "uri": spec.model.uri,
            "version": spec.model.version,
            "sha256": spec.model.sha256,
            "run_id": spec.model.run_id or None,
        },
        "counts": {
            "rows_read": counts.rows_read,
            "rows_predicted": counts.rows_predicted,
            "rows_failed": counts.rows_failed,
            "rows_failed_by_stage": {s: counts.get(f"rows_failed_{s}") for s in STAGES},
        },
        "error_rate": counts.error_rate,
        "max_error_rate": launch.max_error_rate,
        "model_loads": counts.get("model_loads"),
        "inputs": inputs,
        "files_failed": counts.files_failed,
        "input_pattern": launch.input_pattern,
        "input_format": spec.input_format,
        "features": list(spec.features),
        "key_columns": list(spec.keys),
        "outputs": output_files,
        "started_at": started_at,
        "finished_at": finished_at,
        "runner": runner,
    }
