"""The transforms' parts as plain functions: record blocks against Arrow's whole-file read, the cast
of a column, error lines, model facts, drift bins, error reasons."""

from __future__ import annotations

import io
import json

import joblib
import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.introspect import inspect
from scoring.values import cast
from tests.conftest import FEATURES
from tests.helpers import make_spec
from transforms.errors import MAX_RECORD_BYTES, to_json_line
from transforms.textblocks import RecordBlocks, line_of
from transforms.textread import split_records


def unit_blocks(data: bytes, start: int, mapped: bool, **options) -> RecordBlocks:
    """A unit's blocks, read from a stream at `start`, or cut from the whole file's bytes (as
    from a memory map: then their lines are the file's own and the unit counts none)."""
    if mapped:
        return RecordBlocks(None, start, mapped=data, **options)
    return RecordBlocks(io.BytesIO(data[start:]), start, **options)


@pytest.mark.parametrize("mapped", [False, True], ids=["streamed", "mapped"])
@pytest.mark.parametrize("block", [5, 64, 1 << 20])
@pytest.mark.parametrize("cuts", [[0], [0, 50, 51, 52, 200, 333], list(range(0, 600, 37))])
def test_record_blocks_own_each_record_once(block, cuts, mapped):
    """However a CSV's bytes are cut into units, each record (quoted newlines and all) is read by
    exactly one unit, and the units' line counts add up to the file's lines."""
    lines = ["id,a,b"] + [f'{i},"x{i}\ny",{i}' if i % 7 == 0 else f"{i},x,{i}" for i in range(60)]
    data = ("\r\n".join(lines) + "\r\n").encode()
    cuts = [c for c in cuts if c < len(data)]
    bounds = list(zip(cuts, cuts[1:] + [None]))
    records, newlines = [], 0
    for index, (start, stop) in enumerate(bounds):
        in_quotes = data[:start].count(b'"') % 2 == 1
        blocks = unit_blocks(
            data,
            start,
            mapped,
            stop=stop,
            quoted=True,
            in_quotes=in_quotes,
            header=index == 0,
            block_bytes=block,
        )
        for b in blocks:
            for r in split_records(b.data, line_of(b.first_line) + newlines, (",", 3)):
                records.append((r.line, bytes(b.data[r.start : r.end]).decode()))
        newlines += blocks.newlines
    expected = []
    line = 2
    for text in lines[1:]:
        expected.append((line, text))
        line += 1 + text.count("\n")
    assert records == expected
    assert newlines == (0 if mapped else data.count(b"\n"))


_FIELDS = [
    "x",
    "",
    '"q,1"',
    '"a""b"',
    '"q""\nr"',
    '"two\nlines"',
    '55" tv',
    'b"c"d',
    '"e"f',
    '""',
    '"end"""',
    '""""',
    '"""\n"',
    "z",
]


@settings(max_examples=300, deadline=None)
@given(
    rows=st.lists(st.lists(st.sampled_from(_FIELDS), min_size=3, max_size=3), max_size=30),
    cuts=st.lists(st.integers(1, 400), max_size=8),
    crlf=st.booleans(),
    block=st.sampled_from([7, 64, 1 << 20]),
    mapped=st.booleans(),
)
def test_units_read_what_arrow_reads_whole_whatever_the_quotes_and_cuts(
    rows, cuts, crlf, block, mapped
):
    """Quoted values with delimiters, escaped quotes and line ends; quotes that are text (`55"
    tv`, after a closed value): however the file is cut into units (the planner's quote scan
    deciding where each starts), the units' blocks parse to exactly Arrow's rows of the whole
    file, and each record's line is its physical line."""
    import pyarrow.csv as pacsv

    from transforms.textblocks import quote_ends

    end = "\r\n" if crlf else "\n"
    data = end.join(["a,b,c"] + [",".join(r) for r in rows]).encode() + end.encode()
    parse = pacsv.ParseOptions(newlines_in_values=True)
    names = pacsv.ReadOptions(column_names=["a", "b", "c"], autogenerate_column_names=False)

    def arrow(chunk: bytes) -> list:
        if not chunk.strip():
            return []
        convert = pacsv.ConvertOptions(column_types={c: pa.string() for c in "abc"})
        return pacsv.read_csv(pa.py_buffer(chunk), names, parse, convert).to_pylist()

    expected = pacsv.read_csv(
        pa.py_buffer(data),
        parse_options=parse,
        convert_options=pacsv.ConvertOptions(column_types={c: pa.string() for c in "abc"}),
    ).to_pylist()
    cuts = sorted({c for c in cuts if c < len(data)})
    bounds = list(zip([0, *cuts], [*cuts, None]))
    got, lines, newlines, inside = [], [], 0, False
    for index, (start, stop) in enumerate(bounds):
        blocks = unit_blocks(
            data,
            start,
            mapped,
            stop=stop,
            quoted=True,
            in_quotes=inside,
            before=data[start - 1 : start],
            header=index == 0,
            block_bytes=block,
        )
        for b in blocks:
            parsed = arrow(bytes(b.data))
            records = split_records(bytes(b.data), line_of(b.first_line) + newlines, (",", 3))
            assert len(records) == len(parsed)  # the records the line numbers are taken from
            got += parsed
            lines += [int(line) for line in records.lines]
        newlines += blocks.newlines
        if stop is not None:
            ends = quote_ends(io.BytesIO(data[start:]), stop - start, ",", data[start - 1 : start])
            inside = ends[inside]
    assert got == expected
    assert newlines == (0 if mapped else data.count(b"\n"))
    starts = [2]
    for r in rows:
        starts.append(starts[-1] + ",".join(r).count("\n") + 1)
    assert lines == starts[: len(rows)]


def cast_column(values: pa.Array, target: pa.DataType):
    """A feature column cast (scoring.values.cast): the values, and the mask of rejected ones."""
    done = cast(values, target, key=False, name="")
    return done.values, done.failed


def test_cast_column_isolates_bad_values():
    values, bad = cast_column(pa.array(["1.5", "abc", None, "2"]), pa.float64())
    assert values.to_pylist() == [1.5, None, None, 2.0]
    assert bad.tolist() == [False, True, False, False]
    ints, bad = cast_column(pa.array([1, 2, None]), pa.float64())
    assert ints.to_pylist() == [1.0, 2.0, None] and bad is None
    flags, bad = cast_column(pa.array([True, False]), pa.float64())
    assert flags.to_pylist() == [1.0, 0.0] and bad is None
    big = 1_700_000_000_000_000_001
    wide, bad = cast_column(pa.array([big, 2**63 - 1]), pa.float64())  # as NumPy casts them
    assert wide.to_pylist() == [float(big), float(2**63 - 1)] and bad is None
    unsigned, bad = cast_column(pa.array([2**64 - 1], pa.uint64()), pa.float64())
    assert unsigned.to_pylist() == [float(2**64 - 1)] and bad is None


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
    assert binary.numeric == frozenset(FEATURES)
    multi = inspect(joblib.load(models_dir / "multiclass.pkl"))
    assert multi.proba_columns == ("proba_high", "proba_low", "proba_mid")
    assert multi.prediction_type == pa.string()
    reg = inspect(joblib.load(models_dir / "regressor.joblib"))
    assert reg.classes is None and reg.prediction_type == pa.float64()
    cat = inspect(joblib.load(models_dir / "categorical.joblib"))
    assert {k: v.type for k, v in cat.categorical.items()} == {
        "plan": pa.string(),
        "region": pa.string(),
    }
    assert set(cat.categorical["plan"].values) == {"basic", "plus", "pro"}
    assert cat.numeric == frozenset({"tenure_months", "monthly_spend", "support_calls"})


def test_bin_counts_match_searchsorted_and_skip_nan():
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


def test_a_predict_error_names_the_feature_behind_a_column_index(tmp_path, models_dir):
    from scoring.predict import Predictor

    spec = make_spec(models_dir / "categorical.joblib", tmp_path / "*.csv", tmp_path / "o")
    assert spec.facts.encoders == (("plan", "region"),)
    message = Predictor(spec, joblib.load(models_dir / "categorical.joblib"))._message(
        ValueError("Found unknown categories ['gold'] in column 0 during transform")
    )
    assert message == (
        "ValueError: Found unknown categories ['gold'] in column 0 during transform "
        "(column 0 is feature plan)"
    )


def test_error_reasons_group_whatever_the_value_or_the_bad_byte():
    from transforms.errors import reason_of

    def reason(text: str) -> str:
        return reason_of({"error": text})

    assert reason("carat: '0,65' is not a number") == reason("carat: 'n/a' is not a number")
    utf8 = "not valid utf-8 text (byte 0x{} at column {}); set --input_encoding"
    assert reason(utf8.format("fc", 17)) == reason(utf8.format("e9", 3))


def test_a_worker_runs_one_blas_thread_unless_the_environment_says(monkeypatch):
    """BLAS threads spin between calls and take the cores the parser needs: a worker keeps one,
    unless OPENBLAS_NUM_THREADS (or MKL's, BLIS's) names a number."""
    from threadpoolctl import threadpool_info, threadpool_limits

    from transforms.predict import one_blas_thread

    def blas_threads() -> set[int]:
        return {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}

    with threadpool_limits(limits=2, user_api="blas"):
        monkeypatch.setenv("OPENBLAS_NUM_THREADS", "2")
        one_blas_thread()
        assert blas_threads() == {2}
        monkeypatch.delenv("OPENBLAS_NUM_THREADS")
        one_blas_thread()
        assert blas_threads() == {1}
