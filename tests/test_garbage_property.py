"""Property: whatever garbage is mixed into valid CSV or JSON Lines, the run ends with exit 0 or 1,
never a traceback, and every record is accounted for."""

from __future__ import annotations

import contextlib
import io
import json
import os
import uuid

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from pipeline.run import main
from tests.conftest import float_rows

pytestmark = pytest.mark.slow

garbage_line = st.one_of(
    st.text(max_size=60).map(lambda t: t.replace("\r", "")),
    st.lists(
        st.one_of(st.floats(allow_nan=True), st.text(max_size=5), st.integers()), max_size=7
    ).map(lambda xs: ",".join(map(str, xs))),
    st.dictionaries(
        st.sampled_from(["id", "f0", "f1", "f2", "f3", "zz"]),
        st.one_of(st.floats(), st.text(max_size=4), st.none(), st.booleans()),
    ).map(json.dumps),
)


@settings(
    max_examples=int(os.environ.get("GARBAGE_EXAMPLES", "30")),
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    ext=st.sampled_from(["csv", "jsonl"]),
    garbage=st.lists(st.tuples(st.integers(0, 60), garbage_line), min_size=1, max_size=6),
)
def test_garbage_never_crashes_and_counts_reconcile(tmp_path, models_dir, ext, garbage):
    df = float_rows(60)
    if ext == "csv":
        header, *lines = df.to_csv(index=False).splitlines()
    else:
        header, lines = None, df.to_json(orient="records", lines=True).splitlines()
    for position, line in sorted(garbage, reverse=True):
        lines.insert(position, line)
    run_dir = tmp_path / uuid.uuid4().hex
    run_dir.mkdir()
    path = run_dir / f"in.{ext}"
    path.write_text("\n".join(([header] if header else []) + lines) + "\n")

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(
            [
                "--input",
                str(path),
                "--model",
                str(models_dir / "binary.joblib"),
                "--output",
                str(run_dir / "out"),
                "--max_error_rate",
                "0.5",
            ]
        )
    assert code in (0, 1), err.getvalue()
    assert "Traceback" not in err.getvalue()
    manifest = json.loads((run_dir / "out" / "manifest.json").read_text())
    c = manifest["counts"]
    assert c["rows_read"] == c["rows_predicted"] + c["rows_failed"]
    assert c["rows_predicted"] <= 60 + len(garbage)
    errors = [
        line
        for f in (run_dir / "out" / "errors").glob("*.jsonl")
        for line in f.read_text().split("\n")[:-1]
    ]
    assert len(errors) == c["rows_failed"]
