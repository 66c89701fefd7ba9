"""Failure kinds of model handling, and the one way any exception becomes a one-line message.

This module is the floor of the layering: every other module (models/, transforms/, pipeline/)
may import it, and it imports nothing of the project.
"""

from __future__ import annotations


class ModelError(Exception):
    """A model cannot be resolved or loaded; the message names the problem (exit 2)."""


class UnsupportedModel(ModelError):
    """The model is something this pipeline cannot score (exit 2)."""


class ModelServiceUnreachable(Exception):
    """A registry or storage service holding the model cannot be reached (exit 3: retryable)."""


def one_line(
    e: BaseException, limit: int = 300, with_type: bool = False, innermost: bool = False
) -> str:
    """An exception's message as one line, for stderr, logs and error records.

    Uses a Google API error's own `message` when it has one (its str() adds the HTTP verb and
    URL), keeps the first non-blank line of a multi-line message, and names the exception's type
    when the message is blank (or always, with `with_type`).

    Args:
        e: the exception.
        limit: the most characters kept.
        with_type: prefix the message with the exception's type name.
        innermost: of a multi-line message wrapping other errors (a Beam worker's), keep the
            last line that names an error: the cause, not the wrapper.

    Returns:
        The line.
    """
    text = str(getattr(e, "message", None) or e)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    causes = [ln for ln in lines if ("Error" in ln or "Exception" in ln) and ":" in ln]
    if innermost and causes:
        return causes[-1][:limit]
    line = lines[0] if lines else ""
    if not line:
        return type(e).__name__
    if with_type:
        line = f"{type(e).__name__}: {line}"
    return line[:limit]


# How long a launch check waits on a service that does not answer (Cloud Storage, BigQuery)
# before exit 3; the Google clients' own retries last two minutes.
LAUNCH_DEADLINE_ENV = "BEAMSCORE_LAUNCH_DEADLINE_S"
LAUNCH_DEADLINE_S = 15.0


def launch_deadline_s() -> float:
    """LAUNCH_DEADLINE_S, or the seconds BEAMSCORE_LAUNCH_DEADLINE_S says (a slow network);
    ValueError naming the variable if it is not a positive number."""
    import math
    import os

    given = os.environ.get(LAUNCH_DEADLINE_ENV, "").strip()
    if not given:
        return LAUNCH_DEADLINE_S
    try:
        value = float(given)
    except ValueError:
        value = math.nan
    if not (0 < value < math.inf):
        raise ValueError(f"{LAUNCH_DEADLINE_ENV} must be a number of seconds above 0: {given!r}")
    return value


def is_unreachable(e: BaseException) -> bool:
    """Whether a failure means a service could not be reached (retryable: exit 3), as opposed
    to a request it refused (not found, no permission, bad input: exit 2).

    Looks through the exception's causes: client libraries wrap connection errors in their own.
    """
    seen: set[int] = set()
    current: BaseException | None = e
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if _is_transport_failure(current):
            return True
        current = current.__cause__ or current.__context__
    return False


def _is_transport_failure(e: BaseException) -> bool:
    if isinstance(e, (ConnectionError, TimeoutError)):
        return True
    try:
        import requests

        if isinstance(e, (requests.exceptions.ConnectionError, requests.exceptions.Timeout)):
            return True
    except ImportError:
        pass
    try:
        from google.api_core import exceptions as gexc

        if isinstance(e, (gexc.RetryError, gexc.ServerError, gexc.TooManyRequests)):
            return True
    except ImportError:
        pass
    try:
        import urllib3.exceptions

        if isinstance(e, (urllib3.exceptions.HTTPError,)) and not isinstance(
            e, urllib3.exceptions.ResponseError
        ):
            return True
    except ImportError:
        pass
    text = str(e)
    return any(
        s in text
        for s in ("Max retries exceeded", "Connection refused", "Failed to establish a new")
    )
