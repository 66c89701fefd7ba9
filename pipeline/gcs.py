"""Cloud Storage operations Beam's FileSystems does not offer (create-only writes)."""

from __future__ import annotations

import os


def client():
    """A storage client; anonymous against an emulator (STORAGE_EMULATOR_HOST)."""
    from google.cloud import storage

    if os.environ.get("STORAGE_EMULATOR_HOST"):
        from google.auth.credentials import AnonymousCredentials

        return storage.Client(project="emulator", credentials=AnonymousCredentials())
    return storage.Client()


def create_exclusive(url: str, data: bytes) -> bool:
    """Creates gs://bucket/name only if no such object exists (generation precondition 0).

    Returns:
        True if this call created it, False if it already existed.
    """
    from google.api_core.exceptions import PreconditionFailed

    bucket, _, name = url.removeprefix("gs://").partition("/")
    blob = client().bucket(bucket).blob(name)
    try:
        blob.upload_from_string(data, if_generation_match=0)
    except PreconditionFailed:
        return False
    return True
