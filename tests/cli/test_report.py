"""The run report in a real headless Chromium: what the page shows is what the run did.

Each test runs the real CLI, opens the DIR/report.html it wrote from file:// and reads the numbers
the browser renders against the manifest, the predictions and the errors output. Chromium is
Debian's (/usr/bin/chromium, installed by scripts/install_browser.sh), driven by Playwright.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from pipeline.report import render_report
from tests.conftest import float_rows, score, write_input
from tests.helpers import SCRIPT, Page, assert_headline, assert_offline, assert_png, opened

pytestmark = pytest.mark.slow


def show(browser, tmp_path: Path, manifest: dict, profile, groups) -> Page:
    """Renders the report into tmp_path and opens it."""
    path = tmp_path / "report.html"
    path.write_text(render_report(manifest, profile, groups), encoding="utf-8")
    return Page(browser, path)


def test_regressor_run_shows_the_prediction_histogram(browser, tmp_path, models_dir):
    write_input(float_rows(1500, seed=5), tmp_path / "in" / "a.parquet")
    write_input(float_rows(700, seed=6, start_id=1500), tmp_path / "in" / "b.parquet")
    cli = score(tmp_path / "in" / "*.parquet", models_dir / "regressor.joblib", tmp_path / "out")
    assert cli.code == 0, cli.stderr
    m, predictions = cli.manifest, cli.predictions()
    page = opened(browser, cli)

    assert_headline(page, m)
    assert page.text("#status") == "SUCCEEDED"
    assert page.text(".attention") == "Nothing needs attention"
    assert page.text("#errors").endswith("No rejected records.")
    assert "n/a" in page.text("#drift")
    assert [r.get_attribute("data-path") for r in page.all("#files tbody tr")] == [
        i["path"] for i in m["inputs"]
    ]
    bins = [int(b.get_attribute("data-count")) for b in page.all("#prediction-histogram rect")]
    values = predictions.prediction.to_numpy()
    expected, _ = np.histogram(values, bins=len(bins), range=(values.min(), values.max()))
    assert bins == expected.tolist() and sum(bins) == len(predictions)
    assert page.page.locator("#class-shares").count() == 0
    assert_offline(page)
    assert_png(page.screenshot(tmp_path / "report.png"))
    page.close()


def test_classifier_run_shows_class_shares(browser, tmp_path, models_dir):
    write_input(float_rows(1200, seed=7), tmp_path / "in.jsonl")
    cli = score(tmp_path / "in.jsonl", models_dir / "multiclass.pkl", tmp_path / "out")
    assert cli.code == 0, cli.stderr
    m, predictions = cli.manifest, cli.predictions()
    page = opened(browser, cli)

    assert_headline(page, m)
    shares = Counter(predictions.prediction)
    assert set(shares) == {"low", "mid", "high"}
    rows = page.all("#class-shares tbody tr")
    assert [r.get_attribute("data-class") for r in rows] == [k for k, _ in shares.most_common()]
    for row in rows:
        label = row.get_attribute("data-class")
        assert int(row.locator("td.num").first.inner_text().replace(",", "")) == shares[label]
        share = row.locator("td.num").nth(1).inner_text()
        assert float(share.rstrip("%")) == pytest.approx(
            100 * shares[label] / len(predictions), abs=0.05
        )
    assert page.page.locator("#proba-histogram rect.bin").count() == 20
    assert_offline(page)
    page.close()


def test_new_and_missing_manifest_keys(browser, tmp_path, models_dir):
    """A manifest with the keys being added (duration, throughput, library versions, the reason
    a run could not complete) shows them; an empty one shows n/a instead of failing."""
    write_input(float_rows(200, seed=8), tmp_path / "in.parquet")
    cli = score(tmp_path / "in.parquet", models_dir / "binary.joblib", tmp_path / "out")
    assert cli.code == 0, cli.stderr
    m = cli.manifest
    m["status"] = "failed"
    m["duration_s"] = 3723.4
    m["rows_per_s"] = 12345.678
    m["error"] = f"the run could not complete: worker lost {SCRIPT}"
    m["model"]["library_versions"] = {
        "scikit-learn": {"saved": "1.8.0", "running": "1.9.1"},
        "numpy": {"saved": "2.4.6", "running": "2.4.6"},
    }
    page = show(browser, tmp_path, m, None, [])
    assert page.text("#duration") == "1 h 02 min"
    assert page.text("#throughput") == "12,346"
    assert float(page.attr("#throughput", "data-value")) == 12345.678
    assert f"worker lost {SCRIPT}" in page.text(".attention")
    assert "scikit-learn saved with 1.8.0, running 1.9.1" in page.text(".attention")
    assert page.attr('tr[data-library="scikit-learn"]', "class") == "warn"
    assert page.attr('tr[data-library="numpy"]', "class") == ""
    assert "n/a" in page.text("#predictions")
    assert page.dialogs == [] and page.page.locator("script").count() == 0
    page.close()

    empty = tmp_path / "empty"
    empty.mkdir()
    page = show(browser, empty, {}, None, [])
    for ident in ("run-id", "rows-read", "error-rate", "duration", "throughput", "model-uri"):
        assert page.text("#" + ident) == "n/a", ident
    assert page.text("#status") == "N/A"
    assert_offline(page)
    page.close()
