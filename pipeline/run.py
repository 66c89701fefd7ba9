"""Entry point: `python -m pipeline.run --input ... --model ... --output ... [Beam options]`.

`run` reads as its three phases: `launch` (flags, every check that can be made before scoring,
the output directory's lock), `score` (the Beam pipeline, whose last stage commits the output:
counts reconciled, sinks loaded, the output committed with its manifest and report; see
pipeline.commit), `finalize` (what the job left in DIR, read back as an exit code). With
`--wait false` the launcher returns once the job is submitted: the job owns DIR's lock and
finishes its night alone.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import logging
import os
import re
import shlex
import signal
import sys
import tempfile
import time

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import (
    GoogleCloudOptions,
    PipelineOptions,
    TestOptions,
)
from apache_beam.runners.runner import PipelineState

from models.errors import launch_deadline_s, one_line
from pipeline import observers as observing
from pipeline import output as outdir
from pipeline.commit import INCOMPLETE, CommitPlan, plan_for, read_outcome
from pipeline.errors import ConfigError, Interrupted, RunFailed, report_bug
from pipeline.flags import OneLineParser
from pipeline.graph import build
from pipeline.launch import Launch, decide
from pipeline.nights import Nights
from pipeline.observers.openlineage import LineageEvents
from pipeline.options import ScoringOptions, help_text, wait_for_job
from pipeline.output import MANIFEST, OutputDir, read_json
from pipeline.runners import Runner, runner_for
from pipeline.signals import HELD as _HELD
from pipeline.signals import SIGNALS as _SIGNALS
from pipeline.signals import signals_held as _signals_held
from pipeline.tracking import close_abandoned
from transforms.emulators import anonymous_if_emulated
from transforms.errors import STAGES
from transforms.predict import share_with_workers
from transforms.profile import PSI_WARNING

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
    lineage_sent: list[str] | None = None  # events not sent (None: lineage is off)
    submitted: str | None = None  # --wait false: the job's id (the launcher did not wait)


@dataclasses.dataclass
class _Run:
    """A launched run: its decisions, options, output directory and observers."""

    launch: Launch
    options: PipelineOptions
    runner: Runner
    out: OutputDir
    started: datetime.datetime
    clock: float
    observers: list[observing.Observer] = dataclasses.field(default_factory=list)
    wait: bool = True
    plan: CommitPlan | None = None
    nights: Nights | None = None
    command: str | None = None


def run(argv: list[str] | None = None, test_pipeline: beam.Pipeline | None = None) -> ScoringResult:
    """Scores the input and commits predictions, errors, the manifest and the report.

    Args:
        argv: command-line flags (ours and Beam's); sys.argv[1:] when None.
        test_pipeline: a pipeline to build into instead of a new one (tests).

    Returns:
        The run's result; raises ConfigError (exit 2), RunFailed (exit 3) or Interrupted.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    options = parse_options(argv)
    if _dry_run(options):
        return _translate_only(options, test_pipeline)
    job = launch(options)
    submitted = False
    try:
        job.command = rerun_command(argv, job.launch.run_date)
        result = score(job, test_pipeline)
        if not job.wait:
            submitted = True  # the job holds the lock now, and releases it itself
            if not job.runner.done_on_return:
                return _submitted(job, result)
        # The job ended (with --wait false too, where the runner ran it to its end): its
        # outcome is the night's, said and returned as when the launcher waits.
        return finalize(job, result)
    except BaseException as e:
        stopped = isinstance(e, (KeyboardInterrupt, Interrupted))
        with contextlib.suppress(AttributeError):  # main() says what DIR holds now
            e.commit_state = (job.out.commit_state(), job.out.path)
        job.out.discard_staging()
        if not getattr(e, "told", False):  # the commit stage told the observers itself
            message = one_line(e, with_type=not isinstance(e, RunFailed))
            for observer in job.observers:
                observer.failed(message, stopped)
        raise
    finally:
        if not submitted:
            job.out.release_lock()


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
    try:
        launch_deadline_s()
    except ValueError as e:
        raise ConfigError(str(e)) from None
    anonymous_if_emulated()
    options = PipelineOptions(argv)
    FileSystems.set_options(options)  # the launcher's own gs:// checks use the same options
    return options


def _parser() -> argparse.ArgumentParser:
    """A parser of every flag some PipelineOptions subclass defines (ours and Beam's)."""
    parser = OneLineParser(add_help=False, allow_abbrev=False)
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
    runner = runner_for(options)
    wait = wait_for_job(options.view_as(ScoringOptions))
    decided, nights = decide(options, runner)
    out = OutputDir(decided.output, decided.spec.run_id)
    job = _Run(decided, options, runner, out, started, clock, wait=wait, nights=nights)
    try:
        with _signals_held():  # a stop signal waits until the lock can be released again
            out.acquire_lock()
        if out.taken_over:
            close_abandoned(out.taken_over, decided.tracking_uri)
        started = observing.Started(decided, runner.name, _workers(options), out)
        for observer in observing.for_launch(decided):  # exit 3 (unreachable) or 2 (refused)
            job.observers.append(observer)  # told it failed, should it fail to start
            observer.started(started)
        out.recover()
    except BaseException as e:
        stopped = isinstance(e, (KeyboardInterrupt, Interrupted))
        for observer in job.observers:
            observer.failed(one_line(e, with_type=not isinstance(e, RunFailed)), stopped)
        out.release_lock()
        raise
    return job


def rerun_command(argv: list[str], run_date: str) -> str:
    """The command that reruns this night: the same flags, with its --run_date made explicit.

    It is written into the manifest and the report (and MLflow's copies of them), so a URL's
    credentials and query (`https://user:token@host/?api_key=...`) are replaced by `***`.
    """
    words = [_without_secrets(w) for w in argv]
    if not any(w == "--run_date" or w.startswith("--run_date=") for w in words):
        words += ["--run_date", run_date]
    return f"cd {shlex.quote(os.getcwd())} && " + shlex.join(
        [sys.executable, "-m", "pipeline.run", *words]
    )


_URL = re.compile(r"(?P<head>(?:--[\w-]+=)?[A-Za-z][\w+.-]*://)(?P<rest>.*)")


def _without_secrets(word: str) -> str:
    """A word of the command line with a URL's user information and query replaced by ***."""
    m = _URL.fullmatch(word)
    if not m:
        return word
    rest = m["rest"]
    authority, slash, path = rest.partition("/")
    if "@" in authority:
        authority = "***@" + authority.rpartition("@")[2]
    rest = authority + slash + path
    web = m["head"].rpartition("=")[2].lower() in ("http://", "https://")
    if web and "?" in rest:  # elsewhere (gs://, file paths) a ? is a glob's wildcard
        rest = rest.split("?", 1)[0] + "?***"
    return m["head"] + rest


def _translate_only(options: PipelineOptions, test_pipeline) -> ScoringResult:
    """--dry_run=True: every launch check, then Beam translates the job; nothing is submitted,
    and DIR is not touched (not even locked)."""
    runner = runner_for(options)
    runner.check_dry_run()
    clock = time.monotonic()
    wait = wait_for_job(options.view_as(ScoringOptions))
    decided, nights = decide(options, runner, dry_run=True)
    p = test_pipeline or beam.Pipeline(options=options)
    started = datetime.datetime.now(datetime.UTC)
    plan = plan_for(decided, runner.name, started, launcher_waits=wait, nights=nights)
    build(p, decided.spec, OutputDir(decided.output, decided.spec.run_id).staging, plan)
    with runner.staging_turn(options):
        result = p.run()
    return ScoringResult(result, {}, 0, decided.output, time.monotonic() - clock, dry_run=True)


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
    """Runs the Beam pipeline, its commit stage included, to the end (with --wait false: until
    it is submitted); any failure is a RunFailed (the old output stays)."""
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
    if job.runner.in_process:  # in-process workers take the launcher's model, not a new load
        share_with_workers(spec.model.sha256, job.launch.model)
    job.plan = plan_for(
        job.launch,
        job.runner.name,
        job.started,
        observers=tuple(job.observers),
        outcome=_outcome_path(job),
        launcher_waits=job.wait,
        nights=job.nights,
        command=job.command,
    )
    p = test_pipeline or beam.Pipeline(options=job.options)
    build(p, spec, job.out.staging, job.plan)
    result = None
    if job.runner.in_process:
        _COMMITTING.append(job.out)
    try:
        if not job.wait:
            job.out.hand_lock_to_job(_job_name(job.options, spec.run_id))
        with job.runner.staging_turn(job.options):
            result = p.run()  # on Dataflow: returns once the job is submitted
        state = result.wait_until_finish() if job.wait else None
    except (KeyboardInterrupt, Interrupted):
        job.runner.stop(result)
        raise
    except Exception as e:  # noqa: BLE001 - whatever stopped the run, the old output stays
        if _SIGNALS:  # Beam wraps the interrupt raised inside a bundle
            raise Interrupted(_SIGNALS[0]) from None
        outcome = read_outcome(job.plan.outcome)
        if outcome.get("error"):  # the commit stage failed: its own words
            failed = RunFailed(outcome["error"])
            failed.told = not job.wait
            raise failed from e
        raise RunFailed(
            f"the run could not complete: {one_line(e, 500, with_type=True, innermost=True)}"
        ) from e
    finally:
        _COMMITTING.clear()
    if _SIGNALS:  # it arrived during the commit stage of a worker process, which finished
        raise Interrupted(_SIGNALS[0])
    if not job.wait:
        return result
    if state not in (PipelineState.DONE, None):
        outcome = read_outcome(job.plan.outcome)
        raise RunFailed(outcome.get("error") or f"the run ended in state {state}")
    return result


# The local output directories whose commit a stop signal waits for once its journal is written:
# on the DirectRunner with worker processes, the commit stage runs in another process than the
# launcher's handlers (in the launcher's own process, it holds them itself).
_COMMITTING: list[OutputDir] = []


def _commit_begun() -> bool:
    return any(out.commit_state() == "half" for out in _COMMITTING)


def _job_name(options: PipelineOptions, run_id: str) -> str:
    return options.view_as(GoogleCloudOptions).job_name or run_id


def _outcome_path(job: _Run) -> str | None:
    """Where the commit stage leaves what a waiting launcher prints: a local file for the
    DirectRunner's workers, under --temp_location for remote ones; None when nobody waits
    on a remote runner."""
    return job.runner.outcome_path(job.options, job.launch.spec.run_id, job.wait)


# ---------------------------------------------------------------------------------------------
# Phase 3: finalize


def finalize(job: _Run, result) -> ScoringResult:
    """What the job's commit stage left: DIR's manifest, read back as the exit code."""
    outcome = read_outcome(job.plan.outcome)
    manifest = read_json(job.out.join(MANIFEST)) or {}
    if manifest.get("run_id") != job.launch.spec.run_id:
        raise RunFailed(
            f"the job ended without committing its output ({job.out.path} holds no manifest of "
            f"run {job.launch.spec.run_id}); nothing was committed"
        )
    res = ScoringResult(
        result,
        manifest,
        0 if manifest["status"] == "succeeded" else 1,
        job.launch.output,
        manifest["duration_s"],
        mlflow_logged=outcome.get("mlflow_logged"),
        errors_summary=outcome.get("errors_summary"),
    )
    lineage = observing.find(job.observers, LineageEvents)
    if lineage is not None:
        res.lineage_sent = [*lineage.not_sent, *outcome.get("lineage_not_sent", [])]
    return res


def _submitted(job: _Run, result) -> ScoringResult:
    """--wait false: the job runs (on the DirectRunner: ran) without the launcher."""
    job_id = None
    with contextlib.suppress(Exception):
        job_id = result.job_id()
    return ScoringResult(
        result,
        {},
        0,
        job.launch.output,
        time.monotonic() - job.clock,
        submitted=job_id or _job_name(job.options, job.launch.spec.run_id),
    )


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


_LAUNCH_LOG: list[_LaunchLogHeld] = []  # set by main() while the launch decides


def _launch_decided() -> None:
    """The launch went through: the INFO lines it held are written now, in order."""
    while _LAUNCH_LOG:
        _LAUNCH_LOG.pop().release(show=True)


class _QuietAfterSignal(logging.Filter):
    """Drops Beam's error logs (with their tracebacks) of a bundle a stop signal interrupted,
    and of a commit stage that failed in this process (its message is the error line)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith("apache_beam"):
            return True
        if _SIGNALS:
            return False
        failed = record.exc_info[1] if record.exc_info else None
        if _is_stream_failure(failed):  # a BigQuery stream: the error line names it
            return False
        return not isinstance(failed, RunFailed) or "'Commit'" not in record.getMessage()


def _is_stream_failure(e: BaseException | None) -> bool:
    """Whether an exception is, or was raised from, a BigQuery stream that failed."""
    from transforms.read import StreamFailed

    seen = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, StreamFailed):
            return True
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return False


@contextlib.contextmanager
def _signals_stop_the_run():
    """SIGINT (Ctrl-C) and SIGTERM (what schedulers send to stop a task) stop the run: it
    commits nothing, and exits 128 + the signal's number."""

    def stop(signum, _frame):
        if not _SIGNALS:
            _SIGNALS.append(signum)
            if not _HELD and not _commit_begun():
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


def _what_dir_holds(e: BaseException) -> str:
    """What a run that ended in `e` left in its output directory, as run() noted it."""
    state, path = getattr(e, "commit_state", ("none", None))
    if state == "committed":
        return f"this run's output had been committed before the stop: {path} holds it complete"
    if state == "half":
        return f"the commit stopped half-way: {INCOMPLETE.format(path)}"
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
    for noisy in ("apache_beam", "google", "urllib3", "matplotlib", "mlflow", "alembic"):
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
        return report_bug(e, _what_dir_holds(e))
    _launch_decided()  # a run that never reached scoring (a dry run) still shows them
    if res.submitted is not None:
        print(
            f"SUBMITTED: job {res.submitted} runs and commits its output by itself; its "
            f"manifest will appear at {res.output}/{MANIFEST}"
        )
        return 0
    if res.dry_run:
        job = getattr(res.pipeline_result, "job", None)
        name = job.google_cloud_options.job_name if job is not None else "?"
        if job is not None:
            print(dry_run_summary(job))
        print(f"DRY RUN: Dataflow job {name} translated, not submitted; the output was not touched")
        return 0
    for check in res.manifest.get("failed_checks") or []:
        print(f"night check failed: {check['check']}: {check['message']}", file=sys.stderr)
    print(summary(res, res.output))
    return res.exit_code


if __name__ == "__main__":
    sys.exit(main())
