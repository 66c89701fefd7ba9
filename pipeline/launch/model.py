"""The launch's model: resolved, loaded and inspected once, before any work is handed out."""

from __future__ import annotations

from pipeline import gcs
from pipeline.errors import refusals
from pipeline.launch.flags import Flags
from scoring import decide


def load_model(flags: Flags, staging_root: str | None) -> decide.Model:
    """Resolves, loads and inspects the model; checks the library versions it was saved with."""
    if flags.model_uri.startswith("gs://"):
        gcs.check_flag(flags.model_uri, "--model")
    if (
        staging_root
        and staging_root.startswith("gs://")
        and flags.model_uri.startswith(("runs:/", "models:/"))
    ):  # the launcher stages an MLflow model there for the workers
        gcs.check_flag(staging_root, "--temp_location")
    with refusals():
        return decide.load_model(
            flags.model_uri,
            flags.model_sha256,
            flags.tracking_uri,
            staging_root,
            flags.allow_version_mismatch,
        )
