"""Online serving, side by side in one run: this project's service (`python -m pipeline.serve`),
`mlflow models serve` on the same model, and the model's own `predict_proba` on a one-row
DataFrame in a plain loop.

The model is the demo's scaler + one-hot + logistic Pipeline (models/demo.py), trained here; no
bench/data/ needed. Each server is a separate process with one worker (uvicorn, as `mlflow models
serve` defaults to), on 127.0.0.1; the clients are threads of this process holding keep-alive
connections (http.client), so client and server share the machine's cores, alike for both.

    .venv/bin/python bench/serving.py              # about 4 minutes
    .venv/bin/python bench/serving.py --quick      # about 1 minute: fewer requests
    .venv/bin/python bench/serving.py --memory 100000   # + RSS before/after 100,000 requests

The figures go to stdout and into bench/REPORT.md's "Online serving" section (replaced, the rest
of the report kept).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

START = "<!-- serving: written by bench/serving.py -->"
END = "<!-- /serving -->"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rows(n: int, seed: int = 1) -> list[dict]:
    from models import demo

    frame = demo.make_rows(n, seed)[demo.NUMERIC + demo.CATEGORICAL + ["customer_id"]]
    return frame.to_dict("records")


def wait_ready(url_path: str, port: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.communicate()[1][-2000:]}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", url_path)
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError("server did not get ready")


class Target:
    """A server and how to ask it: route and body for a list of rows."""

    def __init__(self, name, port, route, body):
        self.name, self.port, self.route, self.body = name, port, route, body


def ours_body(instances):
    return json.dumps({"instances": instances})


def mlflow_body(instances):
    return json.dumps({"dataframe_records": instances})


def one_client(target: Target, payload: bytes, count: int, until: float | None, out: list):
    conn = http.client.HTTPConnection("127.0.0.1", target.port, timeout=60)
    headers = {"Content-Type": "application/json"}
    done = 0
    while (until is None and done < count) or (until is not None and time.monotonic() < until):
        t = time.perf_counter()
        conn.request("POST", target.route, body=payload, headers=headers)
        res = conn.getresponse()
        res.read()
        out.append((time.perf_counter() - t, res.status))
        done += 1
    conn.close()


def sequential(target: Target, n_rows: int, count: int) -> dict:
    payload = target.body(rows(n_rows)).encode()
    one_client(target, payload, 50, None, [])  # warm the connection and the server
    out: list = []
    one_client(target, payload, count, None, out)
    return summary(out, None)


def concurrent(target: Target, clients: int, seconds: float) -> dict:
    payload = target.body(rows(1)).encode()
    out: list = []
    until = time.monotonic() + seconds
    threads = [
        threading.Thread(target=one_client, args=(target, payload, 0, until, out))
        for _ in range(clients)
    ]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return summary(out, time.monotonic() - start)


def summary(out: list, wall: float | None) -> dict:
    times = sorted(t for t, _ in out)
    bad = sum(1 for _, s in out if s != 200)
    q = statistics.quantiles(times, n=100, method="inclusive")
    res = {"n": len(times), "p50_ms": q[49] * 1e3, "p99_ms": q[98] * 1e3, "non_200": bad}
    if wall:
        res["rps"] = len(times) / wall
    return res


def paired(target: Target, model, count: int) -> tuple[dict, dict]:
    """1-row requests to the server, each followed by the model's own predict_proba on a
    one-row DataFrame in this process: both sampled over the same minutes, so that a slow
    stretch of a shared machine weighs on both alike."""
    import pandas as pd

    from models import demo

    frame = pd.DataFrame(rows(1))[demo.NUMERIC + demo.CATEGORICAL]
    payload = target.body(rows(1)).encode()
    for _ in range(50):
        model.predict_proba(frame)
    one_client(target, payload, 50, None, [])  # warm the connection and the server
    conn = http.client.HTTPConnection("127.0.0.1", target.port, timeout=60)
    headers = {"Content-Type": "application/json"}
    served, plain = [], []
    for _ in range(count):
        t = time.perf_counter()
        conn.request("POST", target.route, body=payload, headers=headers)
        res = conn.getresponse()
        res.read()
        served.append((time.perf_counter() - t, res.status))
        t = time.perf_counter()
        model.predict_proba(frame)
        plain.append((time.perf_counter() - t, 200))
    conn.close()
    return summary(served, None), summary(plain, None)


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read())[1]) / 1024


def start(cmd: list[str], env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer requests (about 1 minute)")
    ap.add_argument("--seconds", type=float, default=15, help="per concurrency level")
    ap.add_argument("--requests", type=int, default=2000, help="sequential requests per case")
    ap.add_argument("--memory", type=int, default=0, help="RSS over this many requests (ours)")
    ap.add_argument("--report", default=str(ROOT / "bench" / "REPORT.md"))
    args = ap.parse_args()
    if args.quick:
        args.seconds, args.requests = 4, 400

    import joblib
    import mlflow.sklearn

    from models import demo

    work = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    model = demo.train()
    joblib.dump(model, work / "model.joblib")
    mlflow.sklearn.save_model(model, str(work / "mlflow-model"))
    py = sys.executable
    bin_dir = str(Path(py).parent)  # mlflow execs `uvicorn` from PATH
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    ours_port, mlflow_port = free_port(), free_port()
    servers = {
        "beamscore": start(
            [
                py,
                "-m",
                "pipeline.serve",
                "--model",
                str(work / "model.joblib"),
                "--port",
                str(ours_port),
            ],
            env,
        ),  # fmt: skip
        "mlflow": start(
            [
                str(Path(py).parent / "mlflow"),
                "models",
                "serve",
                "-m",
                str(work / "mlflow-model"),
                "--env-manager",
                "local",
                "-h",
                "127.0.0.1",
                "-p",
                str(mlflow_port),
            ],
            env,
        ),  # fmt: skip
    }
    results: dict = {}
    try:
        wait_ready("/readyz", ours_port, servers["beamscore"])
        wait_ready("/ping", mlflow_port, servers["mlflow"])
        targets = [
            Target("beamscore", ours_port, "/predict", ours_body),
            Target("mlflow", mlflow_port, "/invocations", mlflow_body),
        ]
        rss_start = rss_mb(servers["beamscore"].pid)
        for target in targets:
            ours, plain = paired(target, model, args.requests)
            if target.name == "beamscore":
                results["plain predict_proba, 1 row (paired with beamscore's)"] = plain
            results[f"{target.name}, 1-row requests, sequential"] = ours
            results[f"{target.name}, 100-row requests, sequential"] = sequential(
                target, 100, args.requests
            )
            for clients in (1, 8, 32):
                label = f"{clients} client{'s' * (clients > 1)}"
                results[f"{target.name}, 1-row requests, {label}"] = concurrent(
                    target, clients, args.seconds
                )
            print(json.dumps({k: v for k, v in results.items()}, indent=1), flush=True)
        memory = None
        if args.memory:
            before = rss_mb(servers["beamscore"].pid)
            payload = ours_body(rows(1)).encode()
            per = args.memory // 16
            out: list = []
            threads = [
                threading.Thread(target=one_client, args=(targets[0], payload, per, None, out))
                for _ in range(16)
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            after = rss_mb(servers["beamscore"].pid)
            memory = {
                "requests": len(out),
                "non_200": sum(1 for _, s in out if s != 200),
                "rss_start_mb": rss_start,
                "rss_before_mb": before,
                "rss_after_mb": after,
            }
    finally:
        for proc in servers.values():
            proc.terminate()
            proc.wait(30)
    write_report(args, results, memory)
    return 0


def write_report(args, results: dict, memory: dict | None) -> None:
    import mlflow
    import sklearn

    def get(name, field):
        return results[name][field]

    own = get("plain predict_proba, 1 row (paired with beamscore's)", "p50_ms")
    ours1 = results["beamscore, 1-row requests, sequential"]
    lines = [
        START,
        "## Online serving",
        "",
        f"- Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        f"- Command: `.venv/bin/python bench/serving.py{' --quick' if args.quick else ''}"
        f"{f' --memory {args.memory}' if args.memory else ''}`",
        f"- Machine: nproc {os.cpu_count()}, {platform.system()}; Python "
        f"{platform.python_version()}, scikit-learn {sklearn.__version__}, mlflow "
        f"{mlflow.__version__}",
        "- Model: the demo's StandardScaler + OneHotEncoder + LogisticRegression Pipeline. Each "
        "server one process, one uvicorn worker, on 127.0.0.1; clients are threads of the bench "
        "process on keep-alive connections, on the same 2 cores. Concurrency cases send 1-row "
        f"requests for {args.seconds:g} s.",
        "",
        "| case | requests | p50 ms | p99 ms | requests/s | non-200 |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        rps = f"{r['rps']:,.0f}" if "rps" in r else "-"
        lines.append(
            f"| {name} | {r['n']:,} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {rps} | "
            f"{r['non_200']} |"
        )
    best_ours = max(results[f"beamscore, 1-row requests, {c} clients"]["rps"] for c in (8, 32))
    best_mlflow = max(results[f"mlflow, 1-row requests, {c} clients"]["rps"] for c in (8, 32))
    lines += [
        "",
        "| goal | value | target | |",
        "|---|---:|---|---|",
        _goal(
            "1-row p50 above the model's own 1-row call",
            ours1["p50_ms"] - own,
            "<= 2 ms",
            ours1["p50_ms"] - own <= 2,
            "ms",
        ),  # fmt: skip
        _goal(
            "1-row p99 / p50 (sequential)",
            ours1["p99_ms"] / ours1["p50_ms"],
            "< 3x",
            ours1["p99_ms"] / ours1["p50_ms"] < 3,
            "x",
        ),  # fmt: skip
        _goal(
            "requests/s, ours / mlflow models serve (best of 8, 32 clients)",
            best_ours / best_mlflow,
            ">= 3x",
            best_ours / best_mlflow >= 3,
            "x",
        ),  # fmt: skip
    ]
    if memory:
        growth = memory["rss_after_mb"] / memory["rss_before_mb"] - 1
        lines.append(
            _goal(
                f"RSS growth over {memory['requests']:,} requests (16 clients; "
                f"{memory['rss_before_mb']:.0f} -> {memory['rss_after_mb']:.0f} MB, "
                f"{memory['non_200']} non-200)",
                growth * 100, "< 10%", growth < 0.10, "%",
            )
        )  # fmt: skip
    lines += ["", END]
    section = "\n".join(lines) + "\n"
    print(section)
    path = Path(args.report)
    text = path.read_text() if path.exists() else "# Benchmark report\n"
    if START in text and END in text:
        head, rest = text.split(START, 1)
        text = head + section + rest.split(END, 1)[1].lstrip("\n")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)


def _goal(name, value, target, met, unit) -> str:
    return f"| {name} | {value:.2f} {unit} | {target} | {'met' if met else 'not met'} |"


if __name__ == "__main__":
    sys.exit(main())
