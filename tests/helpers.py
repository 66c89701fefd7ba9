"""What tests of several layers share, made in one place: input rows, fitted models, the scoring
spec, tracking stores, the Dataflow flags, Cloud Storage objects, an OpenLineage receiver and
the report page in a browser, the reason-code frames. Fixtures built on these are in
tests/conftest.py."""

from __future__ import annotations

import contextlib
import dataclasses
import http.server
import io
import json
import re
import socket
import struct
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from models import loading
from models.introspect import inspect
from pipeline.report import STAGES
from tests.conftest import FEATURES, ROOT, float_rows
from transforms.spec import ScoringSpec, TextFormat

COLORS = ["blue", "green", "red"]


EXACT = {"rtol": 0, "atol": 1e-9}


def colored_rows(n: int, seed: int, start_id: int = 0) -> pd.DataFrame:
    """float_rows plus a text feature `color`, as an input file holds it."""
    df = float_rows(n, seed, start_id)
    df["color"] = np.random.default_rng(seed + 100).choice(COLORS, n)
    return df


def training_frame(n: int = 1000, seed: int = 1) -> tuple[pd.DataFrame, np.ndarray]:
    """Features with `color` as a pandas category column (as the libraries are trained), and a
    binary label that depends on f0, f1 and the color; a few NaNs so the boosters learn where
    missing values go."""
    df = colored_rows(n, seed)
    X = df[FEATURES + ["color"]].assign(color=lambda d: pd.Categorical(d.color, COLORS))
    X.loc[X.index[::37], "f1"] = np.nan
    y = ((X.f0 + 0.5 * X.f1.fillna(0) + (X.color == "red")) > 0.4).astype(int).to_numpy()
    return X, y


def as_category(df: pd.DataFrame) -> pd.DataFrame:
    """The rows as the user's own code hands them to the library: color as a pandas category."""
    return df[FEATURES + ["color"]].assign(color=lambda d: pd.Categorical(d.color))


def fitted(estimator, n: int = 200):
    return estimator.fit(float_rows(n, seed=3)[FEATURES], np.zeros(n))


def make_spec(model_path, pattern, output, fmt="csv", batch_size=64, split_bytes=64 << 20):
    ref = loading.resolve(str(model_path))
    model, _ = loading.load(ref)
    facts = dataclasses.replace(inspect(model), missing_ok=frozenset())
    columns = pa.schema([("id", pa.int64())] + [(f, pa.float64()) for f in FEATURES])
    return ScoringSpec(
        run_id="test-run",
        input_format=fmt,
        input_pattern=str(pattern),
        output=str(output),
        features=tuple(FEATURES),
        keys=("id",),
        columns=columns,
        model=ref,
        facts=facts,
        text=TextFormat(),
        batch_size=batch_size,
        split_bytes=split_bytes,
    )


def sqlite_store(tmp_path, experiment: str = "nightly") -> str:
    """A sqlite tracking store whose experiment keeps its artifacts under tmp_path (MLflow's
    default would be ./mlruns in the working directory: the checkout)."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    MlflowClient(uri).create_experiment(experiment, artifact_location=str(tmp_path / "artifacts"))
    return uri


DATAFLOW = [
    "--runner",
    "DataflowRunner",
    "--project",
    "test-project",
    "--region",
    "europe-west1",
    "--temp_location",
    "gs://test-bucket/dataflow/tmp",
    "--setup_file",
    str(ROOT / "setup.py"),
    "--job_name",
    "beamscore-test",
    "--max_num_workers",
    "7",
    "--dry_run=True",
    "--no_auth",
]


def written_under(gcs, url: str) -> list[str]:
    prefix = url.removeprefix("gs://scoring/")
    return [b.name for b in gcs["bucket"].list_blobs(prefix=prefix)]


def upload_parquet(bucket, name: str, df) -> None:
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), buf)
    bucket.blob(name).upload_from_string(buf.getvalue())


def read_predictions(bucket, prefix: str):
    blobs = [b for b in bucket.list_blobs(prefix=prefix) if b.name.endswith(".parquet")]
    tables = [pq.read_table(io.BytesIO(b.download_as_bytes())) for b in blobs]
    return blobs, pa.concat_tables(tables).to_pandas()


class Receiver:
    """An OpenLineage endpoint on 127.0.0.1 that records every request it is sent."""

    def __init__(self, status: int = 201):
        self.requests: list[tuple[str, dict, bytes]] = []
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append((self.path, dict(self.headers), body))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):  # the test reads requests, not the server's log
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def events(self) -> list[dict]:
        return [json.loads(body) for _, _, body in self.requests]


@contextlib.contextmanager
def serving(status: int = 201):
    receiver = Receiver(status)
    receiver.thread.start()
    try:
        yield receiver
    finally:
        receiver.server.shutdown()
        receiver.server.server_close()


CHROMIUM = Path("/usr/bin/chromium")


# Without the background-networking flags Chromium phones home at start, which this machine
# refuses; --disable-quic and friends keep it quiet too.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


class Page:
    """A report loaded in the browser, with every request, dialog and console error it caused."""

    def __init__(self, context, path: Path):
        self.url = path.as_uri()
        self.requests: list[str] = []
        self.dialogs: list[str] = []
        self.console_errors: list[str] = []  # a fetch the CSP blocked is reported here
        self.page = context.new_page()
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on(
            "console", lambda msg: msg.type == "error" and self.console_errors.append(msg.text)
        )
        self.page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))
        self.page.goto(self.url, wait_until="load")

    def text(self, selector: str) -> str:
        return self.page.inner_text(selector).strip()

    def number(self, selector: str) -> float:
        """A number as the page shows it ("1,234", "0.50%"): percentages as fractions."""
        text = self.text(selector)
        value = float(re.sub(r"[,%\s]", "", text))
        return value / 100 if text.endswith("%") else value

    def attr(self, selector: str, name: str) -> str | None:
        return self.page.get_attribute(selector, name)

    def all(self, selector: str):
        return self.page.locator(selector).all()

    def screenshot(self, path: Path) -> Path:
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def close(self):
        self.page.close()


def pipeline_under_test():
    """A TestPipeline on the runner a local night runs on (the FnApiRunner, which Beam's
    DirectRunner reaches only after trying to download its Prism runner into ~/.apache_beam)."""
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.testing.test_pipeline import TestPipeline

    from pipeline.runners import named

    return TestPipeline(runner=named("DirectRunner").beam_runner(PipelineOptions([])))


SCRIPT = "<script>alert(1)</script>"


def opened(browser, cli) -> Page:
    """The report the run wrote into its output directory."""
    assert cli.manifest["report"] == "report.html"
    return Page(browser, cli.output / "report.html")


def assert_png(path: Path) -> None:
    """A non-empty PNG of a real page's size."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path
    width, height = struct.unpack(">II", data[16:24])
    assert width >= 1000 and height >= 600 and len(data) > 20_000, (width, height, len(data))


def assert_offline(page: Page) -> None:
    """The page itself was the only request, nothing tried another, and its CSP forbids any."""
    assert page.requests == [page.url], page.requests
    assert page.console_errors == [], page.console_errors
    assert page.page.locator("[src], link, iframe, object, embed").count() == 0
    csp = page.attr('meta[http-equiv="Content-Security-Policy"]', "content")
    assert "default-src 'none'" in csp


def assert_headline(page: Page, m: dict) -> None:
    """The numbers at the top are the manifest's."""
    assert page.text("#status") == m["status"].upper()
    assert page.attr("#status", "data-status") == m["status"]
    assert page.text("#run-id") == m["run_id"]
    assert page.text("#run-date") == m["run_date"]
    for key in ("rows_read", "rows_predicted", "rows_failed"):
        assert page.number("#" + key.replace("_", "-")) == m["counts"][key], key
    for stage in STAGES:
        assert page.number(f"#failed-{stage}") == m["counts"]["rows_failed_by_stage"][stage]
    assert page.number("#error-rate") == pytest.approx(m["error_rate"], abs=5e-5)
    assert float(page.attr("#error-rate", "data-value")) == m["error_rate"]
    assert page.number("#max-error-rate") == pytest.approx(m["max_error_rate"], abs=5e-5)
    assert page.text("#model-uri") == m["model"]["uri"]
    assert page.text("#model-version") == m["model"]["version"]
    assert page.text("#model-sha256") == m["model"]["sha256"]
    assert page.text("#started-at").startswith(m["started_at"][:19].replace("T", " "))
    assert page.number("#throughput") > 0 and page.text("#duration").endswith("s")


def module_process(module: str, *argv) -> subprocess.Popen:
    """`python -m MODULE ARGV` started from the checkout as a process, its output captured."""
    return subprocess.Popen(
        [sys.executable, "-m", module, *map(str, argv)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then freed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Reason codes (--explain): a small frame with a coarse feature, and labels of three kinds.
EXPLAIN_ROWS = 120


EXPLAIN_FEATURES = ["f0", "f1", "f2", "f3", "f4"]


def explain_frame(seed: int = 0, n: int = EXPLAIN_ROWS) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(rng.normal(size=(n, len(EXPLAIN_FEATURES))), columns=EXPLAIN_FEATURES)
    df["f4"] = np.round(df["f4"])  # a coarse feature: ties and zero contributions happen
    return df


def explain_labels(df: pd.DataFrame, kind: str) -> np.ndarray:
    if kind == "binary":
        return (df.f0 + 0.5 * df.f1 - 0.3 * df.f2 > 0).astype(int).to_numpy()
    if kind == "multi":
        return np.digitize(df.f0 + 0.5 * df.f1, [-0.5, 0.5])
    return (2 * df.f0 - df.f1 + 0.5 * df.f2 * df.f3).to_numpy()
