"""Every row accounted for, every value kept verbatim, every error one a person can act on
(issue 10): bytes that are not text, scores that are not numbers, keys, huge records,
compressions, empty inputs, files that break part-way, encodings and delimiters."""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import zlib
from pathlib import Path

import joblib
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests import custom_models
from tests.conftest import FEATURES, assert_one_line_error, float_rows, score, write_input

pytestmark = pytest.mark.slow


def assert_reconciled(m: dict) -> None:
    c = m["counts"]
    assert c["rows_read"] == c["rows_predicted"] + c["rows_failed"]
    for i in m["inputs"]:
        assert i["rows_read"] == i["rows_predicted"] + i["rows_failed"], i


@pytest.mark.parametrize("short_line", [False, True])
def test_one_latin1_byte_rejects_that_record_only(tmp_path, models_dir, short_line):
    df = float_rows(1000)
    df.insert(1, "name", "Meyer")
    lines = df.to_csv(index=False).encode().splitlines()
    bad = b"500,M\xfcller" + (b",0.1" if short_line else b",0.1,0.2,0.3,0.4")
    lines[501] = bad
    (tmp_path / "in.csv").write_bytes(b"\n".join(lines) + b"\n")
    cli = score(tmp_path / "in.csv", models_dir / "binary.joblib", tmp_path / "o")
    assert cli.code == 1, cli.stderr
    assert "Exception ignored" not in cli.stderr and "Traceback" not in cli.stderr
    m = cli.manifest
    assert m["counts"]["rows_read"] == 1000 and m["counts"]["rows_predicted"] == 999
    assert m["files_failed"] == []
    (error,) = cli.errors()
    assert error["stage"] == "read" and error["line"] == 502
    assert error["record"].startswith("500,M\\xfcller")
    assert "not valid utf-8" in error["error"] and "0xfc" in error["error"]
    assert "--input_encoding" in error["error"]


def test_the_whole_file_in_latin1_or_cp1252(tmp_path, models_dir):
    df = float_rows(300)
    df.insert(1, "name", ["Müller", "Grüße", "Ærø"] * 100)
    for encoding in ("latin-1", "cp1252"):
        (tmp_path / f"{encoding}.csv").write_bytes(df.to_csv(index=False).encode(encoding))
        cli = score(
            tmp_path / f"{encoding}.csv",
            models_dir / "binary.joblib",
            tmp_path / f"o-{encoding}",
            "--input_encoding",
            encoding,
        )
        assert cli.code == 0, cli.stderr
        preds = cli.predictions().set_index("id").loc[df.id]
        assert preds.name.tolist() == df.name.tolist()  # decoded, written as UTF-8


def test_non_finite_scores_are_predict_errors(tmp_path):
    df = float_rows(500)
    write_input(df, tmp_path / "in.parquet")
    X = df[FEATURES]
    joblib.dump(custom_models.NanRegressor().fit(X), tmp_path / "nan.joblib")
    cli = score(
        tmp_path / "in.parquet", tmp_path / "nan.joblib", tmp_path / "o", "--max_error_rate", "1"
    )
    assert cli.code == 0, cli.stderr
    bad = (df.f0 < 0) | (df.f0 > 2)
    c = cli.manifest["counts"]
    assert c["rows_failed_by_stage"]["predict"] == bad.sum()
    preds = cli.predictions()
    assert np.isfinite(preds.prediction).all() and set(preds.id) == set(df.id[~bad])
    errors = cli.errors()
    assert {e["record"]["id"] for e in errors} == set(df.id[bad])
    assert all("not a finite number" in e["error"] for e in errors)

    joblib.dump(custom_models.NanProbaClassifier().fit(X), tmp_path / "nanp.joblib")
    cli = score(
        tmp_path / "in.parquet", tmp_path / "nanp.joblib", tmp_path / "o2", "--max_error_rate", "1"
    )
    assert cli.code == 0, cli.stderr
    preds = cli.predictions()
    assert set(preds.id) == set(df.id[df.f0 >= 0])  # no NaN row labelled with the first class
    assert np.isfinite(preds.proba_yes).all()
    assert all("probabilities" in e["error"] for e in cli.errors())


def test_keys_are_written_exactly_as_spelled(tmp_path, models_dir):
    df = float_rows(40)
    df.insert(0, "zip", [f"{z:05d}" for z in range(501, 541)])
    df["account"] = [str(1000 + i) for i in range(40)]
    lines = df.to_csv(index=False).splitlines()
    (tmp_path / "a.csv").write_text("\n".join(lines) + "\n")
    cli = score(tmp_path / "a.csv", models_dir / "binary.joblib", tmp_path / "o")
    assert cli.code == 0, cli.stderr
    preds = cli.predictions().set_index("id").loc[df.id]
    assert preds.zip.tolist() == df.zip.tolist()  # "00501", not 501
    assert (
        str(pq.read_schema(next((tmp_path / "o" / "predictions").iterdir())).field("zip").type)
        == "string"
    )
    assert preds.account.tolist() == [1000 + i for i in range(40)]  # integers stay integers
    # A later file spells an integer key another way: that row is rejected, never altered.
    df2 = float_rows(5, start_id=40)
    df2.insert(0, "zip", ["00600"] * 5)
    df2["account"] = ["2000", "02001", "2002", "+2003", "2004"]
    (tmp_path / "b.csv").write_text(df2.to_csv(index=False))
    cli = score(
        tmp_path / "*.csv", models_dir / "binary.joblib", tmp_path / "o2", "--max_error_rate", "0.1"
    )
    assert cli.code == 0, cli.stderr
    errors = cli.errors()
    assert sorted(e["record"]["account"] for e in errors) == ["+2003", "02001"]
    assert all("would not be written as spelled" in e["error"] for e in errors)
    assert sorted(cli.predictions().account)[-3:] == [2000, 2002, 2004]


def test_a_huge_first_json_record_and_a_json_array(tmp_path, models_dir):
    rows = float_rows(20).to_dict("records")
    rows[0]["notes"] = "x" * 1_200_000  # 1.2 MB: more than the launcher's 1 MiB sample
    (tmp_path / "big.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    cli = score(tmp_path / "big.jsonl", models_dir / "binary.joblib", tmp_path / "o")
    assert cli.code == 0, cli.stderr
    assert cli.manifest["counts"]["rows_predicted"] == 20
    (tmp_path / "array.json").write_text(json.dumps(rows[1:]))
    cli = score(tmp_path / "array.json", models_dir / "binary.joblib", tmp_path / "o2")
    assert_one_line_error(cli, "JSON array, not JSON Lines", "jq")


@pytest.mark.parametrize(
    "suffix, compress",
    [
        (".gz", gzip.compress),
        (".bz2", bz2.compress),
        (".xz", lzma.compress),
        (".deflate", zlib.compress),
        (".zst", None),
    ],
)
def test_compressed_inputs(tmp_path, models_dir, suffix, compress):
    df = float_rows(300)
    data = df.to_csv(index=False).encode()
    if compress is None:
        import pyarrow as pa

        sink = pa.BufferOutputStream()
        with pa.CompressedOutputStream(sink, "zstd") as f:
            f.write(data)
        payload = sink.getvalue().to_pybytes()
    else:
        payload = compress(data)
    (tmp_path / f"in.csv{suffix}").write_bytes(payload)
    cli = score(tmp_path / f"in.csv{suffix}", models_dir / "binary.joblib", tmp_path / "o")
    assert cli.code == 0, cli.stderr
    assert cli.manifest["counts"]["rows_predicted"] == 300
    assert sorted(cli.predictions().id) == df.id.tolist()


def test_empty_inputs_are_zero_rows_and_say_so(tmp_path, models_dir):
    cases = {
        "zero-bytes.parquet": b"",
        "blank-lines.csv": b"\n\n  \n",
        "header-only.csv": b"id,f0,f1,f2,f3\n",
        "blank-lines.jsonl": b"\n\n",
    }
    zero_rows = pa.Table.from_pandas(float_rows(0), preserve_index=False)
    for name, data in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        if name == "zero-bytes.parquet":  # also a Parquet file of zero rows beside it
            pq.write_table(zero_rows, tmp_path / "zero-rows.parquet")
        pattern = tmp_path / ("*.parquet" if name.endswith(".parquet") else name)
        cli = score(pattern, models_dir / "binary.joblib", tmp_path / f"o-{name}")
        assert cli.code == 0, (name, cli.stderr)
        m = cli.manifest
        assert m["status"] == "succeeded" and m["counts"]["rows_read"] == 0, name
        assert "every input file is empty" in cli.result.stdout, name
        assert m["outputs"]["predictions"] == []


def test_a_file_that_breaks_part_way_is_failed_with_what_was_read(tmp_path, models_dir):
    table = pa.Table.from_pandas(float_rows(600), preserve_index=False)
    pq.write_table(table, tmp_path / "in.parquet", row_group_size=100, compression="none")
    write_input(float_rows(50, start_id=1000), tmp_path / "ok.parquet")
    data = bytearray((tmp_path / "in.parquet").read_bytes())
    meta = pq.read_metadata(tmp_path / "in.parquet")
    column = meta.row_group(4).column(1)  # garble the page of one column of row group 4
    start = column.data_page_offset
    data[start : start + 64] = b"\xff" * 64
    (tmp_path / "in.parquet").write_bytes(bytes(data))
    cli = score(
        tmp_path / "*.parquet",
        models_dir / "binary.joblib",
        tmp_path / "o",
        "--batch_size",
        "100",
        "--max_error_rate",
        "1",
    )
    assert cli.code == 1, cli.stderr  # a file that failed fails the run, whatever the error rate
    m = cli.manifest
    files = {Path(i["path"]).name: i for i in m["inputs"]}
    broken = files["in.parquet"]
    assert broken["failed"] and m["files_failed"] == [str(tmp_path / "in.parquet")]
    assert broken["rows_read"] == broken["rows_predicted"] == 500  # its other row groups
    assert files["ok.parquet"]["rows_predicted"] == 50
    assert_reconciled(m)
    (error,) = [e for e in cli.errors() if e.get("file_failed")]
    assert "in.parquet" in error["error"]


def test_errors_name_the_line_the_feature_and_one_reason_each(tmp_path, models_dir):
    df = float_rows(200)
    lines = df.to_csv(index=False).splitlines()
    lines[5] = "4,x,y"  # read error before the others: row indexes and lines part ways
    lines[10] = "9,'0,65',0.1,0.2,0.3".replace("'", '"')  # a decimal comma
    lines[20] = "19,0.1,,0.2,0.3"  # a missing value
    (tmp_path / "in.csv").write_text("\n".join(lines) + "\n")
    cli = score(tmp_path / "in.csv", models_dir / "binary.joblib", tmp_path / "o")
    assert cli.code == 1
    errors = {e["line"]: e for e in cli.errors()}
    assert errors[6]["stage"] == "read"
    assert errors[11]["error"] == "f0: '0,65' is not a number"  # not also "missing"
    # Row indexes count parsed records: the rejected line 6 is not one.
    assert errors[11]["row_index"] == 8 and errors[21]["row_index"] == 18
    assert errors[21]["error"].startswith("f1: missing value")

    rows = df.to_dict("records")
    text = [json.dumps(r) for r in rows]
    text[3] = "not json"
    text[7] = json.dumps({**rows[7], "f2": "abc"})
    (tmp_path / "in.jsonl").write_text("\n".join(text[:5]) + "\n\n" + "\n".join(text[5:]) + "\n")
    cli = score(tmp_path / "in.jsonl", models_dir / "binary.joblib", tmp_path / "o2")
    errors = {e["line"]: e for e in cli.errors()}
    assert errors[4]["stage"] == "read"
    assert errors[9]["stage"] == "validate" and errors[9]["error"] == "f2: 'abc' is not a number"


def test_semicolons_and_tabs(tmp_path, models_dir):
    df = float_rows(50)
    (tmp_path / "in.csv").write_text(df.to_csv(index=False, sep=";"))
    cli = score(tmp_path / "in.csv", models_dir / "binary.joblib", tmp_path / "o")
    assert_one_line_error(cli, "lacks model feature", "--csv_delimiter ';'")
    cli = score(
        tmp_path / "in.csv", models_dir / "binary.joblib", tmp_path / "o", "--csv_delimiter", ";"
    )
    assert cli.code == 0, cli.stderr
    (tmp_path / "in.tsv").write_text(df.to_csv(index=False, sep="\t"))
    cli = score(tmp_path / "in.tsv", models_dir / "binary.joblib", tmp_path / "o2")
    assert cli.code == 0, cli.stderr
    assert cli.manifest["counts"]["rows_predicted"] == 50
    # Compressed, still tabs; a delimiter given on the command line wins over the name.
    import zstandard

    data = zstandard.ZstdCompressor().compress(df.to_csv(index=False, sep="\t").encode())
    (tmp_path / "in.tsv.zst").write_bytes(data)
    cli = score(tmp_path / "in.tsv.zst", models_dir / "binary.joblib", tmp_path / "o3")
    assert cli.code == 0, cli.stderr
    assert cli.manifest["counts"]["rows_predicted"] == 50
    (tmp_path / "commas.tsv").write_text(df.to_csv(index=False))
    args = ("--csv_delimiter", ",")
    cli = score(tmp_path / "commas.tsv", models_dir / "binary.joblib", tmp_path / "o4", *args)
    assert cli.code == 0, cli.stderr
    assert cli.manifest["counts"]["rows_predicted"] == 50


def test_keys_spelled_like_nulls_are_keys_and_json_floats_never_alter_one(tmp_path, models_dir):
    df = float_rows(7)
    spellings = ["US", "NA", "null", "N/A", "nan", "", "NULL"]
    df.insert(1, "country", spellings)
    df["account"] = ["10", "", "12", "13", "14", "15", "16"]  # an integer key
    (tmp_path / "in.csv").write_text(df.to_csv(index=False))
    cli = score(tmp_path / "in.csv", models_dir / "binary.joblib", tmp_path / "o")
    assert cli.code == 0, cli.stderr
    preds = cli.predictions().set_index("id").loc[df.id]
    # As spelled, not null; an empty field is a missing key (null, as Parquet and JSON write it).
    countries = [c if isinstance(c, str) else None for c in preds.country]
    assert countries == ["US", "NA", "null", "N/A", "nan", None, "NULL"]
    assert [None if a != a else int(a) for a in preds.account] == [10, None, 12, 13, 14, 15, 16]

    # JSON Lines: one record's decimal point makes Arrow read its block's ids as floats; each id
    # is still taken as its own record spells it: the whole number exactly, 2.0 as the whole 2.
    rows = float_rows(3).to_dict("records")
    lines = [json.dumps({**rows[0], "id": 9007199254740993}), json.dumps({**rows[1], "id": 2.0})]
    lines.append(json.dumps({**rows[2], "id": 5}))
    (tmp_path / "a.jsonl").write_text(json.dumps({**rows[0], "id": 1}) + "\n")
    (tmp_path / "b.jsonl").write_text("\n".join(lines) + "\n")
    cli = score(
        tmp_path / "*.jsonl", models_dir / "binary.joblib", tmp_path / "o2", "--key_columns", "id"
    )
    assert cli.code == 0, cli.stderr
    assert sorted(cli.predictions().id) == [1, 2, 5, 9007199254740993]


def test_a_block_of_only_undecodable_records_rejects_them_not_the_file(tmp_path, models_dir):
    df = float_rows(2)
    lines = df.to_csv(index=False).encode().splitlines()
    lines[1] = lines[1].replace(b",", b"\xfc,", 1)
    lines[2] = lines[2].replace(b",", b"\xfc,", 1)
    (tmp_path / "in.csv").write_bytes(b"\n".join(lines) + b"\n")
    cli = score(tmp_path / "in.csv", models_dir / "binary.joblib", tmp_path / "o")
    assert cli.code == 1, cli.stderr
    assert cli.manifest["files_failed"] == []
    assert [(e["stage"], e["line"]) for e in cli.errors()] == [("read", 2), ("read", 3)]
    assert all("not valid utf-8" in e["error"] for e in cli.errors())


def test_an_unknown_number_category_is_rejected_in_a_clean_batch(tmp_path):
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    train = pd.DataFrame({"plan": [1.0, 2.0] * 20, "x": np.linspace(0, 1, 40)})
    model = make_pipeline(
        ColumnTransformer(
            [("plan", OneHotEncoder(handle_unknown="error"), ["plan"])], remainder="passthrough"
        ),
        LogisticRegression(),
    ).fit(train, [0, 1] * 20)
    joblib.dump(model, tmp_path / "m.joblib")
    data = pd.DataFrame({"id": [1, 2, 3], "plan": [1.0, 2.0, 3.0], "x": [0.1, 0.2, 0.3]})
    pq.write_table(pa.Table.from_pandas(data, preserve_index=False), tmp_path / "in.parquet")
    cli = score(tmp_path / "in.parquet", tmp_path / "m.joblib", tmp_path / "o")
    assert cli.code == 1, cli.stderr
    (error,) = cli.errors()
    assert error["stage"] == "validate" and "unknown category 3.0" in error["error"]
    assert sorted(cli.predictions().id) == [1, 2]
