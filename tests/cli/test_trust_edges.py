"""What happens at the edges of a run, where a nightly job must not end with exit 0 and wrong
data, nor claim an output it did not leave: the input changing while it is read, a stop signal
or a failure in the middle of the commit, a report that cannot be rendered, two runs taking over
the same dead lock. Each case runs the real CLI in a subprocess whose launcher is wrapped by a
small driver at the point the case needs (the moment is the only thing not real)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from pipeline.lock import RunLock
from pipeline.output import LOCK, write_json
from tests.conftest import ROOT, float_rows, score, write_input

pytestmark = pytest.mark.slow

DRIVER = r"""
import os, shutil, signal, sys
import pipeline.lock as pl
import pipeline.output as po
import pipeline.report as report
import pipeline.run as r

hook, target = sys.argv[1], sys.argv[2]
argv = sys.argv[3:]

if hook in ("remove", "add", "rewrite"):
    real_launch = r.launch

    def launch(options):
        job = real_launch(options)  # the launcher has matched the input: now it changes
        if hook == "remove":
            os.remove(target)
        elif hook == "add":
            shutil.copy(target, target + ".late.parquet")
        else:
            with open(target, "ab") as f:
                f.write(b"\0" * 10)
        return job

    r.launch = launch
elif hook in ("sigterm_in_commit", "fail_in_commit"):
    real_move = po.move

    def move(sources, destinations):
        if hook == "sigterm_in_commit":
            os.kill(os.getpid(), signal.SIGTERM)  # a scheduler's stop, mid-commit
            return real_move(sources, destinations)
        raise OSError("disk gone")  # after the old files were deleted

    po.move = move
elif hook == "sigterm_in_lock":
    real_create = pl.RunLock._create_exclusive

    def create_exclusive(self, record):
        made = real_create(self, record)
        os.kill(os.getpid(), signal.SIGTERM)  # the lock exists, its heartbeat not yet
        return made

    pl.RunLock._create_exclusive = create_exclusive
elif hook == "journal_fails":
    real_write_json = po.write_json

    def write_json(path, data):
        if path.endswith(po.COMMIT):
            raise OSError("quota exceeded")
        return real_write_json(path, data)

    po.write_json = write_json
elif hook == "no_report":
    def render_report(*args, **kwargs):
        raise RuntimeError("cannot render")

    report.render_report = render_report
elif hook == "twice":  # two runs in one process, both sent SIGTERM while scoring
    real_score = r.score

    def score(job, test_pipeline=None):
        os.kill(os.getpid(), signal.SIGTERM)
        return real_score(job, test_pipeline)

    r.score = score
    first = r.main(argv)
    print(f"first exit {first}", file=sys.stderr)
sys.exit(r.main(argv))
"""


def drive(tmp_path: Path, hook: str, target, *argv) -> subprocess.CompletedProcess:
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    return subprocess.run(
        [sys.executable, driver, hook, str(target), *map(str, argv)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env={**__import__("os").environ, "PYTHONPATH": str(ROOT)},
    )


def error_lines(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.startswith("error:")]


def four_files(tmp_path: Path) -> Path:
    for i in range(4):
        write_input(float_rows(250, seed=i, start_id=i * 250), tmp_path / "in" / f"p{i}.parquet")
    return tmp_path / "in"


@pytest.mark.subprocess
@pytest.mark.parametrize(
    ("hook", "file", "says"),
    [
        ("remove", "p2.parquet", "p2.parquet is gone"),
        ("add", "p1.parquet", "p1.parquet.late.parquet appeared"),
        ("rewrite", "p3.parquet", "p3.parquet changed (size"),
    ],
)
def test_input_that_changes_while_read_is_never_committed(tmp_path, models_dir, hook, file, says):
    inp = four_files(tmp_path)
    out = tmp_path / "out"
    args = ["--input", inp / "*.parquet", "--model", models_dir / "binary.joblib"]
    run = drive(tmp_path, hook, inp / file, *args, "--output", out)
    assert run.returncode == 3, run.stderr
    (line,) = error_lines(run.stderr)
    assert "the input changed while the run read it" in line and says in line, line
    assert "Traceback" not in run.stderr
    assert not (out / "manifest.json").exists() and not (out / "predictions").exists()
    if hook == "rewrite":
        write_input(float_rows(250, seed=3, start_id=750), inp / file)
    again = score(inp / "*.parquet", models_dir / "binary.joblib", out)  # the rerun is whole
    assert again.code == 0, again.stderr
    rows = {"remove": 750, "add": 1250, "rewrite": 1000}[hook]
    assert again.manifest["counts"]["rows_read"] == rows
    assert len(again.predictions()) == rows


def committed_rows(out: Path) -> int:
    manifest = json.loads((out / "manifest.json").read_text())
    on_disk = sorted(f"predictions/{p.name}" for p in (out / "predictions").iterdir())
    assert on_disk == sorted(manifest["outputs"]["predictions"])
    return manifest["counts"]["rows_predicted"]


@pytest.mark.subprocess
def test_sigterm_during_the_commit_waits_for_it_to_finish(tmp_path, models_dir):
    inp, out = four_files(tmp_path), tmp_path / "out"
    args = ["--input", inp / "*.parquet", "--model", models_dir / "binary.joblib", "--output", out]
    first = score(*args[1::2])
    assert first.code == 0, first.stderr
    run_id = first.manifest["run_id"]
    write_input(float_rows(100, seed=9, start_id=5000), inp / "p4.parquet")

    run = drive(tmp_path, "sigterm_in_commit", "-", *args)
    assert run.returncode == 143, run.stderr
    (line,) = error_lines(run.stderr)
    assert "interrupted by SIGTERM" in line and "committed before the stop" in line, line
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["run_id"] != run_id and manifest["status"] == "succeeded"
    assert committed_rows(out) == 1100
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "predictions", "report.html"]


@pytest.mark.subprocess
def test_commit_that_fails_half_way_is_exit_3_and_the_rerun_finishes_it(tmp_path, models_dir):
    inp, out = four_files(tmp_path), tmp_path / "out"
    args = ["--input", inp / "*.parquet", "--model", models_dir / "binary.joblib", "--output", out]
    assert score(*args[1::2]).code == 0

    run = drive(tmp_path, "fail_in_commit", "-", *args)
    assert run.returncode == 3, run.stderr
    (line,) = error_lines(run.stderr)
    assert "committing the output stopped half-way" in line and "disk gone" in line, line
    assert "runs again" in line
    assert list((out / "_staging").glob("*/COMMIT")), "the journal is what the rerun needs"

    again = score(*args[1::2])
    assert again.code == 0, again.stderr
    assert "finishing the commit of run" in again.stderr
    assert committed_rows(out) == 1000
    assert not (out / "_staging").exists()


@pytest.mark.subprocess
def test_commit_that_fails_before_it_begins_is_exit_3_with_the_old_output(tmp_path, models_dir):
    inp, out = four_files(tmp_path), tmp_path / "out"
    args = ["--input", inp / "*.parquet", "--model", models_dir / "binary.joblib", "--output", out]
    first = score(*args[1::2])
    assert first.code == 0
    write_input(float_rows(100, seed=9, start_id=5000), inp / "p4.parquet")

    run = drive(tmp_path, "journal_fails", "-", *args)
    assert run.returncode == 3, run.stderr  # a storage error: a retry may help
    (line,) = error_lines(run.stderr)
    assert "failed before it began" in line and "quota exceeded" in line, line
    assert "holds the previous output" in line
    assert json.loads((out / "manifest.json").read_text())["run_id"] == first.manifest["run_id"]
    assert committed_rows(out) == 1000
    assert not (out / "_staging").exists()
    assert not (out / "_lock").exists()


@pytest.mark.subprocess
def test_a_signal_while_the_lock_is_taken_does_not_leave_it_behind(tmp_path, models_dir):
    inp, out = four_files(tmp_path), tmp_path / "out"
    args = ["--input", inp / "*.parquet", "--model", models_dir / "binary.joblib", "--output", out]
    run = drive(tmp_path, "sigterm_in_lock", "-", *args)
    assert run.returncode == 143, run.stderr
    assert "nothing was committed" in error_lines(run.stderr)[0]
    assert not (out / "_lock").exists()  # the next run is not refused as "locked"
    assert score(*args[1::2]).code == 0


@pytest.mark.subprocess
def test_a_report_that_cannot_be_rendered_does_not_leave_the_old_one(tmp_path, models_dir):
    inp, out = four_files(tmp_path), tmp_path / "out"
    args = ["--input", inp / "*.parquet", "--model", models_dir / "binary.joblib", "--output", out]
    assert score(*args[1::2]).code == 0
    assert (out / "report.html").exists()

    run = drive(tmp_path, "no_report", "-", *args)
    assert run.returncode == 0, run.stderr
    assert "could not write report.html" in run.stderr
    assert "report:      NOT written" in run.stdout
    assert not (out / "report.html").exists()
    assert "report" not in json.loads((out / "manifest.json").read_text())


@pytest.mark.subprocess
def test_a_second_run_in_one_process_still_stops_on_sigterm(tmp_path, models_dir):
    inp = four_files(tmp_path)
    args = ["--input", inp / "*.parquet", "--model", models_dir / "binary.joblib"]
    run = drive(tmp_path, "twice", "-", *args, "--output", tmp_path / "out")
    assert "first exit 143" in run.stderr
    assert run.returncode == 143, run.stderr
    assert len(error_lines(run.stderr)) == 2
    assert not (tmp_path / "out" / "manifest.json").exists()


@pytest.mark.parametrize("before", ["dead", "none"])
def test_runs_racing_for_one_lock_exactly_one_gets_it(tmp_path, before):
    """Three runs start at once on one output, over a dead run's lock or none: one holds the
    lock, the others are refused (exit 2), whatever the interleaving. A lock is never seen
    half written, nor gone between two reads, by the losers."""
    out = tmp_path / "out"
    out.mkdir()
    dead = {"run_id": "dead", "host": "elsewhere", "pid": 1, "heartbeat_at": "2020-01-01T00:00"}
    for attempt in range(25):
        if before == "dead":
            write_json(str(out / LOCK), dead)
        dirs = [RunLock(str(out), f"run-{attempt}-{i}") for i in range(3)]
        outcomes: list[str] = []
        start = threading.Barrier(len(dirs))

        def take(d: RunLock, outcomes: list[str] = outcomes, start=start) -> None:
            start.wait()
            try:
                d.acquire()
                outcomes.append("lock")
            except Exception as e:  # noqa: BLE001 - the losers' refusal
                outcomes.append(type(e).__name__)

        threads = [threading.Thread(target=take, args=(d,)) for d in dirs]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(outcomes) == ["ConfigError", "ConfigError", "lock"], outcomes
        holder = json.loads((out / LOCK).read_text())["run_id"]
        for d in dirs:
            d.release()
        assert holder in {d.run_id for d in dirs}
        assert sorted(p.name for p in out.iterdir()) == [], "lock and no temporary left"
