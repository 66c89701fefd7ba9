"""Entry point: `python -m pipeline.run --input ... --model ... --output ... [Beam options]`.

`run` reads as its three phases: `launch` (flags, every check that can be made before scoring,
the output directory's lock), `score` (the Beam pipeline, whose last stage commits the output:
counts reconciled, sinks loaded, the output committed with its manifest and report; see
pipeline.commit), `finalize` (what the job left in DIR, read back as an exit code). With
`--wait false` the launcher returns once the job is submitted: the job owns DIR's lock and
finishes its night alone.
"""

from __future__ import annotations

import gc

if __name__ == "__main__":
    # What the launcher imports and loads (Beam, the model's library, the model) lives as long
    # as the process: the cyclic collector would scan it again and again while it grows (about
    # 1 s of a small night on 2 cores, measured alternated). It runs from the pipeline's start,
    # with all this frozen out of its reach (_collect_from_here).
    gc.disable()

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
from pipeline.commit import INCOMPLETE, CommitPlan, plan_for, read_outcome
from pipeline.console import LAUNCH_LOG, LaunchLogHeld, dry_run_summary, launch_decided, summary
from pipeline.errors import ConfigError, Interrupted, RunEnded, RunFailed, report_bug
from pipeline.flags import OneLineParser
from pipeline.graph import build
from pipeline.launch import Launch, decide
from pipeline.lock import RunLock
from pipeline.nights import Nights
from pipeline.observers.openlineage import LineageEvents
from pipeline.options import ScoringOptions, help_text, wait_for_job
from pipeline.output import MANIFEST, read_json
from pipeline.runners import Runner, runner_for
from pipeline.signals import SIGNALS as _SIGNALS
from pipeline.signals import signals_held as _signals_held
from pipeline.signals import stop_the_run
from pipeline.staging import Staging
from pipeline.tracking import close_abandoned
from transforms.emulators import anonymous_if_emulated
from transforms.predict import share_with_workers

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
    lock: RunLock
    staging: Staging
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
        dir_state = job.staging.known_state()
        if dir_state == "none":  # unknown: it may hold the journal the next run needs
            try:
                job.staging.discard()
            except Exception as gone:  # noqa: BLE001 - as above
                _LOG.warning(
                    "could not remove %s: %s", job.staging.dir, one_line(gone, with_type=True)
                )
        if not (isinstance(e, RunFailed) and e.told):  # the commit stage told them itself
            message = one_line(e, with_type=not isinstance(e, RunFailed))
            for observer in job.observers:
                observer.failed(message, stopped)
        if isinstance(e, (ConfigError, RunFailed)):
            raise
        raise RunEnded(e, dir_state, job.staging.path) from e  # main() says what DIR holds
    finally:
        if not submitted:
            job.lock.release()


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
    lock = RunLock(decided.output, decided.spec.run_id)
    staging = Staging(decided.output, decided.spec.run_id)
    job = _Run(decided, options, runner, lock, staging, started, clock, wait=wait, nights=nights)
    try:
        with _signals_held():  # a stop signal waits until the lock can be released again
            lock.acquire()
        if lock.taken_over:
            close_abandoned(lock.taken_over, decided.tracking_uri)
        started = observing.Started(decided, runner.name, _workers(options), lock)
        for observer in observing.for_launch(decided):  # exit 3 (unreachable) or 2 (refused)
            job.observers.append(observer)  # told it failed, should it fail to start
            observer.started(started)
        staging.recover()
    except BaseException as e:
        stopped = isinstance(e, (KeyboardInterrupt, Interrupted))
        for observer in job.observers:
            observer.failed(one_line(e, with_type=not isinstance(e, RunFailed)), stopped)
        lock.release()
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
    p = test_pipeline or beam.Pipeline(runner.beam_runner(options), options=options)
    started = datetime.datetime.now(datetime.UTC)
    plan = plan_for(decided, runner.name, started, launcher_waits=wait, nights=nights)
    build(p, decided.spec, Staging(decided.output, decided.spec.run_id).dir, plan)
    with runner.staging_turn(options):
        result = p.run()
    return ScoringResult(result, {}, 0, decided.output, time.monotonic() - clock, dry_run=True)


def _collect_from_here() -> None:
    """The cyclic collector on again (the entry point turned it off), with what the launch
    left alive frozen: its collections scan only what the pipeline allocates."""
    if not gc.isenabled():
        gc.freeze()
        gc.enable()


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
    launch_decided()
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
    p = test_pipeline or beam.Pipeline(job.runner.beam_runner(job.options), options=job.options)
    build(p, spec, job.staging.dir, job.plan)
    result = None
    if job.runner.in_process:
        _COMMITTING.append(job.staging)
    try:
        if not job.wait:
            job.lock.hand_to_job(_job_name(job.options, spec.run_id))
        with job.runner.staging_turn(job.options):
            _collect_from_here()
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
            raise RunFailed(outcome["error"], told=not job.wait) from e
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
_COMMITTING: list[Staging] = []


def _commit_begun() -> bool:
    """Whether a commit's journal is written (a signal then waits for the commit). Storage that
    cannot be read says no: the run stops, and says that what DIR holds is not known."""
    return any(staging.known_state() == "half" for staging in _COMMITTING)


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
    manifest = read_json(job.staging.join(MANIFEST)) or {}
    if manifest.get("run_id") != job.launch.spec.run_id:
        raise RunFailed(
            f"the job ended without committing its output ({job.staging.path} holds no manifest of "
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


def _what_dir_holds(ended: RunEnded | None) -> str:
    """What a run that ended (None: before its output directory was locked) left there."""
    if ended is not None and ended.dir_state == "committed":
        return (
            f"this run's output had been committed before the stop: {ended.path} holds it complete"
        )
    if ended is not None and ended.dir_state == "half":
        return f"the commit stopped half-way: {INCOMPLETE.format(ended.path)}"
    if ended is not None and ended.dir_state == "unknown":
        return (
            f"what {ended.path} holds could not be read; the next run of this command finishes "
            "this run's commit if it was begun"
        )
    return "nothing was committed, the previous output is intact"


def _stopped(e: BaseException, ended: RunEnded | None) -> int:
    """The one line of a run a stop signal ended, and its exit code (128 + the signal)."""
    code = getattr(e, "exit_code", 128 + signal.SIGINT)
    reason = str(e) or "interrupted by SIGINT"
    print(f"error: {reason}; {_what_dir_holds(ended)}", file=sys.stderr)
    return code


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
    held = LaunchLogHeld()
    held.hold()
    LAUNCH_LOG.append(held)
    try:
        with stop_the_run(_commit_begun):
            res = run(argv)
    except ConfigError as e:  # one line: what the launcher logged on the way is not shown
        LAUNCH_LOG.clear()
        held.release(show=False)
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except RunFailed as e:
        launch_decided()
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except RunEnded as ended:  # a signal or a bug, once DIR was locked
        launch_decided()
        if isinstance(ended.error, (KeyboardInterrupt, Interrupted)):
            return _stopped(ended.error, ended)
        return report_bug(ended.error, _what_dir_holds(ended))
    except (KeyboardInterrupt, Interrupted) as e:
        launch_decided()
        return _stopped(e, None)
    except Exception as e:  # noqa: BLE001 - a bug: one line for the person, the trace in a file
        launch_decided()
        return report_bug(e, _what_dir_holds(None))
    launch_decided()  # a run that never reached scoring (a dry run) still shows them
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
