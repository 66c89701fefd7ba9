"""One schema per run, lossless casts or a rejected row, never a neighbour's say (issue 17).

The cast (scoring/values.py) case by case; a Hypothesis property over files of every format
read and validated in-process as the workers do, shuffled and split differently; and the
situations a user met, through the CLI's entry point.
"""

from __future__ import annotations

import datetime
import json

import joblib
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import FEATURES, float_rows, score


def _rows(n: int = 4, start: int = 0) -> pd.DataFrame:
    return float_rows(n, start_id=start)


def test_bare_cr_line_ends_are_record_ends(tmp_path, models_dir):
    df = _rows(5)
    text = df.to_csv(index=False, lineterminator="\r")
    (tmp_path / "mac.csv").write_text(text)
    lines = "\r".join(json.dumps(r) for r in df.to_dict("records")) + "\r"
    (tmp_path / "mac.jsonl").write_text(lines)
    for name in ("mac.csv", "mac.jsonl"):
        cli = score(tmp_path / name, models_dir / "binary.joblib", tmp_path / f"o-{name}")
        assert cli.code == 0, cli.stderr
        assert cli.manifest["counts"]["rows_read"] == 5
        assert sorted(cli.predictions().id) == list(range(5))


def test_a_key_that_is_also_a_feature_keeps_the_input_type(tmp_path):
    from sklearn.linear_model import LinearRegression

    X = pd.DataFrame({"month": np.arange(1, 13, dtype=float), "f": np.linspace(0, 1, 12) ** 2})
    model = LinearRegression().fit(X, 2 * X.month + X.f)
    joblib.dump(model, tmp_path / "m.joblib")
    df = pd.DataFrame({"id": [2**53 + 1, 2**53], "month": [1, 12], "f": [0.5, 0.25]})
    df.to_csv(tmp_path / "in.csv", index=False)
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), tmp_path / "in.parquet")
    expected = model.predict(df[["month", "f"]].astype(float))
    schemas = []
    for name in ("in.csv", "in.parquet"):
        cli = score(
            tmp_path / name,
            tmp_path / "m.joblib",
            tmp_path / f"o-{name}",
            "--key_columns",
            "id,month",
        )
        assert cli.code == 0, cli.stderr
        table = pq.read_table(tmp_path / f"o-{name}" / "predictions")
        assert table.column("id").to_pylist() == [2**53 + 1, 2**53]
        assert table.column("month").to_pylist() == [1, 12]
        assert table.column("prediction").to_pylist() == pytest.approx(expected.tolist())
        schemas.append(table.schema.remove_metadata())
    assert schemas[0].field("month").type == pa.int64() == schemas[1].field("month").type


def test_big_keys_in_a_later_file_are_never_rounded_into_each_other(tmp_path, models_dir):
    first = _rows(2)
    first["id"] = [0.5, 1.5]  # the first file decides: float64 keys
    later = _rows(3, start=10)
    later["id"] = [2**53 + 1, 2**53 + 2, 7]
    for fmt in ("parquet", "jsonl"):
        d = tmp_path / fmt
        d.mkdir()
        for name, df in (("a", first), ("b", later)):
            if fmt == "parquet":
                pq.write_table(
                    pa.Table.from_pandas(df, preserve_index=False), d / f"{name}.parquet"
                )
            else:
                df.to_json(d / f"{name}.jsonl", orient="records", lines=True)
        cli = score(
            d / f"*.{fmt}",
            models_dir / "binary.joblib",
            tmp_path / f"o-{fmt}",
            "--max_error_rate",
            "1",
        )
        assert cli.code == 0, cli.stderr
        assert sorted(cli.predictions().id) == [0.5, 1.5, 7.0, 2.0**53 + 2]
        (error,) = cli.errors()
        assert error["record"]["id"] == 2**53 + 1  # as the input held it, not rounded
        assert "not exactly a float64" in error["error"]


def test_json_booleans_and_floats_never_become_ids(tmp_path, models_dir):
    rows = _rows(5).to_dict("records")
    ids = [1, True, 1.0, "1", False]
    lines = [json.dumps({**r, "id": i}) for r, i in zip(rows, ids)]
    (tmp_path / "a.jsonl").write_text(json.dumps({**rows[0], "id": 5}) + "\n")
    (tmp_path / "b.jsonl").write_text("\n".join(lines) + "\n")
    cli = score(
        tmp_path / "*.jsonl", models_dir / "binary.joblib", tmp_path / "o", "--max_error_rate", "1"
    )
    assert cli.code == 0, cli.stderr
    assert sorted(cli.predictions().id) == [1, 1, 1, 5]  # 1, 1.0 (whole) and "1" are the id 1
    reasons = sorted(e["error"] for e in cli.errors())
    assert [e["record"]["id"] for e in cli.errors()].count(True) == 1
    assert len(reasons) == 2 and all("a boolean" in r for r in reasons)
    # A text key: only text and whole numbers (their digits) are written as text.
    (tmp_path / "a.jsonl").write_text(json.dumps({**rows[0], "id": "x"}) + "\n")
    cli = score(
        tmp_path / "*.jsonl", models_dir / "binary.joblib", tmp_path / "o2", "--max_error_rate", "1"
    )
    assert sorted(cli.predictions().id) == ["1", "1", "x"]
    assert len(cli.errors()) == 3  # true, 1.0 and false


def test_int96_timestamps_keep_their_dates(tmp_path, models_dir):
    df = _rows(3)
    df["at"] = pd.Series(
        [
            datetime.datetime(9999, 12, 31),
            datetime.datetime(1, 1, 1),
            datetime.datetime(2024, 1, 5, 6, 30),
        ],
        dtype="datetime64[us]",
    )
    table = pa.Table.from_pandas(df, preserve_index=False)
    pq.write_table(table, tmp_path / "spark.parquet", use_deprecated_int96_timestamps=True)
    cli = score(tmp_path / "spark.parquet", models_dir / "binary.joblib", tmp_path / "o")
    assert cli.code == 0, cli.stderr
    written = pq.read_table(tmp_path / "o" / "predictions").column("at").to_pylist()
    assert sorted(written) == sorted(df["at"].dt.to_pydatetime().tolist())


def test_a_number_is_a_number_whatever_its_neighbours(tmp_path, models_dir):
    df = _rows(4)
    text = df.to_csv(index=False)
    clean = text.replace(f"{df.f0[1]}", "1_000", 1)
    spaced = clean.replace(f"{df.f0[2]}", f" {df.f0[2]} ", 1)
    outcomes = []
    for name, body in (("clean", clean), ("spaced", spaced)):
        (tmp_path / f"{name}.csv").write_text(body)
        cli = score(
            tmp_path / f"{name}.csv",
            models_dir / "binary.joblib",
            tmp_path / f"o-{name}",
            "--max_error_rate",
            "1",
        )
        assert cli.code == 0, cli.stderr
        outcomes.append(sorted(e["record"]["id"] for e in cli.errors()))
    assert outcomes == [["1"], ["1"]] or outcomes == [[1], [1]]


def test_a_key_above_int64_is_a_rejected_row_not_a_crash(tmp_path, models_dir):
    _rows(2).to_csv(tmp_path / "a.csv", index=False)  # decides: int64 ids
    later = _rows(2, start=5).astype({"id": str})
    later.loc[1, "id"] = "99999999999999999999"
    later.to_csv(tmp_path / "b.csv", index=False)
    cli = score(
        tmp_path / "*.csv", models_dir / "binary.joblib", tmp_path / "o", "--max_error_rate", "1"
    )
    assert cli.code == 0, cli.stderr
    assert sorted(cli.predictions().id) == [0, 1, 5]
    (error,) = cli.errors()
    assert error["record"]["id"] == "99999999999999999999"
    assert "outside the int64 range" in error["error"]


def test_json_lines_a_missing_field_is_null_whatever_the_block(tmp_path):
    from sklearn.ensemble import HistGradientBoostingRegressor

    X = pd.DataFrame({"a": np.arange(50.0), "b": np.arange(50.0) % 7})
    joblib.dump(HistGradientBoostingRegressor(max_iter=5).fit(X, X.a), tmp_path / "m.joblib")
    lonely = [{"id": 1, "a": 1.0}]  # no record of its file has b: one missing-column error
    mixed = [{"id": 2, "a": 2.0}, {"id": 3, "a": 3.0, "b": 1.0}]  # b missing from one: null
    (tmp_path / "x.jsonl").write_text("\n".join(json.dumps(r) for r in mixed) + "\n")
    (tmp_path / "y.jsonl").write_text("\n".join(json.dumps(r) for r in lonely) + "\n")
    cli = score(
        tmp_path / "*.jsonl", tmp_path / "m.joblib", tmp_path / "o", "--max_error_rate", "1"
    )
    assert cli.code == 0, cli.stderr
    assert sorted(cli.predictions().id) == [2, 3]
    (error,) = cli.errors()
    assert error["source"].endswith("y.jsonl") and "lacks feature column(s) b" in error["error"]
    assert cli.manifest["counts"]["rows_read"] == 3


def test_one_output_schema_whatever_the_input_format(tmp_path, models_dir):
    df = _rows(3)
    df.insert(1, "when", ["2013-01-01T05:00:00Z", "2013-01-01T06:00:00Z", None])
    df.insert(1, "code", ["a", None, "c"])
    df.to_csv(tmp_path / "in.csv", index=False)
    df.to_json(tmp_path / "in.jsonl", orient="records", lines=True)
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), tmp_path / "in.parquet")
    schemas, values = [], []
    for fmt in ("csv", "jsonl", "parquet"):
        cli = score(tmp_path / f"in.{fmt}", models_dir / "binary.joblib", tmp_path / fmt)
        assert cli.code == 0, cli.stderr
        table = pq.read_table(tmp_path / fmt / "predictions").sort_by("id")
        schemas.append(table.schema.remove_metadata())
        values.append(table.select(["id", "code", "when"]).to_pylist())
    assert schemas[0] == schemas[1] == schemas[2]
    assert values[0] == values[1] == values[2]
    assert values[0][1]["code"] is None and values[0][2]["when"] is None


def test_an_empty_first_file_decides_nothing(tmp_path, models_dir):
    (tmp_path / "a.csv").write_text("id," + ",".join(FEATURES) + "\n")
    df = _rows(3)
    df["id"] = ["007", "8", "9"]
    df.to_csv(tmp_path / "b.csv", index=False)
    cli = score(tmp_path / "*.csv", models_dir / "binary.joblib", tmp_path / "o")
    assert cli.code == 0, cli.stderr
    assert sorted(cli.predictions().id) == ["007", "8", "9"]


def test_a_date_key_given_as_a_timestamp_keeps_only_midnights(tmp_path, models_dir):
    first = _rows(1)
    first["day"] = [datetime.date(2024, 1, 4)]  # decides: a date key
    later = _rows(2, start=5)
    later["day"] = [datetime.datetime(2024, 1, 5), datetime.datetime(2024, 1, 5, 17, 45)]
    pq.write_table(pa.Table.from_pandas(first, preserve_index=False), tmp_path / "a.parquet")
    pq.write_table(pa.Table.from_pandas(later, preserve_index=False), tmp_path / "b.parquet")
    cli = score(
        tmp_path / "*.parquet",
        models_dir / "binary.joblib",
        tmp_path / "o",
        "--max_error_rate",
        "1",
    )
    assert cli.code == 0, cli.stderr
    written = pq.read_table(tmp_path / "o" / "predictions").sort_by("id")
    assert written.schema.field("day").type == pa.date32()
    assert written.column("day").to_pylist() == [
        datetime.date(2024, 1, 4),
        datetime.date(2024, 1, 5),
    ]
    (error,) = cli.errors()
    assert error["record"]["id"] == 6 and "a timestamp with a time of day" in error["error"]
