"""Bad input never loses a row: every rejected record is in errors/, and the counts reconcile."""

from __future__ import annotations

import joblib
import numpy as np
import pytest

from tests.conftest import FEATURES, float_rows, score, write_input

pytestmark = pytest.mark.slow


def assert_reconciled(m: dict) -> None:
    c = m["counts"]
    assert c["rows_read"] == c["rows_predicted"] + c["rows_failed"]
    assert c["rows_failed"] == sum(c["rows_failed_by_stage"].values())
    for i in m["inputs"]:
        assert i["rows_read"] == i["rows_predicted"] + i["rows_failed"], i


def dirty_csv(path, n=1000):
    """A CSV with a short line, a long line, text in a feature, inf and an empty feature."""
    df = float_rows(n)
    lines = df.to_csv(index=False).splitlines()
    lines[11] = "10,1.0,2.0"  # id 10: too few fields
    lines[21] = lines[21] + ",7,8"  # id 20: too many fields
    lines[31] = "30,abc,0.1,0.2,0.3"  # id 30: text in f0
    lines[41] = "40,0.1,inf,0.2,0.3"  # id 40: infinite f1
    lines[51] = "50,0.1,0.2,,0.3"  # id 50: f2 missing
    path.write_text("\n".join(lines) + "\n")
    return df


def test_dirty_csv_rejects_each_bad_row_with_its_reason(tmp_path, models_dir):
    dirty_csv(tmp_path / "in.csv")
    cli = score(tmp_path / "in.csv", models_dir / "binary.joblib", tmp_path / "out")
    assert cli.code == 1, cli.stderr  # default --max_error_rate 0: any rejected row fails the run
    m = cli.manifest
    assert m["status"] == "failed"
    assert m["counts"]["rows_read"] == 1000
    assert m["counts"]["rows_failed_by_stage"] == {"read": 2, "validate": 3, "predict": 0}
    assert_reconciled(m)
    preds = cli.predictions()
    assert len(preds) == 995
    assert not {10, 20, 30, 40, 50} & set(preds.id)

    errors = cli.errors()
    assert len(errors) == 5
    by_stage = {}
    for e in errors:
        assert set(e) >= {"stage", "error", "record", "source", "run_id"}
        assert e["source"] == str(tmp_path / "in.csv")
        assert e["run_id"] == m["run_id"]
        by_stage.setdefault(e["stage"], []).append(e)
    # The raw line and its physical line number (the header is line 1).
    text = (tmp_path / "in.csv").read_text().splitlines()
    assert {e["record"]: e["line"] for e in by_stage["read"]} == {text[11]: 12, text[21]: 22}
    assert all("wrong number of fields" in e["error"] for e in by_stage["read"])
    validate = {e["record"]["id"]: e for e in by_stage["validate"]}
    assert set(validate) == {"30", "40", "50"}
    assert "f0" in validate["30"]["error"] and "abc" in validate["30"]["error"]
    assert "f1" in validate["40"]["error"] and "finite" in validate["40"]["error"]
    assert "f2" in validate["50"]["error"] and "missing" in validate["50"]["error"]
    assert "FAILED" in cli.result.stdout
    # The summary shows the most frequent reasons, with how many rows each.
    reasons = [ln.strip() for ln in cli.result.stdout.splitlines() if ln.startswith("    ")]
    assert reasons[0] == "2 x read: wrong number of fields: expected 5"
    assert len(reasons) == 3 and all(" x validate: " in r for r in reasons[1:])
    # validate errors carry the physical line too, and the row index among parsed records
    assert {e["record"]["id"]: (e["line"], e["row_index"]) for e in by_stage["validate"]} == {
        "30": (32, 28),
        "40": (42, 38),
        "50": (52, 48),
    }


def test_threshold_lets_a_few_bad_rows_pass(tmp_path, models_dir):
    dirty_csv(tmp_path / "in.csv")
    cli = score(
        tmp_path / "in.csv",
        models_dir / "binary.joblib",
        tmp_path / "out",
        "--max_error_rate",
        "0.01",
    )
    assert cli.code == 0, cli.stderr
    assert cli.manifest["status"] == "succeeded"
    assert cli.manifest["counts"]["rows_failed"] == 5
    assert len(cli.errors()) == 5


def test_model_that_accepts_missing_values_scores_them(tmp_path, models_dir):
    df = float_rows(200)
    df.loc[5, "f2"] = np.nan
    write_input(df, tmp_path / "in.parquet")
    cli = score(tmp_path / "in.parquet", models_dir / "hgb.joblib", tmp_path / "out")
    assert cli.code == 0, cli.stderr
    model = joblib.load(models_dir / "hgb.joblib")
    got = cli.predictions().set_index("id").loc[df.id]
    np.testing.assert_allclose(got.proba_1, model.predict_proba(df[FEATURES])[:, 1])


def test_jsonl_bad_lines(tmp_path, models_dir):
    df = float_rows(100)
    lines = df.to_json(orient="records", lines=True).splitlines()
    lines[3] = '{"id": 3, "f0": 0.1'  # broken JSON
    lines[4] = "[1, 2, 3]"  # not an object
    lines[5] = '{"id": 5, "f0": "abc", "f1": 1, "f2": 2, "f3": 3}'  # text in f0
    lines[6] = '{"id": 6, "f0": 1, "f1": 1, "f2": 2}'  # f3 missing
    (tmp_path / "in.jsonl").write_text("\n".join(lines) + "\n")
    cli = score(
        tmp_path / "in.jsonl",
        models_dir / "binary.joblib",
        tmp_path / "out",
        "--max_error_rate",
        "0.1",
    )
    assert cli.code == 0, cli.stderr
    m = cli.manifest
    assert m["counts"]["rows_failed_by_stage"] == {"read": 2, "validate": 2, "predict": 0}
    assert_reconciled(m)
    assert sorted(cli.predictions().id) == sorted(set(range(100)) - {3, 4, 5, 6})
    read = {e["record"]: e["line"] for e in cli.errors() if e["stage"] == "read"}
    assert read == {lines[3]: 4, lines[4]: 5}


def test_unknown_category_is_a_validate_error_naming_the_feature(tmp_path):
    from sklearn.compose import make_column_transformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    df = float_rows(3000)
    df["color"] = np.where(df.f0 > 0, "red", "blue")
    model = make_pipeline(
        make_column_transformer(
            (OneHotEncoder(handle_unknown="error"), ["color"]), remainder="passthrough"
        ),
        LogisticRegression(),
    ).fit(df[FEATURES + ["color"]], df.f1 > 0)
    joblib.dump(model, tmp_path / "strict.joblib")
    df.loc[[17, 2500], "color"] = "green"  # unseen category: the encoder would raise
    write_input(df, tmp_path / "in.parquet")
    cli = score(
        tmp_path / "in.parquet",
        tmp_path / "strict.joblib",
        tmp_path / "out",
        "--batch_size",
        "1000",
    )
    assert cli.code == 1
    m = cli.manifest
    assert m["counts"]["rows_failed_by_stage"] == {"read": 0, "validate": 2, "predict": 0}
    assert_reconciled(m)
    errors = cli.errors()
    assert sorted(e["record"]["id"] for e in errors) == [17, 2500]
    assert sorted(e["row_index"] for e in errors) == [17, 2500]
    assert all(
        e["error"] == "color: unknown category 'green' (the model knows 'blue', 'red')"
        for e in errors
    )
    assert len(cli.predictions()) == 2998


def test_model_raising_on_some_rows_fails_only_those(tmp_path):
    from tests.custom_models import Sentinel

    df = float_rows(3000)
    joblib.dump(Sentinel().fit(df[FEATURES]), tmp_path / "sentinel.joblib")
    df.loc[[17, 2500], "f0"] = 999  # the model raises on a batch holding these
    write_input(df, tmp_path / "in.csv")
    cli = score(
        tmp_path / "in.csv", tmp_path / "sentinel.joblib", tmp_path / "out", "--batch_size", "1000"
    )
    assert cli.code == 1
    m = cli.manifest
    assert m["counts"]["rows_failed_by_stage"] == {"read": 0, "validate": 0, "predict": 2}
    assert_reconciled(m)
    errors = cli.errors()
    assert sorted((e["row_index"], e["line"]) for e in errors) == [(17, 19), (2500, 2502)]
    assert all("ValueError: f0 = 999 is a sentinel" in e["error"] for e in errors)
    preds = cli.predictions().set_index("id").loc[df.id.drop([17, 2500])]
    np.testing.assert_allclose(preds.prediction, df[FEATURES].drop([17, 2500]).sum(axis=1))


def test_unreadable_parquet_file_is_listed_and_others_scored(tmp_path, models_dir):
    write_input(float_rows(300), tmp_path / "in" / "a.parquet")
    good = write_input(float_rows(300, start_id=300), tmp_path / "in" / "b.parquet")
    (tmp_path / "in" / "c.parquet").write_bytes(good.read_bytes()[:500])  # truncated upload
    cli = score(
        tmp_path / "in" / "*.parquet",
        models_dir / "binary.joblib",
        tmp_path / "out",
        "--max_error_rate",
        "1",
    )
    assert cli.code == 1, cli.stderr  # a failed file fails the run whatever the error rate
    m = cli.manifest
    assert m["status"] == "failed"
    assert m["files_failed"] == [str(tmp_path / "in" / "c.parquet")]
    assert m["counts"]["rows_read"] == 600 and m["counts"]["rows_predicted"] == 600
    [err] = cli.errors()
    assert err["stage"] == "read" and "c.parquet" in err["error"] and err["record"] is None


def test_file_lacking_a_feature_column_is_one_error(tmp_path, models_dir):
    write_input(float_rows(300), tmp_path / "in" / "a.csv")
    write_input(float_rows(200).drop(columns="f3"), tmp_path / "in" / "b.csv")
    cli = score(
        tmp_path / "in" / "*.csv",
        models_dir / "binary.joblib",
        tmp_path / "out",
        "--max_error_rate",
        "0.5",
    )
    assert cli.code == 0, cli.stderr
    m = cli.manifest
    assert m["counts"]["rows_failed_by_stage"]["validate"] == 200
    assert_reconciled(m)
    [err] = cli.errors()
    assert "f3" in err["error"] and "200" in err["error"] and err["rows"] == 200


def test_empty_file_and_header_only_csv_are_zero_rows(tmp_path, models_dir):
    write_input(float_rows(50), tmp_path / "in" / "a.csv")
    (tmp_path / "in" / "b.csv").write_text("id,f0,f1,f2,f3\n")
    (tmp_path / "in" / "c.csv").write_text("")
    cli = score(tmp_path / "in" / "*.csv", models_dir / "binary.joblib", tmp_path / "out")
    # The empty file cannot even name its columns: it is read as zero rows, not an error.
    assert cli.code == 0, cli.stderr
    assert cli.manifest["counts"]["rows_read"] == 50
    assert cli.manifest["files_failed"] == []


def test_long_error_record_is_truncated_to_64_kib(tmp_path, models_dir):
    df = float_rows(20)
    lines = df.to_csv(index=False).splitlines()
    lines[5] = "4," + "x" * 200_000  # too few fields, and huge
    (tmp_path / "in.csv").write_text("\n".join(lines) + "\n")
    cli = score(
        tmp_path / "in.csv", models_dir / "binary.joblib", tmp_path / "out", "--max_error_rate", "1"
    )
    assert cli.code == 0, cli.stderr
    raw = next((tmp_path / "out" / "errors").glob("*.jsonl")).read_bytes()
    assert len(raw.splitlines()[0]) <= 64 * 1024
    [err] = cli.errors()
    assert err["truncated"] is True and err["record"].startswith("4,xxx")


def test_broken_quote_swallows_lines_into_one_rejected_record(tmp_path, models_dir):
    lines = float_rows(30).to_csv(index=False).splitlines()
    lines[10] = '9,"0.5,0.1,0.2,0.3'  # the quote never closes: the rest of the file is one field
    (tmp_path / "in.csv").write_text("\n".join(lines) + "\n")
    cli = score(
        tmp_path / "in.csv", models_dir / "binary.joblib", tmp_path / "out", "--max_error_rate", "1"
    )
    assert cli.code in (0, 1), cli.stderr
    assert "Traceback" not in cli.stderr
    m = cli.manifest
    assert_reconciled(m)
    assert m["counts"]["rows_predicted"] == 9  # the rows before the broken line
    assert m["counts"]["rows_failed"] >= 1
    assert all(e["stage"] == "read" for e in cli.errors())
