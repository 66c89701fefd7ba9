"""--input bq://PROJECT.DATASET.TABLE: a BigQuery table read through the Storage Read API, on the
real local emulator (bqemulator serves it over plain gRPC: BIGQUERY_STORAGE_EMULATOR_HOST)."""

from __future__ import annotations

import datetime
import decimal
import json
import shutil

import joblib
import numpy as np
import pytest

from tests.conftest import BQ_PROJECT, FEATURES, assert_one_line_error, run_cli, score

pytestmark = pytest.mark.slow

DATASET = f"{BQ_PROJECT}.nightly"
NIGHT = f"{DATASET}.events"
DAY = "2026-11-24"
# The filtered night every scoring test reads: the table, the filter, the run date.
ONE_DAY = ("--input", f"bq://{NIGHT}", "--input_filter", "day = '{run_date}'", "--run_date", DAY)
# 3,000 rows over three days (1,000 a day); f0 is NULL where id % 500 == 7 (ids 7 and 1507 fall
# on DAY): the model takes no missing value, so those two rows are rejected at validate. (The day
# is a CASE: the emulator's DATE_ADD beside a NUMERIC sum cuts the sum's digits.)
_NIGHT_SQL = f"""
CREATE OR REPLACE TABLE `{NIGHT}` AS
SELECT id,
  CASE MOD(id, 3) WHEN 0 THEN DATE '2026-11-23' WHEN 1 THEN DATE '2026-11-24'
    ELSE DATE '2026-11-25' END AS day,
  NUMERIC '1234567890.123456789' + CAST(id AS NUMERIC) AS amount,
  TIMESTAMP_ADD(TIMESTAMP '2026-11-24 00:00:00.123456+00', INTERVAL id SECOND) AS seen_at,
  IF(MOD(id, 500) = 7, NULL, SIN(id * 1.1) * 2) AS f0,
  COS(id * 0.7) * 2 AS f1, SIN(id * 0.3 + 1) AS f2, COS(id * 1.9 + 2) AS f3
FROM UNNEST(GENERATE_ARRAY(0, 2999)) AS id
"""


@pytest.fixture(scope="module")
def tables(bigquery_emulator):
    """The night's table, one without a feature, one with a DATE feature, and a view."""
    client = bigquery_emulator["client"]
    client.create_dataset(DATASET, exists_ok=True)
    client.query(_NIGHT_SQL).result()
    client.query(
        f"CREATE OR REPLACE TABLE `{DATASET}.lacking` AS SELECT id, f0, f1, f2 FROM `{NIGHT}`"
    ).result()
    client.query(
        f"CREATE OR REPLACE TABLE `{DATASET}.dated` AS "
        f"SELECT id, f0, f1, f2, day AS f3 FROM `{NIGHT}`"
    ).result()
    client.query(f"CREATE OR REPLACE VIEW `{DATASET}.v` AS SELECT * FROM `{NIGHT}`").result()
    return client


@pytest.fixture(scope="module")
def night(tables, models_dir, tmp_path_factory):
    """The night scored once: --input_filter with {run_date}, the run's output (and the
    OpenLineage events it sent, on cli.lineage)."""
    from tests.helpers import serving

    out = tmp_path_factory.mktemp("bq_input") / "out"
    with serving() as receiver:
        cli = run_cli(
            *ONE_DAY,
            "--model",
            models_dir / "binary.joblib",
            "--output",
            out,
            "--max_error_rate",
            "0.01",
            "--openlineage_url",
            receiver.url,
        )
    assert cli.code == 0, cli.stderr
    cli.lineage = receiver.events
    return cli


def _day_rows(client):
    """The day's rows as BigQuery's query API returns them (not through the read path)."""
    job = client.query(f"SELECT * FROM `{NIGHT}` WHERE day = DATE '{DAY}' ORDER BY id")
    return job.to_arrow(create_bqstorage_client=False).to_pandas()


def test_a_night_of_a_table_scored_as_the_model_scores_it(night, tables, models_dir):
    rows = _day_rows(tables)
    assert len(rows) == 1000
    bad = rows.f0.isna()
    assert bad.sum() == 2
    model = joblib.load(models_dir / "binary.joblib")
    got = night.predictions().sort_values("id").reset_index(drop=True)
    want = rows[~bad].reset_index(drop=True)
    # Keys verbatim: the NUMERIC keeps its digits, the TIMESTAMP its instant, the DATE its day.
    assert list(got.columns[:4]) == ["id", "day", "amount", "seen_at"]
    assert got.id.tolist() == want.id.tolist()
    assert got.amount.tolist() == want.amount.tolist()
    assert got.amount[0] == decimal.Decimal("1234567890.123456789") + int(got.id[0])
    assert (got.seen_at == want.seen_at).all() and str(got.seen_at.dt.tz) == "UTC"
    assert got.day.tolist() == want.day.tolist() == [datetime.date(2026, 11, 24)] * 998
    np.testing.assert_array_equal(got.prediction, model.predict(want[FEATURES]))
    np.testing.assert_allclose(got.proba_1, model.predict_proba(want[FEATURES])[:, 1], rtol=1e-12)

    m = night.manifest
    assert m["status"] == "succeeded"
    assert m["counts"]["rows_read"] == 1000
    assert m["counts"]["rows_predicted"] == 998 and m["counts"]["rows_failed"] == 2
    assert [i["path"] for i in m["inputs"]] == [f"bq://{NIGHT}"]
    assert m["input_format"] == "bigquery"
    table = m["input_table"]
    assert table["table"] == NIGHT and table["filter"] == f"day = '{DAY}'"
    snapshot = datetime.datetime.fromisoformat(table["snapshot_time"])
    started = datetime.datetime.fromisoformat(m["started_at"].replace("Z", "+00:00"))
    assert abs((snapshot - started).total_seconds()) < 60
    # OpenLineage: the input is the table in BigQuery's namespace, at the session's snapshot.
    start, complete = night.lineage
    for event in (start, complete):
        (table_in,) = event["inputs"]
        assert (table_in["namespace"], table_in["name"]) == ("bigquery", NIGHT)
        assert table_in["facets"]["version"]["datasetVersion"] == table["snapshot_time"]
    assert complete["inputs"][0]["inputFacets"]["inputStatistics"]["rowCount"] == 1000
    # The emulator hands a small table out as one stream: the launcher split it in two
    # (SplitReadStream) for the two work units the DirectRunner's default wants.
    assert table["streams"] == 2


def test_errors_name_the_table_the_stream_and_the_row_in_it(night, bigquery_emulator):
    from transforms.bqread import read_client, read_stream

    errors = night.errors()
    assert sorted(e["record"]["id"] for e in errors) == [7, 1507]
    client = read_client()
    schema = None
    for e in errors:
        assert e["stage"] == "validate" and e["source"] == f"bq://{NIGHT}"
        assert "line" not in e and e["stream"].startswith(
            night.manifest["input_table"]["read_session"]
        )
        assert e["record"]["f0"] is None and e["record"]["amount"].endswith(".123456789")
        # The position is the row's within its stream: read there, it is the rejected row.
        if schema is None:  # the first response of a stream carries the schema
            schema = _stream_schema(client, e["stream"])
        batches = list(read_stream(client, e["stream"], schema))
        ids = [i for b in batches for i in b.column("id").to_pylist()]
        assert ids[e["row_index"]] == e["record"]["id"]


def _stream_schema(client, stream):
    import pyarrow as pa

    from transforms.bqread import read_schema

    for response in client.read_rows(stream):
        return read_schema(response.arrow_schema.serialized_schema)
    return pa.schema([])


@pytest.mark.backed
def test_a_filter_that_selects_no_rows_is_an_empty_night(tables, models_dir, tmp_path):
    cli = run_cli(
        "--input",
        f"bq://{NIGHT.replace('.', ':', 1)}",  # the project:dataset.table spelling
        "--input_filter",
        "day = '{run_date}'",
        "--run_date",
        "2030-01-01",
        "--model",
        models_dir / "binary.joblib",
        "--output",
        tmp_path / "o",
    )
    assert cli.code == 0, cli.stderr
    assert "selects no rows" in cli.stderr and "the run reads 0 rows" in cli.stderr
    assert cli.manifest["counts"]["rows_read"] == 0
    assert cli.manifest["input_table"]["filter"] == "day = '2030-01-01'"
    assert "WARNING: no rows: --input_filter \"day = '2030-01-01'\" selects no rows in bq://" in (
        cli.result.stdout
    )


@pytest.mark.parametrize(
    ("table", "more", "words"),
    [
        ("nightly.nosuch", [], ["does not exist"]),
        ("nosuch.events", [], ["does not exist"]),
        ("nightly.v", [], ["is a view", "CREATE TABLE"]),
        ("nightly.events", ["--input_filter", "nosuch = 1"], ["BigQuery says", "nosuch"]),
        ("nightly.lacking", [], ["lacks model feature column(s): f3"]),
        (
            "nightly.events",
            ["--key_columns", "id,Day"],
            ["lacks key column(s): Day (the file has 'day'"],
        ),
        ("nightly.dated", [], ["f3 (DATE)", "cannot take"]),
        ("nightly.events", ["--input_format", "parquet"], ["leave --input_format out"]),
    ],
    ids=["no-table", "no-dataset", "view", "filter", "feature", "key", "date-feature", "format"],
)
def test_launch_refusals(tables, models_dir, tmp_path, table, more, words):
    out = tmp_path / "o"
    cli = score(f"bq://{BQ_PROJECT}.{table}", models_dir / "binary.joblib", out, *more)
    assert_one_line_error(cli, *words)
    assert not out.exists()


def test_bigquery_unreachable_is_exit_3_and_the_output_stays(night, tmp_path):
    import socket

    out = tmp_path / "o"
    shutil.copytree(night.output, out)
    before = (out / "manifest.json").read_bytes()
    with socket.socket() as s:  # a port nothing listens on: the emulator stopped
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cli = run_cli(
        *ONE_DAY,
        "--model",
        night.manifest["model"]["uri"],
        "--output",
        out,
        env={
            "BIGQUERY_EMULATOR_HOST": f"http://127.0.0.1:{port}",
            "BIGQUERY_STORAGE_EMULATOR_HOST": f"127.0.0.1:{port}",
        },
    )
    assert cli.code == 3, cli.stderr
    assert "BigQuery is unreachable" in cli.stderr and "Traceback" not in cli.stderr
    assert (out / "manifest.json").read_bytes() == before
    assert json.loads(before)["status"] == "succeeded"


def test_no_google_credentials_is_exit_2_at_once(tmp_path, models_dir):
    """No emulator and no credentials: what a person must fix, not a retry (as for gs://).
    Nothing reaches a real host: the metadata server and any proxy are a closed port."""
    closed = "http://127.0.0.1:9"
    env = {"BIGQUERY_EMULATOR_HOST": None, "BIGQUERY_STORAGE_EMULATOR_HOST": None}
    env |= {"GOOGLE_APPLICATION_CREDENTIALS": None, "NO_GCE_CHECK": "True"}
    env |= {"GCE_METADATA_HOST": "127.0.0.1:9", "GCE_METADATA_IP": "127.0.0.1:9"}
    env |= {"HOME": str(tmp_path), "CLOUDSDK_CONFIG": str(tmp_path / "gcloud")}
    env |= {v: closed for v in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy")}
    out = tmp_path / "o"
    cli = score(f"bq://{NIGHT}", models_dir / "binary.joblib", out, env=env)
    assert_one_line_error(cli, "Google credentials")
    assert cli.code == 2 and not out.exists()


def test_dataflow_dry_run_of_a_table_input(tables, models_dir, gcs, monkeypatch):
    """A Dataflow job for a table: the launch checks and the session, then the translated job
    reads the session's streams (4 per worker asked for: --max_num_workers 7)."""
    from pipeline.run import run
    from tests.helpers import DATAFLOW

    monkeypatch.setenv("NO_GCE_CHECK", "True")
    gcs["bucket"].blob("bq_input/binary.joblib").upload_from_filename(models_dir / "binary.joblib")
    res = run(
        [
            *ONE_DAY,
            "--model",
            "gs://scoring/bq_input/binary.joblib",
            "--output",
            "gs://scoring/bq_input/out",
            *DATAFLOW,
        ]
    )
    assert res.dry_run and res.exit_code == 0
    assert not list(gcs["bucket"].list_blobs(prefix="bq_input/out")), "a dry run writes nothing"
    job = res.pipeline_result.job
    top = {
        t.unique_name
        for t in job.proto_pipeline.components.transforms.values()
        if t.unique_name and "/" not in t.unique_name
    }
    assert {"PlanInput", "ReadBigQueryStreams", "Validate", "Predict", "Write"} <= top, top
    leaves = {
        t.unique_name
        for t in job.proto_pipeline.components.transforms.values()
        if not t.subtransforms
    }
    assert any("PlanStreams" in name for name in leaves), leaves


def test_a_stream_that_fails_is_exit_3_and_nothing_is_committed(night, tmp_path, monkeypatch):
    """A stream BigQuery cannot serve (here: one the session does not hold, NOT_FOUND on
    ReadRows) fails the run: exit 3, the previous output as it was."""
    from transforms import bqread

    split = bqread.split_streams

    def with_a_lost_stream(client, streams, wanted):
        return (*split(client, streams, wanted), f"{streams[0].rsplit('/', 1)[0]}/lost")

    monkeypatch.setattr(bqread, "split_streams", with_a_lost_stream)
    out = tmp_path / "o"
    shutil.copytree(night.output, out)
    before = sorted((p.relative_to(out), p.read_bytes()) for p in out.rglob("*") if p.is_file())
    cli = run_cli(
        *ONE_DAY,
        "--model",
        night.manifest["model"]["uri"],
        "--output",
        out,
        "--max_error_rate",
        "0.01",
    )
    assert cli.code == 3, cli.stderr
    assert "/lost of bq://" in cli.stderr and "Traceback" not in cli.stderr
    after = sorted((p.relative_to(out), p.read_bytes()) for p in out.rglob("*") if p.is_file())
    assert after == before


def test_input_filter_is_for_a_table_only(models_dir, tmp_path):
    cli = run_cli(
        "--input",
        tmp_path / "in" / "*.parquet",
        "--input_filter",
        "day = '{run_date}'",
        "--model",
        models_dir / "binary.joblib",
        "--output",
        tmp_path / "o",
    )
    assert_one_line_error(cli, "--input_filter filters the rows of a BigQuery table input")
    assert not (tmp_path / "o").exists()
