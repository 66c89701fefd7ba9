"""Parity: generated rows, good and bad, scored as a JSON Lines night by the batch job and by the
running service give the same answer, row by row: the same keys, labels and reasons, the same
probabilities and contributions, and the same rejections with the same messages.

Probabilities and contributions are compared to a relative 1e-12: a BLAS matrix product (a
linear model's) may differ in its last bit with the number of rows in the call, in the batch job
itself as much as between it and the service (docs: online serving). Everything else is exact.

PARITY_EXAMPLES=1000 ./run_tests.sh tests/service/test_parity.py runs more examples (default 4
per model).
"""

from __future__ import annotations

import concurrent.futures
import json
import math
import os
import tempfile
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from models import demo
from scoring.rows import json_value
from tests.conftest import run_cli
from tests.custom_models import RefuseValue
from tests.service.conftest import running

pytestmark = pytest.mark.service
EXAMPLES = int(os.environ.get("PARITY_EXAMPLES", "4"))
LINEAGE = {"run_id", "scored_at", "run_date"}  # the service's own run and time
KEYS = {"k"}

keys = st.one_of(
    st.integers(-(2**70), 2**70),
    st.integers(-5, 5),
    st.text(max_size=4),
    st.none(),
    st.booleans(),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
)


def numbers(special: list) -> st.SearchStrategy:
    return st.one_of(
        st.floats(-1e6, 1e6),
        st.floats(allow_nan=True, allow_infinity=True),
        st.integers(-(2**60), 2**60),
        st.sampled_from(["12", "1e3", " 7 ", "abc", "", "1,5", "NaN", "0x10", *special]),
        st.none(),
        st.booleans(),
    )


def categories(known: list[str]) -> st.SearchStrategy:
    return st.one_of(st.sampled_from([*known, "purple", "", "RED"]), st.none(), st.integers(0, 3))


def rows_of(fields: dict[str, st.SearchStrategy], first: dict) -> st.SearchStrategy:
    """A first row that holds every field (so the night decides every column), then rows that
    may lack any field."""
    row = st.fixed_dictionaries({}, optional={"k": keys, **fields})
    return st.lists(row, min_size=1, max_size=60).map(lambda rows: [first, *rows])


@pytest.fixture(scope="module")
def refusing_model(tmp_path_factory) -> Path:
    """Scaling, one-hot (unknown categories rejected), a step refusing x == 13, logistic."""
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    rng = np.random.default_rng(0)
    df = pd.DataFrame(
        {
            "x": rng.normal(size=800) * 10,
            "y": rng.normal(size=800),
            "color": rng.choice(["red", "green", "blue"], 800),
        }
    )
    prep = ColumnTransformer(
        [("num", StandardScaler(), ["x", "y"]), ("cat", OneHotEncoder(), ["color"])]
    )
    model = Pipeline(
        [("refuse", RefuseValue("x", 13.0)), ("prep", prep), ("clf", LogisticRegression())]
    )
    path = tmp_path_factory.mktemp("parity") / "refusing.joblib"
    joblib.dump(model.fit(df, (df.x + 3 * df.y > 0).astype(int)), path)
    return path


@pytest.fixture(scope="module")
def demo_model(tmp_path_factory) -> Path:
    """The demo churn Pipeline with its drift baseline (--explain's linear reference)."""
    out = tmp_path_factory.mktemp("parity-demo")
    model, _ = demo.write_demo(str(out), rows=10, files=1)
    return Path(model)


def _night(tmp: Path, rows: list[dict], model: Path, *flags: str) -> Path:
    with_n = [{"n": i, **row} for i, row in enumerate(rows)]
    (tmp / "in").mkdir()
    (tmp / "in" / "night.jsonl").write_text("".join(json.dumps(r) + "\n" for r in with_n))
    out = tmp / "out"
    cli = run_cli(
        "--input", tmp / "in" / "night.jsonl", "--model", model, "--output", out,
        "--max_error_rate", "1", *flags,
    )  # fmt: skip
    assert cli.code == 0, cli.stderr
    return out


def _batch(out: Path) -> tuple[dict, dict]:
    """The night's prediction rows and rejections, by the row number n."""
    files = sorted((out / "predictions").glob("*.parquet"))
    scored = {}
    for row in pa.concat_tables([pq.read_table(f) for f in files]).to_pylist():
        scored[row["n"]] = {k: json_value(v) for k, v in row.items()}
    rejected = {}
    for f in sorted((out / "errors").glob("*.jsonl")):
        for line in f.read_text().splitlines():
            e = json.loads(line)
            rejected[e["record"]["n"]] = (e["stage"], e["error"])
    return scored, rejected


def _online(service, rows: list[dict], cuts: list[int]) -> tuple[dict, dict]:
    """The same rows sent as several concurrent requests (cut where `cuts` say): the answers'
    rows and rejections, by the row number n."""
    with_n = [{"n": i, **row} for i, row in enumerate(rows)]
    bounds = sorted({0, len(with_n), *(c % (len(with_n) + 1) for c in cuts)})
    parts = [with_n[a:b] for a, b in zip(bounds, bounds[1:]) if b > a]

    def send(part):
        body = json.dumps({"instances": part})  # NaN and Infinity as JSON Lines spell them
        res = service.client.post("/predict", content=body)
        assert res.status_code == 200, res.text
        return part, res.json()

    scored, rejected = {}, {}
    with concurrent.futures.ThreadPoolExecutor(len(parts)) as pool:
        for part, answer in pool.map(send, parts):
            assert len(answer["predictions"]) == len(part)
            for row, out in zip(part, answer["predictions"]):
                if out is not None:
                    scored[row["n"]] = out
            for e in answer["errors"]:
                n = part[e["index"]]["n"]
                assert n not in scored
                rejected[n] = (e["stage"], e["error"])
    return scored, rejected


def _same(batch: tuple[dict, dict], online: tuple[dict, dict], keys_typed: bool) -> None:
    scored, rejected = batch
    got_scored, got_rejected = online
    if not keys_typed:  # from flags a key is echoed as sent: the night's key check is not made
        rejected = dict(rejected)
        for n, (stage, error) in list(rejected.items()):
            rest = [part for part in error.split("; ") if not part.startswith("key k:")]
            if not rest:
                del rejected[n]
                got_scored.pop(n, None)
            else:
                rejected[n] = (stage, "; ".join(rest))
    assert got_rejected == rejected
    assert sorted(got_scored) == sorted(scored)
    for n, row in scored.items():
        got = got_scored[n]
        if keys_typed:
            assert list(got) == list(row), n
        for name, value in row.items():
            if name in LINEAGE or (not keys_typed and name in KEYS):
                continue  # from flags, keys are echoed as sent (a night types a mixed key)
            if name.startswith(("proba_", "contribution_")) and value is not None:
                assert math.isclose(got[name], value, rel_tol=1e-12, abs_tol=1e-300), (n, name)
            else:
                assert got[name] == value, (n, name, got[name], value)


_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],  # a shrink costs a night per step
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@_SETTINGS
@given(
    rows=rows_of(
        {"x": numbers([13, 13.0, "13"]), "y": numbers([]), "color": categories(["red", "blue"])},
        {"k": 1, "x": 1.5, "y": 0.5, "color": "red"},
    ),
    cuts=st.lists(st.integers(0, 100), max_size=3),
)
def test_refusals_unknown_categories_and_model_errors_online_as_in_batch(
    refusing_model, tmp_path, rows, cuts
):
    tmp = Path(tempfile.mkdtemp(dir=tmp_path))
    out = _night(tmp, rows, refusing_model)
    with running("--like", out) as service:
        _same(_batch(out), _online(service, rows, cuts), keys_typed=True)


@_SETTINGS
@given(
    rows=rows_of(
        {
            "tenure_months": numbers([]),
            "monthly_spend": numbers([]),
            "support_calls": numbers([]),
            "plan": categories(demo.PLANS),
            "region": categories(demo.REGIONS),
        },
        {
            "k": 7,
            "tenure_months": 12,
            "monthly_spend": 50.0,
            "support_calls": 1,
            "plan": "pro",
            "region": "east",
        },
    ),
    cuts=st.lists(st.integers(0, 100), max_size=3),
)
def test_reasons_and_scored_unknown_categories_online_as_in_batch(demo_model, tmp_path, rows, cuts):
    """--explain 2 on the demo Pipeline (its one-hot takes unknown categories), served as the
    night did (--like) and from the same flags (keys then echoed as sent)."""
    tmp = Path(tempfile.mkdtemp(dir=tmp_path))
    out = _night(tmp, rows, demo_model, "--explain", "2")
    batch = _batch(out)
    with running("--like", out) as service:
        _same(batch, _online(service, rows, cuts), keys_typed=True)
    with running("--model", demo_model, "--explain", "2") as service:
        _same(batch, _online(service, rows, cuts), keys_typed=False)


def test_an_infinite_value_with_explain_is_that_rows_rejection_not_a_refused_night(
    demo_model, tmp_path
):
    """Found by the parity property at 1,000 examples: the launcher's --explain check probed
    the model with the sample's infinite value and refused the whole night (exit 2)."""
    first = {"k": 7, "tenure_months": 12, "monthly_spend": 50.0, "support_calls": 1,
             "plan": "pro", "region": "east"}  # fmt: skip
    out = _night(
        tmp_path, [first, {**first, "monthly_spend": math.inf}], demo_model, "--explain", "2"
    )
    scored, rejected = _batch(out)
    assert list(scored) == [0] and scored[0]["reason_1"] is not None
    assert rejected == {1: ("validate", "monthly_spend: inf is not a finite number")}
