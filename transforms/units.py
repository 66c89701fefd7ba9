"""Matching the input on the workers and cutting each file into work units.

The graph carries the input pattern, not a list of files: the workers match it (so a job's
description does not grow with the number of files), drop the run's own output directory, and
plan each file: a Parquet file is cut between row groups, an uncompressed CSV or JSON Lines file
into byte ranges. A CSV file's ranges need to know whether they start inside a quoted value (a
line end inside one ends no record), so their quotes are scanned range by range, in parallel,
first (textread.QuoteState: Arrow's rule, where a quote inside an unquoted field is text).
Per-file checks (columns, format) happen here too, once per file.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.io.filesystem import FileMetadata

from models.errors import one_line
from transforms.emulators import anonymous_if_emulated
from transforms.errors import CountingDoFn, error_record
from transforms.samples import csv_header, json_array_message
from transforms.sources import (
    FileUnreadable,
    Outputs,
    fingerprint,
    first_name,
    identity,
    is_splittable,
    open_input,
    open_raw,
)
from transforms.spec import ERRORS, ScoringSpec, Unit
from transforms.textblocks import quote_ends

_LOG = logging.getLogger(__name__)
SCAN = "scan"


class QuoteScan(NamedTuple):
    """A byte range of a CSV file whose quotes are to be counted."""

    path: str
    index: int
    start: int
    stop: int
    columns: tuple[str, ...]


class MatchInput(beam.PTransform):
    """The input pattern -> the files it matches, without the run's own output directory, each
    file once whatever the names it matched under."""

    def __init__(self, spec: ScoringSpec):
        super().__init__()
        self._spec = spec

    def expand(self, pbegin):
        return (
            pbegin
            | "Pattern" >> beam.Create([self._spec.input_pattern])
            | "Match" >> fileio.MatchAll(fileio.EmptyMatchTreatment.ALLOW)
            | "NotAnOutput" >> beam.ParDo(_NotAnOutput(self._spec.output))
            | "ByFile" >> beam.Map(lambda meta: (identity(meta.path), meta))
            | "NamesOfEachFile" >> beam.GroupByKey()
            | "OneNameEach" >> beam.Map(_one_name)
        )


def _one_name(item: tuple[str, Iterable[FileMetadata]]) -> FileMetadata:
    """A file matched under several names (a symlink beside its target) is read once, under
    the name the launcher chose too (sources.first_name)."""
    metas = {meta.path: meta for meta in item[1]}
    return metas[first_name(metas)]


class _NotAnOutput(beam.DoFn):
    """Drops directory entries and the files of beamscore output directories."""

    def __init__(self, output: str):
        self._output = output

    def setup(self) -> None:
        anonymous_if_emulated()
        self._outputs = Outputs(self._output)

    def process(self, meta: FileMetadata) -> Iterator[FileMetadata]:
        if not meta.path.endswith("/") and not self._outputs.holds(meta.path):
            yield meta


class PlanUnits(CountingDoFn):
    """A matched file -> its work units (or file-level errors).

    Outputs Units on the main output, CSV byte ranges to count quotes in on the `scan` tag, and
    error records on the `errors` tag (a file that cannot be read, or lacks columns).
    """

    def __init__(self, spec: ScoringSpec):
        self._spec = spec

    def setup(self) -> None:
        anonymous_if_emulated()

    def process(self, meta: FileMetadata) -> Iterator[Any]:
        path = meta.path
        self.count("files", 1, path)
        size, mtime_ms = fingerprint(meta)
        self.note(path, bytes=size, mtime_ms=mtime_ms)
        planner = {"parquet": self._parquet, "csv": self._csv, "jsonl": self._jsonl}
        try:
            yield from planner[self._spec.input_format](path, meta.size_in_bytes)
        except Exception as e:  # noqa: BLE001 - a broken file must not stop the other files
            message = (
                str(e)
                if isinstance(e, FileUnreadable)
                else f"cannot read {path} as {self._spec.input_format}: {one_line(e)}"
            )
            yield from self.file_failed(path, message)

    def file_failed(self, path: str, message: str) -> Iterator[Any]:
        _LOG.warning("%s", message)
        self.count("files_failed", 1, path)
        yield beam.pvalue.TaggedOutput(
            ERRORS,
            error_record("read", message, None, path, self._spec.run_id, file_failed=True),
        )

    def _checked(self, path: str, names: Iterable[str]) -> None:
        names = list(names)
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise FileUnreadable(
                f"{path} has the column name(s) {', '.join(map(repr, repeated))} more than once"
            )

    def _parquet(self, path: str, size: int) -> Iterator[Any]:
        import pyarrow.parquet as pq

        if not size:
            return  # zero bytes: zero rows
        with open_raw(path) as f:
            try:
                metadata = pq.read_metadata(f)
            except Exception as e:  # noqa: BLE001
                raise FileUnreadable(f"cannot open {path} as Parquet: {one_line(e)}") from e
        self._checked(path, metadata.schema.to_arrow_schema().names)
        least = max(self._spec.batch_size, 1)
        start = rows = 0
        index = 0
        for group in range(metadata.num_row_groups):
            rows += metadata.row_group(group).num_rows
            if rows >= least or group == metadata.num_row_groups - 1:
                yield Unit(path, index, start, group + 1)
                index += 1
                start, rows = group + 1, 0

    def _ranges(self, path: str, size: int) -> list[tuple[int, int | None]]:
        step = self._spec.split_bytes
        if not is_splittable(path) or size <= step:
            return [(0, None)]
        cuts = list(range(0, size, step))
        return [(a, b) for a, b in zip(cuts, cuts[1:])] + [(cuts[-1], None)]

    def _csv(self, path: str, size: int) -> Iterator[Any]:
        names = csv_header(path, self._spec.text)
        if not names:
            return  # an empty file: zero rows
        self._checked(path, names)
        ranges = self._ranges(path, size)
        if len(ranges) == 1:
            yield Unit(path, 0, 0, None, columns=names)
            return
        for index, (start, stop) in enumerate(ranges):
            yield beam.pvalue.TaggedOutput(
                SCAN, QuoteScan(path, index, start, stop if stop is not None else size, names)
            )

    def _jsonl(self, path: str, size: int) -> Iterator[Any]:
        with open_input(path) as stream:
            head = stream.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
        if head.startswith(b"["):
            raise FileUnreadable(json_array_message(path))
        for index, (start, stop) in enumerate(self._ranges(path, size)):
            yield Unit(path, index, start, stop)


class CountQuotes(beam.DoFn):
    """A CSV byte range -> (file, (range, whether its end is inside a quoted value if its start
    is not, and if it is)), to place the ranges' cuts."""

    def __init__(self, delimiter: str):
        self._delimiter = delimiter

    def setup(self) -> None:
        anonymous_if_emulated()

    def process(self, scan: QuoteScan) -> Iterator[tuple[str, tuple[QuoteScan, tuple]]]:
        with open_input(scan.path, max(scan.start - 1, 0)) as stream:
            before = stream.read(1) if scan.start else b""
            ends = quote_ends(stream, scan.stop - scan.start, self._delimiter, before)
        yield scan.path, (scan, ends)


def csv_units(item: tuple[str, Iterable[tuple[QuoteScan, tuple[bool, bool]]]]) -> Iterator[Unit]:
    """A file's scanned ranges -> its units, each knowing whether it starts inside quotes."""
    _, scanned = item
    scanned = sorted(scanned, key=lambda c: c[0].index)
    inside = False
    for i, (scan, ends) in enumerate(scanned):
        stop = scan.stop if i < len(scanned) - 1 else None
        yield Unit(scan.path, scan.index, scan.start, stop, inside, scan.columns)
        inside = ends[inside]


class PlanInput(beam.PTransform):
    """The input pattern -> work units, spread over the workers; plus errors and counts."""

    def __init__(self, spec: ScoringSpec):
        super().__init__()
        self._spec = spec

    def expand(self, pbegin):
        from transforms.spec import STATS

        if self._spec.table is not None:
            planned = (
                pbegin
                | "Table" >> beam.Create([self._spec.table.uri])
                | "PlanStreams"
                >> beam.ParDo(PlanStreams(self._spec)).with_outputs(ERRORS, STATS, main="units")
            )
            return {
                "units": planned.units | "SpreadUnits" >> beam.Reshuffle(),
                ERRORS: planned[ERRORS],
                STATS: planned[STATS],
            }
        planned = (
            pbegin
            | "MatchInput" >> MatchInput(self._spec)
            | "PlanUnits"
            >> beam.ParDo(PlanUnits(self._spec)).with_outputs(SCAN, ERRORS, STATS, main="units")
        )
        units = planned.units
        if self._spec.input_format == "csv":
            csv_split = (
                planned[SCAN]
                | "CountQuotes" >> beam.ParDo(CountQuotes(self._spec.text.delimiter))
                | "QuotesPerFile" >> beam.GroupByKey()
                | "CutCsv" >> beam.FlatMap(csv_units)
            )
            units = (units, csv_split) | "AllUnits" >> beam.Flatten()
        return {
            "units": units | "SpreadUnits" >> beam.Reshuffle(),
            ERRORS: planned[ERRORS],
            STATS: planned[STATS],
        }


class PlanStreams(CountingDoFn):
    """A BigQuery table input -> one work unit per stream of the run's read session (created
    at launch, so every worker reads the same snapshot). The table counts as one input read
    once (what the commit stage checks against the launch)."""

    def __init__(self, spec: ScoringSpec):
        self._spec = spec

    def process(self, uri: str) -> Iterator[Unit]:
        self.count("files", 1, uri)
        self.note(uri, bytes=0, mtime_ms=0)
        for index, stream in enumerate(self._spec.table.streams):
            yield Unit(uri, index, 0, None, stream=stream)
