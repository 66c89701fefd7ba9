"""The request log (--log_dir): online traffic in the batch output's layout, each segment a
committed mini-night whose counts reconcile, nothing lost at shutdown, and pipeline.evaluate
working on a segment."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from models import demo
from pipeline.evaluate import main as evaluate
from tests.conftest import run_cli
from tests.service.conftest import running

pytestmark = pytest.mark.service


def _segments(log: Path) -> list[Path]:
    return sorted(p.parent for p in log.glob("*/*/manifest.json"))


def _rows(n: int, start: int) -> list[dict]:
    frame = demo.make_rows(n, seed=5, start_id=start)
    return frame[["customer_id", *demo.NUMERIC, *demo.CATEGORICAL]].to_dict("records")


def test_segments_rotate_reconcile_and_the_last_is_written_at_shutdown(tmp_path):
    model, inputs = demo.write_demo(str(tmp_path / "demo"), rows=50, files=1)
    night = tmp_path / "night"
    assert run_cli("--input", inputs, "--model", model, "--output", night).code == 0
    log = tmp_path / "log"
    sent, bad = [], []
    with running("--like", night, "--log_dir", log, "--log_rotate_s", "0.5") as service:
        for i in range(4):
            rows = _rows(20, start=1000 + 20 * i)
            rows[3]["tenure_months"] = "many"  # rejected: its record goes to the errors
            res = service.predict(rows)
            assert res.status_code == 200
            sent += [r["customer_id"] for r in rows if r is not rows[3]]
            bad.append(rows[3])
            if i == 1:
                time.sleep(1.5)  # a rotation on the timer, with the service idle
        assert len(_segments(log)) >= 1  # written while the service runs
    segments = _segments(log)
    assert len(segments) >= 2
    predicted, errors = [], []
    for seg in segments:
        manifest = json.loads((seg / "manifest.json").read_text())
        assert manifest["status"] == "succeeded" and manifest["source"] == "online"
        counts = manifest["counts"]
        assert counts["rows_read"] == counts["rows_predicted"] + counts["rows_failed"]
        table = pa.concat_tables(pq.read_table(seg / f) for f in manifest["outputs"]["predictions"])
        assert table.num_rows == counts["rows_predicted"]
        assert table.schema.field("customer_id").type == pa.int64()  # typed as the night did
        predicted += table.column("customer_id").to_pylist()
        mine = [
            json.loads(line)
            for f in manifest["outputs"]["errors"]
            for line in (seg / f).read_text().splitlines()
        ]
        assert counts["rows_failed"] == len(mine)
        errors += mine
    assert sorted(predicted) == sorted(sent)  # each scored row once, none lost
    assert [e["record"]["customer_id"] for e in errors] == [r["customer_id"] for r in bad]
    assert {e["error"] for e in errors} == {"tenure_months: 'many' is not a number"}
    assert {e["stage"] for e in errors} == {"validate"}

    # A segment is a night pipeline.evaluate takes: the labels join on the night's keys.
    seg = segments[0]
    ids = pq.read_table(seg / "predictions").column("customer_id").to_pylist()
    labels = pd.DataFrame({"customer_id": ids, "churned": ["no", "yes"] * (len(ids) // 2)
                           + ["no"] * (len(ids) % 2)})  # fmt: skip
    labels.to_csv(tmp_path / "labels.csv", index=False)
    code = evaluate(
        ["--predictions", str(seg), "--labels", str(tmp_path / "labels.csv"),
         "--label_column", "churned"]
    )  # fmt: skip
    assert code == 0
    quality = json.loads((seg / "quality.json").read_text())
    assert quality["rows_labelled"] == len(ids)


def test_served_from_flags_the_echoed_keys_are_one_json_column(tmp_path, models_dir):
    log = tmp_path / "log"
    rows = _rows(3, start=2**60)
    rows[1]["order"] = "A-7"
    with running("--model", models_dir / "categorical.joblib", "--log_dir", log) as service:
        assert service.predict(rows).status_code == 200
    (segment,) = _segments(log)  # the default rotation is 300 s: written at shutdown
    table = pq.read_table(segment / "predictions")
    keys = [json.loads(k) for k in table.column("request_keys").to_pylist()]
    assert keys == [
        {"customer_id": 2**60},
        {"customer_id": 2**60 + 1, "order": "A-7"},
        {"customer_id": 2**60 + 2},
    ]


def test_a_log_dir_it_cannot_write_is_exit_2(tmp_path, models_dir, capsys):
    from pipeline.serve import main

    (tmp_path / "file").write_text("")
    code = main(["--model", str(models_dir / "binary.joblib"), "--port", "0",
                 "--log_dir", str(tmp_path / "file" / "log")])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --log_dir ") and err.count("\n") == 1


def test_a_gs_log_dir_on_the_storage_emulator(gcs, models_dir):
    bucket = gcs["bucket"]
    rows = _rows(4, start=7)
    rows[2]["plan"] = None  # the demo's one-hot takes a missing category: scored
    rows[3]["monthly_spend"] = "lots"
    with running("--model", models_dir / "categorical.joblib", "--log_dir", "gs://scoring/ol") as s:
        assert s.predict(rows).status_code == 200
    names = sorted(b.name for b in bucket.list_blobs(prefix="ol/"))
    (manifest_name,) = [n for n in names if n.endswith("manifest.json")]
    manifest = json.loads(bucket.blob(manifest_name).download_as_bytes())
    assert manifest["counts"]["rows_predicted"] == 3 and manifest["counts"]["rows_failed"] == 1
    segment = manifest_name.rsplit("/", 1)[0]
    assert f"{segment}/predictions/part-00000.parquet" in names
    record = json.loads(bucket.blob(f"{segment}/errors/part-00000.jsonl").download_as_bytes())
    assert record["record"]["customer_id"] == 10 and record["stage"] == "validate"
