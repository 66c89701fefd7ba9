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
        sha256: SHA-256 of the model file (or of the MLflow model directory's files) loaded.
        path: what the workers load (a file, or a staged MLflow model directory; local or gs://).
        kind: "file" (joblib/pickle) or "mlflow".
        run_id: the MLflow run that produced the model, if any.
        model_id: the MLflow 3 logged model behind a registry version, if any.
    """

    uri: str
    version: str
    sha256: str
    path: str
    kind: str = "file"
    run_id: str = ""
    model_id: str = ""


def read_verified(path: str, expected_sha256: str | None) -> tuple[bytes, str]:
    """Reads a model file whole and checks its checksum before anything unpickles it.

    Args:
        path: local path or gs:// URI.
        expected_sha256: the hex digest the file must have, or None to accept any.

    Returns:
        The file's bytes and its hex SHA-256.
    """
    digest = hashlib.sha256()
    buf = io.BytesIO()  # the bytes that were hashed are the bytes unpickled
    try:
        with FileSystems.open(path) as f:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
                buf.write(chunk)
    except Exception as e:  # noqa: BLE001 - any filesystem failure is "cannot read the model"
        raise ModelError(f"cannot read model file {path}: {_first_line(e)}") from e
    sha = digest.hexdigest()
    _check_sha(f"file {path}", sha, expected_sha256)
    return buf.getvalue(), sha


def resolve(
    uri: str,
    expected_sha256: str | None = None,
    tracking_uri: str | None = None,
    staging_root: str | None = None,
) -> ModelRef:
    """Resolves a model URI on the launcher: checks it exists and pins its checksum.

    Args:
        uri: a .joblib/.pkl file, local or gs://; or runs:/..., models:/name/version,
            models:/name@alias.
        expected_sha256: optional pinned checksum (--model_sha256).
        tracking_uri: the MLflow tracking/registry server for runs:/ and models:/ URIs.
        staging_root: where to stage MLflow artifacts for remote workers (None: not needed).

    Returns:
        The reference workers load from.
    """
    from models import mlflow_models

    if mlflow_models.is_mlflow_uri(uri):
        version, run_id, local, sha, model_id = mlflow_models.resolve(uri, tracking_uri)
        _check_sha(uri, sha, expected_sha256)
        path = mlflow_models.stage(local, staging_root, sha)
        return ModelRef(
            uri=uri,
            version=version,
            sha256=sha,
            path=path,
            kind="mlflow",
            run_id=run_id,
            model_id=model_id,
        )
    if not uri.lower().endswith(MODEL_FILE_SUFFIXES):
        raise ModelError(
            f"unsupported model {uri}: expected a {', '.join(MODEL_FILE_SUFFIXES)} file, "
            "or an MLflow URI (runs:/, models:/)"
        )
    if not FileSystems.exists(uri):
        raise ModelError(f"no such model file: {uri}")
    _, sha = read_verified(uri, expected_sha256)
    return ModelRef(uri=uri, version=sha[:12], sha256=sha, path=uri)


def _check_sha(what: str, sha: str, expected: str | None) -> None:
    if expected and sha != expected.lower():
        raise ModelError(
            f"model {what} has SHA-256 {sha}, expected {expected.lower()}; refusing to load it"
        )


def load(ref: ModelRef):
    """Loads the model a ModelRef points to, verifying its checksum first.

    Args:
        ref: the launcher's resolved reference.

    Returns:
        The unpickled model.
    """
    import joblib  # heavy; imported where a model is really loaded

    start = time.monotonic()
    try:
        if ref.kind == "mlflow":
            from models import mlflow_models

            local = mlflow_models.fetch(ref.path)
            _check_sha(ref.uri, mlflow_models.tree_sha256(local), ref.sha256)
            model = mlflow_models.load_local(local)
        else:
            data, _ = read_verified(ref.path, ref.sha256)
            model = joblib.load(io.BytesIO(data))
    except ModelError:
        raise
    except Exception as e:  # noqa: BLE001 - unpickling can raise anything
        raise ModelError(f"cannot load model {ref.uri}: {_first_line(e)}") from e
    _LOG.info(
        "loaded model %s (version %s) in %.2fs", ref.uri, ref.version, time.monotonic() - start
    )
    return model


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


BASELINE_SUFFIX = ".drift.json"


def drift_baseline(ref: ModelRef) -> dict | None:
    """The model's drift baseline: `metadata.drift_baseline` in an MLflow model's MLmodel, or a
    `<model file>.drift.json` next to a model file. None when the model has none."""
    import json

    if ref.kind == "mlflow":
        from mlflow.models import Model

        from models import mlflow_models

        local = mlflow_models.fetch(ref.path)
        metadata = Model.load(f"{local}/MLmodel").metadata or {}
        return metadata.get("drift_baseline")
    sidecar = ref.path + BASELINE_SUFFIX
    if not FileSystems.exists(sidecar):
        return None
    with FileSystems.open(sidecar) as f:
        return json.loads(f.read())
