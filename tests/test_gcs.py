"""gs:// in and out against a real local Cloud Storage emulator (gcp-storage-emulator)."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import FEATURES, ROOT, float_rows, run_cli

pytestmark = pytest.mark.slow


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


def upload_parquet(bucket, name: str, df) -> None:
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), buf)
    bucket.blob(name).upload_from_string(buf.getvalue())


def read_predictions(bucket, prefix: str):
    blobs = [b for b in bucket.list_blobs(prefix=prefix) if b.name.endswith(".parquet")]
    tables = [pq.read_table(io.BytesIO(b.download_as_bytes())) for b in blobs]
    return blobs, pa.concat_tables(tables).to_pandas()


def test_gs_input_model_and_output_with_rerun(tmp_path, models_dir, gcs):
    import joblib
    import numpy as np

    bucket = gcs["bucket"]
    df1, df2 = float_rows(400, seed=1), float_rows(300, seed=2, start_id=400)
    upload_parquet(bucket, "in/2026-11-24/a.parquet", df1)
    upload_parquet(bucket, "in/2026-11-24/b.parquet", df2)
    bucket.blob("models/binary.joblib").upload_from_filename(models_dir / "binary.joblib")
    args = [
        "--input",
        "gs://scoring/in/{run_date}/*.parquet",
        "--model",
        "gs://scoring/models/binary.joblib",
        "--output",
        "gs://scoring/out/{run_date}",
        "--run_date",
        "2026-11-24",
    ]
    env = {"STORAGE_EMULATOR_HOST": gcs["host"]}
    for _ in range(2):  # the rerun replaces the first run's output
        cli = run_cli(*args, env=env)
        assert cli.code == 0, cli.stderr
    blobs, preds = read_predictions(bucket, "out/2026-11-24/predictions/")
    assert len(preds) == 700 and preds.id.is_unique
    model = joblib.load(models_dir / "binary.joblib")
    expected = float_rows(400, seed=1)
    got = preds.set_index("id").loc[expected.id]
    np.testing.assert_allclose(got.proba_1, model.predict_proba(expected[FEATURES])[:, 1])
    names = {b.name for b in bucket.list_blobs(prefix="out/2026-11-24/")}
    assert "out/2026-11-24/manifest.json" in names
    assert not [n for n in names if "/_staging/" in n or n.endswith("/_lock")]
    import json

    manifest = json.loads(bucket.blob("out/2026-11-24/manifest.json").download_as_bytes())
    assert manifest["counts"]["rows_read"] == 700
    assert manifest["model"]["uri"] == "gs://scoring/models/binary.joblib"
