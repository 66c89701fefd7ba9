"""The run record: counts (reconciled both ways), and the manifest, built in one place."""

from __future__ import annotations

import dataclasses
from typing import Any

from scoring import recorded
from transforms.errors import STAGES, UNKNOWN_REJECTED, UNKNOWN_SCORED

PRODUCER = "beamscore"


class CountsDisagree(Exception):
    """The run's counts do not reconcile: a row was lost or counted twice somewhere."""


@dataclasses.dataclass
class Counts:
    """The run's counts: run-wide from Beam metrics, per input file from the pipeline's output."""

    totals: dict[str, int]
    files: dict[str, dict[str, int]]

    def get(self, name: str) -> int:
        return self.totals.get(name, 0)

    @property
    def rows_read(self) -> int:
        return self.get("rows_read")

    @property
    def by_stage(self) -> dict[str, int]:
        return {s: self.get(f"rows_failed_{s}") for s in STAGES}

    @property
    def rows_failed(self) -> int:
        return sum(self.by_stage.values())

    @property
    def rows_predicted(self) -> int:
        return self.get("rows_predicted")

    @property
    def files_failed(self) -> list[str]:
        return sorted(f for f, c in self.files.items() if c.get("files_failed"))

    @property
    def error_rate(self) -> float:
        return self.rows_failed / self.rows_read if self.rows_read else 0.0

    def check(self) -> None:
        """Every row read was predicted or rejected, run-wide and per file, and the per-file
        counts add up to the run-wide ones; raises CountsDisagree otherwise."""
        if self.rows_read != self.rows_predicted + self.rows_failed:
            raise CountsDisagree(
                f"read {self.rows_read:,} != predicted {self.rows_predicted:,} + failed "
                f"{self.rows_failed:,}"
            )
        names = ["rows_read", "rows_predicted", *(f"rows_failed_{s}" for s in STAGES)]
        for name in names:
            per_file = sum(c.get(name, 0) for c in self.files.values())
            if per_file != self.get(name):
                raise CountsDisagree(
                    f"{name}: {self.get(name):,} in all, {per_file:,} summed over the files"
                )
        for path, c in self.files.items():
            failed = sum(c.get(f"rows_failed_{s}", 0) for s in STAGES)
            if c.get("rows_read", 0) != c.get("rows_predicted", 0) + failed:
                raise CountsDisagree(
                    f"{path}: read {c.get('rows_read', 0):,} != predicted + failed"
                )


def input_changes(
    launched: dict[str, tuple[int, int]], read: dict[str, dict[str, int]], most: int = 3
) -> str | None:
    """How the files the workers read differ from those the launcher matched, or None.

    Args:
        launched: per file the launcher matched, its (size, mtime in ms).
        read: the run's per-file counts; the workers note each file they planned with its
            `files` (1), `bytes` and `mtime_ms`.
        most: how many files to name.

    Returns:
        One line (a file gone, one that appeared, one planned twice, one of another size or
        time), None when the workers read exactly the launcher's files as they were.
    """
    problems = [f"{p} is gone" for p in sorted(launched.keys() - read.keys())]
    problems += [f"{p} appeared" for p in sorted(read.keys() - launched.keys())]
    for path in sorted(launched.keys() & read.keys()):
        c = read[path]
        if c.get("files", 0) != 1:
            problems.append(f"{path} was read {c.get('files', 0)} times")
        elif (c.get("bytes", 0), c.get("mtime_ms", 0)) != tuple(launched[path]):
            size, mtime_ms = launched[path]
            problems.append(
                f"{path} changed (size {size:,} -> {c.get('bytes', 0):,} bytes, "
                f"mtime {mtime_ms} -> {c.get('mtime_ms', 0)} ms)"
            )
    if not problems:
        return None
    more = f" and {len(problems) - most} more" if len(problems) > most else ""
    return "; ".join(problems[:most]) + more


def unknown_categories(launch, counts: Counts) -> dict[str, Any]:
    """Per categorical feature, the rows that held a category the model was not trained on.

    Returns:
        {"rule": the --unknown_categories value, "rejected": {column: rows rejected at
        validate for it}, "scored": {column: rows scored with one}}; each categorical feature
        is in one of the two (rejected unless the model takes an unknown category: a
        scikit-learn encoder that ignores it, or a booster with --unknown_categories score),
        with 0 when no row held one.
    """
    spec = launch.spec
    out: dict[str, Any] = {"rule": launch.unknown_categories, "rejected": {}, "scored": {}}
    for name in spec.features:
        cats = spec.facts.categorical.get(name)
        if cats is None:
            continue
        if cats.unknown_ok:
            out["scored"][name] = counts.get(UNKNOWN_SCORED + name)
        else:
            out["rejected"][name] = counts.get(UNKNOWN_REJECTED + name)
    return out


def build_manifest(
    *,
    launch,
    counts: Counts,
    status: str,
    started_at: str,
    finished_at: str,
    seconds: float,
    runner: str,
    outputs: dict[str, list[str]],
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The manifest of the contract, plus what a person debugging a run wants next to it.

    Args:
        launch: the launch decisions (pipeline.launch.Launch).
        counts: the run's reconciled counts.
        status: succeeded or failed.
        started_at: when the launcher started (ISO 8601, UTC).
        finished_at: when the run finished (ISO 8601, UTC).
        seconds: the wall time from launch to commit.
        runner: the Beam runner.
        outputs: the committed files under DIR, by directory (predictions, errors).
        extra: further sections (drift, bigquery, mlflow_run_id, ...).
    """
    spec = launch.spec
    inputs = []
    for path in sorted(counts.files):
        c = counts.files[path]
        inputs.append(
            {
                "path": path,
                "rows_read": c.get("rows_read", 0),
                "rows_predicted": c.get("rows_predicted", 0),
                "rows_failed": sum(c.get(f"rows_failed_{s}", 0) for s in STAGES),
                "rows_failed_by_stage": {s: c.get(f"rows_failed_{s}", 0) for s in STAGES},
                "failed": bool(c.get("files_failed")),
                "content": launch.input_checksums.get(path),
            }
        )
    manifest = {
        "producer": PRODUCER,
        "status": status,
        "run_id": spec.run_id,
        "run_date": launch.run_date,
        "model": {
            "uri": spec.model.uri,
            "version": spec.model.version,
            "sha256": spec.model.sha256,
            "run_id": spec.model.run_id or None,
            "library_versions": launch.library_versions,
        },
        "counts": {
            "rows_read": counts.rows_read,
            "rows_predicted": counts.rows_predicted,
            "rows_failed": counts.rows_failed,
            "rows_failed_by_stage": counts.by_stage,
        },
        "error_rate": counts.error_rate,
        "max_error_rate": launch.max_error_rate,
        "model_loads": counts.get("model_loads"),
        "unknown_categories": unknown_categories(launch, counts),
        "inputs": inputs,
        "input_fingerprint": launch.input_fingerprint,
        "files_failed": counts.files_failed,
        "input_pattern": launch.input_pattern,
        "input_format": spec.input_format,
        "features": list(spec.features),
        "key_columns": list(spec.keys),
        recorded.SECTION: recorded.describe(spec, launch.unknown_categories),
        "outputs": outputs,
        "started_at": started_at,
        "finished_at": finished_at,
        "duration_s": round(seconds, 3),
        "rows_per_s": round(counts.rows_read / seconds, 1) if seconds else None,
        "runner": runner,
        "model_load_s_launcher": round(launch.model_load_s, 3),
    }
    if spec.table is not None:
        manifest["input_table"] = table_section(spec.table)
    manifest.update(extra or {})
    return manifest


def table_section(table) -> dict[str, Any]:
    """A BigQuery table input in the manifest: which table, which rows, which version of it."""
    return {
        "table": table.table_id,
        "uri": table.uri,
        "filter": table.row_filter or None,
        "snapshot_time": table.snapshot_time,
        "snapshot_time_source": table.snapshot_source,
        "read_session": table.session,
        "streams": len(table.streams),
    }
