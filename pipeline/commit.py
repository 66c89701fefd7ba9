"""The commit: the pipeline's last stage, a singleton step after the run summary.

It does what the launcher used to do once the job was over, so that a job launched by a Flex
Template, Cloud Scheduler or Composer finishes its own night with no launcher waiting: counts
reconciled, the input checked unchanged, BigQuery loaded (predictions of a succeeded run, errors
of every run that completed), the report rendered, the staged files moved into DIR with the
report and the manifest (through the journal of pipeline.staging), MLflow and OpenLineage told,
and, when no launcher waits, DIR's lock released.

It is idempotent: a retry of its bundle, or a rerun of it after a crash inside it, finds the
run's journal and finishes that same commit, or finds DIR already holding this run's manifest.
A failed commit fails the job (the step raises), with the message a person reads; a launcher
that waits (--wait true) reads that message from `CommitPlan.outcome` and exits as before.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import logging
import os
import tempfile
import time

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from models.errors import one_line
from pipeline.errors import Interrupted, RunFailed
from pipeline.history import prediction_summary
from pipeline.launch import Launch
from pipeline.lock import LockLost, RunLock, keep_job_lock
from pipeline.manifest import Counts, CountsDisagree, build_manifest, input_changes
from pipeline.nights import Nights, evaluate
from pipeline.observers import Finished
from pipeline.output import MANIFEST, REPORT, read_json, write_json
from pipeline.signals import signals_held
from pipeline.staging import Staging
from transforms.summary import SUMMARY_FILE

_LOG = logging.getLogger(__name__)

INCOMPLETE = "{} is incomplete until this command runs again, which finishes the commit first"


@dataclasses.dataclass
class CommitPlan:
    """What the commit stage needs from the launcher; pickled into the job.

    Attributes:
        launch: the launch decisions, without the loaded model.
        runner: the Beam runner's name.
        started_at: when the launcher started (ISO 8601, UTC).
        started_s: the same, in seconds since the epoch (the stage may run on another machine).
        observers: the run's observers (pipeline.observers), as the launcher started them.
        outcome: where the stage writes what the launcher prints (None: nobody waits).
        launcher_waits: a launcher waits for the job: it releases the lock, and on a failure
            tells MLflow and OpenLineage, as it always did; otherwise the stage does.
        nights: the night checks and the job's previous nights (pipeline.nights), if decided.
        command: the command that reruns this night, for the report.
    """

    launch: Launch
    runner: str
    started_at: str
    started_s: float
    observers: tuple = ()
    outcome: str | None = None
    launcher_waits: bool = True
    nights: Nights | None = None
    command: str | None = None


def plan_for(launch: Launch, runner: str, started: datetime.datetime, **more) -> CommitPlan:
    """The plan of a launch: the model itself stays with the launcher."""
    return CommitPlan(
        dataclasses.replace(launch, model=None),
        runner,
        started.isoformat(),
        started.timestamp(),
        **more,
    )


class CommitFn(beam.DoFn):
    """The commit stage's step: takes the run summary's path, yields the committed manifest."""

    def __init__(self, plan: CommitPlan):
        self._plan = plan

    def process(self, summary_path: str):
        yield commit_run(self._plan)


class KeepLock(beam.DoFn):
    """Passes elements through; its setup keeps a job-owned lock fresh from each worker
    process (pipeline.lock.keep_job_lock) while the job runs without a waiting launcher."""

    def __init__(self, output: str, run_id: str):
        self._output = output
        self._run_id = run_id

    def setup(self) -> None:
        keep_job_lock(self._output, self._run_id)

    def process(self, element):
        yield element


def commit_run(plan: CommitPlan) -> dict:
    """The commit stage's work, whole: the manifest DIR holds once it is done.

    A failure raises (the job fails) after writing its message to `plan.outcome`; when no
    launcher waits, it also ends the MLflow run, sends the OpenLineage FAIL event and marks the
    lock ended, so the next run need not wait for it to go stale.
    """
    launch_ = plan.launch
    lock = RunLock(launch_.output, launch_.spec.run_id)
    staging = Staging(launch_.output, launch_.spec.run_id)
    try:
        with signals_held():  # on the DirectRunner the launcher's signals wait for the commit
            manifest, profile, errors_summary = _commit(plan, staging, lock)
    except BaseException as e:
        stopped = isinstance(e, (KeyboardInterrupt, Interrupted))
        message = str(e) if isinstance(e, RunFailed) else one_line(e, with_type=True)
        _write_outcome(plan, {"error": message, "stopped": stopped})
        if not plan.launcher_waits:
            for observer in plan.observers:
                observer.failed(message, stopped)
            if staging.known_state() == "none":  # unknown: the lock is left to go stale
                _safely("mark the lock ended", lock.mark_ended, message)
        raise
    outcome: dict = {"errors_summary": _brief(errors_summary)}
    report = staging.join(REPORT) if manifest.get("report") else None
    night = Finished(launch_, manifest, profile, errors_summary, report)
    for observer in plan.observers:
        outcome.update(observer.finished(night))
    if not plan.launcher_waits:  # a waiting launcher, whose heartbeat runs, releases it
        lock.release()
        for check in manifest.get("failed_checks") or []:  # the job's log: nobody prints them
            _LOG.warning("night check failed: %s: %s", check["check"], check["message"])
    _write_outcome(plan, outcome)
    return manifest


def _commit(
    plan: CommitPlan, staging: Staging, lock: RunLock
) -> tuple[dict, dict | None, dict | None]:
    """Commits the run (or finishes its commit); returns the manifest, profile, errors brief."""
    journal = staging.journal()
    if journal is not None:  # a retry, or a rerun after a crash: finish that same commit
        _LOG.warning("finishing the commit of run %s from its journal", staging.run_id)
        _adopt_lock(lock)
        _move_committed(staging, lambda: staging.finish(journal))
        return journal["manifest"], None, None
    committed = read_json(staging.join(MANIFEST)) or {}
    if committed.get("run_id") == staging.run_id:  # a retry after the commit itself was done
        staging.committed = True
        staging.delete()  # what a retried summary step wrote again
        with contextlib.suppress(LockLost):  # done already: a lock gone is no failure
            lock.adopt()
        return committed, None, None
    launch_ = plan.launch
    run_summary = staging.read(SUMMARY_FILE)
    if run_summary is None:
        raise RunFailed(f"the run ended without its summary ({SUMMARY_FILE}); nothing committed")
    counts = Counts(run_summary.get("totals", {}), run_summary["counts"])
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
    files = staging.staged_files(run_summary)
    outputs = {d: [f for f in files if f.startswith(d + "/")] for d in ("predictions", "errors")}
    profile, errors_summary = run_summary["profile"], run_summary["errors"]
    extra: dict = {}
    if launch_.spec.baseline and profile.get("drift"):
        extra["drift"] = profile["drift"]
    extra.update(_night(plan.nights, counts, extra.get("drift"), profile, launch_))
    if extra["failed_checks"]:
        status = "failed"
    extra["output"] = launch_.output
    if plan.command:
        extra["rerun_command"] = plan.command
    if launch_.spec.explain is not None:
        extra["explain"] = {
            **launch_.spec.explain.manifest(),
            "top_reasons": profile.get("top_reasons") or [],
        }
    for observer in plan.observers:
        extra.update(observer.manifest())
    _adopt_lock(lock)
    extra.update(_load_bigquery(launch_, staging, files, counts, status))
    seconds = time.time() - plan.started_s
    manifest = build_manifest(
        launch=launch_,
        counts=counts,
        status=status,
        started_at=plan.started_at,
        finished_at=datetime.datetime.now(datetime.UTC).isoformat(),
        seconds=seconds,
        runner=plan.runner,
        outputs=outputs,
        extra=extra,
    )
    _adopt_lock(lock)

    if _write_report(staging, manifest, profile, errors_summary):
        files = [*files, REPORT]
        manifest["report"] = REPORT
    loaded = [extra[k]["table"] for k in ("bigquery", "bigquery_errors") if extra.get(k)]
    _move_committed(staging, lambda: staging.commit(manifest, files), loaded)
    return manifest, profile, errors_summary


def _night(nights: Nights | None, counts: Counts, drift, profile: dict, launch_: Launch) -> dict:
    """The manifest's night sections: the prediction in one number, the night checks (failed
    and skipped), the features left out of drift, and the previous nights it was compared with."""
    failed, skipped = evaluate(nights, counts.rows_read, drift, launch_.input_fingerprint)
    nights = nights or Nights()
    return {
        "repeated_input": nights.repeated(launch_.input_fingerprint),
        "prediction_summary": prediction_summary(profile, launch_.spec.facts.classes),
        "checks": {
            **nights.limits(),
            **({"refuse_repeated_input": True} if nights.refuse_repeated_input else {}),
            "skipped": skipped,
        },
        "failed_checks": failed,
        "drift_exclude": list(nights.drift_exclude),
        "history": {
            "source": nights.history_source,
            "nights": list(nights.history),
            "ignored": list(nights.history_ignored),
        },
    }


def _move_committed(staging: Staging, commit, loaded: list[str] = ()) -> None:
    """Runs the commit's moves; a storage error is RunFailed saying what DIR holds now."""
    try:
        commit()
    except Exception as e:  # a storage error: retryable, and the message says what DIR holds
        bigquery = (
            f"; BigQuery already holds this run's rows in {', '.join(loaded)} (the rerun "
            "replaces them)"
            if loaded
            else ""
        )
        if staging.journaled:  # the journal is written: the next run of this command finishes it
            raise RunFailed(
                f"committing the output stopped half-way ({one_line(e, with_type=True)}): "
                f"{INCOMPLETE.format(staging.path)}{bigquery}"
            ) from e
        raise RunFailed(
            f"committing the output failed before it began ({one_line(e, with_type=True)}): "
            f"nothing was committed, {staging.path} holds the previous output{bigquery}"
        ) from e


def _adopt_lock(lock: RunLock) -> None:
    try:
        lock.adopt()
    except LockLost as e:
        raise RunFailed(
            f"this run lost the lock of {lock.path} ({e}); nothing was committed"
        ) from e


def _load_bigquery(
    launch_: Launch, staging: Staging, files: list[str], counts: Counts, status: str
) -> dict:
    """Loads the staged predictions (a succeeded run only) and errors (every run that completed)
    into BigQuery, in one transaction.

    Returns:
        The manifest entries (`bigquery`, `bigquery_errors`).
    """
    from pipeline.bigquery import errors_to_parquet, replace_partitions

    def staged(directory: str) -> list[str]:  # by the names relative to DIR, not the full path
        return [FileSystems.join(staging.dir, f) for f in files if f.startswith(directory + "/")]

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


def _write_report(staging: Staging, manifest: dict, profile, errors_summary) -> bool:
    """Renders report.html into the staging directory; a report that cannot be made is a
    warning, never a reason to lose the run."""
    from pipeline.report import render_report

    try:
        page = render_report(manifest, profile, (errors_summary or {}).get("groups", []))
        with FileSystems.create(FileSystems.join(staging.dir, REPORT), mime_type="text/html") as f:
            f.write(page.encode("utf-8"))
    except Exception as e:  # noqa: BLE001 - the report is a view of the manifest, not data
        _LOG.warning("could not write %s: %s", REPORT, one_line(e, with_type=True))
        return False
    return True


def _brief(errors_summary: dict | None) -> dict | None:
    """The errors in brief as the launcher's closing lines show them (the first groups)."""
    if errors_summary is None:
        return None
    groups = errors_summary.get("groups", [])[:3]
    return {"groups": [{**g, "examples": g["examples"][:1]} for g in groups]}


def _write_outcome(plan: CommitPlan, outcome: dict) -> None:
    if plan.outcome:
        _safely("write the commit's outcome", write_json, plan.outcome, outcome)


def _safely(what: str, fn, *args) -> None:
    try:
        fn(*args)
    except Exception as e:  # noqa: BLE001 - what the launcher prints, not the run's data
        _LOG.warning("could not %s: %s", what, one_line(e, with_type=True))


def read_outcome(path: str | None) -> dict:
    """What the commit stage left for a waiting launcher ({} when it left nothing)."""
    if not path:
        return {}
    try:
        outcome = read_json(path) or {}
        FileSystems.delete([path])
    except Exception:  # noqa: BLE001 - nothing there: the stage never ran
        return {}
    return outcome
