"""Property: whatever garbage is mixed into valid CSV or JSON Lines (text, random bytes in any
encoding, huge records), scored by a model that may return NaN, the run ends with exit 0 or 1,
never a traceback; every record is accounted for, per file too; every key is written exactly as
the input spells it (zero-padded ids stay zero-padded); no prediction is NaN."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import uuid

import joblib
import pandas as pd
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from pipeline.run import main
from tests.conftest import FEATURES, float_rows

pytestmark = pytest.mark.slow

texts = st.one_of(
    st.text(max_size=60).map(lambda t: t.replace("\r", "").replace("\n", "")),
    st.lists(
        st.one_of(st.floats(allow_nan=True), st.text(max_size=5), st.integers()), max_size=7
    ).map(lambda xs: ",".join(map(str, xs))),
    st.dictionaries(
        st.sampled_from(["id", "f0", "f1", "f2", "f3", "zz"]),
        st.one_of(st.floats(), st.text(max_size=4), st.none(), st.booleans()),
    ).map(json.dumps),
)
garbage_line = st.one_of(
    texts.map(lambda t: t.encode("utf-8")),
    texts.map(lambda t: t.encode("latin-1", errors="replace")),
    texts.map(lambda t: t.encode("cp1252", errors="replace")),
    st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"").replace(b"\r", b"")),
    st.just(b"x" * 70_000),  # a record longer than an error line may be
)


@pytest.fixture(scope="module")
def nan_model(tmp_path_factory):
    from tests.custom_models import NanRegressor

    path = tmp_path_factory.mktemp("nan") / "nan.joblib"
    joblib.dump(NanRegressor().fit(float_rows(50)[FEATURES]), path)
    return path


def input_ids(data: bytes, ext: str) -> set[str]:
    """Every value the input spells in its id column (first CSV field, or JSON "id"). Lines end
    at \n, \r\n or a bare \r, as the pipeline reads them (newline="" lets csv see all three)."""
    text = data.decode("utf-8", errors="replace")
    if ext == "csv":
        return {row[0] for row in csv.reader(io.StringIO(text, newline="")) if row}
    ids = set()
    for line in text.splitlines():
        with contextlib.suppress(ValueError, AttributeError):
            value = json.loads(line).get("id")
            ids.add(value if isinstance(value, str) else json.dumps(value))
    return ids


@settings(
    # Whole runs (of up to three files each), 8 by default (the suite's time budget); a deeper
    # search: GARBAGE_EXAMPLES=300.
    max_examples=int(os.environ.get("GARBAGE_EXAMPLES", "8")),
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@example(ext="csv", nan=False, files=[[(0, b"\r,0.0")]])  # a bare CR: a line end
@example(ext="jsonl", nan=False, files=[[(0, b'{"id": "1", "zz": 0.0}')], [(0, b"")]])
@given(
    ext=st.sampled_from(["csv", "jsonl"]),
    nan=st.booleans(),
    files=st.lists(
        st.lists(st.tuples(st.integers(0, 60), garbage_line), min_size=1, max_size=6),
        min_size=1,
        max_size=3,
    ),
)
def test_garbage_never_crashes_and_counts_reconcile(
    tmp_path, models_dir, nan_model, ext, nan, files
):
    run_dir = tmp_path / uuid.uuid4().hex
    (run_dir / "in").mkdir(parents=True)
    spelled: set[str] = set()
    for n, garbage in enumerate(files):
        df = float_rows(60, seed=n, start_id=n * 60)
        df["id"] = [f"{i:05d}" for i in df.id]  # keys with leading zeros
        if ext == "csv":
            header, *lines = df.to_csv(index=False).encode().splitlines()
        else:
            header, lines = None, df.to_json(orient="records", lines=True).encode().splitlines()
        for position, line in sorted(garbage, reverse=True, key=lambda g: g[0]):
            lines.insert(position, line)
        data = b"\n".join(([header] if header else []) + lines) + b"\n"
        (run_dir / "in" / f"{n}.{ext}").write_bytes(data)
        spelled |= input_ids(data, ext)

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(
            [
                "--input",
                str(run_dir / "in" / f"*.{ext}"),
                "--model",
                str(nan_model if nan else models_dir / "binary.joblib"),
                "--output",
                str(run_dir / "out"),
                "--max_error_rate",
                "1",
            ]
        )
    assert code in (0, 1), err.getvalue()
    assert "Traceback" not in err.getvalue() and "Exception ignored" not in err.getvalue()
    manifest = json.loads((run_dir / "out" / "manifest.json").read_text())
    c = manifest["counts"]
    assert c["rows_read"] == c["rows_predicted"] + c["rows_failed"]
    assert len(manifest["inputs"]) == len(files)
    for f in manifest["inputs"]:
        assert f["rows_read"] == f["rows_predicted"] + f["rows_failed"]
    errors = [
        json.loads(line)
        for f in (run_dir / "out" / "errors").glob("*.jsonl")
        for line in f.read_text().split("\n")[:-1]
    ]
    # a record is a line; a file lacking a column the first file decided is one line of `rows`
    assert sum(e.get("rows", 1) for e in errors) == c["rows_failed"]
    parts = sorted((run_dir / "out" / "predictions").glob("*.parquet"))
    if not parts:
        return
    preds = pd.concat([pq.read_table(f).to_pandas() for f in parts])
    assert len(preds) == c["rows_predicted"]
    assert str(pq.read_schema(parts[0]).field("id").type) == "string"
    assert set(preds.id) <= spelled  # each key as the input spells it
    assert all(math.isfinite(v) for v in preds.prediction.astype(float))
