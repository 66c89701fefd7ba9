"""The transforms on their own, in TestPipeline with assert_that, and their helpers."""

from __future__ import annotations

import json

import apache_beam as beam
import joblib
import pyarrow as pa
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.utils import shared

from models import loading
from models.introspect import inspect
from tests.conftest import FEATURES, float_rows, write_input
from transforms.errors import MAX_RECORD_BYTES, to_json_line
from transforms.predict import PredictBatches
from transforms.read import ReadBatches
from transforms.spec import ERRORS, ScoringSpec
from transforms.validate import ValidateBatches, cast_column


def make_spec(model_path, fmt="csv", allow_missing=frozenset()):
    import dataclasses

    ref = loading.resolve(str(model_path))
    facts = dataclasses.replace(inspect(loading.load(ref)), missing_ok=allow_missing)
    columns = pa.schema([("id", pa.int64())] + [(f, pa.float64()) for f in FEATURES])
    return ScoringSpec(
        run_id="test-run",
        input_format=fmt,
        features=tuple(FEATURES),
        keys=("id",),
        columns=columns,
        model=ref,
        facts=facts,
        batch_size=64,
    )


def test_read_validate_predict_in_a_test_pipeline(tmp_path, models_dir):
    df = float_rows(200)
    lines = df.to_csv(index=False).splitlines()
    lines[8] = "7,1,2"  # read error
    lines[9] = "8,oops,1,2,3"  # validate error
    path = tmp_path / "in.csv"
    path.write_text("\n".join(lines) + "\n")
    spec = make_spec(models_dir / "binary.joblib")
    model = joblib.load(models_dir / "binary.joblib")
    good = df[~df.id.isin([7, 8])]
    expected = list(zip(good.id.tolist(), model.predict(good[FEATURES]).tolist()))

    with TestPipeline() as p:
        read = (
            p
            | beam.Create([str(path)])
            | "Read" >> beam.ParDo(ReadBatches(spec)).with_outputs(ERRORS, main="batches")
        )
        valid = read.batches | "Validate" >> beam.ParDo(ValidateBatches(spec)).with_outputs(
            ERRORS, main="batches"
        )
        scored = valid.batches | "Predict" >> beam.ParDo(
            PredictBatches(spec, shared.Shared())
        ).with_outputs(ERRORS, main="predictions")
        rows = scored.predictions | beam.FlatMap(
            lambda t: zip(t.column("id").to_pylist(), t.column("prediction").to_pylist())
        )
        assert_that(rows, equal_to(expected), label="Predictions")
        assert_that(
            read[ERRORS] | "ReadStage" >> beam.Map(lambda e: (e["stage"], e["record"])),
            equal_to([("read", "7,1,2")]),
            label="ReadErrors",
        )
        assert_that(
            valid[ERRORS] | "ValStage" >> beam.Map(lambda e: (e["stage"], e["record"]["id"])),
            equal_to([("validate", "8")]),
            label="ValidateErrors",
        )


def test_batches_stay_within_batch_size(tmp_path, models_dir):
    write_input(float_rows(1000), tmp_path / "in.parquet")
    spec = make_spec(models_dir / "binary.joblib", fmt="parquet")
    with TestPipeline() as p:
        read = (
            p
            | beam.Create([str(tmp_path / "in.parquet")])
            | beam.ParDo(ReadBatches(spec)).with_outputs(ERRORS, main="batches")
        )
        sizes = read.batches | beam.Map(lambda c: c.batch.num_rows)
        assert_that(
            sizes | beam.combiners.ToList() | beam.Map(lambda s: (max(s), sum(s))),
            equal_to([(64, 1000)]),
        )


def test_cast_column_isolates_bad_values():
    values, bad = cast_column(pa.array(["1.5", "abc", None, "2"]), pa.float64())
    assert values.to_pylist() == [1.5, None, None, 2.0]
    assert bad.tolist() == [False, True, False, False]
    ints, bad = cast_column(pa.array([1, 2, None]), pa.float64())
    assert ints.to_pylist() == [1.0, 2.0, None] and bad is None
    flags, bad = cast_column(pa.array([True, False]), pa.float64())
    assert flags.to_pylist() == [1.0, 0.0] and bad is None


def test_error_line_never_exceeds_64_kib():
    rec = {"stage": "read", "error": "e", "record": "\x01" * 200_000, "source": "s", "run_id": "r"}
    line = to_json_line(rec)
    assert len(line.encode()) <= MAX_RECORD_BYTES
    back = json.loads(line)
    assert back["truncated"] is True and back["record"].startswith("\x01")
    short = json.loads(to_json_line({"record": {"x": float("nan")}, "error": "e"}))
    assert short == {"record": {"x": "nan"}, "error": "e"}


def test_model_facts(models_dir):
    binary = inspect(joblib.load(models_dir / "binary.joblib"))
    assert binary.features == tuple(FEATURES) and binary.classes == (0, 1)
    assert binary.prediction_type == pa.int64()
    multi = inspect(joblib.load(models_dir / "multiclass.pkl"))
    assert multi.proba_columns == ("proba_high", "proba_low", "proba_mid")
    assert multi.prediction_type == pa.string()
    reg = inspect(joblib.load(models_dir / "regressor.joblib"))
    assert reg.classes is None and reg.prediction_type == pa.float64()
    cat = inspect(joblib.load(models_dir / "categorical.joblib"))
    assert cat.categorical == {"plan": pa.string(), "region": pa.string()}


def test_bin_counts_match_searchsorted_and_skip_nan():
    import numpy as np

    from transforms.profile import _bin_counts, psi

    rng = np.random.default_rng(0)
    values = rng.normal(size=10_000)
    values[::97] = np.nan
    edges = np.quantile(values[~np.isnan(values)], np.linspace(0, 1, 11)[1:-1])
    expected = np.bincount(
        np.searchsorted(edges, values[~np.isnan(values)], side="right"), minlength=len(edges) + 1
    )
    assert _bin_counts(values, edges).tolist() == expected.tolist()
    assert psi([0.5, 0.5], [50, 50]) == 0.0
    assert psi([0.5, 0.5], [90, 10]) > 0.2


@pytest.mark.parametrize("block", [3, 7, 64, 1 << 22])
@pytest.mark.parametrize("ending", ["\n", "\r\n"])
def test_line_locator_finds_each_rejected_row_across_block_boundaries(
    tmp_path, monkeypatch, block, ending
):
    from transforms.read import _LineLocator

    lines = ["id,a,b"] + [f"{i},{i}.5,x{i}" for i in range(200)]
    lines[17] = "17,1"  # rejected rows, some with the same text as another
    lines[18] = '18,"two\nlines",z'  # a valid record over two physical lines
    lines[90] = "17,1"
    lines[150] = "7,7.5,x7,extra"
    lines[199] = "7,7"
    path = tmp_path / "in.csv"
    path.write_text(ending.join(lines) + ending, newline="")
    monkeypatch.setattr(_LineLocator, "_BLOCK", block)
    # The texts as pyarrow's streaming reader hands them to the invalid-row handler.
    import pyarrow.csv as pacsv

    texts: list[str] = []
    options = pacsv.ParseOptions(
        invalid_row_handler=lambda row: texts.append(row.text) or "skip", newlines_in_values=True
    )
    pacsv.open_csv(str(path), parse_options=options).read_all()
    assert len(texts) == 4  # lines[18] is a valid record with a quoted newline
    locator = _LineLocator(str(path))
    # Physical line numbers: each earlier embedded newline adds one. A text that is not in
    # the file gets None and does not stop the rows after it from being found.
    wanted = [texts[0], "not in the file", texts[1], texts[2], texts[3], "nor this"]
    expected = [18, None, 92, 152, 201, None]
    assert [locator.locate(text) for text in wanted] == expected
    locator.close()
