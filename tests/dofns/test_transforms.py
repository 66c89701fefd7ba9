"""The transforms on their own, in TestPipeline with assert_that, and their helpers."""

from __future__ import annotations

import dataclasses
import json

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.util import assert_that, equal_to

from pipeline.graph import build
from tests.conftest import float_rows
from tests.helpers import make_spec, pipeline_under_test
from transforms.spec import ERRORS, ScoringSpec
from transforms.summary import SUMMARY_FILE
from transforms.units import PlanInput


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
    with pipeline_under_test() as p:
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
    with pipeline_under_test() as p:
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
    with pipeline_under_test() as p:
        units = p | PlanInput(spec)
        assert_that(
            units["units"] | beam.Map(lambda u: u.path),
            equal_to([str(tmp_path / "d" / "in.parquet")]),
        )


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


def test_parquet_writer_keeps_every_table_in_order_and_fails_with_a_bad_one(tmp_path):
    """The writer encodes on a thread of its own: a bundle's file holds all its tables in order
    once the bundle ends, and a table it cannot write fails the bundle, not a later one."""
    from transforms.write import WriteParquetFiles

    schema = pa.schema([("id", pa.int64())])
    tables = [
        pa.table({"id": list(range(i * 100, (i + 1) * 100))}, schema=schema) for i in range(30)
    ]
    out = tmp_path / "ok"
    with pipeline_under_test() as p:
        parts = (
            p
            | beam.Create([tables], reshuffle=False)
            | beam.FlatMap(lambda ts: ts)
            | beam.ParDo(WriteParquetFiles(str(out), schema))
        )
        assert_that(parts | beam.Map(lambda part: part[0]), equal_to(["files"]))
    (written,) = out.glob("*.parquet")
    assert pq.read_table(written)["id"].to_pylist() == list(range(3000))

    wrong = pa.table({"id": pa.array(["x"])})
    with pytest.raises(Exception, match="schema"):
        with pipeline_under_test() as p:
            _ = (
                p
                | beam.Create([[*tables[:3], wrong, *tables[3:]]], reshuffle=False)
                | beam.FlatMap(lambda ts: ts)
                | beam.ParDo(WriteParquetFiles(str(tmp_path / "bad"), schema))
            )
