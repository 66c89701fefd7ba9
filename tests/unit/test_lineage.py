"""OpenLineage events as pipeline.lineage builds and sends them, against a real HTTP receiver on
127.0.0.1 and the OpenLineage JSON schema."""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from pathlib import Path

import pytest

from pipeline.lineage import Dataset, Lineage, job_name_for, run_uuid
from tests.helpers import closed_port, serving

ROOT = Path(__file__).resolve().parents[2]


RUN_ID = "20261124T031500Z-1a2b3c4d"


RUN_DATE = "2026-11-24"


OUT = f"gs://scores-bucket/churn/{RUN_DATE}"


MODEL = {
    "uri": "models:/churn@champion",
    "version": "7",
    "sha256": "3f" * 32,
    "run_id": "0f1e2d3c4b5a69788796a5b4c3d2e1f0",
}


FIELDS = [("customer_id", "int64"), ("tenure", "double"), ("plan", "string")]


CORE_SCHEMA = "https://openlineage.io/spec/2-0-2/OpenLineage.json"


def lineage(url: str | None, **kwargs) -> Lineage:
    return Lineage(url, job_name_for(OUT, RUN_DATE), RUN_ID, MODEL, run_date=RUN_DATE, **kwargs)


def started() -> tuple[list[Dataset], list[Dataset]]:
    """The datasets as known at START: locations and the input's schema, no counts."""
    return (
        [Dataset(f"gs://landing/churn/{RUN_DATE}/*.parquet", fields=FIELDS)],
        [
            Dataset(f"{OUT}/predictions"),
            Dataset(f"{OUT}/errors"),
            Dataset("bigquery:analytics-prod:scores.churn"),
        ],
    )


def completed() -> tuple[list[Dataset], list[Dataset]]:
    """The datasets after the commit, with their counts."""
    return (
        [Dataset(f"gs://landing/churn/{RUN_DATE}/*.parquet", rows=1000, files=3, fields=FIELDS)],
        [
            Dataset(f"{OUT}/predictions", rows=990, files=2),
            Dataset(f"{OUT}/errors", rows=10, files=1),
            Dataset("bigquery:analytics-prod:scores.churn", rows=990),
        ],
    )


def names(datasets: list[dict]) -> list[tuple[str, str]]:
    return [(d["namespace"], d["name"]) for d in datasets]


def test_start_then_complete_name_the_run_its_datasets_and_the_model(receiver):
    run = lineage(receiver.url)
    assert run.start(*started())
    assert run.complete(*completed(), status="succeeded")
    assert run.not_sent == []

    assert [path for path, _, _ in receiver.requests] == ["/api/v1/lineage"] * 2
    start, complete = receiver.events
    assert [start["eventType"], complete["eventType"]] == ["START", "COMPLETE"]
    assert start["run"]["runId"] == complete["run"]["runId"] == run_uuid(RUN_ID)
    assert uuid.UUID(start["run"]["runId"])
    for event in (start, complete):
        assert event["job"]["namespace"] == "beamscore"
        assert event["job"]["name"] == "gs://scores-bucket/churn/{run_date}"
        assert event["job"]["facets"]["jobType"]["processingType"] == "BATCH"
        facets = event["run"]["facets"]
        assert facets["beamscore_scoring"]["runId"] == RUN_ID
        assert facets["nominalTime"]["nominalStartTime"] == "2026-11-24T00:00:00Z"
        model = facets["beamscore_model"]
        assert (model["uri"], model["version"], model["sha256"]) == (
            "models:/churn@champion",
            "7",
            "3f" * 32,
        )
        assert model["mlflowRunId"] == MODEL["run_id"]
        assert model["_producer"] == event["producer"]
        assert model["_schemaURL"].endswith(
            "/1-0-0/BeamscoreModelRunFacet.json#/$defs/BeamscoreModelRunFacet"
        )
        assert names(event["inputs"]) == [("gs://landing", "churn/2026-11-24/*.parquet")]
        assert names(event["outputs"]) == [
            ("gs://scores-bucket", "churn/2026-11-24/predictions"),
            ("gs://scores-bucket", "churn/2026-11-24/errors"),
            ("bigquery", "analytics-prod.scores.churn"),
        ]
        schema = event["inputs"][0]["facets"]["schema"]["fields"]
        assert [(f["name"], f["type"]) for f in schema] == FIELDS

    # Counts are known only once the run has committed its output.
    assert "status" not in start["run"]["facets"]["beamscore_scoring"]
    assert all(not d.get("inputFacets") for d in start["inputs"])
    assert all(not d.get("outputFacets") for d in start["outputs"])
    assert complete["run"]["facets"]["beamscore_scoring"]["status"] == "succeeded"
    read = complete["inputs"][0]["inputFacets"]["inputStatistics"]
    assert (read["rowCount"], read["fileCount"]) == (1000, 3)
    written = [d["outputFacets"]["outputStatistics"] for d in complete["outputs"]]
    assert [w["rowCount"] for w in written] == [990, 10, 990]
    assert [w.get("fileCount") for w in written] == [2, 1, None]


def test_fail_carries_the_error_message_on_the_same_run(receiver):
    run = lineage(receiver.url)
    inputs, outputs = started()
    assert run.start(inputs, outputs)
    message = "loading predictions into BigQuery table analytics-prod.scores.churn failed"
    assert run.fail(message, inputs, stack_trace="Traceback (most recent call last): ...")

    start, fail = receiver.events
    assert [start["eventType"], fail["eventType"]] == ["START", "FAIL"]
    assert fail["run"]["runId"] == start["run"]["runId"]
    error = fail["run"]["facets"]["errorMessage"]
    assert error["message"] == message
    assert error["programmingLanguage"] == "python"
    assert error["stackTrace"].startswith("Traceback")
    assert names(fail["inputs"]) == names(start["inputs"])
    assert fail["outputs"] == []


def test_local_paths_and_table_spellings_follow_the_naming_spec(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert Dataset("/data/in/part-0.parquet").naming() == ("file", "/data/in/part-0.parquet")
    assert Dataset("file:///data/out/predictions").naming() == ("file", "/data/out/predictions")
    assert Dataset("out/errors").naming() == ("file", str(tmp_path / "out" / "errors"))
    assert Dataset("gs://bucket/").naming() == ("gs://bucket", "/")
    assert Dataset("bigquery:p.d.t").naming() == ("bigquery", "p.d.t")
    assert Dataset("bigquery:p:d.t").naming() == ("bigquery", "p.d.t")


def test_job_name_is_the_output_with_the_run_date_as_a_placeholder():
    assert job_name_for(f"{OUT}/", RUN_DATE) == "gs://scores-bucket/churn/{run_date}"
    assert job_name_for("gs://b/scores/{run_date}", RUN_DATE) == "gs://b/scores/{run_date}"
    assert job_name_for("/srv/scores/latest", RUN_DATE) == "/srv/scores/latest"


def test_environment_supplies_url_namespace_and_api_key(receiver, monkeypatch):
    monkeypatch.setenv("OPENLINEAGE_URL", receiver.url)
    monkeypatch.setenv("OPENLINEAGE_NAMESPACE", "nightly-scoring")
    monkeypatch.setenv("OPENLINEAGE_API_KEY", "k-123")
    monkeypatch.setenv("OPENLINEAGE_ENDPOINT", "api/v2/events")
    run = lineage(None)
    assert run.enabled
    assert run.start(*started())
    ((path, headers, _),) = receiver.requests
    assert path == "/api/v2/events"
    assert headers["Authorization"] == "Bearer k-123"
    assert receiver.events[0]["job"]["namespace"] == "nightly-scoring"

    # An explicit URL (the flag) wins over the environment's.
    monkeypatch.delenv("OPENLINEAGE_ENDPOINT")
    monkeypatch.setenv("OPENLINEAGE_URL", f"http://127.0.0.1:{closed_port()}")
    assert lineage(receiver.url).complete(*completed())
    assert [e["eventType"] for e in receiver.events] == ["START", "COMPLETE"]
    assert receiver.requests[1][0] == "/api/v1/lineage"


def test_no_url_or_disabled_sends_nothing_and_warns_nothing(receiver, monkeypatch, caplog):
    caplog.set_level(logging.WARNING)
    off = lineage(None)
    assert not off.enabled
    assert not off.start(*started())
    monkeypatch.setenv("OPENLINEAGE_DISABLED", "true")
    disabled = lineage(receiver.url)
    assert not disabled.enabled
    assert not disabled.start(*started())
    assert receiver.requests == []
    assert own(caplog) == []


def own(caplog) -> list[logging.LogRecord]:
    """This project's log records: not those a library's leftover thread of an earlier test in
    this process logs meanwhile (a gRPC credentials refresh retrying, say)."""
    return [r for r in caplog.records if r.name.split(".")[0] in ("pipeline", "transforms")]


def assert_not_sent_quickly(send, run: Lineage, caplog, bound: float) -> str:
    """Calls `send`, which must return False within `bound` seconds and log one warning."""
    caplog.set_level(logging.WARNING, logger="pipeline.lineage")
    begun = time.monotonic()
    assert send() is False
    elapsed = time.monotonic() - begun
    assert elapsed < bound, f"took {elapsed:.1f}s"
    (record,) = own(caplog)
    assert record.levelno == logging.WARNING
    assert run.not_sent
    return record.getMessage()


def test_endpoint_down_is_a_warning_not_an_error(caplog):
    run = lineage(f"http://127.0.0.1:{closed_port()}")
    message = assert_not_sent_quickly(lambda: run.start(*started()), run, caplog, bound=2)
    assert "OpenLineage START event NOT sent to http://127.0.0.1:" in message
    assert "/api/v1/lineage" in message
    assert run.not_sent == ["START"]


def test_url_without_a_scheme_is_a_warning_not_an_error(caplog):
    run = lineage("lineage.internal:5000")
    message = assert_not_sent_quickly(lambda: run.start(*started()), run, caplog, bound=2)
    assert "lineage.internal:5000" in message


@pytest.mark.backed
def test_endpoint_that_refuses_the_event_is_a_warning(caplog):
    with serving(status=500) as refusing:
        run = lineage(refusing.url)
        message = assert_not_sent_quickly(lambda: run.complete(*completed()), run, caplog, bound=2)
        assert len(refusing.requests) == 1  # one attempt, no retry loop
    assert "500" in message


def test_endpoint_that_never_answers_costs_at_most_the_timeout(caplog):
    # The kernel completes the connection into the backlog; nobody ever reads or answers.
    with socket.create_server(("127.0.0.1", 0)) as silent:
        run = lineage(f"http://127.0.0.1:{silent.getsockname()[1]}", timeout=1.0)
        message = assert_not_sent_quickly(lambda: run.start(*started()), run, caplog, bound=2.5)
    assert "START event NOT sent" in message


def test_endpoint_that_trickles_bytes_costs_at_most_the_timeout(caplog):
    """A byte every 0.2 s defeats a per-read timeout; the event's deadline still holds."""
    stop = threading.Event()

    def trickle(listener: socket.socket) -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nX-Slow: ")
            deadline = time.monotonic() + 15
            while not stop.is_set() and time.monotonic() < deadline:
                conn.sendall(b"a")
                stop.wait(0.2)

    with socket.create_server(("127.0.0.1", 0)) as listener:
        server = threading.Thread(target=trickle, args=(listener,), daemon=True)
        server.start()
        run = lineage(f"http://127.0.0.1:{listener.getsockname()[1]}", timeout=1.0)
        try:
            message = assert_not_sent_quickly(
                lambda: run.complete(*completed()), run, caplog, bound=2.5
            )
        finally:
            stop.set()
            server.join(5)
    assert "no answer within 1s" in message


def test_a_dataset_without_naming_costs_the_event_not_the_run(receiver, caplog):
    run = lineage(receiver.url)
    message = assert_not_sent_quickly(
        lambda: run.start([Dataset("s3://bucket/in.parquet")], []), run, caplog, bound=2
    )
    assert "s3://bucket/in.parquet" in message
    assert receiver.requests == []


def openlineage_schemas() -> dict[str, dict]:
    """The OpenLineage JSON schemas by `$id`, plus this repository's custom facet schemas.

    From OPENLINEAGE_SPEC_DIR (a checkout's `spec/` directory) when set, else from the copies in
    tests/openlineage_spec/ (openlineage-python ships none); empty when neither holds the core
    schema.
    """
    spec = os.environ.get("OPENLINEAGE_SPEC_DIR") or ROOT / "tests" / "openlineage_spec"
    paths = list(Path(spec).rglob("*.json"))
    schemas = {}
    for path in [*paths, *(ROOT / "pipeline" / "lineage_facets").rglob("*.json")]:
        doc = json.loads(path.read_text())
        if isinstance(doc, dict) and "$id" in doc:
            schemas[doc["$id"]] = doc
    return schemas if CORE_SCHEMA in schemas else {}


def test_custom_facets_point_at_the_schemas_this_repository_ships(receiver):
    assert lineage(receiver.url).start(*started())
    shipped = {}
    for path in (ROOT / "pipeline" / "lineage_facets").rglob("*.json"):
        doc = json.loads(path.read_text())
        shipped[doc["$id"]] = doc
    facets = receiver.events[0]["run"]["facets"]
    for key in ("beamscore_model", "beamscore_scoring"):
        url, _, pointer = facets[key]["_schemaURL"].partition("#")
        doc = shipped[url]
        assert key in doc["properties"]
        assert pointer.removeprefix("/$defs/") in doc["$defs"]


def test_events_match_the_openlineage_json_schema(receiver):
    schemas = openlineage_schemas()
    assert schemas, "the core OpenLineage schema is missing (tests/openlineage_spec/)"
    from jsonschema import Draft202012Validator
    from referencing import Registry
    from referencing.jsonschema import DRAFT202012

    registry = Registry().with_resources(
        (id_, DRAFT202012.create_resource(doc)) for id_, doc in schemas.items()
    )

    def validate(instance: dict, ref: str) -> None:
        Draft202012Validator(
            {"$ref": ref}, registry=registry, format_checker=Draft202012Validator.FORMAT_CHECKER
        ).validate(instance)

    run = lineage(receiver.url)
    inputs, outputs = started()
    assert run.start(inputs, outputs)
    assert run.complete(*completed(), status="failed")
    assert run.fail("worker crashed", inputs, stack_trace="Traceback ...")
    assert run.abort(inputs)
    events = receiver.events
    assert [e["eventType"] for e in events] == ["START", "COMPLETE", "FAIL", "ABORT"]
    for event in events:
        validate(event, event["schemaURL"])
        facets = [event["run"]["facets"], event["job"]["facets"]]
        for d in event["inputs"]:
            facets += [d.get("facets", {}), d.get("inputFacets", {})]
        for d in event["outputs"]:
            facets += [d.get("facets", {}), d.get("outputFacets", {})]
        for key, facet in ((k, f) for group in facets for k, f in group.items()):
            # Each facet file's root names its key: a misspelt key would pass the core schema.
            url = facet["_schemaURL"].partition("#")[0]
            assert key in schemas[url]["properties"], (key, url)
            validate({key: facet}, url)
