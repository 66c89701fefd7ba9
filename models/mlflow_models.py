"""MLflow models: resolved on the launcher (`runs:/`, `models:/`), loaded from a staged copy.

The launcher talks to the tracking/registry server once: it turns an alias into a version,
downloads that version's artifacts, checksums them and stages them where workers can read them.
Workers load the staged copy and never talk to the server.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import os
import re
import shutil
import tempfile
from typing import Any

from apache_beam.io.filesystems import FileSystems

from models.errors import ModelError, ModelServiceUnreachable, is_unreachable, one_line

MLFLOW_PREFIXES = ("runs:/", "models:/")
# Launch checks must fail fast when the server is down, not retry for minutes.
_CLIENT_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "20"}


def is_mlflow_uri(uri: str) -> bool:
    return uri.startswith(MLFLOW_PREFIXES)


def client(tracking_uri: str | None):
    """An MLflow client for a tracking/registry server, failing fast when it is down."""
    for name, value in _CLIENT_DEFAULTS.items():
        os.environ.setdefault(name, value)
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def tree_sha256(directory: str) -> str:
    """SHA-256 over a local directory's files: their relative paths and contents, in order."""
    digest = hashlib.sha256()
    for root, dirs, files in os.walk(directory):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(root, name)
            digest.update(os.path.relpath(path, directory).encode() + b"\0")
            with open(path, "rb") as f:
                while chunk := f.read(8 << 20):
                    digest.update(chunk)
    return digest.hexdigest()


def resolve(uri: str, tracking_uri: str | None) -> tuple[str, str, str, str, str]:
    """Resolves a registry or run URI to a pinned version and downloads its artifacts.

    Args:
        uri: runs:/<run_id>/<path>, models:/<name>/<version> or models:/<name>@<alias>.
        tracking_uri: the tracking/registry server (None: MLFLOW_TRACKING_URI).

    Returns:
        (version, run_id, local directory of the artifacts, their tree SHA-256, MLflow 3 logged
        model id or ""). The version is the registry version, or the run id for runs:/.
    """
    from mlflow.exceptions import MlflowException

    registry = client(tracking_uri)
    try:
        if uri.startswith("models:/"):
            rest = uri.removeprefix("models:/")
            if "@" in rest:
                name, alias = rest.split("@", 1)
                mv = registry.get_model_version_by_alias(name, alias)
            else:
                name, _, number = rest.rpartition("/")
                if not name:
                    raise ModelError(
                        f"{uri} is not models:/<name>/<version> or models:/<name>@<alias>"
                    )
                mv = registry.get_model_version(name, number)
            version, run_id = str(mv.version), mv.run_id or ""
            # MLflow 3 names the version's logged model in model_id, or only in its source.
            source = re.fullmatch(r"models:/(m-[0-9a-f]+)", mv.source or "")
            model_id = getattr(mv, "model_id", None) or (source[1] if source else "")
            # The pinned version, not the alias: an alias moved mid-run changes nothing.
            download_uri = f"models:/{name}/{version}"
        else:
            run_id = uri.removeprefix("runs:/").split("/", 1)[0]
            registry.get_run(run_id)
            version, download_uri, model_id = run_id, uri, ""
        import mlflow.artifacts

        with _pointed_at(tracking_uri):
            local = mlflow.artifacts.download_artifacts(
                artifact_uri=download_uri,
                dst_path=scratch_dir(),
                tracking_uri=tracking_uri,
                registry_uri=tracking_uri,
            )
    except ModelError:
        raise
    except Exception as e:  # noqa: BLE001 - the registry, its artifact store, the local disk
        if is_unreachable(e):
            raise ModelServiceUnreachable(
                f"MLflow server unreachable resolving {uri}: {one_line(e)}"
            ) from e
        if isinstance(e, MlflowException):
            raise ModelError(f"cannot resolve {uri}: {one_line(e)}") from e
        raise ModelError(f"cannot download {uri}: {one_line(e, with_type=True)}") from e
    if not os.path.exists(os.path.join(local, "MLmodel")):
        raise ModelError(f"{uri} is not an MLflow model (no MLmodel file)")
    return version, run_id, local, tree_sha256(local), model_id


@contextlib.contextmanager
def _pointed_at(uri: str | None):
    """MLflow's global tracking and registry URIs set to `uri` for the duration, then restored.

    `download_artifacts` takes the URIs as arguments, but for models:/ URIs MLflow 3 (checked on
    3.17) looks the version up through a client built from the *global* registry URI, so with
    only --mlflow_tracking_uri it would ask the default store (./mlflow.db) instead.
    """
    if not uri:
        yield
        return
    import mlflow

    names = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
    saved = {name: os.environ.get(name) for name in names}
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(saved["MLFLOW_TRACKING_URI"])
        mlflow.set_registry_uri(saved["MLFLOW_REGISTRY_URI"])
        for name, value in saved.items():  # the setters leave their environment variables
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def stage(local_dir: str, staging_root: str | None, sha256: str) -> str:
    """Copies downloaded artifacts where workers can read them; returns that location.

    With no staging root (local runners) the download directory itself is used.
    """
    if not staging_root:
        return local_dir
    target = FileSystems.join(staging_root, "beamscore-models", sha256[:16])
    try:
        for root, _, files in os.walk(local_dir):
            for name in files:
                path = os.path.join(root, name)
                dst = FileSystems.join(target, os.path.relpath(path, local_dir))
                with open(path, "rb") as fin, FileSystems.create(dst) as fout:
                    shutil.copyfileobj(fin, fout)
    except Exception as e:  # noqa: BLE001 - the staging location's storage service
        if is_unreachable(e):
            raise ModelServiceUnreachable(
                f"cannot stage the model under {staging_root}: {one_line(e)}"
            ) from e
        raise ModelError(f"cannot stage the model under {staging_root}: {one_line(e)}") from e
    return target


def scratch_dir() -> str:
    """A temporary directory for a downloaded model, removed when the process exits (the model
    is loaded once per process, so it is needed no longer)."""
    path = tempfile.mkdtemp(prefix="beamscore-model-")
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def fetch(staged: str) -> str:
    """A local directory holding the staged artifacts (downloaded when they are remote)."""
    if "://" not in staged:
        return staged
    local = scratch_dir()
    prefix = staged.rstrip("/") + "/"
    for meta in FileSystems.match([prefix + "**"])[0].metadata_list:
        dst = os.path.join(local, meta.path.removeprefix(prefix))
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        with FileSystems.open(meta.path) as fin, open(dst, "wb") as fout:
            shutil.copyfileobj(fin, fout)
    return local


# MLflow flavours loaded as the library's own object, and the MLmodel key of its saved version.
_LIBRARY_FLAVORS = {
    "sklearn": ("scikit-learn", "sklearn_version"),
    "xgboost": ("xgboost", "xgb_version"),
    "lightgbm": ("lightgbm", "lgb_version"),
}


def load_local(directory: str) -> Any:
    """Loads an MLflow model directory: the scikit-learn object itself when it has that flavor,
    the booster or its scikit-learn wrapper (as a models.boosters.BoosterModel) for the xgboost
    and lightgbm flavors (the fast Arrow path with predict_proba), else a pyfunc wrapper.

    Raises ModuleNotFoundError when the flavor's library is not installed.
    """
    from mlflow.models import Model

    from models import boosters

    # The user vouched for this model by naming it, exactly as for a joblib file (docs: Trust).
    os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] = "true"
    flavors = Model.load(os.path.join(directory, "MLmodel")).flavors
    if "sklearn" in flavors:
        import mlflow.sklearn

        return mlflow.sklearn.load_model(directory)
    for flavor in ("xgboost", "lightgbm"):
        if flavor in flavors:
            import importlib

            importlib.import_module(flavor)  # a missing library is named as such, not by MLflow
            module = importlib.import_module(f"mlflow.{flavor}")
            return boosters.wrap(module.load_model(directory))
    import mlflow.pyfunc

    return PyfuncModel(mlflow.pyfunc.load_model(directory))


def metadata(directory: str) -> dict:
    """The `metadata` section of a local MLflow model's MLmodel file ({} without one)."""
    from mlflow.models import Model

    return Model.load(os.path.join(directory, "MLmodel")).metadata or {}


def saved_versions(directory: str) -> dict[str, str]:
    """The library versions an MLflow model was saved with, as its MLmodel records them."""
    from mlflow.models import Model

    flavors = Model.load(os.path.join(directory, "MLmodel")).flavors
    saved = {}
    for flavor, (library, key) in _LIBRARY_FLAVORS.items():
        if flavors.get(flavor, {}).get(key):
            saved[library] = str(flavors[flavor][key])
    return saved


def signature_inputs(directory: str) -> list[tuple[str, str]] | None:
    """The model signature's input columns as (name, MLflow type), or None without one."""
    from mlflow.models import Model

    signature = Model.load(os.path.join(directory, "MLmodel")).signature
    if signature is None or signature.inputs is None or not signature.inputs.has_input_names():
        return None
    return [
        (c.name, str(c.type.name if hasattr(c.type, "name") else c.type))
        for c in signature.inputs.inputs
    ]


class PyfuncModel:
    """Any MLflow pyfunc model, scored on a pandas frame per batch (slower than the Arrow path)."""

    def __init__(self, model: Any):
        self._model = model

    def predict(self, frame):
        import numpy as np

        out = self._model.predict(frame)
        if hasattr(out, "to_numpy"):
            out = out.to_numpy()
        out = np.asarray(out)
        return out[:, 0] if out.ndim == 2 and out.shape[1] == 1 else out
