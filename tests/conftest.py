"""Fixtures: small real models trained in seconds, input files in every format, the CLI."""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import configuration, settings

from models import demo

# Hypothesis keeps its example database and caches in .hypothesis/ of the working directory (the
# checkout): tests write only under temporary directories, so it gets one of its own.
_HYPOTHESIS_HOME = tempfile.mkdtemp(prefix="beamscore-hypothesis-")
atexit.register(shutil.rmtree, _HYPOTHESIS_HOME, ignore_errors=True)
configuration.set_hypothesis_home_dir(_HYPOTHESIS_HOME)
settings.register_profile("beamscore", database=None)
settings.load_profile("beamscore")

ROOT = Path(__file__).resolve().parent.parent

# A launch check waits up to 15 s on a service that does not answer before exit 3; the tests of
# those answers wait for the verdict, not for the deadline (test_config_errors checks the knob).
os.environ.setdefault("BEAMSCORE_LAUNCH_DEADLINE_S", "2")
FEATURES = [f"f{i}" for i in range(4)]


def float_rows(n: int, seed: int = 0, start_id: int = 0) -> pd.DataFrame:
    """An id column and four float features."""
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(rng.normal(size=(n, len(FEATURES))), columns=FEATURES)
    df.insert(0, "id", np.arange(start_id, start_id + n, dtype=np.int64))
    return df


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory) -> Path:
    """Trains the test models once: binary, multi-class (string labels), regressor, NaN-tolerant."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LinearRegression, LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    out = tmp_path_factory.mktemp("models")
    X = float_rows(2000, seed=1)[FEATURES]
    y_bin = (X.f0 + 0.5 * X.f1 > 0).astype(int)
    y_multi = np.select([X.f0 < -0.5, X.f0 < 0.5], ["low", "mid"], "high")
    joblib.dump(
        make_pipeline(StandardScaler(), LogisticRegression()).fit(X, y_bin), out / "binary.joblib"
    )
    joblib.dump(LogisticRegression(max_iter=500).fit(X, y_multi), out / "multiclass.pkl")
    joblib.dump(LinearRegression().fit(X, 3 * X.f0 - X.f2), out / "regressor.joblib")
    joblib.dump(HistGradientBoostingClassifier(max_iter=20).fit(X, y_bin), out / "hgb.joblib")
    joblib.dump(demo.train(), out / "categorical.joblib")
    return out


def write_input(df: pd.DataFrame, path: Path) -> Path:
    """Writes a frame as Parquet, CSV or JSON Lines, by the path's extension."""
    path.parent.mkdir(parents=True, exist_ok=True)
    name = path.name
    if name.endswith(".parquet"):
        pq.write_table(pa.Table.from_pandas(df, preserve_index=False), path)
    elif name.endswith(".csv"):
        df.to_csv(path, index=False)
    elif name.endswith(".jsonl"):
        df.to_json(path, orient="records", lines=True)
    else:
        raise ValueError(name)
    return path


class Cli:
    """Runs `python -m pipeline.run` as a user would, and reads what it wrote."""

    def __init__(self, result: subprocess.CompletedProcess, output: Path | None):
        self.result = result
        self.output = output

    @property
    def code(self) -> int:
        return self.result.returncode

    @property
    def stderr(self) -> str:
        return self.result.stderr

    @property
    def manifest(self) -> dict:
        return json.loads((self.output / "manifest.json").read_text())

    def predictions(self) -> pd.DataFrame:
        files = sorted((self.output / "predictions").glob("*.parquet"))
        return pa.concat_tables([pq.read_table(f) for f in files]).to_pandas()

    def errors(self) -> list[dict]:
        return [
            json.loads(line)
            for f in sorted((self.output / "errors").glob("*.jsonl"))
            for line in f.read_text().split("\n")[:-1]
        ]


def run_cli(*args: str, env: dict | None = None, timeout: float = 300, process=False) -> Cli:
    """Runs the CLI as a user would; `--output` is read back from the arguments.

    By default the entry point (`pipeline.run.main`) is called in this test process: the same
    code path, exit code, stdout and stderr (log lines included), without paying a new
    interpreter and Beam's import per test. `process=True` runs `python -m pipeline.run` in a
    subprocess, for what only a real process shows: signals, locks between processes, a fresh
    interpreter's imports, a hard timeout. BEAMSCORE_TESTS_IN_SUBPROCESS=1 runs every call in
    a subprocess (to check that the in-process layer hides nothing).

    `env` changes the environment for the call; a value of None removes a variable.
    """
    argv = [str(a) for a in args]
    output = Path(argv[argv.index("--output") + 1]) if "--output" in argv else None
    if not process and not os.environ.get("BEAMSCORE_TESTS_IN_SUBPROCESS"):
        return Cli(_in_process(argv, env), output)
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.run", *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env=_environment(env),
    )
    return Cli(result, output)


def _in_process(argv: list[str], env: dict | None) -> subprocess.CompletedProcess:
    import contextlib
    import io
    import logging

    from pipeline import run as cli

    out, err = io.StringIO(), io.StringIO()
    handler = logging.StreamHandler(err)  # as main()'s basicConfig would log to stderr
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    level = root.level
    saved = dict(os.environ)
    wanted = _environment(env)
    try:
        os.environ.clear()
        os.environ.update(wanted)
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli.main(argv)
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
        os.environ.clear()
        os.environ.update(saved)
    return subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue())


def score(inp, model, out, *more, env: dict | None = None, process=False) -> Cli:
    """The CLI on one input pattern, model and output directory, with more flags."""
    return run_cli(
        "--input", inp, "--model", model, "--output", out, *more, env=env, process=process
    )


def _environment(changes: dict | None) -> dict:
    """os.environ with `changes` applied; a value of None removes the variable."""
    env = {**os.environ, **(changes or {})}
    return {k: v for k, v in env.items() if v is not None}


def kill_hook(what: str) -> dict:
    """The environment of a subprocess run whose commit is killed right after its journal is
    written (`what`: "journal" or "sigterm_launcher"; see tests/hooks/sitecustomize.py)."""
    path = os.pathsep.join([str(ROOT / "tests" / "hooks"), str(ROOT)])
    return {"PYTHONPATH": path, "BEAMSCORE_TEST_KILL_IN_COMMIT": what}


def assert_one_line_error(cli: Cli, *words: str) -> None:
    """Exit 2, one line on stderr naming the problem, no traceback."""
    assert cli.code == 2, cli.stderr
    lines = [ln for ln in cli.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, cli.stderr
    assert "Traceback" not in cli.stderr
    assert " INFO " not in cli.stderr, cli.stderr  # the launcher's progress lines are held back
    for word in words:
        assert word in lines[0], lines[0]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def gcs():
    """The emulator on 127.0.0.1 (in memory), a bucket, and a client for it."""
    port = _free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gcp_storage_emulator",
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--in-memory",
            "--default-bucket",
            "scoring",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=ROOT,
    )
    host = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            assert proc.poll() is None and time.monotonic() < deadline, "emulator did not start"
            time.sleep(0.1)
    os.environ["STORAGE_EMULATOR_HOST"] = host
    from pipeline.gcs import client

    yield {"host": host, "bucket": client().bucket("scoring")}
    os.environ.pop("STORAGE_EMULATOR_HOST", None)
    proc.terminate()
    proc.wait(timeout=10)


# The BigQuery emulator pins its own versions, so it lives in its own virtualenv, built once into
# this cache directory (about 40 s) and reused by later runs.
BQEMU_CACHE = Path(os.environ.get("BQEMU_CACHE", ROOT / ".cache" / "bqemulator"))
BQEMU_PACKAGES = ["bqemulator", "duckdb==1.5.5", "duckdb-extension-spatial==1.5.5", "numpy"]
BQ_PROJECT = "emu-project"

# Installs DuckDB's spatial extension (which bqemulator loads at start) from the PyPI package's
# file into $HOME/.duckdb, since DuckDB would otherwise download it.
_INSTALL_SPATIAL = """
import pathlib, duckdb, duckdb_extension_spatial
pkg = pathlib.Path(duckdb_extension_spatial.__file__).parent
ext = next(pkg.glob(f"extensions/v{duckdb.__version__}/spatial.duckdb_extension"))
con = duckdb.connect(":memory:")
con.execute(f"INSTALL '{ext}'")
con.execute("LOAD spatial")
"""


def _bqemulator_venv() -> Path:
    """The emulator's virtualenv (and DuckDB home), built once; safe with parallel workers."""
    BQEMU_CACHE.mkdir(parents=True, exist_ok=True)
    stamp = BQEMU_CACHE / "ready"
    want = " ".join(BQEMU_PACKAGES)
    with open(BQEMU_CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not stamp.exists() or stamp.read_text() != want:
            venv = BQEMU_CACHE / "venv"
            subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
            subprocess.run(
                [str(venv / "bin" / "pip"), "install", "--quiet", *BQEMU_PACKAGES],
                check=True,
                capture_output=True,
            )
            home = BQEMU_CACHE / "home"
            home.mkdir(exist_ok=True)
            subprocess.run(
                [str(venv / "bin" / "python"), "-c", _INSTALL_SPATIAL],
                check=True,
                env={**os.environ, "HOME": str(home)},
            )
            stamp.write_text(want)
    return BQEMU_CACHE


@pytest.fixture(scope="session")
def bigquery_emulator(tmp_path_factory):
    """bqemulator on 127.0.0.1 (in memory), BIGQUERY_EMULATOR_HOST set, and a client for it."""
    cache = _bqemulator_venv()
    rest, grpc = _free_port(), _free_port()
    log = tmp_path_factory.mktemp("bqemulator") / "server.log"
    env = {**os.environ, "HOME": str(cache / "home"), "BQEMU_ENABLE_FORMAT_EXTENSIONS": "false"}
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                str(cache / "venv" / "bin" / "bqemulator"),
                "start",
                "--rest-host",
                "127.0.0.1",
                "--rest-port",
                str(rest),
                "--grpc-host",
                "127.0.0.1",
                "--grpc-port",
                str(grpc),
                "--project",
                BQ_PROJECT,
                "--ephemeral",
                "--log-level",
                "warning",
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{rest}"  # the client wants the scheme
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, f"bqemulator exited:\n{log.read_text()[-3000:]}"
        try:
            with urllib.request.urlopen(url + "/readyz", timeout=1) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        assert time.monotonic() < deadline, f"bqemulator not ready:\n{log.read_text()[-3000:]}"
        time.sleep(0.1)
    os.environ["BIGQUERY_EMULATOR_HOST"] = url
    os.environ["BIGQUERY_STORAGE_EMULATOR_HOST"] = f"127.0.0.1:{grpc}"  # Storage Read API
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import bigquery

    client = bigquery.Client(project=BQ_PROJECT, credentials=AnonymousCredentials())
    yield {
        "host": url,
        "storage_host": f"127.0.0.1:{grpc}",
        "client": client,
        "project": BQ_PROJECT,
        "process": proc,
    }
    os.environ.pop("BIGQUERY_EMULATOR_HOST", None)
    os.environ.pop("BIGQUERY_STORAGE_EMULATOR_HOST", None)
    proc.terminate()  # in memory (--ephemeral): nothing to flush, and its shutdown can hang
    try:
        proc.wait(timeout=1)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# --- a real MLflow tracking server ----------------------------------------------------------


def _run_dir(tmp_path_factory) -> Path:
    """The directory this pytest run's workers share: the base of their temporary directories
    under xdist (each worker's is popen-gwN inside it), this process's own otherwise."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


MLFLOW_SERVER_RECORD = "mlflow-server.json"  # its URI and pid, in _run_dir


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory) -> str:
    """A real `mlflow server` on 127.0.0.1 (sqlite backend, artifacts served), its URI. One per
    pytest run, whichever xdist worker asks first (it takes about 11 s to start); the main
    process stops it when the run ends (pytest_sessionfinish)."""
    shared = _run_dir(tmp_path_factory)
    with open(shared / "mlflow-server.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        record = shared / MLFLOW_SERVER_RECORD
        if record.exists():
            return json.loads(record.read_text())["uri"]
        root = shared / "mlflow-server"
        root.mkdir()
        port = _free_port()
        proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1"),
                *("--port", str(port), "--workers", "1"),
                *("--backend-store-uri", f"sqlite:///{root}/mlflow.db"),
                *("--artifacts-destination", str(root / "artifacts")),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # so that stopping it stops its workers too
        )
        uri = f"http://127.0.0.1:{port}"
        record.write_text(json.dumps({"uri": uri, "pid": proc.pid}))
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"{uri}/health", timeout=1).read()
                return uri
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "mlflow not up"
                time.sleep(0.5)


# The fixtures that start (or share) a real service on 127.0.0.1: a test using one is `backed`.
BACKED_FIXTURES = frozenset({"gcs", "bigquery_emulator", "mlflow_server", "receiver"})


def pytest_collection_modifyitems(items) -> None:
    for item in items:
        if BACKED_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.backed)


def pytest_sessionfinish(session) -> None:
    """The main process, once every worker is done: stops the MLflow server if one started."""
    if hasattr(session.config, "workerinput"):
        return
    factory = getattr(session.config, "_tmp_path_factory", None)
    record = factory.getbasetemp() / MLFLOW_SERVER_RECORD if factory else None
    if record is None or not record.exists():
        return
    import signal

    pid = json.loads(record.read_text())["pid"]
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    record.unlink()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """Debian's Chromium with a fresh profile, through Playwright (pages: tests.helpers.Page)."""
    from tests.helpers import CHROMIUM, CHROMIUM_ARGS

    assert CHROMIUM.exists(), "no /usr/bin/chromium: run scripts/install_browser.sh"
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 900},
        )
        yield context
        context.close()


@pytest.fixture(scope="session")
def booster_files(tmp_path_factory):
    """Model files written by XGBoost and LightGBM themselves, trained in about a second."""
    import joblib
    import lightgbm as lgb
    import xgboost as xgb

    from tests.helpers import training_frame

    out = tmp_path_factory.mktemp("boosters")
    X, y = training_frame()
    numeric = X[FEATURES]
    three = np.digitize(numeric.f0, [-0.5, 0.5])  # classes 0, 1, 2
    params = {"max_depth": 3, "nthread": 1}
    xgb.train(
        {**params, "objective": "binary:logistic"},
        xgb.DMatrix(X, y, enable_categorical=True),
        15,
    ).save_model(out / "cat.json")
    xgb.train(
        {**params, "objective": "multi:softprob", "num_class": 3}, xgb.DMatrix(numeric, three), 10
    ).save_model(out / "multi.ubj")
    joblib.dump(
        xgb.XGBClassifier(n_estimators=15, max_depth=3, n_jobs=1).fit(numeric, y),
        out / "xgb_classifier.joblib",
    )
    lgb.train(
        {"objective": "binary", "verbose": -1, "num_threads": 1, "min_data_per_group": 5},
        lgb.Dataset(X, y),
        15,
    ).save_model(out / "cat.txt")
    labels = np.array(["low", "mid", "high"])[three]
    joblib.dump(
        lgb.LGBMClassifier(n_estimators=10, verbose=-1, n_jobs=1).fit(numeric, labels),
        out / "lgb_classifier.joblib",
    )
    return out


@pytest.fixture
def receiver():
    """An OpenLineage endpoint on 127.0.0.1 recording what it is sent (tests.helpers.Receiver)."""
    from tests.helpers import serving

    with serving() as r:
        yield r


@pytest.fixture(autouse=True)
def no_ambient_openlineage(monkeypatch):
    """The developer's or CI's own OpenLineage settings reach no test."""
    for name in (
        "OPENLINEAGE_URL",
        "OPENLINEAGE_NAMESPACE",
        "OPENLINEAGE_ENDPOINT",
        "OPENLINEAGE_API_KEY",
        "OPENLINEAGE_DISABLED",
    ):
        monkeypatch.delenv(name, raising=False)
