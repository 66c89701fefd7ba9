"""The history read by identity: whatever sits in the sibling folders of an --output pattern
(copies of a night under another date, corrupt or foreign manifests, gaps, reruns, backfills in
any order), each night counts once, in date order, and the night checks use exactly those; every
folder left out is said, with the reason. Without a pipeline: pipeline.nights over files."""

from __future__ import annotations

import datetime
import json
import logging
import os
import statistics
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.manifest import PRODUCER
from pipeline.nights import Nights, evaluate, read_nights

TONIGHT = datetime.date(2026, 3, 20)
SLOTS = 12  # the run dates before tonight the layouts use
KINDS = ("gap", "night", "night", "copy", "corrupt", "array", "foreign", "no_run_id", "empty")


def _manifest(date: str, rows: int, rerun: int) -> dict:
    return {
        "producer": PRODUCER,
        "run_id": f"run-{date}-{rerun}",
        "run_date": date,
        "status": "succeeded",
        "counts": {"rows_read": rows},
    }


@settings(
    max_examples=int(os.environ.get("HISTORY_EXAMPLES", "200")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    layout=st.lists(
        st.tuples(st.sampled_from(KINDS), st.integers(1, 10_000), st.integers(0, 3)),
        min_size=SLOTS,
        max_size=SLOTS,
    ),
    order=st.randoms(use_true_random=False),
)
def test_each_night_counts_once_in_date_order_and_every_folder_left_out_is_said(
    tmp_path, caplog, layout, order
):
    out = Path(tempfile.mkdtemp(dir=tmp_path))
    dates = [(TONIGHT - datetime.timedelta(days=SLOTS - i)).isoformat() for i in range(SLOTS)]
    genuine: dict[str, dict] = {}
    writes: list[tuple[str, bytes]] = []
    for date, (kind, rows, rerun) in zip(dates, layout):
        if kind == "night":
            genuine[date] = _manifest(date, rows, rerun)
            writes.append((date, json.dumps(genuine[date]).encode()))
    expected_ignored: dict[str, str] = {}
    for date, (kind, rows, _) in zip(dates, layout):
        if kind == "copy" and genuine:  # cp -r out/<a night> out/<this date>
            source = sorted(genuine)[rows % len(genuine)]
            writes.append((date, json.dumps(genuine[source]).encode()))
            expected_ignored[date] = f"of the night of '{source}'"
        elif kind == "corrupt":
            writes.append((date, b'{"producer": "beamscore", "run_id": '))
            expected_ignored[date] = "not valid JSON"
        elif kind == "array":
            writes.append((date, b"[1, 2]"))
            expected_ignored[date] = "a JSON list, not an object"
        elif kind == "foreign":
            writes.append((date, json.dumps({"status": "succeeded", "run_date": date}).encode()))
            expected_ignored[date] = "not one of this tool's"
        elif kind == "no_run_id":
            writes.append((date, json.dumps({"producer": PRODUCER, "run_date": date}).encode()))
            expected_ignored[date] = "no run_id"
        elif kind == "empty":
            (out / date).mkdir()  # a folder without a manifest: a gap, not a night
    order.shuffle(writes)  # backfilled in any order
    for date, data in writes:
        (out / date).mkdir(exist_ok=True)
        (out / date / "manifest.json").write_bytes(data)

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="pipeline.nights"):
        found, source, ignored = read_nights(str(out / "{run_date}"), TONIGHT.isoformat())

    assert source == "manifests"
    assert [b["run_date"] for b in found] == sorted(genuine)  # each once, in date order
    assert [b["run_id"] for b in found] == [genuine[d]["run_id"] for d in sorted(genuine)]
    assert [i["run_date"] for i in ignored] == sorted(expected_ignored)
    for item in ignored:
        assert expected_ignored[item["run_date"]] in item["reason"], item
        assert item["folder"] == str(out / item["run_date"])
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == len(expected_ignored)  # none left out in silence
    for date in expected_ignored:
        assert any(date in w for w in warned)

    # The check compares tonight with exactly those nights.
    rows = [genuine[d]["counts"]["rows_read"] for d in sorted(genuine)]
    nights = Nights(max_rows_change=0.0, history=tuple(found), history_source=source)
    tonight_rows = 12_345
    failed, skipped = evaluate(nights, tonight_rows, None)
    if len(rows) < 3:
        assert [s["check"] for s in skipped] == ["max_rows_change"] and not failed
    else:
        median = statistics.median(rows)
        assert (
            f"against a median of {median:,.0f} over the previous {len(rows)} nights"
            in (failed[0]["message"])
        )
