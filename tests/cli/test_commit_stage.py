"""The commit is the pipeline's last stage: a job launched without a waiting launcher (a Flex
Template, Cloud Scheduler, Composer) finishes its night alone; a retried or killed commit ends
in one correct commit; a lock the job owns is not taken over while the job runs."""

from __future__ import annotations

import datetime
import json
import os
import socket
import threading
import time
from pathlib import Path

import pytest

from pipeline import lock as pl
from pipeline import output as po
from pipeline.errors import ConfigError
from pipeline.lock import RunLock
from pipeline.output import LOCK, write_json
from tests.conftest import float_rows as rows
from tests.conftest import kill_hook, run_cli, write_input

ROWS_PER_FILE = 300


def night(tmp_path: Path, files: int = 3) -> Path:
    for i in range(files):
        write_input(
            rows(ROWS_PER_FILE, seed=i, start_id=i * ROWS_PER_FILE),
            tmp_path / "in" / f"p{i}.parquet",
        )
    return tmp_path / "in"


def template_argv(inp: Path, model: Path, out: Path, *more: str) -> list[str]:
    """The flags as the Flex Template launcher passes its parameters: --name=value."""
    return [f"--input={inp}/*.parquet", f"--model={model}", f"--output={out}", *more]


def assert_complete(out: Path, rows_expected: int) -> dict:
    """DIR holds one whole commit: manifest counts, the predictions it names, the report."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "succeeded"
    c = manifest["counts"]
    assert c["rows_read"] == c["rows_predicted"] == rows_expected and c["rows_failed"] == 0
    on_disk = sorted(f"predictions/{p.name}" for p in (out / "predictions").iterdir())
    assert on_disk == sorted(manifest["outputs"]["predictions"])
    preds = pa.concat_tables([pq.read_table(out / f) for f in on_disk]).to_pandas()
    assert len(preds) == rows_expected and preds.id.is_unique
    assert set(preds.run_id) == {manifest["run_id"]}
    assert manifest["report"] == "report.html"
    assert manifest["run_id"] in (out / "report.html").read_text()
    assert sorted(os.listdir(out)) == ["manifest.json", "predictions", "report.html"]
    return manifest


@pytest.mark.parametrize("mode", ["in_memory", "multi_processing"])
def test_template_launch_returns_at_submission_and_the_job_commits(
    tmp_path, models_dir, monkeypatch, mode
):
    """Built exactly as the template launcher builds it (its image sets BEAMSCORE_WAIT=false,
    its parameters come as --name=value); the job's commit stage commits and releases the lock
    itself. The DirectRunner has run the job to its end when it returns, so the launcher says
    the night's outcome and exits with its code, as when it waits (a Dataflow launcher returns
    at submission)."""
    monkeypatch.setenv("BEAMSCORE_WAIT", "false")
    inp, out = night(tmp_path), tmp_path / "out"
    more = ["--direct_num_workers=2", "--direct_running_mode=multi_processing"]
    argv = template_argv(inp, models_dir / "binary.joblib", out)
    if mode != "in_memory":
        argv += more
    cli_ = run_cli(*argv)
    assert cli_.code == 0, cli_.stderr
    first = cli_.result.stdout.strip().splitlines()[0]
    assert first.startswith(f"SUCCEEDED: {3 * ROWS_PER_FILE:,} rows read"), cli_.result.stdout
    assert "SUBMITTED" not in cli_.result.stdout
    manifest = assert_complete(out, 3 * ROWS_PER_FILE)
    assert manifest["model_loads"] == (2 if mode == "multi_processing" else 1)
    assert [f["rows_read"] for f in manifest["inputs"]] == [ROWS_PER_FILE] * 3


def test_a_runner_that_returns_at_submission_leaves_the_night_to_the_job(
    tmp_path, models_dir, monkeypatch
):
    """As Dataflow does with --wait false: the launcher prints SUBMITTED and exits 0 once the
    job is submitted, never reading what the commit stage did; the job commits by itself."""
    from pipeline import run as cli
    from pipeline.runners import DirectRunner

    def never(*args, **kwargs):
        raise AssertionError("a launcher that does not wait read the commit stage's result")

    monkeypatch.setattr(DirectRunner, "done_on_return", False)
    monkeypatch.setattr(cli, "finalize", never)
    monkeypatch.setattr(cli, "read_outcome", never)
    inp, out = night(tmp_path), tmp_path / "out"
    cli_ = run_cli(*template_argv(inp, models_dir / "binary.joblib", out, "--wait=false"))
    assert cli_.code == 0, cli_.stderr
    (line,) = cli_.result.stdout.strip().splitlines()
    assert line.startswith("SUBMITTED: job ") and f"{out}/manifest.json" in line, line
    assert_complete(out, 3 * ROWS_PER_FILE)


def test_wait_is_checked_and_waiting_keeps_todays_summary(tmp_path, models_dir):
    inp, out = night(tmp_path, files=1), tmp_path / "out"
    bad = run_cli(*template_argv(inp, models_dir / "binary.joblib", out, "--wait=maybe"))
    assert bad.code == 2 and "--wait must be true or false" in bad.stderr
    assert not out.exists()
    waited = run_cli(*template_argv(inp, models_dir / "binary.joblib", out, "--wait=true"))
    assert waited.code == 0, waited.stderr
    assert waited.result.stdout.startswith("SUCCEEDED: 300 rows read, 300 predicted")
    assert_complete(out, ROWS_PER_FILE)


@pytest.mark.parametrize("where", ["before the journal", "after the journal"])
def test_a_commit_that_fails_once_and_is_retried_ends_in_one_commit(
    tmp_path, models_dir, monkeypatch, where
):
    """The DirectRunner does not retry a failed bundle (Beam's FnApiRunner has no retry; Dataflow
    retries a batch work item up to 4 times), so the commit step's process is run twice here, as
    a runner's retry would: the first attempt fails part-way, the second finishes one commit."""
    from pipeline import commit

    inp, out = night(tmp_path), tmp_path / "out"
    first = run_cli(*template_argv(inp, models_dir / "binary.joblib", out))
    assert first.code == 0, first.stderr
    first_run = json.loads((out / "manifest.json").read_text())["run_id"]
    write_input(rows(50, seed=7, start_id=10_000), inp / "p9.parquet")  # tonight has more

    failures: list[str] = []
    real_move, real_write = po.move, po.write_json

    def move(sources, destinations):
        if not failures and where == "after the journal":
            failures.append("move")
            raise OSError("storage hiccup")  # the old files are deleted, nothing moved yet
        return real_move(sources, destinations)

    def write_json(path, data):
        if not failures and where == "before the journal" and path.endswith(po.COMMIT):
            failures.append("journal")
            raise OSError("storage hiccup")
        return real_write(path, data)

    monkeypatch.setattr(po, "move", move)
    monkeypatch.setattr(po, "write_json", write_json)
    real_process = commit.CommitFn.process
    attempts: list[str] = []

    def process(self, summary_path):
        try:
            attempts.append("first")
            yield from real_process(self, summary_path)
            return
        except Exception as e:  # noqa: BLE001 - the runner's retry follows
            attempts.append(f"failed: {e}")
        attempts.append("retry")
        yield from real_process(self, summary_path)

    monkeypatch.setattr(commit.CommitFn, "process", process)
    again = run_cli(*template_argv(inp, models_dir / "binary.joblib", out))
    assert again.code == 0, again.stderr
    assert len(failures) == 1 and attempts[0] == "first" and attempts[-1] == "retry", attempts
    assert "storage hiccup" in attempts[1]
    manifest = assert_complete(out, 3 * ROWS_PER_FILE + 50)
    assert manifest["run_id"] != first_run
    assert not (out / LOCK).exists()


@pytest.mark.subprocess
def test_a_run_killed_inside_the_commit_is_finished_by_the_next_run(tmp_path, models_dir):
    inp, out = night(tmp_path), tmp_path / "out"
    args = template_argv(inp, models_dir / "binary.joblib", out)
    assert run_cli(*args).code == 0
    write_input(rows(50, seed=7, start_id=10_000), inp / "p9.parquet")

    # On the DirectRunner the commit stage runs in the launcher's process: SIGKILL right after
    # the commit's journal is written, before any file moves.
    killed = run_cli(*args, env=kill_hook("journal"), process=True)
    assert killed.code == -9, killed.stderr
    (journal,) = out.glob("_staging/*/COMMIT")
    killed_run = json.loads(journal.read_text())["run_id"]
    assert (out / LOCK).exists()  # its process is provably dead: the next run takes it over

    rerun = run_cli(*args)
    assert rerun.code == 0, rerun.stderr
    assert f"finishing the commit of run {killed_run}" in rerun.stderr
    manifest = assert_complete(out, 3 * ROWS_PER_FILE + 50)
    assert manifest["run_id"] != killed_run


@pytest.mark.subprocess
def test_sigterm_during_a_worker_process_commit_waits_for_it(tmp_path, models_dir):
    """multi_processing: the commit stage runs in a worker process; a SIGTERM the launcher gets
    once the commit's journal is written waits for the commit, then exits 143 (CONTRACT.md)."""
    inp, out = night(tmp_path), tmp_path / "out"
    args = template_argv(inp, models_dir / "binary.joblib", out)
    procs = ["--direct_num_workers=2", "--direct_running_mode=multi_processing"]
    stopped = run_cli(*args, *procs, env=kill_hook("sigterm_launcher"), process=True)
    assert stopped.code == 143, stopped.stderr
    (line,) = [ln for ln in stopped.stderr.splitlines() if ln.startswith("error:")]
    assert "interrupted by SIGTERM" in line and "committed before the stop" in line, line
    assert_complete(out, 3 * ROWS_PER_FILE)
    assert not (out / LOCK).exists()


# --- the lock a job owns --------------------------------------------------------------------


def _iso(seconds_ago: float) -> str:
    return (
        datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=seconds_ago)
    ).isoformat()


def job_lock(beat_ago: float, **more) -> dict:
    """A lock handed to a job by a launcher on this host that has exited (no such pid)."""
    return {
        "run_id": "the-job",
        "host": socket.gethostname(),
        "pid": 2**22 + 12345,  # beyond pid_max: surely not running
        "heartbeat_at": _iso(beat_ago),
        "owner": "job",
        "job": "beamscore-2026-11-24",
        "stale_after_s": pl.JOB_STALE_AFTER_S,
        **more,
    }


@pytest.mark.parametrize(
    ("lock", "taken"),
    [
        (job_lock(5), False),  # the launcher is gone, the job's workers beat
        (job_lock(pl.STALE_AFTER_S + 60), False),  # still younger than the job's staleness
        (job_lock(pl.JOB_STALE_AFTER_S + 60), True),  # the job is gone
        (job_lock(5, ended="the commit failed"), True),  # the job's commit failed
        ({**job_lock(5), "owner": None}, True),  # a launcher's lock: its dead pid is enough
    ],
)
def test_a_lock_the_job_owns_is_not_taken_over_while_the_job_beats(tmp_path, lock, taken):
    out = tmp_path / "out"
    out.mkdir()
    write_json(str(out / LOCK), lock)
    nxt = RunLock(str(out), "the-next-run")
    if not taken:
        with pytest.raises(ConfigError, match="locked by run the-job"):
            nxt.acquire()
        return
    nxt.acquire()
    try:
        assert nxt.taken_over == lock
        assert json.loads((out / LOCK).read_text())["run_id"] == "the-next-run"
    finally:
        nxt.release()


def test_workers_keep_the_job_lock_fresh_until_it_is_not_theirs(tmp_path, monkeypatch):
    monkeypatch.setattr(pl, "HEARTBEAT_S", 0.05)
    out = tmp_path / "out"
    out.mkdir()
    launcher = RunLock(str(out), "the-job")
    launcher.acquire()
    launcher.hand_to_job("beamscore-test")
    handed = json.loads((out / LOCK).read_text())
    assert handed["owner"] == "job" and handed["stale_after_s"] == pl.JOB_STALE_AFTER_S
    pl.keep_job_lock(str(out), "the-job")
    pl.keep_job_lock(str(out), "the-job")  # one beat per process and lock
    assert sum(t.name == "lock-the-job" for t in threading.enumerate()) == 1
    deadline = time.monotonic() + 10
    while json.loads((out / LOCK).read_text())["heartbeat_at"] == handed["heartbeat_at"]:
        assert time.monotonic() < deadline, "the workers' heartbeat never came"
        time.sleep(0.02)
    stage = RunLock(str(out), "the-job")  # the commit stage, in another process
    stage.adopt()
    stage.release()
    assert not (out / LOCK).exists()
    deadline = time.monotonic() + 10
    while (str(out), "the-job") in pl._JOB_BEATS:
        assert time.monotonic() < deadline, "the heartbeat did not stop"
        time.sleep(0.02)
    time.sleep(0.2)
    assert not (out / LOCK).exists()  # no beat brought it back


# --- the offline dry run ---------------------------------------------------------------------


@pytest.mark.parametrize("wait", ["true", "false"])
def test_dry_run_prints_one_screen_and_writes_the_job_description(
    tmp_path, models_dir, gcs, monkeypatch, wait
):
    from tests.helpers import DATAFLOW, written_under

    monkeypatch.setenv("NO_GCE_CHECK", "True")
    prefix = f"commit-stage/{tmp_path.name}"
    local = write_input(rows(50), tmp_path / "in" / "a.parquet")
    gcs["bucket"].blob(f"{prefix}/in/a.parquet").upload_from_filename(local)
    gcs["bucket"].blob(f"{prefix}/m.joblib").upload_from_filename(models_dir / "binary.joblib")
    out = f"gs://scoring/{prefix}/out"
    cli = run_cli(
        f"--input=gs://scoring/{prefix}/in/*.parquet",
        f"--model=gs://scoring/{prefix}/m.joblib",
        f"--output={out}",
        *DATAFLOW,
        f"--wait={wait}",
    )
    assert cli.code == 0, cli.stderr
    lines = cli.result.stdout.strip().splitlines()
    assert len(lines) == 5 and all(len(line) < 400 for line in lines), lines
    steps, workers, staged, description, last = lines
    assert steps.startswith("DRY RUN: ") and "Predict" in steps and steps.endswith(", Commit")
    assert ("KeepLock" in steps) == (wait == "false")  # the workers beat a lock the job owns
    assert "at most 7 workers" in workers
    assert "workflow.tar.gz (the sdist of" in staged
    path = Path(description.split("job description: ", 1)[1])
    job = json.loads(path.read_text())
    assert job["name"] == "beamscore-test"
    assert last.startswith("DRY RUN: Dataflow job beamscore-test translated, not submitted")
    assert not written_under(gcs, out)
