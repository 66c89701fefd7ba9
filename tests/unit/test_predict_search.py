"""The scoring core's Predictor, without a pipeline: a row is rejected only when the model fails
on it alone, and the search for the failing rows costs a bounded number of model calls."""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import math
from types import SimpleNamespace

import joblib
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from scoring.predict import Predictor, _row, _typed_alike_alone
from tests.conftest import FEATURES, float_rows
from tests.custom_models import OddRefuser
from tests.helpers import make_spec


def predict(
    tmp_path, f0: np.ndarray, max_rows: int = 0, say_value: bool = True, numpy_ok: bool = False
) -> tuple[pa.Table | None, list[dict], int]:
    """One batch through the Predictor, f0 as given (OddRefuser refuses odd values): the
    predictions table, the rejected rows (as error records name them: stage, error, the row's
    index and the row), and how many times the model was called.

    `numpy_ok`: the model is given float matrices (as when the launcher saw it score one alike)
    rather than DataFrames.
    """
    n = len(f0)
    df = float_rows(n)
    df["f0"] = f0.astype(float)
    model = OddRefuser(max_rows, say_value).fit(df[FEATURES])
    joblib.dump(model, tmp_path / "odd.joblib")
    spec = make_spec(tmp_path / "odd.joblib", tmp_path / "*.csv", tmp_path / "o", batch_size=n)
    spec = dataclasses.replace(spec, facts=dataclasses.replace(spec.facts, numpy_ok=numpy_ok))
    batch = pa.RecordBatch.from_pandas(df, preserve_index=False)
    scored = Predictor(spec, model).score(batch, spec.lineage)
    rows = batch.to_pylist()
    errors = [
        {"stage": "predict", "error": message, "row_index": i, "record": rows[i]}
        for i, message in scored.failures
    ]
    assert not any("not tried row by row" in e["error"] for e in errors)
    assert scored.ok.sum() + len(errors) == n
    return scored.table, errors, getattr(model, "calls_", 0)


def check(table, errors, f0: np.ndarray, say_value: bool = True) -> None:
    """Exactly the rows with an odd f0 are rejected, each with the model's message for that row;
    the others are scored in their order with the sum of their features."""
    bad = np.mod(f0, 2) == 1
    assert sorted(e["row_index"] for e in errors) == np.flatnonzero(bad).tolist()
    for e in errors:
        assert e["stage"] == "predict"
        assert e["record"]["id"] == e["row_index"]
        value = f"f0 = {f0[e['row_index']]:g}" if say_value else "f0"
        assert e["error"] == f"ValueError: {value} is odd; this model refuses odd f0"
    good = np.flatnonzero(~bad)
    if not len(good):
        assert table is None
        return
    assert table["id"].to_pylist() == good.tolist()  # the input's order
    df = float_rows(len(f0))
    df["f0"] = f0.astype(float)
    expected = df[FEATURES].to_numpy()[good].sum(axis=1)
    np.testing.assert_allclose(table["prediction"].to_numpy(), expected, rtol=1e-12)


@pytest.mark.parametrize("numpy_ok", [False, True])
@pytest.mark.parametrize("say_value", [False, True])
def test_every_other_row_failing(tmp_path, say_value, numpy_ok):
    """Also when the model says the same for every row it refuses, which once rejected whole
    ranges, good rows included, "not tried row by row"."""
    n = 1000
    f0 = np.arange(n)
    table, errors, calls = predict(tmp_path, f0, say_value=say_value, numpy_ok=numpy_ok)
    check(table, errors, f0, say_value)
    assert len(errors) == 500 and table.num_rows == 500
    assert calls <= 1.2 * n, calls  # row by row where failures are dense, not 2 calls a row


def test_one_failing_row_in_a_thousand(tmp_path):
    n = 1000
    f0 = 2 * np.arange(n)
    f0[617] = 1235
    table, errors, calls = predict(tmp_path, f0)
    check(table, errors, f0)
    assert [e["row_index"] for e in errors] == [617]
    # the batch, then both halves of each failing range down to the row: 1 + 2 * 10
    assert calls <= 2 * math.ceil(math.log2(n)) + 1, calls


@pytest.mark.parametrize("numpy_ok", [False, True])
@pytest.mark.parametrize("say_value", [False, True])
def test_every_row_failing(tmp_path, say_value, numpy_ok):
    n = 1000
    f0 = 2 * np.arange(n) + 1
    table, errors, calls = predict(tmp_path, f0, say_value=say_value, numpy_ok=numpy_ok)
    check(table, errors, f0, say_value)
    assert len(errors) == n  # each tried alone, each with its own message
    assert calls <= 1.2 * n, calls


@pytest.mark.parametrize("numpy_ok", [False, True])
@pytest.mark.parametrize("density", [0.003, 0.03, 0.3, 0.7, 0.97])
def test_random_failures_are_found_exactly_within_two_calls_a_row(tmp_path, density, numpy_ok):
    n = 777
    rng = np.random.default_rng(int(density * 1000))
    f0 = 2 * np.arange(n) + (rng.random(n) < density)
    table, errors, calls = predict(tmp_path, f0, numpy_ok=numpy_ok)
    check(table, errors, f0)
    assert calls <= 2 * n - 1, calls
    k = int((np.mod(f0, 2) == 1).sum())
    if density < 0.01:  # rare failures: about 2 log2(n) calls each
        assert calls <= 1 + k * 2 * math.ceil(math.log2(n)), (calls, k)


def test_no_failure_costs_one_call(tmp_path):
    f0 = 2 * np.arange(300)
    table, errors, calls = predict(tmp_path, f0)
    check(table, errors, f0)
    assert errors == [] and calls == 1


def test_a_batch_failing_on_no_row_alone_is_scored_whole(tmp_path):
    """The model refuses batches of more than 100 rows: every row is scored, none rejected."""
    f0 = 2 * np.arange(1000)
    f0[[10, 500]] += 1  # and two rows it refuses alone
    table, errors, calls = predict(tmp_path, f0, max_rows=100)
    check(table, errors, f0)
    assert calls <= 2 * 1000 - 1, calls


def _features_of(batch: pa.RecordBatch, numpy_ok: bool):
    """Predictor._features of these rows, for a spec scoring all of their columns."""
    facts = SimpleNamespace(numpy_ok=numpy_ok)
    me = SimpleNamespace(
        _spec=SimpleNamespace(facts=facts, features=tuple(batch.schema.names)), _columns=None
    )
    return Predictor._features(me, batch)


def test_a_row_taken_from_its_ranges_features_is_what_the_row_alone_gives():
    """Row by row, each call takes a row of the range's features, built once: the same values,
    dtypes, index and layout as the features of the row alone."""
    n = 6
    days = [datetime.datetime(2020, 1, i + 1) for i in range(n)]
    batch = pa.RecordBatch.from_pydict(
        {
            "f": pa.array([1.5, None, float("nan"), 2.0, -0.0, 3.0]),
            "f32": pa.array(range(n), pa.float32()),
            "i": pa.array(range(n), pa.int64()),
            "u": pa.array([2**64 - 1, 2, 3, 4, 5, 6], pa.uint64()),
            "b": pa.array([True, False, True, True, False, True]),
            "s": pa.array(["a", None, "c", "d", "e", "f"]),
            "ls": pa.array(["a", "b", None, "d", "e", "f"], pa.large_string()),
            "d": pa.array(["x", "y", "x", None, "z", "x"]).dictionary_encode(),
            "ts": pa.array(days, pa.timestamp("us")),
            "tz": pa.array(days, pa.timestamp("ns", tz="Europe/Paris")),
            "dt": pa.array([d.date() if i != 2 else None for i, d in enumerate(days)]),
            "dec": pa.array([decimal.Decimal("1.10")] * n, pa.decimal128(5, 2)),
            "nul": pa.nulls(n),
        }
    )
    assert _typed_alike_alone(batch, batch.schema.names)
    whole = _features_of(batch, numpy_ok=False)
    for i in range(n):
        alone = _features_of(batch.slice(i, 1), numpy_ok=False)
        pd.testing.assert_frame_equal(_row(whole, i), alone, check_exact=True)
        assert type(_row(whole, i).index) is type(alone.index)
    # A null among integers or booleans makes the range's column float64 or object, unlike a
    # row without one: such a range builds each row's features from the row.
    nulls = pa.RecordBatch.from_pydict(
        {"i": pa.array([1, None, 3]), "b": pa.array([True, False, None])}
    )
    assert not _typed_alike_alone(nulls, ["i"]) and not _typed_alike_alone(nulls, ["b"])

    floats = pa.RecordBatch.from_pydict({f"x{k}": np.arange(7.0) * (k + 1) for k in range(3)})
    whole = _features_of(floats, numpy_ok=True)
    for i in range(7):
        alone, row = _features_of(floats.slice(i, 1), numpy_ok=True), _row(whole, i)
        assert alone.shape == row.shape and alone.dtype == row.dtype
        assert np.array_equal(alone, row)
        assert alone.flags.c_contiguous == row.flags.c_contiguous
        assert alone.flags.f_contiguous == row.flags.f_contiguous
