"""Cloud Storage operations Beam's FileSystems does not offer: a fast reachability check and
generation-checked writes (the output directory's lock)."""

from __future__ import annotations

import contextlib
import logging
import os

from models.errors import is_unreachable, launch_deadline_s, one_line
from pipeline.errors import ConfigError, RunFailed


class BucketMissing(Exception):
    """The bucket does not exist, or this account may not list it (exit 2)."""


class StorageUnreachable(Exception):
    """Cloud Storage cannot be reached (exit 3: a retry may help)."""


def client():
    """A storage client; anonymous against an emulator (STORAGE_EMULATOR_HOST)."""
    from google.cloud import storage

    if os.environ.get("STORAGE_EMULATOR_HOST"):
        from google.auth.credentials import AnonymousCredentials

        return storage.Client(project="emulator", credentials=AnonymousCredentials())
    return storage.Client()


def split(url: str) -> tuple[str, str]:
    """gs://bucket/name -> (bucket, name)."""
    bucket, _, name = url.removeprefix("gs://").partition("/")
    return bucket, name


def check_bucket(url: str) -> None:
    """Lists one object of the bucket a gs:// URL names: proves it exists, may be listed and
    answers, within launch_deadline_s()."""
    from google.api_core import exceptions as gexc
    from google.api_core.retry import Retry

    bucket, _ = split(url)
    try:
        with _quiet_retries():
            pages = client().list_blobs(
                bucket, max_results=1, timeout=10, retry=Retry(deadline=launch_deadline_s())
            )
            next(iter(pages), None)
    except gexc.NotFound as e:
        raise BucketMissing(f"bucket gs://{bucket} does not exist") from e
    except gexc.Forbidden as e:
        raise BucketMissing(f"no permission to list gs://{bucket}: {one_line(e)}") from e
    except Exception as e:  # noqa: BLE001 - sorted into exit 2 or exit 3
        if is_unreachable(e):
            raise StorageUnreachable(f"Cloud Storage unreachable: {one_line(e)}") from e
        raise BucketMissing(f"cannot list gs://{bucket}: {one_line(e)}") from e


@contextlib.contextmanager
def _quiet_retries():
    """urllib3 logs a warning for each connection it retries (fetching a token, say); the
    check's own error line says what failed, once."""
    log = logging.getLogger("urllib3.connectionpool")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def check_flag(url: str, flag: str) -> None:
    """The bucket of a flag's gs:// location answers: exit 2 when it does not exist or may not
    be listed, exit 3 when Cloud Storage cannot be reached."""
    try:
        check_bucket(url)
    except BucketMissing as e:
        raise ConfigError(f"{flag} {url}: {e}") from e
    except StorageUnreachable as e:
        raise RunFailed(f"{flag} {url}: {e}") from e


def create_exclusive(url: str, data: bytes) -> int | None:
    """Creates gs://bucket/name only if no such object exists (generation precondition 0).

    Returns:
        The new object's generation, or None if it already existed.
    """
    from google.api_core.exceptions import PreconditionFailed

    bucket, name = split(url)
    blob = client().bucket(bucket).blob(name)
    try:
        blob.upload_from_string(data, if_generation_match=0)
    except PreconditionFailed:
        return None
    return blob.generation


def replace_if_generation(url: str, data: bytes, generation: int) -> int | None:
    """Overwrites an object only if it is still at `generation` (nobody replaced it since).

    Returns:
        The new generation, or None if the object changed (or vanished) meanwhile.
    """
    from google.api_core.exceptions import NotFound, PreconditionFailed

    bucket, name = split(url)
    blob = client().bucket(bucket).blob(name)
    try:
        blob.upload_from_string(data, if_generation_match=generation)
    except (PreconditionFailed, NotFound):
        return None
    return blob.generation


def read_with_generation(url: str) -> tuple[bytes, int] | None:
    """An object's bytes and the generation they belong to, or None if there is no object."""
    from google.api_core.exceptions import NotFound

    bucket, name = split(url)
    blob = client().bucket(bucket).blob(name)
    try:
        data = blob.download_as_bytes()
    except NotFound:
        return None
    return data, blob.generation


def delete_if_generation(url: str, generation: int) -> bool:
    """Deletes an object only if it is still at `generation`; whether it did."""
    from google.api_core.exceptions import NotFound, PreconditionFailed

    bucket, name = split(url)
    try:
        client().bucket(bucket).blob(name).delete(if_generation_match=generation)
    except (PreconditionFailed, NotFound):
        return False
    return True
