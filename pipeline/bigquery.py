"""BigQuery sink: a succeeded run's predictions, one partition per run date, replaced atomically.

The rows go in with load jobs from the run's staged Parquet files (no streaming inserts, no row
moves through Beam), first into a staging table, then into the target table with one
multi-statement transaction that deletes the run date's rows and inserts the new ones. A rerun
for the same run date therefore replaces that date's rows and never duplicates one; a failure at
any point leaves the table as it was.

The official `google-cloud-bigquery` client is used (it honours BIGQUERY_EMULATOR_HOST); Beam's
`WriteToBigQuery` goes through its own apitools client, which does not.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import shutil
import tempfile

import pyarrow as pa

from models.errors import is_unreachable, launch_deadline_s, one_line
from pipeline.errors import ConfigError, RunFailed

_LOG = logging.getLogger(__name__)

PARTITION_COLUMN = "run_date"
EMULATOR_ENV = "BIGQUERY_EMULATOR_HOST"
STAGING_EXPIRY_HOURS = 24
MAX_URIS_PER_JOB = 10_000  # BigQuery's limit of source URIs per load job

_TABLE = re.compile(
    r"(?P<project>[a-z][a-z0-9-]{0,62}[a-z0-9]|[a-z0-9.-]+:[a-z][a-z0-9-]{0,62}[a-z0-9])"
    r"[.:](?P<dataset>[A-Za-z0-9_]{1,1024})\.(?P<table>[A-Za-z0-9_-]{1,1024})"
)


@dataclasses.dataclass(frozen=True)
class TableRef:
    """A BigQuery table: `project.dataset.table` or `project:dataset.table` on the command line."""

    project: str
    dataset: str
    table: str

    @property
    def id(self) -> str:
        return f"{self.project}.{self.dataset}.{self.table}"

    @property
    def sql(self) -> str:
        return f"`{self.id}`"


def parse_table(value: str, flag: str = "--bigquery_table") -> TableRef:
    """Checks a table spec; the names are restricted so that they are safe inside SQL."""
    m = _TABLE.fullmatch(value.strip())
    if not m:
        raise ConfigError(
            f"{flag} {value!r} is not project.dataset.table or project:dataset.table "
            "(letters, digits, _ and - only)"
        )
    return TableRef(m["project"], m["dataset"], m["table"])


def bigquery_type(t: pa.DataType) -> str:
    """The BigQuery column type a Parquet column of this Arrow type loads as."""
    if pa.types.is_boolean(t):
        return "BOOL"
    if pa.types.is_integer(t):
        return "INT64"
    if pa.types.is_floating(t):
        return "FLOAT64"
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "STRING"
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return "BYTES"
    if pa.types.is_timestamp(t):
        return "TIMESTAMP" if t.tz else "DATETIME"
    if pa.types.is_date(t):
        return "DATE"
    raise ConfigError(f"a column of type {t} cannot be loaded into BigQuery by this tool")


# BigQuery reports the legacy names for some types.
_SAME = {"INTEGER": "INT64", "FLOAT": "FLOAT64", "BOOLEAN": "BOOL"}


def _canonical(field_type: str) -> str:
    return _SAME.get(field_type.upper(), field_type.upper())


# The errors output as a table: the contract's fields, the locating ones, the rest as JSON.
ERRORS_SCHEMA = pa.schema(
    [
        pa.field("stage", pa.string()),
        pa.field("error", pa.string()),
        pa.field("record", pa.string()),  # the raw line, or the row as a JSON object
        pa.field("source", pa.string()),
        pa.field("run_id", pa.string()),
        pa.field("line", pa.int64()),
        pa.field("row_index", pa.int64()),
        pa.field("truncated", pa.bool_()),
        pa.field("details", pa.string()),  # any other key of the record, as a JSON object
    ]
)


def errors_to_parquet(paths: list[str], out_path: str, batch_rows: int = 10_000) -> int:
    """Converts errors-output JSON Lines files into one Parquet file of ERRORS_SCHEMA.

    Streams: at most `batch_rows` records are held at a time.

    Returns:
        How many error records it holds.
    """
    import json

    import pyarrow.parquet as pq
    from apache_beam.io.filesystems import FileSystems

    named = [f.name for f in ERRORS_SCHEMA]
    total = 0
    with pq.ParquetWriter(out_path, ERRORS_SCHEMA) as writer:
        columns: dict[str, list] = {name: [] for name in named}

        def flush() -> None:
            if columns["stage"]:
                writer.write_table(pa.table(columns, schema=ERRORS_SCHEMA))
                for values in columns.values():
                    values.clear()

        for path in paths:
            with FileSystems.open(path) as f:
                for raw in f:
                    rec = json.loads(raw)
                    record = rec.get("record")
                    columns["record"].append(
                        record if isinstance(record, str) or record is None else json.dumps(record)
                    )
                    for name in ("stage", "error", "source", "run_id", "line", "row_index"):
                        columns[name].append(rec.get(name))
                    columns["truncated"].append(bool(rec.get("truncated", False)))
                    rest = {k: v for k, v in rec.items() if k not in named}
                    columns["details"].append(json.dumps(rest) if rest else None)
                    total += 1
                    if len(columns["stage"]) >= batch_rows:
                        flush()
        flush()
    return total


_COLUMN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,299}")
_RESERVED_PREFIXES = (
    "_table_",
    "_file_",
    "_partition",
    "_row_timestamp",
    "__root__",
    "_colidentifier",
)


def _check_column_name(name: str, table: TableRef) -> None:
    """A column name BigQuery takes (and that is safe inside backquotes in SQL), else exit 2."""
    if not _COLUMN_NAME.fullmatch(name) or name.lower().startswith(_RESERVED_PREFIXES):
        raise ConfigError(
            f"column {name!r} cannot be a BigQuery column of {table.id} (letters, digits and _ "
            "only, not starting with a digit or a reserved prefix); rename it in the input, or "
            "leave it out of --key_columns"
        )


class BigQuerySink:
    """Checks the table at launch and loads a run's predictions after it succeeded."""

    def __init__(
        self, table: TableRef, schema: pa.Schema, description: str, what: str = "predictions"
    ):
        """
        Args:
            table: the target table.
            schema: the Arrow schema of the files loaded (the table adds `run_date`).
            description: the table description when this tool creates it (names the model).
            what: what the table holds, for messages ("predictions" or "errors").
        """
        self.what = what
        self.table = table
        self.schema = schema
        self.description = description
        self.columns = {f.name: bigquery_type(f.type) for f in schema}
        seen: dict[str, str] = {}
        for name in self.columns:
            _check_column_name(name, self.table)
            if name.lower() in seen:
                raise ConfigError(
                    f"columns {seen[name.lower()]!r} and {name!r} differ only by case, which "
                    f"BigQuery table {self.table.id} cannot hold; rename one or leave it out of "
                    "--key_columns"
                )
            seen[name.lower()] = name
        # The predictions carry their run_date (a date) themselves; the errors get it here.
        self.adds_partition = PARTITION_COLUMN not in self.columns
        if PARTITION_COLUMN in seen and self.columns.get(PARTITION_COLUMN) != "DATE":
            raise ConfigError(
                f"the {self.what} already have a {PARTITION_COLUMN!r} column, which the BigQuery "
                "table adds as its partition column; rename it or pass --key_columns without it"
            )

    def _client(self):
        from google.cloud import bigquery

        if os.environ.get(EMULATOR_ENV):
            from google.auth.credentials import AnonymousCredentials

            return bigquery.Client(project=self.table.project, credentials=AnonymousCredentials())
        return bigquery.Client(project=self.table.project)

    def _bq_schema(self, with_partition: bool):
        from google.cloud import bigquery

        mode = {PARTITION_COLUMN: "REQUIRED"} if with_partition else {}
        fields = [
            bigquery.SchemaField(name, kind, mode=mode.get(name, "NULLABLE"))
            for name, kind in self.columns.items()
        ]
        if with_partition and self.adds_partition:
            fields.append(bigquery.SchemaField(PARTITION_COLUMN, "DATE", mode="REQUIRED"))
        return fields

    def check(self) -> None:
        """At launch: the dataset exists and an existing table can take these predictions.

        Raises ConfigError (exit 2) for a missing dataset or an incompatible table, RunFailed
        (exit 3) when BigQuery cannot be reached.
        """
        from google.api_core import exceptions as gexc
        from google.api_core.retry import Retry

        retry = Retry(deadline=launch_deadline_s())
        try:
            client = self._client()
            client.get_dataset(
                f"{self.table.project}.{self.table.dataset}", retry=retry, timeout=10
            )
            try:
                existing = client.get_table(self.table.id, retry=retry, timeout=10)
            except gexc.NotFound:
                return  # created at load time
        except gexc.NotFound as e:
            raise ConfigError(
                f"BigQuery dataset {self.table.project}.{self.table.dataset} does not exist "
                f"(create it first: bq mk --dataset {self.table.project}:{self.table.dataset})"
            ) from e
        except ConfigError:
            raise
        except Exception as e:  # noqa: BLE001 - sorted into exit 2 or exit 3 below
            if is_unreachable(e):
                raise RunFailed(f"BigQuery is unreachable: {one_line(e)}") from e
            raise ConfigError(f"cannot use BigQuery table {self.table.id}: {one_line(e)}") from e
        self._check_compatible(existing)

    def _check_compatible(self, existing) -> None:
        have = {f.name.lower(): _canonical(f.field_type) for f in existing.schema}
        ours = {name.lower() for name in self.columns} | {PARTITION_COLUMN}
        required = [
            f.name for f in existing.schema if f.mode == "REQUIRED" and f.name.lower() not in ours
        ]
        if required:
            raise ConfigError(
                f"BigQuery table {self.table.id} requires column(s) {', '.join(required)} that "
                f"these {self.what} do not have; use another table"
            )
        for name, kind in {**self.columns, PARTITION_COLUMN: "DATE"}.items():
            if name.lower() not in have:
                raise ConfigError(
                    f"BigQuery table {self.table.id} has no column {name!r} ({kind}) that these "
                    f"{self.what} need; use another table or add the column"
                )
            if (theirs := have[name.lower()]) != kind:
                raise ConfigError(
                    f"BigQuery table {self.table.id} column {name!r} is {theirs}, but the "
                    f"{self.what} have {kind}"
                )

    def ensure_table(self, client) -> None:
        """Creates the table, partitioned by day on run_date, when it does not exist."""
        from google.api_core import exceptions as gexc
        from google.cloud import bigquery

        try:
            client.get_table(self.table.id)
            return
        except gexc.NotFound:
            pass
        table = bigquery.Table(self.table.id, schema=self._bq_schema(with_partition=True))
        table.time_partitioning = bigquery.TimePartitioning(
            type_=bigquery.TimePartitioningType.DAY, field=PARTITION_COLUMN
        )
        table.description = self.description
        client.create_table(table, exists_ok=True)
        _LOG.info(
            "created BigQuery table %s, partitioned by day on %s", self.table.id, PARTITION_COLUMN
        )

    def stage(self, client, files: list[str], run_id: str) -> tuple[TableRef, list[str]]:
        """Loads the files into a new staging table next to the table; returns it and job ids."""
        import datetime

        from google.cloud import bigquery

        name = f"{self.table.table}__load_{re.sub(r'[^A-Za-z0-9_]', '_', run_id)}"
        staging = TableRef(self.table.project, self.table.dataset, name)
        table = bigquery.Table(staging.id, schema=self._bq_schema(with_partition=False))
        table.expires = datetime.datetime.now(datetime.UTC) + datetime.timedelta(
            hours=STAGING_EXPIRY_HOURS
        )  # a crash before the cleanup leaves nothing behind for long
        client.delete_table(staging.id, not_found_ok=True)
        client.create_table(table)
        return staging, self._load_files(client, files, staging.id)

    def statements(self, staging: TableRef, run_date: str, rows: int) -> str:
        """The transaction's part for this table: replace the date's rows, then check the count."""
        columns = ", ".join(f"`{name}`" for name in self.columns if name != PARTITION_COLUMN)
        date = f"DATE '{run_date}'"  # the rows' own run_date is this night's (one per run)
        message = (
            f"{self.table.id} would hold a row count other than {rows} for {run_date}; "
            "another writer may be loading this date"
        )
        return (
            f"DELETE FROM {self.table.sql} WHERE {PARTITION_COLUMN} = {date}; "
            f"INSERT INTO {self.table.sql} ({columns}, {PARTITION_COLUMN}) "
            f"SELECT {columns}, {date} FROM {staging.sql}; "
            f"SELECT CASE WHEN (SELECT COUNT(*) FROM {self.table.sql} "
            f"WHERE {PARTITION_COLUMN} = {date}) != {int(rows)} "
            f"THEN ERROR('{message}') ELSE 0 END; "
        )

    def _load_files(self, client, files: list[str], destination: str) -> list[str]:
        """Appends the Parquet files to the (empty) staging table; returns the job ids."""
        from apache_beam.io.filesystem import CompressionTypes
        from apache_beam.io.filesystems import FileSystems
        from google.cloud import bigquery

        config = bigquery.LoadJobConfig(
            source_format=bigquery.SourceFormat.PARQUET,
            write_disposition=bigquery.WriteDisposition.WRITE_APPEND,
            schema=self._bq_schema(with_partition=False),
        )
        remote = [f for f in files if f.startswith("gs://")]
        if remote and len(remote) == len(files) and not os.environ.get(EMULATOR_ENV):
            # BigQuery reads the files from Cloud Storage itself: nothing moves through here.
            jobs = []
            for start in range(0, len(remote), MAX_URIS_PER_JOB):
                job = client.load_table_from_uri(
                    remote[start : start + MAX_URIS_PER_JOB], destination, job_config=config
                )
                job.result()
                jobs.append(job.job_id)
            return jobs
        # Local files (and an emulator, which cannot read Cloud Storage): upload each file.
        jobs = []
        for path in files:
            if path.startswith("gs://"):  # the client wants a real binary file: copy it first
                with (
                    tempfile.TemporaryFile() as local,
                    FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f,
                ):
                    shutil.copyfileobj(f, local, 1 << 20)
                    job = client.load_table_from_file(
                        local, destination, job_config=config, rewind=True
                    )
            else:
                with open(path, "rb") as local:
                    job = client.load_table_from_file(local, destination, job_config=config)
            job.result()
            jobs.append(job.job_id)
        return jobs


def replace_partitions(
    loads: list[tuple[BigQuerySink, list[str], int]], run_date: str, run_id: str
) -> list[dict]:
    """Replaces the run date's rows of every table with its files' rows, in one transaction.

    Each table's files go into a staging table first (load jobs); then one multi-statement
    transaction deletes the date's rows, inserts the staged ones and checks the row counts for
    every table, so either all tables change or none does. Staging tables are dropped afterwards
    (best effort: they expire in a day anyway).

    Args:
        loads: (sink, Parquet files, the number of rows they hold) per table.
        run_date: the partition to replace (YYYY-MM-DD, already checked).
        run_id: names the staging tables.

    Returns:
        Per table, what the manifest records: table, partition, rows loaded, job ids.
    """
    first = loads[0][0]
    client = first._client()
    staged: list[tuple[BigQuerySink, TableRef, list[str], int]] = []
    try:
        for sink, files, rows in loads:
            sink.ensure_table(client)
            staging, jobs = sink.stage(client, files, run_id)
            staged.append((sink, staging, jobs, rows))
        script = "BEGIN TRANSACTION; "
        script += "".join(
            sink.statements(staging, run_date, rows) for sink, staging, _, rows in staged
        )
        script += "COMMIT TRANSACTION;"
        job = client.query(script)
        job.result()
    except Exception as e:  # noqa: BLE001 - the tables are unchanged: the run is retryable
        tables = ", ".join(sink.table.id for sink, _, _ in loads)
        raise RunFailed(
            f"loading into BigQuery ({tables}) failed; one transaction replaces every table or "
            f"none, so rerun: {one_line(e)}"
        ) from e
    finally:
        for _, staging, _, _ in staged:
            try:
                client.delete_table(staging.id, not_found_ok=True)
            except Exception as e:  # noqa: BLE001 - it expires by itself
                _LOG.warning("could not drop staging table %s: %s", staging.id, one_line(e))
    return [
        {
            "table": sink.table.id,
            "partition": run_date,
            "rows_loaded": rows,
            "job_ids": [*jobs, job.job_id],
        }
        for sink, _, jobs, rows in staged
    ]
