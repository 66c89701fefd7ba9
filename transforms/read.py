"""Reading input files into bounded Arrow record batches: Parquet, CSV and JSON Lines.

Each file is streamed; no file is ever held whole in memory. Records that cannot be parsed
go to the errors output (stage `read`); a file that cannot be read at all is counted in
`files_failed` and the other files go on.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from typing import Any, NamedTuple

import apache_beam as beam
import pyarrow as pa
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from transforms.emulators import anonymous_if_emulated
from transforms.errors import count, count_failed, error_record
from transforms.spec import ERRORS, Chunk, ScoringSpec

_LOG = logging.getLogger(__name__)

FORMATS = ("parquet", "csv", "jsonl")
_EXTENSIONS = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".json": "jsonl",
    ".ndjson": "jsonl",
}
_JSON_CHUNK_BYTES = 16 << 20
_CSV_BLOCK_BYTES = 16 << 20
_PARQUET_BUFFER_BYTES = 1 << 20


class FileUnreadable(Exception):
    """A whole input file cannot be read; the message says why."""


def format_of(path: str) -> str | None:
    """The input format a file name implies (compression suffixes ignored), or None."""
    name = path.lower()
    for suffix in (".gz", ".bz2", ".zst", ".deflate"):
        name = name.removesuffix(suffix)
    return next((fmt for ext, fmt in _EXTENSIONS.items() if name.endswith(ext)), None)


def open_arrow_stream(path: str) -> tuple[Any, pa.NativeFile]:
    """Opens a file as an Arrow stream, decompressing .gz on the fly: with Arrow's own file for a
    local path (no GIL taken per read, so parsing overlaps the rest), through Beam's FileSystems
    for gs:// and other remote paths.

    Returns:
        The underlying file object (close it) and the Arrow stream over it.
    """
    raw = _open_source(path)
    stream: pa.NativeFile = raw if isinstance(raw, pa.NativeFile) else pa.PythonFile(raw, "r")
    if path.lower().endswith(".gz"):
        stream = pa.CompressedInputStream(stream, "gzip")
    return raw, stream


def _open_source(path: str):
    """A seekable file: Arrow's own for a local path (its small reads are cheap there and need
    no GIL), Beam's FileSystems for gs:// and other remote paths."""
    if "://" not in path:
        return pa.OSFile(path, "rb")
    return FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)


def sample(path: str, fmt: str) -> pa.Table:
    """A file's columns and first rows, with types as Parquet declares them, or as the first
    block of a CSV or JSON Lines file implies them.

    An empty file has no columns.
    """
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    try:
        if fmt == "parquet":
            with _open_source(path) as f:
                if not f.read(1):  # zero bytes: zero rows, not an error
                    return pa.table({})
                f.seek(0)
                pf = pq.ParquetFile(f)
                first = next(pf.iter_batches(batch_size=100), None)
                schema = pf.schema_arrow
                return pa.Table.from_batches([first] if first else [], schema=schema)
        raw, stream = open_arrow_stream(path)
        with raw:
            if fmt == "csv":
                try:
                    reader = pacsv.open_csv(
                        stream,
                        read_options=pacsv.ReadOptions(block_size=1 << 20),
                        parse_options=pacsv.ParseOptions(
                            invalid_row_handler=lambda _: "skip", newlines_in_values=True
                        ),
                    )
                except pa.ArrowInvalid as e:
                    if "Empty CSV file" in str(e):  # zero bytes: zero rows, not an error
                        return pa.table({})
                    raise
                try:
                    return pa.Table.from_batches([reader.read_next_batch()])
                except StopIteration:
                    return reader.schema.empty_table()
            lines = stream.read(1 << 20).split(b"\n")
            return _parse_json_lines(lines[:-1] if len(lines) > 1 else lines, None)[0]
    except Exception as e:  # noqa: BLE001 - any reader failure means the file is unreadable
        raise FileUnreadable(f"cannot read {path} as {fmt}: {_first_line(e)}") from e


class Rejected(NamedTuple):
    """Records a reader rejects: the error record, how many input rows it stands for, the stage."""

    record: dict
    rows: int
    stage: str


class ReadBatches(beam.DoFn):
    """Reads one input file into Chunks of at most spec.batch_size rows.

    Outputs Chunks on the main output and error records on the `errors` tag. (Reading ahead
    in a background thread was measured: no gain for a light model, 5% lost for a heavy one
    whose OpenMP threads it competes with, so the file is read in step.)
    """

    def __init__(self, spec: ScoringSpec):
        self._spec = spec

    def setup(self) -> None:
        anonymous_if_emulated()

    def process(self, path: str) -> Iterator[Any]:
        spec = self._spec
        reader = {"parquet": self._parquet, "csv": self._csv, "jsonl": self._jsonl}[
            spec.input_format
        ]
        offset = 0
        try:
            for item in reader(path):
                if isinstance(item, Rejected):
                    count("rows_read", item.rows, path)
                    count_failed(item.stage, item.rows, path)
                    yield beam.pvalue.TaggedOutput(ERRORS, item.record)
                    continue
                count("rows_read", item.num_rows, path)
                yield Chunk(path, offset, item)
                offset += item.num_rows
        except Exception as e:  # noqa: BLE001 - a broken file must not stop the other files
            message = (
                e.args[0]
                if isinstance(e, FileUnreadable)
                else f"cannot read {path} as {spec.input_format}: {_first_line(e)}"
            )
            _LOG.warning("%s", message)
            count("files_failed", 1)
            count("file_failed", 1, path)
            yield beam.pvalue.TaggedOutput(
                ERRORS, error_record("read", message, None, path, spec.run_id, file_failed=True)
            )

    def _missing_features(self, path: str, present: list[str], rows: int) -> Rejected | None:
        """A file-level rejection when the file lacks a feature column altogether."""
        missing = [f for f in self._spec.features if f not in present]
        if not missing:
            return None
        record = error_record(
            "validate",
            f"file lacks feature column(s) {', '.join(missing)}; its {rows} rows are rejected",
            None,
            path,
            self._spec.run_id,
            rows=rows,
            missing_columns=missing,
        )
        return Rejected(record, rows, "validate")

    def _present(self, names: list[str]) -> list[str]:
        return [c for c in self._spec.wanted if c in names]

    def _parquet(self, path: str) -> Iterator[Any]:
        import pyarrow.parquet as pq

        with _open_source(path) as f:
            if not f.read(1):  # zero bytes: zero rows, not an error
                return
            f.seek(0)
            try:
                # Pages stream through a small buffer instead of whole row groups being loaded:
                # memory stays bounded whatever the row-group size.
                pf = pq.ParquetFile(f, pre_buffer=False, buffer_size=_PARQUET_BUFFER_BYTES)
            except Exception as e:  # noqa: BLE001
                raise FileUnreadable(f"cannot open {path} as Parquet: {_first_line(e)}") from e
            names = pf.schema_arrow.names
            if problem := self._missing_features(path, names, pf.metadata.num_rows):
                yield problem
                return
            yield from pf.iter_batches(
                batch_size=self._spec.batch_size, columns=self._present(names)
            )

    def _csv(self, path: str) -> Iterator[Any]:
        import pyarrow.csv as pacsv

        names = sample(path, "csv").column_names
        if not names:
            return
        present = self._present(names)
        bad: list[str] = []

        def on_invalid(row: Any) -> str:
            bad.append(row.text)
            return "skip"

        numbers = _LineLocator(path)  # opens its own stream at the first rejected row

        def rejected_lines() -> Iterator[Rejected]:
            lines, bad[:] = list(bad), []
            for line in lines:
                reason = f"wrong number of fields: expected {len(names)}"
                record = error_record("read", reason, line, path, self._spec.run_id)
                number = numbers.locate(line)
                if number is not None:
                    record["line"] = number
                yield Rejected(record, 1, "read")

        raw, stream = open_arrow_stream(path)
        with raw, contextlib.closing(numbers):
            reader = pacsv.open_csv(
                stream,
                read_options=pacsv.ReadOptions(block_size=_CSV_BLOCK_BYTES, use_threads=True),
                parse_options=pacsv.ParseOptions(
                    invalid_row_handler=on_invalid, newlines_in_values=True
                ),
                convert_options=pacsv.ConvertOptions(
                    include_columns=present,
                    column_types={c: pa.string() for c in present},
                    strings_can_be_null=True,
                ),
            )
            lacking_rows = 0
            lacks_features = any(f not in names for f in self._spec.features)
            for batch in reader:
                yield from rejected_lines()
                if lacks_features:
                    lacking_rows += batch.num_rows
                else:
                    yield from _slices(batch, self._spec.batch_size)
            yield from rejected_lines()
            if lacks_features:
                yield self._missing_features(path, names, lacking_rows)

    def _jsonl(self, path: str) -> Iterator[Any]:
        raw, stream = open_arrow_stream(path)
        with raw:
            tail = b""
            first_line = 1  # the physical line number of lines[0]
            while True:
                block = stream.read(_JSON_CHUNK_BYTES)
                lines = (tail + block).split(b"\n")
                tail = lines.pop() if block else b""
                table, errors = _parse_json_lines(lines, self._spec.wanted)
                for number, line, reason in errors:
                    record = error_record("read", reason, line, path, self._spec.run_id)
                    record["line"] = first_line + number
                    yield Rejected(record, 1, "read")
                first_line += len(lines)
                yield from table.to_batches(max_chunksize=self._spec.batch_size)
                if not block:
                    return


def _parse_json_lines(lines: list[bytes], wanted: tuple[str, ...] | None):
    """Parses JSON Lines: columnar for clean chunks, line by line only where a chunk is dirty.

    Returns:
        A table of the wanted columns (all columns when wanted is None) and the rejected
        lines as (index in `lines`, line, reason) triples.
    """
    import pyarrow.json as pajson

    body = [ln for ln in lines if ln.strip()]
    if not body:
        return pa.table({}), []
    try:
        table = pajson.read_json(
            pa.BufferReader(b"\n".join(body)),
            read_options=pajson.ReadOptions(use_threads=True, block_size=_JSON_CHUNK_BYTES * 2),
        )
        return _with_columns(table, wanted), []
    except pa.ArrowInvalid:
        pass
    rows: list[dict] = []
    errors: list[tuple[int, str, str]] = []
    for index, ln in enumerate(lines):
        if not ln.strip():
            continue
        text = ln.decode("utf-8", errors="replace").rstrip("\r")
        try:
            obj = json.loads(text)
        except ValueError as e:
            errors.append((index, text, f"not valid JSON: {e}"))
            continue
        if not isinstance(obj, dict):
            errors.append((index, text, f"not a JSON object but a {type(obj).__name__}"))
            continue
        rows.append(obj)
    names = wanted if wanted is not None else list(dict.fromkeys(k for r in rows for k in r))
    columns = {}
    for name in names:
        values = [r.get(name) for r in rows]
        try:
            columns[name] = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            # Mixed types: keep the text so validation can name each bad value.
            columns[name] = pa.array(
                [
                    None if v is None else (v if isinstance(v, str) else json.dumps(v))
                    for v in values
                ],
                pa.string(),
            )
    return pa.table(columns), errors


def _with_columns(table: pa.Table, wanted: tuple[str, ...] | None) -> pa.Table:
    """The wanted columns of a table, in order; a column absent from every line is all null."""
    if wanted is None:
        return table
    arrays = [
        table.column(c) if c in table.column_names else pa.nulls(table.num_rows) for c in wanted
    ]
    return pa.table(arrays, names=list(wanted))


class _LineLocator:
    """Finds the physical line numbers of rejected CSV rows, in file order.

    pyarrow's streaming CSV reader hands its invalid-row handler the row's text but no line
    number. Rejected rows come in file order, so a second stream over the file (opened only when
    a file has a rejected row) moves forward to each row's text, at a line start and ending at a
    line end, and counts the newlines it passed: C-speed find and count over 4 MiB blocks.

    Limits: a rejected row whose text also appears earlier as a whole line inside a quoted field
    of a valid record is placed there; a text not found (e.g. a file with bare CR line ends) gets
    no line number, and the search goes back to where it was for the next row.
    """

    _BLOCK = 1 << 22

    def __init__(self, path: str):
        self._path = path
        self._raw = None  # opened by the first locate(): most files have no rejected row
        self._failed = False

    def _open(self, offset: int, line: int) -> None:
        """(Re)opens the stream at the uncompressed byte `offset`, which starts line `line`."""
        self._raw, self._stream = open_arrow_stream(self._path)
        skip = offset
        while skip:
            chunk = self._stream.read(min(skip, self._BLOCK))
            if not chunk:
                break
            skip -= len(chunk)
        self._buf = b"\n"  # a virtual newline: whatever comes next starts a line
        self._base = offset - 1  # the file offset of _buf[0]
        self._pos = 1  # where the search resumes in _buf
        self._line = line  # the physical line number of _buf[_pos]
        self._eof = False

    def close(self) -> None:
        if self._raw is not None:
            self._raw.close()
            self._raw = None

    def locate(self, text: str) -> int | None:
        """The 1-based line on which the row starts, or None when it cannot be found.

        Best effort: a failure to read the file for line numbers is logged once and only ends
        the numbering of this file, never the file's scoring.
        """
        if self._failed:
            return None
        try:
            if self._raw is None:
                self._open(0, 1)
            return self._locate(text)
        except Exception as e:  # noqa: BLE001 - the line number is extra information
            _LOG.warning("no line numbers for rejected rows of %s: %s", self._path, _first_line(e))
            self._failed = True
            self.close()
            return None

    def _locate(self, text: str) -> int | None:
        needle = text.encode("utf-8")
        if not needle:
            return None
        saved = (self._base + self._pos, self._line)
        while True:
            found, more = self._find(needle)
            if found is not None:
                number = self._line + self._buf.count(b"\n", self._pos, found)
                self._line = number + needle.count(b"\n")
                self._pos = found + len(needle)
                return number
            if self._eof and not more:
                self.close()  # not in the rest of the file: back to where this search began
                self._open(*saved)
                return None
            block = self._stream.read(self._BLOCK)
            if not block:
                self._eof = True
            # No match starts before the last len(needle) + 2 bytes: move past the rest
            # (counting its lines) and drop it, keeping the newline a match may start after.
            ahead = max(self._pos, len(self._buf) - len(needle) - 2)
            self._line += self._buf.count(b"\n", self._pos, ahead)
            keep = max(ahead - 1, 0)
            self._buf = self._buf[keep:] + block
            self._base += keep
            self._pos = ahead - keep

    def _find(self, needle: bytes) -> tuple[int | None, bool]:
        """(index of a whole-line match, or None; whether more data could complete one)."""
        buf = self._buf
        pos = max(self._pos - 1, 0)
        target = b"\n" + needle  # a match must start a line
        while True:
            index = buf.find(target, pos)
            if index < 0:
                return None, not self._eof
            start, end = index + 1, index + 1 + len(needle)
            after = buf[end : end + 2]
            if end + 2 > len(buf) and not self._eof:
                return None, True  # the line end is not read yet
            if after[:1] == b"\n" or after == b"\r\n" or after in (b"", b"\r"):
                if start >= self._pos:
                    return start, False
            pos = index + 1


def _slices(batch: pa.RecordBatch, size: int) -> Iterator[pa.RecordBatch]:
    for start in range(0, batch.num_rows, size):
        yield batch.slice(start, size)


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__
