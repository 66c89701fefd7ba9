"""The value rule as plain functions (scoring.values): each value is cast exactly, or refused with
its reason."""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import json
import os
import random

import joblib
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.io.filesystem import FileMetadata
from apache_beam.pvalue import TaggedOutput
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models import loading
from models.introspect import inspect
from scoring.decide import decide_key_type
from scoring.values import cast
from transforms.read import ReadUnits
from transforms.samples import sample
from transforms.spec import ERRORS, ScoringSpec, TextFormat
from transforms.units import SCAN, CountQuotes, PlanUnits, csv_units
from transforms.validate import ValidateBatches


def _cast(values, type_, target, key=True):
    done = cast(pa.array(values, type_), target, key=key, name="k")
    reasons = {i: r.format(values[i]) for m, r in done.failures for i in np.flatnonzero(m)}
    return done.values.to_pylist(), reasons


def test_whole_numbers_become_floats_only_when_exact():
    big = 2**53 + 1
    written, reasons = _cast([1, 2**53, big, -big, None], pa.int64(), pa.float64())
    assert written == [1.0, 2.0**53, None, None, None]
    assert set(reasons) == {2, 3} and "not exactly a float64" in reasons[2]
    # A feature takes the nearest float, as scikit-learn converts it.
    assert _cast([big], pa.int64(), pa.float64(), key=False)[0] == [float(big)]


def test_floats_become_whole_numbers_only_when_whole_and_exact():
    written, reasons = _cast([2.0, 2.5, 2.0**53, 2.0**60, float("nan")], pa.float64(), pa.int64())
    assert written == [2, None, 2**53, None, None]
    assert "not a whole number" in reasons[1]
    assert "too large to be exactly the whole number" in reasons[3]
    assert set(reasons) == {1, 3, 4}


def test_booleans_never_become_numbers_nor_numbers_booleans_in_keys():
    written, reasons = _cast([True, False], pa.bool_(), pa.int64())
    assert written == [None, None] and "a boolean (True)" in reasons[0]
    assert _cast([1], pa.int64(), pa.bool_())[0] == [None]
    # A feature the model takes as a number: 0.0 / 1.0, as scikit-learn converts it.
    assert _cast([True, False], pa.bool_(), pa.float64(), key=False)[0] == [1.0, 0.0]


def test_numbers_become_text_only_as_whole_numbers():
    assert _cast([12, None], pa.int64(), pa.string())[0] == ["12", None]
    written, reasons = _cast([1.0, 2.5], pa.float64(), pa.string())
    assert written == [None, None] and "spelling in the input is not known" in reasons[0]
    assert _cast([True], pa.bool_(), pa.string())[0] == [None]


def test_a_timestamp_becomes_a_date_only_at_midnight():
    midnight = datetime.datetime(2024, 3, 1)
    timed = datetime.datetime(2024, 3, 1, 5, 30)
    written, reasons = _cast([midnight, timed], pa.timestamp("us"), pa.date32())
    assert written == [datetime.date(2024, 3, 1), None]
    assert "a timestamp with a time of day" in reasons[1]


def test_a_finer_timestamp_unit_only_when_nothing_is_cut_off():
    values = [1_000_000_000, 1_000_000_001]
    written, reasons = _cast(values, pa.timestamp("ns"), pa.timestamp("s"))
    assert written[0] == datetime.datetime(1970, 1, 1, 0, 0, 1) and written[1] is None
    assert set(reasons) == {1}


def test_decimals_convert_only_exactly():
    written, reasons = _cast([2.5, 3.0], pa.float64(), pa.decimal128(38, 0))
    assert written == [None, decimal.Decimal(3)] and "does not convert exactly" in reasons[0]
    given = [decimal.Decimal("0.1"), decimal.Decimal("12345678901234567.1")]
    written, reasons = _cast(given, pa.decimal128(20, 1), pa.float64())
    assert written == [0.1, None] and set(reasons) == {1}  # 0.1 reads back as 0.1


def test_whole_numbers_out_of_a_narrower_range_say_so():
    written, reasons = _cast([5, 2**31], pa.int64(), pa.int32())
    assert written == [5, None]
    assert "outside the int32 range" in reasons[1]


def test_text_keys_only_when_the_typed_value_writes_back_as_spelled():
    texts = ["12", "007", "+5", " 5", "1.0", "99999999999999999999", "-0", "0"]
    written, reasons = _cast(texts, pa.string(), pa.int64())
    assert written == [12, None, None, None, None, None, None, 0]
    assert "above the int64 range" not in reasons[1]
    assert "outside the int64 range" in reasons[5]
    assert "would not be written as spelled" in reasons[1]
    written, _ = _cast(["true", "1", "2024-01-05", "2024-1-5"], pa.string(), pa.bool_())
    assert written == [True, None, None, None]
    written, _ = _cast(["2024-01-05", "2024-1-5"], pa.string(), pa.date32())
    assert written == [datetime.date(2024, 1, 5), None]


def test_text_features_are_numbers_only_in_ascii_digits():
    texts = ["1.5", " 1.5 ", "1e3", "inf", "1_000", "１２", "١٢", "0x10", "1,5", ""]
    written, reasons = _cast(texts, pa.string(), pa.float64(), key=False)
    assert written[:4] == [1.5, 1.5, 1000.0, float("inf")]
    assert written[4:] == [None] * 6
    assert set(reasons) == set(range(4, 10))
    assert "is not a number" in reasons[4]


def test_each_value_is_judged_alone_whatever_shares_its_column():
    """The same value gets the same outcome alone, among clean values, or among dirty ones."""
    for value, target in [(" 7", pa.float64()), ("1_000", pa.float64()), ("007", pa.int64())]:
        key = pa.types.is_integer(target)
        alone = _cast([value], pa.string(), target, key)[0][0]
        clean = _cast(["1", value, "2"], pa.string(), target, key)[0][1]
        dirty = _cast(["x", value, "y y"], pa.string(), target, key)[0][1]
        assert alone == clean == dirty, value


def _union(values: list) -> pa.Array:
    from scoring.rows import json_table

    return json_table([{"k": v} for v in values]).column("k").combine_chunks()


def test_a_json_column_of_several_kinds_is_cast_kind_by_kind():
    column = _union([9007199254740993, "9007199254740993", 2.0, True, None, {"a": 1}, 2**64])
    assert pa.types.is_union(column.type)
    done = cast(column, pa.int64(), key=True, name="k")
    assert done.values.to_pylist() == [9007199254740993] * 2 + [2, None, None, None, None]
    assert np.flatnonzero(done.failed).tolist() == [3, 5, 6]
    done = cast(column.slice(1, 3), pa.string(), key=True, name="k")
    assert done.values.to_pylist() == ["9007199254740993", None, None]


_INTS = st.sampled_from([0, 7, -3, 2**31, 2**53, 2**53 + 1, -(2**53) - 1, 2**63 - 1, -(2**63)])


_BIG = st.sampled_from([2**63, 2**64 + 1, 10**20])


_FLOATS = st.sampled_from([1.0, 2.5, -0.0, 2.0**53, 2.0**53 + 2, 1e20, 0.1])


_TEXTS = st.sampled_from(
    ["12", "007", "+5", " 5", "5 ", "1.0", "2.5", "1_000", "１２", "١٢", "true", "NA", "null"]
    + ["abc", "2024-01-05", "2024-01-05T06:00:00", "9223372036854775808", "", '"q"', "a,b"]
)


_DATES = st.sampled_from(
    [datetime.date(1, 1, 1), datetime.date(2024, 1, 5), datetime.date(9999, 12, 31)]
)


_STAMPS = st.sampled_from(
    [
        datetime.datetime(2024, 1, 5),
        datetime.datetime(2024, 1, 5, 6, 30, 1),
        datetime.datetime(1, 1, 1),
        datetime.datetime(9999, 12, 31),
        datetime.datetime(2024, 1, 5, 0, 0, 0, 250),
    ]
)


# Parquet: each file one type for the key, values of that type.
_PARQUET_TYPES = {
    "int64": (pa.int64(), _INTS),
    "int32": (pa.int32(), st.integers(-(2**31), 2**31 - 1)),
    "float64": (pa.float64(), _FLOATS),
    "bool": (pa.bool_(), st.booleans()),
    "string": (pa.string(), _TEXTS),
    "date32": (pa.date32(), _DATES),
    "timestamp_s": (pa.timestamp("s"), _STAMPS.map(lambda t: t.replace(microsecond=0))),
    "timestamp_us": (pa.timestamp("us"), _STAMPS),
    "int96": (pa.timestamp("us"), _STAMPS),  # written as legacy INT96
    "decimal": (
        pa.decimal128(22, 2),
        st.sampled_from([decimal.Decimal("12.00"), decimal.Decimal("1.50")]),
    ),
}


_JSON_VALUES = st.one_of(_INTS, _BIG, _FLOATS, st.booleans(), _TEXTS, st.none())


_CSV_TEXTS = st.one_of(_TEXTS, _INTS.map(str), _BIG.map(str))


@pytest.fixture(scope="module")
def one_feature_model(tmp_path_factory):
    from sklearn.linear_model import LinearRegression

    X = pd.DataFrame({"f": np.arange(20, dtype=float)})
    path = tmp_path_factory.mktemp("m") / "m.joblib"
    joblib.dump(LinearRegression().fit(X, X.f * 2), path)
    return path


def _write(fmt: str, path: str, rows: list[dict], ptype: str | None) -> None:
    if fmt == "parquet":
        arrow_type = _PARQUET_TYPES[ptype][0]
        table = pa.table(
            {
                "id": pa.array([r["id"] for r in rows], pa.int64()),
                "k": pa.array([r["k"] for r in rows], arrow_type),
                "f": pa.array([r["f"] for r in rows], pa.float64()),
            }
        )
        pq.write_table(table, path, use_deprecated_int96_timestamps=ptype == "int96")
    elif fmt == "jsonl":
        with open(path, "w", newline="") as f:
            for r in rows:
                f.write(json.dumps({k: v for k, v in r.items() if k != "_end"}) + r["_end"])
    else:
        with open(path, "w", newline="") as f:
            f.write("id,k,f" + (rows[0]["_end"] if rows else "\n"))
            for r in rows:
                k = r["k"]
                quoted = k if k == "" else '"' + k.replace('"', '""') + '"'
                f.write(f"{r['id']},{quoted},{r['f']}{r['_end']}")


def _read_and_validate(spec: ScoringSpec, paths: list[str]) -> tuple[dict, dict]:
    """What the workers make of the files: {id: written key} and {id: reason}."""
    written, rejected = {}, {}
    plan, read, validate = PlanUnits(spec), ReadUnits(spec), ValidateBatches(spec)
    for fn in (plan, read, validate):
        fn.setup()
        fn.start_bundle()
    for path in paths:
        units, scans = [], []
        for item in plan.process(FileMetadata(path, os.path.getsize(path))):
            if isinstance(item, TaggedOutput):
                assert item.tag == SCAN, item.value
                scans.append(item.value)
            else:
                units.append(item)
        if scans:
            counted = [next(CountQuotes(spec.text.delimiter).process(s))[1] for s in scans]
            units += list(csv_units((path, counted)))
        for unit in units:
            for chunk in read.process(unit):
                if isinstance(chunk, TaggedOutput):
                    if chunk.tag == ERRORS:
                        raise AssertionError(f"unexpected read error: {chunk.value}")
                    continue
                for out in validate.process(chunk):
                    if isinstance(out, TaggedOutput):
                        assert out.tag == ERRORS
                        record = out.value["record"]
                        rejected[int(record["id"])] = out.value["error"]  # CSV: as text
                    else:
                        batch = out.batch
                        for i, k in zip(
                            batch.column("id").to_pylist(), batch.column("k").to_pylist()
                        ):
                            written[i] = k
    return written, rejected


def _same(written, given) -> bool:
    """Whether a written key stands for exactly the value the input held."""
    if given is None or given == "" and written is None:
        return written is None
    if written is None:
        return False
    if isinstance(given, bool) or isinstance(written, bool):
        if isinstance(given, str):
            return given == pa.scalar(written).cast(pa.string()).as_py()
        return type(given) is type(written) and given == written
    if isinstance(given, str):  # text as a typed key: it must write back as spelled
        return pa.scalar(written).cast(pa.string()).as_py() == given
    if isinstance(written, str):
        return isinstance(given, int) and str(given) == written
    if isinstance(given, datetime.datetime) and not isinstance(written, datetime.datetime):
        return given.time() == datetime.time() and given.date() == written
    if isinstance(written, datetime.datetime) and not isinstance(given, datetime.datetime):
        return written.time() == datetime.time() and written.date() == given
    pair = {type(given), type(written)}
    if pair == {float, decimal.Decimal}:  # a float reads back as its shortest spelling
        as_decimal = [
            v if isinstance(v, decimal.Decimal) else decimal.Decimal(repr(v))
            for v in (given, written)
        ]
        return as_decimal[0] == as_decimal[1]
    return given == written  # Python compares whole numbers and floats exactly


@st.composite
def nights(draw):
    fmt = draw(st.sampled_from(["parquet", "jsonl", "csv"]))
    n_files = draw(st.integers(1, 3))
    files, next_id = [], 0
    for _ in range(n_files):
        ptype = draw(st.sampled_from(sorted(_PARQUET_TYPES))) if fmt == "parquet" else None
        values = {
            "parquet": _PARQUET_TYPES[ptype][1] if ptype else None,
            "jsonl": _JSON_VALUES,
            "csv": _CSV_TEXTS,
        }[fmt]
        rows = []
        for k in draw(st.lists(values, min_size=0, max_size=12)):
            end = draw(st.sampled_from(["\n", "\r\n", "\r"])) if fmt != "parquet" else ""
            rows.append({"id": next_id, "k": k, "f": float(next_id), "_end": end})
            next_id += 1
        files.append((ptype, rows))
    seed = draw(st.integers(0, 2**16))
    return fmt, files, seed


@settings(
    max_examples=int(os.environ.get("VALUES_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
@given(night=nights())
def test_every_key_is_written_as_given_or_rejected_whatever_its_neighbours(
    night, tmp_path_factory, one_feature_model
):
    fmt, files, seed = night
    base = tmp_path_factory.mktemp("night")
    paths = []
    for i, (ptype, rows) in enumerate(files):
        path = str(base / f"part-{i}.{fmt}")
        _write(fmt, path, rows, ptype)
        paths.append(path)
    given_keys = {r["id"]: r["k"] for _, rows in files for r in rows}
    if not given_keys:
        return
    # One place decides the run's schema: the first file with rows.
    first = next(sample(p, fmt, TextFormat()) for p, (_, rows) in zip(paths, files) if rows)
    key_type = decide_key_type("k", first, fmt)
    ref = loading.resolve(str(one_feature_model))
    facts = dataclasses.replace(inspect(loading.load(ref)[0]), missing_ok=frozenset({"f"}))
    spec = ScoringSpec(
        run_id="property",
        input_format=fmt,
        input_pattern=str(base / "*"),
        output=str(base / "out"),
        features=("f",),
        keys=("id", "k"),
        columns=pa.schema([("id", pa.int64()), ("k", key_type), ("f", pa.float64())]),
        model=ref,
        facts=facts,
    )
    written, rejected = _read_and_validate(spec, paths)
    assert sorted([*written, *rejected]) == sorted(given_keys), "a row was lost or duplicated"
    for i, value in written.items():
        assert _same(value, given_keys[i]), (given_keys[i], value, key_type)
    for reason in rejected.values():
        assert "key k" in reason or reason.startswith("k:"), reason

    # The same rows shuffled, cut into other files, other batch and unit sizes: the same
    # rows are accepted (with the same values) and rejected (for the same reasons).
    rng = random.Random(seed)
    if fmt == "parquet":  # a Parquet file has one type per column: shuffle within each file
        regrouped = [(ptype, rng.sample(rows, len(rows))) for ptype, rows in files]
    else:
        every = [r for _, rows in files for r in rows]
        rng.shuffle(every)
        cut = sorted(rng.sample(range(len(every) + 1), 2))
        regrouped = [
            (None, every[: cut[0]]),
            (None, every[cut[0] : cut[1]]),
            (None, every[cut[1] :]),
        ]
    other = tmp_path_factory.mktemp("shuffled")
    other_paths = []
    for i, (ptype, rows) in enumerate(regrouped):
        if rows or fmt == "csv":
            path = str(other / f"part-{i}.{fmt}")
            _write(fmt, path, rows, ptype)
            other_paths.append(path)
    small = dataclasses.replace(
        spec, batch_size=rng.choice([1, 2, 5, 64]), split_bytes=rng.choice([40, 97, 1 << 20])
    )
    again_written, again_rejected = _read_and_validate(small, other_paths)
    assert again_written == written
    assert again_rejected == rejected
