"""Resolve a model URI on the launcher and load the model on workers.

The launcher resolves once (file checksum, lineage); workers load from the resolved location
and refuse a file whose SHA-256 no longer matches what the launcher saw.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import logging
import time

from apache_beam.io.filesystems import FileSystems

_LOG = logging.getLogger(__name__)

MODEL_FILE_SUFFIXES = (".joblib", ".pkl", ".pickle")
_CHUNK = 8 << 20


class ModelError(Exception):
    """A model cannot be resolved or loaded; the message names the problem."""


@dataclasses.dataclass(frozen=True)
class ModelRef:
    """Where a model is and what it is, decided on the launcher and shipped to workers.

    Attributes:
        uri: the URI the user gave (lineage).
        version: registry version, run id, or the first 12 hex digits of the file's SHA-256.
        sha256: SHA-256 of the model file that is loaded.
        path: the file the workers load (local or gs://).
    """

    uri: str
    version: str
    sha256: str
    path: str


def read_verified(path: str, expected_sha256: str | None) -> tuple[bytes, str]:
    """Reads a model file whole and checks its checksum before anything unpickles it.

    Args:
        path: local path or gs:// URI.
        expected_sha256: the hex digest the file must have, or None to accept any.

    Returns:
        The file's bytes and its hex SHA-256.
    """
    digest = hashlib.sha256()
    buf = io.BytesIO()
    try:
        with FileSystems.open(path) as f:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
                buf.write(chunk)
    except Exception as e:  # noqa: BLE001 - any filesystem failure is "cannot read the model"
        raise ModelError(f"cannot read model file {path}: {_first_line(e)}") from e
    sha = digest.hexdigest()
    if expected_sha256 and sha != expected_sha256.lower():
        raise ModelError(
            f"model file {path} has SHA-256 {sha}, expected {expected_sha256.lower()}; "
            "refusing to load it"
        )
    return buf.getvalue(), sha


def resolve(uri: str, expected_sha256: str | None = None) -> ModelRef:
    """Resolves a model URI on the launcher: checks it exists and pins its checksum.

    Args:
        uri: a .joblib/.pkl file, local or gs://.
        expected_sha256: optional pinned checksum (--model_sha256).

    Returns:
        The reference workers load from.
    """
    if uri.startswith(("runs:/", "models:/")):
        raise ModelError(
            f"MLflow model URIs ({uri}) are not supported by this version yet; "
            "give the model file path (for example the model.pkl under the run's artifacts)"
        )
    if not uri.lower().endswith(MODEL_FILE_SUFFIXES):
        raise ModelError(
            f"unsupported model file {uri}: expected one of {', '.join(MODEL_FILE_SUFFIXES)}"
        )
    if not FileSystems.exists(uri):
        raise ModelError(f"no such model file: {uri}")
    _, sha = read_verified(uri, expected_sha256)
    return ModelRef(uri=uri, version=sha[:12], sha256=sha, path=uri)


def load(ref: ModelRef):
    """Loads the model a ModelRef points to, verifying its checksum first.

    Args:
        ref: the launcher's resolved reference.

    Returns:
        The unpickled model.
    """
    import joblib  # heavy; imported where a model is really loaded

    start = time.monotonic()
    data, _ = read_verified(ref.path, ref.sha256)
    try:
        model = joblib.load(io.BytesIO(data))
    except Exception as e:  # noqa: BLE001 - unpickling can raise anything
        raise ModelError(f"cannot load model {ref.uri}: {_first_line(e)}") from e
    _LOG.info(
        "loaded model %s (version %s) in %.2fs", ref.uri, ref.version, time.monotonic() - start
    )
    return model


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__
