"""Reading work units into bounded Arrow record batches: Parquet, CSV and JSON Lines.

A unit is streamed; no file is ever held whole in memory. Records that cannot be parsed go to
the errors output (stage `read`) with their line; a unit that cannot be read at all marks its
file failed (`files_failed`) and the other files go on. Each unit reports its size in rows and
lines, so errors in later units of a split file get file-wide numbers (transforms.numbering).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import apache_beam as beam
import pyarrow as pa

from models.errors import one_line
from scoring.spec import KEY_COPY
from transforms.ahead import ahead
from transforms.emulators import anonymous_if_emulated
from transforms.errors import CountingDoFn, error_record
from transforms.sources import (
    INT96_UNIT,
    FileUnreadable,
    mapped,
    open_input,
    open_raw,
    with_partitions,
)
from transforms.spec import ERRORS, UNITS, Chunk, ScoringSpec, Unit
from transforms.textblocks import RecordBlocks
from transforms.textread import (
    Lines,
    Parsed,
    null_spellings_as_nulls,
    parse_csv,
    parse_jsonl,
)

_LOG = logging.getLogger(__name__)


class StreamFailed(Exception):
    """A stream of a BigQuery read session could not be read to its end (the run fails)."""


_PARQUET_BUFFER_BYTES = 1 << 20


@beam.typehints.with_output_types(Chunk)
class ReadUnits(CountingDoFn):
    """Reads one work unit into Chunks of at most spec.batch_size rows.

    Outputs Chunks on the main output, error records on the `errors` tag, the unit's size
    (file, unit, rows, lines, whether it failed) on the `units` tag, and per-file counts on the
    `stats` tag.
    """

    def __init__(self, spec: ScoringSpec):
        self._spec = spec

    def setup(self) -> None:
        anonymous_if_emulated()

    def process(self, unit: Unit) -> Iterator[Any]:
        spec = self._spec
        reader = {
            "parquet": self._parquet,
            "csv": self._csv,
            "jsonl": self._jsonl,
            "bigquery": self._bigquery,
        }[spec.input_format]
        self._rows = self._lines = 0
        failed = False
        path = unit.path
        try:
            for item in reader(unit):
                if isinstance(item, dict):  # a rejected record, already counted
                    yield beam.pvalue.TaggedOutput(ERRORS, item)
                    continue
                self.count("rows_read", item.batch.num_rows, path)
                yield self._partitioned(item) if spec.partitions else item
        except Exception as e:  # noqa: BLE001 - a broken file must not stop the other files
            if spec.table is not None:  # a stream that fails: the run fails (exit 3)
                raise StreamFailed(
                    f"reading {unit.stream} of {path} failed after {self._rows:,} rows: "
                    f"{one_line(e, with_type=True)}"
                ) from e
            failed = True
            message = (
                str(e)
                if isinstance(e, FileUnreadable)
                else f"cannot read {path} as {spec.input_format}: {one_line(e)}"
            )
            if self._rows:
                message += f" (after {self._rows:,} rows of this part of the file were read)"
            _LOG.warning("%s", message)
            self.count("files_failed", 1, path)
            yield beam.pvalue.TaggedOutput(
                ERRORS,
                error_record("read", message, None, path, spec.run_id, file_failed=True),
            )
        yield beam.pvalue.TaggedOutput(UNITS, (path, (unit.index, self._rows, self._lines, failed)))

    def _partitioned(self, chunk: Chunk) -> Chunk:
        """The chunk with the partition columns of its file's folders (text)."""
        batch = chunk.batch
        table = with_partitions(pa.Table.from_batches([batch]), chunk.source, self._spec.partitions)
        return chunk._replace(batch=table.combine_chunks().to_batches()[0])

    def _rejected(self, unit: Unit, text: str | None, reason: str, line: int | None, **extra):
        self.count("rows_read", 1, unit.path)
        self.count_failed("read", 1, unit.path)
        return error_record(
            "read", reason, text, unit.path, self._spec.run_id, line=line, _unit=unit.index, **extra
        )

    def _chunks(self, unit: Unit, table: pa.Table, lines: Any = None) -> Iterator[Chunk]:
        """A parsed table as Chunks of at most batch_size rows, numbered within the unit.

        A table in pieces is joined first (see `joined`), so that validation, the model and
        the writer see batch_size rows at a time (a Parquet row group per batch)."""
        table = joined(table)
        offset = 0
        for batch in table.to_batches(max_chunksize=self._spec.batch_size):
            if batch.num_rows:
                view = Lines(lines, offset) if lines is not None else None
                yield Chunk(unit.path, unit.index, self._rows, batch, view)
                self._rows += batch.num_rows
                offset += batch.num_rows

    def _parquet(self, unit: Unit) -> Iterator[Any]:
        import pyarrow.parquet as pq

        with open_raw(unit.path) as f:
            try:
                pf = pq.ParquetFile(
                    f,
                    pre_buffer=False,
                    buffer_size=_PARQUET_BUFFER_BYTES,
                    coerce_int96_timestamp_unit=INT96_UNIT,
                )
            except Exception as e:  # noqa: BLE001
                raise FileUnreadable(f"cannot open {unit.path} as Parquet: {one_line(e)}") from e
            names = pf.schema_arrow.names
            groups = list(range(unit.start, unit.stop))
            # Rows are numbered file-wide: the rows of the row groups before this unit's.
            self._rows = sum(pf.metadata.row_group(g).num_rows for g in range(unit.start))
            rows = sum(pf.metadata.row_group(g).num_rows for g in groups)
            if problem := self._lacks_columns(unit, names, rows):
                yield problem
                return
            present = [c for c in self._spec.in_files if c in names]
            # Pages stream through a small buffer instead of whole row groups being loaded:
            # memory stays bounded whatever the row-group size.
            for batch in pf.iter_batches(
                batch_size=self._spec.batch_size, row_groups=groups, columns=present
            ):
                yield Chunk(unit.path, unit.index, self._rows, batch)
                self._rows += batch.num_rows

    def _bigquery(self, unit: Unit) -> Iterator[Any]:
        """One stream of the run's read session; its rows are numbered within the stream."""
        from transforms.bqread import read_client, read_stream

        table = self._spec.table
        if getattr(self, "_client", None) is None:
            self._client = read_client()
        schema, size = table.arrow_schema, self._spec.batch_size
        for batch in read_stream(self._client, unit.stream, schema):
            for part in pa.Table.from_batches([batch]).to_batches(max_chunksize=size):
                if part.num_rows:
                    yield Chunk(unit.path, unit.index, self._rows, part)
                    self._rows += part.num_rows

    def _lacks_columns(self, unit: Unit, names: list[str], rows: int) -> dict | None:
        """One rejection for all `rows` of a unit whose file lacks a feature or key column."""
        missing = [c for c in self._spec.in_files if c not in names]
        if not missing or not rows:
            return None
        kinds = "feature" if all(c in self._spec.features for c in missing) else "feature/key"
        self.count("rows_read", rows, unit.path)
        self.count_failed("validate", rows, unit.path)
        self._rows += rows
        return error_record(
            "validate",
            f"file lacks {kinds} column(s) {hinted(missing, names)}; its {rows:,} rows are "
            "rejected",
            None,
            unit.path,
            self._spec.run_id,
            rows=rows,
            missing_columns=missing,
            _unit=unit.index,
        )

    def _text_blocks(self, unit: Unit, quoted: bool):
        """The unit's blocks of whole records: views of the file's memory map when it is local
        and uncompressed (their lines are the file's own, counted only for a block with a
        rejected record), else read from a stream kept open while they are read."""
        options = dict(
            quoted=quoted,
            in_quotes=unit.in_quotes,
            delimiter=self._spec.text.delimiter,
            header=quoted and unit.index == 0,
        )
        view = mapped(unit.path)
        if view is not None:
            before = view[unit.start - 1 : unit.start] if unit.start else b""
            blocks = RecordBlocks(
                None, unit.start, unit.stop, before=before, mapped=view, **options
            )
            yield from blocks
            self._lines = blocks.newlines
            return
        with open_input(unit.path, max(unit.start - 1, 0)) as stream:
            before = stream.read(1) if unit.start else b""  # a quote after a delimiter opens
            blocks = RecordBlocks(stream, unit.start, unit.stop, before=before, **options)
            yield from blocks
            self._lines = blocks.newlines

    def _csv(self, unit: Unit) -> Iterator[Any]:
        spec = self._spec
        names = unit.columns
        present = [c for c in spec.in_files if c in names]
        lacking = any(c not in names for c in spec.in_files)
        copies = [k for k in spec.key_copies if k in names]
        types = {
            c: _csv_type(spec.columns.field(c).type, c in spec.features and c not in copies)
            for c in present
        }
        keys = {c: spec.key_type(c) for c in present if c in spec.keys}
        lacking_rows = 0

        def parsed_blocks():
            for block in self._text_blocks(unit, quoted=True):
                yield joined_parse(
                    parse_csv,
                    block.data,
                    block.first_line,
                    names,
                    present,
                    types,
                    spec.text,
                    keys,
                    quoted=block.quoted,
                )

        for parsed in ahead(parsed_blocks):
            for rejection in parsed.rejected:
                yield self._rejected(unit, rejection.text, rejection.reason, rejection.line)
            if lacking:
                lacking_rows += parsed.table.num_rows
                continue
            yield from self._chunks(unit, with_key_copies(parsed.table, copies), parsed.lines)
        if lacking and (problem := self._lacks_columns(unit, list(names), lacking_rows)):
            yield problem

    def _jsonl(self, unit: Unit) -> Iterator[Any]:
        """JSON Lines blocks: a record that lacks a field holds null there, whatever its
        neighbours; a wanted column that no record of the unit holds is one "file lacks"
        rejection for the unit's rows (held back until a record with it shows up)."""
        spec = self._spec
        wanted = list(spec.in_files)
        exact = frozenset(spec.keys)
        seen: set[str] = set()
        pending: list[tuple[pa.Table, Any]] = []

        def parsed_blocks():
            for block in self._text_blocks(unit, quoted=False):
                yield joined_parse(parse_jsonl, block.data, block.first_line, spec.text, exact)

        for parsed in ahead(parsed_blocks):
            for rejection in parsed.rejected:
                yield self._rejected(unit, rejection.text, rejection.reason, rejection.line)
            table = parsed.table
            if not table.num_rows:
                continue
            seen.update(c for c in wanted if c in table.column_names)
            table = pa.table(
                {
                    c: table.column(c) if c in table.column_names else pa.nulls(table.num_rows)
                    for c in wanted
                }
            )
            if len(seen) < len(wanted):
                pending.append((table, parsed.lines))
                continue
            for held, lines in pending:
                yield from self._chunks(unit, held, lines)
            pending = []
            yield from self._chunks(unit, table, parsed.lines)
        if pending:
            rows = sum(t.num_rows for t, _ in pending)
            if problem := self._lacks_columns(unit, sorted(seen), rows):
                yield problem


def with_key_copies(table: pa.Table, copies: list[str]) -> pa.Table:
    """A CSV table with the key copy of each column that is both a key and a feature: the key
    keeps the text as spelled (only an empty field is null), the feature takes CSV's null
    spellings (NA, null, ...) as missing values."""
    for name in copies:
        text = table.column(name)
        table = table.append_column(KEY_COPY + name, text)
        table = table.set_column(
            table.column_names.index(name), name, null_spellings_as_nulls(text)
        )
    return table


def _csv_type(target: pa.DataType, is_feature: bool) -> pa.DataType:
    """What Arrow converts a CSV column to while parsing: a float feature straight to float64
    (a block where that fails is parsed again as text); anything else as text, cast and checked
    by the validate step (a key must keep its exact spelling)."""
    if is_feature and pa.types.is_floating(target):
        return pa.float64()
    return pa.string()


def hinted(wanted: list[str], names: list[str]) -> str:
    """Column names, each with the file's name that differs only by case, spaces or Unicode
    form (NFC/NFD: the same text, other code points), if any."""
    import re
    import unicodedata

    def nfc(s: str) -> str:
        return unicodedata.normalize("NFC", s)

    def loose(s: str) -> str:
        return re.sub(r"[\s_-]+", "", nfc(s)).lower()

    def form(s: str) -> str:
        return next((f for f in ("NFC", "NFD") if unicodedata.is_normalized(f, s)), "mixed")

    out = []
    for w in wanted:
        near = [n for n in names if loose(n) == loose(w)]
        if not near:
            out.append(w)
        elif nfc(near[0]) == nfc(w):
            n = near[0]
            out.append(
                f"{w} (the file has {n!r}, the same text in another Unicode form: {ascii(n)} is "
                f"{form(n)}, {ascii(w)} is {form(w)}; names must match exactly, Unicode form too)"
            )
        else:
            out.append(f"{w} (the file has {near[0]!r}; names must match exactly)")
    return ", ".join(out)


def joined(table: pa.Table) -> pa.Table:
    """The table in one piece per column. Arrow's parser hands a block back in pieces of
    about a MB (a few thousand rows), one per thread's share."""
    if table.num_columns and table.column(0).num_chunks > 1:
        return table.combine_chunks()
    return table


def joined_parse(parse: Callable[..., Parsed], *args: Any, **kwargs: Any) -> Parsed:
    """`parse(*args, **kwargs)` with its table joined, on the read-ahead thread rather than
    the one that validates and scores."""
    parsed = parse(*args, **kwargs)
    return parsed._replace(table=joined(parsed.table))
