"""The BigQuery table input on the local emulator: our read path against Beam's
ReadFromBigQuery(method=DIRECT_READ), and a whole scoring run on the table against the same rows
as Parquet files.

    .venv/bin/python bench/bigquery_input.py [--rows 1000000] [--repeats 1]

Starts its own bqemulator (the test suite's virtualenv in .cache/bqemulator; run the suite's
BigQuery tests once to build it), creates a table of ROWS rows over two days (id, day, eight
float features) with one SQL statement, and times, each with the day's filter
(`day = '2026-11-24'`, half the rows) and the id and feature columns only:

- read_ours: a Beam pipeline (DirectRunner) whose elements are the read session's streams, read
  by `transforms.bqread.read_stream` (what the scoring job's reader calls): Arrow record batches,
  counted.
- read_beam: `ReadFromBigQuery(method=DIRECT_READ, use_native_datetime=True)` (Arrow on the
  wire), counted. Beam builds its own Storage Read client and asks BigQuery's REST API for the
  table's size through apitools; neither can be pointed at an emulator, so this script hands it
  ours (the same plain-gRPC client) and the table's size: the read itself, a Python dict per
  row, is Beam's own code.
- score_table: `python -m pipeline.run --input bq://... --input_filter ...`, a separate process.
- score_parquet: the same rows (written from the table into 8 Parquet files first), the same
  command on them.

- read_ours_raw, read_beam_raw: the two read loops alone, in this process, without a pipeline:
  `read_stream` (Arrow batches) against Beam's `_CustomBigQueryStorageStreamSource.read_arrow`
  (what DIRECT_READ runs per stream: a dict per row), over the same kind of session.

The emulator keeps one of its few gRPC server threads for good for every stream a client stops
reading before its end (as the launcher does after the first rows it samples, and cancelling
does not free it): after about six, ReadRows hangs. Each case but score_parquet therefore runs on
a fresh emulator holding a fresh copy of the table (not timed). Real BigQuery has no such limit.

Each case's wall time is around the whole thing (session creation included for the reads,
process start and model load for the scoring runs).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
CACHE = REPO / ".cache" / "bqemulator"
PROJECT = "emu-project"
TABLE = f"{PROJECT}.bench.events"
DAY = "2026-11-24"
FEATURES = [f"f{i}" for i in range(8)]
# Feature i of row id: sin(id * (i + 1) * 0.37 + i) * (i + 1), the same in SQL and NumPy.
_SQL = (
    f"CREATE OR REPLACE TABLE `{TABLE}` AS SELECT id, "
    "CASE MOD(id, 2) WHEN 0 THEN DATE '2026-11-23' ELSE DATE '2026-11-24' END AS day, "
    + ", ".join(f"SIN(id * {(i + 1) * 0.37} + {i}) * {i + 1} AS f{i}" for i in range(8))
    + " FROM UNNEST(GENERATE_ARRAY(0, {last})) AS id"
)


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_emulator(log: Path) -> subprocess.Popen:
    rest, grpc = _port(), _port()
    env = {**os.environ, "HOME": str(CACHE / "home"), "BQEMU_ENABLE_FORMAT_EXTENSIONS": "false"}
    proc = subprocess.Popen(
        [str(CACHE / "venv" / "bin" / "bqemulator"), "start", "--rest-host", "127.0.0.1"]
        + ["--rest-port", str(rest), "--grpc-host", "127.0.0.1", "--grpc-port", str(grpc)]
        + ["--project", PROJECT, "--ephemeral", "--log-level", "warning"],
        env=env,
        stdout=open(log, "wb"),  # noqa: SIM115 - the emulator's log, open while it runs
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{rest}/readyz", timeout=1):
                break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                sys.exit(f"bqemulator did not start:\n{log.read_text()[-2000:]}")
            time.sleep(0.2)
    os.environ["BIGQUERY_EMULATOR_HOST"] = f"http://127.0.0.1:{rest}"
    os.environ["BIGQUERY_STORAGE_EMULATOR_HOST"] = f"127.0.0.1:{grpc}"
    return proc


def make_table(rows: int) -> None:
    from transforms.bqread import rest_client

    client = rest_client(PROJECT)
    client.create_dataset(f"{PROJECT}.bench", exists_ok=True)
    client.query(_SQL.format(last=rows - 1)).result()
    assert client.get_table(TABLE).num_rows == rows


def make_model(path: Path) -> None:
    import joblib
    import numpy as np
    import pandas as pd
    from sklearn.linear_model import LogisticRegression

    ids = np.arange(20_000)
    x = pd.DataFrame(
        {f: np.sin(ids * (i + 1) * 0.37 + i) * (i + 1) for i, f in enumerate(FEATURES)}
    )
    joblib.dump(LogisticRegression().fit(x, (x.f0 + x.f3 > 0).astype(int)), path)


def _session(streams: int):
    from transforms.bqread import create_session

    table, _ = create_session(f"bq://{TABLE}", ["id", *FEATURES], f"day = '{DAY}'", streams)
    return table


def read_ours() -> int:
    import apache_beam as beam

    from transforms.bqread import read_client, read_stream

    table = _session(2)

    def read(stream: str):
        for batch in read_stream(read_client(), stream, table.arrow_schema):
            yield batch.num_rows

    p = beam.Pipeline()
    counted = (
        p
        | beam.Create(table.streams)
        | beam.Reshuffle()
        | beam.FlatMap(read)
        | beam.CombineGlobally(sum)
    )
    counted | beam.Map(_count)
    return _counted(p.run())


def _count(n: int) -> None:
    from apache_beam.metrics import Metrics

    Metrics.counter("bench", "rows").inc(n)


def _counted(result) -> int:
    from apache_beam.metrics.metric import MetricsFilter

    result.wait_until_finish()
    found = result.metrics().query(MetricsFilter().with_name("rows"))["counters"]
    return sum(c.committed for c in found)


def read_beam(table_bytes: int) -> int:
    import apache_beam as beam
    from apache_beam.io.gcp import bigquery as beam_bq
    from apache_beam.io.gcp import bigquery_tools

    from transforms.bqread import read_client

    # Beam's own client cannot be pointed at the emulator: it gets ours (see the docstring).
    client = read_client()  # built before the class is replaced below
    original = beam_bq.bq_storage.BigQueryReadClient
    beam_bq.bq_storage.BigQueryReadClient = lambda *a, **k: client
    beam_bq._CustomBigQueryStorageSource._get_table_size = lambda self, bq, ref: table_bytes
    bigquery_tools.BigQueryWrapper._bigquery_client = staticmethod(lambda options: object())
    # No query ran, so no temporary dataset to list and delete (apitools, not emulated).
    bigquery_tools.BigQueryWrapper._clean_up_beam_labelled_temporary_datasets = (
        lambda self, *a, **k: None
    )
    p = beam.Pipeline(argv=["--project", PROJECT])
    counted = (
        p
        | beam.io.ReadFromBigQuery(
            method=beam.io.ReadFromBigQuery.Method.DIRECT_READ,
            table=TABLE.replace(".", ":", 1),
            selected_fields=["id", *FEATURES],
            row_restriction=f"day = '{DAY}'",
            use_native_datetime=True,
        )
        | beam.combiners.Count.Globally()
    )
    counted | beam.Map(_count)
    try:
        return _counted(p.run())
    finally:
        beam_bq.bq_storage.BigQueryReadClient = original


def read_ours_raw() -> int:
    """Our read loop alone, in this process: a session, its streams read as Arrow batches."""
    from transforms.bqread import read_client, read_stream

    table = _session(2)
    client = read_client()
    return sum(
        b.num_rows for s in table.streams for b in read_stream(client, s, table.arrow_schema)
    )


def read_beam_raw() -> int:
    """Beam's DIRECT_READ stream reader alone (a dict per row), on the same kind of session."""
    from apache_beam.io.gcp import bigquery as beam_bq

    from transforms.bqread import read_client

    table = _session(2)
    client = read_client()
    original = beam_bq.bq_storage.BigQueryReadClient
    beam_bq.bq_storage.BigQueryReadClient = lambda *a, **k: client
    n = 0
    try:
        for stream in table.streams:
            source = beam_bq._CustomBigQueryStorageStreamSource(stream, use_native_datetime=True)
            for _ in source.read_arrow():
                n += 1
    finally:
        beam_bq.bq_storage.BigQueryReadClient = original
    return n


def write_parquet(directory: Path) -> int:
    """The day's rows, read from the table, as 8 Parquet files."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from transforms.bqread import read_client, read_stream

    table = _session(1)
    directory.mkdir(parents=True, exist_ok=True)
    batches = [b for s in table.streams for b in read_stream(read_client(), s, table.arrow_schema)]
    rows = pa.Table.from_batches(batches).sort_by("id")
    per = -(-rows.num_rows // 8)
    for i in range(8):
        pq.write_table(rows.slice(i * per, per), directory / f"part-{i:05d}.parquet")
    return rows.num_rows


def score(inp: str, model: Path, out: Path, *more: str) -> tuple[float, dict]:
    argv = [sys.executable, "-m", "pipeline.run", "--input", inp, "--model", str(model)]
    argv += ["--output", str(out), "--run_date", DAY, *more]
    start = time.monotonic()
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True)
    wall = time.monotonic() - start
    if done.returncode != 0:
        sys.exit(f"exit {done.returncode}\n{done.stderr[-3000:]}")
    return wall, json.loads((out / "manifest.json").read_text())


def verify(out: Path, parquet: Path, model_path: Path, manifest: dict, rows: int) -> None:
    """The table run's output against the model's own predict_proba on the same rows (read
    from the Parquet copy), its counts, and the manifest's table, filter and snapshot."""
    import joblib
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    got = pa.concat_tables(
        [pq.read_table(f) for f in sorted((out / "predictions").glob("*.parquet"))]
    ).sort_by("id")
    want = pq.read_table(parquet).sort_by("id")
    assert got.column("id").equals(want.column("id")), "keys differ"
    model = joblib.load(model_path)
    x = want.select(FEATURES).to_pandas()
    np.testing.assert_array_equal(got.column("prediction").to_numpy(), model.predict(x))
    np.testing.assert_allclose(
        got.column("proba_1").to_numpy(), model.predict_proba(x)[:, 1], rtol=1e-12
    )
    counts = manifest["counts"]
    assert counts["rows_read"] == counts["rows_predicted"] == rows and not counts["rows_failed"]
    table = manifest["input_table"]
    assert table["table"] == TABLE and table["filter"] == f"day = '{DAY}'"
    print(
        f"verified: {rows:,} predictions equal the model's predict/predict_proba on the same "
        f"rows, ids verbatim; manifest input_table {json.dumps(table)}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    import faulthandler
    import signal

    faulthandler.register(signal.SIGUSR1)  # kill -USR1 <pid>: where a stuck run is
    work = Path(tempfile.mkdtemp(prefix="bench-bq-"))
    procs = [start_emulator(work / "emulator.log")]

    def fresh() -> None:
        """A new emulator holding the table (see the module docstring: a stream read in part
        keeps one of the emulator's few server threads for good)."""
        stop(procs.pop())
        procs.append(start_emulator(work / "emulator.log"))
        make_table(args.rows)

    try:
        t = time.monotonic()
        make_table(args.rows)
        print(f"table of {args.rows:,} rows created in {time.monotonic() - t:.1f}s", flush=True)
        model = work / "model.joblib"
        make_model(model)
        t = time.monotonic()
        day_rows = write_parquet(work / "parquet")
        print(f"{day_rows:,} rows of {DAY} as Parquet in {time.monotonic() - t:.1f}s", flush=True)
        table_bytes = day_rows * (len(FEATURES) + 1) * 8
        walls: dict[str, list[float]] = {}
        for r in range(args.repeats):
            cases = ("read_ours_raw", "read_beam_raw", "read_ours", "read_beam")
            for case in (*cases, "score_table", "score_parquet"):
                if case != "score_parquet":
                    fresh()
                t = time.monotonic()
                if case == "read_ours_raw":
                    n = read_ours_raw()
                elif case == "read_beam_raw":
                    n = read_beam_raw()
                elif case == "read_ours":
                    n = read_ours()
                elif case == "read_beam":
                    n = read_beam(table_bytes)
                elif case == "score_table":
                    _, m = score(
                        f"bq://{TABLE}",
                        model,
                        work / f"out-t{r}",
                        "--input_filter",
                        "day = '{run_date}'",
                        "--key_columns",
                        "id",
                    )
                    n = m["counts"]["rows_predicted"]
                    if r == 0:
                        table_run = (work / f"out-t{r}", m)
                else:
                    _, m = score(str(work / "parquet" / "*.parquet"), model, work / f"out-p{r}")
                    n = m["counts"]["rows_predicted"]
                wall = time.monotonic() - t
                assert n == day_rows, (case, n, day_rows)
                walls.setdefault(case, []).append(wall)
                print(f"{case}: {n:,} rows in {wall:.2f}s ({n / wall:,.0f} rows/s)", flush=True)
        verify(table_run[0], work / "parquet", model, table_run[1], day_rows)
        print("\n| case | rows | wall s (median) | runs s | rows/s |\n|---|---:|---:|---|---:|")
        for case, runs in walls.items():
            med = statistics.median(runs)
            shown = ", ".join(f"{w:.2f}" for w in runs)
            print(f"| {case} | {day_rows:,} | {med:.2f} | {shown} | {day_rows / med:,.0f} |")
    finally:
        stop(procs.pop())


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


if __name__ == "__main__":
    main()
