"""CSV and JSON Lines: blocks of whole records (transforms.textblocks) parsed by Arrow a block
at a time.

Each block of whole records goes to Arrow in one call, typed as the launch decided; only a block
Arrow refuses is looked at again (as text, then record by record). Physical line numbers are
worked out only for blocks that have a rejected record, from the block's own bytes.
"""

from __future__ import annotations

import codecs
import dataclasses
import json
import logging
import re
import threading
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa

from scoring.rows import json_table
from transforms.spec import TextFormat
from transforms.textblocks import QuoteState, end_mask, line_of

_LOG = logging.getLogger(__name__)
_BLANK = re.compile(rb"\s*")  # a block of blank lines only (matched without a copy of it)
# Arrow's JSON reader needs a record to fit in one of its blocks; smaller blocks parse in
# parallel, so try those first and fall back to one block for a block holding a huge record.
_JSON_PARSE_BLOCK = 1 << 20

# ---------------------------------------------------------------------------------------------
# Line numbers of a block's records


class BlockLines:
    """The physical line (unit-local) on which each record of a block starts, worked out from the
    block's bytes only when asked (a block with a rejected record).

    Args:
        data: the block (UTF-8 or ASCII-compatible bytes of whole records; any bytes-like).
        first_line: the unit-local line of data[0], or a function that counts it.
        csv: the CSV delimiter and column count, or None for JSON Lines.
        excluded: indexes (among the block's non-empty records) of records taken out before
            parsing (bytes that are not valid text).
        rows: how many rows the parser produced, to check the mapping against.
    """

    def __init__(
        self,
        data: Any,
        first_line: int | Callable[[], int],
        csv: tuple[str, int] | None,
        rows: int,
        excluded: frozenset[int] = frozenset(),
    ):
        self._data = data
        self._first_line = first_line
        self._csv = csv
        self._rows = rows
        self._excluded = excluded
        self._lines: np.ndarray | None = None
        self._records: Records | None = None
        self._done = False

    def __reduce__(self):
        # Shipped between processes (a fusion break): ship the numbers, not the block's bytes.
        return (_Resolved, (self.rows(),))

    def rows(self) -> np.ndarray | None:
        """The line of each parsed row, or None when the records do not match the parse."""
        if not self._done:
            self._done = True
            records = self.records()
            keep = records.valid.copy()
            if self._excluded:
                keep[list(self._excluded)] = False
            kept = records.lines[keep]
            if len(kept) == self._rows:
                self._lines = kept.astype(np.int64)
            else:
                _LOG.warning(
                    "line numbers unknown for a block: %d records found, %d rows parsed",
                    len(kept),
                    self._rows,
                )
            self._data, self._records = b"", None
        return self._lines

    def records(self) -> Records:
        """The block's non-empty records, in order: where each starts, its text, whether valid."""
        if self._records is None:
            self._records = split_records(self._data, self._first_line, self._csv)
        return self._records

    def text(self, record: Record) -> str:
        """A record's text, shown safely."""
        return shown(self._data[record.start : record.end])


class _Resolved:
    """BlockLines after shipping: the numbers only."""

    def __init__(self, lines: np.ndarray | None):
        self._lines = lines

    def rows(self) -> np.ndarray | None:
        return self._lines


class Lines(NamedTuple):
    """A chunk's view of its block's line numbers: rows [offset, offset + n) of the block."""

    block: Any
    offset: int

    def of(self, indexes) -> list[int | None]:
        """The unit-local lines of the chunk's rows at these indexes (None where unknown)."""
        lines = self.block.rows()
        if lines is None:
            return [None] * len(indexes)
        return [int(lines[self.offset + int(i)]) for i in indexes]


class Record(NamedTuple):
    """One non-empty record of a block."""

    line: int  # unit-local line on which it starts
    start: int  # byte offsets in the block
    end: int
    valid: bool  # (CSV) has the header's number of fields


@dataclasses.dataclass(frozen=True)
class Records:
    """A block's non-empty records, in order, as arrays (one entry per record)."""

    lines: np.ndarray  # unit-local line on which each starts
    starts: np.ndarray  # byte offsets in the block
    ends: np.ndarray
    valid: np.ndarray  # (CSV) has the header's number of fields

    def __len__(self) -> int:
        return len(self.lines)

    def __getitem__(self, i: int) -> Record:
        return Record(
            int(self.lines[i]), int(self.starts[i]), int(self.ends[i]), bool(self.valid[i])
        )

    def __iter__(self):
        return (self[i] for i in range(len(self)))


def split_records(
    data: Any, first_line: int | Callable[[], int], csv: tuple[str, int] | None
) -> Records:
    """The block's records: its lines (JSON Lines: those that are not blank), or (CSV) its
    lines not inside quotes, with a field count against the header's.

    Mirrors Arrow's parsers: a line end or delimiter inside a quoted value (QuoteState) is text,
    an empty line is no record. Vectorised: a block of
    a hundred thousand records costs a few NumPy passes, no Python object per record.
    """
    arr = np.frombuffer(data, dtype=np.uint8)
    all_newlines = np.flatnonzero(end_mask(arr))
    quoted = csv is not None and holds(data, b'"')
    quotes = QuoteState(arr, ord(csv[0])) if quoted else None
    newlines = all_newlines
    if quotes is not None:
        newlines = newlines[~quotes.inside_at(newlines)]
    if not len(newlines) or newlines[-1] != len(data) - 1:  # the last record has no line end
        newlines = np.append(newlines, len(data))
    ends = newlines
    starts = np.concatenate(([0], ends[:-1] + 1))
    lines = line_of(first_line) + np.searchsorted(all_newlines, starts)
    last = arr[np.maximum(ends - 1, 0)] if len(arr) else np.zeros(len(ends), dtype=np.uint8)
    stripped = ends - ((ends > starts) & (ends > 0) & (last == 13))
    if csv is None:
        positions = np.flatnonzero(~np.isin(arr, (9, 10, 11, 12, 13, 32)))
        keep = np.zeros(len(starts), dtype=bool)
        keep[np.unique(np.searchsorted(ends, positions))] = True
        valid = np.ones(len(starts), dtype=bool)
    else:
        delimiter, ncols = csv
        delims = np.flatnonzero(arr == ord(delimiter))
        if quotes is not None:  # a delimiter inside a quoted value is text
            delims = delims[~quotes.inside_at(delims)]
        bounds = np.concatenate((starts, [ends[-1] + 1]))
        fields = np.diff(np.searchsorted(delims, bounds)) + 1
        valid = fields == ncols
        keep = stripped > starts
    return Records(lines[keep], starts[keep], stripped[keep], valid[keep])


# ---------------------------------------------------------------------------------------------
# Parsing a block


class Rejection(NamedTuple):
    """A record rejected while reading: its text, the reason, and its unit-local line."""

    text: str
    reason: str
    line: int | None


class Parsed(NamedTuple):
    """A parsed block: the rows, the records rejected, and the rows' line numbers (lazy)."""

    table: pa.Table
    rejected: list[Rejection]
    lines: Any


def shown(raw: bytes) -> str:
    """Bytes as text a person can read: UTF-8, with any other byte escaped (\\xfc)."""
    return str(raw, "utf-8", errors="backslashreplace").rstrip("\r\n")


def decode(data: Any, text: TextFormat) -> Any:
    """A block's bytes as UTF-8 (a no-op for UTF-8 input); raises UnicodeDecodeError."""
    if text.encoding == "utf-8":
        return data
    return str(data, text.encoding).encode("utf-8")


def check_utf8(data: Any) -> None:
    """Raises UnicodeDecodeError unless the bytes are UTF-8 (ASCII in one vectorised pass)."""
    if len(data) and np.frombuffer(data, dtype=np.uint8).max() >= 0x80:
        codecs.utf_8_decode(data, "strict", True)


def holds(data: Any, sub: bytes) -> bool:
    """Whether the bytes (any bytes-like: a memoryview has no find) hold `sub`, one byte."""
    find = getattr(data, "find", None)
    if find is not None:
        return find(sub) >= 0
    return bool(np.any(np.frombuffer(data, dtype=np.uint8) == sub[0]))


_MARK_INVALID = "beamscore-mark-invalid"
_INVALID = threading.local()  # the offsets found by the decode running on this thread


def _note_invalid(error: UnicodeDecodeError) -> tuple[str, int]:
    _INVALID.found.append(error.start)
    return "", error.end


codecs.register_error(_MARK_INVALID, _note_invalid)  # once: error handlers are process-wide


def _invalid_bytes(data: bytes, encoding: str) -> list[int]:
    """The offsets of the bytes that do not decode, found in one decoding pass."""
    _INVALID.found = found = []
    str(data, encoding, errors=_MARK_INVALID)
    return found


def _bad_text(data: bytes, records: Records, text: TextFormat) -> dict[int, str]:
    """The records (by index) whose bytes are not valid in the input's encoding, with why."""
    bad: dict[int, str] = {}
    for offset in _invalid_bytes(data, text.encoding):
        i = int(np.searchsorted(records.starts, offset, side="right")) - 1
        if i < 0 or i in bad or offset >= records.ends[i]:
            continue  # a byte outside any record (a line end's) or already named
        column = offset - int(records.starts[i])
        byte = bytes(data[offset : offset + 1]).hex()
        bad[i] = (
            f"not valid {text.encoding} text (byte 0x{byte} at column "
            f"{column + 1}); if the file is in another encoding, set --input_encoding "
            "(e.g. latin-1, cp1252)"
        )
    return bad


def parse_csv(
    data: Any,
    first_line: int | Callable[[], int],
    names: tuple[str, ...],
    present: list[str],
    types: dict[str, pa.DataType],
    text: TextFormat,
    keys: dict[str, pa.DataType] | None = None,
    quoted: bool | None = None,
) -> Parsed:
    """Parses a block of whole CSV records (no header) into a table of the `present` columns.

    Typed as `types` says; a block Arrow cannot convert is read again as text (the validate
    step then rejects the values that do not convert, one by one); records with bytes that are
    not valid text, or with the wrong number of fields, are rejected with their line. The key
    columns (`keys`, with the type each is written as) keep their exact spelling: `NA` or
    `null` is a key, not a missing value. `quoted`: whether the block holds a quote, when the
    cutter knows (None: look).
    """
    csv = (text.delimiter, len(names))
    excluded: frozenset[int] = frozenset()
    rejected: list[Rejection] = []
    try:
        utf8 = decode(data, text)
        check_utf8(utf8)
    except UnicodeDecodeError:
        utf8, excluded, rejected = _without_bad_text(data, first_line, csv, text)
        quoted = None
    if quoted is None:
        quoted = holds(utf8, b'"')
    invalid: list[str] = []
    if _BLANK.fullmatch(utf8):  # nothing left (every record had bytes that are not text)
        table = pa.Table.from_arrays(
            [pa.nulls(0, types.get(c, pa.string())) for c in present], names=present
        )
    else:
        try:
            table = _read_csv(utf8, names, present, types, text, invalid, quoted)
        except pa.ArrowInvalid:
            invalid.clear()
            as_text = {c: pa.string() for c in present}
            table = _read_csv(utf8, names, present, as_text, text, invalid, quoted)
        table = _nulls_as_spelled(table, keys or {})
    lines = BlockLines(utf8 if not excluded else data, first_line, csv, table.num_rows, excluded)
    if invalid:
        rejected += _wrong_field_counts(lines, invalid, len(names), excluded)
    return Parsed(table, rejected, lines)


def _without_bad_text(data: Any, first_line: int | Callable[[], int], csv, text: TextFormat):
    """The block with its records of invalid bytes taken out (as UTF-8), and their rejections."""
    records = split_records(data, first_line, csv)
    bad = _bad_text(data, records, text)
    keep = [data[r.start : r.end] for i, r in enumerate(records) if i not in bad]
    cleaned = decode(b"\n".join(keep) + (b"\n" if keep else b""), text)
    rejected = [
        Rejection(shown(data[records[i].start : records[i].end]), reason, records[i].line)
        for i, reason in bad.items()
    ]
    return cleaned, frozenset(bad), rejected


def _read_csv(
    data: bytes,
    names: tuple[str, ...],
    present: list[str],
    types: dict[str, pa.DataType],
    text: TextFormat,
    invalid: list[str],
    quoted: bool,
) -> pa.Table:
    import pyarrow.csv as pacsv

    def on_invalid(row: Any) -> str:
        invalid.append(row.text)
        return "skip"

    return pacsv.read_csv(
        pa.py_buffer(data),
        read_options=pacsv.ReadOptions(column_names=list(names), use_threads=True),
        parse_options=pacsv.ParseOptions(
            delimiter=text.delimiter,
            newlines_in_values=quoted,
            invalid_row_handler=on_invalid,
        ),
        convert_options=pacsv.ConvertOptions(
            include_columns=present, column_types=types, strings_can_be_null=False
        ),
    )


def _null_spellings() -> pa.Array:
    import pyarrow.csv as pacsv

    return pa.array(pacsv.ConvertOptions().null_values, pa.string())


_NULL_SPELLINGS = _null_spellings()  # Arrow's: "", "NA", "N/A", "NULL", "null", "nan", ...
_EMPTY = pa.array([""], pa.string())


def _nulls_as_spelled(table: pa.Table, keys: dict[str, pa.DataType]) -> pa.Table:
    """Arrow reads text with no nulls (strings_can_be_null=False); here a text column's null
    spellings become nulls, as Arrow would make them, but a key keeps every spelling: only an
    empty field is a missing key (null, as in Parquet and JSON Lines); `NA` or `null` is a key."""
    for i, name in enumerate(table.column_names):
        column = table.column(i)
        if pa.types.is_string(column.type):
            spellings = _EMPTY if name in keys else _NULL_SPELLINGS
            table = table.set_column(i, name, _as_nulls(column, spellings))
    return table


def null_spellings_as_nulls(column):
    """A CSV text column with Arrow's null spellings ("", NA, null, nan, ...) as nulls."""
    return _as_nulls(column, _NULL_SPELLINGS)


def _as_nulls(column, spellings: pa.Array):
    import pyarrow.compute as pc

    null = pc.is_in(column, value_set=spellings)
    if pc.any(null).as_py():
        return pc.if_else(null, pa.scalar(None, column.type), column)
    return column


def _wrong_field_counts(
    lines: BlockLines, invalid: list[str], ncols: int, excluded: frozenset[int]
) -> list[Rejection]:
    """Rejections for the rows Arrow skipped for their field count, with their lines when the
    block's records say which they are (else Arrow's text, without a line)."""
    reason = f"wrong number of fields: expected {ncols}"
    records = lines.records()  # the block's own, those taken out for their bytes among them
    records = [records[i] for i in np.flatnonzero(~records.valid) if int(i) not in excluded]
    if len(records) == len(invalid):
        return [Rejection(lines.text(r), reason, r.line) for r in records]
    return [Rejection(t.rstrip("\r\n"), reason, None) for t in invalid]


def parse_jsonl(
    data: Any,
    first_line: int | Callable[[], int],
    text: TextFormat,
    exact: frozenset[str] | None = frozenset(),
) -> Parsed:
    """Parses a block of whole JSON Lines records: in one Arrow call when the block is clean,
    else line by line (a line that is not a JSON object is rejected with its line).

    Every value keeps its JSON kind whatever its neighbours hold: text stays text (Arrow's
    reader would make ISO-looking strings timestamps), a whole number stays whole in the
    columns named in `exact` (None: every column; Arrow reads a column of whole and decimal
    numbers as floats, rounding whole numbers above 2^53), and a column of values of several
    kinds becomes a dense union of one child per kind, cast kind by kind (scoring.values).
    """
    rounded = False  # Arrow read a column named in `exact` as floats: parse it exactly
    try:
        utf8 = decode(data, text)
        check_utf8(utf8)
        table = _read_json(utf8)
        rounded = _floats_in(table, exact)
        if not rounded:
            return Parsed(table, [], BlockLines(utf8, first_line, None, table.num_rows))
    except (UnicodeDecodeError, pa.ArrowInvalid):
        pass
    records = split_records(data, first_line, None)
    bad = _bad_text(data, records, text)
    rejected, good = [], []
    for i, r in enumerate(records):
        raw = data[r.start : r.end]
        if i in bad:
            rejected.append(Rejection(shown(raw), bad[i], r.line))
            continue
        line = str(raw, text.encoding)
        try:
            value = json.loads(line)
        except ValueError as e:
            rejected.append(Rejection(line, f"not valid JSON: {e}", r.line))
            continue
        if not isinstance(value, dict):
            rejected.append(
                Rejection(line, f"not a JSON object but a {type(value).__name__}", r.line)
            )
            continue
        good.append((r.line, line, value))
    lines = _Resolved(np.asarray([g[0] for g in good], dtype=np.int64))
    if good and not rounded:  # the records left, in one Arrow call where it takes them
        try:
            table = _read_json("\n".join(g[1] for g in good).encode("utf-8"))
            if not _floats_in(table, exact):
                return Parsed(table, rejected, lines)
        except pa.ArrowInvalid:
            pass  # values of several kinds in a column
    return Parsed(json_table([g[2] for g in good]), rejected, lines)


def _floats_in(table: pa.Table, exact: frozenset[str] | None) -> bool:
    """Whether Arrow read a column named in `exact` (None: any) as floats."""
    named = set(table.column_names) if exact is None else exact & set(table.column_names)
    return any(pa.types.is_floating(table.schema.field(c).type) for c in named)


def _read_json(data: bytes) -> pa.Table:
    import pyarrow.json as pajson

    if _BLANK.fullmatch(data):
        return pa.table({})
    parse = pajson.ParseOptions()
    for _ in range(2):
        try:
            table = pajson.read_json(
                pa.BufferReader(data),
                read_options=pajson.ReadOptions(use_threads=True, block_size=_JSON_PARSE_BLOCK),
                parse_options=parse,
            )
        except pa.ArrowInvalid as e:
            if "straddling" not in str(e) and "block size" not in str(e).lower():
                raise
            table = pajson.read_json(
                pa.BufferReader(data),
                read_options=pajson.ReadOptions(use_threads=False, block_size=len(data) + 1),
                parse_options=parse,
            )
        timed = [f for f in table.schema if pa.types.is_timestamp(f.type)]
        if not timed:
            return table
        # JSON has no timestamps: Arrow guessed them from text, which stays text.
        parse = pajson.ParseOptions(
            explicit_schema=pa.schema([pa.field(f.name, pa.string()) for f in timed]),
            unexpected_field_behavior="infer",
        )
    return table
