"""Inputs people really have: BOM, CRLF, quoted newlines, gzip, wide files, shuffled columns."""

from __future__ import annotations

import gzip

import joblib
import numpy as np
import pandas as pd
import pytest

from tests.conftest import FEATURES, float_rows, score, write_input

pytestmark = pytest.mark.slow


def check_predictions(cli, df, models_dir):
    assert cli.code == 0, cli.stderr
    model = joblib.load(models_dir / "binary.joblib")
    got = cli.predictions().set_index("id").loc[df.id]
    np.testing.assert_allclose(got.proba_1, model.predict_proba(df[FEATURES])[:, 1])
    c = cli.manifest["counts"]
    assert c["rows_read"] == c["rows_predicted"] == len(df)


def test_bom_crlf_and_quoted_newlines(tmp_path, models_dir):
    df = float_rows(50)
    df["note"] = [f'line one, "quoted"\nline {i}' for i in range(50)]
    text = df.to_csv(index=False, lineterminator="\r\n")
    (tmp_path / "in.csv").write_bytes(b"\xef\xbb\xbf" + text.encode())
    cli = score(tmp_path / "in.csv", models_dir / "binary.joblib", tmp_path / "out")
    check_predictions(cli, df, models_dir)
    notes = cli.predictions().set_index("id").loc[df.id].note
    assert list(notes) == list(df.note)
    assert cli.manifest["key_columns"] == ["id", "note"]  # the BOM is not part of the name


def test_read_errors_name_the_physical_line_through_quoted_newlines_crlf_and_gzip(
    tmp_path, models_dir
):
    df = float_rows(40)
    df["note"] = [f"first\nsecond {i}" for i in range(40)]  # every record spans two lines
    records = df.to_csv(index=False, lineterminator="\r\n").split("\r\n")[:-1]
    # Physical lines: records[0] is the header (line 1), records[j] starts on line 2j...
    records[5] = "5,0.1,0.2"  # too few fields, one line: line 10 (later records move up one)
    records[30] = records[30] + ",extra"  # too many fields: line 59
    records[31] = records[5]  # the same text again: its own occurrence, line 61
    with gzip.open(tmp_path / "in.csv.gz", "wb") as f:
        f.write(b"\xef\xbb\xbf" + ("\r\n".join(records) + "\r\n").encode())
    cli = score(
        tmp_path / "in.csv.gz",
        models_dir / "binary.joblib",
        tmp_path / "out",
        "--max_error_rate",
        "1",
    )
    assert cli.code == 0, cli.stderr
    errors = sorted(cli.errors(), key=lambda e: e["line"])
    assert [e["line"] for e in errors] == [10, 59, 61]
    assert [e["stage"] for e in errors] == ["read"] * 3
    assert cli.manifest["counts"]["rows_predicted"] == 37


@pytest.mark.parametrize("ext", ["csv", "jsonl"])
def test_gzipped_inputs(tmp_path, models_dir, ext):
    df = float_rows(3000)
    plain = write_input(df, tmp_path / f"plain.{ext}")
    with gzip.open(tmp_path / f"in.{ext}.gz", "wb") as f:
        f.write(plain.read_bytes())
    cli = score(tmp_path / f"in.{ext}.gz", models_dir / "binary.joblib", tmp_path / "out")
    check_predictions(cli, df, models_dir)
    assert cli.manifest["input_format"] == ext


def test_wide_file_with_shuffled_columns(tmp_path, models_dir):
    df = float_rows(500)
    rng = np.random.default_rng(0)
    extras = pd.DataFrame(
        rng.normal(size=(len(df), 480)), columns=[f"extra{i:03d}" for i in range(480)]
    )
    df = pd.concat([df, extras], axis=1)
    shuffled = df[list(rng.permutation(df.columns))]
    write_input(shuffled, tmp_path / "in.parquet")
    cli = score(
        tmp_path / "in.parquet",
        models_dir / "binary.joblib",
        tmp_path / "out",
        "--key_columns",
        "id",
    )
    check_predictions(cli, df, models_dir)
    assert list(cli.predictions().columns[:2]) == ["id", "prediction"]


def test_mixed_files_where_one_lacks_a_column(tmp_path, models_dir):
    a = float_rows(100)
    a["region"] = "north"
    b = float_rows(80, start_id=100)  # lacks the key column `region`
    c = float_rows(60, start_id=180).drop(columns="f1")  # lacks a feature
    write_input(a, tmp_path / "in" / "a.parquet")
    write_input(b[list(reversed(b.columns))], tmp_path / "in" / "b.parquet")
    write_input(c, tmp_path / "in" / "c.parquet")
    cli = score(
        tmp_path / "in" / "*.parquet",
        models_dir / "binary.joblib",
        tmp_path / "out",
        "--max_error_rate",
        "0.6",
    )
    assert cli.code == 0, cli.stderr
    m = cli.manifest
    assert [(i["rows_read"], i["rows_failed"]) for i in m["inputs"]] == [
        (100, 0),
        (80, 80),  # a key column missing: its rows are rejected, never scored with null keys
        (60, 60),
    ]
    preds = cli.predictions().set_index("id")
    assert len(preds) == 100 and preds.region.notna().all()
    errors = {e["source"].rsplit("/", 1)[-1]: e for e in cli.errors()}
    assert errors["b.parquet"]["missing_columns"] == ["region"]
    assert errors["c.parquet"]["missing_columns"] == ["region", "f1"]
