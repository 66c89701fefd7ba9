"""Each exit-2 case of the contract: one line on stderr naming the problem, no traceback."""

from __future__ import annotations

import hashlib
import json
import os
import socket

import pytest

from tests.conftest import assert_one_line_error, float_rows, run_cli, score, write_input

pytestmark = pytest.mark.slow


@pytest.fixture
def inp(tmp_path):
    return write_input(float_rows(20), tmp_path / "in" / "a.parquet")


def test_no_such_model(tmp_path, inp):
    cli = score(inp, tmp_path / "nope.joblib", tmp_path / "o")
    assert_one_line_error(cli, "no such model file", "nope.joblib")
    assert not (tmp_path / "o").exists()


def test_checksum_mismatch_refuses_before_unpickling(tmp_path, inp, models_dir):
    cli = score(inp, models_dir / "binary.joblib", tmp_path / "o", "--model_sha256", "0" * 64)
    assert_one_line_error(cli, "SHA-256", "refusing")


def test_matching_checksum_is_accepted(tmp_path, inp, models_dir):
    sha = hashlib.sha256((models_dir / "binary.joblib").read_bytes()).hexdigest()
    cli = score(inp, models_dir / "binary.joblib", tmp_path / "o", "--model_sha256", sha.upper())
    assert cli.code == 0, cli.stderr


def test_no_input_file_matches(tmp_path, models_dir):
    cli = score(tmp_path / "none" / "*.parquet", models_dir / "binary.joblib", tmp_path / "o")
    assert_one_line_error(cli, "no input file matches")


def test_model_feature_missing_from_input(tmp_path, models_dir):
    write_input(float_rows(20).drop(columns="f2"), tmp_path / "in.csv")
    cli = score(tmp_path / "in.csv", models_dir / "binary.joblib", tmp_path / "o")
    assert_one_line_error(cli, "lacks model feature", "f2")


def test_foreign_output_directory_is_never_touched(tmp_path, inp, models_dir):
    foreign = tmp_path / "o"
    foreign.mkdir()
    (foreign / "precious.txt").write_text("keep me")
    cli = score(inp, models_dir / "binary.joblib", foreign)
    assert_one_line_error(cli, "not empty", "precious.txt")
    assert sorted(os.listdir(foreign)) == ["precious.txt"]


def test_output_locked_by_a_live_run(tmp_path, inp, models_dir):
    out = tmp_path / "o"
    out.mkdir()
    # A live process on this host holds the lock: this test's own pid.
    (out / "_lock").write_text(
        json.dumps(
            {
                "run_id": "other",
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "heartbeat_at": "2099-01-01T00:00:00+00:00",
            }
        )
    )
    cli = score(inp, models_dir / "binary.joblib", out)
    assert_one_line_error(cli, "locked by run other", "_lock")


def test_lock_of_a_dead_run_is_taken_over(tmp_path, inp, models_dir):
    out = tmp_path / "o"
    out.mkdir()
    (out / "_lock").write_text(
        json.dumps(
            {
                "run_id": "dead",
                "host": socket.gethostname(),
                "pid": 2**22 + 12345,
                "heartbeat_at": "2099-01-01T00:00:00+00:00",
            }
        )
    )
    cli = score(inp, models_dir / "binary.joblib", out)
    assert cli.code == 0, cli.stderr
    assert not (out / "_lock").exists()


@pytest.mark.parametrize(
    "args, words",
    [
        (["--run_date", "2026-13-01"], ["--run_date"]),
        (["--max_error_rate", "2"], ["--max_error_rate"]),
        (["--max_eror_rate", "0.1"], ["unknown flag", "--max_eror_rate"]),
        (["--input_format", "xml"], ["--input_format"]),
        (["--column_types", "f0:decimal"], ["--column_types"]),
        (["--key_columns", "nope"], ["lacks key column", "nope"]),
        (["--features", "f0,zz"], ["zz"]),
    ],
)
def test_bad_flags(tmp_path, inp, models_dir, args, words):
    cli = score(inp, models_dir / "binary.joblib", tmp_path / "o", *args)
    assert_one_line_error(cli, *words)


@pytest.mark.parametrize("given", ["soon", "0", "-5", "nan", "inf"])
def test_a_launch_deadline_that_is_not_seconds_is_refused(
    tmp_path, inp, models_dir, given, monkeypatch
):
    from models.errors import LAUNCH_DEADLINE_S, launch_deadline_s

    cli = run_cli(
        *("--input", inp, "--model", models_dir / "binary.joblib", "--output", tmp_path / "o"),
        env={"BEAMSCORE_LAUNCH_DEADLINE_S": given},
    )
    assert_one_line_error(cli, "BEAMSCORE_LAUNCH_DEADLINE_S", repr(given))
    assert not (tmp_path / "o").exists()
    monkeypatch.delenv("BEAMSCORE_LAUNCH_DEADLINE_S")  # the suite sets 2 s (conftest)
    assert launch_deadline_s() == LAUNCH_DEADLINE_S == 15  # unset: seconds, not two minutes


def test_missing_required_flag(tmp_path, models_dir):
    cli = run_cli("--model", models_dir / "binary.joblib", "--output", tmp_path / "o")
    assert_one_line_error(cli, "--input is required")


def test_not_a_model_file(tmp_path, inp):
    (tmp_path / "m.joblib").write_bytes(b"this is not a pickle")
    cli = score(inp, tmp_path / "m.joblib", tmp_path / "o")
    assert_one_line_error(cli, "cannot load model")


@pytest.mark.parametrize(
    "module, entry", [("pipeline.run", "run"), ("pipeline.evaluate", "evaluate")]
)
def test_a_bug_is_exit_4_one_line_and_the_traceback_in_a_file(module, entry, monkeypatch, capsys):
    import importlib

    cli = importlib.import_module(module)

    def broken(argv):
        raise KeyError("a bug")

    monkeypatch.setattr(cli, entry, broken)
    assert cli.main(["--anything"]) == 4
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: internal error (a bug in beamscore, please report it): KeyError")
    trace = err.split("traceback in ", 1)[1].split(";")[0]
    assert "KeyError: 'a bug'" in open(trace).read()
    os.unlink(trace)


def test_a_bug_where_the_output_cannot_be_read_says_what_the_next_run_does(
    tmp_path, models_dir, monkeypatch
):
    import tempfile

    from pipeline import run as cli
    from pipeline.staging import Staging

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the traceback file goes here
    write_input(float_rows(20), tmp_path / "in" / "p.parquet")
    out = tmp_path / "out"
    args = ["--input", tmp_path / "in" / "*.parquet", "--model", models_dir / "binary.joblib"]

    def broken(job, test_pipeline=None):
        raise RuntimeError("a bug while scoring")

    def unreadable(self):
        raise OSError("storage gone")

    with monkeypatch.context() as m:
        m.setattr(cli, "score", broken)
        m.setattr(Staging, "state", unreadable)
        ended = run_cli(*args, "--output", out)
    assert ended.code == 4, ended.stderr
    line = ended.stderr.strip().splitlines()[-1]
    assert "RuntimeError: a bug while scoring" in line, line
    assert f"what {out} holds could not be read" in line, line
    assert "the next run of this command finishes this run's commit if it was begun" in line
    again = run_cli(*args, "--output", out)  # the lock was released: the night can run again
    assert again.code == 0, again.stderr
    assert again.manifest["counts"]["rows_predicted"] == 20


def test_storage_that_cannot_be_read_neither_hides_a_stop_nor_frees_the_lock(tmp_path, monkeypatch):
    """The two other places that ask what DIR holds while a run fails: a stop signal's handler
    (a commit begun makes it wait) and the commit stage's failure path (only "none", nothing of
    the run in DIR, lets it mark the lock ended). Unreadable storage is "no" to both."""
    from pipeline import run
    from pipeline.staging import Staging

    staging = Staging(str(tmp_path / "out"), "run-1")

    def unreadable(self):
        raise OSError("storage gone")

    monkeypatch.setattr(Staging, "state", unreadable)
    monkeypatch.setattr(run, "_COMMITTING", [staging])
    assert run._commit_begun() is False  # the signal stops the run instead of raising OSError
    assert staging.known_state() == "unknown"  # not "none": the lock is left to go stale
