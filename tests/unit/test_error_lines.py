"""Property: random rejected records in random CSV and JSON Lines files, cut into random work
units and blocks, each get the line a plain reading of the file gives them (the count of line
ends before the record, plus one), whether the file is read from a memory map (a local file)
or as a stream (a compressed one), and whether the reader or the validator rejects it.

The DoFns are called as plain generators (no pipeline): ReadUnits on each unit, ValidateBatches
on each chunk, then NumberErrors with the units' sizes, as the graph wires them."""

from __future__ import annotations

import gzip
import io
import os
import re
import tempfile
from pathlib import Path

import apache_beam as beam
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import FEATURES
from tests.helpers import make_spec
from transforms.numbering import NumberErrors, unit_offsets
from transforms.read import ReadUnits
from transforms.spec import ERRORS, UNITS, Chunk, Unit
from transforms.textblocks import RecordBlocks, quote_ends
from transforms.validate import ValidateBatches

_LINE_END = re.compile(rb"\r\n|\r|\n")

# (kind, stage that rejects it or None); CSV records are id + the four features.
CSV_KINDS = {
    "good": None,
    "short": "read",  # too few fields
    "text": "validate",  # a feature that is not a number
    "quoted": "validate",  # a feature value with a line end inside its quotes
    "bytes": "read",  # bytes that are not UTF-8
    "blank": None,  # no record at all
}
JSONL_KINDS = {
    "good": None,
    "broken": "read",  # not JSON
    "array": "read",  # JSON, but not an object
    "text": "validate",
    "bytes": "read",
    "blank": None,
}


def csv_record(kind: str, i: int) -> bytes:
    values = [str(i).encode()] + [f"{i % 7}.5".encode()] * len(FEATURES)
    if kind == "blank":
        return b""
    if kind == "short":
        values = values[:2]
    elif kind == "text":
        values[1] = b"abc"
    elif kind == "quoted":
        values[2] = b'"1\n2"'
    elif kind == "bytes":
        values[1] = b"ab\xff"
    return b",".join(values)


def jsonl_record(kind: str, i: int) -> bytes:
    values = [f'"{f}": {i % 7}.5' for f in FEATURES]
    if kind == "text":
        values[0] = f'"{FEATURES[0]}": "abc"'
    record = "{" + ", ".join([f'"id": {i}', *values]) + "}"
    return {
        "good": record.encode(),
        "text": record.encode(),
        "broken": record[:12].encode(),
        "array": f"[{i}, 1]".encode(),
        "bytes": record[:-1].encode() + b', "note": "a\xffc"}',
        "blank": b"  ",
    }[kind]


def night(fmt: str, kinds: list[str], ends: list[bytes], bom: bool):
    """The file's bytes, and the (line, stage) of each record that must be rejected, lines
    counted the plain way: line ends before the record's first byte, plus one."""
    make = csv_record if fmt == "csv" else jsonl_record
    table = CSV_KINDS if fmt == "csv" else JSONL_KINDS
    data = (b"\xef\xbb\xbf" if bom else b"") + (
        b"id," + ",".join(FEATURES).encode() + b"\n" if fmt == "csv" else b""
    )
    expected = []
    for i, (kind, end) in enumerate(zip(kinds, ends, strict=True)):
        if table[kind] is not None:
            expected.append((len(_LINE_END.findall(data)) + 1, table[kind]))
        data += make(kind, i) + end
    return data, expected


def units_of(data: bytes, path: str, fmt: str, cuts: list[int]) -> list[Unit]:
    """The file cut at `cuts`, with each unit's quote state as the planner finds it."""
    cuts = sorted({c for c in cuts if 0 < c < len(data)})
    bounds = list(zip([0, *cuts], [*cuts, None], strict=True))
    names = ("id", *FEATURES) if fmt == "csv" else ()
    units, inside = [], False
    for index, (start, stop) in enumerate(bounds):
        units.append(Unit(path, index, start, stop, inside, names))
        if stop is not None and fmt == "csv":
            before = data[start - 1 : start]
            ends = quote_ends(io.BytesIO(data[start:]), stop - start, ",", before)
            inside = ends[inside]
    return units


def read_night(spec, units: list[Unit]) -> list[dict]:
    """What the graph's read, validate and numbering steps send to the errors output."""
    reader, validator = ReadUnits(spec), ValidateBatches(spec)
    for dofn in (reader, validator):
        dofn.setup()
        dofn.start_bundle()
    errors, sizes = [], []
    for unit in units:
        for item in reader.process(unit):
            if isinstance(item, Chunk):
                for out in validator.process(item):
                    if isinstance(out, beam.pvalue.TaggedOutput) and out.tag == ERRORS:
                        errors.append(out.value)
            elif item.tag == ERRORS:
                errors.append(item.value)
            elif item.tag == UNITS:
                sizes.append(item.value)
    offsets = unit_offsets(sizes)
    return [out for e in errors for out in NumberErrors().process(e, offsets)]


@pytest.mark.parametrize("compressed", [False, True], ids=["mapped", "streamed"])
@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
@settings(
    max_examples=int(os.environ.get("LINE_EXAMPLES", "40")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_each_rejected_record_has_the_line_a_plain_reading_gives(
    fmt, compressed, data, models_dir, monkeypatch
):
    table = CSV_KINDS if fmt == "csv" else JSONL_KINDS
    kinds = data.draw(st.lists(st.sampled_from(sorted(table)), min_size=1, max_size=40))
    ends = data.draw(st.lists(st.sampled_from([b"\n", b"\r\n", b"\r"]), min_size=len(kinds)))
    content, expected = night(fmt, kinds, ends[: len(kinds)], data.draw(st.booleans()))
    block = data.draw(st.sampled_from([16, 64, 300, 1 << 20]))
    # Small blocks, so that a unit is many blocks and a rejected record sits anywhere in one.
    monkeypatch.setitem(RecordBlocks.__init__.__kwdefaults__, "block_bytes", block)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"night.{fmt}{'.gz' if compressed else ''}"
        path.write_bytes(gzip.compress(content) if compressed else content)
        spec = make_spec(models_dir / "binary.joblib", path, Path(tmp) / "out", fmt, 4)
        cuts = [] if compressed else data.draw(st.lists(st.integers(1, len(content)), max_size=6))
        errors = read_night(spec, units_of(content, str(path), fmt, cuts))
    got = sorted((e.get("line"), e["stage"]) for e in errors)
    assert got == sorted(expected), (content, [(e.get("line"), e["error"]) for e in errors])
