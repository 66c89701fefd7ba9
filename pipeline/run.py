"""Entry point: `python -m pipeline.run --input ... --model ... --output ... [Beam options]`."""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import os
import sys
import time

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import (
    GoogleCloudOptions,
    PipelineOptions,
    StandardOptions,
    TestOptions,
)
from apache_beam.runners.runner import PipelineState

from pipeline.errors import ConfigError, RunFailed
from pipeline.graph import build
from pipeline.manifest import Counts, build_manifest, counts_from
from pipeline.options import ScoringOptions
from pipeline.output import MANIFEST, OutputDir
from pipeline.prepare import prepare
from pipeline.tracking import RunLog
from transforms.emulators import anonymous_if_emulated
from transforms.errors import STAGES
from transforms.profile import PROFILE_FILE, PSI_WARNING

_LOG = logging.getLogger("pipeline")


@dataclasses.dataclass
class ScoringResult:
    """What a run did: the Beam result, the manifest written, and the process exit code."""

    pipeline_result: object
    manifest: dict
    exit_code: int
    output: str
    seconds: float
    mlflow_logged: bool | None = None
    dry_run: bool = False


def _known_flags() -> set[str]:
    """Every flag some PipelineOptions subclass defines (ours and Beam's)."""
    import argparse

    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    seen: set[type] = set()
    stack = list(PipelineOptions.__subclasses__())
    while stack:
        cls = stack.pop()
        if cls in seen:
            continue
        seen.add(cls)
        stack.extend(cls.__subclasses__())
        try:
            cls._add_argparse_args(parser)
        except argparse.ArgumentError:
            continue  # a flag two option classes both define
    return {s for action in parser._actions for s in action.option_strings}


def _check_flags(argv: list[str]) -> None:
    """Refuses unknown flags: a typo in a nightly job must not be silently ignored."""
    known = _known_flags()
    for arg in argv:
        if arg.startswith("--"):
            flag = arg.split("=", 1)[0]
            if flag not in known:
                raise ConfigError(f"unknown flag {flag} (see --help and the README)")


def run(argv: list[str] | None = None, test_pipeline: beam.Pipeline | None = None) -> ScoringResult:
    """Scores the input and commits predictions, errors and the manifest.

    Args:
        argv: command-line flags (ours and Beam's); sys.argv[1:] when None.
        test_pipeline: a pipeline to build into instead of a new one (tests).

    Returns:
        The run's result; raises ConfigError (exit 2) or RunFailed (exit 3).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    _check_flags(argv)
    anonymous_if_emulated()
    options = PipelineOptions(argv)
    FileSystems.set_options(options)  # the launcher's own gs:// checks use the same options
    opts = options.view_as(ScoringOptions)
    standard = options.view_as(StandardOptions)
    standard.runner = standard.runner or "DirectRunner"
    runner = standard.runner
    started = datetime.datetime.now(datetime.UTC)
    clock = time.monotonic()
    staging_root = None
    if "Direct" not in runner:  # remote workers cannot read the launcher's temp directory
        staging_root = options.view_as(GoogleCloudOptions).temp_location
    dry_run = str(options.view_as(TestOptions).dry_run).lower() in ("true", "1", "yes")
    options.view_as(TestOptions).dry_run = dry_run  # Beam takes any non-empty string as true
    if dry_run and "Dataflow" not in runner:
        raise ConfigError(
            "--dry_run=True translates a Dataflow job; it needs --runner DataflowRunner"
        )
    launch = prepare(opts, staging_root=staging_root)
    out = OutputDir(launch.output, launch.spec.run_id)
    out.check_owned()
    if dry_run:  # translate and stage nothing, submit nothing; DIR is not touched
        p = test_pipeline or beam.Pipeline(options=options)
        build(p, launch.spec, launch.files, out.staging)
        result = p.run()
        return ScoringResult(result, {}, 0, launch.output, time.monotonic() - clock, dry_run=True)
    tracker = None
    out.acquire_lock()
    try:
        if launch.mlflow_experiment:  # an unusable server is exit 3 here, before any work
            tracker = RunLog(launch.tracking_uri, launch.mlflow_experiment)
            tracker.start(launch, runner, _workers(options))
        out.recover()
        _LOG.info(
            "run %s: scoring %d %s file(s) matching %s with %s (version %s)",
            launch.spec.run_id,
            len(launch.files),
            launch.spec.input_format,
            launch.input_pattern,
            launch.spec.model.uri,
            launch.spec.model.version,
        )
        p = test_pipeline or beam.Pipeline(options=options)
        build(p, launch.spec, launch.files, out.staging)
        result = _run_pipeline(p, out)
        profile = out.read_staged(PROFILE_FILE) if launch.spec.profile else None
        counts = counts_from(result)
        _check_reconciled(counts)
        status = "succeeded"
        if counts.files_failed or counts.error_rate > launch.max_error_rate:
            status = "failed"
        files = out.staged_files()
        loaded = {}
        if status == "succeeded":  # BigQuery is loaded only for a succeeded run
            try:
                loaded = _load_bigquery(launch, out, files, counts)
            except RunFailed:  # before the commit: exit 3 with the previous output intact
                out.discard_staging()
                raise
        manifest = build_manifest(
            launch=launch,
            counts=counts,
            status=status,
            started_at=started.isoformat(),
            finished_at=datetime.datetime.now(datetime.UTC).isoformat(),
            runner=runner,
            output_files={
                d: [f for f in files if f.startswith(d + "/")] for d in ("predictions", "errors")
            },
        )
        manifest["model_load_s_launcher"] = round(launch.model_load_s, 3)
        if launch.spec.baseline and profile:
            manifest["drift"] = profile["drift"]
        manifest.update(loaded)
        if tracker is not None:
            manifest["mlflow_run_id"] = tracker.run_id
        out.commit(manifest, files)
    except BaseException:
        if tracker is not None and tracker.run_id:
            tracker.abort()  # the MLflow run of a run that could not complete is FAILED
        raise
    finally:
        out.release_lock()
    seconds = time.monotonic() - clock
    logged = None
    if tracker is not None:
        load_s = counts.get("model_load_ms") / 1000 / max(counts.get("model_loads"), 1)
        logged = tracker.finish(manifest, profile, seconds, load_s)
    code = 0 if status == "succeeded" else 1
    return ScoringResult(result, manifest, code, launch.output, seconds, logged)


def _load_bigquery(launch, out: OutputDir, files: list[str], counts: Counts) -> dict:
    """Loads the staged predictions (and errors) into BigQuery in one transaction.

    Returns:
        The manifest entries (`bigquery`, `bigquery_errors`).
    """
    import tempfile

    from pipeline.bigquery import errors_to_parquet, replace_partitions

    def staged(directory: str) -> list[str]:  # by the names relative to DIR, not the full path
        return [FileSystems.join(out.staging, f) for f in files if f.startswith(directory + "/")]

    keys, loads = [], []
    if launch.bigquery is not None:
        keys.append("bigquery")
        loads.append((launch.bigquery, staged("predictions"), counts.rows_predicted))
    with tempfile.TemporaryDirectory(prefix="beamscore-errors-") as tmp:
        if launch.bigquery_errors is not None:
            table = os.path.join(tmp, "errors.parquet")
            try:
                records = errors_to_parquet(staged("errors"), table)
            except Exception as e:  # noqa: BLE001 - nothing is loaded yet: retryable
                raise RunFailed(f"could not read the errors output for BigQuery: {e}") from e
            keys.append("bigquery_errors")
            loads.append((launch.bigquery_errors, [table] if records else [], records))
        if not loads:
            return {}
        return dict(zip(keys, replace_partitions(loads, launch.run_date, launch.spec.run_id)))


def _workers(options: PipelineOptions) -> str:
    """How many workers the runner was asked for, as the runner's own flag says it."""
    flags = options.get_all_options()
    for name in ("direct_num_workers", "max_num_workers", "num_workers"):
        if flags.get(name):
            return f"{name}={flags[name]}"
    return "default"


def _run_pipeline(p: beam.Pipeline, out: OutputDir):
    """Runs the pipeline to the end; any failure discards the staging and is a RunFailed."""
    try:
        result = p.run()
        state = result.wait_until_finish()
    except Exception as e:  # noqa: BLE001 - whatever stopped the run, the old output stays
        out.discard_staging()
        raise RunFailed(f"the run could not complete: {_cause(e)}") from e
    if state not in (PipelineState.DONE, None):
        out.discard_staging()
        raise RunFailed(f"the run ended in state {state}")
    return result


def _check_reconciled(counts: Counts) -> None:
    if counts.rows_read != counts.rows_predicted + counts.rows_failed:
        raise RunFailed(
            f"counts do not reconcile: read {counts.rows_read} != predicted "
            f"{counts.rows_predicted} + failed {counts.rows_failed}"
        )


def _cause(e: BaseException) -> str:
    """The most specific one-line cause in a (possibly wrapped, multi-line) worker error."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    causes = [ln for ln in lines if ("Error" in ln or "Exception" in ln) and ":" in ln]
    line = causes[-1] if causes else (lines[0] if lines else type(e).__name__)
    return line[:500]


def summary(res: ScoringResult, launch_output: str) -> str:
    """The closing lines a person reads: counts, throughput, where things are."""
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
    if m["files_failed"]:
        lines.append(f"  files that could not be read: {', '.join(m['files_failed'])}")
    lines.append(
        f"  predictions: {launch_output}/predictions/ ({len(m['outputs']['predictions'])} files)"
    )
    if m["outputs"]["errors"]:
        lines.append(
            f"  errors:      {launch_output}/errors/ ({len(m['outputs']['errors'])} files)"
        )
        lines.extend(f"    {reason}" for reason in first_reasons(launch_output, m, 3))
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
    if m.get("mlflow_run_id"):
        state = "logged" if res.mlflow_logged else "NOT fully logged (see the warnings above)"
        lines.append(f"  mlflow run:  {m['mlflow_run_id']} ({state})")
    return "\n".join(lines)


def first_reasons(output: str, manifest: dict, limit: int) -> list[str]:
    """The first few error records' stage and reason, for the closing summary."""
    reasons: list[str] = []
    for name in manifest["outputs"]["errors"]:
        with FileSystems.open(FileSystems.join(output, name)) as f:
            for line in f:
                record = json.loads(line)
                reasons.append(f"{record['stage']}: {record['error'][:200]}")
                if len(reasons) == limit:
                    return reasons
    return reasons


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit code of the contract."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    for noisy in ("apache_beam", "google", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # With no errors the errors sink has nothing to finalize, which it warns about.
    logging.getLogger("apache_beam.io.filebasedsink").setLevel(logging.ERROR)
    try:
        res = run(argv)
    except (ConfigError, RunFailed) as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    if res.dry_run:
        job = getattr(res.pipeline_result, "job", None)
        name = job.google_cloud_options.job_name if job is not None else "?"
        print(f"DRY RUN: Dataflow job {name} translated, not submitted; the output was not touched")
        return 0
    print(summary(res, res.output))
    return res.exit_code


if __name__ == "__main__":
    sys.exit(main())
