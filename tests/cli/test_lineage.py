"""OpenLineage events, sent to a real HTTP receiver on loopback, and endpoints that fail."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pipeline.lineage import run_uuid
from tests.conftest import ROOT, score
from tests.helpers import closed_port


@pytest.mark.subprocess
def test_importing_the_module_does_not_import_the_client():
    code = "import sys, pipeline.lineage; print('openlineage' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"


def test_the_cli_sends_start_and_complete_with_what_the_run_read_and_wrote(
    receiver, tmp_path, models_dir
):
    from tests.conftest import float_rows, write_input

    write_input(float_rows(300), tmp_path / "in" / "a.parquet")
    write_input(float_rows(200, start_id=300), tmp_path / "in" / "b.parquet")
    cli = score(
        tmp_path / "in" / "*.parquet",
        models_dir / "binary.joblib",
        tmp_path / "out",
        "--openlineage_url",
        receiver.url,
    )
    assert cli.code == 0, cli.stderr
    assert "lineage:     sent" in cli.result.stdout
    m = cli.manifest
    start, complete = receiver.events
    assert (start["eventType"], complete["eventType"]) == ("START", "COMPLETE")
    assert start["run"]["runId"] == complete["run"]["runId"] == run_uuid(m["run_id"])
    assert complete["job"]["name"] == str(tmp_path / "out")
    inputs = {(d["namespace"], d["name"]): d for d in complete["inputs"]}
    assert set(inputs) == {("file", i["path"]) for i in m["inputs"]}
    for i in m["inputs"]:
        stats = inputs[("file", i["path"])]["inputFacets"]["inputStatistics"]
        assert stats["rowCount"] == i["rows_read"]
    outputs = {d["name"]: d for d in complete["outputs"]}
    predictions = outputs[str(tmp_path / "out" / "predictions")]["outputFacets"]
    assert predictions["outputStatistics"]["rowCount"] == m["counts"]["rows_predicted"] == 500
    model = complete["run"]["facets"]["beamscore_model"]
    assert (model["uri"], model["version"], model["sha256"]) == (
        m["model"]["uri"],
        m["model"]["version"],
        m["model"]["sha256"],
    )
    assert complete["run"]["facets"]["beamscore_scoring"]["status"] == "succeeded"


def test_a_lineage_server_that_is_down_costs_the_run_nothing(tmp_path, models_dir):
    from tests.conftest import float_rows, write_input

    write_input(float_rows(100), tmp_path / "in.parquet")
    cli = score(
        tmp_path / "in.parquet",
        models_dir / "binary.joblib",
        tmp_path / "out",
        env={"OPENLINEAGE_URL": f"http://127.0.0.1:{closed_port()}"},
    )
    assert cli.code == 0, cli.stderr
    assert "lineage:     NOT sent (START, COMPLETE)" in cli.result.stdout
    assert "OpenLineage START event NOT sent" in cli.stderr and "Traceback" not in cli.stderr
    assert cli.manifest["status"] == "succeeded"
