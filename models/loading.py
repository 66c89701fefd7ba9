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
import warnings
from typing import Any

from apache_beam.io.filesystems import FileSystems

from models import boosters, mlflow_models
from models.errors import ModelError, ModelServiceUnreachable, is_unreachable, one_line

_LOG = logging.getLogger(__name__)

PICKLE_SUFFIXES = (".joblib", ".pkl", ".pickle")
# Pickles, then XGBoost's .json/.ubj and LightGBM's .txt model files.
MODEL_FILE_SUFFIXES = PICKLE_SUFFIXES + tuple(boosters.NATIVE_SUFFIXES)
_CHUNK = 8 << 20


@dataclasses.dataclass(frozen=True)
class ModelRef:
    """Where a model is and what it is, decided on the launcher and shipped to workers.

    Attributes:
        uri: the URI the user gave (lineage).
        version: registry version, run id, or the first 12 hex digits of the file's SHA-256.
        sha256: SHA-256 of the model file (or of the MLflow model directory's files) loaded.
        path: what the workers load (a file, or a staged MLflow model directory; local or gs://).
        kind: "file" (joblib/pickle, XGBoost .json/.ubj, LightGBM .txt) or "mlflow".
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
        if is_unreachable(e):
            raise ModelServiceUnreachable(f"cannot reach {path}: {one_line(e)}") from e
        raise ModelError(f"cannot read model file {path}: {one_line(e, with_type=True)}") from e
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
        uri: a .joblib/.pkl file, an XGBoost .json/.ubj or a LightGBM .txt model file, local or
            gs://; or runs:/..., models:/name/version, models:/name@alias.
        expected_sha256: optional pinned checksum (--model_sha256).
        tracking_uri: the MLflow tracking/registry server for runs:/ and models:/ URIs.
        staging_root: where to stage MLflow artifacts for remote workers (None: not needed).

    Returns:
        The reference workers load from. Raises ModelError (exit 2) or
        ModelServiceUnreachable (exit 3).
    """
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
            f"unsupported model {uri}: expected a {', '.join(PICKLE_SUFFIXES)} file, an XGBoost "
            ".json/.ubj or LightGBM .txt model file, or an MLflow URI (runs:/, models:/)"
        )
    try:
        exists = FileSystems.exists(uri)
    except Exception as e:  # noqa: BLE001 - a storage service that cannot be asked
        if is_unreachable(e):
            raise ModelServiceUnreachable(f"cannot reach {uri}: {one_line(e)}") from e
        raise ModelError(f"cannot look up model file {uri}: {one_line(e)}") from e
    if not exists:
        raise ModelError(f"no such model file: {uri}")
    _, sha = read_verified(uri, expected_sha256)
    return ModelRef(uri=uri, version=sha[:12], sha256=sha, path=uri)


def _check_sha(what: str, sha: str, expected: str | None) -> None:
    if expected and sha != expected.lower():
        raise ModelError(
            f"model {what} has SHA-256 {sha}, expected {expected.lower()}; refusing to load it"
        )


def load(ref: ModelRef) -> tuple[Any, dict[str, str]]:
    """Loads the model a ModelRef points to, verifying its checksum first.

    Args:
        ref: the launcher's resolved reference.

    Returns:
        The model (an XGBoost or LightGBM model as a models.boosters.BoosterModel), and the
        versions of the libraries it was saved with where the artifact records them
        ({"scikit-learn": "1.5.2"}, {"xgboost": "3.2.0"}).
    """
    start = time.monotonic()
    try:
        if ref.kind == "mlflow":
            local = mlflow_models.fetch(ref.path)
            _check_sha(ref.uri, mlflow_models.tree_sha256(local), ref.sha256)
            model = mlflow_models.load_local(local)
            saved = mlflow_models.saved_versions(local)
        else:
            data, _ = read_verified(ref.path, ref.sha256)
            suffix = "." + ref.path.rsplit(".", 1)[-1].lower()
            if suffix in boosters.NATIVE_SUFFIXES:
                model = boosters.load_native(data, suffix)
                saved = _native_versions(data, suffix)
            else:
                model, saved = _unpickle(data)
    except (ModelError, ModelServiceUnreachable):
        raise
    except ImportError as e:
        raise ModelError(_missing_library(ref.uri, e)) from e
    except Exception as e:  # noqa: BLE001 - unpickling can raise anything
        raise ModelError(f"cannot load model {ref.uri}: {one_line(e, with_type=True)}") from e
    _LOG.info(
        "loaded model %s (version %s) in %.2fs", ref.uri, ref.version, time.monotonic() - start
    )
    return model, saved


def _unpickle(data: bytes) -> tuple[Any, dict[str, str]]:
    """A joblib/pickle file's model (a booster wrapper as a BoosterModel), and the versions it
    was saved with."""
    import joblib  # heavy; imported where a model is really loaded

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = joblib.load(io.BytesIO(data))
    saved = _pickled_versions(model, caught)
    if boosters.library_of(model) == "xgboost":
        # A pickled XGBoost wrapper holds its booster as XGBoost serialized it, version included
        # (not found in a compressed joblib file).
        version = boosters.xgboost_version(data)
        if version:
            saved["xgboost"] = version
    return boosters.wrap(model), saved


def _native_versions(data: bytes, suffix: str) -> dict[str, str]:
    """An XGBoost model file records the XGBoost version that saved it; a LightGBM text model
    only its format version ("v4"), which is no library version."""
    if boosters.NATIVE_SUFFIXES[suffix] != "xgboost":
        return {}
    version = boosters.xgboost_version(data)
    return {"xgboost": version} if version else {}


def _missing_library(uri: str, e: ImportError) -> str:
    """The message for a model whose library cannot be imported, naming the extra to install."""
    missing = (e.name or "").split(".", 1)[0]
    extra = boosters.EXTRAS.get(missing)
    if extra is None:
        return f"cannot load model {uri}: {one_line(e, with_type=True)}"
    return (
        f"model {uri} needs {missing}, which cannot be imported here ({one_line(e)}): install "
        f"the extra beamscore[{extra}] (pip install 'beamscore[{extra}]'; ./run_local.sh "
        "installs it into .venv)"
    )


def _pickled_versions(model: Any, caught: list[warnings.WarningMessage]) -> dict[str, str]:
    """The scikit-learn version a pickle was made with, as its unpickling warnings tell it.

    scikit-learn stores its version in every estimator's pickled state and warns
    (InconsistentVersionWarning) when it differs from the running one; silence means they agree.
    """
    import sklearn
    from sklearn.base import BaseEstimator

    saved: dict[str, str] = {}
    for w in caught:
        original = getattr(w.message, "original_sklearn_version", None)
        if original:
            saved["scikit-learn"] = str(original)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if isinstance(model, BaseEstimator):
        saved.setdefault("scikit-learn", sklearn.__version__)
    return saved


BASELINE_SUFFIX = ".drift.json"


def drift_baseline(ref: ModelRef) -> dict | None:
    """The model's drift baseline: `metadata.drift_baseline` in an MLflow model's MLmodel, or a
    `<model file>.drift.json` next to a model file. None when the model has none."""
    import json

    if ref.kind == "mlflow":
        return mlflow_models.metadata(mlflow_models.fetch(ref.path)).get("drift_baseline")
    sidecar = ref.path + BASELINE_SUFFIX
    if not FileSystems.exists(sidecar):
        return None
    with FileSystems.open(sidecar) as f:
        return json.loads(f.read())
