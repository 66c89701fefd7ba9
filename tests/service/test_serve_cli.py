"""`python -m pipeline.serve` as a process: what only a real process shows (the signal that stops
it, the port it cannot take, the exit code and stderr a person reads)."""

from __future__ import annotations

import signal
import socket
import threading
import time
from pathlib import Path

import httpx
import joblib
import pytest

from tests import custom_models
from tests.conftest import float_rows
from tests.helpers import fitted, module_process
from tests.service.conftest import free_port, wait_ready

pytestmark = pytest.mark.service


@pytest.mark.subprocess
def test_sigterm_answers_the_request_in_flight_then_exits_0(tmp_path):
    joblib.dump(fitted(custom_models.Slow(1.5)), tmp_path / "slow.joblib")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = module_process(
        "pipeline.serve", "--model", tmp_path / "slow.joblib", "--host", "127.0.0.1", "--port", port
    )
    try:
        wait_ready(proc, url)
        rows = float_rows(2).to_dict("records")
        answer = {}
        sender = threading.Thread(
            target=lambda: answer.update(
                res=httpx.post(f"{url}/predict", json={"instances": rows}, timeout=30)
            )
        )
        sender.start()
        time.sleep(0.5)  # the request is being scored (the model sleeps 1.5 s)
        proc.send_signal(signal.SIGTERM)
        sender.join(30)
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert answer["res"].status_code == 200
    assert len(answer["res"].json()["predictions"]) == 2
    assert None not in answer["res"].json()["predictions"]
    assert proc.returncode == 0, stderr
    assert "stopped by SIGTERM after answering the requests in flight" in stderr
    assert "Traceback" not in stderr


@pytest.mark.subprocess
def test_a_port_in_use_and_a_missing_model_are_one_line_and_exit_2(tmp_path, models_dir):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        model = models_dir / "binary.joblib"
        proc = module_process(
            "pipeline.serve", "--model", model, "--host", "127.0.0.1", "--port", port
        )
        _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 2
    assert stderr.strip().splitlines()[-1].startswith(f"error: cannot listen on 127.0.0.1:{port}")
    assert "Traceback" not in stderr

    proc = module_process(
        "pipeline.serve", "--model", Path(tmp_path) / "nope.joblib", "--port", free_port()
    )
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 2
    assert stderr.count("\n") == 1 and stderr.startswith("error: ") and "nope.joblib" in stderr
