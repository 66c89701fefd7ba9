"""Is tonight normal? Five nights scored through the CLI, then a sixth with half the rows: the
night checks fail it (exit 1, output committed), the history section and MLflow show the drop.

One set of nights serves every assert of the scenario (one test, so pytest-xdist does not score
them twice); the checks that need no history run on one tiny input each.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import shlex
import shutil

import pytest

from pipeline.errors import RunFailed
from pipeline.history import far_outside, night_brief, outliers
from pipeline.nights import Nights, evaluate, read_history
from pipeline.observers import Observer
from pipeline.report import render_report
from tests.conftest import FEATURES, assert_one_line_error, float_rows, score, write_input
from tests.helpers import Page, sqlite_store

pytestmark = pytest.mark.slow

NIGHTS = {f"2026-03-0{d}": 38 + 2 * d for d in range(1, 6)}  # 40, 42, 44, 46, 48 rows
TONIGHT = "2026-03-06"
QUALITY = {
    "rows_scored": 44,
    "rows_labelled": 41,
    "rows_unmatched": {"predictions": 3, "labels": 1},
    "label_column": "churned",
    "metrics": {"roc_auc": 0.912, "log_loss": 0.301, "accuracy": 0.878},
}


@pytest.fixture(scope="module")
def baseline_model(tmp_path_factory, models_dir):
    """The binary model with a drift baseline beside it, from its training distribution."""
    from models.baseline import baseline_from_frame

    out = tmp_path_factory.mktemp("nights-model")
    path = out / "binary.joblib"
    shutil.copy(models_dir / "binary.joblib", path)
    base = baseline_from_frame(float_rows(5000, seed=1)[FEATURES], FEATURES)
    (out / "binary.joblib.drift.json").write_text(json.dumps(base))
    return path


def test_five_nights_then_half_the_rows(tmp_path, baseline_model, browser):
    for i, (date, rows) in enumerate(NIGHTS.items()):
        write_input(float_rows(rows, seed=i), tmp_path / "in" / date / "part.parquet")
    write_input(float_rows(20, seed=9), tmp_path / "in" / TONIGHT / "part.parquet")
    inp, out = tmp_path / "in" / "{run_date}" / "*.parquet", tmp_path / "out" / "{run_date}"
    uri = sqlite_store(tmp_path)
    mlflow = ("--mlflow_tracking_uri", uri, "--mlflow_experiment", "nightly")
    for date in NIGHTS:
        assert score(inp, baseline_model, out, "--run_date", date, *mlflow).code == 0
    # A directory of someone else's among the nights is not history.
    (tmp_path / "out" / "2026-03-02b").mkdir()
    (tmp_path / "out" / "2026-02-28").mkdir()
    (tmp_path / "out" / "2026-02-28" / "manifest.json").write_text('{"status": "succeeded"}')
    # Labels arrived for the third night (pipeline.evaluate writes this).
    (tmp_path / "out" / "2026-03-03" / "quality.json").write_text(json.dumps(QUALITY))
    night = tmp_path / "out" / TONIGHT

    checked = score(
        inp, baseline_model, out, "--run_date", TONIGHT, "--max_rows_change", "0.5",
        "--min_rows", "30", *mlflow,
    )  # fmt: skip
    assert checked.code == 1, checked.stderr
    checked.output = night  # the --output given is the pattern
    m = checked.manifest
    assert m["status"] == "failed" and m["error_rate"] == 0
    by_name = {c["check"]: c for c in m["failed_checks"]}
    assert set(by_name) == {"max_rows_change", "min_rows"}
    assert by_name["max_rows_change"]["value"] == pytest.approx(24 / 44, abs=1e-6)  # median 44
    assert by_name["max_rows_change"]["limit"] == 0.5
    assert by_name["min_rows"] == {
        "check": "min_rows",
        "value": 20,
        "limit": 30,
        "message": "20 rows read, fewer than --min_rows 30",
    }
    predictions = checked.predictions()
    assert len(predictions) == 20  # committed all the same
    assert set(predictions.run_date) == {datetime.date(2026, 3, 6)}  # a date on every row
    assert "night check failed: max_rows_change: 20 rows read" in checked.stderr
    assert "night check failed: min_rows" in checked.stderr
    assert [n["run_date"] for n in m["history"]["nights"]] == list(NIGHTS)
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    run = client.get_run(m["mlflow_run_id"])
    assert run.info.status == "FAILED"
    assert run.data.metrics["failed_checks"] == 2
    assert "more than --max_rows_change 0.5" in run.data.tags["beamscore.failed_checks"]

    # The same night without the check: it succeeds, and the report shows the drop.
    plain = score(inp, baseline_model, out, "--run_date", TONIGHT, "--min_rows", "20", *mlflow)
    assert plain.code == 0, plain.stderr
    plain.output = night
    m = plain.manifest
    assert m["status"] == "succeeded" and m["failed_checks"] == []
    assert m["checks"] == {
        "min_rows": 20,
        "max_drift": None,
        "max_rows_change": None,
        "skipped": [],
    }
    # The foreign folder in a night's place is left out of the history, and said so.
    assert m["history"]["ignored"] == [
        {
            "run_date": "2026-02-28",
            "folder": str(tmp_path / "out" / "2026-02-28"),
            "reason": "its manifest.json is not one of this tool's (no beamscore producer)",
        }
    ]
    assert "WARNING pipeline.nights: history: the folder of 2026-02-28 is ignored" in plain.stderr
    # A clean run's stderr holds only our own lines: no MLflow UserWarning, no matplotlib INFO.
    for line in plain.stderr.splitlines():
        assert re.match(r"\S+ \S+ (INFO|WARNING) (pipeline|models|transforms)[.:]", line), (
            plain.stderr
        )
    history = client.get_metric_history(m["mlflow_run_id"], "night_rows_read")
    assert [h.value for h in sorted(history, key=lambda h: h.step)] == [40, 42, 44, 46, 48, 20]
    (auc,) = client.get_metric_history(m["mlflow_run_id"], "night_quality_roc_auc")
    assert auc.value == 0.912

    page = Page(browser, night / "report.html")
    try:
        rows = page.all("#history tr[data-run-date]")
        assert [r.get_attribute("data-run-date") for r in rows] == [*NIGHTS, TONIGHT]
        tonight = page.page.locator(f'#history tr[data-run-date="{TONIGHT}"]')
        assert tonight.get_attribute("data-tonight") == "true"
        cell = tonight.locator('td[data-col="rows_read"]')
        assert cell.get_attribute("data-outlier") == "true" and cell.inner_text() == "20"
        assert "rows read 20 is far outside" in page.text(".attention")
        earlier = page.page.locator('#history tr[data-run-date="2026-03-01"]')
        assert earlier.locator('td[data-col="rows_read"]').get_attribute("data-outlier") is None
        quality = page.page.locator('#history tr[data-run-date="2026-03-03"] td[data-col=quality]')
        assert quality.locator('[data-metric="roc_auc"]').inner_text() == "roc_auc 0.912"
        assert page.attr('#checks li[data-check="min_rows"]', "data-state") == "passed"
        share = tonight.locator('td[data-col="prediction"]').get_attribute("data-value")
        assert float(share) == m["prediction_summary"]["value"]
        assert m["prediction_summary"]["class"] == "1"
        assert page.text("#output-predictions") == f"{night}/predictions/"
        assert page.text("#output-manifest") == f"{night}/manifest.json"
        assert "--run_date 2026-03-06" in page.text("#rerun-command")
        assert not page.requests[1:] and not page.console_errors
    finally:
        page.close()

    found, source = read_history(str(out), TONIGHT)
    assert source == "manifests" and [n["run_date"] for n in found] == list(NIGHTS)
    assert found[2]["quality"]["metrics"]["roc_auc"] == 0.912
    assert found[0]["rows_read"] == 40 and found[0]["prediction"]["kind"] == "positive_share"
    assert [n["run_date"] for n in read_history(str(out), "2026-03-03")[0]] == list(NIGHTS)[:2]
    # Labels of an earlier scoring of a night are not that night's quality.
    third = tmp_path / "out" / "2026-03-03"
    (third / "quality.json").write_text(json.dumps({**QUALITY, "run_id": "an-earlier-run"}))
    assert read_history(str(out), TONIGHT)[0][2]["quality"] is None
    (third / "quality.json").write_text(json.dumps(QUALITY))
    # The same nights read back from MLflow (the history of an --output without {run_date}),
    # the third with the quality pipeline.evaluate logs to its run.
    from pipeline.evaluate import _log_to_mlflow
    from pipeline.tracking import read_history as mlflow_history

    third = json.loads((tmp_path / "out" / "2026-03-03" / "manifest.json").read_text())
    logged = {**QUALITY, "labels_rejected": {"rows": 0}, "evaluated_at": "2026-04-03T00:00:00"}
    _log_to_mlflow(client, third["mlflow_run_id"], logged)
    # A later rerun of that night which ended before committing (exit 3) is not the night.
    job = client.get_run(third["mlflow_run_id"]).data.tags["beamscore.job"]
    aborted = client.create_run(
        client.get_experiment_by_name("nightly").experiment_id, tags={"beamscore.job": job}
    )
    client.log_param(aborted.info.run_id, "run_date", "2026-03-03")
    client.set_terminated(aborted.info.run_id, "FAILED")
    runs = mlflow_history(uri, "nightly", str(out), TONIGHT, 30)
    fields = ("run_date", "run_id", "status", "rows_read", "error_rate", "top_drift")
    fields += ("prediction", "model_version", "duration_s")
    assert [{k: n[k] for k in fields} for n in runs] == [{k: n[k] for k in fields} for n in found]
    from_mlflow = {k: runs[2]["quality"][k] for k in ("metrics", "rows_labelled")}
    assert from_mlflow == {"metrics": QUALITY["metrics"], "rows_labelled": 41}
    assert from_mlflow == {k: found[2]["quality"][k] for k in ("metrics", "rows_labelled")}
    assert [n["quality"] for n in runs[:2] + runs[3:]] == [None] * 4
    assert len(mlflow_history(uri, "nightly", str(out), "2026-03-04", 2)) == 2


def test_max_drift_fails_a_drifted_night_and_drift_exclude_leaves_a_feature_out(
    tmp_path, baseline_model
):
    df = float_rows(60, seed=3)
    df["f0"] = df["f0"] + 4.0  # every row far beyond the training range
    write_input(df, tmp_path / "in.parquet")
    drifted = score(tmp_path / "in.parquet", baseline_model, tmp_path / "a", "--max_drift", "3")
    assert drifted.code == 1, drifted.stderr
    (check,) = drifted.manifest["failed_checks"]
    assert check["check"] == "max_drift" and check["limit"] == 3
    assert check["value"] == drifted.manifest["drift"]["f0"] > 3
    assert "f0 PSI" in check["message"] and "night check failed: max_drift" in drifted.stderr
    assert len(drifted.predictions()) == 60
    kept = score(
        tmp_path / "in.parquet", baseline_model, tmp_path / "b", "--max_drift", "3",
        "--drift_exclude", "f0",
    )  # fmt: skip
    assert kept.code == 0, kept.stderr
    assert kept.manifest["drift_exclude"] == ["f0"]
    assert set(kept.manifest["drift"]) == {"f1", "f2", "f3"}
    assert kept.manifest["failed_checks"] == []
    # With --wait false the job's own commit stage decides; the DirectRunner ran the job to
    # its end before returning, so the launcher says the night's outcome and exits with it.
    alone = score(
        tmp_path / "in.parquet", baseline_model, tmp_path / "c", "--min_rows", "61",
        "--wait", "false",
    )  # fmt: skip
    assert alone.code == 1 and alone.result.stdout.startswith("FAILED: 60 rows read"), alone.stderr
    assert alone.manifest["status"] == "failed"
    assert [c["check"] for c in alone.manifest["failed_checks"]] == ["min_rows"]
    assert "night check failed: min_rows: 60 rows read" in alone.stderr  # the job's log


def test_max_drift_without_a_baseline_and_bad_values_are_refused(tmp_path, models_dir):
    write_input(float_rows(10), tmp_path / "in.parquet")
    for flags, words in (
        (("--max_drift", "0.2"), ("--max_drift needs the model's drift baseline",)),
        (("--min_rows", "many"), ("--min_rows",)),
        (("--max_rows_change", "-1"), ("--max_rows_change",)),
        (("--drift_exclude", "month"), ("--drift_exclude month", "not a feature")),
    ):
        cli = score(tmp_path / "in.parquet", models_dir / "binary.joblib", tmp_path / "o", *flags)
        assert_one_line_error(cli, *words)
        assert not (tmp_path / "o").exists()


# --- pieces -----------------------------------------------------------------------------------


def brief(date: str, rows: int, version: str = "v1") -> dict:
    manifest = {
        "run_date": date,
        "status": "succeeded",
        "counts": {"rows_read": rows},
        "error_rate": 0.0,
        "model": {"version": version},
    }
    return night_brief(manifest)


def test_max_rows_change_is_skipped_with_fewer_than_three_previous_nights():
    nights = Nights(max_rows_change=0.5, history=(brief("2026-03-01", 40), brief("2026-03-02", 40)))
    failed, skipped = evaluate(nights, 5, None)
    assert failed == []
    assert skipped == [
        {
            "check": "max_rows_change",
            "message": "skipped: 2 previous night(s) found (none), at least 3 needed",
        }
    ]
    page = render_report(
        {"status": "succeeded", "checks": {"max_rows_change": 0.5, "skipped": skipped}}, None, []
    )
    assert 'data-check="max_rows_change" data-state="skipped"' in page
    assert "at least 3 needed" in page


def test_far_outside_and_a_model_version_change():
    assert not far_outside([40, 42, 44], 46)  # within a range's width of the range
    assert far_outside([40, 42, 44], 20) and far_outside([40, 40, 40], 35)
    assert not far_outside([40, 40], 1)  # too few nights to say
    assert not far_outside([0.0, 0.0, 0.0], 0.0) and far_outside([0.0, 0.0, 0.0], 0.01)
    previous = [brief(f"2026-03-0{d}", 40) for d in range(1, 4)]
    assert set(outliers(previous, brief("2026-03-04", 90))) == {"rows_read"}
    history = {"source": "manifests", "nights": previous}
    manifest = {
        "run_date": "2026-03-04",
        "status": "succeeded",
        "counts": {"rows_read": 41},
        "model": {"version": "v2"},
        "history": history,
    }
    page = render_report(manifest, None, [])
    assert page.count('data-model-changed="true"') == 1
    assert (
        'data-run-date="2026-03-04" class="tonight" data-tonight="true" data-model-changed' in page
    )
    assert "data-outlier" not in page


# --- observers --------------------------------------------------------------------------------


class Recorder(Observer):
    """An observer of the kind a user adds (pipeline.observers): it writes what it is told to
    the file RECORDER names, and refuses the run at start when RECORDER_REFUSE is set."""

    @classmethod
    def for_launch(cls, launch):
        return cls(os.environ["RECORDER"]) if os.environ.get("RECORDER") else None

    def __init__(self, path: str):
        self.path = path

    def _note(self, text: str) -> None:
        with open(self.path, "a") as f:
            f.write(text + "\n")

    def started(self, run) -> None:
        self._note(f"started {run.launch.run_date}")
        if os.environ.get("RECORDER_REFUSE"):
            from pipeline.errors import ConfigError

            raise ConfigError("the recorder refuses this run")

    def manifest(self) -> dict:
        return {"recorded_to": self.path}

    def finished(self, night) -> dict:
        self._note(f"finished {night.manifest['status']} {night.manifest['counts']['rows_read']}")
        return {}

    def failed(self, message: str, stopped: bool) -> None:
        self._note(f"failed {message}")


def test_an_observer_is_one_class_and_one_line(tmp_path, models_dir, monkeypatch):
    from pipeline import observers

    kinds = observers.kinds
    monkeypatch.setattr(observers, "kinds", lambda: (*kinds(), Recorder))  # the one line
    write_input(float_rows(12), tmp_path / "in.parquet")
    notes = tmp_path / "notes.txt"
    env = {"RECORDER": str(notes)}
    model = models_dir / "binary.joblib"
    cli = score(tmp_path / "in.parquet", model, tmp_path / "o", "--run_date", TONIGHT, env=env)
    assert cli.code == 0, cli.stderr
    assert notes.read_text().splitlines() == [f"started {TONIGHT}", "finished succeeded 12"]
    assert cli.manifest["recorded_to"] == str(notes)  # pickled into the commit stage's plan
    notes.unlink()
    refused = score(
        tmp_path / "in.parquet", model, tmp_path / "o", env={**env, "RECORDER_REFUSE": "1"}
    )
    assert_one_line_error(refused, "the recorder refuses this run")
    assert notes.read_text().splitlines()[0].startswith("started")
    assert notes.read_text().splitlines()[1].startswith("failed")


@pytest.mark.parametrize(
    "word, written",
    [
        ("postgresql://user:pw@db:5432/mlflow", "postgresql://***@db:5432/mlflow"),
        (
            "--mlflow_tracking_uri=https://u:tok@h/x?api_key=1",
            "--mlflow_tracking_uri=https://***@h/x?***",
        ),
        ("http://h:5000/api/v1/lineage?api_key=k", "http://h:5000/api/v1/lineage?***"),
        ("gs://b/in/{run_date}/part-?.parquet", "gs://b/in/{run_date}/part-?.parquet"),
        ("sqlite:////tmp/m.db", "sqlite:////tmp/m.db"),
        ("bq://p.d.t", "bq://p.d.t"),
    ],
)
def test_the_rerun_command_keeps_no_credentials(word, written):
    from pipeline.run import rerun_command

    command = rerun_command(["--input", "x", "--flag", word], "2026-03-06")
    assert command.endswith(f"--input x --flag {shlex.quote(written)} --run_date 2026-03-06")


def test_history_that_storage_does_not_answer_is_exit_3_only_when_a_check_needs_it(
    tmp_path, monkeypatch
):
    """A --max_rows_change night whose previous nights cannot be read fails (exit 3), where a
    night without the check only warns: a check set is never skipped by a storage hiccup."""
    import pipeline.nights as nights

    (tmp_path / "2026-03-01").mkdir()
    (tmp_path / "2026-03-01" / "manifest.json").write_text("{}")

    def unreachable(path):
        raise ConnectionError(f"connection refused reading {path}")

    monkeypatch.setattr(nights, "_manifest", unreachable)
    pattern = str(tmp_path / "{run_date}")
    assert nights.read_history(pattern, "2026-03-02") == ([], "manifests")
    with pytest.raises(RunFailed, match="--max_rows_change needs the previous nights, and 90 of"):
        nights.read_history(pattern, "2026-03-02", strict=True)


def test_a_copied_night_a_corrupt_manifest_and_a_foreign_folder_are_left_out_and_said(
    tmp_path, baseline_model
):
    """cp -r of a night under later dates (a backfill by hand) would have held the median at
    the small night's rows and failed a normal night; each night counts once, in its own
    folder, and each folder left out is a warning, a manifest entry and a line of the report."""
    out = tmp_path / "out"
    inp = tmp_path / "in" / "{run_date}" / "*.parquet"
    nights = {"2026-03-01": 10, "2026-03-02": 100, "2026-03-03": 100, "2026-03-06": 100}
    for i, (date, rows) in enumerate(nights.items()):
        write_input(float_rows(rows, seed=i), tmp_path / "in" / date / "part.parquet")
    for date in list(nights)[:3]:
        assert score(inp, baseline_model, out / "{run_date}", "--run_date", date).code == 0
    for copy in ("2026-03-04", "2026-03-05"):
        shutil.copytree(out / "2026-03-01", out / copy)
    (out / "2026-02-27").mkdir()
    (out / "2026-02-27" / "manifest.json").write_text('{"producer": "beamscore", "run_')
    (out / "2026-02-26").mkdir()
    (out / "2026-02-26" / "manifest.json").write_text('{"status": "succeeded"}')

    res = score(
        inp, baseline_model, out / "{run_date}", "--run_date", "2026-03-06",
        "--max_rows_change", "0.5",
    )  # fmt: skip
    assert res.code == 0, res.stderr  # 100 rows against the median of 10, 100, 100
    res.output = out / "2026-03-06"
    history = res.manifest["history"]
    assert [n["run_date"] for n in history["nights"]] == ["2026-03-01", "2026-03-02", "2026-03-03"]
    reasons = {i["run_date"]: i["reason"] for i in history["ignored"]}
    assert list(reasons) == ["2026-02-26", "2026-02-27", "2026-03-04", "2026-03-05"]
    assert "not one of this tool's" in reasons["2026-02-26"]
    assert "not valid JSON" in reasons["2026-02-27"]
    assert reasons["2026-03-04"].startswith("its manifest is of the night of '2026-03-01'")
    for date in reasons:
        assert f"history: the folder of {date} is ignored" in res.stderr
    page = (out / "2026-03-06" / "report.html").read_text()
    assert page.count('data-ignored="') == 4 and "4 folders left out of the history" in page
