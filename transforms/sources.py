"""Opening input files: formats, compressions, and the sample the launcher decides types from.

Every reader opens files through `open_input`, and the launcher's sample is read by the same
parsers the workers use, so the launch sees the input exactly as the run will.
"""

from __future__ import annotations

import contextlib
import os
import re
import urllib.parse
from collections.abc import Iterable, Iterator
from typing import Any

import pyarrow as pa
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

FORMATS = ("parquet", "csv", "jsonl")
_EXTENSIONS = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
    ".tsv": "csv",
    ".jsonl": "jsonl",
    ".json": "jsonl",
    ".ndjson": "jsonl",
}
# Compressions Arrow decompresses in C++ (no GIL held, so parsing overlaps the rest); the
# others Beam decompresses in Python.
_ARROW_CODECS = {
    CompressionTypes.GZIP: "gzip",
    CompressionTypes.BZIP2: "bz2",
    CompressionTypes.ZSTD: "zstd",
}
# Legacy INT96 timestamps (Spark, Hive, Impala) read at microseconds: at nanoseconds (Arrow's
# default) a date past 2262 or before 1677 overflows into another date.
INT96_UNIT = "us"


class FileUnreadable(Exception):
    """A whole input file cannot be read; the message says why."""


def fingerprint(meta: Any) -> tuple[int, int]:
    """A matched file's (size in bytes, last update in ms), from its FileMetadata. The launcher
    and the workers each match the input: a file whose fingerprint differs between the two
    changed while the run read it."""
    return int(meta.size_in_bytes or 0), round((meta.last_updated_in_seconds or 0.0) * 1000)


# A Hive-style partition folder (Spark, Hive, BigQuery external tables, pyarrow.dataset):
# name=value, the value %-encoded; Hive writes a null as __HIVE_DEFAULT_PARTITION__.
_PARTITION = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$")
HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"


def partition_values(path: str) -> dict[str, str | None]:
    """The name=value folders of a file's path, as text (the deepest wins a repeated name)."""
    found: dict[str, str | None] = {}
    folders = path.split("://", 1)[-1].replace("\\", "/").split("/")[:-1]
    for folder in folders:
        m = _PARTITION.match(folder)
        if m:
            value = urllib.parse.unquote(m[2])
            found[m[1]] = None if value == HIVE_NULL else value
    return found


def with_partitions(table: pa.Table, path: str, names) -> pa.Table:
    """The table with a text column per partition name (its value in this file's folders, or
    null where the path has no such folder), after the file's own columns."""
    if not names:
        return table
    values = partition_values(path)
    for name in names:
        value = values.get(name)
        column = pa.array([value] * table.num_rows, pa.string())
        table = table.append_column(pa.field(name, pa.string()), column)
    return table


def identity(path: str) -> str:
    """What a matched file is, whatever name matched it: a local file's real path (a symlink
    and its target are one file), a URL (gs://) as it is."""
    return path if "://" in path else os.path.realpath(path)


def one_name_each(paths: Iterable[str]) -> tuple[str, ...]:
    """Matched paths, one name per file (sorted): a file matched under several names (a
    symlink beside its target) is read once, under its real name if that matched, else under
    its first name. The launcher and the workers each match the input and choose alike."""
    names: dict[str, list[str]] = {}
    for path in paths:
        names.setdefault(identity(path), []).append(path)
    return tuple(sorted(first_name(n) for n in names.values()))


def first_name(names: Iterable[str]) -> str:
    """The name a file matched under several names is read by (see one_name_each)."""
    return min(names, key=lambda p: (p != identity(p), p))


def compression_of(path: str) -> str:
    """Beam's compression type for a file name (CompressionTypes.UNCOMPRESSED when none)."""
    return CompressionTypes.detect_compression_type(path)


def _uncompressed_name(path: str) -> str:
    """A file name in lower case without its compression suffix (data.csv.gz -> data.csv)."""
    name = path.lower()
    if compression_of(name) != CompressionTypes.UNCOMPRESSED:
        name = name.rsplit(".", 1)[0]
    return name


def format_of(path: str) -> str | None:
    """The input format a file name implies (compression suffixes ignored), or None."""
    name = _uncompressed_name(path)
    return next((fmt for ext, fmt in _EXTENSIONS.items() if name.endswith(ext)), None)


def is_tsv(path: str) -> bool:
    """Whether a name (or pattern) says tab-separated: .tsv, compressed or not."""
    return _uncompressed_name(path).endswith(".tsv")


def open_raw(path: str):
    """A seekable file over the stored bytes: Arrow's own for a local path (its reads need no
    GIL), Beam's FileSystems for gs:// and other remote paths."""
    if "://" not in path:
        return pa.OSFile(path, "rb")
    return FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)


def mapped(path: str) -> Any:
    """A local, uncompressed, non-empty file as a read-only memory map (None for any other):
    its text is cut and parsed where the page cache holds it, with no copy into Python memory.

    The map stays open while a block (a view of it) is held. A file cut short while it is read
    ends the process (SIGBUS), as any reader of a memory map: the run fails and leaves DIR as
    it was; the input-change check already refuses a file rewritten under a run.
    """
    if "://" in path or compression_of(path) != CompressionTypes.UNCOMPRESSED:
        return None
    import mmap

    try:
        with open(path, "rb") as f:
            if not os.fstat(f.fileno()).st_size:
                return None
            view = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError):  # a file system that cannot map it: read it as a stream
        return None
    view.madvise(mmap.MADV_SEQUENTIAL)
    return view


@contextlib.contextmanager
def open_input(path: str, offset: int = 0) -> Iterator[Any]:
    """The file's decompressed bytes as a stream with read(n), from `offset` (uncompressed files
    only: a compressed file is read from its start)."""
    compression = compression_of(path)
    if compression == CompressionTypes.UNCOMPRESSED:
        with open_raw(path) as raw:
            if offset:
                raw.seek(offset)
            yield raw
        return
    if offset:
        raise ValueError("a compressed file is read from its start")
    if compression in _ARROW_CODECS:
        with open_raw(path) as raw:
            source = raw if isinstance(raw, pa.NativeFile) else pa.PythonFile(_Reader(raw), "r")
            with pa.CompressedInputStream(source, _ARROW_CODECS[compression]) as stream:
                yield stream
        return
    with FileSystems.open(path, compression_type=compression) as stream:
        yield stream


class _Reader:
    """Just the reading part of a Beam file object, for Arrow's PythonFile (which asks whether
    it is closed, which some of Beam's file objects answer wrongly)."""

    closed = False

    def __init__(self, f: Any):
        self._f = f

    def read(self, n: int = -1) -> bytes:
        return self._f.read(n)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def close(self) -> None:
        self.closed = True


class Outputs:
    """Recognises the files of beamscore output directories: this run's own (never read), and
    an earlier run's under the input pattern (a night's predictions are not the next night's
    input). A directory is one when it holds a manifest.json this tool wrote; answers are
    cached per directory, so many files cost a few lookups."""

    _DEPTH = 4  # DIR/_staging/<run>/predictions/part-x.parquet

    def __init__(self, own: str):
        self._own = own.rstrip("/")
        self._known: dict[str, bool] = {}

    def holds(self, path: str) -> bool:
        """Whether a file lies in this run's output directory or in another beamscore output."""
        if path == self._own or path.startswith(self._own + "/"):
            return True
        directory = path
        for _ in range(self._DEPTH):
            directory = directory.rpartition("/")[0]
            if not directory or directory.endswith(":/") or directory.endswith(":"):
                return False
            if self._is_output(directory):
                return True
        return False

    def _is_output(self, directory: str) -> bool:
        if directory not in self._known:
            manifest = FileSystems.join(directory, "manifest.json")
            found = False
            try:
                if FileSystems.exists(manifest):
                    with FileSystems.open(manifest) as f:
                        head = f.read(4096)
                    found = b'"producer": "beamscore"' in head
            except Exception:  # noqa: BLE001 - an unreadable manifest: not ours to skip
                found = False
            self._known[directory] = found
        return self._known[directory]


def is_splittable(path: str) -> bool:
    """Whether byte ranges of a file can be read on their own (not compressed)."""
    return compression_of(path) == CompressionTypes.UNCOMPRESSED
