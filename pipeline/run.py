"""Entry point: `python -m pipeline.run --input ... --model ... --output ... [Beam options]`.

`run` reads as its three phases: `launch` (flags, every check that can be made before scoring,
the output directory's lock), `score` (the Beam pipeline), `finalize` (counts reconciled,
sinks loaded, the output committed with its manifest and report).
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import dataclasses
import datetime
import logging
import os
import re
import shutil
import signal
import sys
import tempfile
import time
import traceback

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import (
    GoogleCloudOptions,
    PipelineOptions,
    StandardOptions,
    TestOptions,
)
from apache_beam.runners.runner import PipelineState

from models.errors import one_line
from pipeline import output as outdir
from pipeline.errors import ConfigError, Interrupted, RunFailed
from pipeline.graph import build
from pipeline.lineage import Dataset, Lineage, job_name_for
from pipeline.manifest import (
    Counts,
    CountsDisagree,
    build_manifest,
    counts_from,
    input_changes,
)
from pipeline.options import ScoringOptions, help_text
from pipeline.output import MANIFEST, LockLost, OutputDir
from pipeline.prepare import Launch, prepare
from pipeline.tracking import RunLog, close_abandoned
from transforms.emulators import anonymous_if_emulated
from transforms.errors import STAGES
from transforms.predict import share_with_workers
from transforms.profile import PSI_WARNING
from transforms.summary import SUMMARY_FILE

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
    errors_summary: dict | None = None
    profile: dict | None = None
    lineage_sent: list[str] | None = None  # events not sent (None: lineage is off)


@dataclasses.dataclass
class _Run:
    """A launched run: its decisions, options, output directory and trackers."""

    launch: Launch
    options: PipelineOptions
    runner: str
    out: OutputDir
    started: datetime.datetime
    clock: float
    tracker: RunLog | None = None
    lineage: Lineage | None = None


def run(argv: list[str] | None = None, test_pipeline: beam.Pipeline | None = None) -> ScoringResult:
    """Scores the input and commits predictions, errors, the manifest and the report.

    Args:
        argv: command-line flags (ours and Beam's); sys.argv[1:] when None.
        test_pipeline: a pipeline to build into instead of a new one (tests).

    Returns:
        The run's result; raises ConfigError (exit 2), RunFailed (exit 3) or Interrupted.
    """
    options = parse_options(list(sys.argv[1:] if argv is None else argv))
    if _dry_run(options):
        return _translate_only(options, test_pipeline)
    job = launch(options)
    try:
        result = score(job, test_pipeline)
        res = finalize(job, result)
    except BaseException as e:
        stopped = isinstance(e, (KeyboardInterrupt, Interrupted))
        with contextlib.suppress(AttributeError):  # main() says what DIR holds now
            e.commit_state = (_commit_state(job.out), job.out.path)
        job.out.discard_staging()
        if job.tracker is not None:
            job.tracker.abort("KILLED" if stopped else "FAILED")
        if job.lineage is not None:
            inputs = lineage_inputs(job.launch)
            if stopped:
                job.lineage.abort(inputs)
            else:
                job.lineage.fail(one_line(e, with_type=not isinstance(e, RunFailed)), inputs)
        raise
    finally:
        job.out.release_lock()
    try:
        if job.lineage is not None:
            job.lineage.complete(*lineage_done(job.launch, res.manifest), res.manifest["status"])
            res.lineage_sent = list(job.lineage.not_sent)
        if job.tracker is not None:
            report = job.out.join(outdir.REPORT) if res.manifest.get("report") else None
            res.mlflow_logged = job.tracker.finish(
                res.manifest, res.profile, res.errors_summary, res.seconds, report
            )
    except BaseException as e:
        with contextlib.suppress(AttributeError):
            e.commit_state = ("committed", job.out.path)
        raise
    return res


def _commit_state(out: OutputDir) -> str:
    if out.committed:
        return "committed"
    return "half" if out.journaled else "none"


# ---------------------------------------------------------------------------------------------
# The command line


def parse_options(argv: list[str]) -> PipelineOptions:
    """Beam's options from the command line, once nothing on it would be dropped silently: an
    unknown flag, a word that belongs to no flag (an unquoted glob the shell expanded), a flag
    given twice."""
    parser = _parser()
    _, rest = parser.parse_known_args(argv)
    for word in rest:
        if word.startswith("-"):
            raise ConfigError(f"unknown flag {word.split('=', 1)[0]} (see --help and the README)")
        raise ConfigError(
            f"unexpected word {word!r} on the command line: quote a file pattern "
            "(--input 'dir/*.parquet') so the shell does not expand it into many words"
        )
    single = {
        s
        for action in parser._actions
        if not isinstance(action, argparse._AppendAction)
        for s in action.option_strings
    }
    seen: set[str] = set()
    for word in argv:
        flag = word.split("=", 1)[0]
        if flag in single and flag.startswith("--"):
            if flag in seen:
                raise ConfigError(f"{flag} is given more than once")
            seen.add(flag)
    anonymous_if_emulated()
    options = PipelineOptions(argv)
    FileSystems.set_options(options)  # the launcher's own gs:// checks use the same options
    return options


class _OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad value is one `error:` line (exit 2), not a usage dump of every flag."""

    def error(self, message: str):
        raise ConfigError(f"{message} (see --help and the README)")


def _parser() -> argparse.ArgumentParser:
    """A parser of every flag some PipelineOptions subclass defines (ours and Beam's)."""
    parser = _OneLineParser(add_help=False, allow_abbrev=False)
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
    return parser


def _dry_run(options: PipelineOptions) -> bool:
    test = options.view_as(TestOptions)
    dry_run = str(test.dry_run).lower() in ("true", "1", "yes")
    test.dry_run = dry_run  # Beam takes any non-empty string as true
    return dry_run


# ---------------------------------------------------------------------------------------------
# Phase 1: launch


def launch(options: PipelineOptions) -> _Run:
    """Every check that can be made before scoring (exit 2/3), then DIR's lock."""
    started = datetime.datetime.now(datetime.UTC)
    clock = time.monotonic()
    runner = _runner(options)
    decided = prepare(options.view_as(ScoringOptions), staging_root=_staging_root(options, runner))
    _worker_installs(options, decided, runner)
    out = OutputDir(decided.output, decided.spec.run_id)
    job = _Run(decided, options, runner, out, started, clock)
    try:
        with _signals_held():  # a stop signal waits until the lock can be released again
            out.acquire_lock()
        if out.taken_over:
            close_abandoned(out.taken_over, decided.tracking_uri)
        if decided.mlflow_experiment:  # exit 3 (unreachable) or 2 (refused), before any work
            job.tracker = RunLog(decided.tracking_uri, decided.mlflow_experiment)
            job.tracker.start(decided, runner, _workers(options))
            out.update_lock(
                mlflow_run_id=job.tracker.run_id, mlflow_tracking_uri=decided.tracking_uri
            )
        out.recover()
        job.lineage = _lineage(decided)
        if job.lineage is not None:
            job.lineage.start(lineage_inputs(decided), lineage_outputs(decided))
    except BaseException as e:
        if job.tracker is not None:
            job.tracker.abort(
                "KILLED" if isinstance(e, (KeyboardInterrupt, Interrupted)) else "FAILED"
            )
        out.release_lock()
        raise
    return job


def _lineage(decided: Launch) -> Lineage | None:
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
    if len(files) > _LINEAGE_MAX_FILES:
        inputs = [
            Dataset(decided.input_pattern, rows=manifest["counts"]["rows_read"], files=len(files))
        ]
    else:
        inputs = [
            Dataset(f["path"], rows=None if f["failed"] else f["rows_read"], files=1) for f in files
        ]
    return inputs, lineage_outputs(decided, manifest)


def _runner(options: PipelineOptions) -> str:
    """The runner's name, once Beam knows it and the options it cannot run without are there
    (exit 2 before any work, not a failure once DIR is locked)."""
    from apache_beam.runners.runner import create_runner

    standard = options.view_as(StandardOptions)
    standard.runner = standard.runner or "DirectRunner"
    try:
        create_runner(standard.runner)
    except (ValueError, ImportError) as e:
        raise ConfigError(f"--runner {standard.runner}: {one_line(e)}") from e
    if "Dataflow" in standard.runner:
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
                f"{standard.runner} needs {', '.join(missing)} (run_dataflow.sh passes them)"
            )
        if not cloud.temp_location.startswith("gs://"):
            raise ConfigError(f"--temp_location must be a gs:// path, not {cloud.temp_location}")
        _remote_paths(standard.runner, options.view_as(ScoringOptions))
    return standard.runner


def _remote_paths(runner: str, opts: ScoringOptions) -> None:
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
            f"{runner}: {', '.join(local)}: Dataflow workers cannot read local paths; put "
            f"{'it' if len(local) == 1 else 'them'} in Cloud Storage (gs://...)"
        )


def _staging_root(options: PipelineOptions, runner: str) -> str | None:
    """Where remote workers find a staged MLflow model (None: the launcher's disk will do)."""
    if "Direct" in runner:
        return None
    return options.view_as(GoogleCloudOptions).temp_location


def _translate_only(options: PipelineOptions, test_pipeline) -> ScoringResult:
    """--dry_run=True: every launch check, then Beam translates the job; nothing is submitted,
    and DIR is not touched (not even locked)."""
    runner = _runner(options)
    if "Dataflow" not in runner:
        raise ConfigError(
            "--dry_run=True translates a Dataflow job; it needs --runner DataflowRunner"
        )
    clock = time.monotonic()
    decided = prepare(
        options.view_as(ScoringOptions), staging_root=_staging_root(options, runner), dry_run=True
    )
    _worker_installs(options, decided, runner)
    p = test_pipeline or beam.Pipeline(options=options)
    build(p, decided.spec, OutputDir(decided.output, decided.spec.run_id).staging)
    result = p.run()
    return ScoringResult(result, {}, 0, decided.output, time.monotonic() - clock, dry_run=True)


def _worker_installs(options: PipelineOptions, decided: Launch, runner: str) -> None:
    """Remote workers install beamscore from its sdist (--setup_file), without extras: a model
    that needs XGBoost or LightGBM (or shap, for --explain on a scikit-learn tree model) has them
    installed through a requirements file of the exact running versions, unless the user gave
    one, or a worker image of their own."""
    if "Direct" in runner:
        return
    from apache_beam.options.pipeline_options import SetupOptions, WorkerOptions

    from models.boosters import worker_requirements

    needed = worker_requirements(decided.model)
    if decided.spec.explain is not None and decided.spec.explain.method == "shap_tree":
        from models.boosters import pins

        needed.extend(pins(["shap"]))  # --explain's TreeExplainer (beamscore[explain])
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


def _workers(options: PipelineOptions) -> str:
    """How many workers the runner was asked for, as the runner's own flag says it."""
    flags = options.get_all_options()
    for name in ("direct_num_workers", "max_num_workers", "num_workers"):
        if flags.get(name):
            return f"{name}={flags[name]}"
    return "default"


# ---------------------------------------------------------------------------------------------
# Phase 2: score


def score(job: _Run, test_pipeline: beam.Pipeline | None = None):
    """Runs the Beam pipeline to the end; any failure is a RunFailed (the old output stays)."""
    spec = job.launch.spec
    _launch_decided()
    _LOG.info(
        "run %s: scoring %s files matching %s with %s (version %s)",
        spec.run_id,
        spec.input_format,
        spec.input_pattern,
        spec.model.uri,
        spec.model.version,
    )
    if "Direct" in job.runner:  # in-process workers take the launcher's model, not a new load
        share_with_workers(spec.model.sha256, job.launch.model)
    p = test_pipeline or beam.Pipeline(options=job.options)
    build(p, spec, job.out.staging)
    result = None
    try:
        result = p.run()
        state = result.wait_until_finish()
    except (KeyboardInterrupt, Interrupted):
        if result is not None and "Direct" not in job.runner:
            _cancel(result)
        raise
    except Exception as e:  # noqa: BLE001 - whatever stopped the run, the old output stays
        if _SIGNALS:  # Beam wraps the interrupt raised inside a bundle
            raise Interrupted(_SIGNALS[0]) from None
        raise RunFailed(
            f"the run could not complete: {one_line(e, 500, with_type=True, innermost=True)}"
        ) from e
    if state not in (PipelineState.DONE, None):
        raise RunFailed(f"the run ended in state {state}")
    return result


def _cancel(result) -> None:
    """Cancels a remote job the launcher stops waiting for (Dataflow would go on without it)."""
    try:
        result.cancel()
        _LOG.warning("cancelled the job")
    except Exception as e:  # noqa: BLE001 - say so: the user must cancel it by hand
        _LOG.error("could not cancel the job, cancel it by hand: %s", one_line(e))


# ---------------------------------------------------------------------------------------------
# Phase 3: finalize


def finalize(job: _Run, result) -> ScoringResult:
    """Reconciles the counts, loads BigQuery, and commits the output with its manifest."""
    launch_, out = job.launch, job.out
    run_summary = out.read_staged(SUMMARY_FILE)
    if run_summary is None:
        raise RunFailed(f"the run ended without its summary ({SUMMARY_FILE}); nothing committed")
    counts = counts_from(result, run_summary["counts"])
    try:
        counts.check()
    except CountsDisagree as e:
        raise RunFailed(f"the run's counts do not reconcile, nothing was committed: {e}") from e
    changed = input_changes(launch_.fingerprints, counts.files)
    if changed:
        raise RunFailed(
            f"the input changed while the run read it ({changed}); nothing was committed: "
            "rerun once the input is complete"
        )
    status = "succeeded"
    if counts.files_failed or counts.error_rate > launch_.max_error_rate:
        status = "failed"
    files = out.staged_files(run_summary)
    outputs = {d: [f for f in files if f.startswith(d + "/")] for d in ("predictions", "errors")}
    profile, errors_summary = run_summary["profile"], run_summary["errors"]
    extra: dict = {}
    if launch_.spec.baseline and profile.get("drift"):
        extra["drift"] = profile["drift"]
    if launch_.spec.explain is not None:
        extra["explain"] = {
            **launch_.spec.explain.manifest(),
            "top_reasons": profile.get("top_reasons") or [],
        }
    if job.tracker is not None:
        extra["mlflow_run_id"] = job.tracker.run_id
    _check_lock(out)
    extra.update(_load_bigquery(launch_, out, files, counts, status))
    seconds = time.monotonic() - job.clock
    manifest = build_manifest(
        launch=launch_,
        counts=counts,
        status=status,
        started_at=job.started.isoformat(),
        finished_at=datetime.datetime.now(datetime.UTC).isoformat(),
        seconds=seconds,
        runner=job.runner,
        outputs=outputs,
        extra=extra,
    )
    _check_lock(out)
    try:
        with _signals_held():
            out.commit(manifest, files, profile=profile, errors_summary=errors_summary)
    except Exception as e:  # a storage error: retryable, and the message says what DIR holds
        loaded = [extra[k]["table"] for k in ("bigquery", "bigquery_errors") if extra.get(k)]
        bigquery = (
            f"; BigQuery already holds this run's rows in {', '.join(loaded)} (the rerun "
            "replaces them)"
            if loaded
            else ""
        )
        if out.journaled:  # the journal is written: the next run of this command finishes it
            raise RunFailed(
                f"committing the output stopped half-way ({one_line(e, with_type=True)}): "
                f"{_INCOMPLETE.format(out.path)}{bigquery}"
            ) from e
        raise RunFailed(
            f"committing the output failed before it began ({one_line(e, with_type=True)}): "
            f"nothing was committed, {out.path} holds the previous output{bigquery}"
        ) from e
    code = 0 if status == "succeeded" else 1
    return ScoringResult(
        result,
        manifest,
        code,
        launch_.output,
        seconds,
        errors_summary=errors_summary,
        profile=profile,
    )


def _check_lock(out: OutputDir) -> None:
    try:
        out.check_lock()
    except LockLost as e:
        raise RunFailed(f"this run lost the lock of {out.path} ({e}); nothing was committed") from e


def _load_bigquery(
    launch_: Launch, out: OutputDir, files: list[str], counts: Counts, status: str
) -> dict:
    """Loads the staged predictions (a succeeded run only) and errors (every run that completed)
    into BigQuery, in one transaction.

    Returns:
        The manifest entries (`bigquery`, `bigquery_errors`).
    """
    from pipeline.bigquery import errors_to_parquet, replace_partitions

    def staged(directory: str) -> list[str]:  # by the names relative to DIR, not the full path
        return [FileSystems.join(out.staging, f) for f in files if f.startswith(directory + "/")]

    keys, loads = [], []
    if launch_.bigquery is not None and status == "succeeded":
        keys.append("bigquery")
        loads.append((launch_.bigquery, staged("predictions"), counts.rows_predicted))
    with tempfile.TemporaryDirectory(prefix="beamscore-errors-") as tmp:
        if launch_.bigquery_errors is not None:
            table = os.path.join(tmp, "errors.parquet")
            try:
                records = errors_to_parquet(staged("errors"), table)
            except Exception as e:  # noqa: BLE001 - nothing is loaded yet: retryable
                raise RunFailed(f"could not read the errors output for BigQuery: {e}") from e
            keys.append("bigquery_errors")
            loads.append((launch_.bigquery_errors, [table] if records else [], records))
        if not loads:
            return {}
        return dict(zip(keys, replace_partitions(loads, launch_.run_date, launch_.spec.run_id)))


# ---------------------------------------------------------------------------------------------
# What a person reads


def _files(n: int) -> str:
    return f"{n:,} file" if n == 1 else f"{n:,} files"


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
    if not c["rows_read"] and not m["files_failed"]:
        lines.append(f"  WARNING: no rows: every input file is empty ({_files(len(m['inputs']))})")
    if m["files_failed"]:
        lines.append(f"  files that could not be read: {', '.join(m['files_failed'])}")
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
        lines.append(f"  report:      {launch_output}/{outdir.REPORT}")
    else:
        lines.append("  report:      NOT written (see the warning above)")
    if m.get("mlflow_run_id"):
        state = "logged" if res.mlflow_logged else "NOT fully logged (see the warnings above)"
        lines.append(f"  mlflow run:  {m['mlflow_run_id']} ({state})")
    if res.lineage_sent is not None:
        state = f"NOT sent ({', '.join(res.lineage_sent)})" if res.lineage_sent else "sent"
        lines.append(f"  lineage:     {state}")
    return "\n".join(lines)


_SIGNALS: list[int] = []  # the stop signal this process received (one at most)
_HELD: list[bool] = []  # not empty while a stop signal must wait (the commit)


class _LaunchLogHeld(logging.Filter):
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


_LAUNCH_LOG: list[_LaunchLogHeld] = []  # set by main() while the launch decides


def _launch_decided() -> None:
    """The launch went through: the INFO lines it held are written now, in order."""
    while _LAUNCH_LOG:
        _LAUNCH_LOG.pop().release(show=True)


class _QuietAfterSignal(logging.Filter):
    """Drops Beam's error logs (with their tracebacks) of a bundle a stop signal interrupted."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (_SIGNALS and record.name.startswith("apache_beam"))


@contextlib.contextmanager
def _signals_stop_the_run():
    """SIGINT (Ctrl-C) and SIGTERM (what schedulers send to stop a task) stop the run: it
    commits nothing, and exits 128 + the signal's number."""

    def stop(signum, _frame):
        if not _SIGNALS:
            _SIGNALS.append(signum)
            if not _HELD:
                raise Interrupted(signum)

    quiet = _QuietAfterSignal()
    handlers = list(logging.getLogger().handlers)
    for handler in handlers:
        handler.addFilter(quiet)
    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        for handler in handlers:
            handler.removeFilter(quiet)
        _SIGNALS.clear()


@contextlib.contextmanager
def _signals_held():
    """A stop signal that arrives inside waits for the block to end, then stops the run: the
    commit is never left half done by SIGINT or SIGTERM."""
    _HELD.append(True)
    try:
        yield
    finally:
        _HELD.pop()
    if _SIGNALS:
        raise Interrupted(_SIGNALS[0])


_INCOMPLETE = "{} is incomplete until this command runs again, which finishes the commit first"


def _what_dir_holds(e: BaseException) -> str:
    """What a run that ended in `e` left in its output directory, as run() noted it."""
    state, path = getattr(e, "commit_state", ("none", None))
    if state == "committed":
        return f"this run's output had been committed before the stop: {path} holds it complete"
    if state == "half":
        return f"the commit stopped half-way: {_INCOMPLETE.format(path)}"
    return "nothing was committed, the previous output is intact"


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit code of the contract."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--help" in argv or "-h" in argv:
        print(help_text())
        return 0
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    for noisy in ("apache_beam", "google", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # Missing credentials are the error line itself; the auth library's own warning repeats it.
    logging.getLogger("google.auth").setLevel(logging.ERROR)
    # With no errors the errors sink has nothing to finalize, which it warns about.
    logging.getLogger("apache_beam.io.filebasedsink").setLevel(logging.ERROR)
    held = _LaunchLogHeld()
    held.hold()
    _LAUNCH_LOG.append(held)
    try:
        with _signals_stop_the_run():
            res = run(argv)
    except ConfigError as e:  # one line: what the launcher logged on the way is not shown
        _LAUNCH_LOG.clear()
        held.release(show=False)
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except RunFailed as e:
        _launch_decided()
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except (KeyboardInterrupt, Interrupted) as e:
        _launch_decided()
        code = getattr(e, "exit_code", 128 + signal.SIGINT)
        reason = str(e) or "interrupted by SIGINT"
        print(f"error: {reason}; {_what_dir_holds(e)}", file=sys.stderr)
        return code
    except Exception as e:  # noqa: BLE001 - a bug: one line for the person, the trace in a file
        _launch_decided()
        with tempfile.NamedTemporaryFile(
            "w", prefix="beamscore-traceback-", suffix=".txt", delete=False
        ) as f:
            traceback.print_exc(file=f)
        print(
            f"error: internal error (a bug in beamscore, please report it): "
            f"{one_line(e, with_type=True)}; traceback in {f.name}; {_what_dir_holds(e)}",
            file=sys.stderr,
        )
        return 4
    _launch_decided()  # a run that never reached scoring (a dry run) still shows them
    if res.dry_run:
        job = getattr(res.pipeline_result, "job", None)
        name = job.google_cloud_options.job_name if job is not None else "?"
        print(f"DRY RUN: Dataflow job {name} translated, not submitted; the output was not touched")
        return 0
    print(summary(res, res.output))
    return res.exit_code


if __name__ == "__main__":
    sys.exit(main())
