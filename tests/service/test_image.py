"""The images' Dockerfiles, performed where no image can be built: each COPY, each `pip install`
from the package index into a fresh virtualenv, the ENV and the CMD, then a request answered
(minutes: `./run_tests.sh -m image_install -n 0`, .ci/run's second step). The cheap check that
both Dockerfiles copy every package of setup.py runs with the suite."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import setuptools

from tests.conftest import ROOT, float_rows
from tests.service.conftest import free_port, wait_ready

DOCKERFILES = [ROOT / "Dockerfile", ROOT / "templates" / "Dockerfile"]


def instructions(path: Path) -> list[tuple[str, str]]:
    """A Dockerfile's (INSTRUCTION, argument) pairs, continuation lines joined."""
    text = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _env_pairs(argument: str) -> dict[str, str]:
    return dict(pair.split("=", 1) for pair in shlex.split(argument))


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=["serving", "flex-template"])
def test_each_dockerfile_copies_every_package_the_project_installs(dockerfile):
    packages = {p.split(".")[0] for p in setuptools.find_packages(str(ROOT), include=["*"])}
    packages &= {"pipeline", "scoring", "service", "transforms", "models"}
    copied = {
        Path(argument.split()[0]).name
        for word, argument in instructions(dockerfile)
        if word == "COPY"
    }
    assert packages <= copied, packages - copied


@pytest.mark.subprocess
@pytest.mark.image_install
def test_the_serving_image_installs_and_answers_in_a_fresh_virtualenv(tmp_path, models_dir):
    app = tmp_path / "app"
    app.mkdir()
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    env = {"PATH": f"{venv / 'bin'}:{os.environ['PATH']}", "HOME": str(tmp_path)}
    command = None
    for word, argument in instructions(ROOT / "Dockerfile"):
        if word == "FROM":
            assert argument.startswith("python:3.11"), argument  # the workers' Python
        elif word == "COPY":
            *sources, _ = argument.split()
            for source in sources:
                if (ROOT / source).is_dir():
                    shutil.copytree(ROOT / source, app / source)
                else:
                    shutil.copy(ROOT / source, app / source)
        elif word == "ENV":
            env.update(_env_pairs(argument))
        elif word == "RUN" and argument.startswith("pip "):
            res = subprocess.run(
                [str(venv / "bin" / "pip"), *shlex.split(argument)[1:]],
                cwd=app,
                env=env,
                capture_output=True,
                text=True,
            )
            assert res.returncode == 0, res.stderr[-3000:]
        elif word == "USER":
            assert argument not in ("root", "0"), "the image must not run as root"
        elif word == "CMD":
            command = json.loads(argument)
    assert command and command[0] == "beamscore-serve"
    check = subprocess.run([str(venv / "bin" / "pip"), "check"], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout

    port = free_port()  # what Cloud Run sets; the image's own PORT=8080 is the default
    env.update(PORT=str(port), BEAMSCORE_MODEL=str(models_dir / "binary.joblib"))
    proc = subprocess.Popen(
        [str(venv / "bin" / command[0]), *command[1:]],
        cwd=tmp_path,  # not the checkout: the installed package stands on its own
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(proc, url, timeout=120)
        rows = float_rows(3).to_dict("records")
        res = httpx.post(f"{url}/predict", json={"instances": rows}, timeout=30)
        assert res.status_code == 200, res.text
        assert [p["prediction"] in (0, 1) for p in res.json()["predictions"]] == [True] * 3
        assert res.json()["errors"] == []
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
