"""The online service for tests: a real uvicorn on 127.0.0.1 and a free port, answering httpx.

`running(argv)` starts the service as `python -m pipeline.serve` does (the same config, socket,
loading and app), with uvicorn in a thread of the test process instead of a new interpreter: the
HTTP, the event loop and the scoring thread are the real ones. The subprocess tests start the
command itself.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import uvicorn

from pipeline.serve import listen
from service.app import create_app
from service.flags import read_config
from service.requestlog import open_log
from service.served import load


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Running:
    """A started service: its base URL, an httpx client, and its app's state."""

    def __init__(self, url: str, app, server: uvicorn.Server):
        self.url = url
        self.app = app
        self.server = server
        self.client = httpx.Client(base_url=url, timeout=60)

    @property
    def state(self):
        return self.app.state.beamscore

    def predict(self, instances: list[dict], **more) -> httpx.Response:
        return self.client.post("/predict", json={"instances": instances, **more})

    def metric(self, name: str, **labels: str) -> float:
        """A sample's value on GET /metrics (0 when the series is not there)."""
        text = self.client.get("/metrics").text
        wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
        head = f"{name}{{{wanted}}}" if labels else name
        for line in text.splitlines():
            if line.startswith(head + " "):
                return float(line.rsplit(" ", 1)[1])
        return 0.0


@contextlib.contextmanager
def running(*argv: str, env: dict | None = None) -> Iterator[Running]:
    """The service of these flags, until the block ends (then it drains and stops)."""
    port = free_port()
    config = read_config([*map(str, argv), "--host", "127.0.0.1", "--port", str(port)], env or {})
    sock = listen(config.host, config.port)
    served = load(config)
    app = create_app(served, config, open_log(config, served))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the service did not start")
        time.sleep(0.01)
    service = Running(f"http://127.0.0.1:{port}", app, server)
    try:
        yield service
    finally:
        service.client.close()
        server.should_exit = True
        thread.join(30)
        sock.close()


@pytest.fixture(scope="module")
def demo_service(models_dir):
    """The demo churn Pipeline (scaling, one-hot of text categories, logistic regression)."""
    with running("--model", models_dir / "categorical.joblib") as service:
        yield service


def wait_ready(proc: subprocess.Popen, url: str, timeout: float = 60) -> None:
    """Waits until the process answers /readyz with 200 (fails if it exits first)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise AssertionError("the service did not get ready")
