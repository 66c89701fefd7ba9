"""A night whose input is an earlier night's again (the feed sent yesterday's data twice):
marked in the manifest and the report, and a failed night with --refuse_repeated_input."""

from __future__ import annotations

import io
import json
import shutil

import pyarrow as pa
import pyarrow.parquet as pq

from tests.conftest import float_rows, run_cli, score, write_input


def test_a_night_of_the_previous_nights_files_is_marked_and_refused_with_the_flag(
    tmp_path, models_dir
):
    model = models_dir / "binary.joblib"
    inp, out = tmp_path / "in" / "{run_date}" / "*.parquet", tmp_path / "out" / "{run_date}"
    for i, date in enumerate(("2026-03-01", "2026-03-02")):
        write_input(float_rows(30 + i, seed=i), tmp_path / "in" / date / "part.parquet")
        assert score(inp, model, out, "--run_date", date).code == 0
    # The feed sends the first night's file again, under tonight's date and another name.
    (tmp_path / "in" / "2026-03-03").mkdir()
    shutil.copy(tmp_path / "in" / "2026-03-01" / "part.parquet",
                tmp_path / "in" / "2026-03-03" / "resent.parquet")  # fmt: skip

    marked = score(inp, model, out, "--run_date", "2026-03-03")
    assert marked.code == 0, marked.stderr
    marked.output = tmp_path / "out" / "2026-03-03"
    m = marked.manifest
    first = json.loads((tmp_path / "out" / "2026-03-01" / "manifest.json").read_text())
    assert m["input_fingerprint"] == first["input_fingerprint"] is not None
    assert m["inputs"][0]["content"].startswith("crc32c:")
    assert m["repeated_input"] == {"run_date": "2026-03-01", "run_id": first["run_id"]}
    page = (marked.output / "report.html").read_text()
    assert "input is the night of 2026-03-01" in page

    refused = score(inp, model, out, "--run_date", "2026-03-03", "--refuse_repeated_input")
    assert refused.code == 1, refused.stderr
    refused.output = tmp_path / "out" / "2026-03-03"
    (check,) = refused.manifest["failed_checks"]
    assert check["check"] == "refuse_repeated_input" and check["value"] == "2026-03-01"
    assert "night check failed: refuse_repeated_input: the input is the night of 2026-03-01" in (
        refused.stderr
    )

    # A night of other content is no repeat, with the flag too.
    write_input(float_rows(32, seed=7), tmp_path / "in" / "2026-03-04" / "part.parquet")
    fresh = score(inp, model, out, "--run_date", "2026-03-04", "--refuse_repeated_input")
    assert fresh.code == 0, fresh.stderr
    fresh.output = tmp_path / "out" / "2026-03-04"
    assert fresh.manifest["repeated_input"] is None


def test_cloud_storage_objects_are_fingerprinted_from_their_metadata(models_dir, gcs):
    bucket = gcs["bucket"]
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(float_rows(20), preserve_index=False), buf)
    for date in ("2026-03-01", "2026-03-02"):
        bucket.blob(f"feed/{date}/part.parquet").upload_from_string(buf.getvalue())
    bucket.blob("models/binary.joblib").upload_from_filename(models_dir / "binary.joblib")
    env = {"STORAGE_EMULATOR_HOST": gcs["host"]}
    args = [
        "--input", "gs://scoring/feed/{run_date}/*.parquet",
        "--model", "gs://scoring/models/binary.joblib",
        "--output", "gs://scoring/s/{run_date}",
    ]  # fmt: skip
    assert run_cli(*args, "--run_date", "2026-03-01", env=env).code == 0
    cli = run_cli(*args, "--run_date", "2026-03-02", "--refuse_repeated_input", env=env)
    assert cli.code == 1, cli.stderr
    assert "refuse_repeated_input: the input is the night of 2026-03-01" in cli.stderr
