"""The output directory's names and files: reading and writing them locally or on gs://, and
the checks that DIR may be written (ownership: it is empty or this tool's).

DIR's lock is pipeline.lock; a run's staging area and its journaled commit, pipeline.staging.
"""

from __future__ import annotations

import json
import logging
import os
import threading

from apache_beam.io.filesystems import FileSystems

from models.errors import is_unreachable, one_line
from pipeline.errors import ConfigError, RunFailed
from pipeline.manifest import PRODUCER

_LOG = logging.getLogger(__name__)

MANIFEST = "manifest.json"
REPORT = "report.html"
QUALITY = "quality.json"  # python -m pipeline.evaluate's, of the committed run
LOCK = "_lock"
STAGING = "_staging"
COMMIT = "COMMIT"
OUTPUT_DIRS = ("predictions", "errors")


def is_remote(path: str) -> bool:
    """Whether a path is a URL (gs://...) rather than a local path."""
    return "://" in path


def list_files(directory: str) -> list[str]:
    """Every file under a directory, recursively ([] when it does not exist)."""
    if not is_remote(directory):
        return [os.path.join(root, name) for root, _, names in os.walk(directory) for name in names]
    return [m.path for m in FileSystems.match([FileSystems.join(directory, "**")])[0].metadata_list]


def read_json(path: str) -> dict | None:
    """A JSON file's object, or None if it does not exist or is not a JSON object."""
    data = read_bytes(path)
    return None if data is None else json_object(data)


def read_bytes(path: str) -> bytes | None:
    """A file's bytes, or None if it does not exist."""
    if not FileSystems.exists(path):
        return None
    try:  # it may go between the two calls: a lock another run deleted just now
        with FileSystems.open(path) as f:
            return f.read()
    except FileNotFoundError:
        return None
    except Exception as e:
        from google.api_core.exceptions import NotFound

        if isinstance(e, NotFound):
            return None
        raise


def json_object(data: bytes) -> dict | None:
    try:
        value = json.loads(data)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def write_json(path: str, data: dict) -> None:
    """Writes a JSON file; locally through a rename so readers never see half a file."""
    text = json.dumps(data, indent=2, sort_keys=False).encode()
    if is_remote(path):
        with FileSystems.create(path, mime_type="application/json") as f:
            f.write(text)
        return
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}-{threading.get_ident()}"  # the heartbeat is a thread
    with open(tmp, "wb") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def move(sources: list[str], destinations: list[str]) -> None:
    if not sources:
        return
    if not is_remote(destinations[0]):
        for d in destinations:
            os.makedirs(os.path.dirname(d), exist_ok=True)
    FileSystems.rename(sources, destinations)


def check_usable(path: str) -> None:
    """Refuses (exit 2) an output path that is a file, lies under a file, cannot be written, or
    is a non-empty directory of someone else's; a bucket that does not answer is exit 3. Writes
    nothing: the lock, taken once every launch check passed, is the run's first write (and a
    lock that cannot be created is exit 2 too)."""
    if is_remote(path):
        check_reachable(path)
    else:
        if os.path.exists(path) and not os.path.isdir(path):
            raise ConfigError(f"--output {path} is a file, not a directory")
        existing = path
        while existing and not os.path.exists(existing):
            existing = os.path.dirname(existing)
        if existing and not os.path.isdir(existing):
            raise ConfigError(f"--output {path} lies under {existing}, which is a file")
        if existing and not os.access(existing, os.W_OK | os.X_OK):
            raise ConfigError(
                f"--output {path} cannot be written: no write permission on {existing}"
            )
    check_owned(path)


def check_reachable(path: str) -> None:
    """A gs:// DIR's bucket answers within seconds (exit 3 when Cloud Storage cannot be reached,
    exit 2 when the bucket is missing or may not be listed); before anything that would wait
    on the storage client's own retries (minutes)."""
    if path.startswith("gs://"):
        from pipeline import gcs

        gcs.check_flag(path, "--output")


def check_owned(path: str) -> None:
    """Refuses a non-empty DIR that holds no manifest of this tool (exit 2)."""
    try:
        manifest = read_json(FileSystems.join(path, MANIFEST))
        files = [] if manifest and manifest.get("producer") == PRODUCER else list_files(path)
    except Exception as e:  # noqa: BLE001 - the storage went away after it answered the check
        if is_unreachable(e):
            raise RunFailed(f"--output {path}: cannot be read: {one_line(e)}") from e
        raise
    prefix = path.rstrip("/") + "/"
    foreign = [f for f in files if not f.removeprefix(prefix).startswith((STAGING + "/", LOCK))]
    if foreign:
        raise ConfigError(
            f"output directory {path} is not empty and holds no manifest.json from this "
            f"tool (found {foreign[0].removeprefix(prefix)}); refusing to write into it"
        )
