"""The report rendered from fixed and generated manifests, read in a real browser (Debian's
Chromium)."""

from __future__ import annotations

import gzip
import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.report import MAX_FILES, PSI_WARNING, STAGES, render_report
from tests.conftest import FEATURES, float_rows, run_cli, write_input
from tests.helpers import SCRIPT, assert_headline, assert_offline, assert_png, opened

EVIL_NAME = '"><img src=x onerror=alert(2)>.csv'


def group_errors(errors: list[dict]) -> list[dict]:
    """The errors output grouped as the run groups it (stage and reason with its values blanked),
    most frequent first."""
    from transforms.errors import reason_of

    counts = Counter((e["stage"], reason_of(e)) for e in errors)
    return [
        {"stage": stage, "reason": reason, "count": n}
        for (stage, reason), n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    ]


@pytest.fixture(scope="module")
def dirty_run(tmp_path_factory, models_dir):
    """A failed run over 15 CSV files: bad lines (read and validate errors, one holding a script
    tag), a file named like an HTML attack, an unreadable file, and drift in f0."""
    from models.baseline import baseline_from_frame

    tmp = tmp_path_factory.mktemp("dirty")
    model = tmp / "binary.joblib"
    shutil.copy(models_dir / "binary.joblib", model)
    baseline = baseline_from_frame(float_rows(5000, seed=1)[FEATURES], FEATURES)
    (tmp / "binary.joblib.drift.json").write_text(json.dumps(baseline))

    def shifted(n: int, seed: int, start_id: int):
        df = float_rows(n, seed=seed, start_id=start_id)
        df["f0"] += 0.8  # tonight's f0 is not the training f0
        return df

    inp = tmp / "in"
    inp.mkdir()
    lines = shifted(2000, 0, 0).to_csv(index=False).splitlines()
    lines[11] = "10,1.0,2.0"  # too few fields
    lines[21] = f"20,0.1,0.2,{SCRIPT},0.3,7"  # too many fields, and a script tag
    lines[31] = f"30,{SCRIPT},0.1,0.2,0.3"  # text in f0
    for i in range(41, 51):  # inf in f1
        lines[i] = f"{i - 1},0.1,inf,0.2,0.3"
    lines[61] = "60,0.1,0.2,,0.3"  # f2 missing
    (inp / "orders-eu.csv").write_text("\n".join(lines) + "\n")
    write_input(shifted(300, 1, 10_000), inp / EVIL_NAME)
    for k in range(12):
        write_input(shifted(100, 10 + k, 20_000 + 100 * k), inp / f"orders-{k:05d}.csv")
    truncated = gzip.compress(shifted(100, 2, 90_000).to_csv(index=False).encode())[:80]
    (inp / "orders-late.csv.gz").write_bytes(truncated)
    cli = run_cli(
        "--input",
        inp / "*",
        "--input_format",
        "csv",
        "--model",
        model,
        "--output",
        tmp / "out",
        "--max_error_rate",
        "0.001",
    )
    assert cli.code == 1, cli.stderr
    return cli


def test_failed_run_shows_its_counts_files_errors_and_drift(browser, dirty_run, tmp_path):
    m, errors = dirty_run.manifest, dirty_run.errors()
    assert {e["stage"] for e in errors} == {"read", "validate"}
    groups = group_errors(errors)
    predictions = dirty_run.predictions()
    page = opened(browser, dirty_run)

    assert_headline(page, m)
    assert page.text("#status") == "FAILED"
    attention = page.text(".attention")
    assert "1 input file could not be read" in attention
    assert "over the max allowed" in attention and "f0" in attention

    # Files: the unreadable one first and highlighted, then the most rejected; the rest counted.
    rows = page.all("#files tbody tr")
    assert len(rows) == MAX_FILES
    more = len(m["inputs"]) - MAX_FILES
    assert int(page.attr("#files-more", "data-count")) == more
    assert f"and {more} more files" in page.text("#files-more")
    by_path = {i["path"]: i for i in m["inputs"]}
    assert rows[0].get_attribute("data-path") == m["files_failed"][0]
    assert rows[0].get_attribute("class") == "failed"
    assert rows[0].evaluate("r => getComputedStyle(r.cells[0]).backgroundColor") != (
        rows[2].evaluate("r => getComputedStyle(r.cells[0]).backgroundColor")
    )
    assert rows[1].get_attribute("data-path").endswith("orders-eu.csv")
    for row in rows:
        entry = by_path[row.get_attribute("data-path")]
        for col in ("rows_read", "rows_predicted", "rows_failed"):
            shown = row.locator(f'[data-col="{col}"]').inner_text()
            assert int(shown.replace(",", "")) == entry[col], (entry["path"], col)
    evil = [r for r in rows if r.get_attribute("data-path").endswith(EVIL_NAME)]
    assert len(evil) == 1 and evil[0].locator("td.path").inner_text().endswith(EVIL_NAME)

    # Errors: each reason with its stage and count, examples as the input held them.
    shown = page.all(".error-group")
    assert len(shown) == len(groups)
    for el, g in zip(shown, groups):
        assert el.get_attribute("data-stage") == g["stage"]
        assert int(el.locator(".count strong").inner_text().replace(",", "")) == g["count"]
        assert el.locator(".reason").inner_text() == g["reason"]
        assert el.locator(".example").count() == min(g["count"], 3)
    assert shown[0].get_attribute("data-stage") == "validate" and groups[0]["count"] == 10
    records = [r.inner_text() for r in page.all("pre.record")]
    assert "10,1.0,2.0" in records  # a read error's raw line
    assert any(SCRIPT in r for r in records)
    assert any(f"20,0.1,0.2,{SCRIPT},0.3,7" == r for r in records)
    assert "line 12" in page.text("#errors")

    # Nothing from the data ran or loaded: the script and the image are text.
    assert page.page.locator("script").count() == 0
    assert page.page.locator("img").count() == 0
    assert page.dialogs == []
    assert_offline(page)

    # Drift: every feature's PSI, f0 highlighted.
    for feature, psi in m["drift"].items():
        row = f'#drift tr[data-feature="{feature}"]'
        assert page.number(f"{row} td.num") == pytest.approx(psi, abs=5e-4)
        assert (page.attr(row, "class") == "drifted") == (psi > PSI_WARNING), feature
    assert m["drift"]["f0"] > PSI_WARNING

    # Predictions: class shares and the probability histogram of the predicted rows.
    for label, count in Counter(predictions.prediction).items():
        assert page.number(f'#class-shares tr[data-class="{label}"] td.num') == count
    bins = [int(b.get_attribute("data-count")) for b in page.all("#proba-histogram rect.bin")]
    expected = np.bincount(np.minimum(predictions.proba_1 * 20, 19).astype(int), minlength=20)
    assert bins == expected.tolist()
    assert sum(bins) == m["counts"]["rows_predicted"]

    assert_png(page.screenshot(tmp_path / "report.png"))
    page.close()


def test_constants_agree_with_the_pipeline():
    from transforms.errors import STAGES as PIPELINE_STAGES
    from transforms.profile import PSI_WARNING as PIPELINE_PSI_WARNING

    assert STAGES == PIPELINE_STAGES and PSI_WARNING == PIPELINE_PSI_WARNING


def test_report_module_imports_only_the_standard_library():
    """pipeline.report's modules, and pipeline.history (a night in brief), which it imports."""
    import ast
    import sys

    import pipeline.history
    import pipeline.report

    package = Path(pipeline.report.__file__).parent
    own = {"pipeline.report", *(f"pipeline.report.{p.stem}" for p in package.glob("*.py"))}
    files = [(p, own | {"pipeline.history"}) for p in sorted(package.glob("*.py"))]
    assert len(files) > 1  # the package's modules, not its __init__ alone
    for path, ours in [*files, (Path(pipeline.history.__file__), set())]:
        module = path
        tree = ast.parse(path.read_text())
        imported = {
            n.module if isinstance(n, ast.ImportFrom) else a.name
            for n in ast.walk(tree)
            if isinstance(n, ast.Import | ast.ImportFrom)
            for a in (n.names if isinstance(n, ast.Import) else [n])
        }
        others = {name.split(".")[0] for name in imported - ours}
        assert others <= set(sys.stdlib_module_names) | {"__future__"}, (module, imported)


# Any JSON value, with the attacks a file name or a record may hold among the strings.
ATTACKS = [SCRIPT, EVIL_NAME, "</style><script>alert(3)</script>", "\ud800", "x\x00y"]


json_value = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**400), max_value=10**400)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | st.sampled_from(ATTACKS),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=6) | st.sampled_from(ATTACKS), inner, max_size=4)
    ),
    max_leaves=12,
)


def shaped(**fields) -> st.SearchStrategy:
    """A dict with the manifest's shape where any key may be missing and any leaf be anything."""
    return st.fixed_dictionaries({}, optional=fields) | json_value


counts = shaped(
    rows_read=json_value,
    rows_failed=json_value,
    rows_failed_by_stage=st.dictionaries(st.sampled_from([*STAGES, *ATTACKS]), json_value),
)


any_file = shaped(
    path=json_value, rows_read=json_value, rows_failed=json_value, failed=st.booleans()
)


manifests = shaped(
    status=st.sampled_from(["succeeded", "failed", *ATTACKS]) | json_value,
    run_id=json_value,
    started_at=st.sampled_from(["2026-11-26T01:02:03+00:00", "2026-11-26T01:02:03"]) | json_value,
    finished_at=st.sampled_from(["2026-11-26T02:02:03+00:00"]) | json_value,
    counts=counts,
    error_rate=json_value,
    max_error_rate=json_value,
    inputs=st.lists(any_file, max_size=25) | json_value,
    files_failed=st.lists(json_value, max_size=3) | json_value,
    drift=st.dictionaries(st.text(max_size=5) | st.sampled_from(ATTACKS), json_value) | json_value,
    model=shaped(
        uri=json_value,
        library_versions=st.dictionaries(
            st.sampled_from(ATTACKS), shaped(saved=json_value, running=json_value)
        ),
    ),
    duration_s=json_value,
    rows_per_s=json_value,
    error=json_value,
    features=json_value,
    bigquery=shaped(table=json_value, rows_loaded=json_value),
    failed_checks=st.lists(shaped(check=json_value, message=json_value), max_size=3) | json_value,
    checks=shaped(
        min_rows=json_value,
        max_rows_change=json_value,
        skipped=st.lists(shaped(check=json_value, message=json_value), max_size=2),
    ),
    prediction_summary=shaped(kind=st.sampled_from(["positive_share", "mean"]), value=json_value),
    history=shaped(
        source=json_value,
        nights=st.lists(
            shaped(
                run_date=json_value,
                status=json_value,
                rows_read=json_value,
                error_rate=json_value,
                top_drift=shaped(feature=json_value, psi=json_value),
                prediction=shaped(kind=json_value, value=json_value, **{"class": json_value}),
                model_version=json_value,
                quality=shaped(metrics=json_value, rows_labelled=json_value),
            ),
            max_size=4,
        ),
    ),
    output=json_value,
    rerun_command=json_value,
    outputs=shaped(predictions=json_value, errors=json_value),
)


profiles = st.none() | shaped(
    rows=json_value,
    class_counts=st.dictionaries(st.sampled_from(ATTACKS) | st.text(max_size=3), json_value),
    proba_histogram=shaped(column=json_value, counts=st.lists(json_value, max_size=25)),
    prediction_histogram=shaped(
        edges=st.lists(st.floats(-1e6, 1e6), max_size=6), counts=st.lists(json_value, max_size=5)
    ),
)


groups = st.lists(
    shaped(
        stage=json_value,
        reason=json_value,
        count=json_value,
        examples=st.lists(
            shaped(record=json_value, source=json_value, line=json_value, truncated=json_value),
            max_size=4,
        ),
    ),
    max_size=12,
)


@settings(max_examples=300, deadline=None)
@given(manifest=manifests, profile=profiles, error_groups=groups)
def test_any_manifest_renders_and_nothing_from_it_is_markup(manifest, profile, error_groups):
    page = render_report(manifest, profile, error_groups)
    page.encode("utf-8")  # writable as report.html, lone surrogates included
    assert "<script" not in page and "<img" not in page and "alert(3)</script>" not in page
    assert page.count("<style>") == 1 and page.count("</style>") == 1
