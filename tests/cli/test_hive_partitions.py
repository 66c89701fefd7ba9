"""Hive-style partitioned input (in/date=2024-01-01/store=7/part-0.parquet, as Spark, Hive,
BigQuery external tables and pyarrow.dataset write it): each name=value folder is a column of
the file's rows, text as the path spells it, usable as a key, alike in Parquet, CSV and JSON
Lines, local and in Cloud Storage."""

from __future__ import annotations

import io

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import assert_one_line_error, float_rows, score

PARTS = {"date=2024-01-01/store=7": 0, "date=2024-01-02/store=a%2Fb": 1}  # %2F: a slash
SPELLED = {0: ("2024-01-01", "7"), 1: ("2024-01-02", "a/b")}
EXTENSION = {"parquet": "parquet", "csv": "csv", "jsonl": "jsonl"}


def _bytes(frame: pd.DataFrame, fmt: str) -> bytes:
    if fmt == "parquet":
        buf = io.BytesIO()
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), buf)
        return buf.getvalue()
    if fmt == "csv":
        return frame.to_csv(index=False).encode()
    return frame.to_json(orient="records", lines=True).encode()


# The Cloud Storage emulator does not serve an object whose name holds a %: plain values there.
PLAIN = {"date=2024-01-01/store=7": 0, "date=2024-01-02/store=b": 1}
PLAIN_SPELLED = {0: ("2024-01-01", "7"), 1: ("2024-01-02", "b")}


def _frames(parts=PARTS):
    return {part: float_rows(20, seed=i, start_id=100 * i) for part, i in parts.items()}


def _check(predictions: pd.DataFrame, frames: dict, parts=PARTS, spelled=SPELLED) -> None:
    assert len(predictions) == 40
    for part, i in parts.items():
        mine = predictions[predictions.id.isin(frames[part].id)]
        assert len(mine) == 20
        assert set(zip(mine.date, mine.store)) == {spelled[i]}


@pytest.mark.parametrize("fmt", ["parquet", "csv", "jsonl"])
def test_partition_folders_are_key_columns_in_every_format(tmp_path, models_dir, fmt):
    frames = _frames()
    for part, frame in frames.items():
        path = tmp_path / "in" / part / f"part-0.{EXTENSION[fmt]}"
        path.parent.mkdir(parents=True)
        path.write_bytes(_bytes(frame, fmt))
    out = tmp_path / "out"
    cli = score(tmp_path / "in" / "**", models_dir / "binary.joblib", out,
                "--key_columns", "id,date,store", "--input_format", fmt)  # fmt: skip
    assert cli.code == 0, cli.stderr
    table = pq.read_table(out / "predictions")
    assert table.schema.field("date").type == pa.string()  # as the path spells it
    assert table.schema.field("store").type == pa.string()
    _check(table.to_pandas(), frames)
    assert cli.manifest["key_columns"] == ["id", "date", "store"]


def test_partition_folders_in_cloud_storage(models_dir, gcs):
    bucket = gcs["bucket"]
    frames = _frames(PLAIN)
    bucket.blob("models/binary.joblib").upload_from_filename(models_dir / "binary.joblib")
    env = {"STORAGE_EMULATOR_HOST": gcs["host"]}
    for fmt in ("parquet", "csv", "jsonl"):
        for part, frame in frames.items():
            name = f"in-{fmt}/{part}/part-0.{EXTENSION[fmt]}"
            bucket.blob(name).upload_from_string(_bytes(frame, fmt))
        cli = score(
            f"gs://scoring/in-{fmt}/*/*/*.{EXTENSION[fmt]}",
            "gs://scoring/models/binary.joblib",
            f"gs://scoring/out-{fmt}",
            "--key_columns",
            "id,date,store",
            env=env,
        )
        assert cli.code == 0, cli.stderr
        blobs = [b for b in bucket.list_blobs(prefix=f"out-{fmt}/predictions/")]
        table = pa.concat_tables(pq.read_table(io.BytesIO(b.download_as_bytes())) for b in blobs)
        assert table.schema.field("date").type == pa.string()
        _check(table.to_pandas(), frames, PLAIN, PLAIN_SPELLED)


def test_a_partition_column_the_file_holds_otherwise_is_exit_2_naming_both(tmp_path, models_dir):
    frame = float_rows(10)
    frame["date"] = "2023-12-31"
    path = tmp_path / "in" / "date=2024-01-01" / "part-0.parquet"
    path.parent.mkdir(parents=True)
    frame.to_parquet(path)
    cli = score(tmp_path / "in" / "**", models_dir / "binary.joblib", tmp_path / "out")
    assert_one_line_error(cli, "column date", "date=2024-01-01", "'2023-12-31'")
    assert not (tmp_path / "out").exists()
    frame["date"] = "2024-01-01"  # the same value in the file and its folder: read as it is
    frame.to_parquet(path)
    cli = score(tmp_path / "in" / "**", models_dir / "binary.joblib", tmp_path / "out")
    assert cli.code == 0, cli.stderr
    assert set(cli.predictions().date) == {"2024-01-01"}


def test_a_folder_named_like_an_output_column_is_no_key_by_default(tmp_path, models_dir):
    """in/run_date=2024-01-01/: the run writes run_date itself; the folder is left out of the
    default keys (given with --key_columns, it is refused as any such key is)."""
    path = tmp_path / "in" / "run_date=2024-01-01" / "part-0.parquet"
    path.parent.mkdir(parents=True)
    float_rows(10).to_parquet(path)
    cli = score(tmp_path / "in" / "**", models_dir / "binary.joblib", tmp_path / "out")
    assert cli.code == 0, cli.stderr
    assert cli.manifest["key_columns"] == ["id"]
    cli = score(tmp_path / "in" / "**", models_dir / "binary.joblib", tmp_path / "out2",
                "--key_columns", "id,run_date")  # fmt: skip
    assert_one_line_error(cli, "run_date")
