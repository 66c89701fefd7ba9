"""Reruns replace, never append; a killed run leaves the previous output exactly as it was."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.output import check_owned, write_json
from pipeline.staging import Staging
from tests.conftest import ROOT, float_rows, run_cli, score, write_input

pytestmark = pytest.mark.slow


def snapshot(directory: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(directory)): p.read_bytes()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def test_rerun_with_fewer_shards_replaces_the_output(tmp_path, models_dir):
    for i in range(4):
        write_input(float_rows(500, seed=i, start_id=i * 500), tmp_path / "in" / f"p{i}.parquet")
    args = [
        "--input",
        tmp_path / "in" / "*.parquet",
        "--model",
        models_dir / "binary.joblib",
        "--output",
        tmp_path / "out",
    ]
    first = run_cli(*args, "--direct_num_workers", "2", "--direct_running_mode", "multi_threading")
    assert first.code == 0, first.stderr
    first_files = sorted((tmp_path / "out" / "predictions").iterdir())
    assert len(first_files) >= 2

    second = run_cli(*args)
    assert second.code == 0, second.stderr
    files = sorted((tmp_path / "out" / "predictions").iterdir())
    assert len(files) == 1
    assert [f"predictions/{f.name}" for f in files] == second.manifest["outputs"]["predictions"]
    preds = second.predictions()
    assert len(preds) == 2000 and preds.id.is_unique
    assert set(preds.run_id) == {second.manifest["run_id"]}
    assert sorted(os.listdir(tmp_path / "out")) == ["manifest.json", "predictions", "report.html"]


def test_errors_of_the_previous_run_are_replaced(tmp_path, models_dir):
    df = float_rows(100)
    lines = df.to_csv(index=False).splitlines()
    lines[3] = "2,x"
    (tmp_path / "in.csv").write_text("\n".join(lines) + "\n")
    args = [
        "--input",
        tmp_path / "in.csv",
        "--model",
        models_dir / "binary.joblib",
        "--output",
        tmp_path / "out",
    ]
    assert run_cli(*args).code == 1
    assert len(list((tmp_path / "out" / "errors").iterdir())) == 1
    write_input(df, tmp_path / "in.csv")
    clean = run_cli(*args)
    assert clean.code == 0, clean.stderr
    assert clean.errors() == []
    assert clean.manifest["outputs"]["errors"] == []


@pytest.mark.subprocess
def test_killed_run_leaves_previous_output_and_next_run_leaves_one_copy(tmp_path, models_dir):
    small = tmp_path / "small.parquet"
    write_input(float_rows(100), small)
    big = tmp_path / "big"
    for i in range(4):
        write_input(float_rows(400_000, seed=i, start_id=i * 400_000), big / f"p{i}.parquet")
    out = tmp_path / "out"
    model = models_dir / "hgb.joblib"
    assert score(small, model, out).code == 0
    before = snapshot(out)

    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pipeline.run",
            "--input",
            f"{big}/*.parquet",
            "--model",
            str(model),
            "--output",
            str(out),
            "--batch_size",
            "20000",
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while not list(out.glob("_staging/*/predictions/*.parquet")):
        assert proc.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()

    after = {k: v for k, v in snapshot(out).items() if not k.startswith(("_staging/", "_lock"))}
    assert after == before  # the previous manifest and predictions, byte for byte

    rerun = score(f"{big}/*.parquet", model, out)
    assert rerun.code == 0, rerun.stderr  # the dead run's lock is taken over
    assert sorted(os.listdir(out)) == ["manifest.json", "predictions", "report.html"]
    preds = rerun.predictions()
    assert len(preds) == 1_600_000 and preds.id.is_unique


def test_commit_interrupted_after_its_journal_is_rolled_forward(tmp_path):
    out = tmp_path / "out"
    old = Staging(str(out), "run-old")
    (out / "predictions").mkdir(parents=True)
    (out / "predictions" / "part-old.parquet").write_bytes(b"old")
    write_json(str(out / "manifest.json"), {"producer": "beamscore", "run_id": "run-old"})

    new = Staging(str(out), "run-new")
    staged = Path(new.dir) / "predictions" / "part-new.parquet"
    staged.parent.mkdir(parents=True)
    staged.write_bytes(b"new")
    journal = {
        "run_id": "run-new",
        "files": ["predictions/part-new.parquet"],
        "manifest": {"producer": "beamscore", "run_id": "run-new"},
    }
    write_json(str(Path(new.dir) / "COMMIT"), journal)
    # The commit died right after writing its journal: nothing has moved yet.
    check_owned(str(out))
    old.recover()
    assert json.loads((out / "manifest.json").read_text())["run_id"] == "run-new"
    assert os.listdir(out / "predictions") == ["part-new.parquet"]
    assert not (out / "_staging").exists()


def test_unfinished_staging_is_dropped_without_touching_the_output(tmp_path):
    out = tmp_path / "out"
    (out / "predictions").mkdir(parents=True)
    (out / "predictions" / "part-old.parquet").write_bytes(b"old")
    write_json(str(out / "manifest.json"), {"producer": "beamscore", "run_id": "run-old"})
    dead = Path(Staging(str(out), "run-dead").dir) / "predictions" / "part-x.parquet"
    dead.parent.mkdir(parents=True)
    dead.write_bytes(b"partial")
    Staging(str(out), "run-next").recover()
    assert os.listdir(out / "predictions") == ["part-old.parquet"]
    assert not (out / "_staging").exists()
