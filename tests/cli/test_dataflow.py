"""The Dataflow job as DataflowRunner would submit it, built offline (nothing staged or submitted).

`--dry_run=True` makes Beam translate the job and stop before it creates an API client. The
full job description (environment, staged packages) is then built by Beam's own
`DataflowApplicationClient.create_job_description`, with its one upload method replaced by one
that keeps the files in memory, as Beam's own apiclient tests do.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import subprocess
import sys
import tarfile
from unittest import mock

import pytest

from tests.conftest import ROOT, float_rows, write_input
from tests.helpers import DATAFLOW, written_under

pytestmark = pytest.mark.slow


@pytest.fixture
def job_inputs(tmp_path, models_dir):
    write_input(float_rows(50), tmp_path / "in" / "a.parquet")
    return [
        "--input",
        str(tmp_path / "in" / "*.parquet"),
        "--model",
        str(models_dir / "binary.joblib"),
        "--output",
        str(tmp_path / "out"),
        "--run_date",
        "2026-11-24",
    ]


@pytest.fixture
def gs_job_inputs(tmp_path, models_dir, gcs):
    """The same job with its input, model and output in Cloud Storage (the emulator): Dataflow
    workers cannot read local paths, so a Dataflow launch refuses them."""
    prefix = f"dataflow/{tmp_path.name}"
    bucket = gcs["bucket"]
    local = write_input(float_rows(50), tmp_path / "upload" / "a.parquet")
    bucket.blob(f"{prefix}/in/a.parquet").upload_from_filename(local)
    bucket.blob(f"{prefix}/binary.joblib").upload_from_filename(models_dir / "binary.joblib")
    return [
        "--input",
        f"gs://scoring/{prefix}/in/*.parquet",
        "--model",
        f"gs://scoring/{prefix}/binary.joblib",
        "--output",
        f"gs://scoring/{prefix}/out",
        "--run_date",
        "2026-11-24",
    ]


@contextlib.contextmanager
def sdist_lock():
    """Building the staged sdist writes beamscore.egg-info into the checkout: one build at a time
    across pytest's worker processes (a lock file in the temporary directory, per checkout)."""
    import hashlib
    import tempfile

    key = hashlib.sha256(str(ROOT).encode()).hexdigest()[:12]
    with open(os.path.join(tempfile.gettempdir(), f"beamscore-sdist-{key}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _leaf_names(proto_pipeline) -> set[str]:
    transforms = proto_pipeline.components.transforms
    return {t.unique_name for t in transforms.values() if not t.subtransforms}


def _translated(gs_job_inputs, monkeypatch):
    """The dry run's job (gs:// input and output, as Dataflow needs) and the files its
    description stages (kept in memory, not uploaded)."""
    from apache_beam.runners.dataflow.internal import apiclient

    from pipeline.run import run

    monkeypatch.setenv("NO_GCE_CHECK", "True")
    res = run([*gs_job_inputs, *DATAFLOW])
    job = res.pipeline_result.job
    staged: dict[str, bytes] = {}

    def keep(self, path, file_name, stream, *args, **kwargs):
        staged[file_name] = stream.read()

    with sdist_lock(), mock.patch.object(apiclient.DataflowApplicationClient, "stage_file", keep):
        client = apiclient.DataflowApplicationClient(job.options)
        client.create_job_description(job)
    return res, job, staged


def test_dataflow_translation_has_the_steps_options_and_package(gs_job_inputs, gcs, monkeypatch):
    res, job, staged = _translated(gs_job_inputs, monkeypatch)
    assert res.dry_run and res.exit_code == 0
    output = gs_job_inputs[gs_job_inputs.index("--output") + 1]
    assert not written_under(gcs, output), "a dry run must not touch DIR"
    top = {
        t.unique_name
        for t in job.proto_pipeline.components.transforms.values()
        if t.unique_name and "/" not in t.unique_name
    }
    expected = {"PlanInput", "ReadParquet", "Validate", "Predict", "AllErrors", "Summary"}
    assert expected | {"Write"} <= top, top
    leaves = _leaf_names(job.proto_pipeline)
    assert any(name.startswith("Predict") for name in leaves), leaves
    options = job.options.get_all_options()
    assert options["job_name"] == "beamscore-test"
    assert options["setup_file"] == str(ROOT / "setup.py")
    assert options["max_num_workers"] == 7
    assert options["region"] == "europe-west1"
    env = json.loads(job.json())["environment"]
    assert env["tempStoragePrefix"].startswith("storage.googleapis.com/test-bucket/dataflow/tmp")
    pool = env["workerPools"][0]
    assert pool["workerHarnessContainerImage"].startswith("gcr.io/cloud-dataflow/"), pool
    assert {p["name"] for p in pool["packages"]} >= {"workflow.tar.gz"}
    sdk = env["sdkPipelineOptions"]["options"]
    assert sdk["setup_file"] == str(ROOT / "setup.py") and sdk["max_num_workers"] == 7

    # The package --setup_file ships: our packages and the lock file setup.py pins from (the
    # workers' DoFns wrap the scoring core).
    assert "workflow.tar.gz" in staged, sorted(staged)
    with tarfile.open(fileobj=io.BytesIO(staged["workflow.tar.gz"])) as sdist:
        names = {n.split("/", 1)[1] for n in sdist.getnames() if "/" in n}
    for required in (
        "setup.py",
        "constraints.txt",
        "pipeline/run.py",
        "transforms/predict.py",
        "models/loading.py",
        "scoring/predict.py",
        "scoring/values.py",
        "service/app.py",
    ):
        assert required in names, required


@pytest.mark.subprocess
@pytest.mark.worker_install
def test_the_staged_package_installs_and_scores_in_a_fresh_virtualenv(
    job_inputs, gs_job_inputs, gcs, tmp_path, monkeypatch
):
    """What a Dataflow worker does with the staged sdist: a pip install from the package index
    into a fresh virtualenv (minutes: run by .ci/run's second step, or `./run_tests.sh -m
    worker_install`), `pip check`, and a scoring run from the installed package."""
    _, _, staged = _translated(gs_job_inputs, monkeypatch)
    # It installs into a fresh virtualenv as a worker installs it, and that install scores.
    sdist = tmp_path / "workflow.tar.gz"
    sdist.write_bytes(staged["workflow.tar.gz"])
    venv = tmp_path / "worker-venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "--quiet", str(sdist)],
        capture_output=True,
        text=True,
    )
    assert pip.returncode == 0, pip.stderr[-3000:]
    check = subprocess.run([str(venv / "bin" / "pip"), "check"], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout
    pinned = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import sklearn, apache_beam as b; print(b.__version__)",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    import apache_beam

    assert pinned.stdout.strip() == apache_beam.__version__, pinned.stderr
    inputs = [str(a) for a in job_inputs]
    inputs[inputs.index("--output") + 1] = str(tmp_path / "worker-out")
    scored = subprocess.run(
        [str(venv / "bin" / "beamscore"), *inputs],
        capture_output=True,
        text=True,
        cwd=tmp_path,  # not the checkout: the installed package must stand on its own
    )
    assert scored.returncode == 0, scored.stderr[-3000:]
    manifest = json.loads((tmp_path / "worker-out" / "manifest.json").read_text())
    assert manifest["counts"]["rows_predicted"] == 50


def _job_size(pattern: str, tmp_path, name: str) -> int:
    from pipeline.run import run

    res = run(
        [
            "--input",
            pattern,
            "--model",
            str(job_model(tmp_path)),
            "--output",
            str(tmp_path / name),
            *DATAFLOW,
        ]
    )
    return len(res.pipeline_result.job.json())


def job_model(tmp_path):
    import joblib
    from sklearn.linear_model import LinearRegression

    path = tmp_path / "m.joblib"
    if not path.exists():
        df = float_rows(50)
        joblib.dump(LinearRegression().fit(df[["f0", "f1"]], df.f2), path)
    return path


def test_job_description_does_not_grow_with_the_number_of_files(tmp_path, monkeypatch):
    """The workers match the input pattern: 10,000 files make the same job as 10.

    The files are local (10,000 objects in the emulator take minutes to make), so the launch's
    refusal of local paths on Dataflow is switched off here: it is tested on its own
    (test_dataflow_refuses_local_paths), and the job description does not depend on it."""
    from pipeline.runners import RemoteRunner

    monkeypatch.setattr(RemoteRunner, "_remote_paths", lambda self, opts: None)
    monkeypatch.setenv("NO_GCE_CHECK", "True")
    sizes = {}
    for name, count in (("in-few", 10), ("in-lot", 10_000)):
        folder = tmp_path / name
        write_input(float_rows(5), folder / "part-00000.parquet")
        for i in range(1, count):
            (folder / f"part-{i:05d}.parquet").touch()  # empty files are zero rows
        sizes[count] = _job_size(str(folder / "*.parquet"), tmp_path, f"out-{name}")
    assert sizes[10_000] <= sizes[10], sizes


@pytest.mark.subprocess
def test_run_dataflow_sh_dry_run(gs_job_inputs, gcs, tmp_path):
    env = {
        **os.environ,
        "PROJECT": "test-project",
        "REGION": "europe-west1",
        "BUCKET": "test-bucket",
        "NO_GCE_CHECK": "True",
    }
    result = subprocess.run(
        [str(ROOT / "run_dataflow.sh"), *gs_job_inputs, "--dry_run=True"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    line = result.stdout.strip().splitlines()[-1]
    assert line.startswith("DRY RUN: Dataflow job beamscore-2026-11-24-"), line
    assert not written_under(gcs, gs_job_inputs[gs_job_inputs.index("--output") + 1])


def test_dry_run_needs_dataflow(job_inputs):
    from tests.conftest import assert_one_line_error, run_cli

    cli = run_cli(*job_inputs, "--dry_run=True")
    assert_one_line_error(cli, "--dry_run", "DataflowRunner")


def test_workers_install_the_library_a_booster_needs(tmp_path, monkeypatch, gcs):
    """Workers install beamscore from its sdist without extras: an XGBoost model's library goes
    to them in a requirements file pinned to the running version."""
    import xgboost as xgb
    from apache_beam.runners.dataflow.internal import apiclient

    from pipeline.run import run

    df = float_rows(200)
    booster = xgb.train(
        {"objective": "binary:logistic"},
        xgb.DMatrix(df[["f0", "f1"]], label=(df.f0 > 0).astype(int)),
        num_boost_round=3,
    )
    booster.save_model(tmp_path / "m.json")
    write_input(df, tmp_path / "in" / "a.parquet")
    prefix = f"dataflow/{tmp_path.name}"
    gcs["bucket"].blob(f"{prefix}/m.json").upload_from_filename(tmp_path / "m.json")
    gcs["bucket"].blob(f"{prefix}/in/a.parquet").upload_from_filename(tmp_path / "in" / "a.parquet")
    monkeypatch.setenv("NO_GCE_CHECK", "True")
    res = run(
        [
            "--input",
            f"gs://scoring/{prefix}/in/*.parquet",
            "--model",
            f"gs://scoring/{prefix}/m.json",
            "--output",
            f"gs://scoring/{prefix}/out",
            *DATAFLOW,
            "--requirements_cache=skip",  # the workers fetch it; nothing downloaded here
        ]
    )
    staged: dict[str, bytes] = {}

    def keep(self, path, file_name, stream, *args, **kwargs):
        staged[file_name] = stream.read()

    with sdist_lock(), mock.patch.object(apiclient.DataflowApplicationClient, "stage_file", keep):
        job = res.pipeline_result.job
        apiclient.DataflowApplicationClient(job.options).create_job_description(job)
    assert staged["requirements.txt"].decode().split() == [f"xgboost-cpu=={xgb.__version__}"]


@pytest.mark.subprocess
def test_runner_settings_are_checked_before_the_output_is_touched(job_inputs, tmp_path):
    from tests.conftest import assert_one_line_error, run_cli

    args = [a if not str(a).endswith("out") else tmp_path / "fresh" for a in job_inputs]
    for flags, says in (
        (["--runner", "Bogus"], "--runner Bogus"),
        (["--runner", "DataflowRunner"], "needs --project, --region, --temp_location"),
        (
            ["--runner", "DataflowRunner", "--project", "p", "--region", "r"]
            + ["--temp_location", str(tmp_path / "tmp")],
            "--temp_location must be a gs:// path",
        ),
    ):
        cli = run_cli(*args, *flags)
        assert_one_line_error(cli, says)
        assert not (tmp_path / "fresh").exists()
    env = {k: v for k, v in os.environ.items() if k not in ("PROJECT", "REGION", "BUCKET")}
    result = subprocess.run(
        [str(ROOT / "run_dataflow.sh"), *map(str, args)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**env, "PROJECT": "p"},
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: set REGION to the Dataflow region, e.g. europe-west1 "
        "(see the README: Running on Dataflow)"
    )


@pytest.mark.parametrize("dry_run", [True, False], ids=["dry-run", "launch"])
def test_dataflow_refuses_local_paths(job_inputs, tmp_path, dry_run):
    """Dataflow workers run on other machines: a local --input, --output or model file is exit
    2, one line, before anything is read or written (a dry run used to say all was well)."""
    from tests.conftest import assert_one_line_error, run_cli

    flags = [a for a in DATAFLOW if not a.startswith("--dry_run")]
    flags += ["--dry_run=True"] if dry_run else []
    # Should the check ever let a launch through, nothing leaves this machine.
    offline = {"HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9"}
    offline |= {"NO_GCE_CHECK": "True", "STORAGE_EMULATOR_HOST": "http://127.0.0.1:9"}
    cli = run_cli(*job_inputs, *flags, env=offline)
    assert_one_line_error(
        cli, "Dataflow workers cannot read local paths", "--input", "--output", "--model", "gs://"
    )
    assert not (tmp_path / "out").exists()
    gs = [
        "gs://scoring/in/*.parquet" if a.endswith(".parquet") else a for a in map(str, job_inputs)
    ]
    gs[gs.index("--output") + 1] = "gs://scoring/out"
    cli = run_cli(*gs, *flags, env=offline)  # only the model is local
    assert_one_line_error(cli, "--model ", "cannot read local paths")
    assert "--input" not in cli.stderr and "--output" not in cli.stderr


def _service_account_key(path) -> str:
    """A well-formed service-account key of an account that does not exist."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    key = {
        "type": "service_account",
        "project_id": "test-project",
        "private_key_id": "0",
        "private_key": pem.decode(),
        "client_email": "nobody@test-project.iam.gserviceaccount.com",
        "client_id": "0",
        "token_uri": "https://oauth2.googleapis.com/token",
    }
    path.write_text(json.dumps(key))
    return str(path)


@pytest.mark.parametrize("case", ["storage-down", "no-network", "no-credentials"])
def test_dry_run_without_cloud_storage_is_one_line_within_seconds(tmp_path, case):
    """A Dataflow dry run whose Cloud Storage does not answer is exit 3 within the check's 15 s
    (it was exit 4 after two minutes of the client's retries); without credentials it is exit 2
    at once. Nothing here reaches a real host: every HTTP(S) request goes to a closed port."""
    import time

    from tests.conftest import run_cli

    closed = "http://127.0.0.1:9"
    env = {"NO_GCE_CHECK": "True", "GCE_METADATA_HOST": "127.0.0.1:9"}
    env |= {"GCE_METADATA_IP": "127.0.0.1:9", "NO_PROXY": None, "no_proxy": None}
    env |= {v: closed for v in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy")}
    env |= {"HOME": str(tmp_path), "CLOUDSDK_CONFIG": str(tmp_path / "gcloud")}
    env |= {"STORAGE_EMULATOR_HOST": None, "GOOGLE_APPLICATION_CREDENTIALS": None}
    flags = list(DATAFLOW)
    if case == "storage-down":
        env["STORAGE_EMULATOR_HOST"] = closed
    else:
        flags.remove("--no_auth")  # the credentials a real launch looks for
    if case == "no-network":
        env["GOOGLE_APPLICATION_CREDENTIALS"] = _service_account_key(tmp_path / "key.json")
    paths = ["--input", "gs://bkt/in/*.parquet", "--model", "gs://bkt/m.joblib"]
    paths += ["--output", "gs://bkt/out"]
    start = time.monotonic()
    cli = run_cli(*paths, *flags, env=env, timeout=120)
    took = time.monotonic() - start
    assert cli.stderr.count("\n") == 1 and cli.stderr.startswith("error: "), cli.stderr
    assert "--output gs://bkt/out" in cli.stderr
    if case == "no-credentials":
        assert cli.code == 2 and "credentials were not found" in cli.stderr, cli.stderr
    else:
        assert cli.code == 3 and "Cloud Storage unreachable" in cli.stderr, cli.stderr
    assert took < 60, took
