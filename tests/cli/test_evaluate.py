"""Delayed-label quality (`python -m pipeline.evaluate`) on nights scored by the CLI: the metrics
are scikit-learn's on the joined rows, every label and prediction is accounted for, and the
night's MLflow run gains them."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn import metrics as skm

from tests.conftest import Cli, assert_one_line_error, float_rows, score, write_input


def evaluate(night: Path, labels: Path | str, *more: str, env: dict | None = None) -> Cli:
    """`python -m pipeline.evaluate` in this process (its entry point), as run_cli does."""
    from pipeline import evaluate as cli
    from tests.conftest import _environment

    argv = ["--predictions", str(night), "--labels", str(labels), *more]
    if "--label_column" not in more:
        argv += ["--label_column", "y"]
    out, err = io.StringIO(), io.StringIO()
    handler = logging.StreamHandler(err)  # as main()'s basicConfig would log to stderr
    root = logging.getLogger()
    saved, wanted = dict(os.environ), _environment(env)
    try:
        os.environ.clear()
        os.environ.update(wanted)
        root.addHandler(handler)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli.main(argv)
    finally:
        root.removeHandler(handler)
        os.environ.clear()
        os.environ.update(saved)
    return Cli(subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue()), night)


def quality(night: Path) -> dict:
    return json.loads((night / "quality.json").read_text())


def predictions(night: Path) -> pd.DataFrame:
    files = sorted((night / "predictions").glob("*.parquet"))
    return pa.concat_tables([pq.read_table(f) for f in files]).to_pandas()


def _night(tmp: Path, model: Path, seed: int, *more: str) -> Path:
    write_input(float_rows(60, seed=seed), tmp / "in.parquet")
    cli = score(tmp / "in.parquet", model, tmp / "night", *more)
    assert cli.code == 0, cli.stderr
    return tmp / "night"


@pytest.fixture(scope="module")
def mlflow_uri(tmp_path_factory) -> str:
    from tests.helpers import sqlite_store

    return sqlite_store(tmp_path_factory.mktemp("mlflow"))


@pytest.fixture(scope="module")
def binary_night(tmp_path_factory, models_dir, mlflow_uri) -> Path:
    """A binary night logged to MLflow (a sqlite store under tmp)."""
    tmp = tmp_path_factory.mktemp("binary")
    flags = ("--mlflow_tracking_uri", mlflow_uri, "--mlflow_experiment", "nightly")
    return _night(tmp, models_dir / "binary.joblib", 21, *flags)


@pytest.fixture(scope="module")
def regressor_night(tmp_path_factory, models_dir) -> Path:
    return _night(tmp_path_factory.mktemp("regressor"), models_dir / "regressor.joblib", 23)


def test_binary_metrics_are_sklearns_and_the_nights_mlflow_run_gains_them(
    tmp_path, binary_night, mlflow_uri
):
    rng = np.random.default_rng(5)
    ids = [str(i) for i in range(10, 60)]  # ids 0..9 get no label
    ys = rng.integers(0, 2, len(ids)).tolist()
    rows = list(zip(ids, ys))
    rows += [(str(i), 1) for i in range(1000, 1005)]  # labels of no prediction of the night
    rows += [("007", 1)]  # int key 7 is written "7": "007" is not it (rejected, not a miss)
    rows += [("5", 2)]  # not one of the model's classes (0, 1): rejected
    labels = tmp_path / "labels.csv"
    pd.DataFrame(rows, columns=["id", "y"]).to_csv(labels, index=False)

    refused = evaluate(binary_night, labels, env={"MLFLOW_TRACKING_URI": None})
    assert_one_line_error(refused, "give its server with --mlflow_tracking_uri")
    assert not (binary_night / "quality.json").exists()
    cli = evaluate(binary_night, labels, env={"MLFLOW_TRACKING_URI": mlflow_uri})
    assert cli.code == 0, cli.stderr
    assert cli.stderr == ""  # no warning of MLflow's or scikit-learn's
    q = quality(binary_night)
    assert q["model_kind"] == "binary" and q["positive_class"] == "1"
    assert q["rows_scored"] == 60 and q["rows_labelled"] == 50
    assert q["rows_unmatched"] == {"predictions": 10, "labels": 5}
    assert q["labels_read"] == 57 and q["labels_rejected"]["rows"] == 2
    reasons = " | ".join(e["reason"] for e in q["labels_rejected"]["examples"])
    assert "'007' would not be written as spelled as int64" in reasons
    assert "2 is not one of the model's classes (0, 1)" in reasons
    assert q["key_casts"] == {"id": {"night": "int64", "labels": ["string"]}}

    # The expectation, computed here on the joined rows.
    p = predictions(binary_night)
    want = pd.DataFrame({"id": [int(i) for i in ids], "y": ys}).merge(p, on="id")
    assert len(want) == 50
    y, proba = want.y.to_numpy(), want[["proba_0", "proba_1"]].to_numpy()
    expected = {
        "roc_auc": skm.roc_auc_score(y, want.proba_1),
        "log_loss": skm.log_loss(y, proba, labels=[0, 1]),
        "accuracy": skm.accuracy_score(y, want.prediction),
        "precision": skm.precision_score(y, want.prediction),
        "recall": skm.recall_score(y, want.prediction),
    }
    assert q["metrics"] == pytest.approx(expected, rel=1e-12)
    assert "EVALUATED: 50 of 60 predictions labelled (binary)" in cli.result.stdout

    from mlflow import MlflowClient

    manifest = json.loads((binary_night / "manifest.json").read_text())
    client = MlflowClient(mlflow_uri)
    run = client.get_run(manifest["mlflow_run_id"])
    for name, value in expected.items():
        assert run.data.metrics[f"quality_{name}"] == pytest.approx(value, rel=1e-12)
    assert run.data.metrics["quality_rows_unmatched_predictions"] == 10
    assert run.data.metrics["quality_rows_unmatched_labels"] == 5
    assert "quality.json" in [a.path for a in client.list_artifacts(run.info.run_id)]
    assert run.info.status == "FINISHED"  # the night's outcome is not changed


def test_pandas_float_labels_of_integer_classes_are_the_integers_they_spell(tmp_path, models_dir):
    """pandas writes a float column holding NaN as 1.0, 0.0 and empty: for a 0/1 model the
    whole numbers are its classes, as the same labels in Parquet are; a missing label is
    rejected as such, and a rejection names the label column, not a key."""
    night = _night(tmp_path, models_dir / "binary.joblib", 31)
    ids = list(range(40))
    ys = [float(i % 2) for i in ids[:-3]] + [np.nan, 1.5, 3.0]
    frame = pd.DataFrame({"id": ids, "y": ys})
    frame.to_csv(tmp_path / "labels.csv", index=False)
    assert "1.0" in (tmp_path / "labels.csv").read_text()
    cli = evaluate(night, tmp_path / "labels.csv")
    assert cli.code == 0, cli.stderr
    q = quality(night)
    assert q["rows_labelled"] == 37 and q["labels_rejected"]["rows"] == 3
    reasons = " | ".join(e["reason"] for e in q["labels_rejected"]["examples"])
    assert "label y is null" in reasons
    assert "label y: '1.5' is not one of the model's classes (0, 1)" in reasons
    assert "label y: 3 is not one of the model's classes (0, 1)" in reasons
    assert "key" not in reasons

    frame.to_parquet(tmp_path / "labels.parquet")  # the same labels, as floats
    cli = evaluate(night, tmp_path / "labels.parquet")
    assert cli.code == 0, cli.stderr
    assert quality(night)["metrics"] == q["metrics"]


def test_multiclass_jsonl_labels_with_keys_as_json_text_or_numbers(tmp_path, models_dir):
    night = _night(tmp_path, models_dir / "multiclass.pkl", 22)
    rng = np.random.default_rng(6)
    classes = ["high", "low", "mid"]
    lines, kept = [], []
    for i in range(60):
        y = classes[rng.integers(0, 3)]
        key = str(i) if i % 2 else i  # "7" (JSON text) is the key 7 as the night wrote it
        if i == 3:
            y = "medium"  # not a class
        elif i == 4:
            key = "4.0"  # text that is not the key's spelling
        else:
            kept.append((i, y))
        lines.append(json.dumps({"id": key, "y": y, "extra": "ignored"}))
    (tmp_path / "labels.jsonl").write_text("\n".join(lines) + "\n{not json\n")

    cli = evaluate(night, tmp_path / "labels.jsonl")
    assert cli.code == 0, cli.stderr
    q = quality(night)
    assert q["model_kind"] == "multiclass" and q["classes"] == classes
    assert q["rows_labelled"] == 58
    assert q["rows_unmatched"] == {"predictions": 2, "labels": 0}
    assert q["labels_read"] == 61 and q["labels_rejected"]["rows"] == 3
    assert "not valid JSON" in json.dumps(q["labels_rejected"])
    want = pd.DataFrame(kept, columns=["id", "y"]).merge(predictions(night), on="id")
    proba = want[[f"proba_{c}" for c in classes]].to_numpy()
    assert q["metrics"] == pytest.approx(
        {
            "accuracy": skm.accuracy_score(want.y, want.prediction),
            "log_loss": skm.log_loss(want.y, proba, labels=classes),
        },
        rel=1e-12,
    )


def test_regressor_parquet_labels_and_a_rerun_replaces_quality(tmp_path, regressor_night):
    ids = np.arange(60, dtype=np.int64)
    target = np.linspace(-3, 3, 60)
    target[7] = np.nan  # not a finite number: rejected
    labels = pa.table(
        {"id": pa.array(ids), "y": pa.array(target.tolist()[:8] + [None] + target.tolist()[9:])}
    )
    pq.write_table(labels, tmp_path / "labels.bin")  # a name that does not say the format
    for _ in range(2):  # evaluating again is safe: the same numbers, one file
        cli = evaluate(regressor_night, tmp_path / "labels.bin", "--labels_format", "parquet")
        assert cli.code == 0, cli.stderr
    q = quality(regressor_night)
    assert q["model_kind"] == "regressor" and q["rows_labelled"] == 58
    assert q["rows_unmatched"] == {"predictions": 2, "labels": 0}
    reasons = [e["reason"] for e in q["labels_rejected"]["examples"]]
    assert any("is not a finite number" in r for r in reasons)
    assert any("label y is null" in r for r in reasons)
    keep = np.isfinite(target) & (ids != 8)
    want = pd.DataFrame({"id": ids[keep], "y": target[keep]}).merge(
        predictions(regressor_night), on="id"
    )
    assert q["metrics"] == pytest.approx(
        {
            "rmse": np.sqrt(skm.mean_squared_error(want.y, want.prediction)),
            "mae": skm.mean_absolute_error(want.y, want.prediction),
            "r2": skm.r2_score(want.y, want.prediction),
        },
        rel=1e-12,
    )
    assert sorted(p.name for p in regressor_night.iterdir() if p.name.startswith("quality")) == [
        "quality.json"
    ]


def test_a_key_held_by_two_labels_is_exit_2_naming_it(tmp_path, regressor_night):
    before = (
        (regressor_night / "quality.json").read_bytes()
        if (regressor_night / "quality.json").exists()
        else None
    )
    pd.DataFrame({"id": [1, 2, 3, 3], "y": [0.1, 0.2, 0.3, 0.4]}).to_csv(
        tmp_path / "labels.csv", index=False
    )
    cli = evaluate(regressor_night, tmp_path / "labels.csv")
    assert_one_line_error(cli, "key (id=3)", "2 labels")
    after = (
        (regressor_night / "quality.json").read_bytes()
        if (regressor_night / "quality.json").exists()
        else None
    )
    assert after == before  # nothing written


def test_refusals_are_one_line_and_write_nothing(tmp_path, regressor_night):
    pd.DataFrame({"id": [1, 2], "y": [0.5, 1.5]}).to_csv(tmp_path / "ok.csv", index=False)
    pd.DataFrame({"ID": [1, 2], "y": [0.5, 1.5]}).to_csv(tmp_path / "nokey.csv", index=False)
    pd.DataFrame({"id": [9001], "y": [0.5]}).to_csv(tmp_path / "other.csv", index=False)
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "data.txt").write_text("x")
    cases = [
        ((tmp_path / "foreign", tmp_path / "ok.csv"), "holds no manifest.json of this tool"),
        ((regressor_night, tmp_path / "ok.csv", "--label_column", "target"), "lacks label column"),
        ((regressor_night, tmp_path / "nokey.csv"), "lacks key/label column(s) id (the file has"),
        ((regressor_night, tmp_path / "ok.csv", "--key_columns", "f0"), "not a key column"),
        ((regressor_night, tmp_path / "none-*.csv"), "no label file matches"),
        ((regressor_night, tmp_path / "ok.csv", "--labels_format", "xls"), "invalid choice"),
        ((regressor_night, tmp_path / "foreign" / "data.txt"), "--labels_format parquet|csv"),
        ((regressor_night, tmp_path / "other.csv"), "no prediction of"),
        ((regressor_night, tmp_path / "ok.csv", "--run_date", "2001-01-01"), "night of 20"),
    ]
    for args, words in cases:
        before = sorted(p.name for p in Path(args[0]).iterdir())
        cli = evaluate(*args)
        assert_one_line_error(cli, words)
        assert sorted(p.name for p in Path(args[0]).iterdir()) == before
    # --skip_missing: a night never scored (no DIR, or no manifest.json in it) is nothing to
    # evaluate, exit 0; a foreign manifest or any other refusal stays exit 2.
    for night in (tmp_path / "never", tmp_path / "foreign"):
        cli = evaluate(night, tmp_path / "ok.csv", "--skip_missing")
        assert cli.code == 0 and f"nothing to evaluate: {night} holds no night" in cli.result.stdout
    (tmp_path / "foreign" / "manifest.json").write_text('{"status": "succeeded"}')
    cli = evaluate(tmp_path / "foreign", tmp_path / "ok.csv", "--skip_missing")
    assert_one_line_error(cli, "holds no manifest.json of this tool")
    assert not (tmp_path / "never").exists()
    assert sorted(p.name for p in (tmp_path / "foreign").iterdir()) == ["data.txt", "manifest.json"]


@pytest.mark.backed
def test_rescoring_the_night_drops_its_quality_and_lineage_is_sent(
    tmp_path, models_dir, regressor_night
):
    from tests.helpers import serving

    night = regressor_night
    pd.DataFrame({"id": range(60), "y": np.linspace(0, 1, 60)}).to_csv(
        tmp_path / "labels.csv", index=False
    )
    with serving() as receiver:
        cli = evaluate(night, tmp_path / "labels.csv", "--openlineage_url", receiver.url)
    assert cli.code == 0, cli.stderr
    assert "lineage:     sent" in cli.result.stdout
    [event] = receiver.events
    assert event["eventType"] == "COMPLETE"
    assert event["job"]["name"].endswith("night:evaluate")
    assert [d["name"] for d in event["outputs"]] == [str(night / "quality.json")]
    assert {d["name"] for d in event["inputs"]} == {
        str(night / "predictions"),
        str(tmp_path / "labels.csv"),
    }
    run_id = quality(night)["run_id"]
    rescored = score(night.parent / "in.parquet", models_dir / "regressor.joblib", night)
    assert rescored.code == 0, rescored.stderr
    assert rescored.manifest["run_id"] != run_id
    assert not (night / "quality.json").exists()  # the old night's quality is not the new one's


def test_a_night_and_labels_in_cloud_storage(tmp_path, regressor_night, gcs):
    bucket = gcs["bucket"]
    day = json.loads((regressor_night / "manifest.json").read_text())["run_date"]
    for f in regressor_night.rglob("*"):
        if f.is_file() and f.name != "quality.json":
            bucket.blob(f"ev/{day}/{f.relative_to(regressor_night)}").upload_from_filename(f)
    labels = pd.DataFrame({"id": range(0, 60, 2), "y": np.linspace(0, 1, 30)})
    bucket.blob(f"ev/labels/{day}/a.csv").upload_from_string(labels.to_csv(index=False))
    cli = evaluate(
        "gs://scoring/ev/{run_date}", "gs://scoring/ev/labels/{run_date}/*.csv", "--run_date", day
    )
    assert cli.code == 0, cli.stderr
    q = json.loads(bucket.blob(f"ev/{day}/quality.json").download_as_bytes())
    assert q["rows_labelled"] == 30 and q["rows_unmatched"] == {"predictions": 30, "labels": 0}
    assert q["predictions"] == f"gs://scoring/ev/{day}"


def test_join_refuses_a_labelled_key_two_predictions_hold_and_keeps_the_nights_order():
    from pipeline.errors import ConfigError
    from pipeline.evaluate import join

    night = pa.table({"id": [9, 5, 5, 1], "prediction": [0.9, 0.5, 0.6, 0.1]})
    labels = pa.table({"id": [1, 9, 7], "y": [1.0, 9.0, 7.0]})
    joined = join(night, labels, ["id"])  # key 5 twice, but unlabelled: no matter
    assert joined["id"].to_pylist() == [9, 1] and joined["__label"].to_pylist() == [9.0, 1.0]
    with pytest.raises(ConfigError, match=r"key \(id=5\) is held by 2 labelled predictions"):
        join(night, pa.table({"id": [5], "y": [0.5]}), ["id"])


@pytest.mark.parametrize(
    "values, classes, expected",
    [
        (pa.array([1, 0, 2, None]), ("0", "1"), [1, 0, -1, -1]),
        (pa.array(["mid", "x", "high"]), ("high", "low", "mid"), [2, -1, 0]),
        (pa.array([1.0, 0.5, 0.0]), ("0.0", "1.0"), [1, -1, 0]),
        (pa.array([True, False, None]), ("False", "True"), [1, 0, -1]),
    ],
)
def test_class_index_names_classes_as_the_proba_columns_do(values, classes, expected):
    from pipeline.evaluate import class_index

    assert class_index(values, classes).tolist() == expected
