"""Anonymous Google credentials when the Cloud Storage emulator is in use (STORAGE_EMULATOR_HOST).

Beam looks for application-default credentials with four retries and exponential backoff
(about 25 s) before it connects anonymously; against an emulator there are none to find. Called
by the launcher and in every DoFn's setup, since worker processes start afresh.
"""

from __future__ import annotations

import os


def anonymous_if_emulated() -> None:
    """With STORAGE_EMULATOR_HOST set, makes Beam's GCS client anonymous without the wait."""
    if not os.environ.get("STORAGE_EMULATOR_HOST"):
        return
    os.environ.setdefault("NO_GCE_CHECK", "True")
    from apache_beam.internal.gcp import auth

    # Beam caches the credentials it found; caching "none found" skips its retry loop. This is
    # Beam-internal state, read by gcsio.create_storage_client (apache-beam 2.77).
    with auth._Credentials._credentials_lock:
        if not auth._Credentials._credentials_init:
            auth._Credentials._credentials = None
            auth._Credentials._credentials_init = True
