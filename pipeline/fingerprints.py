"""What the night's input holds, as a fingerprint: a night whose input is an earlier night's
again (the feed sent yesterday's data twice) is seen in the history.

Each input file's content is named by a checksum: Cloud Storage gives an object's MD5 (or, for
a composite object, its CRC32C) as metadata, read with one listing; a local file is checksummed
(CRC32C, in C, about a second per GB read cold) by the launcher while it loads the model, and
its match the workers must see unchanged (pipeline.manifest.input_changes). The night's
fingerprint is a SHA-256 over the files' checksums, sorted: the same files under other names
or folders are the same input.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

from models.errors import one_line

_LOG = logging.getLogger(__name__)
_CHUNK = 1 << 20


class Background:
    """`contents(files)` worked out on a thread of its own while the launch goes on: a local
    file's reads and its CRC32C release the GIL, so they take no time from the model's load.

    `result()` waits for it (and raises what it raised); `cancel()` stops it at its next MB (a
    launch that refuses)."""

    def __init__(self, files: Iterable[str]):
        self._stop = threading.Event()
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="beamscore-checksums")
        self._future = pool.submit(contents, list(files), self._stop)
        pool.shutdown(wait=False)  # the thread ends with its one task

    def result(self) -> dict[str, str]:
        return self._future.result()

    def cancel(self) -> None:
        self._stop.set()


class _Stopped(Exception):
    pass


def contents(files: Iterable[str], stop: threading.Event | None = None) -> dict[str, str]:
    """Per file, its content's checksum ("md5:<hex>" or "crc32c:<hex>:<size>"); a file whose
    checksum cannot be had is left out (then the night has no fingerprint). `stop`, once set,
    ends the work early (what it returns then is not to be used)."""
    found: dict[str, str] = {}
    remote: dict[str, list[str]] = {}
    for path in files:
        if path.startswith("gs://"):
            bucket, _, name = path[len("gs://") :].partition("/")
            remote.setdefault(bucket, []).append(name)
        elif "://" not in path:
            try:
                found[path] = _local(path, stop)
            except _Stopped:
                return found
            except OSError as e:
                _LOG.info("no content checksum of %s: %s", path, one_line(e))
    for bucket, names in remote.items():
        try:
            found.update(_gcs(bucket, names))
        except Exception as e:  # noqa: BLE001 - a fingerprint is a hint, never a failure
            _LOG.info("no content checksums of gs://%s: %s", bucket, one_line(e))
    return found


def night(checksums: dict[str, str], files: Iterable[str]) -> str | None:
    """The night's fingerprint: None when a file has no checksum (or there are no files)."""
    files = list(files)
    if not files or any(f not in checksums for f in files):
        return None
    digest = hashlib.sha256("\n".join(sorted(checksums[f] for f in files)).encode())
    return "sha256:" + digest.hexdigest()


def _local(path: str, stop: threading.Event | None = None) -> str:
    import google_crc32c

    crc = google_crc32c.Checksum()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            if stop is not None and stop.is_set():
                raise _Stopped(path)
            crc.update(chunk)
    return f"crc32c:{crc.digest().hex()}:{os.path.getsize(path)}"


def _gcs(bucket: str, names: list[str]) -> dict[str, str]:
    """The checksums of a bucket's objects, from one listing under their common prefix."""
    import base64

    from pipeline.gcs import client

    wanted = set(names)
    prefix = os.path.commonprefix(names)
    found = {}
    for blob in client().bucket(bucket).list_blobs(prefix=prefix):
        if blob.name not in wanted:
            continue
        if blob.md5_hash:
            value = "md5:" + base64.b64decode(blob.md5_hash).hex()
        elif blob.crc32c:
            value = f"crc32c:{base64.b64decode(blob.crc32c).hex()}:{blob.size}"
        else:
            continue
        found[f"gs://{bucket}/{blob.name}"] = value
    return found
