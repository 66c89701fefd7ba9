"""gs:// in and out against a real local Cloud Storage emulator (gcp-storage-emulator)."""

from __future__ import annotations

import pytest

from tests.conftest import FEATURES, float_rows, run_cli
from tests.helpers import read_predictions, upload_parquet

pytestmark = pytest.mark.slow


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
