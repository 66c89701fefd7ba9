"""A bounded load test on loopback: `python -m pipeline.serve` as its own process, 16 clients for
60 s (LOAD_SECONDS), each request checked. Run by .ci/run's second step (`./run_tests.sh -m load
-n 0`), alone on the machine, not by the timed suite."""

from __future__ import annotations

import os
import re
import threading
import time

import httpx
import pytest

from tests.helpers import module_process
from tests.service.conftest import free_port, wait_ready

pytestmark = [pytest.mark.service, pytest.mark.load]
SECONDS = float(os.environ.get("LOAD_SECONDS", "60"))
CLIENTS = 16


def _rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read())[1])


@pytest.mark.subprocess
def test_sixteen_clients_for_a_minute_no_5xx_no_lost_answer_flat_memory(models_dir):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = module_process(
        "pipeline.serve", "--model", models_dir / "categorical.joblib", "--port", port
    )
    base = {"tenure_months": 3, "monthly_spend": 20.5, "support_calls": 1, "plan": "pro"}
    rows = [{"customer_id": 2**60 + i, **base, "region": "east"} for i in range(3)]
    rows.append({**rows[0], "tenure_months": "many"})  # rejected: each answer names it
    sent, answered, wrong = [0] * CLIENTS, [0] * CLIENTS, []

    def client(i: int, until: float) -> None:
        with httpx.Client(base_url=url, timeout=30) as http:
            while time.monotonic() < until:
                sent[i] += 1
                res = http.post("/predict", json={"instances": rows})
                body = res.json()
                ok = (
                    res.status_code == 200
                    and [p and p["customer_id"] for p in body["predictions"]]
                    == [2**60, 2**60 + 1, 2**60 + 2, None]
                    and [e["index"] for e in body["errors"]] == [3]
                )
                if ok:
                    answered[i] += 1
                else:
                    wrong.append((res.status_code, res.text[:300]))

    try:
        wait_ready(proc, url)
        warm_until = time.monotonic() + min(5, SECONDS / 6)
        threads = [threading.Thread(target=client, args=(i, warm_until)) for i in range(CLIENTS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        before = _rss_kb(proc.pid)  # after warm-up: the allocator's and the caches' first growth
        until = time.monotonic() + SECONDS
        threads = [threading.Thread(target=client, args=(i, until)) for i in range(CLIENTS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        after = _rss_kb(proc.pid)
        served = httpx.get(f"{url}/metrics").text
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=60)
    assert not wrong, wrong[:3]
    assert sum(answered) == sum(sent) > CLIENTS * 10
    assert "Traceback" not in stderr
    assert proc.returncode == 0, stderr
    assert after < before * 1.10, (before, after)
    # Every request the clients made is counted by the service, all of them 200.
    counted = re.search(r'beamscore_requests_total\{route="/predict",status="200"\} (\S+)', served)
    assert counted and float(counted[1]) == sum(sent)
    print(f"{sum(sent)} requests in {SECONDS:g} s + warm-up; RSS {before} -> {after} kB")
