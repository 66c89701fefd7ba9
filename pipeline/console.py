"""What a person reads on the console: the closing summary of a run, the one screen of a dry run,
and the launcher's INFO lines, held until the launch has decided everything."""

from __future__ import annotations

import logging
import os
import tempfile
from typing import Any

from apache_beam.options.pipeline_options import GoogleCloudOptions

from pipeline.output import MANIFEST, REPORT
from transforms.errors import STAGES
from transforms.profile import PSI_WARNING


def _files(n: int) -> str:
    return f"{n:,} file" if n == 1 else f"{n:,} files"


def summary(res: Any, launch_output: str) -> str:
    """The closing lines a person reads (`res`: the run's pipeline.run.ScoringResult): counts,
    throughput, where things are."""
    m = res.manifest
    c = m["counts"]
    by_stage = ", ".join(f"{s} {c['rows_failed_by_stage'][s]:,}" for s in STAGES)
    rate = c["rows_read"] / res.seconds if res.seconds else 0.0
    lines = [
        f"{m['status'].upper()}: {c['rows_read']:,} rows read, {c['rows_predicted']:,} predicted, "
        f"{c['rows_failed']:,} failed ({by_stage}) in {res.seconds:.1f}s ({rate:,.0f} rows/s); "
        f"error rate {m['error_rate']:.4%} (max {m['max_error_rate']:.4%}); "
        f"model loaded {m['model_loads']} time(s)",
    ]
    if not c["rows_read"] and not m["files_failed"]:
        table = m.get("input_table")
        if table:
            selected = f"--input_filter {table['filter']!r} selects" if table.get("filter") else ""
            lines.append(f"  WARNING: no rows: {selected or 'there are'} no rows in {table['uri']}")
        else:
            lines.append(
                f"  WARNING: no rows: every input file is empty ({_files(len(m['inputs']))})"
            )
    if m["files_failed"]:
        lines.append(f"  files that could not be read: {', '.join(m['files_failed'])}")
    for check in m.get("failed_checks") or []:
        lines.append(f"  FAILED night check {check['check']}: {check['message']}")
    for check in (m.get("checks") or {}).get("skipped") or []:
        lines.append(f"  night check {check['check']} {check['message']}")
    lines.append(
        f"  predictions: {launch_output}/predictions/ ({_files(len(m['outputs']['predictions']))})"
    )
    if m["outputs"]["errors"]:
        lines.append(
            f"  errors:      {launch_output}/errors/ ({_files(len(m['outputs']['errors']))})"
        )
        for group in (res.errors_summary or {}).get("groups", [])[:3]:
            example = group["examples"][0] if group["examples"] else {}
            reason = example.get("error", group["reason"])[:200]
            lines.append(f"    {group['count']:,} x {group['stage']}: {reason}")
    scored = {k: n for k, n in m["unknown_categories"]["scored"].items() if n}
    if scored:
        rows = ", ".join(f"{k} {n:,}" for k, n in scored.items())
        lines.append(f"  rows scored with an unknown category (as the model takes one): {rows}")
    drifted = {k: v for k, v in (m.get("drift") or {}).items() if v > PSI_WARNING}
    for feature, value in sorted(drifted.items(), key=lambda kv: -kv[1]):
        lines.append(f"  WARNING drift: {feature} PSI {value:.3f} (> {PSI_WARNING})")
    for key in ("bigquery", "bigquery_errors"):
        if m.get(key):
            bq = m[key]
            lines.append(
                f"  {key + ':':<12} {bq['rows_loaded']:,} rows in {bq['table']}, "
                f"partition {bq['partition']} (replaced)"
            )
    lines.append(f"  manifest:    {launch_output}/{MANIFEST}")
    if m.get("report"):
        lines.append(f"  report:      {launch_output}/{REPORT}")
    else:
        lines.append("  report:      NOT written (see the warning above)")
    if m.get("mlflow_run_id"):
        state = "logged" if res.mlflow_logged else "NOT fully logged (see the warnings above)"
        lines.append(f"  mlflow run:  {m['mlflow_run_id']} ({state})")
    if res.lineage_sent is not None:
        state = f"NOT sent ({', '.join(res.lineage_sent)})" if res.lineage_sent else "sent"
        lines.append(f"  lineage:     {state}")
    return "\n".join(lines)


class LaunchLogHeld(logging.Filter):
    """Holds the launcher's INFO lines ("loaded model ...") until the launch has decided
    everything, so a configuration error stays the one line on stderr; warnings pass."""

    def __init__(self) -> None:
        super().__init__()
        self.held: list[tuple[logging.Handler, logging.LogRecord]] = []
        self.handlers: list[logging.Handler] = []

    def hold(self) -> None:
        self.handlers = list(logging.getLogger().handlers)
        for handler in self.handlers:
            handler.addFilter(self)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            return True
        self.held.extend((h, record) for h in self.handlers if self in h.filters)
        return False

    def release(self, show: bool) -> None:
        for handler in self.handlers:
            handler.removeFilter(self)
        held, self.held = self.held, []
        if show:
            for handler, record in held:
                if record.levelno >= handler.level:
                    handler.handle(record)


def dry_run_summary(job) -> str:
    """One screen about a translated Dataflow job: its steps, what its workers need, what
    submitting it would stage; the whole job description goes to a local file named here."""
    from apache_beam.options.pipeline_options import SetupOptions, WorkerOptions

    options = job.options
    transforms = job.proto_pipeline.components.transforms
    roots = list(job.proto_pipeline.root_transform_ids)
    while len(roots) == 1 and transforms[roots[0]].subtransforms:  # the pipeline's own root
        roots = list(transforms[roots[0]].subtransforms)
    steps = [transforms[t].unique_name for t in roots]
    worker = options.view_as(WorkerOptions)
    setup = options.view_as(SetupOptions)
    image = worker.sdk_container_image or "Dataflow's default Beam SDK image"
    machine = worker.machine_type or "Dataflow's default"
    workers = worker.max_num_workers or "Dataflow's autoscaling default"
    staged = []
    if setup.setup_file:
        staged.append(f"workflow.tar.gz (the sdist of {setup.setup_file})")
    if setup.requirements_file:
        with open(setup.requirements_file) as f:
            needs = ", ".join(line.strip() for line in f if line.strip()) or "nothing"
        staged.append(f"requirements.txt ({needs})")
    staged += [f"{os.path.basename(p)} (--extra_package)" for p in setup.extra_packages or []]
    if setup.save_main_session:
        staged.append("pickled_main_session")
    scratch = tempfile.mkdtemp(prefix="beamscore-dry-run-")
    path = os.path.join(scratch, f"{options.view_as(GoogleCloudOptions).job_name}.json")
    with open(path, "w") as f:
        f.write(job.json())
    return "\n".join(
        [
            f"DRY RUN: {len(steps)} steps: {', '.join(steps)}",
            f"  workers:  image {image}; machine type {machine}; at most {workers} workers",
            f"  staged at submission: {'; '.join(staged) or 'nothing'}",
            f"  job description: {path}",
        ]
    )


LAUNCH_LOG: list[LaunchLogHeld] = []  # set by main() while the launch decides


def launch_decided() -> None:
    """The launch went through: the INFO lines it held are written now, in order."""
    while LAUNCH_LOG:
        LAUNCH_LOG.pop().release(show=True)
