"""CSV and JSON Lines: whole-record blocks of a byte range, parsed by Arrow a block at a time.

A text file is cut into byte ranges (work units). A unit owns the records that start in its range;
records are found by their line ends, and in CSV a line end inside a quoted value is not one
(QuoteState; whether the range starts inside one comes from the planner). Each block of whole
records goes to Arrow in one call, typed as the launch decided; only a block Arrow refuses is
looked at again (as text, then record by record). Physical line numbers are worked out only for
blocks that have a rejected record, from the block's own bytes.
"""

from __future__ import annotations

import codecs
import dataclasses
import json
import logging
import re
import threading
from collections.abc import Iterator
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa

from scoring.rows import json_table
from transforms.spec import TextFormat

_LOG = logging.getLogger(__name__)

BLOCK_BYTES = 16 << 20
_BOM = b"\xef\xbb\xbf"
_NL, _CR, _QUOTE = 10, 13, 34
_END = re.compile(rb"\n|\r(?!\n)")  # a record end: \n, \r\n (its \n) or a bare \r


def find_end(buf: bytes, start: int = 0, eof: bool = True) -> int:
    """The index of the first line end at or after `start`: a \n, or a \r not followed by
    \n (classic Mac line ends); -1 when there is none. A \r as the buffer's last byte is
    one only at the end of the file (a \n may follow in the next read)."""
    end = buf.find(b"\n", start)
    if buf.find(b"\r", start, end if end >= 0 else len(buf)) < 0:
        return end
    match = _END.search(buf, start)
    end = match.start() if match else -1
    if end == len(buf) - 1 and buf[end] == _CR and not eof:
        return -1
    return end


def rfind_end(buf: bytes, stop: int | None = None, eof: bool = True) -> int:
    """The index of the last line end before `stop` (see find_end), or -1."""
    stop = len(buf) if stop is None else stop
    end = buf.rfind(b"\n", 0, stop)
    cr = buf.rfind(b"\r", end + 1, stop)
    if cr == len(buf) - 1 and not eof:
        cr = buf.rfind(b"\r", end + 1, cr)
    if cr >= 0 and (cr + 1 >= len(buf) or buf[cr + 1] != _NL):
        return cr
    return end


def count_ends(data: bytes) -> int:
    """How many line ends (\n, \r\n, bare \r) a run of whole records holds."""
    lf = data.count(b"\n")
    cr = data.count(b"\r")
    return lf + cr - data.count(b"\r\n") if cr else lf


def end_mask(arr: np.ndarray) -> np.ndarray:
    """Which bytes end a line: \n, or \r not followed by \n."""
    ends = arr == _NL
    cr = arr == _CR
    if cr.any():
        after = np.empty_like(cr)
        after[:-1] = arr[1:] != _NL
        after[-1:] = True
        ends |= cr & after
    return ends


# Arrow's JSON reader needs a record to fit in one of its blocks; smaller blocks parse in
# parallel, so try those first and fall back to one block for a block holding a huge record.
_JSON_PARSE_BLOCK = 1 << 20


class QuoteState:
    """Which bytes of a CSV buffer lie inside a quoted value, by Arrow's rule: a quote opens a
    value only at the start of a field (after a delimiter or a line end); inside one, a doubled
    quote is a quote and a single one closes it; any other quote is text, as in `55" tv`.

    Counting quotes (every quote toggles) gives the same answer for well-formed files and is
    what the fast path checks; one stray quote in an unquoted field would otherwise turn the
    rest of the file into "one quoted value". Vectorised over runs of quotes; only a buffer that
    holds stray quotes walks them, and only from the first one.

    Args:
        arr: the buffer's bytes (uint8).
        delimiter: the field delimiter's byte.
        inside: whether arr[0] lies inside a quoted value.
        before: the byte before arr[0] (a line end at a record's start).
    """

    def __init__(self, arr: np.ndarray, delimiter: int, inside: bool = False, before: int = _NL):
        quotes = np.flatnonzero(arr == _QUOTE)
        if len(quotes):
            first = np.concatenate(([True], np.diff(quotes) != 1))
            heads = np.flatnonzero(first)
            lengths = np.diff(np.append(heads, len(quotes)))
            starts = quotes[heads][(lengths & 1) == 1]  # an even run never changes the state
            prev = arr[np.maximum(starts - 1, 0)].astype(np.int16)
            prev[starts == 0] = before
            at_field_start = (prev == _NL) | (prev == 13) | (prev == delimiter)
        else:
            starts = quotes
            at_field_start = np.zeros(0, dtype=bool)
        self._starts = starts
        self._inside = inside
        self._after = _states_after(at_field_start, inside)

    @property
    def end(self) -> bool:
        """Whether the byte after the buffer lies inside a quoted value."""
        return bool(self._after[-1]) if len(self._after) else self._inside

    def inside_at(self, positions: np.ndarray) -> np.ndarray:
        """Whether each position (not itself a quote) lies inside a quoted value."""
        runs = np.searchsorted(self._starts, positions)
        if not len(self._after):
            return np.full(len(positions), self._inside)
        return np.where(runs > 0, self._after[np.maximum(runs - 1, 0)], self._inside)

    def opened_before(self, position: int) -> int:
        """Where the quoted value holding `position` opened (the buffer's start if before it)."""
        runs = int(np.searchsorted(self._starts, position))
        return int(self._starts[runs - 1]) if runs else 0

    def closed_after(self, position: int) -> int | None:
        """Where the quoted value holding `position` closes (None: not in the buffer)."""
        runs = int(np.searchsorted(self._starts, position))
        outside = np.flatnonzero(~self._after[runs:])
        return int(self._starts[runs + outside[0]]) if len(outside) else None


def _states_after(at_field_start: np.ndarray, inside: bool) -> np.ndarray:
    """Inside-or-not after each odd run of quotes: a run toggles the state, except outside a
    value where it is not at a field start (text, no toggle)."""
    n = len(at_field_start)
    after = np.empty(n, dtype=bool)
    i, rounds = 0, 0
    while i < n and rounds < 16:  # assume every run toggles; fix up at each stray one
        j = np.arange(n - i)
        toggled = (j & 1) == 0
        guess_after = toggled != inside  # inside XOR (run toggled an odd number of times)
        guess_before = toggled == inside
        stray = np.flatnonzero(~guess_before & ~at_field_start[i:])
        if not len(stray):
            after[i:] = guess_after
            return after
        k = int(stray[0])
        after[i : i + k] = guess_after[:k]
        after[i + k] = False  # text in an unquoted field: still outside
        inside, i, rounds = False, i + k + 1, rounds + 1
    for j in range(i, n):  # many stray quotes: walk the rest
        if inside or at_field_start[j]:
            inside = not inside
        after[j] = inside
    return after


class Block(NamedTuple):
    """Whole records of a unit: their bytes and the unit-local line on which they start."""

    data: bytearray
    first_line: int


class RecordBlocks:
    """Iterates over blocks of whole records of one unit of a text file.

    A unit owns the records that start in (start, stop] (a file's first unit: [0, stop]): it
    begins after the first record end at or after `start`, and ends with the record that ends
    at the first record end at or after `stop`, where the next unit begins.

    Args:
        stream: the file's (decompressed) bytes, positioned at `start`.
        start: the unit's first byte.
        stop: the unit's last byte; None: to the end of the file.
        quoted: whether quotes matter (CSV: a line end inside a quoted value ends no record).
        in_quotes: whether `start` lies inside a quoted value.
        delimiter: (CSV) the field delimiter: a quote opens a value only at a field's start.
        before: the byte before `start` (b"" at the file's start).
        header: whether the unit begins with a header record to skip (a CSV file's first unit).
        block_bytes: about how many bytes a block holds (a longer record makes a longer block).

    After iteration, `newlines` holds the line ends the unit consumed (its header's included),
    so a later unit's local line numbers can be made absolute.
    """

    def __init__(
        self,
        stream: Any,
        start: int,
        stop: int | None,
        *,
        quoted: bool,
        in_quotes: bool = False,
        delimiter: str = ",",
        before: bytes = b"",
        header: bool = False,
        block_bytes: int = BLOCK_BYTES,
    ):
        self._stream = stream
        self._delimiter = ord(delimiter)
        self._before = before[-1] if before else _NL
        self._start = start
        self._stop = stop
        self._quoted = quoted
        self._in_quotes = in_quotes
        self._header = header
        self._block_bytes = block_bytes
        self.newlines = 0

    def __iter__(self) -> Iterator[Block]:
        # A bytearray, so that dropping its head (a header, an alignment) or cutting off a
        # block's tail copies nothing: CPython trims a bytearray in place at either end.
        self._buf = bytearray()
        self._pos = self._start  # file offset of _buf[0]
        self._eof = False
        self._more()
        if self._start == 0 and self._buf.startswith(_BOM):
            del self._buf[:3]
            self._pos = 3
        if self._start > 0 and self._skip_record(int(self._in_quotes)) is None:
            return  # no record starts in this unit
        while self._header:  # the first record that is not an empty line
            record = self._skip_record(0)
            if record is None:
                return  # a header and nothing else
            self.newlines += count_ends(record)
            self._header = not record.strip()  # blank lines before the header are skipped
        if self._stop is not None and self._pos > self._stop:
            return  # the first record starts after the unit's range: the next unit's
        yield from self._blocks()

    def _more(self) -> bool:
        chunk = self._stream.read(self._block_bytes)
        if not chunk:
            self._eof = True
            return False
        self._buf += chunk
        return True

    def _skip_record(self, parity: int) -> bytes | None:
        """Drops the buffer up to and including the first record end and returns what it
        dropped; None at the end of the file."""
        while True:
            end = self._first_end(self._buf, parity, self._before)
            if end is not None:
                record = bytes(self._buf[: end + 1])
                del self._buf[: end + 1]
                self._pos += end + 1
                return record
            if not self._more():
                return None

    def _blocks(self) -> Iterator[Block]:
        line = self.newlines + 1
        while True:
            while len(self._buf) < self._block_bytes and not self._eof:
                self._more()
            cut, done = self._cut(self._buf)
            if cut is None:  # one record longer than the buffer: read on
                self._more()
                continue
            data = self._buf
            self._buf = data[cut:]  # the start of the next record: a short copy
            del data[cut:]
            self._pos += cut
            if data:
                newlines = count_ends(data)
                yield Block(data, line)
                line += newlines
                self.newlines += newlines
            if done:
                return

    def _cut(self, buf: bytearray) -> tuple[int | None, bool]:
        """Where to cut the buffer (after a record end; None: no whole record yet) and whether
        that ends the unit. The buffer starts at a record start."""
        quotes = self._quotes(buf) if self._quoted and buf.find(b'"') >= 0 else None
        if self._stop is not None and self._stop - self._pos < len(buf):
            end = self._end_from(buf, max(self._stop - self._pos, 0), quotes)
            if end is not None:
                return end + 1, True
        if self._eof:
            return len(buf), True
        end = self._last_end(buf, quotes)
        return (end + 1 if end is not None else None), False

    def _quotes(self, buf: bytearray, inside: bool = False, before: int = _NL) -> QuoteState:
        # The view is released with the array when this returns: the buffer may then shrink.
        return QuoteState(np.frombuffer(buf, dtype=np.uint8), self._delimiter, inside, before)

    def _end_from(self, buf: bytes, start: int, quotes: QuoteState | None) -> int | None:
        """The first record end at or after `start`."""
        end = find_end(buf, start, self._eof)
        while end >= 0 and quotes is not None and quotes.inside_at(np.array([end]))[0]:
            closed = quotes.closed_after(end)
            end = find_end(buf, closed + 1, self._eof) if closed is not None else -1
        return end if end >= 0 else None

    def _last_end(self, buf: bytes, quotes: QuoteState | None) -> int | None:
        """The last record end in the buffer."""
        end = rfind_end(buf, None, self._eof)
        while end >= 0 and quotes is not None and quotes.inside_at(np.array([end]))[0]:
            end = rfind_end(buf, quotes.opened_before(end), self._eof)
        return end if end >= 0 else None

    def _first_end(self, buf: bytes, parity: int, before: int) -> int | None:
        """The index of the first record end in buf, given whether its start is inside quotes."""
        skip = 0
        if self._quoted and before == _QUOTE:
            # The unit starts inside a run of quotes that the planner counted whole with the
            # range before: whether it starts inside quotes holds after the run.
            skip = len(buf) - len(buf.lstrip(b'"'))
            buf = buf[skip:]
        quotes = None
        if self._quoted and (parity or buf.find(b'"') >= 0):
            quotes = self._quotes(buf, bool(parity), _NL if skip else before)
        elif parity:
            return None
        end = self._end_from(buf, 0, quotes)
        if end is None:
            return None
        self._before = _NL
        return end + skip


def quote_ends(
    stream: Any, length: int, delimiter: str, before: bytes, chunk: int = BLOCK_BYTES
) -> tuple[bool, bool]:
    """Whether the byte after the next `length` bytes of a stream lies inside a quoted value,
    if their first byte does not, and if it does (a range's state is known only once the
    ranges before it are). `before` is the byte before them (b"" at the file's start).

    A run of quotes belongs whole to the range it starts in (`""` inside a value is one quote,
    but two toggles if split): a run begun before the range is skipped, and one that reaches
    past the range's end is read to its end."""
    ends = [False, True]
    previous = before[-1] if before else _NL

    def update(data: bytes) -> None:
        nonlocal ends, previous
        arr = np.frombuffer(data, dtype=np.uint8)
        ends = [QuoteState(arr, ord(delimiter), inside, previous).end for inside in ends]
        previous = data[-1]

    skip = previous == _QUOTE  # the range starts inside a run of quotes begun before it
    pending = b""  # a run of quotes at a chunk's end: counted with what follows it
    while length > 0:
        data = stream.read(min(chunk, length))
        if not data:
            break
        length -= len(data)
        if skip:
            data = data.lstrip(b'"')
            skip = not data
        data = pending + data
        tail = len(data) - len(data.rstrip(b'"'))
        pending, data = data[len(data) - tail :], data[: len(data) - tail]
        if data:
            update(data)
    if pending:
        while (more := stream.read(1)) == b'"':  # past the range: the run's end
            pending += more
        update(pending)
    return ends[0], ends[1]


# ---------------------------------------------------------------------------------------------
# Line numbers of a block's records


class BlockLines:
    """The physical line (unit-local) on which each record of a block starts, worked out from the
    block's bytes only when asked (a block with a rejected record).

    Args:
        data: the block (UTF-8 or ASCII-compatible bytes of whole records).
        first_line: the unit-local line of data[0].
        csv: the CSV delimiter and column count, or None for JSON Lines.
        excluded: indexes (among the block's non-empty records) of records taken out before
            parsing (bytes that are not valid text).
        rows: how many rows the parser produced, to check the mapping against.
    """

    def __init__(
        self,
        data: bytes,
        first_line: int,
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


def split_records(data: bytes, first_line: int, csv: tuple[str, int] | None) -> Records:
    """The block's records: its lines (JSON Lines: those that are not blank), or (CSV) its
    lines not inside quotes, with a field count against the header's.

    Mirrors Arrow's parsers: a line end or delimiter inside a quoted value (QuoteState) is text,
    an empty line is no record. Vectorised: a block of
    a hundred thousand records costs a few NumPy passes, no Python object per record.
    """
    arr = np.frombuffer(data, dtype=np.uint8)
    all_newlines = np.flatnonzero(end_mask(arr))
    quoted = csv is not None and data.find(b'"') >= 0
    quotes = QuoteState(arr, ord(csv[0])) if quoted else None
    newlines = all_newlines
    if quotes is not None:
        newlines = newlines[~quotes.inside_at(newlines)]
    if not len(newlines) or newlines[-1] != len(data) - 1:  # the last record has no line end
        newlines = np.append(newlines, len(data))
    ends = newlines
    starts = np.concatenate(([0], ends[:-1] + 1))
    lines = first_line + np.searchsorted(all_newlines, starts)
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
    return raw.decode("utf-8", errors="backslashreplace").rstrip("\r\n")


def decode(data: bytes, text: TextFormat) -> bytes:
    """A block's bytes as UTF-8 (a no-op for UTF-8 input); raises UnicodeDecodeError."""
    if text.encoding == "utf-8":
        return data
    return data.decode(text.encoding).encode("utf-8")


_MARK_INVALID = "beamscore-mark-invalid"
_INVALID = threading.local()  # the offsets found by the decode running on this thread


def _note_invalid(error: UnicodeDecodeError) -> tuple[str, int]:
    _INVALID.found.append(error.start)
    return "", error.end


codecs.register_error(_MARK_INVALID, _note_invalid)  # once: error handlers are process-wide


def _invalid_bytes(data: bytes, encoding: str) -> list[int]:
    """The offsets of the bytes that do not decode, found in one decoding pass."""
    _INVALID.found = found = []
    data.decode(encoding, errors=_MARK_INVALID)
    return found


def _bad_text(data: bytes, records: Records, text: TextFormat) -> dict[int, str]:
    """The records (by index) whose bytes are not valid in the input's encoding, with why."""
    bad: dict[int, str] = {}
    for offset in _invalid_bytes(data, text.encoding):
        i = int(np.searchsorted(records.starts, offset, side="right")) - 1
        if i < 0 or i in bad or offset >= records.ends[i]:
            continue  # a byte outside any record (a line end's) or already named
        column = offset - int(records.starts[i])
        bad[i] = (
            f"not valid {text.encoding} text (byte 0x{data[offset : offset + 1].hex()} at column "
            f"{column + 1}); if the file is in another encoding, set --input_encoding "
            "(e.g. latin-1, cp1252)"
        )
    return bad


def parse_csv(
    data: bytes,
    first_line: int,
    names: tuple[str, ...],
    present: list[str],
    types: dict[str, pa.DataType],
    text: TextFormat,
    keys: dict[str, pa.DataType] | None = None,
) -> Parsed:
    """Parses a block of whole CSV records (no header) into a table of the `present` columns.

    Typed as `types` says; a block Arrow cannot convert is read again as text (the validate
    step then rejects the values that do not convert, one by one); records with bytes that are
    not valid text, or with the wrong number of fields, are rejected with their line. The key
    columns (`keys`, with the type each is written as) keep their exact spelling: `NA` or
    `null` is a key, not a missing value.
    """
    csv = (text.delimiter, len(names))
    excluded: frozenset[int] = frozenset()
    rejected: list[Rejection] = []
    try:
        utf8 = decode(data, text)
        if not utf8.isascii():
            utf8.decode("utf-8")
    except UnicodeDecodeError:
        utf8, excluded, rejected = _without_bad_text(data, first_line, csv, text)
    invalid: list[str] = []
    if not utf8.strip():  # nothing left (every record had bytes that are not text)
        table = pa.Table.from_arrays(
            [pa.nulls(0, types.get(c, pa.string())) for c in present], names=present
        )
    else:
        try:
            table = _read_csv(utf8, names, present, types, text, invalid)
        except pa.ArrowInvalid:
            invalid.clear()
            as_text = {c: pa.string() for c in present}
            table = _read_csv(utf8, names, present, as_text, text, invalid)
        table = _nulls_as_spelled(table, keys or {})
    lines = BlockLines(utf8 if not excluded else data, first_line, csv, table.num_rows, excluded)
    if invalid:
        rejected += _wrong_field_counts(lines, invalid, len(names), excluded)
    return Parsed(table, rejected, lines)


def _without_bad_text(data: bytes, first_line: int, csv, text: TextFormat):
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
            newlines_in_values=data.find(b'"') >= 0,
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
    if not excluded:
        records = lines.records()
        records = [records[i] for i in np.flatnonzero(~records.valid)]
        if len(records) == len(invalid):
            return [Rejection(lines.text(r), reason, r.line) for r in records]
    return [Rejection(t.rstrip("\r\n"), reason, None) for t in invalid]


def parse_jsonl(
    data: bytes, first_line: int, text: TextFormat, exact: frozenset[str] | None = frozenset()
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
        if not utf8.isascii():
            utf8.decode("utf-8")
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
        line = raw.decode(text.encoding)
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

    if not data.strip():
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
