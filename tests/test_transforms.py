"""The transforms on their own, in TestPipeline with assert_that, and their helpers."""

from __future__ import annotations

import dataclasses
import io
import json

import apache_beam as beam
import joblib
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from hypothesis import given, settings
from hypothesis import strategies as st

from models import loading
from models.introspect import inspect
from pipeline.graph import build
from scoring.values import cast
from tests.conftest import FEATURES, float_rows
from transforms.errors import MAX_RECORD_BYTES, to_json_line
from transforms.spec import ERRORS, ScoringSpec, TextFormat
from transforms.summary import SUMMARY_FILE
from transforms.textblocks import RecordBlocks
from transforms.textread import split_records
from transforms.units import PlanInput


def make_spec(model_path, pattern, output, fmt="csv", batch_size=64, split_bytes=64 << 20):
    ref = loading.resolve(str(model_path))
    model, _ = loading.load(ref)
    facts = dataclasses.replace(inspect(model), missing_ok=frozenset())
    columns = pa.schema([("id", pa.int64())] + [(f, pa.float64()) for f in FEATURES])
    return ScoringSpec(
        run_id="test-run",
        input_format=fmt,
        input_pattern=str(pattern),
        output=str(output),
        features=tuple(FEATURES),
        keys=("id",),
        columns=columns,
        model=ref,
        facts=facts,
        text=TextFormat(),
        batch_size=batch_size,
        split_bytes=split_bytes,
    )


def dirty_lines(n: int) -> list[str]:
    """CSV lines (header first) with read and validate errors, quoted newlines and blank lines."""
    df = float_rows(n)
    lines = df.to_csv(index=False).splitlines()
    lines[8] = "7,1,2"  # read error: too few fields
    lines[9] = "8,oops,1,2,3"  # validate error
    lines[40] = '39,"0.5",0.1,0.2,"0.3"'  # quoted values
    lines[77] = ""  # a blank line: skipped, not a record
    lines[120] = "119,0.1,0.2,0.3,0.4,extra"  # read error: too many fields
    lines[150] = '149,0.1,"0.2\n",0.3,0.4'  # a quoted newline inside a value: one record
    return lines


def run_graph(spec: ScoringSpec, staging) -> tuple[list, list, dict]:
    """Runs the whole graph; returns the predictions, the error records and per-file counts."""
    with TestPipeline() as p:
        build(p, spec, str(staging))
    predictions = [
        row
        for f in sorted((staging / "predictions").glob("*.parquet"))
        for row in pq.read_table(f).select(["id", "prediction"]).to_pylist()
    ]
    errors = [
        json.loads(line)
        for f in sorted((staging / "errors").glob("*.jsonl"))
        for line in f.read_text().splitlines()
    ]
    counts = json.loads((staging / SUMMARY_FILE).read_text())["counts"]
    return predictions, errors, counts


def _key(e: dict) -> tuple:
    return (e["stage"], e.get("line"), e.get("row_index"), json.dumps(e["record"]), e["error"])


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_split_reads_equal_whole_reads(tmp_path, models_dir, fmt):
    """A file read as many work units gives exactly the rows, errors, line numbers, row indexes
    and counts of the same file read whole."""
    path = tmp_path / "in" / f"data.{fmt}"
    path.parent.mkdir()
    if fmt == "csv":
        lines = dirty_lines(400)
        path.write_bytes(("\r\n".join(lines) + "\r\n").encode())
    elif fmt == "jsonl":
        rows = float_rows(400).to_dict("records")
        lines = [json.dumps(r) for r in rows]
        lines[8] = '{"id": 7, "f0": '  # not JSON
        lines[9] = '{"id": 8, "f0": "oops", "f1": 1, "f2": 2, "f3": 3}'
        lines[77] = "   "  # blank
        lines[120] = "[1, 2]"  # not an object
        path.write_text("\n".join(lines) + "\n")
    else:
        table = pa.Table.from_pandas(float_rows(400), preserve_index=False)
        pq.write_table(table, path, row_group_size=30)
    whole = make_spec(models_dir / "binary.joblib", tmp_path / "in" / "*", tmp_path / "o", fmt)
    split = dataclasses.replace(whole, split_bytes=700, batch_size=16)
    whole_out = run_graph(whole, tmp_path / "whole")
    split_out = run_graph(split, tmp_path / "split")
    assert sorted(map(str, whole_out[0])) == sorted(map(str, split_out[0]))
    assert sorted(map(_key, whole_out[1])) == sorted(map(_key, split_out[1]))
    for counts in (whole_out[2], split_out[2]):
        c = counts[str(path)]
        assert c["rows_read"] == c["rows_predicted"] + sum(
            c.get(f"rows_failed_{s}", 0) for s in ("read", "validate", "predict")
        )
    drop = {"units"}
    assert {k: v for k, v in whole_out[2][str(path)].items() if k not in drop} == {
        k: v for k, v in split_out[2][str(path)].items() if k not in drop
    }
    if fmt == "csv":
        by_line = {e["line"]: e for e in whole_out[1]}
        text = lines
        assert by_line[9]["record"] == text[8] and by_line[9]["stage"] == "read"
        assert by_line[10]["stage"] == "validate" and by_line[10]["row_index"] == 7
        assert by_line[121]["stage"] == "read" and by_line[121]["record"] == text[120]
        assert len(split_out[0]) == 400 - 4  # 3 errors... and the blank line was no record
    assert len(whole_out[1]) == {"csv": 3, "jsonl": 3, "parquet": 0}[fmt]


def test_a_stray_quote_loses_no_row_in_split_reads(tmp_path, models_dir):
    """An odd quote inside an unquoted field (`29" `) is text, as Arrow reads it: it does not
    turn the rest of the file into one quoted value (one block, no line numbers)."""
    lines = float_rows(400).to_csv(index=False).splitlines()
    lines[30] = lines[30].replace(",", '" ,', 1)  # the key 29 spelled 29"
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "data.csv").write_text("\n".join(lines) + "\n")
    whole = make_spec(models_dir / "binary.joblib", tmp_path / "in" / "*", tmp_path / "o")
    split = dataclasses.replace(whole, split_bytes=700, batch_size=16)
    whole_out = run_graph(whole, tmp_path / "whole")
    split_out = run_graph(split, tmp_path / "split")
    ids = sorted(r["id"] for r in split_out[0])
    assert ids == sorted(r["id"] for r in whole_out[0]) == [i for i in range(400) if i != 29]
    assert [e["record"] for e in split_out[1]] == [e["record"] for e in whole_out[1]]
    assert [(e["stage"], e["line"]) for e in split_out[1]] == [("validate", 31)]
    assert [(e["stage"], e["line"]) for e in whole_out[1]] == [("validate", 31)]
    (counts,) = split_out[2].values()
    assert counts["rows_read"] == 400 and counts["rows_predicted"] == 399


def test_plan_units_cuts_files(tmp_path, models_dir):
    pq.write_table(
        pa.Table.from_pandas(float_rows(1000), preserve_index=False),
        tmp_path / "a.parquet",
        row_group_size=100,
    )
    spec = make_spec(models_dir / "binary.joblib", tmp_path / "*.parquet", tmp_path / "o")
    spec = dataclasses.replace(spec, input_format="parquet", batch_size=250)
    with TestPipeline() as p:
        units = p | PlanInput(spec)
        assert_that(
            units["units"] | beam.Map(lambda u: (u.start, u.stop)),
            equal_to([(0, 3), (3, 6), (6, 9), (9, 10)]),  # row groups of >= 250 rows each
        )


def test_output_directory_is_never_read(tmp_path, models_dir):
    (tmp_path / "d" / "scores" / "predictions").mkdir(parents=True)
    pq.write_table(pa.Table.from_pandas(float_rows(10)), tmp_path / "d" / "in.parquet")
    pq.write_table(
        pa.Table.from_pandas(float_rows(10)),
        tmp_path / "d" / "scores" / "predictions" / "part.parquet",
    )
    spec = make_spec(models_dir / "binary.joblib", tmp_path / "d" / "**", tmp_path / "d" / "scores")
    spec = dataclasses.replace(spec, input_format="parquet")
    with TestPipeline() as p:
        units = p | PlanInput(spec)
        assert_that(
            units["units"] | beam.Map(lambda u: u.path),
            equal_to([str(tmp_path / "d" / "in.parquet")]),
        )


@pytest.mark.parametrize("block", [5, 64, 1 << 20])
@pytest.mark.parametrize("cuts", [[0], [0, 50, 51, 52, 200, 333], list(range(0, 600, 37))])
def test_record_blocks_own_each_record_once(block, cuts):
    """However a CSV's bytes are cut into units, each record (quoted newlines and all) is read by
    exactly one unit, and the units' line counts add up to the file's lines."""
    lines = ["id,a,b"] + [f'{i},"x{i}\ny",{i}' if i % 7 == 0 else f"{i},x,{i}" for i in range(60)]
    data = ("\r\n".join(lines) + "\r\n").encode()
    cuts = [c for c in cuts if c < len(data)]
    bounds = list(zip(cuts, cuts[1:] + [None]))
    records, newlines = [], 0
    for index, (start, stop) in enumerate(bounds):
        in_quotes = data[:start].count(b'"') % 2 == 1
        blocks = RecordBlocks(
            io.BytesIO(data[start:]),
            start,
            stop,
            quoted=True,
            in_quotes=in_quotes,
            header=index == 0,
            block_bytes=block,
        )
        for b in blocks:
            for r in split_records(b.data, b.first_line + newlines, (",", 3)):
                records.append((r.line, b.data[r.start : r.end].decode()))
        newlines += blocks.newlines
    expected = []
    line = 2
    for text in lines[1:]:
        expected.append((line, text))
        line += 1 + text.count("\n")
    assert records == expected
    assert newlines == data.count(b"\n")


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
)
def test_units_read_what_arrow_reads_whole_whatever_the_quotes_and_cuts(rows, cuts, crlf, block):
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
        blocks = RecordBlocks(
            io.BytesIO(data[start:]),
            start,
            stop,
            quoted=True,
            in_quotes=inside,
            before=data[start - 1 : start],
            header=index == 0,
            block_bytes=block,
        )
        for b in blocks:
            parsed = arrow(bytes(b.data))
            records = split_records(bytes(b.data), b.first_line + newlines, (",", 3))
            assert len(records) == len(parsed)  # the records the line numbers are taken from
            got += parsed
            lines += [int(line) for line in records.lines]
        newlines += blocks.newlines
        if stop is not None:
            ends = quote_ends(io.BytesIO(data[start:]), stop - start, ",", data[start - 1 : start])
            inside = ends[inside]
    assert got == expected
    assert newlines == data.count(b"\n")
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


def test_errors_numbered_file_wide_in_a_test_pipeline(tmp_path, models_dir):
    """TestPipeline of the graph: a read error in a later unit gets the file's line number."""
    lines = dirty_lines(200)
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.csv").write_text("\n".join(lines) + "\n")
    spec = make_spec(models_dir / "binary.joblib", tmp_path / "in" / "*.csv", tmp_path / "o")
    spec = dataclasses.replace(spec, split_bytes=512)
    _, errors, _ = run_graph(spec, tmp_path / "staging")
    read = sorted((e["line"], e["record"]) for e in errors if e["stage"] == "read")
    assert read == [(9, lines[8]), (121, lines[120])]
    assert ERRORS == "errors"


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
