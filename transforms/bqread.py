"""A BigQuery table as input: `--input bq://PROJECT.DATASET.TABLE`, read through the Storage Read
API in Arrow format.

The launcher checks the table (it exists, it is a table the Storage Read API can read, it has
the needed columns) and creates one read session for the run, with only the needed columns and
the row restriction (--input_filter). Every worker reads that session's streams, so every row
comes from one snapshot of the table. The streams are the work units; the record batches the API
returns go into validate -> predict -> write as they are (no row as a Python dict).

The official clients are used: `google-cloud-bigquery` (REST, honours BIGQUERY_EMULATOR_HOST) for
the table's metadata, `google-cloud-bigquery-storage` (gRPC) for the session and its streams;
BIGQUERY_STORAGE_EMULATOR_HOST (host:port) points the latter at an emulator over plain gRPC.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import re
from collections.abc import Iterator
from typing import Any

import pyarrow as pa

from models.errors import launch_deadline_s

SCHEME = "bq://"
STORAGE_EMULATOR_ENV = "BIGQUERY_STORAGE_EMULATOR_HOST"
REST_EMULATOR_ENV = "BIGQUERY_EMULATOR_HOST"
# Table kinds the Storage Read API reads (BigQuery's table_type values).
READABLE = ("TABLE",)


class TableRefused(Exception):
    """The table cannot be scored as asked (exit 2); the message says why and what to do."""


class TableUnreachable(Exception):
    """BigQuery could not be reached, or failed in a way a retry can fix (exit 3)."""


def is_table(uri: str) -> bool:
    """Whether --input names a BigQuery table (bq://...)."""
    return uri.startswith(SCHEME)


@dataclasses.dataclass(frozen=True)
class TableInput:
    """The read session the launcher created, as the workers need it.

    Attributes:
        uri: the table as given, bq://project.dataset.table (the `source` of its rows).
        project, dataset, table: the table's coordinates.
        row_filter: the row restriction, {run_date} filled ("" for the whole table).
        session: the read session's name.
        streams: the session's stream names, one work unit each.
        schema: the session's Arrow schema, serialised (the batches carry no schema).
        snapshot_time: the instant of the table the session reads (ISO 8601, UTC).
        snapshot_source: where snapshot_time comes from: "session" (BigQuery returned it) or
            "created" (the launcher's clock when the session was created: the service did not
            say).
    """

    uri: str
    project: str
    dataset: str
    table: str
    row_filter: str
    session: str
    streams: tuple[str, ...]
    schema: bytes
    snapshot_time: str
    snapshot_source: str

    @property
    def table_id(self) -> str:
        return f"{self.project}.{self.dataset}.{self.table}"

    @property
    def arrow_schema(self) -> pa.Schema:
        return read_schema(self.schema)


_URI = re.compile(
    r"bq://(?P<project>[a-z][a-z0-9-]{0,62}[a-z0-9]|[a-z0-9.-]+:[a-z][a-z0-9-]{0,62}[a-z0-9])"
    r"[.:](?P<dataset>[A-Za-z0-9_]{1,1024})\.(?P<table>[A-Za-z0-9_$-]{1,1024})"
)


def parse_uri(uri: str) -> tuple[str, str, str]:
    """bq://project.dataset.table or bq://project:dataset.table -> (project, dataset, table)."""
    m = _URI.fullmatch(uri.strip())
    if not m:
        raise TableRefused(
            f"--input {uri!r} is not bq://project.dataset.table or bq://project:dataset.table"
        )
    return m["project"], m["dataset"], m["table"]


def read_schema(serialized: bytes) -> pa.Schema:
    """An Arrow schema from the Storage Read API's serialized form, without the field metadata
    a server may add."""
    schema = pa.ipc.read_schema(pa.py_buffer(serialized))
    return pa.schema([f.remove_metadata() for f in schema]).remove_metadata()


def rest_client(project: str):
    """The BigQuery REST client (anonymous against an emulator)."""
    from google.cloud import bigquery

    if os.environ.get(REST_EMULATOR_ENV):
        from google.auth.credentials import AnonymousCredentials

        return bigquery.Client(project=project, credentials=AnonymousCredentials())
    return bigquery.Client(project=project)


def read_client():
    """The Storage Read API client: plain gRPC to BIGQUERY_STORAGE_EMULATOR_HOST when set."""
    from google.cloud.bigquery_storage_v1 import BigQueryReadClient

    host = os.environ.get(STORAGE_EMULATOR_ENV)
    if host:
        import grpc
        from google.cloud.bigquery_storage_v1.services.big_query_read.transports import (
            BigQueryReadGrpcTransport,
        )

        host = host.split("://", 1)[-1].rstrip("/")
        channel = grpc.insecure_channel(
            host,
            options=[
                ("grpc.max_receive_message_length", -1),
                ("grpc.max_send_message_length", -1),
            ],
        )
        return BigQueryReadClient(transport=BigQueryReadGrpcTransport(channel=channel))
    return BigQueryReadClient()


def _sorted_failure(e: Exception, what: str) -> Exception:
    """A client failure as exit 2 (refused: its message) or exit 3 (unreachable)."""
    from google.api_core import exceptions as gexc
    from google.auth import exceptions as auth

    from models.errors import is_unreachable, one_line

    if isinstance(e, (auth.DefaultCredentialsError, auth.RefreshError, gexc.Unauthenticated)):
        # No credentials, or ones Google refuses: a person must fix them, a retry cannot (as
        # for a gs:// path).
        return TableRefused(f"{what}: Google credentials: {one_line(e)}")
    retryable = (
        gexc.ServiceUnavailable,
        gexc.DeadlineExceeded,
        gexc.InternalServerError,
        gexc.TooManyRequests,
        gexc.RetryError,
    )
    if isinstance(e, retryable) or is_unreachable(e):
        return TableUnreachable(f"BigQuery is unreachable ({what}): {one_line(e)}")
    if isinstance(e, gexc.GoogleAPICallError):
        message = getattr(e, "message", None) or str(e)
        return TableRefused(f"{what}: BigQuery says: {' '.join(str(message).split())[:500]}")
    return TableUnreachable(f"{what}: {one_line(e, with_type=True)}")


def table_columns(uri: str) -> tuple[list[str], dict[str, str]]:
    """At launch: the table's column names and BigQuery types, once it is known to exist and
    to be a table the Storage Read API reads."""
    from google.api_core import exceptions as gexc
    from google.api_core.retry import Retry

    project, dataset, table = parse_uri(uri)
    table_id = f"{project}.{dataset}.{table}"
    try:
        client = rest_client(project)
        found = client.get_table(table_id, retry=Retry(deadline=launch_deadline_s()), timeout=10)
    except gexc.NotFound as e:
        raise TableRefused(
            f"BigQuery table {table_id} (--input {uri}) does not exist: check the project, "
            "dataset and table names"
        ) from e
    except Exception as e:  # noqa: BLE001 - sorted into exit 2 or 3
        raise _sorted_failure(e, f"looking up table {table_id}") from e
    kind = (found.table_type or "TABLE").upper()
    if kind not in READABLE:
        what = {
            "VIEW": "a view",
            "MATERIALIZED_VIEW": "a materialized view",
            "EXTERNAL": "an external table",
            "SNAPSHOT": "a table snapshot",
        }.get(kind, f"a {kind}")
        raise TableRefused(
            f"--input {uri} is {what}, which this tool does not read through the BigQuery "
            "Storage Read API; write its rows into a table first (CREATE TABLE ... AS SELECT "
            "... FROM it, or a scheduled query) and score that table"
        )
    return [f.name for f in found.schema], {f.name: f.field_type for f in found.schema}


def create_session(
    uri: str, columns: list[str], row_filter: str, max_streams: int
) -> tuple[TableInput, pa.Table]:
    """At launch: the run's read session (only `columns`, rows passing `row_filter`) and a
    sample of its first rows, read as the workers read them (empty when no row passes)."""
    from google.api_core.retry import Retry
    from google.cloud.bigquery_storage_v1 import types

    project, dataset, table = parse_uri(uri)
    request = types.ReadSession(
        table=f"projects/{project}/datasets/{dataset}/tables/{table}",
        data_format=types.DataFormat.ARROW,
        read_options=types.ReadSession.TableReadOptions(
            selected_fields=list(columns), row_restriction=row_filter
        ),
    )
    created = datetime.datetime.now(datetime.UTC)
    try:
        client = read_client()
        session = client.create_read_session(
            parent=f"projects/{project}",
            read_session=request,
            max_stream_count=max_streams,
            retry=Retry(deadline=launch_deadline_s()),
            timeout=launch_deadline_s() * 4,
        )
    except Exception as e:  # noqa: BLE001 - sorted into exit 2 or 3
        what = "creating a read session"
        if row_filter:
            what += f" with --input_filter {row_filter!r}"
        raise _sorted_failure(e, what) from e
    snapshot = session.table_modifiers.snapshot_time if "table_modifiers" in session else None
    if snapshot:
        snapshot_time, source = snapshot.astimezone(datetime.UTC).isoformat(), "session"
    else:
        snapshot_time, source = created.isoformat(), "created"
    schema = session.arrow_schema.serialized_schema
    found = TableInput(
        uri=uri,
        project=project,
        dataset=dataset,
        table=table,
        row_filter=row_filter,
        session=session.name,
        streams=tuple(s.name for s in session.streams),
        schema=bytes(schema),
        snapshot_time=snapshot_time,
        snapshot_source=source,
    )
    arrow_schema = found.arrow_schema if schema else None
    sample_rows: list[pa.RecordBatch] = []
    if found.streams:
        rows = client.read_rows(found.streams[0])
        try:
            first = next(iter(_batches(rows, arrow_schema)), None)
        except Exception as e:  # noqa: BLE001
            raise _sorted_failure(e, "reading the first rows of the table") from e
        finally:
            rows.cancel()  # the rest of the stream is the workers' to read
        if first is not None:
            sample_rows.append(first.slice(0, 1000))
    if arrow_schema is None:
        arrow_schema = pa.schema([pa.field(c, pa.null()) for c in columns])
    return found, pa.Table.from_batches(sample_rows, schema=arrow_schema)


def read_stream(
    client: Any, stream: str, schema: pa.Schema, offset: int = 0
) -> Iterator[pa.RecordBatch]:
    """The record batches of one stream, from row `offset`. The client reconnects from the
    last row it received when the connection breaks in a way it can retry."""
    rows = client.read_rows(stream, offset=offset)
    try:
        yield from _batches(rows, schema)
    finally:
        rows.cancel()  # a no-op for a stream read to its end; frees it otherwise


def _batches(responses: Any, schema: pa.Schema) -> Iterator[pa.RecordBatch]:
    for response in responses:
        data = response.arrow_record_batch.serialized_record_batch
        if not data:
            continue
        batch = pa.ipc.read_record_batch(pa.py_buffer(data), schema)
        if batch.num_rows:
            yield batch


def split_streams(client: Any, streams: tuple[str, ...], wanted: int) -> tuple[str, ...]:
    """Streams split (SplitReadStream, halves) until there are `wanted`, or none splits further:
    more work units than the service handed out. A stream the service does not split (an empty
    answer) is kept whole."""
    streams = list(streams)
    done: list[str] = []
    from google.cloud.bigquery_storage_v1 import types

    while streams and len(streams) + len(done) < wanted:
        name = streams.pop(0)
        split = client.split_read_stream(
            request=types.SplitReadStreamRequest(name=name, fraction=0.5)
        )
        parts = [s.name for s in (split.primary_stream, split.remainder_stream) if s.name]
        if len(parts) == 2:
            streams.extend(parts)
        else:
            done.append(name)
    return tuple(done + streams)
