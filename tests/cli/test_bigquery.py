"""--bigquery_table against real local emulators of BigQuery (bqemulator) and Cloud Storage."""

from __future__ import annotations

import datetime
import json
import socket

import joblib
import numpy as np
import pandas as pd
import pytest

from tests.conftest import (
    BQ_PROJECT,
    FEATURES,
    assert_one_line_error,
    float_rows,
    run_cli,
    write_input,
)
from tests.helpers import read_predictions, upload_parquet

pytestmark = pytest.mark.slow


def _dataset(client, name: str) -> str:
    from google.cloud import bigquery

    client.create_dataset(bigquery.Dataset(f"{BQ_PROJECT}.{name}"), exists_ok=True)
    return f"{BQ_PROJECT}.{name}"


def _rows(client, table: str, run_date: str | None = None, order: str = "id") -> pd.DataFrame:
    where = f" WHERE run_date = DATE '{run_date}'" if run_date else ""
    job = client.query(f"SELECT * FROM `{table}`{where} ORDER BY run_date, {order}")
    return job.to_arrow(create_bqstorage_client=False).to_pandas()


def test_gs_in_and_out_loaded_into_bigquery_rerun_and_second_date(
    models_dir, gcs, bigquery_emulator
):
    client = bigquery_emulator["client"]
    table = _dataset(client, "scores") + ".churn"
    bucket = gcs["bucket"]
    upload_parquet(bucket, "bq/in/2026-11-24/a.parquet", float_rows(300, seed=1))
    upload_parquet(bucket, "bq/in/2026-11-24/b.parquet", float_rows(200, seed=2, start_id=300))
    upload_parquet(bucket, "bq/in/2026-11-25/a.parquet", float_rows(120, seed=3, start_id=900))
    bucket.blob("bq/models/binary.joblib").upload_from_filename(models_dir / "binary.joblib")
    env = {
        "STORAGE_EMULATOR_HOST": gcs["host"],
        "BIGQUERY_EMULATOR_HOST": bigquery_emulator["host"],
    }

    def score(run_date: str):
        cli = run_cli(
            "--input",
            "gs://scoring/bq/in/{run_date}/*.parquet",
            "--model",
            "gs://scoring/bq/models/binary.joblib",
            "--output",
            "gs://scoring/bq/out/{run_date}",
            "--run_date",
            run_date,
            "--bigquery_table",
            table.replace(".", ":", 1),  # the project:dataset.table spelling
            env=env,
        )
        assert cli.code == 0, cli.stderr
        return cli

    first = score("2026-11-24")
    assert f"bigquery:    500 rows in {table}, partition 2026-11-24" in first.result.stdout
    score("2026-11-24")  # a rerun replaces the date's rows, it never appends
    got = _rows(client, table)
    assert len(got) == 500 and got.id.is_unique
    assert set(got.run_date) == {datetime.date(2026, 11, 24)}

    # The values are the Parquet output's, lineage included, and the model's own.
    _, parquet = read_predictions(bucket, "bq/out/2026-11-24/predictions/")
    merged = got.merge(parquet, on="id", suffixes=("_bq", "_pq"))
    assert len(merged) == 500
    for column in ("prediction", "model_uri", "model_version", "run_id"):
        assert (merged[f"{column}_bq"] == merged[f"{column}_pq"]).all(), column
    np.testing.assert_allclose(merged.proba_1_bq, merged.proba_1_pq)
    assert (pd.to_datetime(merged.scored_at_bq) == pd.to_datetime(merged.scored_at_pq)).all()
    model = joblib.load(models_dir / "binary.joblib")
    expected = float_rows(300, seed=1)
    by_id = got.set_index("id").loc[expected.id]
    np.testing.assert_allclose(by_id.proba_1, model.predict_proba(expected[FEATURES])[:, 1])
    manifest = json.loads(bucket.blob("bq/out/2026-11-24/manifest.json").download_as_bytes())
    assert manifest["bigquery"]["rows_loaded"] == 500
    assert manifest["bigquery"]["partition"] == "2026-11-24"
    assert (merged.run_id_bq == manifest["run_id"]).all()

    score("2026-11-25")  # a second run date is a second partition; the first stays
    got = _rows(client, table)
    assert got.groupby("run_date").size().to_dict() == {
        datetime.date(2026, 11, 24): 500,
        datetime.date(2026, 11, 25): 120,
    }
    meta = client.get_table(table)
    assert meta.time_partitioning.field == "run_date"
    assert meta.time_partitioning.type_ == "DAY"
    assert "gs://scoring/bq/models/binary.joblib" in meta.description
    leftovers = [t.table_id for t in client.list_tables(f"{BQ_PROJECT}.scores")]
    assert leftovers == ["churn"], leftovers  # no staging table left behind


def test_failed_run_leaves_the_table_as_it_was(tmp_path, models_dir, bigquery_emulator):
    client = bigquery_emulator["client"]
    table = _dataset(client, "failing") + ".preds"
    env = {"BIGQUERY_EMULATOR_HOST": bigquery_emulator["host"]}
    good = write_input(float_rows(80), tmp_path / "good" / "a.csv")
    args = ["--model", str(models_dir / "binary.joblib"), "--bigquery_table", table]
    args += ["--run_date", "2026-11-24"]
    cli = run_cli("--input", good, "--output", tmp_path / "out1", *args, env=env)
    assert cli.code == 0, cli.stderr
    assert len(_rows(client, table, "2026-11-24")) == 80

    dirty = float_rows(50).astype({"f1": object})
    dirty.loc[3, "f1"] = "oops"  # one bad row: above the default --max_error_rate 0
    bad = write_input(dirty, tmp_path / "bad" / "a.csv")
    errors_table = table.replace(".preds", ".errors")
    cli = run_cli(
        "--input",
        bad,
        "--output",
        tmp_path / "out2",
        *args,
        "--bigquery_errors_table",
        errors_table,
        env=env,
    )
    assert cli.code == 1, cli.stderr
    assert cli.manifest["status"] == "failed" and "bigquery" not in cli.manifest
    rows = _rows(client, table, "2026-11-24")
    assert len(rows) == 80 and set(rows.run_id) == {_first_run_id(tmp_path / "out1")}
    # The nights that need it most: a failed run's errors are in the errors table.
    assert cli.manifest["bigquery_errors"]["rows_loaded"] == 1
    (error,) = _rows(client, errors_table, "2026-11-24", order="stage").itertuples()
    assert error.stage == "validate" and json.loads(error.record)["id"] == "3"
    assert error.run_id == cli.manifest["run_id"]


def _first_run_id(out) -> str:
    return json.loads((out / "manifest.json").read_text())["run_id"]


def test_bigquery_configuration_errors_exit_2(tmp_path, models_dir, bigquery_emulator):
    from google.cloud import bigquery

    client = bigquery_emulator["client"]
    env = {"BIGQUERY_EMULATOR_HOST": bigquery_emulator["host"]}
    path = write_input(float_rows(20), tmp_path / "in" / "a.parquet")
    base = ["--input", path, "--model", models_dir / "binary.joblib", "--output", tmp_path / "o"]

    cli = run_cli(*base, "--bigquery_table", "not a table", env=env)
    assert_one_line_error(cli, "--bigquery_table", "project.dataset.table")

    cli = run_cli(*base, "--bigquery_table", f"{BQ_PROJECT}.no_such_dataset.t", env=env)
    assert_one_line_error(cli, "no_such_dataset", "does not exist")

    dataset = _dataset(client, "clash")
    existing = bigquery.Table(
        f"{dataset}.preds",
        schema=[
            bigquery.SchemaField("id", "INT64"),
            bigquery.SchemaField("prediction", "STRING"),  # the model predicts integers
            bigquery.SchemaField("run_date", "DATE"),
        ],
    )
    client.create_table(existing)
    cli = run_cli(*base, "--bigquery_table", f"{dataset}.preds", env=env)
    assert_one_line_error(cli, "column 'prediction' is STRING")
    assert not (tmp_path / "o").exists(), "nothing may be scored after a launch check failed"


def test_unreachable_bigquery_is_exit_3(tmp_path, models_dir):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    path = write_input(float_rows(20), tmp_path / "in" / "a.parquet")
    cli = run_cli(
        "--input",
        path,
        "--model",
        models_dir / "binary.joblib",
        "--output",
        tmp_path / "o",
        "--bigquery_table",
        "emu-project.scores.t",
        env={"BIGQUERY_EMULATOR_HOST": f"http://127.0.0.1:{port}"},
    )
    assert cli.code == 3, cli.stderr
    assert "BigQuery is unreachable" in cli.stderr and "Traceback" not in cli.stderr
    assert not (tmp_path / "o").exists()


def test_errors_table_holds_each_rejected_record_and_reruns_replace(
    tmp_path, models_dir, bigquery_emulator
):
    client = bigquery_emulator["client"]
    dataset = _dataset(client, "errs")
    env = {"BIGQUERY_EMULATOR_HOST": bigquery_emulator["host"]}
    df = float_rows(60).astype({"f1": object})
    df.loc[7, "f1"] = "oops"  # a validate error
    path = write_input(df, tmp_path / "in" / "a.csv")
    with open(path, "a") as f:
        f.write("99,1.0\n")  # a read error on line 62 (header, 60 rows, then this)
    args = ["--input", path, "--model", models_dir / "binary.joblib", "--run_date", "2026-11-24"]
    args += ["--bigquery_table", f"{dataset}.preds", "--bigquery_errors_table", f"{dataset}.errors"]
    args += ["--max_error_rate", "0.1"]
    for n in (1, 2):  # the rerun replaces the date's error rows too
        # An output path that itself holds "predictions" and "errors" directories.
        cli = run_cli(*args, "--output", tmp_path / "predictions" / "errors" / f"{n}", env=env)
        assert cli.code == 0, cli.stderr
        assert cli.manifest["bigquery_errors"]["rows_loaded"] == 2
    errors = _rows(client, f"{dataset}.errors", "2026-11-24", order="stage")
    assert list(errors.stage) == ["read", "validate"]
    read, validate = errors.iloc[0], errors.iloc[1]
    assert read.record == "99,1.0" and read.line == 62
    assert "f1" in validate.error and json.loads(validate.record)["id"] == "7"
    assert set(errors.run_id) == {cli.manifest["run_id"]}
    assert set(errors.source) == {str(path)}
    assert len(_rows(client, f"{dataset}.preds", "2026-11-24")) == 59
