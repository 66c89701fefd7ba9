"""Cutting a text file's byte range into blocks of whole records.

A unit owns the records that start in its range; records are found by their line ends, and in
CSV a line end inside a quoted value is not one (QuoteState; whether the range starts inside one
comes from the planner). The blocks go to the parsers (transforms.textread).
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import numpy as np

_LOG = logging.getLogger(__name__)

BLOCK_BYTES = 16 << 20
SCAN_BYTES = 1 << 20  # what the quote scan reads at a time: small reads reuse warm memory
_BOM = b"\xef\xbb\xbf"
_NL, _CR, _QUOTE = 10, 13, 34
_END = re.compile(rb"\n|\r(?!\n)")  # a record end: \n, \r\n (its \n) or a bare \r


def find_end(buf: Any, start: int = 0, eof: bool = True, stop: int | None = None) -> int:
    """The index of the first line end in buf[start:stop]: a \n, or a \r not followed by \n
    (classic Mac line ends); -1 when there is none. A \r as the last byte before `stop` is one
    only at the end of the file (a \n may follow in the next read)."""
    stop = len(buf) if stop is None else stop
    end = buf.find(b"\n", start, stop)
    if buf.find(b"\r", start, end if end >= 0 else stop) < 0:
        return end
    match = _END.search(buf, start, stop)
    end = match.start() if match else -1
    if end == stop - 1 and buf[end] == _CR and not eof:
        return -1
    return end


def rfind_end(
    buf: Any, stop: int | None = None, eof: bool = True, lo: int = 0, hi: int | None = None
) -> int:
    """The index of the last line end in buf[lo:stop] (see find_end; `hi`, the end of what has
    been read, defaults to the buffer's length), or -1."""
    hi = len(buf) if hi is None else hi
    stop = hi if stop is None else stop
    end = buf.rfind(b"\n", lo, stop)
    after = max(end + 1, lo)
    cr = buf.rfind(b"\r", after, stop)
    if cr == hi - 1 and not eof:
        cr = buf.rfind(b"\r", after, cr)
    if cr >= 0 and (cr + 1 >= hi or buf[cr + 1] != _NL):
        return cr
    return end


def count_ends(data: Any, lo: int = 0, hi: int | None = None) -> int:
    """How many line ends (\n, \r\n, bare \r) data[lo:hi] holds (a stream's block, or a range
    of a mapped file), in vectorised passes: one when there is no \r, which memchr rules out.
    A \r\n across `hi` is left to the range after it (its \n)."""
    hi = len(data) if hi is None else hi
    arr = np.frombuffer(data, dtype=np.uint8, count=hi - lo, offset=lo)
    lf = int(np.count_nonzero(arr == _NL))
    if data.find(b"\r", lo, hi) < 0:
        return lf
    cr = int(np.count_nonzero(arr == _CR))
    crlf = int(np.count_nonzero((arr[:-1] == _CR) & (arr[1:] == _NL)))
    split = hi < len(data) and arr[-1] == _CR and data[hi] == _NL
    return lf + cr - crlf - int(split)


class LineCount:
    """Line ends before positions of a mapped file, counted only when asked (a block with a
    rejected record), and each byte once: a count goes on from the furthest position counted.
    Shared by a unit's blocks, which its parser and its validator ask from two threads.
    """

    def __init__(self, data: Any):
        self._data = data
        self._pos = self._ends = 0
        self._lock = threading.Lock()

    def before(self, pos: int) -> int:
        """How many line ends data[:pos] holds (pos is a record's start)."""
        with self._lock:
            if pos < self._pos:
                self._pos = self._ends = 0
            for lo in range(self._pos, pos, SCAN_BYTES * 16):
                self._ends += count_ends(self._data, lo, min(lo + SCAN_BYTES * 16, pos))
            self._pos = pos
            return self._ends


def line_of(first_line: int | Callable[[], int]) -> int:
    """A block's first line: counted now if it was left to be counted when asked."""
    return first_line if isinstance(first_line, int) else first_line()


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
        origin: the position of arr[0] in the positions asked and answered.
    """

    def __init__(
        self,
        arr: np.ndarray,
        delimiter: int,
        inside: bool = False,
        before: int = _NL,
        origin: int = 0,
    ):
        self._origin = origin
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
        runs = np.searchsorted(self._starts, np.asarray(positions) - self._origin)
        if not len(self._after):
            return np.full(len(positions), self._inside)
        return np.where(runs > 0, self._after[np.maximum(runs - 1, 0)], self._inside)

    def opened_before(self, position: int) -> int:
        """Where the quoted value holding `position` opened (the buffer's start if before it)."""
        runs = int(np.searchsorted(self._starts, position - self._origin))
        return self._origin + (int(self._starts[runs - 1]) if runs else 0)

    def closed_after(self, position: int) -> int | None:
        """Where the quoted value holding `position` closes (None: not in the buffer)."""
        runs = int(np.searchsorted(self._starts, position - self._origin))
        outside = np.flatnonzero(~self._after[runs:])
        return self._origin + int(self._starts[runs + outside[0]]) if len(outside) else None


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
    """Whole records of a unit: their bytes, the unit-local line on which they start (or, for a
    mapped file, a function that counts it when asked: see RecordBlocks), and whether they hold
    a quote (CSV)."""

    data: Any  # a bytearray, or a read-only memoryview of a mapped file
    first_line: int | Callable[[], int]
    quoted: bool = True


_QUOTES = re.compile(rb'"*')
_NOTHING = np.zeros(0, dtype=np.uint8)


class RecordBlocks:
    """Iterates over blocks of whole records of one unit of a text file.

    A unit owns the records that start in (start, stop] (a file's first unit: [0, stop]): it
    begins after the first record end at or after `start`, and ends with the record that ends
    at the first record end at or after `stop`, where the next unit begins.

    Args:
        stream: the file's (decompressed) bytes, positioned at `start` (None with `mapped`).
        start: the unit's first byte.
        stop: the unit's last byte; None: to the end of the file.
        quoted: whether quotes matter (CSV: a line end inside a quoted value ends no record).
        in_quotes: whether `start` lies inside a quoted value.
        delimiter: (CSV) the field delimiter: a quote opens a value only at a field's start.
        before: the byte before `start` (b"" at the file's start).
        header: whether the unit begins with a header record to skip (a CSV file's first unit).
        block_bytes: about how many bytes a block holds (a longer record makes a longer block).
        mapped: the whole file as one read-only buffer (a memory map of a local file), instead
            of `stream`: its blocks are views of it (no byte is copied), and line ends are
            counted only for a block whose first line is asked (one with a rejected record).

    After iteration, `newlines` holds the line ends the unit consumed (its header's included),
    so a later unit's local line numbers can be made absolute. With `mapped` the blocks' first
    lines are the file's own (absolute) and `newlines` is 0.
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
        mapped: Any = None,
    ):
        self._stream = stream
        self._mapped = mapped
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
        # What has been read is _buf[_head:_hi]; _buf[0] is the file's byte _base. A stream is
        # read into a bytearray, so that dropping its head (a header, an alignment) or cutting
        # off a block's tail copies nothing: CPython trims a bytearray in place at either end.
        # A mapped file is all there: reading on only moves _hi.
        if self._mapped is not None:
            self._buf, self._base, self._head = self._mapped, 0, self._start
            self._hi = self._start
        else:
            self._buf, self._base, self._head, self._hi = bytearray(), self._start, 0, 0
        self._eof = False
        self._more()
        bom = self._start == 0 and self._buf[self._head : self._head + 3] == _BOM
        if bom:
            self._drop(3)
        if self._start > 0 and self._skip_record(int(self._in_quotes)) is None:
            return  # no record starts in this unit
        while self._header:  # the first record that is not an empty line
            record = self._skip_record(0)
            if record is None:
                return  # a header and nothing else
            if self._mapped is None:
                self.newlines += count_ends(record)
            self._header = not record.strip()  # blank lines before the header are skipped
        first = self._base + self._head
        if bom and first == 3:
            first = 0  # the file's first record starts at its BOM (a unit cut inside it skips it)
        if self._stop is not None and first > self._stop:
            return  # the first record starts after the unit's range: the next unit's
        yield from self._blocks()

    def _more(self) -> bool:
        """Reads on (about block_bytes); False at the end of the file."""
        if self._mapped is not None:
            hi = min(self._hi + self._block_bytes, len(self._buf))
            grew, self._hi = hi > self._hi, hi
            self._eof = hi == len(self._buf)
            return grew
        chunk = self._stream.read(self._block_bytes)
        if not chunk:
            self._eof = True
            return False
        self._buf += chunk
        self._hi = len(self._buf)
        return True

    def _drop(self, n: int) -> None:
        """Drops the next n bytes read."""
        if self._mapped is not None:
            self._head += n
        else:
            del self._buf[:n]
            self._base += n
            self._hi -= n

    def _skip_record(self, parity: int) -> bytes | None:
        """Drops what has been read up to and including the first record end and returns what
        it dropped; None at the end of the file."""
        while True:
            end = self._first_end(parity, self._before)
            if end is not None:
                record = bytes(self._buf[self._head : end + 1])
                self._drop(end + 1 - self._head)
                return record
            if not self._more():
                return None

    def _blocks(self) -> Iterator[Block]:
        line = self.newlines + 1
        count = LineCount(self._mapped) if self._mapped is not None else None
        while True:
            while self._hi - self._head < self._block_bytes and not self._eof:
                self._more()
            cut, quoted, done = self._cut()
            if cut is None:  # one record longer than what has been read: read on
                self._more()
                continue
            if quoted and cut < self._hi:  # a quote was read, but is it in the block?
                quoted = self._buf.find(b'"', self._head, cut) >= 0
            first = self._base + self._head  # the block's first byte in the file
            if self._mapped is not None:
                data = memoryview(self._mapped)[self._head : cut]
                self._head = cut
                if data:
                    yield Block(data, _LineAt(count, first), quoted)
            else:
                data = self._buf
                self._buf = data[cut:]  # the start of the next record: a short copy
                del data[cut:]
                self._base += cut
                self._hi = len(self._buf)
                if data:
                    newlines = count_ends(data)
                    yield Block(data, line, quoted)
                    line += newlines
                    self.newlines += newlines
            if done:
                return

    def _cut(self) -> tuple[int | None, bool, bool]:
        """Where to cut what has been read (after a record end; None: no whole record yet),
        whether the block holds a quote, and whether that ends the unit. What has been read
        starts at a record start."""
        buf, head, hi = self._buf, self._head, self._hi
        quoted = self._quoted and buf.find(b'"', head, hi) >= 0
        quotes = self._quotes(head) if quoted else None
        stop = None if self._stop is None else self._stop - self._base  # its index in _buf
        if stop is not None and stop < hi:
            end = self._end_from(max(stop, head), quotes)
            if end is not None:
                return end + 1, quoted, True
        if self._eof:
            return hi, quoted, True
        end = self._last_end(quotes)
        return (end + 1 if end is not None else None), quoted, False

    def _quotes(self, lo: int, inside: bool = False, before: int = _NL) -> QuoteState:
        # The view is released with the array when this returns: a bytearray may then shrink.
        n = max(self._hi - lo, 0)
        arr = np.frombuffer(self._buf, dtype=np.uint8, count=n, offset=lo) if n else _NOTHING
        return QuoteState(arr, self._delimiter, inside, before, origin=lo)

    def _end_from(self, start: int, quotes: QuoteState | None) -> int | None:
        """The first record end at or after `start`."""
        buf, hi = self._buf, self._hi
        end = find_end(buf, start, self._eof, hi)
        while end >= 0 and quotes is not None and quotes.inside_at(np.array([end]))[0]:
            closed = quotes.closed_after(end)
            end = find_end(buf, closed + 1, self._eof, hi) if closed is not None else -1
        return end if end >= 0 else None

    def _last_end(self, quotes: QuoteState | None) -> int | None:
        """The last record end in what has been read."""
        buf, lo, hi = self._buf, self._head, self._hi
        end = rfind_end(buf, hi, self._eof, lo, hi)
        while end >= 0 and quotes is not None and quotes.inside_at(np.array([end]))[0]:
            end = rfind_end(buf, quotes.opened_before(end), self._eof, lo, hi)
        return end if end >= 0 else None

    def _first_end(self, parity: int, before: int) -> int | None:
        """The index of the first record end in what has been read, given whether its start is
        inside quotes."""
        start = self._head
        if self._quoted and before == _QUOTE:
            # The unit starts inside a run of quotes that the planner counted whole with the
            # range before: whether it starts inside quotes holds after the run.
            start = _QUOTES.match(self._buf, start, self._hi).end()
        quotes = None
        if self._quoted and (parity or self._buf.find(b'"', start, self._hi) >= 0):
            quotes = self._quotes(start, bool(parity), _NL if start > self._head else before)
        elif parity:
            return None
        end = self._end_from(start, quotes)
        if end is None:
            return None
        self._before = _NL
        return end


class _LineAt:
    """A mapped block's first line (the file's own), counted when asked."""

    def __init__(self, count: LineCount, pos: int):
        self._count, self._pos = count, pos

    def __call__(self) -> int:
        return 1 + self._count.before(self._pos)


def quote_ends(
    stream: Any, length: int, delimiter: str, before: bytes, chunk: int = SCAN_BYTES
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
        if data.find(b'"') >= 0:  # without a quote the state goes through unchanged
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
        if not skip and not pending and data.find(b'"') < 0:  # memchr: no quote, no change
            previous = data[-1]
            continue
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
